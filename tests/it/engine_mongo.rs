//! MongoDB as a target (SecantusDB, a MongoDB wire-protocol server started by `scripts/test`,
//! URI in TAP_TEST_MONGO_URL): a plain flow with CDC into it, change streams out of it, and the
//! seed tutorial's wide table from MariaDB into MongoDB — the seed's headline use case.

use crate::harness::{Env, wait_until};
use serde_json::Value;
use std::time::Duration;

pub fn mongo_uri(db: &str) -> String {
    let url = std::env::var("TAP_TEST_MONGO_URL")
        .expect("TAP_TEST_MONGO_URL is not set: run the suite with scripts/test, which starts SecantusDB");
    // mongodb://host:port/?opts → mongodb://host:port/DB?opts
    let (head, opts) = url.split_once("/?").unwrap_or((url.trim_end_matches('/'), ""));
    if opts.is_empty() { format!("{head}/{db}") } else { format!("{head}/{db}?{opts}") }
}

fn records(env: &Env, target: &str) -> Vec<Value> {
    let run = env.tap(&["--json", "-c", &format!("peek -n 100 {target}")]);
    run.ok();
    let v: Value = serde_json::from_str(run.stdout.trim()).expect("json");
    v["records"].as_array().cloned().unwrap_or_default()
}

#[test]
fn sqlite_to_mongodb_with_cdc() {
    let env = Env::new("lite2mongo");
    let db = format!("it_mongo_{}", std::process::id());
    let src = env.path("src.sqlite");
    crate::harness::exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, at DATETIME); INSERT INTO t VALUES (1, 'a', '2024-01-02 03:04:05'), (2, 'b', NULL);",
    );
    let script = format!(
        r#"DataSource("sqlite", "Lite", #{{ database: "{}" }}).type("source").save();
DataSource("mongodb", "Mongo", #{{ uri: "{}" }}).type("target").save();
Flow("lite2mongo").read_from("Lite.t").write_to("Mongo.docs").save().start();
Flow("lite2mongo").wait_initial_sync();"#,
        src.display(),
        mongo_uri(&db)
    );
    env.script("m.rhai", &script).ok();
    let names = |env: &Env| {
        let mut n: Vec<String> =
            records(env, "Mongo.docs").iter().map(|r| r["name"].as_str().unwrap_or("").to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&env), vec!["a", "b"]);
    let first = records(&env, "Mongo.docs").into_iter().find(|r| r["id"] == 1).expect("row 1");
    assert_eq!(first["at"], "2024-01-02 03:04:05+00:00", "a BSON date, read back (UTC)");
    assert_eq!(first["_id"].as_str().map(str::len), Some(24), "an ObjectId _id");
    crate::harness::exec(
        &src,
        "UPDATE t SET name = 'B' WHERE id = 2; DELETE FROM t WHERE id = 1; INSERT INTO t VALUES (3, 'c', NULL);",
    );
    assert!(
        wait_until(Duration::from_secs(30), || names(&env) == vec!["B", "c"]),
        "CDC into MongoDB: {:?}",
        names(&env)
    );
    env.tap(&["-c", "stop lite2mongo"]).ok();
}

