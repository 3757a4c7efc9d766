//! A saved flow as the Rhai builder chain that recreates it (`show FLOW`, `Flow("name").show()`).
//!
//! Rendered from the DAG, not from what a script once typed, so a flow built anywhere (another
//! script, an older session, TapData's UI) prints: each node as the builder that emits it, with
//! the fields that differ from the builder's defaults in a trailing map. A node no builder
//! emits is named in a `//` line, so what is printed never claims more than it recreates.

use super::nodes;
use crate::api::connection::Connection;
use crate::commands::objects::ordered_nodes;
use serde_json::{Map, Value};

/// The chain of a saved flow (installed as `show FLOW`'s renderer).
pub fn render_task(task: &crate::api::task::Task) -> String {
    let dag = task.extra.get("dag").cloned().unwrap_or(Value::Null);
    render(&task.name, &dag, &task.sync_type, &task.kind)
}

/// The chain for a flow named `name` whose DAG is `dag`, of TapData sync type `sync_type`
/// (`migrate` for a pipeline) and task type `kind` (`initial_sync+cdc`, …).
pub fn render(name: &str, dag: &Value, sync_type: &str, kind: &str) -> String {
    let nodes = ordered_nodes(dag);
    let edges = crate::commands::objects::dag_edges(dag);
    let by_id = |id: &str| nodes.iter().find(|n| text(n, "id") == id);
    let mut prelude = String::new();
    let mut sink = String::new();
    let mut skipped = Vec::new();
    let migrate = sync_type == "migrate";
    let mut out = format!("{}({})", if migrate { "Pipeline" } else { "Flow" }, lit(&Value::String(name.into())));
    // The main line: from the source nothing feeds that is not a lookup's or a union's table,
    // along the edges to the sink.
    let merge_children: Vec<String> = nodes
        .iter()
        .filter(|n| text(n, "type") == "merge_table_processor")
        .flat_map(|m| child_ids(m.pointer("/mergeProperties/0").unwrap_or(&Value::Null)))
        .collect();
    let union_added: Vec<String> = nodes
        .iter()
        .filter(|n| text(n, "type") == "union_processor")
        .filter_map(|u| union_source(u, &nodes, &edges).map(|s| text(&s, "id")))
        .collect();
    let mut side = side_nodes(&merge_children, "merge_table_processor", &nodes, &edges);
    side.extend(side_nodes(&union_added, "union_processor", &nodes, &edges));
    let Some(first) =
        nodes.iter().find(|n| !edges.iter().any(|(_, t)| *t == text(n, "id")) && !side.contains(&text(n, "id")))
    else {
        return format!("{out}  // an empty flow");
    };
    let mut cur = Some(first.clone());
    let mut seen = Vec::new();
    while let Some(n) = cur {
        let id = text(&n, "id");
        if seen.contains(&id) {
            break;
        }
        seen.push(id.clone());
        let is_sink = !edges.iter().any(|(s, _)| *s == id);
        match step(&n, is_sink, &nodes, &edges, &mut prelude) {
            Some(s) if is_sink => sink = s,
            Some(s) => out.push_str(&s),
            None => skipped.push(format!("{} ({})", text(&n, "name"), text(&n, "type"))),
        }
        cur = edges.iter().find(|(s, t)| *s == id && !side.contains(t)).and_then(|(_, t)| by_id(t).cloned());
    }
    let kind = if kind.is_empty() { "initial_sync+cdc" } else { kind };
    let mut settings = Map::new();
    if kind != "initial_sync+cdc" {
        settings.insert("type".into(), Value::String(kind.into()));
    }
    settings.extend(nodes::changed_settings(dag, kind));
    // Task settings go before the sink, so the chain stays one expression ending in write_to.
    if !settings.is_empty() {
        out.push_str(&format!(".config({})", lit(&Value::Object(settings))));
    }
    if let Some(n) = nodes::skip_limit(dag) {
        out.push_str(&format!(".skip_error_event_by_limit({n})"));
    }
    let mut text = prelude;
    text.push_str(&out);
    text.push_str(&sink);
    for s in skipped {
        text.push_str(&format!("\n// node {s} has no builder here: it is not recreated"));
    }
    text
}

