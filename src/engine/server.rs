//! The engine's HTTP API: the subset of TapData's management API (`reference/tapdata-api.md`
//! §8.2) that our shell and the official Python client use, with TapData's envelope
//! (`{"reqId", "ts", "code", "data"}`), paths, field names, `filter` syntax and status codes.
//!
//! Every route but `POST /api/users/generatetoken` needs a valid `access_token` query
//! parameter; without one the answer is HTTP 401 `{"code": "NotLogin"}`, as TapData answers.
//! `POST /api/proxy/call` serves peek and count (`QueryDataBaseDataService.getData`) and the
//! preview of a flow (`TaskPreviewService.preview`: each node's output for a few source rows).
//! Work that touches databases (connection tests, peek, count, preview) runs on blocking threads.

use super::filter::Filter;
use super::processors;
use super::runner::{self, iso_now};
use super::store::{CONNECTIONS, METADATA, Store, TASKS};
use super::{Engine, new_id};
use crate::api::envelope::Envelope;
use crate::connectors;
use crate::error::{Error, ErrorKind};
use crate::model::{Change, Event, now_ms};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

type Shared = Arc<Engine>;
type Params = Query<HashMap<String, String>>;

/// Token lifetime: TapData's access-code tokens live 14 days.
const TOKEN_TTL_MS: i64 = 14 * 24 * 3600 * 1000;

fn ok(data: Value) -> Response {
    Json(Envelope::ok(Some(data))).into_response()
}

fn ok_empty() -> Response {
    Json(Envelope::ok(None)).into_response()
}

/// An error answer with TapData's code; the client reads it as TapData's (a remote error).
fn fail(code: &str, message: &str) -> Response {
    Json(Envelope::fail(code, message, None)).into_response()
}

/// An error answer that also names its kind, so the client keeps it.
fn fail_kind(code: &str, message: &str, kind: ErrorKind) -> Response {
    Json(Envelope::fail(code, message, Some(kind))).into_response()
}

/// A request body: a JSON object. Whatever else arrives is answered with an envelope: malformed
/// JSON or another shape 400, a wrong content type 415, a body over the limit 413.
struct Body(Value);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<Value>::from_request(req, state).await {
            Ok(Json(v)) if v.is_object() => Ok(Body(v)),
            Ok(Json(v)) => Err((
                StatusCode::BAD_REQUEST,
                fail_kind("IllegalArgument", &format!("the body must be a JSON object, not {v}"), ErrorKind::Usage),
            )
                .into_response()),
            Err(rejection) => {
                let status = rejection.status();
                let code = match status {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
                    StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
                    _ => "IllegalArgument",
                };
                Err((status, fail_kind(code, &rejection.body_text(), ErrorKind::Usage)).into_response())
            }
        }
    }
}

fn page(total: usize, items: Vec<Value>) -> Value {
    json!({"total": total, "items": items})
}

fn internal(e: Error) -> Response {
    let code = match e.kind {
        ErrorKind::NotFound => "NotFound",
        ErrorKind::Usage | ErrorKind::Config => "IllegalArgument",
        ErrorKind::Unsupported => "Unsupported",
        _ => "SystemError",
    };
    fail_kind(code, &e.message, e.kind)
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return internal(e),
        }
    };
}

pub fn router(engine: Shared) -> Router {
    let api = Router::new()
        .route("/users/generatetoken", post(generate_token))
        .route("/users", get(users))
        .route("/users/self", get(user_self))
        .route("/DatabaseTypes/getDatabases", get(database_types))
        .route("/agent", get(agents))
        .route("/agent/agentCount", get(agent_count))
        .route("/Connections", get(list_connections).post(create_connection).patch(patch_connection_body))
        .route("/Connections/{id}", get(get_connection).patch(patch_connection).delete(delete_connection))
        .route("/MetadataInstances", get(list_metadata))
        .route("/MetadataInstances/metadata/v3", post(metadata_v3))
        .route("/MetadataInstances/node/schema", get(node_schema))
        .route("/MetadataInstances/tablesValue", get(tables_value))
        .route("/MetadataInstances/{id}", get(get_metadata))
        .route("/Task", get(list_tasks).post(create_task).patch(patch_task_body))
        .route("/Task/batchStart", put(batch_start))
        .route("/Task/batchStop", put(batch_stop))
        .route("/Task/batchRenew", patch(batch_renew))
        .route("/Task/batchDelete", delete(batch_delete))
        .route("/Task/confirm/{id}", patch(confirm_task))
        .route("/Task/copy/{id}", put(copy_task))
        .route("/Task/{id}", get(get_task).patch(patch_task))
        .route("/measurement/query/v2", post(measurement_query))
        .route("/measurement/batch", post(measurement_batch))
        .route("/MonitoringLogs/query", post(logs_query))
        .route("/proxy/call", post(proxy_call))
        .route("/proxy/table/count", get(table_count))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(engine.clone(), require_token))
        .with_state(engine);
    Router::new().nest("/api", api).fallback(|| async { (StatusCode::NOT_FOUND, fail("NotFound", "no such route")) })
}

