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

pub use super::rules::*;

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
    /// A target's `updateOrInsert` (the default; `updateWrite` is the same for a table
    /// target) or `appendWrite`.
    pub write_strategy: Option<String>,
    pub read_batch_size: Option<u64>,
    /// A source's filter: applied when `is_filter`.
    pub is_filter: bool,
    pub conditions: Vec<Value>,
    /// A source's query: `{command: executeQuery, params: {sql}}`, read when enabled.
    pub enable_custom_command: bool,
    pub custom_command: Option<Value>,
    /// A source's DDL handling: `enableDDL` with `ddlConfiguration` `SYNCHRONIZATION` (added
    /// columns reach the target as they are added) or `ERROR` (any DDL stops the flow); `FILTER`
    /// or disabled: columns are added as rows carry them.
    #[serde(rename = "enableDDL")]
    pub enable_ddl: bool,
    pub ddl_configuration: Option<String>,
    /// Connector-specific settings; `preImage` (`enablePreImage()`) is read.
    pub node_config: Option<Value>,
}

/// A database node's typed fields (a `migrate` task's source or target: TapFlow's `Pipeline`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DatabaseNode {
    pub connection_id: String,
    /// The tables a source reads (`custom`), or, for `expression`, those that matched when
    /// the flow was built (the engine matches again at every start).
    pub table_names: Vec<String>,
    /// `expression` (the tables whose names `tableExpression` matches) or `custom`.
    pub migrate_table_select_type: Option<String>,
    pub table_expression: Option<String>,
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
    Table(Box<TableNode>),
    /// `database`: a whole database, the source or the target of a `migrate` task.
    Database(Box<DatabaseNode>),
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
        let data_node = if matches!(ty.as_str(), "table" | "database") { DATA_NODE } else { &[] };
        check_fields(&what, "", obj, &[COMMON, data_node, rules], false)?;
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
            "table" => NodeKind::Table(Box::new(
                serde_json::from_value::<TableNode>(doc.clone())
                    .map_err(|e| Refusal { message: format!("{what}: {e}") })?,
            )),
            "database" => NodeKind::Database(Box::new(
                serde_json::from_value::<DatabaseNode>(doc.clone())
                    .map_err(|e| Refusal { message: format!("{what}: {e}") })?,
            )),
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
            NodeKind::Table(t) => Some(t.as_ref()),
            _ => None,
        }
    }

    /// The fields of a `database` node.
    pub fn database(&self) -> Option<&DatabaseNode> {
        match &self.kind {
            NodeKind::Database(d) => Some(d.as_ref()),
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
        .filter(|n| matches!(n.get("type").and_then(Value::as_str), Some("table" | "database")))
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
