use super::*;
use crate::model::condition::{Condition, Op};

/// One source table node of the DAG, with the processors on its way to the sink.
pub(super) struct SourceNode {
    pub(super) node_id: String,
    pub(super) connection_id: String,
    pub(super) table: String,
    /// Rows per snapshot read.
    pub(super) read_batch: usize,
    pub(super) chain: Vec<Box<dyn Processor>>,
    /// The node's filter as written (field, operator, value), typed into `conditions` once
    /// the table's schema is known ([`bind_chains`]).
    pub(super) filter: Vec<(String, Op, String)>,
    pub(super) conditions: Vec<Condition>,
    /// A query read instead of the table (snapshot only).
    pub(super) query: Option<String>,
    /// What a column added to the table in CDC does.
    pub(super) ddl: DdlMode,
    /// `enablePreImage()`: updates and deletes carry the whole row before them.
    pub(super) pre_image: bool,
}

/// A source's DDL setting (TapData's `enableDDL` + `ddlConfiguration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DdlMode {
    /// Disabled (the default, `FILTER`): a column added to the source reaches the target with
    /// the first row that carries it, typed from its value.
    Follow,
    /// `SYNCHRONIZATION` (`enableDDL()`): an added column is added to the target, typed as the
    /// source declares it, before the rows that use it.
    Sync,
    /// `ERROR`: any DDL, an added column too, stops the flow.
    Stop,
}

impl DdlMode {
    fn of(t: &crate::api::dag::TableNode) -> Self {
        match (t.enable_ddl, t.ddl_configuration.as_deref()) {
            (true, Some("ERROR")) => DdlMode::Stop,
            (true, _) => DdlMode::Sync,
            _ => DdlMode::Follow,
        }
    }
}

impl SourceNode {
    pub(super) fn snapshot_request(&self) -> SnapshotRequest {
        SnapshotRequest {
            table: self.table.clone(),
            batch: self.read_batch,
            filter: self.conditions.clone(),
            query: self.query.clone(),
        }
    }
}

