//! The command line: exit codes, error messages, and the engine's refusal of unauthenticated calls.

use crate::harness::{Env, Run};
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

/// A TapFlow user's `~/.tapflow/config.ini` works as it is: `--config FILE` for one run,
/// `tap config import` into a profile (the embedded engine speaks TapData's access-code login,
/// so it stands in for the cluster here); `-c FILE` says what to use instead.
#[test]
fn a_tapflow_config_ini_is_read_for_one_run_or_imported() {
    let env = Env::new("tapflow-ini");
    let _engine = env.start_engine();
    let code = std::fs::read_to_string(env.data_dir().join("access_code")).expect("access code");
    let ini = env.path("config.ini");
    std::fs::write(
        &ini,
        format!(
            "[backend]\n; ak = \n; sk = \n\n; If you are using TapData Enterprise, please specify the server URL & access token.\nserver = {}\naccess_code = {}\n",
            env.server(),
            code.trim()
        ),
    )
    .expect("write config.ini");
    let ini_arg = ini.display().to_string();
    let mut one = env.command();
    // No TAP_SERVER: the file alone says where the cluster is.
    one.env_remove("TAP_SERVER").args(["--config", &ini_arg, "-c", "show agents"]);
    let run = Run::from(one.output().expect("run"));
    run.ok();
    assert!(run.stdout.contains("running agents: 1"), "{}", run.stdout);
    // A wrong code is the cluster's answer, not a fall-back to another profile.
    let bad = env.path("bad.ini");
    std::fs::write(&bad, format!("[backend]\nserver = {}\naccess_code = nope\n", env.server())).expect("write");
    let run = env.tap(&["--config", &bad.display().to_string(), "-c", "show dbs"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    // `-c FILE` is a command line, not a config file.
    let run = env.tap(&["-c", &ini_arg]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--config"), "{}", run.stderr);
    // Import: from ~/.tapflow/config.ini by default, into the profile `tapflow`.
    let home = env.path("home");
    std::fs::create_dir_all(home.join(".tapflow")).expect("home");
    std::fs::copy(&ini, home.join(".tapflow/config.ini")).expect("copy");
    let mut import = env.command();
    import.env("HOME", &home).args(["config", "import"]);
    let run = Run::from(import.output().expect("run"));
    run.ok();
    assert!(run.stdout.contains("into profile tapflow"), "{}", run.stdout);
    let listed = env.tap(&["config", "list"]);
    assert!(listed.stdout.contains("tapflow") && !listed.stdout.contains(code.trim()), "{}", listed.stdout);
    let mut use_it = env.command();
    use_it.env_remove("TAP_SERVER").args(["--profile", "tapflow", "-c", "show agents"]);
    Run::from(use_it.output().expect("run")).ok();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.path("config/config.toml")).expect("profiles").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the imported secret is private");
    }
    // An agent's application.yml, by name.
    let yml = env.path("application.yml");
    std::fs::write(
        &yml,
        format!(
            "tapdata:\n  cloud:\n    accessCode: {}\n  conf:\n    backendUrl: http://{}/api/\n",
            code.trim(),
            env.server()
        ),
    )
    .expect("write yml");
    env.tap(&["config", "import", &yml.display().to_string(), "--name", "agent"]).ok();
    let mut use_agent = env.command();
    use_agent.env_remove("TAP_SERVER").args(["--profile", "agent", "-c", "show agents"]);
    Run::from(use_agent.output().expect("run")).ok();
}
