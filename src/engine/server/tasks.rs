use super::*;
use crate::api::task::TaskStatus;

pub(super) fn task_view(engine: &Engine, mut doc: Value) -> Value {
    let id = doc.get("id").and_then(Value::as_str).unwrap_or("").to_string();
    // A task the store says is running but whose thread is gone (the engine was killed) is
    // resumed at start-up; between the two, report what the store says.
    if let Some(o) = doc.as_object_mut() {
        o.insert("transformed".into(), json!(true));
        if engine.runner.is_running(&id) {
            o.entry("syncStatus").or_insert(json!("SNAPSHOT"));
        }
    }
    doc
}

pub(super) async fn list_tasks(State(engine): State<Shared>, Query(q): Params) -> Response {
    let filter = match Filter::parse(q.get("filter").map(String::as_str)) {
        Ok(f) => f,
        Err(e) => return fail("IllegalArgument", &e),
    };
    let docs = tri!(engine.store.list(TASKS));
    let (total, items) = filter.apply(docs, 20);
    ok(page(total, items.into_iter().map(|d| task_view(&engine, d)).collect()))
}

pub(super) async fn get_task(State(engine): State<Shared>, Path(id): Path<String>) -> Response {
    match tri!(engine.store.get(TASKS, &id)) {
        Some(doc) => ok(task_view(&engine, doc)),
        None => ok_empty(),
    }
}

/// Settings the official client sends inside `dag` on create are task settings.
pub(super) fn hoist_settings(body: &mut Value) {
    let Some(dag) = body.get("dag").cloned() else { return };
    let Some(obj) = body.as_object_mut() else { return };
    for key in ["type", "syncType", "isStopOnError", "readBatchSize", "writeThreadSize", "processorThreadNum"] {
        if !obj.contains_key(key)
            && let Some(v) = dag.get(key)
        {
            obj.insert(key.into(), v.clone());
        }
    }
}

pub(super) const TASK_SHAPE: &[(&str, &str)] = &[("name", "a string"), ("dag", "an object"), ("type", "a string")];

pub(super) async fn create_task(State(engine): State<Shared>, Body(mut body): Body) -> Response {
    if let Some(bad) = wrong_shape(&body, TASK_SHAPE) {
        return bad;
    }
    let name = body.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    if name.trim().is_empty() {
        return fail("Task.NameIsNull", "Task name cannot be empty");
    }
    if tri!(engine.store.find_by_name(TASKS, &name)).is_some() {
        return fail("Task.RepeatName", &format!("Task name already exists: {name}"));
    }
    hoist_settings(&mut body);
    let now = iso_now();
    if let Some(o) = body.as_object_mut() {
        o.insert("id".into(), json!(new_id()));
        o.insert("status".into(), json!("edit"));
        o.insert("createTime".into(), json!(now));
        o.insert("last_updated".into(), json!(now));
        o.insert("user_id".into(), json!(engine.user_id));
        o.entry("syncType").or_insert(json!("sync"));
        o.entry("type").or_insert(json!("initial_sync+cdc"));
        o.insert("is_deleted".into(), json!(false));
    }
    tri!(engine.store.put(TASKS, &body));
    ok(task_view(&engine, body))
}

