//! Whole databases: a `migrate` task (TapFlow's `Pipeline`), a `database` source node, an
//! optional `table_rename_processor`, a `database` target node. Every selected table is copied
//! into a table of its own (named by the rename), keyed by its own primary key, then kept in
//! CDC; the tables are those the node lists (`custom`) or those whose names match its
//! expression, matched again at every start and every few seconds while it runs, so a table
//! that starts matching is copied and followed from then on.
//!
//! A newly matched table joins the change stream first (its triggers, publication or stream
//! filter), then is copied; the CDC position has not moved past anything since, so every change
//! it gets after it joined is applied over its copy, idempotently, by key.

use super::*;
use crate::api::dag::{Dag, DatabaseNode};
use std::cell::RefCell;
use std::rc::Rc;

pub(super) struct MigratePlan {
    pub(super) name: String,
    pub(super) source_node: String,
    pub(super) source: DatabaseNode,
    /// `None`: the node's list; `Some`: the tables whose names match, whole.
    pub(super) pattern: Option<regex::Regex>,
    pub(super) target_node: String,
    pub(super) target: DatabaseNode,
    pub(super) rename: (Vec<(String, String)>, String, String),
    pub(super) existing: ExistingData,
    pub(super) snapshot: bool,
    pub(super) cdc: bool,
    pub(super) read_batch: usize,
}

impl MigratePlan {
    fn target_table(&self, table: &str) -> String {
        let (map, prefix, suffix) = &self.rename;
        match map.iter().find(|(from, _)| from == table) {
            Some((_, to)) => to.clone(),
            None => format!("{prefix}{table}{suffix}"),
        }
    }

    /// The source's tables this pipeline copies, in name order.
    fn select(&self, conn: &mut dyn Connector) -> Result<Vec<String>> {
        let mut all = conn.tables()?;
        all.sort();
        match &self.pattern {
            Some(re) => Ok(all.into_iter().filter(|t| re.is_match(t)).collect()),
            None => {
                if let Some(missing) = self.source.table_names.iter().find(|t| !all.contains(t)) {
                    return Err(Error::not_found(format!(
                        "pipeline {}: the source has no table {missing}; its tables: {}",
                        self.name,
                        if all.is_empty() { "none".into() } else { all.join(", ") }
                    )));
                }
                let mut chosen = self.source.table_names.clone();
                chosen.sort();
                chosen.dedup();
                Ok(chosen)
            }
        }
    }
}

/// The migrate plan of a task whose DAG reads a `database` node; `None` for other tasks.
pub(super) fn plan(task: &Value) -> Result<Option<MigratePlan>> {
    let dag = Dag::parse(task).map_err(|r| Error::unsupported(r.message))?;
    let dbs: Vec<&crate::api::dag::Node> = dag.nodes.iter().filter(|n| n.database().is_some()).collect();
    if dbs.is_empty() {
        return Ok(None);
    }
    let name = task.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let sources: Vec<_> = dbs.iter().filter(|n| !dag.has_in(&n.id)).collect();
    let targets: Vec<_> = dbs.iter().filter(|n| dag.has_in(&n.id) && !dag.has_out(&n.id)).collect();
    let ([source], [target]) = (sources.as_slice(), targets.as_slice()) else {
        return Err(Error::unsupported(format!(
            "pipeline {name}: the embedded engine copies one database into one: read_from(\"Conn\") then write_to(\"Target\")"
        )));
    };
    if dag.nodes.iter().any(|n| n.table().is_some()) {
        return Err(Error::unsupported(format!(
            "pipeline {name}: a pipeline copies whole databases; a table node does not belong in it: use a Flow for one table"
        )));
    }
    // Between them: at most a table rename (TapFlow's other processors are for table flows).
    let mut rename = (Vec::new(), String::new(), String::new());
    let mut cur = source.id.as_str();
    while cur != target.id {
        let next = dag.next(cur);
        let [next] = next.as_slice() else {
            return Err(Error::config(format!("pipeline {name}: node {cur} should lead to exactly one next node")));
        };
        if *next != target.id {
            let node = dag.node(next).ok_or_else(|| Error::config(format!("edge to unknown node {next}")))?;
            match node.step() {
                Some(crate::api::steps::Step::TableRename { map, prefix, suffix }) => {
                    rename = (map.clone(), prefix.clone(), suffix.clone());
                }
                _ => {
                    return Err(Error::unsupported(format!(
                        "pipeline {name}: node {:?} ({}) works on one table's records; a pipeline renames tables \
                         only (renameTable): build a Flow per table for the rest",
                        node.name, node.ty
                    )));
                }
            }
        }
        cur = next;
    }
    let (src, tgt) = (source.database().cloned().unwrap_or_default(), target.database().cloned().unwrap_or_default());
    let pattern = match src.migrate_table_select_type.as_deref() {
        Some("custom") => None,
        _ => {
            let expr = src.table_expression.clone().unwrap_or_else(|| ".*".into());
            Some(regex::Regex::new(&format!("^(?:{expr})$")).map_err(|e| {
                Error::config(format!(
                    "pipeline {name}: the table expression {expr:?} is not a regular expression: {e}"
                ))
            })?)
        }
    };
    if pattern.is_none() && src.table_names.is_empty() {
        return Err(Error::config(format!("pipeline {name}: the source names no tables")));
    }
    let sync = crate::api::dag::task_type(task);
    Ok(Some(MigratePlan {
        name,
        source_node: source.id.clone(),
        read_batch: src.read_batch_size.map_or(SNAPSHOT_BATCH, |n| n as usize),
        existing: ExistingData::from_tapdata(tgt.exist_data_process_mode.as_deref()),
        source: src,
        pattern,
        target_node: target.name.clone(),
        target: tgt,
        rename,
        snapshot: sync.contains("initial_sync"),
        cdc: sync.contains("cdc"),
    }))
}

