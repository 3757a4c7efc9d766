use super::*;

pub(super) fn run(ctx: &FlowCtx, task: &Value) -> Result<Outcome> {
    if let Some(m) = super::migrate::plan(task)? {
        return super::migrate::run(ctx, m);
    }
    let mut plan = plan(task)?;
    // User functions watch the flow's stop flag, so `stop` interrupts a batch in them.
    for p in plan.sources.iter_mut().flat_map(|s| s.chain.iter_mut()) {
        p.watch(ctx.stop.clone());
        p.attach(&ctx.store, &ctx.task_id);
    }
    if let Some(merge) = plan.merge.as_mut() {
        merge.post.iter_mut().for_each(|p| {
            p.watch(ctx.stop.clone());
            p.attach(&ctx.store, &ctx.task_id);
        });
    }
    if plan.merge.is_some() {
        return run_lookup(ctx, plan);
    }
    let mut sources = open_sources(&ctx.store, &plan)?;
    bind_chains(&mut plan, &mut sources)?;
    // The sink key: the node's updateConditionFields, else the first source's primary key.
    let (first_conn, first_table) = (plan.sources[0].connection_id.clone(), plan.sources[0].table.clone());
    let mut schema = {
        let (_, conn, _) =
            sources.iter_mut().find(|(id, _, _)| *id == first_conn).ok_or_else(|| Error::internal("source"))?;
        conn.schema(&first_table)?
    };
    for p in plan.sources[0].chain.iter_mut() {
        let fields: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
        p.check(&fields)?;
        schema = p.schema(schema);
    }
    // Which fields the chain really outputs (user functions may drop or add some): run it once
    // over a record of nulls; if a function cannot take nulls, keep the derived schema.
    let source_fields: Vec<String> = {
        let (_, conn, _) =
            sources.iter_mut().find(|(id, _, _)| *id == first_conn).ok_or_else(|| Error::internal("source"))?;
        conn.schema(&first_table)?.fields.into_iter().map(|f| f.name).collect()
    };
    if let Some(out) = probe(&mut plan.sources[0].chain, &first_table, &source_fields) {
        schema.fields = out
            .keys()
            .map(|name| {
                schema.field(name).cloned().unwrap_or(crate::model::Field {
                    name: name.clone(),
                    ty: crate::model::FieldType::Text,
                    data_type: String::new(),
                    primary_key: false,
                    nullable: true,
                })
            })
            .collect();
    }
    let key = {
        let (_, conn, _) =
            sources.iter_mut().find(|(id, _, _)| *id == first_conn).ok_or_else(|| Error::internal("source"))?;
        plain_key(&plan, conn.as_mut(), &schema)?
    };
    let mut sink = Sink::open(ctx, &plan, key, schema)?;
    let skips = Skipper::of(ctx, plan.skip_limit);
    sink.skips = skips.clone();
    if let Ok(mut m) = ctx.metrics.lock() {
        m.tables = plan.sources.len() as u64;
    }

    let mut checkpoint = start_checkpoint(ctx, &plan, &mut sources, &mut sink)?;
    sink.check_resumed(&checkpoint)?;
    if plan.sink.append {
        ctx.log(
            "INFO",
            &format!(
                "target {} appends every change as a new row (writeStrategy appendWrite): at-least-once, so a batch \
                 being written when the flow stopped abruptly is appended again when it resumes",
                plan.sink.table
            ),
        );
    }

    if checkpoint.phase == Phase::Snapshot {
        ctx.set_status("running", json!({"syncStatus": "SNAPSHOT"}));
        let started = now_ms();
        if let Ok(mut m) = ctx.metrics.lock() {
            m.snapshot_start_at.get_or_insert(started);
        }
        ctx.log("INFO", "Initial sync started");
        estimate_snapshot(ctx, &plan, &checkpoint, &mut sources);
        for s in &mut plan.sources {
            if checkpoint.snapshot_done_for(&s.node_id) {
                continue;
            }
            if let Ok(mut m) = ctx.metrics.lock() {
                m.snapshot_table = s.table.clone();
            }
            let (_, conn, _) = sources
                .iter_mut()
                .find(|(id, _, _)| *id == s.connection_id)
                .ok_or_else(|| Error::internal("source"))?;
            let table: Arc<str> = Arc::from(s.table.as_str());
            let request = s.snapshot_request();
            let chain = &mut s.chain;
            let sink = &mut sink;
            read_ahead(conn.as_mut(), &request, &mut |rows| {
                if ctx.stopped() {
                    return Ok(ControlFlow::Break(()));
                }
                let n = rows.len() as u64;
                let events: Vec<Event> = rows
                    .into_iter()
                    .map(|after| Event { table: table.clone(), change: Change::Insert { after }, ts_ms: 0 })
                    .collect();
                let events = run_chain(chain, events, skips.as_deref())?;
                if let Ok(mut m) = ctx.metrics.lock() {
                    m.input[0] += n;
                    m.snapshot_rows += n;
                    m.replicate_lag = now_ms() - started;
                }
                sink.write(events, &ctx.metrics).map(|_| ControlFlow::Continue(()))
            })?;
            if ctx.stopped() {
                return Ok(Outcome::Stopped);
            }
            ctx.notices(conn.as_mut());
            sink.ensure_ready(None)?;
            checkpoint.snapshot_done.push(s.node_id.clone());
            checkpoint.save(&ctx.store, &ctx.task_id)?;
            if let Ok(mut m) = ctx.metrics.lock() {
                m.snapshot_tables += 1;
            }
            ctx.log("INFO", &format!("Initial sync of table {} done", s.table));
        }
        checkpoint.target_table = Some(sink.table_present()?);
        ctx.snapshot_done(&mut checkpoint, "Initial sync completed")?;
    }
    if let Some(outcome) = ctx.complete_or_cdc(plan.cdc)? {
        return Ok(outcome);
    }
    sink.split = Some((ctx.task_id.clone(), ctx.record_id.clone()));
    super::pipelined::cdc_pipelined(ctx, &mut sources, &mut checkpoint, |conn_id, altered, events| {
        for (table, schema) in altered {
            for node in plan.sources.iter_mut().filter(|s| s.connection_id == *conn_id && s.table == *table) {
                source_altered(ctx, node, schema.clone(), &mut sink)?;
            }
        }
        // Route each event to the chain of the source node reading its table.
        let mut out = Vec::with_capacity(events.len());
        let mut by_table: Vec<(String, Vec<Event>)> = Vec::new();
        for e in events {
            match by_table.last_mut() {
                Some((t, v)) if **t == *e.table => v.push(e),
                _ => by_table.push((e.table.to_string(), vec![e])),
            }
        }
        for (table, batch) in by_table {
            if let Some(node) = plan.sources.iter_mut().find(|s| s.connection_id == *conn_id && s.table == table) {
                out.extend(run_chain(&mut node.chain, batch, skips.as_deref())?);
            }
        }
        sink.write(out, &ctx.metrics)?;
        Ok(())
    })
}

