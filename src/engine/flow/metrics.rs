use super::*;
use crate::api::metrics::TaskMetrics;

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
    pub snapshot_estimate: u64,
    pub snapshot_table: String,
    /// (written at, commit → written) of recent changes, bounded: the lag percentiles.
    pub lags: std::collections::VecDeque<(i64, i64)>,
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
    /// Record the lag of changes committed at `commits` (epoch ms), written now; a large batch
    /// is sampled, and only the last minute is kept.
    pub(super) fn record_lags(&mut self, commits: &[i64]) {
        const KEEP: usize = 4096;
        let now = now_ms();
        let step = (commits.len() / 256).max(1);
        for ts in commits.iter().filter(|t| **t > 0).step_by(step) {
            self.lags.push_back((now, (now - ts).max(0)));
        }
        while self.lags.len() > KEEP || self.lags.front().is_some_and(|(at, _)| now - at > 60_000) {
            self.lags.pop_front();
        }
    }

    fn lag_percentile(&self, p: f64) -> Option<i64> {
        let now = now_ms();
        let mut v: Vec<i64> = self.lags.iter().filter(|(at, _)| now - at <= 60_000).map(|(_, l)| *l).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        Some(v[i])
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

    /// The sample TapData's measurement API answers with.
    pub fn to_api(&self) -> TaskMetrics {
        let elapsed_s = self.started.map(|s| ((now_ms() - s) as f64 / 1000.0).max(0.001)).unwrap_or(1.0);
        TaskMetrics {
            input_insert_total: self.input[0],
            input_update_total: self.input[1],
            input_delete_total: self.input[2],
            output_insert_total: self.output[0],
            output_update_total: self.output[1],
            output_delete_total: self.output[2],
            input_qps: self.input_qps,
            output_qps: self.output_qps,
            output_qps_max: self.output_qps_max,
            output_qps_avg: ((self.total_out() as f64 / elapsed_s) * 10.0).round() / 10.0,
            replicate_lag: Some(self.replicate_lag),
            snapshot_row_total: self.snapshot_rows,
            snapshot_insert_row_total: self.snapshot_rows,
            snapshot_start_at: self.snapshot_start_at,
            snapshot_done_at: self.snapshot_done_at,
            snapshot_done_cost: match (self.snapshot_start_at, self.snapshot_done_at) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
            table_total: self.tables,
            snapshot_table_total: self.snapshot_tables,
            current_event_timestamp: self.current_event_ts,
            snapshot_row_estimate: self.snapshot_estimate.max(self.snapshot_rows),
            snapshot_table: self.snapshot_table.clone(),
            replicate_lag_p50: self.lag_percentile(0.5),
            replicate_lag_p99: self.lag_percentile(0.99),
            ..Default::default()
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.to_api()).unwrap_or_default()
    }

    /// The counters back from a saved sample (a restarted engine goes on counting).
    pub(super) fn from_json(v: &Value) -> Self {
        let m: TaskMetrics = serde_json::from_value(v.clone()).unwrap_or_default();
        Metrics {
            input: [m.input_insert_total, m.input_update_total, m.input_delete_total],
            output: [m.output_insert_total, m.output_update_total, m.output_delete_total],
            snapshot_rows: m.snapshot_row_total,
            snapshot_start_at: m.snapshot_start_at,
            snapshot_done_at: m.snapshot_done_at,
            snapshot_tables: m.snapshot_table_total,
            tables: m.table_total,
            current_event_ts: m.current_event_timestamp,
            output_qps_max: m.output_qps_max,
            snapshot_estimate: m.snapshot_row_estimate,
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
