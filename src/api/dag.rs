//! A task's DAG, typed: its nodes and edges, and the rule for every field a node or the task
//! can carry (DESIGN decisions 11 and 12).
//!
//! Each node type has an explicit list of its fields, and each field one [`Rule`]: the engine
//! honours it, it is inert (layout, display, ids, thread and batch hints: nothing about which data
//! moves), or it changes what data moves and is accepted only at the values that say what the
//! engine does anyway. A field the list does not name is refused, and so is a node type the
//! engine does not run: a flow runs as written or not at all. [`Dag::parse`] applies the rules and
//! gives the typed nodes the planner reads; the document itself is kept whole in each node, so
//! what a client sent round-trips.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// What the engine does with one field.
#[derive(Clone, Copy)]
pub enum Rule {
    /// Read by the engine, which does what it says; the value must have this JSON type.
    Honoured(Ty),
    /// Changes nothing about the data that moves.
    Inert,
    /// Changes what data moves; accepted only where `accepts` holds (absent is always accepted),
    /// which is what the engine does anyway. `accepted` says which values those are, `instead`
    /// what to do.
    Only { accepts: fn(&Value) -> bool, accepted: &'static str, instead: &'static str },
    /// An object whose keys follow their own list.
    Nested(&'static [(&'static str, Rule)]),
}

/// The JSON type an honoured field must have.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ty {
    Str,
    Bool,
    Array,
    StrList,
    /// A whole number from 1 to 1,000,000 (a batch size).
    Count,
    /// A whole number from 0 to 1,000,000 (hours).
    Whole,
}

impl Ty {
    fn holds(self, v: &Value) -> bool {
        match self {
            Ty::Str => v.is_string(),
            Ty::Bool => v.is_boolean(),
            Ty::Array => v.is_array(),
            Ty::StrList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            Ty::Count => v.as_u64().is_some_and(|n| (1..=1_000_000).contains(&n)),
            Ty::Whole => v.as_u64().is_some_and(|n| n <= 1_000_000),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ty::Str => "a string",
            Ty::Bool => "true or false",
            Ty::Array => "a list",
            Ty::StrList => "a list of strings",
            Ty::Count => "a whole number from 1 to 1000000",
            Ty::Whole => "a whole number from 0 to 1000000",
        }
    }
}

fn is_false(v: &Value) -> bool {
    v == &Value::Bool(false) || v.is_null()
}
fn is_true(v: &Value) -> bool {
    v == &Value::Bool(true)
}
/// Absent in effect: null, false, "", [] or {}.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}
fn is_dml_policy(v: &Value) -> bool {
    let insert = v.get("insertPolicy").and_then(Value::as_str).unwrap_or("update_on_exists");
    let update = v.get("updatePolicy").and_then(Value::as_str).unwrap_or("ignore_on_nonexists");
    v.as_object().is_some_and(|o| o.keys().all(|k| k == "insertPolicy" || k == "updatePolicy"))
        && insert == "update_on_exists"
        && matches!(update, "ignore_on_nonexists" | "insert_on_nonexists")
}
fn is_exist_mode(v: &Value) -> bool {
    matches!(v.as_str(), Some("keepData" | "removeData" | "dropTable"))
}
fn is_upsert(v: &Value) -> bool {
    v.as_str() == Some("updateOrInsert")
}
fn is_ddl_filter(v: &Value) -> bool {
    v.as_str() == Some("FILTER")
}
fn is_retain_or_discard(v: &Value) -> bool {
    matches!(v.as_str(), Some("retain" | "discard"))
}
fn is_case_transform(v: &Value) -> bool {
    matches!(v.as_str(), Some("" | "toUpperCase" | "toLowerCase"))
}
fn is_main_table_first(v: &Value) -> bool {
    v.as_str() == Some("main_table_first")
}
fn is_sync_type(v: &Value) -> bool {
    v.as_str() == Some("sync")
}
fn is_task_type(v: &Value) -> bool {
    matches!(v.as_str(), Some("initial_sync" | "cdc" | "initial_sync+cdc"))
}
fn is_no_skip(v: &Value) -> bool {
    v.is_null()
        || v.get("errorMode").and_then(Value::as_str).is_none_or(|m| m == "Disable")
            && v.get("errorModeEnum").and_then(Value::as_str).is_none_or(|m| m == "Disable")
}
/// Model declarations the engine needs not read: fields added by `add_fields` arrive with the
/// records anyway. Anything else (`setPk`, removals, type changes) changes keys or types.
fn is_declare_of_added_fields(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.lines().map(str::trim).filter(|l| !l.is_empty()).all(|l| l.starts_with("TapModelDeclare.addField("))
    })
}
const fn only(accepts: fn(&Value) -> bool, accepted: &'static str, instead: &'static str) -> Rule {
    Rule::Only { accepts, accepted, instead }
}

