//! Whole databases, as TapFlow does them: `Pipeline("name")` (a `migrate` task) with
//! `read_from("Conn")` (every table), `read_from(Source("Conn", #{ table: ["a", "b"] }))` or
//! `#{ table_re: "ecom_.*" }`, `renameTable(prefix, suffix)` and `write_to("Target")`, emitting
//! the official client's `database` and `table_rename_processor` nodes.

use super::flow::{self, Flow};
use super::nodes;
use crate::api::connection::Connection;
use crate::commands::resolve;
use crate::commands::session::Session;
use crate::error::{Error, Result};
use serde_json::{Map, Value, json};

/// A database source node (the trace of §8.3): `tables` for `custom`, else all that
/// `expression` matches (TapFlow's `table_re`; `.*` for every table).
fn database_source(conn: &Connection, tables: &[String], expression: Option<&str>) -> Value {
    json!({
        "type": "database", "tableNames": tables,
        "dmlPolicy": nodes::dml_policy(), "nodeConfig": {},
        "tableExpression": expression.unwrap_or(".*"), "connectionId": conn.id, "databaseType": conn.database_type,
        "disabledEvents": [], "noPrimaryKeyTableSelectType": "All", "ddlConfiguration": "FILTER",
        "id": nodes::new_node_id(), "increaseReadSize": 1,
        "migrateTableSelectType": if expression.is_some() { "expression" } else { "custom" },
        "name": conn.name, "attrs": nodes::data_attrs(conn),
    })
}

fn database_sink(conn: &Connection, tables: &[String]) -> Value {
    json!({
        "type": "database", "tableNames": tables,
        "nodeConfig": {"syncIndex": false, "enableSaveDeleteData": false, "shardCollection": false, "hashSplit": false, "maxSplit": 32},
        "tableExpression": ".*", "connectionId": conn.id, "databaseType": conn.database_type, "id": nodes::new_node_id(),
        "migrateTableSelectType": "expression", "name": conn.name,
        "dmlPolicy": nodes::dml_policy(), "initialConcurrent": true,
        "initialConcurrentWriteNum": 8, "isTransformed": false, "cdcConcurrent": true, "cdcConcurrentWriteNum": 8,
        "existDataProcessMode": "keepData", "attrs": nodes::data_attrs(conn),
    })
}

fn table_names(session: &Session, conn: &Connection) -> Result<Vec<String>> {
    // A cluster lists the database itself among its metadata.
    let mut names: Vec<String> = session
        .client
        .tables(&conn.id)?
        .into_iter()
        .filter(|m| m.meta_type != "database")
        .map(|m| m.original_name)
        .collect();
    names.sort();
    Ok(names)
}

