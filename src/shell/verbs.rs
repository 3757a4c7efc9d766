//! Shell verbs: parsed before Rhai sees a line, and callable as functions from scripts.
//! Each verb documents itself here; `help` and completion are generated from this list.

use crate::error::{Error, Result};
use crate::script::flow as flowops;
use crate::script::resolve;
use crate::script::session::Session;
use serde_json::{Value, json};
use std::time::Duration;

pub struct Verb {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub usage: &'static str,
    pub summary: &'static str,
    pub examples: &'static [&'static str],
}

pub const VERBS: &[Verb] = &[
    Verb {
        name: "show",
        aliases: &[],
        usage: "show dbs|connections|tables [like X]|flows [like X]|connectors",
        summary: "list connections, tables of the used connection, flows or connectors",
        examples: &["show dbs", "show tables like order", "show flows"],
    },
    Verb {
        name: "use",
        aliases: &[],
        usage: "use CONNECTION",
        summary: "choose the connection that desc, peek and count read",
        examples: &["use Demo"],
    },
    Verb {
        name: "desc",
        aliases: &[],
        usage: "desc [CONNECTION.]TABLE",
        summary: "describe a table's fields",
        examples: &["desc ecom_orders"],
    },
    Verb {
        name: "peek",
        aliases: &[],
        usage: "peek [-n N] [CONNECTION.]TABLE [FIELD=VALUE ...]",
        summary: "show the row count and the first N records (5), or the records matching FIELD=VALUE",
        examples: &["peek ecom_orders", "peek -n 2 Demo.ecom_orders", "peek orderSingleView order_id=ORD789654"],
    },
    Verb {
        name: "count",
        aliases: &[],
        usage: "count [CONNECTION.]TABLE",
        summary: "count the rows of a table",
        examples: &["count ecom_orders"],
    },
    Verb {
        name: "status",
        aliases: &[],
        usage: "status FLOW",
        summary: "a flow's status, throughput, rows and delay",
        examples: &["status quickstart"],
    },
    Verb {
        name: "stats",
        aliases: &[],
        usage: "stats FLOW",
        summary: "a flow's metrics in detail",
        examples: &["stats quickstart"],
    },
    Verb {
        name: "logs",
        aliases: &[],
        usage: "logs FLOW [-n N | limit=N] [--level L | level=L]  (L: debug, info, warn, error)",
        summary: "a flow's recent log lines",
        examples: &["logs quickstart -n 20 --level warn", "logs quickstart limit=10 level=warn"],
    },
    Verb {
        name: "monitor",
        aliases: &[],
        usage: "monitor FLOW",
        summary: "a live status line until Ctrl-C",
        examples: &["monitor quickstart"],
    },
    Verb {
        name: "start",
        aliases: &[],
        usage: "start FLOW",
        summary: "start a saved flow",
        examples: &["start quickstart"],
    },
    Verb {
        name: "stop",
        aliases: &[],
        usage: "stop FLOW",
        summary: "stop a running flow",
        examples: &["stop quickstart"],
    },
    Verb {
        name: "reset",
        aliases: &[],
        usage: "reset FLOW",
        summary: "forget a stopped flow's progress: the next start snapshots again",
        examples: &["reset quickstart"],
    },
    Verb {
        name: "delete",
        aliases: &[],
        usage: "delete FLOW [-y]",
        summary: "delete a stopped flow (asks first; -y skips)",
        examples: &["delete quickstart -y"],
    },
    Verb {
        name: "copy",
        aliases: &[],
        usage: "copy FLOW",
        summary: "copy a flow, as TapData does (the copy is named FLOW - Copy and is not started)",
        examples: &["copy quickstart"],
    },
    Verb {
        name: "help",
        aliases: &["h"],
        usage: "help [VERB|CONNECTOR]",
        summary: "this list, a verb's usage, or a connector's settings",
        examples: &["help peek", "help sqlite"],
    },
    Verb { name: "exit", aliases: &["quit"], usage: "exit", summary: "leave the shell (Ctrl-D also)", examples: &[] },
];

