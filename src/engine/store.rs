//! The engine's store: one SQLite file (`engine.db`) in the data dir holding connections,
//! tasks and table metadata as JSON documents, plus checkpoints, task logs, metrics and access
//! tokens.
//!
//! Documents are kept whole (TapData's entities have hundreds of optional fields, and clients
//! round-trip what they do not understand), filtered in memory by [`super::filter`]. The engine
//! holds few of them, so this stays simple and fast enough. Every write is its own transaction.

use crate::error::{Error, Result};
use crate::model::now_ms;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;

pub const CONNECTIONS: &str = "Connections";
pub const TASKS: &str = "Task";
pub const METADATA: &str = "MetadataInstances";

pub struct Store {
    conn: Mutex<Connection>,
    dir: std::path::PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("engine.db");
        super::create_private(&path)?;
        let conn = Connection::open(&path)
            .map_err(|e| Error::config(format!("cannot open the engine store {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS docs (kind TEXT NOT NULL, id TEXT NOT NULL, name TEXT, doc TEXT NOT NULL,
                                              PRIMARY KEY (kind, id));
             CREATE INDEX IF NOT EXISTS docs_name ON docs(kind, name);
             CREATE TABLE IF NOT EXISTS checkpoints (task_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS logs (seq INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL,
                 record_id TEXT, ts INTEGER NOT NULL, level TEXT NOT NULL, node_id TEXT, message TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS logs_task ON logs(task_id, ts);
             CREATE TABLE IF NOT EXISTS metrics (task_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS tokens (token TEXT PRIMARY KEY, created INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS unwind_marks (task_id TEXT NOT NULL, node_id TEXT NOT NULL, key TEXT NOT NULL,
                 n INTEGER NOT NULL, PRIMARY KEY (task_id, node_id, key));",
        )?;
        Ok(Self { conn: Mutex::new(conn), dir: dir.to_path_buf() })
    }

    /// The engine's data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn.lock().map_err(|_| Error::internal("store lock poisoned"))?;
        f(&conn)
    }

    pub fn put(&self, kind: &str, doc: &Value) -> Result<()> {
        let id = doc.get("id").and_then(Value::as_str).ok_or_else(|| Error::internal("document without id"))?;
        let name = doc.get("name").and_then(Value::as_str);
        let text = serde_json::to_string(doc)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO docs(kind, id, name, doc) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(kind, id) DO UPDATE SET name = excluded.name, doc = excluded.doc",
                params![kind, id, name, text],
            )?;
            Ok(())
        })
    }

    /// A stored connection, typed; an id that names none is `NotFound`, naming it.
    pub fn connection(&self, id: &str) -> Result<crate::api::connection::Connection> {
        let doc = self
            .get(CONNECTIONS, id)?
            .ok_or_else(|| Error::not_found(format!("connection {id} does not exist (it was deleted)")))?;
        serde_json::from_value(doc).map_err(|e| Error::internal(format!("stored connection {id}: {e}")))
    }

    /// The connector of a stored connection, opened with its checked config.
    pub fn open_connection(&self, id: &str) -> Result<Box<dyn crate::connectors::Connector>> {
        let c = self.connection(id)?;
        crate::connectors::open(&c.database_type, &Value::Object(c.config))
            .map_err(|e| e.context(format!("connection {}", c.name)))
    }

    pub fn get(&self, kind: &str, id: &str) -> Result<Option<Value>> {
        self.with(|c| {
            let text: Option<String> = c
                .query_row("SELECT doc FROM docs WHERE kind = ?1 AND id = ?2", params![kind, id], |r| r.get(0))
                .optional()?;
            Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
        })
    }

    /// Read, change and write one document under the store's lock, so concurrent updates
    /// (an API call and the runner) do not lose each other's fields. Returns the new document.
    pub fn update(&self, kind: &str, id: &str, f: impl FnOnce(&mut Value)) -> Result<Option<Value>> {
        self.with(|c| {
            let text: Option<String> = c
                .query_row("SELECT doc FROM docs WHERE kind = ?1 AND id = ?2", params![kind, id], |r| r.get(0))
                .optional()?;
            let Some(text) = text else { return Ok(None) };
            let mut doc: Value = serde_json::from_str(&text)?;
            f(&mut doc);
            let name = doc.get("name").and_then(Value::as_str).map(str::to_string);
            c.execute(
                "UPDATE docs SET doc = ?3, name = ?4 WHERE kind = ?1 AND id = ?2",
                params![kind, id, serde_json::to_string(&doc)?, name],
            )?;
            Ok(Some(doc))
        })
    }

