//! Verbs on connections and on a flow's definition: `validate datasource`, `desc datasource`,
//! `desc job`, `delete datasource`, `preview`, `show agents`, `show apis`; and TapFlow's typed
//! forms (`start job X`, `delete datasource X`), which name what the last word is.

use super::*;
use reqwest::Method;
use std::time::Instant;

/// How `show FLOW` prints a saved flow: the script layer installs the renderer of its builder
/// chain (this layer knows no builders); without it the DAG is printed.
pub static CHAIN: std::sync::OnceLock<fn(&Task) -> String> = std::sync::OnceLock::new();

/// `show FLOW`: the Rhai that recreates the flow (secrets are not in a DAG; masked anyway).
pub fn show_flow(session: &Session, doc: &Task) -> Result<()> {
    let mut task = session.client.task(&doc.id)?.unwrap_or_else(|| doc.clone());
    name_connections(session, &mut task)?;
    let mut dag = task.extra.get("dag").cloned().unwrap_or(Value::Null);
    crate::output::mask_secrets(&mut dag);
    match CHAIN.get() {
        Some(render) => {
            let chain = render(&task);
            session.out.either(&chain, &json!({"flow": task.name, "chain": chain, "dag": dag}));
        }
        None => session.out.record(&dag),
    }
    Ok(())
}

/// A node saved without its connection's name (a flow made in TapData's UI, say) gets it from
/// the connection list, so the printed chain can name it.
fn name_connections(session: &Session, task: &mut Task) -> Result<()> {
    let Some(nodes) = task.extra.get_mut("dag").and_then(|d| d.get_mut("nodes")).and_then(Value::as_array_mut) else {
        return Ok(());
    };
    let unnamed = |n: &Value| {
        n.get("connectionId").is_some()
            && n.pointer("/attrs/connectionName").and_then(Value::as_str).is_none_or(str::is_empty)
    };
    if !nodes.iter().any(unnamed) {
        return Ok(());
    }
    let conns = session.client.connections()?;
    for n in nodes.iter_mut().filter(|n| unnamed(n)) {
        if let Some(c) = conns.iter().find(|c| c.id == s(n, "connectionId")) {
            if !n.get("attrs").is_some_and(Value::is_object) {
                n["attrs"] = json!({});
            }
            n["attrs"]["connectionName"] = json!(c.name);
        }
    }
    Ok(())
}

/// What a typed form's second word says the name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Flow,
    Connection,
    Table,
    Api,
}

/// `start job X` → (Some(Flow), [X]); `start X` → (None, [X]). A lone word is a name (a flow may
/// be called `job`).
pub fn typed(args: &[String]) -> (Option<Kind>, Vec<String>) {
    let kind = if args.len() < 2 { None } else { args.first().and_then(|a| kind_word(a)) };
    (kind, if kind.is_some() { args[1..].to_vec() } else { args.to_vec() })
}

/// The kind a typed form's word names (`job`, `datasource`, `table`, `api`, …).
pub fn kind_word(word: &str) -> Option<Kind> {
    match word.to_ascii_lowercase().as_str() {
        "job" | "jobs" | "flow" | "flows" | "pipeline" | "task" => Some(Kind::Flow),
        "datasource" | "datasources" | "connection" | "connections" | "db" | "dbs" | "conn" => Some(Kind::Connection),
        "table" | "tables" => Some(Kind::Table),
        "api" | "apis" => Some(Kind::Api),
        _ => None,
    }
}

/// The arguments of a verb that acts on flows only, with its typed form's word removed.
pub fn flow_args(verb: &Verb, args: &[String]) -> Result<Vec<String>> {
    match typed(args) {
        (None | Some(Kind::Flow), rest) => Ok(rest),
        (Some(other), rest) => Err(Error::usage(format!(
            "{} works on flows, not on a {}: `{} {}` (usage: {})",
            verb.name,
            match other {
                Kind::Connection => "datasource",
                Kind::Table => "table",
                _ => "Data API",
            },
            verb.name,
            rest.first().map(String::as_str).unwrap_or("FLOW"),
            verb.usage
        ))),
    }
}

/// Poll the connection until its schema load ends; an invalid connection is an error.
pub fn wait_loaded(session: &Session, id: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let step = if session.is_embedded() { Duration::from_millis(100) } else { Duration::from_secs(2) };
    loop {
        let doc =
            session.client.connection(id)?.ok_or_else(|| Error::not_found(format!("connection {id} vanished")))?;
        let load = doc.load_fields_status.as_str();
        if matches!(load, "finished" | "error" | "invalid") {
            if doc.status == "invalid" || load != "finished" {
                let detail = doc.extra.get("response_body").and_then(|b| b.pointer("/validate_details/0/fail_message"));
                let why = Some(doc.load_error.as_str())
                    .filter(|e| !e.is_empty())
                    .or_else(|| detail.and_then(Value::as_str))
                    .unwrap_or("the connection test failed");
                let name = if doc.name.is_empty() { id } else { doc.name.as_str() };
                return Err(Error::unavailable(format!("connection {name} is invalid: {why}")));
            }
            return Ok(load.to_string());
        }
        if Instant::now() > deadline {
            return Err(Error::unavailable(format!(
                "the schema of connection {id} is still loading after {}s",
                timeout.as_secs()
            )));
        }
        session.sleep(step)?;
    }
}

