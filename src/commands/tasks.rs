//! Waiting on a flow by id, and reading why it failed: shared by the verbs and by `Flow`.

use super::session::Session;
use crate::error::{Error, Result};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Poll until the flow reaches one of `wanted`; an `error` status fails with the flow's error.
pub fn wait_status(session: &Session, id: &str, wanted: &[&str], timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let task = session.client.task(id)?.ok_or_else(|| Error::not_found(format!("flow {id} vanished")))?;
        let status = task.get("status").and_then(Value::as_str).unwrap_or("").to_string();
        if wanted.contains(&status.as_str()) {
            return Ok(status);
        }
        if status == "error" {
            let why = last_error(session, &task);
            return Err(Error::data(format!(
                "flow {} failed: {why}",
                task.get("name").and_then(Value::as_str).unwrap_or(id)
            )));
        }
        if Instant::now() > deadline {
            let why = match task.get("retrying").and_then(Value::as_str) {
                Some(r) => format!(" ({r})"),
                None => String::new(),
            };
            let name = task.get("name").and_then(Value::as_str).unwrap_or(id);
            return Err(Error::unavailable(format!("flow {name} is still {status} after {}s{why}", timeout.as_secs())));
        }
        session.sleep(Duration::from_millis(200))?;
    }
}

/// The flow's last error: `errorMessage` on our engine, else the newest ERROR log.
pub fn last_error(session: &Session, task: &Value) -> String {
    if let Some(m) = task.get("errorMessage").and_then(Value::as_str) {
        return m.to_string();
    }
    let id = task.get("id").and_then(Value::as_str).unwrap_or("");
    let rid = task.get("taskRecordId").and_then(Value::as_str).unwrap_or("");
    session
        .client
        .task_logs(id, rid, &["ERROR"], 1)
        .ok()
        .and_then(|l| l.first().and_then(|x| x.get("message").and_then(Value::as_str).map(str::to_string)))
        .unwrap_or_else(|| "see `logs` for details".into())
}
