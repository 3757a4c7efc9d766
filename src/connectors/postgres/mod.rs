//! PostgreSQL connector (tokio-postgres for SQL, pgwire-replication for logical replication).
//!
//! Source: the snapshot reads each table inside one `REPEATABLE READ` transaction through a
//! cursor, `FETCH`ing batches; CDC streams `pgoutput` from a replication slot and a publication
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
//! `jsonb_populate_recordset … ON CONFLICT DO UPDATE`, deletes through `… WHERE (key) IN (…)`.
//!
//! Replica identity is left as the user set it: with the default, deletes carry the key only,
//! which is all a keyed target needs.

mod pgoutput;

use crate::connectors::sql::{self, Run, SqlTarget, Written};
use crate::connectors::{Connector, ExistingData, Position, UniqueKey, config_string};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Change, Event, Field, FieldType, Record, Schema};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

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
    /// The columns each target table's flow writes.
    written: Written,
    repl: Option<Replication>,
    /// When the flow's slot and publication were last checked (every few seconds of CDC).
    checked: Option<Instant>,
}

struct Replication {
    client: pgwire_replication::ReplicationClient,
    decoder: pgoutput::Decoder,
    /// Events of the transaction being received, not yet handed out.
    pending: Vec<Event>,
    slot: String,
    /// The transaction being received: its commit LSN and time, how many of its changes were
    /// handed out (in earlier batches or before a restart), and how many are still to skip.
    txn: Option<(String, i64)>,
    txn_done: u64,
    txn_skip: u64,
    /// After a restart inside a transaction: its commit LSN, to check the one that arrives.
    txn_expect: Option<String>,
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
        _ => ErrorKind::Data,
    }
}

/// Slot and publication names for a flow (lowercase, ≤ 63 bytes, as PostgreSQL wants them).
pub fn slot_name(flow_id: &str) -> String {
    let clean: String = flow_id.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    format!("tap_{}", &clean[..clean.len().min(50)])
}

impl Postgres {
    pub fn open(config: &Value) -> Result<Self> {
        let host = config_string(config, "host").unwrap_or_else(|| "127.0.0.1".into());
        let port: u16 = config_string(config, "port")
            .unwrap_or_else(|| "5432".into())
            .parse()
            .map_err(|_| Error::config("PostgreSQL port must be a number"))?;
        let database = config_string(config, "database")
            .ok_or_else(|| Error::config("PostgreSQL connection needs \"database\""))?;
        let user = config_string(config, "user")
            .or_else(|| config_string(config, "username"))
            .ok_or_else(|| Error::config("PostgreSQL connection needs \"user\""))?;
        let password = config_string(config, "password").unwrap_or_default();
        let schema = config_string(config, "schema").unwrap_or_else(|| "public".into());
        let rt = crate::connectors::blocking::Blocking::new()?;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&host).port(port).dbname(&database).user(&user).connect_timeout(Duration::from_secs(10));
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
            written: Written::default(),
            repl: None,
            checked: None,
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

    /// CDC needs the key of updated and deleted rows in the WAL: a primary key (the default
    /// replica identity), a replica identity index, or FULL. Without one PostgreSQL would also
    /// refuse the table's updates once it is published, so the flow is refused instead, with
    /// the statement that fixes it.
    fn require_replica_identity(&mut self, table: &str) -> Result<()> {
        let rows = self.query(
            "SELECT c.relreplident::text, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            &[&self.schema, &table],
        )?;
        let Some(row) = rows.first() else { return Ok(()) };
        let (identity, has_pk): (String, bool) = (row.get(0), row.get(1));
        if identity == "f" || identity == "i" || (identity == "d" && has_pk) {
            return Ok(());
        }
        let q = self.qualified(table);
        let fix = match self.unique_keys(table)?.into_iter().find(|u| u.not_null) {
            Some(u) => format!("ALTER TABLE {q} REPLICA IDENTITY USING INDEX {}", quote(&u.name)),
            None => format!("ALTER TABLE {q} REPLICA IDENTITY FULL"),
        };
        let why = if identity == "n" { "its replica identity is NOTHING" } else { "it has no primary key" };
        Err(Error::config(format!(
            "PostgreSQL table {table}: {why}, so its updates and deletes carry no key for CDC (and PostgreSQL \
             refuses them once the table is published); run `{fix};` and start the flow again"
        )))
    }