const LATER: &str = "remove it; the embedded engine does not do this yet (a TapData cluster does)";

/// Fields every node may carry.
const COMMON: &[(&str, Rule)] = &[
    ("id", Rule::Honoured(Ty::Str)),
    ("type", Rule::Honoured(Ty::Str)),
    ("name", Rule::Inert),
    ("attrs", Rule::Inert),
    ("catalog", Rule::Inert),
    ("elementType", Rule::Inert),
    ("isTransformed", Rule::Inert),
    ("concurrentNum", Rule::Inert),
    ("processorThreadNum", Rule::Inert),
    ("node_config", Rule::Inert),
    ("previewQualifiedName", Rule::Inert),
    ("previewTapTable", Rule::Inert),
    ("disabled", only(is_false, "false", "remove the node from the flow instead of disabling it")),
];

const NODE_CONFIG: &[(&str, Rule)] = &[
    ("hashSplit", Rule::Inert),
    ("maxSplit", Rule::Inert),
    ("batchReadThreadSize", Rule::Inert),
    ("enableFillingModifiedData", Rule::Inert),
    ("skipDeletedEventsOnFilling", Rule::Inert),
    ("syncIndex", only(is_false, "false", "create the target's indexes yourself; the engine creates its key only")),
    ("enableSaveDeleteData", only(is_false, "false", LATER)),
    ("shardCollection", only(is_false, "false", "shard the MongoDB collection yourself")),
    ("preImage", only(is_false, "false", LATER)),
];

/// A table node: a source (no incoming edge) or the target (no outgoing edge).
const TABLE: &[(&str, Rule)] = &[
    ("tableName", Rule::Honoured(Ty::Str)),
    ("connectionId", Rule::Honoured(Ty::Str)),
    ("updateConditionFields", Rule::Honoured(Ty::StrList)),
    (
        "existDataProcessMode",
        only(is_exist_mode, "keepData, removeData or dropTable", "use keep_data(), clean_data() or clean_table()"),
    ),
    // The official client repeats the table here (a string in sync tasks); `tableName` is read.
    ("tableNames", Rule::Inert),
    ("databaseType", Rule::Inert),
    ("increaseReadSize", Rule::Inert),
    // A source's rows per snapshot read (`Source(…).initial_read_size(n)`).
    ("readBatchSize", Rule::Honoured(Ty::Count)),
    ("initialConcurrent", Rule::Inert),
    ("initialConcurrentWriteNum", Rule::Inert),
    ("cdcConcurrent", Rule::Inert),
    ("cdcConcurrentWriteNum", Rule::Inert),
    ("writeBatchSize", Rule::Inert),
    ("writeBatchWaitMs", Rule::Inert),
    (
        "dmlPolicy",
        only(
            is_dml_policy,
            "{insertPolicy: update_on_exists, updatePolicy: ignore_on_nonexists | insert_on_nonexists}",
            "remove it: the engine writes every change as an upsert or a delete by key",
        ),
    ),
    ("nodeConfig", Rule::Nested(NODE_CONFIG)),
    ("isFilter", only(is_false, "false", "filter the rows with .filter(\"…\") after read_from")),
    ("conditions", only(is_empty, "an empty list", "filter the rows with .filter(\"…\") after read_from")),
    ("customCommand", only(is_empty, "absent", "read the table and filter or reshape it with processors")),
    ("enableCustomCommand", only(is_false, "false", "read the table and filter or reshape it with processors")),
    ("disabledEvents", only(is_empty, "an empty list", "drop the events with .filter(…) or a function")),
    ("enableDDL", only(is_false, "false", "remove it: added columns are followed, other DDL stops the flow")),
    (
        "ddlConfiguration",
        only(is_ddl_filter, "FILTER", "remove it: added columns are followed, other DDL stops the flow"),
    ),
    ("writeStrategy", only(is_upsert, "updateOrInsert", "remove it: the engine writes by key (update or insert)")),
];

