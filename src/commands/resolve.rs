//! Name resolution as TapFlow does it — exact name, full 24-hex id, or the 6-hex short id that
//! `show dbs`/`show flows` print — except that an unknown name is always an error listing what
//! exists, never silence.

use super::session::Session;
use crate::api::connection::Connection;
use crate::api::task::Task;
use crate::error::{Error, Result};
use serde_json::Value;

/// What names resolve among: connection documents and tasks.
pub trait Named {
    fn name(&self) -> &str;
    fn id(&self) -> &str;
}

impl Named for Value {
    fn name(&self) -> &str {
        self.get("name").and_then(Value::as_str).unwrap_or("")
    }
    fn id(&self) -> &str {
        self.get("id").and_then(Value::as_str).unwrap_or("")
    }
}

impl Named for Connection {
    fn name(&self) -> &str {
        &self.name
    }
    fn id(&self) -> &str {
        &self.id
    }
}

impl Named for Task {
    fn name(&self) -> &str {
        &self.name
    }
    fn id(&self) -> &str {
        &self.id
    }
}

fn is_short_id(s: &str) -> bool {
    s.len() == 6 && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

fn is_full_id(s: &str) -> bool {
    s.len() == 24 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Find `sig` among `docs` by name first, then by full or short id.
pub fn find<'a, T: Named>(docs: &'a [T], sig: &str) -> Option<&'a T> {
    docs.iter()
        .find(|d| d.name() == sig)
        .or_else(|| if is_full_id(sig) { docs.iter().find(|d| d.id() == sig) } else { None })
        .or_else(|| if is_short_id(sig) { docs.iter().find(|d| d.id().ends_with(sig)) } else { None })
}

fn names<T: Named>(docs: &[T]) -> String {
    let mut n: Vec<&str> = docs.iter().map(Named::name).filter(|n| !n.is_empty()).collect();
    n.sort_unstable();
    if n.is_empty() { "none".to_string() } else { n.join(", ") }
}

pub fn connection(session: &Session, sig: &str) -> Result<Connection> {
    let docs = session.client.connections()?;
    remember_connections(session, &docs);
    find(&docs, sig).cloned().ok_or_else(|| {
        Error::not_found(format!("no connection named {sig:?}; connections: {} — `show dbs` lists them", names(&docs)))
    })
}

pub fn flow(session: &Session, sig: &str) -> Result<Task> {
    let docs = session.client.tasks()?;
    remember_flows(session, &docs);
    find(&docs, sig).cloned().ok_or_else(|| {
        Error::not_found(format!("no flow named {sig:?}; flows: {} — `show flows` lists them", names(&docs)))
    })
}

/// `table` or `conn.table`; returns (connection, table metadata).
pub fn table(session: &Session, sig: &str) -> Result<(Connection, crate::api::metadata::MetadataInstance)> {
    let (conn, table) = match sig.split_once('.') {
        Some((c, t)) if !c.is_empty() && !t.is_empty() => (connection(session, c)?, t.to_string()),
        _ => {
            let conn = session.used_connection().ok_or_else(|| {
                Error::usage(format!(
                    "no connection in use: `use NAME` first, or name it as CONNECTION.{sig} — `show dbs` lists connections"
                ))
            })?;
            (conn, sig.to_string())
        }
    };
    let tables = session.client.tables(&conn.id)?;
    let found = tables.iter().find(|t| t.original_name == table).cloned();
    match found {
        Some(t) => Ok((conn, t)),
        None => {
            let mut all: Vec<&str> = tables.iter().map(|t| t.original_name.as_str()).collect();
            all.sort_unstable();
            let cname = &conn.name;
            Err(Error::not_found(format!(
                "no table {table:?} in connection {cname}; tables: {}",
                if all.is_empty() {
                    "none (is its schema loaded? `show dbs` shows its status)".to_string()
                } else {
                    all.join(", ")
                }
            )))
        }
    }
}

pub fn remember_connections(session: &Session, docs: &[Connection]) {
    if let Ok(mut n) = session.names.lock() {
        n.connections = docs.iter().map(|d| d.name.clone()).collect();
    }
}

pub fn remember_flows(session: &Session, docs: &[Task]) {
    if let Ok(mut n) = session.names.lock() {
        n.flows = docs.iter().map(|d| d.name.clone()).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_then_ids_then_short_ids() {
        let docs = vec![
            json!({"id": "6720650ad6c2485881e9dc01", "name": "MySQL_ECommerce"}),
            json!({"id": "6720650ad6c2485881e9dc02", "name": "abc123"}),
        ];
        assert_eq!(find(&docs, "MySQL_ECommerce").map(|d| &d["id"]), Some(&json!("6720650ad6c2485881e9dc01")));
        assert_eq!(find(&docs, "6720650ad6c2485881e9dc02").map(|d| &d["name"]), Some(&json!("abc123")));
        assert_eq!(find(&docs, "e9dc01").map(|d| &d["name"]), Some(&json!("MySQL_ECommerce")));
        // A name that looks like a short id still resolves by name first (TapFlow's gotcha fixed).
        assert_eq!(find(&docs, "abc123").map(|d| &d["name"]), Some(&json!("abc123")));
        assert!(find(&docs, "nope").is_none());
    }
}
