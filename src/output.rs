//! The only writer to the terminal: lines, tables (comfy-table), records (pretty JSON),
//! warnings and errors; `--json` switches verbs to machine-readable JSON.
//!
//! Secrets never reach it in clear: connection documents pass through [`mask_secrets`] first.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use serde_json::Value;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout could not be written (a closed pipe, `tap … | head -1`): the rest of the
/// output is discarded, the work goes on, and the exit code stays the work's.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// A line on stderr if it can take it: a closed or full stderr is never a reason to stop (or
/// to panic, as `eprintln!` would).
fn to_stderr(s: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{s}");
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// A line of normal output. Once stdout is closed the rest is discarded quietly: the
    /// work goes on and decides the exit code.
    pub fn line(&self, s: &str) {
        if STDOUT_GONE.load(Ordering::Relaxed) {
            return;
        }
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{s}").and_then(|_| out.flush()).is_err() {
            STDOUT_GONE.store(true, Ordering::Relaxed);
        }
    }

    /// Whether stdout is a terminal that takes a live line (not in JSON mode).
    pub fn live_ok(&self) -> bool {
        !self.json && std::io::IsTerminal::is_terminal(&std::io::stdout())
    }

    /// Replace the terminal's current line with `s` (no newline): a progress line.
    pub fn live(&self, s: &str) {
        if STDOUT_GONE.load(Ordering::Relaxed) {
            return;
        }
        let mut out = std::io::stdout().lock();
        if write!(out, "\r\x1b[2K{s}").and_then(|_| out.flush()).is_err() {
            STDOUT_GONE.store(true, Ordering::Relaxed);
        }
    }

    /// Clear the live line.
    pub fn live_end(&self) {
        self.live("");
    }

    /// Human text; suppressed in JSON mode (where `value` carries the data).
    pub fn text(&self, s: &str) {
        if !self.json {
            self.line(s);
        }
    }

    /// Machine-readable output; only in JSON mode.
    pub fn value(&self, v: &Value) {
        if self.json {
            self.line(&serde_json::to_string(v).unwrap_or_default());
        }
    }

    /// Say `human` or print `v`, depending on the mode.
    pub fn either(&self, human: &str, v: &Value) {
        if self.json { self.value(v) } else { self.line(human) }
    }

    pub fn record(&self, v: &Value) {
        if self.json {
            self.value(v);
        } else {
            self.line(&serde_json::to_string_pretty(v).unwrap_or_default());
        }
    }

    pub fn table(&self, headers: &[&str], rows: Vec<Vec<String>>) {
        if self.json {
            let items: Vec<Value> = rows
                .iter()
                .map(|r| {
                    Value::Object(
                        headers.iter().zip(r).map(|(h, c)| (h.to_string(), Value::String(c.clone()))).collect(),
                    )
                })
                .collect();
            self.value(&Value::Array(items));
            return;
        }
        let mut t = comfy_table::Table::new();
        t.set_header(headers.to_vec());
        for r in rows {
            t.add_row(r);
        }
        self.line(&t.to_string());
    }

    pub fn warn(&self, s: &str) {
        to_stderr(&format!("warning: {s}"));
    }

    pub fn notice(&self, s: &str) {
        to_stderr(s);
    }

    pub fn error(&self, s: &str) {
        to_stderr(&format!("error: {s}"));
    }
}

/// Mask every secret of a document before it is shown (see [`crate::connectors::secrets`]).
pub fn mask_secrets(v: &mut Value) {
    crate::connectors::secrets::mask(v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked() {
        let mut v = json!({"config": {"password": "p", "uri": "mongodb://u:secret@h:1/db", "host": "h"}});
        mask_secrets(&mut v);
        assert_eq!(v, json!({"config": {"password": "******", "uri": "mongodb://u:******@h:1/db", "host": "h"}}));
    }
}
