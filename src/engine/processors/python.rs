//! Python user functions (`.py(…)`, TapData's `python_processor`), run out of process: one
//! CPython worker per node (`TAP_PYTHON`, else `python3` on the PATH), fed a batch at a time as
//! JSON lines over pipes (the protocol: `python_worker.py`). Typed values travel tagged and
//! arrive as `Decimal`, `bytes`, `date` and `datetime`. A batch has the time limit of every user
//! function; an exception ends the flow with its traceback; a worker that hangs is killed, one
//! that dies is reported with what it wrote to stderr, and the next start spawns a new one;
//! dropping the processor (the flow ends) kills its worker.
//!
//! Python functions run with the engine's rights — the interpreter reads and writes what the
//! engine may — so an engine that listens beyond loopback refuses them unless it was started
//! with `--allow-python` ([`set_policy`]).

use super::udf::{Budget, apply_batch, udf_batch_limit};
use super::*;
use base64::Engine as _;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const WORKER: &str = include_str!("python_worker.py");

/// Whether this engine runs Python functions, and why not.
static POLICY: OnceLock<Result<(), String>> = OnceLock::new();

/// Set once when the engine starts listening: Python functions are allowed on a loopback
/// address, or anywhere with `--allow-python`.
pub fn set_policy(loopback: bool, allow_python: bool, address: &str) {
    let policy = if loopback || allow_python {
        Ok(())
    } else {
        Err(format!(
            "this engine listens on {address}, beyond this machine, and Python functions run with the engine's \
             rights (files, network, processes): they are refused unless the engine is started with \
             --allow-python (or listens on 127.0.0.1)"
        ))
    };
    let _ = POLICY.set(policy);
}

fn allowed() -> Result<()> {
    match POLICY.get() {
        Some(Ok(())) => Ok(()),
        Some(Err(why)) => Err(Error::unsupported(why.clone())),
        // Not an engine (a unit test, a tool): nothing listens, nothing to guard.
        None => Ok(()),
    }
}

/// The interpreter: `TAP_PYTHON`, else `python3`.
fn interpreter() -> String {
    std::env::var("TAP_PYTHON").ok().filter(|p| !p.trim().is_empty()).unwrap_or_else(|| "python3".into())
}

pub struct Python {
    name: String,
    script: String,
    budget: Budget,
    worker: Option<Worker>,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// The last lines the worker wrote to stderr (the function's prints, a crash's words).
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    fn stderr_tail(&self) -> String {
        let lines = self.stderr.lock().map(|l| l.iter().cloned().collect::<Vec<_>>()).unwrap_or_default();
        if lines.is_empty() { String::new() } else { format!("; it wrote to stderr:\n{}", lines.join("\n")) }
    }
}

enum Reply {
    Line(Json),
    /// The worker's output ended: it exited.
    Gone,
    TimedOut,
    Stopping,
}

impl Python {
    pub fn new(script: &str, name: &str) -> Result<Self> {
        allowed()?;
        Ok(Python {
            name: name.to_string(),
            script: script.to_string(),
            budget: Budget::new(udf_batch_limit()),
            worker: None,
        })
    }

    fn what(&self) -> String {
        format!("the Python function of node {:?}", self.name)
    }

