//! The embedded engine with PostgreSQL 15 (started by `scripts/test`, URL in TAP_TEST_PG_URL):
//! snapshot plus insert, update and delete CDC for SQLite → PostgreSQL, PostgreSQL → PostgreSQL
//! and PostgreSQL → SQLite.

use crate::harness::{Env, exec, query, wait_until};
use std::process::Command;
use std::time::Duration;

pub struct Pg {
    pub url: String,
    pub host: String,
    pub port: String,
    pub user: String,
    pub password: String,
    pub database: String,
}

pub fn pg() -> Pg {
    let url = std::env::var("TAP_TEST_PG_URL")
        .expect("TAP_TEST_PG_URL is not set: run the suite with scripts/test, which starts PostgreSQL");
    // postgres://user:password@host:port/database
    let rest = url.trim_start_matches("postgres://");
    let (creds, addr) = rest.split_once('@').expect("user@host in TAP_TEST_PG_URL");
    let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
    let (hostport, database) = addr.split_once('/').expect("/database in TAP_TEST_PG_URL");
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    Pg {
        url: url.clone(),
        host: host.into(),
        port: port.into(),
        user: user.into(),
        password: password.into(),
        database: database.into(),
    }
}

impl Pg {
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .arg(&self.url)
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .expect("psql installed");
        assert!(out.status.success(), "psql failed for {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
    /// A script line saving a DataSource `name` for schema `schema` of the test server.
    pub fn datasource(&self, name: &str, schema: &str) -> String {
        format!(
            r#"DataSource("postgres", "{name}", #{{ host: "{}", port: {}, database: "{}", schema: "{schema}", user: "{}", password: "{}" }}).save();"#,
            self.host, self.port, self.database, self.user, self.password
        )
    }
}

fn pg_rows(pg: &Pg, schema: &str, table: &str) -> String {
    if pg.psql(&format!("SELECT to_regclass('{schema}.{table}') IS NULL")) == "t" {
        return "<no table yet>".into();
    }
    pg.psql(&format!("SELECT id, name, qty::float8, flag FROM {schema}.{table} ORDER BY id"))
}

fn sqlite_rows(path: &std::path::Path, table: &str) -> String {
    // The flow creates the table when its first rows arrive.
    if !path.exists() || query(path, &format!("SELECT count(*) FROM sqlite_master WHERE name = '{table}'"))[0][0] == "0"
    {
        return "<no table yet>".into();
    }
    query(path, &format!("SELECT id, name, qty, flag FROM {table} ORDER BY id"))
        .into_iter()
        .map(|r| {
            let flag = match r[3].as_str() {
                "1" => "t",
                "0" => "f",
                other => other,
            };
            format!("{}|{}|{}|{}", r[0], if r[1] == "NULL" { "" } else { &r[1] }, r[2], flag)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn postgres_to_postgres_and_postgres_to_sqlite_snapshot_and_cdc() {
    let pg = pg();
    let env = Env::new("pg2pg");
    let schema = format!("it_pg2pg_{}", std::process::id());
    pg.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.items (id int PRIMARY KEY, name text, qty numeric(10,2), flag boolean, doc jsonb, raw bytea, at timestamp);
         INSERT INTO {schema}.items SELECT i, 'item ' || i, i * 1.5, i % 2 = 0, jsonb_build_object('i', i), '\\x0aff', '2024-01-02 03:04:05'
           FROM generate_series(1, 500) i;"
    ));
    let dst = env.path("dst.sqlite");
    let script = format!(
        r#"{src}
           {dst_pg}
           DataSource("sqlite", "Lite", #{{ database: "{dst}" }}).save();
           Flow("pg2pg").read_from("PgSrc.items").write_to("PgDst.items_copy").save();
           Flow("pg2lite").read_from("PgSrc.items").exclude("raw").write_to("Lite.items").save();
           start("pg2pg");
           start("pg2lite");"#,
        src = pg.datasource("PgSrc", &schema),
        dst_pg = pg.datasource("PgDst", &schema),
        dst = dst.display()
    );
    env.script("pg.rhai", &script).ok();
    let same = || pg_rows(&pg, &schema, "items") == pg_rows(&pg, &schema, "items_copy");
    assert!(wait_until(Duration::from_secs(60), same), "snapshot PG → PG");
    assert!(
        wait_until(Duration::from_secs(60), || pg_rows(&pg, &schema, "items") == sqlite_rows(&dst, "items")),
        "snapshot PG → SQLite"
    );
    assert_eq!(
        pg.psql(&format!("SELECT doc->>'i', encode(raw, 'hex'), at FROM {schema}.items_copy WHERE id = 7")),
        "7|0aff|2024-01-02 03:04:05"
    );
    // A filtered peek reads PostgreSQL by value (text, integer and boolean columns).
    let run = env.tap(&["--json", "-c", "peek PgSrc.items name='item 8' id=8 flag=true"]);
    run.ok();
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("json");
    assert_eq!(v["records"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["records"][0]["qty"], 12.0, "{v}");

    pg.psql(&format!(
        "INSERT INTO {schema}.items (id, name, qty, flag) VALUES (1000, 'new', 1, true);
         UPDATE {schema}.items SET name = 'changed', qty = qty + 1 WHERE id % 10 = 0;
         DELETE FROM {schema}.items WHERE id % 7 = 0;
         UPDATE {schema}.items SET id = 2000 WHERE id = 1;"
    ));
    assert!(wait_until(Duration::from_secs(60), same), "CDC PG → PG:\n{}", pg_rows(&pg, &schema, "items_copy"));
    assert!(
        wait_until(Duration::from_secs(60), || pg_rows(&pg, &schema, "items") == sqlite_rows(&dst, "items")),
        "CDC PG → SQLite"
    );

    // Reset and delete drop the flows' replication slots and publications.
    // This test's flows' slots are named like their publications, which name this schema's tables.
    let ours = pg.psql(&format!(
        "SELECT string_agg(DISTINCT pubname, ',') FROM pg_publication_tables WHERE schemaname = '{schema}'"
    ));
    let ours: Vec<String> = ours.split(',').filter(|s| !s.is_empty()).map(|s| format!("'{s}'")).collect();
    assert_eq!(ours.len(), 2, "each running flow has a publication");
    let slots =
        || pg.psql(&format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ({})", ours.join(",")));
    assert_eq!(slots(), "2", "each running flow holds a replication slot");
    env.tap(&["-c", "stop pg2pg"]).ok();
    env.tap(&["-c", "stop pg2lite"]).ok();
    env.tap(&["-c", "delete pg2pg -y"]).ok();
    env.tap(&["-c", "reset pg2lite"]).ok();
    let pubs = pg.psql(&format!(
        "SELECT count(*) FROM pg_publication p JOIN pg_publication_tables t ON t.pubname = p.pubname WHERE t.schemaname = '{schema}'"
    ));
    assert_eq!(pubs, "0", "publications dropped");
    assert!(wait_until(Duration::from_secs(10), || slots() == "0"), "slots dropped: {} left", slots());
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

#[test]
fn sqlite_to_postgres_snapshot_and_cdc() {
    let pg = pg();
    let env = Env::new("lite2pg");
    let schema = format!("it_lite2pg_{}", std::process::id());
    pg.psql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"));
    let src = env.path("src.sqlite");
    exec(
        &src,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty REAL, flag BOOLEAN);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300)
         INSERT INTO items SELECT i, 'item ' || i, i, i % 2 FROM c;",
    );
    let script = format!(
        r#"DataSource("sqlite", "Lite", #{{ database: "{}" }}).save();
           {}
           Flow("lite2pg").read_from("Lite.items").write_to("Pg.items").save();
           start("lite2pg");"#,
        src.display(),
        pg.datasource("Pg", &schema)
    );
    env.script("lite.rhai", &script).ok();
    let same = || sqlite_rows(&src, "items") == pg_rows(&pg, &schema, "items");
    assert!(wait_until(Duration::from_secs(60), same), "snapshot SQLite → PG:\n{}", pg_rows(&pg, &schema, "items"));
    exec(
        &src,
        "INSERT INTO items VALUES (999, 'x', 1, 1); UPDATE items SET name = NULL WHERE id < 5; DELETE FROM items WHERE id > 290 AND id < 999;",
    );
    assert!(wait_until(Duration::from_secs(60), same), "CDC SQLite → PG");
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

#[test]
fn demo_fills_a_postgres_connection() {
    let pg = pg();
    let env = Env::new("demo-pg");
    let schema = format!("it_demo_{}", std::process::id());
    pg.psql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"));
    env.script("pg.rhai", &pg.datasource("PgDemo", &schema)).ok();
    let run = env.tap(&["demo", "--rows", "200", "--into", "PgDemo"]);
    run.ok();
    assert!(run.stdout.contains("ecom_orders 200"), "{}", run.stdout);
    assert_eq!(pg.psql(&format!("SELECT count(*) FROM {schema}.ecom_orders")), "200");
    assert_eq!(pg.psql(&format!("SELECT data_type FROM information_schema.columns WHERE table_schema = '{schema}' AND table_name = 'ecom_order_items' AND column_name = 'price'")), "numeric");
    // The new tables are visible to the shell at once.
    let run = env.tap(&["--json", "-c", "count PgDemo.ecom_customers"]);
    run.ok();
    assert!(run.stdout.contains("\"count\":190"), "{}", run.stdout);
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

#[test]
fn postgres_sigkill_mid_snapshot_and_mid_cdc_loses_and_duplicates_nothing() {
    let pg = pg();
    let env = Env::new("pg-crash");
    let schema = format!("it_pgcrash_{}", std::process::id());
    pg.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.items (id int PRIMARY KEY, name text, qty int);
         INSERT INTO {schema}.items SELECT i, 'item ' || i, i % 97 FROM generate_series(1, 300000) i;"
    ));
    let digest = |table: &str| {
        pg.psql(&format!("SELECT count(*) || ':' || md5(string_agg(id || ',' || coalesce(name, '') || ',' || qty, ';' ORDER BY id)) FROM {schema}.{table}"))
    };
    let target_rows = || -> i64 {
        pg.psql(&format!("SELECT coalesce((SELECT count(*) FROM {schema}.copy), 0)")).parse().unwrap_or(0)
    };
    // The failpoint aborts the engine right after the fourth snapshot batch (5,000 rows each).
    let mut engine = env.start_engine_with(&[("TAP_FAILPOINT", "after_batch:4")]);
    let _ = env.script(
        "flow.rhai",
        &format!(
            r#"{}
               Flow("pgcrash").read_from("P.items").write_to("P.copy").save();
               start("pgcrash");"#,
            pg.datasource("P", &schema)
        ),
    ); // the engine may die before the start returns
    assert!(engine.wait_exit(Duration::from_secs(60)), "the failpoint ended the engine mid-snapshot");
    assert_eq!(target_rows(), 20_000, "killed right after the fourth batch");
    pg.psql(&format!(
        "UPDATE {schema}.items SET qty = qty + 1000 WHERE id % 10 = 0; DELETE FROM {schema}.items WHERE id % 7 = 0;
         INSERT INTO {schema}.items VALUES (500000, 'new', 1);"
    ));
    let mut engine = env.start_engine();
    assert!(
        wait_until(Duration::from_secs(180), || digest("items") == digest("copy")),
        "equal after a restart mid-snapshot"
    );
    // In CDC now: restarted with a failpoint that aborts it after the fifth saved position,
    // while a writer commits 40 transactions.
    engine.kill();
    let mut engine = env.start_engine_with(&[("TAP_FAILPOINT", "after_checkpoint:5")]);

    let writer = {
        let url = pg.url.clone();
        let schema = schema.clone();
        std::thread::spawn(move || {
            for round in 0..40 {
                let sql = format!(
                    "UPDATE {schema}.items SET qty = qty + 1 WHERE id % 40 = {round}; INSERT INTO {schema}.items VALUES ({}, 'late', {round});",
                    600_000 + round
                );
                let ok = Command::new("psql")
                    .arg(&url)
                    .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", &sql])
                    .status()
                    .map(|s| s.success());
                assert_eq!(ok.ok(), Some(true));
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    assert!(engine.wait_exit(Duration::from_secs(60)), "the failpoint ended the engine mid-CDC");
    writer.join().expect("writer");
    let _engine = env.start_engine();
    assert!(
        wait_until(Duration::from_secs(180), || digest("items") == digest("copy")),
        "equal after a restart mid-CDC"
    );
    env.tap(&["-c", "stop pgcrash"]).ok();
    env.tap(&["-c", "delete pgcrash -y"]).ok();
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

#[test]
fn wide_documents_in_postgres_jsonb() {
    let pg = pg();
    let env = Env::new("lookup-pg");
    let schema = format!("it_lookup_{}", std::process::id());
    pg.psql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"));
    let script = format!(
        r#"let path = demo(100);
DataSource("sqlite", "Shop", #{{ database: path }}).type("source").save();
{}
let f = Flow("wide").read_from("Shop.ecom_orders");
f.lookup("Shop.ecom_customers", #{{ path: "customer_info", type: "object", relation: [["customer_id", "customer_id"]] }});
f.lookup("Shop.ecom_order_items", #{{ path: "order_items", type: "array", relation: [["order_id", "order_id"]] }});
f.lookup("Shop.ecom_products", #{{ path: "order_items.product", type: "object", relation: [["product_id", "order_items.product_id"]] }});
f.write_to("Pg.order_view").save().start();
f.wait_initial_sync();"#,
        pg.datasource("Pg", &schema)
    );
    env.script("wide.rhai", &script).ok();
    assert_eq!(pg.psql(&format!("SELECT count(*) FROM {schema}.order_view")), "100");
    assert_eq!(
        pg.psql(&format!("SELECT data_type FROM information_schema.columns WHERE table_schema = '{schema}' AND table_name = 'order_view' AND column_name = 'order_items'")),
        "jsonb"
    );
    let src = env.data_dir().join("demo.sqlite");
    let (order, product) = {
        let r = query(&src, "SELECT order_id, product_id FROM ecom_order_items ORDER BY order_id LIMIT 1");
        (r[0][0].clone(), r[0][1].clone())
    };
    exec(&src, &format!("UPDATE ecom_products SET product_category_name = 'renamed' WHERE product_id = '{product}'"));
    let category = || {
        pg.psql(&format!(
            "SELECT order_items->0->'product'->>'product_category_name' FROM {schema}.order_view WHERE order_id = '{order}'"
        ))
    };
    assert!(
        wait_until(Duration::from_secs(30), || category() == "renamed"),
        "nested lookup change reached PostgreSQL: {}",
        category()
    );
    env.tap(&["-c", "stop wide"]).ok();
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

/// PostgreSQL leaves an unchanged large (TOAST) value out of an update's image: the target keeps
/// it rather than setting it to NULL.
#[test]
fn an_unchanged_large_value_survives_an_update() {
    let pg = pg();
    let env = Env::new("pg-toast");
    let schema = format!("it_toast_{}", std::process::id());
    // 20 kB of md5 text: too large to stay inline and not compressible below the threshold.
    pg.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.docs (id int PRIMARY KEY, title text, body text);
         INSERT INTO {schema}.docs SELECT 1, 'first', string_agg(md5(g::text), '') FROM generate_series(1, 640) g;"
    ));
    let dst = env.path("dst.sqlite");
    let script = format!(
        r#"{src}
           DataSource("sqlite", "Lite", #{{ database: "{dst}" }}).save();
           Flow("toast").read_from("PgSrc.docs").write_to("Lite.docs").save();
           start("toast");
           Flow("toast").wait_initial_sync();"#,
        src = pg.datasource("PgSrc", &schema),
        dst = dst.display()
    );
    env.script("toast.rhai", &script).ok();
    let body_len = || query(&dst, "SELECT title, length(body) FROM docs WHERE id = 1");
    assert_eq!(body_len(), vec![vec!["first".to_string(), "20480".to_string()]], "snapshot");
    pg.psql(&format!("UPDATE {schema}.docs SET title = 'second' WHERE id = 1"));
    let want = vec![vec!["second".to_string(), "20480".to_string()]];
    assert!(wait_until(Duration::from_secs(60), || body_len() == want), "after the update: {:?}", body_len());
    env.tap(&["-c", "stop toast"]).ok();
    env.tap(&["-c", "delete toast -y"]).ok();
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

/// The snapshot reads each column in PostgreSQL's binary format by its type; the types it does
/// not decode itself come through `to_jsonb`: every one arrives as the value it holds, the
/// infinities and NaN as their text, nulls as nulls.
#[test]
fn a_snapshot_reads_every_postgresql_type() {
    let p = pg();
    let schema = format!("odd_{}", std::process::id());
    p.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; SET search_path TO {schema};
         CREATE TYPE mood AS ENUM ('ok', 'sad'); CREATE TYPE pair AS (a int, b text);
         CREATE TABLE odd (id int PRIMARY KEY, s smallint, r real, u uuid, arr int[], tarr text[],
             iv interval, d date, ts timestamp, tz timestamptz, n numeric, c char(4), m mood, p pair,
             j json, o oid, v varchar(10), tm time, bo boolean, f float8);
         INSERT INTO odd VALUES (1, -2, 1.1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{1,2,NULL}}', '{{x,\"y z\"}}',
             '1 day 02:00:00', 'infinity', '-infinity', 'infinity', 'NaN', 'ab', 'sad', ROW(1, 'q'),
             '{{\"k\": [1, 2.5]}}', 42, 'vv', '03:04:05', false, 'NaN');
         INSERT INTO odd (id) VALUES (2);"
    ));
    let config = serde_json::json!({"host": p.host, "port": p.port, "database": p.database, "schema": schema,
                                    "user": p.user, "password": p.password});
    let mut conn = tap::connectors::open("PostgreSQL", &config).expect("open");
    let mut rows = Vec::new();
    conn.snapshot(&tap::connectors::SnapshotRequest::table("odd", 10), &mut |batch| {
        rows.extend(batch);
        Ok(std::ops::ControlFlow::Continue(()))
    })
    .expect("snapshot");
    rows.sort_by_key(|r| r["id"].text());
    let want = |v: serde_json::Value| tap::model::Record::from_json_value(v).expect("an object");
    assert_eq!(
        rows,
        vec![
            want(serde_json::json!({"id": 1, "s": -2, "r": 1.1, "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "arr": [1, 2, null], "tarr": ["x", "y z"], "iv": "1 day 02:00:00", "d": "infinity",
                "ts": "-infinity", "tz": "infinity", "n": "NaN", "c": "ab  ", "m": "sad", "p": {"a": 1, "b": "q"},
                "j": {"k": [1, 2.5]}, "o": 42, "v": "vv", "tm": "03:04:05", "bo": false, "f": null})),
            want(serde_json::json!({"id": 2, "s": null, "r": null, "u": null, "arr": null, "tarr": null, "iv": null,
                "d": null, "ts": null, "tz": null, "n": null, "c": null, "m": null, "p": null, "j": null, "o": null,
                "v": null, "tm": null, "bo": null, "f": null})),
        ]
    );
    p.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

/// A CDC batch of thousands of changes into PostgreSQL is written as two halves by key on two
/// connections at once (the log says so) and lands exact; a large batch that moves rows to
/// other keys (and reuses the old ones) is written by one connection, in order, and lands exact.
#[test]
fn a_large_cdc_batch_into_postgres_is_split_over_two_connections_and_lands_exact() {
    let pg = pg();
    let env = Env::new("pgsplit");
    let schema = format!("it_pgsplit_{}", std::process::id());
    pg.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.items (id int PRIMARY KEY, name text, qty numeric(10,2), flag boolean);
         INSERT INTO {schema}.items SELECT i, 'item ' || i, i * 1.5, i % 2 = 0 FROM generate_series(1, 100) i;"
    ));
    let script = format!(
        r#"{src}
           Flow("split").read_from("S.items").write_to("S.items_copy").save();
           start("split");
           Flow("split").wait_initial_sync();"#,
        src = pg.datasource("S", &schema),
    );
    env.script("split.rhai", &script).ok();
    let same = || pg_rows(&pg, &schema, "items") == pg_rows(&pg, &schema, "items_copy");
    assert!(wait_until(Duration::from_secs(60), same), "snapshot");
    // One transaction of about 4,300 changes: one batch, split by key.
    pg.psql(&format!(
        "BEGIN;
         INSERT INTO {schema}.items SELECT i, 'new ' || i, i, i % 3 = 0 FROM generate_series(101, 3100) i;
         UPDATE {schema}.items SET name = 'changed ' || id, qty = qty + 1 WHERE id % 3 = 0;
         DELETE FROM {schema}.items WHERE id % 11 = 0;
         COMMIT;"
    ));
    assert!(wait_until(Duration::from_secs(60), same), "the split batch:\n{}", pg_rows(&pg, &schema, "items_copy"));
    let logs = env.tap(&["-c", "logs split"]).stdout;
    assert!(logs.contains("written by two connections at once"), "the second writer is said: {logs}");
    // Rows moved to new keys, their old keys taken again in the same transaction.
    pg.psql(&format!(
        "BEGIN;
         UPDATE {schema}.items SET id = id + 100000 WHERE id % 5 = 0;
         INSERT INTO {schema}.items SELECT i, 'again ' || i, 2, true FROM generate_series(5, 3100, 5) i;
         COMMIT;"
    ));
    assert!(wait_until(Duration::from_secs(60), same), "moved keys:\n{}", pg_rows(&pg, &schema, "items_copy"));
    env.tap(&["-c", "stop split"]).ok();
    env.tap(&["-c", "delete split -y"]).ok();
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}