pub(super) fn merge_task(engine: &Engine, id: &str, mut body: Value, confirm: bool) -> Response {
    if let Some(bad) = wrong_shape(&body, TASK_SHAPE) {
        return bad;
    }
    if !crate::engine::safe_id(id) {
        return fail(
            "Task.IllegalId",
            &format!(
                "task id {id:?} is not an id: ids are 24 hex digits (or letters, digits, '-' and '_', at most 64)"
            ),
        );
    }
    hoist_settings(&mut body);
    if let Some(name) = body.get("name").and_then(Value::as_str)
        && let Some(other) = tri!(engine.store.find_by_name(TASKS, name))
        && other.get("id") != Some(&json!(id))
    {
        return fail("Task.RepeatName", &format!("Task name already exists: {name}"));
    }
    if confirm && let Some(dag) = body.get("dag") {
        let nodes = dag.get("nodes").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
        if nodes == 0 {
            let mut warn = Envelope::fail("Task.ListWarnMessage", "List warn message", None);
            warn.data = Some(json!({"dag": [{"code": "DAG.NotNodes", "msg": "the flow has no nodes"}]}));
            return Json(warn).into_response();
        }
    }
    // A confirmed save is checked as the runner would plan it: what cannot run is refused now,
    // naming the node and the field, not at start.
    if confirm && body.get("dag").is_some() {
        let mut check = tri!(engine.store.get(TASKS, id)).unwrap_or_else(|| json!({}));
        if let (Some(c), Some(b)) = (check.as_object_mut(), body.as_object()) {
            for (k, v) in b {
                c.insert(k.clone(), v.clone());
            }
        }
        if let Err(e) = flow::validate(&check).and_then(|_| flow::check_sources(&engine.store, &check)) {
            return fail("Task.Invalid", &format!("the flow cannot be saved: {}", e.message));
        }
    }
    let exists = tri!(engine.store.get(TASKS, id)).is_some();
    if !exists {
        // PATCH creates an unknown id, as TapData does.
        let mut doc = body.clone();
        if let Some(o) = doc.as_object_mut() {
            o.insert("id".into(), json!(id));
            o.insert("status".into(), json!(if confirm { "wait_start" } else { "edit" }));
            o.insert("createTime".into(), json!(iso_now()));
            o.insert("user_id".into(), json!(engine.user_id));
        }
        tri!(engine.store.put(TASKS, &doc));
        return ok(task_view(engine, doc));
    }
    let updated = tri!(engine.store.update(TASKS, id, |doc| {
        if let (Some(d), Some(b)) = (doc.as_object_mut(), body.as_object()) {
            for (k, v) in b {
                // Runtime state belongs to the engine, not to clients.
                if matches!(
                    k.as_str(),
                    "id" | "status" | "taskRecordId" | "syncStatus" | "startTime" | "stopTime" | "errorMessage"
                ) {
                    continue;
                }
                d.insert(k.clone(), v.clone());
            }
            d.insert("last_updated".into(), json!(iso_now()));
            if confirm && d.get("status").and_then(Value::as_str) == Some("edit") {
                d.insert("status".into(), json!("wait_start"));
            }
        }
    }));
    ok(updated.map(|d| task_view(engine, d)).unwrap_or(Value::Null))
}

pub(super) async fn patch_task_body(State(engine): State<Shared>, Body(body): Body) -> Response {
    let id = body.get("id").and_then(Value::as_str).map(str::to_string).unwrap_or_else(new_id);
    merge_task(&engine, &id, body, false)
}

pub(super) async fn patch_task(State(engine): State<Shared>, Path(id): Path<String>, Body(body): Body) -> Response {
    merge_task(&engine, &id, body, false)
}

pub(super) async fn confirm_task(State(engine): State<Shared>, Path(id): Path<String>, Body(body): Body) -> Response {
    // A confirmed save reads the sources' schemas (blocking connector calls).
    match tokio::task::spawn_blocking(move || merge_task(&engine, &id, body, true)).await {
        Ok(r) => r,
        Err(e) => fail("SystemError", &format!("saving the flow failed: {e}")),
    }
}

