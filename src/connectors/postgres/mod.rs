//! PostgreSQL connector (tokio-postgres for SQL, pgwire-replication for logical replication).
//!
//! Source: the snapshot reads each table inside one `REPEATABLE READ` transaction through a
//! cursor, `FETCH`ing batches of binary rows decoded by column type (`binary`); CDC streams `pgoutput` from a replication slot and a publication
//! the connector creates per flow (`tap_<flow id>`) and drops on `cdc_release` (reset, delete).
//! A position is an LSN: the end of the last whole transaction handed out, and the slot is
//! advanced (`cdc_ack`) only to such an LSN, after the runner saved the position. A transaction
//! larger than a batch is handed out in batches: their positions add the transaction's commit
//! LSN and how many of its changes are done (`txn`, `skip`), so memory follows the batch size;
//! after a restart the server sends the transaction again and its first `skip` changes are
//! skipped.
//!
//! Target: tables created from the flow's output schema, with a primary key on the flow's key;
//! a batch is applied in one transaction as runs of set-based statements: upserts through
//! `jsonb_populate_recordset … ON CONFLICT DO UPDATE`, deletes through `… WHERE (key) IN (…)`,
//! long runs through `COPY`, falling back to upserts when a row is there already (`write`).
//!
//! Replica identity is left as the user set it: with the default, deletes carry the key only,
//! which is all a keyed target needs.

mod binary;
mod pgoutput;
mod values;
mod wal;
mod write;

use crate::connectors::sql::{self, Run, SqlTarget};
use crate::connectors::{Connector, Emit, Position, Settings, SnapshotRequest, Target, UniqueKey};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Change, Event, Field, FieldType, Record, Schema, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
pub use values::{column_type, declared_type, field_type};
use values::{decode_row, payload, pushed_filter, select_list};
use wal::Replication;
pub use wal::slot_name;

pub struct Postgres {
    rt: crate::connectors::blocking::Blocking,
    client: tokio_postgres::Client,
    host: String,
    port: u16,
    user: String,
    password: String,
    database: String,
    schema: String,
    schemas: HashMap<String, Schema>,
    repl: Option<Replication>,
    /// When the flow's slot and publication were last checked (every few seconds of CDC).
    checked: Option<Instant>,
    /// Tables a COPY found rows in already: written with upserts only (see `write`).
    upsert_only: std::collections::HashSet<String>,
}

pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A driver error in its class, decided once here from the SQLSTATE (never from the text).
fn pg_err(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let message = format!("PostgreSQL: {} ({code})", db.message());
        return match pg_class(code) {
            ErrorKind::Unavailable => Error::unavailable(message),
            kind => Error::new(kind, message),
        };
    }
    if e.is_closed()
        || e.as_db_error().is_none() && std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
    {
        return Error::unavailable(format!("PostgreSQL: {e}"));
    }
    Error::data(format!("PostgreSQL: {e}"))
}

/// The class of a SQLSTATE: transient ones are retried, the rest stop the flow at once.
pub fn pg_class(code: &str) -> ErrorKind {
    match code {
        // serialization failure, deadlock, too many connections, admin shutdown, crash
        // shutdown, cannot connect now, and every connection exception (class 08)
        "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03" => ErrorKind::Unavailable,
        c if c.starts_with("08") => ErrorKind::Unavailable,
        // invalid authorization, invalid password
        c if c.starts_with("28") => ErrorKind::Auth,
        // undefined table, column, object, schema; insufficient privilege
        "42P01" | "42703" | "42704" | "3F000" | "3D000" => ErrorKind::NotFound,
        "42501" => ErrorKind::Auth,
        // data exceptions (a value out of range, of the wrong form) and integrity constraints
        c if c.starts_with("22") || c.starts_with("23") => ErrorKind::Rejected,
        _ => ErrorKind::Data,
    }
}

