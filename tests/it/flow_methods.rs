//! TapFlow's DataSource and Flow methods for scripts: `DataSource("Name")` loads the saved
//! connection (a re-save keeps its config), `datasources()`, `validate()`, `desc()`; a flow's
//! `wait_status`, `wait_initial_complete`, `metrics()`, `full_qps()`, `logs(#{ … })`,
//! `monitor(t)`, `stop(#{ force })`.

use crate::harness::{Env, exec};

#[test]
fn datasource_and_flow_methods_answer_from_the_engine() {
    let env = Env::new("flow-methods");
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');");
    let _engine = env.start_engine();
    let script = crate::harness::sqlite_src_dst(&src, &dst)
        + r#"
let d = DataSource("Src");
d.type("source").save();
DataSource("Src").desc();
print(datasources());
print(DataSource("Src").validate());
let f = Flow("m").read_from("Src.t").write_to("Dst.t").save();
f.start();
print("running: " + f.wait_status("running", 30));
f.wait_initial_complete(60);
print("rows: " + f.metrics().snapshotRowTotal);
print("qps: " + (f.full_qps() > 0.0));
print("retry: " + f.has_retry());
f.logs(#{ limit: 2, level: "info" });
f.monitor(1);
f.stop(#{ force: true });
print("stopped: " + f.wait_status("stop", 10));
print("running again: " + f.wait_status("running", 1));
"#;
    let run = env.script("m.rhai", &script);
    run.ok();
    let out = &run.stdout;
    assert!(out.contains("config.database") && out.contains(&src.display().to_string()), "the config kept: {out}");
    for want in [
        "[\"Dst\", \"Src\"]",
        "running: true",
        "rows: 2",
        "qps: true",
        "retry: false",
        "stopped: true",
        "running again: false",
        "(forced)",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let bad = env.script("b.rhai", r#"DataSource("Nope");"#);
    assert!(bad.code != 0 && bad.stderr.contains("connections: Dst, Src"), "{}", bad.stderr);
}
