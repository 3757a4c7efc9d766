//! Processors: the DAG's processor nodes, each turning a batch of events into a batch of events.
//!
//! | node type                  | what it does                                                     |
//! |----------------------------|------------------------------------------------------------------|
//! | `field_rename_processor`   | renames fields (`operations[].op == "RENAME"`)                    |
//! | `field_add_del_processor`  | removes (`REMOVE`) or adds (`CREATE`) fields                      |
//! | `row_filter_processor`     | keeps or drops rows by a JavaScript boolean `expression`          |
//! | `js_processor`             | TapData's `function process(record)` in QuickJS, a batch per call |
//! | `rhai_processor`           | ours: `fn <entry>(record)` in a sandboxed Rhai engine, a time limit per batch |
//! | `union_processor`          | passes events through (several sources feed one stream)          |
//! | `table_rename_processor`   | renames the tables events belong to (prefix, suffix, a mapping)   |
//! | `python_processor`         | refused at start: the embedded engine cannot run Python           |
//!
//! Every processor sees both images of an update, so a renamed or filtered key stays consistent
//! between the row written and the row deleted. Rules for a function `f` (JS, Rhai, filter):
//! insert → `f(after)`, dropped when it returns null; update → `f(after)` and `f(before)`: after
//! dropped but before kept becomes a delete (the row left the filter), before dropped becomes an
//! upsert of after; delete → `f(before)`, dropped when null.

use crate::error::{Error, Result};
use crate::model::{Change, Event, Field, Record, Schema};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

pub trait Processor {
    /// The output schema for an input schema (fields renamed, added, removed).
    fn schema(&self, schema: Schema) -> Schema {
        schema
    }
    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>>;
    /// Map a field name of the input to its name in the output (for keys).
    /// Refuse what would lose data on input records with these fields (a rename onto a field
    /// the records already have and keep).
    fn check(&self, _fields: &[String]) -> Result<()> {
        Ok(())
    }
    fn rename(&self, field: &str) -> Option<String> {
        Some(field.to_string())
    }
    /// Whether [`Processor::schema`] is exactly the fields of the records it outputs (false
    /// for user functions, which may add or drop any field).
    fn known_output(&self) -> bool {
        true
    }
    /// The flow's stop flag: a processor running user code interrupts it when the flag is set.
    fn watch(&mut self, _stop: Arc<std::sync::atomic::AtomicBool>) {}
}

/// Build the processor for a DAG node; `None` for nodes that are not processors.
pub fn build(node: &Value) -> Result<Option<Box<dyn Processor>>> {
    let ty = node.get("type").and_then(Value::as_str).unwrap_or("");
    let name = node.get("name").and_then(Value::as_str).unwrap_or(ty);
    Ok(Some(match ty {
        "field_rename_processor" => Box::new(Rename::from_node(node, name)?),
        "field_add_del_processor" => Box::new(AddDel::from_node(node, name)?),
        "row_filter_processor" => {
            let expression = node.get("expression").and_then(Value::as_str).unwrap_or("true");
            let discard = node.get("action").and_then(Value::as_str) == Some("discard");
            let script = if discard {
                format!("function process(record) {{ return ({expression}) ? null : record; }}")
            } else {
                format!("function process(record) {{ return ({expression}) ? record : null; }}")
            };
            Box::new(Js::new(&script, name)?)
        }
        "js_processor" | "standard_js_processor" => {
            let script = node.get("script").and_then(Value::as_str).unwrap_or("");
            let declare = node.get("declareScript").and_then(Value::as_str).unwrap_or("");
            let _ = declare; // model declarations only matter to TapData's schema deduction
            Box::new(Js::new(script, name)?)
        }
        "rhai_processor" => {
            let script = node.get("script").and_then(Value::as_str).unwrap_or("");
            // `entry` (ours since functions may call each other); `process` in older nodes.
            let entry = node.get("entry").and_then(Value::as_str).unwrap_or("process");
            Box::new(RhaiFn::with_limit(script, name, entry, udf_batch_limit())?)
        }
        "union_processor" => Box::new(PassThrough),
        "table_rename_processor" => Box::new(TableRename::from_node(node)),
        "python_processor" => {
            return Err(Error::unsupported(format!(
                "node {name:?} is a Python function (python_processor), which the embedded engine does not support: \
                 use .js(...) or .rhai(...) instead, or run the flow on a TapData cluster"
            )));
        }
        "table" | "database" | "merge_table_processor" => return Ok(None),
        other => {
            return Err(Error::unsupported(format!(
                "node {name:?} has type {other}, which the embedded engine does not run"
            )));
        }
    }))
}

