//! What changes under a running flow is noticed: a source table dropped or replaced (SQLite
//! triggers gone, a PostgreSQL table out of its publication), a column added to a source
//! (followed on SQLite, PostgreSQL and MySQL; on SQLite a renamed one stops the flow), other
//! DDL in the MySQL binlog (a TRUNCATE stops the flow), a target file deleted, a target
//! collection dropped, `tap demo` over tables a flow reads, a source database made immutable, a
//! MongoDB source collection dropped — each ends in `error` naming what happened, never a silent
//! stall or an empty target that CDC refills.

use crate::engine_mongo::{Driver, mongo_uri};
use crate::engine_mysql::my;
use crate::engine_postgres::pg;
use crate::harness::{Env, exec, query, sqlite_src_dst, wait_until};
use std::time::Duration;

fn status(env: &Env, flow: &str) -> String {
    env.tap(&["-c", &format!("status {flow}")]).stdout
}

/// A script: the source connection's line, a SQLite target `Dst` at `dst`, and the flow `flow`
/// from `source` (`Conn.table`) into the same table name, started and through its snapshot.
fn into_sqlite(datasource: &str, source: &str, flow: &str, dst: &std::path::Path) -> String {
    let table = source.split_once('.').map_or(source, |(_, t)| t);
    format!(
        r#"{datasource}
DataSource("sqlite", "Dst", #{{ database: "{}" }}).save();
Flow("{flow}").read_from("{source}").write_to("Dst.{table}").save();
start("{flow}");
Flow("{flow}").wait_initial_sync();"#,
        dst.display()
    )
}

/// `sql`'s rows from the SQLite file `dst` once its table `t` has the column `n`, else none.
fn rows_once_added(dst: &std::path::Path, sql: &str) -> Vec<Vec<String>> {
    let cols = query(dst, "SELECT count(*) FROM pragma_table_info('t') WHERE name = 'n'");
    if cols[0][0] == "0" { Vec::new() } else { query(dst, sql) }
}

/// Wait for `flow` to be in `error` with `cause` in its status.
#[track_caller]
fn wait_error(env: &Env, flow: &str, cause: &str) {
    let ok = wait_until(Duration::from_secs(40), || {
        let s = status(env, flow);
        s.contains("current status is: error") && s.contains(cause)
    });
    assert!(ok, "{flow} is not in error with {cause:?}: {}", status(env, flow));
}

fn start_sqlite_flow(env: &Env, flow: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');");
    let steps = format!(
        r#"Flow("{flow}").read_from("Src.t").write_to("Dst.t").save();
start("{flow}");
Flow("{flow}").wait_initial_sync();"#
    );
    let script = sqlite_src_dst(&src, &dst) + steps.as_str();
    env.script("f.rhai", &script).ok();
    (src, dst)
}

#[test]
fn a_sqlite_source_table_replaced_under_the_flow_stops_it() {
    let env = Env::new("under-replaced");
    let _engine = env.start_engine();
    let (src, _) = start_sqlite_flow(&env, "repl");
    exec(
        &src,
        "BEGIN; DROP TABLE t; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (9, 'z'); COMMIT;",
    );
    wait_error(&env, "repl", "table t was replaced");
    let logs = env.tap(&["-c", "logs repl"]).stdout;
    assert!(logs.contains("reset the flow"), "{logs}");
}

#[test]
fn a_sqlite_source_table_replaced_while_the_flow_is_stopped_stops_it_at_start() {
    let env = Env::new("under-replaced-stopped");
    let _engine = env.start_engine();
    let (src, _) = start_sqlite_flow(&env, "replst");
    env.tap(&["-c", "stop replst"]).ok();
    exec(
        &src,
        "BEGIN; DROP TABLE t; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (9, 'z'); COMMIT;",
    );
    // Resuming would re-arm the triggers and miss the row written while they were gone.
    env.tap(&["-c", "start replst"]);
    wait_error(&env, "replst", "table t was replaced");
}

#[test]
fn a_column_added_to_a_sqlite_source_reaches_the_target_and_a_dropped_one_stops_the_flow() {
    let env = Env::new("under-addcol");
    let _engine = env.start_engine();
    let (src, dst) = start_sqlite_flow(&env, "addcol");
    // Rows changed right after the ALTER, before the flow re-arms its capture, get the new
    // column from the table; rows after carry it themselves.
    exec(
        &src,
        "ALTER TABLE t ADD COLUMN n INTEGER; UPDATE t SET n = 10, v = 'A' WHERE id = 1; INSERT INTO t VALUES (3, 'c', 30);",
    );
    exec(&src, "UPDATE t SET n = 20 WHERE id = 2; INSERT INTO t VALUES (4, 'd', 40);");
    let want = query(&src, "SELECT id, v, n FROM t ORDER BY id");
    let got = || rows_once_added(&dst, "SELECT id, v, n FROM t ORDER BY id");
    assert!(wait_until(Duration::from_secs(30), || got() == want), "{:?} != {want:?}", got());
    let logs = || env.tap(&["-c", "logs addcol"]).stdout;
    assert!(wait_until(Duration::from_secs(10), || logs().contains("gained column(s) n")), "{}", logs());
    // A renamed column cannot be followed by the triggers' images: the flow stops, saying so.
    exec(&src, "ALTER TABLE t RENAME COLUMN v TO w; UPDATE t SET w = 'x' WHERE id = 1;");
    wait_error(&env, "addcol", "column(s) v of table t were dropped or renamed");
}

#[test]
fn demo_refuses_to_replace_tables_a_flow_reads_unless_forced() {
    let env = Env::new("under-demo");
    let _engine = env.start_engine();
    let dst = env.path("dst.sqlite");
    let script = format!(
        r#"let path = demo(50);
DataSource("sqlite", "Shop", #{{ database: path }}).save();
DataSource("sqlite", "Dst", #{{ database: "{}" }}).save();
Flow("shop").read_from("Shop.ecom_orders").write_to("Dst.orders").save();
start("shop");
Flow("shop").wait_initial_sync();"#,
        dst.display()
    );
    env.script("d.rhai", &script).ok();
    let run = env.tap(&["demo", "--rows", "50"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("used by flow shop"), "{}", run.stderr);
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    let run = env.script("d2.rhai", "demo(50);");
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("used by flow shop"), "{}", run.stderr);
    // Forced, the tables are replaced, and the flow says it lost them rather than stall.
    env.tap(&["demo", "--rows", "50", "--force"]).ok();
    // (dropped, or replaced: it depends on when the flow looks)
    wait_error(&env, "shop", "table ecom_orders was");
}

#[test]
fn a_deleted_sqlite_target_stops_the_flow_and_is_not_refilled_by_cdc_alone() {
    let env = Env::new("under-target");
    let mut engine = env.start_engine();
    let (src, dst) = start_sqlite_flow(&env, "tgt");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", dst.display()));
    }
    exec(&src, "INSERT INTO t VALUES (3, 'c')");
    wait_error(&env, "tgt", "was deleted or replaced");
    // Started again (after an engine restart too), it refuses to carry on into an empty table.
    engine.kill();
    let _engine = env.start_engine();
    env.tap(&["-c", "start tgt"]);
    wait_error(&env, "tgt", "the target table t");
    let tables = if dst.exists() {
        query(&dst, "SELECT count(*) FROM sqlite_master WHERE name = 't'")[0][0].clone()
    } else {
        "0".into()
    };
    assert_eq!(tables, "0", "no empty target table recreated");
}

#[test]
fn a_dropped_mongodb_target_collection_stops_the_flow() {
    let env = Env::new("under-mongo");
    let db = format!("it_under_{}", std::process::id());
    let d = Driver::new(&db, "t");
    d.run(d.coll.client().database(&db).drop());
    let _engine = env.start_engine();
    let src = env.path("src.sqlite");
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');");
    let script = format!(
        r#"DataSource("sqlite", "Src", #{{ database: "{}" }}).save();
DataSource("mongodb", "M", #{{ uri: "{}" }}).save();
Flow("mg").read_from("Src.t").write_to("M.t").save();
start("mg");
Flow("mg").wait_initial_sync();"#,
        src.display(),
        mongo_uri(&db)
    );
    env.script("m.rhai", &script).ok();
    d.run(d.coll.drop());
    // The next write notices the collection is gone (rather than recreate it by upserts).
    let mut n = 10;
    let stopped = wait_until(Duration::from_secs(40), || {
        n += 1;
        exec(&src, &format!("INSERT INTO t VALUES ({n}, 'x')"));
        std::thread::sleep(Duration::from_millis(200));
        status(&env, "mg").contains("current status is: error")
    });
    assert!(stopped && status(&env, "mg").contains("collection"), "{}", status(&env, "mg"));
    assert!(status(&env, "mg").contains(".t was dropped while the flow wrote to it"), "{}", status(&env, "mg"));
    d.run(d.coll.client().database(&db).drop());
}

#[test]
fn a_dropped_mongodb_source_collection_stops_the_flow() {
    let env = Env::new("under-mongo-src");
    let db = format!("it_undersrc_{}", std::process::id());
    let d = Driver::new(&db, "items");
    d.run(d.coll.client().database(&db).drop());
    d.run(
        d.coll
            .insert_many([mongodb::bson::doc! {"_id": 1_i64, "v": "a"}, mongodb::bson::doc! {"_id": 2_i64, "v": "b"}]),
    );
    let _engine = env.start_engine();
    let dst = env.path("dst.sqlite");
    let datasource = format!(r#"DataSource("mongodb", "M", #{{ uri: "{}" }}).save();"#, mongo_uri(&db));
    env.script("m.rhai", &into_sqlite(&datasource, "M.items", "mgsrc", &dst)).ok();
    d.run(d.coll.drop());
    wait_error(&env, "mgsrc", "collection it_undersrc");
    assert!(status(&env, "mgsrc").contains("items was dropped"), "{}", status(&env, "mgsrc"));
    env.tap(&["-c", "delete mgsrc -y"]).ok();
    d.run(d.coll.client().database(&db).drop());
}

#[test]
fn a_postgres_source_follows_an_added_column_and_stops_when_its_table_is_dropped() {
    let pg = pg();
    let env = Env::new("under-pg");
    let schema = format!("it_under_{}", std::process::id());
    pg.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.t (id int PRIMARY KEY, v text); INSERT INTO {schema}.t VALUES (1, 'a');"
    ));
    let _engine = env.start_engine();
    let dst = env.path("dst.sqlite");
    env.script("p.rhai", &into_sqlite(&pg.datasource("P", &schema), "P.t", "pgdrop", &dst)).ok();
    // An added column arrives with the rows that use it (pgoutput sends the new relation).
    pg.psql(&format!(
        "ALTER TABLE {schema}.t ADD COLUMN n int; INSERT INTO {schema}.t VALUES (2, 'b', 20); UPDATE {schema}.t SET n = 10 WHERE id = 1;"
    ));
    let want = vec![vec!["1", "a", "10"], vec!["2", "b", "20"]];
    let got = || rows_once_added(&dst, "SELECT id, v, n FROM t ORDER BY id");
    assert!(wait_until(Duration::from_secs(30), || got() == want), "{:?} / {}", got(), status(&env, "pgdrop"));
    pg.psql(&format!("DROP TABLE {schema}.t; CREATE TABLE {schema}.t (id int PRIMARY KEY, v text)"));
    wait_error(&env, "pgdrop", "table t was dropped and recreated");
    env.tap(&["-c", "delete pgdrop -y"]).ok();
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

#[test]
fn a_postgres_truncate_or_a_dropped_replication_slot_stops_the_flow() {
    let pg = pg();
    let env = Env::new("under-pgslot");
    let schema = format!("it_slot_{}", std::process::id());
    pg.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.t (id int PRIMARY KEY, v text); INSERT INTO {schema}.t VALUES (1, 'a');"
    ));
    let mut engine = env.start_engine();
    let dst = env.path("dst.sqlite");
    env.script("p.rhai", &into_sqlite(&pg.datasource("P", &schema), "P.t", "pgslot", &dst)).ok();
    pg.psql(&format!("TRUNCATE {schema}.t"));
    wait_error(&env, "pgslot", "was truncated");
    // Copied afresh, then the slot is dropped while the engine is down.
    pg.psql(&format!("INSERT INTO {schema}.t VALUES (2, 'b')"));
    env.tap(&["-c", "reset pgslot"]).ok();
    env.script("again.rhai", r#"start("pgslot"); Flow("pgslot").wait_initial_sync();"#).ok();
    engine.kill();
    // The engine is down: the flow's slot is found in the catalog, by its publication's table.
    let slot = pg.psql(&format!(
        "SELECT slot_name FROM pg_replication_slots s JOIN pg_publication p ON p.pubname = s.slot_name
         JOIN pg_publication_tables t ON t.pubname = p.pubname WHERE t.schemaname = '{schema}'"
    ));
    assert!(slot.starts_with("tap_"), "the flow's slot: {slot:?}");
    assert!(
        wait_until(Duration::from_secs(30), || pg
            .psql(&format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND NOT active"))
            == "1"),
        "the slot is released when the engine dies"
    );
    pg.psql(&format!("SELECT pg_drop_replication_slot('{slot}')"));
    let _engine = env.start_engine();
    wait_error(&env, "pgslot", &format!("replication slot {slot} of this flow is gone"));
    env.tap(&["-c", "delete pgslot -y"]).ok();
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

#[test]
fn mysql_ddl_in_the_binlog_is_followed_or_stops_the_flow() {
    let my = my();
    let env = Env::new("under-my");
    let db = format!("it_under_{}", std::process::id());
    my.sql("mysql", &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
    my.sql(&db, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, 'a');");
    let _engine = env.start_engine();
    let dst = env.path("dst.sqlite");
    env.script("m.rhai", &into_sqlite(&my.datasource("My", &db, &my.user, &my.password), "My.t", "myddl", &dst)).ok();
    // An added column reaches the target with the rows that use it, as do rows around it.
    my.sql(
        &db,
        "INSERT INTO t VALUES (2, 'b'); ALTER TABLE t ADD COLUMN n INT AFTER id; INSERT INTO t VALUES (3, 30, 'c'); UPDATE t SET n = 10 WHERE id = 1;",
    );
    let want = vec![vec!["1", "10", "a"], vec!["2", "NULL", "b"], vec!["3", "30", "c"]];
    let got = || rows_once_added(&dst, "SELECT id, n, v FROM t ORDER BY id");
    assert!(wait_until(Duration::from_secs(30), || got() == want), "{:?} / {}", got(), status(&env, "myddl"));
    // Other DDL on the table stops the flow, naming it.
    my.sql(&db, "TRUNCATE TABLE t");
    wait_error(&env, "myddl", "table t was truncated");
    env.tap(&["-c", "delete myddl -y"]).ok();
    my.sql("mysql", &format!("DROP DATABASE {db}"));
}

/// Clears the immutable flag of a file when dropped, even when the test fails.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(path: &std::path::Path) -> Self {
        let ok = std::process::Command::new("chattr").arg("+i").arg(path).status().map(|s| s.success());
        assert_eq!(ok.ok(), Some(true), "chattr +i {}", path.display());
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn an_immutable_sqlite_source_is_an_error_and_the_engine_stays_up() {
    let env = Env::new("under-immutable");
    let _engine = env.start_engine();
    let (src, _) = start_sqlite_flow(&env, "imm");
    env.tap(&["-c", "stop imm"]).ok();
    let _flag = Immutable::set(&src);
    env.tap(&["-c", "start imm"]);
    wait_error(&env, "imm", "read-only");
    // The engine is still there and answers.
    env.tap(&["-c", "show flows"]).ok();
}

#[test]
fn a_user_database_is_switched_to_wal_only_by_a_flow_that_reads_it_and_the_log_says_so() {
    let env = Env::new("under-wal");
    let _engine = env.start_engine();
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');");
    exec(&dst, "CREATE TABLE other (x INT);");
    let mode = |p: &std::path::Path| query(p, "PRAGMA journal_mode")[0][0].clone();
    assert_eq!(mode(&src), "delete");
    // Looking at it (peek, count, sql) leaves it as it is.
    let script = sqlite_src_dst(&src, &dst);
    env.script("ds.rhai", &script).ok();
    env.tap(&["-c", "count Src.t"]).ok();
    env.tap(&["-c", "peek Src.t"]).ok();
    assert_eq!(mode(&src), "delete", "count leaves the journal mode alone");
    let flow = script
        + r#"Flow("wal").read_from("Src.t").write_to("Dst.t").save();
start("wal");
Flow("wal").wait_initial_sync();"#;
    env.script("w.rhai", &flow).ok();
    assert_eq!(mode(&src), "wal", "the source a flow reads is in WAL mode");
    assert_eq!(mode(&dst), "delete", "an existing target keeps its journal mode");
    let logs = env.tap(&["-c", "logs wal"]).stdout;
    assert!(logs.contains("switched from journal mode delete to WAL"), "{logs}");
}
