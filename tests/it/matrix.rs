//! The conformance matrix: every source × target pair of SQLite, PostgreSQL, MySQL (MariaDB)
//! and MongoDB (SecantusDB), each carrying one row of every model type and one row of NULLs
//! through the snapshot (rows 1, 2 and 5), then CDC: a row of every type (3) and one of NULLs
//! (4) inserted, row 1 updated, row 5 deleted.
//!
//! Each source test creates its table, starts four flows (one per target) and checks what
//! each target holds, read with the target's own client and written out as `type:value`
//! text per cell. The expected cells are `tests/it/matrix_expected.txt`, one line per
//! (source, target, row, column): the README's type tables, completed for MySQL and MongoDB,
//! say what each becomes where a target cannot hold it exactly.

use crate::engine_mongo::{Driver, mongo_uri};
use crate::engine_mysql::my;
use crate::engine_postgres::pg;
use crate::harness::{Env, exec, wait_until};
use std::collections::BTreeMap;
use std::time::Duration;

const COLUMNS: [&str; 11] = ["i", "d", "f", "t", "b", "flag", "dt", "ts", "tz", "j", "n"];
const TARGETS: [&str; 4] = ["sqlite", "postgres", "mysql", "mongodb"];

/// The source's key column: `id`, or `_id` from MongoDB.
fn key_of(source: &str) -> &'static str {
    if source == "mongodb" { "_id" } else { "id" }
}

/// Cells as `target/row/column → type:value`, for every row of the target table.
type Cells = BTreeMap<String, String>;

struct Ctx {
    env: Env,
    tag: String,
}

