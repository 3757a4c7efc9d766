//! The engine's HTTP API: the subset of TapData's management API (`reference/tapdata-api.md`
//! §8.2) that our shell and the official Python client use, with TapData's envelope
//! (`{"reqId", "ts", "code", "data"}`), paths, field names, `filter` syntax and status codes.
//!
//! Every route but `POST /api/users/generatetoken` needs a valid `access_token` query
//! parameter; without one the answer is HTTP 401 `{"code": "NotLogin"}`, as TapData answers.
//! `POST /api/proxy/call` serves peek and count (`QueryDataBaseDataService.getData`) and the
//! preview of a flow (`TaskPreviewService.preview`: each node's output for a few source rows).
//! Work that touches databases (connection tests, peek, count, preview) runs on blocking threads.
//!
//! By resource: `auth` (tokens, users, agents, connector types), `connections`, `metadata`,
//! `tasks` (save, confirm, start, stop, reset, delete, copy), `monitoring` (metrics, logs) and
//! `proxy` (peek, count, sql, demo data, preview). This module holds the router, the envelope
//! helpers and the request body type every route reads.

use super::filter::Filter;
use super::flow::{self, iso_now};
use super::processors;
use super::store::{CONNECTIONS, METADATA, Store, TASKS};
use super::{Engine, new_id};
use crate::api::envelope::Envelope;
use crate::api::metadata::metadata_doc;
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
    serde_json::to_value(crate::api::envelope::Page::new(total, items)).unwrap_or_default()
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

mod auth;
mod connections;
mod metadata;
mod monitoring;
mod proxy;
mod tasks;

use auth::*;
use connections::*;
use metadata::*;
use monitoring::*;
use proxy::*;
use tasks::*;

pub use auth::pdk_hash;
pub use connections::test_and_load_schema;
pub use tasks::start_one;
