use super::*;

/// One source table node of the DAG, with the processors on its way to the sink.
pub(super) struct SourceNode {
    pub(super) node_id: String,
    pub(super) connection_id: String,
    pub(super) table: String,
    /// Rows per snapshot read.
    pub(super) read_batch: usize,
    pub(super) chain: Vec<Box<dyn Processor>>,
}

pub(super) struct SinkNode {
    pub(super) name: String,
    pub(super) connection_id: String,
    pub(super) table: String,
    pub(super) key: Vec<String>,
    pub(super) existing: ExistingData,
}

pub(super) struct Plan {
    /// The flow's name.
    pub(super) name: String,
    pub(super) sources: Vec<SourceNode>,
    pub(super) sink: SinkNode,
    pub(super) snapshot: bool,
    pub(super) cdc: bool,
    /// The lookup, for lookup flows.
    pub(super) merge: Option<MergePlan>,
}

/// A lookup flow's merge node: its tree (`mergeProperties`) and the processors between it and
/// the sink.
pub(super) struct MergePlan {
    pub(super) properties: Vec<crate::api::dag::MergeProperty>,
    pub(super) post: Vec<Box<dyn Processor>>,
}

pub(super) fn plan(task: &Value) -> Result<Plan> {
    let dag = Dag::parse(task).map_err(|r| Error::unsupported(r.message))?;
    let merges: Vec<&Node> = dag.nodes.iter().filter(|n| n.ty == "merge_table_processor").collect();
    if merges.len() > 1 {
        return Err(Error::unsupported("the embedded engine runs flows with one lookup (merge) node"));
    }
    let merge_id = merges.first().map(|m| m.id.clone());
    let sinks: Vec<&Node> =
        dag.nodes.iter().filter(|n| n.table().is_some() && dag.has_in(&n.id) && !dag.has_out(&n.id)).collect();
    let sink = match sinks.as_slice() {
        [one] => *one,
        [] => return Err(Error::config("the flow has no target: add .write_to(\"Connection.table\")")),
        _ => return Err(Error::unsupported("the embedded engine runs flows with one target")),
    };
    let sink_table = sink.table().cloned().unwrap_or_default();
    let mut sources = Vec::new();
    for n in dag.sources() {
        let mut chain = Vec::new();
        let mut cur = n.id.as_str();
        let mut steps = 0;
        loop {
            let next = dag.next(cur);
            let [next] = next.as_slice() else {
                return Err(Error::config(format!(
                    "node {:?} should lead to exactly one next node, it leads to {}",
                    n.name,
                    next.len()
                )));
            };
            if *next == sink.id || Some(*next) == merge_id.as_deref() {
                break;
            }
            let node = dag.node(next).ok_or_else(|| Error::config(format!("edge to unknown node {next}")))?;
            if let Some(p) = processors::of_node(node)? {
                chain.push(p);
            }
            cur = next;
            steps += 1;
            if steps > dag.nodes.len() {
                return Err(Error::config("the flow's DAG has a cycle"));
            }
        }
        let t = n.table().cloned().unwrap_or_default();
        let read_batch = t.read_batch_size.map_or(SNAPSHOT_BATCH, |n| n as usize);
        sources.push(SourceNode {
            node_id: n.id.clone(),
            connection_id: t.connection_id,
            table: t.table_name,
            read_batch,
            chain,
        });
    }
    if sources.is_empty() {
        return Err(Error::config("the flow has no source: add .read_from(\"Connection.table\")"));
    }
    // Writing into a table the flow reads would feed its own changes back to it forever.
    if let Some(s) =
        sources.iter().find(|s| s.connection_id == sink_table.connection_id && s.table == sink_table.table_name)
    {
        return Err(Error::config(format!(
            "the flow writes into {}, which it also reads: its own writes would come back as changes forever; write_to another table",
            s.table
        )));
    }
    let sync = crate::api::dag::task_type(task);
    Ok(Plan {
        name: task.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
        sources,
        sink: SinkNode {
            name: sink.name.clone(),
            connection_id: sink_table.connection_id,
            table: sink_table.table_name,
            key: sink_table.update_condition_fields,
            existing: ExistingData::from_tapdata(sink_table.exist_data_process_mode.as_deref()),
        },
        snapshot: sync.contains("initial_sync"),
        cdc: sync.contains("cdc"),
        merge: match merge_id {
            Some(id) => {
                let mut post = Vec::new();
                let mut cur = id.clone();
                while cur != sink.id {
                    let next = dag
                        .next(&cur)
                        .first()
                        .map(|t| t.to_string())
                        .ok_or_else(|| Error::config("the lookup (merge) node does not lead to the target"))?;
                    if next != sink.id
                        && let Some(node) = dag.node(&next)
                        && let Some(p) = processors::of_node(node)?
                    {
                        post.push(p);
                    }
                    cur = next;
                    if post.len() > dag.nodes.len() {
                        return Err(Error::config("the flow's DAG has a cycle"));
                    }
                }
                let properties = dag.node(&id).and_then(|n| n.merge()).map(<[_]>::to_vec).unwrap_or_default();
                Some(MergePlan { properties, post })
            }
            None => None,
        },
    })
}

