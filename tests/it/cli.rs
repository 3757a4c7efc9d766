//! The command line: exit codes, error messages, and the engine's refusal of unauthenticated calls.

use crate::harness::Env;
use std::io::{Read, Write};

#[test]
fn version_prints_and_exits_zero() {
    let env = Env::new("version");
    for flag in ["--version", "-v", "-V"] {
        let run = env.tap(&[flag]);
        run.ok();
        assert!(run.stdout.starts_with("tap "), "{flag}: {}", run.stdout);
    }
}

#[test]
fn readme_chains_with_trailing_backslashes_run_and_python_files_are_pointed_at_rhai() {
    let env = Env::new("backslash");
    let _engine = env.start_engine();
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    crate::harness::exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');");
    // As TapFlow's README writes chains: one step a line, each line ending in a backslash.
    let script = crate::harness::sqlite_src_dst(&src, &dst)
        + "Flow(\"chain\") \\\n    .read_from(\"Src.t\") \\\n    .write_to(\"Dst.t\") \\\n    .save();\nprint(\"saved\");";
    let run = env.script("chain.rhai", &script);
    run.ok();
    assert!(run.stdout.contains("saved"), "{}", run.stdout);
    // The same in the shell's line-by-line input (-c with newlines, as pasted).
    let run =
        env.tap(&["-c", "Flow(\"chain2\") \\\n  .read_from(\"Src.t\") \\\n  .write_to(\"Dst.t2\") \\\n  .save();"]);
    run.ok();
    // `copy` is a verb (it was dead code): TapData's copy, named "- Copy".
    let run = env.tap(&["-c", "copy chain"]);
    run.ok();
    assert!(run.stdout.contains("Copy flow 'chain' to 'chain - Copy' success"), "{}", run.stdout);
    assert!(env.tap(&["-c", "show flows"]).stdout.contains("chain - Copy"));
    // A Python file: the error says scripts are Rhai, and how TapFlow's lines translate.
    std::fs::write(env.path("flow.py"), "from tapflow.lib import *\n").expect("py");
    let run = env.tap(&["-f", env.path("flow.py").to_str().expect("utf-8")]);
    assert_eq!(run.code, 2, "a usage error: {run:?}");
    assert!(run.stderr.contains("tap runs Rhai scripts, not Python"), "{}", run.stderr);
}

#[test]
fn a_script_syntax_error_names_file_line_and_column_and_exits_2() {
    let env = Env::new("syntax");
    let run = env.script("broken.rhai", "let a = 1;\nlet b = ;\n");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("broken.rhai:2:"), "{}", run.stderr);
    assert!(run.stderr.contains("syntax error"), "{}", run.stderr);
}

#[test]
fn unknown_flow_and_connection_say_what_exists() {
    let env = Env::new("unknown");
    let run = env.tap(&["-c", "status nosuchflow"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("no flow named \"nosuchflow\"; flows: none"), "{}", run.stderr);
    let run = env.tap(&["-c", "use nosuchdb"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("no connection named \"nosuchdb\""), "{}", run.stderr);
    let run = env.tap(&["-c", "peek t"]);
    assert_eq!(run.code, 2, "usage error without `use`: {run:?}");
}

#[test]
fn engine_refuses_requests_without_a_valid_token() {
    let env = Env::new("token");
    let _engine = env.start_engine();
    let get = |path: &str| -> String {
        let mut s = std::net::TcpStream::connect(env.server()).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).expect("read");
        buf
    };
    let answer = get("/api/Task");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("\"code\":\"NotLogin\""), "{answer}");
    let answer = get("/api/Task?access_token=forged");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    let status = env.tap(&["--json", "engine", "status"]);
    status.ok();
    let v: serde_json::Value = serde_json::from_str(status.stdout.trim()).expect("json");
    assert_eq!(v["state"], "running");
    for k in ["address", "state", "data_dir", "access_code"] {
        assert!(v.get(k).is_some(), "{k} in {v}");
    }
    let code_file = env.data_dir().join("access_code");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&code_file).expect("access code file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn secrets_are_masked_in_listings() {
    let env = Env::new("secrets");
    // Nothing listens on port 1: the connection is saved, its test fails, its password stays hidden.
    let _ = env.script(
        "s.rhai",
        r#"DataSource("postgres", "S", #{ host: "127.0.0.1", port: 1, database: "d", schema: "public", user: "u", password: "hunter2" }).save();"#,
    );
    let run = env.tap(&["--json", "-c", "show dbs"]);
    run.ok();
    assert!(run.stdout.contains("\"S\""), "{}", run.stdout);
    assert!(!run.stdout.contains("hunter2"));
    let run = env.tap(&["-c", "show S"]);
    assert!(!run.stdout.contains("hunter2") && !run.stderr.contains("hunter2"));
}

#[test]
fn completions_and_config_list_work_without_a_cluster() {
    let env = Env::new("completions");
    let run = env.tap(&["completions", "bash"]);
    run.ok();
    assert!(run.stdout.contains("complete") && run.stdout.contains("tap"), "{}", run.stdout);
    let run = env.tap(&["config", "list"]);
    run.ok();
    assert!(run.stdout.contains("no profiles"), "{}", run.stdout);
    let run = env.tap(&["--profile", "nope", "-c", "show flows"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("no profile named \"nope\""), "{}", run.stderr);
}

#[test]
fn logs_takes_tapflows_key_value_options() {
    let env = Env::new("logs-kv");
    let _engine = env.start_engine();
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    crate::harness::exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);");
    let script = crate::harness::sqlite_src_dst(&src, &dst)
        + r#"Flow("lg").read_from("Src.t").write_to("Dst.t").save();
start("lg");
Flow("lg").wait_initial_sync();"#;
    env.script("l.rhai", &script).ok();
    // `logs lg limit=2 level=info` (TapFlow's spelling) read "limit=2" as the flow's name.
    let run = env.tap(&["-c", "logs lg limit=2 level=info"]);
    run.ok();
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    let run = env.tap(&["-c", "logs lg level=error"]);
    run.ok();
    assert!(run.stdout.contains("no log lines at level error"), "{}", run.stdout);
    for (line, says) in [
        ("logs lg color=red", "logs takes limit=N and level=debug|info|warn|error, not color="),
        ("logs lg other", "logs takes one flow, not \"lg\" and \"other\""),
        ("logs lg limit=0", "limit must be from 1 to 10000"),
        ("logs lg level=loud", "--level must be debug, info, warn or error"),
    ] {
        let run = env.tap(&["-c", line]);
        assert_eq!(run.code, 2, "{line}: {run:?}");
        assert!(run.stderr.contains(says), "{line}: {}", run.stderr);
    }
}
