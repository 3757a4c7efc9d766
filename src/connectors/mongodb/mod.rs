//! MongoDB connector (the official `mongodb` driver, standard API only, so it serves real
//! MongoDB as well as SecantusDB, the wire-protocol server the tests run).
//!
//! Target: one collection per target; documents are upserted by the flow's key (`_id` or a
//! unique index on the key fields that the connector creates) and deleted by it. A batch keeps
//! the last operation per key (each one replaces or deletes a whole document, so the last one
//! decides) and goes out as one unordered bulk write (`bulkWrite`, MongoDB 8+; older servers get
//! the classic `update`/`delete` commands of many statements each, `commands`); a long run of
//! new documents goes in as inserts, falling back to upserts on a duplicate key (`write`).
//! Dates and timestamps become BSON dates, nested ones included.
//!
//! Source: snapshot of a collection (its documents as records), then CDC from a change stream
//! on the database (inserts, updates and replaces with the whole document looked up, deletes by
//! `_id`). A position is the stream's resume token, saved with every batch, so a restarted flow
//! resumes where it stopped as long as the oplog still holds that point. Change streams need a
//! replica set or a sharded cluster; a standalone server is named as the reason CDC cannot run.

mod commands;
mod pre_images;

use crate::connectors::{Connector, Emit, ExistingData, Position, Settings, SnapshotRequest, Target};
use crate::error::{Error, Result};
use crate::model::{Change, Event, Field, FieldType, Record, Schema, Value};
use commands::Statement;
use futures_util::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::options::{DeleteOneModel, FullDocumentType, InsertOneModel, ReplaceOneModel, WriteModel};
use mongodb::{Client, Namespace};
use std::collections::HashMap;
use std::future::IntoFuture;
use std::time::Duration;

pub struct Mongo {
    rt: crate::connectors::blocking::Blocking,
    client: Client,
    database: String,
    bulk: bool,
    /// A replica set member or a mongos: change streams work.
    replica: bool,
    masked_uri: String,
    stream: Option<ChangeStream<ChangeStreamEvent<Document>>>,
    /// Target collections this connector has written to (so they exist, until dropped).
    written: std::collections::HashSet<String>,
    /// `enablePreImage()`: the change stream asks for each change's document before it.
    pre_images: bool,
    /// The collections CDC was last prepared for.
    streamed: Vec<String>,
    /// Collections an insert found documents in already: upserted only (see `write`).
    upsert_only: std::collections::HashSet<String>,
}

/// A change-stream position as a checkpoint keeps it, `{"token": …}` (the resume token as
/// relaxed extended JSON), and back: read and written only here.
fn position_of(t: &ResumeToken) -> Result<Position> {
    let token = bson::to_bson(t).map_err(|e| Error::internal(format!("resume token: {e}")))?.into_relaxed_extjson();
    Ok(serde_json::json!({ "token": token }))
}

fn token_of(p: &Position) -> Result<ResumeToken> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Saved {
        token: serde_json::Value,
    }
    let saved: Saved = crate::connectors::saved_position(p, "MongoDB change-stream")?;
    let bad = |why: String| {
        Error::data(format!("the flow's saved MongoDB resume token is not one ({why}); reset the flow to copy again"))
    };
    let b = Bson::try_from(saved.token).map_err(|e| bad(e.to_string()))?;
    bson::from_bson(b).map_err(|e| bad(e.to_string()))
}

fn doc_to_record(d: Document) -> Record {
    d.into_iter().map(|(k, v)| (k, to_value(v))).collect()
}

/// A driver error in its class, decided once here: network errors and errors labelled
/// retryable (or transient) and I/O errors are transient, authentication fails at once, the rest are data errors.
const REFUSED: [i32; 3] = [11000, 121, 10334];

