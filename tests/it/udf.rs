//! Rhai user functions under control: a function calls the other functions of its script and
//! itself, and `stop` ends a flow whose function is in the middle of a long batch.

use crate::harness::{Env, exec, query, sqlite_src_dst, wait_until};
use std::time::Duration;

#[test]
fn a_rhai_function_calls_its_scripts_other_functions_and_itself() {
    let env = Env::new("udf-calls");
    let _engine = env.start_engine();
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (5), (7);");
    let script = sqlite_src_dst(&src, &dst)
        + r#"fn fact(n) { if n <= 1 { 1 } else { n * fact(n - 1) } }
fn label(r) { `item-${r.id}` }
fn enrich(record) {
    record.f = fact(record.id);
    record.label = label(record);
    record
}
Flow("calls").read_from("Src.t").rhai(enrich).write_to("Dst.t").save();
start("calls");
Flow("calls").wait_initial_sync();"#;
    env.script("c.rhai", &script).ok();
    let rows = query(&dst, "SELECT id, f, label FROM t ORDER BY id");
    assert_eq!(rows, vec![vec!["1", "1", "item-1"], vec!["5", "120", "item-5"], vec!["7", "5040", "item-7"]]);
}

#[test]
fn stop_ends_a_flow_whose_function_is_in_a_long_batch() {
    let env = Env::new("udf-stop");
    // A batch limit longer than `stop` waits (60 s): only the interruption can end the batch in time.
    let _engine = env.start_engine_with(&[("TAP_UDF_BATCH_SECONDS", "3600")]);
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000) INSERT INTO t SELECT i FROM c;",
    );
    // About a million operations a record, 2,000 records a batch: minutes of work.
    let script = sqlite_src_dst(&src, &dst)
        + r#"fn slow(record) { let i = 0; while i < 300000 { i += 1; } record }
Flow("slow").read_from("Src.t").rhai(slow).write_to("Dst.t").save();
start("slow");"#;
    env.script("s.rhai", &script).ok();
    let status = || env.tap(&["-c", "status slow"]).stdout;
    assert!(wait_until(Duration::from_secs(30), || status().contains("running")), "{}", status());
    env.tap(&["-c", "stop slow"]).ok();
    assert!(wait_until(Duration::from_secs(30), || status().contains("current status is: stop")), "{}", status());
}
