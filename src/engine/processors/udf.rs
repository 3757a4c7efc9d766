//! User functions: JavaScript (QuickJS) and sandboxed Rhai, run a batch at a time under one
//! [`Budget`] (a time limit per batch, the flow's stop flag), with their records rebuilt into events.

use super::*;

/// Rebuild events from the outputs of a record function: `outputs[i]` answers `inputs[i]`;
/// `None` means dropped. `slots` says which inputs belong to which event.
pub(super) fn rebuild(events: Vec<Event>, outputs: &mut impl Iterator<Item = Option<Record>>) -> Result<Vec<Event>> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let change = match e.change {
            Change::Insert { .. } => outputs.next().flatten().map(|after| Change::Insert { after }),
            Change::Update { before, .. } => {
                let after = outputs.next().flatten();
                let before = if before.is_some() { outputs.next().flatten() } else { None };
                match (before, after) {
                    (b, Some(after)) => Some(Change::Update { before: b, after }),
                    (Some(before), None) => Some(Change::Delete { before }),
                    (None, None) => None,
                }
            }
            Change::Delete { .. } => outputs.next().flatten().map(|before| Change::Delete { before }),
        };
        if let Some(change) = change {
            out.push(Event { table: e.table, change, ts_ms: e.ts_ms });
        }
    }
    Ok(out)
}

/// The inputs of a record function for a batch, in the order [`rebuild`] reads them:
/// (op, table, record).
pub(super) fn inputs(events: &[Event]) -> Vec<(&'static str, &str, &Record)> {
    let mut v = Vec::with_capacity(events.len());
    for e in events {
        match &e.change {
            Change::Insert { after } => v.push(("i", &*e.table, after)),
            Change::Update { before, after } => {
                v.push(("u", &*e.table, after));
                if let Some(b) = before {
                    v.push(("u", &*e.table, b));
                }
            }
            Change::Delete { before } => v.push(("d", &*e.table, before)),
        }
    }
    v
}

pub(super) const JS_PRELUDE: &str = r#"
var context = { global: {}, op: "i", tableName: "", type: "INITIAL_SYNC", event: {}, before: {}, info: {} };
var log = { info: function () {}, warn: function () {}, error: function () {}, debug: function () {} };
function __tap_batch(input) {
  var items = JSON.parse(input);
  var out = new Array(items.length);
  for (var i = 0; i < items.length; i++) {
    var it = items[i];
    context.op = it[0]; context.tableName = it[1];
    var r = process(it[2]);
    out[i] = (r === undefined) ? null : r;
  }
  return JSON.stringify(out);
}
"#;

pub struct Js {
    pub(super) name: String,
    pub(super) _runtime: rquickjs::Runtime,
    pub(super) context: rquickjs::Context,
    pub(super) budget: Budget,
}

/// What a user function may spend on one batch, and the flow's stop flag, shared with the
/// interpreter's interrupt hook. Both interpreters (JavaScript, Rhai) run under one.
#[derive(Clone)]
pub(super) struct Budget {
    /// When the batch being processed must end (ms since the epoch; `i64::MAX` between batches).
    pub(super) deadline: Arc<AtomicI64>,
    /// The flow's stop flag, once the runner gives it ([`Processor::watch`]).
    pub(super) stop: Arc<std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>>>,
    pub(super) limit: std::time::Duration,
}

impl Budget {
    pub(super) fn new(limit: std::time::Duration) -> Self {
        Budget { deadline: Arc::new(AtomicI64::new(i64::MAX)), stop: Arc::default(), limit }
    }
    pub(super) fn start_batch(&self) {
        let limit_ms = i64::try_from(self.limit.as_millis()).unwrap_or(i64::MAX);
        self.deadline.store(crate::model::now_ms().saturating_add(limit_ms), Ordering::Relaxed);
    }
    pub(super) fn end_batch(&self) {
        self.deadline.store(i64::MAX, Ordering::Relaxed);
    }
    pub(super) fn watch(&self, stop: Arc<std::sync::atomic::AtomicBool>) {
        // Set once per run; a second call (none today) keeps the first flag.
        // One flow, one stop flag: a second watch of the same budget keeps the first.
        let _ = self.stop.set(stop);
    }
    pub(super) fn stopping(&self) -> bool {
        self.stop.get().is_some_and(|f| f.load(Ordering::Relaxed))
    }
    pub(super) fn past_deadline(&self) -> bool {
        crate::model::now_ms() > self.deadline.load(Ordering::Relaxed)
    }
    /// The error for a function the hook interrupted (`what` names it): the stop, or the limit
    /// and its value — never a bare "interrupted".
    pub(super) fn interrupted(&self, what: &str) -> Error {
        if self.stopping() {
            Error::internal(format!("{what} interrupted: the flow is stopping"))
        } else {
            Error::data(format!("{what} ran past its time limit of {:.1} s for one batch", self.limit.as_secs_f64()))
        }
    }
}

