//! `tap engine`: the embedded engine, a process that serves TapData's REST API on this machine
//! and runs flows. It runs in the foreground (`tap engine`), or the shell starts it in the
//! background for the embedded profile when nothing answers.
//!
//! The data dir holds `engine.db` (the store), `engine.log`, `engine.json` (address and pid of
//! the running engine), `engine.lock` (held for the engine's life: one engine per data dir, and
//! the proof of which process `stop` may signal) and `access_code`, generated on first start:
//! other clients, such as the official Python TapFlow, log in with it. Every file the engine
//! creates is 0600 ([`create_private`]; SQLite gives a database's journals its mode), a directory
//! it creates is 0700, and a data dir it is given that other users may read or enter is refused,
//! as PostgreSQL refuses its data directory.
//! On start every flow that was running (including after SIGKILL) resumes from its checkpoint.

pub mod failpoint;
pub mod filter;
pub mod flow;
pub mod lookup;
pub mod processors;
pub mod server;
pub mod store;

use crate::error::{Error, Result};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use store::{Store, TASKS};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:3030";

pub struct Engine {
    pub store: Arc<Store>,
    pub runner: Arc<flow::Runner>,
    pub access_code: String,
    pub user_id: String,
    log: Mutex<Option<std::fs::File>>,
}

impl Engine {
    pub fn log(&self, msg: &str) {
        if let Ok(mut f) = self.log.lock()
            && let Some(f) = f.as_mut()
        {
            let _ = writeln!(f, "{} {msg}", flow::iso_now());
        }
    }
}

/// A new 24-hex id, shaped like TapData's ObjectIds (time prefix, then random).
pub fn new_id() -> String {
    let secs = chrono::Utc::now().timestamp() as u32;
    let r: u64 = rand::random();
    format!("{secs:08x}{:016x}", r)
}

/// Whether `id` may name a document, and so a file of the data dir (a flow's lookup copies):
/// TapData's 24 hex digits, or letters, digits, `-` and `_`, at most 64 — never a path.
pub fn safe_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Write a file only the owner can read (secrets).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::config(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(contents.as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Create `path` empty with mode 0600 if it does not exist, so that what is then written into it
/// (a SQLite database, and its journals, which take the database's mode) is the owner's alone.
pub fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::config(format!("cannot create {}: {e}", path.display()))),
    }
}

/// The access code of the engine in `data_dir`, generated on first use.
pub fn access_code(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("access_code");
    if let Ok(code) = std::fs::read_to_string(&path) {
        let code = code.trim().to_string();
        if !code.is_empty() {
            return Ok(code);
        }
    }
    create_dir_private(data_dir)?;
    let code = uuid::Uuid::new_v4().to_string();
    write_private(&path, &code)?;
    Ok(code)
}

/// Refuse a data dir that other users may read or enter: the store in it holds connection
/// passwords and tokens. Its mode is the user's to change, not tap's.
fn require_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .map_err(|e| Error::config(format!("cannot read data dir {}: {e}", dir.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::config(format!(
            "data dir {} is open to other users (mode {:o}), and its store holds connection passwords and \
             tokens: run `chmod 700 {}` (tap changes the mode only of a directory it creates)",
            dir.display(),
            mode & 0o777,
            dir.display()
        )));
    }
    Ok(())
}

/// Files of the data dir from before modes were enforced: made the owner's alone. One that
/// cannot be (another user's file in the data dir) stops the start, naming it.
fn tighten_files(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::config(format!("cannot read data dir {}: {e}", dir.display())))?;
    for e in entries.flatten() {
        let path = e.path();
        let mode = if path.is_dir() { 0o700 } else { 0o600 };
        if path.is_dir() && path.file_name().is_some_and(|n| n == "lookup") {
            tighten_files(&path)?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
            Error::config(format!("cannot make {} private to its owner (mode {mode:o}): {e}", path.display()))
        })?;
    }
    Ok(())
}

