//! The seed's e-commerce sample data (`tap demo`): six Olist-shaped tables with the columns the
//! seeds show, filled from a seeded generator so every run with the same `rows` gives the same
//! data. Written through the [`Connector`] sink interface, so it lands in any connector that can
//! be a target (SQLite, PostgreSQL, MySQL).

/// The most orders `demo` makes (the other tables scale with them).
pub const MAX_DEMO_ROWS: i64 = 10_000_000;

use crate::connectors::{Connector, ExistingData, Target};
use crate::error::Result;
use crate::model::{Change, Field, FieldType, Record, Schema, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

pub const TABLES: [&str; 6] =
    ["ecom_customers", "ecom_orders", "ecom_order_items", "ecom_order_payments", "ecom_products", "ecom_sellers"];

fn field(name: &str, ty: FieldType, data_type: &str, pk: bool) -> Field {
    Field { name: name.into(), ty, data_type: data_type.into(), primary_key: pk, nullable: !pk }
}

/// The six tables' schemas, in the order they are created.
pub fn schemas() -> Vec<Schema> {
    use FieldType::*;
    let t = |name: &str, fields: Vec<Field>| Schema { table: name.into(), fields };
    vec![
        t(
            "ecom_customers",
            vec![
                field("customer_id", Text, "varchar(32)", true),
                field("customer_unique_id", Text, "varchar(32)", false),
                field("customer_zip_code_prefix", Text, "varchar(8)", false),
                field("customer_city", Text, "varchar(64)", false),
                field("customer_state", Text, "varchar(2)", false),
            ],
        ),
        t(
            "ecom_orders",
            vec![
                field("order_id", Text, "varchar(32)", true),
                field("customer_id", Text, "varchar(32)", false),
                field("order_status", Text, "varchar(32)", false),
                field("order_purchase_timestamp", Timestamp, "datetime", false),
                field("order_approved_at", Timestamp, "datetime", false),
                field("order_delivered_carrier_date", Timestamp, "datetime", false),
                field("order_delivered_customer_date", Timestamp, "datetime", false),
                field("order_estimated_delivery_date", Timestamp, "datetime", false),
            ],
        ),
        t(
            "ecom_order_items",
            vec![
                field("order_id", Text, "varchar(32)", true),
                field("order_item_id", Integer, "int", true),
                field("product_id", Text, "varchar(32)", false),
                field("seller_id", Text, "varchar(32)", false),
                field("shipping_limit_date", Timestamp, "datetime", false),
                field("price", Decimal, "decimal(10,2)", false),
                field("freight_value", Decimal, "decimal(10,2)", false),
            ],
        ),
        t(
            "ecom_order_payments",
            vec![
                field("order_id", Text, "varchar(32)", true),
                field("payment_sequential", Integer, "int", true),
                field("payment_type", Text, "varchar(32)", false),
                field("payment_installments", Integer, "int", false),
                field("payment_value", Decimal, "decimal(10,2)", false),
            ],
        ),
        t(
            "ecom_products",
            vec![
                field("product_id", Text, "varchar(32)", true),
                field("product_category_name", Text, "varchar(64)", false),
                field("product_weight_g", Integer, "int", false),
                field("product_length_cm", Integer, "int", false),
                field("product_height_cm", Integer, "int", false),
                field("product_width_cm", Integer, "int", false),
            ],
        ),
        t(
            "ecom_sellers",
            vec![
                field("seller_id", Text, "varchar(32)", true),
                field("seller_zip_code_prefix", Text, "varchar(8)", false),
                field("seller_city", Text, "varchar(64)", false),
                field("seller_state", Text, "varchar(2)", false),
            ],
        ),
    ]
}

const CITIES: [(&str, &str); 12] = [
    ("sao paulo", "SP"),
    ("rio de janeiro", "RJ"),
    ("belo horizonte", "MG"),
    ("brasilia", "DF"),
    ("curitiba", "PR"),
    ("campinas", "SP"),
    ("porto alegre", "RS"),
    ("salvador", "BA"),
    ("guarulhos", "SP"),
    ("florianopolis", "SC"),
    ("sao luis", "MA"),
    ("jundiai", "SP"),
];
const STATUSES: [&str; 8] =
    ["delivered", "delivered", "delivered", "delivered", "shipped", "canceled", "unavailable", "invoiced"];
const CATEGORIES: [&str; 10] = [
    "cama_mesa_banho",
    "beleza_saude",
    "esporte_lazer",
    "informatica_acessorios",
    "moveis_decoracao",
    "utilidades_domesticas",
    "relogios_presentes",
    "telefonia",
    "automotivo",
    "brinquedos",
];
const PAYMENTS: [&str; 4] = ["credit_card", "credit_card", "boleto", "voucher"];

fn hex_id(rng: &mut StdRng) -> String {
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}

fn timestamp(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0).map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

fn money(rng: &mut StdRng, lo: f64, hi: f64) -> Value {
    let cents = (rng.random_range(lo..hi) * 100.0).round() / 100.0;
    Value::from(json!(cents))
}

/// Row counts written per table.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Generated {
    pub tables: Vec<(String, u64)>,
}

