//! DAG node JSON exactly as the official client builds it (`reference/tapflow-client.md` §8.3–8.5),
//! with its bugs fixed where they change behaviour (see the notes on each function).

use crate::api::connection::Connection;
use serde_json::{Value, json};

pub fn new_node_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `str(list)` in Python: `['a', 'b']`.
pub fn python_list(items: &[String]) -> String {
    let quoted: Vec<String> =
        items.iter().map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))).collect();
    format!("[{}]", quoted.join(", "))
}

/// The JS wrapper of `nodes/js.py:Js.to_js`.
pub fn wrap_js(script: &str) -> String {
    if script.contains("function process(record)") {
        script.to_string()
    } else {
        format!("function process(record){{\n\n\t// Enter you code at here\n{script}}}")
    }
}

pub(super) fn data_attrs(conn: &Connection) -> Value {
    json!({
        "accessNodeProcessId": "",
        "capabilities": conn.extra.get("capabilities").cloned().unwrap_or_else(|| json!([])),
        "connectionName": conn.name,
        "connectionType": if conn.connection_type.is_empty() { "source_and_target" } else { &conn.connection_type },
        "pdkHash": conn.extra.get("pdkHash").cloned().unwrap_or(Value::Null),
        "pdkType": "pdk",
        "position": [0, 0],
    })
}

pub(super) fn dml_policy() -> Value {
    json!({"insertPolicy": "update_on_exists", "updatePolicy": "ignore_on_nonexists"})
}

/// A sync table source node (trace in §8.3).
pub fn source(conn: &Connection, table: &str) -> Value {
    json!({
        "tableNames": table,
        "dmlPolicy": dml_policy(),
        "nodeConfig": {},
        "isFilter": false,
        "attrs": data_attrs(conn),
        "connectionId": conn.id,
        "databaseType": conn.database_type,
        "disabledEvents": [],
        "id": new_node_id(),
        "increaseReadSize": 1,
        "name": table,
        "tableName": table,
        "type": "table",
        "node_config": {},
    })
}

/// A sync table sink node (trace in §8.3).
pub fn sink(conn: &Connection, table: &str, key: &[String]) -> Value {
    json!({
        "tableNames": table,
        "dmlPolicy": dml_policy(),
        "nodeConfig": {"syncIndex": false, "enableSaveDeleteData": false, "shardCollection": false, "hashSplit": false, "maxSplit": 32},
        "isFilter": false,
        "node_config": {},
        "attrs": data_attrs(conn),
        "connectionId": conn.id,
        "databaseType": conn.database_type,
        "id": new_node_id(),
        "name": table,
        "writeStrategy": "updateOrInsert",
        "initialConcurrent": true,
        "initialConcurrentWriteNum": 8,
        "cdcConcurrent": true,
        "cdcConcurrentWriteNum": 8,
        "tableName": table,
        "type": "table",
        "updateConditionFields": key,
        "existDataProcessMode": "keepData",
    })
}

fn js_attrs() -> Value {
    json!({"accessNodeProcessId": "", "connectionType": "source_and_target", "position": [0, 0]})
}

pub fn js(script: &str, declare: &str, name: &str) -> Value {
    json!({"attrs": js_attrs(), "name": name, "type": "js_processor", "script": wrap_js(script),
           "declareScript": declare, "id": new_node_id()})
}

/// `exclude(*fields)` / `include(*fields)`: the official column-filter JS (§8.4).
pub fn column_filter(fields: &[String], keep: bool) -> Value {
    let list = python_list(fields);
    let (body, name) = if keep {
        (
            format!(
                "\n        keepFields = {list};\n        newRecord = {{}};\n        for (i in keepFields) {{\n            newRecord[keepFields[i]] = record[keepFields[i]];\n        }}\n        return newRecord;\n        "
            ),
            "Include",
        )
    } else {
        (
            format!(
                "\n    deleteFields = {list};\n    newRecord = record;\n    for (i in deleteFields) {{\n        delete(newRecord[deleteFields[i]]);\n    }}\n    return newRecord;\n    "
            ),
            "Exclude",
        )
    };
    js(&body, "", name)
}

pub fn rename(pairs: &[(String, String)]) -> Value {
    let ops: Vec<Value> = pairs.iter().map(|(a, b)| json!({"field": a, "op": "RENAME", "operand": b})).collect();
    json!({"operations": ops, "catalog": "processor", "elementType": "Node", "name": "Fields Rename",
           "type": "field_rename_processor", "id": new_node_id()})
}

