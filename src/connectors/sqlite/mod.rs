//! SQLite connector: the embedded default, needing no server.
//!
//! Source: snapshot inside one read transaction (the database switched to WAL mode first, and
//! the flow's log says so, so writers are not blocked); CDC
//! through triggers the connector installs on each source table, which append the row images as
//! JSON to a change log it owns (`_tap_changes`). A position is the log's `seq`. Each flow's
//! acknowledged position is kept in `_tap_consumers`, and log rows every consumer has passed are
//! pruned, so the log does not grow without bound.
//!
//! Target: one table per target, created from the schema of the flow's output, with a unique
//! key on the flow's key fields; writes are batched upserts (`INSERT … ON CONFLICT DO UPDATE`)
//! and deletes in one transaction per batch. Nested values (objects, arrays) are stored as JSON
//! text. Fields that appear later (a user function adding one) become new columns.

use crate::connectors::sql::{self, Run, SqlTarget, Written};
use crate::connectors::{Connector, ExistingData, Position, UniqueKey, config_str, hex, unhex};
use crate::error::{Error, Result};
use crate::model::{Change, Event, Field, FieldType, Record, Schema};
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHANGE_LOG: &str = "_tap_changes";

/// A change-log row: seq, table, op, before, after, ts.
type LogRow = (i64, String, String, Option<String>, Option<String>, i64);
const CONSUMERS: &str = "_tap_consumers";

pub struct Sqlite {
    path: String,
    conn: Connection,
    /// Decoding rules per table, refreshed when a change names a table not seen yet.
    schemas: HashMap<String, Schema>,
    /// The columns each target table's flow writes.
    written: Written,
    /// The database file's (device, inode) when opened (":memory:" has none).
    file: Option<(u64, u64)>,
    /// Opened read-only: the file cannot be written by this process.
    read_only: bool,
    /// What the flow's log should say (a journal mode switched).
    notices: Vec<String>,
    /// Source tables' columns as their triggers capture them, and the database's schema
    /// version when they were last compared (a change makes CDC look again).
    captured: HashMap<String, Vec<String>>,
    schema_version: i64,
}

pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Install (or re-install) the CDC triggers of `table`, capturing its current columns; returns
/// those columns, and those the triggers it replaces did not capture (added since).
fn arm_table(conn: &Connection, table: &str, path: &str) -> Result<(Vec<String>, Vec<String>)> {
    let before: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
            [format!("_tap_i_{table}")],
            |r| r.get(0),
        )
        .optional()?;
    let schema = {
        let mut st = conn.prepare(&format!("PRAGMA table_info({})", quote(table)))?;
        st.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
            .collect::<std::result::Result<Vec<_>, _>>()?
    };
    if schema.is_empty() {
        return Err(Error::not_found(format!("table {table} does not exist in SQLite database {path}")));
    }
    let image = |prefix: &str| -> String {
        let parts: Vec<String> = schema
            .iter()
            .map(|(name, declared)| {
                let col = format!("{prefix}.{}", quote(name));
                let expr = if field_type(declared) == FieldType::Bytes {
                    // hex(NULL) is '': a NULL must stay NULL, not become empty bytes.
                    format!("CASE WHEN {col} IS NULL THEN NULL ELSE lower(hex({col})) END")
                } else {
                    col
                };
                format!("{}, {expr}", literal(name))
            })
            .collect();
        format!("json_object({})", parts.join(", "))
    };
    let now = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
    let t = literal(table);
    for (op, when, before, after) in [
        ("i", "INSERT", "NULL".to_string(), image("NEW")),
        ("u", "UPDATE", image("OLD"), image("NEW")),
        ("d", "DELETE", image("OLD"), "NULL".to_string()),
    ] {
        let name = quote(&format!("_tap_{op}_{table}"));
        // Recreated every time, so columns added since the last start are captured.
        conn.execute_batch(&format!(
            "DROP TRIGGER IF EXISTS {name};
             CREATE TRIGGER {name} AFTER {when} ON {} BEGIN
               INSERT INTO {CHANGE_LOG}(tbl, op, before, after, ts) VALUES ({t}, '{op}', {before}, {after}, {now});
             END;",
            quote(table)
        ))?;
    }
    let columns: Vec<String> = schema.into_iter().map(|(name, _)| name).collect();
    let added = match before {
        Some(sql) => columns.iter().filter(|c| !sql.contains(&format!("{}, ", literal(c)))).cloned().collect(),
        None => Vec::new(),
    };
    Ok((columns, added))
}

