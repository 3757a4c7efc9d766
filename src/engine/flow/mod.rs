//! A flow run: one thread per running flow, owning the loop source → processors → sink.
//!
//! ```text
//!   start ─► open connectors ─► checkpoint? ──no──► cdc_prepare, take CDC position, save it
//!                                   │yes                     │
//!                                   ▼                        ▼
//!                          phase = snapshot? ──yes──► snapshot each table not done yet
//!                                   │no                (batches → processors → sink;
//!                                   ▼                   table marked done in the checkpoint)
//!                           CDC loop: changes after the saved position → processors → sink
//!                           → save position → ack the source          (until stopped)
//! ```
//!
//! Invariants:
//! * the CDC start position is taken **before** the snapshot reads, so no change is missed;
//!   changes the snapshot already contains are replayed, which idempotent writes absorb;
//! * a position is saved only after the sink flushed every event before it: after a crash
//!   the flow resumes from the last saved position and neither loses nor duplicates a row;
//! * a snapshot interrupted mid-table restarts that table (upserts make the rerun harmless).
//!
//! Here: the [`Runner`] (one thread per flow, start/stop, the watchdog) and the supervision of a
//! run. `plan` turns the typed DAG into a plan and holds the save-time checks; `run` is the
//! plain flow (snapshot, CDC loop, checkpoints), `pipelined` its CDC loop with the reading on a
//! thread of its own; `wide` the lookup (wide-table) flow; `sink` the target side; `metrics`
//! the counters `stats` shows.
//!
//! Errors: `Unavailable` errors are retried with exponential backoff (1 s … 30 s), everything
//! else stops the flow in state `error` with the message in the task logs and in `status`.

use crate::api::dag::{Dag, Node};
use crate::api::task::TaskStatus;
use crate::connectors::{Connector, ExistingData, Position, SnapshotRequest, Target};
use crate::engine::processors::{self, Processor};
use crate::engine::store::{METADATA, Store, TASKS};
use crate::error::{Error, Result};
use crate::model::{Change, Event, Record, Schema, now_ms};
use serde_json::{Value, json};
use skip::{Skipper, run_chain};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SNAPSHOT_BATCH: usize = 5000;
const CDC_BATCH: usize = 5000;
/// A lookup flow reads larger CDC batches: each document a batch touches is rebuilt once,
/// however many of its changes touch it, so under load a larger batch rebuilds fewer
/// documents per change (a product or seller change touches dozens). Documents are built and
/// written [`LOOKUP_DOCS`] at a time, so memory follows that, not the batch.
const LOOKUP_CDC_BATCH: usize = 20_000;
const LOOKUP_DOCS: usize = 1000;
/// After a CDC batch smaller than [`PACE_BELOW`] changes, the loop waits this long before it
/// reads again, so the changes committed meanwhile arrive as one batch: at a few thousand
/// single-row commits a second the engine otherwise wakes, writes and saves its position for
/// each one. Costs at most this much commit → visible latency; a busy source (full batches)
/// is never paced.
const CDC_PACE: Duration = Duration::from_millis(20);
const PACE_BELOW: usize = 500;
/// Snapshot batches read ahead of the one being written (see `run::read_ahead`).
const READ_AHEAD: usize = 2;

struct Running {
    stop: Arc<AtomicBool>,
    metrics: Arc<Mutex<Metrics>>,
    handle: JoinHandle<()>,
}

/// Starts, stops and watches flows.
pub struct Runner {
    store: Arc<Store>,
    flows: Mutex<HashMap<String, Running>>,
}

