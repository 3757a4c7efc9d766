//! Honest exits: a closed stdout never stops the work nor turns a failure into success (the
//! rest of the output is discarded, the exit code is the work's), and a stderr that cannot be
//! written never panics.

use crate::harness::Env;
use std::process::Stdio;

/// Run `tap ARGS` with its stdout closed before it writes; its exit code.
fn with_stdout_closed(env: &Env, args: &[&str]) -> i32 {
    let mut child = env.command().args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("tap");
    drop(child.stdout.take());
    child.wait().expect("wait").code().unwrap_or(-1)
}

#[test]
fn a_closed_stdout_discards_output_but_not_the_work_or_its_exit_code() {
    let env = Env::new("exit-pipe");
    let _engine = env.start_engine();
    // `tap -c 'show flows' | head -1`: the work succeeds, so does tap.
    assert_eq!(with_stdout_closed(&env, &["-c", "show flows"]), 0);
    // `tap -f deploy.rhai | head -1`: every step after the first print still runs, and the
    // script's failure is the exit code.
    let script = env.path("deploy.rhai");
    std::fs::write(
        &script,
        format!(
            r#"for i in 0..200 {{ print(`line ${{i}}`); }}
DataSource("sqlite", "After", #{{ database: "{}" }}).save();
throw "the deployment failed after saving";"#,
            env.path("after.sqlite").display()
        ),
    )
    .expect("script");
    let code = with_stdout_closed(&env, &["-f", script.to_str().expect("utf-8")]);
    assert_ne!(code, 0, "the script failed, so must tap");
    let listed = env.tap(&["-c", "show dbs"]);
    listed.ok();
    assert!(listed.stdout.contains("After"), "the steps after the first print ran: {}", listed.stdout);
}

#[test]
fn a_full_stderr_never_panics() {
    let env = Env::new("exit-full");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let out = env.command().args(["-c", "nosuchverb here"]).stdout(Stdio::null()).stderr(full).output().expect("tap");
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(code, 101, "a panic");
    assert_ne!(code, 0, "the line failed");
}

#[test]
fn numbers_out_of_bounds_are_clear_errors_not_panics() {
    let env = Env::new("exit-bounds");
    let _engine = env.start_engine();
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    crate::harness::exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY)");
    let setup =
        crate::harness::sqlite_src_dst(&src, &dst) + r#"Flow("b").read_from("Src.t").write_to("Dst.t").save();"#;
    env.script("setup.rhai", &setup).ok();
    for (line, says) in [
        ("sleep(1e300);", "seconds must be from 0 to 86400"),
        ("sleep(-1);", "sleep's seconds must be from 0 to 86400, not -1"),
        (r#"Flow("b").wait_initial_sync(9223372036854775807);"#, "timeout (seconds) must be from 1 to 86400"),
        ("demo(1000000000000);", "demo's number of orders must be from 1 to 10000000"),
        (r#"demo_into("Src", 1000000000000);"#, "demo's number of orders must be from 1 to 10000000"),
    ] {
        let run = env.script("b.rhai", line);
        assert!(run.code != 0 && run.code != 101, "{line}: exit {}", run.code);
        assert!(run.stderr.contains(says), "{line}: {}", run.stderr);
    }
    let run = env.tap(&["demo", "--rows", "1000000000000"]);
    assert!(run.code != 0 && run.code != 101 && run.stderr.contains("--rows must be from 1 to 10000000"), "{run:?}");
    let run = env.tap(&["-c", "peek -n 0 Src.t"]);
    assert!(run.code != 0 && run.stderr.contains("-n must be from 1 to 10000"), "{run:?}");
}