/// What a save checks when the source answers: the tables it names exist and each has a key.
pub(super) fn check(store: &Store, plan: &MigratePlan) -> Result<()> {
    // A source that does not answer now is checked at start.
    let Ok(mut conn) = open_connection(store, &plan.source.connection_id) else { return Ok(()) };
    if conn.tables().is_err() {
        return Ok(());
    }
    for t in &plan.select(conn.as_mut())? {
        table_key(plan, conn.as_mut(), t)?;
    }
    Ok(())
}

/// A table's key: its primary key, else its first unique index on NOT NULL columns.
fn table_key(plan: &MigratePlan, conn: &mut dyn Connector, table: &str) -> Result<(Schema, Vec<String>)> {
    let schema = conn.schema(table)?;
    let mut key = schema.primary_key();
    if key.is_empty() {
        key = source_key(conn, table, &[])?.ok_or_else(|| {
            Error::schema(format!(
                "pipeline {}: table {table} has no primary key or unique index on NOT NULL columns, so its rows \
                 could not be found again to update or delete: add one, or leave the table out \
                 (Source(\"Conn\", #{{ table_re: \"…\" }}) or #{{ table: [ … ] }})",
                plan.name
            ))
        })?;
    }
    Ok((schema, key))
}

/// One copied table: its sink and whether its snapshot is in the checkpoint.
struct Copy {
    sink: Sink,
}

pub(super) fn run(ctx: &FlowCtx, plan: MigratePlan) -> Result<Outcome> {
    let flow_id = ctx.task_id.clone();
    let conn_id = plan.source.connection_id.clone();
    let mut conn = open_connection(&ctx.store, &conn_id)?;
    let tables = plan.select(conn.as_mut())?;
    if tables.is_empty() {
        return Err(Error::not_found(format!(
            "pipeline {}: no table of the source matches {:?}; its tables: {}",
            plan.name,
            plan.source.table_expression.as_deref().unwrap_or(".*"),
            conn.tables()?.join(", ")
        )));
    }
    // One connection into the target for every table's sink.
    let target: SharedConnection = Rc::new(RefCell::new(open_connection(&ctx.store, &plan.target.connection_id)?));
    let mut copies: HashMap<String, Copy> = HashMap::new();
    for t in &tables {
        copies.insert(t.clone(), open_copy(ctx, &plan, conn.as_mut(), &target, t)?);
    }
    ctx.log("INFO", &format!("pipeline {}: {} tables: {}", plan.name, tables.len(), tables.join(", ")));
    if let Ok(mut m) = ctx.metrics.lock() {
        m.tables = tables.len() as u64;
    }
    let node_of = |t: &str| format!("{}/{t}", plan.source_node);
    let mut checkpoint = match Checkpoint::load(&ctx.store, &flow_id)? {
        Some(cp) => {
            // Resumed: what captured the copied tables must still be there; tables matched
            // since join below, as new ones do while it runs.
            let done: Vec<String> = tables.iter().filter(|t| cp.snapshot_done_for(&node_of(t))).cloned().collect();
            if plan.cdc {
                conn.cdc_prepare(&flow_id, &done, true)?;
                if done.len() < tables.len() {
                    conn.cdc_prepare(&flow_id, &tables, false)?;
                }
            }
            copies.values_mut().for_each(|c| c.sink.target.existing = ExistingData::Keep);
            cp
        }
        None => {
            let mut positions = serde_json::Map::new();
            if plan.cdc {
                conn.cdc_prepare(&flow_id, &tables, false)?;
                positions.insert(conn_id.clone(), conn.cdc_position(&flow_id)?);
            }
            let cp = Checkpoint::new(plan.snapshot, positions);
            cp.save(&ctx.store, &flow_id)?;
            cp
        }
    };
    ctx.notices(conn.as_mut());
    if checkpoint.phase == Phase::Snapshot || tables.iter().any(|t| !checkpoint.snapshot_done_for(&node_of(t))) {
        ctx.set_status("running", json!({"syncStatus": "SNAPSHOT"}));
        ctx.log("INFO", "Initial sync started");
        for t in &tables {
            if checkpoint.snapshot_done_for(&node_of(t)) {
                continue;
            }
            if !copy_table(ctx, &plan, conn.as_mut(), t, copies.get_mut(t).ok_or_else(|| Error::internal("copy"))?)? {
                return Ok(Outcome::Stopped);
            }
            checkpoint.snapshot_done.push(node_of(t));
            checkpoint.save(&ctx.store, &flow_id)?;
        }
        if checkpoint.phase == Phase::Snapshot {
            ctx.snapshot_done(&mut checkpoint, "Initial sync completed")?;
        }
    }
    if let Some(outcome) = ctx.complete_or_cdc(plan.cdc)? {
        return Ok(outcome);
    }
    let mut sources: Sources = vec![(conn_id.clone(), conn, tables)];
    let mut last_look = std::time::Instant::now();
    // Both the writer and the table watcher below reach the copies.
    let copies = RefCell::new(copies);
    cdc_loop(
        ctx,
        &mut sources,
        &mut checkpoint,
        CDC_BATCH,
        |_, _, _, events| {
            // Each table's changes into its own target table, in order.
            let mut by_table: Vec<(Arc<str>, Vec<Event>)> = Vec::new();
            for e in events {
                match by_table.last_mut() {
                    Some((t, v)) if *t == e.table => v.push(e),
                    _ => by_table.push((e.table.clone(), vec![e])),
                }
            }
            for (table, batch) in by_table {
                if let Some(c) = copies.borrow_mut().get_mut(&*table) {
                    c.sink.write(batch, &ctx.metrics)?;
                }
            }
            Ok(())
        },
        |sources, checkpoint| {
            // Every few seconds: tables that started matching join the change stream, then are copied.
            if plan.pattern.is_none() || last_look.elapsed() < Duration::from_secs(3) {
                return Ok(());
            }
            last_look = std::time::Instant::now();
            let (_, conn, tables) = sources.first_mut().ok_or_else(|| Error::internal("source"))?;
            let now = plan.select(conn.as_mut())?;
            let new: Vec<String> = now.iter().filter(|t| !tables.contains(t)).cloned().collect();
            if new.is_empty() {
                return Ok(());
            }
            let mut all = tables.clone();
            all.extend(new.iter().cloned());
            conn.cdc_prepare(&flow_id, &all, false)?;
            for t in &new {
                let mut copy = open_copy(ctx, &plan, conn.as_mut(), &target, t)?;
                ctx.log("INFO", &format!("pipeline {}: table {t} matches now: copying it", plan.name));
                if !copy_table(ctx, &plan, conn.as_mut(), t, &mut copy)? {
                    return Ok(());
                }
                copies.borrow_mut().insert(t.clone(), copy);
                checkpoint.snapshot_done.push(node_of(t));
                checkpoint.save(&ctx.store, &flow_id)?;
            }
            *tables = all;
            if let Ok(mut m) = ctx.metrics.lock() {
                m.tables = tables.len() as u64;
            }
            Ok(())
        },
    )
}

