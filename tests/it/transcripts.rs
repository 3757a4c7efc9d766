//! Transcript tests: `tests/transcripts/*.tap` sessions fed to the real binary through a pipe,
//! output compared line by line (a line ending in `…` is a prefix match).

use crate::harness::{Env, exec};
use std::io::Write;
use std::process::Stdio;

struct Transcript {
    input: String,
    expected: Vec<String>,
}

fn parse(text: &str) -> Transcript {
    let mut input = String::new();
    let mut expected = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("tap> ") {
            input.push_str(cmd);
            input.push('\n');
        } else {
            expected.push(line.to_string());
        }
    }
    Transcript { input, expected }
}

fn matches(expected: &str, actual: &str) -> bool {
    match expected.strip_suffix('…') {
        Some(prefix) => actual.starts_with(prefix),
        None => expected == actual,
    }
}

fn run(name: &str, prepare: impl FnOnce(&Env)) {
    let text = std::fs::read_to_string(format!("{}/tests/transcripts/{name}.tap", env!("CARGO_MANIFEST_DIR")))
        .expect("transcript");
    let t = parse(&text);
    let env = Env::new(&format!("transcript-{name}"));
    prepare(&env);
    let mut child =
        env.command().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("tap");
    child.stdin.take().expect("stdin").write_all(t.input.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tap failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let actual: Vec<&str> = stdout.lines().collect();
    for (i, exp) in t.expected.iter().enumerate() {
        let got = actual.get(i).copied().unwrap_or("<no more output>");
        assert!(
            matches(exp, got),
            "{name}.tap, output line {}:\nexpected: {exp}\n     got: {got}\nwhole output:\n{stdout}",
            i + 1
        );
    }
    assert_eq!(actual.len(), t.expected.len(), "{name}.tap: extra output:\n{stdout}");
}

#[test]
fn basics() {
    run("basics", |env| {
        exec(
            &env.path("people.sqlite"),
            "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO people VALUES (1, 'ada'), (2, 'bob'), (3, 'cy');",
        );
    });
}