/// The nodes that only feed a lookup or a union: each added table and its pre-processors, up
/// to the node of type `until` (the merge, the union).
fn side_nodes(children: &[String], until: &str, nodes: &[Value], edges: &[(String, String)]) -> Vec<String> {
    let mut side = Vec::new();
    for child in children {
        let mut at = child.clone();
        while !side.contains(&at) {
            side.push(at.clone());
            let Some((_, next)) = edges.iter().find(|(s, _)| *s == at) else { break };
            if nodes.iter().any(|n| text(n, "id") == *next && text(n, "type") == until) {
                break;
            }
            at = next.clone();
        }
    }
    side
}

fn child_ids(head: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for c in head.get("children").and_then(Value::as_array).into_iter().flatten() {
        out.push(text(c, "id"));
        out.extend(child_ids(c));
    }
    out
}

fn step(n: &Value, is_sink: bool, nodes: &[Value], edges: &[(String, String)], prelude: &mut String) -> Option<String> {
    let get = |k: &str| n.get(k).cloned().unwrap_or(Value::Null);
    Some(match text(n, "type").as_str() {
        "table" if is_sink => {
            let base = nodes::sink(&stub(n), &text(n, "tableName"), &[]);
            let diff = differ(n, &base, &["updateConditionFields"]);
            format!(".write_to({}, {})", spec(n, "Sink", diff), lit(&get("updateConditionFields")))
        }
        "table" => {
            let base = nodes::source(&stub(n), &text(n, "tableName"));
            let mut diff = differ(n, &base, &[]);
            let query = (diff.get("enableCustomCommand") == Some(&Value::Bool(true)))
                .then(|| n.pointer("/customCommand/params/sql").cloned())
                .flatten();
            if query.is_some() {
                diff.remove("enableCustomCommand");
                diff.remove("customCommand");
            }
            let source = spec(n, "Source", diff);
            match query {
                Some(q) => format!(".read_from({source}, #{{ query: {} }})", lit(&q)),
                None => format!(".read_from({source})"),
            }
        }
        "database" if is_sink => format!(".write_to({})", lit(&Value::String(conn_name(n)))),
        "database" => {
            let conn = lit(&Value::String(conn_name(n)));
            if text(n, "migrateTableSelectType") == "custom" {
                format!(".read_from(Source({conn}, #{{ table: {} }}))", lit(&get("tableNames")))
            } else if text(n, "tableExpression") == ".*" {
                format!(".read_from({conn})")
            } else {
                format!(".read_from(Source({conn}, #{{ table_re: {} }}))", lit(&get("tableExpression")))
            }
        }
        "table_rename_processor" => format!(".renameTable({}, {})", lit(&get("prefix")), lit(&get("suffix"))),
        "js_processor" => js(n)?,
        "python_processor" => format!(".py({})", lit(&get("script"))),
        "rhai_processor" => {
            prelude.push_str(&text(n, "script"));
            prelude.push('\n');
            format!(".rhai({})", text(n, "entry"))
        }
        "field_rename_processor" => format!(".rename_fields({})", lit(&Value::Object(renames(n)))),
        "row_filter_processor" => {
            let mode = if text(n, "action") == "discard" { "discard" } else { "retain" };
            format!(".rowFilter({}, {})", lit(&get("expression")), lit(&Value::String(mode.into())))
        }
        "add_date_field_processor" => format!(".add_date_field({})", lit(&get("dateFieldName"))),
        "date_processor" => {
            let hours = get("hours").as_i64().unwrap_or(0) * if get("add") == Value::Bool(true) { 1 } else { -1 };
            format!(".adjust_time({hours}, {}, {})", lit(&get("dataTypes")), lit(&get("name")))
        }
        "field_mod_type_filter_processor" => format!(".exclude_type({})", lit(&get("filterTypes"))),
        "unwind_processor" => {
            let embedded = text(n, "unwindModel") == "EMBEDDED";
            let mut o = Map::new();
            o.insert("index_name".into(), get("includeArrayIndex"));
            if !embedded {
                o.insert("array_elem".into(), Value::String(text(n, "arrayModel")));
                o.insert("joiner".into(), get("joiner"));
            }
            o.insert("keep_null".into(), get("preserveNullAndEmptyArrays"));
            let what = if embedded { "embedded_unwind" } else { "flat_unwind" };
            format!(".{what}({}, {})", lit(&get("path")), lit(&Value::Object(o)))
        }
        "field_mod_type_processor" => {
            let ops = n.get("operations").and_then(Value::as_array).cloned().unwrap_or_default();
            let converts: Vec<Value> = ops
                .iter()
                .map(|o| Some(Value::Array(vec![o.get("field").cloned()?, o.get("operand").cloned()?])))
                .collect::<Option<_>>()?;
            let table = ops.first().map(|o| text(o, "table_name")).unwrap_or_default();
            format!(
                ".type_adjust({}, {}, {})",
                lit(&Value::Array(converts)),
                lit(&Value::String(table)),
                lit(&get("name"))
            )
        }
        "merge_table_processor" => lookups(n, nodes, edges)?,
        "union_processor" => union(n, nodes, edges)?,
        _ => return None,
    })
}

