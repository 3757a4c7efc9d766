//! `DataSource`: a connection definition, saved as TapData's connection document (§7.3 of the
//! client reference). Saving an existing name updates it, so scripts are idempotent.

use crate::commands::resolve;
use crate::commands::session::Session;
use crate::error::{Error, Result};
use reqwest::Method;
use rhai::{Dynamic, Engine, EvalAltResult, Map as RhaiMap};
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct DataSourceState {
    pub connector: String,
    pub name: String,
    pub connection_type: String,
    pub config: Map<String, Value>,
    pub id: Option<String>,
}

#[derive(Clone)]
pub struct DataSource(pub Arc<Mutex<DataSourceState>>);

impl DataSource {
    pub fn new(connector: &str, name: &str, config: Map<String, Value>) -> Self {
        let mut ds = DataSourceState {
            connector: connector.to_string(),
            name: if name.is_empty() { connector.to_string() } else { name.to_string() },
            connection_type: "source_and_target".into(),
            ..Default::default()
        };
        for (k, v) in config {
            set_key(&mut ds, &k, v);
        }
        DataSource(Arc::new(Mutex::new(ds)))
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut DataSourceState) -> T) -> T {
        let mut g = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    pub fn set(&self, key: &str, v: Value) {
        self.with(|s| set_key(s, key, v));
    }
}

/// The official client's key rules: `db` → `database`, `uri` → also `isUri`, `type` → the
/// connection type; `additionalString` is spelled as TapData's connectors spell it.
fn set_key(s: &mut DataSourceState, key: &str, v: Value) {
    match key {
        "type" => s.connection_type = v.as_str().unwrap_or("source_and_target").to_string(),
        "db" => {
            s.config.insert("database".into(), v);
        }
        "uri" => {
            s.config.insert("isUri".into(), json!(true));
            s.config.insert("uri".into(), v);
        }
        "additionalString" => {
            s.config.insert("addtionalString".into(), v);
        }
        _ => {
            s.config.insert(key.to_string(), v);
        }
    }
}

/// The connector entry (A7) for a name given by the user, matched case-insensitively.
pub(super) fn connector(session: &Session, name: &str) -> Result<Value> {
    let all = session.client.connectors()?;
    let want = match name.to_ascii_lowercase().as_str() {
        "postgres" | "pg" => "postgresql".to_string(),
        "mongo" => "mongodb".to_string(),
        "mariadb" => "mysql".to_string(),
        other => other.to_string(),
    };
    all.iter()
        .find(|c| c.get("name").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(&want)))
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().filter_map(|c| c.get("name").and_then(Value::as_str)).collect();
            Error::not_found(format!("no connector {name:?} on this cluster; connectors: {}", names.join(", ")))
        })
}

/// The connection document sent by `save()`.
pub fn to_doc(session: &Session, ds: &DataSource) -> Result<Value> {
    let (connector_name, name, ctype, mut config) =
        ds.with(|s| (s.connector.clone(), s.name.clone(), s.connection_type.clone(), s.config.clone()));
    if !matches!(ctype.as_str(), "source" | "target" | "source_and_target") {
        return Err(Error::usage(format!(
            "type must be \"source\", \"target\" or \"source_and_target\", not {ctype:?}"
        )));
    }
    let c = connector(session, &connector_name)?;
    let db_type = c.get("name").and_then(Value::as_str).unwrap_or(&connector_name).to_string();
    let lower = db_type.to_ascii_lowercase();
    // The official client's MySQL rule says `user`, its help and the seeds say `username`, and
    // the MySQL connector's spec reads `username` (§7.3, §13 bug 21): send both for MySQL, so
    // either spelling reaches the connector. PostgreSQL's key is `user`.
    if (lower == "mysql" || lower == "postgresql")
        && !config.contains_key("user")
        && let Some(u) = config.get("username").cloned()
    {
        config.insert("user".into(), u);
    }
    if lower == "mysql"
        && !config.contains_key("username")
        && let Some(u) = config.get("user").cloned()
    {
        config.insert("username".into(), u);
    }
    if lower == "postgresql"
        && let Some(p) = config.get("port").and_then(Value::as_str).and_then(|p| p.parse::<i64>().ok())
    {
        config.insert("port".into(), json!(p));
    }
    if lower == "mysql" {
        config.entry("timezone").or_insert(json!(""));
    }
    if lower == "postgresql" {
        config.entry("logPluginName").or_insert(json!("pgoutput"));
        config.entry("schema").or_insert(json!("public"));
    }
    if lower == "mongodb" {
        let has_uri = config.contains_key("uri");
        config.entry("isUri").or_insert(json!(has_uri));
        config.entry("ssl").or_insert(json!(false));
    }
    // A relative SQLite path means relative to where the script runs, not to the engine.
    if lower == "sqlite"
        && let Some(p) = config.get("database").and_then(Value::as_str)
        && !std::path::Path::new(p).is_absolute()
        && session.is_embedded()
    {
        let abs = std::env::current_dir()?.join(p);
        config.insert("database".into(), json!(abs.to_string_lossy()));
    }
    config.insert("__connectionType".into(), json!(ctype));
    Ok(json!({
        "accessNodeType": "AUTOMATIC_PLATFORM_ALLOCATION",
        "connection_type": ctype,
        "database_type": db_type,
        "loadAllTables": true,
        "name": name,
        "pdkHash": c.get("pdkHash").cloned().unwrap_or(Value::Null),
        "pdkType": "pdk",
        "project": "",
        "response_body": {},
        "retry": 0,
        "schema": {},
        "shareCdcEnable": true,
        "status": "testing",
        "submit": true,
        "config": config,
    }))
}