fn mg_err(e: mongodb::error::Error) -> Error {
    use mongodb::error::ErrorKind as K;
    let message = format!("MongoDB: {e}");
    if e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR) || e.contains_label("TransientTransactionError") {
        return Error::unavailable(message);
    }
    match *e.kind {
        K::Io(_) | K::ServerSelection { .. } | K::ConnectionPoolCleared { .. } => Error::unavailable(message),
        K::Authentication { .. } => Error::auth(message),
        // A record refused: duplicate key (11000), document validation (121), too large (10334).
        K::Write(mongodb::error::WriteFailure::WriteError(ref w)) if REFUSED.contains(&w.code) => {
            Error::rejected(message)
        }
        K::BulkWrite(ref b)
            if b.write_concern_errors.is_empty()
                && !b.write_errors.is_empty()
                && b.write_errors.values().all(|w| REFUSED.contains(&w.code)) =>
        {
            Error::rejected(message)
        }
        _ => Error::data(message),
    }
}

/// The model type of a BSON value (see the README's MongoDB type table).
fn bson_type(b: &Bson) -> FieldType {
    match b {
        Bson::Int32(_) | Bson::Int64(_) => FieldType::Integer,
        Bson::Double(_) => FieldType::Float,
        Bson::Decimal128(_) => FieldType::Decimal,
        Bson::Boolean(_) => FieldType::Boolean,
        Bson::DateTime(_) => FieldType::TimestampTz,
        Bson::Binary(_) => FieldType::Bytes,
        Bson::Document(_) | Bson::Array(_) => FieldType::Json,
        _ => FieldType::Text,
    }
}

/// A BSON value as the model's: ObjectIds as their hex text, dates as instants (UTC, to the
/// millisecond), binary as bytes, Decimal128 as an exact decimal.
pub fn to_value(b: Bson) -> Value {
    match b {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(x) => Value::Bool(x),
        Bson::Int32(i) => Value::Int(i64::from(i)),
        Bson::Int64(i) => Value::Int(i),
        Bson::Double(f) => Value::float(f),
        Bson::String(s) => Value::Text(s),
        Bson::Binary(bin) => Value::Bytes(bin.bytes),
        Bson::ObjectId(o) => Value::Text(o.to_hex()),
        Bson::DateTime(d) => {
            chrono::DateTime::from_timestamp_millis(d.timestamp_millis()).map(Value::TimestampTz).unwrap_or(Value::Null)
        }
        Bson::Document(d) => Value::Object(doc_to_record(d)),
        Bson::Array(a) => Value::Array(a.into_iter().map(to_value).collect()),
        Bson::Decimal128(d) => Value::Decimal(d.to_string()),
        other => Value::from_json(other.into_relaxed_extjson()),
    }
}

/// A model value as BSON: dates and timestamps become BSON dates (a date its midnight UTC),
/// bytes generic binary, decimals Decimal128 (a decimal beyond its 34 digits a double).
fn to_bson(v: &Value) -> Bson {
    let date = |t: chrono::DateTime<chrono::Utc>| Bson::DateTime(bson::DateTime::from_millis(t.timestamp_millis()));
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Int(i) => Bson::Int64(*i),
        Value::Float(f) => Bson::Double(*f),
        Value::Decimal(d) => match d.parse::<bson::Decimal128>() {
            Ok(d) => Bson::Decimal128(d),
            Err(_) => d.parse::<f64>().map(Bson::Double).unwrap_or_else(|_| Bson::String(d.clone())),
        },
        Value::Text(s) => Bson::String(s.clone()),
        Value::Bytes(b) => Bson::Binary(bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: b.clone() }),
        Value::Date(d) => d.and_hms_opt(0, 0, 0).map(|t| date(t.and_utc())).unwrap_or(Bson::Null),
        Value::Timestamp(t) => date(t.and_utc()),
        Value::TimestampTz(t) => date(*t),
        Value::Object(r) => Bson::Document(to_doc(r)),
        Value::Array(a) => Bson::Array(a.iter().map(to_bson).collect()),
    }
}