/// A source table gained columns (read in its change stream; `schema` is its schema now), as
/// its DDL setting says: stop, or add them to the target now, typed as the source declares
/// them and named as the node's processors output them, before the rows that use them;
/// disabled, they come with the rows.
fn source_altered(ctx: &FlowCtx, node: &mut SourceNode, mut schema: Schema, sink: &mut Sink) -> Result<()> {
    match node.ddl {
        DdlMode::Follow => Ok(()),
        DdlMode::Stop => Err(Error::unsupported(format!(
            "source table {} was altered (columns added), and its DDL setting is ERROR, so the flow stops: \
             use enableDDL() to add such columns to the target, or disableDDL() to add them as rows carry them",
            node.table
        ))),
        DdlMode::Sync => {
            for p in node.chain.iter_mut() {
                schema = p.schema(schema);
            }
            let added = sink.add_columns(&schema)?;
            if !added.is_empty() {
                ctx.log(
                    "INFO",
                    &format!(
                        "DDL: source table {} gained column(s) {}; added to target {}",
                        node.table,
                        added.join(", "),
                        sink.target.table
                    ),
                );
            }
            Ok(())
        }
    }
}

/// Open one connector per distinct source connection, with the tables read from each.
pub(super) type Sources = Vec<(String, Box<dyn Connector>, Vec<String>)>;

pub(super) fn open_sources(store: &Store, plan: &Plan) -> Result<Sources> {
    let mut sources: Sources = Vec::new();
    for s in &plan.sources {
        if !sources.iter().any(|(id, _, _)| *id == s.connection_id) {
            sources.push((s.connection_id.clone(), open_connection(store, &s.connection_id)?, Vec::new()));
        }
        if let Some(entry) = sources.iter_mut().find(|(id, _, _)| *id == s.connection_id)
            && !entry.2.contains(&s.table)
        {
            entry.2.push(s.table.clone());
        }
    }
    Ok(sources)
}