/// Save (create, or update when the name exists), then wait for the schema to load. On TapData
/// Cloud an agent must be running first (A4, as the official client checks): without one the
/// connection would never be tested and the wait would last minutes for nothing.
pub fn save(session: &Session, ds: &DataSource) -> Result<String> {
    if session.client.is_cloud() && session.client.running_agents()? == 0 {
        return Err(Error::unavailable(
            "no agent is running in TapData Cloud, so the connection cannot be tested: start an agent, then save again",
        ));
    }
    let mut doc = to_doc(session, ds)?;
    let name = ds.with(|s| s.name.clone());
    let existing = session.client.connection_by_name(&name)?;
    let id = match existing {
        Some(old) => {
            let old_type = old.database_type.as_str();
            let new_type = doc.get("database_type").and_then(Value::as_str).unwrap_or("");
            if !old_type.eq_ignore_ascii_case(new_type) {
                return Err(Error::usage(format!(
                    "connection {name} exists with type {old_type}, not {new_type}: choose another name or delete it first"
                )));
            }
            let id = old.id.clone();
            doc["id"] = json!(id);
            session.client.call(Method::PATCH, &format!("/Connections/{id}"), &[], Some(&doc))?;
            session.out.text(&format!("connection {name} exists, updating its config"));
            id
        }
        None => {
            session.out.text(&format!("datasource {name} creating, please wait..."));
            let data = session.client.call(Method::POST, "/Connections", &[], Some(&doc))?;
            data.get("id").and_then(Value::as_str).unwrap_or("").to_string()
        }
    };
    ds.with(|s| s.id = Some(id.clone()));
    session.out.text(&format!("save datasource {name} success, will load schema, please wait..."));
    let status = wait_loaded(session, &id, Duration::from_secs(480))?;
    session.out.text(&format!("load schema status: {status}"));
    Ok(id)
}

pub use crate::commands::objects::wait_loaded;

type RhaiResult<T> = std::result::Result<T, Box<EvalAltResult>>;

/// A handle on a saved connection, its config left to the server (a re-save merges into it).
pub fn from_connection(c: &crate::api::connection::Connection) -> DataSource {
    let ds = DataSource::new(&c.database_type.to_ascii_lowercase(), &c.name, Map::new());
    ds.with(|d| {
        d.id = Some(c.id.clone());
        d.connection_type = c.connection_type.clone();
    });
    ds
}

/// `DataSource("Name")`: the saved connection, its config left to the server (a re-save
/// merges into it); a connector's name alone makes a new one named after it.
fn load(session: &Session, name: &str) -> Result<DataSource> {
    let found = session.client.connections()?.into_iter().find(|c| c.name == name);
    match found {
        Some(c) => Ok(from_connection(&c)),
        None if session
            .client
            .connectors()?
            .iter()
            .any(|c| c.get("name").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(name))) =>
        {
            Ok(DataSource::new(name, name, Map::new()))
        }
        None => {
            let mut names: Vec<String> = session.client.connections()?.into_iter().map(|c| c.name).collect();
            names.sort();
            Err(Error::not_found(format!(
                "DataSource({name:?}): no saved connection of that name (and no connector); connections: {}",
                if names.is_empty() { "none".into() } else { names.join(", ") }
            )))
        }
    }
}