/// `read_from` on a pipeline: `sig` names a connection; `fields` may hold the table list or
/// expression a `Source("Conn", #{ … })` set.
pub fn read_database(session: &Session, f: &Flow, sig: &str, fields: &Map<String, Value>) -> Result<()> {
    if sig.contains('.') {
        return Err(Error::usage(format!(
            "read_from({sig:?}): a Pipeline copies whole databases: read_from(\"Conn\"), or \
             Source(\"Conn\", #{{ table: [\"a\", \"b\"] }}) / #{{ table_re: \"ecom_.*\" }}; a Flow reads one table"
        )));
    }
    let conn = resolve::connection(session, sig)?;
    if !conn.can_read() {
        return Err(Error::usage(format!("cannot read from {sig}: it is a target-only connection")));
    }
    let all = table_names(session, &conn)?;
    let listed: Option<Vec<String>> = fields
        .get("tableNames")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect());
    let node = match (listed, fields.get("tableExpression").and_then(Value::as_str)) {
        (Some(list), _) => {
            if let Some(missing) = list.iter().find(|t| !all.contains(t)) {
                return Err(Error::not_found(format!(
                    "Source({sig:?}): there is no table {missing} in {sig}; its tables: {}",
                    if all.is_empty() { "none".into() } else { all.join(", ") }
                )));
            }
            database_source(&conn, &list, None)
        }
        (None, Some(expr)) => {
            let re = regex::Regex::new(&format!("^(?:{expr})$")).map_err(|e| {
                Error::usage(format!("Source({sig:?}): table_re {expr:?} is not a regular expression: {e}"))
            })?;
            let matched: Vec<String> = all.iter().filter(|t| re.is_match(t)).cloned().collect();
            database_source(&conn, &matched, Some(expr))
        }
        (None, None) => database_source(&conn, &all, Some(".*")),
    };
    let mut node = node;
    if let Some(o) = node.as_object_mut() {
        o.extend(
            fields
                .iter()
                .filter(|(k, _)| {
                    !["tableNames", "tableExpression", "migrateTableSelectType", "quiet"].contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    let count = node["tableNames"].as_array().map_or(0, Vec::len);
    let id = node["id"].as_str().unwrap_or_default().to_string();
    f.with(|s| {
        if s.sink.is_some() || s.stage.is_some() {
            return Err(Error::usage("a Pipeline reads one database: read_from once, then write_to"));
        }
        s.nodes.push(node);
        s.stage = Some(id.clone());
        s.sources.push((id, sig.to_string()));
        Ok(())
    })?;
    session.out.text(&format!("Pipeline updated: source {sig} added ({count} tables now)"));
    Ok(())
}

/// `write_to("Target")` on a pipeline.
pub fn write_database(session: &Session, f: &Flow, sig: &str, fields: &Map<String, Value>) -> Result<()> {
    if sig.contains('.') {
        return Err(Error::usage(format!(
            "write_to({sig:?}): a Pipeline writes into a database, each table into its own: write_to(\"Conn\")"
        )));
    }
    let conn = resolve::connection(session, sig)?;
    if !conn.can_write() {
        return Err(Error::usage(format!("cannot write to {sig}: it is a source-only connection")));
    }
    let tables = table_names(session, &conn)?;
    let mut node = database_sink(&conn, &tables);
    if let Some(o) = node.as_object_mut() {
        o.extend(fields.clone());
    }
    f.with(|s| {
        s.require_source("write_to")?;
        let id = s.add(node);
        s.sink = Some(id);
        Ok::<_, Error>(())
    })?;
    session.out.text("Pipeline updated: sink added");
    Ok(())
}

/// `renameTable(prefix, suffix)`: every target table named `prefix + table + suffix`.
pub fn rename_table(session: &Session, f: &Flow, prefix: &str, suffix: &str) -> Result<()> {
    if !f.with(|s| s.migrate) {
        return Err(Error::usage("renameTable: a Pipeline renames its tables; a Flow names its target in write_to"));
    }
    let tables: Vec<String> = f.with(|s| {
        s.nodes
            .iter()
            .filter(|n| n["type"] == "database")
            .flat_map(|n| n["tableNames"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect()
    });
    let names: Vec<Value> = tables
        .iter()
        .map(|t| json!({"originTableName": t, "previousTableName": t, "currentTableName": format!("{prefix}{t}{suffix}")}))
        .collect();
    let node = json!({"catalog": "processor", "elementType": "Node", "name": "TableRename", "prefix": prefix,
                      "suffix": suffix, "type": "table_rename_processor", "tableNames": names, "id": nodes::new_node_id()});
    flow::add_step(session, f, "renameTable", node, "table rename added")
}

/// `tables("Conn")` and `fields("Conn.table")`, for scripts that build a flow per table from
/// what the tables hold (the seed's "100+ tables, each with its own field mapping rules").
pub fn register(
    engine: &mut rhai::Engine,
    session: &std::sync::Arc<Session>,
    raise: fn(Error) -> Box<rhai::EvalAltResult>,
) {
    let s = session.clone();
    engine.register_fn("tables", move |conn: &str| -> std::result::Result<rhai::Array, Box<rhai::EvalAltResult>> {
        let c = resolve::connection(&s, conn).map_err(raise)?;
        Ok(table_names(&s, &c).map_err(raise)?.into_iter().map(rhai::Dynamic::from).collect())
    });
    let s = session.clone();
    engine.register_fn("fields", move |sig: &str| -> std::result::Result<rhai::Array, Box<rhai::EvalAltResult>> {
        let (c, t) = flow::split_target(sig).map_err(raise)?;
        let conn = resolve::connection(&s, c).map_err(raise)?;
        let meta = s.client.table(&conn.id, t).map_err(raise)?.ok_or_else(|| {
            raise(Error::not_found(format!("fields({sig:?}): {c} has no table {t}; `tables({c:?})` lists them")))
        })?;
        Ok(meta
            .fields
            .iter()
            .map(|f| {
                let mut m = rhai::Map::new();
                m.insert("name".into(), f.field_name.clone().into());
                m.insert("type".into(), f.data_type.clone().into());
                m.insert("primary_key".into(), f.primary_key.into());
                rhai::Dynamic::from_map(m)
            })
            .collect())
    });
}
