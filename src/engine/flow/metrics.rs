use super::*;

/// Task-level counters, named as TapData's metrics.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub input: [u64; 3],
    pub output: [u64; 3],
    pub snapshot_rows: u64,
    pub snapshot_start_at: Option<i64>,
    pub snapshot_done_at: Option<i64>,
    pub snapshot_tables: u64,
    pub tables: u64,
    pub current_event_ts: Option<i64>,
    pub replicate_lag: i64,
    pub input_qps: f64,
    pub output_qps: f64,
    pub output_qps_max: f64,
    pub(super) started: Option<i64>,
    pub(super) last_tick: Option<(Instant, u64, u64)>,
}

impl Metrics {
    pub(super) fn total_out(&self) -> u64 {
        self.output.iter().sum()
    }
    pub(super) fn total_in(&self) -> u64 {
        self.input.iter().sum()
    }
    /// Update the rates once a second or more.
    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        match self.last_tick {
            Some((t, i, o)) if now.duration_since(t) >= Duration::from_secs(1) => {
                let secs = now.duration_since(t).as_secs_f64();
                self.input_qps = ((self.total_in() - i) as f64 / secs * 10.0).round() / 10.0;
                self.output_qps = ((self.total_out() - o) as f64 / secs * 10.0).round() / 10.0;
                self.output_qps_max = self.output_qps_max.max(self.output_qps);
                self.last_tick = Some((now, self.total_in(), self.total_out()));
            }
            None => self.last_tick = Some((now, self.total_in(), self.total_out())),
            _ => {}
        }
    }

    pub fn to_json(&self) -> Value {
        let elapsed_s = self.started.map(|s| ((now_ms() - s) as f64 / 1000.0).max(0.001)).unwrap_or(1.0);
        json!({
            "inputInsertTotal": self.input[0], "inputUpdateTotal": self.input[1], "inputDeleteTotal": self.input[2],
            "inputDdlTotal": 0, "inputOthersTotal": 0,
            "outputInsertTotal": self.output[0], "outputUpdateTotal": self.output[1], "outputDeleteTotal": self.output[2],
            "outputDdlTotal": 0, "outputOthersTotal": 0,
            "inputQps": self.input_qps, "outputQps": self.output_qps, "outputQpsMax": self.output_qps_max,
            "outputQpsAvg": ((self.total_out() as f64 / elapsed_s) * 10.0).round() / 10.0,
            "replicateLag": self.replicate_lag,
            "snapshotRowTotal": self.snapshot_rows, "snapshotInsertRowTotal": self.snapshot_rows,
            "snapshotStartAt": self.snapshot_start_at, "snapshotDoneAt": self.snapshot_done_at,
            "snapshotDoneCost": match (self.snapshot_start_at, self.snapshot_done_at) { (Some(a), Some(b)) => Some(b - a), _ => None },
            "tableTotal": self.tables, "snapshotTableTotal": self.snapshot_tables, "createTableTotal": 0,
            "currentEventTimestamp": self.current_event_ts,
        })
    }

    pub(super) fn from_json(v: &Value) -> Self {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let i = |k: &str| v.get(k).and_then(Value::as_i64);
        Metrics {
            input: [n("inputInsertTotal"), n("inputUpdateTotal"), n("inputDeleteTotal")],
            output: [n("outputInsertTotal"), n("outputUpdateTotal"), n("outputDeleteTotal")],
            snapshot_rows: n("snapshotRowTotal"),
            snapshot_start_at: i("snapshotStartAt"),
            snapshot_done_at: i("snapshotDoneAt"),
            snapshot_tables: n("snapshotTableTotal"),
            tables: n("tableTotal"),
            current_event_ts: i("currentEventTimestamp"),
            output_qps_max: v.get("outputQpsMax").and_then(Value::as_f64).unwrap_or(0.0),
            ..Default::default()
        }
    }
}

pub(super) fn op_index(c: &Change) -> usize {
    match c {
        Change::Insert { .. } => 0,
        Change::Update { .. } => 1,
        Change::Delete { .. } => 2,
    }
}
