//! The connector contract, run the same way against every connector (SQLite, PostgreSQL 15,
//! MariaDB 10.11, SecantusDB) through `tap::connectors::open`, below the engine:
//!
//! - a sink applies a batch as if its changes ran one by one: a field given as null is empty
//!   afterwards, several images of one key in a batch end at the last, a key change moves the
//!   row, a field no column holds yet adds the column, and a replayed batch changes nothing;
//! - on a SQL target an image that lacks a field leaves that column as it is (PostgreSQL leaves
//!   unchanged large values out of an update's image); a MongoDB target replaces the document;
//! - a table that exists without a key on the flow's key gets one, so upserts find their row;
//! - an appending target (`appendWrite`) has no key and inserts every change's image;
//! - a snapshot reads every row in batches no larger than asked;
//! - CDC returns an insert, an update and a delete made after `cdc_position`, in order;
//! - typed values come back as they were written, where the database can hold them: a decimal
//!   with all its digits, bytes, a date, a timestamp to the millisecond, an instant, a nested
//!   document, a boolean.

use crate::engine_mongo::{Driver, mongo_uri};
use crate::engine_mysql::my;
use crate::engine_postgres::pg;
use crate::harness::Env;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tap::connectors::{self, Connector, ExistingData, SnapshotRequest, Target};
use tap::model::{Change, Field, FieldType, Record, Schema};

struct Subject {
    name: &'static str,
    conn: Box<dyn Connector>,
    /// What goes before a table's name in the connector's `execute` (`schema.` for
    /// PostgreSQL); `None`: the connector runs no statements (MongoDB), changes go through `write`.
    sql_table: Option<String>,
}

fn rec(v: Value) -> Record {
    Record::from_json_value(v.clone()).unwrap_or_else(|| panic!("not an object: {v}"))
}

fn field(name: &str, ty: FieldType, pk: bool) -> Field {
    Field { name: name.into(), ty, data_type: String::new(), primary_key: pk, nullable: !pk }
}

fn items_schema(table: &str) -> Schema {
    Schema {
        table: table.into(),
        fields: vec![
            field("id", FieldType::Integer, true),
            field("name", FieldType::Text, false),
            field("note", FieldType::Text, false),
        ],
    }
}

/// The rows of `table` as `id: field=value …` lines, empty fields left out (SQL NULL and an
/// absent MongoDB field read the same), MongoDB's own `_id` left out.
fn rows(c: &mut dyn Connector, table: &str) -> Vec<String> {
    let mut out: Vec<(i64, String)> = c
        .sample(table, 1000)
        .expect("sample")
        .into_iter()
        .map(|r| {
            let id = match r.get("id") {
                Some(tap::model::Value::Int(n)) => *n,
                Some(tap::model::Value::Text(s)) => s.parse().expect("numeric id"),
                other => panic!("row without id: {other:?}"),
            };
            let mut cells: Vec<String> = r
                .iter()
                .filter(|(k, v)| *k != "_id" && *k != "id" && !v.is_null())
                .map(|(k, v)| format!("{k}={}", v.text()))
                .collect();
            cells.sort();
            (id, format!("{id}: {}", cells.join(" ")))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, s)| s).collect()
}