/// Test a saved connection again and reload its schema (TapFlow's `validate`): `submit: true`,
/// then wait for the load.
pub fn validate_connection(session: &Session, conn: &crate::api::connection::Connection) -> Result<()> {
    // A cluster's PATCH needs the connector (`database_type`), or the server fails on it.
    let id = conn.id.as_str();
    let body = json!({"id": id, "database_type": conn.database_type, "submit": true});
    session.client.call(Method::PATCH, &format!("/Connections/{id}"), &[], Some(&body))?;
    let status = wait_loaded(session, id, Duration::from_secs(480))?;
    session.out.text(&format!("load schema status: {status}"));
    session.out.text("connection test passed");
    Ok(())
}

/// `desc datasource X`: the saved connection as the server shows it, secrets masked.
pub fn desc_connection(session: &Session, name: &str) -> Result<()> {
    let c = resolve::connection(session, name)?;
    let doc = session.client.connection(&c.id)?.unwrap_or(c);
    let mut config = Value::Object(doc.config.clone());
    crate::output::mask_secrets(&mut config);
    if session.out.json {
        session.out.value(&json!({"name": doc.name, "connector": doc.database_type, "type": doc.connection_type,
                                  "status": doc.status, "config": config}));
        return Ok(());
    }
    let mut rows = vec![
        vec!["name".to_string(), doc.name.clone()],
        vec!["connector".into(), doc.database_type.clone()],
        vec!["type".into(), doc.connection_type.clone()],
        vec!["status".into(), doc.status.clone()],
    ];
    for (k, v) in config.as_object().into_iter().flatten() {
        let shown = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        rows.push(vec![format!("config.{k}"), shown]);
    }
    session.out.table(&["field", "value"], rows);
    Ok(())
}

/// `delete datasource X`: refused by the server while a flow uses it.
pub fn delete_connection(session: &Session, doc: &crate::api::connection::Connection) -> Result<()> {
    session.client.call(Method::DELETE, &format!("/Connections/{}", doc.id), &[], None)?;
    session.out.either(&format!("connection {} deleted", doc.name), &json!({"deleted": doc.name}));
    Ok(())
}

/// The whole task document, DAG included (the list leaves it out).
pub fn full_task(session: &Session, name: &str) -> Result<Task> {
    let doc = resolve::flow(session, name)?;
    Ok(session.client.task(&doc.id)?.unwrap_or(doc))
}

/// The DAG's edges as (source, target) node ids.
pub fn dag_edges(dag: &Value) -> Vec<(String, String)> {
    dag.get("edges")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| (s(e, "source").to_string(), s(e, "target").to_string()))
        .collect()
}

/// The DAG's nodes in flow order: sources first, each node after the ones that feed it.
pub fn ordered_nodes(dag: &Value) -> Vec<Value> {
    let nodes = dag.get("nodes").and_then(Value::as_array).cloned().unwrap_or_default();
    let edges = dag_edges(dag);
    let mut placed: Vec<String> = Vec::new();
    let mut out = Vec::new();
    while out.len() < nodes.len() {
        let before = out.len();
        for n in &nodes {
            let id = s(n, "id").to_string();
            if placed.contains(&id) {
                continue;
            }
            if edges.iter().filter(|(_, t)| *t == id).all(|(src, _)| placed.contains(src)) {
                placed.push(id);
                out.push(n.clone());
            }
        }
        if out.len() == before {
            // A cycle (not a DAG): keep the rest in stored order rather than loop.
            out.extend(nodes.iter().filter(|n| !placed.contains(&s(n, "id").to_string())).cloned());
            break;
        }
    }
    out
}

/// `desc job X`: the flow node by node, as TapFlow's `Job.desc()` dumps it.
pub fn desc_flow(session: &Session, name: &str) -> Result<()> {
    let task = full_task(session, name)?;
    let dag = task.extra.get("dag").cloned().unwrap_or(Value::Null);
    let nodes = ordered_nodes(&dag);
    if session.out.json {
        let mut v = json!({"name": task.name, "status": task.status.to_string(), "type": task.kind,
                           "syncType": task.sync_type, "nodes": nodes});
        crate::output::mask_secrets(&mut v);
        session.out.value(&v);
        return Ok(());
    }
    session.out.line(&format!(
        "flow {}: {} ({}), status {}",
        task.name,
        if task.sync_type == "migrate" { "a pipeline" } else { "a flow" },
        if task.kind.is_empty() { "initial_sync+cdc" } else { &task.kind },
        task.status
    ));
    let rows = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let what = match s(n, "type") {
                "table" | "database" => {
                    let table = [s(n, "tableName"), s(n, "name")].into_iter().find(|t| !t.is_empty()).unwrap_or("");
                    let conn = n.pointer("/attrs/connectionName").and_then(Value::as_str).unwrap_or("");
                    format!("{conn}.{table}").trim_start_matches('.').to_string()
                }
                _ => s(n, "name").to_string(),
            };
            vec![(i + 1).to_string(), s(n, "type").to_string(), what, node_detail(n)]
        })
        .collect();
    session.out.table(&["#", "node", "what", "detail"], rows);
    Ok(())
}

