//! Connectors: one folder each, all behind one [`Connector`] trait that covers metadata
//! (tables, schema, count, sample), the source side (snapshot, CDC) and the sink side
//! (batched, idempotent upsert/delete by key).
//!
//! Connectors translate between a database's protocol and [`crate::model`] values; the runner
//! owns batching, retries, checkpoints and shutdown. Every method is blocking: the runner gives
//! each flow its own thread, and connectors built on async drivers keep a small runtime inside.
//!
//! The registry below is the one list of connectors, each entry declaring itself (its config
//! keys, secrets, sides and how to open it): the engine serves it as TapData's `DatabaseTypes`,
//! `help CONNECTOR` prints it, and [`open`] checks a connection's config against it and connects.

pub mod blocking;
pub mod burst;
pub mod config;
pub mod mongodb;
pub mod mysql;
pub mod postgres;
pub mod sample;
pub mod secrets;
pub mod sql;
pub mod sqlite;

use crate::error::{Error, Result};
use crate::model::{Change, Event, Record, Schema};
pub use config::{Key, Settings};
use serde_json::Value;
use std::ops::ControlFlow;
use std::time::Duration;

/// What a sink does with a target table that already holds data
/// (TapData's `existDataProcessMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingData {
    Keep,
    Remove,
    Drop,
}

impl ExistingData {
    pub fn from_tapdata(mode: Option<&str>) -> Self {
        match mode {
            Some("removeData") => ExistingData::Remove,
            Some("dropTable") => ExistingData::Drop,
            _ => ExistingData::Keep,
        }
    }
}

/// What a snapshot reads: a whole table, in batches of `batch` rows. A feature that reads less
/// or otherwise (a filter, a query, a key range) is a field here, which each connector serves or
/// refuses by name.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRequest {
    pub table: String,
    pub batch: usize,
    /// The source's filter: a connector pushes down the conditions its database compares as
    /// the engine does (`model::condition`); the engine filters the rows again either way.
    pub filter: Vec<crate::model::condition::Condition>,
    /// A query whose rows are read instead of the table's (SQL connectors), its fields typed
    /// as the table's fields of the same names.
    pub query: Option<String>,
}

impl SnapshotRequest {
    pub fn table(table: &str, batch: usize) -> Self {
        SnapshotRequest { table: table.to_string(), batch, filter: Vec::new(), query: None }
    }
}

/// The table a sink writes: its name, the fields upserts and deletes match on, and what
/// preparing it does to the rows it holds. How a sink writes (a write mode) is a field here.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub table: String,
    pub key: Vec<String>,
    pub existing: ExistingData,
    /// TapData's `appendWrite`: every change is inserted as a new row (an update's after image,
    /// a delete's before image) into a table without a key. At-least-once: a batch repeated
    /// after a crash is appended again.
    pub append: bool,
}

impl Target {
    pub fn new(table: &str, key: &[String], existing: ExistingData) -> Self {
        Target { table: table.to_string(), key: key.to_vec(), existing, append: false }
    }

    /// A target that appends every change (`appendWrite`): it has no key.
    pub fn appending(table: &str, existing: ExistingData) -> Self {
        Target { table: table.to_string(), key: Vec::new(), existing, append: true }
    }
}

/// A unique index of a table: its name, its columns, and whether every column is NOT NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueKey {
    pub name: String,
    pub columns: Vec<String>,
    pub not_null: bool,
}

/// What a snapshot hands each batch to: `Continue` to read on, `Break` to stop reading (the
/// flow is stopping) — a stop is an outcome, not an error.
pub type Emit<'a> = dyn FnMut(Vec<Record>) -> Result<ControlFlow<()>> + 'a;

/// A position in a source's change stream, as the source defines it (saved in checkpoints).
pub type Position = Value;

/// A saved position read as the connector's own type (`what`: "MySQL binlog", …). None saved
/// (a source added to the flow after its snapshot) and another shape are errors that say to
/// reset, never a silent start from somewhere else.
pub fn saved_position<T: serde::de::DeserializeOwned>(p: &Position, what: &str) -> Result<T> {
    if p.is_null() {
        return Err(Error::data(format!(
            "the flow has no saved {what} position for this source (was it added after the flow's snapshot?); \
             reset the flow to copy again"
        )));
    }
    serde_json::from_value(p.clone()).map_err(|e| {
        Error::data(format!(
            "the flow's saved position {p} is not a {what} position ({e}); reset the flow to copy again"
        ))
    })
}

