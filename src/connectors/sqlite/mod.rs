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

mod capture;
mod values;

use crate::connectors::sql::{self, Run, SqlTarget};
use crate::connectors::{Connector, Emit, Position, Settings, SnapshotRequest, Target, UniqueKey};
use crate::error::{Error, Result};
use crate::model::{Change, Event, Field, FieldType, Record, Schema, Value, is_decimal};
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use values::{bind_value, decode_image, read_value};
pub use values::{declared_type, field_type};

const CHANGE_LOG: &str = "_tap_changes";

/// A change-log row: seq, table, op, before, after, ts.
type LogRow = (i64, String, String, Option<String>, Option<String>, i64);
const CONSUMERS: &str = "_tap_consumers";

pub struct Sqlite {
    path: String,
    conn: Connection,
    /// Decoding rules per table, refreshed when a change names a table not seen yet.
    schemas: HashMap<String, Schema>,
    /// The database file's (device, inode) when opened (":memory:" has none).
    file: Option<(u64, u64)>,
    /// Opened read-only: the file cannot be written by this process.
    read_only: bool,
    /// What the flow's log should say (a journal mode switched).
    notices: Vec<String>,
    /// Source tables' columns as their triggers capture them, and the database's schema
    /// version when they were last compared (a change makes CDC look again).
    captured: HashMap<String, Vec<String>>,
    /// Tables that gained columns since the last `take_altered`.
    altered: Vec<String>,
    schema_version: i64,
}

pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
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
    pub fn open(config: &Settings) -> Result<Self> {
        Self::open_path(config.value("database"))
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
            file,
            read_only,
            notices: Vec::new(),
            captured: HashMap::new(),
            altered: Vec::new(),
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

    fn cached_schema(&mut self, table: &str) -> Result<&Schema> {
        if !self.schemas.contains_key(table) {
            let s = self.schema(table)?;
            self.schemas.insert(table.to_string(), s);
        }
        self.schemas.get(table).ok_or_else(|| Error::internal("schema cache"))
    }
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
        let typed: Vec<Value> = filter.iter().map(|(k, v)| v.as_type(schema.field(k).map(|f| f.ty))).collect();
        let mut rows = st.query(params_from_iter(typed.iter().map(bind_value)))?;
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
        self.prepare_capture(flow_id, tables, resume)
    }

    fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    fn cdc_pre_images(&mut self, _tables: &[String]) -> Result<()> {
        // The triggers log every column of OLD.
        Ok(())
    }

    fn take_altered(&mut self) -> Vec<String> {
        std::mem::take(&mut self.altered)
    }

    fn cdc_position(&mut self, flow_id: &str) -> Result<Position> {
        self.log_position(flow_id)
    }

    fn snapshot(&mut self, read: &SnapshotRequest, emit: &mut Emit<'_>) -> Result<()> {
        let (table, batch) = (read.table.as_str(), read.batch);
        // Read-only, nobody writes it through this process: a plain read does.
        if !self.read_only {
            self.ensure_wal("a snapshot reads it")?;
        }
        let schema = self.schema(table)?;
        // The filter's numbers and text equalities are pushed down (SQLite keeps dates as
        // text, whose order need not be the engine's); the engine filters again.
        let pushed: Vec<&crate::model::condition::Condition> = read
            .filter
            .iter()
            .filter(|c| {
                matches!(c.value, Value::Int(_) | Value::Float(_))
                    || (matches!(c.value, Value::Text(_)) && c.op == crate::model::condition::Op::Eq)
            })
            .collect();
        let filter = if pushed.is_empty() {
            String::new()
        } else {
            let parts: Vec<String> = pushed
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{} {} ?{}", quote(&c.field), c.op.sql(), i + 1))
                .collect();
            format!(" WHERE {}", parts.join(" AND "))
        };
        let params: Vec<_> = pushed.iter().map(|c| bind_value(&c.value)).collect();
        let sql = match &read.query {
            Some(q) => format!("SELECT * FROM ({q}) tap_q{filter}"),
            None => {
                let columns: Vec<String> = schema.fields.iter().map(|f| quote(&f.name)).collect();
                format!("SELECT {} FROM {}{filter}", columns.join(", "), quote(table))
            }
        };
        // One read transaction: the whole table as of one moment.
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare(&sql)?;
            let names: Vec<String> = st.column_names().map(str::to_string).collect();
            let types: Vec<Option<FieldType>> = names.iter().map(|n| schema.field(n).map(|f| f.ty)).collect();
            let mut rows = st.query(rusqlite::params_from_iter(params))?;
            let mut buf = Vec::with_capacity(batch);
            while let Some(row) = rows.next()? {
                let mut rec = Record::new();
                for (i, name) in names.iter().enumerate() {
                    rec.insert(name.clone(), read_value(row.get_ref(i)?, types[i]));
                }
                buf.push(rec);
                if buf.len() >= batch && emit(std::mem::replace(&mut buf, Vec::with_capacity(batch)))?.is_break() {
                    buf.clear();
                    break;
                }
            }
            if !buf.is_empty() {
                let _ = emit(buf)?; // the last batch: nothing follows either way
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn changes(
        &mut self,
        flow_id: &str,
        tables: &[String],
        from: &Position,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Event>, Position)> {
        self.read_changes(flow_id, tables, from, max, wait)
    }

    fn cdc_ack(&mut self, flow_id: &str, position: &Position) -> Result<()> {
        self.ack(flow_id, position)
    }

    fn cdc_release(&mut self, flow_id: &str) -> Result<()> {
        self.release_capture(flow_id)
    }

    fn prepare_target(&mut self, target: &Target, schema: &Schema) -> Result<()> {
        sql::prepare(self, target, schema)
    }

    fn write(&mut self, target: &Target, changes: &[Change]) -> Result<()> {
        let (table, key) = (target.table.as_str(), &target.key[..]);
        if key.is_empty() && !target.append {
            return Err(Error::schema(format!("target table {table} has no key to write by")));
        }
        self.require_same_file()?;
        let cols = sql::columns(self, table, changes)?;
        let qt = quote(table);
        let key_cols: Vec<String> = key.iter().map(|k| quote(k)).collect();
        // The upsert of one shape of image (the columns it carries).
        let upsert_of = |run_cols: &[&(String, FieldType)]| {
            let names: Vec<String> = run_cols.iter().map(|(c, _)| quote(c)).collect();
            let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            let updates: Vec<String> =
                names.iter().filter(|n| !key_cols.contains(n)).map(|n| format!("{n} = excluded.{n}")).collect();
            let conflict = if target.append {
                String::new()
            } else if updates.is_empty() {
                format!(" ON CONFLICT ({}) DO NOTHING", key_cols.join(", "))
            } else {
                format!(" ON CONFLICT ({}) DO UPDATE SET {}", key_cols.join(", "), updates.join(", "))
            };
            format!("INSERT INTO {qt} ({}) VALUES ({}){conflict}", names.join(", "), marks.join(", "))
        };
        let cond: Vec<String> = key_cols.iter().enumerate().map(|(i, k)| format!("{k} = ?{}", i + 1)).collect();
        let delete = format!("DELETE FROM {qt} WHERE {}", cond.join(" AND "));
        let null = Value::Null;
        let tx = self.conn.transaction()?;
        for run in sql::runs(changes, target) {
            let run_cols = run.columns(&cols);
            match run {
                Run::Upsert(images) | Run::Append(images) => {
                    let mut st = tx.prepare_cached(&upsert_of(&run_cols))?;
                    for img in images {
                        st.execute(params_from_iter(
                            run_cols.iter().map(|(c, _)| bind_value(img.get(c).unwrap_or(&null))),
                        ))?;
                    }
                }
                Run::Delete(images) => {
                    let mut st = tx.prepare_cached(&delete)?;
                    for img in images {
                        st.execute(params_from_iter(key.iter().map(|k| bind_value(img.get(k).unwrap_or(&null)))))?;
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
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig) =>
            {
                Error::rejected(format!("SQLite: {e}"))
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
        src.snapshot(&SnapshotRequest::table("t", 1), &mut |b| {
            rows.extend(b);
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .expect("snapshot");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["ok"], Value::Bool(true));
        assert_eq!(rows[0]["doc"], json!({"x": 1}));
        assert_eq!(rows[0]["raw"], Value::Bytes(vec![0x0a, 0xff]));

        src.execute("UPDATE t SET name = 'c' WHERE id = 2; DELETE FROM t WHERE id = 1; INSERT INTO t(id, name) VALUES (3, 'z');")
            .expect("dml");
        let (events, next) = src.changes("f1", &["t".into()], &pos, 100, Duration::from_millis(10)).expect("changes");
        let ops: Vec<&str> = events.iter().map(|e| e.change.op()).collect();
        assert_eq!(ops, vec!["u", "d", "i"]);
        assert_eq!(events[1].change.key_image()["raw"], Value::Bytes(vec![0x0a, 0xff]));
        assert_eq!(events[1].change.key_image()["ok"], Value::Bool(true));

        let dst_path = temp_db("dst");
        let mut dst = Sqlite::open_path(&dst_path).expect("open dst");
        let schema = src.schema("t").expect("schema");
        let out = Target::new("out", &["id".to_string()], crate::connectors::ExistingData::Keep);
        dst.prepare_target(&out, &schema).expect("target");
        let inserts: Vec<Change> = rows.into_iter().map(|after| Change::Insert { after }).collect();
        dst.write(&out, &inserts).expect("write snapshot");
        let changes: Vec<Change> = events.into_iter().map(|e| e.change).collect();
        dst.write(&out, &changes).expect("write changes");
        // Replaying the same changes (a restart) changes nothing.
        dst.write(&out, &changes).expect("replay");
        let mut got = dst.sample("out", 10).expect("sample");
        got.sort_by_key(|r| r["id"].as_i64());
        let names: Vec<String> = got.iter().map(|r| r["name"].as_str().unwrap_or("").to_string()).collect();
        assert_eq!(names, vec!["c", "z"]);

        src.cdc_ack("f1", &next).expect("ack");
        let left: i64 = src.conn.query_row("SELECT count(*) FROM _tap_changes", [], |r| r.get(0)).expect("count");
        assert_eq!(left, 0, "acknowledged changes are pruned");
    }
}