/// A row image logged before the triggers captured columns added since: those columns from the
/// row as the table holds it now, found by the table's primary key (a later change to the row is
/// in the log too, so the target ends as the source). Without a primary key they stay absent.
fn fill_added(conn: &Connection, table: &str, schema: &Schema, rec: &mut Record) -> Result<()> {
    let key = schema.primary_key();
    if key.is_empty() || key.iter().any(|k| !rec.contains_key(k)) {
        return Ok(());
    }
    let missing: Vec<&Field> = schema.fields.iter().filter(|f| !rec.contains_key(&f.name)).collect();
    let cond: Vec<String> = key.iter().enumerate().map(|(i, k)| format!("{} = ?{}", quote(k), i + 1)).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        missing.iter().map(|f| quote(&f.name)).collect::<Vec<_>>().join(", "),
        quote(table),
        cond.join(" AND ")
    );
    let mut st = conn.prepare_cached(&sql)?;
    let params = key.iter().map(|k| bind_value(&rec[k.as_str()], schema.field(k).map(|f| f.ty)));
    let mut rows = st.query(params_from_iter(params))?;
    let values: Vec<Value> = match rows.next()? {
        Some(row) => {
            (0..missing.len()).map(|i| Ok(read_value(row.get_ref(i)?, Some(missing[i].ty)))).collect::<Result<_>>()?
        }
        None => vec![Value::Null; missing.len()],
    };
    for (f, v) in missing.into_iter().zip(values) {
        rec.insert(f.name.clone(), v);
    }
    Ok(())
}

/// Pragmas `sql()` may run: they read or tune this database and touch no other file.
const SAFE_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
    "database_list",
    "collation_list",
    "function_list",
    "pragma_list",
    "compile_options",
    "user_version",
    "application_id",
    "schema_version",
    "data_version",
    "page_count",
    "page_size",
    "freelist_count",
    "max_page_count",
    "encoding",
    "foreign_keys",
    "journal_mode",
    "synchronous",
    "busy_timeout",
    "cache_size",
    "wal_checkpoint",
    "optimize",
    "analysis_limit",
    "auto_vacuum",
    "incremental_vacuum",
    "recursive_triggers",
    "case_sensitive_like",
    "defer_foreign_keys",
    "ignore_check_constraints",
];

