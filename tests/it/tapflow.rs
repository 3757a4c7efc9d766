//! The official Python client, TapFlow 0.2.81 (`tapflow` on PyPI), drives the embedded engine:
//! login with an access code, two SQLite data sources, a flow with exclude, rename, a JS
//! function and a row filter, the shell verbs (`show dbs`, `use`, `show tables`, `peek`,
//! `count`, `show flows`, `status`, `stop`, `delete`) through the client's own functions, and
//! change data capture; then SQLite checks the target table.
//!
//! The client lives in `<repo>/.venv` (or `TAP_TEST_PYTHON`), which `scripts/test` creates.

use crate::harness::{Env, exec, query};
use std::path::PathBuf;
use std::process::Command;

/// The driver, run with the official client. argv: SOURCE_DB TARGET_DB. Markers are `@@ …` lines.
const DRIVER: &str = r#"
import builtins
import json
import sqlite3
import sys
import time

SRC, DST = sys.argv[1], sys.argv[2]


def mark(*parts):
    print("@@", *parts, flush=True)


# Importing the package logs in with ~/.tapflow/config.ini, as `tap` does.
from tapflow.lib import DataSource, Flow  # noqa: E402
from tapflow.lib.backend_apis.task import TaskApi  # noqa: E402
from tapflow.lib.cache import client_cache, system_server_conf  # noqa: E402
from tapflow.lib.commands.op_object_command import OpObjectCommand  # noqa: E402
from tapflow.lib.commands.show_command import ShowCommand  # noqa: E402
from tapflow.lib.op_object import get_obj, show_connectors, show_dbs, show_flows, show_tables  # noqa: E402
from tapflow.lib.request import req  # noqa: E402

mark("login", bool(system_server_conf["username"]), "sqlite" in client_cache["connectors"])
show_connectors(quiet=False)

# The shell verbs are IPython line magics; these are the same methods without IPython.
shell = ShowCommand(shell=None)
ops = OpObjectCommand(shell=None)

src = DataSource("sqlite", "PySrc", {"database": SRC}).type("source")
mark("save_src", src.save())
dst = DataSource("sqlite", "PyDst", {"database": DST})
mark("save_dst", dst.save())
mark("status_src", src.status())

time.sleep(1.1)  # show_connections answers at most once a second
show_dbs(quiet=False)
shell.use("PySrc")
mark("use", client_cache.get("connection") == src.id)
show_tables()
ops.desc("ecom_orders")
shell.peek("-n 2 ecom_orders")
shell.count("ecom_orders")

flow = (
    Flow("pyflow")
    .read_from("PySrc.ecom_orders")
    .exclude("note")
    .rename_fields({"order_status": "status"})
    .js("record.y = 1; return record;")
    .filter("qty > 2")
    .write_to("PyDst.orders_copy")
    .save()
)
mark("flow_saved", flow.job.id is not None)
flow.preview()  # the `preview` verb: saves, then prints the target's first row
preview = flow.job.preview()
target = preview.get(flow.dag.get_target_node().id, {}).get("data", [])
mark("preview", json.dumps(target[:1], sort_keys=True))
flow.start()
deadline = time.time() + 60
while flow.status() != "running" and time.time() < deadline:
    time.sleep(0.5)
mark("flow_status", flow.status())
show_flows()
show_flows(query="pyfl")


def target_rows():
    res = TaskApi(req).preview_task(dst.id, "orders_copy")
    return res.get("data", {}).get("tableInfo", {}).get("numOfRows", -1) if res.get("code") == "ok" else -1


def wait_rows(n):
    deadline = time.time() + 60
    while target_rows() != n and time.time() < deadline:
        time.sleep(0.5)


# The snapshot: 4 of the 6 rows pass the filter.
deadline = time.time() + 60
while time.time() < deadline:
    stats = get_obj("job", "pyflow").stats()
    if stats is not None and stats.snapshot_done_at and target_rows() == 4:
        break
    time.sleep(0.5)
ops.status("pyflow")

time.sleep(1.1)
show_dbs(quiet=True)
shell.use("PyDst")
show_tables()
shell.peek("orders_copy")
shell.count("orders_copy")

# Change data capture: a new row, and a row that enters the filter.
db = sqlite3.connect(SRC)
db.execute("INSERT INTO ecom_orders VALUES ('o7', 'c3', 7, 'n7', 'created')")
db.execute("UPDATE ecom_orders SET qty = 9 WHERE order_id = 'o2'")
db.commit()
db.close()
wait_rows(6)
shell.count("orders_copy")
ops.logs("pyflow")

ops.stop("pyflow")
mark("after_stop", flow.status())
builtins.input = lambda prompt="": "y"  # `delete` asks for confirmation
ops.delete("pyflow")
show_flows()
mark("flows_left", len(client_cache["jobs"]["name_index"]))
mark("done")
"#;