pub fn row_filter(expression: &str, keep: bool) -> Value {
    json!({"action": if keep { "retain" } else { "discard" }, "expression": expression, "concurrentNum": 1,
           "type": "row_filter_processor", "catalog": "processor", "isTransformed": false, "name": "Row Filter",
           "elementType": "Node", "disabled": false, "id": new_node_id()})
}

pub const PY_HEADER: &str = "import json, random, time, datetime, uuid, types, yaml\nimport urllib, urllib2, requests\nimport math, hashlib, base64\ndef process(record, context):\n";

/// `py(script)`: a `python_processor` (the official client wrongly emits a JS node, §13.15).
pub fn python(script: &str) -> Value {
    let script = if script.contains("def process(") {
        script.to_string()
    } else {
        let body: Vec<String> = script.lines().map(|l| format!("    {l}")).collect();
        format!("{PY_HEADER}{}", body.join("\n"))
    };
    json!({"script": script, "declareScript": "", "concurrentNum": 1, "type": "python_processor", "catalog": "processor",
           "isTransformed": false, "name": "Python", "elementType": "Node", "disabled": false, "id": new_node_id()})
}

/// Ours: a Rhai function, run sandboxed by the embedded engine only: `script` holds the
/// functions, `entry` names the one that takes the record.
pub fn rhai(script: &str, entry: &str) -> Value {
    json!({"script": script, "entry": entry, "type": "rhai_processor", "catalog": "processor", "name": "Rhai",
           "elementType": "Node", "disabled": false, "isTransformed": false, "id": new_node_id()})
}

/// `add_fields([[name, type, js_expr], …])` (§8.4).
pub fn add_fields(fields: &[(String, String, String)]) -> Value {
    let tap_type = |t: &str| match t {
        "String" => "TapString",
        "Date" => "TapDate",
        "DateTime" => "TapDateTime",
        "Double" | "Float" | "BigDecimal" | "Long" | "Integer" | "Number" => "TapNumber",
        "Map" => "TapMap",
        "Array" => "TapArray",
        _ => "TapString",
    };
    let mut declare = String::new();
    let mut script = String::new();
    for (name, ty, expr) in fields {
        declare.push_str(&format!("TapModelDeclare.addField(tapTable, '{name}', '{}');\n", tap_type(ty)));
        script.push_str(&format!("record['{name}'] = {};\n", if expr.is_empty() { "null" } else { expr }));
    }
    script.push_str("return record;");
    js(&script, &declare, "JS")
}

/// `add_date_field(k)` / `addTimeField(field)` (§8.4).
pub fn add_date_field(field: &str) -> Value {
    json!({"dateFieldName": field, "disabled": false, "catalog": "processor", "elementType": "Node",
           "name": "Add a time field", "type": "add_date_field_processor", "id": new_node_id()})
}

/// `adjust_time(addHours, t, name)` (§8.4): `add` and `hours` from the sign.
pub fn adjust_time(hours: i64, types: &[String], name: &str) -> Value {
    json!({"add": hours > 0, "dataTypes": types, "disabled": false, "hours": hours.unsigned_abs(),
           "catalog": "processor", "elementType": "Node", "name": name, "type": "date_processor", "id": new_node_id()})
}

/// `exclude_type(type_name)` (§8.4).
pub fn exclude_type(types: &[String]) -> Value {
    json!({"filterTypes": types, "concurrentNum": 1, "type": "field_mod_type_filter_processor",
           "catalog": "processor", "isTransformed": false, "name": "Type Filter", "elementType": "Node",
           "disabled": false, "id": new_node_id()})
}

/// One conversion of `type_adjust`: the field, its new type, and what the table's metadata
/// says of it (its type, whether it is in the primary key).
pub struct Convert {
    pub field: String,
    pub to: String,
    pub original: String,
    pub primary_key: bool,
}