/// The sink of one table, keyed by the table's own key.
fn open_copy(
    ctx: &FlowCtx,
    plan: &MigratePlan,
    conn: &mut dyn Connector,
    target_conn: &SharedConnection,
    table: &str,
) -> Result<Copy> {
    let (schema, key) = table_key(plan, conn, table)?;
    let target = Target::new(&plan.target_table(table), &key, plan.existing);
    let sink = Sink::sharing(
        ctx,
        &plan.name,
        &plan.target_node,
        &plan.target.connection_id,
        target_conn.clone(),
        target,
        schema,
    );
    Ok(Copy { sink })
}

/// Copy one table's rows into its target; false when the flow is stopping.
fn copy_table(
    ctx: &FlowCtx,
    plan: &MigratePlan,
    conn: &mut dyn Connector,
    table: &str,
    copy: &mut Copy,
) -> Result<bool> {
    let name: Arc<str> = Arc::from(table);
    let started = now_ms();
    // A pipeline learns its tables as it goes: each adds its estimate when its copy starts.
    let estimate = conn.estimate(table).unwrap_or(0);
    if let Ok(mut m) = ctx.metrics.lock() {
        m.snapshot_table = table.to_string();
        m.snapshot_estimate = m.snapshot_estimate.max(m.snapshot_rows) + estimate;
    }
    super::run::read_ahead(conn, &SnapshotRequest::table(table, plan.read_batch), &mut |rows| {
        if ctx.stopped() {
            return Ok(ControlFlow::Break(()));
        }
        let n = rows.len() as u64;
        let events: Vec<Event> = rows
            .into_iter()
            .map(|after| Event { table: name.clone(), change: Change::Insert { after }, ts_ms: 0 })
            .collect();
        if let Ok(mut m) = ctx.metrics.lock() {
            m.input[0] += n;
            m.snapshot_rows += n;
            m.replicate_lag = now_ms() - started;
        }
        copy.sink.write(events, &ctx.metrics).map(|_| ControlFlow::Continue(()))
    })?;
    if ctx.stopped() {
        return Ok(false);
    }
    copy.sink.ensure_ready(None)?;
    if let Ok(mut m) = ctx.metrics.lock() {
        m.snapshot_tables += 1;
    }
    ctx.log("INFO", &format!("Initial sync of table {table} done (into {})", copy.sink.target.table));
    Ok(true)
}
