//! The source side: CDC by triggers into the change log, read by `seq`, and its positions.

use super::*;
use serde::{Deserialize, Serialize};

/// A change-log position as a checkpoint keeps it: the `seq` of the last change handed out.
/// Read and written only here.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogPosition {
    pub seq: i64,
}

impl LogPosition {
    pub fn read(p: &Position) -> Result<Self> {
        crate::connectors::saved_position(p, "SQLite change-log")
    }

    pub fn value(self) -> Position {
        json!({ "seq": self.seq })
    }
}

/// Install (or re-install) the CDC triggers of `table`, capturing its current columns; returns
/// those columns, and those the triggers it replaces did not capture (added since).
pub(super) fn arm_table(conn: &Connection, table: &str, path: &str) -> Result<(Vec<String>, Vec<String>)> {
    let before: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
            [format!("_tap_i_{table}")],
            |r| r.get(0),
        )
        .optional()?;
    let schema = {
        let mut st = conn.prepare(&format!("PRAGMA table_info({})", quote(table)))?;
        st.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
            .collect::<std::result::Result<Vec<_>, _>>()?
    };
    if schema.is_empty() {
        return Err(Error::not_found(format!("table {table} does not exist in SQLite database {path}")));
    }
    let image = |prefix: &str| -> String {
        let parts: Vec<String> = schema
            .iter()
            .map(|(name, declared)| {
                let col = format!("{prefix}.{}", quote(name));
                let expr = if field_type(declared) == FieldType::Bytes {
                    // hex(NULL) is '': a NULL must stay NULL, not become empty bytes.
                    format!("CASE WHEN {col} IS NULL THEN NULL ELSE lower(hex({col})) END")
                } else {
                    col
                };
                format!("{}, {expr}", literal(name))
            })
            .collect();
        format!("json_object({})", parts.join(", "))
    };
    let now = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
    let t = literal(table);
    for (op, when, before, after) in [
        ("i", "INSERT", "NULL".to_string(), image("NEW")),
        ("u", "UPDATE", image("OLD"), image("NEW")),
        ("d", "DELETE", image("OLD"), "NULL".to_string()),
    ] {
        let name = quote(&format!("_tap_{op}_{table}"));
        // Recreated every time, so columns added since the last start are captured.
        conn.execute_batch(&format!(
            "DROP TRIGGER IF EXISTS {name};
             CREATE TRIGGER {name} AFTER {when} ON {} BEGIN
               INSERT INTO {CHANGE_LOG}(tbl, op, before, after, ts) VALUES ({t}, '{op}', {before}, {after}, {now});
             END;",
            quote(table)
        ))?;
    }
    let columns: Vec<String> = schema.into_iter().map(|(name, _)| name).collect();
    let added = match before {
        Some(sql) => columns.iter().filter(|c| !sql.contains(&format!("{}, ", literal(c)))).cloned().collect(),
        None => Vec::new(),
    };
    Ok((columns, added))
}

/// A row image logged before the triggers captured columns added since: those columns from the
/// row as the table holds it now, found by the table's primary key (a later change to the row is
/// in the log too, so the target ends as the source). Without a primary key they stay absent.
pub(super) fn fill_added(conn: &Connection, table: &str, schema: &Schema, rec: &mut Record) -> Result<()> {
    let key = schema.primary_key();
    if key.is_empty() || key.iter().any(|k| !rec.contains_key(k)) {
        return Ok(());
    }
    let missing: Vec<&Field> = schema.fields.iter().filter(|f| !rec.contains_key(&f.name)).collect();
    let cond: Vec<String> = key.iter().enumerate().map(|(i, k)| format!("{} = ?{}", quote(k), i + 1)).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        missing.iter().map(|f| quote(&f.name)).collect::<Vec<_>>().join(", "),
        quote(table),
        cond.join(" AND ")
    );
    let mut st = conn.prepare_cached(&sql)?;
    let params = key.iter().map(|k| bind_value(&rec[k.as_str()]));
    let mut rows = st.query(params_from_iter(params))?;
    let values: Vec<Value> = match rows.next()? {
        Some(row) => {
            (0..missing.len()).map(|i| Ok(read_value(row.get_ref(i)?, Some(missing[i].ty)))).collect::<Result<_>>()?
        }
        None => vec![Value::Null; missing.len()],
    };
    for (f, v) in missing.into_iter().zip(values) {
        rec.insert(f.name.clone(), v);
    }
    Ok(())
}

