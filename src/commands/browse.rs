use super::*;

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
                .filter(|d| like.as_ref().is_none_or(|l| d.name.contains(l.as_str())))
                .map(|d| {
                    vec![
                        short(&d.id),
                        if d.status.is_empty() { "unknown".into() } else { d.status.clone() },
                        d.database_type.clone(),
                        d.connection_type.clone(),
                        d.name.clone(),
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
            let tables = session.client.tables(&conn.id)?;
            let mut names: Vec<String> =
                tables.into_iter().map(|t| t.original_name).filter(|n| !n.is_empty()).collect();
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
                    conn.name,
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
                .filter(|d| like.as_ref().is_none_or(|l| d.name.to_lowercase().contains(&l.to_lowercase())))
                .map(|d| {
                    vec![
                        short(&d.id),
                        d.name.clone(),
                        d.status.to_string(),
                        format!("{}/{}", d.sync_type, if d.kind.is_empty() { "unknown" } else { &d.kind }),
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
        "agents" => objects::show_agents(session),
        "apis" => objects::show_apis(session, like.as_deref()),
        "" => Err(Error::usage(
            "usage: show dbs|connections|tables [like X]|flows [like X]|connectors|agents|apis, or show FLOW",
        )),
        other => {
            // `show FLOW` prints a flow's definition, as TapFlow does.
            match resolve::flow(session, other) {
                Ok(doc) => objects::show_flow(session, &doc),
                Err(_) => Err(Error::usage(format!(
                    "show {other}: expected dbs, connections, tables, flows, connectors, agents, apis or a flow name"
                ))),
            }
        }
    }
}

pub fn use_connection(session: &Session, name: &str) -> Result<()> {
    let conn = resolve::connection(session, name)?;
    let cname = conn.name.clone();
    if let Ok(tables) = session.client.tables(&conn.id)
        && let Ok(mut n) = session.names.lock()
    {
        n.tables = tables.into_iter().map(|t| t.original_name).collect();
    }
    if let Ok(mut u) = session.used.lock() {
        *u = Some(conn);
    }
    session.out.either(&format!("datasource switch to: {cname}"), &json!({"use": cname}));
    Ok(())
}

pub fn desc(session: &Session, table: &str) -> Result<()> {
    let (_, meta) = resolve::table(session, table)?;
    let fields = session.client.table_fields(&meta.id)?;
    let mut out = serde_json::Map::new();
    for f in &fields {
        let mut text = f.data_type.clone();
        if f.primary_key {
            text.push_str(" primary_key");
        }
        if f.unique {
            text.push_str(" unique");
        }
        // Dotted names become nested objects, as TapFlow shows them.
        let name = f.field_name.as_str();
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
    let name = meta.original_name.as_str();
    let (count, rows) = session.client.peek(&conn.id, name)?;
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
pub(super) fn parse_filter(words: &[String], verb: &Verb) -> Result<serde_json::Map<String, Value>> {
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
    let name = meta.original_name.as_str();
    let rows = session.client.peek_where(&conn.id, name, filter)?;
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
    let name = meta.original_name.as_str();
    let (count, _) = session.client.peek(&conn.id, name)?;
    session.out.either(&format!("table {name} has {count} records"), &json!({"table": name, "count": count}));
    Ok(())
}
