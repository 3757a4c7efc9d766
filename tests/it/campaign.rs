//! The fault campaign: SQLite, PostgreSQL and MySQL sources into each of the four targets, the
//! engine killed (aborted at a runtime failpoint, as a SIGKILL would end it) three times per
//! pair — in the snapshot, at the first saved CDC position, and after a CDC batch is written but
//! before its position is saved, while a writer keeps committing — and restarted each time.
//! In the end the target holds exactly the source's rows: the same count, every row equal (the
//! comparison is of all rows, sorted), no duplicates. 12 pairs × 3 = 36 kills; the lookup
//! build's kills are in `lookup.rs`.

use crate::engine_mongo::{Driver, mongo_uri};
use crate::engine_mysql::my;
use crate::engine_postgres::pg;
use crate::harness::{EngineProc, Env, exec, query};
use std::time::Duration;

const ROWS: u64 = 6000;

struct Pair {
    env: Env,
    source: &'static str,
    target: &'static str,
    /// Schema or database names of this pair on the shared servers.
    src_tag: String,
    dst_tag: String,
}

impl Pair {
    fn new(source: &'static str, target: &'static str) -> Self {
        let pid = std::process::id();
        Pair {
            env: Env::new(&format!("campaign-{source}-{target}")),
            source,
            target,
            src_tag: format!("cps_{source}_{target}_{pid}"),
            dst_tag: format!("cpt_{source}_{target}_{pid}"),
        }
    }

