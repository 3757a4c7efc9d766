//! The rule for every field a DAG node or the task can carry (DESIGN decisions 11 and 12): each
//! node type the engine knows has an explicit list of its fields, each field one [`Rule`]; a
//! field in no list is refused, and so is a node type the engine does not run. [`super::dag`]
//! applies them.

use serde_json::Value;

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
    Object,
}

impl Ty {
    pub(crate) fn holds(self, v: &Value) -> bool {
        match self {
            Ty::Str => v.is_string(),
            Ty::Bool => v.is_boolean(),
            Ty::Array => v.is_array(),
            Ty::StrList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            Ty::Count => v.as_u64().is_some_and(|n| (1..=1_000_000).contains(&n)),
            Ty::Whole => v.as_u64().is_some_and(|n| n <= 1_000_000),
            Ty::Object => v.is_object(),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Ty::Str => "a string",
            Ty::Bool => "true or false",
            Ty::Array => "a list",
            Ty::StrList => "a list of strings",
            Ty::Count => "a whole number from 1 to 1000000",
            Ty::Whole => "a whole number from 0 to 1000000",
            Ty::Object => "an object",
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
fn is_write_strategy(v: &Value) -> bool {
    matches!(v.as_str(), Some("updateOrInsert" | "updateWrite" | "appendWrite"))
}
fn is_ddl_setting(v: &Value) -> bool {
    matches!(v.as_str(), Some("FILTER" | "SYNCHRONIZATION" | "ERROR"))
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
    matches!(v.as_str(), Some("sync" | "migrate"))
}
fn is_task_type(v: &Value) -> bool {
    matches!(v.as_str(), Some("initial_sync" | "cdc" | "initial_sync+cdc"))
}
/// `skipErrorEvent`: off (`Disable`), or TapFlow's `skip_error_event_by_limit(n)` (`SkipData`
/// by `SkipByLimit` with a whole-number `limit`), which the engine does.
fn is_skip_setting(v: &Value) -> bool {
    skip_setting(v).is_some()
}

/// A `skipErrorEvent` setting read: `Some(None)` off, `Some(Some(n))` skip up to n, `None` a
/// setting the engine does not do. The rules and the plan both read it here.
pub(crate) fn skip_setting(v: &Value) -> Option<Option<u64>> {
    if v.is_null() {
        return Some(None);
    }
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let mode = text("errorMode").or(text("errorModeEnum")).unwrap_or("Disable");
    let same = text("errorModeEnum").is_none_or(|m| m == mode);
    let by_limit = text("limitMode").or(text("limitModeEnum")).is_none_or(|m| m == "SkipByLimit")
        && text("limitModeEnum").is_none_or(|m| m == "SkipByLimit");
    match (same, mode) {
        (true, "Disable") => Some(None),
        (true, "SkipData") if by_limit => v.get("limit").and_then(Value::as_u64).map(Some),
        _ => None,
    }
}
/// Model declarations the engine does: fields added by `add_fields` (they arrive with the
/// records anyway) and the key a function's records have (`js(…, #{ pk })`, which the plan
/// checks against the target's). Anything else (removals, type changes) is refused.
fn is_declare_script(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .all(|l| l.starts_with("TapModelDeclare.addField(") || super::steps::declared_key(l).is_some())
    })
}
const fn only(accepts: fn(&Value) -> bool, accepted: &'static str, instead: &'static str) -> Rule {
    Rule::Only { accepts, accepted, instead }
}

const LATER: &str = "remove it; the embedded engine does not do this yet (a TapData cluster does)";

/// Fields every node may carry.
pub(crate) const COMMON: &[(&str, Rule)] = &[
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

pub(crate) const NODE_CONFIG: &[(&str, Rule)] = &[
    ("hashSplit", Rule::Inert),
    ("maxSplit", Rule::Inert),
    ("batchReadThreadSize", Rule::Inert),
    ("enableFillingModifiedData", Rule::Inert),
    ("skipDeletedEventsOnFilling", Rule::Inert),
    ("syncIndex", only(is_false, "false", "create the target's indexes yourself; the engine creates its key only")),
    ("enableSaveDeleteData", only(is_false, "false", LATER)),
    ("shardCollection", only(is_false, "false", "shard the MongoDB collection yourself")),
    // `enablePreImage()`: each source connector arranges whole before images or refuses.
    ("preImage", Rule::Honoured(Ty::Bool)),
];

/// The fields table and database nodes share.
pub(crate) const DATA_NODE: &[(&str, Rule)] = &[
    (
        "existDataProcessMode",
        only(is_exist_mode, "keepData, removeData or dropTable", "use keep_data(), clean_data() or clean_table()"),
    ),
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
];

/// A table node: a source (no incoming edge) or the target (no outgoing edge).
pub(crate) const TABLE: &[(&str, Rule)] = &[
    ("tableName", Rule::Honoured(Ty::Str)),
    ("connectionId", Rule::Honoured(Ty::Str)),
    ("updateConditionFields", Rule::Honoured(Ty::StrList)),
    // The official client repeats the table here (a string in sync tasks); `tableName` is read.
    ("tableNames", Rule::Inert),
    // A source's filter (`read_from(…, #{ filter })`) and query (`#{ query }`): see the plan.
    ("isFilter", Rule::Honoured(Ty::Bool)),
    ("conditions", Rule::Honoured(Ty::Array)),
    ("customCommand", Rule::Honoured(Ty::Object)),
    ("enableCustomCommand", Rule::Honoured(Ty::Bool)),
    ("disabledEvents", only(is_empty, "an empty list", "drop the events with .filter(…) or a function")),
    // A source's DDL: see the plan's `DdlMode`.
    ("enableDDL", Rule::Honoured(Ty::Bool)),
    (
        "ddlConfiguration",
        only(
            is_ddl_setting,
            "FILTER, SYNCHRONIZATION or ERROR",
            "use enableDDL() (SYNCHRONIZATION) or disableDDL() (FILTER)",
        ),
    ),
    (
        "writeStrategy",
        only(
            is_write_strategy,
            "updateOrInsert, updateWrite or appendWrite",
            "use Sink(…).config(#{ writeStrategy: \"updateOrInsert\" }) or \"appendWrite\"",
        ),
    ),
];

pub(crate) const JS: &[(&str, Rule)] = &[
    ("script", Rule::Honoured(Ty::Str)),
    (
        "declareScript",
        only(
            is_declare_script,
            "empty, TapModelDeclare.addField(…) or TapModelDeclare.setPk(tapTable, 'field') lines",
            "give the target's key with js(…, #{ pk: \"field\" }) or write_to(\"Conn.table\", [\"field\"])",
        ),
    ),
];

/// A `database` node: a whole database, a `migrate` task's source or target (TapFlow's
/// `Pipeline`).
pub(crate) const DATABASE: &[(&str, Rule)] = &[
    ("connectionId", Rule::Honoured(Ty::Str)),
    ("tableNames", Rule::Honoured(Ty::StrList)),
    (
        "migrateTableSelectType",
        only(
            |v| matches!(v.as_str(), Some("expression" | "custom")),
            "expression or custom",
            "use Source(\"Conn\", #{ table_re: \"…\" }) or #{ table: [\"a\", \"b\"] }",
        ),
    ),
    ("tableExpression", Rule::Honoured(Ty::Str)),
    ("isTransformed", Rule::Inert),
    (
        "noPrimaryKeyTableSelectType",
        only(|v| v.as_str() == Some("All"), "All", "remove it: a table without a key stops the pipeline, naming it"),
    ),
    (
        "disabledEvents",
        only(is_empty, "an empty list", "copy the tables with their deletes, or use a Flow with a filter"),
    ),
    (
        "ddlConfiguration",
        only(
            |v| v.as_str() == Some("FILTER"),
            "FILTER",
            "remove it: added columns come with the rows, other DDL stops the pipeline",
        ),
    ),
];

pub(crate) const PYTHON: &[(&str, Rule)] = &[
    ("script", Rule::Honoured(Ty::Str)),
    ("declareScript", only(is_empty, "empty", "give the target's key with write_to(\"Conn.table\", [\"field\"])")),
];

pub(crate) const RHAI: &[(&str, Rule)] = &[("script", Rule::Honoured(Ty::Str)), ("entry", Rule::Honoured(Ty::Str))];

pub(crate) const ROW_FILTER: &[(&str, Rule)] = &[
    ("expression", Rule::Honoured(Ty::Str)),
    ("action", only(is_retain_or_discard, "retain or discard", "use filter(expr) or filter(expr, \"discard\")")),
];

pub(crate) const RENAME: &[(&str, Rule)] = &[
    ("operations", Rule::Honoured(Ty::Array)),
    ("fieldsNameTransform", only(is_case_transform, "toUpperCase or toLowerCase", "rename the fields one by one")),
];

pub(crate) const ADD_DEL: &[(&str, Rule)] =
    &[("operations", Rule::Honoured(Ty::Array)), ("deleteAllFields", Rule::Honoured(Ty::Bool))];

pub(crate) const MERGE: &[(&str, Rule)] = &[
    ("mergeProperties", Rule::Honoured(Ty::Array)),
    ("mergeMode", only(is_main_table_first, "main_table_first", "remove it")),
    ("disable", only(is_false, "false", "remove the lookup from the flow instead of disabling it")),
];

pub(crate) const UNION: &[(&str, Rule)] = &[("enableConcurrentProcess", Rule::Inert)];

pub(crate) const TABLE_RENAME: &[(&str, Rule)] = &[
    ("prefix", Rule::Honoured(Ty::Str)),
    ("suffix", Rule::Honoured(Ty::Str)),
    ("tableNames", Rule::Honoured(Ty::Array)),
];

pub(crate) const ADD_DATE: &[(&str, Rule)] = &[("dateFieldName", Rule::Honoured(Ty::Str))];

pub(crate) const TIME_ADJUST: &[(&str, Rule)] = &[
    ("add", Rule::Honoured(Ty::Bool)),
    ("hours", Rule::Honoured(Ty::Whole)),
    ("dataTypes", Rule::Honoured(Ty::StrList)),
];

pub(crate) const TYPE_FILTER: &[(&str, Rule)] = &[("filterTypes", Rule::Honoured(Ty::StrList))];

pub(crate) const TYPE_ADJUST: &[(&str, Rule)] = &[("operations", Rule::Honoured(Ty::Array))];

pub(crate) const UNWIND: &[(&str, Rule)] = &[
    ("path", Rule::Honoured(Ty::Str)),
    (
        "unwindModel",
        only(
            |v| matches!(v.as_str(), Some("EMBEDDED" | "FLATTEN")),
            "EMBEDDED or FLATTEN",
            "use embedded_unwind or flat_unwind",
        ),
    ),
    (
        "arrayModel",
        only(
            |v| matches!(v.as_str(), Some("BASIC" | "OBJECT" | "MIX")),
            "BASIC, OBJECT or MIX",
            "use BASIC, OBJECT or MIX",
        ),
    ),
    ("includeArrayIndex", Rule::Honoured(Ty::Str)),
    ("joiner", Rule::Honoured(Ty::Str)),
    ("preserveNullAndEmptyArrays", Rule::Honoured(Ty::Bool)),
];

/// The keys of one lookup (an entry of `mergeProperties`, or of its `children`).
pub(crate) const MERGE_PROPERTY: &[(&str, Rule)] = &[
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
    ("unwind_processor", NodeRules::Runs(UNWIND)),
    ("database", NodeRules::Runs(DATABASE)),
    ("python_processor", NodeRules::Runs(PYTHON)),
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
    ("syncType", only(is_sync_type, "sync or migrate", "use Flow(…) for a table, Pipeline(…) for a database")),
    // A CDC-only flow's start time (`only_cdc(start_time)`): read by the plan.
    ("syncPoints", Rule::Honoured(Ty::Array)),
    (
        "skipErrorEvent",
        only(
            is_skip_setting,
            "errorMode Disable, or SkipData by SkipByLimit with a limit",
            "use skip_error_event_by_limit(n), or remove it: a record that cannot be processed or written stops the flow",
        ),
    ),
    ("isStopOnError", only(is_true, "true", "remove it: an error stops the flow")),
    ("doubleActive", only(is_false, "false", LATER)),
    ("shareCdcEnable", only(is_false, "false", LATER)),
    ("shareCache", only(is_false, "false", LATER)),
    ("isFilter", only(is_false, "false", "filter the rows with .filter(\"…\")")),
    (
        "isOpenAutoDDL",
        only(is_false, "false", "remove it (enableDDL()): added columns are followed, other DDL stops the flow"),
    ),
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