impl Postgres {
    pub fn open(config: &Settings) -> Result<Self> {
        let host = config.value("host").to_string();
        let port = config.port("port");
        let database = config.value("database").to_string();
        let user = config.value("user").to_string();
        let password = config.value("password").to_string();
        let schema = config.value("schema").to_string();
        let rt = crate::connectors::blocking::Blocking::new()?;
        let mut cfg = tokio_postgres::Config::new();
        // Sessions run in UTC: a naive timestamp written to a zoned column is a UTC one, as
        // everywhere in tap.
        cfg.host(&host)
            .port(port)
            .dbname(&database)
            .user(&user)
            .options("-c TimeZone=UTC")
            .connect_timeout(Duration::from_secs(10));
        if !password.is_empty() {
            cfg.password(&password);
        }
        let client = rt
            .run(async {
                let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                Ok::<_, tokio_postgres::Error>(client)
            })?
            .map_err(|e| {
                let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
                let message = format!("cannot connect to PostgreSQL at {host}:{port}/{database} as {user}: {e}{cause}");
                match e.as_db_error().map(|d| pg_class(d.code().code())) {
                    Some(kind) if kind != ErrorKind::Unavailable => Error::new(kind, message),
                    _ => Error::unavailable(message),
                }
            })?;
        Ok(Self {
            rt,
            client,
            host,
            port,
            user,
            password,
            database,
            schema,
            schemas: HashMap::new(),
            repl: None,
            checked: None,
            upsert_only: Default::default(),
        })
    }

    fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.rt.run(self.client.query(sql, params))?.map_err(pg_err)
    }

    fn batch(&self, sql: &str) -> Result<()> {
        self.rt.run(self.client.batch_execute(sql))?.map_err(pg_err)
    }

    fn cached_schema(&mut self, table: &str) -> Result<Schema> {
        if let Some(s) = self.schemas.get(table) {
            return Ok(s.clone());
        }
        let s = self.schema(table)?;
        self.schemas.insert(table.to_string(), s.clone());
        Ok(s)
    }

    fn require_table(&mut self, table: &str) -> Result<()> {
        let rows = self.query(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
            &[&self.schema, &table],
        )?;
        if rows.is_empty() {
            let all = self.tables()?;
            return Err(Error::not_found(format!(
                "table {table} does not exist in PostgreSQL schema {}.{}; it has: {}",
                self.database,
                self.schema,
                if all.is_empty() { "no tables".into() } else { all.join(", ") }
            )));
        }
        Ok(())
    }
}

impl Connector for Postgres {
    fn test(&mut self) -> Result<()> {
        self.query("SELECT 1", &[])?;
        Ok(())
    }

    fn tables(&mut self) -> Result<Vec<String>> {
        let rows = self.query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 \
             AND table_type IN ('BASE TABLE', 'VIEW') ORDER BY 1",
            &[&self.schema],
        )?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    fn schema(&mut self, table: &str) -> Result<Schema> {
        self.require_table(table)?;
        let rows = self.query(
            "SELECT c.column_name::text, c.data_type::text, c.udt_name::text, c.is_nullable = 'YES',
                    coalesce(c.character_maximum_length, 0)::int, coalesce(c.numeric_precision, 0)::int,
                    coalesce(c.numeric_scale, 0)::int,
                    EXISTS (SELECT 1 FROM information_schema.table_constraints tc
                            JOIN information_schema.key_column_usage k
                              ON k.constraint_name = tc.constraint_name AND k.table_schema = tc.table_schema
                             AND k.table_name = tc.table_name
                            WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = c.table_schema
                              AND tc.table_name = c.table_name AND k.column_name = c.column_name)
             FROM information_schema.columns c WHERE c.table_schema = $1 AND c.table_name = $2
             ORDER BY c.ordinal_position",
            &[&self.schema, &table],
        )?;
        let fields = rows
            .iter()
            .map(|r| {
                let (data_type, udt): (String, String) = (r.get(1), r.get(2));
                let (len, prec, scale): (i32, i32, i32) = (r.get(4), r.get(5), r.get(6));
                let shown = match udt.as_str() {
                    "varchar" | "bpchar" if len > 0 => format!("{data_type}({len})"),
                    "numeric" if prec > 0 => format!("numeric({prec},{scale})"),
                    _ => data_type.clone(),
                };
                let pk: bool = r.get(7);
                Field {
                    name: r.get(0),
                    ty: field_type(&data_type, &udt),
                    data_type: shown,
                    primary_key: pk,
                    nullable: r.get::<_, bool>(3) && !pk,
                }
            })
            .collect();
        Ok(Schema { table: table.to_string(), fields })
    }