#[test]
fn the_tutorial_wide_table_from_mariadb_into_mongodb() {
    let Ok(my_url) = std::env::var("TAP_TEST_MYSQL_URL") else {
        panic!("TAP_TEST_MYSQL_URL is not set: run the suite with scripts/test, which starts MariaDB");
    };
    let rest = my_url.trim_start_matches("mysql://");
    let (creds, addr) = rest.split_once('@').expect("user@host");
    let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
    let hostport = addr.split('/').next().unwrap_or(addr);
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    let env = Env::new("wide-mongo");
    let db = format!("it_wide_{}", std::process::id());
    let mysql = |sql: &str, database: &str| {
        let out = std::process::Command::new("mariadb")
            .args(["--no-defaults", "--protocol=tcp", "-h", host, "-P", port, "-u", user])
            .arg(format!("-p{password}"))
            .args(["-N", "-B", "-e", sql, database])
            .output()
            .expect("mariadb client");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    mysql(&format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"), "mysql");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wide_table.rhai")).expect("example");
    // The example reads its servers from the environment, as a user would set them.
    let run = env
        .command()
        .env("MYSQL_HOST", host)
        .env("MYSQL_PORT", port)
        .env("MYSQL_DATABASE", &db)
        .env("MYSQL_USER", user)
        .env("MYSQL_PASSWORD", password)
        .env("MONGODB_URI", mongo_uri(&db))
        .env("DEMO_ROWS", "40")
        .args(["-f", concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wide_table.rhai")])
        .output()
        .expect("tap");
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(example.contains("ORD789654"));
    assert!(stdout.contains("orderSingleView: 1 matching records") && stdout.contains("ORD789654"), "{stdout}");
    // A filtered peek reads the one document from MongoDB.
    let find = || {
        let run = env.tap(&["--json", "-c", "peek MongoDB_ECommerce.orderSingleView order_id=ORD789654"]);
        run.ok();
        let v: Value = serde_json::from_str(run.stdout.trim()).expect("json");
        let recs = v["records"].as_array().cloned().unwrap_or_default();
        assert!(recs.len() <= 1, "one document per order: {recs:?}");
        recs.into_iter().next()
    };
    let done = wait_until(Duration::from_secs(30), || {
        find().is_some_and(|d| d["order_status"] == "shipped" && d["order_items"][0]["price"].as_f64() == Some(210.0))
    });
    let d = find().unwrap_or(Value::Null);
    assert!(done, "the tutorial document: {d}");
    assert_eq!(d["order_payments"][0]["payment_value"].as_f64(), Some(220.0));
    assert_eq!(d["order_payments"][0]["payment_installments"].as_f64(), Some(2.0));
    assert_eq!(d["order_items"][0]["freight_value"].as_f64(), Some(18.0));
    assert_eq!(d["order_items"][0]["product"]["product_id"], "PROD56789");
    assert_eq!(d["order_items"][0]["seller"]["seller_id"], "SELL34567");
    assert_eq!(d["customer_info"]["customer_city"], "New York");
    mysql(&format!("DROP DATABASE {db}"), "mysql");
}

/// The official driver, for writing to the source side as an application would.
pub struct Driver {
    pub rt: tokio::runtime::Runtime,
    pub coll: mongodb::Collection<mongodb::bson::Document>,
}

impl Driver {
    pub fn new(db: &str, coll: &str) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let client = rt.block_on(mongodb::Client::with_uri_str(mongo_uri(db))).expect("client");
        Self { coll: client.database(db).collection(coll), rt }
    }
    pub fn run<T>(&self, f: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>) -> T {
        self.rt.block_on(f.into_future()).expect("MongoDB operation")
    }
}

/// MongoDB as a CDC source: the snapshot, then inserts, updates, replaces and deletes from the
/// change stream; then the engine is SIGKILLed, more changes land while it is down, and the
/// restarted flow resumes from its saved resume token (the delete made while it was down
/// reaches the target, which a new snapshot would not do).
#[test]
fn mongodb_change_streams_into_sqlite_resume_after_sigkill() {
    use mongodb::bson::doc;
    let env = Env::new("mongo2lite");
    let db = format!("it_mcdc_{}", std::process::id());
    let m = Driver::new(&db, "items");
    m.run(m.coll.drop());
    m.run(m.coll.insert_many([doc! {"name": "a", "qty": 1}, doc! {"name": "b", "qty": 2}]));
    let dst = env.path("dst.sqlite");
    let mut engine = env.start_engine();
    let script = format!(
        r#"DataSource("mongodb", "M", #{{ uri: "{}" }}).type("source").save();
DataSource("sqlite", "Lite", #{{ database: "{}" }}).type("target").save();
Flow("m2l").read_from("M.items").write_to("Lite.items").save().start();
Flow("m2l").wait_initial_sync();"#,
        mongo_uri(&db),
        dst.display()
    );
    env.script("m.rhai", &script).ok();
    let rows = || crate::harness::query(&dst, "SELECT name, qty FROM items ORDER BY name");
    let want = |v: &[(&str, i64)]| v.iter().map(|(n, q)| vec![n.to_string(), q.to_string()]).collect::<Vec<_>>();
    assert_eq!(rows(), want(&[("a", 1), ("b", 2)]));
    let ids = crate::harness::query(&dst, "SELECT length(_id) FROM items");
    assert!(ids.iter().all(|r| r[0] == "24"), "ObjectIds as hex: {ids:?}");

    m.run(m.coll.insert_one(doc! {"name": "c", "qty": 3}));
    m.run(m.coll.update_one(doc! {"name": "a"}, doc! {"$set": {"qty": 10}}));
    m.run(m.coll.replace_one(doc! {"name": "b"}, doc! {"name": "B", "qty": 20}));
    m.run(m.coll.delete_one(doc! {"name": "c"}));
    let expected = want(&[("B", 20), ("a", 10)]);
    assert!(wait_until(Duration::from_secs(30), || rows() == expected), "CDC from the change stream: {:?}", rows());

    engine.kill();
    m.run(m.coll.insert_one(doc! {"name": "d", "qty": 4}));
    m.run(m.coll.update_one(doc! {"name": "B"}, doc! {"$inc": {"qty": 1}}));
    m.run(m.coll.delete_one(doc! {"name": "a"}));
    let _engine = env.start_engine();
    let expected = want(&[("B", 21), ("d", 4)]);
    assert!(
        wait_until(Duration::from_secs(30), || rows() == expected),
        "resumed from the saved token after SIGKILL: {:?}",
        rows()
    );
    env.tap(&["-c", "stop m2l"]).ok();
    m.run(m.coll.drop());
}

/// Lookups with MongoDB as the source: change events carry only the `_id` of the old document,
/// so when an item moves to another order the engine finds its old order through its own copy
/// of the item, and both documents follow.
#[test]
fn lookups_from_a_mongodb_source_follow_moves_and_deletes() {
    use mongodb::bson::doc;
    let env = Env::new("mongo-lookup");
    let db = format!("it_mlk_{}", std::process::id());
    let orders = Driver::new(&db, "orders");
    let items = Driver::new(&db, "items");
    let out = Driver::new(&db, "order_docs");
    for d in [&orders, &items, &out] {
        d.run(d.coll.drop());
    }
    orders.run(orders.coll.insert_many([doc! {"_id": "A", "who": "ann"}, doc! {"_id": "B", "who": "bob"}]));
    items.run(items.coll.insert_many([
        doc! {"_id": 1, "order_id": "A", "sku": "x"},
        doc! {"_id": 2, "order_id": "A", "sku": "y"},
        doc! {"_id": 3, "order_id": "B", "sku": "z"},
    ]));
    let script = format!(
        r#"DataSource("mongodb", "M", #{{ uri: "{}" }}).save();
let f = Flow("mlk").read_from("M.orders");
f.lookup("M.items", #{{ path: "items", type: "array", relation: [["_id", "order_id"]] }});
f.write_to("M.order_docs").save().start();
f.wait_initial_sync();"#,
        mongo_uri(&db)
    );
    env.script("m.rhai", &script).ok();
    let skus = || -> Vec<(String, Vec<String>)> {
        use futures_util::TryStreamExt;
        let docs: Vec<mongodb::bson::Document> = out
            .rt
            .block_on(async { out.coll.find(doc! {}).sort(doc! {"_id": 1}).await?.try_collect().await })
            .expect("read");
        docs.iter()
            .map(|d| {
                let skus = d
                    .get_array("items")
                    .map(|a| {
                        a.iter()
                            .filter_map(|i| i.as_document().and_then(|i| i.get_str("sku").ok()).map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                (d.get_str("_id").unwrap_or("?").to_string(), skus)
            })
            .collect()
    };
    let want = |v: &[(&str, &[&str])]| {
        v.iter().map(|(o, s)| (o.to_string(), s.iter().map(|x| x.to_string()).collect())).collect::<Vec<_>>()
    };
    assert_eq!(skus(), want(&[("A", &["x", "y"]), ("B", &["z"])]));
    items.run(items.coll.update_one(doc! {"_id": 2}, doc! {"$set": {"order_id": "B"}}));
    items.run(items.coll.delete_one(doc! {"_id": 1}));
    let expected = want(&[("A", &[]), ("B", &["y", "z"])]);
    assert!(wait_until(Duration::from_secs(30), || skus() == expected), "documents follow: {:?}", skus());
    env.tap(&["-c", "stop mlk"]).ok();
    for d in [&orders, &items, &out] {
        d.run(d.coll.drop());
    }
}
