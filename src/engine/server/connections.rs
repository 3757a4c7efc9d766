use super::*;

/// A connection as the API shows it: secrets masked, as TapData does for non-engine clients.
pub(super) fn public_connection(mut doc: Value) -> Value {
    if let Some(cfg) = doc.get_mut("config") {
        connectors::secrets::mask(cfg);
    }
    doc
}

pub(super) async fn list_connections(State(engine): State<Shared>, Query(q): Params) -> Response {
    let filter = match Filter::parse(q.get("filter").map(String::as_str)) {
        Ok(f) => f,
        Err(e) => return fail("IllegalArgument", &e),
    };
    let docs = tri!(engine.store.list(CONNECTIONS));
    let (total, items) = filter.apply(docs, 20);
    ok(page(total, items.into_iter().map(public_connection).collect()))
}

pub(super) async fn get_connection(State(engine): State<Shared>, Path(id): Path<String>) -> Response {
    match tri!(engine.store.get(CONNECTIONS, &id)) {
        Some(doc) => ok(public_connection(doc)),
        None => ok_empty(),
    }
}

/// A 400 envelope when one of `fields` is present with another JSON type than it must have.
pub(super) fn wrong_shape(body: &Value, fields: &[(&str, &str)]) -> Option<Response> {
    fields.iter().find_map(|(key, want)| {
        let v = body.get(*key).filter(|v| !v.is_null())?;
        let fits = match *want {
            "a string" => v.is_string(),
            "an object" => v.is_object(),
            _ => true,
        };
        (!fits).then(|| {
            let message = format!("field {key} is {v}, it must be {want}");
            (StatusCode::BAD_REQUEST, fail_kind("IllegalArgument", &message, ErrorKind::Usage)).into_response()
        })
    })
}

pub(super) fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_alphabetic())
}

pub(super) async fn create_connection(State(engine): State<Shared>, Body(mut body): Body) -> Response {
    if let Some(bad) =
        wrong_shape(&body, &[("name", "a string"), ("database_type", "a string"), ("config", "an object")])
    {
        return bad;
    }
    let name = body.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    if !valid_name(&name) {
        return fail("Datasource.IllegalName", "The name must start with a letter");
    }
    if tri!(engine.store.find_by_name(CONNECTIONS, &name)).is_some() {
        return fail("Datasource.RepeatName", &format!("Data source name already exists: {name}"));
    }
    let ty = body.get("database_type").and_then(Value::as_str).unwrap_or("");
    let Some(info) = connectors::find(ty) else {
        let known: Vec<&str> = connectors::CONNECTORS.iter().map(|c| c.name).collect();
        return fail(
            "Datasource.DefinitionNotFound",
            &format!("Data source definition not found: {ty:?}; the embedded engine has: {}", known.join(", ")),
        );
    };
    if let Err(e) = connectors::check_config(info, body.get("config").unwrap_or(&Value::Null)) {
        return fail_kind("Datasource.IllegalConfig", &e.message, e.kind);
    }
    let id = new_id();
    let now = iso_now();
    let submit = body.get("submit").and_then(Value::as_bool).unwrap_or(true);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("id".into(), json!(id));
        obj.insert("database_type".into(), json!(info.name));
        obj.insert("pdkHash".into(), json!(pdk_hash(info.pdk_id)));
        obj.insert("pdkType".into(), json!("pdk"));
        obj.insert("status".into(), json!("testing"));
        obj.insert("loadFieldsStatus".into(), json!("loading"));
        obj.insert("createType".into(), json!("User"));
        obj.insert("createTime".into(), json!(now));
        obj.insert("last_updated".into(), json!(now));
        obj.insert("user_id".into(), json!(engine.user_id));
        obj.insert("capabilities".into(), capabilities());
        obj.entry("connection_type").or_insert(json!("source_and_target"));
    }
    tri!(engine.store.put(CONNECTIONS, &body));
    if submit {
        test_and_load_schema(engine.clone(), id.clone());
    }
    ok(public_connection(body))
}

pub(super) async fn patch_connection_body(State(engine): State<Shared>, Body(body): Body) -> Response {
    let id = body.get("id").and_then(Value::as_str).unwrap_or("").to_string();
    update_connection(engine, id, body)
}