/// An `_id` that is an ObjectId's hex text is that ObjectId (how ObjectIds travel).
fn id_bson(v: &Value) -> Bson {
    match v.as_str().map(bson::oid::ObjectId::parse_str) {
        Some(Ok(oid)) => Bson::ObjectId(oid),
        _ => to_bson(v),
    }
}

/// A record as a BSON document.
fn to_doc(rec: &Record) -> Document {
    rec.iter().map(|(k, v)| (k.clone(), if k == "_id" { id_bson(v) } else { to_bson(v) })).collect()
}

fn filter_for(rec: &Record, key: &[String]) -> Document {
    key.iter()
        .map(|k| {
            let v = rec.get(k).unwrap_or(&Value::Null);
            (k.clone(), if k == "_id" { id_bson(v) } else { to_bson(v) })
        })
        .collect()
}

/// A change stream event as a change of a collection. Updates and replaces carry the whole
/// document as it is now (an update whose document is already gone is skipped: its delete
/// follows); deletes carry the document key.
fn to_event(ev: ChangeStreamEvent<Document>, names: &mut HashMap<String, std::sync::Arc<str>>) -> Option<Event> {
    let coll = ev.ns.and_then(|n| n.coll)?;
    let table = names.entry(coll.clone()).or_insert_with(|| std::sync::Arc::from(coll.as_str())).clone();
    let ts_ms = ev
        .wall_time
        .map(|t| t.timestamp_millis())
        .or_else(|| ev.cluster_time.map(|t| i64::from(t.time) * 1000))
        .unwrap_or_else(crate::model::now_ms);
    let change = match ev.operation_type {
        OperationType::Insert => Change::Insert { after: doc_to_record(ev.full_document?) },
        OperationType::Update | OperationType::Replace => Change::Update {
            before: ev.full_document_before_change.or(ev.document_key).map(doc_to_record),
            after: doc_to_record(ev.full_document?),
        },
        OperationType::Delete => {
            Change::Delete { before: doc_to_record(ev.full_document_before_change.or(ev.document_key)?) }
        }
        _ => return None,
    };
    Some(Event { table, change, ts_ms })
}

impl Mongo {
    pub fn open(config: &Settings) -> Result<Self> {
        let uri = match config.get("uri") {
            Some(u) => u.to_string(),
            None => {
                let host = config.value("host");
                match (config.get("user"), config.get("password")) {
                    (Some(u), Some(p)) => {
                        format!("mongodb://{}:{}@{host}/", urlencoding::encode(u), urlencoding::encode(p))
                    }
                    _ => format!("mongodb://{host}/"),
                }
            }
        };
        let database = config
            .get("database")
            .map(str::to_string)
            .or_else(|| {
                let rest = uri.split("://").nth(1)?;
                let path = rest.split_once('/')?.1;
                let db = path.split('?').next()?;
                (!db.is_empty()).then(|| db.to_string())
            })
            .ok_or_else(|| {
                Error::config("MongoDB connection needs a database: in the uri (mongodb://host/db) or as \"database\"")
            })?;
        let rt = crate::connectors::blocking::Blocking::new()?;
        let masked = crate::connectors::secrets::mask_text(&uri);
        let client = rt.run(async {
            let mut opts = mongodb::options::ClientOptions::parse(&uri).await?;
            opts.server_selection_timeout = Some(Duration::from_secs(10));
            opts.app_name = Some("tap".into());
            Client::with_options(opts)
        })?;
        let client = client.map_err(|e| Error::config(format!("MongoDB uri {masked}: {e}")))?;
        let hello = rt
            .run(client.database("admin").run_command(doc! {"hello": 1}).into_future())?
            .map_err(|e| Error::unavailable(format!("cannot reach MongoDB at {masked}: {e}")))?;
        let wire =
            hello.get_i32("maxWireVersion").map(i64::from).or_else(|_| hello.get_i64("maxWireVersion")).unwrap_or(0);
        let replica = hello.get_str("setName").is_ok() || hello.get_str("msg") == Ok("isdbgrid");
        Ok(Self {
            rt,
            client,
            database,
            bulk: wire >= 25,
            replica,
            masked_uri: masked,
            stream: None,
            written: std::collections::HashSet::new(),
            pre_images: false,
            streamed: Vec::new(),
            upsert_only: std::collections::HashSet::new(),
        })
    }