impl Ctx {
    fn new(source: &str) -> Self {
        Ctx { env: Env::new(&format!("matrix-{source}")), tag: format!("mx_{source}_{}", std::process::id()) }
    }
    fn lite_path(&self) -> std::path::PathBuf {
        self.env.path("target.sqlite")
    }
    fn datasources(&self) -> String {
        let pg = pg();
        let my = my();
        format!(
            r#"DataSource("sqlite", "T_sqlite", #{{ database: "{lite}" }}).save();
               DataSource("postgres", "T_postgres", #{{ host: "{ph}", port: {pp}, database: "{pd}", schema: "{tag}", user: "{pu}", password: "{pw}" }}).save();
               DataSource("mysql", "T_mysql", #{{ host: "{mh}", port: {mp}, database: "{tag}", user: "{mu}", password: "{mw}" }}).save();
               DataSource("mongodb", "T_mongodb", #{{ uri: "{uri}" }}).save();"#,
            lite = self.lite_path().display(),
            ph = pg.host,
            pp = pg.port,
            pd = pg.database,
            pu = pg.user,
            pw = pg.password,
            mh = my.host,
            mp = my.port,
            mu = my.user,
            mw = my.password,
            tag = self.tag,
            uri = mongo_uri(&self.tag),
        )
    }
    /// Empty target schemas/databases named after the test.
    fn reset_targets(&self) {
        pg().psql(&format!("DROP SCHEMA IF EXISTS {t} CASCADE; CREATE SCHEMA {t}", t = self.tag));
        my().sql("mysql", &format!("DROP DATABASE IF EXISTS {t}; CREATE DATABASE {t}", t = self.tag));
        let d = Driver::new(&self.tag, "x");
        d.run(d.coll.client().database(&self.tag).drop());
    }

    fn read_targets(&self, source: &str) -> Cells {
        let key = key_of(source);
        let table = format!("from_{source}");
        let mut cells = Cells::new();
        let mut put = |target: &str, row: String, col: &str, v: String| {
            cells.insert(format!("{target}/{row}/{col}"), v);
        };
        // SQLite: the storage class and the value.
        if self.lite_path().exists() {
            let conn = rusqlite::Connection::open(self.lite_path()).expect("sqlite");
            conn.busy_timeout(Duration::from_secs(10)).expect("busy");
            if let Ok(mut st) = conn.prepare(&format!("SELECT * FROM \"{table}\" ORDER BY \"{key}\"")) {
                let names: Vec<String> = st.column_names().map(|s| s.to_string()).collect();
                let mut rows = st.query([]).expect("query");
                while let Some(r) = rows.next().expect("row") {
                    let id = lite_cell(r.get_ref(names.iter().position(|n| n == key).expect("key")).expect("v"));
                    for (i, n) in names.iter().enumerate() {
                        if COLUMNS.contains(&n.as_str()) {
                            put("sqlite", id.clone(), n, lite_cell(r.get_ref(i).expect("v")));
                        }
                    }
                }
            }
        }
        // PostgreSQL: the column's type and its text in UTC.
        let pgc = pg();
        let exists = pgc.psql(&format!("SELECT to_regclass('{}.{table}') IS NOT NULL", self.tag)) == "t";
        if exists {
            let cols = pgc.psql(&format!(
                "SELECT string_agg(column_name || ':' || data_type, ';' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = '{}' AND table_name = '{table}'",
                self.tag
            ));
            let cols = columns(&cols, key);
            let select: Vec<String> = cols.iter().map(|(n, _)| format!("coalesce(\"{n}\"::text, 'NULL')")).collect();
            let out = pgc.psql(&format!(
                "SET TimeZone = 'UTC'; SELECT {} FROM {}.\"{table}\" ORDER BY \"{key}\"",
                select.join(" || '\u{1f}' || "),
                self.tag
            ));
            for line in out.lines().filter(|l| !l.is_empty() && *l != "SET") {
                row_cells(line, &cols, key, &mut |row, col, v| put("postgres", row, col, v));
            }
        }
        // MySQL: the column type and the value as the client prints it (bytes in hex).
        let myc = my();
        let cols = myc.sql(
            "mysql",
            &format!(
                "SELECT GROUP_CONCAT(CONCAT(column_name, ':', column_type) ORDER BY ordinal_position SEPARATOR ';') FROM information_schema.columns WHERE table_schema = '{}' AND table_name = '{table}'",
                self.tag
            ),
        );
        if cols != "NULL" && !cols.is_empty() {
            let cols = columns(&cols, key);
            let select: Vec<String> = cols
                .iter()
                .map(|(n, ty)| {
                    if ty.contains("blob") || ty.contains("binary") {
                        format!("IFNULL(LOWER(HEX(`{n}`)), 'NULL')")
                    } else {
                        format!("IFNULL(CAST(`{n}` AS CHAR), 'NULL')")
                    }
                })
                .collect();
            let out = myc.sql(
                &self.tag,
                &format!("SELECT CONCAT_WS(CHAR(31), {}) FROM `{table}` ORDER BY `{key}`", select.join(", ")),
            );
            for line in out.lines().filter(|l| !l.is_empty()) {
                row_cells(line, &cols, key, &mut |row, col, v| put("mysql", row, col, v));
            }
        }
        // MongoDB: the BSON type and value of every field.
        let d = Driver::new(&self.tag, &table);
        let docs: Vec<mongodb::bson::Document> = d.rt.block_on(async {
            use futures_util::TryStreamExt;
            d.coll.find(mongodb::bson::doc! {}).await.expect("find").try_collect().await.expect("docs")
        });
        for doc in docs {
            let id = doc.get(key).map(bson_id).unwrap_or_default();
            for (k, v) in &doc {
                if COLUMNS.contains(&k.as_str()) {
                    put("mongodb", id.clone(), k, bson_cell(v));
                }
            }
        }
        cells
    }
}

/// `name:type;name:type…` from information_schema, kept to the key and the matrix's columns.
fn columns(text: &str, key: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter_map(|c| c.split_once(':'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .filter(|(n, _)| COLUMNS.contains(&n.as_str()) || n == key)
        .collect()
}

/// One row printed by a SQL client, values separated by U+001F, as cells `type:value`.
fn row_cells(line: &str, cols: &[(String, String)], key: &str, put: &mut dyn FnMut(String, &str, String)) {
    let values: Vec<&str> = line.split('\u{1f}').collect();
    let id = cols.iter().position(|(n, _)| n == key).map(|i| values[i].to_string()).unwrap_or_default();
    for ((n, ty), v) in cols.iter().zip(&values) {
        if n != key {
            let v = if *v == "NULL" { "null".to_string() } else { format!("{ty}:{v}") };
            put(id.clone(), n, v);
        }
    }
}

fn lite_cell(v: rusqlite::types::ValueRef) -> String {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => "null".into(),
        ValueRef::Integer(i) => format!("integer:{i}"),
        ValueRef::Real(f) => format!("real:{f}"),
        ValueRef::Text(t) => format!("text:{}", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => format!("blob:{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
    }
}

fn bson_id(v: &mongodb::bson::Bson) -> String {
    match v {
        mongodb::bson::Bson::Int32(i) => i.to_string(),
        mongodb::bson::Bson::Int64(i) => i.to_string(),
        other => other.to_string(),
    }
}

fn bson_cell(v: &mongodb::bson::Bson) -> String {
    use mongodb::bson::Bson;
    match v {
        Bson::Null => "null".into(),
        Bson::Int32(i) => format!("int32:{i}"),
        Bson::Int64(i) => format!("int64:{i}"),
        Bson::Double(f) => format!("double:{f}"),
        Bson::Decimal128(d) => format!("decimal128:{d}"),
        Bson::String(s) => format!("string:{s}"),
        Bson::Boolean(b) => format!("bool:{b}"),
        Bson::Binary(b) => format!("binary:{}", b.bytes.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        Bson::DateTime(t) => format!("date:{}", t.try_to_rfc3339_string().unwrap_or_default()),
        Bson::Document(d) => format!("document:{}", Bson::Document(d.clone()).into_relaxed_extjson()),
        Bson::Array(a) => format!("array:{}", Bson::Array(a.clone()).into_relaxed_extjson()),
        other => format!("other:{other}"),
    }
}

/// The expected cells of `source`, from the expectation file.
fn expected(source: &str) -> Cells {
    let text = include_str!("matrix_expected.txt");
    let mut out = Cells::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (k, v) = line.split_once(" = ").expect("`source/target/row/column = type:value`");
        if let Some(rest) = k.strip_prefix(&format!("{source}/")) {
            out.insert(rest.to_string(), v.to_string());
        }
    }
    out
}

fn run_matrix(source: &str, create: &str, changes: &dyn Fn()) {
    let cx = Ctx::new(source);
    cx.reset_targets();
    let mut script = cx.datasources();
    script.push_str(create);
    for t in TARGETS {
        script.push_str(&format!(
            "\nFlow(\"mx_{source}_{t}\").read_from(\"S.types\").write_to(\"T_{t}.from_{source}\").save();\nstart(\"mx_{source}_{t}\");"
        ));
    }
    for t in TARGETS {
        script.push_str(&format!("\nFlow(\"mx_{source}_{t}\").wait_initial_sync();"));
    }
    cx.env.script("matrix.rhai", &script).ok();
    // The snapshot: rows 1 and 2 in every target, before any change.
    let snapshot_rows =
        |cells: &Cells| TARGETS.iter().all(|t| cells.keys().filter(|k| k.starts_with(&format!("{t}/"))).count() > 0);
    assert!(
        wait_until(Duration::from_secs(60), || snapshot_rows(&cx.read_targets(source))),
        "snapshot into every target from {source}: {:#?}",
        cx.read_targets(source)
    );
    changes();
    let want = expected(source);
    // For reviewing a new pair or type: TAP_MATRIX_ACTUAL=DIR writes what the targets hold
    // once they stop changing, in the expectation file's format (the test still compares).
    if let Some(dir) = std::env::var_os("TAP_MATRIX_ACTUAL") {
        let mut last = Cells::new();
        wait_until(Duration::from_secs(60), || {
            std::thread::sleep(Duration::from_secs(3));
            let now = cx.read_targets(source);
            let stable = now == last && !now.is_empty();
            last = now;
            stable
        });
        let text: String = last.iter().map(|(k, v)| format!("{source}/{k} = {v}\n")).collect();
        std::fs::write(std::path::Path::new(&dir).join(format!("{source}.txt")), text).expect("write actual");
    }
    assert!(!want.is_empty(), "no expectations for {source} in matrix_expected.txt");
    let matches = || cx.read_targets(source) == want;
    if !wait_until(Duration::from_secs(60), matches) {
        let got = cx.read_targets(source);
        let mut diff = String::new();
        for k in want.keys().chain(got.keys()).collect::<std::collections::BTreeSet<_>>() {
            let (w, g) = (want.get(k), got.get(k));
            if w != g {
                diff.push_str(&format!(
                    "{source}/{k}: want {} got {}\n",
                    w.map(String::as_str).unwrap_or("<none>"),
                    g.map(String::as_str).unwrap_or("<none>")
                ));
            }
        }
        let status = cx.env.tap(&["-c", "status"]);
        panic!("{source} → targets differ from the type table:\n{diff}\nstatus:\n{}", status.stdout);
    }
    // Every flow is still running: none stopped on a value it could not write.
    for t in TARGETS {
        let run = cx.env.tap(&["--json", "-c", &format!("status mx_{source}_{t}")]);
        run.ok();
        assert!(run.stdout.contains("running"), "mx_{source}_{t} is not running: {}", run.stdout);
    }
    // Stopped and deleted, so their replication slots and triggers go.
    for t in TARGETS {
        cx.env.tap(&["-c", &format!("stop mx_{source}_{t}")]).ok();
        cx.env.tap(&["-c", &format!("delete mx_{source}_{t} -y")]).ok();
    }
}

#[test]
fn matrix_from_sqlite() {
    let env_probe = Env::new("matrix-sqlite-src");
    let src = env_probe.path("src.sqlite");
    exec(
        &src,
        "CREATE TABLE types (id INTEGER PRIMARY KEY, i INTEGER, d DECIMAL(10,2), f REAL, t TEXT, b BLOB, flag BOOLEAN, dt DATE, ts DATETIME, tz TIMESTAMPTZ, j JSON, n TEXT);
         INSERT INTO types VALUES (1, 42, 12.34, 1.5, 'héllo', x'00ff10', 1, '2024-02-29', '2024-01-02 03:04:05', '2024-01-02 03:04:05+02:00', '{\"a\":1,\"b\":[true,null]}', NULL);
         INSERT INTO types (id) VALUES (2), (5);",
    );
    let create = format!("\nDataSource(\"sqlite\", \"S\", #{{ database: \"{}\" }}).save();", src.display());
    run_matrix("sqlite", &create, &|| {
        exec(
            &src,
            "INSERT INTO types VALUES (3, -7, 0.5, -2.25, 'x', x'61', 0, '1999-12-31', '2000-01-01 00:00:00', '2000-01-01 00:00:00+00:00', '[1,2]', NULL);
             UPDATE types SET t = 'changed', d = 99.99 WHERE id = 1;
             INSERT INTO types (id) VALUES (4);
             DELETE FROM types WHERE id = 5;",
        )
    });
}

#[test]
fn matrix_from_postgres() {
    let pgc = pg();
    let schema = format!("mx_src_{}", std::process::id());
    pgc.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.types (id int PRIMARY KEY, i bigint, d numeric(10,2), f double precision, t text, b bytea, flag boolean, dt date, ts timestamp, tz timestamptz, j jsonb, n text);
         INSERT INTO {schema}.types VALUES (1, 42, 12.34, 1.5, 'héllo', '\\x00ff10', true, '2024-02-29', '2024-01-02 03:04:05', '2024-01-02 03:04:05+02:00', '{{\"a\":1,\"b\":[true,null]}}', NULL);
         INSERT INTO {schema}.types (id) VALUES (2), (5);"
    ));
    let create = format!(
        "\nDataSource(\"postgres\", \"S\", #{{ host: \"{}\", port: {}, database: \"{}\", schema: \"{schema}\", user: \"{}\", password: \"{}\" }}).save();",
        pgc.host, pgc.port, pgc.database, pgc.user, pgc.password
    );
    run_matrix("postgres", &create, &|| {
        pgc.psql(&format!(
            "INSERT INTO {schema}.types VALUES (3, -7, 0.5, -2.25, 'x', '\\x61', false, '1999-12-31', '2000-01-01 00:00:00', '2000-01-01 00:00:00+00', '[1,2]', NULL);
             UPDATE {schema}.types SET t = 'changed', d = 99.99 WHERE id = 1;
             INSERT INTO {schema}.types (id) VALUES (4);
             DELETE FROM {schema}.types WHERE id = 5;"
        ));
    });
}

#[test]
fn matrix_from_mysql() {
    let myc = my();
    let db = format!("mx_src_{}", std::process::id());
    myc.sql("mysql", &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
    myc.sql(
        &db,
        "CREATE TABLE types (id INT PRIMARY KEY, i BIGINT, d DECIMAL(10,2), f DOUBLE, t TEXT, b BLOB, flag TINYINT(1), dt DATE, ts DATETIME, tz TIMESTAMP NULL, j JSON, n TEXT);
         SET time_zone = '+00:00';
         INSERT INTO types VALUES (1, 42, 12.34, 1.5, 'héllo', x'00ff10', 1, '2024-02-29', '2024-01-02 03:04:05', '2024-01-02 01:04:05', '{\"a\":1,\"b\":[true,null]}', NULL);
         INSERT INTO types (id) VALUES (2), (5);",
    );
    let create = format!(
        "\nDataSource(\"mysql\", \"S\", #{{ host: \"{}\", port: {}, database: \"{db}\", user: \"{}\", password: \"{}\" }}).save();",
        myc.host, myc.port, myc.user, myc.password
    );
    run_matrix("mysql", &create, &|| {
        myc.sql(
            &db,
            "SET time_zone = '+00:00';
             INSERT INTO types VALUES (3, -7, 0.5, -2.25, 'x', x'61', 0, '1999-12-31', '2000-01-01 00:00:00', '2000-01-01 00:00:00', '[1,2]', NULL);
             UPDATE types SET t = 'changed', d = 99.99 WHERE id = 1;
             INSERT INTO types (id) VALUES (4);
             DELETE FROM types WHERE id = 5;",
        );
    });
}

#[test]
fn matrix_from_mongodb() {
    use mongodb::bson::{Binary, Bson, DateTime, Decimal128, doc, spec::BinarySubtype};
    let db = format!("mx_src_{}", std::process::id());
    let d = Driver::new(&db, "types");
    d.run(d.coll.client().database(&db).drop());
    let dec = |s: &str| Bson::Decimal128(s.parse::<Decimal128>().expect("decimal"));
    let bin = |b: &[u8]| Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: b.to_vec() });
    let date = |s: &str| Bson::DateTime(DateTime::parse_rfc3339_str(s).expect("date"));
    let nulls = |id: i64| {
        let mut d = doc! {"_id": id};
        for c in COLUMNS {
            d.insert(c, Bson::Null);
        }
        d
    };
    d.run(d.coll.insert_many([
        doc! {"_id": 1_i64, "i": 42_i64, "d": dec("12.34"), "f": 1.5, "t": "héllo", "b": bin(&[0, 255, 16]), "flag": true,
              "dt": date("2024-02-29T00:00:00Z"), "ts": date("2024-01-02T03:04:05Z"), "tz": date("2024-01-02T01:04:05Z"),
              "j": {"a": 1_i32, "b": [true, Bson::Null]}, "n": Bson::Null},
        nulls(2),
        nulls(5),
    ]));
    let create = format!("\nDataSource(\"mongodb\", \"S\", #{{ uri: \"{}\" }}).save();", mongo_uri(&db));
    run_matrix("mongodb", &create, &|| {
        d.run(d.coll.insert_one(
            doc! {"_id": 3_i64, "i": -7_i64, "d": dec("0.5"), "f": -2.25, "t": "x", "b": bin(b"a"), "flag": false,
            "dt": date("1999-12-31T00:00:00Z"), "ts": date("2000-01-01T00:00:00Z"), "tz": date("2000-01-01T00:00:00Z"),
            "j": [1_i32, 2_i32], "n": Bson::Null},
        ));
        d.run(d.coll.update_one(doc! {"_id": 1_i64}, doc! {"$set": {"t": "changed", "d": dec("99.99")}}));
        d.run(d.coll.insert_one(nulls(4)));
        d.run(d.coll.delete_one(doc! {"_id": 5_i64}));
    });
}
