//! The source side: what CDC needs of the server, the binlog stream and its positions.

use super::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
pub(super) enum PendingGtid {
    MariaDb { domain: u32, server: u32, seq: u64, standalone: bool },
    Mysql { source: String, gno: u64 },
}

/// A replica server id for a flow, stable across restarts and unlikely to collide.
pub(super) fn server_id(flow_id: &str) -> u32 {
    let h = flow_id.bytes().fold(2166136261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619));
    100_000 + h % 1_000_000_000
}

/// What a DDL statement does to one of the flow's tables.
#[derive(Debug, PartialEq)]
pub(super) enum Ddl {
    /// `ALTER TABLE … ADD [COLUMN] …` (only additions of columns).
    AddColumn,
    /// Anything else that changes or removes the table's rows or columns, described.
    Other(&'static str),
}

/// The flow's table a statement (run with default database `default_db`) changes, and how;
/// `None` for statements that do not touch `tables` of `database` or leave them as they are
/// (indexes, comments, other tables).
pub(super) fn ddl_of(sql: &str, default_db: &str, database: &str, tables: &[String]) -> Option<(String, Ddl)> {
    let mut text = sql.trim();
    // Leading comments (/* … */, MySQL writes some), then the words, lower-cased.
    while let Some(rest) = text.strip_prefix("/*") {
        text = rest.split_once("*/").map(|(_, r)| r.trim_start()).unwrap_or("");
    }
    let lower = text.to_ascii_lowercase();
    let words: Vec<&str> =
        lower.split(|c: char| c.is_whitespace() || c == ',' || c == ';').filter(|w| !w.is_empty()).collect();
    let ours = |name: &str| -> Option<String> {
        let name = name.trim_matches('(');
        let (db, t) = match name.split_once('.') {
            Some((d, t)) => (d.trim_matches('`').to_string(), t.trim_matches('`')),
            None => (default_db.to_ascii_lowercase(), name.trim_matches('`')),
        };
        (db == database.to_ascii_lowercase()).then(|| tables.iter().find(|x| x.to_ascii_lowercase() == t).cloned())?
    };
    match words.as_slice() {
        ["alter", "table", rest @ ..] | ["alter", "ignore", "table", rest @ ..] => {
            let (name, clauses) = rest.split_first()?;
            let table = ours(name)?;
            let body = clauses.join(" ");
            let harmless = [
                "add index",
                "add key",
                "add unique",
                "add fulltext",
                "add spatial",
                "add constraint",
                "add primary",
                "add foreign",
                "comment",
            ];
            let changes = [
                "drop",
                "change",
                "modify",
                "rename",
                "convert",
                "alter",
                "engine",
                "partition",
                "order by",
                "character set",
                "charset",
                "force",
            ];
            if changes.iter().any(|c| body.split(' ').any(|w| w == *c) || body.starts_with(c)) {
                return Some((table, Ddl::Other("was altered beyond added columns")));
            }
            if harmless.iter().any(|h| body.starts_with(h)) && !body.contains("add column") {
                return None;
            }
            body.starts_with("add").then_some((table, Ddl::AddColumn))
        }
        ["drop", "table", rest @ ..] | ["drop", "temporary", "table", rest @ ..] => {
            let names = rest.strip_prefix(&["if", "exists"]).unwrap_or(rest);
            names.iter().find_map(|n| ours(n)).map(|t| (t, Ddl::Other("was dropped")))
        }
        ["truncate", "table", name, ..] | ["truncate", name, ..] => {
            ours(name).map(|t| (t, Ddl::Other("was truncated")))
        }
        ["rename", "table", rest @ ..] => {
            // RENAME TABLE a TO b, c TO d: the names before each TO.
            rest.chunks(3).find_map(|c| ours(c[0])).map(|t| (t, Ddl::Other("was renamed")))
        }
        _ => None,
    }
}

/// ER_MASTER_FATAL_ERROR_READING_BINLOG (1236): the server no longer has the binlog at the
/// flow's position.
pub(super) fn binlog_gone(from: &BinlogPosition, message: &str) -> Error {
    Error::not_found(format!(
        "MySQL cannot send the binlog from the flow's position {}: {message} (1236); the binlog was \
         purged past it, and the changes since with it: reset the flow to copy again",
        from.value()
    ))
}

/// At most `n` characters of `s`.
pub(super) fn short(s: &str, n: usize) -> String {
    let t: String = s.chars().take(n).collect();
    if t.len() < s.len() { format!("{t}…") } else { t }
}

/// A binlog position as a checkpoint keeps it: the file and offset, the GTID state there (only
/// when there is one), and inside a transaction larger than a batch how many of its changes the
/// target has (`skip`) and its GTID (`txn`, checked on resume). Read and written only here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinlogPosition {
    #[serde(default)]
    pub file: String,
    /// The offset in `file` (4: its first event).
    #[serde(default = "first_event")]
    pub pos: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gtid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<String>,
}