/// The CDC loop shared by every flow: poll each source connection after its saved position,
/// hand the events to `apply` (which writes them) with the tables that gained columns in them,
/// then save the position and acknowledge it to the source — in that order, so a position is
/// saved only after its events are written.
pub(super) fn cdc_loop(
    ctx: &FlowCtx,
    sources: &mut Sources,
    checkpoint: &mut Checkpoint,
    batch: usize,
    mut apply: impl FnMut(&str, &mut dyn Connector, &[String], Vec<Event>) -> Result<()>,
    mut between: impl FnMut(&mut Sources, &mut Checkpoint) -> Result<()>,
) -> Result<Outcome> {
    ctx.log("INFO", "Incremental sync (CDC) started");
    let flow_id = &ctx.task_id;
    let wait = Duration::from_millis((200 / sources.len().max(1)) as u64);
    let mut last_save = Instant::now();
    while !ctx.stopped() {
        let mut small = true;
        for (conn_id, conn, tables) in sources.iter_mut() {
            let from: Position = checkpoint.positions.get(conn_id.as_str()).cloned().unwrap_or(Value::Null);
            let (events, next) = conn.changes(flow_id, tables, &from, batch, wait)?;
            small &= !events.is_empty() && events.len() < PACE_BELOW;
            ctx.notices(conn.as_mut());
            let altered = conn.take_altered();
            let write = |events| apply(conn_id, conn.as_mut(), &altered, events);
            let moved = (from != next).then_some(next);
            if let Some(saved) = deliver(ctx, checkpoint, conn_id, moved, events, !altered.is_empty(), write)? {
                conn.cdc_ack(flow_id, &saved)?;
            }
        }
        if last_save.elapsed() > Duration::from_secs(2) {
            ctx.save_metrics();
            last_save = Instant::now();
        }
        between(sources, checkpoint)?;
        if small && !ctx.stopped() {
            std::thread::sleep(CDC_PACE);
        }
    }
    Ok(Outcome::Stopped)
}

/// One read of a source, delivered the same way by both CDC loops: the changes from before the
/// flow's start time dropped, the rest counted in and written by `write` (with none left, only
/// tables that gained columns are, `altered`), their lag behind the source noted, then the
/// position after the read saved if it `moved`. Returns the position saved, to acknowledge.
pub(super) fn deliver(
    ctx: &FlowCtx,
    checkpoint: &mut Checkpoint,
    conn_id: &str,
    moved: Option<Position>,
    mut events: Vec<Event>,
    altered: bool,
    write: impl FnOnce(Vec<Event>) -> Result<()>,
) -> Result<Option<Position>> {
    if let Some(at) = checkpoint.cdc_from_ms {
        events.retain(|e| e.ts_ms == 0 || e.ts_ms >= at);
    }
    if events.is_empty() {
        if altered {
            write(Vec::new())?;
        }
        if let Ok(mut m) = ctx.metrics.lock() {
            m.replicate_lag = 0;
            m.tick();
        }
    } else {
        let newest = events.iter().map(|e| e.ts_ms).max().unwrap_or(0);
        let commits: Vec<i64> = events.iter().map(|e| e.ts_ms).collect();
        if let Ok(mut m) = ctx.metrics.lock() {
            for e in &events {
                m.input[op_index(&e.change)] += 1;
            }
        }
        write(events)?;
        if let Ok(mut m) = ctx.metrics.lock() {
            m.current_event_ts = Some(newest);
            m.replicate_lag = (now_ms() - newest).max(0);
            m.record_lags(&commits);
        }
    }
    let Some(next) = moved else { return Ok(None) };
    checkpoint.positions.insert(conn_id.to_string(), next.clone());
    checkpoint.save(&ctx.store, &ctx.task_id)?;
    crate::engine::failpoint::hit("after_checkpoint");
    Ok(Some(next))
}