pub trait Connector: Send {
    /// Check that the database answers and the configuration is usable.
    fn test(&mut self) -> Result<()>;
    /// User tables (the connector's own bookkeeping tables are hidden).
    fn tables(&mut self) -> Result<Vec<String>>;
    fn schema(&mut self, table: &str) -> Result<Schema>;
    /// The table's unique indexes that can serve as its key when it has no primary key:
    /// `(index name, columns, every column NOT NULL)`, plain column indexes only (no
    /// expressions, no partial indexes), in name order.
    fn unique_keys(&mut self, _table: &str) -> Result<Vec<UniqueKey>> {
        Ok(Vec::new())
    }
    fn count(&mut self, table: &str) -> Result<u64>;
    /// About how many rows `table` has, for a snapshot's progress: the exact count unless the
    /// database keeps a cheaper estimate of a large table.
    fn estimate(&mut self, table: &str) -> Result<u64> {
        self.count(table)
    }
    fn sample(&mut self, table: &str, limit: usize) -> Result<Vec<Record>>;
    /// Up to `limit` rows whose fields equal `filter`'s values (`peek TABLE field=value`).
    fn find(&mut self, table: &str, filter: &Record, limit: usize) -> Result<Vec<Record>>;
    /// Run one statement (the `sql()` helper of scripts and tests). Returns affected rows.
    fn execute(&mut self, statement: &str) -> Result<u64>;