pub(super) fn js_error(ctx: &rquickjs::Ctx<'_>, e: rquickjs::Error) -> String {
    if let rquickjs::Error::Exception = e {
        let ex = ctx.catch();
        if let Some(ex) = ex.as_exception() {
            let msg = ex.message().unwrap_or_default();
            let stack = ex.stack().unwrap_or_default();
            return format!("{msg} {stack}").trim().to_string();
        }
        return format!("{ex:?}");
    }
    e.to_string()
}

impl Js {
    pub fn new(script: &str, name: &str) -> Result<Self> {
        let runtime = rquickjs::Runtime::new().map_err(|e| Error::internal(format!("JavaScript runtime: {e}")))?;
        runtime.set_memory_limit(256 << 20);
        let budget = Budget::new(udf_batch_limit());
        let hook = budget.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || hook.stopping() || hook.past_deadline())));
        let context =
            rquickjs::Context::full(&runtime).map_err(|e| Error::internal(format!("JavaScript context: {e}")))?;
        let script = if script.contains("function process") {
            script.to_string()
        } else {
            format!("function process(record){{\n{script}\n}}")
        };
        context.with(|ctx| -> Result<()> {
            // Sloppy mode, as TapData's engine runs scripts: the official client's own
            // column-filter scripts assign undeclared variables.
            let opts = || {
                let mut o = rquickjs::context::EvalOptions::default();
                o.strict = false;
                o
            };
            ctx.eval_with_options::<(), _>(JS_PRELUDE, opts()).map_err(|e| Error::internal(js_error(&ctx, e)))?;
            ctx.eval_with_options::<(), _>(script.as_str(), opts()).map_err(|e| {
                Error::data(format!("JavaScript in node {name:?} does not compile: {}", js_error(&ctx, e)))
            })?;
            Ok(())
        })?;
        Ok(Self { name: name.to_string(), _runtime: runtime, context, budget })
    }

    /// Run `process` over records; `None` where it returned null.
    pub fn call(&mut self, items: &[(&str, &str, &Record)]) -> Result<Vec<Option<Record>>> {
        let plain: Vec<(&str, &str, Plain<'_, Record>)> = items.iter().map(|(o, t, r)| (*o, *t, Plain(*r))).collect();
        let input = serde_json::to_string(&plain)?;
        self.budget.start_batch();
        let (name, budget) = (&self.name, &self.budget);
        let output = self.context.with(|ctx| -> Result<String> {
            let f: rquickjs::Function = ctx.globals().get("__tap_batch").map_err(|e| Error::internal(e.to_string()))?;
            f.call((input,)).map_err(|e| {
                if budget.stopping() || budget.past_deadline() {
                    budget.interrupted(&format!("JavaScript in node {name:?}"))
                } else {
                    Error::data(format!("JavaScript in node {name:?} failed: {}", js_error(&ctx, e)))
                }
            })
        });
        self.budget.end_batch();
        let output = output?;
        let values: Vec<Json> = serde_json::from_str(&output)?;
        values
            .into_iter()
            .zip(items)
            .map(|(v, (_, _, input))| match v {
                Json::Null => Ok(None),
                Json::Object(m) => Ok(Some(Record::from_json_like(m, input))),
                Json::Array(mut a) if !a.is_empty() => match a.swap_remove(0) {
                    Json::Object(m) => Ok(Some(Record::from_json_like(m, input))),
                    _ => Err(Error::data(format!("JavaScript in node {name:?} returned an array of non-records"))),
                },
                other => Err(Error::data(format!(
                    "JavaScript in node {name:?} must return the record (or null to drop it), not {other}"
                ))),
            })
            .collect()
    }
}

impl Processor for Js {
    fn watch(&mut self, stop: Arc<std::sync::atomic::AtomicBool>) {
        self.budget.watch(stop);
    }

    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>> {
        apply_batch(events, |items| self.call(items))
    }
}