/// The flow's checkpoint, or — on a fresh run — a new one holding each source's CDC position,
/// taken before anything is read. CDC is prepared either way; existing target data is handled
/// (kept, removed or dropped) on a fresh run only.
pub(super) fn start_checkpoint(
    ctx: &FlowCtx,
    plan: &Plan,
    sources: &mut Sources,
    sink: &mut Sink,
) -> Result<Checkpoint> {
    let flow_id = &ctx.task_id;
    if plan.cdc {
        pre_images(plan, sources)?;
    }
    if let Some(checkpoint) = Checkpoint::load(&ctx.store, flow_id)? {
        sink.target.existing = ExistingData::Keep;
        if plan.cdc {
            for (_, conn, tables) in sources.iter_mut() {
                conn.cdc_prepare(flow_id, tables, true)?;
                ctx.notices(conn.as_mut());
            }
        }
        return Ok(checkpoint);
    }
    let mut positions = serde_json::Map::new();
    if plan.cdc {
        for (id, conn, tables) in sources.iter_mut() {
            conn.cdc_prepare(flow_id, tables, false)?;
            ctx.notices(conn.as_mut());
            // A start time in the past is found in the change stream; one from now on is the
            // stream's end, with the changes before it dropped (the checkpoint keeps the time).
            let position = match plan.cdc_start {
                Some(at) if at < now_ms() => conn.cdc_position_at(flow_id, at).map_err(|e| Error {
                    message: format!("cannot start CDC of connection {id} at {}: {}", iso_ms(at), e.message),
                    ..e
                })?,
                _ => conn.cdc_position(flow_id)?,
            };
            positions.insert(id.clone(), position);
        }
    }
    let mut checkpoint = Checkpoint::new(plan.snapshot, positions);
    checkpoint.cdc_from_ms = plan.cdc_start;
    checkpoint.save(&ctx.store, flow_id)?;
    Ok(checkpoint)
}

/// The sources that want whole before images (`enablePreImage()`) get them, or the flow stops
/// saying what to change.
fn pre_images(plan: &Plan, sources: &mut Sources) -> Result<()> {
    for s in plan.sources.iter().filter(|s| s.pre_image) {
        source_mut(sources, &s.connection_id)?
            .cdc_pre_images(std::slice::from_ref(&s.table))
            .map_err(|e| e.context(format!("source node of {} (enablePreImage())", s.table)))?;
    }
    Ok(())
}

/// About how many rows the snapshot copies, for its progress: what is copied so far and the
/// sources' estimates of the tables still to copy (a table read by a query counts as it goes).
pub(super) fn estimate_snapshot(ctx: &FlowCtx, plan: &Plan, checkpoint: &Checkpoint, sources: &mut Sources) {
    let mut rest = 0;
    for s in plan.sources.iter().filter(|s| s.query.is_none() && !checkpoint.snapshot_done_for(&s.node_id)) {
        if let Ok(conn) = source_mut(sources, &s.connection_id) {
            rest += conn.estimate(&s.table).unwrap_or(0);
        }
    }
    if let Ok(mut m) = ctx.metrics.lock() {
        m.snapshot_estimate = m.snapshot_rows + rest;
    }
}

pub(super) fn source_mut<'a>(sources: &'a mut Sources, conn: &str) -> Result<&'a mut Box<dyn Connector>> {
    sources.iter_mut().find(|(id, _, _)| id == conn).map(|(_, c, _)| c).ok_or_else(|| Error::internal("source"))
}

/// An epoch-ms time as ISO 8601 UTC, for messages.
fn iso_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()).unwrap_or_else(|| ms.to_string())
}

/// A snapshot read ahead: the source reads and decodes its next batches on a thread of its own
/// while this thread runs the chain and writes, so reading and writing overlap (on two cores, a
/// copy takes about the longer of the two instead of their sum). At most [`READ_AHEAD`] batches
/// wait between them, so memory still follows the batch size. `emit` runs on this thread, in
/// order; its error (or a stop) ends the read, and an error of either side is the snapshot's.
pub(super) fn read_ahead(
    conn: &mut dyn Connector,
    request: &SnapshotRequest,
    emit: &mut crate::connectors::Emit<'_>,
) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(READ_AHEAD);
    std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("tap-snapshot-read".into())
            .spawn_scoped(s, move || {
                // A send fails only once this side stopped taking batches: the read ends there.
                conn.snapshot(request, &mut |rows| {
                    Ok(if tx.send(rows).is_ok() { ControlFlow::Continue(()) } else { ControlFlow::Break(()) })
                })
            })
            .map_err(|e| Error::internal(format!("cannot start the snapshot's reader thread: {e}")))?;
        let mut written = Ok(());
        for rows in rx.iter() {
            match emit(rows) {
                Ok(ControlFlow::Continue(())) => {}
                Ok(ControlFlow::Break(())) => break,
                Err(e) => {
                    written = Err(e);
                    break;
                }
            }
        }
        drop(rx);
        let read = reader.join().map_err(|_| Error::internal("the snapshot's reader thread panicked"))?;
        written.and(read)
    })
}