    fn coll(&self, name: &str) -> mongodb::Collection<Document> {
        self.client.database(&self.database).collection(name)
    }
}

impl Connector for Mongo {
    fn test(&mut self) -> Result<()> {
        self.rt
            .run(self.client.database(&self.database).run_command(doc! {"ping": 1}).into_future())?
            .map_err(mg_err)?;
        Ok(())
    }

    fn tables(&mut self) -> Result<Vec<String>> {
        let mut names =
            self.rt.run(self.client.database(&self.database).list_collection_names().into_future())?.map_err(mg_err)?;
        names.retain(|n| !n.starts_with("system."));
        names.sort();
        Ok(names)
    }

    /// Fields and their types from the BSON of the first 100 documents: the first non-null
    /// value of each field types it (a collection has no schema of its own).
    fn schema(&mut self, table: &str) -> Result<Schema> {
        let coll = self.coll(table);
        let docs: Vec<Document> =
            self.rt.run(async { coll.find(doc! {}).limit(100).await?.try_collect().await })?.map_err(mg_err)?;
        let mut fields = vec![Field {
            name: "_id".into(),
            ty: FieldType::Text,
            data_type: "OBJECT_ID".into(),
            primary_key: true,
            nullable: false,
        }];
        let mut typed: Vec<bool> = vec![true];
        for d in &docs {
            for (k, v) in d {
                let i = match fields.iter().position(|f| f.name == *k) {
                    Some(i) => i,
                    None => {
                        fields.push(Field {
                            name: k.clone(),
                            ty: FieldType::Text,
                            data_type: "NULL".into(),
                            primary_key: false,
                            nullable: true,
                        });
                        typed.push(false);
                        fields.len() - 1
                    }
                };
                if !typed[i] && *v != Bson::Null {
                    fields[i].ty = bson_type(v);
                    fields[i].data_type = format!("{:?}", v.element_type()).to_uppercase();
                    typed[i] = true;
                }
            }
        }
        Ok(Schema { table: table.to_string(), fields })
    }

    fn count(&mut self, table: &str) -> Result<u64> {
        self.rt.run(self.coll(table).count_documents(doc! {}).into_future())?.map_err(mg_err)
    }

    fn estimate(&mut self, table: &str) -> Result<u64> {
        self.rt.run(self.coll(table).estimated_document_count().into_future())?.map_err(mg_err)
    }

    fn sample(&mut self, table: &str, limit: usize) -> Result<Vec<Record>> {
        self.find(table, &Record::new(), limit)
    }

    fn find(&mut self, table: &str, filter: &Record, limit: usize) -> Result<Vec<Record>> {
        let coll = self.coll(table);
        let keys: Vec<String> = filter.keys().cloned().collect();
        let filter = filter_for(filter, &keys);
        let docs: Vec<Document> =
            self.rt.run(async { coll.find(filter).limit(limit as i64).await?.try_collect().await })?.map_err(mg_err)?;
        Ok(docs.into_iter().map(doc_to_record).collect())
    }

    fn execute(&mut self, _statement: &str) -> Result<u64> {
        Err(Error::unsupported("sql() runs SQL; MongoDB connections do not take it"))
    }

    fn cdc_pre_images(&mut self, tables: &[String]) -> Result<()> {
        self.require_pre_images(tables)
    }

