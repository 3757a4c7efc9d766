//! A small harness: each test gets its own data dir, config dir and engine port, so tests run in
//! parallel without touching the user's files; the engine is stopped when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Env {
    pub dir: PathBuf,
    pub port: u16,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Env {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tap-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        Env { dir, port: free_port() }
    }

    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tap"));
        c.env("TAP_SERVER", self.server())
            .env("TAP_DATA_DIR", self.data_dir())
            .env("TAP_CONFIG_DIR", self.dir.join("config"))
            .env_remove("TAP_PROFILE")
            .env_remove("TAP_ACCESS_CODE")
            .env_remove("TAP_ACCESS_KEY")
            .env_remove("TAP_SECRET_KEY")
            .current_dir(&self.dir);
        c
    }

    /// Run `tap ARGS…` and capture its output.
    pub fn tap(&self, args: &[&str]) -> Run {
        let out = self.command().args(args).output().expect("run tap");
        Run::from(out)
    }

    /// Run a Rhai script given as text.
    pub fn script(&self, name: &str, text: &str) -> Run {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write script");
        self.tap(&["-f", path.to_str().expect("utf-8 path")])
    }

    /// Start the engine in the background (as the shell would) and wait until it answers.
    pub fn start_engine(&self) -> EngineProc {
        self.start_engine_with(&[])
    }

    /// The same, with extra environment (a `TAP_FAILPOINT`, say).
    pub fn start_engine_with(&self, vars: &[(&str, &str)]) -> EngineProc {
        self.start_engine_on(&self.server(), &[], vars)
    }

    /// The engine listening on `listen` (at this env's port), with extra arguments.
    pub fn start_engine_on(&self, listen: &str, args: &[&str], vars: &[(&str, &str)]) -> EngineProc {
        let child = self
            .command()
            .envs(vars.iter().copied())
            .args(["engine", "--listen", listen])
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start engine");
        let mut engine = EngineProc(child);
        // With a failpoint the engine may end before a test can connect (flows resume at start).
        let failpoint = vars.iter().any(|(k, _)| *k == "TAP_FAILPOINT");
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(self.server()).is_ok()
                || (failpoint && matches!(engine.0.try_wait(), Ok(Some(_))))
        });
        if !up {
            engine.kill();
            panic!("the engine did not answer on {} within 20 s", self.server());
        }
        engine
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.command().args(["engine", "stop"]).output();
        if std::env::var_os("TAP_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Run SQL against a SQLite file; rows as strings (NULL as "NULL").
pub fn query(path: &Path, sql: &str) -> Vec<Vec<String>> {
    use rusqlite::types::ValueRef;
    let conn = rusqlite::Connection::open(path).expect("open sqlite");
    conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    let mut st = conn.prepare(sql).expect("prepare");
    let n = st.column_count();
    let mut rows = st.query([]).expect("query");
    let mut out = Vec::new();
    while let Some(r) = rows.next().expect("row") {
        out.push(
            (0..n)
                .map(|i| match r.get_ref(i).expect("value") {
                    ValueRef::Null => "NULL".to_string(),
                    ValueRef::Integer(i) => i.to_string(),
                    ValueRef::Real(f) => f.to_string(),
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    ValueRef::Blob(b) => format!("{b:?}"),
                })
                .collect(),
        );
    }
    out
}

/// The two SQLite connections most engine tests use: `Src` and `Dst`, one script line each.
pub fn sqlite_src_dst(src: &Path, dst: &Path) -> String {
    format!(
        "DataSource(\"sqlite\", \"Src\", #{{ database: \"{}\" }}).save();\nDataSource(\"sqlite\", \"Dst\", #{{ database: \"{}\" }}).save();\n",
        src.display(),
        dst.display()
    )
}

pub fn exec(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).expect("open sqlite");
    conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    conn.execute_batch(sql).expect("exec");
}

/// An engine process started by a test; SIGKILLed and reaped when dropped.
pub struct EngineProc(std::process::Child);

impl EngineProc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Wait up to `timeout` for the engine to end by itself (a failpoint); whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        wait_until(timeout, || matches!(self.0.try_wait(), Ok(Some(_))))
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn wait_until(timeout: Duration, f: impl FnMut() -> bool) -> bool {
    wait_every(timeout, Duration::from_millis(50), f)
}

/// [`wait_until`] checking every `every`: for checks that read a whole table from a server a
/// flow writes to. SecantusDB holds its one storage lock while it scans, so a target polled
/// every 50 ms by two tests at once leaves the flows' writes almost no turn.
pub fn wait_every(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(every);
    }
    false
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "tap failed:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

/// One HTTP/1.1 request to the test's engine with a JSON body; the response body.
pub fn http(env: &Env, method: &str, path: &str, body: &str) -> String {
    http_full(env, method, path, "application/json", body).1
}

/// One HTTP/1.1 request with the given content type; the status code and the body.
pub fn http_full(env: &Env, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(env.server()).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("send");
    // A server may answer (413) before it has read a large body: a failed write is not the test's concern.
    let _ = s.write_all(body.as_bytes());
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let out = String::from_utf8_lossy(&raw).into_owned();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(out))
}

/// A fresh API token of the test's engine, from its access code.
pub fn token(env: &Env) -> String {
    let code = std::fs::read_to_string(env.data_dir().join("access_code")).expect("access code");
    let body = http(env, "POST", "/api/users/generatetoken", &format!(r#"{{"accesscode": "{}"}}"#, code.trim()));
    let start = body.find("\"id\":\"").expect("token in the answer") + 6;
    body[start..].split('"').next().expect("token").to_string()
}
