//! MySQL connector (mysql_async), tested on MariaDB 10.11; coded to the standard protocol so it
//! also serves MySQL 8.
//!
//! Source: the snapshot reads each table in a `START TRANSACTION WITH CONSISTENT SNAPSHOT`; CDC
//! reads the binlog as a replica (ROW events, full row images). A position is the binlog file and
//! offset plus the GTID state after the last whole transaction handed out; a transaction larger
//! than a batch is handed out in batches, each position naming how many of its changes are done
//! (`skip`), so memory follows the batch size and a restart re-reads the transaction from its
//! start and skips what the target already has. The GTID state is that at the position's
//! point (MariaDB `domain-server-seq` list, or MySQL's executed GTID set, see [`gtid`]); a
//! stream resumes by GTID whenever the position has one, so it survives purged or renamed
//! binlog files and a failover to another server of the topology, else by file and offset. Before CDC starts the server is checked
//! and any missing setting or privilege is named (`log_bin`, `binlog_format=ROW`,
//! `binlog_row_image=FULL`, REPLICATION SLAVE/CLIENT). Column names come from the binlog
//! when the server sends them (`binlog_row_metadata=FULL`), else from the table's schema.
//!
//! Target: tables created from the flow's schema with a primary key on the flow's key; batches
//! are multi-row `INSERT … ON DUPLICATE KEY UPDATE` and `DELETE … WHERE (key) IN (…)` in one
//! transaction.

pub mod gtid;

use crate::connectors::sql::{self, Run, SqlTarget, Written};
use crate::connectors::{Connector, ExistingData, Position, UniqueKey, config_string, hex, unhex};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Change, Event, Field, FieldType, Record, Schema};
use futures_util::StreamExt;
use gtid::Gtid;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Opts, OptsBuilder, Value as My};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Mysql {
    rt: crate::connectors::blocking::Blocking,
    conn: Option<Conn>,
    opts: Opts,
    database: String,
    schemas: HashMap<String, Schema>,
    /// The columns each target table's flow writes.
    written: Written,
    stream: Option<BinlogStream>,
    /// Events of the transaction being read, not yet handed out.
    pending: Vec<Event>,
    /// The position after the last whole transaction handed out: where the transaction being
    /// read starts.
    txn_base: Position,
    /// Changes of the transaction being read already handed out (in earlier batches, or before
    /// a restart), and how many of them are still to be skipped after a restart.
    txn_done: u64,
    txn_skip: u64,
    /// After a restart inside a transaction: its GTID, checked against the one that arrives.
    txn_expect: Option<String>,
    /// Where the binlog stream stands: the file being read.
    file: String,
    /// MariaDB (GTIDs `domain-server-seq`) rather than MySQL (GTID sets).
    mariadb: bool,
    /// The GTID state at the last commit handed out, when the stream tracks one.
    gtid: Option<Gtid>,
    /// The GTID of the transaction being read: MariaDB (domain, server, seq, standalone) or
    /// MySQL (source, gno).
    pending_gtid: Option<PendingGtid>,
}

#[derive(Debug, Clone)]
enum PendingGtid {
    MariaDb { domain: u32, server: u32, seq: u64, standalone: bool },
    Mysql { source: String, gno: u64 },
}

pub fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// A driver error in its class, decided once here from the server's error code.
fn my_err(e: mysql_async::Error) -> Error {
    match &e {
        mysql_async::Error::Server(s) => Error::new(my_class(s.code), format!("MySQL: {} ({})", s.message, s.code)),
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => Error::unavailable(format!("MySQL: {e}")),
        _ => Error::data(format!("MySQL: {e}")),
    }
}

/// The class of a MySQL server error: transient ones are retried, the rest stop the flow.
pub fn my_class(code: u16) -> ErrorKind {
    match code {
        // lock wait timeout, deadlock, too many connections, server gone away, lost connection,
        // server shutdown in progress
        1205 | 1213 | 1040 | 2006 | 2013 | 1053 => ErrorKind::Unavailable,
        // access denied (user, database, table, column), missing privilege
        1044 | 1045 | 1142 | 1143 | 1227 => ErrorKind::Auth,
        // unknown database, table, column
        1049 | 1146 | 1054 => ErrorKind::NotFound,
        _ => ErrorKind::Data,
    }
}

/// A replica server id for a flow, stable across restarts and unlikely to collide.
fn server_id(flow_id: &str) -> u32 {
    let h = flow_id.bytes().fold(2166136261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619));
    100_000 + h % 1_000_000_000
}

/// Map MySQL's information_schema `DATA_TYPE` / `COLUMN_TYPE` to a field type.
pub fn field_type(data_type: &str, column_type: &str) -> FieldType {
    match data_type {
        "tinyint" if column_type.starts_with("tinyint(1)") => FieldType::Boolean,
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "bit" | "year" => FieldType::Integer,
        "decimal" | "numeric" => FieldType::Decimal,
        "float" | "double" | "real" => FieldType::Float,
        "binary" | "varbinary" | "blob" | "tinyblob" | "mediumblob" | "longblob" => FieldType::Bytes,
        "date" => FieldType::Date,
        "datetime" => FieldType::Timestamp,
        // A TIMESTAMP is an instant (stored in UTC); the connector's sessions run in UTC.
        "timestamp" => FieldType::TimestampTz,
        "json" => FieldType::Json,
        _ => FieldType::Text,
    }
}

