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
}

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
        // Make the new table visible to `show tables`, `peek` and `count` right away.
        if let Ok(c) = self.store.connection(&self.connection_id) {
            let created = self.conn.borrow_mut().schema(&self.target.table)?;
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
        }
        Ok(new.into_iter().map(|f| f.name).collect())
    }

    pub(super) fn write(&mut self, events: Vec<Event>, metrics: &Mutex<Metrics>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let changes: Vec<Change> = events.into_iter().map(|e| e.change).collect();
        self.ensure_ready(changes.first())?;
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

    fn written(&mut self, changes: &[Change], metrics: &Mutex<Metrics>) -> Result<()> {
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
        // Every record must carry its whole key: a null or missing key would write a row no
        // later change can find (and duplicate on replay), so the flow stops instead.
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
        self.conn.borrow_mut().write(&self.target, changes)
    }
}