/// `DataSource(…)` and its methods in Rhai.
pub fn register(engine: &mut Engine, session: &Arc<Session>, raise: fn(Error) -> Box<EvalAltResult>) {
    engine.register_type_with_name::<DataSource>("DataSource");
    engine.register_fn("DataSource", |connector: &str, name: &str| {
        DataSource::new(connector, name, serde_json::Map::new())
    });
    // One argument: the saved connection of that name (TapFlow reloads it), else a new one of
    // that connector, named after it.
    let s = session.clone();
    engine.register_fn("DataSource", move |name: &str| -> RhaiResult<DataSource> { load(&s, name).map_err(raise) });
    let s = session.clone();
    engine.register_fn("datasources", move || -> RhaiResult<rhai::Array> {
        let mut names: Vec<String> = s.client.connections().map_err(raise)?.into_iter().map(|c| c.name).collect();
        names.sort();
        Ok(names.into_iter().map(Dynamic::from).collect())
    });
    let s = session.clone();
    engine.register_fn("desc", move |ds: &mut DataSource| -> RhaiResult<()> {
        crate::commands::objects::desc_connection(&s, &ds.with(|d| d.name.clone())).map_err(raise)
    });
    engine.register_fn("DataSource", |connector: &str, name: &str, config: RhaiMap| {
        let cfg = crate::script::to_json(&Dynamic::from_map(config)).as_object().cloned().unwrap_or_default();
        DataSource::new(connector, name, cfg)
    });
    engine.register_fn("type", |ds: &mut DataSource, t: &str| {
        ds.set("type", json!(t));
        ds.clone()
    });
    for key in
        ["host", "database", "db", "user", "username", "password", "schema", "uri", "timezone", "additionalString"]
    {
        engine.register_fn(key, move |ds: &mut DataSource, v: &str| {
            ds.set(key, json!(v));
            ds.clone()
        });
    }
    engine.register_fn("port", |ds: &mut DataSource, v: i64| {
        ds.set("port", json!(v));
        ds.clone()
    });
    engine.register_fn("set", |ds: &mut DataSource, k: &str, v: Dynamic| {
        ds.set(k, crate::script::to_json(&v));
        ds.clone()
    });
    engine.register_fn("config", |ds: &mut DataSource, m: RhaiMap| {
        for (k, v) in m {
            ds.set(k.as_str(), crate::script::to_json(&v));
        }
        ds.clone()
    });
    let s = session.clone();
    engine.register_fn("save", move |ds: &mut DataSource| -> RhaiResult<DataSource> {
        save(&s, ds).map_err(raise)?;
        Ok(ds.clone())
    });
    for name in ["test", "validate"] {
        let s = session.clone();
        engine.register_fn(name, move |ds: &mut DataSource| -> RhaiResult<bool> {
            let id = match ds.with(|d| d.id.clone()) {
                Some(id) => id,
                None => save(&s, ds).map_err(raise)?,
            };
            let conn = s
                .client
                .connection(&id)
                .map_err(raise)?
                .ok_or_else(|| raise(Error::not_found(format!("connection {id} vanished"))))?;
            crate::commands::objects::validate_connection(&s, &conn).map_err(raise)?;
            Ok(true)
        });
    }
    let s = session.clone();
    engine.register_fn("delete", move |ds: &mut DataSource| -> RhaiResult<bool> {
        let doc = resolve::connection(&s, &ds.with(|d| d.name.clone())).map_err(raise)?;
        crate::commands::objects::delete_connection(&s, &doc).map_err(raise)?;
        Ok(true)
    });
    let s = session.clone();
    engine.register_fn("status", move |ds: &mut DataSource| -> RhaiResult<String> {
        let name = ds.with(|d| d.name.clone());
        Ok(resolve::connection(&s, &name).map_err(raise)?.status)
    });
    engine.register_fn("to_string", |ds: &mut DataSource| {
        ds.with(|d| format!("DataSource({}, {})", d.connector, d.name))
    });
}