    fn cdc_prepare(&mut self, _flow_id: &str, tables: &[String], _resume: bool) -> Result<()> {
        // The change stream filters the collections it was opened for: another list opens it
        // again, from the position the flow resumes at.
        if self.stream.is_some() && self.streamed.as_slice() != tables {
            self.stream = None;
        }
        self.streamed = tables.to_vec();
        if !self.replica {
            return Err(Error::config(format!(
                "MongoDB CDC reads change streams, which need a replica set or a sharded cluster; {} is a standalone server (start it with --replSet and run rs.initiate(), or use .full_sync() for a snapshot only)",
                self.masked_uri
            )));
        }
        Ok(())
    }

    fn cdc_position(&mut self, _flow_id: &str) -> Result<Position> {
        // A stream opened now and closed at once: its first resume token marks "now".
        let db = self.client.database(&self.database);
        let token = self.rt.run(async {
            let mut cs = db.watch().max_await_time(Duration::from_millis(1)).await?;
            if cs.resume_token().is_none() {
                cs.next_if_any().await?;
            }
            Ok::<_, mongodb::error::Error>(cs.resume_token())
        })?;
        match token.map_err(mg_err)? {
            Some(t) => position_of(&t),
            None => Err(Error::unavailable(format!(
                "MongoDB at {} opened a change stream but gave no resume token",
                self.masked_uri
            ))),
        }
    }

    /// A past cluster time, which the change stream starts at while the oplog holds it.
    fn cdc_position_at(&mut self, _flow_id: &str, at_ms: i64) -> Result<Position> {
        Ok(serde_json::json!({"at": at_ms.max(0) / 1000}))
    }

    fn snapshot(&mut self, read: &SnapshotRequest, emit: &mut Emit<'_>) -> Result<()> {
        let (table, batch) = (read.table.as_str(), read.batch);
        if read.query.is_some() {
            return Err(Error::unsupported(format!(
                "the source {table} reads a SQL query, which MongoDB does not run: read the collection with a filter"
            )));
        }
        // The conditions MongoDB compares as the engine does (numbers, dates; text and
        // booleans for equality); the engine filters again.
        let mut filter = Document::new();
        // An ObjectId reads as its hex text, which a text comparison would never match.
        let object_ids: Vec<String> = if read.filter.is_empty() {
            Vec::new()
        } else {
            self.schema(table)?.fields.into_iter().filter(|f| f.data_type == "OBJECT_ID").map(|f| f.name).collect()
        };
        for c in &read.filter {
            use crate::model::condition::Op;
            let pushable = match c.value {
                Value::Int(_) | Value::Float(_) | Value::Timestamp(_) | Value::TimestampTz(_) => true,
                Value::Text(_) => c.op == Op::Eq && !object_ids.contains(&c.field),
                Value::Bool(_) => c.op == Op::Eq,
                _ => false,
            };
            if pushable {
                let entry = filter.entry(c.field.clone()).or_insert_with(|| Bson::Document(Document::new()));
                if let Bson::Document(d) = entry {
                    d.insert(c.op.mongo(), to_bson(&c.value));
                }
            }
        }
        let coll = self.coll(table);
        // Batches are read inside the runtime and handed to `emit` outside it
        // (see `connectors::blocking`).
        let mut cursor = self.rt.run(coll.find(filter).batch_size(batch as u32).into_future())?.map_err(mg_err)?;
        let rt = &self.rt;
        crate::connectors::blocking::pump(
            batch,
            || {
                rt.run(async {
                    let mut buf = Vec::with_capacity(batch);
                    while buf.len() < batch {
                        let Some(d) = cursor.try_next().await.map_err(mg_err)? else { break };
                        buf.push(doc_to_record(d));
                    }
                    Ok::<_, Error>(buf)
                })?
            },
            emit,
        )
    }