const JS: &[(&str, Rule)] = &[
    ("script", Rule::Honoured(Ty::Str)),
    (
        "declareScript",
        only(
            is_declare_of_added_fields,
            "empty or TapModelDeclare.addField(…) lines",
            "give the target's key with write_to(\"Conn.table\", [\"field\"]) instead of TapModelDeclare.setPk",
        ),
    ),
];

const RHAI: &[(&str, Rule)] = &[("script", Rule::Honoured(Ty::Str)), ("entry", Rule::Honoured(Ty::Str))];

const ROW_FILTER: &[(&str, Rule)] = &[
    ("expression", Rule::Honoured(Ty::Str)),
    ("action", only(is_retain_or_discard, "retain or discard", "use filter(expr) or filter(expr, \"discard\")")),
];

const RENAME: &[(&str, Rule)] = &[
    ("operations", Rule::Honoured(Ty::Array)),
    ("fieldsNameTransform", only(is_case_transform, "toUpperCase or toLowerCase", "rename the fields one by one")),
];

const ADD_DEL: &[(&str, Rule)] =
    &[("operations", Rule::Honoured(Ty::Array)), ("deleteAllFields", Rule::Honoured(Ty::Bool))];

const MERGE: &[(&str, Rule)] = &[
    ("mergeProperties", Rule::Honoured(Ty::Array)),
    ("mergeMode", only(is_main_table_first, "main_table_first", "remove it")),
    ("disable", only(is_false, "false", "remove the lookup from the flow instead of disabling it")),
];

const UNION: &[(&str, Rule)] = &[("enableConcurrentProcess", Rule::Inert)];

const TABLE_RENAME: &[(&str, Rule)] = &[
    ("prefix", Rule::Honoured(Ty::Str)),
    ("suffix", Rule::Honoured(Ty::Str)),
    ("tableNames", Rule::Honoured(Ty::Array)),
];

const ADD_DATE: &[(&str, Rule)] = &[("dateFieldName", Rule::Honoured(Ty::Str))];

const TIME_ADJUST: &[(&str, Rule)] = &[
    ("add", Rule::Honoured(Ty::Bool)),
    ("hours", Rule::Honoured(Ty::Whole)),
    ("dataTypes", Rule::Honoured(Ty::StrList)),
];

const TYPE_FILTER: &[(&str, Rule)] = &[("filterTypes", Rule::Honoured(Ty::StrList))];

const TYPE_ADJUST: &[(&str, Rule)] = &[("operations", Rule::Honoured(Ty::Array))];

/// The keys of one lookup (an entry of `mergeProperties`, or of its `children`).
const MERGE_PROPERTY: &[(&str, Rule)] = &[
    ("id", Rule::Honoured(Ty::Str)),
    ("tableName", Rule::Honoured(Ty::Str)),
    ("joinKeys", Rule::Honoured(Ty::Array)),
    ("targetPath", Rule::Honoured(Ty::Str)),
    ("isArray", Rule::Honoured(Ty::Bool)),
    ("arrayKeys", Rule::Honoured(Ty::StrList)),
    ("children", Rule::Honoured(Ty::Array)),
    // The engine keeps the document right whatever changes, join keys included.
    ("enableUpdateJoinKeyValue", Rule::Inert),
    (
        "mergeType",
        only(
            |v| matches!(v.as_str(), Some("updateOrInsert" | "updateWrite" | "updateIntoArray")),
            "updateOrInsert (the main table), updateWrite (an object) or updateIntoArray (an array)",
            "use lookup(…, #{ type: \"object\" }) or #{ type: \"array\" }",
        ),
    ),
];

