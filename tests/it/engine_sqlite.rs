//! The embedded engine with SQLite: the quickstart end to end, and crash safety (SIGKILL
//! mid-snapshot and mid-CDC, then the target equals the source with nothing lost or duplicated).

use crate::harness::{Env, exec, query, sqlite_src_dst, wait_until};
use std::time::Duration;

#[test]
fn quickstart_runs_end_to_end() {
    let env = Env::new("quickstart");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.rhai");
    let run = env.tap(&["-f", example]);
    run.ok();
    assert!(run.stdout.contains("flow quickstart started"), "{}", run.stdout);
    assert!(run.stdout.contains("table orders has 1001 records"), "{}", run.stdout);
    assert!(run.stdout.contains("current status is: running"), "{}", run.stdout);

    let target = env.data_dir().join("quickstart_target.sqlite");
    let cols: Vec<String> =
        query(&target, "SELECT name FROM pragma_table_info('orders')").into_iter().map(|r| r[0].clone()).collect();
    assert!(cols.contains(&"purchase_timestamp".to_string()), "renamed: {cols:?}");
    assert!(
        !cols.iter().any(|c| c == "order_purchase_timestamp" || c.starts_with("order_delivered")),
        "excluded: {cols:?}"
    );
    let row = query(&target, "SELECT order_status, customer_id FROM orders WHERE order_id = 'ORD789654'");
    assert_eq!(row, vec![vec!["shipped".to_string(), "CUST12345".to_string()]]);
    // The Rhai function ran on the snapshot: no 'canceled' survives, 'cancelled' does.
    let source = env.data_dir().join("demo.sqlite");
    let canceled = query(&source, "SELECT count(*) FROM ecom_orders WHERE order_status = 'canceled'")[0][0].clone();
    let cancelled = query(&target, "SELECT count(*) FROM orders WHERE order_status = 'cancelled'")[0][0].clone();
    assert_eq!(canceled, cancelled);
    assert_ne!(canceled, "0");

    // A filtered peek: the rows whose fields equal the values given.
    let run = env.tap(&["--json", "-c", "peek Local.orders order_id=ORD789654"]);
    run.ok();
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("json");
    assert_eq!(v["records"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["records"][0]["order_status"], "shipped", "{v}");
    let run = env.tap(&["-c", "peek -n 2 Local.orders order_status=shipped customer_id=CUST12345"]);
    run.ok();
    assert!(run.stdout.contains("table orders: 1 matching records"), "{}", run.stdout);
    let bad = env.tap(&["-c", "peek Local.orders shipped"]);
    assert_eq!(bad.code, 2, "a usage error: {bad:?}");
    assert!(bad.stderr.contains("expected FIELD=VALUE"), "{}", bad.stderr);

    // Running it again is idempotent: the same flow, reset and re-run.
    env.tap(&["-f", example]).ok();
    let flows = env.tap(&["--json", "-c", "show flows"]);
    let v: serde_json::Value = serde_json::from_str(flows.stdout.trim()).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
}

fn rows(path: &std::path::Path, table: &str) -> Vec<Vec<String>> {
    query(path, &format!("SELECT id, name, qty FROM {table} ORDER BY id"))
}

#[test]
fn sigkill_mid_snapshot_and_mid_cdc_loses_and_duplicates_nothing() {
    let env = Env::new("crash");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(&src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER);");
    // Enough rows that the snapshot takes a while.
    exec(
        &src,
        "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < 199999)
         INSERT INTO items SELECT i, 'item ' || i, i % 97 FROM c;",
    );

    // The failpoint aborts the engine right after the third snapshot batch (5,000 rows each).
    let mut engine = env.start_engine_with(&[("TAP_FAILPOINT", "after_batch:3")]);
    let _ = env.script(
        "flow.rhai",
        &(sqlite_src_dst(&src, &dst)
            + r#"Flow("crash").read_from("Src.items").write_to("Dst.items").save(); start("crash");"#),
    ); // the engine may die before the start returns
    assert!(engine.wait_exit(Duration::from_secs(60)), "the failpoint ended the engine mid-snapshot");
    let copied = query(&dst, "SELECT count(*) FROM items")[0][0].clone();
    assert_eq!(copied, "15000", "killed right after the third batch");

    // Changes while the engine is down are captured by the triggers.
    exec(
        &src,
        "UPDATE items SET qty = qty + 1000 WHERE id % 10 = 0; DELETE FROM items WHERE id % 7 = 0; INSERT INTO items VALUES (500000, 'new', 1);",
    );
    let mut engine = env.start_engine();
    let caught_up = wait_until(Duration::from_secs(120), || rows(&src, "items") == rows(&dst, "items"));
    assert!(caught_up, "the target equals the source after a restart mid-snapshot");
    // Now in CDC: restarted with a failpoint that aborts it after the fifth saved position,
    // while a writer commits 40 transactions.
    engine.kill();
    let mut engine = env.start_engine_with(&[("TAP_FAILPOINT", "after_checkpoint:5")]);

    // Kill in the middle of a stream of changes.
    let writer = {
        let src = src.clone();
        std::thread::spawn(move || {
            for round in 0..40 {
                exec(
                    &src,
                    &format!(
                        "UPDATE items SET qty = qty + 1 WHERE id % 40 = {round}; INSERT INTO items VALUES ({}, 'late', {round});",
                        600_000 + round
                    ),
                );
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    assert!(engine.wait_exit(Duration::from_secs(60)), "the failpoint ended the engine mid-CDC");
    writer.join().expect("writer");
    let _engine = env.start_engine();
    let caught_up = wait_until(Duration::from_secs(120), || rows(&src, "items") == rows(&dst, "items"));
    // Equal row lists mean nothing lost and nothing duplicated (a count of duplicates on the
    // primary key could never fail).
    assert!(caught_up, "the target equals the source after a restart mid-CDC");
}

#[test]
fn rename_row_filter_and_filter_columns_run_and_the_key_follows_the_rename() {
    let env = Env::new("more-steps");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, secret TEXT);
         INSERT INTO t VALUES (1, 'a', 's1'), (2, 'b', 's2'), (3, 'c', 's3'), (4, 'd', 's4');",
    );
    let _engine = env.start_engine();
    let script = sqlite_src_dst(&src, &dst)
        + r#"let f = Flow("steps").read_from("Src.t").rename("id", "ident").rowFilter("record.ident % 2 == 0")
                 .filter_columns(["secret"], "delete").add_field("tag", "String", "'t' + record.ident").write_to("Dst.t");
             print(f.show());
             f.save().start();
             Flow("steps").wait_initial_sync();"#;
    let run = env.script("s.rhai", &script);
    run.ok();
    assert!(run.stdout.contains(r#".rename_fields(#{ id: "ident" })"#), "{}", run.stdout);
    assert_eq!(
        query(&dst, "SELECT ident, v, tag FROM t ORDER BY ident"),
        vec![vec!["2", "b", "t2"], vec!["4", "d", "t4"]]
    );
    let cols: Vec<String> = query(&dst, "SELECT name FROM pragma_table_info('t') ORDER BY cid").concat();
    assert_eq!(cols, vec!["ident", "v", "tag"], "secret dropped, id renamed, tag added");
    let pk = query(&dst, "SELECT name FROM pragma_table_info('t') WHERE pk > 0").concat();
    assert_eq!(pk, vec!["ident"], "the key followed the rename");
    // CDC: an update that leaves the filter removes the row; one into it adds it.
    exec(
        &src,
        "UPDATE t SET id = 5 WHERE id = 4; UPDATE t SET v = 'bb' WHERE id = 2; INSERT INTO t VALUES (6, 'f', 'x');",
    );
    let rows = || query(&dst, "SELECT ident, v FROM t ORDER BY ident");
    assert!(
        wait_until(Duration::from_secs(30), || rows() == vec![vec!["2", "bb"], vec!["6", "f"]]),
        "after CDC: {:?}",
        rows()
    );
    let bad = env
        .script("bad.rhai", &(sqlite_src_dst(&src, &dst) + r#"Flow("b").read_from("Src.t").rowFilter("x", "maybe");"#));
    assert!(bad.code != 0 && bad.stderr.contains("rowFilter: the type is"), "{}", bad.stderr);
}

#[test]
fn type_and_time_processors_convert_move_drop_and_stamp_fields_through_snapshot_and_cdc() {
    let env = Env::new("type-steps");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, price TEXT, at DATETIME, note VARCHAR(20));
         INSERT INTO t VALUES (1, '10', '2024-01-01 23:30:00', 'n1'), (2, '20', '2024-06-01 08:00:00', NULL);",
    );
    let _engine = env.start_engine();
    let script = sqlite_src_dst(&src, &dst)
        + r#"let f = Flow("types").read_from("Src.t").type_adjust([["price", "int"]], "t").adjust_time(2, ["datetime"])
                 .exclude_type("varchar").addTimeField("synced_at").write_to("Dst.t");
             print(f.show());
             f.save().start();
             Flow("types").wait_initial_sync();"#;
    let run = env.script("s.rhai", &script);
    run.ok();
    assert!(run.stdout.contains(r#".exclude_type(["varchar"])"#), "{}", run.stdout);
    assert_eq!(
        query(&dst, "SELECT id, price, typeof(price), at FROM t ORDER BY id"),
        vec![vec!["1", "10", "integer", "2024-01-02 01:30:00"], vec!["2", "20", "integer", "2024-06-01 10:00:00"]]
    );
    let cols: Vec<String> = query(&dst, "SELECT name FROM pragma_table_info('t') ORDER BY cid").concat();
    assert_eq!(cols, vec!["id", "price", "at", "synced_at"], "the varchar field went, even where it was null");
    assert_eq!(query(&dst, "SELECT count(*) FROM t WHERE synced_at LIKE '20%'")[0][0], "2");
    exec(&src, "INSERT INTO t VALUES (3, ' 7 ', '2024-12-31 23:00:00', 'n3'); UPDATE t SET price = '11' WHERE id = 1;");
    let rows = || query(&dst, "SELECT id, price, at FROM t ORDER BY id");
    assert!(
        wait_until(Duration::from_secs(30), || rows()
            == vec![
                vec!["1", "11", "2024-01-02 01:30:00"],
                vec!["2", "20", "2024-06-01 10:00:00"],
                vec!["3", "7", "2025-01-01 01:00:00"]
            ]),
        "after CDC: {:?}",
        rows()
    );
    // A value that is not of the new type stops the flow, naming it.
    exec(&src, "UPDATE t SET price = 'ten' WHERE id = 2;");
    let status = || env.tap(&["-c", "status types"]).stdout;
    assert!(wait_until(Duration::from_secs(30), || status().contains("current status is: error")), "{}", status());
    assert!(status().contains("\"ten\" of field \"price\" cannot be converted to int"), "{}", status());
    let bad = env.script(
        "bad.rhai",
        &(sqlite_src_dst(&src, &dst) + r#"Flow("b").read_from("Src.t").type_adjust([["nope", "int"]]);"#),
    );
    assert!(bad.code != 0 && bad.stderr.contains("table t has no field \"nope\""), "{}", bad.stderr);
}

#[test]
fn skip_error_event_by_limit_skips_changes_a_processor_or_the_target_refuses_then_stops() {
    let env = Env::new("skip-errors");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, price TEXT);
         INSERT INTO t VALUES (1, '10'), (2, 'x'), (3, '500'), (4, '40');",
    );
    // The target refuses prices of 100 or more.
    exec(&dst, "CREATE TABLE t (id INTEGER PRIMARY KEY, price INTEGER CHECK (price < 100));");
    let _engine = env.start_engine();
    let script = sqlite_src_dst(&src, &dst)
        + r#"let f = Flow("skips").read_from("Src.t").type_adjust([["price", "int"]]).write_to("Dst.t")
                 .skip_error_event_by_limit(2);
             f.save().start();
             Flow("skips").wait_initial_sync();"#;
    env.script("s.rhai", &script).ok();
    // Row 2 fails in the processor, row 3 in the target: both skipped, the others copied.
    assert_eq!(query(&dst, "SELECT id, price FROM t ORDER BY id"), vec![vec!["1", "10"], vec!["4", "40"]]);
    let logs = env.tap(&["-c", "logs skips"]).stdout;
    assert!(logs.contains("skipped a change (1 of at most 2)") && logs.contains("\"x\""), "{logs}");
    assert!(logs.contains("skipped a change (2 of at most 2)") && logs.contains("CHECK"), "{logs}");
    // The third stops the flow, saying so.
    exec(&src, "INSERT INTO t VALUES (5, 'z');");
    let status = || env.tap(&["-c", "status skips"]).stdout;
    assert!(wait_until(Duration::from_secs(30), || status().contains("current status is: error")), "{}", status());
    assert!(status().contains("skip_error_event_by_limit(2)"), "{}", status());
}

#[test]
fn a_js_key_declaration_keys_the_target_and_exclude_takes_many_names() {
    let env = Env::new("js-pk");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, code TEXT NOT NULL, a TEXT, b TEXT, c TEXT, d TEXT, e TEXT, keep TEXT);
         INSERT INTO t VALUES (1, 'x1', 'a', 'b', 'c', 'd', 'e', 'k1'), (2, 'x2', 'a', 'b', 'c', 'd', 'e', 'k2');",
    );
    let _engine = env.start_engine();
    let script = sqlite_src_dst(&src, &dst)
        + r#"Flow("jspk").read_from("Src.t").exclude("a", "b", "c", "d", "e")
                 .js("record.code = record.code.toUpperCase(); delete record.id; return record;", #{ pk: "code" })
                 .write_to("Dst.t").save().start();
             Flow("jspk").wait_initial_sync();"#;
    env.script("s.rhai", &script).ok();
    assert_eq!(query(&dst, "SELECT code, keep FROM t ORDER BY code"), vec![vec!["X1", "k1"], vec!["X2", "k2"]]);
    let cols: Vec<String> = query(&dst, "SELECT name FROM pragma_table_info('t') ORDER BY cid").concat();
    assert_eq!(cols, vec!["code", "keep"], "five fields excluded, id deleted by the function");
    let pk = query(&dst, "SELECT name FROM pragma_table_info('t') WHERE pk > 0").concat();
    assert_eq!(pk, vec!["code"], "the declared key keys the target");
    exec(&src, "UPDATE t SET keep = 'k1b' WHERE id = 1;");
    let rows = || query(&dst, "SELECT code, keep FROM t ORDER BY code");
    assert!(
        wait_until(Duration::from_secs(30), || rows() == vec![vec!["X1", "k1b"], vec!["X2", "k2"]]),
        "{:?}",
        rows()
    );
    // A target key other than the declared one is refused at save, naming both.
    let bad = env.script(
        "bad.rhai",
        &(sqlite_src_dst(&src, &dst)
            + r#"Flow("jspk2").read_from("Src.t").js("return record;", #{ pk: "code" }).write_to("Dst.t2", ["id"]).save();"#),
    );
    assert!(bad.code != 0 && bad.stderr.contains("keyed by code, but the target t2 writes by id"), "{}", bad.stderr);
}

#[test]
fn a_union_shapes_the_table_it_adds_with_its_own_pre_processors() {
    let env = Env::new("union-pre");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(
        &src,
        "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT);
         CREATE TABLE b (bid INTEGER PRIMARY KEY, v TEXT, secret TEXT, price TEXT);
         INSERT INTO a VALUES (1, 'a1'), (2, 'a2');
         INSERT INTO b VALUES (10, 'b10', 's', '5'), (11, 'b11', 's', '50');",
    );
    let _engine = env.start_engine();
    let script = sqlite_src_dst(&src, &dst)
        + r#"Flow("un").read_from("Src.a")
                 .union("Src.b", #{ filter: "price > 10", rename: #{ bid: "id" }, exclude: ["secret", "price"] })
                 .write_to("Dst.all").save().start();
             Flow("un").wait_initial_sync();"#;
    env.script("u.rhai", &script).ok();
    let rows = || query(&dst, "SELECT id, v FROM \"all\" ORDER BY id");
    assert_eq!(rows(), vec![vec!["1", "a1"], vec!["2", "a2"], vec!["11", "b11"]], "b filtered, renamed, trimmed");
    let cols: Vec<String> = query(&dst, "SELECT name FROM pragma_table_info('all') ORDER BY cid").concat();
    assert_eq!(cols, vec!["id", "v"]);
    exec(
        &src,
        "INSERT INTO b VALUES (12, 'b12', 's', '99'), (13, 'b13', 's', '1'); UPDATE a SET v = 'A1' WHERE id = 1;",
    );
    assert!(
        wait_until(Duration::from_secs(30), || rows()
            == vec![vec!["1", "A1"], vec!["2", "a2"], vec!["11", "b11"], vec!["12", "b12"]]),
        "after CDC: {:?}",
        rows()
    );
}
