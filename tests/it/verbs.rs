//! TapFlow's shell verbs and builders beyond the basics: `show FLOW` prints Rhai that
//! recreates the flow; `Flow("existing")` loads it and appends before its sink; the typed forms
//! (`start job X`, `desc datasource X`, `delete datasource X`); `validate`, `preview`,
//! `show agents`, `show apis`; `tap FILE` inside the shell; camelCase builder names.

use crate::harness::{Env, exec, sqlite_src_dst};
use serde_json::Value;

/// A flow's nodes and edges with node ids replaced by their place, so two flows built alike
/// compare equal.
fn shape(env: &Env, flow: &str) -> Value {
    let run = env.tap(&["--json", "-c", &format!("desc job {flow}")]);
    run.ok();
    let doc: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    let nodes = doc["nodes"].as_array().cloned().unwrap_or_default();
    let mut text = serde_json::to_string(&nodes).expect("json");
    for (i, n) in nodes.iter().enumerate() {
        text = text.replace(n["id"].as_str().expect("a node id"), &format!("node{i}"));
    }
    serde_json::from_str(&text).expect("json")
}

#[test]
fn show_flow_prints_rhai_that_recreates_the_flow() {
    let env = Env::new("verbs-show");
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(
        &src,
        "CREATE TABLE o (id INTEGER PRIMARY KEY, c INTEGER, s TEXT, at TEXT, note TEXT); \
         CREATE TABLE c (cid INTEGER PRIMARY KEY, name TEXT, secret TEXT); \
         CREATE TABLE i (iid INTEGER PRIMARY KEY, oid INTEGER, qty INTEGER); \
         CREATE TABLE o2 (id INTEGER PRIMARY KEY, c INTEGER, s TEXT, at TEXT, note TEXT); \
         INSERT INTO o VALUES (1, 1, 'x', '2024-01-01 00:00:00', 'n'); INSERT INTO c VALUES (1, 'a', 'z');",
    );
    let _engine = env.start_engine();
    let flows = sqlite_src_dst(&src, &dst)
        + r#"
fn tidy(r) { r.s = "y"; r }
Flow("wide").read_from("Src.o", #{ filter: "id > 0" })
    .exclude("note")
    .rename_fields(#{ s: "state" })
    .rowFilter("record.id != 7", "retain")
    .js("record.k = 1; return record;", #{ declareScript: "TapModelDeclare.addField(tapTable, 'k', 'TapNumber');", name: "Mark" })
    .add_date_field("seen_at")
    .adjust_time(2, ["DATETIME"], "Shift")
    .exclude_type(["BLOB"])
    .lookup("Src.c", #{ path: "customer", type: "object", relation: [["c", "cid"]], exclude: ["secret"], rename: #{ name: "cname" } })
    .lookup("Src.i", #{ path: "items", type: "array", relation: [["id", "oid"]], filter: "qty > 0" })
    .config(#{ type: "initial_sync" })
    .skip_error_event_by_limit(3)
    .write_to(Sink("Dst", "wide").keepData().config(#{ writeStrategy: "updateOrInsert", initialConcurrentWriteNum: 4 }), ["id"])
    .save();
Flow("plain").read_from("Src.o").rhai(tidy).write_to("Dst.plain").save();
Flow("more").read_from("Src.o").type_adjust([["c", "String"]], "o", "Types")
    .flat_unwind("s", #{ index_name: "_i", array_elem: "BASIC", joiner: "_", keep_null: true })
    .write_to("Dst.more").save();
Flow("both").read_from("Src.o").union("Src.o2", #{ exclude: ["note"], rename: #{ s: "state" } })
    .write_to("Dst.both").save();
"#;
    env.script("flows.rhai", &flows).ok();
    for flow in ["wide", "plain", "more", "both"] {
        let shown = env.tap(&["-c", &format!("show {flow}")]);
        shown.ok();
        let chain = shown.stdout.trim().to_string();
        assert!(!chain.contains("// node"), "{flow}: a node was not rendered:\n{chain}");
        // Run what was printed, under another name, and compare the flows.
        let again = chain.replace(&format!("Flow(\"{flow}\")"), &format!("Flow(\"{flow}_again\")")) + ".save();\n";
        let run = env.script(&format!("{flow}_again.rhai"), &again);
        assert_eq!(run.code, 0, "the printed chain does not run:\n{again}\n{}", run.stderr);
        let (a, b) = (shape(&env, flow), shape(&env, &format!("{flow}_again")));
        assert_eq!(a, b, "{flow}: the printed chain builds another flow:\n{chain}");
    }
    // The same text from a Flow handle.
    let show = env.script("handle.rhai", "print(Flow(\"plain\").show());\n");
    show.ok();
    assert!(show.stdout.contains(".rhai(tidy).write_to(\"Dst.plain\", [\"id\"])"), "{}", show.stdout);
}

#[test]
fn a_loaded_flow_appends_before_its_sink_and_read_from_starts_it_anew() {
    let env = Env::new("verbs-load");
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT); INSERT INTO t VALUES (1, 'x', 'y');");
    let _engine = env.start_engine();
    env.script(
        "f.rhai",
        &(sqlite_src_dst(&src, &dst) + "Flow(\"f\").read_from(\"Src.t\").write_to(\"Dst.t\").save();\n"),
    )
    .ok();
    // Loaded, a step goes in before the sink, and the saved flow keeps it.
    env.script("append.rhai", "Flow(\"f\").exclude(\"b\").save();\n").ok();
    let types: Vec<String> =
        shape(&env, "f").as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, ["table", "js_processor", "table"], "exclude goes between source and sink");
    let shown = env.tap(&["-c", "show f"]);
    assert!(shown.stdout.contains(".exclude([\"b\"]).write_to(\"Dst.t\""), "{}", shown.stdout);
    // A union reads another table: on a loaded flow it is refused, not half applied.
    let union = env.script("union.rhai", "Flow(\"f\").union(\"Src.t\").save();\n");
    assert!(union.code != 0 && union.stderr.contains("a union reads another table"), "{}", union.stderr);
    // write_to on a loaded flow replaces the target.
    env.script("retarget.rhai", "Flow(\"f\").write_to(\"Dst.u\").save();\n").ok();
    assert!(env.tap(&["-c", "show f"]).stdout.contains(".write_to(\"Dst.u\""));
    // read_from defines it again from scratch: the exclude is gone.
    env.script("again.rhai", "Flow(\"f\").read_from(\"Src.t\").write_to(\"Dst.t\").save();\n").ok();
    assert_eq!(shape(&env, "f").as_array().unwrap().len(), 2);
    // It runs as loaded.
    let run =
        env.script("run.rhai", "let f = Flow(\"f\"); f.start(); f.wait_initial_complete(60); print(f.status());\n");
    run.ok();
    assert!(crate::harness::wait_until(std::time::Duration::from_secs(30), || {
        std::panic::catch_unwind(|| crate::harness::query(&dst, "SELECT count(*) FROM t"))
            .is_ok_and(|rows| rows == [vec!["1".to_string()]])
    }));
    // Changes through CDC: `status` adds the lag percentiles of the last minute's changes.
    exec(&src, "INSERT INTO t VALUES (2, 'p', 'q');");
    assert!(crate::harness::wait_until(std::time::Duration::from_secs(30), || {
        std::panic::catch_unwind(|| crate::harness::query(&dst, "SELECT count(*) FROM t"))
            .is_ok_and(|rows| rows == [vec!["2".to_string()]])
    }));
    let status = env.tap(&["-c", "status f"]);
    assert!(status.stdout.contains(", lag p50/p99: "), "{}", status.stdout);
    // A saved flow loads as what it is, whichever builder names it.
    let as_pipeline = env.script("p.rhai", "print(Pipeline(\"f\").show());\n");
    as_pipeline.ok();
    assert!(as_pipeline.stdout.starts_with("Flow(\"f\").read_from(\"Src.t\")"), "{}", as_pipeline.stdout);
}

#[test]
fn typed_forms_validate_preview_agents_apis_and_tap_file() {
    let env = Env::new("verbs-typed");
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT); INSERT INTO t VALUES (1, 'x'), (2, 'y');");
    let _engine = env.start_engine();
    let setup = sqlite_src_dst(&src, &dst)
        + "DataSource(\"sqlite\", \"Spare\", #{ database: \"PATH\" }).save();\n\
           Flow(\"f\").read_from(\"Src.t\").write_to(\"Dst.t\").save();\n";
    env.script("setup.rhai", &setup.replace("PATH", &env.path("spare.sqlite").display().to_string())).ok();
    let ok = |line: &str| {
        let run = env.tap(&["-c", line]);
        assert_eq!(run.code, 0, "{line}: {}", run.stderr);
        run.stdout
    };
    assert!(ok("desc table Src.t").contains("primary_key"));
    assert!(ok("desc datasource Src").contains("config.database"));
    assert!(ok("desc job f").contains("Dst.t"));
    assert!(ok("validate datasource Src").contains("connection test passed"));
    assert!(ok("preview f -n 1").contains("\"a\": \"x\""));
    assert!(ok("show agents").contains("running agents: 1"));
    assert!(ok("start job f").contains("flow f started"));
    assert!(ok("stop flow f").contains("flow f stopped"));
    ok("delete datasource Spare -y");
    assert!(!ok("show dbs").contains("Spare"), "the datasource is deleted");
    let apis = env.tap(&["-c", "show apis"]);
    assert_ne!(apis.code, 0);
    assert!(apis.stderr.contains("publishes no Data APIs"), "{}", apis.stderr);
    let wrong = env.tap(&["-c", "start datasource Src"]);
    assert!(wrong.code != 0 && wrong.stderr.contains("start works on flows"), "{}", wrong.stderr);
    // `tap FILE` in the shell (here its lines from a pipe) runs the script in the session.
    let file = env.path("part.rhai");
    std::fs::write(&file, "let answer = 40 + 2;\nfn twice(x) { x * 2 }\n").unwrap();
    let mut cmd = env.command();
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("tap {}\nprint(twice(answer));\n", file.display()).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("84"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn tapflow_camel_case_builders() {
    let env = Env::new("verbs-camel");
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT); INSERT INTO t VALUES (1, 'x', 'y');");
    let _engine = env.start_engine();
    let script = sqlite_src_dst(&src, &dst)
        + r#"
Flow("camel").readFrom("Src.t")
    .renameField(#{ a: "aa" })
    .filterColumn(["id", "aa"], "keep")
    .rowFilter("record.id > 0")
    .addTimeField("seen")
    .writeTo(Sink("Dst", "t").cleanData())
    .save()
    .start();
"#;
    env.script("camel.rhai", &script).ok();
    assert!(crate::harness::wait_until(std::time::Duration::from_secs(30), || {
        std::panic::catch_unwind(|| crate::harness::query(&dst, "SELECT id, aa FROM t"))
            .is_ok_and(|rows| rows == [vec!["1".to_string(), "x".to_string()]])
    }));
}

/// Any config key the connector declares has a setter (`.logPluginName("pgoutput")` on
/// PostgreSQL); a key it does not declare, or a value of the wrong kind, is refused with what it
/// declares.
#[test]
fn a_datasource_has_a_setter_for_every_key_its_connector_declares() {
    let pg = crate::engine_postgres::pg();
    let env = Env::new("verbs-setters");
    let _engine = env.start_engine();
    let script = format!(
        r#"DataSource("postgres", "Pl").host("{}").port({}).database("{}").user("{}").password("{}")
    .logPluginName("pgoutput").save();"#,
        pg.host, pg.port, pg.database, pg.user, pg.password
    );
    env.script("ok.rhai", &script).ok();
    let desc = env.tap(&["-c", "desc datasource Pl"]);
    desc.ok();
    assert!(desc.stdout.contains("config.logPluginName") && desc.stdout.contains("pgoutput"), "{}", desc.stdout);
    let unknown = env.script("unknown.rhai", "DataSource(\"sqlite\", \"S\").jounral(\"wal\");\n");
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("has no setting \"jounral\": the connector declares database"),
        "{}",
        unknown.stderr
    );
    let wrong = env.script("wrong.rhai", "DataSource(\"postgres\", \"P2\").logPluginName(5);\n");
    assert!(wrong.code != 0 && wrong.stderr.contains("logPluginName takes a string, not i64"), "{}", wrong.stderr);
    // Other missing methods keep Rhai's own error.
    let other = env.script("other.rhai", "Flow(\"x\").nosuch(1);\n");
    assert!(other.code != 0 && other.stderr.contains("nosuch"), "{}", other.stderr);
}

/// A flow whose nodes do not carry their connection's name (as TapData's UI may save them)
/// still prints as runnable Rhai: `show` names each connection from the connection list.
#[test]
fn show_flow_names_connections_a_node_does_not_name() {
    let env = Env::new("verbs-unnamed");
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT);");
    let _engine = env.start_engine();
    env.script(
        "f.rhai",
        &(sqlite_src_dst(&src, &dst) + "Flow(\"f\").read_from(\"Src.t\").write_to(\"Dst.t\").save();\n"),
    )
    .ok();
    let token = crate::harness::token(&env);
    let list: Value =
        serde_json::from_str(&crate::harness::http(&env, "GET", &format!("/api/Task?access_token={token}"), ""))
            .expect("task list");
    let id = list["data"]["items"][0]["id"].as_str().expect("task id").to_string();
    let mut task: Value =
        serde_json::from_str(&crate::harness::http(&env, "GET", &format!("/api/Task/{id}?access_token={token}"), ""))
            .expect("task");
    let mut task = task["data"].take();
    for n in task["dag"]["nodes"].as_array_mut().expect("nodes") {
        n["attrs"].as_object_mut().map(|a| a.remove("connectionName"));
    }
    let answer = crate::harness::http(&env, "PATCH", &format!("/api/Task?access_token={token}"), &task.to_string());
    assert!(answer.contains("\"code\":\"ok\""), "{answer}");
    let shown = env.tap(&["-c", "show f"]);
    shown.ok();
    assert!(shown.stdout.contains(".read_from(\"Src.t\").write_to(\"Dst.t\""), "{}", shown.stdout);
}
