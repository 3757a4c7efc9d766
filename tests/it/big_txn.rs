//! One source transaction larger than many batches (100,000 inserted rows plus updates and a
//! delete, committed at once) reaches the target whole and exact from MySQL and from
//! PostgreSQL, and a SIGKILL in its middle resumes exactly: the connectors hand such a
//! transaction out in batches, so the engine's memory follows the batch size, not the
//! transaction's.

use crate::engine_mysql::my;
use crate::engine_postgres::pg;
use crate::harness::{Env, query, wait_until};
use std::time::Duration;

/// Rows, and sums that change with any lost, duplicated or stale row (the target keys on id).
const DIGEST: &str = "SELECT count(*), sum(id), sum(qty), sum(length(name)), sum((id * 31 + qty) % 1000003) FROM items";

fn sqlite_digest(path: &std::path::Path) -> String {
    if !path.exists() || query(path, "SELECT count(*) FROM sqlite_master WHERE name = 'items'")[0][0] == "0" {
        return "<no table yet>".into();
    }
    query(path, DIGEST)[0].join("\t")
}

fn target_rows(path: &std::path::Path) -> u64 {
    if !path.exists() || query(path, "SELECT count(*) FROM sqlite_master WHERE name = 'items'")[0][0] == "0" {
        return 0;
    }
    query(path, "SELECT count(*) FROM items")[0][0].parse().unwrap_or(0)
}

/// Snapshot 10 rows, commit the big transaction during CDC with the engine set to abort after
/// its fourth batch (the snapshot's one plus three of the transaction's), check it died inside
/// the transaction, restart and wait for the target to equal the source.
fn big_transaction_resumes(
    env: &Env,
    flow: &str,
    datasource: &str,
    commit_big: &dyn Fn(),
    source_digest: &dyn Fn() -> String,
    after_kill: &dyn Fn(u64),
) {
    let dst = env.path("dst.sqlite");
    let mut engine = env.start_engine_with(&[("TAP_FAILPOINT", "after_batch:4")]);
    let script = format!(
        r#"{datasource}
DataSource("sqlite", "Lite", #{{ database: "{}" }}).save();
Flow("{flow}").read_from("S.items").write_to("Lite.items").save();
start("{flow}");
Flow("{flow}").wait_initial_sync();"#,
        dst.display()
    );
    env.script("big.rhai", &script).ok();
    assert_eq!(target_rows(&dst), 10, "the snapshot");
    commit_big();
    assert!(engine.wait_exit(Duration::from_secs(120)), "the failpoint ended the engine inside the transaction");
    let landed = target_rows(&dst);
    assert!(landed > 10 && landed < 100_010, "killed inside the transaction: {landed} rows in the target");
    after_kill(landed);
    let _engine = env.start_engine();
    let want = source_digest();
    assert!(
        wait_until(Duration::from_secs(180), || sqlite_digest(&dst) == want),
        "target {} != source {want}",
        sqlite_digest(&dst)
    );
    env.tap(&["-c", &format!("stop {flow}")]).ok();
    env.tap(&["-c", &format!("delete {flow} -y")]).ok();
}

#[test]
fn a_100k_row_mysql_transaction_arrives_whole_and_resumes_after_a_kill_inside_it() {
    let my = my();
    let env = Env::new("bigtxn-my");
    let db = format!("it_bigtxn_{}", std::process::id());
    my.sql("mysql", &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
    my.sql(
        &db,
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), qty INT);
         INSERT INTO items SELECT seq, CONCAT('item ', seq), seq % 97 FROM seq_1_to_10;",
    );
    let datasource = my.datasource("S", &db, &my.user, &my.password);
    let commit_big = || {
        my.sql(
            &db,
            "START TRANSACTION;
             INSERT INTO items SELECT seq, CONCAT('big ', seq), seq % 89 FROM seq_11_to_100010;
             UPDATE items SET qty = qty + 1000 WHERE id <= 5 OR id % 1000 = 0;
             DELETE FROM items WHERE id = 7 OR id % 997 = 0;
             COMMIT;",
        );
    };
    let digest = || my.sql(&db, DIGEST);
    // The batches of a binlog transaction end on row-event boundaries: near 5,000 rows each,
    // so only "inside the transaction" is checked.
    let after_kill = |_landed: u64| {
        my.sql(&db, "INSERT INTO items VALUES (200000, 'after', 1)");
    };
    big_transaction_resumes(&env, "bigmy", &datasource, &commit_big, &digest, &after_kill);
    my.sql("mysql", &format!("DROP DATABASE {db}"));
}

#[test]
fn a_100k_row_postgres_transaction_arrives_whole_and_resumes_after_a_kill_inside_it() {
    let pg = pg();
    let env = Env::new("bigtxn-pg");
    let schema = format!("it_bigtxn_{}", std::process::id());
    pg.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.items (id int PRIMARY KEY, name text, qty int);
         INSERT INTO {schema}.items SELECT i, 'item ' || i, i % 97 FROM generate_series(1, 10) i;"
    ));
    let datasource = pg.datasource("S", &schema);
    let commit_big = || {
        pg.psql(&format!(
            "BEGIN;
             INSERT INTO {schema}.items SELECT i, 'big ' || i, i % 89 FROM generate_series(11, 100010) i;
             UPDATE {schema}.items SET qty = qty + 1000 WHERE id <= 5 OR id % 1000 = 0;
             DELETE FROM {schema}.items WHERE id = 7 OR id % 997 = 0;
             COMMIT;"
        ));
    };
    let digest = || pg.psql(&DIGEST.replace("FROM items", &format!("FROM {schema}.items"))).replace('|', "\t");
    let after_kill = |landed: u64| {
        // pgoutput hands out one change at a time: the batches are exactly 5,000.
        assert_eq!(landed, 10 + 3 * 5000);
        pg.psql(&format!("INSERT INTO {schema}.items VALUES (200000, 'after', 1)"));
    };
    big_transaction_resumes(&env, "bigpg", &datasource, &commit_big, &digest, &after_kill);
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}