/// `type_adjust(converts, table, name)` (§8.4), with the field's real type as
/// `originalDataType` (the official client hard-codes `bigint(20) unsigned`).
pub fn type_adjust(conn_id: &str, table: &str, converts: &[Convert], name: &str) -> Value {
    let mut pk_pos = 0;
    let ops: Vec<Value> = converts
        .iter()
        .map(|c| {
            if c.primary_key {
                pk_pos += 1;
            }
            json!({"field": c.field, "field_name": c.field, "id": format!("{conn_id}_{table}_{}", c.field),
                   "label": c.field, "op": "CONVERT", "operand": c.to, "originalDataType": c.original,
                   "primary_key_position": pk_pos, "table_name": table, "type": c.to})
        })
        .collect();
    json!({"name": name, "type": "field_mod_type_processor", "operations": ops, "catalog": "processor",
           "elementType": "Node", "id": new_node_id()})
}

/// `flat_unwind` / `embedded_unwind` (§8.4).
pub fn unwind(path: &str, index: &str, array_elem: &str, joiner: &str, keep_null: bool, embedded: bool) -> Value {
    json!({"arrayModel": array_elem.to_uppercase(), "catalog": "processor", "elementType": "Node",
           "includeArrayIndex": index, "joiner": joiner, "name": if embedded { "embedded_unwind" } else { "flat_unwind" },
           "path": path, "preserveNullAndEmptyArrays": keep_null, "processorThreadNum": 1, "type": "unwind_processor",
           "unwindModel": if embedded { "EMBEDDED" } else { "FLATTEN" }, "id": new_node_id()})
}

pub fn union() -> Value {
    json!({"catalog": "processor", "elementType": "Node", "name": "Union", "type": "union_processor",
           "concurrentNum": 2, "enableConcurrentProcess": false, "id": new_node_id()})
}

/// The flow's task-level settings (SYNC defaults of §8.7).
pub fn sync_settings(sync_type: &str) -> Value {
    let buttons = json!({"delete": false, "edit": false, "forceStop": true, "monitor": true, "reset": true, "start": false, "stop": true});
    json!({"createTime": "2022-10-06T18:43:04.352+00:00", "showInspectTips": false, "planStartDateFlag": false,
        "isOpenAutoDDL": false, "isSchedule": false, "isStopOnError": true, "readBatchSize": 500, "shareCache": false,
        "writeThreadSize": 8, "isFilter": false, "autoInspect": false, "accessNodeProcessId": "",
        "accessNodeProcessIdList": [], "accessNodeType": "AUTOMATIC_PLATFORM_ALLOCATION", "syncType": "sync",
        "type": sync_type, "desc": "", "isAutoCreateIndex": true, "deduplicWriteMode": "intelligent",
        "increSyncConcurrency": false, "increHysteresis": false, "increaseReadSize": 1, "increOperationMode": false,
        "processorThreadNum": 1, "shareCdcEnable": false, "btnDisabled": buttons.clone(), "disabledData": buttons,
        "_deleted": false})
}

