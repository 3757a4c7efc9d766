//! Lookups on the embedded engine: the seed tutorial's five-lookup wide table and its changes
//! (SQLite source and target, documents as JSON columns), and randomized runs of interleaved
//! changes to all six tables — on SQLite → SQLite, and on MariaDB → MongoDB killed at failpoints
//! in the tables' copy and in the documents' build, and SIGKILLed in CDC — after which the documents equal a from-scratch
//! rebuild of the same data.

use crate::harness::{Env, exec, query, wait_until};
use std::time::Duration;

fn flow(name: &str, target: &str, full_sync: bool) -> String {
    format!(
        r#"let f = Flow("{name}").read_from("Shop.ecom_orders");
f.lookup("Shop.ecom_customers", #{{ path: "customer_info", type: "object", relation: [["customer_id", "customer_id"]] }});
f.lookup("Shop.ecom_order_payments", #{{ path: "order_payments", type: "array", relation: [["order_id", "order_id"]] }});
f.lookup("Shop.ecom_order_items", #{{ path: "order_items", type: "array", relation: [["order_id", "order_id"]] }});
f.lookup("Shop.ecom_products", #{{ path: "order_items.product", type: "object", relation: [["product_id", "order_items.product_id"]] }});
f.lookup("Shop.ecom_sellers", #{{ path: "order_items.seller", type: "object", relation: [["seller_id", "order_items.seller_id"]] }});
f.write_to("Docs.{target}");
{}
f.save();
f.start();
f.wait_initial_sync();
"#,
        if full_sync { "f.full_sync();" } else { "" }
    )
}

fn setup(env: &Env, rows: usize) {
    let script = format!(
        r#"let path = demo({rows});
DataSource("sqlite", "Shop", #{{ database: path }}).type("source").save();
DataSource("sqlite", "Docs", #{{ database: "docs.sqlite" }}).type("target").save();"#
    );
    env.script("setup.rhai", &script).ok();
}

fn docs(env: &Env, table: &str) -> Vec<Vec<String>> {
    // By name: the two tables may have created their columns in different orders.
    let cols = "order_id, customer_id, order_status, order_purchase_timestamp, order_approved_at, \
                order_delivered_carrier_date, order_delivered_customer_date, order_estimated_delivery_date, \
                customer_info, order_payments, order_items";
    query(&env.path("docs.sqlite"), &format!("SELECT {cols} FROM \"{table}\" ORDER BY order_id"))
}

#[test]
fn the_tutorial_wide_table_follows_every_change() {
    let env = Env::new("lookup-tutorial");
    setup(&env, 200);
    env.script("flow.rhai", &flow("Order_SingleView_Sync", "orderSingleView", false)).ok();
    let src = env.data_dir().join("demo.sqlite");
    exec(
        &src,
        "INSERT INTO ecom_customers VALUES ('CUST12345', 'UNIQUE_CUST_00123', '10001', 'New York', 'NY');
         INSERT INTO ecom_orders (order_id, customer_id, order_status, order_purchase_timestamp, order_approved_at, order_estimated_delivery_date)
           VALUES ('ORD789654', 'CUST12345', 'pending', datetime('now'), datetime('now'), '2024-11-10');
         INSERT INTO ecom_order_items VALUES ('ORD789654', 1, 'PROD56789', 'SELL34567', '2024-11-05', 199.99, 15.0);
         INSERT INTO ecom_products VALUES ('PROD56789', 'electronics', 1200, 20, 10, 8);
         INSERT INTO ecom_sellers VALUES ('SELL34567', '90001', 'Los Angeles', 'CA');
         INSERT INTO ecom_order_payments VALUES ('ORD789654', 1, 'credit_card', 1, 199.99);
         UPDATE ecom_orders SET order_status = 'shipped', order_delivered_carrier_date = datetime('now') WHERE order_id = 'ORD789654';
         UPDATE ecom_order_payments SET payment_value = 220.0, payment_installments = 2 WHERE order_id = 'ORD789654' AND payment_sequential = 1;
         UPDATE ecom_order_items SET price = 210.0, freight_value = 18.0 WHERE order_id = 'ORD789654' AND order_item_id = 1;",
    );
    let dst = env.path("docs.sqlite");
    let doc = || {
        query(
            &dst,
            "SELECT order_status, customer_info, order_payments, order_items FROM orderSingleView WHERE order_id = 'ORD789654'",
        )
    };
    let done = wait_until(Duration::from_secs(30), || {
        doc().first().is_some_and(|r| {
            r[0] == "shipped" && r[3].contains("\"price\":210") && r[2].contains("\"payment_value\":220")
        })
    });
    assert!(done, "the document follows: {:?}", doc());
    let r = &doc()[0];
    let payments: serde_json::Value = serde_json::from_str(&r[2]).expect("json");
    assert_eq!(
        payments,
        serde_json::json!([{"order_id": "ORD789654", "payment_sequential": 1, "payment_type": "credit_card", "payment_installments": 2, "payment_value": 220}])
    );
    let items: serde_json::Value = serde_json::from_str(&r[3]).expect("json");
    assert_eq!(items[0]["freight_value"], 18);
    assert_eq!(items[0]["product"]["product_category_name"], "electronics");
    assert_eq!(items[0]["seller"]["seller_city"], "Los Angeles");
    let customer: serde_json::Value = serde_json::from_str(&r[1]).expect("json");
    assert_eq!(customer["customer_city"], "New York");
    let n = query(&dst, "SELECT count(*) FROM orderSingleView")[0][0].clone();
    assert_eq!(n, "201");
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// SQL dialects of the random statements: SQLite's `INSERT OR REPLACE` / `UPDATE OR REPLACE`
/// are MySQL's `REPLACE` / `UPDATE IGNORE`.
fn random_statement_mysql(rng: &mut Lcg, ids: &[Vec<String>; 4]) -> String {
    random_statement(rng, ids)
        .replace("INSERT OR REPLACE INTO", "REPLACE INTO")
        .replace("UPDATE OR REPLACE", "UPDATE IGNORE")
}

fn random_statement(rng: &mut Lcg, ids: &[Vec<String>; 4]) -> String {
    let [orders, customers, products, sellers] = ids;
    let pick = |rng: &mut Lcg, v: &Vec<String>| v[rng.next(v.len() as u64) as usize].clone();
    let fresh = rng.next(1_000_000);
    match rng.next(14) {
        0 => format!(
            "UPDATE ecom_orders SET customer_id = '{}' WHERE order_id = '{}'",
            pick(rng, customers),
            pick(rng, orders)
        ),
        1 => format!("UPDATE ecom_orders SET customer_id = NULL WHERE order_id = '{}'", pick(rng, orders)),
        2 => format!(
            "UPDATE ecom_customers SET customer_city = 'city {fresh}' WHERE customer_id = '{}'",
            pick(rng, customers)
        ),
        3 => format!("DELETE FROM ecom_customers WHERE customer_id = '{}'", pick(rng, customers)),
        4 => format!(
            "INSERT OR REPLACE INTO ecom_customers VALUES ('{}', 'u{fresh}', '00000', 'reborn', 'SP')",
            pick(rng, customers)
        ),
        5 => format!(
            "INSERT OR REPLACE INTO ecom_order_items VALUES ('{}', {}, '{}', '{}', '2024-01-01', {}, 1.5)",
            pick(rng, orders),
            1 + rng.next(4),
            pick(rng, products),
            pick(rng, sellers),
            fresh % 500
        ),
        6 => format!(
            "UPDATE ecom_order_items SET product_id = '{}' WHERE order_id = '{}'",
            pick(rng, products),
            pick(rng, orders)
        ),
        7 => format!(
            "UPDATE OR REPLACE ecom_order_items SET order_id = '{}' WHERE order_id = '{}' AND order_item_id = 1",
            pick(rng, orders),
            pick(rng, orders)
        ),
        8 => format!("DELETE FROM ecom_order_items WHERE order_id = '{}'", pick(rng, orders)),
        9 => format!(
            "UPDATE ecom_products SET product_category_name = 'cat {fresh}' WHERE product_id = '{}'",
            pick(rng, products)
        ),
        10 => format!("DELETE FROM ecom_products WHERE product_id = '{}'", pick(rng, products)),
        11 => {
            format!("UPDATE ecom_sellers SET seller_city = 'town {fresh}' WHERE seller_id = '{}'", pick(rng, sellers))
        }
        12 => format!(
            "INSERT OR REPLACE INTO ecom_order_payments VALUES ('{}', {}, 'voucher', 1, {})",
            pick(rng, orders),
            1 + rng.next(3),
            fresh % 300
        ),
        _ => {
            if rng.next(2) == 0 {
                format!("DELETE FROM ecom_orders WHERE order_id = '{}'", pick(rng, orders))
            } else {
                format!(
                    "INSERT OR REPLACE INTO ecom_orders (order_id, customer_id, order_status) VALUES ('{}', '{}', 'created')",
                    pick(rng, orders),
                    pick(rng, customers)
                )
            }
        }
    }
}

#[test]
fn random_changes_to_all_six_tables_equal_a_rebuild_even_after_sigkill() {
    let env = Env::new("lookup-random");
    let mut engine = env.start_engine();
    setup(&env, 300);
    env.script("live.rhai", &flow("live", "live_docs", false)).ok();
    let src = env.data_dir().join("demo.sqlite");
    let col = |sql: &str| query(&src, sql).into_iter().map(|r| r[0].clone()).collect::<Vec<_>>();
    let ids = [
        col("SELECT order_id FROM ecom_orders ORDER BY order_id LIMIT 80"),
        col("SELECT customer_id FROM ecom_customers ORDER BY customer_id LIMIT 60"),
        col("SELECT product_id FROM ecom_products ORDER BY product_id LIMIT 30"),
        col("SELECT seller_id FROM ecom_sellers ORDER BY seller_id LIMIT 15"),
    ];
    let mut rng = Lcg(20261122);
    for round in 0..30 {
        let stmts: Vec<String> = (0..10).map(|_| random_statement(&mut rng, &ids)).collect();
        exec(&src, &format!("BEGIN; {}; COMMIT;", stmts.join("; ")));
        if round == 15 {
            engine.kill(); // changes keep arriving while the engine is down
        }
        if round == 20 {
            engine = env.start_engine();
        }
    }
    // A from-scratch build of the same data.
    env.script("rebuild.rhai", &flow("rebuild", "rebuilt_docs", true)).ok();
    let same = wait_until(Duration::from_secs(120), || docs(&env, "live_docs") == docs(&env, "rebuilt_docs"));
    if !same {
        let (a, b) = (docs(&env, "live_docs"), docs(&env, "rebuilt_docs"));
        let diff: Vec<_> = a.iter().zip(b.iter()).filter(|(x, y)| x != y).take(2).collect();
        panic!("live documents differ from a rebuild ({} vs {} rows): {diff:?}", a.len(), b.len());
    }
    drop(engine);
}

#[test]
fn the_embedded_wide_table_example_runs() {
    let env = Env::new("lookup-example");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wide_table_embedded.rhai");
    let run = env.tap(&["-f", example]);
    run.ok();
    assert!(run.stdout.contains("table orderSingleView has 1001 records"), "{}", run.stdout);
    let doc = query(
        &env.data_dir().join("wide_table.sqlite"),
        "SELECT order_status, json_extract(order_items, '$[0].price'), json_extract(order_payments, '$[0].payment_installments'),
                json_extract(order_items, '$[0].seller.seller_city') FROM orderSingleView WHERE order_id = 'ORD789654'",
    );
    assert_eq!(doc, vec![vec!["shipped".to_string(), "210".into(), "2".into(), "Los Angeles".into()]]);
}

/// The seed README's whole script, on the embedded engine: exclude, rename, a user function and
/// a lookup merged into the top level, then preview, copy, `use`, `peek`, `count`, `status`.
#[test]
fn the_seed_walkthrough_in_one_flow() {
    let env = Env::new("walkthrough");
    setup(&env, 50);
    let script = r#"
fn standardize(record) {
    if record.order_status == () || record.order_status == "" { record.order_status = "invalid"; }
    if record.order_status == "unavailable" { record.order_status = "undeliverable"; }
    record
}
let myflow = Flow("mysql_order_flow")
    .read_from("Shop.ecom_orders")
    .exclude("order_delivered_carrier_date", "order_delivered_customer_date")
    .rename_fields(#{ order_purchase_timestamp: "purchase_timestamp" })
    .rhai(standardize)
    .lookup("Shop.ecom_customers", #{ relation: [["customer_id", "customer_id"]] })
    .write_to("Docs.wide_orders_collection")
    .save();
myflow.preview(2);
myflow.start();
myflow.wait_initial_sync();
status("mysql_order_flow");
use_db("Docs");
count("wide_orders_collection");
peek("-n 1 wide_orders_collection");
let copied = myflow.copy();
print(copied.show());
"#;
    let run = env.script("walk.rhai", script);
    run.ok();
    assert!(run.stdout.contains("preview view took"), "{}", run.stdout);
    assert!(run.stdout.contains("table wide_orders_collection has 50 records"), "{}", run.stdout);
    assert!(run.stdout.contains("Copy flow 'mysql_order_flow' to 'mysql_order_flow - Copy' success"), "{}", run.stdout);
    let dst = env.path("docs.sqlite");
    let cols: Vec<String> = query(&dst, "SELECT name FROM pragma_table_info('wide_orders_collection')")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    for want in ["order_id", "purchase_timestamp", "customer_city", "customer_state", "customer_unique_id"] {
        assert!(cols.iter().any(|c| c == want), "{want} in {cols:?}");
    }
    assert!(!cols.iter().any(|c| c.starts_with("order_delivered") || c == "order_purchase_timestamp"), "{cols:?}");
    let src = env.data_dir().join("demo.sqlite");
    let unavailable = query(&src, "SELECT count(*) FROM ecom_orders WHERE order_status = 'unavailable'")[0][0].clone();
    let undeliverable =
        query(&dst, "SELECT count(*) FROM wide_orders_collection WHERE order_status = 'undeliverable'")[0][0].clone();
    assert_eq!(unavailable, undeliverable);
    // The lookup merged the customer into the top level, correctly joined.
    let joined = query(
        &dst,
        "SELECT count(*) FROM wide_orders_collection w WHERE w.customer_city IS NULL OR w.customer_id IS NULL",
    )[0][0]
        .clone();
    assert_eq!(joined, "0");
}

/// The wide documents of a MongoDB collection, without `_id`, in order_id order.
fn mongo_docs(m: &crate::engine_mongo::Driver) -> Vec<serde_json::Value> {
    use futures_util::TryStreamExt;
    let docs: Vec<mongodb::bson::Document> =
        m.rt.block_on(async {
            m.coll.find(mongodb::bson::doc! {}).sort(mongodb::bson::doc! {"order_id": 1}).await?.try_collect().await
        })
        .expect("read documents");
    docs.into_iter()
        .map(|mut d| {
            d.remove("_id");
            mongodb::bson::Bson::Document(d).into_relaxed_extjson()
        })
        .collect()
}

/// The seed's headline case under stress: the five-lookup flow from MariaDB into MongoDB, the
/// engine killed at failpoints in the copy and in the build of the documents, random transactions over all six tables
/// while it is down, a restart, more random transactions with another SIGKILL in the middle of
/// CDC, and in the end the live documents equal a from-scratch build of the same data.
#[test]
fn mariadb_to_mongodb_random_changes_and_sigkills_equal_a_rebuild() {
    let my = crate::engine_mysql::my();
    let env = Env::new("lookup-my-mongo");
    let db = format!("it_lkmm_{}", std::process::id());
    my.sql("mysql", &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
    let uri = crate::engine_mongo::mongo_uri(&db);
    let live = crate::engine_mongo::Driver::new(&db, "live_docs");
    let rebuilt = crate::engine_mongo::Driver::new(&db, "rebuilt_docs");
    live.run(live.coll.drop());
    rebuilt.run(rebuilt.coll.drop());
    let mut engine = env.start_engine();
    env.script(
        "setup.rhai",
        &format!(
            r#"{}
DataSource("mongodb", "Docs", #{{ uri: "{uri}" }}).type("target").save();
demo_into("Shop", 6000);"#,
            my.datasource("Shop", &db, &my.user, &my.password)
        ),
    )
    .ok();
    let total: u64 = my.sql(&db, "SELECT count(*) FROM ecom_orders").parse().expect("count");
    assert!(total > 2000, "{total} orders");
    engine.kill();
    // Start the build on an engine that aborts after the third committed batch of the copies
    // of the six tables, then on one that aborts after the second batch of 1,000 documents.
    let started = flow("live", "live_docs", false).replace("f.wait_initial_sync();\n", "");
    let count = |m: &crate::engine_mongo::Driver| m.run(m.coll.count_documents(mongodb::bson::doc! {}));
    let mut engine = env.start_engine_with(&[("TAP_FAILPOINT", "after_lookup_copy:3")]);
    let _ = env.script("live.rhai", &started); // the engine may die before the start returns
    assert!(engine.wait_exit(Duration::from_secs(120)), "the failpoint ended the engine while copying the tables");
    assert_eq!(count(&live), 0, "no document is written before every table is copied");
    let mut engine = env.start_engine_with(&[("TAP_FAILPOINT", "after_batch:2")]);
    assert!(engine.wait_exit(Duration::from_secs(120)), "the failpoint ended the engine while building documents");
    assert_eq!(count(&live), 2000, "killed after the second batch of documents");

    let col = |sql: &str| my.sql(&db, sql).lines().map(str::to_string).collect::<Vec<_>>();
    let ids = [
        col("SELECT order_id FROM ecom_orders ORDER BY order_id LIMIT 80"),
        col("SELECT customer_id FROM ecom_customers ORDER BY customer_id LIMIT 60"),
        col("SELECT product_id FROM ecom_products ORDER BY product_id LIMIT 30"),
        col("SELECT seller_id FROM ecom_sellers ORDER BY seller_id LIMIT 15"),
    ];
    let mut rng = Lcg(20261122);
    for round in 0..40 {
        let stmts: Vec<String> = (0..10).map(|_| random_statement_mysql(&mut rng, &ids)).collect();
        my.sql(&db, &format!("START TRANSACTION; {}; COMMIT;", stmts.join("; ")));
        match round {
            10 => engine = env.start_engine(), // after changes made while it was down mid-build
            25 => engine.kill(),               // mid-CDC
            32 => engine = env.start_engine(),
            _ => {}
        }
    }
    env.script("rebuild.rhai", &flow("rebuild", "rebuilt_docs", true)).ok();
    let same =
        wait_until(Duration::from_secs(180), || count(&rebuilt) > 0 && mongo_docs(&live) == mongo_docs(&rebuilt));
    if !same {
        let (a, b) = (mongo_docs(&live), mongo_docs(&rebuilt));
        let diff: Vec<_> = a.iter().zip(b.iter()).filter(|(x, y)| x != y).take(2).collect();
        panic!("live documents differ from a rebuild ({} vs {} documents): {diff:?}", a.len(), b.len());
    }
    drop(engine);
    my.sql("mysql", &format!("DROP DATABASE {db}"));
    live.run(live.coll.drop());
    rebuilt.run(rebuilt.coll.drop());
}

#[test]
fn a_lookups_own_filter_columns_and_renames_shape_what_it_embeds_and_follow_changes() {
    let env = Env::new("lookup-pre");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(
        &src,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, cust INTEGER, amount INTEGER);
         CREATE TABLE customers (cid INTEGER PRIMARY KEY, name TEXT, state TEXT, secret TEXT);
         INSERT INTO customers VALUES (1, 'Ana', 'SP', 's1'), (2, 'Bo', 'RJ', 's2');
         INSERT INTO orders VALUES (10, 1, 5), (11, 2, 7);",
    );
    let _engine = env.start_engine();
    let script = crate::harness::sqlite_src_dst(&src, &dst)
        + r#"Flow("pre").read_from("Src.orders")
               .lookup("Src.customers", #{ path: "customer", type: "object", relation: [["cust", "cid"]],
                                           filter: "state == 'SP'", exclude: ["secret"], rename: #{ name: "full_name" } })
               .write_to("Dst.docs").save().start();
             Flow("pre").wait_initial_sync();"#;
    env.script("pre.rhai", &script).ok();
    let docs = || query(&dst, "SELECT id, customer FROM docs ORDER BY id");
    assert_eq!(
        docs(),
        vec![
            vec!["10".to_string(), r#"{"cid":1,"full_name":"Ana","state":"SP"}"#.to_string()],
            vec!["11".into(), "NULL".into()]
        ],
        "only the filter's rows, without the excluded field, renamed"
    );
    // A customer that leaves the filter leaves the documents; one that enters it arrives.
    exec(
        &src,
        "UPDATE customers SET state = 'RJ' WHERE cid = 1; UPDATE customers SET state = 'SP', name = 'Bob' WHERE cid = 2;",
    );
    let want = vec![
        vec!["10".to_string(), "NULL".to_string()],
        vec!["11".into(), r#"{"cid":2,"full_name":"Bob","state":"SP"}"#.into()],
    ];
    assert!(wait_until(Duration::from_secs(30), || docs() == want), "after CDC: {:?}", docs());
}

#[test]
fn a_lookup_without_relation_joins_on_the_key_and_converts_and_moves_what_it_embeds() {
    let env = Env::new("lookup-natural");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(
        &src,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, cid INTEGER, amount INTEGER);
         CREATE TABLE customers (cid INTEGER PRIMARY KEY, zip TEXT, seen DATETIME);
         INSERT INTO customers VALUES (1, '01001', '2024-01-01 22:00:00'), (2, '02002', '2024-01-02 00:00:00');
         INSERT INTO orders VALUES (10, 1, 5), (11, 2, 7);",
    );
    let _engine = env.start_engine();
    let script = crate::harness::sqlite_src_dst(&src, &dst)
        + r#"Flow("nat").read_from("Src.orders").enable_join_value_change()
               .lookup("Src.customers", #{ path: "customer", type_adjust: [["zip", "int"]], adjust_time: 3 })
               .config(#{ writeThreadSize: 4 })
               .write_to("Dst.docs").save().start();
             Flow("nat").wait_initial_sync();"#;
    let run = env.script("nat.rhai", &script);
    run.ok();
    assert!(run.stdout.contains("lookup customers joins on cid (its key)"), "{}", run.stdout);
    let docs = || query(&dst, "SELECT id, customer FROM docs ORDER BY id");
    assert_eq!(
        docs(),
        vec![
            vec!["10".to_string(), r#"{"cid":1,"zip":1001,"seen":"2024-01-02 01:00:00"}"#.to_string()],
            vec!["11".into(), r#"{"cid":2,"zip":2002,"seen":"2024-01-02 03:00:00"}"#.into()]
        ],
        "joined on cid, zip converted, seen moved 3 hours"
    );
    // The order changes customer: its document follows.
    exec(&src, "UPDATE orders SET cid = 2 WHERE id = 10;");
    let moved = || docs()[0][1].contains("\"cid\":2");
    assert!(wait_until(Duration::from_secs(30), moved), "after CDC: {:?}", docs());
    // No relation and no field named after the key: refused with what to do.
    exec(&src, "CREATE TABLE regions (rid INTEGER PRIMARY KEY, name TEXT);");
    let bad = env.script(
        "bad.rhai",
        &(crate::harness::sqlite_src_dst(&src, &dst)
            + r#"Flow("b").read_from("Src.orders").lookup("Src.regions", #{ path: "region" });"#),
    );
    assert!(bad.code != 0 && bad.stderr.contains("has no field \"rid\", the key of regions"), "{}", bad.stderr);
    // Task settings: a key TapData does not have is refused as it is set, one the engine does
    // not do at save.
    let bad = env.script(
        "bad2.rhai",
        &(crate::harness::sqlite_src_dst(&src, &dst) + r#"Flow("c").read_from("Src.orders").config(#{ bogus: 1 });"#),
    );
    assert!(bad.code != 0 && bad.stderr.contains("config: bogus is not a TapData task setting"), "{}", bad.stderr);
    let bad = env.script(
        "bad3.rhai",
        &(crate::harness::sqlite_src_dst(&src, &dst)
            + r#"Flow("c").read_from("Src.orders").config(#{ doubleActive: true }).write_to("Dst.c").save();"#),
    );
    assert!(bad.code != 0 && bad.stderr.contains("doubleActive"), "{}", bad.stderr);
}

#[test]
fn a_lookup_query_embeds_the_rows_it_selects_and_makes_the_flow_copy_once() {
    let m = crate::engine_mysql::my();
    let tag = format!("lq_{}", std::process::id());
    m.sql("mysql", &format!("DROP DATABASE IF EXISTS {tag}; CREATE DATABASE {tag}"));
    m.sql(
        &tag,
        "CREATE TABLE orders (id INT PRIMARY KEY, cid INT);
         CREATE TABLE customers (cid INT PRIMARY KEY, name VARCHAR(20), active INT);
         INSERT INTO customers VALUES (1, 'Ana', 1), (2, 'Bo', 0);
         INSERT INTO orders VALUES (10, 1), (11, 2);",
    );
    let env = Env::new("lookup-query");
    let dst = env.path("dst.sqlite");
    let _engine = env.start_engine();
    let script = format!(
        r#"{}
DataSource("sqlite", "Dst", #{{ database: "{}" }}).save();
let f = Flow("lq").read_from("My.orders")
    .lookup("My.customers", #{{ path: "customer", type: "object", relation: [["cid", "cid"]],
                                query: "SELECT cid, upper(name) AS name FROM customers WHERE active = 1" }})
    .write_to("Dst.docs");
f.save().start();
Flow("lq").wait_initial_sync();"#,
        m.datasource("My", &tag, &m.user, &m.password),
        dst.display()
    );
    let run = env.script("lq.rhai", &script);
    run.ok();
    assert!(
        run.stdout.contains("reads a query, which has no change stream, so the flow copies once"),
        "{}",
        run.stdout
    );
    assert_eq!(
        query(&dst, "SELECT id, customer FROM docs ORDER BY id"),
        vec![vec!["10".to_string(), r#"{"cid":1,"name":"ANA"}"#.to_string()], vec!["11".into(), "NULL".into()]],
        "only the query's rows, as it selects them"
    );
    let status = env.tap(&["-c", "status lq"]).stdout;
    assert!(status.contains("current status is: complete"), "{status}");
    let bad = env.script(
        "bad.rhai",
        r#"Flow("lq2").read_from("My.orders").lookup("My.customers", #{ path: "c", relation: [["cid", "cid"]], query: "SELECT * FROM customers" }).include_cdc();"#,
    );
    assert!(bad.code != 0 && bad.stderr.contains("no change stream to follow"), "{}", bad.stderr);
}

#[test]
fn a_dimension_change_touching_thousands_of_documents_reaches_every_one() {
    // Documents are rebuilt and written a thousand at a time: 2,500 embed the one seller.
    let env = Env::new("lookup-fanout");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(
        &src,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, seller INTEGER, amount INTEGER);
         CREATE TABLE sellers (sid INTEGER PRIMARY KEY, city TEXT);
         INSERT INTO sellers VALUES (1, 'old'), (2, 'other');
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2600)
           INSERT INTO orders SELECT i, CASE WHEN i <= 2500 THEN 1 ELSE 2 END, i FROM n;",
    );
    let _engine = env.start_engine();
    let script = crate::harness::sqlite_src_dst(&src, &dst)
        + r#"Flow("fan").read_from("Src.orders")
               .lookup("Src.sellers", #{ path: "seller", type: "object", relation: [["seller", "sid"]] })
               .write_to("Dst.docs").save().start();
             Flow("fan").wait_initial_sync();"#;
    env.script("fan.rhai", &script).ok();
    let count = |city: &str| {
        let q = format!("SELECT count(*) FROM docs WHERE json_extract(seller, '$.city') = '{city}'");
        query(&dst, &q)[0][0].clone()
    };
    assert_eq!((count("old"), count("other")), ("2500".to_string(), "100".to_string()), "the initial build");
    exec(&src, "UPDATE sellers SET city = 'new' WHERE sid = 1;");
    // Written a thousand at a time, in as many transactions: seen whole once the last lands.
    let all = || (count("new"), count("old"), count("other"));
    let want = ("2500".to_string(), "0".to_string(), "100".to_string());
    assert!(wait_until(Duration::from_secs(60), || all() == want), "after CDC: {:?}", all());
}