pub fn find(word: &str) -> Option<&'static Verb> {
    VERBS.iter().find(|v| v.name == word || v.aliases.contains(&word))
}

/// Split a shell line into a verb and its arguments, when it is one. A line is Rhai, not a verb,
/// when the word is followed by `(`, `.`, `=` or an operator (so `status("x")` and
/// `count = 3` stay Rhai).
pub fn parse(line: &str) -> Option<(&'static Verb, Vec<String>)> {
    let trimmed = line.trim().trim_end_matches(';');
    let (word, rest) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
    let verb = find(word)?;
    let rest = rest.trim();
    if rest.starts_with(['(', '.', '=', '[', '+', '-', '*', '/', '<', '>', '!', '&', '|', '?'])
        && !rest.starts_with("-n")
        && !rest.starts_with("-y")
        && !rest.starts_with("--")
    {
        return None;
    }
    let args = shell_words(rest);
    Some((verb, args))
}

/// Split on whitespace, honouring single and double quotes.
pub fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() || any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        out.push(cur);
    }
    out
}

fn need<'a>(args: &'a [String], verb: &Verb) -> Result<&'a str> {
    args.first().map(String::as_str).ok_or_else(|| Error::usage(format!("usage: {}", verb.usage)))
}

/// Whether a confirmation prompt may be asked (for `delete` without `-y`).
pub type Confirm<'a> = &'a dyn Fn(&str) -> bool;

pub fn run(session: &Session, verb: &Verb, args: &[String], confirm: Confirm<'_>) -> Result<()> {
    match verb.name {
        "show" => show(session, args),
        "use" => use_connection(session, need(args, verb)?),
        "desc" => desc(session, need(args, verb)?),
        "peek" => {
            let (n, rest) = take_n(args, 5)?;
            let table = rest.first().ok_or_else(|| Error::usage(format!("usage: {}", verb.usage)))?;
            let filter = parse_filter(&rest[1..], verb)?;
            if filter.is_empty() { peek(session, table, n) } else { peek_where(session, table, &filter, n) }
        }
        "count" => count(session, need(args, verb)?),
        "status" => status(session, need(args, verb)?),
        "stats" => stats(session, need(args, verb)?),
        "logs" => {
            let (mut n, rest) = take_n(args, 20)?;
            let mut level = "info".to_string();
            let mut name: Option<String> = None;
            let mut i = 0;
            while i < rest.len() {
                let arg = &rest[i];
                if arg == "--level" {
                    level =
                        rest.get(i + 1).cloned().ok_or_else(|| Error::usage("--level needs info, warn or error"))?;
                    i += 2;
                    continue;
                }
                // TapFlow's spelling: `logs FLOW limit=10 level=warn`.
                if let Some((key, value)) = arg.split_once('=') {
                    match key {
                        "limit" => {
                            n = value.parse().ok().filter(|v| (1..=MAX_N).contains(v)).ok_or_else(|| {
                                Error::usage(format!("limit must be from 1 to {MAX_N}, not {value:?}"))
                            })?;
                        }
                        "level" => level = value.to_string(),
                        other => {
                            return Err(Error::usage(format!(
                                "logs takes limit=N and level=debug|info|warn|error, not {other}= (usage: {})",
                                verb.usage
                            )));
                        }
                    }
                } else if let Some(first) = &name {
                    return Err(Error::usage(format!(
                        "logs takes one flow, not {first:?} and {arg:?} (usage: {})",
                        verb.usage
                    )));
                } else {
                    name = Some(arg.clone());
                }
                i += 1;
            }
            logs(session, &name.ok_or_else(|| Error::usage(format!("usage: {}", verb.usage)))?, n, &level)
        }
        "monitor" => monitor(session, need(args, verb)?),
        "start" => start(session, need(args, verb)?),
        "stop" => stop(session, need(args, verb)?),
        "reset" => reset(session, need(args, verb)?),
        "delete" => {
            let yes = args.iter().any(|a| a == "-y" || a == "--yes");
            let name = args
                .iter()
                .find(|a| !a.starts_with('-'))
                .ok_or_else(|| Error::usage(format!("usage: {}", verb.usage)))?;
            let doc = resolve::flow(session, name)?;
            if !yes && !confirm(&format!("Are you sure you want to delete flow {name} (y/[n]): ")) {
                session.out.text("not deleted");
                return Ok(());
            }
            delete(session, &doc)
        }
        "copy" => {
            let doc = resolve::flow(session, need(args, verb)?)?;
            let copy = session.client.copy_task(s(&doc, "id"))?;
            session.out.either(
                &format!("Copy flow '{}' to '{}' success", s(&doc, "name"), s(&copy, "name")),
                &json!({"flow": s(&doc, "name"), "copy": s(&copy, "name")}),
            );
            Ok(())
        }
        "help" => help(session, args.first().map(String::as_str)),
        "exit" => Ok(()),
        other => Err(Error::internal(format!("verb {other} has no implementation"))),
    }
}