    fn unique_keys(&mut self, table: &str) -> Result<Vec<UniqueKey>> {
        self.require_table(table)?;
        let rows = self.query(
            "SELECT ic.relname::text, array_agg(a.attname::text ORDER BY k.ord), bool_and(a.attnotnull)
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_class ic ON ic.oid = i.indexrelid
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
             WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique AND NOT i.indisprimary
               AND i.indpred IS NULL AND i.indexprs IS NULL
             GROUP BY ic.relname ORDER BY ic.relname",
            &[&self.schema, &table],
        )?;
        Ok(rows.iter().map(|r| UniqueKey { name: r.get(0), columns: r.get(1), not_null: r.get(2) }).collect())
    }

    fn count(&mut self, table: &str) -> Result<u64> {
        self.require_table(table)?;
        let rows = self.query(&format!("SELECT count(*) FROM {}", self.qualified(table)), &[])?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0).max(0) as u64)
    }

    fn estimate(&mut self, table: &str) -> Result<u64> {
        let rows = self
            .query("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)", &[&self.qualified(table)])?;
        match rows.first().map(|r| r.get::<_, i64>(0)) {
            // Planner statistics: -1 before the first ANALYZE; small tables are counted.
            Some(n) if n >= crate::connectors::BIG_TABLE => Ok(n as u64),
            _ => self.count(table),
        }
    }

    fn sample(&mut self, table: &str, limit: usize) -> Result<Vec<Record>> {
        self.find(table, &Record::new(), limit)
    }

    fn find(&mut self, table: &str, filter: &Record, limit: usize) -> Result<Vec<Record>> {
        let schema = self.schema(table)?;
        // Compared as text: a filter comes from a command line.
        let texts: Vec<String> = filter.values().map(Value::text).collect();
        let cond: Vec<String> =
            filter.keys().enumerate().map(|(i, k)| format!("tap_row.{}::text = ${}", quote(k), i + 1)).collect();
        let where_ = if cond.is_empty() { String::new() } else { format!(" WHERE {}", cond.join(" AND ")) };
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            texts.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let rows = self.query(
            &format!(
                "SELECT row_to_json(tap_row)::text FROM (SELECT {} FROM {}) tap_row{where_} LIMIT {limit}",
                select_list(&schema),
                self.qualified(table)
            ),
            &params,
        )?;
        rows.iter().map(|r| decode_row(r.get::<_, &str>(0), &schema)).collect()
    }

    fn execute(&mut self, statement: &str) -> Result<u64> {
        let msgs = self.rt.run(self.client.simple_query(statement))?.map_err(pg_err)?;
        Ok(msgs
            .iter()
            .map(|m| match m {
                tokio_postgres::SimpleQueryMessage::CommandComplete(n) => *n,
                _ => 0,
            })
            .sum())
    }

    fn cdc_prepare(&mut self, flow_id: &str, tables: &[String], resume: bool) -> Result<()> {
        self.prepare_capture(flow_id, tables, resume)
    }
    fn cdc_position(&mut self, flow_id: &str) -> Result<Position> {
        self.wal_position(flow_id)
    }
    fn snapshot(&mut self, read: &SnapshotRequest, emit: &mut Emit<'_>) -> Result<()> {
        let (table, batch) = (read.table.as_str(), read.batch);
        let schema = self.schema(table)?;
        self.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        let declared = (|| {
            let base = match &read.query {
                Some(query) => {
                    // A query names the connection's schema's tables unqualified, as in psql with
                    // it first on the search path.
                    self.batch(&format!("SET LOCAL search_path TO {}, public", quote(&self.schema)))?;
                    format!("SELECT * FROM ({query}) tap_q")
                }
                None => format!("SELECT * FROM {}", self.qualified(table)),
            };
            let from = format!("({base}{}) tap_row", pushed_filter(&read.filter));
            // Each column read by its type (binary::column); its name as the row has it.
            let st = self.rt.run(self.client.prepare(&format!("SELECT * FROM {from}")))?.map_err(pg_err)?;
            let (mut list, mut names, mut cols) = (Vec::new(), Vec::new(), Vec::new());
            for c in st.columns() {
                let (expr, col) = binary::column(c.name(), c.type_(), schema.field(c.name()).map(|f| f.ty));
                list.push(expr);
                names.push(c.name().to_string());
                cols.push(col);
            }
            let list = if list.is_empty() { "*".to_string() } else { list.join(", ") };
            self.batch(&format!("DECLARE tap_snapshot NO SCROLL CURSOR FOR SELECT {list} FROM {from}"))?;
            let fetch =
                self.rt.run(self.client.prepare(&format!("FETCH {batch} FROM tap_snapshot")))?.map_err(pg_err)?;
            Ok::<_, Error>((fetch, names, cols))
        })();
        let (fetch, names, cols) = match declared {
            Ok(d) => d,
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                return Err(e);
            }
        };
        let result = (|| {
            loop {
                let rows = self.rt.run(self.client.query(&fetch, &[]))?.map_err(pg_err)?;
                if rows.is_empty() {
                    return Ok(());
                }
                let out = rows.iter().map(|r| binary::decode(r, &names, &cols)).collect::<Result<Vec<_>>>()?;
                if emit(out)?.is_break() {
                    return Ok(());
                }
            }
        })();
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let _ = self.batch(end);
        result
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
    fn cdc_pre_images(&mut self, tables: &[String]) -> Result<()> {
        tables.iter().try_for_each(|t| self.require_full_identity(t))
    }
    fn take_altered(&mut self) -> Vec<String> {
        self.repl.as_mut().map(|r| std::mem::take(&mut r.decoder.altered)).unwrap_or_default()
    }
    fn cdc_ack(&mut self, flow_id: &str, position: &Position) -> Result<()> {
        self.ack(flow_id, position)
    }
    fn cdc_release(&mut self, flow_id: &str) -> Result<()> {
        self.release_capture(flow_id)
    }

    fn prepare_target(&mut self, target: &Target, schema: &Schema) -> Result<()> {
        self.upsert_only.remove(&target.table);
        sql::prepare(self, target, schema)
    }

    fn write(&mut self, target: &Target, changes: &[Change]) -> Result<()> {
        self.write_batch(target, changes)
    }
    /// Upserts and deletes of disjoint keys lock only their own rows and index entries.
    fn concurrent_writes(&self) -> bool {
        true
    }
}

