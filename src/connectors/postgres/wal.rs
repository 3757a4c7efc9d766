//! The source side: what CDC needs of the server, the replication stream and its positions.

use super::*;
use serde::{Deserialize, Serialize};

/// A WAL position as a checkpoint keeps it: the LSN after the last whole transaction handed
/// out, and inside a transaction larger than a batch its commit LSN and how many of its changes
/// the target has (`txn`, `skip`). Read and written only here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalPosition {
    pub lsn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<u64>,
}

impl WalPosition {
    pub fn at(lsn: String) -> Self {
        WalPosition { lsn, txn: None, skip: None }
    }

    pub fn read(p: &Position) -> Result<Self> {
        let pos: WalPosition = crate::connectors::saved_position(p, "PostgreSQL WAL")?;
        pos.lsn()?;
        Ok(pos)
    }

    pub fn lsn(&self) -> Result<pgwire_replication::Lsn> {
        pgwire_replication::Lsn::parse(&self.lsn).map_err(|e| {
            Error::data(format!(
                "the flow's saved PostgreSQL position has a bad LSN {:?} ({e}); reset the flow",
                self.lsn
            ))
        })
    }

    pub fn value(&self) -> Position {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// How many received WAL messages may wait for the flow (a row change is one message): about
/// one batch, so memory follows the batch size (the client's default is 8,192).
const WAL_BUFFER: usize = 4096;

pub(super) struct Replication {
    pub(super) client: pgwire_replication::ReplicationClient,
    pub(super) decoder: pgoutput::Decoder,
    /// Events of the transaction being received, not yet handed out.
    pub(super) pending: Vec<Event>,
    /// The transaction being received: its commit LSN and time, how many of its changes were
    /// handed out (in earlier batches or before a restart), and how many are still to skip.
    pub(super) txn: Option<(String, i64)>,
    pub(super) txn_done: u64,
    pub(super) txn_skip: u64,
    /// After a restart inside a transaction: its commit LSN, to check the one that arrives.
    pub(super) txn_expect: Option<String>,
    /// Messages received ahead of their handling.
    pub(super) ahead: crate::connectors::burst::Ahead<Received>,
}

/// What the replication client yields: a message, its error, or `None` when it ended.
pub(super) type Received = pgwire_replication::Result<Option<pgwire_replication::ReplicationEvent>>;

impl crate::connectors::burst::Items for pgwire_replication::ReplicationClient {
    type Item = Received;
    fn next_item(&mut self) -> impl std::future::Future<Output = Received> {
        self.recv()
    }
    fn goes_on(item: &Received) -> bool {
        matches!(item, Ok(Some(_)))
    }
}

/// Slot and publication names for a flow (lowercase, ≤ 63 bytes, as PostgreSQL wants them).
pub fn slot_name(flow_id: &str) -> String {
    let clean: String = flow_id.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    format!("tap_{}", &clean[..clean.len().min(50)])
}

impl Postgres {
    /// CDC needs the key of updated and deleted rows in the WAL: a primary key (the default
    /// replica identity), a replica identity index, or FULL. Without one PostgreSQL would also
    /// refuse the table's updates once it is published, so the flow is refused instead, with
    /// the statement that fixes it.
    pub(super) fn require_replica_identity(&mut self, table: &str) -> Result<()> {
        let rows = self.query(
            "SELECT c.relreplident::text, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            &[&self.schema, &table],
        )?;
        let Some(row) = rows.first() else { return Ok(()) };
        let (identity, has_pk): (String, bool) = (row.get(0), row.get(1));
        if identity == "f" || identity == "i" || (identity == "d" && has_pk) {
            return Ok(());
        }
        let q = self.qualified(table);
        let fix = match self.unique_keys(table)?.into_iter().find(|u| u.not_null) {
            Some(u) => format!("ALTER TABLE {q} REPLICA IDENTITY USING INDEX {}", quote(&u.name)),
            None => format!("ALTER TABLE {q} REPLICA IDENTITY FULL"),
        };
        let why = if identity == "n" { "its replica identity is NOTHING" } else { "it has no primary key" };
        Err(Error::config(format!(
            "PostgreSQL table {table}: {why}, so its updates and deletes carry no key for CDC (and PostgreSQL \
             refuses them once the table is published); run `{fix};` and start the flow again"
        )))
    }

    /// Whole before images (`enablePreImage()`): PostgreSQL logs them only for a table whose
    /// replica identity is FULL.
    pub(super) fn require_full_identity(&mut self, table: &str) -> Result<()> {
        let rows = self.query(
            "SELECT c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&self.schema, &table],
        )?;
        if rows.first().is_some_and(|r| r.get::<_, String>(0) == "f") {
            return Ok(());
        }
        Err(Error::config(format!(
            "PostgreSQL table {table}: enablePreImage() needs whole before images of its updates and deletes, \
             which PostgreSQL logs only with REPLICA IDENTITY FULL; run `ALTER TABLE {} REPLICA IDENTITY FULL;` \
             and start the flow again, or remove enablePreImage()",
            self.qualified(table)
        )))
    }

    /// The flow's replication slot and publication exist and every table is still published:
    /// a table dropped (or dropped and recreated) leaves the publication, and a slot dropped
    /// outside tap takes the changes since with it — either way changes would stop arriving
    /// without a word, so the flow stops instead.
    pub(super) fn require_capture(&mut self, flow_id: &str, tables: &[String]) -> Result<()> {
        let name = slot_name(flow_id);
        if self.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&name])?.is_empty() {
            return Err(Error::not_found(format!(
                "PostgreSQL replication slot {name} of this flow is gone (dropped outside tap), and the \
                 changes it held with it; reset the flow to copy again"
            )));
        }
        if self.query("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])?.is_empty() {
            return Err(Error::not_found(format!(
                "PostgreSQL publication {name} of this flow is gone (dropped outside tap); reset the flow to copy again"
            )));
        }
        let published: Vec<String> = self
            .query(
                "SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2",
                &[&name, &self.schema],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for t in tables {
            if !published.contains(t) {
                let exists = !self
                    .query(
                        "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
                        &[&self.schema, t],
                    )?
                    .is_empty();
                let what = if exists { "was dropped and recreated" } else { "was dropped" };
                return Err(Error::not_found(format!(
                    "PostgreSQL source {}.{}: table {t} {what}, which took it out of the flow's publication \
                     {name}, so its changes are no longer seen; reset the flow to copy it again",
                    self.database, self.schema
                )));
            }
        }
        Ok(())
    }

    pub(super) fn prepare_capture(&mut self, flow_id: &str, tables: &[String], resume: bool) -> Result<()> {
        let name = slot_name(flow_id);
        let level = self.query("SHOW wal_level", &[])?.first().map(|r| r.get::<_, String>(0)).unwrap_or_default();
        if level != "logical" {
            return Err(Error::config(format!(
                "PostgreSQL at {}:{} has wal_level={level}; CDC needs wal_level=logical (set it in postgresql.conf and restart)",
                self.host, self.port
            )));
        }
        let list: Vec<String> = tables.iter().map(|t| self.qualified(t)).collect();
        for t in tables {
            self.require_table(t)?;
            self.require_replica_identity(t)?;
        }
        if resume {
            // A slot or publication made anew, or a table published again, would have missed
            // the changes since: what captured them must all still be there.
            self.require_capture(flow_id, tables)?;
        }
        let exists = !self.query("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])?.is_empty();
        if exists {
            self.batch(&format!("ALTER PUBLICATION {} SET TABLE {}", quote(&name), list.join(", ")))?;
        } else {
            self.batch(&format!("CREATE PUBLICATION {} FOR TABLE {}", quote(&name), list.join(", ")))?;
        }
        let slot = !self.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&name])?.is_empty();
        if !slot {
            self.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&name]).map_err(|e| {
                let hint = if e.message.contains("42501") || e.message.contains("permission") {
                    " (the user needs the REPLICATION attribute)"
                } else if e.message.contains("53400") {
                    " (raise max_replication_slots, or reset/delete flows that no longer run)"
                } else {
                    ""
                };
                Error::config(format!("cannot create replication slot {name}: {}{hint}", e.message))
            })?;
        }
        Ok(())
    }

    pub(super) fn wal_position(&mut self, _flow_id: &str) -> Result<Position> {
        let rows = self.query("SELECT pg_current_wal_lsn()::text", &[])?;
        Ok(WalPosition::at(rows.first().map(|r| r.get::<_, String>(0)).unwrap_or_else(|| "0/0".into())).value())
    }

    pub(super) fn read_changes(
        &mut self,
        flow_id: &str,
        tables: &[String],
        from: &Position,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Event>, Position)> {
        if self.repl.is_none() || self.checked.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
            self.require_capture(flow_id, tables)?;
            self.checked = Some(Instant::now());
        }
        let from = WalPosition::read(from)?;
        if self.repl.is_none() {
            let slot = slot_name(flow_id);
            let start = from.lsn()?;
            let cfg = pgwire_replication::ReplicationConfig::new(
                self.host.clone(),
                self.user.clone(),
                self.password.clone(),
                self.database.clone(),
                slot.clone(),
                slot.clone(),
            )
            .with_port(self.port)
            .with_tls(pgwire_replication::TlsConfig::disabled())
            .with_start_lsn(start)
            .with_buffer_size(WAL_BUFFER);
            let client = self
                .rt
                .run(pgwire_replication::ReplicationClient::connect(cfg))?
                .map_err(|e| Error::unavailable(format!("PostgreSQL replication from slot {slot}: {e}")))?;
            let mut decoder = pgoutput::Decoder::default();
            for t in tables {
                let columns = self.schema(t)?.fields.into_iter().map(|f| f.name).collect();
                decoder.known.insert(t.clone(), columns);
            }
            self.repl = Some(Replication {
                client,
                decoder,
                pending: Vec::new(),
                txn: None,
                txn_done: 0,
                txn_skip: from.skip.unwrap_or(0),
                txn_expect: from.txn.clone(),
                ahead: Default::default(),
            });
        }
        let deadline = Instant::now() + wait;
        let mut out: Vec<Event> = Vec::new();
        let mut position = from;
        let schema_name = self.schema.clone();
        loop {
            let repl = self.repl.as_mut().ok_or_else(|| Error::internal("replication"))?;
            // With changes in hand, only what has arrived already: the batch ends with it.
            let wait = out.is_empty().then(|| deadline.saturating_duration_since(Instant::now()));
            let next = crate::connectors::burst::take(&self.rt, &mut repl.client, wait, &mut repl.ahead)?;
            let ev = match next {
                None => break,
                Some(Err(e)) => {
                    self.repl = None;
                    return Err(Error::unavailable(format!("PostgreSQL replication stream: {e}")));
                }
                Some(Ok(None)) => {
                    self.repl = None;
                    return Err(Error::unavailable("PostgreSQL replication stream ended"));
                }
                Some(Ok(Some(ev))) => ev,
            };
            use pgwire_replication::ReplicationEvent as E;
            match ev {
                E::XLogData { data, .. } => {
                    if let Some(mut ev) = repl.decoder.decode(&data, &schema_name)? {
                        if repl.txn_skip > 0 {
                            // Already in the target before the restart.
                            repl.txn_skip -= 1;
                            repl.txn_done += 1;
                            continue;
                        }
                        ev.ts_ms = repl.txn.as_ref().map_or(0, |t| t.1);
                        if repl.pending.len() >= max {
                            // A transaction larger than a batch: hand out a batch of it (this
                            // change waits for the next), with the position inside it.
                            repl.txn_done += repl.pending.len() as u64;
                            out.append(&mut repl.pending);
                            repl.pending.push(ev);
                            let commit = repl.txn.as_ref().map(|t| t.0.clone()).unwrap_or_default();
                            position = WalPosition { lsn: position.lsn, txn: Some(commit), skip: Some(repl.txn_done) };
                            break;
                        }
                        repl.pending.push(ev);
                    }
                }
                E::Begin { final_lsn, commit_time_micros, .. } => {
                    let commit = final_lsn.to_string();
                    if let Some(expected) = repl.txn_expect.take()
                        && repl.txn_skip > 0
                        && expected != commit
                    {
                        return Err(Error::data(format!(
                            "PostgreSQL replication resumed at the transaction committed at {commit}, not at \
                             {expected} (whose first {} changes the target already has); reset the flow",
                            repl.txn_skip
                        )));
                    }
                    repl.pending.clear();
                    repl.txn = Some((commit, commit_time_micros / 1000 + 946_684_800_000));
                }
                E::Commit { end_lsn, .. } => {
                    out.append(&mut repl.pending);
                    repl.txn = None;
                    repl.txn_done = 0;
                    repl.txn_skip = 0;
                    position = WalPosition::at(end_lsn.to_string());
                    if out.len() >= max {
                        break;
                    }
                }
                _ => {}
            }
            if Instant::now() >= deadline && !out.is_empty() {
                break;
            }
        }
        Ok((out, position.value()))
    }

    pub(super) fn ack(&mut self, _flow_id: &str, position: &Position) -> Result<()> {
        if let Some(repl) = &self.repl
            && let Ok(lsn) = WalPosition::read(position)?.lsn()
        {
            repl.client.update_applied_lsn(lsn);
        }
        Ok(())
    }

    pub(super) fn release_capture(&mut self, flow_id: &str) -> Result<()> {
        if let Some(mut r) = self.repl.take() {
            // A stream that fails to close is closed anyway: the slot is dropped below.
            let _ = self.rt.run(r.client.shutdown())?;
        }
        let name = slot_name(flow_id);
        // The slot may still be held by a stream that is closing: retry briefly.
        for attempt in 0..20 {
            let rows = self.query("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&name])?;
            match rows.first().map(|r| r.get::<_, bool>(0)) {
                None => break,
                Some(false) => {
                    self.query("SELECT pg_drop_replication_slot($1)", &[&name])?;
                    break;
                }
                Some(true) if attempt < 19 => std::thread::sleep(Duration::from_millis(250)),
                Some(true) => return Err(Error::unavailable(format!("replication slot {name} is still in use"))),
            }
        }
        self.batch(&format!("DROP PUBLICATION IF EXISTS {}", quote(&name)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn positions_are_read_and_written_in_one_shape() {
        let inside = json!({"lsn": "0/16B3748", "txn": "0/16B4000", "skip": 3});
        assert_eq!(WalPosition::read(&inside).expect("a position").value(), inside);
        assert_eq!(WalPosition::at("1/0".into()).value(), json!({"lsn": "1/0"}));
        // Another connector's position, or a bad LSN, is refused by name, not read as 0/0.
        for other in
            [json!({"file": "mysql-bin.000001", "pos": 4}), json!({"lsn": "nonsense"}), serde_json::Value::Null]
        {
            let err = WalPosition::read(&other).expect_err("not a WAL position");
            assert!(err.message.contains("reset the flow"), "{}", err.message);
        }
    }
}
