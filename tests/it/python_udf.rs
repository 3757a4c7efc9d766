//! Python user functions on the embedded engine (`.py(…)`), run by CPython workers: the seed's
//! one-function form from a `.py` file and TapData's `process(record, context)` inline, typed
//! values as Python types (PostgreSQL numeric, date, timestamptz and bytea in and out), through
//! the snapshot and CDC; an exception ends the flow with its traceback; a hung function is
//! stopped at its time limit and the next start runs a new worker; `stop` ends the workers; the
//! interpreter's own packages import; no interpreter, or an engine beyond loopback without
//! `--allow-python`, is a clear refusal.

use crate::engine_postgres::pg;
use crate::harness::{Env, exec, query, wait_until};
use std::time::Duration;

#[test]
fn the_seeds_python_function_from_a_file_sees_typed_values_from_postgres() {
    let p = pg();
    let tag = format!("py_{}", std::process::id());
    p.psql(&format!(
        "DROP SCHEMA IF EXISTS {tag} CASCADE; CREATE SCHEMA {tag};
         CREATE TABLE {tag}.t (id int PRIMARY KEY, price numeric(10,2), day date, at timestamptz, blob bytea, status text);
         INSERT INTO {tag}.t VALUES (1, 12.25, '2024-02-28', '2024-01-01 10:00:00+00', '\\x00ff07', NULL),
                                    (3, 1, '2024-01-01', '2024-01-01 10:00:00+00', '\\x00', 'x');"
    ));
    let env = Env::new("py-pg");
    std::fs::write(
        env.path("standardize.py"),
        "import datetime\n\ndef pyfunc(record):\n    if record['id'] == 3:\n        return None\n    if not record['status']:\n        record['status'] = 'invalid'\n    record['total'] = record['price'] * 2\n    record['next_day'] = record['day'] + datetime.timedelta(days=1)\n    record['later'] = record['at'] + datetime.timedelta(hours=1)\n    record['blob'] = record['blob'][::-1]\n    record['kinds'] = ','.join(type(record[k]).__name__ for k in ('price', 'day', 'at', 'blob'))\n    return record\n",
    )
    .expect("write the function");
    let _engine = env.start_engine();
    let script = format!(
        r#"{}
let f = Flow("py").read_from("P.t").py("standardize.py").write_to("P.out");
print(f.show());
f.save().start();
Flow("py").wait_initial_sync();"#,
        p.datasource("P", &tag)
    );
    let run = env.script("p.rhai", &script);
    run.ok();
    assert!(run.stdout.contains(r#".py("import datetime\n\ndef pyfunc(record):"#), "{}", run.stdout);
    let rows = || {
        p.psql(&format!(
            "SELECT id, status, total, next_day, later AT TIME ZONE 'UTC', encode(blob, 'hex'), kinds FROM {tag}.out ORDER BY id"
        ))
        .trim()
        .to_string()
    };
    assert_eq!(
        rows(),
        "1|invalid|24.50|2024-02-29|2024-01-01 11:00:00|07ff00|Decimal,date,datetime,bytes",
        "None dropped id 3; every value came back typed"
    );
    let types = p.psql(&format!(
        "SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY column_name) FROM information_schema.columns
         WHERE table_schema = '{tag}' AND table_name = 'out' AND column_name IN ('total', 'next_day', 'later')"
    ));
    assert_eq!(types.trim(), "later:timestamp with time zone,next_day:date,total:numeric");
    p.psql(&format!("INSERT INTO {tag}.t VALUES (2, 0.10, '2024-12-31', now(), '\\x01', 'SendError')"));
    let two = || p.psql(&format!("SELECT total, next_day FROM {tag}.out WHERE id = 2")).trim().to_string();
    assert!(wait_until(Duration::from_secs(30), || two() == "0.20|2025-01-01"), "after CDC: {:?}", two());
}

#[test]
fn an_exception_ends_the_flow_with_its_traceback_and_a_hung_function_its_time_limit() {
    let env = Env::new("py-errors");
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');");
    let engine = env.start_engine_with(&[("TAP_UDF_BATCH_SECONDS", "2")]);
    let script = crate::harness::sqlite_src_dst(&src, &dst)
        + r#"
let f = "import time\ndef process(record, context):\n    if record['v'] == 'boom':\n        raise ValueError('no boom here')\n    if record['v'] == 'hang':\n        time.sleep(60)\n    record['op'] = context['op']\n    return record\n";
Flow("pe").read_from("Src.t").py(f).write_to("Dst.t").save().start();
Flow("pe").wait_initial_sync();"#;
    env.script("p.rhai", &script).ok();
    assert_eq!(query(&dst, "SELECT id, v, op FROM t"), vec![vec!["1", "a", "i"]]);
    let status = || env.tap(&["-c", "status pe"]).stdout;
    exec(&src, "INSERT INTO t VALUES (2, 'boom');");
    assert!(wait_until(Duration::from_secs(30), || status().contains("current status is: error")), "{}", status());
    assert!(
        status().contains("ValueError: no boom here") && status().contains("line 4, in process"),
        "the traceback: {}",
        status()
    );
    exec(&src, "DELETE FROM t WHERE id = 2; INSERT INTO t VALUES (3, 'hang');");
    env.tap(&["-c", "reset pe"]);
    env.tap(&["-c", "start pe"]);
    assert!(
        wait_until(Duration::from_secs(30), || status().contains("ran past its time limit of 2.0 s")),
        "{}",
        status()
    );
    assert!(wait_until(Duration::from_secs(10), || python_children(engine.pid()) == 0), "the hung worker was killed");
    // A new start runs a new worker; `stop` ends it.
    exec(&src, "UPDATE t SET v = 'c' WHERE id = 3;");
    env.tap(&["-c", "reset pe"]);
    env.tap(&["-c", "start pe"]);
    assert!(
        wait_until(Duration::from_secs(30), || query(&dst, "SELECT v FROM t WHERE id = 3") == vec![vec!["c"]]),
        "{}",
        status()
    );
    assert_eq!(python_children(engine.pid()), 1, "one worker for the one Python node");
    env.tap(&["-c", "stop pe"]);
    assert!(wait_until(Duration::from_secs(10), || python_children(engine.pid()) == 0), "stop ends the worker");
}

/// The engine's child processes that run Python.
fn python_children(engine: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid …
            let ppid = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)).unwrap_or("");
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            ppid == engine.to_string() && String::from_utf8_lossy(&cmd).contains("python")
        })
        .count()
}