impl SqlTarget for Postgres {
    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote(&self.schema), quote(table))
    }
    fn quote_name(&self, name: &str) -> String {
        quote(name)
    }
    fn column_type(&self, field: &Field, _is_key: bool) -> String {
        column_type(field)
    }
    fn ddl(&mut self, sql: &str) -> Result<()> {
        self.batch(sql)
    }
    fn clear(&mut self, table: &str) -> Result<()> {
        self.batch(&format!("TRUNCATE {}", self.qualified(table)))
    }
    fn target_schema(&mut self, table: &str) -> Result<Schema> {
        self.cached_schema(table)
    }
    fn forget(&mut self, table: &str) {
        self.schemas.remove(table);
    }
}

#[cfg(test)]
mod class_tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_once() {
        for transient in ["40001", "40P01", "53300", "57P01", "08006", "08001"] {
            assert_eq!(pg_class(transient), ErrorKind::Unavailable, "{transient}");
        }
        assert_eq!(pg_class("28P01"), ErrorKind::Auth);
        assert_eq!(pg_class("42501"), ErrorKind::Auth);
        assert_eq!(pg_class("42P01"), ErrorKind::NotFound);
        assert_eq!(pg_class("23505"), ErrorKind::Rejected);
        assert_eq!(pg_class("53100"), ErrorKind::Data, "a full disk is not a record to skip");
    }
}
