//! The only writer to the terminal: lines, tables (comfy-table), records (pretty JSON),
//! warnings and errors; `--json` switches verbs to machine-readable JSON.
//!
//! Secrets never reach it in clear: connection documents pass through [`mask_secrets`] first.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use serde_json::Value;
use std::io::Write;

#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// A line of normal output. A closed pipe ends the program quietly (exit 0).
    pub fn line(&self, s: &str) {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{s}").is_err() {
            std::process::exit(0);
        }
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
        eprintln!("warning: {s}");
    }

    pub fn notice(&self, s: &str) {
        eprintln!("{s}");
    }

    pub fn error(&self, s: &str) {
        eprintln!("error: {s}");
    }
}

/// Replace the password in a URI (`mongodb://user:secret@host`) with `******`.
pub fn mask_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else { return uri.to_string() };
    let rest = &uri[scheme_end + 3..];
    let Some(at) = rest.rfind('@') else { return uri.to_string() };
    let creds = &rest[..at];
    match creds.split_once(':') {
        Some((user, _)) => format!("{}://{}:******@{}", &uri[..scheme_end], user, &rest[at + 1..]),
        None => uri.to_string(),
    }
}

/// Mask every secret-looking key (password, secret, access code/key) and URI credentials.
pub fn mask_secrets(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let key = k.to_ascii_lowercase();
                let secret =
                    key.contains("password") || key.contains("secret") || key == "sk" || key.contains("access_code");
                if secret && !x.is_null() {
                    *x = Value::String("******".into());
                } else if key == "uri"
                    && let Some(s) = x.as_str()
                {
                    *x = Value::String(mask_uri(s));
                } else {
                    mask_secrets(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_secrets),
        _ => {}
    }
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
