//! A flow's status tells the truth: a record that loses its key stops the flow naming the
//! flow, the node and the record (and no NULL-key row reaches the target); a source that
//! cannot be reached keeps the flow out of `running`, with the reason in `status` and in the
//! error of the `start` that waited for it.

use crate::harness::{Env, exec, query, sqlite_src_dst, wait_until};
use std::time::Duration;

#[test]
fn a_record_without_its_key_stops_the_flow_and_never_reaches_the_target() {
    let env = Env::new("nullkey");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(
        &src,
        "CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100) INSERT INTO t SELECT 'k' || i, i FROM c;",
    );
    // The function nulls the key of some records only (every 7th), as a buggy function would.
    let script = sqlite_src_dst(&src, &dst)
        + r#"fn drop_some_keys(record) {
    if record.n % 7 == 0 { record.id = (); }
    record
}
Flow("nullkey").read_from("Src.t").rhai(drop_some_keys).write_to("Dst.t").save();
start("nullkey");"#;
    // The start may return before the first batch fails (the flow was running then).
    let _ = env.script("k.rhai", &script);
    let status = || env.tap(&["-c", "status nullkey"]).stdout;
    assert!(wait_until(Duration::from_secs(30), || status().contains("current status is: error")), "{}", status());
    let status = status();
    assert!(status.contains("flow nullkey"), "{status}");
    assert!(status.contains("key field \"id\" null"), "{status}");
    assert!(status.contains("\"n\":7"), "the record is named: {status}");
    if dst.exists() && query(&dst, "SELECT count(*) FROM sqlite_master WHERE name = 't'")[0][0] == "1" {
        assert_eq!(query(&dst, "SELECT count(*) FROM t WHERE id IS NULL")[0][0], "0");
    }
}

/// A TCP forwarder to `to` on a port of its own, until `close` (then connections are refused).
struct Forwarder {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Forwarder {
    fn new(to: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if !flag.load(Ordering::SeqCst) {
                    return; // the listener is dropped: the port refuses from now on
                }
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(&to) else { continue };
                let (mut c2, mut s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                let (mut c, mut s) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c, &mut s);
                    let _ = s.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Forwarder { port, open }
    }
    fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn an_unreachable_source_is_never_running_and_says_why() {
    let env = Env::new("unreachable");
    let pg = crate::engine_postgres::pg();
    let schema = format!("it_gone_{}", std::process::id());
    pg.psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id int PRIMARY KEY)"
    ));
    // The connection is saved (and tested) through the forwarder, which then goes away.
    let fwd = Forwarder::new(format!("{}:{}", pg.host, pg.port));
    let dst = env.path("dst.sqlite");
    let save = format!(
        r#"DataSource("postgres", "Gone", #{{ host: "127.0.0.1", port: {port}, database: "{db}", schema: "{schema}", user: "{u}", password: "{p}" }}).save();
DataSource("sqlite", "Dst", #{{ database: "{dst}" }}).save();
Flow("gone").read_from("Gone.t").write_to("Dst.t").save();"#,
        port = fwd.port,
        db = pg.database,
        u = pg.user,
        p = pg.password,
        dst = dst.display()
    );
    env.script("save.rhai", &save).ok();
    fwd.close();
    let run = env.script("start.rhai", "start(\"gone\");");
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.to_lowercase().contains("connection refused"), "the cause: {}", run.stderr);
    assert!(run.stderr.contains("flow gone is still scheduling"), "{}", run.stderr);
    assert!(
        run.stderr.contains("retrying: connection Gone: cannot connect to PostgreSQL at 127.0.0.1"),
        "{}",
        run.stderr
    );
    let status = env.tap(&["-c", "status gone"]);
    assert!(!status.stdout.contains("status is: running"), "{}", status.stdout);
    assert!(status.stdout.contains("retrying: connection Gone: cannot connect"), "{}", status.stdout);
    env.tap(&["-c", "stop gone"]).ok();
    assert!(
        wait_until(Duration::from_secs(20), || env.tap(&["-c", "status gone"]).stdout.contains("status is: stop")),
        "stops: {}",
        env.tap(&["-c", "status gone"]).stdout
    );
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

