//! TapFlow's processors that act on fields by type or add a time: `add_date_field(k)` /
//! `addTimeField(field)`, `adjust_time(addHours, t, name)`, `exclude_type(type_name)` and
//! `type_adjust(converts, table, name)`, and `flat_unwind` / `embedded_unwind`. Each emits the
//! official client's node; the engine runs it (`engine::processors::fields`, `unwind`).

use super::flow::{self, Flow};
use super::nodes;
use crate::api::connection::Connection;
use crate::commands::session::Session;
use crate::error::{Error, Result};
use rhai::{Dynamic, Engine, EvalAltResult};
use serde_json::Value;
use std::sync::Arc;

type Out = std::result::Result<Flow, Box<EvalAltResult>>;

fn strings(what: &str, v: Dynamic) -> Result<Vec<String>> {
    if v.is_string() {
        return Ok(vec![v.to_string()]);
    }
    let a =
        v.into_array().map_err(|t| Error::usage(format!("{what}: give a type name or a list of them, not a {t}")))?;
    Ok(a.into_iter().map(|x| x.to_string()).collect())
}

/// `adjust_time`'s arguments: hours, the types (TapFlow's default `["now"]`: every date and
/// time field), the node's name.
fn adjust_time(s: &Session, f: &Flow, hours: i64, types: Vec<String>, name: &str) -> Result<Flow> {
    if hours.unsigned_abs() > 1_000_000 {
        return Err(Error::usage(format!("adjust_time: {hours} hours is more than a million")));
    }
    flow::add_step(s, f, "adjust_time", nodes::adjust_time(hours, &types, name), "time adjust added")?;
    Ok(f.clone())
}

/// `type_adjust`'s conversions, `[[field, type], …]` or `#{ field: type }`, each to a type the
/// engine converts to.
fn conversions(converts: Dynamic) -> Result<Vec<(String, String)>> {
    let pairs: Vec<(String, String)> = if converts.is_map() {
        let m = converts.cast::<rhai::Map>();
        m.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    } else {
        let a = converts.into_array().map_err(|t| {
            Error::usage(format!("type_adjust takes [[\"field\", \"type\"], …] or #{{ field: \"type\" }}, not a {t}"))
        })?;
        a.into_iter()
            .map(|x| {
                let p: Vec<String> = x
                    .into_array()
                    .map_err(|t| {
                        Error::usage(format!("type_adjust: each conversion is [\"field\", \"type\"], not a {t}"))
                    })?
                    .into_iter()
                    .map(|v| v.to_string())
                    .collect();
                match p.as_slice() {
                    [field, ty] => Ok((field.clone(), ty.clone())),
                    _ => Err(Error::usage("type_adjust: each conversion is [\"field\", \"type\"]")),
                }
            })
            .collect::<Result<_>>()?
    };
    if pairs.is_empty() {
        return Err(Error::usage("type_adjust: give the conversions, [[\"field\", \"type\"], …]"));
    }
    for (field, ty) in &pairs {
        if crate::model::FieldType::of_name(ty).is_none() {
            return Err(Error::usage(format!(
                "type_adjust: {ty:?} (for {field:?}) is not a type the engine knows: use one of {}",
                crate::model::FieldType::NAMES
            )));
        }
    }
    Ok(pairs)
}

/// The `type_adjust` node for `table` of connection `conn_id`, its fields checked against the
/// table's metadata: a field it does not have is refused (the official client drops it
/// without a word). Returns the node and how `show` prints it.
fn type_adjust_node(
    s: &Session,
    conn_id: &str,
    table: &str,
    pairs: Vec<(String, String)>,
    name: &str,
) -> Result<Value> {
    let meta = s.client.table(conn_id, table)?.unwrap_or_default();
    let mut converts = Vec::with_capacity(pairs.len());
    for (field, to) in pairs {
        let Some(m) = meta.fields.iter().find(|m| m.field_name == field) else {
            let names: Vec<&str> = meta.fields.iter().map(|m| m.field_name.as_str()).collect();
            return Err(Error::usage(format!(
                "type_adjust: table {table} has no field {field:?} (its fields: {})",
                names.join(", ")
            )));
        };
        converts.push(nodes::Convert { field, to, original: m.data_type.clone(), primary_key: m.primary_key });
    }
    Ok(nodes::type_adjust(conn_id, table, &converts, name))
}

