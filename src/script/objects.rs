//! `Source("Conn", "table")` and `Sink("Conn", "table")`: TapFlow's configured table nodes,
//! given to `read_from` and `write_to`. Each method sets the node field the official client
//! sets (`reference/tapflow-client.md`, "Source/Sink"), so the same flow runs on a cluster; the
//! embedded engine honours what changes the data (`existDataProcessMode`, `readBatchSize`) and
//! keeps the thread and write-batch hints, which change nothing about the data it moves (it
//! writes each read batch in one transaction, one flow on one thread).

use super::flow::{self, Flow};
use crate::commands::session::Session;
use crate::error::{Error, Result};
use rhai::{Engine, EvalAltResult, Position};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// A table node being configured: its `Conn.table`, the node fields its methods set, and the
/// builder calls, for `show`.
#[derive(Debug, Clone, Default)]
pub struct TableSpec {
    pub sig: String,
    pub fields: Map<String, Value>,
    pub calls: Vec<String>,
    pub(super) sink: bool,
    /// A whole database's (`Source("Conn")`, `Source("Conn", #{ table | table_re })`): the
    /// constructor's arguments after the connection, as written.
    pub(super) database: Option<String>,
}

impl TableSpec {
    fn new(conn: &str, table: &str, sink: bool) -> Self {
        TableSpec { sig: format!("{conn}.{table}"), fields: Map::new(), calls: Vec::new(), sink, database: None }
    }
    /// A whole database (for a Pipeline): every table, a list, or those a pattern matches.
    fn database(conn: &str, opts: rhai::Map, sink: bool) -> std::result::Result<Self, Box<EvalAltResult>> {
        let bad = |m: String| Box::new(EvalAltResult::ErrorRuntime(m.into(), Position::NONE));
        let mut fields = Map::new();
        for (k, v) in &opts {
            match (k.as_str(), sink) {
                ("table", false) => {
                    let list: Vec<Value> = match v.clone().into_array() {
                        Ok(a) if !a.is_empty() => a.into_iter().map(|t| Value::String(t.to_string())).collect(),
                        _ => match v.clone().into_immutable_string() {
                            Ok(t) => vec![Value::String(t.to_string())],
                            Err(_) => return Err(bad(format!("Source({conn:?}): table takes a list of table names"))),
                        },
                    };
                    fields.insert("tableNames".into(), Value::Array(list));
                    fields.insert("migrateTableSelectType".into(), json!("custom"));
                }
                ("table_re", false) => {
                    let re = v
                        .clone()
                        .into_immutable_string()
                        .map_err(|_| bad(format!("Source({conn:?}): table_re takes a pattern")))?;
                    fields.insert("tableExpression".into(), json!(re.as_str()));
                    fields.insert("migrateTableSelectType".into(), json!("expression"));
                }
                (other, _) => {
                    return Err(bad(format!(
                        "{}({conn:?}, #{{ {other}: … }}): it takes {}",
                        if sink { "Sink" } else { "Source" },
                        if sink { "no options (a whole database)" } else { "table: [names] or table_re: \"pattern\"" }
                    )));
                }
            }
        }
        let args = if opts.is_empty() { String::new() } else { format!(", {}", rhai::Dynamic::from_map(opts)) };
        Ok(TableSpec { sig: conn.to_string(), fields, calls: Vec::new(), sink, database: Some(args) })
    }
    fn set(&mut self, key: &str, v: Value, call: String) -> TableSpec {
        self.fields.insert(key.to_string(), v);
        self.calls.push(call);
        self.clone()
    }
    /// The builder expression that recreates it.
    pub fn show(&self) -> String {
        let kind = if self.sink { "Sink" } else { "Source" };
        if let Some(args) = &self.database {
            return format!("{kind}({:?}{args}){}", self.sig, self.calls.concat());
        }
        let (c, t) = self.sig.split_once('.').unwrap_or((&self.sig, ""));
        format!("{}({c:?}, {t:?}){}", if self.sink { "Sink" } else { "Source" }, self.calls.concat())
    }
}