/// Renames event tables: `tableNames[].currentTableName` when given, else prefix + name + suffix.
/// (In a table-level flow the target table is fixed, so this only changes what events report.)
struct TableRename {
    map: Vec<(String, String)>,
    prefix: String,
    suffix: String,
}

impl TableRename {
    fn from_node(node: &Value) -> Self {
        let s = |k: &str| node.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let map = node
            .get("tableNames")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| {
                        Some((
                            t.get("originTableName")?.as_str()?.to_string(),
                            t.get("currentTableName")?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { map, prefix: s("prefix"), suffix: s("suffix") }
    }
}

impl Processor for TableRename {
    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>> {
        Ok(events
            .into_iter()
            .map(|mut e| {
                let name = match self.map.iter().find(|(from, _)| **from == *e.table) {
                    Some((_, to)) => to.clone(),
                    None => format!("{}{}{}", self.prefix, e.table, self.suffix),
                };
                e.table = Arc::from(name.as_str());
                e
            })
            .collect())
    }
}

struct PassThrough;
impl Processor for PassThrough {
    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>> {
        Ok(events)
    }
}

/// Apply a per-record function to a batch with the update rules of the module docs.
fn map_events(events: Vec<Event>, mut f: impl FnMut(Record) -> Record) -> Vec<Event> {
    events
        .into_iter()
        .map(|mut e| {
            e.change = match e.change {
                Change::Insert { after } => Change::Insert { after: f(after) },
                Change::Update { before, after } => Change::Update { before: before.map(&mut f), after: f(after) },
                Change::Delete { before } => Change::Delete { before: f(before) },
            };
            e
        })
        .collect()
}

pub struct Rename {
    name: String,
    pairs: Vec<(String, String)>,
    transform: Option<String>,
}

impl Rename {
    /// Every rename must name a field and give a new name that is a non-empty string, and no
    /// two fields may be renamed to the same name; anything else is refused, naming the node.
    fn from_node(node: &Value, name: &str) -> Result<Self> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let ops = node.get("operations").and_then(Value::as_array).cloned().unwrap_or_default();
        for o in &ops {
            if let Some(op) = o.get("op").filter(|op| op.as_str() != Some("RENAME")) {
                return Err(Error::unsupported(format!(
                    "node {name:?}: operation {op} is not a rename (RENAME), which is all a field_rename_processor does here"
                )));
            }
            let field = o.get("field").and_then(Value::as_str).unwrap_or_default();
            let to = o.get("operand").cloned().unwrap_or(Value::Null);
            let Some(to) = to.as_str().filter(|t| !t.is_empty() && !field.is_empty()) else {
                return Err(Error::config(format!(
                    "node {name:?} renames {field:?} to {to}, which is not a field name: give the new name as a non-empty string"
                )));
            };
            if let Some((other, _)) = pairs.iter().find(|(_, t)| t == to) {
                return Err(Error::config(format!(
                    "node {name:?} renames both {other:?} and {field:?} to {to:?}: one field would overwrite the other"
                )));
            }
            pairs.push((field.to_string(), to.to_string()));
        }
        let transform =
            node.get("fieldsNameTransform").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        Ok(Self { name: name.to_string(), pairs, transform })
    }

    fn new_name(&self, field: &str) -> String {
        if let Some((_, to)) = self.pairs.iter().find(|(from, _)| from == field) {
            return to.clone();
        }
        match self.transform.as_deref() {
            Some("toUpperCase") => field.to_uppercase(),
            Some("toLowerCase") => field.to_lowercase(),
            _ => field.to_string(),
        }
    }

    fn apply(&self, rec: Record) -> Record {
        rec.into_iter().map(|(k, v)| (self.new_name(&k), v)).collect()
    }
}

impl Processor for Rename {
    fn check(&self, fields: &[String]) -> Result<()> {
        for (from, to) in &self.pairs {
            if fields.contains(from) && fields.contains(to) && !self.pairs.iter().any(|(f, _)| f == to) {
                return Err(Error::schema(format!(
                    "node {:?} renames {from:?} to {to:?}, a field the records already have: the two would be merged into one; rename {to:?} too, or exclude it first",
                    self.name
                )));
            }
        }
        Ok(())
    }
    fn schema(&self, mut schema: Schema) -> Schema {
        for f in &mut schema.fields {
            f.name = self.new_name(&f.name);
        }
        schema
    }
    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>> {
        Ok(map_events(events, |r| self.apply(r)))
    }
    fn rename(&self, field: &str) -> Option<String> {
        Some(self.new_name(field))
    }
}

pub struct AddDel {
    remove: Vec<String>,
    create: Vec<String>,
    keep_only: Option<Vec<String>>,
}

impl AddDel {
    fn from_node(node: &Value, name: &str) -> Result<Self> {
        let ops = node.get("operations").and_then(Value::as_array).cloned().unwrap_or_default();
        if let Some(op) =
            ops.iter().filter_map(|o| o.get("op")).find(|op| !matches!(op.as_str(), Some("REMOVE" | "CREATE")))
        {
            return Err(Error::unsupported(format!(
                "node {name:?}: operation {op} is neither REMOVE nor CREATE, the two a field_add_del_processor does here"
            )));
        }
        let field = |o: &Value| o.get("field").and_then(Value::as_str).map(str::to_string);
        let op = |o: &Value| o.get("op").and_then(Value::as_str).unwrap_or("").to_string();
        let operand_true = |o: &Value| o.get("operand").is_none_or(|v| v == &Value::Bool(true) || v == "true");
        let remove = ops.iter().filter(|o| op(o) == "REMOVE" && operand_true(o)).filter_map(field).collect();
        let create = ops.iter().filter(|o| op(o) == "CREATE").filter_map(field).collect();
        let keep_only = (node.get("deleteAllFields") == Some(&Value::Bool(true)))
            .then(|| ops.iter().filter(|o| !(op(o) == "REMOVE" && operand_true(o))).filter_map(field).collect());
        Ok(Self { remove, create, keep_only })
    }

    fn apply(&self, mut rec: Record) -> Record {
        if let Some(keep) = &self.keep_only {
            rec.retain(|k, _| keep.contains(k));
        }
        for r in &self.remove {
            rec.shift_remove(r);
        }
        for c in &self.create {
            rec.entry(c.clone()).or_insert(Value::Null);
        }
        rec
    }
}

impl Processor for AddDel {
    fn schema(&self, mut schema: Schema) -> Schema {
        if let Some(keep) = &self.keep_only {
            schema.fields.retain(|f| keep.contains(&f.name));
        }
        schema.fields.retain(|f| !self.remove.contains(&f.name));
        for c in &self.create {
            if schema.field(c).is_none() {
                schema.fields.push(Field {
                    name: c.clone(),
                    ty: crate::model::FieldType::Text,
                    data_type: "TEXT".into(),
                    primary_key: false,
                    nullable: true,
                });
            }
        }
        schema
    }
    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>> {
        Ok(map_events(events, |r| self.apply(r)))
    }
    fn rename(&self, field: &str) -> Option<String> {
        (!self.remove.contains(&field.to_string())).then(|| field.to_string())
    }
}

/// Rebuild events from the outputs of a record function: `outputs[i]` answers `inputs[i]`;
/// `None` means dropped. `slots` says which inputs belong to which event.
fn rebuild(events: Vec<Event>, outputs: &mut impl Iterator<Item = Option<Record>>) -> Result<Vec<Event>> {
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
fn inputs(events: &[Event]) -> Vec<(&'static str, &str, &Record)> {
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

const JS_PRELUDE: &str = r#"
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
    name: String,
    _runtime: rquickjs::Runtime,
    context: rquickjs::Context,
    budget: Budget,
}

/// What a user function may spend on one batch, and the flow's stop flag, shared with the
/// interpreter's interrupt hook. Both interpreters (JavaScript, Rhai) run under one.
#[derive(Clone)]
struct Budget {
    /// When the batch being processed must end (ms since the epoch; `i64::MAX` between batches).
    deadline: Arc<AtomicI64>,
    /// The flow's stop flag, once the runner gives it ([`Processor::watch`]).
    stop: Arc<std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>>>,
    limit: std::time::Duration,
}

impl Budget {
    fn new(limit: std::time::Duration) -> Self {
        Budget { deadline: Arc::new(AtomicI64::new(i64::MAX)), stop: Arc::default(), limit }
    }
    fn start_batch(&self) {
        let limit_ms = i64::try_from(self.limit.as_millis()).unwrap_or(i64::MAX);
        self.deadline.store(crate::model::now_ms().saturating_add(limit_ms), Ordering::Relaxed);
    }
    fn end_batch(&self) {
        self.deadline.store(i64::MAX, Ordering::Relaxed);
    }
    fn watch(&self, stop: Arc<std::sync::atomic::AtomicBool>) {
        // Set once per run; a second call (none today) keeps the first flag.
        let _ = self.stop.set(stop);
    }
    fn stopping(&self) -> bool {
        self.stop.get().is_some_and(|f| f.load(Ordering::Relaxed))
    }
    fn past_deadline(&self) -> bool {
        crate::model::now_ms() > self.deadline.load(Ordering::Relaxed)
    }
    /// The error for a function the hook interrupted (`what` names it): the stop, or the limit
    /// and its value — never a bare "interrupted".
    fn interrupted(&self, what: &str) -> Error {
        if self.stopping() {
            Error::internal(format!("{what} interrupted: the flow is stopping"))
        } else {
            Error::data(format!("{what} ran past its time limit of {:.1} s for one batch", self.limit.as_secs_f64()))
        }
    }
}

fn js_error(ctx: &rquickjs::Ctx<'_>, e: rquickjs::Error) -> String {
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
        let input = serde_json::to_string(items)?;
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
        let values: Vec<Value> = serde_json::from_str(&output)?;
        values
            .into_iter()
            .map(|v| match v {
                Value::Null => Ok(None),
                Value::Object(m) => Ok(Some(m)),
                Value::Array(mut a) if !a.is_empty() => match a.swap_remove(0) {
                    Value::Object(m) => Ok(Some(m)),
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
        if events.is_empty() {
            return Ok(events);
        }
        let outputs = {
            let items = inputs(&events);
            self.call(&items)?
        };
        rebuild(events, &mut outputs.into_iter())
    }
}

/// A Rhai user function, sandboxed: bounded operations, sizes and call depth; no `eval`; Rhai
/// itself has no file or network access.
pub struct RhaiFn {
    name: String,
    /// The function that takes the record.
    entry: String,
    engine: rhai::Engine,
    ast: rhai::AST,
    budget: Budget,
}

/// The longest one batch may spend in a user function (Rhai or JavaScript), unless the
/// engine's environment sets `TAP_UDF_BATCH_SECONDS` (1 to 86,400).
pub const UDF_BATCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

fn udf_batch_limit() -> std::time::Duration {
    std::env::var("TAP_UDF_BATCH_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| (1..=86_400).contains(s))
        .map(std::time::Duration::from_secs)
        .unwrap_or(UDF_BATCH_LIMIT)
}

/// `import` in a user function: refused, so a function reads no file of the host.
struct NoImports;

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

    fn call(&self, op: &str, table: &str, rec: &Record) -> Result<Option<Record>> {
        let input = rhai::serde::to_dynamic(rec).map_err(|e| Error::data(e.to_string()))?;
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
        let v: Value = rhai::serde::from_dynamic(&out).map_err(|e| Error::data(e.to_string()))?;
        match v {
            Value::Object(mut m) => {
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
            Value::Null => Ok(None),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(change: Change) -> Event {
        Event { table: Arc::from("t"), change, ts_ms: 0 }
    }
    fn rec(v: Value) -> Record {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn js_exclude_script_from_the_official_client_runs() {
        let script = "function process(record){\n\n\t// Enter you code at here\n\n    deleteFields = ['b'];\n    newRecord = record;\n    for (i in deleteFields) {\n        delete(newRecord[deleteFields[i]]);\n    }\n    return newRecord;\n    }";
        let mut js = Js::new(script, "Exclude").expect("compile");
        let out = js.process(vec![ev(Change::Insert { after: rec(json!({"a": 1, "b": 2})) })]).expect("run");
        assert_eq!(out[0].change, Change::Insert { after: rec(json!({"a": 1})) });
    }

    #[test]
    fn row_filter_turns_updates_that_leave_the_filter_into_deletes() {
        let node = json!({"type": "row_filter_processor", "expression": "record.n > 1", "action": "retain"});
        let mut p = build(&node).expect("build").expect("processor");
        let out = p
            .process(vec![
                ev(Change::Insert { after: rec(json!({"n": 1})) }),
                ev(Change::Update { before: Some(rec(json!({"n": 5}))), after: rec(json!({"n": 0})) }),
                ev(Change::Update { before: Some(rec(json!({"n": 0}))), after: rec(json!({"n": 3})) }),
            ])
            .expect("run");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].change, Change::Delete { before: rec(json!({"n": 5})) });
        assert_eq!(out[1].change, Change::Update { before: None, after: rec(json!({"n": 3})) });
    }

    #[test]
    fn rhai_function_is_sandboxed() {
        let mut f = RhaiFn::new("fn process(record) { record.x = record.a * 2; record }", "R").expect("compile");
        let out = f.process(vec![ev(Change::Insert { after: rec(json!({"a": 21})) })]).expect("run");
        assert_eq!(out[0].change.key_image()["x"], json!(42));
        let mut spin = RhaiFn::new("fn process(record) { loop {} }", "R").expect("compile");
        let err = spin.process(vec![ev(Change::Insert { after: rec(json!({})) })]).expect_err("limited");
        assert_eq!(err.kind, crate::error::ErrorKind::Data);
    }

    /// 200 records each costing about a million operations: a batch far longer than 100 ms.
    fn slow_batch() -> (RhaiFn, Vec<Event>) {
        let f = RhaiFn::with_limit(
            "fn slow(record) { let i = 0; while i < 300000 { i += 1; } record }",
            "R",
            "slow",
            std::time::Duration::from_millis(100),
        )
        .expect("compile");
        (f, (0..200).map(|i| ev(Change::Insert { after: rec(json!({"id": i})) })).collect())
    }

    #[test]
    fn a_rhai_batch_past_its_time_limit_says_which_limit_and_its_value() {
        let (mut f, batch) = slow_batch();
        let err = f.process(batch).expect_err("limited");
        assert!(err.message.contains("ran past its time limit of 0.1 s for one batch"), "{}", err.message);
    }

    #[test]
    fn stop_interrupts_a_batch_in_a_rhai_function() {
        let (mut f, batch) = slow_batch();
        f.budget.limit = std::time::Duration::from_secs(3600);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        f.watch(stop.clone());
        let flag = stop.clone();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            flag.store(true, Ordering::SeqCst);
        });
        let err = f.process(batch).expect_err("interrupted");
        setter.join().expect("setter");
        assert!(err.message.contains("interrupted: the flow is stopping"), "{}", err.message);
    }

    #[test]
    fn javascript_past_its_time_limit_or_stopped_says_which() {
        let mut js = Js::new("function process(record) { while (true) {} }", "J").expect("compile");
        js.budget.limit = std::time::Duration::from_millis(100);
        let err = js.process(vec![ev(Change::Insert { after: rec(json!({})) })]).expect_err("limited");
        assert!(err.message.contains("ran past its time limit of 0.1 s for one batch"), "{}", err.message);
        let mut js = Js::new("function process(record) { while (true) {} }", "J").expect("compile");
        js.budget.limit = std::time::Duration::from_secs(3600);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        js.watch(stop.clone());
        let setter = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            stop.store(true, Ordering::SeqCst);
        });
        let err = js.process(vec![ev(Change::Insert { after: rec(json!({})) })]).expect_err("interrupted");
        setter.join().expect("setter");
        assert!(err.message.contains("interrupted: the flow is stopping"), "{}", err.message);
    }

    #[test]
    fn a_rhai_function_calls_the_other_functions_of_its_script_and_itself() {
        let script = "fn fact(n) { if n <= 1 { 1 } else { n * fact(n - 1) } }
                      fn label(r) { `item-${r.id}` }
                      fn enrich(record) { record.f = fact(record.id); record.label = label(record); record }";
        let mut f = RhaiFn::with_limit(script, "R", "enrich", UDF_BATCH_LIMIT).expect("compile");
        let out = f.process(vec![ev(Change::Insert { after: rec(json!({"id": 5})) })]).expect("run");
        assert_eq!(out[0].change.key_image()["f"], json!(120));
        assert_eq!(out[0].change.key_image()["label"], json!("item-5"));
    }

    #[test]
    fn table_rename_maps_or_affixes_table_names() {
        let mut p = build(&json!({"type": "table_rename_processor", "prefix": "p_", "suffix": "_s",
            "tableNames": [{"originTableName": "a", "previousTableName": "a", "currentTableName": "alpha"}]}))
        .expect("build")
        .expect("processor");
        let mut b = ev(Change::Insert { after: rec(json!({})) });
        b.table = Arc::from("b");
        let out = p.process(vec![ev(Change::Insert { after: rec(json!({})) }), b]).expect("run");
        let mut a = ev(Change::Insert { after: rec(json!({})) });
        a.table = Arc::from("a");
        let out2 = p.process(vec![a]).expect("run");
        assert_eq!(&*out[0].table, "p_t_s");
        assert_eq!(&*out[1].table, "p_b_s");
        assert_eq!(&*out2[0].table, "alpha");
    }

    #[test]
    fn python_is_refused_with_a_clear_error() {
        let err = build(&json!({"type": "python_processor", "name": "Python"})).err().expect("refused");
        assert_eq!(err.kind, crate::error::ErrorKind::Unsupported);
        assert!(err.message.contains("not support"));
    }

    #[test]
    fn rename_and_remove_change_records_and_schema() {
        let mut r = build(&json!({"type": "field_rename_processor",
            "operations": [{"field": "a", "op": "RENAME", "operand": "b"}]}))
        .expect("build")
        .expect("p");
        let out = r.process(vec![ev(Change::Delete { before: rec(json!({"a": 1, "c": 2})) })]).expect("run");
        assert_eq!(out[0].change, Change::Delete { before: rec(json!({"b": 1, "c": 2})) });
        let mut d = build(&json!({"type": "field_add_del_processor",
            "operations": [{"field": "c", "op": "REMOVE", "operand": true}]}))
        .expect("build")
        .expect("p");
        let out = d.process(out).expect("run");
        assert_eq!(out[0].change, Change::Delete { before: rec(json!({"b": 1})) });
    }
}
