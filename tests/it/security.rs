//! The engine lets no one in and touches no file it was not given: its files are the owner's
//! alone and an open data dir is refused; ids that are paths are refused; `sql()` stays inside
//! the connection's database and a Rhai function cannot `import`; the foreground engine says
//! where it listens and warns off a non-loopback address; one engine per data dir, and `stop`
//! signals only the process holding its lock.

use crate::harness::{Env, exec, free_port, http, sqlite_src_dst, token, wait_until};
use std::io::{BufRead, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every file and directory under `dir`, with its mode.
fn modes(dir: &Path, out: &mut Vec<(String, u32)>) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        let mode = std::fs::metadata(&p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        out.push((p.display().to_string(), mode));
        if p.is_dir() {
            modes(&p, out);
        }
    }
}

#[test]
fn every_file_the_engine_writes_is_private_and_an_open_data_dir_is_refused() {
    let env = Env::new("sec-files");
    let _engine = env.start_engine();
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');");
    // A plain flow, a lookup flow (its copies live in the data dir), and the sample.
    let script = sqlite_src_dst(&src, &dst)
        + r#"Flow("plain").read_from("Src.t").write_to("Dst.t").save();
start("plain");
Flow("plain").wait_initial_sync();
let path = demo(20);
DataSource("sqlite", "Shop", #{ database: path }).save();
let f = Flow("lk").read_from("Shop.ecom_orders");
f.lookup("Shop.ecom_customers", #{ path: "customer", type: "object", relation: [["customer_id", "customer_id"]] });
f.write_to("Dst.docs");
f.save();
f.start();
f.wait_initial_sync();"#;
    env.script("f.rhai", &script).ok();
    let mut all = Vec::new();
    modes(&env.data_dir(), &mut all);
    assert!(all.iter().any(|(p, _)| p.ends_with("engine.db-wal")), "{all:?}");
    assert!(all.iter().any(|(p, _)| p.contains("/lookup/")), "{all:?}");
    let open: Vec<&(String, u32)> = all.iter().filter(|(_, m)| m & 0o077 != 0).collect();
    assert!(open.is_empty(), "files or directories other users can read: {open:?}");
    let data_mode = std::fs::metadata(env.data_dir()).expect("data dir").permissions().mode() & 0o777;
    assert_eq!(data_mode, 0o700);

    // A data dir given open to others is refused, and its mode is left as it was.
    let given = env.path("shared-data");
    std::fs::create_dir(&given).expect("mkdir");
    std::fs::set_permissions(&given, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let port = free_port().to_string();
    let run =
        env.tap(&["engine", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", given.to_str().expect("utf-8")]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("is open to other users (mode 755)"), "{}", run.stderr);
    assert!(run.stderr.contains("chmod 700"), "{}", run.stderr);
    assert_eq!(std::fs::metadata(&given).expect("dir").permissions().mode() & 0o777, 0o755);
    assert!(std::fs::read_dir(&given).expect("dir").next().is_none(), "nothing written into it");
}

#[test]
fn an_id_that_is_a_path_names_no_file() {
    let env = Env::new("sec-ids");
    let _engine = env.start_engine();
    // A file beside the data dir that a crafted id would reach (`<data>/lookup/../../victim`).
    let victim = env.path("victim.db");
    std::fs::write(&victim, "keep me").expect("victim");
    let t = token(&env);
    for id in ["..%2F..%2Fvictim", "%2Ftmp%2Fx", "a.b"] {
        let body = http(&env, "PATCH", &format!("/api/Task/{id}?access_token={t}"), r#"{"name": "x"}"#);
        assert!(body.contains("Task.IllegalId"), "{id}: {body}");
    }
    let body = http(&env, "DELETE", &format!("/api/Task/batchDelete?taskIds=..%2F..%2Fvictim&access_token={t}"), "");
    assert!(!body.is_empty());
    assert_eq!(std::fs::read_to_string(&victim).expect("still there"), "keep me");
}

#[test]
fn sql_stays_inside_the_connections_database_and_rhai_functions_cannot_import() {
    let env = Env::new("sec-sql");
    let _engine = env.start_engine();
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');");
    env.script("ds.rhai", &sqlite_src_dst(&src, &dst)).ok();
    let outside = env.path("outside.db");
    for (statement, refused) in [
        (format!("ATTACH '{}' AS o", outside.display()), "ATTACH"),
        (format!("VACUUM INTO '{}'", outside.display()), "VACUUM INTO"),
        ("PRAGMA temp_store_directory = '/tmp'".to_string(), "PRAGMA temp_store_directory"),
        ("SELECT load_extension('/tmp/x')".to_string(), "load_extension"),
    ] {
        let run = env.script("s.rhai", &format!(r#"sql("Src", "{statement}");"#));
        assert_ne!(run.code, 0, "{statement}: {}", run.stdout);
        assert!(run.stderr.contains(refused) && run.stderr.contains("is refused"), "{statement}: {}", run.stderr);
        assert!(!outside.exists(), "{statement} made {}", outside.display());
    }
    // What stays inside the database still works.
    env.script("ok.rhai", r#"sql("Src", "PRAGMA table_info(t)"); sql("Src", "INSERT INTO t VALUES (2, 'b')");"#).ok();

    // A Rhai user function cannot import a module from the host's files.
    std::fs::write(env.path("secret.rhai"), "export const KEY = \"s3cret\";").expect("module");
    let flow = sqlite_src_dst(&src, &dst)
        + r#"fn leak(record) {
    import "secret" as s;
    record.v = s::KEY;
    record
}
Flow("imp").read_from("Src.t").rhai(leak).write_to("Dst.t").save();
start("imp");"#;
    let _ = env.script("imp.rhai", &flow);
    let status = || env.tap(&["-c", "status imp"]).stdout;
    assert!(wait_until(Duration::from_secs(30), || status().contains("current status is: error")), "{}", status());
    assert!(status().contains("import \"secret\" is refused"), "{}", status());
}

/// A foreground engine's first stderr line, and the process.
fn foreground(env: &Env, listen: &str, data: &Path) -> (std::process::Child, String) {
    let mut child = env
        .command()
        .args(["engine", "--listen", listen, "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("engine");
    // Read on a thread, so an engine that prints nothing fails the test instead of hanging it.
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let want = if listen.starts_with("127.") { 1 } else { 2 };
    let mut text = String::new();
    for _ in 0..want {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => {
                text.push_str(&l);
                text.push('\n');
            }
            Err(_) => break,
        }
    }
    (child, text)
}

#[test]
fn the_foreground_engine_says_where_it_listens_and_warns_off_other_networks() {
    let env = Env::new("sec-listen");
    let port = free_port();
    let (mut child, text) = foreground(&env, &format!("127.0.0.1:{port}"), &env.data_dir());
    assert!(text.contains(&format!("listening on 127.0.0.1:{port}, data dir {}", env.data_dir().display())), "{text}");
    assert!(!text.contains("WARNING"), "{text}");
    let _ = child.kill();
    let _ = child.wait();
    let port = free_port();
    let (mut child, text) = foreground(&env, &format!("0.0.0.0:{port}"), &env.data_dir());
    assert!(text.contains("WARNING") && text.contains("plain HTTP"), "{text}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn one_engine_per_data_dir_and_stop_signals_only_the_lock_holder() {
    let env = Env::new("sec-lock");
    let mut engine = env.start_engine();
    let holder = std::fs::read_to_string(env.data_dir().join("engine.json")).expect("engine.json");
    let port = free_port();
    let mut second = env
        .command()
        .args(["engine", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(env.data_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("second engine");
    let ended = wait_until(Duration::from_secs(20), || matches!(second.try_wait(), Ok(Some(_))));
    if !ended {
        let _ = second.kill();
    }
    let status = second.wait().expect("wait");
    let mut stderr = String::new();
    second.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
    assert!(ended && !status.success(), "a second engine on the same data dir must refuse to run: {stderr}");
    assert!(stderr.contains("another engine (pid"), "{stderr}");
    let pid: serde_json::Value = serde_json::from_str(&holder).expect("json");
    assert!(stderr.contains(&format!("pid {}", pid["pid"])), "names the holder: {stderr}");
    engine.kill();

    // A stale engine.json naming another process, at an address something else answers on:
    // `tap engine stop` signals nothing.
    let mut bystander = Command::new("sleep").arg("60").spawn().expect("sleep");
    let listener = std::net::TcpListener::bind(env.server()).expect("bind the engine's port");
    std::fs::write(
        env.data_dir().join("engine.json"),
        format!(r#"{{"address": "{}", "pid": {}}}"#, env.server(), bystander.id()),
    )
    .expect("stale state");
    let run = env.tap(&["engine", "stop"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("no engine holds data dir"), "{}", run.stderr);
    assert!(matches!(bystander.try_wait(), Ok(None)), "the bystander was signalled");
    let _ = bystander.kill();
    let _ = bystander.wait();
    drop(listener);
}

#[test]
fn secrets_are_masked_in_api_answers_and_masked_values_sent_back_keep_the_stored_ones() {
    let pg = crate::engine_postgres::pg();
    let env = Env::new("sec-secrets");
    let _engine = env.start_engine();
    let schema = format!("it_secrets_{}", std::process::id());
    pg.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id int PRIMARY KEY)"
    ));
    // (Option strings and URIs with secrets are refused by the engine's connectors, which do not
    // read them; their masking is unit-tested in `connectors::secrets`.)
    let ds = pg.datasource("P", &schema);
    env.script("ds.rhai", &ds).ok();
    let t = token(&env);
    let list = http(&env, "GET", &format!("/api/Connections?access_token={t}"), "");
    let id = {
        let v: serde_json::Value = serde_json::from_str(&list).expect("json");
        v["data"]["items"].as_array().and_then(|a| a.iter().find(|c| c["name"] == "P")).expect("P")["id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    let one = http(&env, "GET", &format!("/api/Connections/{id}?access_token={t}"), "");
    assert!(!one.contains(&pg.password) && !list.contains(&pg.password), "the password in clear: {one}");
    assert!(one.contains("\"password\":\"******\""), "{one}");
    // The config sent back as it was read (stars and all): the stored secrets stay.
    let v: serde_json::Value = serde_json::from_str(&one).expect("json");
    let config = v["data"]["config"].clone();
    let body = serde_json::json!({"config": config}).to_string();
    let answer = http(&env, "PATCH", &format!("/api/Connections/{id}?access_token={t}"), &body);
    assert!(answer.contains("\"code\":\"ok\""), "{answer}");
    // (Read from the store: the test server trusts loopback, so a wrong password would still connect.)
    let stored = crate::harness::query(
        &env.data_dir().join("engine.db"),
        &format!("SELECT json_extract(doc, '$.config.password') FROM docs WHERE id = '{id}'"),
    );
    assert_eq!(stored[0], vec![pg.password.clone()]);
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

#[test]
fn saving_connections_to_a_silent_server_costs_no_thread_each() {
    let env = Env::new("sec-threads");
    let _engine = env.start_engine();
    // A server that accepts and never answers: each connection test waits for its timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = accepted.clone();
    std::thread::spawn(move || {
        for s in silent.incoming().flatten() {
            keep.lock().expect("lock").push(s);
        }
    });
    let t = token(&env);
    for i in 0..24 {
        let body = format!(
            r#"{{"name": "silent{i}", "database_type": "PostgreSQL", "connection_type": "source_and_target",
                "config": {{"host": "127.0.0.1", "port": {port}, "database": "d", "schema": "public", "user": "u", "password": "p"}}}}"#
        );
        let answer = http(&env, "POST", &format!("/api/Connections?access_token={t}"), &body);
        assert!(answer.contains("\"code\":\"ok\""), "{answer}");
    }
    assert!(wait_until(Duration::from_secs(20), || accepted.lock().expect("lock").len() >= 4), "the loads started");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.data_dir().join("engine.json")).expect("engine.json"))
            .expect("json");
    let status = std::fs::read_to_string(format!("/proc/{}/status", state["pid"])).expect("status");
    let threads: usize =
        status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).expect("Threads");
    assert!(threads < 20, "24 saves waiting on a silent server hold {threads} engine threads");
}

#[test]
fn a_datasource_saved_again_with_some_keys_keeps_the_others() {
    let pg = crate::engine_postgres::pg();
    let env = Env::new("sec-resave");
    let _engine = env.start_engine();
    let schema = format!("it_resave_{}", std::process::id());
    pg.psql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"));
    env.script("full.rhai", &pg.datasource("P", &schema)).ok();
    // Saved again naming one key only: the host, port, user and password stay.
    env.script("part.rhai", r#"DataSource("postgres", "P", #{ schema: "public" }).save();"#).ok();
    let stored = crate::harness::query(
        &env.data_dir().join("engine.db"),
        "SELECT json_extract(doc, '$.config.host'), json_extract(doc, '$.config.port'), json_extract(doc, '$.config.user'), \
         json_extract(doc, '$.config.password'), json_extract(doc, '$.config.schema') FROM docs WHERE kind = 'Connections'",
    );
    assert_eq!(
        stored,
        vec![vec![pg.host.clone(), pg.port.clone(), pg.user.clone(), pg.password.clone(), "public".to_string()]]
    );
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}