/// The device and inode of a file, if it exists.
fn file_id(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Sqlite {
    pub fn open(config: &Value) -> Result<Self> {
        let path = config_str(config, "database")
            .ok_or_else(|| Error::config("SQLite connection needs \"database\": the path of the database file"))?
            .to_string();
        Self::open_path(&path)
    }

    pub fn open_path(path: &str) -> Result<Self> {
        if let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            return Err(Error::config(format!(
                "SQLite database {path}: the directory {} does not exist",
                parent.display()
            )));
        }
        // A file this process may not write (permissions, an immutable flag) is opened read-only:
        // SQLite is then never asked to create or map its journal files, and writes fail with
        // an error instead of a signal.
        let exists = std::path::Path::new(path).exists();
        if !exists {
            // A database this connector creates is its user's alone (its journals take its mode).
            crate::datadir::create_private(std::path::Path::new(path))?;
        }
        let read_only = exists && std::fs::OpenOptions::new().write(true).open(path).is_err();
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| Error::config(format!("cannot open SQLite database {path}: {e}")))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        if !exists {
            // A database this connector creates is its own: WAL, for speed and for readers.
            let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        }
        conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
        conn.set_prepared_statement_cache_capacity(64);
        let file = file_id(path);
        Ok(Self {
            path: path.to_string(),
            conn,
            schemas: HashMap::new(),
            written: Written::default(),
            file,
            read_only,
            notices: Vec::new(),
            captured: HashMap::new(),
            schema_version: -1,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The database file is still the one opened: deleted or replaced, writes would go to an
    /// unlinked file that nobody reads.
    fn require_same_file(&self) -> Result<()> {
        if self.file.is_some() && file_id(&self.path) != self.file {
            return Err(Error::not_found(format!(
                "SQLite database {} was deleted or replaced while the flow wrote to it; the flow stops \
                 (reset it to copy again into a new file)",
                self.path
            )));
        }
        Ok(())
    }

    /// Put the database in WAL mode, so a flow reads it while applications keep writing (a
    /// rollback journal would block their writes for a whole snapshot). Done only for a flow
    /// that reads the database; the flow's log says so, and the mode stays (it is the file's).
    fn ensure_wal(&mut self, why: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::config(format!(
                "SQLite database {} is read-only for the engine (its permissions or an immutable flag): {why}",
                self.path
            )));
        }
        let mode: String = self.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        let now: String = self.conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !now.eq_ignore_ascii_case("wal") {
            return Err(Error::config(format!(
                "SQLite database {} stays in journal mode {now}: it cannot be switched to WAL ({why})",
                self.path
            )));
        }
        self.notices.push(format!(
            "SQLite database {} switched from journal mode {mode} to WAL, so the flow can read it while \
             applications write (the file keeps WAL mode)",
            self.path
        ));
        Ok(())
    }

    fn table_exists(&self, table: &str) -> Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type IN ('table','view') AND name = ?1",
            [table],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn require_table(&mut self, table: &str) -> Result<()> {
        if self.table_exists(table)? {
            return Ok(());
        }
        let tables = self.tables()?;
        Err(Error::not_found(format!(
            "table {table} does not exist in SQLite database {}; it has: {}",
            self.path,
            if tables.is_empty() { "no tables".to_string() } else { tables.join(", ") }
        )))
    }

    /// The CDC triggers of `tables` are all there: a table dropped or replaced (by `tap demo
    /// --force`, say) loses them, and its changes would go uncaptured while the flow ran on.
    fn require_capture(&self, tables: &[String]) -> Result<()> {
        let mut st = self.conn.prepare_cached(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1 AND name IN (?2, ?3, ?4)",
        )?;
        for t in tables {
            let n: i64 = st.query_row(
                rusqlite::params![t, format!("_tap_i_{t}"), format!("_tap_u_{t}"), format!("_tap_d_{t}")],
                |r| r.get(0),
            )?;
            if n < 3 {
                let what = if self.table_exists(t)? { "was replaced" } else { "was dropped" };
                return Err(Error::not_found(format!(
                    "SQLite source {}: table {t} {what}, and its change capture (triggers) with it, so its \
                     changes are no longer seen; reset the flow to copy it again",
                    self.path
                )));
            }
        }
        Ok(())
    }

    /// Follow columns added to a source table: when the database's schema changed, re-arm the
    /// triggers of a table that gained columns (rows from then on carry them; rows logged before
    /// get them from the table as it is, see [`fill_added`]). Columns dropped or renamed cannot
    /// be followed: the flow stops.
    fn follow_schema(&mut self, tables: &[String]) -> Result<()> {
        let version: i64 = self.conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        if version == self.schema_version {
            return Ok(());
        }
        for t in tables {
            let Some(captured) = self.captured.get(t).cloned() else { continue };
            let current: Vec<String> = {
                let mut st = self.conn.prepare(&format!("PRAGMA table_info({})", quote(t)))?;
                st.query_map([], |r| r.get::<_, String>(1))?.collect::<std::result::Result<_, _>>()?
            };
            if current == captured {
                continue;
            }
            let gone: Vec<&String> = captured.iter().filter(|c| !current.contains(c)).collect();
            if !gone.is_empty() {
                return Err(Error::unsupported(format!(
                    "SQLite source {}: column(s) {} of table {t} were dropped or renamed; the flow follows \
                     added columns only, so it stops: reset it to copy the table again",
                    self.path,
                    gone.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            let added: Vec<&String> = current.iter().filter(|c| !captured.contains(c)).collect();
            let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            arm_table(&tx, t, &self.path)?;
            tx.commit()?;
            self.notices.push(format!(
                "SQLite source table {t} gained column(s) {}: captured from now on",
                added.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
            ));
            self.captured.insert(t.clone(), current);
            self.schemas.remove(t);
        }
        self.schema_version = self.conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        Ok(())
    }

    fn cached_schema(&mut self, table: &str) -> Result<&Schema> {
        if !self.schemas.contains_key(table) {
            let s = self.schema(table)?;
            self.schemas.insert(table.to_string(), s);
        }
        self.schemas.get(table).ok_or_else(|| Error::internal("schema cache"))
    }

    fn ensure_change_log(&self) -> Result<()> {
        self.conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {CHANGE_LOG} (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                tbl TEXT NOT NULL, op TEXT NOT NULL, before TEXT, after TEXT, ts INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS {CONSUMERS} (flow TEXT PRIMARY KEY, seq INTEGER NOT NULL);"
        ))?;
        Ok(())
    }
}

/// Map a declared SQLite column type to a field type, by SQLite's own affinity rules plus the
/// common names for dates, booleans, decimals and JSON.
pub fn field_type(declared: &str) -> FieldType {
    let t = declared.to_ascii_uppercase();
    if t.contains("BOOL") {
        FieldType::Boolean
    } else if t.contains("TIMESTAMPTZ") || t.contains("WITH TIME ZONE") {
        FieldType::TimestampTz
    } else if t.contains("DATETIME") || t.contains("TIMESTAMP") {
        FieldType::Timestamp
    } else if t.contains("DATE") {
        FieldType::Date
    } else if t.contains("INT") {
        FieldType::Integer
    } else if t.contains("JSON") {
        FieldType::Json
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        FieldType::Text
    } else if t.contains("BLOB") || t.contains("BINARY") || t.contains("BYTEA") {
        FieldType::Bytes
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        FieldType::Float
    } else if t.contains("DEC") || t.contains("NUM") {
        FieldType::Decimal
    } else {
        FieldType::Text
    }
}

/// The declared type a target column gets for a field type.
pub fn declared_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Integer => "INTEGER",
        FieldType::Decimal => "NUMERIC",
        FieldType::Float => "REAL",
        FieldType::Text => "TEXT",
        FieldType::Bytes => "BLOB",
        FieldType::Boolean => "BOOLEAN",
        FieldType::Date => "DATE",
        FieldType::Timestamp => "DATETIME",
        FieldType::TimestampTz => "TIMESTAMPTZ",
        FieldType::Json => "JSON",
    }
}

/// Read one SQLite value as JSON, using the field's type for booleans, JSON and bytes.
fn read_value(v: ValueRef<'_>, ty: Option<FieldType>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => match ty {
            Some(FieldType::Boolean) => Value::Bool(i != 0),
            _ => Value::from(i),
        },
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t);
            match ty {
                Some(FieldType::Json) => serde_json::from_str(&s).unwrap_or(Value::String(s.into_owned())),
                _ => Value::String(s.into_owned()),
            }
        }
        ValueRef::Blob(b) => Value::String(hex(b)),
    }
}

