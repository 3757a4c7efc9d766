use super::*;

/// The lookup tree of a plan's merge node, and for each tree node the index of the plan's
/// source reading its table.
pub(super) fn lookup_tree(
    plan: &Plan,
    merge: &[crate::api::dag::MergeProperty],
) -> Result<(crate::engine::lookup::Tree, Vec<usize>)> {
    let child_ids: Vec<String> = {
        fn ids(p: &crate::api::dag::MergeProperty, out: &mut Vec<String>) {
            for c in &p.children {
                out.push(c.id.clone());
                ids(c, out);
            }
        }
        let mut out = Vec::new();
        if let Some(head) = merge.first() {
            ids(head, &mut out);
        }
        out
    };
    let main_idx = plan
        .sources
        .iter()
        .position(|s| !child_ids.contains(&s.node_id))
        .ok_or_else(|| Error::config("the lookup has no main table"))?;
    let (main_source, main_table) = (plan.sources[main_idx].node_id.clone(), plan.sources[main_idx].table.clone());
    let tree = crate::engine::lookup::Tree::from_merge(merge, &main_source, &main_table)?;
    let mut node_source: Vec<usize> = Vec::new();
    for n in &tree.nodes {
        let idx = plan.sources.iter().position(|s| s.node_id == n.source_id).ok_or_else(|| {
            Error::config(format!(
                "the lookup names node {} ({}), which is not a source of the flow",
                n.source_id, n.table
            ))
        })?;
        node_source.push(idx);
    }
    Ok((tree, node_source))
}

/// Keys of the lookup's tables: the main table's after the main chain (renames), or its
/// unique index's, or the sink's if it sets one; a child's primary key, else its join fields.
pub(super) fn lookup_keys(
    plan: &Plan,
    sources: &mut Sources,
    tree: &mut crate::engine::lookup::Tree,
    node_source: &[usize],
) -> Result<()> {
    for (i, n) in tree.nodes.iter_mut().enumerate() {
        let s = &plan.sources[node_source[i]];
        let pk = source_mut(sources, &s.connection_id)?.schema(&s.table)?.primary_key();
        n.key = if i == 0 {
            let renamed: Vec<String> =
                pk.iter().filter_map(|k| s.chain.iter().try_fold(k.clone(), |f, p| p.rename(&f))).collect();
            if plan.sink.key.is_empty() { renamed } else { plan.sink.key.clone() }
        } else if pk.is_empty() {
            n.join.iter().map(|(own, _)| own.clone()).chain(n.array_keys.iter().cloned()).collect()
        } else {
            pk
        };
    }
    if tree.nodes[0].key.is_empty() {
        let s = &plan.sources[node_source[0]];
        let conn = source_mut(sources, &s.connection_id)?;
        tree.nodes[0].key = match source_key(conn.as_mut(), &s.table, &s.chain)? {
            Some(key) => key,
            None => return Err(no_key(&plan.sink.table, &s.table, conn.as_mut())),
        };
    }
    Ok(())
}

/// A lookup's relations must name fields its tables have (after their processors), or every
/// document would embed nulls. Tables behind a user function are not checked: its output is
/// known only when it runs.
pub(super) fn check_relations(
    plan: &mut Plan,
    sources: &mut Sources,
    tree: &crate::engine::lookup::Tree,
    node_source: &[usize],
) -> Result<()> {
    let mut fields: Vec<Option<Vec<String>>> = Vec::new();
    for &i in node_source {
        let s = &mut plan.sources[i];
        if s.chain.iter().any(|p| !p.known_output()) {
            fields.push(None);
            continue;
        }
        let mut schema = source_mut(sources, &s.connection_id)?.schema(&s.table)?;
        for p in s.chain.iter_mut() {
            schema = p.schema(schema);
        }
        fields.push(Some(schema.fields.into_iter().map(|f| f.name).collect()));
    }
    tree.check_fields(&fields)
}

