//! MongoDB as a target (SecantusDB, a MongoDB wire-protocol server started by `scripts/test`,
//! URI in TAP_TEST_MONGO_URL): a plain flow with CDC, and the seed tutorial's wide table from
//! MariaDB into MongoDB — the seed's headline use case.

use crate::harness::{Env, wait_until};
use serde_json::Value;
use std::time::Duration;

fn mongo_uri(db: &str) -> String {
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
    assert_eq!(first["at"], "2024-01-02 03:04:05.000", "a BSON date, read back");
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
    let find = || records(&env, "MongoDB_ECommerce.orderSingleView").into_iter().find(|r| r["order_id"] == "ORD789654");
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
