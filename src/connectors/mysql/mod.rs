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

mod binlog;
pub mod gtid;
mod values;

use crate::connectors::sql::{self, Run, SqlTarget};
use crate::connectors::{Connector, Emit, Position, Settings, SnapshotRequest, Target, UniqueKey, hex};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Change, Event, Field, FieldType, Record, Schema, Value, is_decimal};
pub use binlog::BinlogPosition;
use binlog::PendingGtid;
use futures_util::StreamExt;
use gtid::Gtid;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Opts, OptsBuilder, Value as My};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use values::field_type;
use values::{column_type, epoch_to_my, to_my, to_value};

pub struct Mysql {
    rt: crate::connectors::blocking::Blocking,
    conn: Option<Conn>,
    opts: Opts,
    database: String,
    /// Tables that gained columns in the binlog read since the last `take_altered`.
    altered: Vec<String>,
    schemas: HashMap<String, Schema>,
    stream: Option<BinlogStream>,
    /// Binlog events read from the stream ahead of their handling.
    ahead: crate::connectors::burst::Ahead<Next>,
    /// Events of the transaction being read, not yet handed out.
    pending: Vec<Event>,
    /// The position after the last whole transaction handed out: where the transaction being
    /// read starts.
    txn_base: BinlogPosition,
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

/// What the binlog stream yields: an event, its error, or `None` when it ended.
type Next = Option<std::result::Result<mysql_async::binlog::events::Event, mysql_async::Error>>;

impl crate::connectors::burst::Items for BinlogStream {
    type Item = Next;
    fn next_item(&mut self) -> impl std::future::Future<Output = Next> {
        self.next()
    }
    fn goes_on(item: &Next) -> bool {
        matches!(item, Some(Ok(_)))
    }
}

impl Mysql {
    /// The next binlog event: one read ahead, else from the stream, waiting up to `wait` for
    /// it (`None`: only if it has arrived already). `Ok(None)` when none came in time.
    fn next_event(&mut self, wait: Option<Duration>) -> Result<Option<Next>> {
        let stream = self.stream.as_mut().ok_or_else(|| Error::internal("binlog stream"))?;
        crate::connectors::burst::take(&self.rt, stream, wait, &mut self.ahead)
    }
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
        // a record refused: null in a NOT NULL column, duplicate key, value out of range or
        // truncated, bad value for the type, too long, foreign key, CHECK constraint
        1048 | 1062 | 1264 | 1265 | 1292 | 1366 | 1406 | 1452 | 3819 | 4025 => ErrorKind::Rejected,
        _ => ErrorKind::Data,
    }
}

