//! `Source(…).enablePreImage()`: updates and deletes carry the whole row before them. MongoDB
//! asks its change stream for the document before each change (the collection must keep them,
//! `changeStreamPreAndPostImages`), PostgreSQL needs `REPLICA IDENTITY FULL`; without it the
//! flow stops saying what to run. Seen through an appending target, where a delete appends its
//! before image.

use crate::engine_mongo::{Driver, mongo_uri};
use crate::engine_postgres::pg;
use crate::harness::{Env, query, wait_until};
use std::time::Duration;

#[test]
fn mongodb_deletes_carry_the_document_before_them_when_the_collection_keeps_it() {
    use mongodb::bson::doc;
    let db = format!("pre_{}", std::process::id());
    let d = Driver::new(&db, "t");
    let database = d.coll.client().database(&db);
    d.run(database.drop());
    d.run(database.create_collection("t"));
    d.run(database.create_collection("plain"));
    d.run(database.run_command(doc! {"collMod": "t", "changeStreamPreAndPostImages": {"enabled": true}}));
    d.run(d.coll.insert_one(doc! {"_id": 1_i64, "v": "a"}));
    let env = Env::new("pre-mongo");
    let dst = env.path("dst.sqlite");
    let _engine = env.start_engine();
    let script = format!(
        r#"DataSource("mongodb", "M", #{{ uri: "{}" }}).save();
DataSource("sqlite", "T", #{{ database: "{}" }}).save();
Flow("pre").read_from(Source("M", "t").enablePreImage()).write_to(Sink("T", "log").config(#{{ writeStrategy: "appendWrite" }})).save().start();
Flow("pre").wait_initial_sync();"#,
        mongo_uri(&db),
        dst.display()
    );
    env.script("p.rhai", &script).ok();
    d.run(d.coll.delete_one(doc! {"_id": 1_i64}));
    let with_v = || query(&dst, "SELECT count(*) FROM log WHERE v = 'a'")[0][0].clone();
    assert!(
        wait_until(Duration::from_secs(30), || with_v() == "2"),
        "the snapshot row and the delete's whole before image: {:?}",
        query(&dst, "SELECT * FROM log")
    );
    let bad = env.script(
        "b.rhai",
        r#"Flow("plain").read_from(Source("M", "plain").enablePreImage()).write_to("T.plain").save().start();"#,
    );
    assert!(bad.code != 0 && bad.stderr.contains("changeStreamPreAndPostImages: {enabled: true}"), "{}", bad.stderr);
    let status = || env.tap(&["-c", "status plain"]).stdout;
    assert!(wait_until(Duration::from_secs(30), || status().contains("current status is: error")), "{}", status());
    assert!(status().contains("changeStreamPreAndPostImages: {enabled: true}"), "{}", status());
}

#[test]
fn postgres_pre_images_need_replica_identity_full() {
    let p = pg();
    let tag = format!("pre_{}", std::process::id());
    p.psql(&format!(
        "DROP SCHEMA IF EXISTS {tag} CASCADE; CREATE SCHEMA {tag};
         CREATE TABLE {tag}.t (id int PRIMARY KEY, v text); INSERT INTO {tag}.t VALUES (1, 'a');
         CREATE TABLE {tag}.keyed (id int PRIMARY KEY, v text);"
    ));
    p.psql(&format!("ALTER TABLE {tag}.t REPLICA IDENTITY FULL"));
    let env = Env::new("pre-pg");
    let dst = env.path("dst.sqlite");
    let _engine = env.start_engine();
    let script = format!(
        r#"{}
DataSource("sqlite", "T", #{{ database: "{}" }}).save();
Flow("pre").read_from(Source("P", "t").enablePreImage()).write_to(Sink("T", "log").config(#{{ writeStrategy: "appendWrite" }})).save().start();
Flow("pre").wait_initial_sync();"#,
        p.datasource("P", &tag),
        dst.display()
    );
    env.script("p.rhai", &script).ok();
    p.psql(&format!("DELETE FROM {tag}.t WHERE id = 1"));
    let with_v = || query(&dst, "SELECT count(*) FROM log WHERE v = 'a'")[0][0].clone();
    assert!(wait_until(Duration::from_secs(30), || with_v() == "2"), "{:?}", query(&dst, "SELECT * FROM log"));
    let bad = env.script(
        "b.rhai",
        r#"Flow("keyed").read_from(Source("P", "keyed").enablePreImage()).write_to("T.keyed").save().start();"#,
    );
    assert!(bad.code != 0 && bad.stderr.contains("REPLICA IDENTITY FULL;"), "{}", bad.stderr);
    let status = || env.tap(&["-c", "status keyed"]).stdout;
    assert!(wait_until(Duration::from_secs(30), || status().contains("current status is: error")), "{}", status());
    assert!(status().contains("REPLICA IDENTITY FULL;"), "{}", status());
}
