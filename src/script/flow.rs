//! `Flow`: the builder of a TapData sync task, and its lifecycle (save, start, stop, …).
//!
//! A flow value is a cheap handle (`Arc<Mutex<…>>`), so Rhai's copies on assignment all point
//! to one flow. Building emits TapData's node JSON ([`super::nodes`]); `save()` creates the task,
//! or — when a flow of that name exists — replaces its DAG, so re-running a script is idempotent.

use super::chain::text;
use super::nodes;
use crate::api::connection::Connection;
use crate::api::task::TaskStatus;
use crate::commands::resolve;
use crate::commands::session::Session;
use crate::commands::tasks::{last_error, wait_status};
use crate::error::{Error, Result};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct FlowState {
    pub name: String,
    pub id: Option<String>,
    pub nodes: Vec<Value>,
    pub edges: Vec<(String, String)>,
    /// The node the next step attaches to.
    pub stage: Option<String>,
    /// (node id, table) of every source read, in order.
    pub sources: Vec<(String, String)>,
    /// Primary key of the last source read (after renames), for the sink key.
    pub key: Vec<String>,
    pub sink: Option<String>,
    pub sync_type: String,
    /// `Pipeline(name)`: a `migrate` task, reading and writing whole databases.
    pub migrate: bool,
    pub merge: Option<String>,
    pub uses_rhai: bool,
    /// A source or a lookup reads a query: the flow is snapshot-only.
    pub query_source: bool,
    /// `skip_error_event_by_limit(n)`.
    pub skip_limit: Option<u64>,
    /// `enable_join_value_change()`: the lookups added after it say so.
    pub join_value_change: bool,
    /// `config(#{ … })`: task settings laid over the defaults.
    pub settings: serde_json::Map<String, Value>,
    /// Loaded from a saved flow (`Flow("existing")`): `read_from` starts the DAG anew, other
    /// steps go before its sink, `write_to` replaces the sink.
    pub loaded: bool,
    /// The DAG as last saved, so `start()` saves again only when the flow changed since (the
    /// official client re-saves on every start, §13 bug 12).
    pub saved_dag: Option<Value>,
}

#[derive(Clone)]
pub struct Flow(pub Arc<Mutex<FlowState>>);

impl Flow {
    pub fn new(name: &str) -> Self {
        Flow(Arc::new(Mutex::new(FlowState {
            name: name.to_string(),
            sync_type: "initial_sync+cdc".into(),
            ..Default::default()
        })))
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut FlowState) -> T) -> T {
        let mut g = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    pub fn name(&self) -> String {
        self.with(|s| s.name.clone())
    }
}

impl FlowState {
    pub(super) fn add(&mut self, node: Value) -> String {
        let id = node.get("id").and_then(Value::as_str).unwrap_or("").to_string();
        // A loaded flow keeps its sink: the step goes in before it (TapFlow's append).
        if let (true, Some(sink), Some(stage)) = (self.loaded, self.sink.clone(), self.stage.clone()) {
            self.edges.retain(|(s, t)| !(*s == stage && *t == sink));
            self.edges.push((stage, id.clone()));
            self.edges.push((id.clone(), sink));
            self.nodes.push(node);
            self.stage = Some(id.clone());
            return id;
        }
        if let Some(stage) = &self.stage {
            self.edges.push((stage.clone(), id.clone()));
        }
        self.nodes.push(node);
        self.stage = Some(id.clone());
        id
    }

    /// The connection id of the source node `node_id` (empty if there is none).
    pub fn source_connection(&self, node_id: &str) -> String {
        self.nodes
            .iter()
            .find(|n| n.get("id").and_then(Value::as_str) == Some(node_id))
            .and_then(|n| n.get("connectionId").and_then(Value::as_str))
            .unwrap_or_default()
            .to_string()
    }

    pub(super) fn require_source(&self, what: &str) -> Result<()> {
        if self.stage.is_none() {
            return Err(Error::usage(format!("{what}: call read_from(\"Connection.table\") first")));
        }
        if self.sink.is_some() && !self.loaded {
            return Err(Error::usage(format!(
                "{what}: the flow already has its target (write_to); add steps before it"
            )));
        }
        Ok(())
    }

