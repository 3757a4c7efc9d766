//! A task's metrics sample (`/measurement/query/v2`, `type: instant`), named as TapData names
//! them: the engine writes it, the client reads it (from a cluster too, where any counter may
//! come as a float or null).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskMetrics {
    #[serde(default, deserialize_with = "count")]
    pub input_insert_total: u64,
    #[serde(default, deserialize_with = "count")]
    pub input_update_total: u64,
    #[serde(default, deserialize_with = "count")]
    pub input_delete_total: u64,
    #[serde(default, deserialize_with = "count")]
    pub input_ddl_total: u64,
    #[serde(default, deserialize_with = "count")]
    pub input_others_total: u64,
    #[serde(default, deserialize_with = "count")]
    pub output_insert_total: u64,
    #[serde(default, deserialize_with = "count")]
    pub output_update_total: u64,
    #[serde(default, deserialize_with = "count")]
    pub output_delete_total: u64,
    #[serde(default, deserialize_with = "count")]
    pub output_ddl_total: u64,
    #[serde(default, deserialize_with = "count")]
    pub output_others_total: u64,
    #[serde(default, deserialize_with = "rate")]
    pub input_qps: f64,
    #[serde(default, deserialize_with = "rate")]
    pub output_qps: f64,
    #[serde(default, deserialize_with = "rate")]
    pub output_qps_max: f64,
    #[serde(default, deserialize_with = "rate")]
    pub output_qps_avg: f64,
    /// Milliseconds from a change's commit at the source to its write at the target.
    #[serde(default, deserialize_with = "instant")]
    pub replicate_lag: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    pub snapshot_row_total: u64,
    #[serde(default, deserialize_with = "count")]
    pub snapshot_insert_row_total: u64,
    #[serde(default, deserialize_with = "instant")]
    pub snapshot_start_at: Option<i64>,
    #[serde(default, deserialize_with = "instant")]
    pub snapshot_done_at: Option<i64>,
    #[serde(default, deserialize_with = "instant")]
    pub snapshot_done_cost: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    pub table_total: u64,
    #[serde(default, deserialize_with = "count")]
    pub snapshot_table_total: u64,
    #[serde(default, deserialize_with = "count")]
    pub create_table_total: u64,
    /// The embedded engine's: about how many rows the snapshot copies (the sources' counts, or
    /// their own estimates of large tables), and the table it copies now.
    #[serde(default, deserialize_with = "count")]
    pub snapshot_row_estimate: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot_table: String,
    /// The embedded engine's: commit → written, over the changes of the last minute.
    #[serde(default, deserialize_with = "instant", skip_serializing_if = "Option::is_none")]
    pub replicate_lag_p50: Option<i64>,
    #[serde(default, deserialize_with = "instant", skip_serializing_if = "Option::is_none")]
    pub replicate_lag_p99: Option<i64>,
    /// The source commit time of the last change read (epoch ms).
    #[serde(default, deserialize_with = "instant")]
    pub current_event_timestamp: Option<i64>,
    /// Fields a server sends that tap does not read, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A counter: a whole number, a float, numeric text or null (0).
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(v.as_u64().or_else(|| number(&v).filter(|f| *f >= 0.0).map(|f| f as u64)).unwrap_or(0))
}

fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(number(&Value::deserialize(d)?).unwrap_or(0.0))
}

/// A time or duration in ms, or null.
fn instant<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(v.as_i64().or_else(|| number(&v).map(|f| f as i64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_clusters_sample_reads_whatever_its_numbers_look_like() {
        let theirs = json!({"inputInsertTotal": 12.0, "outputInsertTotal": "7", "replicateLag": null,
                            "snapshotDoneAt": 1700000000000i64, "outputQps": 3, "sourceConnection": "c"});
        let m: TaskMetrics = serde_json::from_value(theirs).unwrap_or_default();
        assert_eq!((m.input_insert_total, m.output_insert_total, m.replicate_lag), (12, 7, None));
        assert_eq!((m.snapshot_done_at, m.output_qps), (Some(1_700_000_000_000), 3.0));
        assert_eq!(m.extra.get("sourceConnection"), Some(&json!("c")));
        let back = serde_json::to_value(&m).unwrap_or_default();
        assert_eq!(back["inputInsertTotal"], json!(12));
        assert_eq!(back["snapshotRowTotal"], json!(0));
    }
}
