//! The cluster client: one implementation for every profile (the embedded engine, TapData
//! Enterprise/Community, TapData Cloud), speaking TapData's REST API over reqwest.
//!
//! * Enterprise/Community and the embedded engine: `POST /api/users/generatetoken` with the
//!   access code, then `access_token=<token>` as a query parameter on every request (and the
//!   `user_id` cookie, as the official client sends it). A 401 logs in again once.
//! * Cloud: no login; every request is signed with the access key / secret key
//!   ([`sign`]), under `<server>/tm/api` (agent paths under `<server>/api/tcm`).
//!
//! Calls are blocking for the caller (the shell and scripts are synchronous) and async inside:
//! the client owns a small tokio runtime. The envelope is checked here: a `code` other than
//! `ok` becomes a [`Error`] of kind `Remote` naming the server's code and message; batch
//! operations check every item.

pub mod sign;

use crate::api::connection::Connection;
use crate::api::envelope::Envelope;
use crate::api::metadata::MetadataInstance;
use crate::api::task::Task;
use crate::error::{Error, ErrorKind, Result};
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    AccessCode(String),
    Cloud { access_key: String, secret_key: String },
}

/// A server's error answer: its envelope (`code`, `message`, and the engine's `kind`).
pub type ApiError = Box<Envelope>;

#[derive(Debug, Default, Clone)]
struct Session {
    token: Option<String>,
    user_id: String,
    username: String,
}

pub struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    /// `host:port` or a URL with a scheme.
    server: String,
    auth: Auth,
    session: Mutex<Session>,
    /// The server is the embedded engine: metrics queries ask for its own fields too
    /// (a cluster gets TapFlow's exact list).
    embedded: std::sync::atomic::AtomicBool,
}

const CLOUD_TCM_PATHS: [&str; 4] =
    ["/agent", "/mdb-instance-assigned", "/mdb-instance-assigned/connection", "/agent/agentCount"];