/// A lookup flow: keep copies of every table, and (re)build the documents changes touch.
/// See [`crate::engine::lookup`] for the model.
pub(super) fn run_lookup(ctx: &FlowCtx, mut plan: Plan) -> Result<Outcome> {
    use crate::engine::lookup::Lookup;
    let flow_id = ctx.task_id.clone();
    let merge = plan.merge.take().ok_or_else(|| Error::internal("lookup plan"))?;
    let mut post = merge.post;
    let (mut tree, node_source) = lookup_tree(&plan, &merge.properties)?;
    let main_table = tree.nodes[0].table.clone();
    let mut sources = open_sources(&ctx.store, &plan)?;
    bind_chains(&mut plan, &mut sources)?;
    lookup_keys(&plan, &mut sources, &mut tree, &node_source)?;
    check_relations(&mut plan, &mut sources, &tree, &node_source)?;
    // The main table's schema (after its processors) types the document's top-level columns.
    let main_schema = {
        let s = &mut plan.sources[node_source[0]];
        let mut schema = source_mut(&mut sources, &s.connection_id)?.schema(&s.table)?;
        for p in s.chain.iter_mut() {
            schema = p.schema(schema);
        }
        // Embedded objects and arrays are JSON columns, whatever the first document holds.
        for &c in &tree.nodes[0].children {
            let top = tree.nodes[c].path.split('.').next().unwrap_or("").to_string();
            if !top.is_empty() && schema.field(&top).is_none() {
                schema.fields.push(crate::model::Field {
                    name: top,
                    ty: crate::model::FieldType::Json,
                    data_type: String::new(),
                    primary_key: false,
                    nullable: true,
                });
            }
        }
        schema
    };
    let dir = ctx.store.dir().join("lookup");
    let key = tree.nodes[0].key.clone();
    let lookup = Lookup::open(&dir, &flow_id, tree)?;
    let mut sink = Sink::open(ctx, &plan, key, main_schema)?;
    let skips = Skipper::of(ctx, plan.skip_limit);
    sink.skips = skips.clone();
    if let Ok(mut m) = ctx.metrics.lock() {
        m.tables = plan.sources.len() as u64;
    }
    let mut checkpoint = start_checkpoint(ctx, &plan, &mut sources, &mut sink)?;
    sink.check_resumed(&checkpoint)?;

    // Rebuild the documents of main rows (key text, and the row when the caller has it already)
    // and write them.
    let write_roots =
        |roots: Vec<(String, Option<Record>)>, sink: &mut Sink, post: &mut Vec<Box<dyn Processor>>| -> Result<()> {
            let mut events = Vec::with_capacity(roots.len());
            let table: Arc<str> = Arc::from(main_table.as_str());
            for (k, row) in roots {
                let row = match row {
                    Some(r) => Some(r),
                    None => lookup.main_row(&k)?,
                };
                let change = match row {
                    Some(row) => Change::Insert { after: lookup.build(0, row)? },
                    None => Change::Delete { before: lookup.key_record(&k) },
                };
                events.push(Event { table: table.clone(), change, ts_ms: 0 });
            }
            let events = run_chain(post, events, skips.as_deref())?;
            sink.write(events, &ctx.metrics)
        };

    if checkpoint.phase == Phase::Snapshot {
        ctx.set_status("running", json!({"syncStatus": "SNAPSHOT"}));
        let started = now_ms();
        if let Ok(mut m) = ctx.metrics.lock() {
            m.snapshot_start_at.get_or_insert(started);
        }
        ctx.log("INFO", "Initial sync started: copying the main and lookup tables");
        super::run::estimate_snapshot(ctx, &plan, &checkpoint, &mut sources);
        for (i, &si) in node_source.iter().enumerate() {
            let node_id = plan.sources[si].node_id.clone();
            if checkpoint.snapshot_done_for(&node_id) {
                continue;
            }
            let (conn_id, table) = (plan.sources[si].connection_id.clone(), plan.sources[si].table.clone());
            if let Ok(mut m) = ctx.metrics.lock() {
                m.snapshot_table = table.clone();
            }
            let request = plan.sources[si].snapshot_request();
            let conn = source_mut(&mut sources, &conn_id)?;
            let t: Arc<str> = Arc::from(table.as_str());
            let chain = &mut plan.sources[si].chain;
            read_ahead(conn.as_mut(), &request, &mut |rows| {
                if ctx.stopped() {
                    return Ok(ControlFlow::Break(()));
                }
                let n = rows.len() as u64;
                let events: Vec<Event> = rows
                    .into_iter()
                    .map(|after| Event { table: t.clone(), change: Change::Insert { after }, ts_ms: 0 })
                    .collect();
                let events = run_chain(chain, events, skips.as_deref())?;
                lookup.begin()?;
                for e in &events {
                    lookup.put(i, e.change.key_image())?;
                }
                lookup.commit()?;
                crate::engine::failpoint::hit("after_lookup_copy");
                if let Ok(mut m) = ctx.metrics.lock() {
                    m.input[0] += n;
                    m.snapshot_rows += n;
                    m.replicate_lag = now_ms() - started;
                }
                Ok(ControlFlow::Continue(()))
            })?;
            if ctx.stopped() {
                return Ok(Outcome::Stopped);
            }
            ctx.notices(conn.as_mut());
            checkpoint.snapshot_done.push(node_id.clone());
            checkpoint.save(&ctx.store, &ctx.task_id)?;
            ctx.log("INFO", &format!("Initial sync of table {table} done"));
        }
        // Build every document from the copies.
        let mut after: Option<String> = None;
        loop {
            if ctx.stopped() {
                return Ok(Outcome::Stopped);
            }
            let batch = lookup.main_rows(after.as_deref(), super::LOOKUP_DOCS)?;
            let Some((last, _)) = batch.last() else { break };
            after = Some(last.clone());
            write_roots(batch.into_iter().map(|(k, row)| (k, Some(row))).collect(), &mut sink, &mut post)?;
        }
        if let Ok(mut m) = ctx.metrics.lock() {
            m.snapshot_tables = plan.sources.len() as u64;
        }
        checkpoint.target_table = Some(sink.table_present()?);
        ctx.snapshot_done(&mut checkpoint, "Initial sync completed: documents built")?;
    }
    if let Some(outcome) = ctx.complete_or_cdc(plan.cdc)? {
        return Ok(outcome);
    }
    cdc_loop(
        ctx,
        &mut sources,
        &mut checkpoint,
        super::LOOKUP_CDC_BATCH,
        |conn_id, _, _, events| {
            let mut roots = std::collections::BTreeSet::new();
            lookup.begin()?;
            for e in events {
                for (i, &si) in node_source.iter().enumerate() {
                    let s = &mut plan.sources[si];
                    if s.connection_id != *conn_id || *s.table != *e.table {
                        continue;
                    }
                    let batch = run_chain(&mut s.chain, vec![e.clone()], skips.as_deref())?;
                    for ev in batch {
                        match &ev.change {
                            Change::Insert { after } => {
                                lookup.put(i, after)?;
                                lookup.roots(i, after, &mut roots)?;
                            }
                            Change::Update { before, after } => {
                                // The documents the row leaves, walked up from its old image (the
                                // same as its new image's when it keeps its join fields).
                                let old = before.as_ref().map(|b| lookup.old_row(i, b)).transpose()?;
                                let (walk_old, moved) = match &old {
                                    Some(old) => lookup.update_moves(i, old, after),
                                    None => (false, false),
                                };
                                if let Some(old) = old.as_deref() {
                                    if walk_old {
                                        lookup.roots(i, old, &mut roots)?;
                                    }
                                    if moved {
                                        lookup.remove(i, old)?;
                                    }
                                }
                                lookup.put(i, after)?;
                                lookup.roots(i, after, &mut roots)?;
                            }
                            Change::Delete { before } => {
                                lookup.roots(i, &*lookup.old_row(i, before)?, &mut roots)?;
                                lookup.remove(i, before)?;
                            }
                        }
                    }
                }
            }
            let mut roots = roots.into_iter();
            loop {
                let docs: Vec<_> = roots.by_ref().take(super::LOOKUP_DOCS).map(|k| (k, None)).collect();
                if docs.is_empty() {
                    break;
                }
                write_roots(docs, &mut sink, &mut post)?;
            }
            // The copies move on only once the documents are written: a crash in between rolls
            // them back, and the replay finds the same old rows (and old parents) again.
            lookup.commit()?;
            Ok(())
        },
        |_, _| Ok(()),
    )
}
