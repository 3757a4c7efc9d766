//! A source's own options, from every source database into SQLite: TapFlow's
//! `read_from(…, #{ filter })` pushed down into the snapshot (the rows read say so) and
//! followed through CDC (an update leaving the filter deletes the row, one entering it
//! writes it, an insert outside it never arrives), and `#{ query }`, a snapshot-only source.

use crate::engine_mongo::{Driver, mongo_uri};
use crate::engine_mysql::my;
use crate::engine_postgres::pg;
use crate::harness::{Env, exec, query, wait_until};
use std::time::Duration;

const FILTER: &str = "status = 'delivered' and price > 10";

/// Runs the filter flow from `source` (a saved DataSource "S" holding `orders`), checks the
/// snapshot and the rows it read, applies `changes`, checks CDC.
fn run_filter(kind: &str, create: &str, key: &str, pushed_rows: u64, changes: &dyn Fn()) {
    let env = Env::new(&format!("srcfilter-{kind}"));
    let dst = env.path("dst.sqlite");
    let _engine = env.start_engine();
    let script = format!(
        r#"{create}
DataSource("sqlite", "T", #{{ database: "{}" }}).save();
Flow("filtered").read_from("S.orders", #{{ filter: "{FILTER}" }}).write_to("T.orders").save().start();
Flow("filtered").wait_initial_sync();"#,
        dst.display()
    );
    env.script("f.rhai", &script).ok();
    let ids = || query(&dst, &format!("SELECT CAST({key} AS INTEGER) FROM orders ORDER BY 1")).concat();
    assert_eq!(ids(), vec!["1", "4"], "{kind}: the snapshot holds the rows that pass");
    let stats = env.tap(&["--json", "-c", "stats filtered"]).stdout;
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap_or_default();
    assert_eq!(
        stats["snapshotRowTotal"],
        serde_json::json!(pushed_rows),
        "{kind}: rows read by the pushed-down filter: {stats}"
    );
    // A preview reads what a start reads: the filter applied.
    let pv = env.script(
        "pv.rhai",
        &format!(r#"Flow("pv").read_from("S.orders", #{{ filter: "{FILTER}" }}).write_to("T.pv").preview(10);"#),
    );
    pv.ok();
    assert!(pv.stdout.contains("delivered") && !pv.stdout.contains("shipped"), "{kind}: {}", pv.stdout);
    let priced: Vec<&str> = pv.stdout.lines().filter(|l| l.trim_start().starts_with("\"price\"")).collect();
    assert_eq!(priced.len(), 2, "{kind}: the two rows that pass: {}", pv.stdout);
    changes();
    assert!(
        wait_until(Duration::from_secs(30), || ids() == vec!["2", "4", "6"]),
        "{kind}: after CDC (1 left the filter, 2 entered it, 5 never passed, 6 did): {:?}",
        ids()
    );
}

#[test]
fn a_source_filter_from_sqlite() {
    let env = Env::new("srcfilter-sqlite-src");
    let src = env.path("src.sqlite");
    exec(
        &src,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT, price REAL);
         INSERT INTO orders VALUES (1, 'delivered', 20), (2, 'delivered', 5), (3, 'shipped', 50), (4, 'delivered', 11.5);",
    );
    let create = format!(r#"DataSource("sqlite", "S", #{{ database: "{}" }}).save();"#, src.display());
    run_filter("sqlite", &create, "id", 2, &|| {
        exec(
            &src,
            "UPDATE orders SET price = 1 WHERE id = 1; UPDATE orders SET price = 30 WHERE id = 2;
             INSERT INTO orders VALUES (5, 'shipped', 99), (6, 'delivered', 12);",
        )
    });
}

#[test]
fn a_source_filter_from_postgres() {
    let p = pg();
    let schema = format!("sf_{}", std::process::id());
    p.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.orders (id int PRIMARY KEY, status text, price numeric(10,2));
         INSERT INTO {schema}.orders VALUES (1, 'delivered', 20), (2, 'delivered', 5), (3, 'shipped', 50), (4, 'delivered', 11.5);"
    ));
    run_filter("postgres", &p.datasource("S", &schema), "id", 2, &|| {
        p.psql(&format!(
            "UPDATE {schema}.orders SET price = 1 WHERE id = 1; UPDATE {schema}.orders SET price = 30 WHERE id = 2;
             INSERT INTO {schema}.orders VALUES (5, 'shipped', 99), (6, 'delivered', 12);"
        ));
    });
}

#[test]
fn a_source_filter_from_mysql() {
    let m = my();
    let db = format!("sf_{}", std::process::id());
    m.sql("mysql", &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
    m.sql(
        &db,
        "CREATE TABLE orders (id INT PRIMARY KEY, status VARCHAR(20), price DECIMAL(10,2));
         INSERT INTO orders VALUES (1, 'delivered', 20), (2, 'delivered', 5), (3, 'shipped', 50), (4, 'delivered', 11.5);",
    );
    // MySQL compares decimals with text loosely, so only the status is pushed down: 3 rows read.
    run_filter("mysql", &m.datasource("S", &db, &m.user, &m.password), "id", 3, &|| {
        m.sql(
            &db,
            "UPDATE orders SET price = 1 WHERE id = 1; UPDATE orders SET price = 30 WHERE id = 2;
             INSERT INTO orders VALUES (5, 'shipped', 99), (6, 'delivered', 12);",
        );
    });
}

#[test]
fn a_source_filter_from_mongodb() {
    use mongodb::bson::doc;
    let db = format!("sf_{}", std::process::id());
    let d = Driver::new(&db, "orders");
    d.run(d.coll.client().database(&db).drop());
    d.run(d.coll.insert_many([
        doc! {"_id": 1_i64, "status": "delivered", "price": 20.0},
        doc! {"_id": 2_i64, "status": "delivered", "price": 5.0},
        doc! {"_id": 3_i64, "status": "shipped", "price": 50.0},
        doc! {"_id": 4_i64, "status": "delivered", "price": 11.5},
    ]));
    let create = format!(r#"DataSource("mongodb", "S", #{{ uri: "{}" }}).save();"#, mongo_uri(&db));
    run_filter("mongodb", &create, "_id", 2, &|| {
        d.run(d.coll.update_one(doc! {"_id": 1_i64}, doc! {"$set": {"price": 1.0}}));
        d.run(d.coll.update_one(doc! {"_id": 2_i64}, doc! {"$set": {"price": 30.0}}));
        d.run(d.coll.insert_many([
            doc! {"_id": 5_i64, "status": "shipped", "price": 99.0},
            doc! {"_id": 6_i64, "status": "delivered", "price": 12.0},
        ]));
    });
}

#[test]
fn a_query_source_copies_its_rows_once_and_refuses_cdc() {
    let env = Env::new("srcquery");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(
        &src,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT, price REAL);
         INSERT INTO orders VALUES (1, 'delivered', 20), (2, 'delivered', 5), (3, 'shipped', 50);",
    );
    let p = pg();
    let schema = format!("sq_{}", std::process::id());
    p.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.orders (id int PRIMARY KEY, status text, price numeric(10,2));
         INSERT INTO {schema}.orders VALUES (1, 'delivered', 20), (2, 'delivered', 5), (3, 'shipped', 50);"
    ));
    let _engine = env.start_engine();
    let script = format!(
        r#"DataSource("sqlite", "S", #{{ database: "{}" }}).save();
{}
DataSource("sqlite", "T", #{{ database: "{}" }}).save();
let q = "SELECT id, upper(status) AS status, price * 2 AS doubled FROM orders WHERE price > 10";
Flow("q1").read_from("S.orders", #{{ query: q }}).write_to("T.from_sqlite").save().start();
Flow("q2").read_from("P.orders", #{{ query: q, filter: "doubled >= 100" }}).write_to("T.from_pg").save().start();"#,
        src.display(),
        p.datasource("P", &schema),
        dst.display()
    );
    let run = env.script("q.rhai", &script);
    run.ok();
    assert!(run.stdout.contains("copies its rows once (full_sync)"), "{}", run.stdout);
    let done = |f: &str| env.tap(&["-c", &format!("status {f}")]).stdout.contains("current status is: complete");
    assert!(wait_until(Duration::from_secs(30), || done("q1") && done("q2")), "both flows end complete");
    assert_eq!(
        query(&dst, "SELECT id, status, doubled FROM from_sqlite ORDER BY id"),
        vec![vec!["1", "DELIVERED", "40"], vec!["3", "SHIPPED", "100"]]
    );
    assert_eq!(
        query(&dst, "SELECT id, status, CAST(doubled AS REAL) FROM from_pg ORDER BY id"),
        vec![vec!["3", "SHIPPED", "100"]]
    );
    // A query's numeric columns keep every digit (PostgreSQL into PostgreSQL).
    let big = env.script(
        "big.rhai",
        &format!(
            r#"{}
Flow("q7").read_from("P.orders", #{{ query: "SELECT id, 123456789012345678.91::numeric AS big FROM orders WHERE id = 3" }})
    .write_to("P.bigs").save().start();"#,
            p.datasource("P", &schema)
        ),
    );
    big.ok();
    let got = || p.psql(&format!("SELECT big::text FROM {schema}.bigs")).trim().to_string();
    assert!(
        wait_until(Duration::from_secs(30), || p
            .psql(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}' AND tablename = 'bigs'"))
            .trim()
            == "1"
            && got() == "123456789012345678.91"),
        "the query's decimal arrives exact"
    );
    // Following a query's changes is refused, in the builder and at save.
    let bad = env
        .script("bad.rhai", r#"Flow("q3").read_from("S.orders", #{ query: "SELECT * FROM orders" }).include_cdc();"#);
    assert!(bad.code != 0 && bad.stderr.contains("no change stream"), "{}", bad.stderr);
    let mdb = format!("sq_{}", std::process::id());
    let d = Driver::new(&mdb, "orders");
    d.run(d.coll.client().database(&mdb).drop());
    d.run(d.coll.insert_one(mongodb::bson::doc! {"_id": 1_i64}));
    let mongo = format!(
        r#"DataSource("mongodb", "M", #{{ uri: "{}" }}).save();
Flow("q5").read_from("M.orders", #{{ query: "SELECT 1" }}).write_to("T.m").save();"#,
        mongo_uri(&mdb)
    );
    let bad = env.script("bad3.rhai", &mongo);
    assert!(bad.code != 0 && bad.stderr.contains("which M (MongoDB) does not run"), "{}", bad.stderr);
    // A map that is not read_from's keywords is its `setting`, merged into the node (and so
    // checked at save like every node field).
    let bad =
        env.script("bad4.rhai", r#"Flow("q6").read_from("S.orders", #{ bogusField: 1 }).write_to("T.x").save();"#);
    assert!(bad.code != 0 && bad.stderr.contains("field bogusField (1)"), "{}", bad.stderr);
    let bad = env.script("bad2.rhai", r#"Flow("q4").read_from("S.orders", #{ filter: "price > 1 or id = 2" });"#);
    assert!(bad.code != 0 && bad.stderr.contains("add .filter("), "{}", bad.stderr);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[test]
fn a_cdc_only_flow_starts_at_a_past_time_found_in_the_mysql_binlog_and_postgres_refuses_one() {
    let m = my();
    let env = Env::new("cdc-start");
    let db = format!("cs_{}", std::process::id());
    m.sql("mysql", &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
    m.sql(&db, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, 'before');");
    // The start time: a whole second at least a second after row 1 (the binlog counts seconds).
    let at = (now_ms() / 1000 + 2) * 1000;
    std::thread::sleep(Duration::from_millis((at - now_ms()).max(0) as u64 + 300));
    m.sql(&db, "INSERT INTO t VALUES (2, 'after'); UPDATE t SET v = 'changed' WHERE id = 2;");
    let dst = env.path("dst.sqlite");
    let _engine = env.start_engine();
    let script = format!(
        r#"{}
DataSource("sqlite", "T", #{{ database: "{}" }}).save();
Flow("from_then").read_from("My.t").only_cdc({at}).write_to("T.t").save().start();"#,
        m.datasource("My", &db, &m.user, &m.password),
        dst.display()
    );
    env.script("s.rhai", &script).ok();
    let rows = || {
        let has = dst.exists() && query(&dst, "SELECT count(*) FROM sqlite_master WHERE name = 't'")[0][0] == "1";
        if has { query(&dst, "SELECT id, v FROM t ORDER BY id") } else { Vec::new() }
    };
    assert!(
        wait_until(Duration::from_secs(30), || rows() == vec![vec!["2", "changed"]]),
        "the changes since the start time, not row 1: {:?}",
        rows()
    );
    m.sql(&db, "INSERT INTO t VALUES (3, 'later');");
    assert!(wait_until(Duration::from_secs(30), || rows().len() == 2), "and what follows: {:?}", rows());
    // PostgreSQL's slot starts where it is created: a past time is refused, and the flow says so.
    let p = pg();
    let schema = format!("cs_{}", std::process::id());
    p.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id int PRIMARY KEY);"
    ));
    let script = format!(
        r#"{}
Flow("pg_then").read_from("P.t").start_at("2024-01-01 08:00:00", "+8").write_to("T.pg").save();
start("pg_then");"#,
        p.datasource("P", &schema)
    );
    let _ = env.script("p.rhai", &script);
    let status = || env.tap(&["-c", "status pg_then"]).stdout;
    assert!(wait_until(Duration::from_secs(30), || status().contains("current status is: error")), "{}", status());
    assert!(
        status().contains("cannot start CDC of connection") && status().contains("2024-01-01T00:00:00"),
        "{}",
        status()
    );
    // A start time with a snapshot is refused at save: it is for CDC-only flows.
    let bad =
        env.script("b.rhai", r#"Flow("both").read_from("My.t").start_at(0).include_cdc().write_to("T.b").save();"#);
    assert!(bad.code != 0 && bad.stderr.contains("a start time is for a CDC-only flow"), "{}", bad.stderr);
}

#[test]
fn unwind_turns_mongodb_arrays_into_rows_and_follows_arrays_that_shrink_or_go() {
    use mongodb::bson::doc;
    let db = format!("uw_{}", std::process::id());
    let d = Driver::new(&db, "orders");
    d.run(d.coll.client().database(&db).drop());
    d.run(d.coll.insert_many([
        doc! {"_id": 1_i64, "who": "ana", "items": [{"sku": "a", "qty": 1_i64}, {"sku": "b", "qty": 2_i64}, {"sku": "c", "qty": 3_i64}]},
        doc! {"_id": 2_i64, "who": "bo", "items": []},
    ]));
    let env = Env::new("unwind");
    let dst = env.path("dst.sqlite");
    let _engine = env.start_engine();
    let script = format!(
        r#"DataSource("mongodb", "M", #{{ uri: "{}" }}).save();
DataSource("sqlite", "T", #{{ database: "{}" }}).save();
Flow("uw").read_from("M.orders").flat_unwind("items", #{{ array_elem: "OBJECT" }}).write_to("T.lines").save().start();
Flow("uw").wait_initial_sync();"#,
        mongo_uri(&db),
        dst.display()
    );
    env.script("u.rhai", &script).ok();
    let rows = || {
        query(
            &dst,
            "SELECT CAST(_id AS INTEGER), _index, who, items_sku, CAST(items_qty AS INTEGER) FROM lines ORDER BY 1, 2",
        )
    };
    assert_eq!(
        rows(),
        vec![
            vec!["1", "0", "ana", "a", "1"],
            vec!["1", "1", "ana", "b", "2"],
            vec!["1", "2", "ana", "c", "3"],
            vec!["2", "0", "bo", "NULL", "NULL"],
        ],
        "one row per element, keyed by the document and the index; an empty array keeps one row"
    );
    let pk = query(&dst, "SELECT name FROM pragma_table_info('lines') WHERE pk > 0 ORDER BY pk").concat();
    assert_eq!(pk, vec!["_id", "_index"]);
    // MongoDB sends no before image: the rows past a shrunk array, and a deleted document's,
    // go by the marks the engine keeps.
    d.run(d.coll.update_one(doc! {"_id": 1_i64}, doc! {"$set": {"items": [{"sku": "z", "qty": 9_i64}]}}));
    d.run(d.coll.delete_one(doc! {"_id": 2_i64}));
    let want = vec![vec!["1", "0", "ana", "z", "9"]];
    assert!(wait_until(Duration::from_secs(30), || rows() == want), "after CDC: {:?}", rows());
    // A stop and a start (the marks are kept with the checkpoint), then the last element goes too.
    env.tap(&["-c", "stop uw"]).ok();
    env.script("again.rhai", r#"start("uw");"#).ok();
    d.run(d.coll.update_one(doc! {"_id": 1_i64}, doc! {"$set": {"items": []}}));
    let want = vec![vec!["1", "0", "ana", "NULL", "NULL"]];
    assert!(wait_until(Duration::from_secs(30), || rows() == want), "after the restart: {:?}", rows());
}

#[test]
fn source_and_sink_methods_emit_tapflow_fields_and_what_the_engine_does_not_do_is_refused_at_save() {
    let env = Env::new("srcsink-methods");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(&src, "CREATE TABLE orders (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO orders VALUES (1, 'a');");
    let _engine = env.start_engine();
    let head = format!(
        r#"DataSource("sqlite", "S", #{{ database: "{}" }}).save();
DataSource("sqlite", "T", #{{ database: "{}" }}).save();
"#,
        src.display(),
        dst.display()
    );
    let ok = env.script(
        "ok.rhai",
        &(head.clone()
            + r#"let f = Flow("m").read_from(Source("S", "orders").disableDDL().initial_read_threads(2))
                 .write_to(Sink("T", "orders").set_write_wait(100).config(#{ writeStrategy: "updateOrInsert" }));
             print(f.show());
             f.save().start();
             Flow("m").wait_initial_sync();"#),
    );
    ok.ok();
    assert!(ok.stdout.contains(".disableDDL().config(#{ nodeConfig: #{ batchReadThreadSize: 2 } })"), "{}", ok.stdout);
    assert_eq!(query(&dst, "SELECT id, v FROM orders"), vec![vec!["1", "a"]]);
}

#[test]
fn a_cdc_only_flow_starts_at_a_past_cluster_time_from_mongodb() {
    use mongodb::bson::doc;
    let db = format!("cst_{}", std::process::id());
    let d = Driver::new(&db, "t");
    d.run(d.coll.client().database(&db).drop());
    d.run(d.coll.insert_one(doc! {"_id": 1_i64, "v": "before"}));
    let at = (now_ms() / 1000 + 2) * 1000;
    std::thread::sleep(Duration::from_millis((at - now_ms()).max(0) as u64 + 300));
    d.run(d.coll.insert_one(doc! {"_id": 2_i64, "v": "after"}));
    let env = Env::new("cdc-start-mongo");
    let dst = env.path("dst.sqlite");
    let _engine = env.start_engine();
    let script = format!(
        r#"DataSource("mongodb", "M", #{{ uri: "{}" }}).save();
DataSource("sqlite", "T", #{{ database: "{}" }}).save();
Flow("mfrom").read_from("M.t").only_cdc({at}).write_to("T.t").save().start();"#,
        mongo_uri(&db),
        dst.display()
    );
    env.script("s.rhai", &script).ok();
    let rows = || {
        let has = dst.exists() && query(&dst, "SELECT count(*) FROM sqlite_master WHERE name = 't'")[0][0] == "1";
        if has { query(&dst, "SELECT CAST(_id AS INTEGER), v FROM t ORDER BY 1") } else { Vec::new() }
    };
    assert!(
        wait_until(Duration::from_secs(30), || rows() == vec![vec!["2", "after"]]),
        "the change since the start time, not document 1: {:?} ({})",
        rows(),
        env.tap(&["-c", "status mfrom"]).stdout
    );
}

#[test]
fn a_mongodb_target_refusing_a_duplicate_is_a_change_skip_error_event_by_limit_skips() {
    use mongodb::bson::doc;
    let db = format!("rj_{}", std::process::id());
    let d = Driver::new(&db, "c");
    d.run(d.coll.client().database(&db).drop());
    d.run(
        d.coll.create_index(
            mongodb::IndexModel::builder()
                .keys(doc! {"code": 1})
                .options(mongodb::options::IndexOptions::builder().unique(true).build())
                .build(),
        ),
    );
    let env = Env::new("mongo-rejected");
    let src = env.path("src.sqlite");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, code TEXT); INSERT INTO t VALUES (1, 'x'), (2, 'x'), (3, 'y');",
    );
    let _engine = env.start_engine();
    let script = format!(
        r#"DataSource("sqlite", "S", #{{ database: "{}" }}).save();
DataSource("mongodb", "M", #{{ uri: "{}" }}).save();
Flow("rj").read_from("S.t").write_to("M.c").skip_error_event_by_limit(1).save().start();
Flow("rj").wait_initial_sync();"#,
        src.display(),
        mongo_uri(&db)
    );
    env.script("r.rhai", &script).ok();
    let n = d.run(d.coll.count_documents(doc! {}));
    assert_eq!(n, 2, "the duplicate was skipped, the others written");
    let logs = env.tap(&["-c", "logs rj"]).stdout;
    assert!(logs.contains("skipped a change (1 of at most 1)"), "{logs}");
}

#[test]
fn type_and_time_processors_from_mysql_into_postgres_type_the_target_columns() {
    let m = my();
    let p = pg();
    let tag = format!("tp_{}", std::process::id());
    m.sql("mysql", &format!("DROP DATABASE IF EXISTS {tag}; CREATE DATABASE {tag}"));
    m.sql(
        &tag,
        "CREATE TABLE t (id INT PRIMARY KEY, price VARCHAR(10), at DATETIME, note VARCHAR(20));
         INSERT INTO t VALUES (1, '10', '2024-01-01 23:30:00', 'n1');",
    );
    p.psql(&format!("DROP SCHEMA IF EXISTS {tag} CASCADE; CREATE SCHEMA {tag};"));
    let env = Env::new("types-my-pg");
    let _engine = env.start_engine();
    let script = format!(
        r#"{}
{}
Flow("tp").read_from("My.t").type_adjust([["price", "bigint"]]).adjust_time(2, ["datetime"]).exclude_type("varchar")
    .addTimeField("synced_at").write_to("P.t").save().start();
Flow("tp").wait_initial_sync();"#,
        m.datasource("My", &tag, &m.user, &m.password),
        p.datasource("P", &tag)
    );
    env.script("t.rhai", &script).ok();
    let cols = p.psql(&format!(
        "SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = '{tag}' AND table_name = 't'"
    ));
    assert_eq!(
        cols.trim(),
        "id:bigint,price:bigint,at:timestamp without time zone,synced_at:timestamp with time zone",
        "the converted column typed as its new type, the varchar gone, the stamp zoned"
    );
    assert_eq!(p.psql(&format!("SELECT id, price, at FROM {tag}.t")).trim(), "1|10|2024-01-02 01:30:00");
    m.sql(&tag, "INSERT INTO t VALUES (2, '20', '2024-06-01 08:00:00', 'n2');");
    let rows = || p.psql(&format!("SELECT count(*) FROM {tag}.t WHERE price = 20 AND at = '2024-06-01 10:00:00'"));
    assert!(wait_until(Duration::from_secs(30), || rows().trim() == "1"), "after CDC: {}", rows());
}