/// The column type a target field gets; the source's own type when it is a MySQL one.
fn column_type(f: &Field, is_key: bool) -> String {
    // The source's own type is kept when it is exactly a MySQL type (`decimal(10,2)`,
    // `varchar(40)`, `int`) of the same model type: another database's `int64` is not one.
    let t = f.data_type.to_ascii_lowercase();
    let (base, args) = t.split_once('(').unwrap_or((t.as_str(), ""));
    let args_ok = args.is_empty()
        || (args.ends_with(')') && args[..args.len() - 1].chars().all(|c| c.is_ascii_digit() || c == ','));
    let same_type = field_type(base, &t) == f.ty;
    let keep =
        ["decimal", "varchar", "char", "int", "bigint", "smallint", "tinyint", "double", "float", "date", "datetime"];
    if keep.contains(&base) && args_ok && same_type {
        return t;
    }
    match f.ty {
        FieldType::Integer => "BIGINT".into(),
        FieldType::Decimal => "DECIMAL(38,10)".into(),
        FieldType::Float => "DOUBLE".into(),
        FieldType::Text if is_key => "VARCHAR(255)".into(),
        FieldType::Text => "LONGTEXT".into(),
        FieldType::Bytes if is_key => "VARBINARY(255)".into(),
        FieldType::Bytes => "LONGBLOB".into(),
        FieldType::Boolean => "BOOLEAN".into(),
        FieldType::Date => "DATE".into(),
        FieldType::Timestamp | FieldType::TimestampTz => "DATETIME(6)".into(),
        FieldType::Json => "JSON".into(),
    }
}

/// A MySQL value as JSON, typed by the field.
fn to_json(v: My, ty: Option<FieldType>) -> Value {
    match v {
        My::NULL => Value::Null,
        My::Int(i) if ty == Some(FieldType::Boolean) => Value::Bool(i != 0),
        My::Int(i) => json!(i),
        My::UInt(u) => json!(u),
        My::Float(f) => serde_json::Number::from_f64(f64::from(f)).map(Value::Number).unwrap_or(Value::Null),
        My::Double(f) => serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
        My::Date(y, mo, d, h, mi, s, us) => {
            if ty == Some(FieldType::Date) {
                json!(format!("{y:04}-{mo:02}-{d:02}"))
            } else if ty == Some(FieldType::TimestampTz) {
                let frac = if us > 0 { format!(".{us:06}") } else { String::new() };
                json!(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{frac}+00:00"))
            } else if us > 0 {
                json!(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"))
            } else {
                json!(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
            }
        }
        My::Time(neg, d, h, m, s, _) => {
            json!(format!("{}{:02}:{m:02}:{s:02}", if neg { "-" } else { "" }, u32::from(h) + d * 24))
        }
        My::Bytes(b) => match ty {
            Some(FieldType::Bytes) => json!(hex(&b)),
            Some(FieldType::Decimal | FieldType::Float | FieldType::Integer) => {
                let s = String::from_utf8_lossy(&b);
                s.parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| {
                        s.parse::<f64>()
                            .map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null))
                    })
                    .unwrap_or_else(|_| Value::String(s.into_owned()))
            }
            Some(FieldType::Json) => {
                let s = String::from_utf8_lossy(&b);
                serde_json::from_str(&s).unwrap_or_else(|_| Value::String(s.into_owned()))
            }
            Some(FieldType::Boolean) => Value::Bool(b.first().is_some_and(|c| *c != 0 && *c != b'0')),
            _ => Value::String(String::from_utf8_lossy(&b).into_owned()),
        },
    }
}

/// Seconds (and microseconds) since the epoch as a MySQL date-time value in UTC.
fn epoch_to_my(secs: i64, micros: u32) -> My {
    use chrono::{Datelike, Timelike};
    match chrono::DateTime::from_timestamp(secs, micros * 1000) {
        Some(t) => My::Date(
            t.year() as u16,
            t.month() as u8,
            t.day() as u8,
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
            micros,
        ),
        None => My::Int(secs),
    }
}

/// A JSON value as a MySQL parameter.
fn to_my(v: &Value, ty: Option<FieldType>) -> My {
    match v {
        Value::Null => My::NULL,
        Value::Bool(b) => My::Int(i64::from(*b)),
        Value::Number(n) => n.as_i64().map(My::Int).unwrap_or_else(|| My::Double(n.as_f64().unwrap_or(0.0))),
        Value::String(s) if ty == Some(FieldType::Bytes) => {
            My::Bytes(unhex(s).unwrap_or_else(|| s.as_bytes().to_vec()))
        }
        // The type is the target column's (a DATETIME reads back as a timestamp), so any
        // timestamp text may carry an offset; naive ones skip the parsing (`zoned_to_utc`).
        Value::String(s) if matches!(ty, Some(FieldType::Timestamp | FieldType::TimestampTz)) => {
            My::Bytes(crate::model::naive_text(s).into_bytes())
        }
        Value::String(s) => My::Bytes(s.as_bytes().to_vec()),
        other => My::Bytes(other.to_string().into_bytes()),
    }
}

impl Mysql {
    pub fn open(config: &Value) -> Result<Self> {
        let host = config_string(config, "host").unwrap_or_else(|| "127.0.0.1".into());
        let port: u16 = config_string(config, "port")
            .unwrap_or_else(|| "3306".into())
            .parse()
            .map_err(|_| Error::config("MySQL port must be a number"))?;
        let database =
            config_string(config, "database").ok_or_else(|| Error::config("MySQL connection needs \"database\""))?;
        let user = config_string(config, "user")
            .or_else(|| config_string(config, "username"))
            .ok_or_else(|| Error::config("MySQL connection needs \"user\" (or \"username\")"))?;
        let password = config_string(config, "password");
        let opts: Opts = OptsBuilder::default()
            .ip_or_hostname(host.clone())
            .tcp_port(port)
            .user(Some(user.clone()))
            .pass(password)
            .db_name(Some(database.clone()))
            .prefer_socket(false)
            // TIMESTAMP columns are read and written in UTC (see `field_type`).
            .init(vec!["SET time_zone = '+00:00'"])
            .into();
        let rt = crate::connectors::blocking::Blocking::new()?;
        let conn = rt
            .run(async { tokio::time::timeout(Duration::from_secs(10), Conn::new(opts.clone())).await })?
            .map_err(|_| Error::unavailable(format!("cannot connect to MySQL at {host}:{port}: timed out")))?
            .map_err(|e| {
                Error::unavailable(format!("cannot connect to MySQL at {host}:{port}/{database} as {user}: {e}"))
            })?;
        let mut conn = conn;
        let version: Option<String> = rt.run(conn.query_first("SELECT VERSION()"))?.map_err(my_err)?;
        let mariadb = version.unwrap_or_default().to_ascii_lowercase().contains("mariadb");
        Ok(Self {
            mariadb,
            gtid: None,
            pending_gtid: None,
            rt,
            conn: Some(conn),
            opts,
            database,
            schemas: HashMap::new(),
            written: Written::default(),
            stream: None,
            pending: Vec::new(),
            txn_base: Value::Null,
            txn_done: 0,
            txn_skip: 0,
            txn_expect: None,
            file: String::new(),
        })
    }