fn type_adjust(s: &Session, f: &Flow, converts: Dynamic, table: Option<&str>, name: &str) -> Result<Flow> {
    let pairs = conversions(converts)?;
    // The source table: the one named, else the flow's only (or last) one.
    let (conn_id, table) = f.with(|st| {
        let pick = match table {
            Some(t) => st.sources.iter().rev().find(|(_, name)| name == t),
            None => st.sources.last(),
        };
        let Some((node_id, t)) = pick else {
            let read: Vec<&str> = st.sources.iter().map(|(_, t)| t.as_str()).collect();
            return Err(Error::usage(match table {
                Some(t) => format!("type_adjust: the flow does not read {t:?} (it reads {})", read.join(", ")),
                None => "type_adjust: call read_from(\"Connection.table\") first".to_string(),
            }));
        };
        Ok((st.source_connection(node_id), t.clone()))
    })?;
    let node = type_adjust_node(s, &conn_id, &table, pairs, name)?;
    flow::add_step(s, f, "type_adjust", node, "type adjust added")?;
    Ok(f.clone())
}

/// A lookup's or union's `type_adjust` and `adjust_time` options (after its other pre-processors):
/// `#{ type_adjust: [["f", "int"]], adjust_time: 8 }` or `adjust_time: #{ addHours, t }`.
pub fn lookup_pre(s: &Session, conn: &Connection, table: &str, opts: &rhai::Map) -> Result<Vec<Value>> {
    let mut pre = Vec::new();
    if let Some(c) = opts.get("type_adjust") {
        pre.push(type_adjust_node(s, &conn.id, table, conversions(c.clone())?, "Type Adjust")?);
    }
    if let Some(a) = opts.get("adjust_time") {
        let (hours, types) = if a.is_map() {
            let m = a.clone().cast::<rhai::Map>();
            let hours = m
                .get("addHours")
                .map(|h| h.as_int())
                .transpose()
                .map_err(|t| Error::usage(format!("adjust_time: addHours is a {t}, not a number")))?;
            let types = m.get("t").map(|t| strings("adjust_time", t.clone())).transpose()?;
            (hours.unwrap_or(0), types.unwrap_or_else(|| vec!["now".into()]))
        } else {
            let h = a
                .as_int()
                .map_err(|t| Error::usage(format!("adjust_time: give hours or #{{ addHours, t }}, not a {t}")))?;
            (h, vec!["now".into()])
        };
        pre.push(nodes::adjust_time(hours, &types, "Time Adjust"));
    }
    Ok(pre)
}

/// `flat_unwind(path, index_name = "_index", array_elem = "BASIC", joiner = "_", keep_null = true)`
/// and `embedded_unwind(path, index_name = "_index", keep_null = true)`; the target key gains
/// the index.
fn unwind(s: &Session, f: &Flow, embedded: bool, path: &str, opts: rhai::Map) -> Result<Flow> {
    let what = if embedded { "embedded_unwind" } else { "flat_unwind" };
    let params: &[&str] =
        if embedded { &["index_name", "keep_null"] } else { &["index_name", "array_elem", "joiner", "keep_null"] };
    if let Some(k) = opts.keys().find(|k| !params.contains(&k.as_str())) {
        return Err(Error::usage(format!("{what}: {k} is not one of its parameters ({})", params.join(", "))));
    }
    if path.is_empty() || path.contains('.') {
        return Err(Error::usage(format!("{what}: give the top-level array field to unwind, not {path:?}")));
    }
    let text = |k: &str, d: &str| opts.get(k).map(|v| v.to_string()).unwrap_or_else(|| d.to_string());
    let index = text("index_name", "_index");
    let array_elem = text("array_elem", "BASIC");
    if !["BASIC", "OBJECT", "MIX"].contains(&array_elem.to_uppercase().as_str()) {
        return Err(Error::usage(format!("{what}: array_elem is BASIC, OBJECT or MIX, not {array_elem:?}")));
    }
    let keep_null = match opts.get("keep_null") {
        None => true,
        Some(v) => v.as_bool().map_err(|t| Error::usage(format!("{what}: keep_null is true or false, not a {t}")))?,
    };
    let node = nodes::unwind(path, &index, &array_elem, &text("joiner", "_"), keep_null, embedded);
    flow::add_step(s, f, what, node, "unwind added")?;
    f.with(|st| {
        if !st.key.contains(&index) {
            st.key.push(index);
        }
    });
    Ok(f.clone())
}

