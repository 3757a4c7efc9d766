use super::*;

/// Token lifetime: TapData's access-code tokens live 14 days.
pub(super) const TOKEN_TTL_MS: i64 = 14 * 24 * 3600 * 1000;

pub(super) async fn require_token(State(engine): State<Shared>, req: Request, next: Next) -> Response {
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

pub(super) fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| urlencoding::decode(&s.replace('+', " ")).map(|c| c.into_owned()).ok();
            Some((dec(k)?, dec(v)?))
        })
        .collect()
}

// ---- users ---------------------------------------------------------------------------------

pub(super) async fn generate_token(State(engine): State<Shared>, req: Request) -> Response {
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

pub(super) fn user_doc(engine: &Engine) -> Value {
    json!({"id": engine.user_id, "username": "admin@tap.local", "email": "admin@tap.local", "role": 1})
}

pub(super) async fn users(State(engine): State<Shared>) -> Response {
    ok(page(1, vec![user_doc(&engine)]))
}

pub(super) async fn user_self(State(engine): State<Shared>) -> Response {
    ok(user_doc(&engine))
}

pub(super) async fn agents() -> Response {
    ok(page(
        1,
        vec![json!({"id": "tap-engine", "name": "tap-engine", "status": "running",
                    "metric": {"systemInfo": {"ips": ["127.0.0.1"], "cpus": 0}}})],
    ))
}

pub(super) async fn agent_count() -> Response {
    ok(json!({"agentTotalCount": 1, "agentRunningCount": 1}))
}

// ---- connectors ----------------------------------------------------------------------------

pub fn pdk_hash(pdk_id: &str) -> String {
    format!("tap-{pdk_id}")
}

pub(super) fn capabilities() -> Value {
    json!([{"id": "query_by_advance_filter_function"}, {"id": "batch_read_function"},
           {"id": "stream_read_function"}, {"id": "write_record_function"}, {"id": "get_table_info_function"},
           {"id": "batch_count_function"}])
}

pub(super) async fn database_types() -> Response {
    let items: Vec<Value> = connectors::CONNECTORS
        .iter()
        .map(|c| {
            let mut props = Map::new();
            for (i, k) in c.config.iter().enumerate() {
                let mut about = k.about.to_string();
                if let Some(d) = k.default {
                    about.push_str(&format!(" ({d})"));
                }
                if let Some(a) = k.alias {
                    about.push_str(&format!("; also accepted as {a}"));
                }
                props.insert(
                    k.name.to_string(),
                    json!({"type": k.kind.schema_type(), "title": k.name, "required": k.required, "apiServerKey": k.name,
                           "x-index": i + 1, "description": about, "default": k.default}),
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