/// The Python that has tapflow: `TAP_TEST_PYTHON`, else `<repo>/.venv/bin/python`.
fn python() -> PathBuf {
    let hint = "run scripts/test once: it creates .venv with tapflow==0.2.81 and exports TAP_TEST_PYTHON";
    if let Some(p) = std::env::var_os("TAP_TEST_PYTHON") {
        let p = PathBuf::from(p);
        assert!(p.exists(), "TAP_TEST_PYTHON={} does not exist; {hint}", p.display());
        return p;
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(p.exists(), "no Python with the official TapFlow client ({} is missing); {hint}", p.display());
    p
}

/// The text without ANSI colour codes (the client colours its output).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn marker(out: &str, key: &str) -> Option<String> {
    out.lines().find_map(|l| l.strip_prefix("@@ ").filter(|r| r.split(' ').next() == Some(key)).map(str::to_string))
}

#[test]
fn official_python_client_drives_the_engine() {
    let python = python();
    let env = Env::new("tapflow");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(
        &src,
        "CREATE TABLE ecom_orders (order_id TEXT PRIMARY KEY, customer_id TEXT, qty INTEGER, note TEXT,
                                   order_status TEXT);
         INSERT INTO ecom_orders VALUES ('o1', 'c1', 5, 'n1', 'shipped'), ('o2', 'c2', 1, 'n2', 'shipped'),
           ('o3', 'c3', 2, 'n3', 'canceled'), ('o4', 'c4', 3, 'n4', 'canceled'),
           ('o5', 'c1', 4, 'n5', 'delivered'), ('o6', 'c2', 6, NULL, NULL);",
    );

    let _engine = env.start_engine();
    let code = std::fs::read_to_string(env.data_dir().join("access_code")).expect("the engine's access code");
    let home = env.path("home");
    std::fs::create_dir_all(home.join(".tapflow")).expect("home");
    std::fs::write(
        home.join(".tapflow/config.ini"),
        format!("[backend]\nserver = {}\naccess_code = {}\n", env.server(), code.trim()),
    )
    .expect("config.ini");
    let driver = env.path("drive_tapflow.py");
    std::fs::write(&driver, DRIVER).expect("driver");

    let out = Command::new("timeout")
        .arg("180")
        .arg(&python)
        .arg(&driver)
        .arg(&src)
        .arg(&dst)
        .env("HOME", &home)
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("PYTHONPATH")
        .current_dir(&env.dir)
        .output()
        .expect("run the Python client");
    let stdout = strip_ansi(&String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status.code());
    assert!(out.status.success(), "the client failed:\n{all}");

    let expect = |key: &str, value: &str| {
        assert_eq!(marker(&stdout, key).as_deref(), Some(format!("{key} {value}").as_str()), "{all}");
    };
    let has = |text: &str| assert!(stdout.contains(text), "missing {text:?} in:\n{all}");
    expect("login", "True True");
    expect("save_src", "True");
    expect("save_dst", "True");
    expect("status_src", "ready");
    expect("use", "True");
    expect("flow_saved", "True");
    expect("preview", r#"[{"customer_id": "c1", "order_id": "o1", "qty": 5, "status": "shipped", "y": 1}]"#);
    has("preview view took");
    expect("flow_status", "running");
    expect("after_stop", "stop");
    expect("flows_left", "0");
    assert!(stdout.lines().any(|l| l == "@@ done"), "the driver ran to the end:\n{all}");
    has("1.      SQLite");
    has("save datasource PySrc success");
    has("load schema status: finished");
    has("datasource switch to: PySrc");
    has("\"order_id\": \"TEXT primary_key unique\"");
    has("table ecom_orders has 6 records");
    has("\"order_status\": \"shipped\"");
    has("datasource switch to: PyDst");
    has("table orders_copy has 4 records");
    has("\"status\": \"canceled\"");
    has("table orders_copy has 6 records");
    has("Flow current status is: running");
    has("Initial sync completed");
    has("Task stopped successfully");
    has("Task deleted successfully");
    for name in ["PySrc", "PyDst"] {
        assert!(stdout.lines().any(|l| l.contains("ready") && l.contains(name)), "show dbs lists {name}:\n{all}");
    }
    let flows: Vec<&str> = stdout.lines().filter(|l| l.contains(": pyflow ")).collect();
    assert!(flows.len() >= 2, "show flows and show flows like list pyflow:\n{all}");
    assert!(flows.iter().all(|l| l.contains("running") && l.contains("sync/initial_sync+cdc")), "{all}");

    // exclude, rename, js and filter applied to the snapshot and to the changes.
    let cols: Vec<String> =
        query(&dst, "SELECT name FROM pragma_table_info('orders_copy')").into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(cols.len(), 5, "{cols:?}");
    for c in ["order_id", "customer_id", "qty", "status", "y"] {
        assert!(cols.iter().any(|x| x == c), "column {c} in {cols:?}");
    }
    let rows = query(&dst, "SELECT order_id, qty, status, y FROM orders_copy ORDER BY order_id");
    let want: Vec<Vec<String>> = [
        ["o1", "5", "shipped", "1"],
        ["o2", "9", "shipped", "1"],
        ["o4", "3", "canceled", "1"],
        ["o5", "4", "delivered", "1"],
        ["o6", "6", "NULL", "1"],
        ["o7", "7", "created", "1"],
    ]
    .iter()
    .map(|r| r.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(rows, want);
}