impl Runner {
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        Arc::new(Self { store, flows: Mutex::new(HashMap::new()) })
    }

    /// Start the flow's thread. The runner owns the transition: the task goes to `scheduling`
    /// here, and its thread moves it on (`running`, then `stop`, `complete` or `error`).
    pub fn start(self: &Arc<Self>, task_id: &str) -> Result<()> {
        let mut flows = self.flows.lock().map_err(|_| Error::internal("runner lock"))?;
        if let Some(r) = flows.get(task_id)
            && !r.handle.is_finished()
        {
            return Ok(());
        }
        self.store.update(TASKS, task_id, |d| {
            d["status"] = json!("scheduling");
            if d.get("taskRecordId").and_then(Value::as_str).is_none_or(str::is_empty) {
                d["taskRecordId"] = json!(crate::engine::new_id());
            }
            if let Some(o) = d.as_object_mut() {
                o.remove("errorMessage");
            }
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let metrics =
            Arc::new(Mutex::new(self.store.metrics(task_id)?.map(|m| Metrics::from_json(&m)).unwrap_or_default()));
        let ctx = FlowCtx {
            task_id: task_id.to_string(),
            record_id: String::new(),
            store: self.store.clone(),
            stop: stop.clone(),
            metrics: metrics.clone(),
        };
        let spawned = std::thread::Builder::new().name(format!("flow-{task_id}")).spawn(move || supervise(ctx));
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                let message = format!("cannot start a flow thread: {e}");
                // The caller gets the error either way; the status says it too when it can.
                let _ = self.store.update(TASKS, task_id, |d| {
                    d["status"] = json!("schedule_failed");
                    d["errorMessage"] = json!(message);
                });
                return Err(Error::internal(message));
            }
        };
        flows.insert(task_id.to_string(), Running { stop, metrics, handle });
        Ok(())
    }

    /// Stop a flow: a live one goes to `stopping` and its thread ends it in `stop`; a task
    /// whose status says it runs while no thread runs it is put right (`stop`).
    pub fn stop(&self, task_id: &str) -> Result<()> {
        let flows = self.flows.lock().map_err(|_| Error::internal("runner lock"))?;
        match flows.get(task_id) {
            Some(r) if !r.handle.is_finished() => {
                // `stopping` is written before the flag is raised, so the thread's final `stop`
                // always comes after it.
                self.store.update(TASKS, task_id, |d| d["status"] = json!("stopping"))?;
                r.stop.store(true, Ordering::SeqCst);
            }
            _ => {
                self.store.update(TASKS, task_id, |d| d["status"] = json!("stop"))?;
            }
        }
        Ok(())
    }

    /// Put right any task whose status says it runs while no thread of this engine runs it
    /// (a thread that died without recording why): it goes to `error`, saying so. Called by
    /// the engine's watchdog; flows stopped by shutdown are not in the map and are left alone.
    pub fn reconcile(&self) {
        // The whole pass holds the map's lock, so a `start` cannot slip a new thread (and its
        // `scheduling`) in between reading a finished entry and writing `error` for it.
        let Ok(mut flows) = self.flows.lock() else { return };
        let finished: Vec<String> =
            flows.iter().filter(|(_, r)| r.handle.is_finished()).map(|(id, _)| id.clone()).collect();
        for id in finished {
            let Ok(Some(doc)) = self.store.get(TASKS, &id) else { continue };
            let status = doc.get("status").and_then(Value::as_str).unwrap_or("");
            if TaskStatus::parse(status).is_active() {
                let message = "the flow's thread ended without recording how (an internal error): start it again, and report this";
                let record = doc.get("taskRecordId").and_then(Value::as_str).unwrap_or("");
                let _ = self.store.log(&id, record, "ERROR", message);
                let written = self.store.update(TASKS, &id, |d| {
                    d["status"] = json!("error");
                    d["errorMessage"] = json!(message);
                    d["stopTime"] = json!(iso_now());
                });
                if written.is_err() {
                    continue; // kept, and tried again at the next tick
                }
            }
            // Its status is final: the entry goes (its metrics were saved as it ended), so the
            // watchdog's work follows the flows that run, not every flow that ever ran.
            flows.remove(&id);
        }
    }

    pub fn is_running(&self, task_id: &str) -> bool {
        self.flows.lock().ok().and_then(|f| f.get(task_id).map(|r| !r.handle.is_finished())).unwrap_or(false)
    }

    /// Live metrics of a running flow, or the last saved ones.
    pub fn metrics(&self, task_id: &str) -> Result<Option<Value>> {
        if let Ok(flows) = self.flows.lock()
            && let Some(r) = flows.get(task_id)
            && let Ok(mut m) = r.metrics.lock()
        {
            if !r.handle.is_finished() {
                m.tick();
            }
            return Ok(Some(m.to_json()));
        }
        self.store.metrics(task_id)
    }

    /// Stop every flow and wait for the threads (engine shutdown).
    pub fn shutdown(&self, wait: Duration) {
        let handles: Vec<Running> = match self.flows.lock() {
            Ok(mut f) => f.drain().map(|(_, r)| r).collect(),
            Err(_) => return,
        };
        for r in &handles {
            r.stop.store(true, Ordering::SeqCst);
        }
        let deadline = Instant::now() + wait;
        for r in handles {
            while !r.handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

struct FlowCtx {
    task_id: String,
    record_id: String,
    store: Arc<Store>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Mutex<Metrics>>,
}

impl FlowCtx {
    fn log(&self, level: &str, message: &str) {
        let _ = self.store.log(&self.task_id, &self.record_id, level, message);
    }
    fn set_status(&self, status: &str, extra: Value) {
        let _ = self.store.update(TASKS, &self.task_id, |doc| {
            doc["status"] = json!(status);
            doc["last_updated"] = json!(iso_now());
            if status == "running"
                && let Some(d) = doc.as_object_mut()
            {
                d.remove("retrying");
            }
            if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
                for (k, v) in e {
                    d.insert(k.clone(), v.clone());
                }
            }
        });
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    fn save_metrics(&self) {
        if let Ok(m) = self.metrics.lock() {
            let _ = self.store.save_metrics(&self.task_id, &m.to_json());
        }
    }

    /// The initial sync is done: the checkpoint moves to CDC and the metrics say so.
    /// Log what a connector changed on the flow's behalf (a journal mode switched).
    fn notices(&self, conn: &mut dyn Connector) {
        for n in conn.take_notices() {
            self.log("INFO", &n);
        }
    }

    fn snapshot_done(&self, checkpoint: &mut Checkpoint, message: &str) -> Result<()> {
        checkpoint.phase = Phase::Cdc;
        checkpoint.save(&self.store, &self.task_id)?;
        if let Ok(mut m) = self.metrics.lock() {
            m.snapshot_done_at = Some(now_ms());
            m.replicate_lag = 0;
        }
        self.save_metrics();
        self.log("INFO", message);
        Ok(())
    }

    /// After the initial sync: a snapshot-only flow is complete (its checkpoint goes), else
    /// the flow is about to read changes.
    fn complete_or_cdc(&self, cdc: bool) -> Result<Option<Outcome>> {
        if !cdc {
            self.store.delete_checkpoint(&self.task_id)?;
            return Ok(Some(Outcome::Complete));
        }
        self.set_status("running", json!({"syncStatus": "CDC"}));
        Ok(None)
    }
}

pub fn iso_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

enum Outcome {
    Stopped,
    Complete,
}

/// How a flow thread ends: the status it leaves, what it logs, and the fields it sets.
struct Ending {
    status: &'static str,
    level: &'static str,
    message: String,
    error: Option<String>,
}

/// Run the flow, retrying transient failures, and record how it ended. A panic anywhere in
/// the flow is caught here and ends it in `error` like any other failure.
fn supervise(mut ctx: FlowCtx) {
    let task = match ctx.store.get(TASKS, &ctx.task_id) {
        Ok(Some(t)) => t,
        Ok(None) => return,
        Err(e) => {
            report(&ctx.store, &format!("flow {}: cannot read the task: {e}", ctx.task_id));
            return;
        }
    };
    ctx.record_id = task.get("taskRecordId").and_then(Value::as_str).unwrap_or_default().to_string();
    let ending = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_supervised(&ctx, &task))) {
        Ok(ending) => ending,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let message = format!("internal error, the flow stopped: {what}");
            Ending { status: "error", level: "ERROR", message: message.clone(), error: Some(message) }
        }
    };
    ctx.save_metrics();
    ctx.log(ending.level, &ending.message);
    // The final status is retried: a flow must never be left `running` by a failed write.
    let mut delay = Duration::from_millis(100);
    for attempt in 0.. {
        let result = ctx.store.update(TASKS, &ctx.task_id, |doc| {
            doc["status"] = json!(ending.status);
            doc["last_updated"] = json!(iso_now());
            doc["stopTime"] = json!(iso_now());
            if let Some(o) = doc.as_object_mut() {
                o.remove("retrying");
            }
            if let Some(e) = &ending.error {
                doc["errorMessage"] = json!(e);
            }
        });
        match result {
            Ok(_) => return,
            Err(e) if attempt < 20 => {
                if attempt == 0 {
                    report(
                        &ctx.store,
                        &format!("flow {}: cannot record status {}: {e}; retrying", ctx.task_id, ending.status),
                    );
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                report(
                    &ctx.store,
                    &format!(
                        "flow {}: the engine store is unusable, status {} not recorded: {e}; the watchdog will retry",
                        ctx.task_id, ending.status
                    ),
                );
                return;
            }
        }
    }
}

