//! Whole databases (TapFlow's `Pipeline`): 100 tables copied and kept in CDC in one pipeline,
//! each into its own renamed table keyed by its own key, a table created while it runs picked
//! up; a pipeline of a listed few and of a pattern, from MariaDB into PostgreSQL; and what a
//! pipeline refuses (a table without a key, a missing table, a table flow's step).

use crate::engine_mysql::my;
use crate::engine_postgres::pg;
use crate::harness::{Env, exec, query, wait_until};
use std::time::Duration;

#[test]
fn a_hundred_tables_in_one_pipeline_are_copied_renamed_and_followed_and_new_ones_picked_up() {
    let env = Env::new("pipeline-100");
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    let mut ddl = String::new();
    for i in 0..100 {
        ddl.push_str(&format!(
            "CREATE TABLE t{i:03} (id INTEGER PRIMARY KEY, v TEXT, n INTEGER); INSERT INTO t{i:03} VALUES (1, 'a{i}', {i}), (2, 'b{i}', {i});"
        ));
    }
    exec(&src, &ddl);
    let _engine = env.start_engine();
    let script = crate::harness::sqlite_src_dst(&src, &dst)
        + r#"let p = Pipeline("all").read_from("Src").renameTable("copy_", "").write_to("Dst");
print(p.show());
p.save().start();
Flow("all").wait_initial_sync();"#;
    let run = env.script("p.rhai", &script);
    run.ok();
    assert!(
        run.stdout.contains(r#"Pipeline("all").read_from("Src").renameTable("copy_", "").write_to("Dst")"#),
        "{}",
        run.stdout
    );
    let tables =
        || query(&dst, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name LIKE 'copy_t%'")[0][0].clone();
    assert_eq!(tables(), "100");
    assert_eq!(
        query(&dst, "SELECT id, v, n FROM copy_t042 ORDER BY id"),
        vec![vec!["1", "a42", "42"], vec!["2", "b42", "42"]]
    );
    // CDC into each table's own copy.
    exec(
        &src,
        "UPDATE t007 SET v = 'changed' WHERE id = 1; DELETE FROM t099 WHERE id = 2; INSERT INTO t050 VALUES (3, 'c', 0);",
    );
    let cdc = || {
        query(&dst, "SELECT v FROM copy_t007 WHERE id = 1") == vec![vec!["changed"]]
            && query(&dst, "SELECT count(*) FROM copy_t099")[0][0] == "1"
            && query(&dst, "SELECT count(*) FROM copy_t050")[0][0] == "3"
    };
    assert!(wait_until(Duration::from_secs(30), cdc), "the changes reach their tables");
    // A table created while the pipeline runs is copied, then followed.
    exec(&src, "CREATE TABLE late (code TEXT PRIMARY KEY, qty INTEGER); INSERT INTO late VALUES ('x', 1);");
    let late = || query(&dst, "SELECT count(*) FROM sqlite_master WHERE name = 'copy_late'")[0][0] == "1";
    assert!(wait_until(Duration::from_secs(30), late), "the new table is picked up");
    exec(&src, "UPDATE late SET qty = 2 WHERE code = 'x'; INSERT INTO late VALUES ('y', 5);");
    let rows = || query(&dst, "SELECT code, qty FROM copy_late ORDER BY code");
    assert!(
        wait_until(Duration::from_secs(30), || rows() == vec![vec!["x", "2"], vec!["y", "5"]]),
        "and followed: {:?}",
        rows()
    );
    let status = || env.tap(&["-c", "status all"]).stdout;
    assert!(
        wait_until(Duration::from_secs(10), || status().contains("current status is: running")
            && status().contains("tables copied: 101 of 101")),
        "{}",
        status()
    );
    let logs = env.tap(&["-c", "logs all"]).stdout;
    assert!(logs.contains("101 tables") || logs.contains("table late matches now"), "{logs}");
}

#[test]
fn a_pipeline_of_listed_tables_and_of_a_pattern_from_mariadb_into_postgres() {
    let m = my();
    let p = pg();
    let tag = format!("pl_{}", std::process::id());
    m.sql("mysql", &format!("DROP DATABASE IF EXISTS {tag}; CREATE DATABASE {tag}"));
    m.sql(
        &tag,
        "CREATE TABLE ecom_orders (order_id VARCHAR(20) PRIMARY KEY, amount DECIMAL(10,2));
         CREATE TABLE ecom_customers (customer_id INT PRIMARY KEY, name VARCHAR(20));
         CREATE TABLE other (id INT PRIMARY KEY);
         CREATE TABLE nokey (v INT);
         INSERT INTO ecom_orders VALUES ('o1', 12.50); INSERT INTO ecom_customers VALUES (1, 'ana'); INSERT INTO other VALUES (1);",
    );
    p.psql(&format!("DROP SCHEMA IF EXISTS {tag} CASCADE; CREATE SCHEMA {tag};"));
    let env = Env::new("pipeline-my-pg");
    let _engine = env.start_engine();
    let head = format!("{}\n{}\n", m.datasource("My", &tag, &m.user, &m.password), p.datasource("P", &tag));
    let script = head.clone()
        + r#"Pipeline("re").read_from(Source("My", #{ table_re: "ecom_.*" })).renameTable("", "_copy").write_to("P").save().start();
Pipeline("listed").read_from(Source("My", #{ table: ["other"] })).write_to("P").save().start();
Flow("re").wait_initial_sync();
Flow("listed").wait_initial_sync();"#;
    env.script("p.rhai", &script).ok();
    let tables = p.psql(&format!(
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = '{tag}'"
    ));
    assert_eq!(
        tables.trim(),
        "ecom_customers_copy,ecom_orders_copy,other",
        "the pattern's tables, renamed, and the listed one"
    );
    assert_eq!(p.psql(&format!("SELECT amount FROM {tag}.ecom_orders_copy")).trim(), "12.50");
    m.sql(
        &tag,
        "INSERT INTO ecom_orders VALUES ('o2', 1.00); UPDATE ecom_customers SET name = 'bo' WHERE customer_id = 1;",
    );
    let cdc = || {
        p.psql(&format!(
            "SELECT (SELECT count(*) FROM {tag}.ecom_orders_copy) || ',' || (SELECT name FROM {tag}.ecom_customers_copy)"
        ))
        .trim()
        .to_string()
    };
    assert!(wait_until(Duration::from_secs(30), || cdc() == "2,bo"), "{}", cdc());
    // A table without a key, a table that is not there, a table flow's step: refused at save.
    let refused = |name: &str, chain: &str, want: &str| {
        let bad = env.script(&format!("{name}.rhai"), &format!("{head}Pipeline(\"{name}\"){chain}.save();"));
        assert!(bad.code != 0 && bad.stderr.contains(want), "{name}: {}", bad.stderr);
    };
    refused("nokey", r#".read_from("My").write_to("P")"#, "table nokey has no primary key");
    refused("missing", r#".read_from(Source("My", #{ table: ["nope"] })).write_to("P")"#, "there is no table nope");
    refused("table", r#".read_from("My.other")"#, "a Pipeline copies whole databases");
    let flow = env.script("flow.rhai", &format!("{head}Flow(\"f\").read_from(\"My\");"));
    assert!(flow.code != 0 && flow.stderr.contains("Pipeline(\"name\").read_from(\"My\")"), "{}", flow.stderr);
}

#[test]
fn a_mongodb_pipeline_follows_its_collections_and_picks_up_a_new_one() {
    use mongodb::bson::doc;
    let db = format!("plm_{}", std::process::id());
    let d = crate::engine_mongo::Driver::new(&db, "a");
    let database = d.coll.client().database(&db);
    d.run(database.drop());
    d.run(d.coll.insert_one(doc! {"_id": 1_i64, "v": "a"}));
    d.run(database.collection::<mongodb::bson::Document>("b").insert_one(doc! {"_id": 1_i64, "w": "b"}));
    let env = Env::new("pipeline-mongo");
    let dst = env.path("dst.sqlite");
    let _engine = env.start_engine();
    let script = format!(
        r#"DataSource("mongodb", "M", #{{ uri: "{}" }}).save();
DataSource("sqlite", "T", #{{ database: "{}" }}).save();
Pipeline("mp").read_from("M").write_to("T").save().start();
Flow("mp").wait_initial_sync();"#,
        crate::engine_mongo::mongo_uri(&db),
        dst.display()
    );
    env.script("m.rhai", &script).ok();
    assert_eq!(query(&dst, "SELECT v FROM a"), vec![vec!["a"]]);
    assert_eq!(query(&dst, "SELECT w FROM b"), vec![vec!["b"]]);
    d.run(database.collection::<mongodb::bson::Document>("c").insert_one(doc! {"_id": 7_i64, "x": "c"}));
    let has_c = || query(&dst, "SELECT count(*) FROM sqlite_master WHERE name = 'c'")[0][0] == "1";
    assert!(wait_until(Duration::from_secs(30), has_c), "the new collection is copied");
    d.run(database.collection::<mongodb::bson::Document>("c").insert_one(doc! {"_id": 8_i64, "x": "later"}));
    d.run(d.coll.update_one(doc! {"_id": 1_i64}, doc! {"$set": {"v": "changed"}}));
    let rows = || (query(&dst, "SELECT count(*) FROM c")[0][0].clone(), query(&dst, "SELECT v FROM a")[0][0].clone());
    assert!(
        wait_until(Duration::from_secs(30), || rows() == ("2".to_string(), "changed".to_string())),
        "the new collection's changes, and the old ones', follow: {:?}",
        rows()
    );
}

#[test]
fn a_postgres_pipeline_publishes_a_table_created_while_it_runs() {
    let p = pg();
    let tag = format!("plp_{}", std::process::id());
    p.psql(&format!(
        "DROP SCHEMA IF EXISTS {tag} CASCADE; CREATE SCHEMA {tag};
         CREATE TABLE {tag}.a (id int PRIMARY KEY, v text); INSERT INTO {tag}.a VALUES (1, 'a');"
    ));
    let env = Env::new("pipeline-pg");
    let dst = env.path("dst.sqlite");
    let _engine = env.start_engine();
    let script = format!(
        r#"{}
DataSource("sqlite", "T", #{{ database: "{}" }}).save();
Pipeline("pp").read_from("P").write_to("T").save().start();
Flow("pp").wait_initial_sync();"#,
        p.datasource("P", &tag),
        dst.display()
    );
    env.script("p.rhai", &script).ok();
    p.psql(&format!("CREATE TABLE {tag}.b (id int PRIMARY KEY, w text); INSERT INTO {tag}.b VALUES (1, 'first');"));
    let has_b = || query(&dst, "SELECT count(*) FROM sqlite_master WHERE name = 'b'")[0][0] == "1";
    assert!(wait_until(Duration::from_secs(30), has_b), "the new table is copied");
    p.psql(&format!("INSERT INTO {tag}.b VALUES (2, 'second'); UPDATE {tag}.a SET v = 'changed';"));
    let rows = || (query(&dst, "SELECT count(*) FROM b")[0][0].clone(), query(&dst, "SELECT v FROM a")[0][0].clone());
    assert!(
        wait_until(Duration::from_secs(30), || rows() == ("2".to_string(), "changed".to_string())),
        "published and followed: {:?}",
        rows()
    );
}