/// The CDC start time of a task's `syncPoints` (TapFlow's `only_cdc(t)` / `start_at(t, tz)`):
/// each point `current` (from the start) or `localTZ` with `dateTime` (epoch ms), one time for
/// every source; only for a CDC-only flow.
fn cdc_start(task: &Value, sync: &str) -> Result<Option<i64>> {
    // The official client sends them at the top (as its save copies them) and in the dag.
    let points: Vec<Value> = [task.get("syncPoints"), task.pointer("/dag/syncPoints")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .cloned()
        .collect();
    let mut at: Option<i64> = None;
    for p in &points {
        let ty = p.get("pointType").and_then(Value::as_str).unwrap_or("current");
        let t = match ty {
            "current" => continue,
            "localTZ" => p.get("dateTime").and_then(Value::as_i64).ok_or_else(|| {
                Error::config(format!("the flow's CDC start point {p} has no dateTime (epoch milliseconds)"))
            })?,
            other => {
                return Err(Error::unsupported(format!(
                    "the flow's CDC start point type {other:?} is not one the engine does (current, or localTZ with dateTime): use only_cdc(start_time)"
                )));
            }
        };
        match at {
            Some(a) if a != t => {
                return Err(Error::unsupported(
                    "the flow's sources have different CDC start times: the embedded engine starts them all at one time",
                ));
            }
            _ => at = Some(t),
        }
    }
    if at.is_some() && sync != "cdc" {
        return Err(Error::config(
            "the flow has a CDC start time (syncPoints) but also copies the tables first: a start time is for a CDC-only flow, only_cdc(start_time)",
        ));
    }
    Ok(at)
}

/// A source node's filter (TapData's `conditions`, when `isFilter`): each `{key, operator
/// 1–5, value}`; anything else is refused, naming the node.
fn source_filter(name: &str, t: &crate::api::dag::TableNode) -> Result<Vec<(String, Op, String)>> {
    if !t.is_filter {
        if !t.conditions.is_empty() {
            return Err(Error::config(format!(
                "node {name:?} has conditions but isFilter is false, so it is unclear whether they apply: set isFilter to true, or remove them"
            )));
        }
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for c in &t.conditions {
        let key = c.get("key").and_then(Value::as_str).unwrap_or_default();
        let op = c.get("operator").and_then(Value::as_i64).and_then(Op::of_tapdata);
        let value = match c.get("value") {
            Some(Value::String(v)) => Some(v.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let fast = c.get("fastQuery").and_then(Value::as_bool).unwrap_or(false);
        match (key.is_empty(), op, value) {
            (false, Some(op), Some(v)) if !fast => out.push((key.to_string(), op, v)),
            _ => {
                return Err(Error::unsupported(format!(
                    "node {name:?}: the filter condition {c} is not one the engine runs: each is {{key, operator (1 >, 2 >=, 3 <, 4 <=, 5 =), value}}"
                )));
            }
        }
    }
    Ok(out)
}

/// A source node's query (`customCommand` `executeQuery` with `params.sql`, when enabled).
fn source_query(name: &str, t: &crate::api::dag::TableNode) -> Result<Option<String>> {
    let cmd = t.custom_command.as_ref().filter(|c| c.as_object().is_some_and(|o| !o.is_empty()));
    match (t.enable_custom_command, cmd) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(Error::config(format!(
            "node {name:?} has a customCommand but enableCustomCommand is false: set it to true, or remove the command"
        ))),
        (true, cmd) => {
            let sql = cmd
                .filter(|c| c.get("command").and_then(Value::as_str) == Some("executeQuery"))
                .and_then(|c| c.pointer("/params/sql"))
                .and_then(Value::as_str)
                .filter(|q| !q.trim().is_empty());
            match sql {
                Some(q) => Ok(Some(q.trim().trim_end_matches(';').to_string())),
                None => Err(Error::unsupported(format!(
                    "node {name:?}: the custom command the engine runs is {{command: executeQuery, params: {{sql: \"SELECT …\"}}}}"
                ))),
            }
        }
    }
}

pub(super) struct SinkNode {
    pub(super) name: String,
    pub(super) connection_id: String,
    pub(super) table: String,
    pub(super) key: Vec<String>,
    pub(super) existing: ExistingData,
    /// `appendWrite`: every change is inserted as a new row.
    pub(super) append: bool,
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
    /// `skipErrorEvent` SkipByLimit: how many changes with data errors may be skipped.
    pub(super) skip_limit: Option<u64>,
    /// A CDC-only flow's start time (`syncPoints`, epoch ms); none: from the moment it starts.
    pub(super) cdc_start: Option<i64>,
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
    let mut sink_table = sink.table().cloned().unwrap_or_default();
    let mut sources = Vec::new();
    // Keys functions declare their records have (`TapModelDeclare.setPk`), by node.
    let mut declared: Vec<(String, Vec<String>)> = Vec::new();
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
            if let Some(crate::api::steps::Step::Js { pk, .. }) = node.step()
                && !pk.is_empty()
            {
                declared.push((node.name.clone(), pk.clone()));
            }
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
        let name = if n.name.is_empty() { &t.table_name } else { &n.name };
        let filter = source_filter(name, &t)?;
        let query = source_query(name, &t)?;
        let ddl = DdlMode::of(&t);
        let pre_image = t.node_config.as_ref().and_then(|c| c.get("preImage")) == Some(&Value::Bool(true));
        sources.push(SourceNode {
            node_id: n.id.clone(),
            connection_id: t.connection_id,
            table: t.table_name,
            read_batch,
            chain,
            filter,
            conditions: Vec::new(),
            query,
            ddl,
            pre_image,
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
    for (node, pk) in &declared {
        if sink_table.update_condition_fields.is_empty() {
            sink_table.update_condition_fields = pk.clone();
        } else if sink_table.update_condition_fields != *pk {
            return Err(Error::config(format!(
                "node {node:?} declares its records are keyed by {}, but the target {} writes by {}: give the same key to both (js(…, #{{ pk: … }}) and write_to(…, [\"field\"]))",
                pk.join(", "),
                sink_table.table_name,
                sink_table.update_condition_fields.join(", ")
            )));
        }
    }
    if merge_id.is_some()
        && let Some(s) = sources.iter().find(|s| s.ddl != DdlMode::Follow)
    {
        return Err(Error::unsupported(format!(
            "the source of {} synchronises DDL (enableDDL()), but a lookup flow keeps its wide documents from the \
             tables' rows: remove enableDDL() (columns added to the source are followed as rows carry them)",
            s.table
        )));
    }
    let append = sink_table.write_strategy.as_deref() == Some("appendWrite");
    if append && merge_id.is_some() {
        return Err(Error::unsupported(format!(
            "target node {:?} appends every change (writeStrategy appendWrite), but a lookup flow rebuilds whole \
             documents by key: remove config(#{{ writeStrategy: \"appendWrite\" }}) from the sink",
            sink.name
        )));
    }
    let sync = crate::api::dag::task_type(task);
    if sync.contains("cdc")
        && let Some(s) = sources.iter().find(|s| s.query.is_some())
    {
        return Err(Error::config(format!(
            "{} is read by a query, which has no change stream, so the flow can only copy its rows once: \
             make it snapshot-only with full_sync()",
            s.table
        )));
    }
    let skip = task.get("skipErrorEvent").or_else(|| task.pointer("/dag/skipErrorEvent"));
    let skip_limit = skip.and_then(crate::api::rules::skip_setting).flatten();
    let cdc_start = cdc_start(task, sync)?;
    Ok(Plan {
        skip_limit,
        cdc_start,
        name: task.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
        sources,
        sink: SinkNode {
            name: sink.name.clone(),
            connection_id: sink_table.connection_id,
            table: sink_table.table_name,
            key: sink_table.update_condition_fields,
            existing: ExistingData::from_tapdata(sink_table.exist_data_process_mode.as_deref()),
            append,
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
    if super::migrate::plan(task)?.is_some() {
        return Ok(());
    }
    plan(task).map(|_| ())
}

/// What the sources' schemas decide before anything moves: the main table has a key, renames
/// do not land on kept fields, lookup relations name fields the tables have. Checked at save
/// when every source table can be read; otherwise (a server down, a table not created yet)
/// the same checks run at start.
pub fn check_sources(store: &Store, task: &Value) -> Result<()> {
    if let Some(m) = super::migrate::plan(task)? {
        return super::migrate::check(store, &m);
    }
    let mut plan = plan(task)?;
    for s in plan.sources.iter().filter(|s| s.query.is_some()) {
        if let Ok(c) = store.connection(&s.connection_id)
            && c.database_type.eq_ignore_ascii_case("mongodb")
        {
            return Err(Error::unsupported(format!(
                "the source of {} reads a SQL query, which {} ({}) does not run: read the table with #{{ filter: … }} instead",
                s.table, c.name, c.database_type
            )));
        }
    }
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
        // The source's filter, typed by the table's fields, goes first.
        if !s.filter.is_empty() {
            let raw = std::mem::take(&mut s.filter);
            s.conditions = type_conditions(&s.table, &raw, &schema, s.query.is_some())?;
            let filter = crate::engine::processors::source_filter::SourceFilter { conditions: s.conditions.clone() };
            s.chain.insert(0, Box::new(filter));
        }
        for p in s.chain.iter_mut() {
            schema = p.schema(schema);
        }
    }
    Ok(())
}

/// A filter's conditions typed by the table's fields; a field the table lacks is refused
/// (unless a query or a sampled schema may hold it).
fn type_conditions(table: &str, raw: &[(String, Op, String)], schema: &Schema, query: bool) -> Result<Vec<Condition>> {
    let mut out = Vec::with_capacity(raw.len());
    for (field, op, written) in raw {
        let ty = schema.field(field).map(|f| f.ty);
        if ty.is_none() && !schema.fields.is_empty() && !query && !is_schemaless(schema) {
            let names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
            return Err(Error::schema(format!(
                "the filter of {table} compares {field:?}, a field the table does not have (its fields: {})",
                names.join(", ")
            )));
        }
        out.push(Condition::typed(field, *op, written, ty).map_err(Error::config)?);
    }
    Ok(out)
}

/// What a source node reads, as a start reads it: its snapshot request (filter typed by
/// `schema`, query) — for the preview.
pub fn source_read(node: &Node, schema: &Schema, rows: usize) -> Result<SnapshotRequest> {
    let t = node.table().cloned().unwrap_or_default();
    let name = if node.name.is_empty() { &t.table_name } else { &node.name };
    let raw = source_filter(name, &t)?;
    let query = source_query(name, &t)?;
    let filter = type_conditions(&t.table_name, &raw, schema, query.is_some())?;
    Ok(SnapshotRequest { table: t.table_name, batch: rows.max(1), filter, query })
}

/// A MongoDB collection's schema is sampled: a field the sample lacks may still exist.
fn is_schemaless(schema: &Schema) -> bool {
    schema.fields.iter().any(|f| f.data_type == "OBJECT_ID")
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