    pub fn dag(&self) -> Value {
        let edges: Vec<Value> = self.edges.iter().map(|(s, t)| json!({"source": s, "target": t})).collect();
        let mut dag = json!({"edges": edges, "nodes": self.nodes});
        if let (Some(d), Some(s)) = (dag.as_object_mut(), nodes::sync_settings(&self.sync_type).as_object()) {
            d.insert("skipErrorEvent".into(), nodes::skip_error_event(self.skip_limit));
            for (k, v) in s {
                d.insert(k.clone(), v.clone());
            }
            for (k, v) in &self.settings {
                d.insert(k.clone(), v.clone());
            }
        }
        dag
    }

    /// The Rhai builder chain that recreates the flow, rendered from its DAG.
    pub fn show(&self) -> String {
        super::chain::render(&self.name, &self.dag(), if self.migrate { "migrate" } else { "sync" }, &self.sync_type)
    }

    /// A saved flow's state, from its task document.
    pub fn from_task(task: &crate::api::task::Task) -> FlowState {
        let dag = task.extra.get("dag").cloned().unwrap_or(Value::Null);
        let nodes: Vec<Value> = dag.get("nodes").and_then(Value::as_array).cloned().unwrap_or_default();
        let edges = crate::commands::objects::dag_edges(&dag);
        let id_of = |n: &Value| text(n, "id");
        let sink = nodes.iter().map(id_of).find(|id| !edges.iter().any(|(s, _)| s == id) && !edges.is_empty());
        let stage = sink.as_ref().and_then(|k| edges.iter().find(|(_, t)| t == k).map(|(s, _)| s.clone()));
        let sources = nodes
            .iter()
            .filter(|n| matches!(text(n, "type").as_str(), "table" | "database"))
            .filter(|n| !edges.iter().any(|(_, t)| *t == id_of(n)))
            .map(|n| (id_of(n), text(n, "tableName")))
            .collect();
        let sink_node = nodes.iter().find(|n| Some(id_of(n)) == sink);
        let key = sink_node
            .and_then(|n| n.get("updateConditionFields"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let sync_type = if task.kind.is_empty() { "initial_sync+cdc".to_string() } else { task.kind.clone() };
        let settings = nodes::changed_settings(&dag, &sync_type);
        let skip_limit = nodes::skip_limit(&dag);
        FlowState {
            name: task.name.clone(),
            id: Some(task.id.clone()),
            merge: nodes.iter().find(|n| text(n, "type") == "merge_table_processor").map(id_of),
            uses_rhai: nodes.iter().any(|n| text(n, "type") == "rhai_processor"),
            query_source: nodes.iter().any(|n| n.get("enableCustomCommand") == Some(&Value::Bool(true))),
            migrate: task.sync_type == "migrate",
            nodes,
            edges,
            stage,
            sources,
            key,
            sink,
            sync_type,
            settings,
            skip_limit,
            loaded: true,
            saved_dag: Some(dag),
            ..Default::default()
        }
    }
}

/// `Flow(name)` / `Pipeline(name)`: the saved flow of that name, loaded (TapFlow reloads it),
/// else a new one.
pub fn open(session: &Session, name: &str, migrate: bool) -> Result<Flow> {
    let found = session.client.tasks()?.into_iter().find(|t| t.name == name);
    let Some(doc) = found else {
        let f = Flow::new(name);
        f.with(|s| s.migrate = migrate);
        return Ok(f);
    };
    let task = session.client.task(&doc.id)?.unwrap_or(doc);
    // A saved flow loads as what it is: `Flow("p")` on a saved Pipeline is that pipeline.
    let state = FlowState::from_task(&task);
    Ok(Flow(Arc::new(Mutex::new(state))))
}

pub(super) fn split_target(sig: &str) -> Result<(&str, &str)> {
    sig.split_once('.')
        .filter(|(c, t)| !c.is_empty() && !t.is_empty())
        .ok_or_else(|| Error::usage(format!("expected \"Connection.table\", got {sig:?}")))
}

/// The connection and the table's primary key fields (M1/M3 + M2 in the official client).
pub(super) fn table_info(session: &Session, sig: &str) -> Result<(Connection, String, Vec<String>)> {
    let (c, t) = split_target(sig)?;
    let conn = resolve::connection(session, c)?;
    let key = session.client.table(&conn.id, t)?.map(|m| m.primary_key()).unwrap_or_default();
    Ok((conn, t.to_string(), key))
}

pub fn read_from(session: &Session, flow: &Flow, sig: &str) -> Result<()> {
    read_from_node(session, flow, sig, &serde_json::Map::new())
}

/// `read_from`, with node fields a `Source(…)` set.
pub fn read_from_node(
    session: &Session,
    flow: &Flow,
    sig: &str,
    fields: &serde_json::Map<String, Value>,
) -> Result<()> {
    start_anew(flow);
    if flow.with(|s| s.migrate) {
        return super::pipeline::read_database(session, flow, sig, fields);
    }
    if !sig.contains('.') && !sig.is_empty() {
        return Err(Error::usage(format!(
            "read_from({sig:?}) reads a whole database, which a Pipeline does: Pipeline(\"name\").read_from({sig:?}); \
             a Flow reads one table: read_from(\"{sig}.table\")"
        )));
    }
    let (c, t) = split_target(sig)?;
    let conn = resolve::connection(session, c)?;
    if !conn.can_read() {
        return Err(Error::usage(format!("cannot read from {c}: it is a target-only connection")));
    }
    let meta = session.client.table(&conn.id, t)?;
    let Some(meta) = meta else {
        let tables = session.client.tables(&conn.id)?;
        let mut names: Vec<&str> = tables.iter().map(|m| m.original_name.as_str()).collect();
        names.sort_unstable();
        return Err(Error::not_found(format!(
            "cannot read from the non-existent table {c}.{t}; tables of {c}: {}",
            if names.is_empty() { "none".into() } else { names.join(", ") }
        )));
    };
    let key = meta.primary_key();
    let mut node = nodes::source(&conn, t);
    if let Some(o) = node.as_object_mut() {
        o.extend(fields.iter().filter(|(k, _)| *k != "quiet").map(|(k, v)| (k.clone(), v.clone())));
    }
    let id = node["id"].as_str().unwrap_or("").to_string();
    flow.with(|s| {
        if s.sink.is_some() {
            return Err(Error::usage("read_from after write_to: a flow reads first, then writes"));
        }
        let stage = s.stage.take();
        s.nodes.push(node);
        if s.sources.is_empty() || stage.is_none() {
            s.stage = Some(id.clone());
        } else {
            s.stage = stage;
        }
        s.sources.push((id, t.to_string()));
        s.key = key;
        Ok(())
    })?;
    if !fields.get("quiet").and_then(Value::as_bool).unwrap_or(false) {
        session.out.text("Flow updated: source added");
    }
    Ok(())
}

pub fn write_to(session: &Session, flow: &Flow, sig: &str, pk: Option<Vec<String>>) -> Result<()> {
    write_to_node(session, flow, sig, pk, &serde_json::Map::new())
}

/// `write_to`, with node fields a `Sink(…)` set.
pub fn write_to_node(
    session: &Session,
    flow: &Flow,
    sig: &str,
    pk: Option<Vec<String>>,
    fields: &serde_json::Map<String, Value>,
) -> Result<()> {
    drop_loaded_sink(flow);
    if flow.with(|s| s.migrate) {
        return super::pipeline::write_database(session, flow, sig, fields);
    }
    let (c, t) = split_target(sig)?;
    let conn = resolve::connection(session, c)?;
    if !conn.can_write() {
        return Err(Error::usage(format!("cannot write to {c}: it is a source-only connection")));
    }
    flow.with(|s| {
        s.require_source("write_to")?;
        let key = pk.unwrap_or_else(|| s.key.clone());
        let mut node = nodes::sink(&conn, t, &key);
        if let Some(o) = node.as_object_mut() {
            o.extend(fields.clone());
        }
        let id = s.add(node);
        s.sink = Some(id);
        Ok::<_, Error>(())
    })?;
    session.out.text("Flow updated: sink added");
    Ok(())
}

/// `read_from` on a loaded flow: the script defines the flow again, from its first source.
pub fn start_anew(flow: &Flow) {
    flow.with(|s| {
        if s.loaded {
            *s = FlowState {
                name: std::mem::take(&mut s.name),
                id: s.id.take(),
                migrate: s.migrate,
                saved_dag: s.saved_dag.take(),
                sync_type: "initial_sync+cdc".into(),
                ..Default::default()
            };
        }
    });
}

/// `write_to` on a loaded flow: the new target replaces the saved one.
pub fn drop_loaded_sink(flow: &Flow) {
    flow.with(|s| {
        if let (true, Some(sink)) = (s.loaded, s.sink.take()) {
            s.nodes.retain(|n| n.get("id").and_then(Value::as_str) != Some(sink.as_str()));
            s.edges.retain(|(_, t)| *t != sink);
        }
    });
}

pub fn add_step(session: &Session, flow: &Flow, what: &str, node: Value, message: &str) -> Result<()> {
    flow.with(|s| {
        s.require_source(what)?;
        s.add(node);
        Ok::<_, Error>(())
    })?;
    session.out.text(&format!("Flow updated: {message}"));
    Ok(())
}

/// Renames change the sink key the flow will use.
pub fn rename_key(flow: &Flow, pairs: &[(String, String)]) {
    flow.with(|s| {
        for k in &mut s.key {
            if let Some((_, to)) = pairs.iter().find(|(from, _)| from == k) {
                *k = to.clone();
            }
        }
    });
}

/// Find the id of an existing flow by exact name (T3-like), if any.
fn existing_id(session: &Session, name: &str) -> Result<Option<String>> {
    let tasks = session.client.tasks()?;
    Ok(tasks.iter().find(|t| t.name == name).map(|t| t.id.clone()))
}

/// Save: create (T6) or, when the name exists, update (T7); then confirm (T8).
pub fn save(session: &Session, flow: &Flow) -> Result<String> {
    let (name, dag, sink, uses_rhai, has_nodes, migrate) =
        flow.with(|s| (s.name.clone(), s.dag(), s.sink.clone(), s.uses_rhai, !s.nodes.is_empty(), s.migrate));
    if !has_nodes {
        return Err(Error::usage(format!("flow {name} has nothing to save: add read_from and write_to")));
    }
    if sink.is_none() {
        return Err(Error::usage(format!(
            "flow {name} has no target: add .write_to(\"Connection.table\") before save()"
        )));
    }
    if uses_rhai && !session.is_embedded() {
        return Err(Error::unsupported(format!(
            "flow {name} uses a Rhai function (.rhai), which only the embedded engine runs; use .js(...) on a TapData cluster"
        )));
    }
    let user_id = session.client.user_id();
    let username = session.client.username();
    let now = crate::model::now_ms();
    let saved_dag = dag.clone();
    let mut job = json!({
        "editVersion": now, "syncType": if migrate { "migrate" } else { "sync" }, "name": name, "status": "edit", "env": {}, "dag": dag,
        "user_id": user_id, "customId": user_id, "createUser": username, "syncPoints": [],
        "dynamicAdjustMemoryUsage": true, "crontabExpressionFlag": false, "skipErrorEvent": dag.get("skipErrorEvent").cloned().unwrap_or_else(|| nodes::skip_error_event(None)),
    });
    // Cloud requests carry no user (no login): leave the owner to the server rather than send
    // empty strings as the official client does (§13 bug 29).
    if user_id.is_empty()
        && let Some(o) = job.as_object_mut()
    {
        for k in ["user_id", "customId", "createUser"] {
            o.remove(k);
        }
    }
    let known = flow.with(|s| s.id.clone());
    let id = match known {
        Some(id) => id,
        None => match session.client.call_result(Method::POST, "/Task", &[], Some(&job))? {
            Ok(data) => data
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| Error::remote("the server created the flow but returned no id"))?,
            Err(e) if e.code == "Task.RepeatName" => existing_id(session, &name)?
                .ok_or_else(|| Error::remote(format!("flow {name} exists but cannot be found by name")))?,
            Err(e) => return Err(e.error("").context("save failed")),
        },
    };
    if let Some(sink_id) = &sink {
        // The official client asks for the target's deduced schema here (M5); harmless.
        let _ = session.client.get("/MetadataInstances/node/schema", &[("nodeId", sink_id.clone())]);
    }
    let patch = json!({"dag": {"nodes": job["dag"]["nodes"], "edges": job["dag"]["edges"]},
                       "editVersion": crate::model::now_ms(), "env": {}, "id": id});
    session.client.call(Method::PATCH, "/Task", &[], Some(&patch))?;
    let dag_copy = job["dag"].clone();
    if let Some(o) = job.as_object_mut() {
        o.insert("id".into(), json!(id));
        if let Some(d) = dag_fields(&dag_copy) {
            for (k, v) in d {
                o.entry(k).or_insert(v);
            }
        }
    }
    session
        .client
        .call(Method::PATCH, &format!("/Task/confirm/{id}"), &[], Some(&job))
        .map_err(|e| e.context("save failed"))?;
    flow.with(|s| {
        s.id = Some(id.clone());
        s.saved_dag = Some(saved_dag);
    });
    Ok(id)
}

fn dag_fields(dag: &Value) -> Option<Vec<(String, Value)>> {
    dag.as_object().map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// The flow's id: saved in this session, or found on the server by name.
pub fn id_of(session: &Session, flow: &Flow) -> Result<String> {
    if let Some(id) = flow.with(|s| s.id.clone()) {
        return Ok(id);
    }
    let name = flow.name();
    let doc = resolve::flow(session, &name)?;
    let id = doc.id;
    flow.with(|s| s.id = Some(id.clone()));
    Ok(id)
}

/// Start: save first when the flow has steps not saved yet, then batchStart and wait for
/// `running`.
pub fn start(session: &Session, flow: &Flow) -> Result<()> {
    let unsaved = flow.with(|s| !s.nodes.is_empty() && (s.id.is_none() || s.saved_dag.as_ref() != Some(&s.dag())));
    let id = if unsaved { save(session, flow)? } else { id_of(session, flow)? };
    let task = session.client.task(&id)?.ok_or_else(|| Error::not_found(format!("flow {} vanished", flow.name())))?;
    if matches!(task.status, TaskStatus::Running | TaskStatus::Scheduling | TaskStatus::WaitRun) {
        session.out.text(&format!("flow {} is already {}", flow.name(), task.status));
        return Ok(());
    }
    if !session.is_embedded() {
        // TapData deduces the schema after a save; the official client waits 3 s too.
        session.sleep(Duration::from_secs(3))?;
    }
    session.client.start_task(&id).map_err(|e| e.context(format!("cannot start flow {}", flow.name())))?;
    wait_status(session, &id, &[TaskStatus::Running, TaskStatus::Complete], Duration::from_secs(60))?;
    session.out.text(&format!("flow {} started", flow.name()));
    Ok(())
}

/// Wait until the initial sync is done (CDC phase reached, or complete).
pub fn wait_initial_sync(session: &Session, id: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    crate::commands::progress::follow(session, id, Some(deadline))?;
    loop {
        let task = session.client.task(id)?.ok_or_else(|| Error::not_found(format!("flow {id} vanished")))?;
        if task.initial_sync_done() {
            return Ok(());
        }
        if task.status == TaskStatus::Error {
            return Err(Error::data(format!("flow failed: {}", last_error(session, &task))));
        }
        if matches!(task.status, TaskStatus::Stop | TaskStatus::Edit | TaskStatus::WaitStart) {
            return Err(Error::usage(format!("flow is {}: start it first", task.status)));
        }
        if Instant::now() > deadline {
            return Err(Error::unavailable(format!("the initial sync is not done after {}s", timeout.as_secs())));
        }
        session.sleep(Duration::from_millis(200))?;
    }
}

/// Preview: save, then ask the cluster for the first rows out of the target node (T19).
pub fn preview(session: &Session, flow: &Flow, rows: usize) -> Result<()> {
    let id = save(session, flow)?;
    let task = session.client.task(&id)?.ok_or_else(|| Error::not_found(format!("flow {} vanished", flow.name())))?;
    crate::commands::objects::preview(session, &task, rows).map(|_| ())
}