async fn method_not_allowed(req: Request) -> Response {
    let message = format!("{} is not a method of {}", req.method(), req.uri().path());
    (StatusCode::METHOD_NOT_ALLOWED, fail_kind("MethodNotAllowed", &message, ErrorKind::Usage)).into_response()
}

async fn require_token(State(engine): State<Shared>, req: Request, next: Next) -> Response {
    if req.uri().path().ends_with("/users/generatetoken") {
        return next.run(req).await;
    }
    let token =
        req.uri().query().and_then(|q| url_pairs(q).into_iter().find(|(k, _)| k == "access_token").map(|(_, v)| v));
    let valid = match token {
        Some(t) => engine.store.token_valid(&t, TOKEN_TTL_MS).unwrap_or(false),
        None => false,
    };
    if !valid {
        return (StatusCode::UNAUTHORIZED, fail("NotLogin", "User is not login.")).into_response();
    }
    next.run(req).await
}

fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| urlencoding::decode(&s.replace('+', " ")).map(|c| c.into_owned()).ok();
            Some((dec(k)?, dec(v)?))
        })
        .collect()
}

// ---- users ---------------------------------------------------------------------------------

async fn generate_token(State(engine): State<Shared>, req: Request) -> Response {
    let is_form = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let bytes = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(_) => return fail("IllegalArgument", "cannot read the request body"),
    };
    let code = if is_form {
        url_pairs(&String::from_utf8_lossy(&bytes)).into_iter().find(|(k, _)| k == "accesscode").map(|(_, v)| v)
    } else {
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("accesscode").and_then(Value::as_str).map(str::to_string))
    };
    let Some(code) = code.filter(|c| !c.is_empty()) else {
        return fail("AccessCode.Is.Null", "access code is null");
    };
    if code != engine.access_code {
        return fail("AccessCode.No.User", "can not find user by this accessCode");
    }
    let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    tri!(engine.store.add_token(&token, TOKEN_TTL_MS));
    let now = iso_now();
    ok(json!({"id": token, "ttl": TOKEN_TTL_MS / 1000, "created": now, "userId": engine.user_id,
              "last_updated": now, "authType": "access_code"}))
}

fn user_doc(engine: &Engine) -> Value {
    json!({"id": engine.user_id, "username": "admin@tap.local", "email": "admin@tap.local", "role": 1})
}

async fn users(State(engine): State<Shared>) -> Response {
    ok(page(1, vec![user_doc(&engine)]))
}

async fn user_self(State(engine): State<Shared>) -> Response {
    ok(user_doc(&engine))
}

async fn agents() -> Response {
    ok(page(
        1,
        vec![json!({"id": "tap-engine", "name": "tap-engine", "status": "running",
                    "metric": {"systemInfo": {"ips": ["127.0.0.1"], "cpus": 0}}})],
    ))
}

async fn agent_count() -> Response {
    ok(json!({"agentTotalCount": 1, "agentRunningCount": 1}))
}

// ---- connectors ----------------------------------------------------------------------------

pub fn pdk_hash(pdk_id: &str) -> String {
    format!("tap-{pdk_id}")
}

fn capabilities() -> Value {
    json!([{"id": "query_by_advance_filter_function"}, {"id": "batch_read_function"},
           {"id": "stream_read_function"}, {"id": "write_record_function"}, {"id": "get_table_info_function"},
           {"id": "batch_count_function"}])
}

async fn database_types() -> Response {
    let items: Vec<Value> = connectors::CONNECTORS
        .iter()
        .map(|c| {
            let mut props = Map::new();
            for (i, (key, ty, required, desc)) in c.config.iter().enumerate() {
                props.insert(
                    key.to_string(),
                    json!({"type": ty, "title": key, "required": required, "apiServerKey": key,
                           "x-index": i + 1, "description": desc}),
                );
            }
            json!({
                "name": c.name, "type": c.name, "pdkId": c.pdk_id, "pdkHash": pdk_hash(c.pdk_id), "pdkType": "pdk",
                "connectionType": match (c.source, c.target) { (true, true) => "source_and_target", (true, false) => "source", _ => "target" },
                "properties": {"connection": {"type": "object", "properties": props}},
                "capabilities": capabilities(), "tags": ["Database"], "qcType": "GA", "version": env!("CARGO_PKG_VERSION"),
            })
        })
        .collect();
    ok(Value::Array(items))
}

