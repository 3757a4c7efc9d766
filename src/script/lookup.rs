//! Lookups and unions: TapFlow's `lookup(table, #{ path, type, relation, … })` (a
//! `merge_table_processor` with the looked-up table and its pre-processors as child nodes) and
//! `union(table, #{ … })`.

use super::flow::{Flow, add_step, read_from, rename_key, table_info};
use super::nodes;
use crate::commands::session::Session;
use crate::error::{Error, Result};
use serde_json::{Value, json};

/// The pre-processors of a lookup's table (TapFlow's `filter`, `fields`, `include`, `exclude`,
/// `rename`, `js` options), applied in that order, each a node between the looked-up table and
/// the merge.
fn lookup_pre(what: &str, opts: &rhai::Map) -> Result<Vec<Value>> {
    let list = |k: &str| -> Result<Option<Vec<String>>> {
        match opts.get(k) {
            None => Ok(None),
            Some(v) => match v.clone().into_array() {
                Ok(a) if !a.is_empty() => Ok(Some(a.into_iter().map(|x| x.to_string()).collect())),
                _ => Err(Error::usage(format!("{what}: {k} takes a non-empty list of field names"))),
            },
        }
    };
    let text = |k: &str| -> Result<Option<String>> {
        match opts.get(k) {
            None => Ok(None),
            Some(v) => match v.clone().into_immutable_string() {
                Ok(t) if !t.trim().is_empty() => Ok(Some(t.to_string())),
                _ => Err(Error::usage(format!("{what}: {k} takes a non-empty string"))),
            },
        }
    };
    let mut pre = Vec::new();
    if let Some(expr) = text("filter")? {
        pre.push(nodes::row_filter(&nodes::filter_expression(&expr), true));
    }
    for (k, keep) in [("fields", true), ("include", true), ("exclude", false)] {
        if let Some(fields) = list(k)? {
            pre.push(nodes::column_filter(&fields, keep));
        }
    }
    if let Some(m) = opts.get("rename") {
        let m = m
            .clone()
            .try_cast::<rhai::Map>()
            .ok_or_else(|| Error::usage(format!("{what}: rename takes a mapping, #{{ old: \"new\" }}")))?;
        let pairs: Vec<(String, String)> = m.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if !pairs.is_empty() {
            pre.push(nodes::rename(&pairs));
        }
    }
    if let Some(js) = text("js")? {
        pre.push(nodes::js(&js, "", "JS"));
    }
    Ok(pre)
}