/// Run a chain over one record of nulls with the source's fields; the output record, if any.
pub(super) fn probe(chain: &mut [Box<dyn Processor>], table: &str, fields: &[String]) -> Option<crate::model::Record> {
    let after: crate::model::Record = fields.iter().map(|f| (f.clone(), crate::model::Value::Null)).collect();
    let mut events = vec![Event { table: Arc::from(table), change: Change::Insert { after }, ts_ms: 0 }];
    for p in chain.iter_mut() {
        events = p.process(events).ok()?;
    }
    events.into_iter().next().map(|e| match e.change {
        Change::Insert { after } | Change::Update { after, .. } => after,
        Change::Delete { before } => before,
    })
}

/// Check a flow as it is saved: everything the plan can tell without connecting (node types,
/// processors and their settings, the DAG's shape, a target that is one of its sources).
/// A key for a source table without a primary key: its first unique index (by name) whose
/// columns are all NOT NULL and all survive the processors `chain` (renamed as they rename).
pub(super) fn source_key(
    conn: &mut dyn Connector,
    table: &str,
    chain: &[Box<dyn Processor>],
) -> Result<Option<Vec<String>>> {
    for u in conn.unique_keys(table)?.into_iter().filter(|u| u.not_null) {
        let renamed: Option<Vec<String>> =
            u.columns.iter().map(|c| chain.iter().try_fold(c.clone(), |f, p| p.rename(&f))).collect();
        if let Some(key) = renamed {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

/// The refusal of a flow whose main table has no key: what it has, and what to do.
pub(super) fn no_key(target: &str, table: &str, conn: &mut dyn Connector) -> Error {
    let nullable: Vec<String> = conn
        .unique_keys(table)
        .unwrap_or_default()
        .into_iter()
        .filter(|u| !u.not_null)
        .map(|u| format!("{} ({})", u.name, u.columns.join(", ")))
        .collect();
    let has = if nullable.is_empty() {
        String::new()
    } else {
        format!(" (its unique indexes {} allow NULLs, which cannot key a row)", nullable.join(", "))
    };
    Error::schema(format!(
        "table {table} has no primary key and no unique index on NOT NULL columns{has}, so a replay would \
         duplicate its rows: name the key fields as write_to's second argument \
         (write_to(\"Connection.{target}\", [\"field\"])), or add a primary key to {table}"
    ))
}

pub fn validate(task: &Value) -> Result<()> {
    plan(task).map(|_| ())
}

/// What the sources' schemas decide before anything moves: the main table has a key, renames
/// do not land on kept fields, lookup relations name fields the tables have. Checked at save
/// when every source table can be read; otherwise (a server down, a table not created yet)
/// the same checks run at start.
pub fn check_sources(store: &Store, task: &Value) -> Result<()> {
    let mut plan = plan(task)?;
    let Ok(mut sources) = open_sources(store, &plan) else { return Ok(()) };
    for s in &plan.sources {
        if source_mut(&mut sources, &s.connection_id)?.schema(&s.table).is_err() {
            return Ok(());
        }
    }
    bind_chains(&mut plan, &mut sources)?;
    if let Some(merge) = plan.merge.take() {
        let (mut tree, node_source) = lookup_tree(&plan, &merge.properties)?;
        lookup_keys(&plan, &mut sources, &mut tree, &node_source)?;
        return check_relations(&mut plan, &mut sources, &tree, &node_source);
    }
    let s = &mut plan.sources[0];
    let conn = source_mut(&mut sources, &s.connection_id)?;
    let mut schema = conn.schema(&s.table)?;
    for p in s.chain.iter_mut() {
        let fields: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
        p.check(&fields)?;
        schema = p.schema(schema);
    }
    plain_key(&plan, conn.as_mut(), &schema).map(|_| ())
}

/// Show each source's schema to its processors before anything runs, so those that act on
/// fields by their type know which fields have it.
pub(super) fn bind_chains(plan: &mut Plan, sources: &mut Sources) -> Result<()> {
    for s in &mut plan.sources {
        let mut schema = source_mut(sources, &s.connection_id)?.schema(&s.table)?;
        for p in s.chain.iter_mut() {
            schema = p.schema(schema);
        }
    }
    Ok(())
}

/// The key a plain flow writes by: the target's, else the first source's primary key (`schema`,
/// after its processors), else its unique index's; none is the refusal that says what to do.
pub(super) fn plain_key(plan: &Plan, conn: &mut dyn Connector, schema: &Schema) -> Result<Vec<String>> {
    if !plan.sink.key.is_empty() {
        return Ok(plan.sink.key.clone());
    }
    let pk = schema.primary_key();
    if !pk.is_empty() {
        return Ok(pk);
    }
    let s = &plan.sources[0];
    source_key(conn, &s.table, &s.chain)?.ok_or_else(|| no_key(&plan.sink.table, &s.table, conn))
}

/// Remove the CDC resources a flow holds in its sources (reset, delete), and its lookup copies.
pub fn release_sources(store: &Store, task: &Value) -> Result<()> {
    let task_id = task.get("id").and_then(Value::as_str).unwrap_or_default();
    crate::engine::lookup::Lookup::remove_files(&store.dir().join("lookup"), task_id);
    let mut done: Vec<String> = Vec::new();
    // Only source nodes (no incoming edge) hold CDC resources.
    for (n, _) in crate::api::dag::table_nodes(task).into_iter().filter(|(_, source)| *source) {
        let id = n.connection_id;
        if done.contains(&id) {
            continue;
        }
        done.push(id.clone());
        if let Ok(mut conn) = open_connection(store, &id) {
            conn.cdc_release(task_id)?;
        }
    }
    Ok(())
}