fn node_detail(n: &Value) -> String {
    let list = |k: &str| -> String {
        n.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|x| x.as_str().unwrap_or("")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    match s(n, "type") {
        "table" if n.get("updateConditionFields").is_some() => {
            format!("key {}; {}", list("updateConditionFields"), s(n, "writeStrategy"))
        }
        "table" => ["filter", "query"]
            .iter()
            .find_map(|k| n.get(*k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(|v| format!("{k}: {v}")))
            .unwrap_or_default(),
        "row_filter_processor" => format!("{} {}", s(n, "action"), s(n, "expression")),
        "field_rename_processor" => n
            .get("operations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|o| format!("{} → {}", s(o, "field"), s(o, "operand")))
            .collect::<Vec<_>>()
            .join(", "),
        "merge_table_processor" => {
            let count = n.get("mergeProperties").map(|m| m.to_string().matches("\"tableName\"").count()).unwrap_or(0);
            format!("{count} tables merged")
        }
        _ => String::new(),
    }
}

/// `preview FLOW`: the first rows out of the flow's target node, without running it (T19).
pub fn preview(session: &Session, task: &Task, rows: usize) -> Result<Vec<Value>> {
    let started = Instant::now();
    let data = session.client.preview(task, rows)?;
    let dag = task.extra.get("dag").cloned().unwrap_or(Value::Null);
    let sinks: Vec<String> = {
        let nodes = ordered_nodes(&dag);
        let feeds: Vec<&str> =
            dag.get("edges").and_then(Value::as_array).into_iter().flatten().map(|e| s(e, "source")).collect();
        nodes.iter().map(|n| s(n, "id").to_string()).filter(|id| !feeds.contains(&id.as_str())).collect()
    };
    let sink = sinks.first().cloned().unwrap_or_default();
    let result = data.pointer(&format!("/nodeResult/{sink}")).cloned().unwrap_or(Value::Null);
    if let Some(err) = result.get("errorMsg").and_then(Value::as_str) {
        return Err(Error::data(format!("preview of {} failed: {err}", task.name)));
    }
    let records = result.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
    session.out.text(&format!("preview view took {} ms", started.elapsed().as_millis()));
    if session.out.json {
        session.out.value(&Value::Array(records.clone()));
    } else if records.is_empty() {
        session.out.line("no rows reach the target (a filter may drop them all)");
    } else {
        for r in &records {
            session.out.record(r);
        }
    }
    Ok(records)
}

/// `show agents`: the running agents (TapFlow's A3); the embedded engine is its own one.
pub fn show_agents(session: &Session) -> Result<()> {
    let data = session.client.get("/agent", &[])?;
    let items = crate::client::items(data);
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|a| {
            let ip = a.pointer("/metric/systemInfo/ips/0").and_then(Value::as_str).unwrap_or("").to_string();
            let cpus = a.pointer("/metric/systemInfo/cpus").map(|c| c.to_string()).unwrap_or_default();
            vec![s(a, "name").to_string(), s(a, "status").to_string(), ip, cpus]
        })
        .collect();
    let running = items.iter().filter(|a| s(a, "status").eq_ignore_ascii_case("running")).count();
    session.out.text(&format!("running agents: {running}"));
    session.out.table(&["name", "status", "ip", "cpus"], rows);
    Ok(())
}

/// `show apis`: the published Data APIs (`GET /Modules`, TapFlow's B15). The embedded engine
/// publishes none: it says so rather than show an empty list as if it could.
pub fn show_apis(session: &Session, like: Option<&str>) -> Result<()> {
    if session.is_embedded() {
        return Err(Error::unsupported(
            "the embedded engine publishes no Data APIs (TapData's API server does): `show apis` lists them on a TapData cluster profile",
        ));
    }
    let q = [("order", "createAt DESC".to_string()), ("limit", "20".to_string()), ("skip", "0".to_string())];
    let data = session.client.get("/Modules", &q)?;
    let rows: Vec<Vec<String>> = crate::client::items(data)
        .iter()
        .filter(|m| like.is_none_or(|l| s(m, "name").contains(l)))
        .map(|m| {
            let path = m.get("basePath").and_then(Value::as_str).unwrap_or("");
            vec![
                short(s(m, "id")),
                s(m, "name").to_string(),
                s(m, "status").to_string(),
                s(m, "tableName").to_string(),
                path.to_string(),
            ]
        })
        .collect();
    session.out.table(&["id", "name", "status", "table", "basePath"], rows);
    Ok(())
}
