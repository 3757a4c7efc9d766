//! A `MonitoringLogs` item: one log line of a flow's run, with TapData's fields.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogItem {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub task_id: String,
    /// The flow's name (TapData's clients show it).
    #[serde(default, deserialize_with = "super::task::text")]
    pub task_name: String,
    /// The run the line belongs to.
    #[serde(default, deserialize_with = "super::task::text")]
    pub task_record_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// The same instant as ISO 8601 in UTC.
    #[serde(default, deserialize_with = "super::task::text")]
    pub date: String,
    /// `DEBUG`, `INFO`, `WARN` or `ERROR`.
    pub level: String,
    pub message: String,
    /// The node the line is about; empty for lines about the whole flow (the engine names
    /// nodes in the message).
    #[serde(default, deserialize_with = "super::task::text")]
    pub node_id: String,
    #[serde(default, deserialize_with = "super::task::text")]
    pub node_name: String,
    /// Fields a server sends that tap does not read, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl LogItem {
    /// A line at `ts_ms`, its `date` derived.
    pub fn new(task_id: &str, record_id: &str, ts_ms: i64, level: &str, message: &str) -> Self {
        LogItem {
            task_id: task_id.to_string(),
            task_record_id: record_id.to_string(),
            timestamp: ts_ms,
            date: chrono::DateTime::from_timestamp_millis(ts_ms)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default(),
            level: level.to_string(),
            message: message.to_string(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_carry_tapdata_fields_both_ways() {
        let mut item = LogItem::new("t1", "r1", 1_700_000_000_000, "ERROR", "boom");
        item.task_name = "orders".into();
        let v = serde_json::to_value(&item).unwrap_or_default();
        for k in ["taskId", "taskName", "taskRecordId", "timestamp", "date", "level", "message", "nodeId", "nodeName"] {
            assert!(v.get(k).is_some(), "{k} missing: {v}");
        }
        assert_eq!(v["date"], json!("2023-11-14T22:13:20.000Z"));
        // A cluster's item, with nulls and fields tap does not read.
        let theirs = json!({"id": "x", "taskId": "t1", "taskName": null, "taskRecordId": null, "timestamp": 5,
                            "level": "WARN", "message": "m", "nodeId": null, "logTags": ["a"]});
        let back: LogItem = serde_json::from_value(theirs).unwrap_or_default();
        assert_eq!((back.level.as_str(), back.timestamp, back.task_name.as_str()), ("WARN", 5, ""));
        assert_eq!(back.extra.get("logTags"), Some(&json!(["a"])));
    }
}