/// A batch function over a batch of events: called once with the batch's [`inputs`], the events
/// rebuilt from what it answers.
pub(super) fn apply_batch(
    events: Vec<Event>,
    call: impl FnOnce(&[(&'static str, &str, &Record)]) -> Result<Vec<Option<Record>>>,
) -> Result<Vec<Event>> {
    if events.is_empty() {
        return Ok(events);
    }
    let outputs = {
        let items = inputs(&events);
        call(&items)?
    };
    rebuild(events, &mut outputs.into_iter())
}

/// A Rhai user function, sandboxed: bounded operations, sizes and call depth; no `eval`; Rhai
/// itself has no file or network access.
pub struct RhaiFn {
    pub(super) name: String,
    /// The function that takes the record.
    pub(super) entry: String,
    pub(super) engine: rhai::Engine,
    pub(super) ast: rhai::AST,
    pub(super) budget: Budget,
}

/// The longest one batch may spend in a user function (Rhai or JavaScript), unless the
/// engine's environment sets `TAP_UDF_BATCH_SECONDS` (1 to 86,400).
pub const UDF_BATCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

pub(super) fn udf_batch_limit() -> std::time::Duration {
    std::env::var("TAP_UDF_BATCH_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| (1..=86_400).contains(s))
        .map(std::time::Duration::from_secs)
        .unwrap_or(UDF_BATCH_LIMIT)
}

/// `import` in a user function: refused, so a function reads no file of the host.
pub(super) struct NoImports;

impl rhai::ModuleResolver for NoImports {
    fn resolve(
        &self,
        _: &rhai::Engine,
        _: Option<&str>,
        path: &str,
        pos: rhai::Position,
    ) -> std::result::Result<rhai::Shared<rhai::Module>, Box<rhai::EvalAltResult>> {
        Err(Box::new(rhai::EvalAltResult::ErrorRuntime(
            format!("import {path:?} is refused: a user function runs sandboxed, with no access to files").into(),
            pos,
        )))
    }
}

pub fn sandboxed_rhai() -> rhai::Engine {
    let mut engine = rhai::Engine::new();
    engine.set_module_resolver(NoImports);
    engine.set_max_operations(5_000_000);
    engine.set_max_call_levels(64);
    engine.set_max_expr_depths(128, 64);
    engine.set_max_string_size(4 << 20);
    engine.set_max_array_size(1_000_000);
    engine.set_max_map_size(100_000);
    engine.disable_symbol("eval");
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    engine
}

impl RhaiFn {
    pub fn new(script: &str, name: &str) -> Result<Self> {
        Self::with_limit(script, name, "process", UDF_BATCH_LIMIT)
    }

    /// The function `entry(record)` of `script`, with a time limit per batch of `limit`.
    pub fn with_limit(script: &str, name: &str, entry: &str, limit: std::time::Duration) -> Result<Self> {
        let mut engine = sandboxed_rhai();
        let budget = Budget::new(limit);
        let hook = budget.clone();
        engine.on_progress(move |ops| {
            // The stop flag every operation (one load), the clock every 1,024.
            (hook.stopping() || (ops % 1024 == 0 && hook.past_deadline())).then(|| "interrupted".into())
        });
        let ast = engine
            .compile(script)
            .map_err(|e| Error::data(format!("Rhai function in node {name:?} does not compile: {e}")))?;
        if !ast.iter_functions().any(|f| f.name == entry && f.params.len() == 1) {
            return Err(Error::data(format!("Rhai node {name:?} must define fn {entry}(record)")));
        }
        Ok(Self { name: name.to_string(), entry: entry.to_string(), engine, ast, budget })
    }

    pub(super) fn call(&self, op: &str, table: &str, rec: &Record) -> Result<Option<Record>> {
        let input = rhai::serde::to_dynamic(Plain(rec)).map_err(|e| Error::data(e.to_string()))?;
        let mut scope = rhai::Scope::new();
        scope.push_constant("op", op.to_string());
        scope.push_constant("table", table.to_string());
        let out: rhai::Dynamic =
            self.engine.call_fn(&mut scope, &self.ast, &self.entry, (input,)).map_err(|e| match *e {
                rhai::EvalAltResult::ErrorTerminated(..) => {
                    self.budget.interrupted(&format!("Rhai function in node {:?}", self.name))
                }
                e => Error::data(format!("Rhai function in node {:?} failed: {e}", self.name)),
            })?;
        if out.is_unit() {
            return Ok(None);
        }
        let v: Json = rhai::serde::from_dynamic(&out).map_err(|e| Error::data(e.to_string()))?;
        match v {
            Json::Object(m) => {
                let mut m = Record::from_json_like(m, rec);
                // Rhai maps are sorted by key: put the fields back in the record's order.
                let mut ordered = Record::with_capacity(m.len());
                for k in rec.keys() {
                    if let Some(v) = m.remove(k) {
                        ordered.insert(k.clone(), v);
                    }
                }
                ordered.extend(m);
                Ok(Some(ordered))
            }
            Json::Null => Ok(None),
            other => Err(Error::data(format!(
                "Rhai function in node {:?} must return the record (or () to drop it), not {other}",
                self.name
            ))),
        }
    }
}

impl Processor for RhaiFn {
    fn watch(&mut self, stop: Arc<std::sync::atomic::AtomicBool>) {
        self.budget.watch(stop);
    }

    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>> {
        self.budget.start_batch();
        let outputs =
            inputs(&events).into_iter().map(|(op, table, rec)| self.call(op, table, rec)).collect::<Result<Vec<_>>>();
        self.budget.end_batch();
        rebuild(events, &mut outputs?.into_iter())
    }
    fn known_output(&self) -> bool {
        false
    }
}