    fn rows<T: mysql_async::prelude::FromRow + Send + 'static>(&mut self, sql: &str) -> Result<Vec<T>> {
        let rt = &self.rt;
        let conn = self.conn.as_mut().ok_or_else(|| Error::internal("MySQL connection"))?;
        rt.run(conn.query(sql))?.map_err(my_err)
    }

    fn exec(&mut self, sql: &str, params: Vec<My>) -> Result<()> {
        let rt = &self.rt;
        let conn = self.conn.as_mut().ok_or_else(|| Error::internal("MySQL connection"))?;
        rt.run(conn.exec_drop(sql, params))?.map_err(my_err)
    }

    fn cached_schema(&mut self, table: &str) -> Result<Schema> {
        if let Some(s) = self.schemas.get(table) {
            return Ok(s.clone());
        }
        let s = self.schema(table)?;
        self.schemas.insert(table.to_string(), s.clone());
        Ok(s)
    }

    fn variable(&mut self, name: &str) -> Result<String> {
        let rows: Vec<(String, String)> = self.rows(&format!("SHOW GLOBAL VARIABLES LIKE '{name}'"))?;
        Ok(rows.into_iter().next().map(|(_, v)| v).unwrap_or_default())
    }

    /// Decode one binlog row image into a record.
    fn image(&mut self, table: &str, row: mysql_async::binlog::row::BinlogRow) -> Result<Record> {
        let schema = self.cached_schema(table)?;
        let names: Vec<String> = row.columns_ref().iter().map(|c| c.name_str().to_string()).collect();
        let by_ordinal = names.iter().all(|n| n.is_empty());
        let values = row.unwrap();
        let mut rec = Record::with_capacity(values.len());
        for (i, v) in values.into_iter().enumerate() {
            let name = if by_ordinal {
                schema.fields.get(i).map(|f| f.name.clone()).unwrap_or_else(|| format!("col{i}"))
            } else {
                names[i].clone()
            };
            let ty = schema.field(&name).map(|f| f.ty);
            let value: My = My::try_from(v).map_err(|e| Error::data(format!("binlog value of {table}.{name}: {e}")))?;
            let value = match (ty, value) {
                // The binlog carries a TIMESTAMP as seconds since the epoch ("s" or "s.ffffff").
                (Some(FieldType::TimestampTz), My::Int(secs)) => epoch_to_my(secs, 0),
                (Some(FieldType::TimestampTz), My::Bytes(b)) => {
                    let text = String::from_utf8_lossy(&b).into_owned();
                    let (secs, frac) = text.split_once('.').unwrap_or((text.as_str(), ""));
                    match secs.parse::<i64>() {
                        Ok(secs) => {
                            let micros = format!("{frac:0<6}").get(..6).and_then(|f| f.parse().ok()).unwrap_or(0);
                            epoch_to_my(secs, micros)
                        }
                        Err(_) => My::Bytes(b),
                    }
                }
                (_, v) => v,
            };
            rec.insert(name, to_json(value, ty));
        }
        Ok(rec)
    }
}

impl Connector for Mysql {
    fn test(&mut self) -> Result<()> {
        let _: Vec<u8> = self.rows("SELECT 1")?;
        Ok(())
    }