fn sink_contract(s: &mut Subject) {
    let c = s.conn.as_mut();
    let items = Target::new("items", &["id".to_string()], ExistingData::Drop);
    c.prepare_target(&items, &items_schema("items")).expect("prepare_target");
    let batch = vec![
        Change::Insert { after: rec(json!({"id": 1, "name": "a", "note": "x"})) },
        Change::Insert { after: rec(json!({"id": 2, "name": "b", "note": "y"})) },
        Change::Update {
            before: Some(rec(json!({"id": 1}))),
            after: rec(json!({"id": 1, "name": "a2", "note": "x2"})),
        },
        // The last image of id 1 has a null note: the row ends without one.
        Change::Update {
            before: Some(rec(json!({"id": 1}))),
            after: rec(json!({"id": 1, "name": "a3", "note": null})),
        },
        Change::Delete { before: rec(json!({"id": 2, "name": "b"})) },
        Change::Insert { after: rec(json!({"id": 3, "name": "c", "note": "z"})) },
        // A key change: the row moves from 3 to 4.
        Change::Update {
            before: Some(rec(json!({"id": 3, "name": "c"}))),
            after: rec(json!({"id": 4, "name": "c", "note": "z"})),
        },
        // A field no column holds yet.
        Change::Insert { after: rec(json!({"id": 5, "name": "e", "extra": 7})) },
    ];
    let want = vec!["1: name=a3", "4: name=c note=z", "5: extra=7 name=e"];
    c.write(&items, &batch).unwrap_or_else(|e| panic!("{}: write: {e}", s.name));
    assert_eq!(rows(c, "items"), want, "{}: the batch applied as if one change at a time", s.name);
    c.write(&items, &batch).unwrap_or_else(|e| panic!("{}: replay: {e}", s.name));
    assert_eq!(rows(c, "items"), want, "{}: a replayed batch changes nothing", s.name);
    // Later batches: a row that gains the note again, and one whose last image clears `extra`.
    c.write(
        &items,
        &[
            Change::Update { before: None, after: rec(json!({"id": 1, "name": "a4", "note": "back"})) },
            Change::Update { before: None, after: rec(json!({"id": 5, "name": "e2", "extra": null})) },
        ],
    )
    .expect("second batch");
    assert_eq!(
        rows(c, "items"),
        vec!["1: name=a4 note=back", "4: name=c note=z", "5: name=e2"],
        "{}: later images update the row",
        s.name
    );
    // Images of another shape in one batch (a field left out, as a PostgreSQL update leaves out
    // an unchanged large value): on a SQL target the column the image lacks keeps its value.
    c.write(
        &items,
        &[
            Change::Update { before: None, after: rec(json!({"id": 4, "name": "c2"})) },
            Change::Update { before: None, after: rec(json!({"id": 1, "name": "a5", "note": "n"})) },
            Change::Update { before: None, after: rec(json!({"id": 4, "name": "c3"})) },
        ],
    )
    .expect("third batch");
    let four = if s.sql_table.is_some() { "4: name=c3 note=z" } else { "4: name=c3" };
    assert_eq!(rows(c, "items"), vec!["1: name=a5 note=n", four, "5: name=e2"], "{}: a field an image lacks", s.name);
    assert_eq!(c.count("items").expect("count"), 3, "{}", s.name);
}

/// A target table that exists without a key on the flow's key: preparing it gives it one, so a
/// second image of a row replaces it rather than adding a copy.
fn keyless_target_contract(s: &mut Subject) {
    let Some(prefix) = &s.sql_table else { return };
    let q = |t: &str| format!("{prefix}{t}");
    let c = s.conn.as_mut();
    c.execute(&format!("DROP TABLE IF EXISTS {}", q("plain"))).expect("drop");
    c.execute(&format!("CREATE TABLE {} (id INTEGER NOT NULL, name VARCHAR(50))", q("plain"))).expect("create");
    let plain = Target::new("plain", &["id".to_string()], ExistingData::Keep);
    c.prepare_target(&plain, &items_schema("plain")).expect("prepare an existing table");
    // As every start of the flow does again.
    c.prepare_target(&plain, &items_schema("plain")).expect("prepare it again");
    c.write(&plain, &[Change::Insert { after: rec(json!({"id": 1, "name": "a"})) }]).expect("write");
    c.write(&plain, &[Change::Insert { after: rec(json!({"id": 1, "name": "b"})) }]).expect("write again");
    assert_eq!(rows(c, "plain"), vec!["1: name=b"], "{}: an upsert into an existing keyless table", s.name);
}

/// `appendWrite`: every change is a new row (an update its after image, a delete its before
/// image), in a table without a key, so a replayed batch is appended again.
fn append_contract(s: &mut Subject) {
    let c = s.conn.as_mut();
    let log = Target::appending("log", ExistingData::Drop);
    let mut schema = items_schema("log");
    schema.fields.iter_mut().for_each(|f| f.primary_key = false);
    c.prepare_target(&log, &schema).expect("prepare an appending target");
    // (MongoDB's `_id` is a new ObjectId per document.)
    let key = c.schema("log").expect("schema").primary_key();
    assert!(key.is_empty() || key == ["_id"], "{}: an appending target has no key: {key:?}", s.name);
    let batch = vec![
        Change::Insert { after: rec(json!({"id": 1, "name": "a"})) },
        Change::Update { before: Some(rec(json!({"id": 1, "name": "a"}))), after: rec(json!({"id": 1, "name": "b"})) },
        Change::Delete { before: rec(json!({"id": 1, "name": "b"})) },
        Change::Insert { after: rec(json!({"id": 2, "name": "c"})) },
    ];
    c.write(&log, &batch).expect("append");
    let once = vec!["1: name=a", "1: name=b", "1: name=b", "2: name=c"];
    assert_eq!(rows(c, "log"), once, "{}: every change appended", s.name);
    c.write(&log, &batch).expect("append again");
    let twice: Vec<&str> =
        vec!["1: name=a", "1: name=a", "1: name=b", "1: name=b", "1: name=b", "1: name=b", "2: name=c", "2: name=c"];
    assert_eq!(rows(c, "log"), twice, "{}: a replayed batch is appended again", s.name);
}