/// Whether the engine runs a node type, and the fields of those it runs.
pub enum NodeRules {
    Runs(&'static [(&'static str, Rule)]),
    /// Refused, with what to do.
    Refused(&'static str),
}

/// The node types the engine knows, each with its rules.
pub const NODE_TYPES: &[(&str, NodeRules)] = &[
    ("table", NodeRules::Runs(TABLE)),
    ("js_processor", NodeRules::Runs(JS)),
    ("standard_js_processor", NodeRules::Runs(JS)),
    ("rhai_processor", NodeRules::Runs(RHAI)),
    ("row_filter_processor", NodeRules::Runs(ROW_FILTER)),
    ("field_rename_processor", NodeRules::Runs(RENAME)),
    ("field_add_del_processor", NodeRules::Runs(ADD_DEL)),
    ("merge_table_processor", NodeRules::Runs(MERGE)),
    ("union_processor", NodeRules::Runs(UNION)),
    ("table_rename_processor", NodeRules::Runs(TABLE_RENAME)),
    ("add_date_field_processor", NodeRules::Runs(ADD_DATE)),
    ("date_processor", NodeRules::Runs(TIME_ADJUST)),
    ("field_mod_type_filter_processor", NodeRules::Runs(TYPE_FILTER)),
    ("field_mod_type_processor", NodeRules::Runs(TYPE_ADJUST)),
    (
        "database",
        NodeRules::Refused(
            "database-level (migrate) flows are not run by the embedded engine yet: read_from and write_to a table",
        ),
    ),
    (
        "python_processor",
        NodeRules::Refused(
            "the embedded engine does not support Python functions yet: use .js(...) or .rhai(...) instead, or run the flow on a TapData cluster",
        ),
    ),
    ("unwind_processor", NodeRules::Refused("unwind the arrays with .js(...) or .rhai(...) instead")),
];

/// Why the engine does not run nodes of type `ty`: its reason when the type is known and refused,
/// else that the type is unknown.
pub fn refused_type(ty: &str) -> String {
    match NODE_TYPES.iter().find(|(t, _)| *t == ty) {
        Some((_, NodeRules::Refused(why))) => why.to_string(),
        Some((_, NodeRules::Runs(_))) => format!("nodes of type {ty} are run"),
        None => {
            let known: Vec<&str> =
                NODE_TYPES.iter().filter(|(_, r)| matches!(r, NodeRules::Runs(_))).map(|(t, _)| *t).collect();
            format!(
                "the embedded engine does not run nodes of type {ty} (it runs {}): remove the node, or run the flow on a TapData cluster",
                known.join(", ")
            )
        }
    }
}

