//! Processors: the DAG's processor nodes, each turning a batch of events into a batch of events.
//!
//! | node type                  | what it does                                                     |
//! |----------------------------|------------------------------------------------------------------|
//! | `field_rename_processor`   | renames fields (`operations[].op == "RENAME"`)                    |
//! | `field_add_del_processor`  | removes (`REMOVE`) or adds (`CREATE`) fields                      |
//! | `row_filter_processor`     | keeps or drops rows by a JavaScript boolean `expression`          |
//! | `js_processor`             | TapData's `function process(record)` in QuickJS, a batch per call |
//! | `rhai_processor`           | ours: `fn <entry>(record)` in a sandboxed Rhai engine, a time limit per batch |
//! | `python_processor`         | TapData's `def process(record, context)` in a CPython worker process, a batch per call |
//! | `union_processor`          | passes events through (several sources feed one stream)          |
//! | `table_rename_processor`   | renames the tables events belong to (prefix, suffix, a mapping)   |
//! | `add_date_field_processor` | adds a field holding the time the record went through (UTC)       |
//! | `date_processor`           | moves date and time fields of the named types by hours            |
//! | `field_mod_type_filter_processor` | removes the fields of the named types                      |
//! | `field_mod_type_processor` | converts fields to another type (`CONVERT`)                       |
//! | `unwind_processor`         | one row per element of an array field, keyed by its index         |
//!
//! Node types the engine does not run are refused by the DAG's
//! rules (`api::dag`) before any processor is built.
//!
//! Every processor sees both images of an update, so a renamed or filtered key stays consistent
//! between the row written and the row deleted. Rules for a function `f` (JS, Rhai, filter):
//! insert → `f(after)`, dropped when it returns null; update → `f(after)` and `f(before)`: after
//! dropped but before kept becomes a delete (the row left the filter), before dropped becomes an
//! upsert of after; delete → `f(before)`, dropped when null.

use crate::api::steps::Step;
use crate::error::{Error, Result};
use crate::model::{Change, Event, Field, Plain, Record, Schema, Value};
use serde_json::Value as Json;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

pub trait Processor {
    /// The output schema for an input schema (fields renamed, added, removed). Called with the
    /// source's schema when a flow starts, so processors that act on fields by their type
    /// learn which fields have it.
    fn schema(&mut self, schema: Schema) -> Schema {
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
    /// The engine's store and the flow, for a processor that keeps state with the checkpoint.
    fn attach(&mut self, _store: &Arc<crate::engine::store::Store>, _task_id: &str) {}
}

/// The processor of a DAG node (its step, read when the DAG was parsed); `None` for nodes that
/// are not processors.
pub fn of_node(node: &crate::api::dag::Node) -> Result<Option<Box<dyn Processor>>> {
    match node.step() {
        Some(step) => build(step.clone(), if node.name.is_empty() { &node.ty } else { &node.name }).map(Some),
        None => Ok(None),
    }
}

/// The processor that runs a step; `name` names the node in its errors.
pub fn build(step: Step, name: &str) -> Result<Box<dyn Processor>> {
    Ok(match step {
        Step::Rename { pairs, transform } => Box::new(Rename { name: name.to_string(), pairs, transform }),
        Step::AddDel { remove, create, keep_only } => Box::new(AddDel { remove, create, keep_only }),
        Step::RowFilter { expression, discard } => {
            let script = if discard {
                format!("function process(record) {{ return ({expression}) ? null : record; }}")
            } else {
                format!("function process(record) {{ return ({expression}) ? record : null; }}")
            };
            Box::new(Js::new(&script, name)?)
        }
        Step::Js { script, .. } => Box::new(Js::new(&script, name)?),
        Step::Rhai { script, entry } => Box::new(RhaiFn::with_limit(&script, name, &entry, udf_batch_limit())?),
        Step::Python { script } => Box::new(python::Python::new(&script, name)?),
        Step::Union => Box::new(PassThrough),
        Step::TableRename { map, prefix, suffix } => Box::new(TableRename { map, prefix, suffix }),
        Step::AddDate { field } => Box::new(fields::AddDate { field }),
        Step::TimeAdjust { hours, types } => Box::new(fields::TimeAdjust { hours, types, bound: None }),
        Step::TypeFilter { types } => Box::new(fields::TypeFilter { types, bound: None }),
        Step::TypeAdjust { converts } => Box::new(fields::TypeAdjust::new(name, converts)?),
        Step::Unwind { node_id, path, embedded, model, index, joiner, keep_null } => Box::new(unwind::Unwind {
            name: name.to_string(),
            node_id,
            path,
            embedded,
            model: match model.as_str() {
                "OBJECT" => unwind::ArrayModel::Object,
                "MIX" => unwind::ArrayModel::Mix,
                _ => unwind::ArrayModel::Basic,
            },
            index,
            joiner,
            keep_null,
            key: Vec::new(),
            state: None,
        }),
    })
}

/// Renames event tables: `tableNames[].currentTableName` when given, else prefix + name + suffix.
/// (In a table-level flow the target table is fixed, so this only changes what events report.)
struct TableRename {
    map: Vec<(String, String)>,
    prefix: String,
    suffix: String,
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
    fn schema(&mut self, mut schema: Schema) -> Schema {
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
    fn schema(&mut self, mut schema: Schema) -> Schema {
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

mod fields;
mod python;
pub mod source_filter;
mod udf;
pub use python::set_policy;
mod unwind;

use udf::udf_batch_limit;
pub use udf::{Js, RhaiFn, UDF_BATCH_LIMIT, sandboxed_rhai};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The processor of a node document, as a parsed DAG node gives it.
    fn build(node: &Json) -> Result<Option<Box<dyn Processor>>> {
        let name = node.get("name").or_else(|| node.get("type")).and_then(Json::as_str).unwrap_or_default();
        Step::parse(node)?.map(|step| super::build(step, name)).transpose()
    }

    fn ev(change: Change) -> Event {
        Event { table: Arc::from("t"), change, ts_ms: 0 }
    }
    fn rec(v: Json) -> Record {
        Record::from_json_value(v).unwrap_or_default()
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
    fn a_python_function_runs_in_a_worker_with_typed_values_and_its_exception_is_the_error() {
        let script = "from decimal import Decimal\ndef process(record, context):\n    if record['id'] == 3:\n        return None\n    record['op'] = context['op']\n    record['d'] = record['d'] * 2\n    return record\n";
        let mut p = build(&json!({"type": "python_processor", "name": "Py", "script": script}))
            .expect("build")
            .expect("processor");
        let mut a = rec(json!({"id": 1}));
        a.insert("d".into(), Value::Decimal("2.25".into()));
        let mut b = rec(json!({"id": 3}));
        b.insert("d".into(), Value::Decimal("1".into()));
        let out = p.process(vec![ev(Change::Insert { after: a }), ev(Change::Insert { after: b })]).expect("run");
        assert_eq!(out.len(), 1, "None drops the record");
        let got = out[0].change.key_image();
        assert_eq!(
            (got.get("d"), got.get("op")),
            (Some(&Value::Decimal("4.50".into())), Some(&Value::Text("i".into())))
        );
        let mut bad = build(&json!({"type": "python_processor", "name": "Bad",
            "script": "def process(record, context):\n    return record['n'] / 0\n"}))
        .expect("build")
        .expect("processor");
        let err = bad.process(vec![ev(Change::Insert { after: rec(json!({"n": 1})) })]).expect_err("raises");
        assert!(err.message.contains("ZeroDivisionError") && err.message.contains("line 2"), "{}", err.message);
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
