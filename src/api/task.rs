//! A task (a flow) as the client reads it, and its `status` as TapData spells it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;

/// A task document: the fields the client acts on, typed; every other field kept as it came,
/// so the document round-trips (a preview sends it back whole).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    #[serde(default, deserialize_with = "text")]
    pub id: String,
    #[serde(default, deserialize_with = "text")]
    pub name: String,
    #[serde(default)]
    pub status: TaskStatus,
    /// The current run (`taskRecordId`): metrics and logs are per run.
    #[serde(rename = "taskRecordId", default, deserialize_with = "text", skip_serializing_if = "String::is_empty")]
    pub record_id: String,
    /// `sync` (a flow) or `migrate` (a whole-database pipeline).
    #[serde(rename = "syncType", default, deserialize_with = "text", skip_serializing_if = "String::is_empty")]
    pub sync_type: String,
    /// `initial_sync+cdc`, `initial_sync` or `cdc` (TapData's `type`).
    #[serde(rename = "type", default, deserialize_with = "text", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// `INITIAL_SYNC`, `CDC`, … (TapData's `syncStatus`).
    #[serde(rename = "syncStatus", default, deserialize_with = "text", skip_serializing_if = "String::is_empty")]
    pub sync_status: String,
    /// The embedded engine's: what a flow retrying on a transient error is waiting for.
    #[serde(default, deserialize_with = "text", skip_serializing_if = "String::is_empty")]
    pub retrying: String,
    /// The embedded engine's: why the flow is in error.
    #[serde(rename = "errorMessage", default, deserialize_with = "text", skip_serializing_if = "String::is_empty")]
    pub error_message: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Task {
    /// The initial sync is over: the flow is complete, or running in its CDC phase.
    pub fn initial_sync_done(&self) -> bool {
        self.status == TaskStatus::Complete || (self.status == TaskStatus::Running && self.sync_status == "CDC")
    }
}

/// A text field that a server may send as null or leave out.
pub(crate) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

impl Serialize for TaskStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TaskStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(TaskStatus::parse(&text(d)?))
    }
}

/// TapData's task states. Unknown spellings are kept, so a document round-trips.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TaskStatus {
    #[default]
    Edit,
    WaitStart,
    Scheduling,
    ScheduleFailed,
    WaitRun,
    Running,
    Stopping,
    Stop,
    Complete,
    Error,
    Other(String),
}

impl TaskStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "edit" | "" => Self::Edit,
            "wait_start" => Self::WaitStart,
            "scheduling" => Self::Scheduling,
            "schedule_failed" => Self::ScheduleFailed,
            "wait_run" => Self::WaitRun,
            "running" => Self::Running,
            "stopping" => Self::Stopping,
            "stop" => Self::Stop,
            "complete" => Self::Complete,
            "error" => Self::Error,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Edit => "edit",
            Self::WaitStart => "wait_start",
            Self::Scheduling => "scheduling",
            Self::ScheduleFailed => "schedule_failed",
            Self::WaitRun => "wait_run",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stop => "stop",
            Self::Complete => "complete",
            Self::Error => "error",
            Self::Other(s) => s,
        }
    }

    /// The states in which a flow thread is supposed to run.
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Scheduling | Self::WaitRun | Self::Running | Self::Stopping)
    }

    /// The states from which a start is accepted.
    pub fn can_start(&self) -> bool {
        matches!(self, Self::WaitStart | Self::Stop | Self::Complete | Self::Error | Self::ScheduleFailed)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_document_is_typed_and_round_trips() {
        let doc = serde_json::json!({"id": "a1", "name": "f", "status": "running", "taskRecordId": null,
                                     "syncStatus": "CDC", "dag": {"nodes": []}, "crontabExpressionFlag": false});
        let t: Task = serde_json::from_value(doc.clone()).expect("a task");
        assert_eq!((t.status.clone(), t.record_id.as_str()), (TaskStatus::Running, ""));
        assert!(t.initial_sync_done());
        let back = serde_json::to_value(&t).expect("json");
        assert_eq!(back["dag"], doc["dag"]);
        assert_eq!(back["status"], "running");
        assert!(back.get("taskRecordId").is_none(), "an empty run id is left out: {back}");
    }

    #[test]
    fn round_trips_every_spelling() {
        for s in [
            "edit",
            "wait_start",
            "scheduling",
            "schedule_failed",
            "wait_run",
            "running",
            "stopping",
            "stop",
            "complete",
            "error",
            "renewing",
        ] {
            assert_eq!(TaskStatus::parse(s).as_str(), s);
        }
        assert!(TaskStatus::parse("running").is_active());
        assert!(!TaskStatus::parse("error").is_active());
        assert!(TaskStatus::parse("error").can_start());
    }
}