/// Decode a change-log image (JSON written by the triggers) using the table's schema:
/// booleans arrive as 0/1, JSON columns as text.
fn decode_image(raw: &str, schema: &Schema) -> Result<Record> {
    let mut rec: Record = serde_json::from_str(raw)?;
    for f in &schema.fields {
        if let Some(v) = rec.get_mut(&f.name) {
            match (f.ty, &*v) {
                (FieldType::Boolean, Value::Number(n)) => *v = Value::Bool(n.as_i64() != Some(0)),
                (FieldType::Json, Value::String(s)) => {
                    if let Ok(parsed) = serde_json::from_str(s) {
                        *v = parsed;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(rec)
}

/// Bind a JSON value for a column of type `ty`.
fn bind_value(v: &Value, ty: Option<FieldType>) -> ToSqlOutput<'static> {
    let owned = match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                SqlValue::Integer(i)
            } else {
                SqlValue::Real(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => match ty {
            Some(FieldType::Bytes) => unhex(s).map(SqlValue::Blob).unwrap_or_else(|| SqlValue::Text(s.clone())),
            _ => SqlValue::Text(s.clone()),
        },
        other => SqlValue::Text(other.to_string()),
    };
    ToSqlOutput::Owned(owned)
}

impl Connector for Sqlite {
    fn test(&mut self) -> Result<()> {
        let _: i64 = self.conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        Ok(())
    }

    fn tables(&mut self) -> Result<Vec<String>> {
        let mut st = self.conn.prepare(
            "SELECT name FROM sqlite_master WHERE type IN ('table','view') AND name NOT LIKE 'sqlite_%' \
             AND name NOT LIKE '\\_tap\\_%' ESCAPE '\\' ORDER BY name",
        )?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    fn schema(&mut self, table: &str) -> Result<Schema> {
        self.require_table(table)?;
        let mut st = self.conn.prepare(&format!("PRAGMA table_info({})", quote(table)))?;
        let fields = st
            .query_map([], |r| {
                let name: String = r.get(1)?;
                let declared: String = r.get(2)?;
                let notnull: i64 = r.get(3)?;
                let pk: i64 = r.get(5)?;
                Ok(Field {
                    name,
                    ty: field_type(&declared),
                    data_type: if declared.is_empty() { "ANY".into() } else { declared },
                    primary_key: pk > 0,
                    nullable: notnull == 0 && pk == 0,
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Schema { table: table.to_string(), fields })
    }

    fn unique_keys(&mut self, table: &str) -> Result<Vec<UniqueKey>> {
        let schema = self.schema(table)?;
        let mut st = self.conn.prepare(&format!("PRAGMA index_list({})", quote(table)))?;
        // (seq, name, unique, origin, partial)
        let indexes: Vec<(String, i64, i64)> = st
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(4)?)))?
            .collect::<std::result::Result<_, _>>()?;
        let mut out = Vec::new();
        for (name, unique, partial) in indexes {
            if unique == 0 || partial != 0 {
                continue;
            }
            let mut st = self.conn.prepare(&format!("PRAGMA index_info({})", quote(&name)))?;
            let cols: Vec<Option<String>> =
                st.query_map([], |r| r.get::<_, Option<String>>(2))?.collect::<std::result::Result<_, _>>()?;
            // An expression column has no name.
            let Some(columns) = cols.into_iter().collect::<Option<Vec<String>>>() else { continue };
            let not_null = columns.iter().all(|c| schema.field(c).is_some_and(|f| !f.nullable));
            out.push(UniqueKey { name, columns, not_null });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn count(&mut self, table: &str) -> Result<u64> {
        self.require_table(table)?;
        let n: i64 = self.conn.query_row(&format!("SELECT count(*) FROM {}", quote(table)), [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    fn sample(&mut self, table: &str, limit: usize) -> Result<Vec<Record>> {
        self.find(table, &Record::new(), limit)
    }

    fn find(&mut self, table: &str, filter: &Record, limit: usize) -> Result<Vec<Record>> {
        let schema = self.schema(table)?;
        let types: Vec<Option<FieldType>> = schema.fields.iter().map(|f| Some(f.ty)).collect();
        let cond: Vec<String> = filter.keys().enumerate().map(|(i, k)| format!("{} = ?{}", quote(k), i + 1)).collect();
        let sql = if cond.is_empty() {
            format!("SELECT * FROM {} LIMIT {limit}", quote(table))
        } else {
            format!("SELECT * FROM {} WHERE {} LIMIT {limit}", quote(table), cond.join(" AND "))
        };
        let mut st = self.conn.prepare(&sql)?;
        let names: Vec<String> = st.column_names().map(|s| s.to_string()).collect();
        let mut rows =
            st.query(params_from_iter(filter.iter().map(|(k, v)| bind_value(v, schema.field(k).map(|f| f.ty)))))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut rec = Record::new();
            for (i, name) in names.iter().enumerate() {
                rec.insert(name.clone(), read_value(row.get_ref(i)?, types.get(i).copied().flatten()));
            }
            out.push(rec);
        }
        Ok(out)
    }

    /// A statement from `sql()`: under an authorizer that keeps it to this database file (no
    /// ATTACH, DETACH or VACUUM INTO — attaching is also limited to none — no pragma outside a
    /// read-mostly list, no extension loading).
    fn execute(&mut self, statement: &str) -> Result<u64> {
        use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
        use rusqlite::limits::Limit;
        let refused: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let seen = refused.clone();
        self.conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            let why = match ctx.action {
                AuthAction::Attach { filename } => Some(format!("ATTACH {filename:?}")),
                AuthAction::Detach { database_name } => Some(format!("DETACH {database_name}")),
                AuthAction::Pragma { pragma_name, .. }
                    if !SAFE_PRAGMAS.contains(&pragma_name.to_ascii_lowercase().as_str()) =>
                {
                    Some(format!("PRAGMA {pragma_name}"))
                }
                AuthAction::Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
                    Some("load_extension()".to_string())
                }
                _ => None,
            };
            match why {
                Some(w) => {
                    if let Ok(mut r) = seen.lock() {
                        r.get_or_insert(w);
                    }
                    Authorization::Deny
                }
                None => Authorization::Allow,
            }
        }))?;
        let attached = self.conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        let before = self.conn.total_changes();
        let result = self.conn.execute_batch(statement);
        self.conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>)?;
        self.conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, attached)?;
        if let Err(e) = result {
            let what = refused.lock().ok().and_then(|r| r.clone()).map(|w| match w.strip_prefix("ATTACH ") {
                // VACUUM INTO attaches its output file.
                Some(file) if statement.to_ascii_lowercase().contains("vacuum") => format!("VACUUM INTO {file}"),
                _ => w,
            });
            let text = e.to_string();
            return Err(match what {
                Some(w) => Error::auth(format!(
                    "{w} is refused: statements run through tap stay inside the connection's database {}",
                    self.path
                )),
                None if text.contains("too many attached databases") => Error::auth(format!(
                    "VACUUM INTO and ATTACH are refused: statements run through tap stay inside the connection's database {}",
                    self.path
                )),
                None => e.into(),
            });
        }
        Ok(self.conn.total_changes().saturating_sub(before))
    }

    fn cdc_prepare(&mut self, flow_id: &str, tables: &[String], resume: bool) -> Result<()> {
        self.ensure_wal("change capture writes triggers and a change log into it")?;
        self.ensure_change_log()?;
        if resume {
            // Triggers made anew would have missed the changes since the table lost them.
            self.require_capture(tables)?;
        }
        // IMMEDIATE: the write lock is taken up front (through the busy timeout), never by
        // upgrading a read, which SQLite refuses at once when another connection writes.
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut captured = HashMap::new();
        let mut gained = Vec::new();
        for table in tables {
            let (cols, added) = arm_table(&tx, table, &self.path)?;
            if !added.is_empty() {
                gained.push(format!(
                    "SQLite source table {table} gained column(s) {}: captured from now on",
                    added.join(", ")
                ));
            }
            captured.insert(table.clone(), cols);
        }
        tx.execute(
            &format!("INSERT INTO {CONSUMERS}(flow, seq) VALUES (?1, (SELECT coalesce(max(seq), 0) FROM {CHANGE_LOG})) ON CONFLICT(flow) DO NOTHING"),
            [flow_id],
        )?;
        tx.commit()?;
        self.notices.extend(gained);
        self.captured.extend(captured);
        Ok(())
    }

    fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    fn cdc_position(&mut self, _flow_id: &str) -> Result<Position> {
        self.ensure_change_log()?;
        let seq: i64 =
            self.conn.query_row(&format!("SELECT coalesce(max(seq), 0) FROM {CHANGE_LOG}"), [], |r| r.get(0))?;
        Ok(json!({ "seq": seq }))
    }

    fn snapshot(&mut self, table: &str, batch: usize, emit: &mut dyn FnMut(Vec<Record>) -> Result<()>) -> Result<()> {
        // Read-only, nobody writes it through this process: a plain read does.
        if !self.read_only {
            self.ensure_wal("a snapshot reads it")?;
        }
        let schema = self.schema(table)?;
        let types: Vec<Option<FieldType>> = schema.fields.iter().map(|f| Some(f.ty)).collect();
        let names: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
        let columns: Vec<String> = names.iter().map(|n| quote(n)).collect();
        // One read transaction: the whole table as of one moment.
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare(&format!("SELECT {} FROM {}", columns.join(", "), quote(table)))?;
            let mut rows = st.query([])?;
            let mut buf = Vec::with_capacity(batch);
            while let Some(row) = rows.next()? {
                let mut rec = Record::new();
                for (i, name) in names.iter().enumerate() {
                    rec.insert(name.clone(), read_value(row.get_ref(i)?, types[i]));
                }
                buf.push(rec);
                if buf.len() >= batch {
                    emit(std::mem::replace(&mut buf, Vec::with_capacity(batch)))?;
                }
            }
            if !buf.is_empty() {
                emit(buf)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn changes(
        &mut self,
        _flow_id: &str,
        tables: &[String],
        from: &Position,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Event>, Position)> {
        self.require_capture(tables)?;
        self.follow_schema(tables)?;
        let mut seq = from.get("seq").and_then(Value::as_i64).unwrap_or(0);
        let deadline = Instant::now() + wait;
        let filter: Vec<String> = tables.iter().map(|t| literal(t)).collect();
        let sql = format!(
            "SELECT seq, tbl, op, before, after, ts FROM {CHANGE_LOG} WHERE seq > ?1 AND tbl IN ({}) ORDER BY seq LIMIT ?2",
            filter.join(", ")
        );
        loop {
            let rows: Vec<LogRow> = {
                let mut st = self.conn.prepare_cached(&sql)?;
                st.query_map(rusqlite::params![seq, max as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?
            };
            if rows.is_empty() {
                // Nothing for our tables: still advance past other tables' rows so we do not rescan them.
                if Instant::now() >= deadline {
                    return Ok((Vec::new(), json!({ "seq": seq })));
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let mut events = Vec::with_capacity(rows.len());
            let mut names: HashMap<String, Arc<str>> = HashMap::new();
            let mut schemas: HashMap<String, Schema> = HashMap::new();
            for (s, tbl, op, before, after, ts) in rows {
                seq = s;
                if !schemas.contains_key(&tbl) {
                    let schema = self.cached_schema(&tbl)?.clone();
                    schemas.insert(tbl.clone(), schema);
                }
                let schema = &schemas[&tbl];
                let image =
                    |raw: Option<String>| -> Result<Record> { decode_image(raw.as_deref().unwrap_or("{}"), schema) };
                let mut change = match op.as_str() {
                    "i" => Change::Insert { after: image(after)? },
                    "u" => Change::Update { before: Some(image(before)?), after: image(after)? },
                    "d" => Change::Delete { before: image(before)? },
                    other => return Err(Error::internal(format!("unknown op {other} in {CHANGE_LOG}"))),
                };
                if let Change::Insert { after } | Change::Update { after, .. } = &mut change
                    && schema.fields.iter().any(|f| !after.contains_key(&f.name))
                {
                    // Logged before its triggers captured a column added since: read it now.
                    fill_added(&self.conn, &tbl, schema, after)?;
                }
                let table = names.entry(tbl.clone()).or_insert_with(|| Arc::from(tbl.as_str())).clone();
                events.push(Event { table, change, ts_ms: ts });
            }
            return Ok((events, json!({ "seq": seq })));
        }
    }

    fn cdc_ack(&mut self, flow_id: &str, position: &Position) -> Result<()> {
        let seq = position.get("seq").and_then(Value::as_i64).unwrap_or(0);
        self.conn.execute(
            &format!(
                "INSERT INTO {CONSUMERS}(flow, seq) VALUES (?1, ?2) ON CONFLICT(flow) DO UPDATE SET seq = excluded.seq"
            ),
            rusqlite::params![flow_id, seq],
        )?;
        // Prune what every consumer has passed.
        self.conn.execute(&format!("DELETE FROM {CHANGE_LOG} WHERE seq <= (SELECT min(seq) FROM {CONSUMERS})"), [])?;
        Ok(())
    }

    fn cdc_release(&mut self, flow_id: &str) -> Result<()> {
        self.ensure_change_log()?;
        self.conn.execute(&format!("DELETE FROM {CONSUMERS} WHERE flow = ?1"), [flow_id])?;
        let remaining: i64 = self.conn.query_row(&format!("SELECT count(*) FROM {CONSUMERS}"), [], |r| r.get(0))?;
        if remaining == 0 {
            // Last consumer gone: remove the triggers and empty the log.
            let triggers: Vec<String> = {
                let mut st = self.conn.prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '\\_tap\\_%' ESCAPE '\\'",
                )?;
                st.query_map([], |r| r.get(0))?.collect::<std::result::Result<Vec<_>, _>>()?
            };
            for t in triggers {
                self.conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {}", quote(&t)))?;
            }
            self.conn.execute(&format!("DELETE FROM {CHANGE_LOG}"), [])?;
        }
        Ok(())
    }

    fn prepare_target(&mut self, table: &str, schema: &Schema, key: &[String], existing: ExistingData) -> Result<()> {
        sql::prepare(self, table, schema, key, existing)
    }

    fn write(&mut self, table: &str, key: &[String], changes: &[Change]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::schema(format!("target table {table} has no key to write by")));
        }
        self.require_same_file()?;
        let cols = sql::columns(self, table, key, changes)?;
        let qt = quote(table);
        let names: Vec<String> = cols.iter().map(|(c, _)| quote(c)).collect();
        let key_cols: Vec<String> = key.iter().map(|k| quote(k)).collect();
        let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let updates: Vec<String> =
            names.iter().filter(|n| !key_cols.contains(n)).map(|n| format!("{n} = excluded.{n}")).collect();
        let conflict =
            if updates.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
        let upsert = format!(
            "INSERT INTO {qt} ({}) VALUES ({}) ON CONFLICT ({}) {conflict}",
            names.join(", "),
            marks.join(", "),
            key_cols.join(", ")
        );
        let cond: Vec<String> = key_cols.iter().enumerate().map(|(i, k)| format!("{k} = ?{}", i + 1)).collect();
        let delete = format!("DELETE FROM {qt} WHERE {}", cond.join(" AND "));
        let key_types: Vec<Option<FieldType>> =
            key.iter().map(|k| cols.iter().find(|(c, _)| c == k).map(|(_, t)| *t)).collect();
        let null = Value::Null;
        let tx = self.conn.transaction()?;
        for run in sql::plan(changes, key) {
            match run {
                Run::Upsert(images) => {
                    let mut st = tx.prepare_cached(&upsert)?;
                    for img in images {
                        st.execute(params_from_iter(
                            cols.iter().map(|(c, t)| bind_value(img.get(c).unwrap_or(&null), Some(*t))),
                        ))?;
                    }
                }
                Run::Delete(images) => {
                    let mut st = tx.prepare_cached(&delete)?;
                    for img in images {
                        st.execute(params_from_iter(
                            key.iter().zip(&key_types).map(|(k, t)| bind_value(img.get(k).unwrap_or(&null), *t)),
                        ))?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

impl SqlTarget for Sqlite {
    fn qualified(&self, table: &str) -> String {
        quote(table)
    }
    fn quote_name(&self, name: &str) -> String {
        quote(name)
    }
    fn column_type(&self, field: &Field, _is_key: bool) -> String {
        declared_type(field.ty).to_string()
    }
    fn ddl(&mut self, sql: &str) -> Result<()> {
        Ok(self.conn.execute_batch(sql)?)
    }
    fn target_schema(&mut self, table: &str) -> Result<Schema> {
        self.cached_schema(table).cloned()
    }
    fn forget(&mut self, table: &str) {
        self.schemas.remove(table);
    }
    fn written(&mut self) -> &mut Written {
        &mut self.written
    }
}

/// SQLite's errors, classified once: busy, locked and cannot-open are worth a retry.
impl From<rusqlite::Error> for crate::error::Error {
    fn from(e: rusqlite::Error) -> Self {
        use crate::error::Error;
        use rusqlite::ffi::ErrorCode;
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
            {
                Error::unavailable(format!("SQLite: {e}"))
            }
            rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::CannotOpen => {
                Error::unavailable(format!("SQLite: {e}"))
            }
            _ => Error::data(format!("SQLite: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(name: &str) -> String {
        let dir = std::env::temp_dir().join(format!("tap-sqlite-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("db.sqlite").to_string_lossy().into_owned()
    }

    #[test]
    fn snapshot_then_changes_then_upsert_into_a_target() {
        let src_path = temp_db("src");
        let mut src = Sqlite::open_path(&src_path).expect("open");
        src.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, ok BOOLEAN, doc JSON, raw BLOB); \
                     INSERT INTO t VALUES (1, 'a', 1, '{\"x\":1}', x'0aff'), (2, 'b', 0, NULL, NULL);",
        )
        .expect("seed");
        src.cdc_prepare("f1", &["t".into()], false).expect("prepare");
        let pos = src.cdc_position("f1").expect("pos");
        let mut rows = Vec::new();
        src.snapshot("t", 1, &mut |b| {
            rows.extend(b);
            Ok(())
        })
        .expect("snapshot");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["ok"], Value::Bool(true));
        assert_eq!(rows[0]["doc"], json!({"x": 1}));
        assert_eq!(rows[0]["raw"], json!("0aff"));

        src.execute("UPDATE t SET name = 'c' WHERE id = 2; DELETE FROM t WHERE id = 1; INSERT INTO t(id, name) VALUES (3, 'z');")
            .expect("dml");
        let (events, next) = src.changes("f1", &["t".into()], &pos, 100, Duration::from_millis(10)).expect("changes");
        let ops: Vec<&str> = events.iter().map(|e| e.change.op()).collect();
        assert_eq!(ops, vec!["u", "d", "i"]);
        assert_eq!(events[1].change.key_image()["raw"], json!("0aff"));
        assert_eq!(events[1].change.key_image()["ok"], Value::Bool(true));

        let dst_path = temp_db("dst");
        let mut dst = Sqlite::open_path(&dst_path).expect("open dst");
        let schema = src.schema("t").expect("schema");
        let key = vec!["id".to_string()];
        dst.prepare_target("out", &schema, &key, ExistingData::Keep).expect("target");
        let inserts: Vec<Change> = rows.into_iter().map(|after| Change::Insert { after }).collect();
        dst.write("out", &key, &inserts).expect("write snapshot");
        let changes: Vec<Change> = events.into_iter().map(|e| e.change).collect();
        dst.write("out", &key, &changes).expect("write changes");
        // Replaying the same changes (a restart) changes nothing.
        dst.write("out", &key, &changes).expect("replay");
        let mut got = dst.sample("out", 10).expect("sample");
        got.sort_by_key(|r| r["id"].as_i64());
        let names: Vec<String> = got.iter().map(|r| r["name"].as_str().unwrap_or("").to_string()).collect();
        assert_eq!(names, vec!["c", "z"]);

        src.cdc_ack("f1", &next).expect("ack");
        let left: i64 = src.conn.query_row("SELECT count(*) FROM _tap_changes", [], |r| r.get(0)).expect("count");
        assert_eq!(left, 0, "acknowledged changes are pruned");
    }
}