/// The most records or lines one verb shows (`peek -n`, `logs -n`).
const MAX_N: usize = 10_000;

fn take_n(args: &[String], default: usize) -> Result<(usize, Vec<String>)> {
    let mut n = default;
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "-n" {
            let v = args.get(i + 1).ok_or_else(|| Error::usage("-n needs a number"))?;
            n = v.parse().map_err(|_| Error::usage(format!("-n needs a number, not {v:?}")))?;
            if !(1..=MAX_N).contains(&n) {
                return Err(Error::usage(format!("-n must be from 1 to {MAX_N}, not {n}")));
            }
            i += 2;
        } else {
            rest.push(args[i].clone());
            i += 1;
        }
    }
    Ok((n, rest))
}

fn short(id: &str) -> String {
    id.chars().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

pub fn show(session: &Session, args: &[String]) -> Result<()> {
    let what = args.first().map(String::as_str).unwrap_or("");
    let like = match args.get(1).map(String::as_str) {
        Some("like") => Some(args[2..].join(" ")),
        Some(other) => {
            return Err(Error::usage(format!("show {what} {other}: did you mean `show {what} like {other}`?")));
        }
        None => None,
    };
    match what {
        "dbs" | "connections" | "datasources" => {
            let docs = session.client.connections()?;
            resolve::remember_connections(session, &docs);
            let rows: Vec<Vec<String>> = docs
                .iter()
                .filter(|d| like.as_ref().is_none_or(|l| s(d, "name").contains(l.as_str())))
                .map(|d| {
                    vec![
                        short(s(d, "id")),
                        if s(d, "status").is_empty() { "unknown".into() } else { s(d, "status").to_string() },
                        s(d, "database_type").to_string(),
                        s(d, "connection_type").to_string(),
                        s(d, "name").to_string(),
                    ]
                })
                .collect();
            if rows.is_empty() && !session.out.json {
                session.out.line("no connections: DataSource(connector, name, #{…}).save() creates one");
                return Ok(());
            }
            session.out.table(&["id", "status", "database_type", "type", "name"], rows);
            Ok(())
        }
        "tables" => {
            let conn = session
                .used_connection()
                .ok_or_else(|| Error::usage("no connection in use: `use NAME` first (`show dbs` lists connections)"))?;
            let tables = session.client.tables(s(&conn, "id"))?;
            let mut names: Vec<String> =
                tables.iter().map(|t| s(t, "original_name").to_string()).filter(|n| !n.is_empty()).collect();
            names.sort();
            if let Ok(mut n) = session.names.lock() {
                n.tables = names.clone();
            }
            let names: Vec<String> =
                names.into_iter().filter(|n| like.as_ref().is_none_or(|l| n.contains(l.as_str()))).collect();
            if session.out.json {
                session.out.value(&json!(names));
            } else if names.is_empty() {
                session.out.line(&format!(
                    "connection {} has no tables{}",
                    s(&conn, "name"),
                    like.map(|l| format!(" like {l}")).unwrap_or_default()
                ));
            } else {
                let width = names.iter().map(String::len).max().unwrap_or(0);
                for chunk in names.chunks(5) {
                    let line: Vec<String> = chunk.iter().map(|n| format!("{n:width$}")).collect();
                    session.out.line(line.join("  ").trim_end());
                }
            }
            Ok(())
        }
        "flows" | "jobs" => {
            let docs = session.client.tasks()?;
            resolve::remember_flows(session, &docs);
            let rows: Vec<Vec<String>> = docs
                .iter()
                .filter(|d| like.as_ref().is_none_or(|l| s(d, "name").to_lowercase().contains(&l.to_lowercase())))
                .map(|d| {
                    vec![
                        short(s(d, "id")),
                        s(d, "name").to_string(),
                        s(d, "status").to_string(),
                        format!(
                            "{}/{}",
                            s(d, "syncType"),
                            if s(d, "type").is_empty() { "unknown" } else { s(d, "type") }
                        ),
                    ]
                })
                .collect();
            if rows.is_empty() && !session.out.json {
                session.out.line("no flows: Flow(\"name\").read_from(…).write_to(…).save() creates one");
                return Ok(());
            }
            session.out.table(&["id", "name", "status", "type"], rows);
            Ok(())
        }
        "connectors" => {
            let all = session.client.connectors()?;
            let rows = all
                .iter()
                .map(|c| {
                    vec![
                        s(c, "name").to_string(),
                        s(c, "connectionType").to_string(),
                        c.get("Authentication")
                            .or_else(|| c.get("qcType"))
                            .and_then(Value::as_str)
                            .unwrap_or("Alpha")
                            .to_string(),
                    ]
                })
                .collect();
            session.out.table(&["name", "type", "status"], rows);
            Ok(())
        }
        "" => Err(Error::usage("usage: show dbs|connections|tables [like X]|flows [like X]|connectors")),
        other => {
            // `show FLOW` prints a flow's definition, as TapFlow does.
            match resolve::flow(session, other) {
                Ok(doc) => {
                    let mut dag = doc.get("dag").cloned().unwrap_or(Value::Null);
                    crate::output::mask_secrets(&mut dag);
                    session.out.record(&dag);
                    Ok(())
                }
                Err(_) => Err(Error::usage(format!(
                    "show {other}: expected dbs, connections, tables, flows, connectors or a flow name"
                ))),
            }
        }
    }
}

pub fn use_connection(session: &Session, name: &str) -> Result<()> {
    let conn = resolve::connection(session, name)?;
    let cname = s(&conn, "name").to_string();
    if let Ok(tables) = session.client.tables(s(&conn, "id"))
        && let Ok(mut n) = session.names.lock()
    {
        n.tables = tables.iter().map(|t| s(t, "original_name").to_string()).collect();
    }
    if let Ok(mut u) = session.used.lock() {
        *u = Some(conn);
    }
    session.out.either(&format!("datasource switch to: {cname}"), &json!({"use": cname}));
    Ok(())
}

pub fn desc(session: &Session, table: &str) -> Result<()> {
    let (_, meta) = resolve::table(session, table)?;
    let fields = session.client.table_fields(s(&meta, "id"))?;
    let mut out = serde_json::Map::new();
    for f in &fields {
        let mut text = s(f, "data_type").to_string();
        if f.get("primaryKey") == Some(&json!(true)) {
            text.push_str(" primary_key");
        }
        if f.get("unique") == Some(&json!(true)) {
            text.push_str(" unique");
        }
        // Dotted names become nested objects, as TapFlow shows them.
        let name = s(f, "field_name");
        let mut cur = &mut out;
        let parts: Vec<&str> = name.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                cur.insert(p.to_string(), json!(text));
            } else {
                let entry = cur.entry(p.to_string()).or_insert_with(|| json!({}));
                if !entry.is_object() {
                    *entry = json!({});
                }
                cur = entry.as_object_mut().ok_or_else(|| Error::internal("desc"))?;
            }
        }
    }
    session.out.record(&Value::Object(out));
    Ok(())
}