    fn changes(
        &mut self,
        _flow_id: &str,
        tables: &[String],
        from: &Position,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Event>, Position)> {
        if self.stream.is_none() {
            // A CDC-only flow's first read starts at a cluster time; later ones resume a token.
            let at = from.get("at").and_then(serde_json::Value::as_u64);
            let token = if at.is_some() { None } else { Some(token_of(from)?) };
            // Row changes, and what ends the collection under the flow (drop, rename, the whole
            // database dropped), which stops the flow.
            let stage = doc! {"$match": {"$or": [
                {"ns.coll": {"$in": tables}, "operationType": {"$in": ["insert", "update", "replace", "delete", "drop", "rename"]}},
                {"operationType": "dropDatabase"},
            ]}};
            let db = self.client.database(&self.database);
            let mut watch = db
                .watch()
                .pipeline([stage])
                .full_document(FullDocumentType::UpdateLookup)
                .max_await_time(wait.clamp(Duration::from_millis(10), Duration::from_secs(1)))
                .resume_after(token);
            if self.pre_images {
                watch =
                    watch.full_document_before_change(mongodb::options::FullDocumentBeforeChangeType::WhenAvailable);
            }
            if let Some(t) = at {
                watch = watch.start_at_operation_time(bson::Timestamp { time: t as u32, increment: 0 });
            }
            let masked = &self.masked_uri;
            let cs = self.rt.run(watch.into_future())?.map_err(|e| {
                Error::unavailable(format!(
                    "cannot resume the MongoDB change stream at {masked} from the saved position ({e}); if the oplog no longer holds it, reset the flow to take a new snapshot"
                ))
            })?;
            self.stream = Some(cs);
        }
        let deadline = std::time::Instant::now() + wait;
        let mut out = Vec::new();
        let mut names: HashMap<String, std::sync::Arc<str>> = HashMap::new();
        let cs = self.stream.as_mut().ok_or_else(|| Error::internal("change stream"))?;
        let mut ended: Option<String> = None;
        let result = self.rt.run(async {
            loop {
                match cs.next_if_any().await? {
                    Some(ev) => {
                        let what = match ev.operation_type {
                            OperationType::Drop => Some("was dropped"),
                            OperationType::Rename => Some("was renamed"),
                            OperationType::DropDatabase => Some("was dropped with its database"),
                            _ => None,
                        };
                        if let Some(what) = what {
                            let coll = ev.ns.and_then(|n| n.coll).unwrap_or_else(|| tables.join(", "));
                            ended = Some(format!("{coll} {what}"));
                            break;
                        }
                        if let Some(e) = to_event(ev, &mut names) {
                            out.push(e);
                        }
                        if out.len() >= max {
                            break;
                        }
                    }
                    None if !out.is_empty() || std::time::Instant::now() >= deadline => break,
                    None => {}
                }
            }
            Ok::<_, mongodb::error::Error>(())
        })?;
        if let Err(e) = result {
            self.stream = None;
            return Err(mg_err(e));
        }
        if let Some(what) = ended {
            self.stream = None;
            return Err(Error::not_found(format!(
                "MongoDB source collection {}.{what}, so its changes are no longer seen; reset the flow to copy it again",
                self.database
            )));
        }
        let position = match cs.resume_token() {
            Some(t) => position_of(&t)?,
            None => from.clone(),
        };
        Ok((out, position))
    }

    fn cdc_ack(&mut self, _flow_id: &str, _position: &Position) -> Result<()> {
        // The oplog is the server's; the resume token in our checkpoint is the reader's place.
        Ok(())
    }

    fn cdc_release(&mut self, _flow_id: &str) -> Result<()> {
        self.stream = None;
        Ok(())
    }

    fn prepare_target(&mut self, target: &Target, _schema: &Schema) -> Result<()> {
        let (table, key, existing) = (target.table.as_str(), &target.key[..], target.existing);
        let coll = self.coll(table);
        self.upsert_only.remove(table);
        match existing {
            ExistingData::Drop => self.rt.run(coll.drop().into_future())?.map_err(mg_err)?,
            ExistingData::Remove => {
                self.rt.run(coll.delete_many(doc! {}).into_future())?.map_err(mg_err)?;
            }
            ExistingData::Keep => {}
        }
        if !key.is_empty() && key != ["_id"] {
            let mut keys = Document::new();
            for k in key {
                keys.insert(k.clone(), 1);
            }
            let index = mongodb::IndexModel::builder()
                .keys(keys)
                .options(
                    mongodb::options::IndexOptions::builder().unique(true).name(Some("tap_key".to_string())).build(),
                )
                .build();
            self.rt.run(coll.create_index(index).into_future())?.map_err(mg_err)?;
        }
        Ok(())
    }

