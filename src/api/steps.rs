//! The processor nodes the engine runs, typed: read from a node's document in one place (after
//! the DAG's rules in [`super::dag`] accepted its fields), so no processor reads JSON itself and
//! a node of a shape the engine does not do is refused here, naming the node.

use crate::error::{Error, Result};
use serde_json::Value;

/// One processor node, as the engine runs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `field_rename_processor`: `(field, new name)` pairs, then an optional case transform
    /// (`toUpperCase`, `toLowerCase`) of the other fields.
    Rename { pairs: Vec<(String, String)>, transform: Option<String> },
    /// `field_add_del_processor`: fields removed, fields created (null), and with
    /// `deleteAllFields` the only fields kept.
    AddDel { remove: Vec<String>, create: Vec<String>, keep_only: Option<Vec<String>> },
    /// `row_filter_processor`: a JavaScript expression; `discard` drops the rows it matches,
    /// otherwise only they are kept.
    RowFilter { expression: String, discard: bool },
    /// `js_processor` / `standard_js_processor`: a script defining `process(record)`, and the
    /// key its records have when its `declareScript` sets one (`TapModelDeclare.setPk`).
    Js { script: String, pk: Vec<String> },
    /// `rhai_processor`: a Rhai script and the function each record goes through.
    Rhai { script: String, entry: String },
    /// `python_processor`: TapData's `def process(record, context)`, run by a CPython worker.
    Python { script: String },
    /// `union_processor`: events pass as they are.
    Union,
    /// `table_rename_processor`: `(origin, current)` names, else prefix + name + suffix.
    TableRename { map: Vec<(String, String)>, prefix: String, suffix: String },
    /// `add_date_field_processor`: a field holding the time each record went through.
    AddDate { field: String },
    /// `date_processor`: the date and time fields of the named types moved by `hours`
    /// (negative: back); no types, or TapFlow's default `["now"]`, moves every one.
    TimeAdjust { hours: i64, types: Vec<String> },
    /// `field_mod_type_filter_processor`: the fields of the named types removed.
    TypeFilter { types: Vec<String> },
    /// `field_mod_type_processor`: `(field, new type)` conversions.
    TypeAdjust { converts: Vec<(String, String)> },
    /// `unwind_processor`: the array at `path` unwound into rows keyed by `index`; `embedded`
    /// (else flattened), `objects`/`scalars` (TapData's arrayModel OBJECT, BASIC or MIX: which
    /// elements a flatten spreads into fields), `joiner`, `keep_null`.
    Unwind {
        node_id: String,
        path: String,
        embedded: bool,
        model: String,
        index: String,
        joiner: String,
        keep_null: bool,
    },
}

fn text<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
    node.get(key).and_then(Value::as_str)
}