/// `lookup(table, #{path, type, relation, arrayKeys, filter, fields, include, exclude, rename,
/// js})` → `merge_table_processor` (§8.5).
pub fn lookup(session: &Session, flow: &Flow, sig: &str, opts: &rhai::Map) -> Result<()> {
    const OPTIONS: [&str; 13] = [
        "path",
        "query",
        "type",
        "relation",
        "arrayKeys",
        "filter",
        "fields",
        "include",
        "exclude",
        "rename",
        "js",
        "type_adjust",
        "adjust_time",
    ];
    if let Some(k) = opts.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
        return Err(Error::unsupported(format!(
            "lookup: option {k} is not supported yet (it takes {}); read the table in its own flow to filter or reshape it",
            OPTIONS.join(", ")
        )));
    }
    let get = |k: &str| opts.get(k).map(|v| v.to_string());
    let path = get("path").unwrap_or_default();
    let ty = get("type").unwrap_or_else(|| "object".into());
    if ty != "object" && ty != "array" {
        return Err(Error::usage(format!("lookup type must be \"object\" or \"array\", not {ty:?}")));
    }
    let relation: Vec<(String, String)> = opts
        .get("relation")
        .and_then(|r| r.clone().into_array().ok())
        .map(|pairs| {
            pairs
                .into_iter()
                .filter_map(|p| {
                    let a = p.into_array().ok()?;
                    Some((a.first()?.to_string(), a.get(1)?.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    let (conn, table, pk) = table_info(session, sig)?;
    let relation = if relation.is_empty() { natural_relation(session, flow, &table, &pk, &path)? } else { relation };
    let array_keys: Vec<String> = opts
        .get("arrayKeys")
        .and_then(|r| r.clone().into_array().ok())
        .map(|a| a.into_iter().map(|v| v.to_string()).collect())
        .filter(|v: &Vec<String>| !v.is_empty())
        .unwrap_or_else(|| if ty == "array" { pk.clone() } else { Vec::new() });
    let parent_path = path.rsplit_once('.').map(|(p, _)| p.to_string()).unwrap_or_default();
    // [[main_field, lookup_field]] → {source: lookup field, target: document field}; for nested
    // paths the side under the parent path is the document side (what the official client means).
    let join_keys: Vec<Value> = relation
        .iter()
        .map(|(a, b)| {
            if !parent_path.is_empty() && b.starts_with(&format!("{parent_path}.")) {
                json!({"source": a, "target": b})
            } else {
                json!({"source": b, "target": a})
            }
        })
        .collect();
    let mut pre = lookup_pre("lookup", opts)?;
    pre.extend(super::type_steps::lookup_pre(session, &conn, &table, opts)?);
    let mut child_source = nodes::source(&conn, &table);
    let query = match opts.get("query") {
        Some(q) => match q.clone().into_immutable_string() {
            Ok(q) if !q.trim().is_empty() => Some(q.to_string()),
            _ => return Err(Error::usage("lookup query: give the SELECT as a non-empty string")),
        },
        None => None,
    };
    if let Some(q) = &query {
        child_source["customCommand"] = json!({"command": "executeQuery", "params": {"sql": q}});
        child_source["enableCustomCommand"] = json!(true);
    }
    let child_id = child_source["id"].as_str().unwrap_or("").to_string();
    flow.with(|s| {
        s.require_source("lookup")?;
        let main_table = s.sources.first().map(|(_, t)| t.clone()).unwrap_or_default();
        if s.merge.is_none() {
            let head = json!({"children": [], "id": s.stage.clone(), "isArray": false, "tableName": main_table,
                              "mergeType": "updateOrInsert", "enableUpdateJoinKeyValue": false});
            let merge = json!({"type": "merge_table_processor", "processorThreadNum": 1, "name": "主从合并",
                "mergeProperties": [head], "id": nodes::new_node_id(), "elementType": "Node",
                "mergeMode": "main_table_first", "disable": false, "isTransformed": false, "catalog": "processor",
                "attrs": {"position": [0, 0]}});
            let id = s.add(merge);
            s.merge = Some(id);
        }
        let merge_id = s.merge.clone().unwrap_or_default();
        let parent_is_array =
            find_child(&s.nodes, &merge_id, &parent_path).is_some_and(|p| p["mergeType"] == "updateIntoArray");
        let child = json!({"id": child_id, "isArray": parent_is_array, "joinKeys": join_keys,
            "mergeType": if ty == "array" { "updateIntoArray" } else { "updateWrite" }, "targetPath": path,
            "arrayKeys": array_keys, "children": [], "tableName": table,
            "enableUpdateJoinKeyValue": s.join_value_change});
        let merge =
            s.nodes.iter_mut().find(|n| n["id"] == json!(merge_id)).ok_or_else(|| Error::internal("merge node"))?;
        let head = &mut merge["mergeProperties"][0];
        match find_child_mut(head, &parent_path) {
            Some(parent) if !parent_path.is_empty() => push_child(parent, child),
            _ => push_child(head, child),
        }
        s.nodes.push(child_source);
        // The looked-up table, its pre-processors, then the merge.
        let mut last = child_id.clone();
        for node in pre {
            let id = node["id"].as_str().unwrap_or("").to_string();
            s.nodes.push(node);
            s.edges.push((last, id.clone()));
            last = id;
        }
        s.edges.push((last, merge_id));
        if query.is_some() {
            s.query_source = true;
            s.sync_type = "initial_sync".into();
        }
        Ok::<_, Error>(())
    })?;
    if query.is_some() {
        session.out.text(&format!(
            "Flow updated: the lookup of {table} reads a query, which has no change stream, so the flow copies once (full_sync)"
        ));
    }
    session.out.text(&format!("Flow updated: new table {table} added as child table"));
    Ok(())
}

/// A lookup without `relation` (the official client allows it): joined on the looked-up table's
/// primary key, by fields of the same names in the main table; refused when it has none.
fn natural_relation(
    session: &Session,
    flow: &Flow,
    table: &str,
    pk: &[String],
    path: &str,
) -> Result<Vec<(String, String)>> {
    let what = |why: String| {
        Error::usage(format!("lookup {table} without relation: {why}; give relation: [[main_field, lookup_field]]"))
    };
    if path.contains('.') {
        return Err(what("a nested lookup names the fields it joins on".into()));
    }
    if pk.is_empty() {
        return Err(what(format!("{table} has no primary key to join on")));
    }
    let (conn_id, main) = flow.with(|s| {
        let Some((node_id, main)) = s.sources.first() else { return (String::new(), String::new()) };
        (s.source_connection(node_id), main.clone())
    });
    let fields: Vec<String> = session
        .client
        .table(&conn_id, &main)?
        .map(|m| m.fields.into_iter().map(|f| f.field_name).collect())
        .unwrap_or_default();
    if let Some(missing) = pk.iter().find(|k| !fields.contains(k)) {
        return Err(what(format!("the main table {main} has no field {missing:?}, the key of {table}")));
    }
    session.out.text(&format!("Flow updated: lookup {table} joins on {} (its key)", pk.join(", ")));
    Ok(pk.iter().map(|k| (k.clone(), k.clone())).collect())
}

fn push_child(parent: &mut Value, child: Value) {
    if let Some(a) = parent.get_mut("children").and_then(Value::as_array_mut) {
        a.push(child);
    } else {
        parent["children"] = json!([child]);
    }
}

fn find_child<'a>(nodes: &'a [Value], merge_id: &str, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return None;
    }
    let merge = nodes.iter().find(|n| n["id"] == json!(merge_id))?;
    fn walk<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
        for c in v.get("children").and_then(Value::as_array)? {
            if c["targetPath"] == json!(path) {
                return Some(c);
            }
            if let Some(found) = walk(c, path) {
                return Some(found);
            }
        }
        None
    }
    walk(&merge["mergeProperties"][0], path)
}

fn find_child_mut<'a>(v: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    if path.is_empty() {
        return None;
    }
    let children = v.get_mut("children")?.as_array_mut()?;
    let idx = children.iter().position(|c| c["targetPath"] == json!(path));
    match idx {
        Some(i) => children.get_mut(i),
        None => children.iter_mut().find_map(|c| find_child_mut(c, path)),
    }
}

