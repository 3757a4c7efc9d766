//! The exact requests `tap` sends to a TapData cluster, for the Enterprise/Community profile
//! (access code) and the Cloud profile (AK/SK signing), against a stand-in cluster.
//!
//! A real TapData cluster cannot run here, so [`Cluster`] stands in for one: a plain HTTP/1.1
//! server on a thread that records every request (method, path, decoded query, JSON body) and
//! answers with TapData's envelopes, shaped as `reference/tapflow-client.md` §3–§10 and
//! `reference/tapdata-api.md` document them. It also *checks* what it receives, as the real
//! server or the Cloud gateway would: the token or the signature on every request, the filters
//! of list calls, the fields a create needs, the task state machine (edit → wait_start →
//! running → stop) and the DAG of a confirmed task. Whatever it would refuse is answered with
//! TapData's error and noted in `problems`, which every test asserts empty.

use crate::harness::{Env, Run};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tap::client::sign;

const ACCESS_CODE: &str = "3324cfdf-7d3e-4792-bd32-571638d4562f";
const TOKEN: &str = "5e0e6a0f4c9a4c1f9d2b7e3a8c6d4f21a7b9c3e5d1f04a2b8c7e6d5f4a3b2c1d";
const USER_ID: &str = "6720600ad6c2485881e9d001";
const USERNAME: &str = "admin@admin.com";
const ACCESS_KEY: &str = "AK123";
const SECRET_KEY: &str = "SK456";
const MYSQL_ID: &str = "6720650ad6c2485881e9dc01";
const MONGO_ID: &str = "6720650ad6c2485881e9dc02";
const ORDERS_META: &str = "6720700ad6c2485881e9e001";
const CUSTOMERS_META: &str = "6720700ad6c2485881e9e002";
const RECORD_ID: &str = "6720900ad6c2485881e9f101";
/// Paths the Cloud serves under `/api/tcm` instead of `/tm/api` (§4.1).
const TCM_PATHS: [&str; 4] =
    ["/agent", "/mdb-instance-assigned", "/mdb-instance-assigned/connection", "/agent/agentCount"];

// ---- the stand-in cluster ----

/// Header names lower-cased, in the order received.
type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Enterprise,
    Cloud,
    /// A web server that is not TapData: HTML for everything.
    NotTapData,
}

/// One request as the cluster received it; `path` is relative to the API base (`/api`,
/// `/tm/api` or `/api/tcm`), `base` is that base.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    base: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Headers,
    raw_body: String,
    body: Value,
}