impl Step {
    /// The node's step; `None` for nodes that are not processors (tables, the lookup merge).
    pub fn parse(node: &Value) -> Result<Option<Step>> {
        let ty = text(node, "type").unwrap_or("");
        let name = text(node, "name").unwrap_or(ty);
        let script = |what: &str| -> Result<String> {
            text(node, "script")
                .map(str::to_string)
                .ok_or_else(|| Error::config(format!("node {name:?} ({ty}) has no {what} script: give it as a string")))
        };
        Ok(Some(match ty {
            "field_rename_processor" => rename(node, name)?,
            "field_add_del_processor" => add_del(node, name)?,
            "row_filter_processor" => Step::RowFilter {
                expression: text(node, "expression").unwrap_or("true").to_string(),
                discard: text(node, "action") == Some("discard"),
            },
            // `declareScript` is checked by the DAG's rules: only added fields pass.
            "js_processor" | "standard_js_processor" => Step::Js {
                script: script("JavaScript")?,
                pk: text(node, "declareScript").unwrap_or("").lines().filter_map(declared_key).collect(),
            },
            // `entry` (ours, since functions may call each other); `process` in older nodes.
            "rhai_processor" => {
                Step::Rhai { script: script("Rhai")?, entry: text(node, "entry").unwrap_or("process").to_string() }
            }
            "python_processor" => Step::Python { script: script("Python")? },
            "union_processor" => Step::Union,
            "table_rename_processor" => {
                let map = node
                    .get("tableNames")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| {
                                Some((
                                    text(t, "originTableName")?.to_string(),
                                    text(t, "currentTableName")?.to_string(),
                                ))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let s = |k: &str| text(node, k).unwrap_or("").to_string();
                Step::TableRename { map, prefix: s("prefix"), suffix: s("suffix") }
            }
            "add_date_field_processor" => match text(node, "dateFieldName").filter(|f| !f.is_empty()) {
                Some(f) => Step::AddDate { field: f.to_string() },
                None => {
                    return Err(Error::config(format!(
                        "node {name:?} ({ty}) has no dateFieldName: name the field that gets the time"
                    )));
                }
            },
            "date_processor" => {
                let hours = node.get("hours").and_then(Value::as_i64).unwrap_or(0);
                let add = node.get("add").and_then(Value::as_bool).unwrap_or(true);
                Step::TimeAdjust { hours: if add { hours } else { -hours }, types: strings(node, "dataTypes") }
            }
            "field_mod_type_filter_processor" => {
                let types = strings(node, "filterTypes");
                if types.is_empty() {
                    return Err(Error::config(format!(
                        "node {name:?} ({ty}) names no types in filterTypes: give the types whose fields go"
                    )));
                }
                Step::TypeFilter { types }
            }
            "field_mod_type_processor" => type_adjust(node, name)?,
            "unwind_processor" => {
                let path = text(node, "path").unwrap_or_default();
                if path.is_empty() || path.contains('.') {
                    return Err(Error::unsupported(format!(
                        "node {name:?} ({ty}): path {path:?} must name a top-level array field"
                    )));
                }
                let index = text(node, "includeArrayIndex").unwrap_or_default();
                if index.is_empty() {
                    return Err(Error::config(format!(
                        "node {name:?} ({ty}) has no includeArrayIndex: the index field keys the rows an array becomes"
                    )));
                }
                Step::Unwind {
                    node_id: text(node, "id").unwrap_or_default().to_string(),
                    path: path.to_string(),
                    embedded: text(node, "unwindModel") == Some("EMBEDDED"),
                    model: text(node, "arrayModel").unwrap_or("BASIC").to_string(),
                    index: index.to_string(),
                    joiner: text(node, "joiner").unwrap_or("_").to_string(),
                    keep_null: node.get("preserveNullAndEmptyArrays").and_then(Value::as_bool).unwrap_or(true),
                }
            }
            "table" | "merge_table_processor" => return Ok(None),
            other => {
                return Err(Error::unsupported(format!(
                    "node {name:?} ({other}): {}",
                    super::dag::refused_type(other)
                )));
            }
        }))
    }
}

/// The field of a `TapModelDeclare.setPk(tapTable, 'field');` line.
pub fn declared_key(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("TapModelDeclare.setPk(")?;
    let rest = rest.trim_start().strip_prefix("tapTable")?.trim_start().strip_prefix(',')?.trim();
    let (q, rest) = (rest.chars().next()?, &rest[1..]);
    if q != '\'' && q != '"' {
        return None;
    }
    let (field, tail) = rest.split_once(q)?;
    let tail = tail.trim();
    (!field.is_empty() && (tail == ")" || tail == ");")).then(|| field.to_string())
}

fn strings(node: &Value, key: &str) -> Vec<String> {
    node.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Each conversion names a field and a type the engine converts to (`CONVERT`, TapFlow's only
/// operation); anything else is refused, naming the node.
fn type_adjust(node: &Value, name: &str) -> Result<Step> {
    let mut converts = Vec::new();
    for o in node.get("operations").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        if let Some(op) = o.get("op").filter(|op| op.as_str() != Some("CONVERT")) {
            return Err(Error::unsupported(format!(
                "node {name:?}: operation {op} is not a type conversion (CONVERT), which is all a field_mod_type_processor does"
            )));
        }
        let field = text(o, "field").or_else(|| text(o, "field_name")).unwrap_or_default();
        let to = text(o, "operand").or_else(|| text(o, "type")).unwrap_or_default();
        if field.is_empty() {
            return Err(Error::config(format!("node {name:?}: a conversion names no field")));
        }
        if crate::model::FieldType::of_name(to).is_none() {
            return Err(Error::unsupported(format!(
                "node {name:?} converts {field:?} to {to:?}, a type the engine does not know: use one of {}",
                crate::model::FieldType::NAMES
            )));
        }
        converts.push((field.to_string(), to.to_string()));
    }
    Ok(Step::TypeAdjust { converts })
}

/// Every rename must name a field and give a new name that is a non-empty string, and no two
/// fields may be renamed to the same name; anything else is refused, naming the node.
fn rename(node: &Value, name: &str) -> Result<Step> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for o in node.get("operations").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        if let Some(op) = o.get("op").filter(|op| op.as_str() != Some("RENAME")) {
            return Err(Error::unsupported(format!(
                "node {name:?}: operation {op} is not a rename (RENAME), which is all a field_rename_processor does here"
            )));
        }
        let field = text(o, "field").unwrap_or_default();
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
    let transform = text(node, "fieldsNameTransform").filter(|s| !s.is_empty()).map(str::to_string);
    Ok(Step::Rename { pairs, transform })
}

fn add_del(node: &Value, name: &str) -> Result<Step> {
    let ops = node.get("operations").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if let Some(op) =
        ops.iter().filter_map(|o| o.get("op")).find(|op| !matches!(op.as_str(), Some("REMOVE" | "CREATE")))
    {
        return Err(Error::unsupported(format!(
            "node {name:?}: operation {op} is neither REMOVE nor CREATE, the two a field_add_del_processor does here"
        )));
    }
    let field = |o: &Value| text(o, "field").map(str::to_string);
    let op = |o: &Value| text(o, "op").unwrap_or("").to_string();
    let operand_true = |o: &Value| o.get("operand").is_none_or(|v| v == &Value::Bool(true) || v == "true");
    let remove = ops.iter().filter(|o| op(o) == "REMOVE" && operand_true(o)).filter_map(field).collect();
    let create = ops.iter().filter(|o| op(o) == "CREATE").filter_map(field).collect();
    let keep_only = (node.get("deleteAllFields") == Some(&Value::Bool(true)))
        .then(|| ops.iter().filter(|o| !(op(o) == "REMOVE" && operand_true(o))).filter_map(field).collect());
    Ok(Step::AddDel { remove, create, keep_only })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn processor_nodes_parse_to_steps_and_bad_ones_are_refused_by_name() {
        let rename = json!({"type": "field_rename_processor", "name": "R",
            "operations": [{"op": "RENAME", "field": "a", "operand": "b"}]});
        assert_eq!(
            Step::parse(&rename).expect("parses"),
            Some(Step::Rename { pairs: vec![("a".into(), "b".into())], transform: None })
        );
        let js = json!({"type": "js_processor", "name": "J"});
        let err = Step::parse(&js).expect_err("no script");
        assert!(err.message.contains("node \"J\"") && err.message.contains("no JavaScript script"), "{}", err.message);
        let js = json!({"type": "js_processor", "name": "J", "script": 42});
        assert!(Step::parse(&js).is_err(), "a script that is a number is refused, not run as empty");
        assert_eq!(Step::parse(&json!({"type": "table"})).expect("a table"), None);
        let err = Step::parse(&json!({"type": "field_mod_type_processor", "name": "T",
            "operations": [{"op": "CONVERT", "field": "a", "operand": "geometry"}]}))
        .expect_err("unknown type");
        assert!(err.message.contains("\"geometry\"") && err.message.contains("varchar"), "{}", err.message);
        let t = json!({"type": "date_processor", "add": false, "hours": 3, "dataTypes": ["datetime"]});
        assert_eq!(
            Step::parse(&t).expect("parses"),
            Some(Step::TimeAdjust { hours: -3, types: vec!["datetime".into()] })
        );
        assert_eq!(declared_key("TapModelDeclare.setPk(tapTable, 'code');"), Some("code".into()));
        assert_eq!(declared_key("TapModelDeclare.setPk(tapTable, \"a b\")"), Some("a b".into()));
        assert_eq!(declared_key("TapModelDeclare.setPk(other, 'code');"), None);
        assert_eq!(declared_key("TapModelDeclare.setPk(tapTable, 'code'); evil()"), None);
        let err = Step::parse(&json!({"type": "unwind_processor", "name": "U", "path": "a.b"})).expect_err("nested");
        assert!(err.message.contains("\"U\"") && err.message.contains("top-level"), "{}", err.message);
    }
}