pub fn peek(session: &Session, table: &str, n: usize) -> Result<()> {
    let (conn, meta) = resolve::table(session, table)?;
    let name = s(&meta, "original_name");
    let (count, rows) = session.client.peek(s(&conn, "id"), name)?;
    if session.out.json {
        let rows: Vec<&Value> = rows.iter().take(n).collect();
        session.out.value(&json!({"table": name, "count": count, "records": rows}));
        return Ok(());
    }
    session.out.line(&format!("table {name} has {count} records"));
    for r in rows.iter().take(n) {
        session.out.record(r);
    }
    Ok(())
}

/// `field=value` words as an equality filter; values that read as JSON numbers, booleans or
/// null are those, anything else is text.
fn parse_filter(words: &[String], verb: &Verb) -> Result<serde_json::Map<String, Value>> {
    let mut filter = serde_json::Map::new();
    for w in words {
        let (k, v) = w.split_once('=').ok_or_else(|| {
            Error::usage(format!("expected FIELD=VALUE after the table, got {w:?}; usage: {}", verb.usage))
        })?;
        let value = match serde_json::from_str::<Value>(v) {
            Ok(x @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => x,
            _ => Value::String(v.to_string()),
        };
        filter.insert(k.trim().to_string(), value);
    }
    Ok(filter)
}

/// The rows of a table whose fields equal the filter's values.
pub fn peek_where(session: &Session, table: &str, filter: &serde_json::Map<String, Value>, n: usize) -> Result<()> {
    let (conn, meta) = resolve::table(session, table)?;
    let name = s(&meta, "original_name");
    let rows = session.client.peek_where(s(&conn, "id"), name, filter)?;
    if session.out.json {
        let rows: Vec<&Value> = rows.iter().take(n).collect();
        session.out.value(&json!({"table": name, "filter": filter, "records": rows}));
        return Ok(());
    }
    let shown = rows.len().min(n);
    session.out.line(&format!(
        "table {name}: {} matching records{}",
        rows.len(),
        if shown < rows.len() { format!(", showing {shown}") } else { String::new() }
    ));
    for r in rows.iter().take(n) {
        session.out.record(r);
    }
    Ok(())
}

pub fn count(session: &Session, table: &str) -> Result<()> {
    let (conn, meta) = resolve::table(session, table)?;
    let name = s(&meta, "original_name");
    let (count, _) = session.client.peek(s(&conn, "id"), name)?;
    session.out.either(&format!("table {name} has {count} records"), &json!({"table": name, "count": count}));
    Ok(())
}

/// The status line, as TapFlow prints it.
pub fn status_line(session: &Session, doc: &Value) -> Result<(String, Value)> {
    let id = s(doc, "id");
    let task = session.client.task(id)?.unwrap_or_else(|| doc.clone());
    let name = s(&task, "name").to_string();
    let status = s(&task, "status").to_string();
    let record = s(&task, "taskRecordId");
    let m = if record.is_empty() { json!({}) } else { session.client.task_metrics(id, record)? };
    let qps = m.get("outputQps").and_then(Value::as_f64).unwrap_or(0.0);
    let rows = m.get("snapshotRowTotal").and_then(Value::as_u64).unwrap_or(0);
    let lag = m.get("replicateLag").and_then(Value::as_i64).unwrap_or(0);
    let mut line =
        format!("flow {name} current status is: {status}, qps is: {qps:.1}, total rows: {rows}, delay is: {lag}ms");
    if status == "error" {
        line.push_str(&format!("\n  error: {}", flowops::last_error(session, &task)));
    }
    let retrying = s(&task, "retrying").to_string();
    if !retrying.is_empty() && status != "error" {
        line.push_str(&format!("\n  {retrying}"));
    }
    let mut v = json!({"name": name, "status": status, "qps": qps, "total_rows": rows, "delay_ms": lag,
                   "sync_phase": s(&task, "syncStatus")});
    if !retrying.is_empty() {
        v["retrying"] = json!(retrying);
    }
    Ok((line, v))
}

pub fn status(session: &Session, name: &str) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    let (line, v) = status_line(session, &doc)?;
    session.out.either(&line, &v);
    Ok(())
}

