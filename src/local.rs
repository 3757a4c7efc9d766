//! This machine, seen from the shell and scripts: the embedded engine as a process (whether it
//! answers, its status for `tap engine status`, and `stop`; starting it in the background is the
//! session's, `commands::session`, which uses these), and the sample database written to a local
//! file when the session talks to a cluster. The layers above (`commands`, `script`) reach
//! connectors only through here or through the engine.

use crate::datadir::{access_code, lock_holder, state_file};
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The most orders `demo` generates.
pub use crate::connectors::sample::MAX_DEMO_ROWS;

/// The seed's sample tables in a SQLite file at `path` (created, its tables replaced), for a
/// session on a cluster: `(table, rows)` for each table made.
pub fn demo_file(path: &str, rows: usize) -> Result<Vec<(String, u64)>> {
    let mut conn = crate::connectors::sqlite::Sqlite::open_path(path)?;
    Ok(crate::connectors::sample::generate(&mut conn, rows, 42)?.tables)
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:3030";

/// What `tap engine status` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineStatus {
    pub address: String,
    pub state: String,
    pub data_dir: String,
    pub access_code: String,
    pub pid: Option<u32>,
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
