//! A flow's checkpoint, typed: its phase, each source connection's CDC position (the
//! connector's own type, opaque here), the source nodes whose snapshot is done, and whether the
//! snapshot left a target table to check on resume. Saved after every batch it covers is written.

use crate::connectors::Position;
use crate::engine::store::Store;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Map;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Snapshot,
    Cdc,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub phase: Phase,
    /// Per source connection id, where its CDC resumes.
    #[serde(default)]
    pub positions: Map<String, Position>,
    /// Source node ids whose snapshot is in the target.
    #[serde(default)]
    pub snapshot_done: Vec<String>,
    /// Whether the target table existed when the snapshot ended (a CDC resume checks it still does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_table: Option<bool>,
    /// A CDC-only flow's start time (epoch ms): changes committed before it are not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdc_from_ms: Option<i64>,
}

impl Checkpoint {
    pub fn new(snapshot: bool, positions: Map<String, Position>) -> Self {
        Checkpoint {
            phase: if snapshot { Phase::Snapshot } else { Phase::Cdc },
            positions,
            snapshot_done: Vec::new(),
            target_table: None,
            cdc_from_ms: None,
        }
    }

    pub fn snapshot_done_for(&self, node_id: &str) -> bool {
        self.snapshot_done.iter().any(|n| n == node_id)
    }

    /// The flow's stored checkpoint, if any. One of another shape (written by something else)
    /// is an error that says how to start over, not a panic.
    pub fn load(store: &Store, flow_id: &str) -> Result<Option<Self>> {
        let Some(doc) = store.checkpoint(flow_id)? else { return Ok(None) };
        serde_json::from_value(doc).map(Some).map_err(|e| {
            Error::config(format!(
                "the stored checkpoint of this flow is not one this engine can resume from ({e}): `reset` the flow to start it over"
            ))
        })
    }

    pub fn save(&self, store: &Store, flow_id: &str) -> Result<()> {
        store.save_checkpoint(flow_id, &serde_json::to_value(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_refuses_other_shapes() {
        let mut cp = Checkpoint::new(true, Map::new());
        cp.positions.insert("c1".into(), json!({"lsn": "0/16B3748"}));
        cp.snapshot_done.push("n1".into());
        let v = serde_json::to_value(&cp).unwrap_or_default();
        assert_eq!(v, json!({"phase": "snapshot", "positions": {"c1": {"lsn": "0/16B3748"}}, "snapshotDone": ["n1"]}));
        assert_eq!(serde_json::from_value::<Checkpoint>(v).ok(), Some(cp));
        assert!(serde_json::from_value::<Checkpoint>(json!({"phase": "later"})).is_err());
        assert!(serde_json::from_value::<Checkpoint>(json!({"phase": "cdc", "positions": [1]})).is_err());
    }
}