    fn write(&mut self, target: &Target, changes: &[Change]) -> Result<()> {
        let (table, key) = (target.table.as_str(), &target.key[..]);
        if key.is_empty() && !target.append {
            return Err(Error::schema(format!("target collection {table} has no key to write by")));
        }
        let ns = Namespace::new(self.database.clone(), table.to_string());
        if target.append {
            // Each change a new document with a new `_id` (a record's own `_id` is dropped, as
            // in a write by any key but `_id`): the collection is a log of the changes.
            let models: Vec<WriteModel> = changes
                .iter()
                .map(|c| {
                    let mut document = to_doc(c.key_image());
                    document.remove("_id");
                    WriteModel::InsertOne(InsertOneModel::builder().namespace(ns.clone()).document(document).build())
                })
                .collect();
            return self.run_models(table, models, true);
        }
        // Every operation replaces or deletes a whole document, so the last one on a key decides
        // that document: keep only it, and the batch has one operation per key, in any order.
        let mut slots: Vec<Option<WriteModel>> = Vec::with_capacity(changes.len());
        let mut last: HashMap<String, usize> = HashMap::with_capacity(changes.len());
        // `put(filter, Some(document))` replaces (upserts) the document, `put(filter, None)`
        // deletes it.
        let mut put = |filter: Document, replacement: Option<Document>| {
            if let Some(i) = last.insert(filter.to_string(), slots.len()) {
                slots[i] = None;
            }
            let model = match replacement {
                Some(r) => WriteModel::ReplaceOne(
                    ReplaceOneModel::builder().namespace(ns.clone()).filter(filter).replacement(r).upsert(true).build(),
                ),
                None => WriteModel::DeleteOne(DeleteOneModel::builder().namespace(ns.clone()).filter(filter).build()),
            };
            slots.push(Some(model));
        };
        for c in changes {
            match c {
                Change::Insert { after } | Change::Update { after, .. } => {
                    if let Change::Update { before: Some(b), .. } = c
                        && key.iter().any(|k| b.get(k).is_some_and(|v| Some(v) != after.get(k)))
                    {
                        put(filter_for(b, key), None);
                    }
                    let mut replacement = to_doc(after);
                    if key != ["_id"] {
                        replacement.remove("_id");
                    }
                    put(filter_for(after, key), Some(replacement));
                }
                Change::Delete { before } => put(filter_for(before, key), None),
            }
        }
        let models: Vec<WriteModel> = slots.into_iter().flatten().collect();
        // A long run of documents (a snapshot's batch) goes in as inserts; one there already
        // (a duplicate key) sends the batch again as upserts, which end as if it had been
        // upserted from the start, and the collection is upserted only from then on.
        if models.len() >= crate::connectors::BULK_FROM
            && !self.upsert_only.contains(table)
            && models.iter().all(|m| matches!(m, WriteModel::ReplaceOne(_)))
        {
            self.check_present(table)?;
            let inserts: Vec<Statement> = models
                .iter()
                .filter_map(|m| match m {
                    WriteModel::ReplaceOne(r) => Some(Statement::Insert(&r.replacement)),
                    _ => None,
                })
                .collect();
            match self.run_statements(table, &inserts, false)? {
                None => return Ok(()),
                Some(r) if r.code == 11000 => {
                    self.upsert_only.insert(table.to_string());
                }
                Some(r) => return Err(r.error(&self.database, table)),
            }
        }
        self.run_models(table, models, false)
    }
}