/// Task settings (top level or inside `dag`) that change what data moves, with their rules.
/// Other task keys are the server's state or scheduling and display hints, and inert.
pub const TASK_SETTINGS: &[(&str, Rule)] = &[
    (
        "type",
        only(is_task_type, "initial_sync, cdc or initial_sync+cdc", "use full_sync(), only_cdc() or include_cdc()"),
    ),
    ("syncType", only(is_sync_type, "sync", "read_from and write_to a table")),
    ("syncPoints", only(is_empty, "an empty list", "remove the CDC start time: the engine starts CDC at the snapshot")),
    (
        "skipErrorEvent",
        only(is_no_skip, "errorMode Disable", "remove it: a record that cannot be written stops the flow"),
    ),
    ("isStopOnError", only(is_true, "true", "remove it: an error stops the flow")),
    ("doubleActive", only(is_false, "false", LATER)),
    ("shareCdcEnable", only(is_false, "false", LATER)),
    ("shareCache", only(is_false, "false", LATER)),
    ("isFilter", only(is_false, "false", "filter the rows with .filter(\"…\")")),
    ("isOpenAutoDDL", only(is_false, "false", "remove it: added columns are followed, other DDL stops the flow")),
    ("planStartDateFlag", only(is_false, "false", "start the flow when you want it to run")),
    ("isSchedule", only(is_false, "false", "start the flow when you want it to run")),
    ("crontabExpressionFlag", only(is_false, "false", "start the flow when you want it to run")),
    ("crontabExpression", only(is_empty, "empty", "start the flow when you want it to run")),
    ("increHysteresis", only(is_false, "false", LATER)),
    ("increOperationMode", only(is_false, "false", LATER)),
    ("autoInspect", only(is_empty, "false", "compare the tables yourself (count, peek)")),
    ("enableLatencyMeasure", only(is_false, "false", LATER)),
    ("accurateDelay", only(is_false, "false", LATER)),
    ("timeZone", Rule::Inert),
];

/// Why a document is refused: the node (or the task), the field, its value and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 { format!("{}…", s.chars().take(80).collect::<String>()) } else { s }
}

/// Checks the keys of `doc` against `rules`, naming `what` (the node or the task) and the path.
fn check_fields(
    what: &str,
    path: &str,
    doc: &Map<String, Value>,
    rules: &[&[(&str, Rule)]],
    open: bool,
) -> Result<(), Refusal> {
    for (key, value) in doc {
        let field = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        let Some(rule) = rules.iter().flat_map(|r| r.iter()).find(|(k, _)| k == key).map(|(_, r)| *r) else {
            if open {
                continue;
            }
            return Err(Refusal {
                message: format!(
                    "{what}: field {field} ({}) is not one the embedded engine knows, so it cannot do what it asks: remove it, or run the flow on a TapData cluster",
                    short(value)
                ),
            });
        };
        check_value(what, &field, value, rule)?;
    }
    Ok(())
}

fn check_value(what: &str, field: &str, value: &Value, rule: Rule) -> Result<(), Refusal> {
    match rule {
        Rule::Inert => Ok(()),
        Rule::Honoured(ty) if ty.holds(value) || value.is_null() => Ok(()),
        Rule::Honoured(ty) => {
            Err(Refusal { message: format!("{what}: field {field} is {}, it must be {}", short(value), ty.name()) })
        }
        Rule::Only { accepts, .. } if value.is_null() || accepts(value) => Ok(()),
        Rule::Only { accepted, instead, .. } => Err(Refusal {
            message: format!(
                "{what}: field {field} is {}, which the embedded engine does not do (it accepts {accepted}): {instead}",
                short(value)
            ),
        }),
        Rule::Nested(rules) => match value {
            Value::Object(o) => check_fields(what, field, o, &[rules], false),
            Value::Null => Ok(()),
            other => {
                Err(Refusal { message: format!("{what}: field {field} is {}, it must be an object", short(other)) })
            }
        },
    }
}

/// An edge of the DAG.
#[derive(Debug, Clone, Deserialize)]
pub struct Edge {
    pub source: String,
    pub target: String,
}

/// A table node's typed fields (source or target).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TableNode {
    pub connection_id: String,
    pub table_name: String,
    pub update_condition_fields: Vec<String>,
    pub exist_data_process_mode: Option<String>,
    pub read_batch_size: Option<u64>,
}

/// One entry of a merge node's `mergeProperties` (the main table, then its lookups as
/// `children`, nested).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MergeProperty {
    /// The DAG node id of the source that reads this table.
    pub id: String,
    pub table_name: String,
    pub join_keys: Vec<JoinKey>,
    /// Where the looked-up rows go in the document (dotted, absolute).
    pub target_path: String,
    pub merge_type: String,
    pub array_keys: Vec<String>,
    pub children: Vec<MergeProperty>,
}

