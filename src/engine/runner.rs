//! The runner: one thread per running flow, owning the loop source → processors → sink.
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
//! Errors: `Unavailable` errors are retried with exponential backoff (1 s … 30 s), everything
//! else stops the flow in state `error` with the message in the task logs and in `status`.

use super::processors::{self, Processor};
use super::store::{CONNECTIONS, METADATA, Store, TASKS};
use crate::api::dag::{Dag, Node};
use crate::api::task::TaskStatus;
use crate::connectors::{self, Connector, ExistingData, Position};
use crate::error::{Error, Result};
use crate::model::{Change, Event, Record, Schema, now_ms};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SNAPSHOT_BATCH: usize = 5000;
const CDC_BATCH: usize = 5000;

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
    started: Option<i64>,
    last_tick: Option<(Instant, u64, u64)>,
}

impl Metrics {
    fn total_out(&self) -> u64 {
        self.output.iter().sum()
    }
    fn total_in(&self) -> u64 {
        self.input.iter().sum()
    }
    /// Update the rates once a second or more.
    fn tick(&mut self) {
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

    fn from_json(v: &Value) -> Self {
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

fn op_index(c: &Change) -> usize {
    match c {
        Change::Insert { .. } => 0,
        Change::Update { .. } => 1,
        Change::Delete { .. } => 2,
    }
}

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
                d["taskRecordId"] = json!(super::new_id());
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

    fn snapshot_done(&self, checkpoint: &mut Value, message: &str) -> Result<()> {
        checkpoint["phase"] = json!("cdc");
        self.store.save_checkpoint(&self.task_id, checkpoint)?;
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

/// One source table node of the DAG, with the processors on its way to the sink.
struct SourceNode {
    node_id: String,
    connection_id: String,
    table: String,
    chain: Vec<Box<dyn Processor>>,
}

struct SinkNode {
    name: String,
    connection_id: String,
    table: String,
    key: Vec<String>,
    existing: ExistingData,
}

struct Plan {
    /// The flow's name.
    name: String,
    sources: Vec<SourceNode>,
    sink: SinkNode,
    snapshot: bool,
    cdc: bool,
    /// The merge node and the processors between it and the sink, for lookup flows.
    merge: Option<(Value, Vec<Box<dyn Processor>>)>,
}

fn node_str<'a>(node: &'a Value, key: &str) -> &'a str {
    node.get(key).and_then(Value::as_str).unwrap_or("")
}

fn plan(task: &Value) -> Result<Plan> {
    let dag = Dag::parse(task).map_err(|r| Error::unsupported(r.message))?;
    let merges: Vec<&Node> = dag.nodes.iter().filter(|n| n.ty == "merge_table_processor").collect();
    if merges.len() > 1 {
        return Err(Error::unsupported("the embedded engine runs flows with one lookup (merge) node"));
    }
    let merge_id = merges.first().map(|m| m.id.clone());
    let sinks: Vec<&Node> =
        dag.nodes.iter().filter(|n| n.table.is_some() && dag.has_in(&n.id) && !dag.has_out(&n.id)).collect();
    let sink = match sinks.as_slice() {
        [one] => *one,
        [] => return Err(Error::config("the flow has no target: add .write_to(\"Connection.table\")")),
        _ => return Err(Error::unsupported("the embedded engine runs flows with one target")),
    };
    let sink_table = sink.table.clone().unwrap_or_default();
    let mut sources = Vec::new();
    for n in dag.sources() {
        let mut chain = Vec::new();
        let mut cur = n.id.as_str();
        let mut steps = 0;
        loop {
            let next = dag.next(cur);
            let [next] = next.as_slice() else {
                return Err(Error::config(format!(
                    "node {:?} should lead to exactly one next node, it leads to {}",
                    n.name,
                    next.len()
                )));
            };
            if *next == sink.id || Some(*next) == merge_id.as_deref() {
                break;
            }
            let node = dag.node(next).ok_or_else(|| Error::config(format!("edge to unknown node {next}")))?;
            if let Some(p) = processors::build(&node.doc)? {
                chain.push(p);
            }
            cur = next;
            steps += 1;
            if steps > dag.nodes.len() {
                return Err(Error::config("the flow's DAG has a cycle"));
            }
        }
        let t = n.table.clone().unwrap_or_default();
        sources.push(SourceNode { node_id: n.id.clone(), connection_id: t.connection_id, table: t.table_name, chain });
    }
    if sources.is_empty() {
        return Err(Error::config("the flow has no source: add .read_from(\"Connection.table\")"));
    }
    // Writing into a table the flow reads would feed its own changes back to it forever.
    if let Some(s) =
        sources.iter().find(|s| s.connection_id == sink_table.connection_id && s.table == sink_table.table_name)
    {
        return Err(Error::config(format!(
            "the flow writes into {}, which it also reads: its own writes would come back as changes forever; write_to another table",
            s.table
        )));
    }
    let sync = crate::api::dag::task_type(task);
    Ok(Plan {
        name: task.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
        sources,
        sink: SinkNode {
            name: sink.name.clone(),
            connection_id: sink_table.connection_id,
            table: sink_table.table_name,
            key: sink_table.update_condition_fields,
            existing: ExistingData::from_tapdata(sink_table.exist_data_process_mode.as_deref()),
        },
        snapshot: sync.contains("initial_sync"),
        cdc: sync.contains("cdc"),
        merge: match merge_id {
            Some(id) => {
                let mut post = Vec::new();
                let mut cur = id.clone();
                while cur != sink.id {
                    let next = dag
                        .next(&cur)
                        .first()
                        .map(|t| t.to_string())
                        .ok_or_else(|| Error::config("the lookup (merge) node does not lead to the target"))?;
                    if next != sink.id
                        && let Some(node) = dag.node(&next)
                        && let Some(p) = processors::build(&node.doc)?
                    {
                        post.push(p);
                    }
                    cur = next;
                    if post.len() > dag.nodes.len() {
                        return Err(Error::config("the flow's DAG has a cycle"));
                    }
                }
                let node = dag.node(&id).map(|n| n.doc.clone()).unwrap_or(Value::Null);
                Some((node, post))
            }
            None => None,
        },
    })
}

fn open_connection(store: &Store, id: &str) -> Result<Box<dyn Connector>> {
    let doc = store
        .get(CONNECTIONS, id)?
        .ok_or_else(|| Error::not_found(format!("the flow uses connection {id}, which no longer exists")))?;
    let ty = doc.get("database_type").and_then(Value::as_str).unwrap_or("");
    let name = doc.get("name").and_then(Value::as_str).unwrap_or(id);
    connectors::open(ty, doc.get("config").unwrap_or(&Value::Null)).map_err(|e| e.context(format!("connection {name}")))
}

/// The sink side: prepares the target lazily, from the first records it sees.
struct Sink {
    /// The flow's and the target node's names, for errors.
    flow: String,
    node: String,
    conn: Box<dyn Connector>,
    store: Arc<Store>,
    connection_id: String,
    table: String,
    key: Vec<String>,
    existing: ExistingData,
    ready: bool,
    schema: Schema,
}

impl Sink {
    /// Whether the target table exists now.
    fn table_present(&mut self) -> Result<bool> {
        Ok(self.conn.tables()?.contains(&self.table))
    }

    /// Resuming in CDC: a target table that existed when the snapshot ended must exist still
    /// (while the flow runs, writing into a dropped table fails, or — MongoDB — is refused by
    /// the connector).
    fn check_resumed(&mut self, checkpoint: &Value) -> Result<()> {
        if checkpoint["phase"] == "cdc" && checkpoint["targetTable"] == true && !self.table_present()? {
            return Err(Error::not_found(format!(
                "flow {}: the target table {} (node {:?}) is gone although the flow copied into it; going \
                 on would leave it holding only the changes from now on, so the flow stops: reset it to copy again",
                self.flow, self.table, self.node
            )));
        }
        Ok(())
    }

    fn ensure_ready(&mut self, first: Option<&Change>) -> Result<()> {
        if self.ready {
            return Ok(());
        }
        let mut schema = self.schema.clone();
        if let Some(c) = first {
            // The first output record decides the columns; the source schema decides their types.
            let rec = c.key_image();
            let mut fields = Vec::with_capacity(rec.len());
            for (name, v) in rec {
                fields.push(schema.field(name).cloned().unwrap_or(crate::model::Field {
                    name: name.clone(),
                    ty: crate::model::FieldType::of_value(v),
                    data_type: String::new(),
                    primary_key: false,
                    nullable: true,
                }));
            }
            schema.fields = fields;
        }
        for f in &mut schema.fields {
            f.primary_key = self.key.contains(&f.name);
        }
        self.conn.prepare_target(&self.table, &schema, &self.key, self.existing)?;
        self.ready = true;
        // Make the new table visible to `show tables`, `peek` and `count` right away.
        if let Ok(Some(doc)) = self.store.get(CONNECTIONS, &self.connection_id) {
            let name = doc.get("name").and_then(Value::as_str).unwrap_or("");
            let ty = doc.get("database_type").and_then(Value::as_str).unwrap_or("");
            let created = self.conn.schema(&self.table)?;
            self.store.put(METADATA, &super::server::metadata_doc(&self.connection_id, name, ty, &created))?;
        }
        Ok(())
    }

    fn write(&mut self, events: Vec<Event>, metrics: &Mutex<Metrics>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let changes: Vec<Change> = events.into_iter().map(|e| e.change).collect();
        self.ensure_ready(changes.first())?;
        // Every record must carry its whole key: a null or missing key would write a row no
        // later change can find (and duplicate on replay), so the flow stops instead.
        for c in &changes {
            let image = c.key_image();
            if let Some(bad) = self.key.iter().find(|k| image.get(k.as_str()).is_none_or(Value::is_null)) {
                let what = if image.contains_key(bad.as_str()) { "null" } else { "missing" };
                let mut shown = Value::Object(image.clone()).to_string();
                if shown.len() > 300 {
                    let cut = (0..=300).rev().find(|&i| shown.is_char_boundary(i)).unwrap_or(0);
                    shown.truncate(cut);
                    shown.push('…');
                }
                return Err(Error::data(format!(
                    "flow {}: a record reaching target node {:?} ({}) has its key field {bad:?} {what}; \
                     records must keep their key through the processors (fields: {}) — record: {shown}",
                    self.flow,
                    self.node,
                    self.table,
                    image.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        self.conn.write(&self.table, &self.key, &changes)?;
        super::failpoint::hit("after_batch");
        if let Ok(mut m) = metrics.lock() {
            for c in &changes {
                m.output[op_index(c)] += 1;
            }
            m.tick();
        }
        Ok(())
    }
}

fn run(ctx: &FlowCtx, task: &Value) -> Result<Outcome> {
    let mut plan = plan(task)?;
    // User functions watch the flow's stop flag, so `stop` interrupts a batch in them.
    for p in plan.sources.iter_mut().flat_map(|s| s.chain.iter_mut()) {
        p.watch(ctx.stop.clone());
    }
    if let Some((_, post)) = plan.merge.as_mut() {
        post.iter_mut().for_each(|p| p.watch(ctx.stop.clone()));
    }
    if plan.merge.is_some() {
        return run_lookup(ctx, plan);
    }
    let mut sources = open_sources(&ctx.store, &plan)?;
    // The sink key: the node's updateConditionFields, else the first source's primary key.
    let (first_conn, first_table) = (plan.sources[0].connection_id.clone(), plan.sources[0].table.clone());
    let mut schema = {
        let (_, conn, _) =
            sources.iter_mut().find(|(id, _, _)| *id == first_conn).ok_or_else(|| Error::internal("source"))?;
        conn.schema(&first_table)?
    };
    for p in &plan.sources[0].chain {
        let fields: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
        p.check(&fields)?;
        schema = p.schema(schema);
    }
    // Which fields the chain really outputs (user functions may drop or add some): run it once
    // over a record of nulls; if a function cannot take nulls, keep the derived schema.
    let source_fields: Vec<String> = {
        let (_, conn, _) =
            sources.iter_mut().find(|(id, _, _)| *id == first_conn).ok_or_else(|| Error::internal("source"))?;
        conn.schema(&first_table)?.fields.into_iter().map(|f| f.name).collect()
    };
    if let Some(out) = probe(&mut plan.sources[0].chain, &first_table, &source_fields) {
        schema.fields = out
            .keys()
            .map(|name| {
                schema.field(name).cloned().unwrap_or(crate::model::Field {
                    name: name.clone(),
                    ty: crate::model::FieldType::Text,
                    data_type: String::new(),
                    primary_key: false,
                    nullable: true,
                })
            })
            .collect();
    }
    let key = {
        let (_, conn, _) =
            sources.iter_mut().find(|(id, _, _)| *id == first_conn).ok_or_else(|| Error::internal("source"))?;
        plain_key(&plan, conn.as_mut(), &schema)?
    };
    let mut sink = Sink {
        flow: plan.name.clone(),
        node: plan.sink.name.clone(),
        conn: open_connection(&ctx.store, &plan.sink.connection_id)?,
        store: ctx.store.clone(),
        connection_id: plan.sink.connection_id.clone(),
        table: plan.sink.table.clone(),
        key,
        existing: plan.sink.existing,
        ready: false,
        schema,
    };
    if let Ok(mut m) = ctx.metrics.lock() {
        m.tables = plan.sources.len() as u64;
    }

    let mut checkpoint = start_checkpoint(ctx, &plan, &mut sources, &mut sink)?;
    sink.check_resumed(&checkpoint)?;

    if checkpoint["phase"] == "snapshot" {
        ctx.set_status("running", json!({"syncStatus": "SNAPSHOT"}));
        let started = now_ms();
        if let Ok(mut m) = ctx.metrics.lock() {
            m.snapshot_start_at.get_or_insert(started);
        }
        ctx.log("INFO", "Initial sync started");
        for s in &mut plan.sources {
            let done = checkpoint["snapshotDone"].as_array().is_some_and(|d| d.iter().any(|x| x == s.node_id.as_str()));
            if done {
                continue;
            }
            let (_, conn, _) = sources
                .iter_mut()
                .find(|(id, _, _)| *id == s.connection_id)
                .ok_or_else(|| Error::internal("source"))?;
            let table: Arc<str> = Arc::from(s.table.as_str());
            let chain = &mut s.chain;
            let sink = &mut sink;
            conn.snapshot(&s.table, SNAPSHOT_BATCH, &mut |rows| {
                if ctx.stopped() {
                    return Err(Error::internal("flow stopped"));
                }
                let n = rows.len() as u64;
                let mut events: Vec<Event> = rows
                    .into_iter()
                    .map(|after| Event { table: table.clone(), change: Change::Insert { after }, ts_ms: 0 })
                    .collect();
                for p in chain.iter_mut() {
                    events = p.process(events)?;
                }
                if let Ok(mut m) = ctx.metrics.lock() {
                    m.input[0] += n;
                    m.snapshot_rows += n;
                    m.replicate_lag = now_ms() - started;
                }
                sink.write(events, &ctx.metrics)
            })?;
            ctx.notices(conn.as_mut());
            sink.ensure_ready(None)?;
            if let Some(done) = checkpoint["snapshotDone"].as_array_mut() {
                done.push(json!(s.node_id));
            }
            ctx.store.save_checkpoint(&ctx.task_id, &checkpoint)?;
            if let Ok(mut m) = ctx.metrics.lock() {
                m.snapshot_tables += 1;
            }
            ctx.log("INFO", &format!("Initial sync of table {} done", s.table));
        }
        checkpoint["targetTable"] = json!(sink.table_present()?);
        ctx.snapshot_done(&mut checkpoint, "Initial sync completed")?;
    }
    if let Some(outcome) = ctx.complete_or_cdc(plan.cdc)? {
        return Ok(outcome);
    }
    cdc_loop(ctx, &mut sources, &mut checkpoint, |conn_id, events| {
        // Route each event to the chain of the source node reading its table.
        let mut out = Vec::with_capacity(events.len());
        let mut by_table: Vec<(String, Vec<Event>)> = Vec::new();
        for e in events {
            match by_table.last_mut() {
                Some((t, v)) if **t == *e.table => v.push(e),
                _ => by_table.push((e.table.to_string(), vec![e])),
            }
        }
        for (table, mut batch) in by_table {
            if let Some(node) = plan.sources.iter_mut().find(|s| s.connection_id == *conn_id && s.table == table) {
                for p in node.chain.iter_mut() {
                    batch = p.process(batch)?;
                }
                out.extend(batch);
            }
        }
        sink.write(out, &ctx.metrics)?;
        Ok(())
    })
}

/// Run a chain over one record of nulls with the source's fields; the output record, if any.
fn probe(chain: &mut [Box<dyn Processor>], table: &str, fields: &[String]) -> Option<crate::model::Record> {
    let after: crate::model::Record = fields.iter().map(|f| (f.clone(), Value::Null)).collect();
    let mut events = vec![Event { table: Arc::from(table), change: Change::Insert { after }, ts_ms: 0 }];
    for p in chain.iter_mut() {
        events = p.process(events).ok()?;
    }
    events.into_iter().next().map(|e| match e.change {
        Change::Insert { after } | Change::Update { after, .. } => after,
        Change::Delete { before } => before,
    })
}

/// Check a flow as it is saved: everything the plan can tell without connecting (node types,
/// processors and their settings, the DAG's shape, a target that is one of its sources).
/// A key for a source table without a primary key: its first unique index (by name) whose
/// columns are all NOT NULL and all survive the processors `chain` (renamed as they rename).
fn source_key(conn: &mut dyn Connector, table: &str, chain: &[Box<dyn Processor>]) -> Result<Option<Vec<String>>> {
    for u in conn.unique_keys(table)?.into_iter().filter(|u| u.not_null) {
        let renamed: Option<Vec<String>> =
            u.columns.iter().map(|c| chain.iter().try_fold(c.clone(), |f, p| p.rename(&f))).collect();
        if let Some(key) = renamed {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

/// The refusal of a flow whose main table has no key: what it has, and what to do.
fn no_key(target: &str, table: &str, conn: &mut dyn Connector) -> Error {
    let nullable: Vec<String> = conn
        .unique_keys(table)
        .unwrap_or_default()
        .into_iter()
        .filter(|u| !u.not_null)
        .map(|u| format!("{} ({})", u.name, u.columns.join(", ")))
        .collect();
    let has = if nullable.is_empty() {
        String::new()
    } else {
        format!(" (its unique indexes {} allow NULLs, which cannot key a row)", nullable.join(", "))
    };
    Error::schema(format!(
        "table {table} has no primary key and no unique index on NOT NULL columns{has}, so a replay would \
         duplicate its rows: name the key fields as write_to's second argument \
         (write_to(\"Connection.{target}\", [\"field\"])), or add a primary key to {table}"
    ))
}

pub fn validate(task: &Value) -> Result<()> {
    plan(task).map(|_| ())
}

/// What the sources' schemas decide before anything moves: the main table has a key, renames
/// do not land on kept fields, lookup relations name fields the tables have. Checked at save
/// when every source table can be read; otherwise (a server down, a table not created yet)
/// the same checks run at start.
pub fn check_sources(store: &Store, task: &Value) -> Result<()> {
    let mut plan = plan(task)?;
    let Ok(mut sources) = open_sources(store, &plan) else { return Ok(()) };
    for s in &plan.sources {
        if source_mut(&mut sources, &s.connection_id)?.schema(&s.table).is_err() {
            return Ok(());
        }
    }
    if let Some((merge, _)) = plan.merge.take() {
        let (mut tree, node_source) = lookup_tree(&plan, &merge)?;
        lookup_keys(&plan, &mut sources, &mut tree, &node_source)?;
        return check_relations(&plan, &mut sources, &tree, &node_source);
    }
    let s = &plan.sources[0];
    let conn = source_mut(&mut sources, &s.connection_id)?;
    let mut schema = conn.schema(&s.table)?;
    for p in &s.chain {
        let fields: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
        p.check(&fields)?;
        schema = p.schema(schema);
    }
    plain_key(&plan, conn.as_mut(), &schema).map(|_| ())
}

/// The key a plain flow writes by: the target's, else the first source's primary key (`schema`,
/// after its processors), else its unique index's; none is the refusal that says what to do.
fn plain_key(plan: &Plan, conn: &mut dyn Connector, schema: &Schema) -> Result<Vec<String>> {
    if !plan.sink.key.is_empty() {
        return Ok(plan.sink.key.clone());
    }
    let pk = schema.primary_key();
    if !pk.is_empty() {
        return Ok(pk);
    }
    let s = &plan.sources[0];
    source_key(conn, &s.table, &s.chain)?.ok_or_else(|| no_key(&plan.sink.table, &s.table, conn))
}

/// The lookup tree of a plan's merge node, and for each tree node the index of the plan's
/// source reading its table.
fn lookup_tree(plan: &Plan, merge: &Value) -> Result<(super::lookup::Tree, Vec<usize>)> {
    let child_ids: Vec<String> = {
        fn ids(v: &Value, out: &mut Vec<String>) {
            for c in v.get("children").and_then(Value::as_array).into_iter().flatten() {
                out.push(node_str(c, "id").to_string());
                ids(c, out);
            }
        }
        let mut out = Vec::new();
        ids(merge.pointer("/mergeProperties/0").unwrap_or(&Value::Null), &mut out);
        out
    };
    let main_idx = plan
        .sources
        .iter()
        .position(|s| !child_ids.contains(&s.node_id))
        .ok_or_else(|| Error::config("the lookup has no main table"))?;
    let (main_source, main_table) = (plan.sources[main_idx].node_id.clone(), plan.sources[main_idx].table.clone());
    let tree = super::lookup::Tree::from_merge_node(merge, &main_source, &main_table)?;
    let mut node_source: Vec<usize> = Vec::new();
    for n in &tree.nodes {
        let idx = plan.sources.iter().position(|s| s.node_id == n.source_id).ok_or_else(|| {
            Error::config(format!(
                "the lookup names node {} ({}), which is not a source of the flow",
                n.source_id, n.table
            ))
        })?;
        node_source.push(idx);
    }
    Ok((tree, node_source))
}

/// Keys of the lookup's tables: the main table's after the main chain (renames), or its
/// unique index's, or the sink's if it sets one; a child's primary key, else its join fields.
fn lookup_keys(
    plan: &Plan,
    sources: &mut Sources,
    tree: &mut super::lookup::Tree,
    node_source: &[usize],
) -> Result<()> {
    for (i, n) in tree.nodes.iter_mut().enumerate() {
        let s = &plan.sources[node_source[i]];
        let pk = source_mut(sources, &s.connection_id)?.schema(&s.table)?.primary_key();
        n.key = if i == 0 {
            let renamed: Vec<String> =
                pk.iter().filter_map(|k| s.chain.iter().try_fold(k.clone(), |f, p| p.rename(&f))).collect();
            if plan.sink.key.is_empty() { renamed } else { plan.sink.key.clone() }
        } else if pk.is_empty() {
            n.join.iter().map(|(own, _)| own.clone()).chain(n.array_keys.iter().cloned()).collect()
        } else {
            pk
        };
    }
    if tree.nodes[0].key.is_empty() {
        let s = &plan.sources[node_source[0]];
        let conn = source_mut(sources, &s.connection_id)?;
        tree.nodes[0].key = match source_key(conn.as_mut(), &s.table, &s.chain)? {
            Some(key) => key,
            None => return Err(no_key(&plan.sink.table, &s.table, conn.as_mut())),
        };
    }
    Ok(())
}

/// A lookup's relations must name fields its tables have (after their processors), or every
/// document would embed nulls. Tables behind a user function are not checked: its output is
/// known only when it runs.
fn check_relations(
    plan: &Plan,
    sources: &mut Sources,
    tree: &super::lookup::Tree,
    node_source: &[usize],
) -> Result<()> {
    let mut fields: Vec<Option<Vec<String>>> = Vec::new();
    for &i in node_source {
        let s = &plan.sources[i];
        if s.chain.iter().any(|p| !p.known_output()) {
            fields.push(None);
            continue;
        }
        let mut schema = source_mut(sources, &s.connection_id)?.schema(&s.table)?;
        for p in &s.chain {
            schema = p.schema(schema);
        }
        fields.push(Some(schema.fields.into_iter().map(|f| f.name).collect()));
    }
    tree.check_fields(&fields)
}

/// Remove the CDC resources a flow holds in its sources (reset, delete), and its lookup copies.
pub fn release_sources(store: &Store, task: &Value) -> Result<()> {
    let task_id = task.get("id").and_then(Value::as_str).unwrap_or_default();
    super::lookup::Lookup::remove_files(&store.dir().join("lookup"), task_id);
    let nodes = task.pointer("/dag/nodes").and_then(Value::as_array).cloned().unwrap_or_default();
    let targets: Vec<String> = task
        .pointer("/dag/edges")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|e| node_str(e, "target").to_string()).collect())
        .unwrap_or_default();
    let mut done: Vec<String> = Vec::new();
    // Only source nodes (no incoming edge) hold CDC resources.
    for n in nodes.iter().filter(|n| node_str(n, "type") == "table" && !targets.iter().any(|t| t == node_str(n, "id")))
    {
        let id = node_str(n, "connectionId").to_string();
        if done.contains(&id) {
            continue;
        }
        done.push(id.clone());
        if let Ok(mut conn) = open_connection(store, &id) {
            conn.cdc_release(task_id)?;
        }
    }
    Ok(())
}

/// Open one connector per distinct source connection, with the tables read from each.
type Sources = Vec<(String, Box<dyn Connector>, Vec<String>)>;

fn open_sources(store: &Store, plan: &Plan) -> Result<Sources> {
    let mut sources: Sources = Vec::new();
    for s in &plan.sources {
        if !sources.iter().any(|(id, _, _)| *id == s.connection_id) {
            sources.push((s.connection_id.clone(), open_connection(store, &s.connection_id)?, Vec::new()));
        }
        if let Some(entry) = sources.iter_mut().find(|(id, _, _)| *id == s.connection_id)
            && !entry.2.contains(&s.table)
        {
            entry.2.push(s.table.clone());
        }
    }
    Ok(sources)
}

/// The CDC loop shared by every flow: poll each source connection after its saved position,
/// hand the events to `apply` (which writes them), then save the position and acknowledge it
/// to the source — in that order, so a position is saved only after its events are written.
fn cdc_loop(
    ctx: &FlowCtx,
    sources: &mut Sources,
    checkpoint: &mut Value,
    mut apply: impl FnMut(&str, Vec<Event>) -> Result<()>,
) -> Result<Outcome> {
    ctx.log("INFO", "Incremental sync (CDC) started");
    let flow_id = &ctx.task_id;
    let wait = Duration::from_millis((200 / sources.len().max(1)) as u64);
    let mut last_save = Instant::now();
    while !ctx.stopped() {
        for (conn_id, conn, tables) in sources.iter_mut() {
            let from: Position = checkpoint["positions"].get(conn_id.as_str()).cloned().unwrap_or(Value::Null);
            let (events, next) = conn.changes(flow_id, tables, &from, CDC_BATCH, wait)?;
            ctx.notices(conn.as_mut());
            if events.is_empty() {
                if let Ok(mut m) = ctx.metrics.lock() {
                    m.replicate_lag = 0;
                    m.tick();
                }
            } else {
                let newest = events.iter().map(|e| e.ts_ms).max().unwrap_or(0);
                if let Ok(mut m) = ctx.metrics.lock() {
                    for e in &events {
                        m.input[op_index(&e.change)] += 1;
                    }
                }
                apply(conn_id, events)?;
                if let Ok(mut m) = ctx.metrics.lock() {
                    m.current_event_ts = Some(newest);
                    m.replicate_lag = (now_ms() - newest).max(0);
                }
            }
            if from != next {
                checkpoint["positions"][conn_id.as_str()] = next.clone();
                ctx.store.save_checkpoint(flow_id, checkpoint)?;
                super::failpoint::hit("after_checkpoint");
                conn.cdc_ack(flow_id, &next)?;
            }
        }
        if last_save.elapsed() > Duration::from_secs(2) {
            ctx.save_metrics();
            last_save = Instant::now();
        }
    }
    Ok(Outcome::Stopped)
}

/// The flow's checkpoint, or — on a fresh run — a new one holding each source's CDC position,
/// taken before anything is read. CDC is prepared either way; existing target data is handled
/// (kept, removed or dropped) on a fresh run only.
fn start_checkpoint(ctx: &FlowCtx, plan: &Plan, sources: &mut Sources, sink: &mut Sink) -> Result<Value> {
    let flow_id = &ctx.task_id;
    if let Some(checkpoint) = ctx.store.checkpoint(flow_id)? {
        sink.existing = ExistingData::Keep;
        if plan.cdc {
            for (_, conn, tables) in sources.iter_mut() {
                conn.cdc_prepare(flow_id, tables, true)?;
                ctx.notices(conn.as_mut());
            }
        }
        return Ok(checkpoint);
    }
    let mut positions = serde_json::Map::new();
    if plan.cdc {
        for (id, conn, tables) in sources.iter_mut() {
            conn.cdc_prepare(flow_id, tables, false)?;
            ctx.notices(conn.as_mut());
            positions.insert(id.clone(), conn.cdc_position(flow_id)?);
        }
    }
    let checkpoint =
        json!({"phase": if plan.snapshot { "snapshot" } else { "cdc" }, "positions": positions, "snapshotDone": []});
    ctx.store.save_checkpoint(flow_id, &checkpoint)?;
    Ok(checkpoint)
}

fn source_mut<'a>(sources: &'a mut Sources, conn: &str) -> Result<&'a mut Box<dyn Connector>> {
    sources.iter_mut().find(|(id, _, _)| id == conn).map(|(_, c, _)| c).ok_or_else(|| Error::internal("source"))
}

/// A lookup flow: keep copies of every table, and (re)build the documents changes touch.
/// See [`super::lookup`] for the model.
fn run_lookup(ctx: &FlowCtx, mut plan: Plan) -> Result<Outcome> {
    use super::lookup::Lookup;
    let flow_id = ctx.task_id.clone();
    let (merge, mut post) = plan.merge.take().ok_or_else(|| Error::internal("lookup plan"))?;
    let (mut tree, node_source) = lookup_tree(&plan, &merge)?;
    let main_table = tree.nodes[0].table.clone();
    let mut sources = open_sources(&ctx.store, &plan)?;
    lookup_keys(&plan, &mut sources, &mut tree, &node_source)?;
    check_relations(&plan, &mut sources, &tree, &node_source)?;
    // The main table's schema (after its processors) types the document's top-level columns.
    let main_schema = {
        let s = &plan.sources[node_source[0]];
        let mut schema = source_mut(&mut sources, &s.connection_id)?.schema(&s.table)?;
        for p in &s.chain {
            schema = p.schema(schema);
        }
        // Embedded objects and arrays are JSON columns, whatever the first document holds.
        for &c in &tree.nodes[0].children {
            let top = tree.nodes[c].path.split('.').next().unwrap_or("").to_string();
            if !top.is_empty() && schema.field(&top).is_none() {
                schema.fields.push(crate::model::Field {
                    name: top,
                    ty: crate::model::FieldType::Json,
                    data_type: String::new(),
                    primary_key: false,
                    nullable: true,
                });
            }
        }
        schema
    };
    let dir = ctx.store.dir().join("lookup");
    let key = tree.nodes[0].key.clone();
    let lookup = Lookup::open(&dir, &flow_id, tree)?;
    let mut sink = Sink {
        flow: plan.name.clone(),
        node: plan.sink.name.clone(),
        conn: open_connection(&ctx.store, &plan.sink.connection_id)?,
        store: ctx.store.clone(),
        connection_id: plan.sink.connection_id.clone(),
        table: plan.sink.table.clone(),
        key,
        existing: plan.sink.existing,
        ready: false,
        schema: main_schema,
    };
    if let Ok(mut m) = ctx.metrics.lock() {
        m.tables = plan.sources.len() as u64;
    }
    let mut checkpoint = start_checkpoint(ctx, &plan, &mut sources, &mut sink)?;
    sink.check_resumed(&checkpoint)?;

    // Rebuild the documents of main rows (key text, and the row when the caller has it already)
    // and write them.
    let write_roots =
        |roots: Vec<(String, Option<Record>)>, sink: &mut Sink, post: &mut Vec<Box<dyn Processor>>| -> Result<()> {
            let mut events = Vec::with_capacity(roots.len());
            let table: Arc<str> = Arc::from(main_table.as_str());
            for (k, row) in roots {
                let row = match row {
                    Some(r) => Some(r),
                    None => lookup.main_row(&k)?,
                };
                let change = match row {
                    Some(row) => Change::Insert { after: lookup.build(0, &row)? },
                    None => Change::Delete { before: lookup.key_record(&k) },
                };
                events.push(Event { table: table.clone(), change, ts_ms: 0 });
            }
            for p in post.iter_mut() {
                events = p.process(events)?;
            }
            sink.write(events, &ctx.metrics)
        };

    if checkpoint["phase"] == "snapshot" {
        ctx.set_status("running", json!({"syncStatus": "SNAPSHOT"}));
        let started = now_ms();
        if let Ok(mut m) = ctx.metrics.lock() {
            m.snapshot_start_at.get_or_insert(started);
        }
        ctx.log("INFO", "Initial sync started: copying the main and lookup tables");
        for (i, &si) in node_source.iter().enumerate() {
            let node_id = plan.sources[si].node_id.clone();
            if checkpoint["snapshotDone"].as_array().is_some_and(|d| d.iter().any(|x| x == node_id.as_str())) {
                continue;
            }
            let (conn_id, table) = (plan.sources[si].connection_id.clone(), plan.sources[si].table.clone());
            let conn = source_mut(&mut sources, &conn_id)?;
            let t: Arc<str> = Arc::from(table.as_str());
            let chain = &mut plan.sources[si].chain;
            conn.snapshot(&table, SNAPSHOT_BATCH, &mut |rows| {
                if ctx.stopped() {
                    return Err(Error::internal("flow stopped"));
                }
                let n = rows.len() as u64;
                let mut events: Vec<Event> = rows
                    .into_iter()
                    .map(|after| Event { table: t.clone(), change: Change::Insert { after }, ts_ms: 0 })
                    .collect();
                for p in chain.iter_mut() {
                    events = p.process(events)?;
                }
                lookup.begin()?;
                for e in &events {
                    lookup.put(i, e.change.key_image())?;
                }
                lookup.commit()?;
                super::failpoint::hit("after_lookup_copy");
                if let Ok(mut m) = ctx.metrics.lock() {
                    m.input[0] += n;
                    m.snapshot_rows += n;
                    m.replicate_lag = now_ms() - started;
                }
                Ok(())
            })?;
            ctx.notices(conn.as_mut());
            if let Some(done) = checkpoint["snapshotDone"].as_array_mut() {
                done.push(json!(node_id));
            }
            ctx.store.save_checkpoint(&ctx.task_id, &checkpoint)?;
            ctx.log("INFO", &format!("Initial sync of table {table} done"));
        }
        // Build every document from the copies.
        let mut after: Option<String> = None;
        loop {
            if ctx.stopped() {
                return Ok(Outcome::Stopped);
            }
            let batch = lookup.main_rows(after.as_deref(), 1000)?;
            let Some((last, _)) = batch.last() else { break };
            after = Some(last.clone());
            write_roots(batch.into_iter().map(|(k, row)| (k, Some(row))).collect(), &mut sink, &mut post)?;
        }
        if let Ok(mut m) = ctx.metrics.lock() {
            m.snapshot_tables = plan.sources.len() as u64;
        }
        checkpoint["targetTable"] = json!(sink.table_present()?);
        ctx.snapshot_done(&mut checkpoint, "Initial sync completed: documents built")?;
    }
    if let Some(outcome) = ctx.complete_or_cdc(plan.cdc)? {
        return Ok(outcome);
    }
    cdc_loop(ctx, &mut sources, &mut checkpoint, |conn_id, events| {
        let mut roots = std::collections::BTreeSet::new();
        lookup.begin()?;
        for e in events {
            for (i, &si) in node_source.iter().enumerate() {
                let s = &mut plan.sources[si];
                if s.connection_id != *conn_id || *s.table != *e.table {
                    continue;
                }
                let mut batch = vec![e.clone()];
                for p in s.chain.iter_mut() {
                    batch = p.process(batch)?;
                }
                for ev in batch {
                    // The documents the row leaves: walked up from its old image.
                    if let Change::Update { before: Some(b), .. } | Change::Delete { before: b } = &ev.change {
                        lookup.roots(i, &*lookup.old_row(i, b)?, &mut roots)?;
                    }
                    match &ev.change {
                        Change::Insert { after } | Change::Update { after, .. } => {
                            if let Change::Update { before: Some(b), .. } = &ev.change {
                                lookup.remove(i, b)?;
                            }
                            lookup.put(i, after)?;
                            lookup.roots(i, after, &mut roots)?;
                        }
                        Change::Delete { before } => lookup.remove(i, before)?,
                    }
                }
            }
        }
        write_roots(roots.into_iter().map(|k| (k, None)).collect(), &mut sink, &mut post)?;
        // The copies move on only once the documents are written: a crash in between rolls
        // them back, and the replay finds the same old rows (and old parents) again.
        lookup.commit()?;
        Ok(())
    })
}