/// Write a message to the engine's own log (`engine.log`), for failures of the store itself.
fn report(store: &Store, message: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(store.dir().join("engine.log")) {
        let _ = writeln!(f, "{} {message}", iso_now());
    }
}

fn run_supervised(ctx: &FlowCtx, task: &Value) -> Ending {
    // `running` is set once the flow's connectors are open and CDC is prepared, so a start
    // that cannot work reports its error to the caller waiting for `running`.
    ctx.set_status("scheduling", json!({"startTime": iso_now(), "lastStartDate": now_ms()}));
    ctx.log("INFO", "Task started");
    if let Ok(mut m) = ctx.metrics.lock() {
        m.started = Some(now_ms());
    }
    let stopped = || Ending { status: "stop", level: "INFO", message: "Task stopped".into(), error: None };
    // Transient failures are retried with a backoff that resets after a run that lasted, for
    // at most the task's `maxRetryTimeMinute` (5 by default) without such a run.
    let limit = Duration::from_secs(task.get("maxRetryTimeMinute").and_then(Value::as_u64).unwrap_or(5) * 60);
    let mut backoff = Duration::from_secs(1);
    let mut failing_since: Option<Instant> = None;
    loop {
        let began = Instant::now();
        let result = run(ctx, task);
        if began.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
            failing_since = None;
        }
        match result {
            Ok(Outcome::Stopped) => return stopped(),
            Ok(Outcome::Complete) => {
                return Ending {
                    status: "complete",
                    level: "INFO",
                    message: "Initial sync completed, task complete".into(),
                    error: None,
                };
            }
            Err(_) if ctx.stopped() => return stopped(),
            Err(e) if e.is_transient() && failing_since.get_or_insert_with(Instant::now).elapsed() < limit => {
                ctx.log("WARN", &format!("{e}; retrying in {}s", backoff.as_secs()));
                // `status` shows why the flow is not moving while it retries (informational: a
                // failed write changes no state, and the retry goes on).
                let _ = ctx.store.update(TASKS, &ctx.task_id, |d| d["retrying"] = json!(format!("retrying: {e}")));
                let until = Instant::now() + backoff;
                while Instant::now() < until && !ctx.stopped() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) if e.is_transient() => {
                let message = format!("{e} (still failing after {} min of retries)", limit.as_secs() / 60);
                return Ending { status: "error", level: "ERROR", message: message.clone(), error: Some(message) };
            }
            Err(e) => {
                return Ending { status: "error", level: "ERROR", message: e.message.clone(), error: Some(e.message) };
            }
        }
    }
}

mod checkpoint;
mod metrics;
mod migrate;
mod pipelined;
mod plan;
mod run;
mod sink;
mod skip;
mod wide;

use checkpoint::{Checkpoint, Phase};
use plan::*;
use run::*;
use sink::*;
use wide::*;

pub use metrics::Metrics;
use metrics::op_index;
pub use plan::{check_sources, release_sources, source_read, validate};