pub(super) async fn patch_connection(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Response {
    update_connection(engine, id, body)
}

pub(super) fn update_connection(engine: Shared, id: String, mut body: Value) -> Response {
    if let Some(bad) =
        wrong_shape(&body, &[("name", "a string"), ("database_type", "a string"), ("config", "an object")])
    {
        return bad;
    }
    let Some(old) = tri!(engine.store.get(CONNECTIONS, &id)) else {
        return fail("Datasource.NotFound", &format!("Data source not found: {id}"));
    };
    // Values sent back masked, as they were read, mean "unchanged".
    if let (Some(cfg), Some(old_cfg)) = (body.get_mut("config"), old.get("config"))
        && let Err(e) = connectors::secrets::unmask(cfg, old_cfg)
    {
        return fail("IllegalArgument", &e.message);
    }
    // A re-save merges into the stored config: keys not given keep their stored values, and so
    // do secrets given empty, as TapData does. The merged config is what is checked and stored.
    if let (Some(cfg), Some(old_cfg)) =
        (body.get_mut("config").and_then(Value::as_object_mut), old.get("config").and_then(Value::as_object))
    {
        for (k, v) in old_cfg {
            let secret = connectors::secrets::is_secret_key(k) || k == "uri";
            let keep = match cfg.get(k) {
                None => true,
                Some(x) => secret && (x.is_null() || x == ""),
            };
            if keep {
                cfg.insert(k.clone(), v.clone());
            }
        }
    }
    let ty = body.get("database_type").or_else(|| old.get("database_type")).and_then(Value::as_str).unwrap_or("");
    if let (Some(info), Some(cfg)) = (connectors::find(ty), body.get("config"))
        && let Err(e) = connectors::check_config(info, cfg)
    {
        return fail_kind("Datasource.IllegalConfig", &e.message, e.kind);
    }
    if let Some(name) = body.get("name").and_then(Value::as_str)
        && let Some(other) = tri!(engine.store.find_by_name(CONNECTIONS, name))
        && other.get("id") != Some(&json!(id))
    {
        return fail("Datasource.RepeatName", &format!("Data source name already exists: {name}"));
    }
    let submit = body.get("submit").and_then(Value::as_bool).unwrap_or(false) || body.get("config").is_some();
    let updated = tri!(engine.store.update(CONNECTIONS, &id, |doc| {
        if let (Some(d), Some(b)) = (doc.as_object_mut(), body.as_object()) {
            for (k, v) in b {
                if k == "id" || k == "pdkHash" || k == "database_type" && v.as_str().is_none() {
                    continue;
                }
                d.insert(k.clone(), v.clone());
            }
            d.insert("last_updated".into(), json!(iso_now()));
            if submit {
                d.insert("status".into(), json!("testing"));
                d.insert("loadFieldsStatus".into(), json!("loading"));
            }
        }
    }));
    if submit {
        test_and_load_schema(engine.clone(), id);
    }
    ok(updated.map(public_connection).unwrap_or(Value::Null))
}

pub(super) async fn delete_connection(State(engine): State<Shared>, Path(id): Path<String>) -> Response {
    if tri!(engine.store.get(CONNECTIONS, &id)).is_none() {
        return fail("Datasource.NotFound", &format!("Data source not found: {id}"));
    }
    let users: Vec<String> = tri!(engine.store.list(TASKS))
        .into_iter()
        .filter(|t| crate::api::dag::table_nodes(t).iter().any(|(n, _)| n.connection_id == id))
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    if !users.is_empty() {
        return fail(
            "Datasource.LinkJobs",
            &format!("The data source is used by flows: {}; delete them first", users.join(", ")),
        );
    }
    tri!(engine.store.delete(CONNECTIONS, &id));
    tri!(engine.store.delete_metadata_of(&id));
    ok_empty()
}

/// Test the connection and load its schema in the background, as a TapData engine does after
/// a save with `submit: true`: `status` ends `ready` or `invalid`, `loadFieldsStatus`
/// `finished` or `error`.
pub fn test_and_load_schema(engine: Shared, id: String) {
    let _ = engine.store.update(CONNECTIONS, &id, |doc| {
        doc["status"] = json!("testing");
        doc["loadFieldsStatus"] = json!("loading");
    });
    // At most SCHEMA_LOADS at a time, on the runtime's blocking threads: a burst of saves (to
    // a server that does not answer, say) costs no thread each, it waits its turn.
    static LOADS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    let loads = LOADS.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(SCHEMA_LOADS))).clone();
    tokio::spawn(async move {
        let Ok(_turn) = loads.acquire_owned().await else { return };
        let (e2, id2) = (engine.clone(), id.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || load_one_schema(&e2, &id2)).await {
            // A load that panicked must not leave the connection "testing" for ever.
            let failure: crate::error::Result<usize> = Err(Error::internal(format!("loading the schema failed: {e}")));
            record_schema_load(&engine, &id, &failure);
        }
    });
}

/// How many saved connections load their schema at the same time.
pub(super) const SCHEMA_LOADS: usize = 4;

pub(super) fn load_one_schema(engine: &Shared, id: &str) {
    let result = load_schema(&engine.store, id);
    record_schema_load(engine, id, &result);
}

/// The outcome of a schema load, on the connection (a failed write of it is logged: the
/// connection would otherwise say "testing" for ever).
pub(super) fn record_schema_load(engine: &Shared, id: &str, result: &crate::error::Result<usize>) {
    let written = engine.store.update(CONNECTIONS, id, |doc| match result {
        Ok(tables) => {
            doc["status"] = json!("ready");
            doc["loadFieldsStatus"] = json!("finished");
            doc["tableCount"] = json!(tables);
            doc["loadCount"] = json!(tables);
            doc["loadSchemaTime"] = json!(iso_now());
            doc["response_body"] = json!({"validate_details": [
                {"show_msg": "Check the connection", "status": "passed", "required": true}]});
            if let Some(o) = doc.as_object_mut() {
                o.remove("loadFieldErrMsg");
            }
        }
        Err(e) => {
            doc["status"] = json!("invalid");
            doc["loadFieldsStatus"] = json!("error");
            doc["loadFieldErrMsg"] = json!(e.message);
            doc["response_body"] = json!({"validate_details": [
                {"show_msg": "Check the connection", "status": "failed", "required": true, "fail_message": e.message}]});
        }
    });
    if let Err(e) = written {
        engine.log(&format!("cannot record the schema load of connection {id}: {}", e.message));
    }
}

pub(super) fn load_schema(store: &Store, id: &str) -> crate::error::Result<usize> {
    let stored = store.connection(id)?;
    let (ty, name) = (stored.database_type.as_str(), stored.name.as_str());
    let mut conn = store.open_connection(id)?;
    conn.test()?;
    let tables = conn.tables()?;
    store.delete_metadata_of(id)?;
    for t in &tables {
        let schema = conn.schema(t)?;
        store.put(METADATA, &metadata_doc(id, name, ty, &schema))?;
    }
    Ok(tables.len())
}

// ---- metadata ------------------------------------------------------------------------------
