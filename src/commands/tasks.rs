//! Waiting on a flow by id, and reading why it failed: shared by the verbs and by `Flow`.

use super::session::Session;
use crate::api::task::{Task, TaskStatus};
use crate::error::{Error, Result};
use std::time::{Duration, Instant};

/// Poll until the flow reaches one of `wanted`; an `error` status fails with the flow's error.
pub fn wait_status(session: &Session, id: &str, wanted: &[TaskStatus], timeout: Duration) -> Result<TaskStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let task = session.client.task(id)?.ok_or_else(|| Error::not_found(format!("flow {id} vanished")))?;
        if wanted.contains(&task.status) {
            return Ok(task.status);
        }
        let name = if task.name.is_empty() { id } else { task.name.as_str() };
        if task.status == TaskStatus::Error {
            return Err(Error::data(format!("flow {name} failed: {}", last_error(session, &task))));
        }
        if Instant::now() > deadline {
            let why = if task.retrying.is_empty() { String::new() } else { format!(" ({})", task.retrying) };
            return Err(Error::unavailable(format!(
                "flow {name} is still {} after {}s{why}",
                task.status,
                timeout.as_secs()
            )));
        }
        session.sleep(Duration::from_millis(200))?;
    }
}

/// The flow's last error: `errorMessage` on our engine, else the newest ERROR log.
pub fn last_error(session: &Session, task: &Task) -> String {
    if !task.error_message.is_empty() {
        return task.error_message.clone();
    }
    session
        .client
        .task_logs(&task.id, &task.record_id, &["ERROR"], 1)
        .ok()
        .and_then(|l| l.into_iter().next().map(|x| x.message))
        .unwrap_or_else(|| "see `logs` for details".into())
}