/// The task settings a saved DAG carries beyond the defaults of its task type `kind` (what
/// `config(#{ … })` set; the type itself and `skipErrorEvent` aside).
pub fn changed_settings(dag: &Value, kind: &str) -> serde_json::Map<String, Value> {
    let defaults = sync_settings(kind);
    dag.as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !["nodes", "edges", "skipErrorEvent", "type", "syncType"].contains(&k.as_str()))
        .filter(|(k, v)| defaults.get(k.as_str()).is_some_and(|d| d != *v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `skip_error_event_by_limit(n)`'s n, read back from a saved DAG.
pub fn skip_limit(dag: &Value) -> Option<u64> {
    (dag.pointer("/skipErrorEvent/errorMode").and_then(Value::as_str) == Some("SkipData"))
        .then(|| dag.pointer("/skipErrorEvent/limit").and_then(Value::as_u64))
        .flatten()
}

/// `skipErrorEvent`: off, or `skip_error_event_by_limit(n)` (§8.7).
pub fn skip_error_event(limit: Option<u64>) -> Value {
    match limit {
        None => {
            json!({"errorMode": "Disable", "limitMode": "SkipByLimit", "errorModeEnum": "Disable", "limitModeEnum": "SkipByLimit"})
        }
        Some(n) => {
            json!({"errorMode": "SkipData", "limitMode": "SkipByLimit", "limit": n, "errorModeEnum": "SkipData", "limitModeEnum": "SkipByLimit"})
        }
    }
}

/// Rewrite a filter expression into JavaScript over `record`, as the official client means to
/// (§8.4, bug 16 fixed): bare identifiers get `record.`, but not keywords, literals, quoted text,
/// function names or already-qualified paths; `and`/`or`/`not` become `&&`/`||`/`!`; a lone `=`
/// becomes `==`.
pub fn filter_expression(expr: &str) -> String {
    const KEEP: [&str; 14] = [
        "true",
        "false",
        "null",
        "undefined",
        "NaN",
        "Infinity",
        "typeof",
        "instanceof",
        "in",
        "new",
        "record",
        "Math",
        "JSON",
        "Date",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::with_capacity(expr.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            let q = c;
            out.push(c);
            i += 1;
            while i < chars.len() {
                out.push(chars[i]);
                if chars[i] == '\\' && i + 1 < chars.len() {
                    out.push(chars[i + 1]);
                    i += 2;
                    continue;
                }
                if chars[i] == q {
                    i += 1;
                    break;
                }
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let prev = out.trim_end().chars().last();
            let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
            match word.as_str() {
                "and" => out.push_str("&&"),
                "or" => out.push_str("||"),
                "not" => out.push('!'),
                _ if prev == Some('.') || KEEP.contains(&word.as_str()) || next == Some('(') => out.push_str(&word),
                _ => {
                    out.push_str("record.");
                    out.push_str(&word);
                }
            }
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                out.push(chars[i]);
                i += 1;
            }
            continue;
        }
        if c == '=' {
            let prev = if i > 0 { chars[i - 1] } else { ' ' };
            let next = chars.get(i + 1).copied().unwrap_or(' ');
            if next == '=' {
                out.push_str("==");
                i += 2;
                if chars.get(i) == Some(&'=') {
                    out.push('=');
                    i += 1;
                }
                continue;
            }
            if !matches!(prev, '!' | '<' | '>' | '=') && next != '>' {
                out.push_str("==");
                i += 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_expressions_become_javascript_over_record() {
        assert_eq!(filter_expression("age >= 18 && name == \"bob\""), "record.age >= 18 && record.name == \"bob\"");
        assert_eq!(filter_expression("id > 2 and sex='male'"), "record.id > 2 && record.sex=='male'");
        assert_eq!(filter_expression("record.a > 1"), "record.a > 1");
        assert_eq!(filter_expression("x != null or Math.abs(y) < 1.5"), "record.x != null || Math.abs(record.y) < 1.5");
        assert_eq!(filter_expression("order_status = 'shipped'"), "record.order_status == 'shipped'");
    }

    #[test]
    fn exclude_script_is_the_official_one() {
        let n = column_filter(&["a".into(), "b".into()], false);
        assert_eq!(n["type"], "js_processor");
        assert_eq!(n["name"], "Exclude");
        assert_eq!(
            n["script"],
            "function process(record){\n\n\t// Enter you code at here\n\n    deleteFields = ['a', 'b'];\n    newRecord = record;\n    for (i in deleteFields) {\n        delete(newRecord[deleteFields[i]]);\n    }\n    return newRecord;\n    }"
        );
        let k = column_filter(&["a".into()], true);
        assert!(k["script"].as_str().unwrap_or("").contains("keepFields = ['a'];"));
    }

    #[test]
    fn rename_and_python_nodes() {
        let r = rename(&[("order_purchase_timestamp".into(), "purchase_timestamp".into())]);
        assert_eq!(
            r["operations"][0],
            json!({"field": "order_purchase_timestamp", "op": "RENAME", "operand": "purchase_timestamp"})
        );
        assert_eq!(r["type"], "field_rename_processor");
        let p = python("if not record['x']:\n    record['x'] = 1\nreturn record");
        assert_eq!(p["type"], "python_processor");
        assert_eq!(p["name"], "Python");
        assert!(p["script"].as_str().unwrap_or("").starts_with("import json"));
    }

    #[test]
    fn sink_node_has_the_trace_fields() {
        let conn: Connection = serde_json::from_value(
            json!({"id": "c2", "name": "M", "database_type": "MongoDB", "connection_type": "target", "pdkHash": "h"}),
        )
        .expect("a connection");
        let s = sink(&conn, "orders", &["order_id".into()]);
        assert_eq!(s["updateConditionFields"], json!(["order_id"]));
        assert_eq!(s["existDataProcessMode"], "keepData");
        assert_eq!(s["writeStrategy"], "updateOrInsert");
        assert_eq!(s["attrs"]["connectionName"], "M");
    }
}
