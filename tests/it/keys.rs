//! Keys and shapes decided from the schema: a table without a primary key is keyed by a unique
//! index on NOT NULL columns (SQLite, MariaDB, PostgreSQL — where CDC also needs the replica
//! identity, named with the statement that sets it); one without is refused at save with what
//! to do; a lookup relation naming a field its table does not have is refused at save.

use crate::engine_mysql::my;
use crate::engine_postgres::pg;
use crate::harness::{Env, exec, query, sqlite_src_dst, wait_until};
use std::time::Duration;

fn rows(path: &std::path::Path, sql: &str) -> Vec<Vec<String>> {
    if !path.exists() || query(path, "SELECT count(*) FROM sqlite_master WHERE name = 't'")[0][0] == "0" {
        return Vec::new();
    }
    query(path, sql)
}

#[test]
fn a_sqlite_table_keyed_by_a_unique_index_replicates_and_one_without_a_key_is_refused_at_save() {
    let env = Env::new("keys-sqlite");
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(
        &src,
        "CREATE TABLE t (code TEXT NOT NULL, n INTEGER, note TEXT);
         CREATE UNIQUE INDEX t_code ON t (code);
         CREATE TABLE loose (code TEXT UNIQUE, n INTEGER);
         INSERT INTO t VALUES ('a', 1, 'x'), ('b', 2, 'y'), ('c', 3, 'z');
         INSERT INTO loose VALUES ('a', 1);",
    );
    let _engine = env.start_engine();
    let script = sqlite_src_dst(&src, &dst)
        + r#"Flow("uniq").read_from("Src.t").write_to("Dst.t").save();
start("uniq");
Flow("uniq").wait_initial_sync();"#;
    env.script("u.rhai", &script).ok();
    exec(
        &src,
        "UPDATE t SET n = 20, note = NULL WHERE code = 'b'; DELETE FROM t WHERE code = 'c'; INSERT INTO t VALUES ('d', 4, 'w');",
    );
    let want = query(&src, "SELECT code, n, note FROM t ORDER BY code");
    assert!(
        wait_until(Duration::from_secs(30), || rows(&dst, "SELECT code, n, note FROM t ORDER BY code") == want),
        "{:?}",
        rows(&dst, "SELECT code, n, note FROM t ORDER BY code")
    );
    // The target keys on the index's column: a second start replays nothing twice.
    env.tap(&["-c", "stop uniq"]).ok();
    env.tap(&["-c", "start uniq"]).ok();
    exec(&src, "UPDATE t SET n = 21 WHERE code = 'b'");
    let want = query(&src, "SELECT code, n, note FROM t ORDER BY code");
    assert!(wait_until(Duration::from_secs(30), || rows(&dst, "SELECT code, n, note FROM t ORDER BY code") == want));

    // No primary key, and the only unique index allows NULLs: refused at save, saying why and what to do.
    let run = env.script(
        "l.rhai",
        &(sqlite_src_dst(&src, &dst) + r#"Flow("loose").read_from("Src.loose").write_to("Dst.loose").save();"#),
    );
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr.contains("table loose has no primary key and no unique index on NOT NULL columns"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("allow NULLs"), "the nullable index is named: {}", run.stderr);
    assert!(run.stderr.contains("write_to"), "what to do: {}", run.stderr);
    // As on TapData, the refused confirmation leaves the flow an unconfirmed draft.
    let listed = env.tap(&["-c", "show flows"]).stdout;
    let line = listed.lines().find(|l| l.contains("loose")).unwrap_or_default();
    assert!(line.contains("edit"), "a draft, not saved: {listed}");
    // Named by the user, the key works.
    env.script(
        "l2.rhai",
        &(sqlite_src_dst(&src, &dst) + r#"Flow("loose").read_from("Src.loose").write_to("Dst.loose", "code").save();"#),
    )
    .ok();
}

#[test]
fn a_mariadb_table_keyed_by_a_composite_unique_index_replicates_and_a_nullable_one_is_refused() {
    let my = my();
    let env = Env::new("keys-my");
    let db = format!("it_keys_{}", std::process::id());
    my.sql("mysql", &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
    // MariaDB itself shows a NOT NULL unique key of a table without a primary key as its
    // primary key (information_schema's COLUMN_KEY = PRI).
    my.sql(
        &db,
        "CREATE TABLE t (a INT NOT NULL, b VARCHAR(10) NOT NULL, n INT, UNIQUE KEY t_ab (a, b));
         INSERT INTO t VALUES (1, 'x', 10), (1, 'y', 11), (2, 'x', 12);",
    );
    let dst = env.path("dst.sqlite");
    let _engine = env.start_engine();
    let script = format!(
        r#"{}
DataSource("sqlite", "Lite", #{{ database: "{}" }}).save();
Flow("myuniq").read_from("My.t").write_to("Lite.t").save();
start("myuniq");
Flow("myuniq").wait_initial_sync();"#,
        my.datasource("My", &db, &my.user, &my.password),
        dst.display()
    );
    env.script("m.rhai", &script).ok();
    my.sql(
        &db,
        "UPDATE t SET n = 99 WHERE a = 1 AND b = 'y'; DELETE FROM t WHERE a = 2; INSERT INTO t VALUES (3, 'z', 13);",
    );
    let want = vec![vec!["1", "x", "10"], vec!["1", "y", "99"], vec!["3", "z", "13"]];
    let got = || rows(&dst, "SELECT a, b, n FROM t ORDER BY a, b");
    assert!(wait_until(Duration::from_secs(30), || got() == want), "{:?}", got());
    env.tap(&["-c", "stop myuniq"]).ok();
    env.tap(&["-c", "delete myuniq -y"]).ok();
    // A unique key that allows NULLs keys nothing: refused at save, the index named.
    my.sql(&db, "CREATE TABLE loose (a INT, n INT, UNIQUE KEY loose_a (a))");
    let run = env.script(
        "l.rhai",
        &format!(
            r#"{}
DataSource("sqlite", "Lite", #{{ database: "{}" }}).save();
Flow("myloose").read_from("My.loose").write_to("Lite.loose").save();"#,
            my.datasource("My", &db, &my.user, &my.password),
            dst.display()
        ),
    );
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("its unique indexes loose_a (a) allow NULLs"), "{}", run.stderr);
    my.sql("mysql", &format!("DROP DATABASE {db}"));
}

#[test]
fn a_postgres_table_without_a_primary_key_needs_its_replica_identity_and_then_replicates() {
    let pg = pg();
    let env = Env::new("keys-pg");
    let schema = format!("it_keys_{}", std::process::id());
    pg.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.t (code text NOT NULL, n int);
         CREATE UNIQUE INDEX t_code ON {schema}.t (code);
         INSERT INTO {schema}.t VALUES ('a', 1), ('b', 2), ('c', 3);"
    ));
    let dst = env.path("dst.sqlite");
    let _engine = env.start_engine();
    let script = format!(
        r#"{}
DataSource("sqlite", "Lite", #{{ database: "{}" }}).save();
Flow("pguniq").read_from("P.t").write_to("Lite.t").save();
start("pguniq");"#,
        pg.datasource("P", &schema),
        dst.display()
    );
    let run = env.script("p.rhai", &script);
    // Without a replica identity PostgreSQL would publish no key for updates and deletes.
    let status = || env.tap(&["-c", "status pguniq"]).stdout;
    assert!(
        wait_until(Duration::from_secs(30), || status().contains("current status is: error")),
        "{} / {}",
        run.stderr,
        status()
    );
    let status = status();
    assert!(status.contains("REPLICA IDENTITY USING INDEX \"t_code\""), "the statement that fixes it: {status}");
    // The user's table still takes updates (no publication was left on it).
    pg.psql(&format!("UPDATE {schema}.t SET n = 2 WHERE code = 'b'"));
    pg.psql(&format!("ALTER TABLE {schema}.t REPLICA IDENTITY USING INDEX t_code"));
    env.tap(&["-c", "start pguniq"]).ok();
    env.script("w.rhai", r#"Flow("pguniq").wait_initial_sync();"#).ok();
    pg.psql(&format!(
        "UPDATE {schema}.t SET n = 20 WHERE code = 'b'; DELETE FROM {schema}.t WHERE code = 'c'; INSERT INTO {schema}.t VALUES ('d', 4);"
    ));
    let want = vec![vec!["a", "1"], vec!["b", "20"], vec!["d", "4"]];
    let got = || rows(&dst, "SELECT code, n FROM t ORDER BY code");
    assert!(wait_until(Duration::from_secs(30), || got() == want), "{:?}", got());
    env.tap(&["-c", "stop pguniq"]).ok();
    env.tap(&["-c", "delete pguniq -y"]).ok();
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

#[test]
fn a_lookup_relation_naming_a_missing_field_is_refused_at_save() {
    let env = Env::new("keys-lookup");
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(
        &src,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER);
         CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);",
    );
    let _engine = env.start_engine();
    let flow = |relation: &str| -> String {
        let steps = format!(
            r#"let f = Flow("lk").read_from("Src.orders");
f.lookup("Src.customers", #{{ path: "customer", type: "object", relation: {relation} }});
f.write_to("Dst.docs");
f.save();"#
        );
        sqlite_src_dst(&src, &dst) + steps.as_str()
    };
    // TapFlow's relation pairs are [main table's field, lookup table's field].
    let run = env.script("bad.rhai", &flow(r#"[["cust_id", "id"]]"#));
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("\"cust_id\", which orders does not have (it has: id, customer_id)"), "{}", run.stderr);
    let run = env.script("bad2.rhai", &flow(r#"[["customer_id", "customer_key"]]"#));
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr.contains("\"customer_key\", which customers does not have (it has: id, name)"),
        "{}",
        run.stderr
    );
    env.script("good.rhai", &flow(r#"[["customer_id", "id"]]"#)).ok();
}