// ---- connections ---------------------------------------------------------------------------

/// A connection as the API shows it: secrets masked, as TapData does for non-engine clients.
fn public_connection(mut doc: Value) -> Value {
    if let Some(cfg) = doc.get_mut("config") {
        connectors::secrets::mask(cfg);
    }
    doc
}

async fn list_connections(State(engine): State<Shared>, Query(q): Params) -> Response {
    let filter = match Filter::parse(q.get("filter").map(String::as_str)) {
        Ok(f) => f,
        Err(e) => return fail("IllegalArgument", &e),
    };
    let docs = tri!(engine.store.list(CONNECTIONS));
    let (total, items) = filter.apply(docs, 20);
    ok(page(total, items.into_iter().map(public_connection).collect()))
}

async fn get_connection(State(engine): State<Shared>, Path(id): Path<String>) -> Response {
    match tri!(engine.store.get(CONNECTIONS, &id)) {
        Some(doc) => ok(public_connection(doc)),
        None => ok_empty(),
    }
}

/// A 400 envelope when one of `fields` is present with another JSON type than it must have.
fn wrong_shape(body: &Value, fields: &[(&str, &str)]) -> Option<Response> {
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

fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_alphabetic())
}

async fn create_connection(State(engine): State<Shared>, Body(mut body): Body) -> Response {
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

async fn patch_connection_body(State(engine): State<Shared>, Body(body): Body) -> Response {
    let id = body.get("id").and_then(Value::as_str).unwrap_or("").to_string();
    update_connection(engine, id, body)
}

async fn patch_connection(State(engine): State<Shared>, Path(id): Path<String>, Body(body): Body) -> Response {
    update_connection(engine, id, body)
}

fn update_connection(engine: Shared, id: String, mut body: Value) -> Response {
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
    if let Some(name) = body.get("name").and_then(Value::as_str)
        && let Some(other) = tri!(engine.store.find_by_name(CONNECTIONS, name))
        && other.get("id") != Some(&json!(id))
    {
        return fail("Datasource.RepeatName", &format!("Data source name already exists: {name}"));
    }
    let submit = body.get("submit").and_then(Value::as_bool).unwrap_or(false) || body.get("config").is_some();
    let updated = tri!(engine.store.update(CONNECTIONS, &id, |doc| {
        let old_config = old.get("config").cloned().unwrap_or(Value::Null);
        if let (Some(d), Some(b)) = (doc.as_object_mut(), body.as_object()) {
            for (k, v) in b {
                if k == "id" || k == "pdkHash" || k == "database_type" && v.as_str().is_none() {
                    continue;
                }
                d.insert(k.clone(), v.clone());
            }
            // A re-save merges into the stored config: keys not given keep their stored values,
            // and so do secrets given empty, as TapData does.
            if let (Some(cfg), Some(old_cfg)) =
                (d.get_mut("config").and_then(Value::as_object_mut), old_config.as_object())
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

async fn delete_connection(State(engine): State<Shared>, Path(id): Path<String>) -> Response {
    if tri!(engine.store.get(CONNECTIONS, &id)).is_none() {
        return fail("Datasource.NotFound", &format!("Data source not found: {id}"));
    }
    let users: Vec<String> = tri!(engine.store.list(TASKS))
        .into_iter()
        .filter(|t| {
            t.pointer("/dag/nodes")
                .and_then(Value::as_array)
                .is_some_and(|nodes| nodes.iter().any(|n| n.get("connectionId") == Some(&json!(id))))
        })
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
const SCHEMA_LOADS: usize = 4;

fn load_one_schema(engine: &Shared, id: &str) {
    let result = load_schema(&engine.store, id);
    record_schema_load(engine, id, &result);
}

/// The outcome of a schema load, on the connection (a failed write of it is logged: the
/// connection would otherwise say "testing" for ever).
fn record_schema_load(engine: &Shared, id: &str, result: &crate::error::Result<usize>) {
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

fn load_schema(store: &Store, id: &str) -> crate::error::Result<usize> {
    let doc = store.get(CONNECTIONS, id)?.ok_or_else(|| Error::not_found("connection vanished"))?;
    let ty = doc.get("database_type").and_then(Value::as_str).unwrap_or("");
    let name = doc.get("name").and_then(Value::as_str).unwrap_or("");
    let mut conn = connectors::open(ty, doc.get("config").unwrap_or(&Value::Null))?;
    conn.test()?;
    let tables = conn.tables()?;
    store.delete_metadata_of(id)?;
    for t in &tables {
        let schema = conn.schema(t)?;
        store.put(METADATA, &metadata_doc(id, name, ty, &schema))?;
    }
    Ok(tables.len())
}

/// A `MetadataInstances` document for a table.
pub fn metadata_doc(conn_id: &str, conn_name: &str, database_type: &str, schema: &crate::model::Schema) -> Value {
    let mut pk_pos = 0;
    let fields: Vec<Value> = schema
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if f.primary_key {
                pk_pos += 1;
            }
            json!({
                "id": format!("{conn_id}_{}_{}", schema.table, f.name),
                "field_name": f.name, "original_field_name": f.name, "data_type": f.data_type,
                "tapType": {"type": f.ty.tap_type()}, "type": f.ty,
                "primaryKey": f.primary_key, "primary_key_position": if f.primary_key { pk_pos } else { 0 },
                "unique": f.primary_key, "is_nullable": f.nullable, "columnPosition": i + 1,
            })
        })
        .collect();
    // Stable id per (connection, table), so reloading a schema keeps table ids.
    let id = format!("{:x}", md5_like(&format!("{conn_id}/{}", schema.table)));
    json!({
        "id": format!("{:0>24}", &id[..id.len().min(24)]),
        "name": schema.table, "original_name": schema.table,
        "qualified_name": format!("T_{}_{}_{}", database_type.to_lowercase(), schema.table, conn_id),
        "meta_type": "table", "sourceType": "SOURCE", "is_deleted": false,
        "source": {"id": conn_id, "_id": conn_id, "name": conn_name, "database_type": database_type},
        "fields": fields, "indices": [],
    })
}

/// A 96-bit FNV-style hash, for stable document ids (not for security).
fn md5_like(s: &str) -> u128 {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in s.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    h & ((1u128 << 96) - 1)
}

// ---- metadata ------------------------------------------------------------------------------

async fn list_metadata(State(engine): State<Shared>, Query(q): Params) -> Response {
    let filter = match Filter::parse(q.get("filter").map(String::as_str)) {
        Ok(f) => f,
        Err(e) => return fail("IllegalArgument", &e),
    };
    let docs = tri!(engine.store.list(METADATA));
    let (total, items) = filter.apply(docs, 20);
    ok(page(total, items))
}

async fn get_metadata(State(engine): State<Shared>, Path(id): Path<String>) -> Response {
    match tri!(engine.store.get(METADATA, &id)) {
        Some(doc) => ok(doc),
        None => ok_empty(),
    }
}

async fn metadata_v3(State(engine): State<Shared>, Body(body): Body) -> Response {
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

async fn node_schema() -> Response {
    ok(json!([]))
}

async fn tables_value(State(engine): State<Shared>, Query(q): Params) -> Response {
    let conn = q.get("connectionId").cloned().unwrap_or_default();
    let items: Vec<Value> = tri!(engine.store.list(METADATA))
        .into_iter()
        .filter(|d| d.pointer("/source/id") == Some(&json!(conn)))
        .map(|d| json!({"tableName": d["original_name"], "tableId": d["id"], "tableComment": "", "meta_type": "table"}))
        .collect();
    ok(Value::Array(items))
}

// ---- tasks ---------------------------------------------------------------------------------

fn task_view(engine: &Engine, mut doc: Value) -> Value {
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

async fn list_tasks(State(engine): State<Shared>, Query(q): Params) -> Response {
    let filter = match Filter::parse(q.get("filter").map(String::as_str)) {
        Ok(f) => f,
        Err(e) => return fail("IllegalArgument", &e),
    };
    let docs = tri!(engine.store.list(TASKS));
    let (total, items) = filter.apply(docs, 20);
    ok(page(total, items.into_iter().map(|d| task_view(&engine, d)).collect()))
}

async fn get_task(State(engine): State<Shared>, Path(id): Path<String>) -> Response {
    match tri!(engine.store.get(TASKS, &id)) {
        Some(doc) => ok(task_view(&engine, doc)),
        None => ok_empty(),
    }
}

/// Settings the official client sends inside `dag` on create are task settings.
fn hoist_settings(body: &mut Value) {
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

const TASK_SHAPE: &[(&str, &str)] = &[("name", "a string"), ("dag", "an object"), ("type", "a string")];

async fn create_task(State(engine): State<Shared>, Body(mut body): Body) -> Response {
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

fn merge_task(engine: &Engine, id: &str, mut body: Value, confirm: bool) -> Response {
    if let Some(bad) = wrong_shape(&body, TASK_SHAPE) {
        return bad;
    }
    if !super::safe_id(id) {
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
        if let Err(e) = runner::validate(&check).and_then(|_| runner::check_sources(&engine.store, &check)) {
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

async fn patch_task_body(State(engine): State<Shared>, Body(body): Body) -> Response {
    let id = body.get("id").and_then(Value::as_str).map(str::to_string).unwrap_or_else(new_id);
    merge_task(&engine, &id, body, false)
}

async fn patch_task(State(engine): State<Shared>, Path(id): Path<String>, Body(body): Body) -> Response {
    merge_task(&engine, &id, body, false)
}

async fn confirm_task(State(engine): State<Shared>, Path(id): Path<String>, Body(body): Body) -> Response {
    // A confirmed save reads the sources' schemas (blocking connector calls).
    match tokio::task::spawn_blocking(move || merge_task(&engine, &id, body, true)).await {
        Ok(r) => r,
        Err(e) => fail("SystemError", &format!("saving the flow failed: {e}")),
    }
}

fn task_ids(q: &HashMap<String, String>, raw: Option<&str>) -> Vec<String> {
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

fn item(id: &str, code: &str, message: Option<&str>) -> Value {
    let mut v = json!({"id": id, "code": code});
    if let Some(m) = message {
        v["message"] = json!(m);
    }
    v
}

fn status_of(doc: &Value) -> String {
    doc.get("status").and_then(Value::as_str).unwrap_or("edit").to_string()
}

async fn batch_start(State(engine): State<Shared>, Query(q): Params, req: Request) -> Response {
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

async fn batch_stop(State(engine): State<Shared>, Query(q): Params, req: Request) -> Response {
    let ids = task_ids(&q, req.uri().query());
    let mut out = Vec::new();
    for id in ids {
        let Some(doc) = tri!(engine.store.get(TASKS, &id)) else {
            out.push(item(&id, "Task.NotFound", Some("Task not found")));
            continue;
        };
        let status = status_of(&doc);
        if !matches!(status.as_str(), "running" | "scheduling" | "wait_run" | "stopping") {
            out.push(item(&id, "Transition.Not.Supported", Some(&format!("The task is {status}, not running"))));
            continue;
        }
        tri!(engine.runner.stop(&id));
        out.push(item(&id, "ok", None));
    }
    ok(Value::Array(out))
}

/// Release a flow's CDC resources on a blocking thread (connectors block on their own runtimes).
async fn release_sources(engine: &Shared, doc: &Value) -> crate::error::Result<()> {
    let (store, doc) = (engine.store.clone(), doc.clone());
    tokio::task::spawn_blocking(move || runner::release_sources(&store, &doc))
        .await
        .map_err(|e| Error::internal(format!("worker failed: {e}")))?
}

async fn batch_renew(State(engine): State<Shared>, Query(q): Params, req: Request) -> Response {
    let ids = task_ids(&q, req.uri().query());
    let mut out = Vec::new();
    for id in ids {
        let Some(doc) = tri!(engine.store.get(TASKS, &id)) else {
            out.push(item(&id, "Task.NotFound", Some("Task not found")));
            continue;
        };
        let status = status_of(&doc);
        if engine.runner.is_running(&id)
            || matches!(status.as_str(), "running" | "scheduling" | "stopping" | "wait_run")
        {
            out.push(item(&id, "Task.ResetStatusInvalid", Some(&format!("The task is {status}: stop it first"))));
            continue;
        }
        if let Err(e) = release_sources(&engine, &doc).await {
            out.push(item(&id, "SystemError", Some(&e.message)));
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

async fn batch_delete(State(engine): State<Shared>, Query(q): Params, req: Request) -> Response {
    let ids = task_ids(&q, req.uri().query());
    let mut out = Vec::new();
    for id in ids {
        let Some(doc) = tri!(engine.store.get(TASKS, &id)) else {
            out.push(item(&id, "Task.NotFound", Some("Task not found")));
            continue;
        };
        let status = status_of(&doc);
        if engine.runner.is_running(&id)
            || matches!(status.as_str(), "running" | "scheduling" | "stopping" | "wait_run")
        {
            out.push(item(&id, "Task.DeleteStatusInvalid", Some(&format!("The task is {status}: stop it first"))));
            continue;
        }
        if let Err(e) = release_sources(&engine, &doc).await {
            out.push(item(&id, "SystemError", Some(&e.message)));
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

async fn copy_task(State(engine): State<Shared>, Path(id): Path<String>) -> Response {
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

fn sample_for(engine: &Engine, tags: &Value, fields: Option<&Vec<Value>>) -> Value {
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

fn query_v2(engine: &Engine, body: &Value) -> Result<Value, String> {
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

async fn measurement_query(State(engine): State<Shared>, Body(body): Body) -> Response {
    match query_v2(&engine, &body) {
        Ok(v) => ok(v),
        Err(e) => fail("SystemError", &e),
    }
}

async fn measurement_batch(State(engine): State<Shared>, Body(body): Body) -> Response {
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

fn logs(engine: &Engine, body: &Value) -> Result<Value, String> {
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
    let task_name = engine.store.get(TASKS, task_id).ok().flatten().and_then(|t| t.get("name").cloned());
    for item in items.iter_mut().filter_map(Value::as_object_mut) {
        item.insert("taskName".into(), task_name.clone().unwrap_or(Value::Null));
        item.entry("nodeId").or_insert(json!(""));
        item.entry("nodeName").or_insert(json!(""));
    }
    Ok(json!({"total": total, "items": items}))
}

async fn logs_query(State(engine): State<Shared>, Body(body): Body) -> Response {
    match logs(&engine, &body) {
        Ok(v) => ok(v),
        Err(e) => fail("SystemError", &e),
    }
}

// ---- proxy: peek, count, sql, preview ------------------------------------------------------

/// Open the connector of a stored connection (blocking).
fn open_connection(store: &Store, conn_id: &str) -> crate::error::Result<Box<dyn connectors::Connector>> {
    let doc =
        store.get(CONNECTIONS, conn_id)?.ok_or_else(|| Error::not_found(format!("no connection with id {conn_id}")))?;
    let ty = doc.get("database_type").and_then(Value::as_str).unwrap_or("");
    connectors::open(ty, doc.get("config").unwrap_or(&Value::Null))
}

async fn with_connector<T: Send + 'static>(
    engine: &Shared,
    conn_id: String,
    f: impl FnOnce(&mut dyn connectors::Connector) -> crate::error::Result<T> + Send + 'static,
) -> crate::error::Result<T> {
    let store = engine.store.clone();
    tokio::task::spawn_blocking(move || f(open_connection(&store, &conn_id)?.as_mut()))
        .await
        .map_err(|e| Error::internal(format!("worker failed: {e}")))?
}

/// The flows (by name) that run or would resume with a node on one of the sample tables: in
/// connection `conn`, or with none in the SQLite file `path` (through any connection naming
/// that file).
fn demo_users(engine: &Engine, conn: Option<&str>, path: &str) -> crate::error::Result<Vec<String>> {
    let ids: Vec<String> = match conn {
        Some(id) => vec![id.to_string()],
        None => {
            let canonical = |p: &str| std::fs::canonicalize(p).unwrap_or_else(|_| std::path::PathBuf::from(p));
            let demo = canonical(path);
            engine
                .store
                .list(CONNECTIONS)?
                .into_iter()
                .filter(|c| {
                    c.get("database_type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("sqlite"))
                        && c.pointer("/config/database").and_then(Value::as_str).is_some_and(|d| canonical(d) == demo)
                })
                .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        }
    };
    let mut flows = Vec::new();
    for task in engine.store.list(TASKS)? {
        if task.get("is_deleted").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let uses = task.pointer("/dag/nodes").and_then(Value::as_array).into_iter().flatten().any(|n| {
            n.get("connectionId").and_then(Value::as_str).is_some_and(|c| ids.iter().any(|i| i == c))
                && n.get("tableName")
                    .and_then(Value::as_str)
                    .is_some_and(|t| crate::connectors::sample::TABLES.contains(&t))
        });
        // Only a flow that runs or would resume (it has a checkpoint) depends on the tables'
        // change capture; a new or reset flow starts with a fresh snapshot anyway.
        let id = task.get("id").and_then(Value::as_str).unwrap_or_default();
        let active = matches!(
            task.get("status").and_then(Value::as_str),
            Some("running" | "scheduling" | "wait_run" | "stopping")
        );
        if uses
            && (active || engine.store.checkpoint(id)?.is_some())
            && let Some(name) = task.get("name").and_then(Value::as_str)
        {
            flows.push(name.to_string());
        }
    }
    Ok(flows)
}

async fn proxy_call(State(engine): State<Shared>, Body(body): Body) -> Response {
    let class = body.get("className").and_then(Value::as_str).unwrap_or("");
    let method = body.get("method").and_then(Value::as_str).unwrap_or("");
    let args: Vec<Value> = body.get("args").and_then(Value::as_array).cloned().unwrap_or_default();
    let arg = |i: usize| args.get(i).and_then(Value::as_str).unwrap_or("").to_string();
    match (class, method) {
        ("QueryDataBaseDataService", "getData" | "getDataV2") => {
            let (conn, table) = (arg(0), arg(1));
            let limit = args.get(2).and_then(Value::as_u64).unwrap_or(100).min(100) as usize;
            // A fourth argument (ours, not TapData's): field → value equality filter.
            let filter = args.get(3).and_then(Value::as_object).cloned().unwrap_or_default();
            let res = with_connector(&engine, conn, move |c| {
                if filter.is_empty() {
                    Ok((c.sample(&table, limit)?, c.count(&table)?))
                } else {
                    let rows = c.find(&table, &filter, limit)?;
                    let n = rows.len() as u64;
                    Ok((rows, n))
                }
            })
            .await;
            match res {
                Ok((rows, count)) => {
                    ok(json!({"sampleData": rows, "tableInfo": {"numOfRows": count, "storageSize": 0}}))
                }
                Err(e) => fail("500", &e.message),
            }
        }
        ("TapSqlService", "execute") => {
            let (conn, sql) = (arg(0), arg(1));
            match with_connector(&engine, conn, move |c| c.execute(&sql)).await {
                Ok(n) => ok(json!({"affected": n})),
                Err(e) => fail("500", &e.message),
            }
        }
        ("TapDemoService", "generate") => {
            // Ours: the seed's sample tables in a connection (`tap demo --into`), or with no
            // connection in the data dir's `demo.sqlite` (`tap demo`). Tables a flow uses are
            // not replaced (that would drop them under it) unless the third argument is true.
            let conn = arg(0);
            let rows = args.get(1).and_then(Value::as_u64).unwrap_or(1000);
            if !(1..=crate::script::MAX_DEMO_ROWS as u64).contains(&rows) {
                return fail(
                    "IllegalArgument",
                    &format!("the number of orders must be from 1 to {}, not {rows}", crate::script::MAX_DEMO_ROWS),
                );
            }
            let rows = rows as usize;
            let force = args.get(2).and_then(Value::as_bool).unwrap_or(false);
            let path = engine.store.dir().join("demo.sqlite").to_string_lossy().into_owned();
            if !force {
                match demo_users(&engine, (!conn.is_empty()).then_some(conn.as_str()), &path) {
                    Ok(flows) if !flows.is_empty() => {
                        return fail(
                            "Demo.InUse",
                            &format!(
                                "the sample tables in {} are used by flow{} {}: replacing them would drop the tables \
                                 under {} (and their change capture); stop and delete {}, or pass --force \
                                 (demo(rows, true) in a script)",
                                if conn.is_empty() { path.as_str() } else { "this connection" },
                                if flows.len() == 1 { "" } else { "s" },
                                flows.join(", "),
                                if flows.len() == 1 { "it" } else { "them" },
                                if flows.len() == 1 { "that flow" } else { "those flows" },
                            ),
                        );
                    }
                    Ok(_) => {}
                    Err(e) => return fail("500", &e.message),
                }
            }
            let made = if conn.is_empty() {
                let p = path.clone();
                tokio::task::spawn_blocking(move || {
                    let mut c = crate::connectors::sqlite::Sqlite::open_path(&p)?;
                    crate::connectors::sample::generate(&mut c, rows, 42)
                })
                .await
                .map_err(|e| Error::internal(format!("worker failed: {e}")))
                .and_then(|r| r)
            } else {
                with_connector(&engine, conn.clone(), move |c| crate::connectors::sample::generate(c, rows, 42)).await
            };
            match made {
                Ok(made) if conn.is_empty() => ok(json!({"tables": made.tables, "path": path})),
                Ok(made) => {
                    // Make the new tables visible (`show tables`, read_from) right away.
                    test_and_load_schema(engine.clone(), conn);
                    ok(json!({"tables": made.tables}))
                }
                Err(e) => fail("500", &e.message),
            }
        }
        ("TaskPreviewService", "preview") => {
            // args: the task as a JSON string (or object), node ids to report (null: all), rows.
            let task = match args.first() {
                Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
                Some(v) => v.clone(),
                None => Value::Null,
            };
            let only: Option<Vec<String>> = args
                .get(1)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect());
            let rows = args.get(2).and_then(Value::as_u64).unwrap_or(1).clamp(1, 100) as usize;
            let store = engine.store.clone();
            match tokio::task::spawn_blocking(move || preview_task(&store, &task, only.as_deref(), rows)).await {
                Ok(v) => ok(v),
                Err(e) => fail("SystemError", &format!("preview worker failed: {e}")),
            }
        }
        _ => fail_kind(
            "Unsupported",
            &format!("the embedded engine does not serve {class}.{method}"),
            ErrorKind::Unsupported,
        ),
    }
}

/// `TaskPreviewService.preview`: what every node of a flow's DAG would output for the first
/// `rows` rows of each source table, without running the flow. As in TapData the answer is
/// `{taskId, code, nodeResult: {nodeId: {code, data | errorMsg}}, stats}`, with `code` 200, 422
/// (not a previewable DAG) or 500 (a node failed; its entry says why).
fn preview_task(store: &Store, task: &Value, only: Option<&[String]>, rows: usize) -> Value {
    let started = now_ms();
    let task_id = task.get("id").and_then(Value::as_str).unwrap_or_default();
    let nodes: Vec<&Value> =
        task.pointer("/dag/nodes").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    let edges: Vec<(&str, &str)> = task
        .pointer("/dag/edges")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|e| (str_at(e, "source"), str_at(e, "target"))).collect())
        .unwrap_or_default();
    let sources: Vec<&Value> = nodes
        .iter()
        .copied()
        .filter(|n| str_at(n, "type") == "table" && !edges.iter().any(|(_, t)| *t == str_at(n, "id")))
        .collect();
    if sources.is_empty() {
        return json!({"taskId": task_id, "code": 422, "errorMsg": "the flow has no source table to preview"});
    }
    let mut walk = PreviewWalk { nodes: &nodes, edges: &edges, result: Map::new(), failed: false };
    for src in sources {
        let table = str_at(src, "tableName");
        let sampled = open_connection(store, str_at(src, "connectionId")).and_then(|mut c| c.sample(table, rows));
        match sampled {
            Ok(records) => {
                let table: Arc<str> = Arc::from(table);
                let events = records
                    .into_iter()
                    .map(|after| Event { table: table.clone(), change: Change::Insert { after }, ts_ms: 0 })
                    .collect();
                walk.visit(str_at(src, "id"), events, 0);
            }
            Err(e) => walk.node_failed(str_at(src, "id"), &e.message),
        }
    }
    let mut result = walk.result;
    if let Some(ids) = only {
        result.retain(|id, _| ids.contains(id));
    }
    json!({"taskId": task_id, "code": if walk.failed { 500 } else { 200 }, "nodeResult": result,
           "stats": {"allCost": now_ms() - started}})
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A depth-first walk of a DAG for the preview: each node's output goes to its children.
struct PreviewWalk<'a> {
    nodes: &'a [&'a Value],
    edges: &'a [(&'a str, &'a str)],
    result: Map<String, Value>,
    failed: bool,
}

impl PreviewWalk<'_> {
    fn visit(&mut self, id: &str, events: Vec<Event>, depth: usize) {
        let entry = self.result.entry(id.to_string()).or_insert_with(|| json!({"code": 200, "data": []}));
        if let Some(data) = entry.get_mut("data").and_then(Value::as_array_mut) {
            data.extend(events.iter().map(|e| Value::Object(e.change.key_image().clone())));
        }
        if depth > self.nodes.len() {
            return; // a cycle; the flow itself is refused at start
        }
        let children: Vec<&str> = self.edges.iter().filter(|(s, _)| *s == id).map(|(_, t)| *t).collect();
        for child in children {
            let Some(node) = self.nodes.iter().find(|n| str_at(n, "id") == child) else { continue };
            let out = match processors::build(node) {
                Ok(Some(mut p)) => p.process(events.clone()),
                Ok(None) => Ok(events.clone()),
                Err(e) => Err(e),
            };
            match out {
                Ok(out) => self.visit(child, out, depth + 1),
                Err(e) => self.node_failed(child, &e.message),
            }
        }
    }

    fn node_failed(&mut self, id: &str, message: &str) {
        self.failed = true;
        self.result.insert(id.to_string(), json!({"code": 500, "errorMsg": message}));
    }
}

async fn table_count(State(engine): State<Shared>, Query(q): Params) -> Response {
    let conn = q.get("connectionId").cloned().unwrap_or_default();
    let table = q.get("table").cloned().unwrap_or_default();
    match with_connector(&engine, conn, move |c| c.count(&table)).await {
        Ok(n) => ok(json!({"code": 200, "rows": n})),
        Err(e) => ok(json!({"code": 500, "errorMsg": e.message})),
    }
}
