//! The shell in a real pseudo-terminal (driven by Python's `pty` module): the first-run setup,
//! tab completion, multi-line input, one scope across lines, Ctrl-C and Ctrl-D.

use crate::harness::Env;

/// Start `tap` (argv[1]) in a pty; `expect(text)` waits for its output.
const PTY: &str = r#"
import os, pty, sys, time, select
tap = sys.argv[1]
pid, fd = pty.fork()
if pid == 0:
    os.execv(tap, [tap])
buf = b""
def expect(text, timeout=60):
    global buf
    deadline = time.time() + timeout
    while text.encode() not in buf:
        left = deadline - time.time()
        if left <= 0:
            sys.stdout.write("TIMEOUT waiting for %r; got:\n%s\n" % (text, buf.decode(errors="replace")))
            sys.exit(1)
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                sys.stdout.write("EOF waiting for %r; got:\n%s\n" % (text, buf.decode(errors="replace")))
                sys.exit(1)
            buf += chunk
    at = buf.index(text.encode()) + len(text)
    buf = buf[at:]
"#;

const DRIVER: &str = r#"
def send(s):
    os.write(fd, s.encode())
    time.sleep(0.2)

expect("Please type E, L or C")
send("E\r")
expect("tap> ")
print("FIRST_RUN_OK")
send("fn double(x) {\r")
send("  x * 2\r")
send("}\r")
expect("tap> ")
send("let n = 20;\r")
expect("tap> ")
send("double(n + 1)\r")
expect("42")
print("MULTILINE_AND_SCOPE_OK")
send("sho\t")
expect("show")
send(" db\t")
expect("dbs")
send("\r")
expect("no connections")
print("COMPLETION_OK")
send("Flow(\"x\").wait_initial_s\t")
expect("wait_initial_sync")
send("\x03")
expect("tap> ")
print("METHOD_COMPLETION_OK")
send("some partial input")
send("\x03")
expect("tap> ")
send("double(1)\r")
expect("2")
print("CTRL_C_OK")
send("\x04")
_, status = os.waitpid(pid, 0)
print("EXIT", os.WEXITSTATUS(status))
"#;

#[test]
fn first_run_setup_completion_and_multiline_in_a_pty() {
    let env = Env::new("pty");
    let driver = env.path("driver.py");
    std::fs::write(&driver, format!("{PTY}{DRIVER}")).expect("driver");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(&driver).arg(env!("CARGO_BIN_EXE_tap"));
    for (k, v) in env.command().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.current_dir(&env.dir);
    let out = cmd.output().expect("python3 installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for marker in
        ["FIRST_RUN_OK", "MULTILINE_AND_SCOPE_OK", "COMPLETION_OK", "METHOD_COMPLETION_OK", "CTRL_C_OK", "EXIT 0"]
    {
        assert!(stdout.contains(marker), "missing {marker}:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    // The answer was saved as the default profile, readable by the owner only.
    let config = env.dir.join("config").join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config saved");
    assert!(text.contains("kind = \"embedded\""), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&config).expect("config").permissions().mode() & 0o777, 0o600);
}

const PROGRESS_DRIVER: &str = r#"
hold = sys.argv[2]
expect("tap> ")
os.write(fd, b"start p\r")
expect("flow p started")
expect("snapshot: 200 of ~1,000 rows (20%)")
print("PROGRESS_SHOWN")
os.remove(hold)
expect("tap> ")
print("PROMPT_BACK")
os.write(fd, b"Src.status()\r")
expect("ready")
print("CONNECTION_BOUND")
os.write(fd, b"DataSource(\"postgres\", \"x\").logPlugin\t")
expect("logPluginName")
os.write(fd, b"\x03")
expect("tap> ")
print("SETTER_COMPLETED")
os.write(fd, b"\x04")
_, status = os.waitpid(pid, 0)
print("EXIT", os.WEXITSTATUS(status))
"#;

/// A snapshot shows its progress on a terminal: `start` draws a live line of rows copied of the
/// source's count while the copy runs (held after its second batch by a failpoint, so the line
/// is seen at a known moment), and gives the prompt back when the copy is done; without a
/// terminal, `status` says the same in words.
#[test]
fn a_snapshot_shows_its_progress_on_a_terminal() {
    let env = Env::new("pty-progress");
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    let rows: Vec<String> = (1..=1000).map(|i| format!("({i}, 'v{i}')")).collect();
    crate::harness::exec(
        &src,
        &format!("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES {};", rows.join(", ")),
    );
    let hold = env.path("hold");
    std::fs::write(&hold, "").expect("hold file");
    let _engine = env.start_engine_with(&[
        ("TAP_FAILPOINT", "hold_after_batch:2"),
        ("TAP_FAILPOINT_HOLD", hold.to_str().expect("utf-8")),
    ]);
    env.script(
        "p.rhai",
        &(crate::harness::sqlite_src_dst(&src, &dst)
            + "Flow(\"p\").read_from(Source(\"Src\", \"t\").initial_read_size(100)).write_to(\"Dst.t\").save();\n"),
    )
    .ok();
    // A profile for this engine, so the shell starts without the first-run questions.
    std::fs::create_dir_all(env.dir.join("config")).expect("config dir");
    std::fs::write(
        env.dir.join("config").join("config.toml"),
        format!(
            "default = \"t\"\n[profiles.t]\nkind = \"embedded\"\nserver = \"{}\"\ndata_dir = \"{}\"\n",
            env.server(),
            env.data_dir().display()
        ),
    )
    .expect("profile");
    let driver = env.path("driver.py");
    std::fs::write(&driver, format!("{PTY}{PROGRESS_DRIVER}")).expect("driver");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(&driver).arg(env!("CARGO_BIN_EXE_tap")).arg(&hold);
    for (k, v) in env.command().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.current_dir(&env.dir);
    // Before the shell: held mid-snapshot, `status` (no terminal) says where the copy is.
    let status = || env.tap(&["-c", "status p"]).stdout;
    let child = std::thread::scope(|scope| {
        let shell = scope.spawn(|| cmd.output().expect("python3 installed"));
        assert!(
            crate::harness::wait_until(std::time::Duration::from_secs(30), || status()
                .contains("snapshot: 200 of ~1,000 rows (20%)")
                || !hold.exists()),
            "{}",
            status()
        );
        shell.join().expect("driver")
    });
    let stdout = String::from_utf8_lossy(&child.stdout);
    for marker in ["PROGRESS_SHOWN", "PROMPT_BACK", "CONNECTION_BOUND", "SETTER_COMPLETED", "EXIT 0"] {
        assert!(stdout.contains(marker), "missing {marker}:\n{stdout}\n{}", String::from_utf8_lossy(&child.stderr));
    }
    assert!(crate::harness::wait_until(std::time::Duration::from_secs(30), || {
        crate::harness::query(&dst, "SELECT count(*) FROM t")[0][0] == "1000"
    }));
}