    /// The flow's replication slot and publication exist and every table is still published:
    /// a table dropped (or dropped and recreated) leaves the publication, and a slot dropped
    /// outside tap takes the changes since with it — either way changes would stop arriving
    /// without a word, so the flow stops instead.
    fn require_capture(&mut self, flow_id: &str, tables: &[String]) -> Result<()> {
        let name = slot_name(flow_id);
        if self.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&name])?.is_empty() {
            return Err(Error::not_found(format!(
                "PostgreSQL replication slot {name} of this flow is gone (dropped outside tap), and the \
                 changes it held with it; reset the flow to copy again"
            )));
        }
        if self.query("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])?.is_empty() {
            return Err(Error::not_found(format!(
                "PostgreSQL publication {name} of this flow is gone (dropped outside tap); reset the flow to copy again"
            )));
        }
        let published: Vec<String> = self
            .query(
                "SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2",
                &[&name, &self.schema],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for t in tables {
            if !published.contains(t) {
                let exists = !self
                    .query(
                        "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
                        &[&self.schema, t],
                    )?
                    .is_empty();
                let what = if exists { "was dropped and recreated" } else { "was dropped" };
                return Err(Error::not_found(format!(
                    "PostgreSQL source {}.{}: table {t} {what}, which took it out of the flow's publication \
                     {name}, so its changes are no longer seen; reset the flow to copy it again",
                    self.database, self.schema
                )));
            }
        }
        Ok(())
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

/// Map a PostgreSQL type (information_schema `data_type`, `udt_name`) to a field type.
pub fn field_type(data_type: &str, udt: &str) -> FieldType {
    match udt {
        "int2" | "int4" | "int8" | "oid" => FieldType::Integer,
        "numeric" => FieldType::Decimal,
        "float4" | "float8" => FieldType::Float,
        "bool" => FieldType::Boolean,
        "bytea" => FieldType::Bytes,
        "date" => FieldType::Date,
        "timestamp" => FieldType::Timestamp,
        "timestamptz" => FieldType::TimestampTz,
        "json" | "jsonb" => FieldType::Json,
        _ if data_type == "ARRAY" => FieldType::Json,
        _ => FieldType::Text,
    }
}

pub fn declared_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Integer => "BIGINT",
        FieldType::Decimal => "NUMERIC",
        FieldType::Float => "DOUBLE PRECISION",
        FieldType::Text => "TEXT",
        FieldType::Bytes => "BYTEA",
        FieldType::Boolean => "BOOLEAN",
        FieldType::Date => "DATE",
        FieldType::Timestamp => "TIMESTAMP",
        FieldType::TimestampTz => "TIMESTAMPTZ",
        FieldType::Json => "JSONB",
    }
}

/// The column type for a target field: the source's own type when PostgreSQL has it (so
/// `numeric(10,2)` and `varchar(32)` survive a copy), else the model type's mapping.
pub fn column_type(f: &Field) -> String {
    let t = f.data_type.trim().to_ascii_lowercase();
    let parameterized = ["numeric(", "decimal(", "character varying(", "varchar(", "character(", "char("];
    let plain = [
        "integer",
        "smallint",
        "bigint",
        "real",
        "double precision",
        "text",
        "boolean",
        "date",
        "timestamp without time zone",
        "timestamp with time zone",
        "jsonb",
        "json",
        "bytea",
        "uuid",
        "int",
        "timestamp",
    ];
    let fits = match f.ty {
        FieldType::Decimal => t.starts_with("numeric") || t.starts_with("decimal"),
        FieldType::Text => parameterized.iter().any(|p| t.starts_with(p)) || t == "text" || t == "uuid",
        _ => plain.contains(&t.as_str()),
    };
    if fits
        && (parameterized.iter().any(|p| t.starts_with(p) && t.ends_with(')'))
            || plain.contains(&t.as_str())
            || t == "numeric")
    {
        t
    } else {
        declared_type(f.ty).to_string()
    }
}

/// Bring a `row_to_json` record to the model's conventions: timestamps with a space, bytes as
/// plain hex.
fn normalize(rec: &mut Record, schema: &Schema) {
    for f in &schema.fields {
        if let Some(Value::String(s)) = rec.get_mut(&f.name) {
            match f.ty {
                FieldType::Timestamp | FieldType::TimestampTz if s.len() > 10 && s.as_bytes()[10] == b'T' => {
                    s.replace_range(10..11, " ");
                }
                FieldType::Bytes => {
                    if let Some(h) = s.strip_prefix("\\x") {
                        *s = h.to_string();
                    }
                }
                _ => {}
            }
        }
    }
}