/// A table node as `"Conn.table"`, or as `Source(…)`/`Sink(…)` with the builders (and a
/// `config(#{ … })` for the rest) that set the fields it has beyond the defaults.
fn spec(n: &Value, kind: &str, mut diff: Map<String, Value>) -> String {
    let sig = format!("{}.{}", conn_name(n), text(n, "tableName"));
    if diff.is_empty() {
        return lit(&Value::String(sig));
    }
    let mut calls = String::new();
    let mut take = |k: &str| diff.remove(k);
    match (take("enableDDL"), take("ddlConfiguration")) {
        (Some(Value::Bool(true)), Some(c)) if c == "SYNCHRONIZATION" => calls.push_str(".enableDDL()"),
        (Some(Value::Bool(false)), Some(c)) if c == "FILTER" => calls.push_str(".disableDDL()"),
        (e, c) => {
            for (k, v) in [("enableDDL", e), ("ddlConfiguration", c)] {
                if let Some(v) = v {
                    diff.insert(k.into(), v);
                }
            }
        }
    }
    for (field, method) in [
        ("readBatchSize", "initial_read_size"),
        ("increaseReadSize", "increase_read_size"),
        ("writeBatchWaitMs", "set_write_wait"),
    ] {
        if let Some(v) = diff.get(field).filter(|v| v.is_u64()).cloned() {
            diff.remove(field);
            calls.push_str(&format!(".{method}({v})"));
        }
    }
    match diff.get("existDataProcessMode").and_then(Value::as_str) {
        Some("removeData") => calls.push_str(".clean_data()"),
        Some("dropTable") => calls.push_str(".clean_table()"),
        Some("keepData") => calls.push_str(".keep_data()"),
        _ => {}
    }
    if diff.get("existDataProcessMode").is_some_and(|m| ["removeData", "dropTable", "keepData"].iter().any(|x| m == x))
    {
        diff.remove("existDataProcessMode");
    }
    if !diff.is_empty() {
        calls.push_str(&format!(".config({})", lit(&Value::Object(diff))));
    }
    let (c, t) = (lit(&Value::String(conn_name(n))), lit(&Value::String(text(n, "tableName"))));
    format!("{kind}({c}, {t}){calls}")
}

/// The union's added table (the input that is not the main line: the source stored later),
/// with its pre-processors as options; `union()` when it has none.
fn union(n: &Value, nodes: &[Value], edges: &[(String, String)]) -> Option<String> {
    let id = text(n, "id");
    let inputs: Vec<&String> = edges.iter().filter(|(_, t)| *t == id).map(|(s, _)| s).collect();
    if inputs.len() < 2 {
        return Some(".union()".into());
    }
    let added = union_source(n, nodes, edges)?;
    let mut o = Map::new();
    pre_options(&text(&added, "id"), "union_processor", nodes, edges, &mut o)?;
    let sig = lit(&Value::String(format!("{}.{}", conn_name(&added), text(&added, "tableName"))));
    Some(if o.is_empty() { format!(".union({sig})") } else { format!(".union({sig}, {})", lit(&Value::Object(o))) })
}

/// The source a union adds: of the sources whose chains reach the union, the one stored last.
fn union_source(n: &Value, nodes: &[Value], edges: &[(String, String)]) -> Option<Value> {
    let id = text(n, "id");
    let reaches = |src: &str| {
        let mut at = src.to_string();
        for _ in 0..nodes.len() {
            match edges.iter().find(|(s, _)| *s == at) {
                Some((_, t)) if *t == id => return true,
                Some((_, t)) => at = t.clone(),
                None => return false,
            }
        }
        false
    };
    nodes
        .iter()
        .rfind(|s| {
            text(s, "type") == "table" && !edges.iter().any(|(_, t)| *t == text(s, "id")) && reaches(&text(s, "id"))
        })
        .cloned()
}