/// A join of a lookup: a field of the looked-up table (`source`) and one of its parent
/// (`target`), either way round; the one under the parent's path is the parent's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct JoinKey {
    pub source: String,
    pub target: String,
}

/// One node: its id, name and type, what it is (typed by its kind), and the document as sent
/// (so it round-trips with every field, inert ones included).
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub ty: String,
    pub kind: NodeKind,
    pub doc: Value,
}

/// What a node is, with the fields the engine runs it by.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// `table`: a source (no edge leads to it) or the sink.
    Table(TableNode),
    /// `merge_table_processor`: the lookup tree.
    Merge(Vec<MergeProperty>),
    /// A processor.
    Step(super::steps::Step),
}

impl Node {
    fn describe(doc: &Map<String, Value>) -> String {
        let ty = doc.get("type").and_then(Value::as_str).unwrap_or("");
        match doc.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => format!("node {name:?} ({ty})"),
            _ => format!("node {} ({ty})", doc.get("id").and_then(Value::as_str).unwrap_or("?")),
        }
    }

    /// Applies the rules of the node's type and reads its typed fields.
    pub fn parse(doc: &Value) -> Result<Node, Refusal> {
        let Some(obj) = doc.as_object() else {
            return Err(Refusal { message: format!("a DAG node must be an object, not {}", short(doc)) });
        };
        let what = Self::describe(obj);
        let ty = match obj.get("type") {
            Some(Value::String(t)) => t.clone(),
            other => {
                return Err(Refusal {
                    message: format!(
                        "{what}: field type is {}, it must name the node type",
                        short(other.unwrap_or(&Value::Null))
                    ),
                });
            }
        };
        let Some((_, NodeRules::Runs(rules))) = NODE_TYPES.iter().find(|(t, _)| *t == ty) else {
            return Err(Refusal { message: format!("{what}: {}", refused_type(&ty)) });
        };
        check_fields(&what, "", obj, &[COMMON, rules], false)?;
        if ty == "merge_table_processor" {
            for p in obj.get("mergeProperties").and_then(Value::as_array).into_iter().flatten() {
                check_merge_property(&what, "mergeProperties", p)?;
            }
        }
        let id = obj.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        if id.is_empty() {
            return Err(Refusal { message: format!("{what}: field id is missing: every node needs an id") });
        }
        let kind = match ty.as_str() {
            "table" => NodeKind::Table(
                serde_json::from_value::<TableNode>(doc.clone())
                    .map_err(|e| Refusal { message: format!("{what}: {e}") })?,
            ),
            "merge_table_processor" => {
                let props = obj.get("mergeProperties").cloned().unwrap_or(Value::Array(Vec::new()));
                NodeKind::Merge(
                    serde_json::from_value::<Vec<MergeProperty>>(props)
                        .map_err(|e| Refusal { message: format!("{what}: mergeProperties: {e}") })?,
                )
            }
            _ => match super::steps::Step::parse(doc).map_err(|e| Refusal { message: e.message })? {
                Some(step) => NodeKind::Step(step),
                None => return Err(Refusal { message: format!("{what}: {}", refused_type(&ty)) }),
            },
        };
        Ok(Node {
            id,
            name: obj.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
            ty,
            kind,
            doc: doc.clone(),
        })
    }

    /// The table of a `table` node.
    pub fn table(&self) -> Option<&TableNode> {
        match &self.kind {
            NodeKind::Table(t) => Some(t),
            _ => None,
        }
    }

    /// The lookup tree of a merge node.
    pub fn merge(&self) -> Option<&[MergeProperty]> {
        match &self.kind {
            NodeKind::Merge(m) => Some(m),
            _ => None,
        }
    }

    /// The step of a processor node.
    pub fn step(&self) -> Option<&super::steps::Step> {
        match &self.kind {
            NodeKind::Step(s) => Some(s),
            _ => None,
        }
    }
}