impl Sqlite {
    /// The CDC triggers of `tables` are all there: a table dropped or replaced (by `tap demo
    /// --force`, say) loses them, and its changes would go uncaptured while the flow ran on.
    pub(super) fn require_capture(&self, tables: &[String]) -> Result<()> {
        let mut st = self.conn.prepare_cached(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1 AND name IN (?2, ?3, ?4)",
        )?;
        for t in tables {
            let n: i64 = st.query_row(
                rusqlite::params![t, format!("_tap_i_{t}"), format!("_tap_u_{t}"), format!("_tap_d_{t}")],
                |r| r.get(0),
            )?;
            if n < 3 {
                let what = if self.table_exists(t)? { "was replaced" } else { "was dropped" };
                return Err(Error::not_found(format!(
                    "SQLite source {}: table {t} {what}, and its change capture (triggers) with it, so its \
                     changes are no longer seen; reset the flow to copy it again",
                    self.path
                )));
            }
        }
        Ok(())
    }

    /// Follow columns added to a source table: when the database's schema changed, re-arm the
    /// triggers of a table that gained columns (rows from then on carry them; rows logged before
    /// get them from the table as it is, see [`fill_added`]). Columns dropped or renamed cannot
    /// be followed: the flow stops.
    pub(super) fn follow_schema(&mut self, tables: &[String]) -> Result<()> {
        let version: i64 = self.conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        if version == self.schema_version {
            return Ok(());
        }
        for t in tables {
            let Some(captured) = self.captured.get(t).cloned() else { continue };
            let current: Vec<String> = {
                let mut st = self.conn.prepare(&format!("PRAGMA table_info({})", quote(t)))?;
                st.query_map([], |r| r.get::<_, String>(1))?.collect::<std::result::Result<_, _>>()?
            };
            if current == captured {
                continue;
            }
            let gone: Vec<&String> = captured.iter().filter(|c| !current.contains(c)).collect();
            if !gone.is_empty() {
                return Err(Error::unsupported(format!(
                    "SQLite source {}: column(s) {} of table {t} were dropped or renamed; the flow follows \
                     added columns only, so it stops: reset it to copy the table again",
                    self.path,
                    gone.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            let added: Vec<&String> = current.iter().filter(|c| !captured.contains(c)).collect();
            let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            arm_table(&tx, t, &self.path)?;
            tx.commit()?;
            self.notices.push(format!(
                "SQLite source table {t} gained column(s) {}: captured from now on",
                added.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
            ));
            self.captured.insert(t.clone(), current);
            self.schemas.remove(t);
            self.altered.push(t.clone());
        }
        self.schema_version = self.conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        Ok(())
    }

    pub(super) fn ensure_change_log(&self) -> Result<()> {
        self.conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {CHANGE_LOG} (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                tbl TEXT NOT NULL, op TEXT NOT NULL, before TEXT, after TEXT, ts INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS {CONSUMERS} (flow TEXT PRIMARY KEY, seq INTEGER NOT NULL);"
        ))?;
        Ok(())
    }

    pub(super) fn prepare_capture(&mut self, flow_id: &str, tables: &[String], resume: bool) -> Result<()> {
        self.ensure_wal("change capture writes triggers and a change log into it")?;
        self.ensure_change_log()?;
        if resume {
            // Triggers made anew would have missed the changes since the table lost them.
            self.require_capture(tables)?;
        }
        // IMMEDIATE: the write lock is taken up front (through the busy timeout), never by
        // upgrading a read, which SQLite refuses at once when another connection writes.
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut captured = HashMap::new();
        let mut gained = Vec::new();
        for table in tables {
            let (cols, added) = arm_table(&tx, table, &self.path)?;
            if !added.is_empty() {
                gained.push(format!(
                    "SQLite source table {table} gained column(s) {}: captured from now on",
                    added.join(", ")
                ));
            }
            captured.insert(table.clone(), cols);
        }
        tx.execute(
            &format!("INSERT INTO {CONSUMERS}(flow, seq) VALUES (?1, (SELECT coalesce(max(seq), 0) FROM {CHANGE_LOG})) ON CONFLICT(flow) DO NOTHING"),
            [flow_id],
        )?;
        tx.commit()?;
        self.notices.extend(gained);
        self.captured.extend(captured);
        Ok(())
    }

    pub(super) fn log_position(&mut self, _flow_id: &str) -> Result<Position> {
        self.ensure_change_log()?;
        let seq: i64 =
            self.conn.query_row(&format!("SELECT coalesce(max(seq), 0) FROM {CHANGE_LOG}"), [], |r| r.get(0))?;
        Ok(LogPosition { seq }.value())
    }

    pub(super) fn read_changes(
        &mut self,
        _flow_id: &str,
        tables: &[String],
        from: &Position,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Event>, Position)> {
        self.require_capture(tables)?;
        self.follow_schema(tables)?;
        let mut seq = LogPosition::read(from)?.seq;
        let deadline = Instant::now() + wait;
        let filter: Vec<String> = tables.iter().map(|t| literal(t)).collect();
        let sql = format!(
            "SELECT seq, tbl, op, before, after, ts FROM {CHANGE_LOG} WHERE seq > ?1 AND tbl IN ({}) ORDER BY seq LIMIT ?2",
            filter.join(", ")
        );
        loop {
            let rows: Vec<LogRow> = {
                let mut st = self.conn.prepare_cached(&sql)?;
                st.query_map(rusqlite::params![seq, max as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?
            };
            if rows.is_empty() {
                // Nothing for our tables: still advance past other tables' rows so we do not rescan them.
                if Instant::now() >= deadline {
                    return Ok((Vec::new(), LogPosition { seq }.value()));
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let mut events = Vec::with_capacity(rows.len());
            let mut names: HashMap<String, Arc<str>> = HashMap::new();
            let mut schemas: HashMap<String, Schema> = HashMap::new();
            for (s, tbl, op, before, after, ts) in rows {
                seq = s;
                if !schemas.contains_key(&tbl) {
                    let schema = self.cached_schema(&tbl)?.clone();
                    schemas.insert(tbl.clone(), schema);
                }
                let schema = &schemas[&tbl];
                let image =
                    |raw: Option<String>| -> Result<Record> { decode_image(raw.as_deref().unwrap_or("{}"), schema) };
                let mut change = match op.as_str() {
                    "i" => Change::Insert { after: image(after)? },
                    "u" => Change::Update { before: Some(image(before)?), after: image(after)? },
                    "d" => Change::Delete { before: image(before)? },
                    other => return Err(Error::internal(format!("unknown op {other} in {CHANGE_LOG}"))),
                };
                if let Change::Insert { after } | Change::Update { after, .. } = &mut change
                    && schema.fields.iter().any(|f| !after.contains_key(&f.name))
                {
                    // Logged before its triggers captured a column added since: read it now.
                    fill_added(&self.conn, &tbl, schema, after)?;
                }
                let table = names.entry(tbl.clone()).or_insert_with(|| Arc::from(tbl.as_str())).clone();
                events.push(Event { table, change, ts_ms: ts });
            }
            // A column added while this call waited is reported with the rows read (which the
            // flow may then write into a target that has it, typed).
            self.follow_schema(tables)?;
            return Ok((events, LogPosition { seq }.value()));
        }
    }

    pub(super) fn ack(&mut self, flow_id: &str, position: &Position) -> Result<()> {
        let seq = LogPosition::read(position)?.seq;
        self.conn.execute(
            &format!(
                "INSERT INTO {CONSUMERS}(flow, seq) VALUES (?1, ?2) ON CONFLICT(flow) DO UPDATE SET seq = excluded.seq"
            ),
            rusqlite::params![flow_id, seq],
        )?;
        // Prune what every consumer has passed.
        self.conn.execute(&format!("DELETE FROM {CHANGE_LOG} WHERE seq <= (SELECT min(seq) FROM {CONSUMERS})"), [])?;
        Ok(())
    }

    pub(super) fn release_capture(&mut self, flow_id: &str) -> Result<()> {
        self.ensure_change_log()?;
        self.conn.execute(&format!("DELETE FROM {CONSUMERS} WHERE flow = ?1"), [flow_id])?;
        let remaining: i64 = self.conn.query_row(&format!("SELECT count(*) FROM {CONSUMERS}"), [], |r| r.get(0))?;
        if remaining == 0 {
            // Last consumer gone: remove the triggers and empty the log.
            let triggers: Vec<String> = {
                let mut st = self.conn.prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '\\_tap\\_%' ESCAPE '\\'",
                )?;
                st.query_map([], |r| r.get(0))?.collect::<std::result::Result<Vec<_>, _>>()?
            };
            for t in triggers {
                self.conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {}", quote(&t)))?;
            }
            self.conn.execute(&format!("DELETE FROM {CHANGE_LOG}"), [])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod position_tests {
    use super::*;

    #[test]
    fn positions_are_read_and_written_in_one_shape() {
        assert_eq!(LogPosition::read(&json!({"seq": 42})).expect("a position").value(), json!({"seq": 42}));
        for other in [json!({"lsn": "0/1"}), json!({"seq": "x"}), serde_json::Value::Null] {
            let err = LogPosition::read(&other).expect_err("not a change-log position");
            assert!(err.message.contains("reset the flow"), "{}", err.message);
        }
        // None saved is said as such, not as a position of another shape.
        let none = LogPosition::read(&serde_json::Value::Null).expect_err("none saved").message;
        assert!(none.contains("no saved SQLite change-log position"), "{none}");
    }
}