impl Req {
    fn q(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn filter(&self) -> Value {
        self.q("filter").and_then(|f| serde_json::from_str(f).ok()).unwrap_or(Value::Null)
    }
    /// `METHOD /path`, for sequence assertions.
    fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

struct State {
    mode: Mode,
    requests: Vec<Req>,
    problems: Vec<String>,
    connections: Vec<Value>,
    tasks: Vec<Value>,
    next_id: u32,
}

struct Cluster {
    addr: String,
    state: Arc<Mutex<State>>,
}

impl Cluster {
    fn start(mode: Mode) -> Cluster {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in");
        let addr = listener.local_addr().expect("address").to_string();
        let state = Arc::new(Mutex::new(State {
            mode,
            requests: Vec::new(),
            problems: Vec::new(),
            connections: vec![mysql_ecommerce(), mongodb_ecommerce()],
            tasks: Vec::new(),
            next_id: 1,
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                serve(stream, &shared);
            }
        });
        Cluster { addr, state }
    }

    /// The requests received since the last call, oldest first.
    fn take(&self) -> Vec<Req> {
        std::mem::take(&mut self.state.lock().expect("state").requests)
    }

    #[track_caller]
    fn assert_no_problems(&self) {
        let problems = self.state.lock().expect("state").problems.clone();
        assert!(problems.is_empty(), "the cluster would have refused:\n{}", problems.join("\n"));
    }
}

fn serve(mut stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Some((method, target, headers, raw_body)) = read_request(&stream) else { return };
    let mut st = state.lock().expect("state");
    let (status, content_type, text) = if st.mode == Mode::NotTapData {
        (200, "text/html", "<html><body><h1>Welcome to nginx!</h1></body></html>".to_string())
    } else {
        let (status, v) = answer(&mut st, &method, &target, headers, raw_body);
        (status, "application/json", v.to_string())
    };
    drop(st);
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Error",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn read_request(stream: &TcpStream) -> Option<(String, String, Headers, String)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((method, target, headers, String::from_utf8(body).ok()?))
}

/// `application/x-www-form-urlencoded` decoding (what the server does to the query string).
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn envelope(data: Value) -> Value {
    json!({"reqId": "0b7a5c3e-1f2d-4e6a-9b8c-7d6e5f4a3b2c", "ts": now_ms(), "code": "ok", "data": data})
}

fn error(code: &str, message: &str) -> Value {
    json!({"reqId": "0b7a5c3e-1f2d-4e6a-9b8c-7d6e5f4a3b2c", "ts": now_ms(), "code": code, "message": message})
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Record the request, check what the gateway checks (token or signature), then route it.
fn answer(st: &mut State, method: &str, target: &str, headers: Headers, raw_body: String) -> (u16, Value) {
    let (full_path, query) = target.split_once('?').unwrap_or((target, ""));
    let query: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect();
    let (base, path) = match st.mode {
        Mode::Cloud => match full_path.strip_prefix("/api/tcm") {
            Some(p) => ("/api/tcm", p),
            None => ("/tm/api", full_path.strip_prefix("/tm/api").unwrap_or(full_path)),
        },
        _ => ("/api", full_path.strip_prefix("/api").unwrap_or(full_path)),
    };
    let body = serde_json::from_str(&raw_body).unwrap_or(Value::Null);
    let req = Req {
        method: method.to_string(),
        base: base.to_string(),
        path: path.to_string(),
        query,
        headers,
        raw_body,
        body,
    };
    st.requests.push(req.clone());
    let problem = |st: &mut State, what: String| st.problems.push(format!("{}: {what}", req.line()));
    if !full_path.starts_with(base) {
        problem(st, format!("{full_path} is not under {base}"));
        return (404, json!({"timestamp": now_ms(), "status": 404, "error": "Not Found", "path": full_path}));
    }
    let tcm = TCM_PATHS.contains(&path);
    if st.mode == Mode::Cloud && tcm != (base == "/api/tcm") {
        problem(st, format!("{path} belongs under {}", if tcm { "/api/tcm" } else { "/tm/api" }));
        return (404, json!({"timestamp": now_ms(), "status": 404, "error": "Not Found", "path": full_path}));
    }
    let ua = req.header("user-agent").unwrap_or("");
    if ["Java", "Node", "FlowEngine"].iter().any(|w| ua.contains(w)) {
        problem(st, format!("User-Agent {ua:?} makes TapData treat us as its engine"));
    }
    if !req.raw_body.is_empty() && !req.header("content-type").unwrap_or("").starts_with("application/json") {
        problem(st, "a JSON body without Content-Type: application/json".into());
        return (415, error("SystemError", "Content type not supported"));
    }
    match st.mode {
        Mode::Cloud => {
            if let Some(why) = signature_problem(&req) {
                problem(st, why);
                return (401, error("NotAuthorized", "signature does not match"));
            }
            if req.q("access_token").is_some() || req.header("cookie").is_some() {
                problem(st, "a Cloud request carries an access token or a cookie".into());
            }
            if st.requests.iter().filter(|r| r.q("nonce") == req.q("nonce")).count() > 1 {
                problem(st, "a nonce used twice".into());
            }
        }
        _ if req.path == "/users/generatetoken" => {}
        _ => {
            if req.q("access_token") != Some(TOKEN) {
                problem(st, "no valid access_token".into());
                return (401, error("NotLogin", "User is not login."));
            }
            if req.header("cookie") != Some(&format!("user_id={USER_ID}")) {
                problem(st, format!("cookie {:?} instead of user_id={USER_ID}", req.header("cookie")));
            }
        }
    }
    let mut problems = Vec::new();
    let reply = route(st, &req, &mut problems);
    for p in problems {
        problem(st, p);
    }
    reply
}

/// Why a Cloud request's signature is wrong, recomputed as §4.3 documents: every query
/// parameter but `sign`, `METHOD:sorted k=v:` + the body, HMAC-SHA1 with the secret key.
fn signature_problem(r: &Req) -> Option<String> {
    if r.q("accessKey") != Some(ACCESS_KEY) {
        return Some(format!("accessKey {:?}", r.q("accessKey")));
    }
    if r.q("signVersion") != Some("1.0") {
        return Some(format!("signVersion {:?}", r.q("signVersion")));
    }
    let ts: i64 = r.q("ts").and_then(|t| t.parse().ok()).unwrap_or(0);
    if (now_ms() - ts).abs() > 300_000 {
        return Some(format!("ts {:?} is not now in epoch milliseconds", r.q("ts")));
    }
    let nonce = r.q("nonce").unwrap_or("");
    if nonce.len() != 36 || nonce.matches('-').count() != 4 {
        return Some(format!("nonce {nonce:?} is not a UUID"));
    }
    let params: Vec<(String, String)> = r.query.iter().filter(|(k, _)| k != "sign").cloned().collect();
    let expected = sign::sign(SECRET_KEY, &sign::string_to_sign(&r.method, &params, &r.raw_body));
    match r.q("sign") {
        Some(s) if s == expected => None,
        other => Some(format!("sign {other:?}, expected {expected:?}")),
    }
}

fn connectors() -> Value {
    let prop = |title: &str, required: bool| json!({"type": "string", "title": title, "required": required});
    json!([
        {"name": "MongoDB", "type": "MongoDB", "pdkId": "mongodb", "pdkHash": "hash-mongo", "connectionType": "source_and_target",
         "properties": {"connection": {"properties": {"uri": prop("uri", true), "isUri": prop("isUri", false)}}}},
        {"name": "Mysql", "type": "Mysql", "pdkId": "mysql", "pdkHash": "hash-mysql", "connectionType": "source_and_target",
         "properties": {"connection": {"properties": {"host": prop("host", true), "port": prop("port", true),
            "database": prop("database", true), "username": prop("username", true), "password": prop("password", false)}}}},
    ])
}

fn mysql_ecommerce() -> Value {
    json!({"id": MYSQL_ID, "name": "MySQL_ECommerce", "status": "ready", "database_type": "Mysql",
           "connection_type": "source", "pdkHash": "hash-mysql", "pdkType": "pdk", "createType": "User",
           "loadFieldsStatus": "finished", "tableCount": 2, "loadCount": 2,
           "capabilities": [{"id": "query_by_advance_filter_function"}, {"id": "batch_read_function"}, {"id": "stream_read_function"}]})
}

fn mongodb_ecommerce() -> Value {
    json!({"id": MONGO_ID, "name": "MongoDB_ECommerce", "status": "ready", "database_type": "MongoDB",
           "connection_type": "target", "pdkHash": "hash-mongo", "pdkType": "pdk", "createType": "User",
           "loadFieldsStatus": "finished", "tableCount": 0, "loadCount": 0,
           "capabilities": [{"id": "query_by_advance_filter_function"}, {"id": "write_record_function"}]})
}

fn field(name: &str, data_type: &str, pk: bool) -> Value {
    json!({"field_name": name, "data_type": data_type, "primaryKey": pk, "unique": pk, "tapType": {"type": 10}})
}

/// The metadata rows of a connection, a `database` row included (clients must skip it).
fn metadata(conn_id: &str) -> Vec<Value> {
    if conn_id != MYSQL_ID {
        return Vec::new();
    }
    vec![
        json!({"id": "6720700ad6c2485881e9e000", "original_name": "ECommerceData", "meta_type": "database"}),
        json!({"id": ORDERS_META, "original_name": "ecom_orders", "meta_type": "table", "fields": [
            field("order_id", "varchar(32)", true), field("customer_id", "varchar(32)", false),
            field("order_status", "varchar(32)", false), field("order_purchase_timestamp", "datetime", false),
            field("order_delivered_carrier_date", "datetime", false), field("order_delivered_customer_date", "datetime", false)]}),
        json!({"id": CUSTOMERS_META, "original_name": "ecom_customers", "meta_type": "table", "fields": [
            field("customer_id", "varchar(32)", true), field("customer_city", "varchar(64)", false)]}),
    ]
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The endpoints of §5, as TapData answers them; `p` collects what the server would refuse.
fn route(st: &mut State, r: &Req, p: &mut Vec<String>) -> (u16, Value) {
    let segs: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let f = r.filter();
    let mut expect = |ok: bool, what: &str| {
        if !ok {
            p.push(what.to_string());
        }
    };
    match (r.method.as_str(), segs.as_slice()) {
        // A1, A2
        ("POST", ["users", "generatetoken"]) => {
            expect(r.body == json!({"accesscode": ACCESS_CODE}), "login body is not {\"accesscode\": CODE}");
            if r.body.get("accesscode") != Some(&json!(ACCESS_CODE)) {
                return (200, error("AccessCode.No.User", "can not find user by this accessCode"));
            }
            (200, envelope(json!({"id": TOKEN, "ttl": 1209600, "userId": USER_ID, "authType": "access_code"})))
        }
        ("GET", ["users"]) => (200, envelope(json!({"items": [{"id": USER_ID, "username": USERNAME}], "total": 1}))),
        // A4 (Cloud)
        ("GET", ["agent", "agentCount"]) => (200, envelope(json!({"agentRunningCount": 1, "agentTotalCount": 1}))),
        // A3
        ("GET", ["agent"]) => (
            200,
            envelope(json!({"items": [{"name": "agent-1", "status": "Running",
                                        "metric": {"systemInfo": {"ips": ["10.0.0.5"], "cpus": 4}}}], "total": 1})),
        ),
        // Data APIs (show apis)
        ("GET", ["Modules"]) => {
            expect(r.q("order") == Some("createAt DESC") && r.q("limit") == Some("20"), "Modules query");
            (
                200,
                envelope(json!({"items": [{"id": "6720900ad6c2485881e9a001", "name": "orders_api", "status": "active",
                                          "tableName": "ecom_orders", "basePath": "orders"}], "total": 1})),
            )
        }
        // C6
        ("DELETE", ["Connections", id]) => {
            let before = st.connections.len();
            st.connections.retain(|c| c["id"] != *id);
            if st.connections.len() == before {
                return (200, error("Datasource.NotFound", "Data source not found"));
            }
            (200, envelope(json!(null)))
        }
        // A7
        ("GET", ["DatabaseTypes", "getDatabases"]) => {
            expect(f == json!({"where": {"tag": "All", "authentication": "All"}, "order": "name ASC"}), "A7 filter");
            (200, envelope(connectors()))
        }
        // C1 (list) and C2 (by name or id)
        ("GET", ["Connections"]) => {
            let wanted: Vec<Value> = match f.pointer("/where/name").or_else(|| f.pointer("/where/id")) {
                Some(key) => st.connections.iter().filter(|c| &c["name"] == key || &c["id"] == key).cloned().collect(),
                None => {
                    expect(
                        f == json!({"limit": 10000, "skip": 0, "order": "last_updated DESC", "noSchema": 1,
                                    "where": {"createType": {"$ne": "System"}}}),
                        "C1 filter",
                    );
                    st.connections.clone()
                }
            };
            let items: Vec<Value> = wanted.into_iter().map(without_config).collect();
            (200, envelope(json!({"items": items, "total": items.len()})))
        }
        // C3
        ("GET", ["Connections", id]) => match st.connections.iter().find(|c| c["id"] == *id) {
            Some(c) => (200, envelope(without_config(c.clone()))),
            None => (200, json!({"code": "ok"})),
        },
        // C4
        ("POST", ["Connections"]) => {
            let b = &r.body;
            let def = connectors().as_array().into_iter().flatten().find(|c| c["name"] == b["database_type"]).cloned();
            let Some(def) = def else {
                expect(false, "database_type is not a connector name from A7");
                return (200, error("SystemError", "Data source definition not found"));
            };
            expect(b["pdkHash"] == def["pdkHash"], "pdkHash is not the connector's");
            expect(b.get("id").is_none(), "a create carries an id");
            expect(b["pdkType"] == "pdk" && b["status"] == "testing" && b["submit"] == true, "pdkType/status/submit");
            expect(
                ["source", "target", "source_and_target"].contains(&s(b, "connection_type"))
                    && b["config"]["__connectionType"] == b["connection_type"],
                "connection_type and config.__connectionType",
            );
            if st.connections.iter().any(|c| c["name"] == b["name"]) {
                return (200, error("Datasource.RepeatName", "Data source name already exists"));
            }
            let mut doc = b.clone();
            doc["id"] = json!(format!("6720650ad6c2485881e9dd{:02}", st.next_id));
            st.next_id += 1;
            doc["status"] = json!("ready");
            doc["loadFieldsStatus"] = json!("finished");
            st.connections.push(doc.clone());
            (200, envelope(without_config(doc)))
        }
        // C5
        ("PATCH", ["Connections", id]) => {
            expect(r.body["id"] == *id, "PATCH /Connections/{id} without the same id in the body");
            expect(r.body.get("database_type").is_some(), "PATCH of a config without database_type (a server NPE)");
            let Some(c) = st.connections.iter_mut().find(|c| c["id"] == *id) else {
                return (200, error("Datasource.NotFound", "Data source not found"));
            };
            for (k, v) in r.body.as_object().into_iter().flatten() {
                c[k] = v.clone();
            }
            c["status"] = json!("ready");
            c["loadFieldsStatus"] = json!("finished");
            (200, envelope(without_config(c.clone())))
        }
        // M1 (tables of a connection) and M3 (one table by name)
        ("GET", ["MetadataInstances"]) => {
            let conn = s(&f["where"], "source.id").to_string();
            let rows = metadata(&conn);
            let items: Vec<Value> = match f.pointer("/where/original_name") {
                Some(name) => {
                    expect(
                        f == json!({"where": {"source.id": conn, "meta_type": {"in": ["collection", "table", "view"]},
                                              "is_deleted": false, "original_name": name},
                                    "fields": {"id": true, "original_name": true, "fields": true}, "limit": 1}),
                        "M3 filter",
                    );
                    rows.into_iter()
                        .filter(|t| &t["original_name"] == name && t["meta_type"] != "database")
                        .map(|t| json!({"id": t["id"], "original_name": t["original_name"], "fields": t["fields"]}))
                        .collect()
                }
                None => {
                    expect(
                        f == json!({"where": {"source.id": conn, "sourceType": "SOURCE", "is_deleted": false}, "limit": 999999}),
                        "M1 filter",
                    );
                    rows
                }
            };
            (200, envelope(json!({"items": items, "total": items.len()})))
        }
        // M5
        ("GET", ["MetadataInstances", "node", "schema"]) => {
            let node = r.q("nodeId").unwrap_or("");
            let known =
                st.tasks.iter().any(|t| t["dag"]["nodes"].as_array().into_iter().flatten().any(|n| n["id"] == node));
            expect(known, "nodeId is not a node of a saved task");
            (200, envelope(json!([{"nodeId": node, "fields": metadata(MYSQL_ID)[1]["fields"]}])))
        }
        // M2
        ("GET", ["MetadataInstances", id]) => match metadata(MYSQL_ID).into_iter().find(|t| t["id"] == *id) {
            Some(t) => (200, envelope(t)),
            None => (200, json!({"code": "ok"})),
        },
        // T1
        ("GET", ["Task"]) => {
            let fields = [
                "syncType",
                "id",
                "name",
                "status",
                "last_updated",
                "createTime",
                "user_id",
                "startTime",
                "agentId",
                "statuses",
                "type",
                "desc",
                "stats",
            ];
            let projection: serde_json::Map<String, Value> =
                fields.iter().map(|k| (k.to_string(), json!(true))).collect();
            expect(f == json!({"limit": 10000, "fields": projection}), "T1 filter");
            let items: Vec<Value> = st
                .tasks
                .iter()
                .map(|t| json!({"id": t["id"], "name": t["name"], "status": t["status"], "syncType": t["syncType"], "type": t["type"]}))
                .collect();
            (200, envelope(json!({"items": items, "total": items.len()})))
        }
        // T6
        ("POST", ["Task"]) => {
            let b = &r.body;
            expect(b.get("id").is_none(), "a create carries an id");
            expect(
                b["status"] == "edit" && (b["syncType"] == "sync" || b["syncType"] == "migrate"),
                "status edit / syncType sync or migrate",
            );
            expect(b["dag"]["nodes"].is_array() && b["dag"]["edges"].is_array(), "dag.nodes / dag.edges");
            if s(b, "name").is_empty() {
                return (200, error("Task.NameIsNull", "Task name is null"));
            }
            if st.tasks.iter().any(|t| t["name"] == b["name"]) {
                return (200, error("Task.RepeatName", "Task name already exists"));
            }
            let id = format!("6720800ad6c2485881e9f0{:02}", st.next_id);
            st.next_id += 1;
            let task = json!({"id": id, "name": b["name"], "status": "edit", "syncType": b["syncType"],
                              "type": b["dag"]["type"], "dag": {"nodes": b["dag"]["nodes"], "edges": b["dag"]["edges"]}});
            st.tasks.push(task.clone());
            (200, envelope(task))
        }
        // T7
        ("PATCH", ["Task"]) => {
            let Some(t) = st.tasks.iter_mut().find(|t| t["id"] == r.body["id"]) else {
                expect(false, "PATCH /Task of an unknown id (the server would create a task)");
                return (200, error("Task.NotFound", "Task not found"));
            };
            expect(r.body["editVersion"].is_i64(), "editVersion is not epoch milliseconds");
            t["dag"] = json!({"nodes": r.body["dag"]["nodes"], "edges": r.body["dag"]["edges"]});
            (200, envelope(t.clone()))
        }
        // T8
        ("PATCH", ["Task", "confirm", id]) => {
            expect(r.body["id"] == *id, "confirm body without the task id");
            let warnings = dag_problems(&r.body["dag"]);
            let Some(t) = st.tasks.iter_mut().find(|t| t["id"] == *id) else {
                return (200, error("Task.NotFound", "Task not found"));
            };
            if !warnings.is_empty() {
                expect(false, &format!("DAG refused: {warnings:?}"));
                return (
                    200,
                    json!({"code": "Task.ListWarnMessage", "message": "List warn message", "data": warnings}),
                );
            }
            t["dag"] = json!({"nodes": r.body["dag"]["nodes"], "edges": r.body["dag"]["edges"]});
            if t["status"] == "edit" {
                t["status"] = json!("wait_start");
            }
            (200, envelope(t.clone()))
        }
        // T5
        ("GET", ["Task", id]) => match st.tasks.iter().find(|t| t["id"] == *id) {
            Some(t) => (200, envelope(t.clone())),
            None => (200, json!({"code": "ok"})),
        },
        // T9, T10, T11: one MutiResponseMessage per id; the envelope is ok even when an item is not.
        ("PUT", ["Task", "batchStart"]) => batch(st, r, p, |t| match s(t, "status") {
            "wait_start" | "stop" | "complete" | "error" | "schedule_failed" => {
                t["status"] = json!("running");
                t["syncStatus"] = json!("CDC");
                t["taskRecordId"] = json!(RECORD_ID);
                None
            }
            _ => Some("Transition.Not.Supported"),
        }),
        ("PUT", ["Task", "batchStop"]) => {
            expect(matches!(r.q("force"), Some("True" | "False" | "true" | "false")), "batchStop without force");
            batch(st, r, p, |t| match s(t, "status") {
                "running" | "wait_run" | "scheduling" => {
                    t["status"] = json!("stop");
                    None
                }
                _ => Some("Transition.Not.Supported"),
            })
        }
        ("DELETE", ["Task", "batchDelete"]) => {
            let reply = batch(st, r, p, |t| match s(t, "status") {
                "edit" | "wait_start" | "stop" | "complete" | "error" | "schedule_failed" => {
                    t["status"] = json!("deleting");
                    None
                }
                _ => Some("Transition.Not.Supported"),
            });
            st.tasks.retain(|t| t["status"] != "deleting");
            reply
        }
        // T16
        ("POST", ["measurement", "batch"]) => {
            let q = &r.body["totalData"];
            let tags = q.pointer("/param/samples/data/tags").cloned().unwrap_or(Value::Null);
            expect(q["uri"] == "/api/measurement/query/v2", "totalData.uri");
            expect(q.pointer("/param/samples/data/type") == Some(&json!("instant")), "samples.data.type instant");
            expect(
                q.pointer("/param/startAt").and_then(Value::as_i64) < q.pointer("/param/endAt").and_then(Value::as_i64),
                "startAt < endAt",
            );
            let known = st.tasks.iter().any(|t| t["id"] == tags["taskId"] && t["taskRecordId"] == tags["taskRecordId"]);
            expect(known && tags["type"] == "task", "tags name no run of a known task");
            let sample = json!({"outputQps": 1234.5, "inputQps": 1300.0, "snapshotRowTotal": 99441, "replicateLag": 350,
                "tableTotal": 1, "snapshotTableTotal": 1, "inputInsertTotal": 99441, "outputInsertTotal": 99441,
                "snapshotStartAt": 1730000000000_i64, "snapshotDoneAt": 1730000080000_i64});
            (
                200,
                envelope(json!({"totalData": {"code": "ok", "error": null, "cost": 3,
                                                 "data": {"samples": {"data": [sample]}}}})),
            )
        }
        // T17
        ("POST", ["MonitoringLogs", "query"]) => {
            let b = &r.body;
            let known = st.tasks.iter().any(|t| t["id"] == b["taskId"] && t["taskRecordId"] == b["taskRecordId"]);
            expect(known, "logs of no run of a known task");
            expect(b["order"] == "desc" && b["page"] == 1 && b["pageSize"].is_u64(), "T17 paging");
            let line = json!({"level": "WARN", "message": "a warning", "date": now_ms(), "taskId": b["taskId"]});
            (200, envelope(json!({"items": [line], "total": 1})))
        }
        // T18: hand-built JSON, not a ResponseMessage (tapdata-api §5).
        ("POST", ["proxy", "call"]) => {
            let b = &r.body;
            if b["className"] == "TaskPreviewService" {
                // T19: the task document as a string, rows; the target node's first rows.
                let task: Value = serde_json::from_str(b["args"][0].as_str().unwrap_or("")).unwrap_or_default();
                expect(task["dag"]["nodes"].as_array().is_some_and(|n| !n.is_empty()), "preview without the DAG");
                let sink = task["dag"]["nodes"].as_array().and_then(|n| n.last()).map(|n| s(n, "id").to_string());
                let row = json!({"order_id": "ORD000001", "order_status": "delivered"});
                let mut result = serde_json::Map::new();
                result.insert(sink.unwrap_or_default(), json!({"data": [row]}));
                return (200, envelope(json!({"nodeResult": result})));
            }
            expect(b["className"] == "QueryDataBaseDataService" && b["method"] == "getData", "proxy className/method");
            let conn = b["args"][0].as_str().unwrap_or("");
            let table = b["args"][1].as_str().unwrap_or("");
            let exists = metadata(conn).iter().any(|t| t["original_name"] == table && t["meta_type"] == "table");
            expect(exists, "args are not [connectionId, table]");
            let row = json!({"order_id": "ORD000001", "customer_id": "CUST000001", "order_status": "delivered"});
            (
                200,
                json!({"reqId": "r", "ts": now_ms(), "code": "ok",
                         "data": {"sampleData": [row], "tableInfo": {"numOfRows": 99441, "storageSize": 9830400}}}),
            )
        }
        _ => {
            expect(false, "no such endpoint");
            (404, json!({"timestamp": now_ms(), "status": 404, "error": "Not Found", "path": r.path}))
        }
    }
}

/// The server strips `config` from the connections it returns.
fn without_config(mut c: Value) -> Value {
    if let Some(o) = c.as_object_mut() {
        o.remove("config");
    }
    c
}

/// `PUT|DELETE /Task/batch*?taskIds=ID`: apply `f` to the task, one item per id.
fn batch(st: &mut State, r: &Req, p: &mut Vec<String>, f: impl Fn(&mut Value) -> Option<&'static str>) -> (u16, Value) {
    if !r.raw_body.is_empty() {
        p.push("a batch call with a body".into());
    }
    let ids = r.q("taskIds").unwrap_or("");
    let items: Vec<Value> = ids
        .split(',')
        .map(|id| match st.tasks.iter_mut().find(|t| t["id"] == id) {
            Some(t) => match f(t) {
                None => json!({"id": id, "code": "ok", "message": "ok"}),
                Some(code) => json!({"id": id, "code": code, "message": "This event is not supported in the state"}),
            },
            None => json!({"id": id, "code": "Task.NotFound", "message": "Task not found"}),
        })
        .collect();
    (200, envelope(json!(items)))
}

/// What `DAG.checkDag` would say: edges between existing nodes, no isolated node, sources are data nodes.
fn dag_problems(dag: &Value) -> Vec<String> {
    let nodes = dag["nodes"].as_array().cloned().unwrap_or_default();
    let edges = dag["edges"].as_array().cloned().unwrap_or_default();
    let ids: BTreeSet<&str> = nodes.iter().filter_map(|n| n["id"].as_str()).collect();
    let mut out = Vec::new();
    if nodes.len() < 2 {
        out.push("DAG.NodeTooFew".to_string());
    }
    for e in &edges {
        if !ids.contains(s(e, "source")) || !ids.contains(s(e, "target")) {
            out.push(format!("DAG.EdgeNotLink {e}"));
        }
    }
    for n in &nodes {
        let id = s(n, "id");
        let incoming = edges.iter().any(|e| e["target"] == id);
        let outgoing = edges.iter().any(|e| e["source"] == id);
        if !incoming && !outgoing {
            out.push(format!("DAG.NodeIsolated {id}"));
        }
        if !incoming && n["type"] != "table" && n["type"] != "database" {
            out.push(format!("DAG.SourceIsNotData {id}"));
        }
    }
    out
}

// ---- running tap against it ----

enum Profile {
    Enterprise,
    Cloud,
}

fn tap(env: &Env, cluster: &Cluster, profile: Profile, args: &[&str]) -> Run {
    let mut cmd = env.command();
    match profile {
        Profile::Enterprise => cmd.env("TAP_SERVER", &cluster.addr).env("TAP_ACCESS_CODE", ACCESS_CODE),
        Profile::Cloud => cmd
            .env("TAP_SERVER", format!("http://{}", cluster.addr))
            .env("TAP_ACCESS_KEY", ACCESS_KEY)
            .env("TAP_SECRET_KEY", SECRET_KEY),
    };
    Run::from(cmd.args(args).output().expect("run tap"))
}

fn script(env: &Env, cluster: &Cluster, profile: Profile, name: &str, text: &str) -> Run {
    let path = env.path(name);
    std::fs::write(&path, text).expect("write script");
    tap(env, cluster, profile, &["-f", path.to_str().expect("utf-8 path")])
}

fn lines(reqs: &[Req]) -> Vec<String> {
    reqs.iter().map(Req::line).collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

const EXCLUDE_SCRIPT: &str = "function process(record){\n\n\t// Enter you code at here\n\n    deleteFields = ['order_delivered_carrier_date', 'order_delivered_customer_date'];\n    newRecord = record;\n    for (i in deleteFields) {\n        delete(newRecord[deleteFields[i]]);\n    }\n    return newRecord;\n    }";

const JS_BODY: &str = "if (!record.order_status) { record.order_status = 'invalid'; } return record;";

/// The seed's flow: exclude, rename, a JS function, a lookup, into MongoDB.
fn seed_flow(lookup: bool) -> String {
    let lookup = if lookup {
        r#".lookup("MySQL_ECommerce.ecom_customers", #{ path: "customer", type: "object", relation: [["customer_id", "customer_id"]] })"#
    } else {
        ""
    };
    format!(
        r#"
let flow = Flow("orders_flow")
    .read_from("MySQL_ECommerce.ecom_orders")
    .exclude("order_delivered_carrier_date", "order_delivered_customer_date")
    .rename_fields(#{{ order_purchase_timestamp: "purchase_timestamp" }})
    .js("{JS_BODY}")
    {lookup}
    .write_to("MongoDB_ECommerce.orders")
    .save();
flow.start();
"#
    )
}

const MYSQL_SOURCE: &str = r#"
DataSource("mysql", "NAME", #{
    database: "ECommerceData",
    port: 3306,
    host: "demo.tapdata.io",
    username: "demouser",
    password: "demopass"
}).type("source").save();
"#;

// ---- the tests ----

#[test]
fn enterprise_profile_sends_what_tapflow_sends() {
    let env = Env::new("cluster-enterprise");
    let cluster = Cluster::start(Mode::Enterprise);
    let text = format!("{}{}", MYSQL_SOURCE.replace("NAME", "MySQL_New"), seed_flow(true));
    let run = script(&env, &cluster, Profile::Enterprise, "flow.rhai", &text);
    run.ok();
    cluster.assert_no_problems();
    let reqs = cluster.take();
    assert_eq!(
        lines(&reqs),
        [
            "POST /users/generatetoken",
            "GET /users",
            // DataSource(...).save(): the connector, the name, create, poll the schema load
            "GET /DatabaseTypes/getDatabases",
            "GET /Connections",
            "POST /Connections",
            "GET /Connections/6720650ad6c2485881e9dd01",
            // Flow("orders_flow"): is there a saved flow to load?
            "GET /Task",
            // read_from, lookup, write_to
            "GET /Connections",
            "GET /MetadataInstances",
            "GET /Connections",
            "GET /MetadataInstances",
            "GET /Connections",
            // save(): T6, M5, T7, T8
            "POST /Task",
            "GET /MetadataInstances/node/schema",
            "PATCH /Task",
            "PATCH /Task/confirm/6720800ad6c2485881e9f002",
            // start(): status, T9, wait for running
            "GET /Task/6720800ad6c2485881e9f002",
            "PUT /Task/batchStart",
            "GET /Task/6720800ad6c2485881e9f002",
        ]
    );
    assert!(reqs.iter().all(|r| r.base == "/api"));
    assert_eq!(reqs[0].body, json!({"accesscode": ACCESS_CODE}));
    assert!(reqs[0].q("access_token").is_none());
    for r in &reqs[1..] {
        assert_eq!(r.q("access_token"), Some(TOKEN), "{}", r.line());
        assert_eq!(r.header("cookie"), Some(format!("user_id={USER_ID}").as_str()), "{}", r.line());
        assert_eq!(r.header("accept-language"), Some("en-US"), "{}", r.line());
    }
    assert_eq!(reqs[3].filter(), json!({"where": {"name": "MySQL_New"}}));

    // The connection document (§5.6): the user's `username` key passes through, and `user`,
    // the official client's MySQL rule key, is added beside it.
    let mut conn = reqs[4].body.clone();
    let config = conn.as_object_mut().and_then(|o| o.remove("config")).expect("config");
    assert_eq!(
        conn,
        json!({"accessNodeType": "AUTOMATIC_PLATFORM_ALLOCATION", "connection_type": "source", "database_type": "Mysql",
               "loadAllTables": true, "name": "MySQL_New", "pdkHash": "hash-mysql", "pdkType": "pdk", "project": "",
               "response_body": {}, "retry": 0, "schema": {}, "shareCdcEnable": true, "status": "testing", "submit": true})
    );
    for (k, v) in [
        ("database", json!("ECommerceData")),
        ("port", json!(3306)),
        ("host", json!("demo.tapdata.io")),
        ("username", json!("demouser")),
        ("user", json!("demouser")),
        ("password", json!("demopass")),
        ("timezone", json!("")),
        ("__connectionType", json!("source")),
    ] {
        assert_eq!(config[k], v, "config.{k} in {config}");
    }
    assert_eq!(reqs[8].filter()["where"]["original_name"], "ecom_orders");
    assert_eq!(reqs[10].filter()["where"]["original_name"], "ecom_customers");

    // POST /Task: the task document of §8.9, SYNC settings inside dag.
    let task = &reqs[12].body;
    assert_eq!(
        keys(task),
        set(&[
            "editVersion",
            "syncType",
            "name",
            "status",
            "env",
            "dag",
            "user_id",
            "customId",
            "createUser",
            "syncPoints",
            "dynamicAdjustMemoryUsage",
            "crontabExpressionFlag",
            "skipErrorEvent"
        ])
    );
    assert!((now_ms() - task["editVersion"].as_i64().expect("editVersion ms")).abs() < 120_000);
    assert_eq!(task["syncType"], "sync");
    assert_eq!(task["name"], "orders_flow");
    assert_eq!(task["status"], "edit");
    assert_eq!(task["env"], json!({}));
    assert_eq!(task["user_id"], USER_ID);
    assert_eq!(task["customId"], USER_ID);
    assert_eq!(task["createUser"], USERNAME);
    assert_eq!(task["syncPoints"], json!([]));
    assert_eq!(task["dynamicAdjustMemoryUsage"], true);
    assert_eq!(task["crontabExpressionFlag"], false);
    let dag = &task["dag"];
    for (k, v) in [
        ("syncType", json!("sync")),
        ("type", json!("initial_sync+cdc")),
        ("isStopOnError", json!(true)),
        ("readBatchSize", json!(500)),
        ("deduplicWriteMode", json!("intelligent")),
        ("accessNodeType", json!("AUTOMATIC_PLATFORM_ALLOCATION")),
        ("createTime", json!("2022-10-06T18:43:04.352+00:00")),
    ] {
        assert_eq!(dag[k], v, "dag.{k}");
    }
    assert_eq!(dag["skipErrorEvent"], task["skipErrorEvent"]);
    assert_eq!(dag["skipErrorEvent"]["errorMode"], "Disable");

    // The nodes of §8.3–8.5, in the builder's order.
    let nodes = dag["nodes"].as_array().expect("nodes");
    let types: Vec<&str> = nodes.iter().map(|n| s(n, "type")).collect();
    assert_eq!(
        types,
        ["table", "js_processor", "field_rename_processor", "js_processor", "merge_table_processor", "table", "table"]
    );
    let (source, exclude, rename, js, merge, lookup, sink) =
        (&nodes[0], &nodes[1], &nodes[2], &nodes[3], &nodes[4], &nodes[5], &nodes[6]);
    let ids: BTreeSet<&str> = nodes.iter().map(|n| s(n, "id")).collect();
    assert_eq!(ids.len(), 7, "unique node ids");
    assert!(ids.iter().all(|id| id.len() == 36), "UUID node ids: {ids:?}");
    for (n, table, conn) in [(source, "ecom_orders", MYSQL_ID), (lookup, "ecom_customers", MYSQL_ID)] {
        assert_eq!(n["tableName"], table);
        assert_eq!(n["tableNames"], table, "a string in sync mode");
        assert_eq!(n["name"], table);
        assert_eq!(n["connectionId"], conn);
        assert_eq!(n["databaseType"], "Mysql");
        assert_eq!(n["increaseReadSize"], 1);
        assert_eq!(n["disabledEvents"], json!([]));
        assert_eq!(n["attrs"]["connectionName"], "MySQL_ECommerce");
        assert_eq!(n["attrs"]["connectionType"], "source");
        assert_eq!(n["attrs"]["pdkHash"], "hash-mysql");
        assert_eq!(n["attrs"]["capabilities"], mysql_ecommerce()["capabilities"]);
    }
    assert_eq!(exclude["name"], "Exclude");
    assert_eq!(exclude["script"], EXCLUDE_SCRIPT);
    assert_eq!(
        rename["operations"],
        json!([{"field": "order_purchase_timestamp", "op": "RENAME", "operand": "purchase_timestamp"}])
    );
    assert_eq!(js["name"], "JS");
    assert_eq!(js["script"], format!("function process(record){{\n\n\t// Enter you code at here\n{JS_BODY}}}"));
    assert_eq!(js["declareScript"], "");
    assert_eq!(merge["mergeMode"], "main_table_first");
    let head = &merge["mergeProperties"][0];
    assert_eq!(head["id"], js["id"], "the head is the node feeding the merge");
    assert_eq!(head["tableName"], "ecom_orders");
    assert_eq!(head["mergeType"], "updateOrInsert");
    let child = &head["children"][0];
    assert_eq!(child["id"], lookup["id"]);
    assert_eq!(child["joinKeys"], json!([{"source": "customer_id", "target": "customer_id"}]));
    assert_eq!(child["mergeType"], "updateWrite");
    assert_eq!(child["targetPath"], "customer");
    assert_eq!(child["isArray"], false);
    assert_eq!(child["tableName"], "ecom_customers");
    assert_eq!(child["arrayKeys"], json!([]));
    assert_eq!(sink["tableName"], "orders");
    assert_eq!(sink["connectionId"], MONGO_ID);
    assert_eq!(sink["databaseType"], "MongoDB");
    assert_eq!(sink["attrs"]["connectionName"], "MongoDB_ECommerce");
    assert_eq!(sink["updateConditionFields"], json!(["order_id"]));
    assert_eq!(sink["existDataProcessMode"], "keepData");
    assert_eq!(sink["writeStrategy"], "updateOrInsert");
    let edges: BTreeSet<(String, String)> = dag["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| (s(e, "source").to_string(), s(e, "target").to_string()))
        .collect();
    let edge = |a: &Value, b: &Value| (s(a, "id").to_string(), s(b, "id").to_string());
    let expected: BTreeSet<(String, String)> = [
        edge(source, exclude),
        edge(exclude, rename),
        edge(rename, js),
        edge(js, merge),
        edge(lookup, merge),
        edge(merge, sink),
    ]
    .into_iter()
    .collect();
    assert_eq!(edges, expected);

    // M5 asks for the target's schema; T7 sends only the DAG; T8 the whole task with its id.
    let task_id = "6720800ad6c2485881e9f002";
    assert_eq!(reqs[13].q("nodeId"), Some(s(sink, "id")));
    let patch = &reqs[14].body;
    assert_eq!(keys(patch), set(&["dag", "editVersion", "env", "id"]));
    assert_eq!(keys(&patch["dag"]), set(&["edges", "nodes"]));
    assert_eq!(patch["dag"]["nodes"], dag["nodes"]);
    assert_eq!(patch["dag"]["edges"], dag["edges"]);
    assert_eq!(patch["id"], task_id);
    assert_eq!(patch["env"], json!({}));
    let confirm = &reqs[15].body;
    assert_eq!(confirm["id"], task_id);
    assert_eq!(confirm["dag"], *dag);
    assert_eq!(confirm["nodes"], dag["nodes"], "dag keys copied to the top level");
    assert_eq!(confirm["type"], "initial_sync+cdc");
    assert_eq!(confirm["createUser"], USERNAME);
    let start = &reqs[17];
    assert_eq!(
        start.query.iter().filter(|(k, _)| k != "access_token").cloned().collect::<Vec<_>>(),
        [("taskIds".to_string(), task_id.to_string())]
    );
    assert!(start.raw_body.is_empty());
    assert!(run.stdout.contains("flow orders_flow started"), "{}", run.stdout);

    // status: T1, T5, T16; the line is read from outputQps, snapshotRowTotal, replicateLag.
    let run = tap(&env, &cluster, Profile::Enterprise, &["-c", "status orders_flow"]);
    run.ok();
    assert!(
        run.stdout.contains("current status is: running, qps is: 1234.5, total rows: 99441, delay is: 350ms"),
        "{}",
        run.stdout
    );
    let reqs = cluster.take();
    assert_eq!(
        lines(&reqs),
        [
            "POST /users/generatetoken",
            "GET /users",
            "GET /Task",
            "GET /Task/6720800ad6c2485881e9f002",
            "POST /measurement/batch"
        ]
    );
    let m = &reqs[4].body["totalData"]["param"];
    assert_eq!(m["samples"]["data"]["tags"], json!({"taskId": task_id, "taskRecordId": RECORD_ID, "type": "task"}));
    assert_eq!(m["endAt"].as_i64().map(|e| e - m["startAt"].as_i64().unwrap_or(0)), Some(300_000));
    let fields = m["samples"]["data"]["fields"].as_array().expect("fields");
    assert_eq!(fields.len(), 31);
    for f in ["outputQps", "snapshotRowTotal", "replicateLag", "lastFiveMinutesQps"] {
        assert!(fields.contains(&json!(f)), "{f}");
    }

    // peek: M1 then T18.
    let run = tap(&env, &cluster, Profile::Enterprise, &["-c", "peek -n 1 MySQL_ECommerce.ecom_orders"]);
    run.ok();
    assert!(run.stdout.contains("table ecom_orders has 99441 records"), "{}", run.stdout);
    assert!(run.stdout.contains("ORD000001"), "{}", run.stdout);
    let reqs = cluster.take();
    assert_eq!(
        lines(&reqs),
        ["POST /users/generatetoken", "GET /users", "GET /Connections", "GET /MetadataInstances", "POST /proxy/call"]
    );
    assert_eq!(
        reqs[4].body,
        json!({"className": "QueryDataBaseDataService", "method": "getData", "args": [MYSQL_ID, "ecom_orders"]})
    );

    // desc: M1 then M2 for the fields.
    let run = tap(&env, &cluster, Profile::Enterprise, &["-c", "desc MySQL_ECommerce.ecom_orders"]);
    run.ok();
    assert!(run.stdout.contains(r#""order_id": "varchar(32) primary_key unique""#), "{}", run.stdout);
    let reqs = cluster.take();
    assert_eq!(
        lines(&reqs),
        [
            "POST /users/generatetoken",
            "GET /users",
            "GET /Connections",
            "GET /MetadataInstances",
            &format!("GET /MetadataInstances/{ORDERS_META}"),
        ]
    );

    // stop is not forced (§13 bug 12 fixed); start does not save again (bug 12 too).
    let stop = [
        "POST /users/generatetoken",
        "GET /users",
        "GET /Task",
        "PUT /Task/batchStop",
        "GET /Task/6720800ad6c2485881e9f002",
    ];
    tap(&env, &cluster, Profile::Enterprise, &["-c", "stop orders_flow"]).ok();
    let reqs = cluster.take();
    assert_eq!(lines(&reqs), stop);
    assert_eq!((reqs[3].q("taskIds"), reqs[3].q("force")), (Some(task_id), Some("False")));
    let run = tap(&env, &cluster, Profile::Enterprise, &["-c", "start orders_flow"]);
    run.ok();
    assert!(run.stdout.contains("flow orders_flow started"), "{}", run.stdout);
    assert_eq!(
        lines(&cluster.take()),
        [
            "POST /users/generatetoken",
            "GET /users",
            "GET /Task",
            "PUT /Task/batchStart",
            "GET /Task/6720800ad6c2485881e9f002"
        ]
    );

    // delete: a running flow is refused by the server item by item, in an ok envelope.
    let run = tap(&env, &cluster, Profile::Enterprise, &["-c", "delete orders_flow -y"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("cannot delete flow orders_flow: Transition.Not.Supported"), "{}", run.stderr);
    cluster.take();
    tap(&env, &cluster, Profile::Enterprise, &["-c", "stop orders_flow"]).ok();
    assert_eq!(lines(&cluster.take()), stop);
    tap(&env, &cluster, Profile::Enterprise, &["-c", "delete orders_flow -y"]).ok();
    let reqs = cluster.take();
    assert_eq!(lines(&reqs), ["POST /users/generatetoken", "GET /users", "GET /Task", "DELETE /Task/batchDelete"]);
    assert_eq!(reqs[3].q("taskIds"), Some(task_id));
    cluster.assert_no_problems();
    assert!(cluster.state.lock().expect("state").tasks.is_empty());
}

#[test]
fn cloud_profile_signs_every_request_and_never_logs_in() {
    let env = Env::new("cluster-cloud");
    let cluster = Cluster::start(Mode::Cloud);
    // The verifier below is the reference's (§4.3 test vector), so a wrong signature fails.
    let vector = sign::string_to_sign(
        "GET",
        &[
            ("ts".into(), "1700000000123".into()),
            ("nonce".into(), "11111111-2222-3333-4444-555555555555".into()),
            ("signVersion".into(), "1.0".into()),
            ("accessKey".into(), "AK123".into()),
        ],
        "",
    );
    assert_eq!(sign::sign("SK456", &vector), "yatg0/uEy9BsnoACtfNX2UOjEpA=");

    let text = format!("{}{}", MYSQL_SOURCE.replace("NAME", "MySQL_ECommerce"), seed_flow(false));
    let run = script(&env, &cluster, Profile::Cloud, "flow.rhai", &text);
    run.ok();
    let run2 = tap(&env, &cluster, Profile::Cloud, &["-c", "status orders_flow"]);
    run2.ok();
    assert!(run2.stdout.contains("qps is: 1234.5, total rows: 99441, delay is: 350ms"), "{}", run2.stdout);
    cluster.assert_no_problems();
    let reqs = cluster.take();
    assert_eq!(
        lines(&reqs),
        [
            // an existing connection is updated; the Cloud first checks for a running agent
            "GET /agent/agentCount",
            "GET /DatabaseTypes/getDatabases",
            "GET /Connections",
            "PATCH /Connections/6720650ad6c2485881e9dc01",
            "GET /Connections/6720650ad6c2485881e9dc01",
            // Flow("orders_flow"): is there a saved flow to load?
            "GET /Task",
            "GET /Connections",
            "GET /MetadataInstances",
            "GET /Connections",
            "POST /Task",
            "GET /MetadataInstances/node/schema",
            "PATCH /Task",
            "PATCH /Task/confirm/6720800ad6c2485881e9f001",
            "GET /Task/6720800ad6c2485881e9f001",
            "PUT /Task/batchStart",
            "GET /Task/6720800ad6c2485881e9f001",
            // status
            "GET /Task",
            "GET /Task/6720800ad6c2485881e9f001",
            "POST /measurement/batch",
        ]
    );
    for r in &reqs {
        let want = if r.path == "/agent/agentCount" { "/api/tcm" } else { "/tm/api" };
        assert_eq!(r.base, want, "{}", r.line());
        assert_eq!(signature_problem(r), None, "{}", r.line());
        assert!(r.q("access_token").is_none() && r.header("cookie").is_none(), "{}", r.line());
        let signed: BTreeSet<&str> = r.query.iter().map(|(k, _)| k.as_str()).collect();
        for k in ["ts", "nonce", "signVersion", "accessKey", "sign"] {
            assert!(signed.contains(k), "{k} on {}", r.line());
        }
    }
    let nonces: BTreeSet<&str> = reqs.iter().filter_map(|r| r.q("nonce")).collect();
    assert_eq!(nonces.len(), reqs.len(), "a fresh nonce per request");

    // The check can fail: change a signed parameter, the body, or the key, and it does.
    let with_filter = &reqs[2];
    assert_eq!(with_filter.filter(), json!({"where": {"name": "MySQL_ECommerce"}}));
    let mut tampered = with_filter.clone();
    for (k, v) in tampered.query.iter_mut() {
        if k == "filter" {
            *v = v.replace("MySQL_ECommerce", "MongoDB_ECommerce");
        }
    }
    assert!(signature_problem(&tampered).is_some());
    let mut tampered = reqs[9].clone();
    tampered.raw_body = tampered.raw_body.replacen("orders_flow", "orders_flox", 1);
    assert!(signature_problem(&tampered).is_some());
    let mut tampered = reqs[0].clone();
    tampered.method = "POST".into();
    assert!(signature_problem(&tampered).is_some());

    // The connection update carries the whole document with its id and type.
    let patch = &reqs[3].body;
    assert_eq!(patch["id"], MYSQL_ID);
    assert_eq!(patch["database_type"], "Mysql");
    assert_eq!(patch["config"]["username"], "demouser");
    // Cloud knows no user id: the task leaves the user fields to the server (bug 29 of §13).
    let task = &reqs[9].body;
    for k in ["user_id", "customId", "createUser"] {
        assert!(task.get(k).is_none(), "{k} in {task}");
    }
    assert_eq!(task["dag"]["nodes"].as_array().map(Vec::len), Some(5));
}

#[test]
fn a_rhai_function_is_refused_on_a_cluster_before_any_task_request() {
    let env = Env::new("cluster-rhai");
    let cluster = Cluster::start(Mode::Enterprise);
    let run = script(
        &env,
        &cluster,
        Profile::Enterprise,
        "rhai.rhai",
        r#"
fn clean(record) { record.order_status = "invalid"; record }
Flow("rhai_flow").read_from("MySQL_ECommerce.ecom_orders").rhai(clean)
    .write_to("MongoDB_ECommerce.orders").save();
"#,
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(".js("), "{}", run.stderr);
    assert!(run.stderr.contains("embedded engine"), "{}", run.stderr);
    let reqs = cluster.take();
    // Only the read of Flow(name), which looks for a saved flow to load: no task is written.
    assert!(reqs.iter().all(|r| !r.path.starts_with("/Task") || r.method == "GET"), "{:?}", lines(&reqs));
    cluster.assert_no_problems();
}

#[test]
fn an_unreachable_server_names_the_address_and_what_to_do() {
    let env = Env::new("cluster-down");
    let closed = crate::harness::free_port();
    let run = env
        .command()
        .env("TAP_SERVER", format!("127.0.0.1:{closed}"))
        .env("TAP_ACCESS_CODE", ACCESS_CODE)
        .args(["-c", "show flows"])
        .output()
        .expect("run tap");
    let run = Run::from(run);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(&format!("127.0.0.1:{closed}")), "{}", run.stderr);
    assert!(run.stderr.contains("cannot reach TapData"), "{}", run.stderr);
    assert!(run.stderr.contains("`tap config`"), "{}", run.stderr);
}

#[test]
fn a_server_that_is_not_tapdata_is_named_as_such() {
    let env = Env::new("cluster-html");
    let cluster = Cluster::start(Mode::NotTapData);
    let run = tap(&env, &cluster, Profile::Enterprise, &["-c", "show flows"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("not TapData"), "{}", run.stderr);
    assert!(run.stderr.contains(&cluster.addr), "{}", run.stderr);
    let run = tap(&env, &cluster, Profile::Cloud, &["-c", "show flows"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("not TapData"), "{}", run.stderr);
}

#[test]
fn a_pipeline_and_a_python_function_send_tapdatas_nodes() {
    let env = Env::new("cluster-pipeline");
    let cluster = Cluster::start(Mode::Enterprise);
    let run = script(
        &env,
        &cluster,
        Profile::Enterprise,
        "p.rhai",
        r#"
Pipeline("mig").read_from(Source("MySQL_ECommerce", #{ table_re: "ecom_.*" })).renameTable("bak_", "")
    .write_to("MongoDB_ECommerce").save();
Flow("py_flow").read_from("MySQL_ECommerce.ecom_orders")
    .py("def pyfunc(record):\n    record['x'] = 1\n    return record\n")
    .write_to("MongoDB_ECommerce.orders").save();
"#,
    );
    assert_eq!(run.code, 0, "{run:?}");
    let reqs = cluster.take();
    let tasks: Vec<&Value> = reqs.iter().filter(|r| r.method == "POST" && r.path == "/Task").map(|r| &r.body).collect();
    assert_eq!(tasks.len(), 2, "{:?}", lines(&reqs));
    let (mig, py) = (tasks[0], tasks[1]);
    assert_eq!(mig["syncType"], "migrate");
    let nodes = mig["dag"]["nodes"].as_array().expect("nodes");
    let types: Vec<&str> = nodes.iter().map(|n| s(n, "type")).collect();
    assert_eq!(types, ["database", "table_rename_processor", "database"]);
    let (source, rename, sink) = (&nodes[0], &nodes[1], &nodes[2]);
    assert_eq!(source["tableNames"], json!(["ecom_customers", "ecom_orders"]), "the tables the pattern matches");
    assert_eq!(source["migrateTableSelectType"], "expression");
    assert_eq!(source["tableExpression"], "ecom_.*");
    assert_eq!(source["connectionId"], MYSQL_ID);
    assert_eq!(source["name"], "MySQL_ECommerce");
    assert_eq!(rename["prefix"], "bak_");
    assert_eq!(
        rename["tableNames"][1],
        json!({"originTableName": "ecom_orders", "previousTableName": "ecom_orders", "currentTableName": "bak_ecom_orders"})
    );
    assert_eq!(sink["connectionId"], MONGO_ID);
    assert_eq!(sink["existDataProcessMode"], "keepData");
    assert_eq!(py["syncType"], "sync");
    let node =
        py["dag"]["nodes"].as_array().and_then(|n| n.iter().find(|n| n["type"] == "python_processor")).expect("py");
    assert_eq!(
        node["script"],
        "def pyfunc(record):\n    record['x'] = 1\n    return record\n\n\ndef process(record, context):\n    return pyfunc(record)\n",
        "TapData's process form, the user's function wrapped"
    );
    cluster.assert_no_problems();
}

/// The verbs and methods added for TapFlow users send what a cluster answers: A3 for
/// `show agents`, `/Modules` for `show apis`, C3 for `desc datasource`, C5 + C3 for `validate`,
/// C6 for `delete datasource`, T1 + T5 for `show FLOW` and `Flow("existing")`, T19 for
/// `preview`.
#[test]
fn tapflows_other_verbs_send_what_a_cluster_answers() {
    let env = Env::new("cluster-verbs");
    let cluster = Cluster::start(Mode::Enterprise);
    let run = script(&env, &cluster, Profile::Enterprise, "flow.rhai", &seed_flow(false));
    run.ok();
    cluster.take();
    let verb = |line: &str| {
        let run = tap(&env, &cluster, Profile::Enterprise, &["-c", line]);
        assert_eq!(run.code, 0, "{line}: {}", run.stderr);
        let reqs = cluster.take();
        let l = lines(&reqs);
        assert_eq!(&l[..2], ["POST /users/generatetoken", "GET /users"], "{line}");
        (run.stdout, l[2..].to_vec(), reqs)
    };
    let (out, l, _) = verb("show agents");
    assert!(out.contains("running agents: 1") && out.contains("10.0.0.5"), "{out}");
    assert_eq!(l, ["GET /agent"]);
    let (out, l, _) = verb("show apis");
    assert!(out.contains("orders_api") && out.contains("ecom_orders"), "{out}");
    assert_eq!(l, ["GET /Modules"]);
    let (out, l, _) = verb("desc datasource MySQL_ECommerce");
    assert!(out.contains("Mysql"), "{out}");
    assert_eq!(l, ["GET /Connections", &format!("GET /Connections/{MYSQL_ID}")]);
    let (out, l, reqs) = verb("validate datasource MySQL_ECommerce");
    assert!(out.contains("load schema status: finished"), "{out}");
    assert_eq!(
        l,
        ["GET /Connections", &format!("PATCH /Connections/{MYSQL_ID}"), &format!("GET /Connections/{MYSQL_ID}")]
    );
    assert_eq!(reqs[3].body, json!({"id": MYSQL_ID, "database_type": "Mysql", "submit": true}));
    let (out, l, _) = verb("show orders_flow");
    assert!(out.starts_with("Flow(\"orders_flow\").read_from(\"MySQL_ECommerce.ecom_orders\")"), "{out}");
    assert_eq!(l, ["GET /Task", "GET /Task/6720800ad6c2485881e9f001"]);
    let (out, l, _) = verb("preview orders_flow -n 1");
    assert!(out.contains("ORD000001"), "{out}");
    assert_eq!(l, ["GET /Task", "GET /Task/6720800ad6c2485881e9f001", "POST /proxy/call"]);
    // Flow("existing") loads, and the appended step is saved before the sink (T7).
    let run = script(
        &env,
        &cluster,
        Profile::Enterprise,
        "more.rhai",
        "Flow(\"orders_flow\").exclude(\"order_status\").save();\n",
    );
    run.ok();
    let reqs = cluster.take();
    let l = lines(&reqs);
    assert_eq!(&l[2..4], ["GET /Task", "GET /Task/6720800ad6c2485881e9f001"]);
    let patch = reqs.iter().find(|r| r.line() == "PATCH /Task").expect("T7");
    let nodes = patch.body["dag"]["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.last().map(|n| n["name"].clone()), Some(json!("Exclude")), "the exclude is added");
    let (_, l, _) = verb("delete datasource MongoDB_ECommerce -y");
    assert_eq!(l, ["GET /Connections", &format!("DELETE /Connections/{MONGO_ID}")]);
    cluster.assert_no_problems();
}

/// The Flow methods a TapFlow script calls send TapData's requests: `metrics()` and
/// `full_qps()` T16, `logs(#{ limit, level })` T17 with its page size and levels, `stop(#{ force })`
/// T11 with `force=True`, `wait_status` T5.
#[test]
fn flow_methods_send_tapdatas_requests() {
    let env = Env::new("cluster-flow-methods");
    let cluster = Cluster::start(Mode::Enterprise);
    script(&env, &cluster, Profile::Enterprise, "flow.rhai", &seed_flow(false)).ok();
    cluster.take();
    let run = script(
        &env,
        &cluster,
        Profile::Enterprise,
        "methods.rhai",
        r#"let f = Flow("orders_flow");
print("rows " + f.metrics().snapshotRowTotal);
print("qps " + f.full_qps());
f.logs(#{ limit: 3, level: "warn" });
f.stop(#{ force: true });
print("stopped " + f.wait_status("stop", 10));
"#,
    );
    run.ok();
    assert!(run.stdout.contains("rows 99441") && run.stdout.contains("a warning"), "{}", run.stdout);
    assert!(run.stdout.contains("stopped true"), "{}", run.stdout);
    cluster.assert_no_problems();
    let reqs = cluster.take();
    let logs = reqs.iter().find(|r| r.line() == "POST /MonitoringLogs/query").expect("T17");
    assert_eq!((logs.body["pageSize"].clone(), logs.body["levels"].clone()), (json!(3), json!(["WARN", "ERROR"])));
    let stop = reqs.iter().find(|r| r.line() == "PUT /Task/batchStop").expect("T11");
    assert_eq!(stop.q("force"), Some("True"));
    assert!(reqs.iter().filter(|r| r.line() == "POST /measurement/batch").count() >= 2, "{:?}", lines(&reqs));
}