fn check_merge_property(what: &str, path: &str, p: &Value) -> Result<(), Refusal> {
    let Some(o) = p.as_object() else {
        return Err(Refusal { message: format!("{what}: an entry of {path} is {}, it must be an object", short(p)) });
    };
    check_fields(what, path, o, &[MERGE_PROPERTY], false)?;
    for c in o.get("children").and_then(Value::as_array).into_iter().flatten() {
        check_merge_property(what, &format!("{path}.children"), c)?;
    }
    Ok(())
}

/// A task's DAG, checked.
#[derive(Debug, Clone)]
pub struct Dag {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

impl Dag {
    /// The DAG of a task document, every node and the task's settings checked by their rules.
    pub fn parse(task: &Value) -> Result<Dag, Refusal> {
        let Some(dag) = task.get("dag").filter(|d| !d.is_null()) else {
            return Err(Refusal { message: "the flow has no DAG: add read_from and write_to".into() });
        };
        let Some(dag_obj) = dag.as_object() else {
            return Err(Refusal { message: format!("the flow's dag is {}, it must be an object", short(dag)) });
        };
        let nodes = match dag_obj.get("nodes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.iter().map(Node::parse).collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(Refusal {
                    message: format!("the flow's dag.nodes is {}, it must be a list", short(other)),
                });
            }
        };
        for doc in [task.as_object(), Some(dag_obj)].into_iter().flatten() {
            check_fields("the flow", "", doc, &[TASK_SETTINGS], true)?;
        }
        let edges = match dag_obj.get("edges") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value::<Vec<Edge>>(v.clone()).map_err(|e| Refusal {
                message: format!("the flow's dag.edges must be a list of {{source, target}} node ids: {e}"),
            })?,
        };
        for e in &edges {
            for end in [&e.source, &e.target] {
                if !nodes.iter().any(|n| &n.id == end) {
                    return Err(Refusal {
                        message: format!(
                            "the flow's DAG has an edge {} → {} to a node it does not have",
                            e.source, e.target
                        ),
                    });
                }
            }
        }
        Ok(Dag { nodes, edges })
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn has_in(&self, id: &str) -> bool {
        self.edges.iter().any(|e| e.target == id)
    }

    pub fn has_out(&self, id: &str) -> bool {
        self.edges.iter().any(|e| e.source == id)
    }

    /// The ids of the nodes `id` leads to.
    pub fn next(&self, id: &str) -> Vec<&str> {
        self.edges.iter().filter(|e| e.source == id).map(|e| e.target.as_str()).collect()
    }

    /// Table nodes no edge leads to: the flow's sources.
    pub fn sources(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.table().is_some() && !self.has_in(&n.id))
    }
}

/// The table nodes of a stored task's DAG, each with whether it is a source (no edge leads to
/// it), read leniently: what reset, delete and the demo's checks need from any stored task,
/// even one whose DAG a save would refuse now (a flow saved by an older engine must still
/// release what it holds).
pub fn table_nodes(task: &Value) -> Vec<(TableNode, bool)> {
    let targets: Vec<&str> = task
        .pointer("/dag/edges")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|e| e.get("target").and_then(Value::as_str)).collect())
        .unwrap_or_default();
    task.pointer("/dag/nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|n| n.get("type").and_then(Value::as_str) == Some("table"))
        .map(|n| {
            let text = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let t =
                TableNode { connection_id: text("connectionId"), table_name: text("tableName"), ..Default::default() };
            (t, !targets.contains(&text("id").as_str()))
        })
        .collect()
}

/// The task's sync `type` (`initial_sync`, `cdc`, `initial_sync+cdc`), at the top or in the dag.
pub fn task_type(task: &Value) -> &str {
    task.get("type")
        .or_else(|| task.get("dag").and_then(|d| d.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("initial_sync+cdc")
}

#[cfg(test)]
#[path = "dag_tests.rs"]
mod tests;
