//! The seed README's flows as written, MySQL → MongoDB (MariaDB and SecantusDB): the examples
//! `examples/seed_flows.rhai` (a copy, excluded fields, a renamed field, the Python function
//! from a file and inline, a lookup) and `examples/mysql_order_flow.rhai` (all of them chained),
//! run as a user runs them; the documents are checked after the snapshot (the sample orders)
//! and after the changes each example makes in MySQL.

use crate::engine_mongo::{Driver, mongo_uri};
use crate::engine_mysql::my;
use crate::harness::{Env, wait_until};
use mongodb::bson::{Document, doc};
use std::time::Duration;

/// Run an example against a fresh MySQL database `db` and MongoDB database `db`.
fn run_example(name: &str, db: &str) -> (Env, String) {
    let m = my();
    m.sql("mysql", &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
    let d = Driver::new(db, "x");
    d.run(d.coll.client().database(db).drop());
    let env = Env::new(name);
    let run = env
        .command()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MYSQL_HOST", &m.host)
        .env("MYSQL_PORT", &m.port)
        .env("MYSQL_DATABASE", db)
        .env("MYSQL_USER", &m.user)
        .env("MYSQL_PASSWORD", &m.password)
        .env("MONGODB_URI", mongo_uri(db))
        .env("DEMO_ROWS", "30")
        .args(["-f", &format!("examples/{name}.rhai")])
        .output()
        .expect("tap");
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{stdout}\n{stderr}");
    (env, stdout.to_string())
}

struct Docs(Driver, String);

impl Docs {
    fn find(&self, coll: &str, filter: Document) -> Vec<Document> {
        use futures_util::TryStreamExt;
        let c = self.0.coll.client().database(&self.1).collection::<Document>(coll);
        self.0.run(async { c.find(filter).await?.try_collect::<Vec<_>>().await })
    }
    fn one(&self, coll: &str, order: &str) -> Document {
        let mut found = self.find(coll, doc! {"order_id": order});
        assert_eq!(found.len(), 1, "{coll}: one document for {order}: {found:?}");
        found.remove(0)
    }
}

#[test]
fn the_seed_readme_flows_run_as_written() {
    let db = format!("seed_{}", std::process::id());
    let (_env, stdout) = run_example("seed_flows", &db);
    let d = Docs(Driver::new(&db, "x"), db.clone());
    let status = |coll: &str, order: &str| d.one(coll, order).get_str("order_status").map(str::to_string);
    // The changes may still be on their way when the example ends: wait for the last of them.
    let caught_up = || {
        [
            "orders_replica_collection",
            "orders_renamed_fields_collection",
            "orders_exclude_fields_collection",
            "orders_processed_collection",
            "orders_processed_inline_collection",
            "wide_orders_collection",
        ]
        .iter()
        .all(|c| d.find(c, doc! {}).len() == 32)
            && d.find("wide_orders_collection", doc! {"order_id": "ORD_SEED_2", "customer_city": "campinas"}).len() == 1
    };
    assert!(wait_until(Duration::from_secs(60), caught_up), "the examples' changes reach every collection");
    // The copy: every order, the two new ones included.
    assert_eq!(d.find("orders_replica_collection", doc! {}).len(), 32);
    assert_eq!(status("orders_replica_collection", "ORD_SEED_1"), Ok(String::new()));
    // Excluded fields are in no document; the renamed field in every one, under its new name.
    let excluded = d.find("orders_renamed_fields_collection", doc! {});
    assert_eq!(excluded.len(), 32);
    assert!(excluded.iter().all(|o| !o.contains_key("order_delivered_carrier_date")
        && !o.contains_key("order_delivered_customer_date")
        && o.contains_key("order_status")));
    let renamed = d.find("orders_exclude_fields_collection", doc! {});
    assert_eq!(renamed.len(), 32);
    assert!(
        renamed.iter().all(|o| o.contains_key("purchase_timestamp") && !o.contains_key("order_purchase_timestamp"))
    );
    // The Python function, from the file and inline: the sample's statuses kept, an empty one
    // invalid, SendError undeliverable.
    for coll in ["orders_processed_collection", "orders_processed_inline_collection"] {
        let docs = d.find(coll, doc! {});
        assert_eq!(docs.len(), 32, "{coll}");
        assert!(docs.iter().all(|o| o.get_str("order_status").is_ok_and(|s| !s.is_empty() && s != "SendError")));
        assert_eq!(status(coll, "ORD_SEED_1"), Ok("invalid".into()), "{coll}");
        assert_eq!(status(coll, "ORD_SEED_2"), Ok("undeliverable".into()), "{coll}");
    }
    // The lookup: each order carries its customer's fields, following the customer's move.
    let wide = d.find("wide_orders_collection", doc! {});
    assert_eq!(wide.len(), 32);
    assert!(wide.iter().all(|o| o.contains_key("customer_city") && o.contains_key("customer_state")), "{wide:?}");
    assert_eq!(d.one("wide_orders_collection", "ORD_SEED_2").get_str("customer_city"), Ok("campinas"));
    assert!(stdout.contains("\"order_status\": \"invalid\""), "the example's own peek: {stdout}");
    my().sql("mysql", &format!("DROP DATABASE {db}"));
}

#[test]
fn the_seed_readme_mysql_order_flow_chains_every_step() {
    let db = format!("seedo_{}", std::process::id());
    let (_env, _) = run_example("mysql_order_flow", &db);
    let d = Docs(Driver::new(&db, "x"), db.clone());
    let caught_up = || d.find("wide_orders_collection", doc! {"order_id": "ORD_SEED_1"}).len() == 1;
    assert!(wait_until(Duration::from_secs(60), caught_up), "the example's new order arrives");
    let wide = d.find("wide_orders_collection", doc! {});
    assert_eq!(wide.len(), 31, "the sample's 30 orders and the new one");
    assert!(wide.iter().all(|o| !o.contains_key("order_delivered_carrier_date")
        && !o.contains_key("order_delivered_customer_date")
        && o.contains_key("purchase_timestamp")
        && !o.contains_key("order_purchase_timestamp")
        && o.contains_key("customer_state")));
    let new = d.one("wide_orders_collection", "ORD_SEED_1");
    assert_eq!(new.get_str("order_status"), Ok("undeliverable"));
    assert_eq!(new.get_str("customer_city"), Ok("sao paulo"));
    my().sql("mysql", &format!("DROP DATABASE {db}"));
}

#[test]
fn a_flow_per_table_built_from_the_tables_fields() {
    let db = format!("seedp_{}", std::process::id());
    let (_env, stdout) = run_example("per_table_flows", &db);
    assert!(stdout.contains("6 flows, one per table"), "{stdout}");
    let d = Docs(Driver::new(&db, "x"), db.clone());
    let orders = d.find("ecomOrders", doc! {});
    assert_eq!(orders.len(), 30);
    assert!(
        orders.iter().all(|o| o.contains_key("orderId")
            && o.contains_key("orderStatus")
            && !o.contains_key("order_id")
            && !o.contains_key("orderPurchaseTimestamp")),
        "camelCase fields, the dates left out: {:?}",
        orders.first()
    );
    let moved = || d.find("ecomCustomers", doc! {"customerCity": "Tapville"}).len() == 1;
    assert!(wait_until(Duration::from_secs(60), moved), "the change reaches its table's collection");
    my().sql("mysql", &format!("DROP DATABASE {db}"));
}