pub fn stats(session: &Session, name: &str) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    let record = s(&doc, "taskRecordId").to_string();
    let task = session.client.task(s(&doc, "id"))?.unwrap_or(doc);
    let record = if record.is_empty() { s(&task, "taskRecordId").to_string() } else { record };
    if record.is_empty() {
        return Err(Error::usage(format!("flow {name} has never run: `start {name}` first")));
    }
    let m = session.client.task_metrics(s(&task, "id"), &record)?;
    if session.out.json {
        session.out.value(&m);
        return Ok(());
    }
    let n = |k: &str| m.get(k).map(|v| v.to_string()).unwrap_or_else(|| "0".into());
    let rows = vec![
        vec!["status".into(), s(&task, "status").to_string()],
        vec!["phase".into(), s(&task, "syncStatus").to_string()],
        vec![
            "input insert/update/delete".into(),
            format!("{} / {} / {}", n("inputInsertTotal"), n("inputUpdateTotal"), n("inputDeleteTotal")),
        ],
        vec![
            "output insert/update/delete".into(),
            format!("{} / {} / {}", n("outputInsertTotal"), n("outputUpdateTotal"), n("outputDeleteTotal")),
        ],
        vec!["snapshot rows".into(), n("snapshotRowTotal")],
        vec!["qps (in / out)".into(), format!("{} / {}", n("inputQps"), n("outputQps"))],
        vec!["delay (ms)".into(), n("replicateLag")],
    ];
    session.out.table(&["metric", "value"], rows);
    Ok(())
}