    pub fn find_by_name(&self, kind: &str, name: &str) -> Result<Option<Value>> {
        self.with(|c| {
            let text: Option<String> = c
                .query_row("SELECT doc FROM docs WHERE kind = ?1 AND name = ?2 LIMIT 1", params![kind, name], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
        })
    }

    pub fn list(&self, kind: &str) -> Result<Vec<Value>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT doc FROM docs WHERE kind = ?1 ORDER BY rowid")?;
            let rows = st.query_map([kind], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for r in rows {
                out.push(serde_json::from_str(&r?)?);
            }
            Ok(out)
        })
    }

    pub fn delete(&self, kind: &str, id: &str) -> Result<bool> {
        self.with(|c| Ok(c.execute("DELETE FROM docs WHERE kind = ?1 AND id = ?2", params![kind, id])? > 0))
    }

    /// Delete every metadata document of a connection.
    pub fn delete_metadata_of(&self, connection_id: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM docs WHERE kind = ?1 AND json_extract(doc, '$.source.id') = ?2",
                params![METADATA, connection_id],
            )?;
            Ok(())
        })
    }

    pub fn checkpoint(&self, task_id: &str) -> Result<Option<Value>> {
        self.with(|c| {
            let text: Option<String> =
                c.query_row("SELECT doc FROM checkpoints WHERE task_id = ?1", [task_id], |r| r.get(0)).optional()?;
            Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
        })
    }

    pub fn save_checkpoint(&self, task_id: &str, doc: &Value) -> Result<()> {
        let text = serde_json::to_string(doc)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO checkpoints(task_id, doc) VALUES (?1, ?2) ON CONFLICT(task_id) DO UPDATE SET doc = excluded.doc",
                params![task_id, text],
            )?;
            Ok(())
        })
    }

    /// Deletes the checkpoint and the state kept with it (the unwind marks).
    pub fn delete_checkpoint(&self, task_id: &str) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM checkpoints WHERE task_id = ?1", [task_id])?;
            c.execute("DELETE FROM unwind_marks WHERE task_id = ?1", [task_id])?;
            Ok(())
        })
    }

    /// An unwind node's marks: for each source key, the most rows its array ever became.
    pub fn unwind_marks(&self, task_id: &str, node_id: &str, keys: &[String]) -> Result<Vec<u64>> {
        self.with(|c| {
            let mut st =
                c.prepare_cached("SELECT n FROM unwind_marks WHERE task_id = ?1 AND node_id = ?2 AND key = ?3")?;
            keys.iter()
                .map(|k| {
                    let n: Option<i64> = st.query_row(params![task_id, node_id, k], |r| r.get(0)).optional()?;
                    Ok(n.unwrap_or(0).max(0) as u64)
                })
                .collect()
        })
    }

    /// Raise marks (never lower them), in one transaction.
    pub fn raise_unwind_marks(&self, task_id: &str, node_id: &str, marks: &[(String, u64)]) -> Result<()> {
        if marks.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO unwind_marks(task_id, node_id, key, n) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(task_id, node_id, key) DO UPDATE SET n = max(n, excluded.n)",
                )?;
                for (k, n) in marks {
                    st.execute(params![task_id, node_id, k, *n as i64])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    pub fn log(&self, task_id: &str, record_id: &str, level: &str, message: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO logs(task_id, record_id, ts, level, message) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![task_id, record_id, now_ms(), level, message],
            )?;
            Ok(())
        })
    }

    /// Task logs, newest first (or oldest first with `ascending`), filtered by level.
    #[allow(clippy::too_many_arguments)]
    pub fn logs(
        &self,
        task_id: &str,
        levels: &[String],
        start: i64,
        end: i64,
        limit: usize,
        skip: usize,
        ascending: bool,
    ) -> Result<(u64, Vec<crate::api::log::LogItem>)> {
        self.with(|c| {
            let levels_json = serde_json::to_string(levels)?;
            let filter = "task_id = ?1 AND ts >= ?2 AND ts < ?3 AND level IN (SELECT value FROM json_each(?4))";
            let total: i64 = c.query_row(
                &format!("SELECT count(*) FROM logs WHERE {filter}"),
                params![task_id, start, end, levels_json],
                |r| r.get(0),
            )?;
            let order = if ascending { "ASC" } else { "DESC" };
            let mut st = c.prepare(&format!(
                "SELECT seq, record_id, ts, level, message FROM logs WHERE {filter} ORDER BY seq {order} LIMIT ?5 OFFSET ?6"
            ))?;
            let rows = st.query_map(params![task_id, start, end, levels_json, limit as i64, skip as i64], |r| {
                let record = r.get::<_, Option<String>>(1)?.unwrap_or_default();
                let mut item = crate::api::log::LogItem::new(
                    task_id,
                    &record,
                    r.get::<_, i64>(2)?,
                    &r.get::<_, String>(3)?,
                    &r.get::<_, String>(4)?,
                );
                item.id = format!("{:024x}", r.get::<_, i64>(0)?);
                Ok(item)
            })?;
            let items = rows.collect::<std::result::Result<Vec<_>, _>>()?;
            Ok((total.max(0) as u64, items))
        })
    }

    pub fn delete_logs(&self, task_id: &str) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM logs WHERE task_id = ?1", [task_id])?;
            Ok(())
        })
    }

    pub fn metrics(&self, task_id: &str) -> Result<Option<Value>> {
        self.with(|c| {
            let text: Option<String> =
                c.query_row("SELECT doc FROM metrics WHERE task_id = ?1", [task_id], |r| r.get(0)).optional()?;
            Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
        })
    }

    pub fn save_metrics(&self, task_id: &str, doc: &Value) -> Result<()> {
        let text = serde_json::to_string(doc)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO metrics(task_id, doc) VALUES (?1, ?2) ON CONFLICT(task_id) DO UPDATE SET doc = excluded.doc",
                params![task_id, text],
            )?;
            Ok(())
        })
    }

    pub fn delete_metrics(&self, task_id: &str) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM metrics WHERE task_id = ?1", [task_id])?;
            Ok(())
        })
    }

    /// Keep a new token; tokens older than `ttl_ms` go at the same time (every `tap -c` makes one).
    pub fn add_token(&self, token: &str, ttl_ms: i64) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM tokens WHERE created < ?1", params![now_ms() - ttl_ms])?;
            c.execute("INSERT OR REPLACE INTO tokens(token, created) VALUES (?1, ?2)", params![token, now_ms()])?;
            Ok(())
        })
    }

    /// How many tokens are kept.
    pub fn token_count(&self) -> Result<u64> {
        self.with(|c| Ok(c.query_row("SELECT count(*) FROM tokens", [], |r| r.get::<_, i64>(0))?.max(0) as u64))
    }

    /// Whether `token` was issued within `ttl_ms`.
    pub fn token_valid(&self, token: &str, ttl_ms: i64) -> Result<bool> {
        self.with(|c| {
            let created: Option<i64> =
                c.query_row("SELECT created FROM tokens WHERE token = ?1", [token], |r| r.get(0)).optional()?;
            Ok(created.is_some_and(|t| now_ms() - t < ttl_ms))
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn old_tokens_are_pruned_when_a_new_one_is_kept() {
        let dir = std::env::temp_dir().join(format!("tap-store-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = super::Store::open(&dir).expect("store");
        let day = 24 * 3600 * 1000;
        for t in ["a", "b", "c"] {
            store.add_token(t, day).expect("token");
        }
        assert_eq!(store.token_count().expect("count"), 3);
        // With a TTL of -1 ms every earlier token is past it: only the new one stays.
        store.add_token("d", -1).expect("token");
        assert_eq!(store.token_count().expect("count"), 1);
        assert!(store.token_valid("d", day).expect("valid"));
        assert!(!store.token_valid("a", day).expect("valid"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