pub(super) fn task_ids(q: &HashMap<String, String>, raw: Option<&str>) -> Vec<String> {
    // taskIds=a,b and taskIds=a&taskIds=b both work, as in TapData.
    let mut ids: Vec<String> = raw
        .map(|r| url_pairs(r).into_iter().filter(|(k, _)| k == "taskIds").map(|(_, v)| v).collect())
        .unwrap_or_default();
    if ids.is_empty()
        && let Some(v) = q.get("taskIds")
    {
        ids.push(v.clone());
    }
    ids.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

pub(super) fn item(id: &str, code: &str, message: Option<&str>) -> Value {
    let mut v = json!({"id": id, "code": code});
    if let Some(m) = message {
        v["message"] = json!(m);
    }
    v
}

pub(super) fn status_of(doc: &Value) -> String {
    doc.get("status").and_then(Value::as_str).unwrap_or("edit").to_string()
}

pub(super) async fn batch_start(State(engine): State<Shared>, Query(q): Params, req: Request) -> Response {
    let ids = task_ids(&q, req.uri().query());
    let mut out = Vec::new();
    for id in ids {
        out.push(start_one(&engine, &id));
    }
    ok(Value::Array(out))
}

pub fn start_one(engine: &Shared, id: &str) -> Value {
    let doc = match engine.store.get(TASKS, id) {
        Ok(Some(d)) => d,
        Ok(None) => return item(id, "Task.NotFound", Some("Task not found")),
        Err(e) => return item(id, "SystemError", Some(&e.message)),
    };
    let status = status_of(&doc);
    if status == "edit" {
        return item(
            id,
            "Transition.Not.Supported",
            Some("This event is not supported in the state: save (confirm) the flow first"),
        );
    }
    if !matches!(status.as_str(), "wait_start" | "stop" | "complete" | "error" | "schedule_failed") {
        return item(id, "Task.StartStatusInvalid", Some(&format!("The task is {status} and cannot be started")));
    }
    match engine.runner.start(id) {
        Ok(()) => item(id, "ok", None),
        Err(e) => item(id, "SystemError", Some(&e.message)),
    }
}

pub(super) async fn batch_stop(State(engine): State<Shared>, Query(q): Params, req: Request) -> Response {
    let ids = task_ids(&q, req.uri().query());
    let mut out = Vec::new();
    for id in ids {
        let Some(doc) = tri!(engine.store.get(TASKS, &id)) else {
            out.push(item(&id, "Task.NotFound", Some("Task not found")));
            continue;
        };
        let status = status_of(&doc);
        if !TaskStatus::parse(&status).is_active() {
            out.push(item(&id, "Transition.Not.Supported", Some(&format!("The task is {status}, not running"))));
            continue;
        }
        tri!(engine.runner.stop(&id));
        out.push(item(&id, "ok", None));
    }
    ok(Value::Array(out))
}

/// Release a flow's CDC resources on a blocking thread (connectors block on their own runtimes).
pub(super) async fn release_sources(engine: &Shared, doc: &Value) -> crate::error::Result<()> {
    let (store, doc) = (engine.store.clone(), doc.clone());
    tokio::task::spawn_blocking(move || flow::release_sources(&store, &doc))
        .await
        .map_err(|e| Error::internal(format!("worker failed: {e}")))?
}

/// Reset and delete: the task must exist and not run; its sources' CDC resources are released.
/// The batch item saying why not, otherwise.
async fn release_stopped(engine: &Shared, id: &str, invalid: &str) -> Result<(), Value> {
    let doc = match engine.store.get(TASKS, id) {
        Ok(Some(doc)) => doc,
        Ok(None) => return Err(item(id, "Task.NotFound", Some("Task not found"))),
        Err(e) => return Err(item(id, "SystemError", Some(&e.message))),
    };
    let status = status_of(&doc);
    if engine.runner.is_running(id) || TaskStatus::parse(&status).is_active() {
        return Err(item(id, invalid, Some(&format!("The task is {status}: stop it first"))));
    }
    release_sources(engine, &doc).await.map_err(|e| item(id, "SystemError", Some(&e.message)))
}

pub(super) async fn batch_renew(State(engine): State<Shared>, Query(q): Params, req: Request) -> Response {
    let ids = task_ids(&q, req.uri().query());
    let mut out = Vec::new();
    for id in ids {
        if let Err(refused) = release_stopped(&engine, &id, "Task.ResetStatusInvalid").await {
            out.push(refused);
            continue;
        }
        tri!(engine.store.delete_checkpoint(&id));
        tri!(engine.store.delete_metrics(&id));
        tri!(engine.store.update(TASKS, &id, |d| {
            let was_edit = d.get("status").and_then(Value::as_str) == Some("edit");
            d["status"] = json!(if was_edit { "edit" } else { "wait_start" });
            d["taskRecordId"] = json!(new_id());
            d["syncStatus"] = json!("");
        }));
        out.push(item(&id, "ok", Some("ok")));
    }
    ok(Value::Array(out))
}

pub(super) async fn batch_delete(State(engine): State<Shared>, Query(q): Params, req: Request) -> Response {
    let ids = task_ids(&q, req.uri().query());
    let mut out = Vec::new();
    for id in ids {
        if let Err(refused) = release_stopped(&engine, &id, "Task.DeleteStatusInvalid").await {
            out.push(refused);
            continue;
        }
        tri!(engine.store.delete(TASKS, &id));
        tri!(engine.store.delete_checkpoint(&id));
        tri!(engine.store.delete_metrics(&id));
        tri!(engine.store.delete_logs(&id));
        out.push(item(&id, "ok", Some("ok")));
    }
    ok(Value::Array(out))
}

pub(super) async fn copy_task(State(engine): State<Shared>, Path(id): Path<String>) -> Response {
    let Some(mut doc) = tri!(engine.store.get(TASKS, &id)) else {
        return fail("Task.NotFound", "Task not found");
    };
    let base = doc.get("name").and_then(Value::as_str).unwrap_or("flow").to_string();
    let mut name = format!("{base} - Copy");
    let mut n = 2;
    while tri!(engine.store.find_by_name(TASKS, &name)).is_some() {
        name = format!("{base} - Copy {n}");
        n += 1;
    }
    if let Some(o) = doc.as_object_mut() {
        o.insert("id".into(), json!(new_id()));
        o.insert("name".into(), json!(name));
        o.insert("status".into(), json!("edit"));
        o.insert("createTime".into(), json!(iso_now()));
        for k in ["taskRecordId", "syncStatus", "startTime", "stopTime", "errorMessage"] {
            o.remove(k);
        }
    }
    tri!(engine.store.put(TASKS, &doc));
    ok(doc)
}

// ---- metrics and logs ----------------------------------------------------------------------