    fn tables(&mut self) -> Result<Vec<String>> {
        let db = self.database.replace('\'', "''");
        self.rows(&format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '{db}' AND table_type IN ('BASE TABLE', 'VIEW') ORDER BY 1"
        ))
    }

    fn schema(&mut self, table: &str) -> Result<Schema> {
        let (db, t) = (self.database.replace('\'', "''"), table.replace('\'', "''"));
        let rows: Vec<(String, String, String, String, String)> = self.rows(&format!(
            "SELECT column_name, data_type, column_type, is_nullable, column_key FROM information_schema.columns
             WHERE table_schema = '{db}' AND table_name = '{t}' ORDER BY ordinal_position"
        ))?;
        if rows.is_empty() {
            let all = self.tables()?;
            return Err(Error::not_found(format!(
                "table {table} does not exist in MySQL database {}; it has: {}",
                self.database,
                if all.is_empty() { "no tables".into() } else { all.join(", ") }
            )));
        }
        // MariaDB's JSON is LONGTEXT with a json_valid() check: find those columns.
        let checks: Vec<String> = self
            .rows(&format!(
                "SELECT check_clause FROM information_schema.check_constraints WHERE constraint_schema = '{db}' AND table_name = '{t}'"
            ))
            .unwrap_or_default();
        let is_json = |name: &str| checks.iter().any(|c| c.contains(&format!("json_valid(`{name}`)")));
        let fields = rows
            .into_iter()
            .map(|(name, dt, ct, nullable, key)| Field {
                ty: if is_json(&name) {
                    FieldType::Json
                } else {
                    field_type(&dt.to_ascii_lowercase(), &ct.to_ascii_lowercase())
                },
                name,
                data_type: ct,
                primary_key: key == "PRI",
                nullable: nullable == "YES",
            })
            .collect();
        Ok(Schema { table: table.to_string(), fields })
    }

    fn unique_keys(&mut self, table: &str) -> Result<Vec<UniqueKey>> {
        self.schema(table)?;
        let (db, t) = (self.database.replace('\'', "''"), table.replace('\'', "''"));
        // A functional key part (MySQL 8) has no column name.
        let rows: Vec<(String, Option<String>, String)> = self.rows(&format!(
            "SELECT index_name, column_name, nullable FROM information_schema.statistics
             WHERE table_schema = '{db}' AND table_name = '{t}' AND non_unique = 0 AND index_name <> 'PRIMARY'
             ORDER BY index_name, seq_in_index"
        ))?;
        let mut out: Vec<(UniqueKey, bool)> = Vec::new();
        for (name, column, nullable) in rows {
            if out.last().is_none_or(|(k, _)| k.name != name) {
                out.push((UniqueKey { name: name.clone(), columns: Vec::new(), not_null: true }, true));
            }
            let (key, usable) = out.last_mut().expect("pushed");
            match column {
                Some(c) => key.columns.push(c),
                None => *usable = false,
            }
            key.not_null &= nullable != "YES";
        }
        Ok(out.into_iter().filter(|(_, usable)| *usable).map(|(k, _)| k).collect())
    }

    fn count(&mut self, table: &str) -> Result<u64> {
        self.schema(table)?;
        let n: Vec<u64> = self.rows(&format!("SELECT count(*) FROM {}", self.qualified(table)))?;
        Ok(n.first().copied().unwrap_or(0))
    }

    fn sample(&mut self, table: &str, limit: usize) -> Result<Vec<Record>> {
        self.find(table, &Record::new(), limit)
    }

    fn find(&mut self, table: &str, filter: &Record, limit: usize) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        self.snapshot_query(table, Some((limit, filter)), limit.max(1), &mut |rows| {
            out.extend(rows);
            Ok(())
        })?;
        Ok(out)
    }

    fn execute(&mut self, statement: &str) -> Result<u64> {
        let rt = &self.rt;
        let conn = self.conn.as_mut().ok_or_else(|| Error::internal("MySQL connection"))?;
        rt.run(async {
            conn.query_drop(statement).await?;
            Ok::<_, mysql_async::Error>(conn.affected_rows())
        })?
        .map_err(my_err)
    }

    fn cdc_prepare(&mut self, _flow_id: &str, tables: &[String], _resume: bool) -> Result<()> {
        let mut missing = Vec::new();
        let log_bin = self.variable("log_bin")?;
        if !log_bin.eq_ignore_ascii_case("ON") && log_bin != "1" {
            missing.push("log_bin=ON (start the server with --log-bin)".to_string());
        }
        let format = self.variable("binlog_format")?;
        if !format.eq_ignore_ascii_case("ROW") {
            missing.push(format!("binlog_format=ROW (it is {format})"));
        }
        let image = self.variable("binlog_row_image")?;
        if !image.is_empty() && !image.eq_ignore_ascii_case("FULL") {
            missing.push(format!("binlog_row_image=FULL (it is {image})"));
        }
        let grants: Vec<String> = self.rows("SHOW GRANTS")?;
        let g = grants.join(" ").to_ascii_uppercase();
        let all = g.contains("ALL PRIVILEGES ON *.*");
        if !all && !g.contains("REPLICATION SLAVE") && !g.contains("REPLICATION REPLICA") {
            missing.push("the REPLICATION SLAVE privilege (GRANT REPLICATION SLAVE ON *.* TO the user)".into());
        }
        if !all && !g.contains("REPLICATION CLIENT") && !g.contains("BINLOG MONITOR") {
            missing.push("the REPLICATION CLIENT privilege (GRANT REPLICATION CLIENT ON *.* TO the user)".into());
        }
        if !missing.is_empty() {
            return Err(Error::config(format!("MySQL CDC needs {}", missing.join("; "))));
        }
        for t in tables {
            self.schema(t)?;
        }
        Ok(())
    }

    fn cdc_position(&mut self, _flow_id: &str) -> Result<Position> {
        let rows: Vec<mysql_async::Row> = match self.rows("SHOW MASTER STATUS") {
            Ok(r) => r,
            Err(_) => self.rows("SHOW BINARY LOG STATUS")?,
        };
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| Error::config("MySQL binary logging is off: start the server with --log-bin"))?;
        let file: String = row.get(0).ok_or_else(|| Error::internal("binlog file"))?;
        let pos: u64 = row.get(1).ok_or_else(|| Error::internal("binlog position"))?;
        // The GTID state at exactly that point: MariaDB maps file+offset to it; MySQL prints
        // it beside them (Executed_Gtid_Set, empty unless gtid_mode=ON).
        let gtid = if self.mariadb {
            let rt = &self.rt;
            let conn = self.conn.as_mut().ok_or_else(|| Error::internal("MySQL connection"))?;
            rt.run(mariadb_gtid_at(conn, &file, pos))??.to_string()
        } else {
            let mut g: String = row.get::<Option<String>, _>(4).flatten().unwrap_or_default();
            g.retain(|c| !c.is_whitespace());
            g
        };
        Ok(position(&file, pos, &gtid))
    }

    fn snapshot(&mut self, table: &str, batch: usize, emit: &mut dyn FnMut(Vec<Record>) -> Result<()>) -> Result<()> {
        self.exec("START TRANSACTION WITH CONSISTENT SNAPSHOT", Vec::new())
            .or_else(|_| self.exec("START TRANSACTION", Vec::new()))?;
        let result = self.snapshot_query(table, None, batch, emit);
        let _ = self.exec(if result.is_ok() { "COMMIT" } else { "ROLLBACK" }, Vec::new());
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
        if self.stream.is_none() {
            self.open_stream(flow_id, from)?;
        }
        let deadline = Instant::now() + wait;
        let mut out: Vec<Event> = Vec::new();
        let mut position = from.clone();
        let database = self.database.clone();
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        loop {
            let timeout = if out.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::from_millis(1)
            };
            let stream = self.stream.as_mut().ok_or_else(|| Error::internal("binlog stream"))?;
            let next = self.rt.run(async { tokio::time::timeout(timeout, stream.next()).await })?;
            let event = match next {
                Err(_) => break,
                Ok(None) => {
                    self.stream = None;
                    return Err(Error::unavailable("the MySQL binlog stream ended"));
                }
                Ok(Some(Err(e))) => {
                    self.stream = None;
                    if let mysql_async::Error::Server(s) = &e
                        && s.code == 1236
                    {
                        return Err(binlog_gone(from, &s.message));
                    }
                    return Err(my_err(e));
                }
                Ok(Some(Ok(ev))) => ev,
            };
            let log_pos = u64::from(event.header().log_pos());
            if event.header().event_type_raw() == gtid::MARIADB_GTID_EVENT {
                if let Some((domain, seq, standalone)) = gtid::mariadb_gtid_event(event.data()) {
                    let server = event.header().server_id();
                    self.pending_gtid = Some(PendingGtid::MariaDb { domain, server, seq, standalone });
                    self.check_resumed_txn()?;
                }
                continue;
            }
            let data = event.read_data().map_err(|e| Error::data(format!("binlog event: {e}")))?;
            match data {
                Some(EventData::RotateEvent(r)) => {
                    self.file = String::from_utf8_lossy(r.name_raw()).into_owned();
                }
                Some(EventData::GtidEvent(g)) => {
                    let uuid = uuid_text(&g.sid());
                    let source = match g.tag() {
                        Some(tag) => format!("{uuid}:{tag}"),
                        None => uuid,
                    };
                    self.pending_gtid = Some(PendingGtid::Mysql { source, gno: g.gno() });
                    self.check_resumed_txn()?;
                }
                Some(EventData::XidEvent(_)) => {
                    out.append(&mut self.pending);
                    position = self.committed(log_pos);
                    if out.len() >= max {
                        break;
                    }
                }
                Some(EventData::QueryEvent(q)) if q.query_raw() == b"COMMIT" => {
                    out.append(&mut self.pending);
                    position = self.committed(log_pos);
                }
                Some(EventData::QueryEvent(q))
                    if q.query_raw() != b"BEGIN"
                        && let Some((table, change)) = ddl_of(&q.query(), &q.schema(), &database, tables) =>
                {
                    match change {
                        Ddl::AddColumn => {
                            // Rows from here on carry the new column: decode them by the new schema.
                            self.schemas.remove(&table);
                        }
                        Ddl::Other(what) => {
                            return Err(Error::unsupported(format!(
                                "MySQL source {database}: table {table} {what} (`{}`); the flow follows added \
                                 columns only, so it stops: reset it to copy the table again",
                                short(&q.query(), 120)
                            )));
                        }
                    }
                    if self.pending.is_empty() {
                        position = self.committed(log_pos);
                    }
                }
                Some(EventData::QueryEvent(q)) if q.query_raw() != b"BEGIN" && self.pending.is_empty() => {
                    // A statement that is its own transaction (DDL): it moves the position.
                    let standalone = match &self.pending_gtid {
                        Some(PendingGtid::MariaDb { standalone, .. }) => *standalone,
                        Some(PendingGtid::Mysql { .. }) => true,
                        None => false,
                    };
                    if standalone {
                        position = self.committed(log_pos);
                    }
                }
                Some(EventData::RowsEvent(re)) => {
                    let stream = self.stream.as_ref().ok_or_else(|| Error::internal("binlog stream"))?;
                    let Some(tme) = stream.get_tme(re.table_id()) else { continue };
                    if tme.database_name() != database.as_str() {
                        continue;
                    }
                    let table = tme.table_name().into_owned();
                    if !tables.contains(&table) {
                        continue;
                    }
                    let mut images = Vec::new();
                    for row in re.rows(tme) {
                        let (before, after) = row.map_err(|e| Error::data(format!("binlog row of {table}: {e}")))?;
                        images.push((before, after));
                    }
                    let kind = match &re {
                        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => 'i',
                        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => 'd',
                        _ => 'u',
                    };
                    let name = names.entry(table.clone()).or_insert_with(|| Arc::from(table.as_str())).clone();
                    let ts = i64::from(event.header().timestamp()) * 1000;
                    let mut handed_out = false;
                    for (before, after) in images {
                        let before = before.map(|b| self.image(&table, b)).transpose()?;
                        let after = after.map(|a| self.image(&table, a)).transpose()?;
                        let change = match (kind, before, after) {
                            ('i', _, Some(after)) => Change::Insert { after },
                            ('d', Some(before), _) => Change::Delete { before },
                            (_, before, Some(after)) => Change::Update { before, after },
                            _ => continue,
                        };
                        if self.txn_skip > 0 {
                            // Already in the target before the restart.
                            self.txn_skip -= 1;
                            self.txn_done += 1;
                            continue;
                        }
                        if self.pending.len() >= max {
                            // A transaction larger than a batch: hand out a batch of it, with
                            // the transaction's start and how much of it is done.
                            self.txn_done += self.pending.len() as u64;
                            out.append(&mut self.pending);
                            handed_out = true;
                        }
                        self.pending.push(Event { table: name.clone(), change, ts_ms: ts });
                    }
                    if handed_out {
                        position = self.inside_txn();
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

    fn cdc_ack(&mut self, _flow_id: &str, _position: &Position) -> Result<()> {
        // The binlog is the server's; a replica keeps its own position (our checkpoint).
        Ok(())
    }

    fn cdc_release(&mut self, _flow_id: &str) -> Result<()> {
        self.gtid = None;
        self.pending_gtid = None;
        if let Some(s) = self.stream.take() {
            let _ = self.rt.run(s.close())?;
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
        let cols = sql::columns(self, table, key, changes)?;
        let ty = |name: &str| cols.iter().find(|(c, _)| c == name).map(|(_, t)| *t);
        let q = self.qualified(table);
        let key_cols = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        let col_list = cols.iter().map(|(c, _)| quote(c)).collect::<Vec<_>>().join(", ");
        let updates: Vec<String> = cols
            .iter()
            .filter(|(c, _)| !key.contains(c))
            .map(|(c, _)| format!("{0} = VALUES({0})", quote(c)))
            .collect();
        let on_dup = if updates.is_empty() { format!("{0} = {0}", quote(&key[0])) } else { updates.join(", ") };
        let per = (60_000 / cols.len().max(1)).clamp(1, 1000);
        let mut statements: Vec<(String, Vec<My>)> = Vec::new();
        for run in sql::plan(changes, key) {
            match run {
                Run::Delete(images) => {
                    for chunk in images.chunks(1000) {
                        let mut params = Vec::with_capacity(chunk.len() * key.len());
                        for img in chunk {
                            for k in key {
                                params.push(to_my(img.get(k).unwrap_or(&Value::Null), ty(k)));
                            }
                        }
                        let tuple = format!("({})", vec!["?"; key.len()].join(", "));
                        statements.push((
                            format!("DELETE FROM {q} WHERE ({key_cols}) IN ({})", vec![tuple; chunk.len()].join(", ")),
                            params,
                        ));
                    }
                }
                Run::Upsert(images) => {
                    for chunk in images.chunks(per) {
                        let mut params = Vec::with_capacity(chunk.len() * cols.len());
                        for img in chunk {
                            for (c, t) in &cols {
                                params.push(to_my(img.get(c).unwrap_or(&Value::Null), Some(*t)));
                            }
                        }
                        let row = format!("({})", vec!["?"; cols.len()].join(", "));
                        statements.push((
                            format!(
                                "INSERT INTO {q} ({col_list}) VALUES {} ON DUPLICATE KEY UPDATE {on_dup}",
                                vec![row; chunk.len()].join(", ")
                            ),
                            params,
                        ));
                    }
                }
            }
        }
        let rt = &self.rt;
        let conn = self.conn.as_mut().ok_or_else(|| Error::internal("MySQL connection"))?;
        rt.run(async {
            let mut tx = conn.start_transaction(mysql_async::TxOpts::default()).await?;
            for (sql, params) in statements {
                tx.exec_drop(sql, params).await?;
            }
            tx.commit().await
        })?
        .map_err(my_err)
    }
}

impl SqlTarget for Mysql {
    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote(&self.database), quote(table))
    }
    fn quote_name(&self, name: &str) -> String {
        quote(name)
    }
    fn column_type(&self, field: &Field, is_key: bool) -> String {
        column_type(field, is_key)
    }
    fn ddl(&mut self, sql: &str) -> Result<()> {
        self.exec(sql, Vec::new())
    }
    fn create_options(&self) -> &'static str {
        " DEFAULT CHARSET=utf8mb4"
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

/// What a DDL statement does to one of the flow's tables.
#[derive(Debug, PartialEq)]
enum Ddl {
    /// `ALTER TABLE … ADD [COLUMN] …` (only additions of columns).
    AddColumn,
    /// Anything else that changes or removes the table's rows or columns, described.
    Other(&'static str),
}

/// The flow's table a statement (run with default database `default_db`) changes, and how;
/// `None` for statements that do not touch `tables` of `database` or leave them as they are
/// (indexes, comments, other tables).
fn ddl_of(sql: &str, default_db: &str, database: &str, tables: &[String]) -> Option<(String, Ddl)> {
    let mut text = sql.trim();
    // Leading comments (/* … */, MySQL writes some), then the words, lower-cased.
    while let Some(rest) = text.strip_prefix("/*") {
        text = rest.split_once("*/").map(|(_, r)| r.trim_start()).unwrap_or("");
    }
    let lower = text.to_ascii_lowercase();
    let words: Vec<&str> =
        lower.split(|c: char| c.is_whitespace() || c == ',' || c == ';').filter(|w| !w.is_empty()).collect();
    let ours = |name: &str| -> Option<String> {
        let name = name.trim_matches('(');
        let (db, t) = match name.split_once('.') {
            Some((d, t)) => (d.trim_matches('`').to_string(), t.trim_matches('`')),
            None => (default_db.to_ascii_lowercase(), name.trim_matches('`')),
        };
        (db == database.to_ascii_lowercase()).then(|| tables.iter().find(|x| x.to_ascii_lowercase() == t).cloned())?
    };
    match words.as_slice() {
        ["alter", "table", rest @ ..] | ["alter", "ignore", "table", rest @ ..] => {
            let (name, clauses) = rest.split_first()?;
            let table = ours(name)?;
            let body = clauses.join(" ");
            let harmless = [
                "add index",
                "add key",
                "add unique",
                "add fulltext",
                "add spatial",
                "add constraint",
                "add primary",
                "add foreign",
                "comment",
            ];
            let changes = [
                "drop",
                "change",
                "modify",
                "rename",
                "convert",
                "alter",
                "engine",
                "partition",
                "order by",
                "character set",
                "charset",
                "force",
            ];
            if changes.iter().any(|c| body.split(' ').any(|w| w == *c) || body.starts_with(c)) {
                return Some((table, Ddl::Other("was altered beyond added columns")));
            }
            if harmless.iter().any(|h| body.starts_with(h)) && !body.contains("add column") {
                return None;
            }
            body.starts_with("add").then_some((table, Ddl::AddColumn))
        }
        ["drop", "table", rest @ ..] | ["drop", "temporary", "table", rest @ ..] => {
            let names = rest.strip_prefix(&["if", "exists"]).unwrap_or(rest);
            names.iter().find_map(|n| ours(n)).map(|t| (t, Ddl::Other("was dropped")))
        }
        ["truncate", "table", name, ..] | ["truncate", name, ..] => {
            ours(name).map(|t| (t, Ddl::Other("was truncated")))
        }
        ["rename", "table", rest @ ..] => {
            // RENAME TABLE a TO b, c TO d: the names before each TO.
            rest.chunks(3).find_map(|c| ours(c[0])).map(|t| (t, Ddl::Other("was renamed")))
        }
        _ => None,
    }
}

/// ER_MASTER_FATAL_ERROR_READING_BINLOG (1236): the server no longer has the binlog at the
/// flow's position.
fn binlog_gone(from: &Position, message: &str) -> Error {
    Error::not_found(format!(
        "MySQL cannot send the binlog from the flow's position {from}: {message} (1236); the binlog was \
         purged past it, and the changes since with it: reset the flow to copy again"
    ))
}

/// At most `n` characters of `s`.
fn short(s: &str, n: usize) -> String {
    let t: String = s.chars().take(n).collect();
    if t.len() < s.len() { format!("{t}…") } else { t }
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A binlog position as a checkpoint keeps it (the GTID state only when there is one).
fn position(file: &str, pos: u64, gtid: &str) -> Position {
    if gtid.is_empty() { json!({"file": file, "pos": pos}) } else { json!({"file": file, "pos": pos, "gtid": gtid}) }
}

/// MariaDB's GTID state at a binlog file and offset.
async fn mariadb_gtid_at(conn: &mut Conn, file: &str, pos: u64) -> Result<Gtid> {
    let g: Option<Option<String>> =
        conn.query_first(format!("SELECT BINLOG_GTID_POS({}, {pos})", sql_string(file))).await.map_err(my_err)?;
    Gtid::parse_mariadb(&g.flatten().unwrap_or_default())
}

/// A 16-byte source id as MySQL prints it.
fn uuid_text(b: &[u8; 16]) -> String {
    let h = hex(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

impl Mysql {
    /// Start reading the binlog at `from`: by GTID when the position has one (MariaDB
    /// `@slave_connect_state`, MySQL `COM_BINLOG_DUMP_GTID`), else by file and offset. Either
    /// way the stream then keeps the GTID state up to date for the positions it hands out.
    fn open_stream(&mut self, flow_id: &str, from: &Position) -> Result<()> {
        let file = from.get("file").and_then(Value::as_str).unwrap_or("").to_string();
        let pos = from.get("pos").and_then(Value::as_u64).unwrap_or(4);
        let text = from.get("gtid").and_then(Value::as_str).unwrap_or("");
        let mut state = if self.mariadb { Gtid::parse_mariadb(text)? } else { Gtid::parse_mysql(text)? };
        let by_gtid = !state.is_empty();
        let mariadb = self.mariadb;
        let id = server_id(flow_id);
        let stream = self.rt.run(async {
            let mut conn = Conn::new(self.opts.clone()).await.map_err(my_err)?;
            if mariadb {
                // Send GTID events as they are (not as dummy queries), so positions carry them.
                conn.query_drop("SET @mariadb_slave_capability=4").await.map_err(my_err)?;
                if !by_gtid && !file.is_empty() {
                    state = mariadb_gtid_at(&mut conn, &file, pos).await?;
                }
            }
            let request = if by_gtid && mariadb {
                conn.query_drop(format!("SET @slave_connect_state={}", sql_string(&state.to_string())))
                    .await
                    .map_err(my_err)?;
                BinlogStreamRequest::new(id)
            } else if by_gtid {
                BinlogStreamRequest::new(id).with_gtid().with_gtid_set(state.mysql_sids()?)
            } else {
                BinlogStreamRequest::new(id).with_filename(file.as_bytes()).with_pos(pos)
            };
            let stream = conn.get_binlog_stream(request).await.map_err(|e| match e {
                mysql_async::Error::Server(s) if s.code == 1236 && !by_gtid => binlog_gone(from, &s.message),
                mysql_async::Error::Server(s) if by_gtid => Error::data(format!(
                    "MySQL cannot resume the binlog at GTID {state}: {} ({}); reset the flow to take a new snapshot",
                    s.message, s.code
                )),
                e => my_err(e),
            })?;
            Ok::<_, Error>((stream, state))
        })?;
        let (stream, state) = stream?;
        self.stream = Some(stream);
        self.file = file;
        self.pending.clear();
        self.pending_gtid = None;
        let mut base = from.clone();
        self.txn_skip = 0;
        self.txn_expect = None;
        if let Some(o) = base.as_object_mut() {
            self.txn_skip = o.remove("skip").and_then(|v| v.as_u64()).unwrap_or(0);
            self.txn_expect = o.remove("txn").and_then(|v| v.as_str().map(str::to_string));
        }
        self.txn_base = base;
        self.txn_done = 0;
        // MySQL without a GTID state to start from cannot build a complete set: do not track.
        self.gtid = (mariadb || !state.is_empty()).then_some(state);
        Ok(())
    }

    /// A transaction committed at `log_pos` of the current file: fold its GTID into the state
    /// and return the position after it.
    fn committed(&mut self, log_pos: u64) -> Position {
        if let (Some(state), Some(p)) = (self.gtid.as_mut(), self.pending_gtid.take()) {
            match p {
                PendingGtid::MariaDb { domain, server, seq, .. } => state.add_mariadb(domain, server, seq),
                PendingGtid::Mysql { source, gno } => state.add_mysql(&source, gno),
            }
        }
        let gtid = self.gtid.as_ref().map(Gtid::to_string).unwrap_or_default();
        self.txn_base = position(&self.file, log_pos, &gtid);
        self.txn_done = 0;
        self.txn_skip = 0;
        self.txn_expect = None;
        self.txn_base.clone()
    }

    /// The position inside the transaction being read: its start, how many of its changes are
    /// handed out, and its GTID when there is one (checked on resume).
    fn inside_txn(&self) -> Position {
        let mut p = self.txn_base.clone();
        if let Some(o) = p.as_object_mut() {
            o.insert("skip".into(), json!(self.txn_done));
            if let Some(g) = self.pending_gtid_text() {
                o.insert("txn".into(), json!(g));
            }
        }
        p
    }

    fn pending_gtid_text(&self) -> Option<String> {
        match self.pending_gtid.as_ref()? {
            PendingGtid::MariaDb { domain, server, seq, .. } => Some(format!("{domain}-{server}-{seq}")),
            PendingGtid::Mysql { source, gno } => Some(format!("{source}:{gno}")),
        }
    }

    /// Resumed inside a transaction: the first transaction read must be that one, or skipping
    /// its first changes would lose another's.
    fn check_resumed_txn(&mut self) -> Result<()> {
        if let Some(expected) = self.txn_expect.take()
            && self.txn_skip > 0
            && let Some(got) = self.pending_gtid_text()
            && got != expected
        {
            return Err(Error::data(format!(
                "the MySQL binlog resumed at transaction {got}, not at {expected} (whose first {} changes \
                 the target already has); reset the flow to take a new snapshot",
                self.txn_skip
            )));
        }
        Ok(())
    }

    fn snapshot_query(
        &mut self,
        table: &str,
        limit: Option<(usize, &Record)>,
        batch: usize,
        emit: &mut dyn FnMut(Vec<Record>) -> Result<()>,
    ) -> Result<()> {
        let schema = self.schema(table)?;
        let cols = schema.fields.iter().map(|f| quote(&f.name)).collect::<Vec<_>>().join(", ");
        let sql = match limit {
            Some((n, filter)) if !filter.is_empty() => {
                let cond: Vec<String> = filter
                    .iter()
                    .map(|(k, v)| match v {
                        Value::Null => format!("{} IS NULL", quote(k)),
                        Value::Bool(b) => format!("{} = {}", quote(k), i32::from(*b)),
                        Value::Number(x) => format!("{} = {x}", quote(k)),
                        Value::String(t) => format!("{} = {}", quote(k), sql_string(t)),
                        other => format!("{} = {}", quote(k), sql_string(&other.to_string())),
                    })
                    .collect();
                format!("SELECT {cols} FROM {} WHERE {} LIMIT {n}", self.qualified(table), cond.join(" AND "))
            }
            Some((n, _)) => format!("SELECT {cols} FROM {} LIMIT {n}", self.qualified(table)),
            None => format!("SELECT {cols} FROM {}", self.qualified(table)),
        };
        let types: Vec<(String, FieldType)> = schema.fields.iter().map(|f| (f.name.clone(), f.ty)).collect();
        let rt = &self.rt;
        let conn = self.conn.as_mut().ok_or_else(|| Error::internal("MySQL connection"))?;
        // Each batch is read inside the runtime and handed to `emit` outside it (see
        // `connectors::blocking`): `emit` may write into another connector.
        let mut result = rt.run(conn.query_iter(sql))?.map_err(my_err)?;
        crate::connectors::blocking::pump(
            batch,
            || {
                rt.run(async {
                    let mut buf = Vec::with_capacity(batch);
                    while buf.len() < batch {
                        let Some(row) = result.next().await.map_err(my_err)? else { break };
                        let values = row.unwrap();
                        let mut rec = Record::with_capacity(values.len());
                        for ((name, ty), v) in types.iter().zip(values) {
                            rec.insert(name.clone(), to_json(v, Some(*ty)));
                        }
                        buf.push(rec);
                    }
                    Ok::<_, Error>(buf)
                })?
            },
            emit,
        )?;
        rt.run(result.drop_result())?.map_err(my_err)
    }
}

#[cfg(test)]
mod class_tests {
    use super::*;

    #[test]
    fn ddl_on_the_flows_tables_is_recognised() {
        let t = vec!["items".to_string(), "Orders".to_string()];
        let d = |sql: &str| ddl_of(sql, "shop", "shop", &t);
        assert_eq!(d("ALTER TABLE items ADD COLUMN note TEXT"), Some(("items".into(), Ddl::AddColumn)));
        assert_eq!(d("alter table `shop`.`items` add note int, add other int"), Some(("items".into(), Ddl::AddColumn)));
        assert_eq!(d("/* x */ ALTER TABLE orders ADD COLUMN n INT"), Some(("Orders".into(), Ddl::AddColumn)));
        assert_eq!(d("ALTER TABLE items ADD INDEX i (name)"), None);
        assert_eq!(
            d("ALTER TABLE items DROP COLUMN name"),
            Some(("items".into(), Ddl::Other("was altered beyond added columns")))
        );
        assert_eq!(
            d("ALTER TABLE items MODIFY name TEXT"),
            Some(("items".into(), Ddl::Other("was altered beyond added columns")))
        );
        assert_eq!(d("DROP TABLE IF EXISTS `other`, items"), Some(("items".into(), Ddl::Other("was dropped"))));
        assert_eq!(d("TRUNCATE items"), Some(("items".into(), Ddl::Other("was truncated"))));
        assert_eq!(d("RENAME TABLE a TO b, items TO old_items"), Some(("items".into(), Ddl::Other("was renamed"))));
        assert_eq!(d("ALTER TABLE other ADD COLUMN x INT"), None);
        assert_eq!(ddl_of("DROP TABLE items", "elsewhere", "shop", &t), None);
        assert_eq!(d("CREATE TABLE items2 (id INT)"), None);
        assert_eq!(d("INSERT INTO items VALUES (1)"), None);
    }

    #[test]
    fn server_codes_are_classified_once() {
        for transient in [1205, 1213, 1040, 2006, 2013] {
            assert_eq!(my_class(transient), ErrorKind::Unavailable, "{transient}");
        }
        assert_eq!(my_class(1045), ErrorKind::Auth);
        assert_eq!(my_class(1146), ErrorKind::NotFound);
        assert_eq!(my_class(1062), ErrorKind::Data);
    }
}