fn snapshot_contract(s: &mut Subject) {
    let c = s.conn.as_mut();
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    c.snapshot(&SnapshotRequest::table("items", 2), &mut |batch| {
        sizes.push(batch.len());
        ids.extend(batch.iter().map(|r| r["id"].text()));
        Ok(std::ops::ControlFlow::Continue(()))
    })
    .unwrap_or_else(|e| panic!("{}: snapshot: {e}", s.name));
    ids.sort();
    assert_eq!(ids, vec!["1", "4", "5"], "{}: every row once", s.name);
    assert!(sizes.iter().all(|n| *n <= 2), "{}: batches of at most 2 rows: {sizes:?}", s.name);
    // A reader that says stop gets no more batches: a flow stopping mid-snapshot.
    let mut batches = 0;
    c.snapshot(&SnapshotRequest::table("items", 1), &mut |_| {
        batches += 1;
        Ok(std::ops::ControlFlow::Break(()))
    })
    .unwrap_or_else(|e| panic!("{}: a stopped snapshot is not an error: {e}", s.name));
    assert_eq!(batches, 1, "{}: no batch after a stop", s.name);
}

fn cdc_contract(s: &mut Subject) {
    let flow = format!("conformance{}", std::process::id());
    let tables = vec!["feed".to_string()];
    // A MongoDB delete event carries the document's `_id` only: that is a collection's key.
    let idf = if s.sql_table.is_some() { "id" } else { "_id" };
    let feed = Target::new("feed", &[idf.to_string()], ExistingData::Drop);
    match &s.sql_table {
        Some(prefix) => {
            let q = |t: &str| format!("{prefix}{t}");
            s.conn.execute(&format!("DROP TABLE IF EXISTS {}", q("feed"))).expect("drop");
            s.conn
                .execute(&format!("CREATE TABLE {} (id INTEGER PRIMARY KEY, name VARCHAR(50))", q("feed")))
                .expect("create");
        }
        None => {
            let schema = Schema { table: "feed".into(), fields: vec![field(idf, FieldType::Integer, true)] };
            s.conn.prepare_target(&feed, &schema).expect("create the collection");
        }
    }
    s.conn.cdc_prepare(&flow, &tables, false).unwrap_or_else(|e| panic!("{}: cdc_prepare: {e}", s.name));
    let from = s.conn.cdc_position(&flow).expect("cdc_position");
    match &s.sql_table {
        Some(prefix) => {
            let t = format!("{prefix}feed");
            for st in [
                format!("INSERT INTO {t} (id, name) VALUES (1, 'a')"),
                format!("UPDATE {t} SET name = 'b' WHERE id = 1"),
                format!("DELETE FROM {t} WHERE id = 1"),
            ] {
                s.conn.execute(&st).expect("change");
            }
        }
        None => {
            for change in [
                Change::Insert { after: rec(json!({"_id": 1, "name": "a"})) },
                Change::Update { before: None, after: rec(json!({"_id": 1, "name": "b"})) },
                Change::Delete { before: rec(json!({"_id": 1})) },
            ] {
                s.conn.write(&feed, &[change]).expect("change");
            }
        }
    }
    let mut seen: Vec<String> = Vec::new();
    let mut pos = from;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 3 && Instant::now() < deadline {
        let (events, next) = s
            .conn
            .changes(&flow, &tables, &pos, 100, Duration::from_millis(500))
            .unwrap_or_else(|e| panic!("{}: changes: {e}", s.name));
        for e in events {
            assert_eq!(&*e.table, "feed", "{}", s.name);
            let img = e.change.key_image();
            let name = img.get("name").filter(|v| !v.is_null()).map(tap::model::Value::text).unwrap_or_default();
            seen.push(format!("{} {} {name}", e.change.op(), img[idf].text()).trim().to_string());
        }
        pos = next;
    }
    s.conn.cdc_ack(&flow, &pos).expect("cdc_ack");
    s.conn.cdc_release(&flow).expect("cdc_release");
    assert_eq!(seen.first().map(String::as_str), Some("i 1 a"), "{}: {seen:?}", s.name);
    assert_eq!(seen.get(1).map(String::as_str), Some("u 1 b"), "{}: {seen:?}", s.name);
    assert!(seen.get(2).is_some_and(|d| d.starts_with("d 1")), "{}: {seen:?}", s.name);
    assert_eq!(seen.len(), 3, "{}: {seen:?}", s.name);
}