impl Client {
    pub fn new(server: &str, auth: Auth) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("cannot start the runtime: {e}")))?;
        // rustls's process-wide provider (ring); a second install is refused, harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("tap/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        // A plain-HTTP server (the embedded engine, a cluster on its LAN port) needs no TLS roots:
        // reading the system's certificate store was most of a one-line command's CPU time.
        let trimmed = server.trim_end_matches('/');
        if !trimmed.starts_with("https://") && !matches!(auth, Auth::Cloud { .. } if !trimmed.contains("://")) {
            builder = builder.tls_certs_only(Vec::<reqwest::Certificate>::new());
        }
        let http = builder.build().map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            rt,
            http,
            server: server.trim_end_matches('/').to_string(),
            auth,
            session: Mutex::new(Session::default()),
            embedded: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Say that the server is the embedded engine.
    pub fn set_embedded(&self) {
        self.embedded.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_cloud(&self) -> bool {
        matches!(self.auth, Auth::Cloud { .. })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// The base URL requests go to (for messages).
    pub fn base_url(&self) -> String {
        if self.server.contains("://") { self.server.clone() } else { format!("http://{}", self.server) }
    }

    fn url(&self, path: &str) -> String {
        let base = self.base_url();
        match &self.auth {
            Auth::Cloud { .. } if CLOUD_TCM_PATHS.contains(&path) => format!("{base}/api/tcm{path}"),
            Auth::Cloud { .. } => format!("{base}/tm/api{path}"),
            Auth::AccessCode(_) => format!("{base}/api{path}"),
        }
    }

    pub fn username(&self) -> String {
        self.session.lock().map(|s| s.username.clone()).unwrap_or_default()
    }

    pub fn user_id(&self) -> String {
        self.session.lock().map(|s| s.user_id.clone()).unwrap_or_default()
    }

    /// Log in (access code) and read the user, as the official client does (A1, A2).
    pub fn login(&self) -> Result<()> {
        let Auth::AccessCode(code) = &self.auth else { return Ok(()) };
        let env = self.send(Method::POST, "/users/generatetoken", &[], Some(&json!({"accesscode": code})), false)?;
        let data = checked(env).map_err(|e| match e.code.as_str() {
            "AccessCode.No.User" | "AccessCode.Is.Null" => Error::auth(format!(
                "the access code was refused by {} ({}): check it with `tap config`",
                self.base_url(),
                e.message.unwrap_or_default()
            )),
            _ => e.error("").context("login failed"),
        })?;
        let token =
            data.get("id").and_then(Value::as_str).ok_or_else(|| self.not_tapdata("no token in the login answer"))?;
        let user_id = data.get("userId").and_then(Value::as_str).unwrap_or("").to_string();
        if let Ok(mut s) = self.session.lock() {
            s.token = Some(token.to_string());
            s.user_id = user_id.clone();
        }
        let users = self.get("/users", &[])?;
        let username = users
            .get("items")
            .and_then(Value::as_array)
            .and_then(|items| items.iter().find(|u| u.get("id").and_then(Value::as_str) == Some(&user_id)))
            .and_then(|u| u.get("username").and_then(Value::as_str))
            .unwrap_or("")
            .to_string();
        if let Ok(mut s) = self.session.lock() {
            s.username = username;
        }
        Ok(())
    }

    fn not_tapdata(&self, what: &str) -> Error {
        Error::unavailable(format!(
            "{} answered something that is not TapData ({what}) — is the server address right? `tap config` changes it",
            self.base_url()
        ))
    }

    /// Send a request and return the whole envelope (status checked, code not).
    fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        retry_auth: bool,
    ) -> Result<Value> {
        let mut params: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let body_text = body.map(sign::python_json);
        let mut cookie = None;
        match &self.auth {
            Auth::AccessCode(_) => {
                let s = self.session.lock().map(|s| s.clone()).unwrap_or_default();
                if let Some(t) = s.token {
                    params.push(("access_token".into(), t));
                    cookie = Some(format!("user_id={}", s.user_id));
                }
            }
            Auth::Cloud { access_key, secret_key } => {
                params.push(("ts".into(), crate::model::now_ms().to_string()));
                params.push(("nonce".into(), uuid::Uuid::new_v4().to_string()));
                params.push(("signVersion".into(), "1.0".into()));
                params.push(("accessKey".into(), access_key.clone()));
                let to_sign = sign::string_to_sign(method.as_str(), &params, body_text.as_deref().unwrap_or(""));
                params.push(("sign".into(), sign::sign(secret_key, &to_sign)));
            }
        }
        let url = self.url(path);
        let mut req = self.http.request(method.clone(), &url).query(&params).header("Accept-Language", "en-US");
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        if let Some(b) = body_text {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let (status, text) = self
            .rt
            .block_on(async {
                let resp = req.send().await?;
                let status = resp.status();
                let text = resp.text().await?;
                Ok::<_, reqwest::Error>((status, text))
            })
            .map_err(|e| {
                let what = if e.is_timeout() { "timed out".to_string() } else { root_cause(&e) };
                Error::unavailable(format!(
                    "cannot reach TapData at {}: {what} — is it running? `tap config` changes the server",
                    self.base_url()
                ))
            })?;
        if status.as_u16() == 401 && retry_auth && matches!(self.auth, Auth::AccessCode(_)) {
            self.login()?;
            return self.send(method, path, query, body, false);
        }
        let v: Value = serde_json::from_str(&text).map_err(|_| {
            let snippet: String = text.chars().take(60).collect();
            self.not_tapdata(&format!("HTTP {status} {snippet:?} for {path}"))
        })?;
        if status.as_u16() == 401 {
            return Err(Error::auth(format!(
                "{} refused the credentials ({}) — `tap config` sets them",
                self.base_url(),
                v.get("message").and_then(Value::as_str).unwrap_or("not logged in")
            )));
        }
        if !v.is_object() || v.get("code").is_none() {
            return Err(self.not_tapdata(&format!("HTTP {status} without a code for {path}")));
        }
        if let Some("NotFoundAccessKey") = v.get("code").and_then(Value::as_str) {
            return Err(Error::auth("TapData Cloud does not know this access key: check the AK/SK with `tap config`"));
        }
        Ok(v)
    }

    /// A request whose envelope must say `ok`; returns `data` (`null` when absent).
    pub fn call(&self, method: Method, path: &str, query: &[(&str, String)], body: Option<&Value>) -> Result<Value> {
        let env = self.send(method, path, query, body, true)?;
        checked(env).map_err(|e| e.error(path))
    }

    /// A request returning the server's error as a value, for callers that handle codes.
    pub fn call_result(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<std::result::Result<Value, ApiError>> {
        Ok(checked(self.send(method, path, query, body, true)?))
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.call(Method::GET, path, query, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(Method::POST, path, &[], Some(body))
    }

    /// A batch operation (`batchStart`, …): every item's `code` must be `ok`.
    pub fn batch(&self, method: Method, path: &str, query: &[(&str, String)]) -> Result<()> {
        let data = self.call(method, path, query, None)?;
        for it in data.as_array().into_iter().flatten() {
            let code = it.get("code").and_then(Value::as_str).unwrap_or("ok");
            if code != "ok" {
                let msg = it.get("message").and_then(Value::as_str).unwrap_or("");
                return Err(Error::remote(format!("{code}: {msg}")));
            }
        }
        Ok(())
    }

    // ---- resources (A/C/M/T numbers from reference/tapflow-client.md §5) ----

    /// Cloud: how many agents are running (A4, `/api/tcm/agent/agentCount`).
    pub fn running_agents(&self) -> Result<u64> {
        let data = self.get("/agent/agentCount", &[])?;
        Ok(data.get("agentRunningCount").and_then(Value::as_u64).unwrap_or(0))
    }

    pub fn connectors(&self) -> Result<Vec<Value>> {
        let f = json!({"where": {"tag": "All", "authentication": "All"}, "order": "name ASC"});
        Ok(self
            .get("/DatabaseTypes/getDatabases", &[("filter", sign::python_json(&f))])?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    pub fn connections(&self) -> Result<Vec<Connection>> {
        let f = json!({"limit": 10000, "skip": 0, "order": "last_updated DESC", "noSchema": 1,
                       "where": {"createType": {"$ne": "System"}}});
        items(self.get("/Connections", &[("filter", sign::python_json(&f))])?).into_iter().map(typed).collect()
    }

    pub fn connection(&self, id: &str) -> Result<Option<Connection>> {
        let v = self.get(&format!("/Connections/{id}"), &[])?;
        if v.is_null() { Ok(None) } else { typed(v).map(Some) }
    }

    pub fn connection_by_name(&self, name: &str) -> Result<Option<Connection>> {
        let f = json!({"where": {"name": name}});
        items(self.get("/Connections", &[("filter", sign::python_json(&f))])?).into_iter().next().map(typed).transpose()
    }

    pub fn tables(&self, conn_id: &str) -> Result<Vec<MetadataInstance>> {
        let f = json!({"where": {"source.id": conn_id, "sourceType": "SOURCE", "is_deleted": false}, "limit": 999999});
        let all: Vec<MetadataInstance> = items(self.get("/MetadataInstances", &[("filter", sign::python_json(&f))])?)
            .into_iter()
            .map(typed)
            .collect::<Result<_>>()?;
        Ok(all.into_iter().filter(|t| t.meta_type != "database").collect())
    }

    pub fn table(&self, conn_id: &str, table: &str) -> Result<Option<MetadataInstance>> {
        let f = json!({"where": {"source.id": conn_id, "meta_type": {"in": ["collection", "table", "view"]},
                                 "is_deleted": false, "original_name": table},
                       "fields": {"id": true, "original_name": true, "fields": true}, "limit": 1});
        items(self.get("/MetadataInstances", &[("filter", sign::python_json(&f))])?)
            .into_iter()
            .next()
            .map(typed)
            .transpose()
    }

    pub fn table_fields(&self, table_id: &str) -> Result<Vec<crate::api::metadata::MetadataField>> {
        typed::<MetadataInstance>(self.get(&format!("/MetadataInstances/{table_id}"), &[])?).map(|m| m.fields)
    }

    pub fn tasks(&self) -> Result<Vec<Task>> {
        let f = json!({"limit": 10000, "fields": {"syncType": true, "id": true, "name": true, "status": true,
            "last_updated": true, "createTime": true, "user_id": true, "startTime": true, "agentId": true,
            "statuses": true, "type": true, "desc": true, "stats": true}});
        items(self.get("/Task", &[("filter", sign::python_json(&f))])?).into_iter().map(typed).collect()
    }

    pub fn task(&self, id: &str) -> Result<Option<Task>> {
        let v = self.get(&format!("/Task/{id}"), &[])?;
        if v.is_null() || v.get("id").is_none() { Ok(None) } else { typed(v).map(Some) }
    }

    pub fn start_task(&self, id: &str) -> Result<()> {
        self.batch(Method::PUT, "/Task/batchStart", &[("taskIds", id.to_string())])
    }

    pub fn stop_task(&self, id: &str, force: bool) -> Result<()> {
        let force = if force { "True" } else { "False" };
        self.batch(Method::PUT, "/Task/batchStop", &[("taskIds", id.to_string()), ("force", force.to_string())])
    }

    pub fn reset_task(&self, id: &str) -> Result<()> {
        self.batch(Method::PATCH, "/Task/batchRenew", &[("taskIds", id.to_string())])
    }

    pub fn delete_task(&self, id: &str) -> Result<()> {
        self.batch(Method::DELETE, "/Task/batchDelete", &[("taskIds", id.to_string())])
    }

    /// Copy a task (T13); returns the new task.
    pub fn copy_task(&self, id: &str) -> Result<Value> {
        self.call(Method::PUT, &format!("/Task/copy/{id}"), &[], None)
    }

    /// Preview a task's DAG (T19): rows after each node, without running the task.
    pub fn preview(&self, task: &Task, rows: usize) -> Result<Value> {
        let doc = serde_json::to_string(task).map_err(|e| Error::internal(format!("task document: {e}")))?;
        let body = json!({"className": "TaskPreviewService", "method": "preview", "args": [doc, null, rows]});
        self.post("/proxy/call", &body)
    }

    /// Task metrics (T16): the first instant sample, or zeros when there is none.
    pub fn task_metrics(&self, task_id: &str, record_id: &str) -> Result<crate::api::metrics::TaskMetrics> {
        let now = crate::model::now_ms();
        let fields = [
            "inputInsertTotal",
            "inputUpdateTotal",
            "inputDeleteTotal",
            "inputDdlTotal",
            "inputOthersTotal",
            "outputInsertTotal",
            "outputUpdateTotal",
            "outputDeleteTotal",
            "outputDdlTotal",
            "outputOthersTotal",
            "tableTotal",
            "createTableTotal",
            "snapshotTableTotal",
            "initialCompleteTime",
            "sourceConnection",
            "targetConnection",
            "snapshotDoneAt",
            "snapshotRowTotal",
            "snapshotInsertRowTotal",
            "inputQps",
            "outputQps",
            "currentSnapshotTableRowTotal",
            "currentSnapshotTableInsertRowTotal",
            "replicateLag",
            "snapshotStartAt",
            "snapshotTableTotal",
            "currentEventTimestamp",
            "snapshotDoneCost",
            "outputQpsMax",
            "outputQpsAvg",
            "lastFiveMinutesQps",
        ];
        let mut fields: Vec<&str> = fields.to_vec();
        if self.embedded.load(std::sync::atomic::Ordering::Relaxed) {
            fields.extend(["snapshotRowEstimate", "snapshotTable", "replicateLagP50", "replicateLagP99"]);
        }
        let body = json!({"totalData": {"uri": "/api/measurement/query/v2",
            "param": {"startAt": now - 300_000, "endAt": now,
              "samples": {"data": {"endAt": now, "fields": fields,
                "tags": {"taskId": task_id, "taskRecordId": record_id, "type": "task"}, "type": "instant"}}}}});
        let data = self.post("/measurement/batch", &body)?;
        match data.pointer("/totalData/data/samples/data/0") {
            Some(sample) => typed(sample.clone()),
            None => Ok(Default::default()),
        }
    }

    /// Task logs (T17), newest first.
    pub fn task_logs(
        &self,
        task_id: &str,
        record_id: &str,
        levels: &[&str],
        limit: usize,
    ) -> Result<Vec<crate::api::log::LogItem>> {
        let now = crate::model::now_ms();
        let body = json!({"levels": levels, "order": "desc", "page": 1, "pageSize": limit, "taskId": task_id,
                          "taskRecordId": record_id, "start": now - 360_000_000, "end": now});
        items(self.post("/MonitoringLogs/query", &body)?).into_iter().map(typed).collect()
    }

    /// Sample rows and the row count of a table (T18).
    pub fn peek(&self, conn_id: &str, table: &str) -> Result<(u64, Vec<Value>)> {
        let body = json!({"className": "QueryDataBaseDataService", "method": "getData", "args": [conn_id, table]});
        let data = self.post("/proxy/call", &body)?;
        let count = data.pointer("/tableInfo/numOfRows").and_then(Value::as_u64).unwrap_or(0);
        let rows = data.get("sampleData").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok((count, rows))
    }

    /// Rows whose fields equal `filter`'s values. The embedded engine filters in the database; a
    /// cluster, which knows no filter argument, returns its sample and the rows are filtered
    /// here, so there only the sampled rows can match.
    pub fn peek_where(&self, conn_id: &str, table: &str, filter: &Map<String, Value>) -> Result<Vec<Value>> {
        let body = json!({"className": "QueryDataBaseDataService", "method": "getData",
                          "args": [conn_id, table, 100, filter]});
        let data = self.post("/proxy/call", &body)?;
        let mut rows = data.get("sampleData").and_then(Value::as_array).cloned().unwrap_or_default();
        rows.retain(|r| filter.iter().all(|(k, v)| matches_value(r.get(k), v)));
        Ok(rows)
    }

    /// Run a statement in a connection (embedded engine only).
    pub fn sql(&self, conn_id: &str, statement: &str) -> Result<u64> {
        let body = json!({"className": "TapSqlService", "method": "execute", "args": [conn_id, statement]});
        let data = self.post("/proxy/call", &body).map_err(|e| {
            if e.kind == ErrorKind::Unsupported {
                Error::unsupported("sql() works with the embedded engine only")
            } else {
                e
            }
        })?;
        Ok(data.get("affected").and_then(Value::as_u64).unwrap_or(0))
    }
}

/// A row's value against a filter's: equal, equal as numbers, or equal as text.
fn matches_value(row: Option<&Value>, want: &Value) -> bool {
    let Some(have) = row else { return want.is_null() };
    if have == want {
        return true;
    }
    if let (Some(a), Some(b)) = (have.as_f64(), want.as_f64()) {
        return a == b;
    }
    let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    text(have) == text(want)
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A document as its typed form ([`Task`], [`Connection`]); one the server sends in another
/// shape is an error naming it, not a value with empty fields.
fn typed<T: serde::de::DeserializeOwned>(doc: Value) -> Result<T> {
    let id = doc.get("id").cloned().unwrap_or(Value::Null);
    let what = std::any::type_name::<T>().rsplit("::").next().unwrap_or("document").to_ascii_lowercase();
    serde_json::from_value(doc)
        .map_err(|e| Error::remote(format!("the server sent {what} {id} in a shape tap does not read: {e}")))
}

/// `data` of an `ok` envelope, or the server's error envelope.
pub fn checked(env: Value) -> std::result::Result<Value, ApiError> {
    match serde_json::from_value::<Envelope>(env) {
        Ok(e) if e.is_ok() => Ok(e.data.unwrap_or(Value::Null)),
        Ok(e) => Err(Box::new(e)),
        Err(e) => {
            Err(Box::new(Envelope::fail("BadEnvelope", &format!("the server's answer is not an envelope: {e}"), None)))
        }
    }
}

/// `data.items` of a page.
pub fn items(data: Value) -> Vec<Value> {
    match data {
        Value::Array(a) => a,
        page => serde_json::from_value::<crate::api::envelope::Page<Value>>(page).map(|p| p.items).unwrap_or_default(),
    }
}
