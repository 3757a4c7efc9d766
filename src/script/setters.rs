//! A setter for every config key a connector declares: `DataSource("postgresql", "PG")
//! .logPluginName("pgoutput")` sets `logPluginName` because PostgreSQL's declaration (the
//! engine's connector list, or a cluster's `DatabaseTypes`) has it; a key it does not declare,
//! or a value of the wrong kind, is refused with the keys it has.

use super::datasource::{DataSource, connector};
use crate::commands::session::Session;
use crate::error::{Error, Result};
use rhai::{Dynamic, Engine, EvalAltResult};
use serde_json::Value;
use std::sync::Arc;

/// The config keys `connector` declares, each with its declared type (`string`, `number`, …).
pub fn declared_keys(session: &Session, connector_name: &str) -> Result<Vec<(String, String)>> {
    let c = connector(session, connector_name)?;
    let props = c.pointer("/properties/connection/properties").and_then(Value::as_object).cloned().unwrap_or_default();
    Ok(props
        .iter()
        .map(|(k, p)| (k.clone(), p.get("type").and_then(Value::as_str).unwrap_or("").to_string()))
        .collect())
}

fn set_declared(session: &Session, ds: &DataSource, key: &str, value: &Dynamic) -> Result<DataSource> {
    let name = ds.with(|d| d.connector.clone());
    let keys = declared_keys(session, &name)?;
    let Some((_, ty)) = keys.iter().find(|(k, _)| k == key) else {
        let mut names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        return Err(Error::usage(format!(
            "DataSource({name:?}) has no setting {key:?}: the connector declares {} (and set(key, value) takes any key)",
            names.join(", ")
        )));
    };
    let v = super::to_json(value);
    let fits = match ty.as_str() {
        "string" => v.is_string(),
        "number" | "integer" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    };
    if !fits {
        return Err(Error::usage(format!("{name} setting {key} takes a {ty}, not {}", value.type_name())));
    }
    ds.set(key, v);
    Ok(ds.clone())
}

/// Calls of a method no function answers, on a DataSource with one argument, become setters of
/// the connector's declared keys; anything else falls through to Rhai's "function not found".
pub fn register(engine: &mut Engine, session: &Arc<Session>, raise: fn(Error) -> Box<EvalAltResult>) {
    let s = session.clone();
    #[allow(deprecated)]
    engine.on_missing_function(move |name, args, is_method, _ctx| {
        if !is_method || args.len() != 2 || !args[0].is::<DataSource>() {
            return Ok(None);
        }
        let ds = args[0].clone_cast::<DataSource>();
        set_declared(&s, &ds, name, args[1]).map(|d| Some(Dynamic::from(d))).map_err(raise)
    });
}