/// A value for `jsonb_populate_recordset`: bytes get PostgreSQL's hex prefix, nested values stay JSON.
fn to_pg_json(v: &Value, ty: Option<FieldType>) -> Value {
    match (v, ty) {
        (Value::String(s), Some(FieldType::Bytes)) if !s.starts_with("\\x") => json!(format!("\\x{s}")),
        _ => v.clone(),
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

    fn sample(&mut self, table: &str, limit: usize) -> Result<Vec<Record>> {
        self.find(table, &Record::new(), limit)
    }

    fn find(&mut self, table: &str, filter: &Record, limit: usize) -> Result<Vec<Record>> {
        let schema = self.schema(table)?;
        // Compared as text: a filter comes from a command line.
        let texts: Vec<String> =
            filter.values().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect();
        let cond: Vec<String> =
            filter.keys().enumerate().map(|(i, k)| format!("tap_row.{}::text = ${}", quote(k), i + 1)).collect();
        let where_ = if cond.is_empty() { String::new() } else { format!(" WHERE {}", cond.join(" AND ")) };
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            texts.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let rows = self.query(
            &format!("SELECT row_to_json(tap_row)::text FROM {} tap_row{where_} LIMIT {limit}", self.qualified(table)),
            &params,
        )?;
        rows.iter()
            .map(|r| {
                let mut rec: Record = serde_json::from_str(&r.get::<_, String>(0))?;
                normalize(&mut rec, &schema);
                Ok(rec)
            })
            .collect()
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
        let name = slot_name(flow_id);
        let level = self.query("SHOW wal_level", &[])?.first().map(|r| r.get::<_, String>(0)).unwrap_or_default();
        if level != "logical" {
            return Err(Error::config(format!(
                "PostgreSQL at {}:{} has wal_level={level}; CDC needs wal_level=logical (set it in postgresql.conf and restart)",
                self.host, self.port
            )));
        }
        let list: Vec<String> = tables.iter().map(|t| self.qualified(t)).collect();
        for t in tables {
            self.require_table(t)?;
            self.require_replica_identity(t)?;
        }
        if resume {
            // A slot or publication made anew, or a table published again, would have missed
            // the changes since: what captured them must all still be there.
            self.require_capture(flow_id, tables)?;
        }
        let exists = !self.query("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])?.is_empty();
        if exists {
            self.batch(&format!("ALTER PUBLICATION {} SET TABLE {}", quote(&name), list.join(", ")))?;
        } else {
            self.batch(&format!("CREATE PUBLICATION {} FOR TABLE {}", quote(&name), list.join(", ")))?;
        }
        let slot = !self.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&name])?.is_empty();
        if !slot {
            self.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&name]).map_err(|e| {
                let hint = if e.message.contains("42501") || e.message.contains("permission") {
                    " (the user needs the REPLICATION attribute)"
                } else if e.message.contains("53400") {
                    " (raise max_replication_slots, or reset/delete flows that no longer run)"
                } else {
                    ""
                };
                Error::config(format!("cannot create replication slot {name}: {}{hint}", e.message))
            })?;
        }
        Ok(())
    }

    fn cdc_position(&mut self, _flow_id: &str) -> Result<Position> {
        let rows = self.query("SELECT pg_current_wal_lsn()::text", &[])?;
        Ok(json!({"lsn": rows.first().map(|r| r.get::<_, String>(0)).unwrap_or_else(|| "0/0".into())}))
    }

    fn snapshot(&mut self, table: &str, batch: usize, emit: &mut dyn FnMut(Vec<Record>) -> Result<()>) -> Result<()> {
        let schema = self.schema(table)?;
        let q = self.qualified(table);
        self.batch(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; DECLARE tap_snapshot NO SCROLL CURSOR FOR SELECT row_to_json(tap_row)::text FROM {q} tap_row"
        ))?;
        let result = (|| {
            loop {
                let rows = self.query(&format!("FETCH {batch} FROM tap_snapshot"), &[])?;
                if rows.is_empty() {
                    return Ok(());
                }
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let mut rec: Record = serde_json::from_str(r.get::<_, &str>(0))?;
                    normalize(&mut rec, &schema);
                    out.push(rec);
                }
                emit(out)?;
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
        if self.repl.is_none() || self.checked.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
            self.require_capture(flow_id, tables)?;
            self.checked = Some(Instant::now());
        }
        let from_lsn = from.get("lsn").and_then(Value::as_str).unwrap_or("0/0").to_string();
        let committed = from_lsn.clone();
        if self.repl.is_none() {
            let slot = slot_name(flow_id);
            let start = pgwire_replication::Lsn::parse(&from_lsn)
                .map_err(|e| Error::internal(format!("bad LSN {from_lsn}: {e}")))?;
            let cfg = pgwire_replication::ReplicationConfig::new(
                self.host.clone(),
                self.user.clone(),
                self.password.clone(),
                self.database.clone(),
                slot.clone(),
                slot.clone(),
            )
            .with_port(self.port)
            .with_tls(pgwire_replication::TlsConfig::disabled())
            .with_start_lsn(start);
            let client = self
                .rt
                .run(pgwire_replication::ReplicationClient::connect(cfg))?
                .map_err(|e| Error::unavailable(format!("PostgreSQL replication from slot {slot}: {e}")))?;
            self.repl = Some(Replication {
                client,
                decoder: pgoutput::Decoder::default(),
                pending: Vec::new(),
                slot,
                txn: None,
                txn_done: 0,
                txn_skip: from.get("skip").and_then(Value::as_u64).unwrap_or(0),
                txn_expect: from.get("txn").and_then(Value::as_str).map(str::to_string),
            });
        }
        let deadline = Instant::now() + wait;
        let mut out: Vec<Event> = Vec::new();
        let mut position = if from.is_object() { from.clone() } else { json!({"lsn": from_lsn}) };
        let schema_name = self.schema.clone();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let repl = self.repl.as_mut().ok_or_else(|| Error::internal("replication"))?;
            // Once something is ready, only drain what is already there.
            let timeout = if out.is_empty() { remaining } else { Duration::from_millis(1) };
            let next = self.rt.run(async { tokio::time::timeout(timeout, repl.client.recv()).await })?;
            let ev = match next {
                Err(_) => break,
                Ok(Err(e)) => {
                    self.repl = None;
                    return Err(Error::unavailable(format!("PostgreSQL replication stream: {e}")));
                }
                Ok(Ok(None)) => {
                    self.repl = None;
                    return Err(Error::unavailable("PostgreSQL replication stream ended"));
                }
                Ok(Ok(Some(ev))) => ev,
            };
            use pgwire_replication::ReplicationEvent as E;
            match ev {
                E::XLogData { data, .. } => {
                    if let Some(mut ev) = repl.decoder.decode(&data, &schema_name)? {
                        if repl.txn_skip > 0 {
                            // Already in the target before the restart.
                            repl.txn_skip -= 1;
                            repl.txn_done += 1;
                            continue;
                        }
                        ev.ts_ms = repl.txn.as_ref().map_or(0, |t| t.1);
                        if repl.pending.len() >= max {
                            // A transaction larger than a batch: hand out a batch of it (this
                            // change waits for the next), with the position inside it.
                            repl.txn_done += repl.pending.len() as u64;
                            out.append(&mut repl.pending);
                            repl.pending.push(ev);
                            let base = position.get("lsn").and_then(Value::as_str).unwrap_or(&committed).to_string();
                            let commit = repl.txn.as_ref().map(|t| t.0.clone()).unwrap_or_default();
                            position = json!({"lsn": base, "txn": commit, "skip": repl.txn_done});
                            break;
                        }
                        repl.pending.push(ev);
                    }
                }
                E::Begin { final_lsn, commit_time_micros, .. } => {
                    let commit = final_lsn.to_string();
                    if let Some(expected) = repl.txn_expect.take()
                        && repl.txn_skip > 0
                        && expected != commit
                    {
                        return Err(Error::data(format!(
                            "PostgreSQL replication resumed at the transaction committed at {commit}, not at \
                             {expected} (whose first {} changes the target already has); reset the flow",
                            repl.txn_skip
                        )));
                    }
                    repl.pending.clear();
                    repl.txn = Some((commit, commit_time_micros / 1000 + 946_684_800_000));
                }
                E::Commit { end_lsn, .. } => {
                    out.append(&mut repl.pending);
                    repl.txn = None;
                    repl.txn_done = 0;
                    repl.txn_skip = 0;
                    position = json!({"lsn": end_lsn.to_string()});
                    if out.len() >= max {
                        break;
                    }
                }
                _ => {}
            }
            if Instant::now() >= deadline && !out.is_empty() {
                break;
            }
        }
        Ok((out, position))
    }

    fn cdc_ack(&mut self, _flow_id: &str, position: &Position) -> Result<()> {
        if let (Some(repl), Some(lsn)) = (&self.repl, position.get("lsn").and_then(Value::as_str))
            && let Ok(lsn) = pgwire_replication::Lsn::parse(lsn)
        {
            repl.client.update_applied_lsn(lsn);
        }
        Ok(())
    }

    fn cdc_release(&mut self, flow_id: &str) -> Result<()> {
        if let Some(mut r) = self.repl.take() {
            let _ = self.rt.run(r.client.shutdown())?;
            let _ = r.slot;
        }
        let name = slot_name(flow_id);
        // The slot may still be held by a stream that is closing: retry briefly.
        for attempt in 0..20 {
            let rows = self.query("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&name])?;
            match rows.first().map(|r| r.get::<_, bool>(0)) {
                None => break,
                Some(false) => {
                    self.query("SELECT pg_drop_replication_slot($1)", &[&name])?;
                    break;
                }
                Some(true) if attempt < 19 => std::thread::sleep(Duration::from_millis(250)),
                Some(true) => return Err(Error::unavailable(format!("replication slot {name} is still in use"))),
            }
        }
        self.batch(&format!("DROP PUBLICATION IF EXISTS {}", quote(&name)))?;
        Ok(())
    }

    fn prepare_target(&mut self, table: &str, schema: &Schema, key: &[String], existing: ExistingData) -> Result<()> {
        sql::prepare(self, table, schema, key, existing)
    }

    fn write(&mut self, table: &str, key: &[String], changes: &[Change]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::schema(format!("target table {table} has no key to write by")));
        }
        let cols = sql::columns(self, table, key, changes)?;
        let ty = |name: &str| cols.iter().find(|(c, _)| c == name).map(|(_, t)| *t);
        let q = self.qualified(table);
        let key_list = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        let col_list = cols.iter().map(|(c, _)| quote(c)).collect::<Vec<_>>().join(", ");
        let updates: Vec<String> = cols
            .iter()
            .filter(|(c, _)| !key.contains(c))
            .map(|(c, _)| format!("{0} = EXCLUDED.{0}", quote(c)))
            .collect();
        let conflict =
            if updates.is_empty() { "DO NOTHING".into() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
        // Each run is one statement over a JSON array of its images: a column an image lacks
        // reads NULL.
        let payload = |images: &[&Record], fields: &mut dyn Iterator<Item = &String>| -> String {
            let fields: Vec<&String> = fields.collect();
            let rows: Vec<Value> = images
                .iter()
                .map(|r| {
                    Value::Object(
                        fields.iter().filter_map(|f| r.get(*f).map(|v| ((*f).clone(), to_pg_json(v, ty(f))))).collect(),
                    )
                })
                .collect();
            Value::Array(rows).to_string()
        };
        let mut statements: Vec<(String, String)> = Vec::new();
        for run in sql::plan(changes, key) {
            match run {
                Run::Upsert(images) => statements.push((
                    format!(
                        "INSERT INTO {q} ({col_list}) SELECT {col_list} FROM jsonb_populate_recordset(NULL::{q}, $1::text::jsonb) ON CONFLICT ({key_list}) {conflict}"
                    ),
                    payload(&images, &mut cols.iter().map(|(c, _)| c)),
                )),
                Run::Delete(images) => statements.push((
                    format!(
                        "DELETE FROM {q} WHERE ({key_list}) IN (SELECT {key_list} FROM jsonb_populate_recordset(NULL::{q}, $1::text::jsonb))"
                    ),
                    payload(&images, &mut key.iter()),
                )),
            }
        }
        let client = &mut self.client;
        self.rt
            .run(async {
                let tx = client.transaction().await?;
                for (sql, payload) in &statements {
                    tx.execute(sql.as_str(), &[payload]).await?;
                }
                tx.commit().await
            })?
            .map_err(pg_err)
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
    fn written(&mut self) -> &mut Written {
        &mut self.written
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
        assert_eq!(pg_class("23505"), ErrorKind::Data);
    }
}