    /// Install whatever CDC needs for `tables` (triggers, slot, publication) for the flow `flow_id`.
    /// `resume`: the flow resumes from a saved position, so what captured its changes must
    /// still be there (a slot or triggers made anew would have missed the changes since).
    fn cdc_prepare(&mut self, flow_id: &str, tables: &[String], resume: bool) -> Result<()>;
    /// The current end of the change stream. Taken before the snapshot reads.
    fn cdc_position(&mut self, flow_id: &str) -> Result<Position>;
    /// Where the change stream stood at `at_ms` (epoch ms, in the past), for a CDC-only flow
    /// that starts there (`only_cdc(start_time)`); refused by connectors whose change stream
    /// cannot go back (a replication slot or trigger log starts where it is created).
    fn cdc_position_at(&mut self, _flow_id: &str, _at_ms: i64) -> Result<Position> {
        Err(Error::unsupported(
            "this database's change stream cannot start before the flow first starts (it begins where it is \
             created): give a start time from now on, or copy the table first with include_cdc()",
        ))
    }
    /// Read what `read` asks for in batches, calling `emit` for each batch.
    fn snapshot(&mut self, read: &SnapshotRequest, emit: &mut Emit<'_>) -> Result<()>;
    /// Changes of `tables` after `from`, at most `max`, waiting up to `wait` for the first one.
    /// Returns the events and the position after the last one returned.
    fn changes(
        &mut self,
        flow_id: &str,
        tables: &[String],
        from: &Position,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Event>, Position)>;
    /// Tell the source that everything up to `position` is safely in the target, so it may
    /// release it (prune a change log, advance a slot).
    fn cdc_ack(&mut self, flow_id: &str, position: &Position) -> Result<()>;
    /// Remove the CDC resources of `flow_id` (reset, delete).
    fn cdc_release(&mut self, flow_id: &str) -> Result<()>;
    /// The flow wants the whole before image of every update and delete of `tables` (TapFlow's
    /// `enablePreImage()`): arrange it, or refuse, saying what to change. A connector whose
    /// change stream carries them anyway says so by returning `Ok`.
    fn cdc_pre_images(&mut self, _tables: &[String]) -> Result<()> {
        Err(Error::unsupported("this database's change stream does not carry whole before images"))
    }
    /// The tables of the change stream that gained columns since the last call (an `ALTER
    /// TABLE … ADD COLUMN` read in the stream), so a flow that synchronises DDL adds them to its
    /// target before the rows that use them. Their schema is [`Connector::schema`] from then on.
    fn take_altered(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// What the connector changed that the flow's log should say (a database's journal mode
    /// switched, say), since the last call.
    fn take_notices(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// Create or check the target table, from the flow's output `schema`.
    fn prepare_target(&mut self, target: &Target, schema: &Schema) -> Result<()>;
    /// Apply changes as if one by one, idempotently: inserts and updates upsert the whole image
    /// by the target's key, deletes delete by it (the contract: `connectors/sql.rs`). An
    /// appending target ([`Target::append`]) inserts every change's image instead, in order.
    fn write(&mut self, target: &Target, changes: &[Change]) -> Result<()>;
    /// Whether two connections may write disjoint keys of one table at the same time without
    /// waiting on or deadlocking each other, so a large batch is written as two halves at once.
    fn concurrent_writes(&self) -> bool {
        false
    }
}

/// One entry of the connector registry.
pub struct ConnectorInfo {
    /// TapData's display name, the connection's `database_type` (`DataSource("sqlite", …)`
    /// matches it lower-cased, as the official client does).
    pub name: &'static str,
    pub pdk_id: &'static str,
    /// Its config keys (see [`config`]).
    pub config: &'static [Key],
    pub source: bool,
    pub target: bool,
    /// Config keys holding secrets (masked wherever a config is shown; see [`secrets`]).
    pub secrets: &'static [&'static str],
    /// Connect, with the connection's checked config.
    pub open: fn(&Settings) -> Result<Box<dyn Connector>>,
}

pub const CONNECTORS: &[ConnectorInfo] = &[
    ConnectorInfo {
        name: "SQLite",
        pdk_id: "sqlite",
        config: &[Key::text("database", "path of the database file (created if missing)").required()],
        source: true,
        target: true,
        secrets: &[],
        open: |c| Ok(Box::new(sqlite::Sqlite::open(c)?)),
    },
    ConnectorInfo {
        name: "PostgreSQL",
        pdk_id: "postgres",
        config: &[
            Key::text("host", "server host").or("127.0.0.1"),
            Key::port("port", "5432", "server port"),
            Key::text("database", "database name").required(),
            Key::text("schema", "schema").or("public"),
            Key::text("user", "user (needs REPLICATION for CDC)").required().alias("username"),
            Key::text("password", "password"),
            Key::text("logPluginName", "logical decoding plugin: pgoutput")
                .only(&["pgoutput"], "the embedded engine decodes with pgoutput only; remove the key"),
        ],
        source: true,
        target: true,
        secrets: &["password"],
        open: |c| Ok(Box::new(postgres::Postgres::open(c)?)),
    },
    ConnectorInfo {
        name: "Mysql",
        pdk_id: "mysql",
        config: &[
            Key::text("host", "server host").or("127.0.0.1"),
            Key::port("port", "3306", "server port"),
            Key::text("database", "database name").required(),
            Key::text("user", "user (needs REPLICATION SLAVE and CLIENT for CDC)").required().alias("username"),
            Key::text("password", "password"),
        ],
        source: true,
        target: true,
        secrets: &["password"],
        open: |c| Ok(Box::new(mysql::Mysql::open(c)?)),
    },
    ConnectorInfo {
        name: "MongoDB",
        pdk_id: "mongodb",
        config: &[
            Key::text("uri", "mongodb://user:password@host:port/database"),
            Key::text("database", "database (else the uri's)"),
            Key::text("host", "host:port, instead of uri").or("127.0.0.1:27017"),
            Key::text("user", "user, instead of uri").alias("username"),
            Key::text("password", "password, instead of uri"),
        ],
        source: true,
        target: true,
        // The uri's userinfo password: masked inside the text, not the whole uri.
        secrets: &["password"],
        open: |c| Ok(Box::new(mongodb::Mongo::open(c)?)),
    },
];

/// A connection config is an object of the keys its connector declares (or their aliases, or
/// the generic keys the official client sends, at values the engine honours), of their types,
/// with the required ones: anything else, which would otherwise be ignored or fail later, is
/// refused naming the key and the keys there are.
/// Images in one run from which a sink may write them through its bulk path (PostgreSQL's
/// COPY, MongoDB's inserts) as new rows, falling back to upserts when one is there already.
pub const BULK_FROM: usize = 100;

/// Rows from which a database's own estimate is used for progress instead of a count.
pub const BIG_TABLE: i64 = 1_000_000;

pub fn check_config(info: &'static ConnectorInfo, config: &Value) -> Result<()> {
    Settings::parse(info, config).map(|_| ())
}

/// Find a connector by name, case-insensitively, accepting common aliases.
pub fn find(name: &str) -> Option<&'static ConnectorInfo> {
    let lower = name.to_ascii_lowercase();
    let canonical = match lower.as_str() {
        "postgres" | "pg" => "postgresql",
        "mongo" => "mongodb",
        "mariadb" => "mysql",
        "sqlite3" => "sqlite",
        other => other,
    };
    CONNECTORS.iter().find(|c| c.name.to_ascii_lowercase() == canonical)
}

/// Open a connector for a connection document's `database_type` and `config`.
pub fn open(database_type: &str, config: &Value) -> Result<Box<dyn Connector>> {
    let info = find(database_type).ok_or_else(|| {
        let known: Vec<&str> = CONNECTORS.iter().map(|c| c.name).collect();
        Error::unsupported(format!(
            "the embedded engine has no connector {database_type:?}; it has: {}",
            known.join(", ")
        ))
    })?;
    (info.open)(&Settings::parse(info, config)?)
}

pub use crate::model::{hex, unhex};
