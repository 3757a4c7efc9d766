//! A source's DDL setting, from each SQL source: with `enableDDL()` a column added to the
//! source reaches the target typed as the source declares it, before the rows that use it
//! (from MySQL, with no row changed at all); disabled, the default, it comes with the first
//! row that carries it, typed from its value; other DDL stops the flow, and `ddlConfiguration`
//! `ERROR` stops it on an added column too.

use crate::engine_mysql::my;
use crate::engine_postgres::pg;
use crate::harness::{Env, exec, query, wait_until};
use std::time::Duration;

#[test]
fn enable_ddl_from_mysql_adds_the_column_to_postgres_before_any_row_uses_it() {
    let m = my();
    let p = pg();
    let tag = format!("ddl_{}", std::process::id());
    m.sql("mysql", &format!("DROP DATABASE IF EXISTS {tag}; CREATE DATABASE {tag}"));
    m.sql(&tag, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, 'a');");
    p.psql(&format!("DROP SCHEMA IF EXISTS {tag} CASCADE; CREATE SCHEMA {tag};"));
    let env = Env::new("ddl-my-pg");
    let _engine = env.start_engine();
    let script = format!(
        r#"{}
{}
Flow("ddl").read_from(Source("My", "t").enableDDL()).write_to("P.t").save().start();
Flow("ddl").wait_initial_sync();"#,
        m.datasource("My", &tag, &m.user, &m.password),
        p.datasource("P", &tag)
    );
    env.script("d.rhai", &script).ok();
    m.sql(&tag, "ALTER TABLE t ADD COLUMN amount DECIMAL(10,2)");
    let column = || {
        p.psql(&format!(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = '{tag}' AND table_name = 't' AND column_name = 'amount'"
        ))
        .trim()
        .to_string()
    };
    assert!(
        wait_until(Duration::from_secs(30), || column() == "numeric"),
        "the added column, typed, with no row changed: {:?}",
        column()
    );
    m.sql(&tag, "INSERT INTO t VALUES (2, 'b', 1.50)");
    let amount = || p.psql(&format!("SELECT amount FROM {tag}.t WHERE id = 2")).trim().to_string();
    assert!(wait_until(Duration::from_secs(30), || amount() == "1.50"), "{:?}", amount());
    let logs = env.tap(&["-c", "logs ddl"]).stdout;
    assert!(logs.contains("gained column(s) amount; added to target t"), "{logs}");
    // Other DDL stops the flow, saying what happened.
    m.sql(&tag, "ALTER TABLE t DROP COLUMN v");
    let status = || env.tap(&["-c", "status ddl"]).stdout;
    assert!(wait_until(Duration::from_secs(30), || status().contains("current status is: error")), "{}", status());
    assert!(status().contains("table t was altered beyond added columns"), "{}", status());
}

#[test]
fn enable_ddl_from_postgres_types_an_added_column_as_declared_and_disabled_types_it_from_values() {
    let p = pg();
    let tag = format!("ddlp_{}", std::process::id());
    p.psql(&format!(
        "DROP SCHEMA IF EXISTS {tag} CASCADE; CREATE SCHEMA {tag}; CREATE TABLE {tag}.t (id int PRIMARY KEY, v text);
         INSERT INTO {tag}.t VALUES (1, 'a');"
    ));
    let env = Env::new("ddl-pg-sqlite");
    let (on, off) = (env.path("on.sqlite"), env.path("off.sqlite"));
    let _engine = env.start_engine();
    let script = format!(
        r#"{}
DataSource("sqlite", "On", #{{ database: "{}" }}).save();
DataSource("sqlite", "Off", #{{ database: "{}" }}).save();
Flow("on").read_from(Source("P", "t").enableDDL()).write_to("On.t").save().start();
Flow("off").read_from(Source("P", "t").disableDDL()).write_to("Off.t").save().start();
Flow("on").wait_initial_sync();
Flow("off").wait_initial_sync();"#,
        p.datasource("P", &tag),
        on.display(),
        off.display()
    );
    env.script("d.rhai", &script).ok();
    p.psql(&format!("ALTER TABLE {tag}.t ADD COLUMN n bigint; INSERT INTO {tag}.t VALUES (2, 'b', NULL);"));
    let declared =
        |db: &std::path::Path| query(db, "SELECT type FROM pragma_table_info('t') WHERE name = 'n'").concat().join("");
    let two = |db: &std::path::Path| query(db, "SELECT count(*) FROM t WHERE id = 2")[0][0] == "1";
    assert!(wait_until(Duration::from_secs(30), || two(&on) && two(&off)), "the row arrives in both");
    assert_eq!(declared(&on), "INTEGER", "enableDDL: typed as the source declares it");
    assert_eq!(declared(&off), "TEXT", "disabled: typed from the row's value (a null)");
}

#[test]
fn ddl_from_sqlite_enabled_adds_the_column_and_error_stops_the_flow() {
    let env = Env::new("ddl-sqlite");
    let (src, dst, dst2) = (env.path("src.sqlite"), env.path("dst.sqlite"), env.path("dst2.sqlite"));
    exec(&src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');");
    let _engine = env.start_engine();
    let script = format!(
        r#"DataSource("sqlite", "S", #{{ database: "{}" }}).save();
DataSource("sqlite", "T", #{{ database: "{}" }}).save();
DataSource("sqlite", "T2", #{{ database: "{}" }}).save();
Flow("sync").read_from(Source("S", "t").enableDDL()).rename_fields(#{{ n: "renamed" }}).write_to("T.t").save().start();
Flow("strict").read_from("S.t", #{{ setting: #{{ enableDDL: true, ddlConfiguration: "ERROR" }} }}).write_to("T2.t").save().start();
Flow("sync").wait_initial_sync();
Flow("strict").wait_initial_sync();"#,
        src.display(),
        dst.display(),
        dst2.display()
    );
    env.script("d.rhai", &script).ok();
    exec(&src, "ALTER TABLE t ADD COLUMN n REAL; INSERT INTO t VALUES (2, 'b', NULL);");
    let declared = || query(&dst, "SELECT type FROM pragma_table_info('t') WHERE name = 'renamed'").concat().join("");
    assert!(
        wait_until(Duration::from_secs(30), || declared() == "REAL"),
        "the added column, renamed as the flow renames it, typed: {:?}",
        declared()
    );
    let status = || env.tap(&["-c", "status strict"]).stdout;
    assert!(wait_until(Duration::from_secs(30), || status().contains("current status is: error")), "{}", status());
    assert!(status().contains("its DDL setting is ERROR"), "{}", status());
}