fn first_event() -> u64 {
    4
}

impl BinlogPosition {
    pub fn read(p: &Position) -> Result<Self> {
        crate::connectors::saved_position(p, "MySQL binlog")
    }

    pub fn value(&self) -> Position {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// MariaDB's GTID state at a binlog file and offset.
pub(super) async fn mariadb_gtid_at(conn: &mut Conn, file: &str, pos: u64) -> Result<Gtid> {
    let g: Option<Option<String>> =
        conn.query_first(format!("SELECT BINLOG_GTID_POS({}, {pos})", sql_string(file))).await.map_err(my_err)?;
    Gtid::parse_mariadb(&g.flatten().unwrap_or_default())
}

/// When a binlog file was opened (its format description event's time, seconds); `None` for an
/// empty file.
async fn first_event_time(opts: &mysql_async::Opts, id: u32, file: &str) -> Result<Option<i64>> {
    let conn = Conn::new(opts.clone()).await.map_err(my_err)?;
    let request = BinlogStreamRequest::new(id).with_filename(file.as_bytes()).with_pos(4u64);
    let mut stream = conn.get_binlog_stream(request).await.map_err(my_err)?;
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
            Ok(Some(Ok(e))) if e.header().timestamp() > 0 => return Ok(Some(i64::from(e.header().timestamp()))),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(my_err(e)),
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// The file a rotate event names, as the server lists it (`files`, from `SHOW BINARY LOGS`):
/// the rotate event a stream starts with comes before the format event that says the binlog
/// has checksums, so its name arrives with the 4 checksum bytes after it. The longest listed
/// name the event's starts with; the event's own name if none does.
pub(super) fn listed_name(raw: &[u8], files: &[String]) -> String {
    files
        .iter()
        .filter(|f| raw.starts_with(f.as_bytes()))
        .max_by_key(|f| f.len())
        .cloned()
        .unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned())
}

/// A 16-byte source id as MySQL prints it.
pub(super) fn uuid_text(b: &[u8; 16]) -> String {
    let h = hex(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

impl Mysql {
    /// Decode one binlog row image into a record.
    pub(super) fn image(&mut self, table: &str, row: mysql_async::binlog::row::BinlogRow) -> Result<Record> {
        let schema = self.cached_schema(table)?;
        let names: Vec<String> = row.columns_ref().iter().map(|c| c.name_str().to_string()).collect();
        let by_ordinal = names.iter().all(|n| n.is_empty());
        let values = row.unwrap();
        let mut rec = Record::with_capacity(values.len());
        for (i, v) in values.into_iter().enumerate() {
            let name = if by_ordinal {
                schema.fields.get(i).map(|f| f.name.clone()).unwrap_or_else(|| format!("col{i}"))
            } else {
                names[i].clone()
            };
            let ty = schema.field(&name).map(|f| f.ty);
            let value: My = My::try_from(v).map_err(|e| Error::data(format!("binlog value of {table}.{name}: {e}")))?;
            let value = match (ty, value) {
                // The binlog carries a TIMESTAMP as seconds since the epoch ("s" or "s.ffffff").
                (Some(FieldType::TimestampTz), My::Int(secs)) => epoch_to_my(secs, 0),
                (Some(FieldType::TimestampTz), My::Bytes(b)) => {
                    let text = String::from_utf8_lossy(&b).into_owned();
                    let (secs, frac) = text.split_once('.').unwrap_or((text.as_str(), ""));
                    match secs.parse::<i64>() {
                        Ok(secs) => {
                            let micros = format!("{frac:0<6}").get(..6).and_then(|f| f.parse().ok()).unwrap_or(0);
                            epoch_to_my(secs, micros)
                        }
                        Err(_) => My::Bytes(b),
                    }
                }
                (_, v) => v,
            };
            rec.insert(name, to_value(value, ty));
        }
        Ok(rec)
    }

    pub(super) fn check_cdc(&mut self, _flow_id: &str, tables: &[String], _resume: bool) -> Result<()> {
        let mut missing = Vec::new();
        let log_bin = self.variable("log_bin")?;
        if !log_bin.eq_ignore_ascii_case("ON") && log_bin != "1" {
            missing.push("log_bin=ON (start the server with --log-bin)".to_string());
        }
        let format = self.variable("binlog_format")?;
        if !format.eq_ignore_ascii_case("ROW") {
            missing.push(format!("binlog_format=ROW (it is {format})"));
        }
        let image = self.variable("binlog_row_image")?;
        if !image.is_empty() && !image.eq_ignore_ascii_case("FULL") {
            missing.push(format!("binlog_row_image=FULL (it is {image})"));
        }
        let grants: Vec<String> = self.rows("SHOW GRANTS")?;
        let g = grants.join(" ").to_ascii_uppercase();
        let all = g.contains("ALL PRIVILEGES ON *.*");
        if !all && !g.contains("REPLICATION SLAVE") && !g.contains("REPLICATION REPLICA") {
            missing.push("the REPLICATION SLAVE privilege (GRANT REPLICATION SLAVE ON *.* TO the user)".into());
        }
        if !all && !g.contains("REPLICATION CLIENT") && !g.contains("BINLOG MONITOR") {
            missing.push("the REPLICATION CLIENT privilege (GRANT REPLICATION CLIENT ON *.* TO the user)".into());
        }
        if !missing.is_empty() {
            return Err(Error::config(format!("MySQL CDC needs {}", missing.join("; "))));
        }
        for t in tables {
            self.schema(t)?;
        }
        Ok(())
    }

    pub(super) fn binlog_position(&mut self, _flow_id: &str) -> Result<Position> {
        let rows: Vec<mysql_async::Row> = match self.rows("SHOW MASTER STATUS") {
            Ok(r) => r,
            Err(_) => self.rows("SHOW BINARY LOG STATUS")?,
        };
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| Error::config("MySQL binary logging is off: start the server with --log-bin"))?;
        let file: String = row.get(0).ok_or_else(|| Error::internal("binlog file"))?;
        let pos: u64 = row.get(1).ok_or_else(|| Error::internal("binlog position"))?;
        // The GTID state at exactly that point: MariaDB maps file+offset to it; MySQL prints
        // it beside them (Executed_Gtid_Set, empty unless gtid_mode=ON).
        let gtid = if self.mariadb {
            let rt = &self.rt;
            let conn = self.conn.as_mut().ok_or_else(|| Error::internal("MySQL connection"))?;
            rt.run(mariadb_gtid_at(conn, &file, pos))??.to_string()
        } else {
            let mut g: String = row.get::<Option<String>, _>(4).flatten().unwrap_or_default();
            g.retain(|c| !c.is_whitespace());
            g
        };
        Ok(BinlogPosition { file, pos, gtid, ..Default::default() }.value())
    }

    /// The binlog files the server keeps, oldest first (`SHOW BINARY LOGS`).
    fn binlog_files(&mut self) -> Result<Vec<String>> {
        let rows: Vec<mysql_async::Row> = self.rows("SHOW BINARY LOGS")?;
        Ok(rows.into_iter().filter_map(|r| r.get::<String, _>(0)).collect())
    }

    /// The binlog position of the first transaction that began at or after `at_ms`: the binlog
    /// is read from the newest file that was opened before that time (its format event says
    /// when), to the second (the binlog's resolution). A time older than the oldest file left is
    /// refused; one after the last transaction is the binlog's end.
    pub(super) fn binlog_position_at(&mut self, flow_id: &str, at_ms: i64) -> Result<Position> {
        let at = at_ms.div_euclid(1000) + i64::from(at_ms.rem_euclid(1000) > 0);
        let files = self.binlog_files()?;
        let end = BinlogPosition::read(&self.binlog_position(flow_id)?)?;
        let id = server_id(&format!("{flow_id}-seek"));
        let opts = self.opts.clone();
        let mariadb = self.mariadb;
        let (end_file, end_pos) = (end.file.clone(), end.pos);
        let found = self.rt.run(async move {
            // The file to read from: the newest one whose first event is not after the time.
            let mut start: Option<String> = None;
            for f in files.iter().rev() {
                let opened = first_event_time(&opts, id, f).await?;
                // Strictly before: a transaction of the previous file may share the second.
                if opened.is_some_and(|t| t < at) {
                    start = Some(f.clone());
                    break;
                }
            }
            let Some(start) = start else {
                return Err(Error::unsupported(format!(
                    "the binlog holds no changes that old: its oldest file ({}) starts later; give a later start time, or copy the table with include_cdc()",
                    files.first().cloned().unwrap_or_default()
                )));
            };
            let mut conn = Conn::new(opts.clone()).await.map_err(my_err)?;
            if mariadb {
                conn.query_drop("SET @mariadb_slave_capability=4").await.map_err(my_err)?;
            }
            let request = BinlogStreamRequest::new(id).with_filename(start.as_bytes()).with_pos(4u64);
            let mut stream = conn.get_binlog_stream(request).await.map_err(my_err)?;
            let mut file: String = start;
            let mut after_gtid = false;
            loop {
                // The end of the binlog is known: stopping short of it would skip changes, so a
                // stream that stalls or ends first is an error, not "the end".
                let next = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
                let Ok(Some(event)) = next else {
                    return Err(Error::unavailable(format!(
                        "reading the binlog for the flow's start time stopped in {file} before its end ({}:{end_pos})",
                        end_file
                    )));
                };
                let event = event.map_err(my_err)?;
                let h = event.header();
                let begin = u64::from(h.log_pos()).saturating_sub(u64::from(h.event_size()));
                let ty = h.event_type_raw();
                // A transaction starts at its GTID event, or at BEGIN when it has none.
                let starts = if ty == gtid::MARIADB_GTID_EVENT || ty == 33 || ty == 34 {
                    after_gtid = true;
                    true
                } else {
                    let is_begin = matches!(event.read_data(), Ok(Some(EventData::QueryEvent(ref q))) if q.query_raw() == b"BEGIN");
                    let s = is_begin && !after_gtid;
                    after_gtid = false;
                    s
                };
                if let Ok(Some(EventData::RotateEvent(r))) = event.read_data() {
                    file = listed_name(r.name_raw(), &files);
                    continue;
                }
                if starts && i64::from(h.timestamp()) >= at && h.log_pos() > 0 {
                    return Ok(Some((file, begin)));
                }
                if file == end_file && u64::from(h.log_pos()) >= end_pos {
                    return Ok(None);
                }
            }
        })??;
        let Some((file, pos)) = found else { return Ok(end.value()) };
        let gtid = if self.mariadb {
            let conn = self.conn.as_mut().ok_or_else(|| Error::internal("MySQL connection"))?;
            self.rt.run(mariadb_gtid_at(conn, &file, pos))??.to_string()
        } else {
            String::new()
        };
        Ok(BinlogPosition { file, pos, gtid, ..Default::default() }.value())
    }

    pub(super) fn read_changes(
        &mut self,
        flow_id: &str,
        tables: &[String],
        from: &Position,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Event>, Position)> {
        let from = &BinlogPosition::read(from)?;
        if self.stream.is_none() {
            self.open_stream(flow_id, from)?;
        }
        let deadline = Instant::now() + wait;
        let mut out: Vec<Event> = Vec::new();
        let mut position = from.clone();
        let database = self.database.clone();
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        loop {
            // With changes in hand, only what has arrived already: the batch ends with it.
            let wait = out.is_empty().then(|| deadline.saturating_duration_since(Instant::now()));
            let event = match self.next_event(wait)? {
                None => break,
                Some(None) => {
                    self.stream = None;
                    return Err(Error::unavailable("the MySQL binlog stream ended"));
                }
                Some(Some(Err(e))) => {
                    self.stream = None;
                    if let mysql_async::Error::Server(s) = &e
                        && s.code == 1236
                    {
                        return Err(binlog_gone(from, &s.message));
                    }
                    return Err(my_err(e));
                }
                Some(Some(Ok(ev))) => ev,
            };
            let log_pos = u64::from(event.header().log_pos());
            if event.header().event_type_raw() == gtid::MARIADB_GTID_EVENT {
                if let Some((domain, seq, standalone)) = gtid::mariadb_gtid_event(event.data()) {
                    let server = event.header().server_id();
                    self.pending_gtid = Some(PendingGtid::MariaDb { domain, server, seq, standalone });
                    self.check_resumed_txn()?;
                }
                continue;
            }
            let data = event.read_data().map_err(|e| Error::data(format!("binlog event: {e}")))?;
            match data {
                Some(EventData::RotateEvent(r)) => {
                    let files = self.binlog_files()?;
                    self.file = listed_name(r.name_raw(), &files);
                }
                Some(EventData::GtidEvent(g)) => {
                    let uuid = uuid_text(&g.sid());
                    let source = match g.tag() {
                        Some(tag) => format!("{uuid}:{tag}"),
                        None => uuid,
                    };
                    self.pending_gtid = Some(PendingGtid::Mysql { source, gno: g.gno() });
                    self.check_resumed_txn()?;
                }
                Some(EventData::XidEvent(_)) => {
                    out.append(&mut self.pending);
                    position = self.committed(log_pos);
                    if out.len() >= max {
                        break;
                    }
                }
                Some(EventData::QueryEvent(q)) if q.query_raw() == b"COMMIT" => {
                    out.append(&mut self.pending);
                    position = self.committed(log_pos);
                }
                Some(EventData::QueryEvent(q))
                    if q.query_raw() != b"BEGIN"
                        && let Some((table, change)) = ddl_of(&q.query(), &q.schema(), &database, tables) =>
                {
                    match change {
                        Ddl::AddColumn => {
                            // Rows from here on carry the new column: decode them by the new schema.
                            self.schemas.remove(&table);
                            if !self.altered.contains(&table) {
                                self.altered.push(table.clone());
                            }
                        }
                        Ddl::Other(what) => {
                            return Err(Error::unsupported(format!(
                                "MySQL source {database}: table {table} {what} (`{}`); the flow follows added \
                                 columns only, so it stops: reset it to copy the table again",
                                short(&q.query(), 120)
                            )));
                        }
                    }
                    if self.pending.is_empty() {
                        position = self.committed(log_pos);
                    }
                }
                Some(EventData::QueryEvent(q)) if q.query_raw() != b"BEGIN" && self.pending.is_empty() => {
                    // A statement that is its own transaction (DDL): it moves the position.
                    let standalone = match &self.pending_gtid {
                        Some(PendingGtid::MariaDb { standalone, .. }) => *standalone,
                        Some(PendingGtid::Mysql { .. }) => true,
                        None => false,
                    };
                    if standalone {
                        position = self.committed(log_pos);
                    }
                }
                Some(EventData::RowsEvent(re)) => {
                    let stream = self.stream.as_ref().ok_or_else(|| Error::internal("binlog stream"))?;
                    let Some(tme) = stream.get_tme(re.table_id()) else { continue };
                    if tme.database_name() != database.as_str() {
                        continue;
                    }
                    let table = tme.table_name().into_owned();
                    if !tables.contains(&table) {
                        continue;
                    }
                    let mut images = Vec::new();
                    for row in re.rows(tme) {
                        let (before, after) = row.map_err(|e| Error::data(format!("binlog row of {table}: {e}")))?;
                        images.push((before, after));
                    }
                    let kind = match &re {
                        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => 'i',
                        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => 'd',
                        _ => 'u',
                    };
                    let name = names.entry(table.clone()).or_insert_with(|| Arc::from(table.as_str())).clone();
                    let ts = i64::from(event.header().timestamp()) * 1000;
                    let mut handed_out = false;
                    for (before, after) in images {
                        let before = before.map(|b| self.image(&table, b)).transpose()?;
                        let after = after.map(|a| self.image(&table, a)).transpose()?;
                        let change = match (kind, before, after) {
                            ('i', _, Some(after)) => Change::Insert { after },
                            ('d', Some(before), _) => Change::Delete { before },
                            (_, before, Some(after)) => Change::Update { before, after },
                            _ => continue,
                        };
                        if self.txn_skip > 0 {
                            // Already in the target before the restart.
                            self.txn_skip -= 1;
                            self.txn_done += 1;
                            continue;
                        }
                        if self.pending.len() >= max {
                            // A transaction larger than a batch: hand out a batch of it, with
                            // the transaction's start and how much of it is done.
                            self.txn_done += self.pending.len() as u64;
                            out.append(&mut self.pending);
                            handed_out = true;
                        }
                        self.pending.push(Event { table: name.clone(), change, ts_ms: ts });
                    }
                    if handed_out {
                        position = self.inside_txn();
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

    /// Start reading the binlog at `from`: by GTID when the position has one (MariaDB
    /// `@slave_connect_state`, MySQL `COM_BINLOG_DUMP_GTID`), else by file and offset. Either
    /// way the stream then keeps the GTID state up to date for the positions it hands out.
    pub(super) fn open_stream(&mut self, flow_id: &str, from: &BinlogPosition) -> Result<()> {
        let (file, pos, text) = (from.file.clone(), from.pos, from.gtid.as_str());
        let mut state = if self.mariadb { Gtid::parse_mariadb(text)? } else { Gtid::parse_mysql(text)? };
        let by_gtid = !state.is_empty();
        let mariadb = self.mariadb;
        let id = server_id(flow_id);
        let stream = self.rt.run(async {
            let mut conn = Conn::new(self.opts.clone()).await.map_err(my_err)?;
            if mariadb {
                // Send GTID events as they are (not as dummy queries), so positions carry them.
                conn.query_drop("SET @mariadb_slave_capability=4").await.map_err(my_err)?;
                if !by_gtid && !file.is_empty() {
                    state = mariadb_gtid_at(&mut conn, &file, pos).await?;
                }
            }
            let request = if by_gtid && mariadb {
                conn.query_drop(format!("SET @slave_connect_state={}", sql_string(&state.to_string())))
                    .await
                    .map_err(my_err)?;
                BinlogStreamRequest::new(id)
            } else if by_gtid {
                BinlogStreamRequest::new(id).with_gtid().with_gtid_set(state.mysql_sids()?)
            } else {
                BinlogStreamRequest::new(id).with_filename(file.as_bytes()).with_pos(pos)
            };
            let stream = conn.get_binlog_stream(request).await.map_err(|e| match e {
                mysql_async::Error::Server(s) if s.code == 1236 && !by_gtid => binlog_gone(from, &s.message),
                mysql_async::Error::Server(s) if by_gtid => Error::data(format!(
                    "MySQL cannot resume the binlog at GTID {state}: {} ({}); reset the flow to take a new snapshot",
                    s.message, s.code
                )),
                e => my_err(e),
            })?;
            Ok::<_, Error>((stream, state))
        })?;
        let (stream, state) = stream?;
        self.stream = Some(stream);
        self.ahead.clear();
        self.file = file;
        self.pending.clear();
        self.pending_gtid = None;
        let mut base = from.clone();
        self.txn_skip = base.skip.take().unwrap_or(0);
        self.txn_expect = base.txn.take();
        self.txn_base = base;
        self.txn_done = 0;
        // MySQL without a GTID state to start from cannot build a complete set: do not track.
        self.gtid = (mariadb || !state.is_empty()).then_some(state);
        Ok(())
    }

    /// A transaction committed at `log_pos` of the current file: fold its GTID into the state
    /// and return the position after it.
    pub(super) fn committed(&mut self, log_pos: u64) -> BinlogPosition {
        if let (Some(state), Some(p)) = (self.gtid.as_mut(), self.pending_gtid.take()) {
            match p {
                PendingGtid::MariaDb { domain, server, seq, .. } => state.add_mariadb(domain, server, seq),
                PendingGtid::Mysql { source, gno } => state.add_mysql(&source, gno),
            }
        }
        let gtid = self.gtid.as_ref().map(Gtid::to_string).unwrap_or_default();
        self.txn_base = BinlogPosition { file: self.file.clone(), pos: log_pos, gtid, ..Default::default() };
        self.txn_done = 0;
        self.txn_skip = 0;
        self.txn_expect = None;
        self.txn_base.clone()
    }

    /// The position inside the transaction being read: its start, how many of its changes are
    /// handed out, and its GTID when there is one (checked on resume).
    pub(super) fn inside_txn(&self) -> BinlogPosition {
        BinlogPosition { skip: Some(self.txn_done), txn: self.pending_gtid_text(), ..self.txn_base.clone() }
    }

    pub(super) fn pending_gtid_text(&self) -> Option<String> {
        match self.pending_gtid.as_ref()? {
            PendingGtid::MariaDb { domain, server, seq, .. } => Some(format!("{domain}-{server}-{seq}")),
            PendingGtid::Mysql { source, gno } => Some(format!("{source}:{gno}")),
        }
    }

    /// Resumed inside a transaction: the first transaction read must be that one, or skipping
    /// its first changes would lose another's.
    pub(super) fn check_resumed_txn(&mut self) -> Result<()> {
        if let Some(expected) = self.txn_expect.take()
            && self.txn_skip > 0
            && let Some(got) = self.pending_gtid_text()
            && got != expected
        {
            return Err(Error::data(format!(
                "the MySQL binlog resumed at transaction {got}, not at {expected} (whose first {} changes \
                 the target already has); reset the flow to take a new snapshot",
                self.txn_skip
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn positions_are_read_and_written_in_one_shape() {
        let inside = json!({"file": "mysql-bin.000003", "pos": 1234, "gtid": "0-1-7", "skip": 2, "txn": "0-1-8"});
        assert_eq!(BinlogPosition::read(&inside).expect("a position").value(), inside);
        let plain = BinlogPosition { file: "f".into(), pos: 9, ..Default::default() };
        assert_eq!(plain.value(), json!({"file": "f", "pos": 9}));
        // Another connector's position is refused by name, not read as the start of the binlog.
        let err = BinlogPosition::read(&json!({"lsn": "0/16B3748"})).expect_err("not a binlog position");
        assert!(err.message.contains("reset the flow"), "{}", err.message);
    }

    #[test]
    fn a_rotate_events_name_is_the_listed_file_without_its_checksum() {
        let files = vec!["mysql-bin.000001".to_string(), "mysql-bin.000002".to_string()];
        let mut raw = b"mysql-bin.000002".to_vec();
        raw.extend_from_slice(&[0xc3, b'_', 0x9f, 0x01]);
        assert_eq!(listed_name(&raw, &files), "mysql-bin.000002");
        assert_eq!(listed_name(b"mysql-bin.000001", &files), "mysql-bin.000001");
        assert_eq!(listed_name(b"other.000009", &files), "other.000009", "unlisted: as the event says");
    }

    #[test]
    fn ddl_on_the_flows_tables_is_recognised() {
        let t = vec!["items".to_string(), "Orders".to_string()];
        let d = |sql: &str| ddl_of(sql, "shop", "shop", &t);
        assert_eq!(d("ALTER TABLE items ADD COLUMN note TEXT"), Some(("items".into(), Ddl::AddColumn)));
        assert_eq!(d("alter table `shop`.`items` add note int, add other int"), Some(("items".into(), Ddl::AddColumn)));
        assert_eq!(d("/* x */ ALTER TABLE orders ADD COLUMN n INT"), Some(("Orders".into(), Ddl::AddColumn)));
        assert_eq!(d("ALTER TABLE items ADD INDEX i (name)"), None);
        assert_eq!(
            d("ALTER TABLE items DROP COLUMN name"),
            Some(("items".into(), Ddl::Other("was altered beyond added columns")))
        );
        assert_eq!(
            d("ALTER TABLE items MODIFY name TEXT"),
            Some(("items".into(), Ddl::Other("was altered beyond added columns")))
        );
        assert_eq!(d("DROP TABLE IF EXISTS `other`, items"), Some(("items".into(), Ddl::Other("was dropped"))));
        assert_eq!(d("TRUNCATE items"), Some(("items".into(), Ddl::Other("was truncated"))));
        assert_eq!(d("RENAME TABLE a TO b, items TO old_items"), Some(("items".into(), Ddl::Other("was renamed"))));
        assert_eq!(d("ALTER TABLE other ADD COLUMN x INT"), None);
        assert_eq!(ddl_of("DROP TABLE items", "elsewhere", "shop", &t), None);
        assert_eq!(d("CREATE TABLE items2 (id INT)"), None);
        assert_eq!(d("INSERT INTO items VALUES (1)"), None);
    }
}