    fn spawn(&self) -> Result<Worker> {
        let python = interpreter();
        let mut child = Command::new(&python)
            .args(["-u", "-c", WORKER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::config(format!(
                        "{} needs a Python 3 interpreter, and there is none: {python:?} is not on the engine's PATH; \
                         install python3, or start the engine with TAP_PYTHON naming one (a venv's bin/python \
                         brings its packages)",
                        self.what()
                    ))
                } else {
                    Error::internal(format!("{}: cannot start {python:?}: {e}", self.what()))
                }
            })?;
        let (stdin, stdout, stderr) = match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(i), Some(o), Some(e)) => (i, o, e),
            _ => return Err(Error::internal("python worker pipes")),
        };
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let kept = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut t) = kept.lock() {
                    if t.len() == 40 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        });
        let mut worker = Worker { child, stdin, lines, stderr: tail };
        let hello = serde_json::json!({"script": self.script, "name": self.name});
        let reply = self.exchange(&mut worker, &hello, Instant::now() + Duration::from_secs(30))?;
        match reply.get("ready") {
            Some(Json::Bool(true)) => Ok(worker),
            _ => Err(Error::config(format!(
                "{} does not load:\n{}",
                self.what(),
                reply.get("error").and_then(Json::as_str).unwrap_or("(no reason given)")
            ))),
        }
    }

    /// Send one message and wait for its reply until `deadline` (or the flow's stop).
    fn exchange(&self, worker: &mut Worker, msg: &Json, deadline: Instant) -> Result<Json> {
        let mut line = msg.to_string();
        line.push('\n');
        let sent = worker.stdin.write_all(line.as_bytes()).and_then(|_| worker.stdin.flush());
        let reply = if sent.is_err() { Reply::Gone } else { self.wait(worker, deadline) };
        match reply {
            Reply::Line(j) => Ok(j),
            Reply::Gone => {
                // Give the reader a moment to collect the last words.
                std::thread::sleep(Duration::from_millis(100));
                let status = worker.child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                Err(Error::data(format!(
                    "{}: its Python worker exited ({status}){}",
                    self.what(),
                    worker.stderr_tail()
                )))
            }
            Reply::TimedOut => Err(self.budget.interrupted(&self.what())),
            Reply::Stopping => Err(self.budget.interrupted(&self.what())),
        }
    }

    fn wait(&self, worker: &Worker, deadline: Instant) -> Reply {
        loop {
            if self.budget.stopping() {
                return Reply::Stopping;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Reply::TimedOut;
            }
            match worker.lines.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    return match serde_json::from_str(&line) {
                        Ok(j) => Reply::Line(j),
                        Err(_) => Reply::Line(
                            serde_json::json!({"error": format!("tap worker: a reply that is not JSON: {line}")}),
                        ),
                    };
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Reply::Gone,
            }
        }
    }

    fn call(&mut self, items: &[(&'static str, &str, &Record)]) -> Result<Vec<Option<Record>>> {
        if self.worker.is_none() {
            self.worker = Some(self.spawn()?);
        }
        let batch: Vec<Json> =
            items.iter().map(|(op, table, r)| serde_json::json!([op, table, to_wire_record(r)])).collect();
        let msg = serde_json::json!({ "batch": batch });
        self.budget.start_batch();
        let deadline = Instant::now() + self.budget.limit;
        let mut worker = self.worker.take().ok_or_else(|| Error::internal("python worker"))?;
        let reply = self.exchange(&mut worker, &msg, deadline);
        self.budget.end_batch();
        // A worker that failed to answer is dropped (killed); one that answered is kept.
        let reply = reply?;
        self.worker = Some(worker);
        if let Some(tb) = reply.get("error") {
            return Err(Error::data(format!("{} failed:\n{}", self.what(), tb.as_str().unwrap_or_default())));
        }
        let out = reply.get("ok").and_then(Json::as_array).cloned().unwrap_or_default();
        if out.len() != items.len() {
            return Err(Error::internal(format!("{}: {} results for {} records", self.what(), out.len(), items.len())));
        }
        out.into_iter()
            .map(|j| match j {
                Json::Null => Ok(None),
                Json::Object(o) => {
                    from_wire_record(o).map(Some).map_err(|e| Error::data(format!("{}: {e}", self.what())))
                }
                other => Err(Error::data(format!("{} returned {other}: return the record or None", self.what()))),
            })
            .collect()
    }
}

impl Processor for Python {
    fn watch(&mut self, stop: Arc<std::sync::atomic::AtomicBool>) {
        self.budget.watch(stop);
    }

    fn known_output(&self) -> bool {
        false
    }

    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>> {
        apply_batch(events, |items| self.call(items))
    }
}

const TS: &str = "%Y-%m-%dT%H:%M:%S%.6f";

fn to_wire_record(r: &Record) -> Json {
    Json::Object(r.iter().map(|(k, v)| (k.clone(), to_wire(v))).collect())
}

/// A value as the worker reads it: JSON, with the types JSON lacks tagged.
fn to_wire(v: &Value) -> Json {
    use serde_json::json;
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Decimal(d) => json!({"$decimal": d}),
        Value::Text(s) => json!(s),
        Value::Bytes(b) => json!({"$bytes": base64::engine::general_purpose::STANDARD.encode(b)}),
        Value::Date(d) => json!({"$date": d.format("%Y-%m-%d").to_string()}),
        Value::Timestamp(t) => json!({"$ts": t.format(TS).to_string()}),
        Value::TimestampTz(t) => json!({"$tstz": format!("{}+00:00", t.naive_utc().format(TS))}),
        Value::Object(r) => {
            let inner = to_wire_record(r);
            match &inner {
                Json::Object(o) if o.len() == 1 && o.keys().all(|k| k.starts_with('$')) => json!({"$obj": inner}),
                _ => inner,
            }
        }
        Value::Array(a) => Json::Array(a.iter().map(to_wire).collect()),
    }
}