#[test]
fn the_interpreters_packages_import_and_a_missing_interpreter_or_an_open_engine_is_refused() {
    let env = Env::new("py-env");
    let (src, dst) = (env.path("src.sqlite"), env.path("dst.sqlite"));
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');");
    let venv = std::env::var("TAP_TEST_PYTHON").expect("scripts/test sets TAP_TEST_PYTHON to the test venv's python");
    let prefix = std::path::Path::new(&venv).parent().and_then(|b| b.parent()).expect("VENV/bin/python");
    let lib = vec![vec![format!("psutil {}", prefix.display())]];
    let flow = |name: &str| {
        format!(
            r#"Flow("{name}").read_from("Src.t").py("import sys, psutil\ndef f(record):\n    record['lib'] = psutil.__name__ + ' ' + sys.prefix\n    return record\n").write_to("Dst.{name}").save().start();
Flow("{name}").wait_initial_sync();"#
        )
    };
    let head = crate::harness::sqlite_src_dst(&src, &dst);
    {
        // The venv's python runs the function, with the venv's packages (psutil comes with tapflow).
        let _engine = env.start_engine_with(&[("TAP_PYTHON", &venv)]);
        env.script("v.rhai", &format!("{head}{}", flow("venv"))).ok();
        assert_eq!(query(&dst, "SELECT lib FROM venv"), lib);
    }
    {
        let _engine = env.start_engine_with(&[("TAP_PYTHON", "/nonexistent/python3")]);
        let bad = env.script("n.rhai", &format!("{head}{}", flow("none")));
        assert!(bad.code != 0 && bad.stderr.contains("needs a Python 3 interpreter"), "{}", bad.stderr);
    }
    let open = format!("0.0.0.0:{}", env.port);
    {
        let _engine = env.start_engine_on(&open, &[], &[("TAP_PYTHON", &venv)]);
        let bad = env.script("o.rhai", &format!("{head}{}", flow("open")));
        assert!(bad.code != 0 && bad.stderr.contains("--allow-python"), "{}", bad.stderr);
    }
    let _engine = env.start_engine_on(&open, &["--allow-python"], &[("TAP_PYTHON", &venv)]);
    env.script("a.rhai", &format!("{head}{}", flow("allowed"))).ok();
    assert_eq!(query(&dst, "SELECT lib FROM allowed"), lib);
}