/// Create the six tables in `conn` (replacing existing ones) and fill them: `orders` orders and
/// proportionate customers, items, payments, products and sellers.
pub fn generate(conn: &mut dyn Connector, orders: usize, seed: u64) -> Result<Generated> {
    let mut rng = StdRng::seed_from_u64(seed);
    let schemas = schemas();
    for s in &schemas {
        conn.prepare_target(&Target::new(&s.table, &s.primary_key(), ExistingData::Drop), s)?;
    }
    let n_customers = (orders * 95 / 100).max(1);
    let n_products = (orders / 10).max(50);
    let n_sellers = (orders / 30).max(20);
    let mut out = Generated::default();
    let batch = 2000;

    let write =
        |conn: &mut dyn Connector, table: &str, key: &[String], rows: &mut Vec<Record>, force: bool| -> Result<()> {
            if rows.len() >= batch || (force && !rows.is_empty()) {
                // Generated as JSON, typed by the table's schema (timestamps, decimals).
                let schema = schemas.iter().find(|s| s.table == table);
                let typed = |after: Record| -> Record {
                    after
                        .into_iter()
                        .map(|(k, v)| {
                            let ty = schema.and_then(|s| s.field(&k)).map(|f| f.ty);
                            let v = v.as_type(ty);
                            (k, v)
                        })
                        .collect()
                };
                let changes: Vec<Change> = rows.drain(..).map(|after| Change::Insert { after: typed(after) }).collect();
                conn.write(&Target::new(table, key, ExistingData::Keep), &changes)?;
            }
            Ok(())
        };

    let key_of = |t: &str| schemas.iter().find(|s| s.table == t).map(|s| s.primary_key()).unwrap_or_default();

    let customers: Vec<String> = (0..n_customers).map(|_| hex_id(&mut rng)).collect();
    let products: Vec<String> = (0..n_products).map(|_| hex_id(&mut rng)).collect();
    let sellers: Vec<String> = (0..n_sellers).map(|_| hex_id(&mut rng)).collect();

    let key = key_of("ecom_customers");
    let mut rows = Vec::new();
    for id in &customers {
        let (city, state) = CITIES[rng.random_range(0..CITIES.len())];
        let mut r = Record::new();
        r.insert("customer_id".into(), Value::from(json!(id)));
        r.insert("customer_unique_id".into(), Value::from(json!(hex_id(&mut rng))));
        r.insert(
            "customer_zip_code_prefix".into(),
            Value::from(json!(format!("{:05}", rng.random_range(1000..99999)))),
        );
        r.insert("customer_city".into(), Value::from(json!(city)));
        r.insert("customer_state".into(), Value::from(json!(state)));
        rows.push(r);
        write(conn, "ecom_customers", &key, &mut rows, false)?;
    }
    write(conn, "ecom_customers", &key, &mut rows, true)?;
    out.tables.push(("ecom_customers".into(), customers.len() as u64));

    let key = key_of("ecom_products");
    for id in &products {
        let mut r = Record::new();
        r.insert("product_id".into(), Value::from(json!(id)));
        r.insert("product_category_name".into(), Value::from(json!(CATEGORIES[rng.random_range(0..CATEGORIES.len())])));
        r.insert("product_weight_g".into(), Value::from(json!(rng.random_range(50..20000))));
        r.insert("product_length_cm".into(), Value::from(json!(rng.random_range(10..100))));
        r.insert("product_height_cm".into(), Value::from(json!(rng.random_range(2..80))));
        r.insert("product_width_cm".into(), Value::from(json!(rng.random_range(8..90))));
        rows.push(r);
        write(conn, "ecom_products", &key, &mut rows, false)?;
    }
    write(conn, "ecom_products", &key, &mut rows, true)?;
    out.tables.push(("ecom_products".into(), products.len() as u64));

    let key = key_of("ecom_sellers");
    for id in &sellers {
        let (city, state) = CITIES[rng.random_range(0..CITIES.len())];
        let mut r = Record::new();
        r.insert("seller_id".into(), Value::from(json!(id)));
        r.insert("seller_zip_code_prefix".into(), Value::from(json!(format!("{:05}", rng.random_range(1000..99999)))));
        r.insert("seller_city".into(), Value::from(json!(city)));
        r.insert("seller_state".into(), Value::from(json!(state)));
        rows.push(r);
        write(conn, "ecom_sellers", &key, &mut rows, false)?;
    }
    write(conn, "ecom_sellers", &key, &mut rows, true)?;
    out.tables.push(("ecom_sellers".into(), sellers.len() as u64));

    let (ko, ki, kp) = (key_of("ecom_orders"), key_of("ecom_order_items"), key_of("ecom_order_payments"));
    let (mut orows, mut irows, mut prows) = (Vec::new(), Vec::new(), Vec::new());
    let (mut n_items, mut n_payments) = (0u64, 0u64);
    let start = 1_483_228_800i64; // 2017-01-01
    for _ in 0..orders {
        let order_id = hex_id(&mut rng);
        let status = STATUSES[rng.random_range(0..STATUSES.len())];
        let purchased = start + rng.random_range(0..(2 * 365 * 86400));
        let approved = purchased + rng.random_range(600..86400);
        let carrier = approved + rng.random_range(86400..5 * 86400);
        let delivered = carrier + rng.random_range(86400..15 * 86400);
        let estimated = (purchased / 86400 + rng.random_range(10..40)) * 86400;
        let shipped = matches!(status, "delivered" | "shipped");
        let mut r = Record::new();
        r.insert("order_id".into(), Value::from(json!(order_id)));
        r.insert("customer_id".into(), Value::from(json!(customers[rng.random_range(0..customers.len())])));
        r.insert("order_status".into(), Value::from(json!(status)));
        r.insert("order_purchase_timestamp".into(), Value::from(json!(timestamp(purchased))));
        r.insert("order_approved_at".into(), Value::from(json!(timestamp(approved))));
        r.insert(
            "order_delivered_carrier_date".into(),
            if shipped { Value::from(json!(timestamp(carrier))) } else { Value::Null },
        );
        r.insert(
            "order_delivered_customer_date".into(),
            if status == "delivered" { Value::from(json!(timestamp(delivered))) } else { Value::Null },
        );
        r.insert("order_estimated_delivery_date".into(), Value::from(json!(timestamp(estimated))));
        orows.push(r);

        let items = 1 + usize::from(rng.random_bool(0.25)) + usize::from(rng.random_bool(0.1));
        let mut total = 0.0;
        for i in 1..=items {
            let price = money(&mut rng, 5.0, 600.0);
            let freight = money(&mut rng, 5.0, 60.0);
            total += price.as_f64().unwrap_or(0.0) + freight.as_f64().unwrap_or(0.0);
            let mut it = Record::new();
            it.insert("order_id".into(), Value::from(json!(order_id)));
            it.insert("order_item_id".into(), Value::from(json!(i)));
            it.insert("product_id".into(), Value::from(json!(products[rng.random_range(0..products.len())])));
            it.insert("seller_id".into(), Value::from(json!(sellers[rng.random_range(0..sellers.len())])));
            it.insert("shipping_limit_date".into(), Value::from(json!(timestamp(approved + 3 * 86400))));
            it.insert("price".into(), price);
            it.insert("freight_value".into(), freight);
            irows.push(it);
            n_items += 1;
        }
        let payments = 1 + usize::from(rng.random_bool(0.05));
        for s in 1..=payments {
            let mut p = Record::new();
            p.insert("order_id".into(), Value::from(json!(order_id)));
            p.insert("payment_sequential".into(), Value::from(json!(s)));
            p.insert("payment_type".into(), Value::from(json!(PAYMENTS[rng.random_range(0..PAYMENTS.len())])));
            p.insert("payment_installments".into(), Value::from(json!(rng.random_range(1..10))));
            p.insert("payment_value".into(), Value::from(json!(((total / payments as f64) * 100.0).round() / 100.0)));
            prows.push(p);
            n_payments += 1;
        }
        write(conn, "ecom_orders", &ko, &mut orows, false)?;
        write(conn, "ecom_order_items", &ki, &mut irows, false)?;
        write(conn, "ecom_order_payments", &kp, &mut prows, false)?;
    }
    write(conn, "ecom_orders", &ko, &mut orows, true)?;
    write(conn, "ecom_order_items", &ki, &mut irows, true)?;
    write(conn, "ecom_order_payments", &kp, &mut prows, true)?;
    out.tables.push(("ecom_orders".into(), orders as u64));
    out.tables.push(("ecom_order_items".into(), n_items));
    out.tables.push(("ecom_order_payments".into(), n_payments));
    Ok(out)
}
