//! The MySQL connector against MariaDB 10.11 (started by `scripts/test`, URL in
//! TAP_TEST_MYSQL_URL): snapshot plus binlog CDC into SQLite, the seed tutorial's wide table
//! from MariaDB, and a clear error for a user without replication privileges.

use crate::harness::{Env, query, wait_until};
use std::process::Command;
use std::time::Duration;

pub struct My {
    pub host: String,
    pub port: String,
    pub user: String,
    pub password: String,
}

pub fn my() -> My {
    let url = std::env::var("TAP_TEST_MYSQL_URL")
        .expect("TAP_TEST_MYSQL_URL is not set: run the suite with scripts/test, which starts MariaDB");
    let rest = url.trim_start_matches("mysql://");
    let (creds, addr) = rest.split_once('@').expect("user@host");
    let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
    let hostport = addr.split('/').next().unwrap_or(addr);
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    My { host: host.into(), port: port.into(), user: user.into(), password: password.into() }
}

impl My {
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.sql_as(&self.user, &self.password, db, sql)
    }
    /// As root (no password on the test server), for creating users.
    fn root(&self, sql: &str) -> String {
        self.sql_as("root", "", "mysql", sql)
    }
    fn sql_as(&self, user: &str, password: &str, db: &str, sql: &str) -> String {
        let mut cmd = Command::new("mariadb");
        cmd.args(["--no-defaults", "--protocol=tcp", "-h", &self.host, "-P", &self.port, "-u", user]);
        if !password.is_empty() {
            cmd.arg(format!("-p{password}"));
        }
        let out = cmd.args(["-N", "-B", "-e", sql]).arg(db).output().expect("mariadb client installed");
        assert!(out.status.success(), "mariadb failed for {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
    pub fn datasource(&self, name: &str, db: &str, user: &str, password: &str) -> String {
        format!(
            r#"DataSource("mysql", "{name}", #{{ host: "{}", port: {}, database: "{db}", username: "{user}", password: "{password}" }}).type("source").save();"#,
            self.host, self.port
        )
    }
}

#[test]
fn mysql_snapshot_and_binlog_cdc_into_sqlite() {
    let my = my();
    let env = Env::new("mysql2lite");
    let db = format!("it_my_{}", std::process::id());
    my.sql("mysql", &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
    my.sql(
        &db,
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(10,2), ok TINYINT(1), at DATETIME, doc JSON);
         INSERT INTO items VALUES (1, 'a', 1.50, 1, '2024-01-02 03:04:05', '{\"x\": 1}'), (2, 'b', 2.25, 0, NULL, NULL), (3, 'c', 3.00, 1, NULL, NULL);",
    );
    let dst = env.path("dst.sqlite");
    let script = format!(
        r#"{}
DataSource("sqlite", "Lite", #{{ database: "{}" }}).save();
Flow("my2lite").read_from("My.items").write_to("Lite.items").save().start();
Flow("my2lite").wait_initial_sync();"#,
        my.datasource("My", &db, &my.user, &my.password),
        dst.display()
    );
    env.script("my.rhai", &script).ok();
    let rows = || query(&dst, "SELECT id, name, price, ok, at, doc FROM items ORDER BY id");
    assert_eq!(rows()[0], vec!["1", "a", "1.5", "1", "2024-01-02 03:04:05", "{\"x\":1}"]);
    my.sql(&db, "INSERT INTO items VALUES (4, 'd', 4.00, 0, NULL, NULL); UPDATE items SET name = 'B', price = 9.99 WHERE id = 2; DELETE FROM items WHERE id = 3;");
    let expected = vec![
        vec!["1", "a", "1.5", "1", "2024-01-02 03:04:05", "{\"x\":1}"],
        vec!["2", "B", "9.99", "0", "NULL", "NULL"],
        vec!["4", "d", "4", "0", "NULL", "NULL"],
    ];
    let expected: Vec<Vec<String>> =
        expected.into_iter().map(|r| r.into_iter().map(str::to_string).collect()).collect();
    assert!(wait_until(Duration::from_secs(30), || rows() == expected), "binlog CDC: {:?}", rows());
    // A filtered peek reads MySQL by value.
    let run = env.tap(&["--json", "-c", "peek My.items id=2 name=B"]);
    run.ok();
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("json");
    assert_eq!(v["records"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["records"][0]["price"], 9.99, "{v}");
    env.tap(&["-c", "stop my2lite"]).ok();
    my.sql("mysql", &format!("DROP DATABASE {db}"));
}

#[test]
fn the_tutorial_wide_table_from_mariadb() {
    let my = my();
    let env = Env::new("mysql-wide");
    let db = format!("it_mywide_{}", std::process::id());
    my.sql("mysql", &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
    env.script("ds.rhai", &my.datasource("MySQL_ECommerce", &db, &my.user, &my.password)).ok();
    env.tap(&["demo", "--rows", "200", "--into", "MySQL_ECommerce"]).ok();
    let script = r#"DataSource("sqlite", "Docs", #{ database: "docs.sqlite" }).type("target").save();
let f = Flow("Order_SingleView_Sync").read_from("MySQL_ECommerce.ecom_orders");
f.lookup("MySQL_ECommerce.ecom_customers", #{ path: "customer_info", type: "object", relation: [["customer_id", "customer_id"]] });
f.lookup("MySQL_ECommerce.ecom_order_payments", #{ path: "order_payments", type: "array", relation: [["order_id", "order_id"]] });
f.lookup("MySQL_ECommerce.ecom_order_items", #{ path: "order_items", type: "array", relation: [["order_id", "order_id"]] });
f.lookup("MySQL_ECommerce.ecom_products", #{ path: "order_items.product", type: "object", relation: [["product_id", "order_items.product_id"]] });
f.lookup("MySQL_ECommerce.ecom_sellers", #{ path: "order_items.seller", type: "object", relation: [["seller_id", "order_items.seller_id"]] });
f.write_to("Docs.orderSingleView").save().start();
f.wait_initial_sync();"#;
    env.script("wide.rhai", script).ok();
    my.sql(
        &db,
        "INSERT INTO ecom_customers VALUES ('CUST12345', 'UNIQUE_CUST_00123', '10001', 'New York', 'NY');
         INSERT INTO ecom_orders (order_id, customer_id, order_status, order_purchase_timestamp, order_approved_at, order_estimated_delivery_date)
           VALUES ('ORD789654', 'CUST12345', 'pending', NOW(), NOW(), '2024-11-10');
         INSERT INTO ecom_order_items VALUES ('ORD789654', 1, 'PROD56789', 'SELL34567', '2024-11-05', 199.99, 15.0);
         INSERT INTO ecom_products VALUES ('PROD56789', 'electronics', 1200, 20, 10, 8);
         INSERT INTO ecom_sellers VALUES ('SELL34567', '90001', 'Los Angeles', 'CA');
         INSERT INTO ecom_order_payments VALUES ('ORD789654', 1, 'credit_card', 1, 199.99);
         UPDATE ecom_orders SET order_status = 'shipped', order_delivered_carrier_date = NOW() WHERE order_id = 'ORD789654';
         UPDATE ecom_order_payments SET payment_value = 220.0, payment_installments = 2 WHERE order_id = 'ORD789654' AND payment_sequential = 1;
         UPDATE ecom_order_items SET price = 210.0, freight_value = 18.0 WHERE order_id = 'ORD789654' AND order_item_id = 1;",
    );
    let dst = env.path("docs.sqlite");
    let doc = || {
        query(
            &dst,
            "SELECT order_status, json_extract(order_payments, '$[0].payment_value'), json_extract(order_payments, '$[0].payment_installments'),
                    json_extract(order_items, '$[0].price'), json_extract(order_items, '$[0].freight_value'),
                    json_extract(order_items, '$[0].product.product_category_name'), json_extract(order_items, '$[0].seller.seller_city')
             FROM orderSingleView WHERE order_id = 'ORD789654'",
        )
    };
    let want: Vec<String> =
        ["shipped", "220", "2", "210", "18", "electronics", "Los Angeles"].iter().map(|s| s.to_string()).collect();
    assert!(wait_until(Duration::from_secs(30), || doc().first() == Some(&want)), "the tutorial document: {:?}", doc());
    env.tap(&["-c", "stop Order_SingleView_Sync"]).ok();
    my.sql("mysql", &format!("DROP DATABASE {db}"));
}

#[test]
fn missing_replication_privileges_are_named() {
    let my = my();
    let env = Env::new("mysql-priv");
    let db = format!("it_mypriv_{}", std::process::id());
    let user = format!("nopriv{}", std::process::id());
    my.root(
        &format!(
            "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY);
             DROP USER IF EXISTS '{user}'@'%'; CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'; GRANT SELECT ON {db}.* TO '{user}'@'%';"
        ),
    );
    let script = format!(
        r#"{}
DataSource("sqlite", "Lite", #{{ database: "x.sqlite" }}).save();
Flow("priv").read_from("NoPriv.t").write_to("Lite.t").save().start();"#,
        my.datasource("NoPriv", &db, &user, "pw")
    );
    let run = env.script("p.rhai", &script);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("REPLICATION SLAVE") && run.stderr.contains("REPLICATION CLIENT"), "{}", run.stderr);
    my.root(&format!("DROP USER '{user}'@'%'; DROP DATABASE {db}"));
}

/// The connector as the runner drives it, with positions that carry the GTID state: a stream
/// resumed from a position whose binlog file does not exist (as after a failover or a purge)
/// still delivers exactly the transactions after it, across a binlog rotation, because it
/// resumes by GTID. The same position without its GTID fails, which shows the GTID is what
/// found the place.
#[test]
fn binlog_cdc_resumes_by_gtid_when_the_file_is_gone() {
    use serde_json::json;
    let my = my();
    let db = format!("it_gtid_{}", std::process::id());
    my.sql("mysql", &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
    my.sql(&db, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let config = json!({"host": my.host, "port": my.port, "database": db, "user": my.user, "password": my.password});
    let tables = vec!["t".to_string()];
    let flow = "gtid-test";
    let mut c = tap::connectors::open("Mysql", &config).expect("connect");
    c.cdc_prepare(flow, &tables, false).expect("cdc checks pass");
    let p0 = c.cdc_position(flow).expect("position");
    assert!(p0["gtid"].as_str().is_some_and(|g| !g.is_empty()), "MariaDB positions carry a GTID: {p0}");

    my.sql(&db, "INSERT INTO t VALUES (1, 10)");
    my.sql(&db, "FLUSH BINARY LOGS");
    my.sql(&db, "INSERT INTO t VALUES (2, 20)");
    my.sql(&db, "UPDATE t SET v = 30 WHERE id = 2");

    // Read the first transaction only (max 1 event: whole transactions stop there).
    let (events, p1) = c.changes(flow, &tables, &p0, 1, Duration::from_secs(10)).expect("changes");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].change.key_image().get("id").cloned(), Some(tap::model::Value::Int(1)));
    assert_ne!(p1["gtid"], p0["gtid"], "the position moved to the first transaction's GTID");
    c.cdc_release(flow).unwrap();

    let gone = json!({"file": "no-such-binlog.000999", "pos": 4, "gtid": p1["gtid"]});
    let mut c2 = tap::connectors::open("Mysql", &config).expect("connect");
    let mut got: Vec<(tap::model::Value, tap::model::Value)> = Vec::new();
    let mut at = gone.clone();
    for _ in 0..20 {
        let (events, next) = c2.changes(flow, &tables, &at, 100, Duration::from_millis(500)).expect("resume by GTID");
        for e in events {
            let a = e.change.key_image().clone();
            got.push((a["id"].clone(), a["v"].clone()));
        }
        at = next;
        if got.len() >= 2 {
            break;
        }
    }
    let int = tap::model::Value::Int;
    assert_eq!(got, vec![(int(2), int(20)), (int(2), int(30))], "exactly the transactions after p1");
    let file = at["file"].as_str().unwrap_or_default();
    let listed = my.sql(&db, "SHOW BINARY LOGS");
    assert!(
        listed.lines().any(|l| l.split('\t').next() == Some(file)),
        "the position names a file the server lists (not its name with the rotate event's checksum): {at}\n{listed}"
    );
    c2.cdc_release(flow).unwrap();

    let mut c3 = tap::connectors::open("Mysql", &config).expect("connect");
    let no_gtid = json!({"file": "no-such-binlog.000999", "pos": 4});
    let err = c3.changes(flow, &tables, &no_gtid, 100, Duration::from_millis(500));
    let err = err.expect_err("file+offset alone cannot resume from a missing file");
    assert!(err.message.contains("the binlog was purged past it"), "{}", err.message);
    assert_eq!(err.kind, tap::error::ErrorKind::NotFound, "a lost position is not retried");
    my.sql("mysql", &format!("DROP DATABASE {db}"));
}