impl Mysql {
    pub fn open(config: &Settings) -> Result<Self> {
        let host = config.value("host").to_string();
        let port = config.port("port");
        let database = config.value("database").to_string();
        let user = config.value("user").to_string();
        let password = config.get("password").map(str::to_string);
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
            altered: Vec::new(),
            stream: None,
            ahead: Default::default(),
            pending: Vec::new(),
            txn_base: BinlogPosition::default(),
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

    fn estimate(&mut self, table: &str) -> Result<u64> {
        let n: Vec<u64> = self.rows(&format!(
            "SELECT COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
            sql_string(&self.database),
            sql_string(table)
        ))?;
        // InnoDB's estimate; small tables are counted.
        match n.first() {
            Some(&n) if n >= super::BIG_TABLE as u64 => Ok(n),
            _ => self.count(table),
        }
    }

    fn sample(&mut self, table: &str, limit: usize) -> Result<Vec<Record>> {
        self.find(table, &Record::new(), limit)
    }

    fn find(&mut self, table: &str, filter: &Record, limit: usize) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        self.snapshot_query(
            table,
            Some((limit, filter)),
            limit.max(1),
            &mut |rows| {
                out.extend(rows);
                Ok(std::ops::ControlFlow::Continue(()))
            },
            &[],
            None,
        )?;
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

    fn cdc_prepare(&mut self, flow_id: &str, tables: &[String], resume: bool) -> Result<()> {
        self.check_cdc(flow_id, tables, resume)
    }

    fn cdc_position(&mut self, flow_id: &str) -> Result<Position> {
        self.binlog_position(flow_id)
    }
    fn cdc_position_at(&mut self, flow_id: &str, at_ms: i64) -> Result<Position> {
        self.binlog_position_at(flow_id, at_ms)
    }

    fn snapshot(&mut self, read: &SnapshotRequest, emit: &mut Emit<'_>) -> Result<()> {
        let (table, batch) = (read.table.as_str(), read.batch);
        self.exec("START TRANSACTION WITH CONSISTENT SNAPSHOT", Vec::new())
            .or_else(|_| self.exec("START TRANSACTION", Vec::new()))?;
        let result = self.snapshot_query(table, None, batch, emit, &read.filter, read.query.as_deref());
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
        self.read_changes(flow_id, tables, from, max, wait)
    }

    fn cdc_pre_images(&mut self, _tables: &[String]) -> Result<()> {
        // CDC requires binlog_row_image=FULL (checked when it is prepared): every before image
        // holds every column.
        Ok(())
    }

    fn take_altered(&mut self) -> Vec<String> {
        std::mem::take(&mut self.altered)
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

    fn prepare_target(&mut self, target: &Target, schema: &Schema) -> Result<()> {
        sql::prepare(self, target, schema)
    }

    fn write(&mut self, target: &Target, changes: &[Change]) -> Result<()> {
        let (table, key) = (target.table.as_str(), &target.key[..]);
        if key.is_empty() && !target.append {
            return Err(Error::schema(format!("target table {table} has no key to write by")));
        }
        let cols = sql::columns(self, table, changes)?;
        let ty = |name: &str| cols.iter().find(|(c, _)| c == name).map(|(_, t)| *t);
        let q = self.qualified(table);
        let key_cols = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        let mut statements: Vec<(String, Vec<My>)> = Vec::new();
        for run in sql::runs(changes, target) {
            let append = matches!(run, Run::Append(_));
            let run_cols = run.columns(&cols);
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
                Run::Upsert(images) | Run::Append(images) => {
                    let col_list = run_cols.iter().map(|(c, _)| quote(c)).collect::<Vec<_>>().join(", ");
                    let updates: Vec<String> = run_cols
                        .iter()
                        .filter(|(c, _)| !key.contains(c))
                        .map(|(c, _)| format!("{0} = VALUES({0})", quote(c)))
                        .collect();
                    let on_dup = if append {
                        String::new()
                    } else if updates.is_empty() {
                        format!(" ON DUPLICATE KEY UPDATE {0} = {0}", quote(&key[0]))
                    } else {
                        format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", "))
                    };
                    let per = (60_000 / run_cols.len().max(1)).clamp(1, 1000);
                    for chunk in images.chunks(per) {
                        let mut params = Vec::with_capacity(chunk.len() * run_cols.len());
                        for img in chunk {
                            for (c, t) in &run_cols {
                                params.push(to_my(img.get(c).unwrap_or(&Value::Null), Some(*t)));
                            }
                        }
                        let row = format!("({})", vec!["?"; run_cols.len()].join(", "));
                        statements.push((
                            format!(
                                "INSERT INTO {q} ({col_list}) VALUES {}{on_dup}",
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
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}
impl Mysql {
    fn snapshot_query(
        &mut self,
        table: &str,
        limit: Option<(usize, &Record)>,
        batch: usize,
        emit: &mut Emit<'_>,
        filter: &[crate::model::condition::Condition],
        query: Option<&str>,
    ) -> Result<()> {
        let schema = self.schema(table)?;
        let cols = schema.fields.iter().map(|f| quote(&f.name)).collect::<Vec<_>>().join(", ");
        // The conditions MySQL compares as the engine does or more loosely (integers, times;
        // text only for equality, its collation may ignore case): the engine filters again.
        let pushed: Vec<String> = filter
            .iter()
            .filter_map(|c| {
                let literal = match &c.value {
                    Value::Int(i) => i.to_string(),
                    Value::Text(t) if c.op == crate::model::condition::Op::Eq => sql_string(t),
                    Value::Date(_) | Value::Timestamp(_) | Value::TimestampTz(_) => {
                        sql_string(&crate::model::naive_text(&c.value.text()))
                    }
                    _ => return None,
                };
                Some(format!("{} {} {literal}", quote(&c.field), c.op.sql()))
            })
            .collect();
        let filtered = |from: String| {
            if pushed.is_empty() { from } else { format!("{from} WHERE {}", pushed.join(" AND ")) }
        };
        let sql = match limit {
            Some((n, filter)) if !filter.is_empty() => {
                let cond: Vec<String> = filter
                    .iter()
                    .map(|(k, v)| match v {
                        Value::Null => format!("{} IS NULL", quote(k)),
                        Value::Bool(b) => format!("{} = {}", quote(k), i32::from(*b)),
                        Value::Int(_) | Value::Float(_) => format!("{} = {v}", quote(k)),
                        Value::Bytes(b) => format!("{} = X'{}'", quote(k), hex(b)),
                        other => format!("{} = {}", quote(k), sql_string(&other.text())),
                    })
                    .collect();
                format!("SELECT {cols} FROM {} WHERE {} LIMIT {n}", self.qualified(table), cond.join(" AND "))
            }
            Some((n, _)) => format!("SELECT {cols} FROM {} LIMIT {n}", self.qualified(table)),
            None => match query {
                Some(q) => filtered(format!("SELECT * FROM ({q}) tap_q")),
                None => filtered(format!("SELECT {cols} FROM {}", self.qualified(table))),
            },
        };
        let rt = &self.rt;
        let conn = self.conn.as_mut().ok_or_else(|| Error::internal("MySQL connection"))?;
        // Each batch is read inside the runtime and handed to `emit` outside it (see
        // `connectors::blocking`): `emit` may write into another connector.
        let mut result = rt.run(conn.query_iter(sql))?.map_err(my_err)?;
        // The result's columns, typed as the table's fields of the same names (a query's
        // other columns as MySQL sends them).
        let types: Vec<(String, Option<FieldType>)> = result
            .columns_ref()
            .iter()
            .map(|c| {
                let name = c.name_str().to_string();
                let ty = schema.field(&name).map(|f| f.ty);
                (name, ty)
            })
            .collect();
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
                            rec.insert(name.clone(), to_value(v, *ty));
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
    fn server_codes_are_classified_once() {
        for transient in [1205, 1213, 1040, 2006, 2013] {
            assert_eq!(my_class(transient), ErrorKind::Unavailable, "{transient}");
        }
        assert_eq!(my_class(1045), ErrorKind::Auth);
        assert_eq!(my_class(1146), ErrorKind::NotFound);
        assert_eq!(my_class(1062), ErrorKind::Rejected);
        assert_eq!(my_class(1021), ErrorKind::Data, "a full disk is not a record to skip");
    }
}
