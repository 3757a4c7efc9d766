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
use std::path::Path;
use std::sync::{Arc, Mutex};
use store::{Store, TASKS};

pub(crate) use crate::datadir::{
    access_code, create_dir_private, create_private, lock_data_dir, require_private_dir, state_file, tighten_files,
    write_private,
};
pub use crate::local::DEFAULT_LISTEN;

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

/// Run the engine in the foreground until SIGTERM or Ctrl-C.
pub fn run(listen: &str, data_dir: &Path, allow_python: bool) -> Result<()> {
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
        processors::set_policy(local.is_some_and(|a| a.ip().is_loopback()), allow_python, &address);
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