pub fn register(engine: &mut Engine, session: &Arc<Session>, raise: fn(Error) -> Box<EvalAltResult>) {
    for (name, embedded) in [("flat_unwind", false), ("embedded_unwind", true)] {
        let s = session.clone();
        engine.register_fn(name, move |f: &mut Flow, path: &str| {
            unwind(&s, f, embedded, path, rhai::Map::new()).map_err(raise)
        });
        let s = session.clone();
        engine.register_fn(name, move |f: &mut Flow, path: &str, index: &str| {
            let mut m = rhai::Map::new();
            m.insert("index_name".into(), index.into());
            unwind(&s, f, embedded, path, m).map_err(raise)
        });
        let s = session.clone();
        engine.register_fn(name, move |f: &mut Flow, path: &str, opts: rhai::Map| {
            unwind(&s, f, embedded, path, opts).map_err(raise)
        });
    }
    // `add_date_field(k)` / `addTimeField(field = "created_at")`.
    for name in ["add_date_field", "addTimeField"] {
        let add = {
            let s = session.clone();
            move |f: &mut Flow, field: &str| -> Out {
                if field.is_empty() {
                    return Err(raise(Error::usage(format!("{name}: the field name is empty"))));
                }
                flow::add_step(&s, f, name, nodes::add_date_field(field), "time field added").map_err(raise)?;
                Ok(f.clone())
            }
        };
        let a = add.clone();
        engine.register_fn(name, move |f: &mut Flow| a(f, "created_at"));
        engine.register_fn(name, add);
    }

    // `adjust_time(addHours = 0, t = ["now"], name = "Time Adjust")`, positional or as a map.
    let s = session.clone();
    engine.register_fn("adjust_time", move |f: &mut Flow, hours: i64| -> Out {
        adjust_time(&s, f, hours, vec!["now".into()], "Time Adjust").map_err(raise)
    });
    let s = session.clone();
    engine.register_fn("adjust_time", move |f: &mut Flow, hours: i64, t: Dynamic| -> Out {
        adjust_time(&s, f, hours, strings("adjust_time", t).map_err(raise)?, "Time Adjust").map_err(raise)
    });
    let s = session.clone();
    engine.register_fn("adjust_time", move |f: &mut Flow, hours: i64, t: Dynamic, name: &str| -> Out {
        adjust_time(&s, f, hours, strings("adjust_time", t).map_err(raise)?, name).map_err(raise)
    });
    let s = session.clone();
    engine.register_fn("adjust_time", move |f: &mut Flow, m: rhai::Map| -> Out {
        if let Some(k) = m.keys().find(|k| !["addHours", "t", "name"].contains(&k.as_str())) {
            return Err(raise(Error::usage(format!(
                "adjust_time: {k} is not one of its parameters (addHours, t, name)"
            ))));
        }
        let hours = match m.get("addHours") {
            None => 0,
            Some(h) => {
                h.as_int().map_err(|t| raise(Error::usage(format!("adjust_time: addHours is a {t}, not a number"))))?
            }
        };
        let types = match m.get("t") {
            Some(t) => strings("adjust_time", t.clone()).map_err(raise)?,
            None => vec!["now".into()],
        };
        let name = m.get("name").map(|n| n.to_string()).unwrap_or_else(|| "Time Adjust".into());
        adjust_time(&s, f, hours, types, &name).map_err(raise)
    });

    // `exclude_type(type_name)`: a type name or a list of them.
    let s = session.clone();
    engine.register_fn("exclude_type", move |f: &mut Flow, t: Dynamic| -> Out {
        let types = strings("exclude_type", t).map_err(raise)?;
        if types.iter().all(|t| t.trim().is_empty()) {
            return Err(raise(Error::usage("exclude_type: name the types whose fields go")));
        }
        flow::add_step(&s, f, "exclude_type", nodes::exclude_type(&types), "type filter added").map_err(raise)?;
        Ok(f.clone())
    });

    // `type_adjust(converts, table, name = "Type Adjust")`; the table may be left out when the
    // flow reads one.
    let s = session.clone();
    engine.register_fn("type_adjust", move |f: &mut Flow, c: Dynamic| -> Out {
        type_adjust(&s, f, c, None, "Type Adjust").map_err(raise)
    });
    let s = session.clone();
    engine.register_fn("type_adjust", move |f: &mut Flow, c: Dynamic, table: &str| -> Out {
        type_adjust(&s, f, c, Some(table), "Type Adjust").map_err(raise)
    });
    let s = session.clone();
    engine.register_fn("type_adjust", move |f: &mut Flow, c: Dynamic, table: &str, name: &str| -> Out {
        type_adjust(&s, f, c, Some(table), name).map_err(raise)
    });
}