pub fn logs(session: &Session, name: &str, n: usize, level: &str) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    let task = session.client.task(s(&doc, "id"))?.unwrap_or(doc);
    let levels: &[&str] = match level.to_ascii_lowercase().as_str() {
        "debug" => &["DEBUG", "INFO", "WARN", "ERROR"],
        "info" => &["INFO", "WARN", "ERROR"],
        "warn" => &["WARN", "ERROR"],
        "error" => &["ERROR"],
        other => return Err(Error::usage(format!("--level must be debug, info, warn or error, not {other:?}"))),
    };
    let mut items = session.client.task_logs(s(&task, "id"), s(&task, "taskRecordId"), levels, n)?;
    items.reverse();
    if session.out.json {
        session.out.value(&json!(items));
        return Ok(());
    }
    if items.is_empty() {
        session.out.line(&format!("flow {name} has no log lines at level {level} or above"));
    }
    for it in items {
        let ts = it.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
        let when = chrono::DateTime::from_timestamp_millis(ts)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        session.out.line(&format!("{when} {:<5} {}", s(&it, "level"), s(&it, "message")));
    }
    Ok(())
}

pub fn monitor(session: &Session, name: &str) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    session.out.text("(Ctrl-C stops watching; the flow keeps running)");
    loop {
        let (line, v) = status_line(session, &doc)?;
        session.out.either(&line, &v);
        if session.sleep(Duration::from_secs(1)).is_err() {
            return Ok(());
        }
    }
}

pub fn start(session: &Session, name: &str) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    let status = s(&doc, "status");
    if matches!(status, "running" | "scheduling" | "wait_run") {
        session.out.text(&format!("flow {name} is already {status}"));
        return Ok(());
    }
    session.client.start_task(s(&doc, "id")).map_err(|e| e.context(format!("cannot start flow {name}")))?;
    flowops::wait_status(session, s(&doc, "id"), &["running", "complete"], Duration::from_secs(60))?;
    session.out.either(&format!("flow {name} started"), &json!({"flow": name, "status": "running"}));
    Ok(())
}