/// Hold the data dir's lock for the engine's life: a second engine on the same data dir is
/// refused, naming the process that holds it.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("engine.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::config(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = lock_holder(dir).map(|p| format!(" (pid {p})")).unwrap_or_default();
            Err(Error::config(format!(
                "another engine{holder} runs on data dir {}: one engine per data dir (`tap engine stop` stops it, \
                 or give this one another --data-dir)",
                dir.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::config(format!("cannot lock {}: {e}", path.display()))),
    }
}

/// The process holding the data dir's lock, from the kernel's list of locks (`/proc/locks`):
/// the only pid `stop` signals, so a stale `engine.json` can never name another process.
pub fn lock_holder(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir.join("engine.lock")).ok()?;
    let dev = meta.dev();
    let (major, minor) =
        (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff), ((dev >> 12) & 0xffff_ff00) | (dev & 0xff));
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        // "1: FLOCK  ADVISORY  WRITE 2296 00:2a:1234 0 EOF"
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str())).then(|| f.get(4)?.parse().ok())?
    })
}

/// Create `dir` (and missing parents) as the owner's alone (0700); an existing one is left as it is.
pub fn create_dir_private(dir: &Path) -> Result<()> {
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::config(format!("cannot create directory {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// What `tap engine status` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineStatus {
    pub address: String,
    pub state: String,
    pub data_dir: String,
    pub access_code: String,
    pub pid: Option<u32>,
}

fn state_file(data_dir: &Path) -> PathBuf {
    data_dir.join("engine.json")
}

/// Whether something accepts TCP connections at `addr`.
pub fn answers(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(mut addrs) = addr.to_socket_addrs() else { return false };
    addrs.any(|a| std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_millis(300)).is_ok())
}

pub fn status(data_dir: &Path, default_listen: &str) -> Result<EngineStatus> {
    let saved: Option<Value> =
        std::fs::read_to_string(state_file(data_dir)).ok().and_then(|t| serde_json::from_str(&t).ok());
    let address = saved
        .as_ref()
        .and_then(|v| v.get("address").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| default_listen.to_string());
    // The pid is the lock's holder: a pid in a stale engine.json proves nothing.
    let pid = lock_holder(data_dir);
    let state = if answers(&address) { "running" } else { "stopped" };
    Ok(EngineStatus {
        address,
        state: state.to_string(),
        data_dir: data_dir.display().to_string(),
        access_code: if data_dir.join("access_code").exists() { access_code(data_dir)? } else { String::new() },
        pid,
    })
}

/// Stop the engine running from `data_dir` (SIGTERM, then wait until it stops answering).
pub fn stop(data_dir: &Path, default_listen: &str) -> Result<EngineStatus> {
    let st = status(data_dir, default_listen)?;
    if st.state != "running" {
        return Ok(st);
    }
    let pid = st.pid.ok_or_else(|| {
        Error::unavailable(format!(
            "something answers at {} but no engine holds data dir {}: not signalling anything (is it another \
             data dir's engine, or another program?)",
            st.address,
            data_dir.display()
        ))
    })?;
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return Err(Error::unavailable(format!("cannot signal engine process {pid}")));
    }
    // Wait for the process itself to end (it stops listening first, then stops its flows).
    let alive = || {
        std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    for _ in 0..600 {
        if !alive() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    status(data_dir, default_listen)
}

/// Run the engine in the foreground until SIGTERM or Ctrl-C.
pub fn run(listen: &str, data_dir: &Path) -> Result<()> {
    let given = data_dir.exists();
    create_dir_private(data_dir)?;
    if given {
        require_private_dir(data_dir)?;
    }
    let _lock = lock_data_dir(data_dir)?;
    tighten_files(data_dir)?;
    let code = access_code(data_dir)?;
    let store = Arc::new(Store::open(data_dir)?);
    let runner = flow::Runner::new(store.clone());
    let log = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(data_dir.join("engine.log")).ok()
    };
    let user_id = {
        let path = data_dir.join("user_id");
        match std::fs::read_to_string(&path) {
            Ok(u) if !u.trim().is_empty() => u.trim().to_string(),
            _ => {
                let u = new_id();
                write_private(&path, &u)?;
                u
            }
        }
    };
    let engine = Arc::new(Engine {
        store: store.clone(),
        runner: runner.clone(),
        access_code: code,
        user_id,
        log: Mutex::new(log),
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            Error::unavailable(format!(
                "cannot listen on {listen}: {e} — is another engine running? `tap engine status` tells"
            ))
        })?;
        let local = listener.local_addr().ok();
        let address = local.map(|a| a.to_string()).unwrap_or_else(|| listen.to_string());
        write_private(&state_file(data_dir), &json!({"address": address, "pid": std::process::id()}).to_string())?;
        engine.log(&format!("engine listening on {address}, data dir {}", data_dir.display()));
        eprintln_or_ignore(&format!("tap engine: listening on {address}, data dir {}", data_dir.display()));
        if local.is_some_and(|a| !a.ip().is_loopback()) {
            let warning = format!(
                "tap engine: WARNING: {address} is reachable from other machines. The API is plain HTTP (the \
                 token travels in clear, in URLs), and whoever holds a token runs SQL against every saved \
                 connection and user functions on this machine. Listen on 127.0.0.1 unless this network is yours."
            );
            engine.log(&warning);
            eprintln_or_ignore(&warning);
        }
        resume(&engine);
        // The watchdog: a task whose thread died without recording it goes to `error`.
        let watched = runner.clone();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    watched.reconcile();
                }
            })
            .map_err(|e| Error::internal(format!("cannot start the watchdog: {e}")))?;
        let app = server::router(engine.clone());
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| Error::internal(format!("server failed: {e}")))?;
        Ok::<(), Error>(())
    })?;
    engine.log("engine stopping: stopping flows");
    // Flows stopped by shutdown keep their status, so the next start resumes them.
    let running: Vec<String> = store
        .list(TASKS)?
        .into_iter()
        .filter(|t| matches!(t.get("status").and_then(Value::as_str), Some("running" | "scheduling" | "wait_run")))
        .filter_map(|t| t.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    runner.shutdown(std::time::Duration::from_secs(10));
    for id in running {
        let _ = store.update(TASKS, &id, |d| d["status"] = json!("running"));
    }
    // Remove the state file only if it is still ours (a new engine may have started).
    let ours = std::fs::read_to_string(state_file(data_dir))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v.get("pid").and_then(Value::as_u64))
        == Some(u64::from(std::process::id()));
    if ours {
        let _ = std::fs::remove_file(state_file(data_dir));
    }
    engine.log("engine stopped");
    Ok(())
}

/// A line on stderr, if stderr can take it (a closed or full stderr is no reason to stop).
fn eprintln_or_ignore(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Restart flows that were running when the engine last stopped (cleanly or not).
fn resume(engine: &Arc<Engine>) {
    let Ok(tasks) = engine.store.list(TASKS) else { return };
    for t in tasks {
        let id = t.get("id").and_then(Value::as_str).unwrap_or("").to_string();
        match t.get("status").and_then(Value::as_str) {
            Some("running" | "scheduling" | "wait_run") => {
                engine.log(&format!("resuming flow {id}"));
                let _ = engine.store.log(
                    &id,
                    t.get("taskRecordId").and_then(Value::as_str).unwrap_or(""),
                    "INFO",
                    "Engine restarted: resuming from the last checkpoint",
                );
                if let Err(e) = engine.runner.start(&id) {
                    engine.log(&format!("cannot resume flow {id}: {e}"));
                }
            }
            Some("stopping") => {
                let _ = engine.store.update(TASKS, &id, |d| d["status"] = json!("stop"));
            }
            _ => {}
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