/// Typed values written and read back: one row alone, then `BULK` rows in one batch (the
/// size from which a connector may write a run through its bulk path: COPY, insert_many), their
/// texts holding what a bulk format must escape.
fn values_contract(s: &mut Subject) {
    use tap::model::Value as V;
    let c = s.conn.as_mut();
    let time = |t: &str, ty| V::parse_time(t, ty).expect("a time");
    let ty = |v: &V| v.field_type().unwrap_or(FieldType::Text);
    let texts = ["héllo", "tab\there", "new\nline\r", "back\\slash \\N", "\\x00ff", "", "\\.", "quote ' \""];
    let written = |id: usize| -> Record {
        [
            ("id", V::Int(id as i64)),
            ("dec", V::Decimal("12345678901234567890.0123456789".into())),
            ("bin", V::Bytes(vec![0, 255, 16, id as u8])),
            ("day", time("2024-02-29", FieldType::Date)),
            ("at", time("2024-01-02 03:04:05.123", FieldType::Timestamp)),
            ("instant", time("2024-01-02 03:04:05.5+02:00", FieldType::TimestampTz)),
            ("doc", V::Object(rec(json!({"a": [1, "x", texts[id % texts.len()]], "b": {"c": null}})))),
            ("yes", V::Bool(id % 2 == 1)),
            ("x", V::Float(1.5 + id as f64)),
            ("t", if id % 9 == 8 { V::Null } else { V::Text(texts[id % texts.len()].into()) }),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    let first = written(1);
    let schema =
        Schema { table: "typed".into(), fields: first.iter().map(|(k, v)| field(k, ty(v), k == "id")).collect() };
    let target = Target::new("typed", &["id".to_string()], ExistingData::Drop);
    for n in [1, BULK] {
        c.prepare_target(&target, &schema).unwrap_or_else(|e| panic!("{}: prepare: {e}", s.name));
        let batch: Vec<Change> = (1..=n).map(|id| Change::Insert { after: written(id) }).collect();
        c.write(&target, &batch).unwrap_or_else(|e| panic!("{}: write {n}: {e}", s.name));
        let mut back = Vec::new();
        c.snapshot(&SnapshotRequest::table("typed", 1000), &mut |batch| {
            back.extend(batch);
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .unwrap_or_else(|e| panic!("{}: snapshot: {e}", s.name));
        assert_eq!(back.len(), n, "{}: every row of {n} read back", s.name);
        back.sort_by_key(|r| r["id"].as_f64().unwrap_or(0.0) as i64);
        for (i, mut got) in back.into_iter().enumerate() {
            got.remove("_id");
            let want = expected(s.name, written(i + 1), &got);
            assert_eq!(got, want, "{}: the values written, read back (row {} of {n})", s.name, i + 1);
        }
    }
}

/// Rows written by one batch of `BULK` and more: rows there already are updated, not refused
/// (a snapshot resumed, CDC replaying what the snapshot read), and an appending target appends.
fn bulk_contract(s: &mut Subject) {
    let c = s.conn.as_mut();
    let items = Target::new("bulk", &["id".to_string()], ExistingData::Drop);
    c.prepare_target(&items, &items_schema("bulk")).expect("prepare");
    let ins = |ids: std::ops::Range<usize>, name: &str, note: bool| -> Vec<Change> {
        ids.map(|i| {
            let mut r = json!({"id": i, "name": format!("{name}{i}")});
            if note {
                r["note"] = json!("x");
            }
            Change::Insert { after: rec(r) }
        })
        .collect()
    };
    c.write(&items, &ins(0..BULK, "a", true)).unwrap_or_else(|e| panic!("{}: bulk write: {e}", s.name));
    // Half of these rows are there already, and the images lack `note`.
    c.write(&items, &ins(BULK / 2..BULK * 3 / 2, "b", false))
        .unwrap_or_else(|e| panic!("{}: a bulk batch over rows there already: {e}", s.name));
    let want: Vec<String> = (0..BULK * 3 / 2)
        .map(|i| match i {
            i if i < BULK / 2 => format!("{i}: name=a{i} note=x"),
            // An image that lacks a field leaves a SQL column as it is; MongoDB replaces the document.
            i if i < BULK && s.sql_table.is_some() => format!("{i}: name=b{i} note=x"),
            i => format!("{i}: name=b{i}"),
        })
        .collect();
    let mut got = rows(c, "bulk");
    got.sort_by_key(|r| r.split(':').next().and_then(|n| n.parse::<usize>().ok()));
    assert_eq!(got, want, "{}: a bulk batch ends as its upserts would", s.name);
    let log = Target::appending("bulk_log", ExistingData::Drop);
    let mut schema = items_schema("bulk_log");
    schema.fields.iter_mut().for_each(|f| f.primary_key = false);
    c.prepare_target(&log, &schema).expect("prepare an appending target");
    for _ in 0..2 {
        c.write(&log, &ins(0..BULK, "a", true)).unwrap_or_else(|e| panic!("{}: bulk append: {e}", s.name));
    }
    assert_eq!(c.count("bulk_log").expect("count"), 2 * BULK as u64, "{}: every image appended", s.name);
}

/// Enough images in one run for a connector's bulk path.
const BULK: usize = 300;

/// What `written` reads back as on each database, given what came back (`got`).
fn expected(name: &str, written: Record, got: &Record) -> Record {
    use tap::model::Value as V;
    let mut want = written.clone();
    let utc = |v: &V| match v {
        V::Date(d) => V::TimestampTz(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()),
        V::Timestamp(t) => V::TimestampTz(t.and_utc()),
        other => other.clone(),
    };
    match name {
        // NUMERIC affinity keeps a decimal's first 15 significant digits (a REAL).
        "SQLite" => {
            assert_eq!(got["dec"].as_f64(), written["dec"].as_f64(), "SQLite: the decimal as a REAL");
            want["dec"] = got["dec"].clone();
        }
        // No zoned type: an instant is a DATETIME(6) holding its UTC time.
        "MySQL" => {
            let V::TimestampTz(t) = &written["instant"] else { panic!("an instant") };
            want["instant"] = V::Timestamp(t.naive_utc());
        }
        // No date-only or naive type: BSON dates, read back as instants.
        "MongoDB" => {
            want["day"] = utc(&written["day"]);
            want["at"] = utc(&written["at"]);
        }
        _ => {}
    }
    // A null field: SQL reads NULL, MongoDB has no field.
    if written.get("t").is_some_and(V::is_null) && !got.contains_key("t") {
        want.remove("t");
    }
    want
}

fn run(mut s: Subject) {
    values_contract(&mut s);
    sink_contract(&mut s);
    keyless_target_contract(&mut s);
    append_contract(&mut s);
    bulk_contract(&mut s);
    snapshot_contract(&mut s);
    cdc_contract(&mut s);
}

#[test]
fn conformance_sqlite() {
    let env = Env::new("conformance-sqlite");
    let path = env.path("c.sqlite");
    let conn = connectors::open("SQLite", &json!({"database": path.display().to_string()})).expect("open");
    run(Subject { name: "SQLite", conn, sql_table: Some(String::new()) });
}

#[test]
fn conformance_postgres() {
    let p = pg();
    let schema = format!("conf_{}", std::process::id());
    p.psql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"));
    let config = json!({"host": p.host, "port": p.port, "database": p.database, "schema": schema,
                        "user": p.user, "password": p.password});
    let conn = connectors::open("PostgreSQL", &config).expect("open");
    run(Subject { name: "PostgreSQL", conn, sql_table: Some(format!("{schema}.")) });
    p.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

#[test]
fn conformance_mysql() {
    let m = my();
    let db = format!("conf_{}", std::process::id());
    m.sql("mysql", &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
    let config = json!({"host": m.host, "port": m.port, "database": db, "user": m.user, "password": m.password});
    let conn = connectors::open("Mysql", &config).expect("open");
    run(Subject { name: "MySQL", conn, sql_table: Some(String::new()) });
    m.sql("mysql", &format!("DROP DATABASE {db}"));
}

#[test]
fn conformance_mongodb() {
    let db = format!("conf_{}", std::process::id());
    let d = Driver::new(&db, "items");
    d.run(d.coll.client().database(&db).drop());
    let conn = connectors::open("MongoDB", &json!({"uri": mongo_uri(&db)})).expect("open");
    run(Subject { name: "MongoDB", conn, sql_table: None });
    d.run(d.coll.client().database(&db).drop());
}
