use super::*;
use std::cell::RefCell;
use std::rc::Rc;

/// A target connection, shared by the sinks that write through it (one flow thread).
pub(super) type SharedConnection = Rc<RefCell<Box<dyn Connector>>>;

/// A record as JSON for a message, cut to 300 bytes.
pub(super) fn record_text(r: &Record) -> String {
    let mut shown = Value::Object(r.to_json()).to_string();
    if shown.len() > 300 {
        let cut = (0..=300).rev().find(|&i| shown.is_char_boundary(i)).unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    shown
}

pub(super) fn open_connection(store: &Store, id: &str) -> Result<Box<dyn Connector>> {
    store.open_connection(id)
}

/// The sink side: prepares the target lazily, from the first records it sees.
pub(super) struct Sink {
    /// The flow's and the target node's names, for errors.
    pub(super) flow: String,
    pub(super) node: String,
    /// Its target connection; the sinks of a pipeline's tables share one.
    pub(super) conn: SharedConnection,
    pub(super) store: Arc<Store>,
    pub(super) connection_id: String,
    /// The target table, its key, and what preparing it does to the rows it holds.
    pub(super) target: Target,
    pub(super) ready: bool,
    pub(super) schema: Schema,
    /// `skip_error_event_by_limit`: changes the target refuses are skipped, up to a limit.
    pub(super) skips: Option<Arc<super::skip::Skipper>>,
    /// Whether large batches may be split (see [`Sink::splits`]), and the flow's task and
    /// record ids to log it under: set for a plain flow's CDC. A snapshot's batches are not
    /// split: measured on two cores, two concurrent COPYs into one table copied slower than one.
    pub(super) split: Option<(String, String)>,
    /// A large batch into a target that takes concurrent writers is split by key over this
    /// sink's connection and a second one (see [`Sink::write_split`]): opened at the first
    /// such batch, dropped when the target's columns change.
    second: Option<Box<dyn Connector>>,
    /// The target table's columns once prepared: a batch is split only if its images carry
    /// no other field (a field the target lacks is added by the writer, which must be one).
    columns: Option<std::collections::HashSet<String>>,
}

/// A batch this large (or larger) into a target whose connector takes concurrent writers is
/// written as two halves by key, each on its own connection at the same time.
const SPLIT_FROM: usize = 1000;

impl Sink {
    /// The plan's target, not prepared yet: it is created or checked from the first records.
    pub(super) fn open(ctx: &FlowCtx, plan: &Plan, key: Vec<String>, schema: Schema) -> Result<Self> {
        let target = if plan.sink.append {
            Target::appending(&plan.sink.table, plan.sink.existing)
        } else {
            Target::new(&plan.sink.table, &key, plan.sink.existing)
        };
        Sink::new(ctx, &plan.name, &plan.sink.name, &plan.sink.connection_id, target, schema)
    }

    /// A sink writing `target` through the connection `connection_id`.
    pub(super) fn new(
        ctx: &FlowCtx,
        flow: &str,
        node: &str,
        connection_id: &str,
        target: Target,
        schema: Schema,
    ) -> Result<Self> {
        let conn = Rc::new(RefCell::new(open_connection(&ctx.store, connection_id)?));
        Ok(Sink::sharing(ctx, flow, node, connection_id, conn, target, schema))
    }

    /// The same, through a connection other sinks write through too.
    pub(super) fn sharing(
        ctx: &FlowCtx,
        flow: &str,
        node: &str,
        connection_id: &str,
        conn: SharedConnection,
        target: Target,
        schema: Schema,
    ) -> Self {
        Sink {
            flow: flow.to_string(),
            node: node.to_string(),
            conn,
            store: ctx.store.clone(),
            connection_id: connection_id.to_string(),
            target,
            ready: false,
            schema,
            skips: None,
            split: None,
            second: None,
            columns: None,
        }
    }

    /// Whether the target table exists now.
    pub(super) fn table_present(&mut self) -> Result<bool> {
        Ok(self.conn.borrow_mut().tables()?.contains(&self.target.table))
    }

    /// Resuming in CDC: a target table that existed when the snapshot ended must exist still
    /// (while the flow runs, writing into a dropped table fails, or — MongoDB — is refused by
    /// the connector).
    pub(super) fn check_resumed(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        if checkpoint.phase == Phase::Cdc && checkpoint.target_table == Some(true) && !self.table_present()? {
            return Err(Error::not_found(format!(
                "flow {}: the target table {} (node {:?}) is gone although the flow copied into it; going \
                 on would leave it holding only the changes from now on, so the flow stops: reset it to copy again",
                self.flow, self.target.table, self.node
            )));
        }
        Ok(())
    }

    pub(super) fn ensure_ready(&mut self, first: Option<&Change>) -> Result<()> {
        if self.ready {
            return Ok(());
        }
        let mut schema = self.schema.clone();
        if let Some(c) = first {
            // The first output record decides the columns; the source schema decides their types.
            let rec = c.key_image();
            let mut fields = Vec::with_capacity(rec.len());
            for (name, v) in rec {
                fields.push(schema.field(name).cloned().unwrap_or(crate::model::Field {
                    name: name.clone(),
                    ty: v.field_type().unwrap_or(crate::model::FieldType::Text),
                    data_type: String::new(),
                    primary_key: false,
                    nullable: true,
                }));
            }
            schema.fields = fields;
        }
        for f in &mut schema.fields {
            f.primary_key = self.target.key.contains(&f.name);
        }
        self.conn.borrow_mut().prepare_target(&self.target, &schema)?;
        self.ready = true;
        let created = self.conn.borrow_mut().schema(&self.target.table)?;
        self.columns = Some(created.fields.iter().map(|f| f.name.clone()).collect());
        // Make the new table visible to `show tables`, `peek` and `count` right away.
        if let Ok(c) = self.store.connection(&self.connection_id) {
            let doc = crate::api::metadata::metadata_doc(&self.connection_id, &c.name, &c.database_type, &created);
            self.store.put(METADATA, &doc)?;
        }
        Ok(())
    }

    /// Columns added to a source (DDL synchronised): the fields of `output` (the flow's output
    /// schema now) the target lacks are added to it, typed. Returns their names.
    pub(super) fn add_columns(&mut self, output: &Schema) -> Result<Vec<String>> {
        let new: Vec<crate::model::Field> =
            output.fields.iter().filter(|f| self.schema.field(&f.name).is_none()).cloned().collect();
        if new.is_empty() {
            return Ok(Vec::new());
        }
        self.schema.fields.extend(new.iter().cloned());
        if !self.ready {
            // Created from the whole schema, the new fields with it.
            self.ensure_ready(None)?;
        } else {
            let keep = Target { existing: ExistingData::Keep, ..self.target.clone() };
            let fields = new.iter().cloned().map(|mut f| {
                f.primary_key = false;
                f
            });
            let added = Schema { table: self.target.table.clone(), fields: fields.collect() };
            self.conn.borrow_mut().prepare_target(&keep, &added)?;
            // The second writer knew the columns before: it is opened anew when next needed.
            self.second = None;
            if let Some(cols) = self.columns.as_mut() {
                cols.extend(new.iter().map(|f| f.name.clone()));
            }
        }
        Ok(new.into_iter().map(|f| f.name).collect())
    }

    pub(super) fn write(&mut self, events: Vec<Event>, metrics: &Mutex<Metrics>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let changes: Vec<Change> = events.into_iter().map(|e| e.change).collect();
        self.ensure_ready(changes.first())?;
        if self.skips.is_none() && self.splits(&changes) {
            let (a, b) = split_by_key(changes, &self.target.key);
            self.write_split(&a, &b)?;
            return self.written(a.iter().chain(&b), metrics);
        }
        match (self.write_changes(&changes), self.skips.clone()) {
            (Ok(()), _) => {}
            (Err(e), Some(skips)) if super::skip::skippable(&e) => {
                // Again one change at a time: only those that fail are skipped.
                let mut kept = Vec::with_capacity(changes.len());
                for c in changes {
                    match self.write_changes(std::slice::from_ref(&c)) {
                        Ok(()) => kept.push(c),
                        Err(e) if super::skip::skippable(&e) => skips.skip(&c, e)?,
                        Err(e) => return Err(e),
                    }
                }
                return self.written(&kept, metrics);
            }
            (Err(e), _) => return Err(e),
        }
        self.written(&changes, metrics)
    }

    /// Whether this batch is written as two halves by key at once: it is large, the target is
    /// keyed and its connector takes concurrent writers, no update moves a row to another key
    /// (its delete and insert would land in different halves) and no image carries a field the
    /// target lacks (adding it is one writer's job).
    fn splits(&self, changes: &[Change]) -> bool {
        let Some(columns) = &self.columns else { return false };
        if self.split.is_none()
            || changes.len() < SPLIT_FROM
            || self.target.append
            || self.target.key.is_empty()
            || !self.conn.borrow().concurrent_writes()
        {
            return false;
        }
        let key = &self.target.key;
        let mut last: Option<&Record> = None;
        for c in changes {
            if let Change::Update { before: Some(b), after } = c
                && key.iter().any(|k| b.get(k) != after.get(k))
            {
                return false;
            }
            let image = c.key_image();
            if last.is_some_and(|l| crate::connectors::sql::same_fields(l, image)) {
                continue;
            }
            if !image.keys().all(|f| columns.contains(f)) {
                return false;
            }
            last = Some(image);
        }
        true
    }

    /// Write the two halves of a batch at once, `a` through this sink's connection and `b`
    /// through its second one, each in a transaction of its own. Each key is in one half, in
    /// its order, so the target ends as one writer would leave it; if either fails the batch
    /// fails, its position is not saved, and the replay rewrites both halves (the writes are
    /// idempotent by key).
    fn write_split(&mut self, a: &[Change], b: &[Change]) -> Result<()> {
        self.check_keys(a)?;
        self.check_keys(b)?;
        if self.second.is_none() {
            self.second = Some(open_connection(&self.store, &self.connection_id)?);
            if let Some((task, record)) = &self.split {
                let message = format!(
                    "target {}: large batches of changes are written by two connections at once, each taking the \
                     keys of its half",
                    self.target.table
                );
                // Best effort, as every line of a flow's log (`FlowCtx::log`).
                let _ = self.store.log(task, record, "INFO", &message);
            }
        }
        let second = self.second.as_deref_mut().ok_or_else(|| Error::internal("second writer"))?;
        let target = &self.target;
        let mut first = self.conn.borrow_mut();
        let (one, two) = std::thread::scope(|s| {
            let other = std::thread::Builder::new()
                .name("tap-write".into())
                .spawn_scoped(s, move || second.write(target, b))
                .map_err(|e| Error::internal(format!("cannot start a second writer thread: {e}")));
            let one = first.write(target, a);
            let two = other.and_then(|t| t.join().map_err(|_| Error::internal("the second writer thread panicked"))?);
            (one, two)
        });
        if two.is_err() {
            // Whatever it was in the middle of is gone with it: a new one next time.
            self.second = None;
        }
        one.and(two)
    }

    fn written<'a>(&mut self, changes: impl IntoIterator<Item = &'a Change>, metrics: &Mutex<Metrics>) -> Result<()> {
        crate::engine::failpoint::hit("after_batch");
        crate::engine::failpoint::hold("after_batch");
        if let Ok(mut m) = metrics.lock() {
            for c in changes {
                m.output[op_index(c)] += 1;
            }
            m.tick();
        }
        Ok(())
    }

    /// Write changes to the target, each carrying its whole key.
    fn write_changes(&mut self, changes: &[Change]) -> Result<()> {
        self.check_keys(changes)?;
        self.conn.borrow_mut().write(&self.target, changes)
    }

    /// Every record must carry its whole key: a null or missing key would write a row no later
    /// change can find (and duplicate on replay), so the flow stops instead.
    fn check_keys(&self, changes: &[Change]) -> Result<()> {
        for c in changes {
            let image = c.key_image();
            if let Some(bad) =
                self.target.key.iter().find(|k| image.get(k.as_str()).is_none_or(crate::model::Value::is_null))
            {
                let what = if image.contains_key(bad.as_str()) { "null" } else { "missing" };
                let shown = record_text(image);
                return Err(Error::rejected(format!(
                    "flow {}: a record reaching target node {:?} ({}) has its key field {bad:?} {what}; \
                     records must keep their key through the processors (fields: {}) — record: {shown}",
                    self.flow,
                    self.node,
                    self.target.table,
                    image.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// A batch as two halves by a hash of each change's key, each key's changes in their order.
/// A key is hashed as its values' text (as `sql::plan` tells keys apart, `1` and `"1"` alike),
/// written straight into the hasher.
fn split_by_key(changes: Vec<Change>, key: &[String]) -> (Vec<Change>, Vec<Change>) {
    use std::fmt::Write as _;
    use std::hash::{BuildHasher, Hasher as _};
    struct Feed<H>(H);
    impl<H: std::hash::Hasher> std::fmt::Write for Feed<H> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let hasher = crate::model::Hasher::default();
    let (mut a, mut b) = (Vec::with_capacity(changes.len() / 2 + 1), Vec::with_capacity(changes.len() / 2 + 1));
    for c in changes {
        let image = c.key_image();
        let mut feed = Feed(hasher.build_hasher());
        for k in key {
            // Writing into a hasher cannot fail.
            if let Some(v) = image.get(k) {
                let _ = write!(feed, "{v}");
            }
            feed.0.write_u8(0xff);
        }
        if feed.0.finish() & 1 == 0 { a.push(c) } else { b.push(c) }
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: Value) -> Record {
        Record::from_json_value(v).expect("object")
    }

    /// Each key's changes land in one half, in their order, and both halves get some.
    #[test]
    fn a_split_keeps_each_keys_changes_together_and_in_order() {
        let key = vec!["id".to_string(), "k".to_string()];
        let mut changes = Vec::new();
        for round in 0..3 {
            for id in 0..200 {
                let image = rec(json!({"id": id, "k": "x", "n": round}));
                changes.push(if round == 0 {
                    Change::Insert { after: image }
                } else if round == 1 {
                    Change::Update { before: None, after: image }
                } else {
                    Change::Delete { before: image }
                });
            }
        }
        // A key written as text is the same key as the number (as the planner sees it).
        changes.push(Change::Delete { before: rec(json!({"id": "7", "k": "x", "n": 3})) });
        let (a, b) = split_by_key(changes, &key);
        assert!(a.len() > 50 && b.len() > 50, "both halves are used: {} / {}", a.len(), b.len());
        for half in [&a, &b] {
            let mut seen: HashMap<String, i64> = HashMap::new();
            for c in half.iter() {
                let image = c.key_image();
                let id = image["id"].to_string();
                let round = image["n"].to_json().as_i64().unwrap_or(-1);
                let last = seen.insert(id.clone(), round);
                assert!(last.is_none_or(|l| l < round), "key {id}: round {round} after {last:?}");
            }
        }
        let keys = |half: &[Change]| -> std::collections::HashSet<String> {
            half.iter().map(|c| c.key_image()["id"].to_string()).collect()
        };
        assert!(keys(&a).is_disjoint(&keys(&b)), "no key is in both halves");
        assert_eq!(keys(&a).len() + keys(&b).len(), 200);
    }
}