/// What would lose or loop data is refused: a rename to a non-string (in the script), a flow
/// writing into its own source table (at save), a rename onto a field the records keep (at
/// start, from the source's schema, before a row is copied).
#[test]
fn flows_that_would_lose_or_loop_data_are_refused() {
    let env = Env::new("refused");
    let src = env.path("src.sqlite");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT); INSERT INTO t VALUES (1, 'x', 'y'), (2, 'x', 'z');",
    );
    let conns = format!(r#"DataSource("sqlite", "Src", #{{ database: "{}" }}).save();"#, src.display());
    env.script("c.rhai", &conns).ok();

    let run =
        env.script("n.rhai", r#"Flow("num").read_from("Src.t").rename_fields(#{ a: 42 }).write_to("Src.u").save();"#);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("the new name of \"a\" is a i64, not a string"), "{}", run.stderr);

    let run = env.script("l.rhai", r#"Flow("loop").read_from("Src.t").write_to("Src.t").save();"#);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("writes into t, which it also reads"), "{}", run.stderr);

    let run = env.script(
        "m.rhai",
        r#"Flow("merge").read_from("Src.t").rename_fields(#{ a: "b" }).write_to("Src.u").save(); start("merge");"#,
    );
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("renames \"a\" to \"b\", a field the records already have"), "{}", run.stderr);
    let copied = query(&src, "SELECT count(*) FROM sqlite_master WHERE name = 'u'");
    assert_eq!(copied[0][0], "0", "nothing was written");
}

/// A crash at a known point of the snapshot (the failpoint aborts the engine right after the
/// second batch of 5,000 rows is written): the target holds exactly those rows, and after a
/// restart the flow finishes with the target equal to the source.
#[test]
fn a_crash_after_the_second_snapshot_batch_resumes_exactly() {
    let env = Env::new("failpoint");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000) INSERT INTO t SELECT i, 'v' || i FROM c;",
    );
    let mut engine = env.start_engine_with(&[("TAP_FAILPOINT", "after_batch:2")]);
    let script = sqlite_src_dst(&src, &dst) + r#"Flow("fp").read_from("Src.t").write_to("Dst.t").save(); start("fp");"#;
    let _ = env.script("fp.rhai", &script); // the engine may die before the start returns
    assert!(engine.wait_exit(Duration::from_secs(30)), "the failpoint ended the engine");
    assert_eq!(query(&dst, "SELECT count(*) FROM t")[0][0], "10000", "two batches, then the crash");
    let _engine = env.start_engine();
    // Row count and a checksum of every row.
    let sum = "SELECT count(*), sum(id), sum(length(v) * id), count(DISTINCT v) FROM t";
    let same = || query(&dst, sum);
    let want = query(&src, sum);
    assert!(wait_until(Duration::from_secs(60), || same() == want), "resumed: {:?} vs {want:?}", same());
}

#[test]
fn a_source_reads_in_the_batches_it_sets_and_a_sink_cleans_its_table_first() {
    let env = Env::new("objects");
    let src = env.path("src.sqlite");
    let dst = env.path("dst.sqlite");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20) INSERT INTO t SELECT i, 'v' || i FROM c;",
    );
    exec(&dst, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (100, 'old');");
    // The failpoint ends the engine after the second batch: with reads of 3 rows, 6 have
    // been written (with the default read size, one batch holds all 20 and it never fires).
    let mut engine = env.start_engine_with(&[("TAP_FAILPOINT", "after_batch:2")]);
    let script = sqlite_src_dst(&src, &dst)
        + r#"let f = Flow("objects").read_from(Source("Src", "t").initial_read_size(3)).write_to(Sink("Dst", "t").clean_data());
             print(f.show());
             f.save(); start("objects");"#;
    let run = env.script("o.rhai", &script);
    assert!(
        run.stdout.contains(r#".read_from(Source("Src", "t").initial_read_size(3))"#)
            && run.stdout.contains(r#".write_to(Sink("Dst", "t").clean_data(), ["id"])"#),
        "show prints the builder chain: {}",
        run.stdout
    );
    assert!(engine.wait_exit(Duration::from_secs(30)), "the failpoint ended the engine after two batches");
    assert_eq!(query(&dst, "SELECT count(*), min(id), max(id) FROM t")[0], vec!["6", "1", "6"], "the old row removed");
    // Resumed, it goes on from the checkpoint; the target is not cleaned a second time.
    let _engine = env.start_engine();
    assert!(
        wait_until(Duration::from_secs(60), || query(&dst, "SELECT count(*) FROM t")[0][0] == "20"),
        "resumed to every row"
    );
    let bad = env.script("bad.rhai", r#"Source("Src", "t").initial_read_size(0);"#);
    assert!(bad.code != 0 && bad.stderr.contains("initial_read_size: 0 is not a count"), "{}", bad.stderr);
}