    fn datasource(&self, name: &str, kind: &str, tag: &str, file: &str) -> String {
        match kind {
            "sqlite" => format!(
                r#"DataSource("sqlite", "{name}", #{{ database: "{}" }}).save();"#,
                self.env.path(file).display()
            ),
            "postgres" => pg().datasource(name, tag),
            "mysql" => {
                let m = my();
                format!(
                    r#"DataSource("mysql", "{name}", #{{ host: "{}", port: {}, database: "{tag}", user: "{}", password: "{}" }}).save();"#,
                    m.host, m.port, m.user, m.password
                )
            }
            _ => format!(r#"DataSource("mongodb", "{name}", #{{ uri: "{}" }}).save();"#, mongo_uri(tag)),
        }
    }

    /// Fresh schemas or databases for the source and the target.
    fn reset(&self) {
        for (kind, tag) in [(self.source, &self.src_tag), (self.target, &self.dst_tag)] {
            match kind {
                "postgres" => {
                    pg().psql(&format!("DROP SCHEMA IF EXISTS {tag} CASCADE; CREATE SCHEMA {tag}"));
                }
                "mysql" => {
                    my().sql("mysql", &format!("DROP DATABASE IF EXISTS {tag}; CREATE DATABASE {tag}"));
                }
                "mongodb" => {
                    let d = Driver::new(tag, "copy");
                    d.run(d.coll.client().database(tag).drop());
                }
                _ => {}
            }
        }
    }

    fn drop_all(&self) {
        for (kind, tag) in [(self.source, &self.src_tag), (self.target, &self.dst_tag)] {
            match kind {
                "postgres" => {
                    pg().psql(&format!("DROP SCHEMA IF EXISTS {tag} CASCADE"));
                }
                "mysql" => {
                    my().sql("mysql", &format!("DROP DATABASE IF EXISTS {tag}"));
                }
                "mongodb" => {
                    let d = Driver::new(tag, "copy");
                    d.run(d.coll.client().database(tag).drop());
                }
                _ => {}
            }
        }
    }

    /// Run statements on the source.
    fn source_sql(&self, sql: &str) {
        match self.source {
            "sqlite" => exec(&self.env.path("src.sqlite"), sql),
            "postgres" => {
                pg().psql(&format!("SET search_path = {}; {sql}", self.src_tag));
            }
            _ => {
                my().sql(&self.src_tag, sql);
            }
        }
    }

    /// Every row of a table as `id|name|qty`, sorted by id.
    fn rows(&self, kind: &str, tag: &str, file: &str, table: &str) -> Vec<String> {
        let lines = |s: String| s.lines().filter(|l| !l.is_empty()).map(str::to_string).collect::<Vec<_>>();
        let mut out = match kind {
            "sqlite" => {
                let path = self.env.path(file);
                if !path.exists()
                    || query(&path, &format!("SELECT count(*) FROM sqlite_master WHERE name = '{table}'"))[0][0] == "0"
                {
                    return Vec::new();
                }
                query(&path, &format!("SELECT id, name, qty FROM {table}")).into_iter().map(|r| r.join("|")).collect()
            }
            "postgres" => {
                let p = pg();
                if p.psql(&format!("SELECT to_regclass('{tag}.{table}') IS NULL")) == "t" {
                    return Vec::new();
                }
                lines(p.psql(&format!("SELECT id || '|' || name || '|' || qty FROM {tag}.{table}")))
            }
            "mysql" => {
                let m = my();
                let exists = m.sql(
                    "mysql",
                    &format!("SELECT count(*) FROM information_schema.tables WHERE table_schema = '{tag}' AND table_name = '{table}'"),
                );
                if exists == "0" {
                    return Vec::new();
                }
                lines(m.sql(tag, &format!("SELECT CONCAT_WS('|', id, name, qty) FROM {table}")))
            }
            _ => {
                use mongodb::bson::Bson;
                let d = Driver::new(tag, table);
                let docs: Vec<mongodb::bson::Document> = d.rt.block_on(async {
                    use futures_util::TryStreamExt;
                    d.coll.find(mongodb::bson::doc! {}).await.expect("find").try_collect().await.expect("docs")
                });
                let text = |v: Option<&Bson>| match v {
                    Some(Bson::Int32(i)) => i.to_string(),
                    Some(Bson::Int64(i)) => i.to_string(),
                    Some(Bson::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => "<missing>".into(),
                };
                docs.iter()
                    .map(|d| format!("{}|{}|{}", text(d.get("id")), text(d.get("name")), text(d.get("qty"))))
                    .collect()
            }
        };
        out.sort_by_key(|r| r.split('|').next().and_then(|id| id.parse::<i64>().ok()).unwrap_or(i64::MAX));
        out
    }

    fn source_rows(&self) -> Vec<String> {
        self.rows(self.source, &self.src_tag, "src.sqlite", "items")
    }
    fn target_rows(&self) -> Vec<String> {
        self.rows(self.target, &self.dst_tag, "dst.sqlite", "copy")
    }

    fn engine_with(&self, failpoint: &str) -> EngineProc {
        self.env.start_engine_with(&[("TAP_FAILPOINT", failpoint)])
    }
}

fn campaign(source: &'static str, target: &'static str) {
    let p = Pair::new(source, target);
    p.reset();
    let create = "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), qty INT)";
    p.source_sql(create);
    // 6,000 rows: more than one snapshot batch (5,000).
    let mut values = Vec::new();
    for i in 1..=ROWS {
        values.push(format!("({i}, 'item {i}', {})", i % 97));
        if values.len() == 1000 {
            p.source_sql(&format!("INSERT INTO items VALUES {}", values.join(", ")));
            values.clear();
        }
    }
    let flow = format!("cp_{source}_{target}");
    let script = format!(
        "{}\n{}\nFlow(\"{flow}\").read_from(\"S.items\").write_to(\"T.copy\").save();\nstart(\"{flow}\");",
        p.datasource("S", source, &p.src_tag, "src.sqlite"),
        p.datasource("T", target, &p.dst_tag, "dst.sqlite"),
    );

    // Kill 1: right after the first snapshot batch is written.
    let mut engine = p.engine_with("after_batch:1");
    let _ = p.env.script("flow.rhai", &script); // the engine may die before the start returns
    assert!(engine.wait_exit(Duration::from_secs(60)), "{flow}: the failpoint ended the engine in the snapshot");
    assert_eq!(p.target_rows().len(), 5000, "{flow}: killed after the first batch");
    // Changes while the engine is down.
    p.source_sql("UPDATE items SET qty = qty + 1000 WHERE id % 10 = 0");
    p.source_sql("DELETE FROM items WHERE id % 13 = 0");
    p.source_sql("INSERT INTO items VALUES (7001, 'new 1', 1), (7002, 'new 2', 2)");

    // Kill 2: the snapshot finishes, CDC starts, and the engine dies right after saving its first
    // position (not yet acknowledged to the source).
    let mut engine = p.engine_with("after_checkpoint:1");
    assert!(
        engine.wait_exit(Duration::from_secs(90)),
        "{flow}: the failpoint ended the engine at the first CDC position"
    );

    // Kill 3: after the second CDC batch is written, before its position is saved, while a
    // writer commits small transactions.
    let mut engine = p.engine_with("after_batch:2");
    let mut died = false;
    for r in 0..600 {
        p.source_sql(&format!(
            "UPDATE items SET qty = qty + 1 WHERE id % 50 = {}; INSERT INTO items VALUES ({}, 'late {r}', {r})",
            r % 50,
            10_000 + r
        ));
        if engine.wait_exit(Duration::from_millis(20)) {
            died = true;
            break;
        }
    }
    assert!(died, "{flow}: the failpoint ended the engine in CDC");
    p.source_sql("UPDATE items SET name = 'last' WHERE id = 1");

    // Restarted for good: the target equals the source.
    let _engine = p.env.start_engine();
    let want = p.source_rows();
    let every = Duration::from_millis(if target == "mongodb" { 1000 } else { 50 });
    let same = crate::harness::wait_every(Duration::from_secs(120), every, || p.target_rows() == want);
    if !same {
        let got = p.target_rows();
        let missing: Vec<&String> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
        let extra: Vec<&String> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
        let status = p.env.tap(&["-c", &format!("status {flow}")]).stdout;
        let logs = p.env.tap(&["-c", &format!("logs {flow}")]).stdout;
        panic!(
            "{flow}: target ({} rows) != source ({} rows); missing {missing:?}, extra {extra:?}\n{status}\n{logs}",
            got.len(),
            want.len()
        );
    }
    p.env.tap(&["-c", &format!("stop {flow}")]).ok();
    p.env.tap(&["-c", &format!("delete {flow} -y")]).ok();
    p.drop_all();
}

macro_rules! pairs {
    ($($name:ident: $source:literal => $target:literal),* $(,)?) => {
        $(#[test] fn $name() { campaign($source, $target); })*
    };
}

pairs! {
    sqlite_to_sqlite: "sqlite" => "sqlite",
    sqlite_to_postgres: "sqlite" => "postgres",
    sqlite_to_mysql: "sqlite" => "mysql",
    sqlite_to_mongodb: "sqlite" => "mongodb",
    postgres_to_sqlite: "postgres" => "sqlite",
    postgres_to_postgres: "postgres" => "postgres",
    postgres_to_mysql: "postgres" => "mysql",
    postgres_to_mongodb: "postgres" => "mongodb",
    mysql_to_sqlite: "mysql" => "sqlite",
    mysql_to_postgres: "mysql" => "postgres",
    mysql_to_mysql: "mysql" => "mysql",
    mysql_to_mongodb: "mysql" => "mongodb",
}
