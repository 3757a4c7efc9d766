//! What crosses the engine's API is typed: every error answer is an envelope (malformed JSON,
//! a wrong content type, an oversized body, a body of the wrong shape, an unknown method),
//! the error's kind travels in it, and a DAG field the engine would otherwise ignore is refused
//! at save by name.

use crate::harness::{Env, exec, http, http_full, sqlite_src_dst, token};
use serde_json::{Value, json};

fn envelope(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn every_error_answer_is_an_envelope_and_wrong_shapes_are_refused() {
    let env = Env::new("wire-envelope");
    let _engine = env.start_engine();
    let t = token(&env);
    let conns = format!("/api/Connections?access_token={t}");
    let cases: [(&str, String, u16, &str); 5] = [
        ("application/json", "{not json".into(), 400, "IllegalArgument"),
        ("application/json", "[1, 2]".into(), 400, "IllegalArgument"),
        ("text/plain", r#"{"name": "x"}"#.into(), 415, "UnsupportedMediaType"),
        ("application/json", format!(r#"{{"name": "{}"}}"#, "x".repeat(3 << 20)), 413, "PayloadTooLarge"),
        (
            "application/json",
            r#"{"name": "Bad", "database_type": "SQLite", "config": "notanobject"}"#.into(),
            400,
            "IllegalArgument",
        ),
    ];
    for (ty, body, status, code) in &cases {
        let (got, answer) = http_full(&env, "POST", &conns, ty, body);
        assert_eq!(got, *status, "{ty} {}: {answer}", &body[..body.len().min(40)]);
        let e = envelope(&answer);
        assert_eq!(e["code"], *code, "{answer}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
        assert!(e["reqId"].is_string(), "{answer}");
    }
    let listed = envelope(&http(&env, "GET", &conns, ""));
    assert_eq!(listed["data"]["total"], 0, "nothing of the refused bodies was stored: {listed}");
    let (got, answer) =
        http_full(&env, "DELETE", &format!("/api/Task/batchStart?access_token={t}"), "application/json", "");
    assert_eq!(got, 405, "{answer}");
    assert_eq!(envelope(&answer)["code"], "MethodNotAllowed");
    // The kind travels: a service the engine does not offer is `unsupported`, not a text.
    let answer = http(
        &env,
        "POST",
        &format!("/api/proxy/call?access_token={t}"),
        r#"{"className": "Nope", "method": "x", "args": []}"#,
    );
    assert_eq!(envelope(&answer)["kind"], "unsupported", "{answer}");
}

#[test]
fn dag_fields_the_engine_would_ignore_are_refused_at_save_by_name() {
    let env = Env::new("wire-dag");
    let _engine = env.start_engine();
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(&src, "CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT); INSERT INTO orders VALUES (1, 'new');");
    env.script(
        "save.rhai",
        &(sqlite_src_dst(&src, &dst) + r#"Flow("wired").read_from("Src.orders").write_to("Dst.orders").save();"#),
    )
    .ok();
    let t = token(&env);
    let tasks = envelope(&http(&env, "GET", &format!("/api/Task?access_token={t}"), ""));
    let task = tasks["data"]["items"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "wired"))
        .cloned()
        .expect("saved");
    let id = task["id"].as_str().expect("id").to_string();
    let confirm = |body: &Value| {
        envelope(&http(&env, "PATCH", &format!("/api/Task/confirm/{id}?access_token={t}"), &body.to_string()))
    };
    let with_source = |extra: Value| {
        let mut dag = task["dag"].clone();
        if let Some(nodes) = dag["nodes"].as_array_mut() {
            let source = nodes
                .iter_mut()
                .find(|n| n["name"] == "orders" && n["existDataProcessMode"].is_null())
                .expect("source");
            if let (Some(n), Some(e)) = (source.as_object_mut(), extra.as_object()) {
                n.extend(e.clone());
            }
        }
        json!({"id": id, "dag": dag})
    };
    // The saved flow itself is accepted as it is.
    assert_eq!(confirm(&with_source(json!({})))["code"], "ok");
    let refused = [
        // A source's query and filter are run (tests/it/source_opts.rs), in their shapes only.
        (json!({"customCommand": "SELECT 1", "enableCustomCommand": true}), "customCommand"),
        (json!({"isFilter": "yes", "conditions": [{"key": "status", "operator": 5, "value": "new"}]}), "isFilter"),
        (json!({"disabledEvents": ["delete"]}), "disabledEvents"),
        (json!({"someFutureField": 1}), "someFutureField"),
    ];
    for (extra, field) in refused {
        let e = confirm(&with_source(extra));
        let m = e["message"].as_str().unwrap_or_default();
        assert_eq!(e["code"], "Task.Invalid", "{e}");
        assert!(m.contains("node \"orders\" (table)") && m.contains(field), "{m}");
    }
    let mut bogus = with_source(json!({}));
    bogus["type"] = json!("bogus");
    let e = confirm(&bogus);
    assert!(e["message"].as_str().unwrap_or_default().contains("field type is \"bogus\""), "{e}");
    let mut points = with_source(json!({}));
    points["syncPoints"] = json!([{"dateTime": 1_700_000_000_000_i64, "pointType": "localTZ"}]);
    assert!(confirm(&points)["message"].as_str().unwrap_or_default().contains("syncPoints"));
    // A start of a stored DAG the rules refuse fails the same way, before any row moves.
    let mut dag = task["dag"].clone();
    if let Some(n) = dag["nodes"].as_array_mut().and_then(|a| a.iter_mut().find(|n| n["type"] == "table")) {
        n["conditions"] = json!([{"key": "status", "operator": 5, "value": "new"}]);
    }
    let patched =
        envelope(&http(&env, "PATCH", &format!("/api/Task/{id}?access_token={t}"), &json!({"dag": dag}).to_string()));
    assert_eq!(patched["code"], "ok", "a draft may hold anything: {patched}");
    // A preview runs what a start would: it refuses the field rather than preview without it.
    let task_doc = json!({"id": id, "name": "wired", "dag": dag}).to_string();
    let call = json!({"className": "TaskPreviewService", "method": "preview", "args": [task_doc, null, 1]});
    let preview = envelope(&http(&env, "POST", &format!("/api/proxy/call?access_token={t}"), &call.to_string()));
    assert_eq!(preview["data"]["code"], 422, "{preview}");
    assert!(preview["data"]["errorMsg"].as_str().unwrap_or_default().contains("conditions"), "{preview}");
    let run = env.tap(&["-c", "start wired"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(format!("{}{}", run.stdout, run.stderr).contains("conditions"), "{run:?}");
    assert!(
        !dst.exists()
            || crate::harness::query(&dst, "SELECT count(*) FROM sqlite_master WHERE name = 'orders'")[0][0] == "0"
    );
    // Log items carry TapData's fields, so clients that read them work.
    let body = json!({"taskId": id, "levels": ["INFO", "WARN", "ERROR"], "start": 0, "end": 4_102_444_800_000_i64});
    let logs = envelope(&http(&env, "POST", &format!("/api/MonitoringLogs/query?access_token={t}"), &body.to_string()));
    let items = logs["data"]["items"].as_array().cloned().unwrap_or_default();
    assert!(!items.is_empty(), "{logs}");
    for key in ["taskName", "taskRecordId", "date", "timestamp", "nodeId", "nodeName", "level", "message"] {
        assert!(items.iter().all(|i| i.get(key).is_some()), "{key} missing: {logs}");
    }
    assert_eq!(items[0]["taskName"], "wired");
}

#[test]
fn connection_config_keys_the_connector_does_not_read_are_refused_by_name() {
    let env = Env::new("wire-config");
    let _engine = env.start_engine();
    let t = token(&env);
    let conns = format!("/api/Connections?access_token={t}");
    let db = env.path("x.sqlite");
    let save = |ty: &str, config: Value| {
        envelope(&http(&env, "POST", &conns, &json!({"name": "C", "database_type": ty, "config": config}).to_string()))
    };
    let e = save("SQLite", json!({"databse": db}));
    assert_eq!(e["code"], "Datasource.IllegalConfig", "{e}");
    let m = e["message"].as_str().unwrap_or_default();
    assert!(m.contains("\"databse\"") && m.contains("it has database"), "{m}");
    let e = save(
        "PostgreSQL",
        json!({"host": "127.0.0.1", "port": 1, "database": "d", "schema": "public", "user": "u", "logPluginName": "wal2json"}),
    );
    assert!(e["message"].as_str().unwrap_or_default().contains("logPluginName"), "{e}");
    let e = save("Mysql", json!({"host": "127.0.0.1", "port": 1, "database": "d", "user": "u", "ssl": true}));
    assert!(e["message"].as_str().unwrap_or_default().contains("ssl"), "{e}");
    // Values of the wrong type and missing required keys are refused at save, not at first use.
    let e = save("Mysql", json!({"host": "127.0.0.1", "port": "33o6", "database": "d", "user": "u"}));
    assert!(e["message"].as_str().unwrap_or_default().contains("port from 1 to 65535"), "{e}");
    let e = save("PostgreSQL", json!({"host": "127.0.0.1", "database": "d", "password": {"x": 1}}));
    let m = e["message"].as_str().unwrap_or_default();
    assert!(m.contains("password is a value; it takes text") && !m.contains("\"x\""), "a secret is not shown: {e}");
    let e = save("PostgreSQL", json!({"host": "127.0.0.1", "database": "d"}));
    assert!(e["message"].as_str().unwrap_or_default().contains("needs \"user\""), "{e}");
    // What the official client sends at its defaults is accepted.
    let e =
        save("SQLite", json!({"database": db, "__connectionType": "source_and_target", "timezone": "", "ssl": false}));
    assert_eq!(e["code"], "ok", "{e}");
    let id = e["data"]["id"].as_str().unwrap_or_default().to_string();
    let e = envelope(&http(
        &env,
        "PATCH",
        &format!("/api/Connections/{id}?access_token={t}"),
        &json!({"config": {"path": "y"}}).to_string(),
    ));
    assert_eq!(e["code"], "Datasource.IllegalConfig", "a re-save is checked too: {e}");
}

#[test]
fn a_stored_checkpoint_of_another_shape_stops_the_flow_saying_how_to_start_over() {
    let env = Env::new("wire-checkpoint");
    let _engine = env.start_engine();
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');");
    env.script(
        "save.rhai",
        &(sqlite_src_dst(&src, &dst) + r#"Flow("odd").read_from("Src.t").write_to("Dst.t").save();"#),
    )
    .ok();
    let t = token(&env);
    let tasks = envelope(&http(&env, "GET", &format!("/api/Task?access_token={t}"), ""));
    let id = tasks["data"]["items"][0]["id"].as_str().expect("id").to_string();
    // A checkpoint this engine never writes: positions as a list (it used to panic on the first save).
    exec(
        &env.data_dir().join("engine.db"),
        &format!("INSERT INTO checkpoints(task_id, doc) VALUES ('{id}', '{{\"phase\": \"cdc\", \"positions\": [1]}}')"),
    );
    let _ = env.tap(&["-c", "start odd"]);
    let status = || env.tap(&["-c", "status odd"]).stdout;
    assert!(
        crate::harness::wait_until(std::time::Duration::from_secs(30), || status()
            .contains("current status is: error")),
        "{}",
        status()
    );
    let s = status();
    assert!(s.contains("stored checkpoint") && s.contains("reset"), "{s}");
    assert!(!s.contains("panicked"), "{s}");
}
