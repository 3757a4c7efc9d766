//! A sink's write strategy (`Sink(…).config(#{ writeStrategy })`): `appendWrite` turns every
//! change into a new row of a keyless target (an update its after image, a delete its before
//! image), through the snapshot and CDC; `updateWrite` writes by key, as `updateOrInsert`
//! does; anything else, and `appendWrite` in a lookup flow, is refused at save.

use crate::engine_mongo::{Driver, mongo_uri};
use crate::engine_mysql::my;
use crate::engine_postgres::pg;
use crate::harness::{Env, exec, query, wait_until};
use std::time::Duration;

#[test]
fn append_write_from_mysql_into_postgres_keeps_every_change_as_a_row() {
    let m = my();
    let p = pg();
    let tag = format!("aw_{}", std::process::id());
    m.sql("mysql", &format!("DROP DATABASE IF EXISTS {tag}; CREATE DATABASE {tag}"));
    m.sql(&tag, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, 'a'), (2, 'b');");
    p.psql(&format!("DROP SCHEMA IF EXISTS {tag} CASCADE; CREATE SCHEMA {tag};"));
    let env = Env::new("append-my-pg");
    let _engine = env.start_engine();
    let script = format!(
        r#"{}
{}
Flow("aw").read_from("My.t").write_to(Sink("P", "log").config(#{{ writeStrategy: "appendWrite" }})).save().start();
Flow("aw").wait_initial_sync();"#,
        m.datasource("My", &tag, &m.user, &m.password),
        p.datasource("P", &tag)
    );
    env.script("a.rhai", &script).ok();
    let rows = || p.psql(&format!("SELECT string_agg(id || v, ',' ORDER BY id, v) FROM {tag}.log")).trim().to_string();
    assert_eq!(rows(), "1a,2b", "the snapshot appended");
    let key = p.psql(&format!(
        "SELECT count(*) FROM information_schema.table_constraints WHERE table_schema = '{tag}' AND table_name = 'log'"
    ));
    assert_eq!(key.trim(), "0", "an appending target has no key");
    m.sql(&tag, "UPDATE t SET v = 'c' WHERE id = 1; DELETE FROM t WHERE id = 2; INSERT INTO t VALUES (3, 'd');");
    assert!(
        wait_until(Duration::from_secs(30), || rows() == "1a,1c,2b,2b,3d"),
        "an update appends its after image, a delete its before image: {}",
        rows()
    );
}

#[test]
fn append_write_into_mongodb_gives_every_change_its_own_document() {
    use mongodb::bson::doc;
    let db = format!("aw_{}", std::process::id());
    let d = Driver::new(&db, "log");
    d.run(d.coll.client().database(&db).drop());
    let env = Env::new("append-sqlite-mongo");
    let src = env.path("src.sqlite");
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');");
    let _engine = env.start_engine();
    let script = format!(
        r#"DataSource("sqlite", "S", #{{ database: "{}" }}).save();
DataSource("mongodb", "M", #{{ uri: "{}" }}).save();
Flow("awm").read_from("S.t").write_to(Sink("M", "log").config(#{{ writeStrategy: "appendWrite" }})).save().start();
Flow("awm").wait_initial_sync();"#,
        src.display(),
        mongo_uri(&db)
    );
    env.script("a.rhai", &script).ok();
    exec(&src, "UPDATE t SET v = 'b' WHERE id = 1;");
    let count = |f| d.run(d.coll.count_documents(f));
    assert!(
        wait_until(Duration::from_secs(30), || count(doc! {"id": 1_i64}) == 2),
        "the insert and the update are two documents: {}",
        count(doc! {})
    );
    assert_eq!(count(doc! {"id": 1_i64, "v": "b"}), 1);
}

#[test]
fn update_write_writes_by_key_and_other_strategies_are_refused() {
    let env = Env::new("write-strategies");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');");
    exec(&src, "CREATE TABLE u (id INTEGER PRIMARY KEY, t_id INTEGER);");
    let _engine = env.start_engine();
    let head = format!(
        r#"DataSource("sqlite", "S", #{{ database: "{}" }}).save();
DataSource("sqlite", "T", #{{ database: "{}" }}).save();
"#,
        src.display(),
        dst.display()
    );
    let ok = head.clone()
        + r#"Flow("uw").read_from("S.t").write_to(Sink("T", "t").config(#{ writeStrategy: "updateWrite" })).save().start();
Flow("uw").wait_initial_sync();"#;
    env.script("ok.rhai", &ok).ok();
    exec(&src, "UPDATE t SET v = 'b' WHERE id = 1;");
    assert!(
        wait_until(Duration::from_secs(30), || query(&dst, "SELECT id, v FROM t") == vec![vec!["1", "b"]]),
        "updateWrite updates the row by key: {:?}",
        query(&dst, "SELECT id, v FROM t")
    );
    let bad = env.script(
        "bad.rhai",
        &(head.clone()
            + r#"Flow("b").read_from("S.t").write_to(Sink("T", "b").config(#{ writeStrategy: "insertOnly" })).save();"#),
    );
    assert!(bad.code != 0 && bad.stderr.contains("writeStrategy is \"insertOnly\""), "{}", bad.stderr);
    let lookup = env.script(
        "lookup.rhai",
        &(head
            + r#"Flow("l").read_from("S.t").lookup("S.u", #{ path: "us", type: "array", relation: [["t_id", "id"]] })
    .write_to(Sink("T", "wide").config(#{ writeStrategy: "appendWrite" })).save();"#),
    );
    assert!(
        lookup.code != 0 && lookup.stderr.contains("appendWrite") && lookup.stderr.contains("lookup"),
        "{}",
        lookup.stderr
    );
}