/// Each lookup of a merge node, parents before their children.
fn lookups(merge: &Value, nodes: &[Value], edges: &[(String, String)]) -> Option<String> {
    let head = merge.pointer("/mergeProperties/0")?;
    let mut out = String::new();
    let mut join_change = false;
    fn walk(c: &Value, nodes: &[Value], edges: &[(String, String)], out: &mut String, jc: &mut bool) -> Option<()> {
        for child in c.get("children").and_then(Value::as_array).into_iter().flatten() {
            let id = text(child, "id");
            let src = nodes.iter().find(|n| text(n, "id") == id)?;
            if child.get("enableUpdateJoinKeyValue") == Some(&Value::Bool(true)) && !*jc {
                out.push_str(".enable_join_value_change()");
                *jc = true;
            }
            let path = text(child, "targetPath");
            let parent = path.rsplit_once('.').map(|(p, _)| p.to_string()).unwrap_or_default();
            let relation: Vec<Value> = child
                .get("joinKeys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|k| {
                    let (s, t) = (text(k, "source"), text(k, "target"));
                    if !parent.is_empty() && t.starts_with(&format!("{parent}.")) {
                        Value::Array(vec![s.into(), t.into()])
                    } else {
                        Value::Array(vec![t.into(), s.into()])
                    }
                })
                .collect();
            let mut o = Map::new();
            o.insert("path".into(), Value::String(path));
            let array = text(child, "mergeType") == "updateIntoArray";
            o.insert("type".into(), Value::String(if array { "array" } else { "object" }.into()));
            o.insert("relation".into(), Value::Array(relation));
            if let Some(k) = child.get("arrayKeys").filter(|k| k.as_array().is_some_and(|a| !a.is_empty())) {
                o.insert("arrayKeys".into(), k.clone());
            }
            if src.get("enableCustomCommand") == Some(&Value::Bool(true)) {
                o.insert("query".into(), src.pointer("/customCommand/params/sql").cloned().unwrap_or_default());
            }
            // The pre-processors between the looked-up table and the merge.
            pre_options(&id, "merge_table_processor", nodes, edges, &mut o)?;
            out.push_str(&format!(
                ".lookup({}, {})",
                lit(&Value::String(format!("{}.{}", conn_name(src), text(src, "tableName")))),
                lit(&Value::Object(o))
            ));
            walk(child, nodes, edges, out, jc)?;
        }
        Some(())
    }
    walk(head, nodes, edges, &mut out, &mut join_change)?;
    Some(out)
}

/// The options (`filter`, `include`/`exclude`, `rename`, `js`, `type_adjust`, `adjust_time`)
/// of the pre-processors after `start`, up to the node of type `until` (a lookup's merge, a
/// union); `None` when one is not such an option.
fn pre_options(
    start: &str,
    until: &str,
    nodes: &[Value],
    edges: &[(String, String)],
    o: &mut Map<String, Value>,
) -> Option<()> {
    let mut at = start.to_string();
    loop {
        let next = edges.iter().find(|(s, _)| *s == at).map(|(_, t)| t.clone())?;
        let node = nodes.iter().find(|n| text(n, "id") == next)?;
        let get = |k: &str| node.get(k).cloned().unwrap_or_default();
        match text(node, "type").as_str() {
            t if t == until => return Some(()),
            "row_filter_processor" => {
                o.insert("filter".into(), get("expression"));
            }
            "js_processor" => match column_fields(node) {
                Some((fields, keep)) => {
                    o.insert(if keep { "include" } else { "exclude" }.into(), Value::Array(fields));
                }
                None => {
                    o.insert("js".into(), get("script"));
                }
            },
            "field_rename_processor" => {
                o.insert("rename".into(), Value::Object(renames(node)));
            }
            "field_mod_type_processor" => {
                let converts: Vec<Value> = get("operations")
                    .as_array()?
                    .iter()
                    .map(|c| Some(Value::Array(vec![c.get("field").cloned()?, c.get("operand").cloned()?])))
                    .collect::<Option<_>>()?;
                o.insert("type_adjust".into(), Value::Array(converts));
            }
            "date_processor" => {
                let hours = get("hours").as_i64().unwrap_or(0) * if get("add") == Value::Bool(true) { 1 } else { -1 };
                let mut a = Map::new();
                a.insert("addHours".into(), hours.into());
                a.insert("t".into(), get("dataTypes"));
                o.insert("adjust_time".into(), Value::Object(a));
            }
            _ => return None,
        }
        at = next;
    }
}