pub fn stop(session: &Session, name: &str) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    let status = s(&doc, "status");
    if !matches!(status, "running" | "scheduling" | "wait_run" | "stopping") {
        session.out.text(&format!("flow {name} is {status}, not running"));
        return Ok(());
    }
    session.client.stop_task(s(&doc, "id"), false)?;
    flowops::wait_status(session, s(&doc, "id"), &["stop", "error", "complete"], Duration::from_secs(60))?;
    session.out.either(&format!("flow {name} stopped"), &json!({"flow": name, "status": "stop"}));
    Ok(())
}

pub fn reset(session: &Session, name: &str) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    session.client.reset_task(s(&doc, "id")).map_err(|e| e.context(format!("cannot reset flow {name}")))?;
    session.out.either(&format!("flow {name} reset"), &json!({"flow": name, "reset": true}));
    Ok(())
}

pub fn delete(session: &Session, doc: &Value) -> Result<()> {
    let name = s(doc, "name");
    session.client.delete_task(s(doc, "id")).map_err(|e| e.context(format!("cannot delete flow {name}")))?;
    session.out.either(&format!("flow {name} deleted"), &json!({"flow": name, "deleted": true}));
    Ok(())
}

pub fn help(session: &Session, topic: Option<&str>) -> Result<()> {
    match topic {
        None => {
            let rows = VERBS.iter().map(|v| vec![v.usage.to_string(), v.summary.to_string()]).collect();
            session.out.table(&["verb", "what it does"], rows);
            session
                .out
                .text("In Rhai: DataSource(connector, name, #{config}).save(); Flow(name).read_from(\"Conn.table\")");
            session.out.text("  .exclude(\"a\").rename_fields(#{old: \"new\"}).rhai(fn_name).write_to(\"Conn.table\").save().start()");
            session.out.text(
                "`help VERB` shows a verb's examples; `help CONNECTOR` its settings (`show connectors` lists them).",
            );
            Ok(())
        }
        Some(t) => {
            if let Some(v) = find(t) {
                session.out.line(&format!("usage: {}\n  {}", v.usage, v.summary));
                for e in v.examples {
                    session.out.line(&format!("  e.g. {e}"));
                }
                return Ok(());
            }
            let all = session.client.connectors()?;
            let c = all.iter().find(|c| s(c, "name").eq_ignore_ascii_case(t)).ok_or_else(|| {
                let verbs: Vec<&str> = VERBS.iter().map(|v| v.name).collect();
                let conns: Vec<&str> = all.iter().map(|c| s(c, "name")).collect();
                Error::not_found(format!(
                    "no verb or connector {t:?}; verbs: {}; connectors: {}",
                    verbs.join(", "),
                    conns.join(", ")
                ))
            })?;
            let props =
                c.pointer("/properties/connection/properties").and_then(Value::as_object).cloned().unwrap_or_default();
            let (req, opt): (Vec<_>, Vec<_>) = props.iter().partition(|(_, p)| p.get("required") == Some(&json!(true)));
            session.out.line("required config:");
            for (k, p) in req {
                session.out.line(&format!("    {k}: {} (Type: {})", s(p, "description"), s(p, "type")));
            }
            session.out.line("optional config:");
            for (k, p) in opt {
                session.out.line(&format!("    {k}: {} (Type: {})", s(p, "description"), s(p, "type")));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_versus_rhai() {
        assert_eq!(parse("show dbs").map(|(v, a)| (v.name, a)), Some(("show", vec!["dbs".to_string()])));
        assert_eq!(
            parse("peek -n 2 'my table'").map(|(v, a)| (v.name, a)),
            Some(("peek", vec!["-n".into(), "2".into(), "my table".into()]))
        );
        assert_eq!(parse("h").map(|(v, _)| v.name), Some("help"));
        assert!(parse("status(\"x\")").is_none());
        assert!(parse("count = 3").is_none());
        assert!(parse("let x = 1").is_none());
        assert!(parse("start.len()").is_none());
        assert_eq!(parse("logs f --level warn").map(|(_, a)| a.len()), Some(3));
    }
}
