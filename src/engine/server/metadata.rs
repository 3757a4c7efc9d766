use super::*;

pub(super) async fn list_metadata(State(engine): State<Shared>, Query(q): Params) -> Response {
    let filter = match Filter::parse(q.get("filter").map(String::as_str)) {
        Ok(f) => f,
        Err(e) => return fail("IllegalArgument", &e),
    };
    let docs = tri!(engine.store.list(METADATA));
    let (total, items) = filter.apply(docs, 20);
    ok(page(total, items))
}

pub(super) async fn get_metadata(State(engine): State<Shared>, Path(id): Path<String>) -> Response {
    match tri!(engine.store.get(METADATA, &id)) {
        Some(doc) => ok(doc),
        None => ok_empty(),
    }
}

pub(super) async fn metadata_v3(State(engine): State<Shared>, Body(body): Body) -> Response {
    let docs = tri!(engine.store.list(METADATA));
    let mut out = Map::new();
    for (conn_id, req) in body.as_object().into_iter().flatten() {
        let names: Vec<&str> = req
            .get("tableNames")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let items: Vec<Value> = docs
            .iter()
            .filter(|d| d.pointer("/source/id") == Some(&json!(conn_id)))
            .filter(|d| names.is_empty() || d.get("original_name").and_then(Value::as_str).is_some_and(|n| names.contains(&n)))
            .map(|d| {
                json!({"qualifiedName": d["qualified_name"], "tapTable": {
                    "id": d["original_name"], "name": d["original_name"],
                    "nameFieldMap": d["fields"].as_array().map(|fs| fs.iter().map(|f| (f["field_name"].as_str().unwrap_or("").to_string(), f.clone())).collect::<Map<_, _>>()),
                }})
            })
            .collect();
        out.insert(conn_id.clone(), Value::Array(items));
    }
    ok(Value::Object(out))
}

pub(super) async fn node_schema() -> Response {
    ok(json!([]))
}

pub(super) async fn tables_value(State(engine): State<Shared>, Query(q): Params) -> Response {
    let conn = q.get("connectionId").cloned().unwrap_or_default();
    let items: Vec<Value> = tri!(engine.store.list(METADATA))
        .into_iter()
        .filter(|d| d.pointer("/source/id") == Some(&json!(conn)))
        .map(|d| json!({"tableName": d["original_name"], "tableId": d["id"], "tableComment": "", "meta_type": "table"}))
        .collect();
    ok(Value::Array(items))
}

// ---- tasks ---------------------------------------------------------------------------------