fn renames(n: &Value) -> Map<String, Value> {
    n.get("operations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|o| (text(o, "field"), o.get("operand").cloned().unwrap_or_default()))
        .collect()
}

/// An `exclude`/`include` node: its fields, and whether it keeps them.
fn column_fields(n: &Value) -> Option<(Vec<Value>, bool)> {
    let keep = match text(n, "name").as_str() {
        "Include" => true,
        "Exclude" => false,
        _ => return None,
    };
    let script = text(n, "script");
    let marker = if keep { "keepFields = [" } else { "deleteFields = [" };
    let start = script.find(marker)? + marker.len() - 1;
    let end = start + script[start..].find("];")? + 1;
    let fields: Vec<String> = parse_python_list(&script[start..end])?;
    let rebuilt = nodes::column_filter(&fields, keep);
    (rebuilt.get("script") == n.get("script")).then(|| (fields.into_iter().map(Value::String).collect(), keep))
}

fn parse_python_list(s: &str) -> Option<Vec<String>> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == ',') {
            chars.next();
        }
        match chars.next() {
            None => return Some(out),
            Some('\'') => {
                let mut cur = String::new();
                loop {
                    match chars.next()? {
                        '\\' => cur.push(chars.next()?),
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
                out.push(cur);
            }
            Some(_) => return None,
        }
    }
}

fn js(n: &Value) -> Option<String> {
    if let Some((fields, keep)) = column_fields(n) {
        return Some(format!(".{}({})", if keep { "include" } else { "exclude" }, lit(&Value::Array(fields))));
    }
    let mut o = Map::new();
    let declare = text(n, "declareScript");
    if !declare.is_empty() {
        o.insert("declareScript".into(), Value::String(declare));
    }
    if text(n, "name") != "JS" {
        o.insert("name".into(), n.get("name").cloned().unwrap_or_default());
    }
    let script = lit(n.get("script")?);
    Some(if o.is_empty() { format!(".js({script})") } else { format!(".js({script}, {})", lit(&Value::Object(o))) })
}

/// The fields of `n` that differ from the builder's node `base` (identity fields aside).
fn differ(n: &Value, base: &Value, also_skip: &[&str]) -> Map<String, Value> {
    const IDENTITY: [&str; 8] =
        ["id", "attrs", "connectionId", "databaseType", "name", "tableName", "tableNames", "quiet"];
    n.as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !IDENTITY.contains(&k.as_str()) && !also_skip.contains(&k.as_str()))
        .filter(|(k, v)| base.get(k.as_str()) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn conn_name(n: &Value) -> String {
    n.pointer("/attrs/connectionName").and_then(Value::as_str).unwrap_or("").to_string()
}

fn stub(n: &Value) -> Connection {
    Connection { id: text(n, "connectionId"), name: conn_name(n), ..Default::default() }
}

pub(super) fn text(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// Rhai's keywords (and reserved words a name may not be): quoted as map keys, never bound as
/// a connection's variable.
pub const RESERVED: [&str; 27] = [
    "let", "const", "if", "else", "switch", "do", "while", "loop", "until", "for", "in", "continue", "break", "return",
    "throw", "try", "catch", "fn", "private", "import", "export", "as", "true", "false", "this", "global", "Fn",
];

/// A JSON value as a Rhai literal.
pub fn lit(v: &Value) -> String {
    match v {
        Value::Null => "()".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\r' => out.push_str("\\r"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Value::Array(a) => format!("[{}]", a.iter().map(lit).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => {
            if o.is_empty() {
                return "#{}".into();
            }
            let items: Vec<String> = o.iter().map(|(k, v)| format!("{}: {}", key(k), lit(v))).collect();
            format!("#{{ {} }}", items.join(", "))
        }
    }
}

fn key(k: &str) -> String {
    let plain = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain && !RESERVED.contains(&k) { k.to_string() } else { lit(&Value::String(k.into())) }
}
