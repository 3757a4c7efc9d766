use super::*;

pub(super) fn sample_for(engine: &Engine, tags: &Value, fields: Option<&Vec<Value>>) -> Value {
    let task_id = tags.get("taskId").and_then(Value::as_str).unwrap_or("");
    let metrics = engine.runner.metrics(task_id).ok().flatten().unwrap_or_else(|| json!({}));
    let mut out = Map::new();
    out.insert("tags".into(), tags.clone());
    let Some(m) = metrics.as_object() else { return Value::Object(out) };
    match fields {
        Some(fs) if !fs.is_empty() => {
            for f in fs.iter().filter_map(Value::as_str) {
                if let Some(v) = m.get(f).filter(|v| !v.is_null()) {
                    out.insert(f.into(), v.clone());
                }
            }
        }
        _ => {
            for (k, v) in m.iter().filter(|(_, v)| !v.is_null()) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(t) = m.get("outputQpsAvg") {
        out.insert("lastFiveMinutesQps".into(), t.clone());
    }
    Value::Object(out)
}

pub(super) fn query_v2(engine: &Engine, body: &Value) -> Result<Value, String> {
    if body.get("startAt").is_none() || body.get("endAt").is_none() {
        return Err("startAt and endAt are required".into());
    }
    let mut samples = Map::new();
    for (alias, q) in body.get("samples").and_then(Value::as_object).into_iter().flatten() {
        let tags = q.get("tags").cloned().unwrap_or(json!({}));
        let fields = q.get("fields").and_then(Value::as_array);
        samples.insert(alias.clone(), json!([sample_for(engine, &tags, fields)]));
    }
    Ok(json!({"samples": samples}))
}

pub(super) async fn measurement_query(State(engine): State<Shared>, Body(body): Body) -> Response {
    match query_v2(&engine, &body) {
        Ok(v) => ok(v),
        Err(e) => fail("SystemError", &e),
    }
}

pub(super) async fn measurement_batch(State(engine): State<Shared>, Body(body): Body) -> Response {
    let mut out = Map::new();
    for (key, call) in body.as_object().into_iter().flatten() {
        let uri = call.get("uri").and_then(Value::as_str).unwrap_or("");
        let param = call.get("param").cloned().unwrap_or(json!({}));
        let result = match uri {
            "/api/measurement/query/v2" => query_v2(&engine, &param),
            "/api/MonitoringLogs/query" => logs(&engine, &param),
            other => Err(format!("unsupported uri {other}")),
        };
        out.insert(
            key.clone(),
            match result {
                Ok(data) => json!({"code": "ok", "error": null, "data": data, "cost": 0}),
                Err(e) => json!({"code": "SystemError", "error": e, "cost": 0}),
            },
        );
    }
    ok(Value::Object(out))
}

pub(super) fn logs(engine: &Engine, body: &Value) -> Result<Value, String> {
    let task_id = body.get("taskId").and_then(Value::as_str).ok_or("taskId is required")?;
    let levels: Vec<String> = body
        .get("levels")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_uppercase).collect())
        .filter(|v: &Vec<String>| !v.is_empty())
        .unwrap_or_else(|| vec!["WARN".into(), "ERROR".into()]);
    let order = body.get("order").and_then(Value::as_str).unwrap_or("desc");
    if order != "asc" && order != "desc" {
        return Err("order must be asc or desc".into());
    }
    let page_no = body.get("page").and_then(Value::as_u64).unwrap_or(1).max(1) as usize;
    let size = body.get("pageSize").and_then(Value::as_u64).unwrap_or(20).max(1) as usize;
    let start = body.get("start").and_then(Value::as_i64).unwrap_or(0) - 5000;
    let end = body.get("end").and_then(Value::as_i64).unwrap_or_else(now_ms) + 10_000;
    let (total, mut items) = engine
        .store
        .logs(task_id, &levels, start, end, size, (page_no - 1) * size, order == "asc")
        .map_err(|e| e.message)?;
    // TapData's log items name the task and the node; the engine's messages name their node
    // in the text, so nodeId and nodeName are empty, as TapData's are for task-level lines.
    let task_name = engine
        .store
        .get(TASKS, task_id)
        .ok()
        .flatten()
        .and_then(|t| t.get("name").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    for item in &mut items {
        item.task_name = task_name.clone();
    }
    serde_json::to_value(crate::api::envelope::Page::new(total as usize, items)).map_err(|e| e.to_string())
}

pub(super) async fn logs_query(State(engine): State<Shared>, Body(body): Body) -> Response {
    match logs(&engine, &body) {
        Ok(v) => ok(v),
        Err(e) => fail("SystemError", &e),
    }
}

// ---- proxy: peek, count, sql, preview ------------------------------------------------------