/// An object field with `extra`'s keys laid over it.
fn merged(current: Option<&Value>, extra: &Value) -> Value {
    let mut o = current.and_then(Value::as_object).cloned().unwrap_or_default();
    if let Some(e) = extra.as_object() {
        o.extend(e.clone());
    }
    Value::Object(o)
}

fn count(what: &str, n: i64) -> std::result::Result<u64, Box<EvalAltResult>> {
    u64::try_from(n).ok().filter(|n| (1..=1_000_000).contains(n)).ok_or_else(|| {
        Box::new(EvalAltResult::ErrorRuntime(
            format!("{what}: {n} is not a count from 1 to 1000000").into(),
            Position::NONE,
        ))
    })
}

pub fn register(engine: &mut Engine, session: &Arc<Session>, raise: fn(Error) -> Box<EvalAltResult>) {
    engine.register_type_with_name::<TableSpec>("Source");
    engine.register_fn("Source", |c: &str, t: &str| TableSpec::new(c, t, false));
    engine.register_fn("Sink", |c: &str, t: &str| TableSpec::new(c, t, true));
    engine.register_fn("Source", |c: &str| TableSpec::database(c, rhai::Map::new(), false));
    engine.register_fn("Source", |c: &str, opts: rhai::Map| TableSpec::database(c, opts, false));
    engine.register_fn("Sink", |c: &str| TableSpec::database(c, rhai::Map::new(), true));
    engine.register_fn("to_string", |s: &mut TableSpec| s.show());
    // Source: rows per snapshot read (honoured), and the CDC read hint (kept).
    engine.register_fn("initial_read_size", |s: &mut TableSpec, n: i64| -> Result2 {
        Ok(s.set("readBatchSize", json!(count("initial_read_size", n)?), format!(".initial_read_size({n})")))
    });
    engine.register_fn("increase_read_size", |s: &mut TableSpec, n: i64| -> Result2 {
        Ok(s.set("increaseReadSize", json!(count("increase_read_size", n)?), format!(".increase_read_size({n})")))
    });
    // Sink: what happens to the target's rows when the flow starts from scratch.
    for (names, mode) in [
        (["keep_data", "keepData"], "keepData"),
        (["clean_data", "cleanData"], "removeData"),
        (["clean_table", "cleanTable"], "dropTable"),
    ] {
        for name in names {
            engine.register_fn(name, move |s: &mut TableSpec| {
                s.set("existDataProcessMode", json!(mode), format!(".{name}()"))
            });
        }
    }
    // Source: DDL and pre-image settings, as the official client sets them (the engine's rules
    // say at save which it does).
    for name in ["enableDDL", "enable_ddl"] {
        engine.register_fn(name, move |s: &mut TableSpec| {
            s.fields.insert("ddlConfiguration".into(), json!("SYNCHRONIZATION"));
            s.set("enableDDL", json!(true), format!(".{name}()"))
        });
    }
    for name in ["disableDDL", "disable_ddl"] {
        engine.register_fn(name, move |s: &mut TableSpec| {
            s.fields.insert("ddlConfiguration".into(), json!("FILTER"));
            s.set("enableDDL", json!(false), format!(".{name}()"))
        });
    }
    engine.register_fn("enablePreImage", |s: &mut TableSpec| {
        let cfg = json!({"enableFillingModifiedData": false, "preImage": true, "skipDeletedEventsOnFilling": true});
        s.set("nodeConfig", merged(s.fields.get("nodeConfig"), &cfg), ".enablePreImage()".into())
    });
    engine.register_fn("initial_hash_read_size", |s: &mut TableSpec, n: i64| -> Result2 {
        let cfg = json!({"hashSplit": true, "maxSplit": count("initial_hash_read_size", n)?});
        Ok(s.set("nodeConfig", merged(s.fields.get("nodeConfig"), &cfg), format!(".initial_hash_read_size({n})")))
    });
    engine.register_fn("initial_read_threads", |s: &mut TableSpec, n: i64| -> Result2 {
        let cfg = json!({"batchReadThreadSize": count("initial_read_threads", n)?});
        Ok(s.set("nodeConfig", merged(s.fields.get("nodeConfig"), &cfg), format!(".initial_read_threads({n})")))
    });
    engine.register_fn("set_write_wait", |s: &mut TableSpec, n: i64| -> Result2 {
        Ok(s.set("writeBatchWaitMs", json!(count("set_write_wait", n)?), format!(".set_write_wait({n})")))
    });
    // `config(#{ … })` merges node fields, `update_node_config(#{ … })` the nodeConfig; the
    // rules check both at save. `config(#{ writeStrategy: "appendWrite" })` appends every change
    // as a new row: at-least-once (a batch repeated after a crash is appended again).
    engine.register_fn("config", |s: &mut TableSpec, m: rhai::Map| -> Result2 {
        let shown = format!(".config({})", rhai::Dynamic::from_map(m.clone()));
        let v: Value = rhai::serde::from_dynamic(&rhai::Dynamic::from_map(m)).map_err(|e| e.to_string())?;
        if let Value::Object(o) = v {
            s.fields.extend(o);
        }
        s.calls.push(shown);
        Ok(s.clone())
    });
    engine.register_fn("update_node_config", |s: &mut TableSpec, m: rhai::Map| -> Result2 {
        let shown = format!(".update_node_config({})", rhai::Dynamic::from_map(m.clone()));
        let v: Value = rhai::serde::from_dynamic(&rhai::Dynamic::from_map(m)).map_err(|e| e.to_string())?;
        Ok(s.set("nodeConfig", merged(s.fields.get("nodeConfig"), &v), shown))
    });
    engine.register_fn("set_write_batch", |s: &mut TableSpec, n: i64| -> Result2 {
        Ok(s.set("writeBatchSize", json!(count("set_write_batch", n)?), format!(".set_write_batch({n})")))
    });
    engine.register_fn("set_cdc_threads", |s: &mut TableSpec, n: i64| -> Result2 {
        let n = count("set_cdc_threads", n)?;
        s.fields.insert("cdcConcurrent".into(), json!(n > 1));
        Ok(s.set("cdcConcurrentWriteNum", json!(n), format!(".set_cdc_threads({n})")))
    });
    engine.register_fn("set_init_thread", |s: &mut TableSpec, n: i64| -> Result2 {
        let n = count("set_init_thread", n)?;
        s.fields.insert("initialConcurrent".into(), json!(n > 1));
        Ok(s.set("initialConcurrentWriteNum", json!(n), format!(".set_init_thread({n})")))
    });

    let sess = session.clone();
    crate::register_both!(engine, "read_from", move |f: &mut Flow,
                                                     s: TableSpec|
          -> std::result::Result<Flow, Box<EvalAltResult>> {
        if s.sink {
            return Err(raise(Error::usage(format!("read_from takes a Source, not {}: write Source(…)", s.show()))));
        }
        flow::read_from_node(&sess, f, &s.sig, &s.fields).map_err(raise)?;
        Ok(f.clone())
    },);
    let sess = session.clone();
    let write = move |f: &mut Flow, s: &TableSpec, pk: Option<Vec<String>>| -> Result<Flow> {
        if !s.sink {
            return Err(Error::usage(format!("write_to takes a Sink, not {}: write Sink(…)", s.show())));
        }
        flow::write_to_node(&sess, f, &s.sig, pk, &s.fields)?;
        Ok(f.clone())
    };
    let w = write.clone();
    crate::register_both!(engine, "write_to", move |f: &mut Flow, s: TableSpec| w(f, &s, None).map_err(raise));
    let w = write.clone();
    crate::register_both!(engine, "write_to", move |f: &mut Flow, s: TableSpec, pk: &str| {
        w(f, &s, Some(vec![pk.to_string()])).map_err(raise)
    });
    crate::register_both!(engine, "write_to", move |f: &mut Flow, s: TableSpec, pk: rhai::Array| {
        let pk: Vec<String> = pk.into_iter().map(|v| v.to_string()).collect();
        write(f, &s, Some(pk)).map_err(raise)
    });
}

type Result2 = std::result::Result<TableSpec, Box<EvalAltResult>>;