/// `union("Connection.table")`: a union node after the current stage, fed by the extra source.
/// `union(sig, #{ filter, fields, include, exclude, rename, js, type_adjust, adjust_time })`:
/// the extra table, shaped by those pre-processors (as a lookup's), joins the stream.
pub fn union(session: &Session, flow: &Flow, sig: Option<&str>, opts: &rhai::Map) -> Result<()> {
    const OPTIONS: [&str; 8] = ["filter", "fields", "include", "exclude", "rename", "js", "type_adjust", "adjust_time"];
    if let Some(k) = opts.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
        return Err(Error::usage(format!("union: option {k} is not one it takes ({})", OPTIONS.join(", "))));
    }
    if sig.is_some() && flow.with(|s| s.loaded) {
        return Err(Error::usage(format!(
            "union({:?}) on the saved flow {}: a union reads another table, so define the flow again from read_from(…) with the union in it",
            sig.unwrap_or_default(),
            flow.name()
        )));
    }
    let pre = match sig {
        Some(sig) if !opts.is_empty() => {
            let (conn, table, _) = table_info(session, sig)?;
            let mut pre = lookup_pre("union", opts)?;
            pre.extend(super::type_steps::lookup_pre(session, &conn, &table, opts)?);
            pre
        }
        None if !opts.is_empty() => {
            return Err(Error::usage("union: options shape the table it adds: union(\"Conn.table\", #{ … })"));
        }
        _ => Vec::new(),
    };
    add_step(session, flow, "union", nodes::union(), "union added")?;
    if let Some(sig) = sig {
        let union_id = flow.with(|s| s.stage.clone()).unwrap_or_default();
        read_from(session, flow, sig)?;
        flow.with(|s| {
            if let Some((src, _)) = s.sources.last().cloned() {
                let mut last = src;
                for node in pre {
                    let id = node["id"].as_str().unwrap_or("").to_string();
                    s.nodes.push(node);
                    s.edges.push((last, id.clone()));
                    last = id;
                }
                s.edges.push((last, union_id.clone()));
            }
            s.stage = Some(union_id);
        });
        // The sink key comes from the last table read: it follows that table's renames.
        if let Some(m) = opts.get("rename").and_then(|m| m.clone().try_cast::<rhai::Map>()) {
            let pairs: Vec<(String, String)> = m.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            rename_key(flow, &pairs);
        }
    }
    Ok(())
}