fn from_wire_record(o: serde_json::Map<String, Json>) -> std::result::Result<Record, String> {
    let mut r = Record::with_capacity(o.len());
    for (k, v) in o {
        let v = from_wire(v).map_err(|e| format!("field {k}: {e}"))?;
        r.insert(k, v);
    }
    Ok(r)
}

fn from_wire(j: Json) -> std::result::Result<Value, String> {
    Ok(match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().ok_or_else(|| format!("{n} is out of range"))?),
        },
        Json::String(s) => Value::Text(s),
        Json::Array(a) => Value::Array(a.into_iter().map(from_wire).collect::<std::result::Result<_, _>>()?),
        Json::Object(mut o) => {
            if o.len() == 1
                && let Some((tag, inner)) = o.iter().next().map(|(k, v)| (k.clone(), v.clone()))
                && tag.starts_with('$')
            {
                let text = || inner.as_str().map(str::to_string).ok_or_else(|| format!("{tag} holds {inner}"));
                return Ok(match tag.as_str() {
                    "$decimal" => Value::Decimal(text()?),
                    "$bytes" => Value::Bytes(
                        base64::engine::general_purpose::STANDARD.decode(text()?).map_err(|e| e.to_string())?,
                    ),
                    "$date" => {
                        Value::Date(chrono::NaiveDate::parse_from_str(&text()?, "%Y-%m-%d").map_err(|e| e.to_string())?)
                    }
                    "$ts" => Value::Timestamp(
                        chrono::NaiveDateTime::parse_from_str(&text()?, "%Y-%m-%dT%H:%M:%S%.f")
                            .map_err(|e| e.to_string())?,
                    ),
                    "$tstz" => Value::TimestampTz(
                        chrono::DateTime::parse_from_rfc3339(&text()?).map_err(|e| e.to_string())?.to_utc(),
                    ),
                    "$obj" => match o.remove("$obj") {
                        Some(Json::Object(inner)) => Value::Object(from_wire_record(inner)?),
                        _ => return Err("$obj holds no object".into()),
                    },
                    _ => Value::Object(from_wire_record(o)?),
                });
            }
            Value::Object(from_wire_record(o)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_survive_the_wire() {
        let mut r = Record::new();
        r.insert("d".into(), Value::Decimal("-12.50".into()));
        r.insert("b".into(), Value::Bytes(vec![0, 255, 7]));
        r.insert("day".into(), Value::Date(chrono::NaiveDate::from_ymd_opt(2024, 2, 29).expect("date")));
        let ts = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).and_then(|d| d.and_hms_micro_opt(10, 0, 0, 123_456));
        r.insert("ts".into(), Value::Timestamp(ts.expect("ts")));
        r.insert("tz".into(), Value::TimestampTz(ts.expect("ts").and_utc()));
        let mut odd = Record::new();
        odd.insert("$decimal".into(), Value::Text("not a tag".into()));
        r.insert("odd".into(), Value::Object(odd));
        r.insert("list".into(), Value::Array(vec![Value::Int(1), Value::Float(1.5), Value::Null]));
        let Json::Object(o) = to_wire_record(&r) else { panic!("an object") };
        assert_eq!(from_wire_record(o).expect("decoded"), r);
    }
}
