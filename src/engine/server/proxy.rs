use super::*;

/// Open the connector of a stored connection (blocking).
pub(super) fn open_connection(store: &Store, conn_id: &str) -> crate::error::Result<Box<dyn connectors::Connector>> {
    store.open_connection(conn_id)
}

pub(super) async fn with_connector<T: Send + 'static>(
    engine: &Shared,
    conn_id: String,
    f: impl FnOnce(&mut dyn connectors::Connector) -> crate::error::Result<T> + Send + 'static,
) -> crate::error::Result<T> {
    let store = engine.store.clone();
    tokio::task::spawn_blocking(move || f(open_connection(&store, &conn_id)?.as_mut()))
        .await
        .map_err(|e| Error::internal(format!("worker failed: {e}")))?
}

/// The flows (by name) that run or would resume with a node on one of the sample tables: in
/// connection `conn`, or with none in the SQLite file `path` (through any connection naming
/// that file).
pub(super) fn demo_users(engine: &Engine, conn: Option<&str>, path: &str) -> crate::error::Result<Vec<String>> {
    let ids: Vec<String> = match conn {
        Some(id) => vec![id.to_string()],
        None => {
            let canonical = |p: &str| std::fs::canonicalize(p).unwrap_or_else(|_| std::path::PathBuf::from(p));
            let demo = canonical(path);
            engine
                .store
                .list(CONNECTIONS)?
                .into_iter()
                .filter(|c| {
                    c.get("database_type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("sqlite"))
                        && c.pointer("/config/database").and_then(Value::as_str).is_some_and(|d| canonical(d) == demo)
                })
                .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        }
    };
    let mut flows = Vec::new();
    for task in engine.store.list(TASKS)? {
        if task.get("is_deleted").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let uses = crate::api::dag::table_nodes(&task).iter().any(|(n, _)| {
            ids.contains(&n.connection_id) && crate::connectors::sample::TABLES.contains(&n.table_name.as_str())
        });
        // Only a flow that runs or would resume (it has a checkpoint) depends on the tables'
        // change capture; a new or reset flow starts with a fresh snapshot anyway.
        let id = task.get("id").and_then(Value::as_str).unwrap_or_default();
        let active =
            crate::api::task::TaskStatus::parse(task.get("status").and_then(Value::as_str).unwrap_or("")).is_active();
        if uses
            && (active || engine.store.checkpoint(id)?.is_some())
            && let Some(name) = task.get("name").and_then(Value::as_str)
        {
            flows.push(name.to_string());
        }
    }
    Ok(flows)
}

pub(super) async fn proxy_call(State(engine): State<Shared>, Body(body): Body) -> Response {
    let class = body.get("className").and_then(Value::as_str).unwrap_or("");
    let method = body.get("method").and_then(Value::as_str).unwrap_or("");
    let args: Vec<Value> = body.get("args").and_then(Value::as_array).cloned().unwrap_or_default();
    let arg = |i: usize| args.get(i).and_then(Value::as_str).unwrap_or("").to_string();
    match (class, method) {
        ("QueryDataBaseDataService", "getData" | "getDataV2") => {
            let (conn, table) = (arg(0), arg(1));
            let limit = args.get(2).and_then(Value::as_u64).unwrap_or(100).min(100) as usize;
            // A fourth argument (ours, not TapData's): field → value equality filter.
            let filter = args
                .get(3)
                .and_then(Value::as_object)
                .cloned()
                .map(crate::model::Record::from_json)
                .unwrap_or_default();
            let res = with_connector(&engine, conn, move |c| {
                if filter.is_empty() {
                    Ok((c.sample(&table, limit)?, c.count(&table)?))
                } else {
                    let rows = c.find(&table, &filter, limit)?;
                    let n = rows.len() as u64;
                    Ok((rows, n))
                }
            })
            .await;
            match res {
                Ok((rows, count)) => {
                    let rows: Vec<Value> = rows.iter().map(|r| Value::Object(r.to_json())).collect();
                    ok(json!({"sampleData": rows, "tableInfo": {"numOfRows": count, "storageSize": 0}}))
                }
                Err(e) => fail("500", &e.message),
            }
        }
        ("TapSqlService", "execute") => {
            let (conn, sql) = (arg(0), arg(1));
            match with_connector(&engine, conn, move |c| c.execute(&sql)).await {
                Ok(n) => ok(json!({"affected": n})),
                Err(e) => fail("500", &e.message),
            }
        }
        ("TapDemoService", "generate") => {
            // Ours: the seed's sample tables in a connection (`tap demo --into`), or with no
            // connection in the data dir's `demo.sqlite` (`tap demo`). Tables a flow uses are
            // not replaced (that would drop them under it) unless the third argument is true.
            let conn = arg(0);
            let rows = args.get(1).and_then(Value::as_u64).unwrap_or(1000);
            if !(1..=crate::connectors::sample::MAX_DEMO_ROWS as u64).contains(&rows) {
                return fail(
                    "IllegalArgument",
                    &format!(
                        "the number of orders must be from 1 to {}, not {rows}",
                        crate::connectors::sample::MAX_DEMO_ROWS
                    ),
                );
            }
            let rows = rows as usize;
            let force = args.get(2).and_then(Value::as_bool).unwrap_or(false);
            let path = engine.store.dir().join("demo.sqlite").to_string_lossy().into_owned();
            if !force {
                match demo_users(&engine, (!conn.is_empty()).then_some(conn.as_str()), &path) {
                    Ok(flows) if !flows.is_empty() => {
                        return fail(
                            "Demo.InUse",
                            &format!(
                                "the sample tables in {} are used by flow{} {}: replacing them would drop the tables \
                                 under {} (and their change capture); stop and delete {}, or pass --force \
                                 (demo(rows, true) in a script)",
                                if conn.is_empty() { path.as_str() } else { "this connection" },
                                if flows.len() == 1 { "" } else { "s" },
                                flows.join(", "),
                                if flows.len() == 1 { "it" } else { "them" },
                                if flows.len() == 1 { "that flow" } else { "those flows" },
                            ),
                        );
                    }
                    Ok(_) => {}
                    Err(e) => return fail("500", &e.message),
                }
            }
            let made = if conn.is_empty() {
                let p = path.clone();
                tokio::task::spawn_blocking(move || {
                    let mut c = crate::connectors::sqlite::Sqlite::open_path(&p)?;
                    crate::connectors::sample::generate(&mut c, rows, 42)
                })
                .await
                .map_err(|e| Error::internal(format!("worker failed: {e}")))
                .and_then(|r| r)
            } else {
                with_connector(&engine, conn.clone(), move |c| crate::connectors::sample::generate(c, rows, 42)).await
            };
            match made {
                Ok(made) if conn.is_empty() => ok(json!({"tables": made.tables, "path": path})),
                Ok(made) => {
                    // Make the new tables visible (`show tables`, read_from) right away.
                    test_and_load_schema(engine.clone(), conn);
                    ok(json!({"tables": made.tables}))
                }
                Err(e) => fail("500", &e.message),
            }
        }
        ("TaskPreviewService", "preview") => {
            // args: the task as a JSON string (or object), node ids to report (null: all), rows.
            let task = match args.first() {
                Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
                Some(v) => v.clone(),
                None => Value::Null,
            };
            let only: Option<Vec<String>> = args
                .get(1)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect());
            let rows = args.get(2).and_then(Value::as_u64).unwrap_or(1).clamp(1, 100) as usize;
            let store = engine.store.clone();
            match tokio::task::spawn_blocking(move || preview_task(&store, &task, only.as_deref(), rows)).await {
                Ok(v) => ok(v),
                Err(e) => fail("SystemError", &format!("preview worker failed: {e}")),
            }
        }
        _ => fail_kind(
            "Unsupported",
            &format!("the embedded engine does not serve {class}.{method}"),
            ErrorKind::Unsupported,
        ),
    }
}

/// `TaskPreviewService.preview`: what every node of a flow's DAG would output for the first
/// `rows` rows of each source table, without running the flow. As in TapData the answer is
/// `{taskId, code, nodeResult: {nodeId: {code, data | errorMsg}}, stats}`, with `code` 200, 422
/// (not a previewable DAG) or 500 (a node failed; its entry says why).
pub(super) fn preview_task(store: &Store, task: &Value, only: Option<&[String]>, rows: usize) -> Value {
    let started = now_ms();
    let task_id = task.get("id").and_then(Value::as_str).unwrap_or_default();
    // A preview runs what a start would: a field the engine would refuse is refused here too,
    // rather than previewed as if it were not there.
    let dag = match crate::api::dag::Dag::parse(task) {
        Ok(d) => d,
        Err(r) => return json!({"taskId": task_id, "code": 422, "errorMsg": r.message}),
    };
    if let Err(e) = crate::engine::flow::validate(task) {
        return json!({"taskId": task_id, "code": 422, "errorMsg": e.message});
    }
    let sources: Vec<&crate::api::dag::Node> = dag.sources().collect();
    if sources.is_empty() {
        return json!({"taskId": task_id, "code": 422, "errorMsg": "the flow has no source table to preview"});
    }
    let mut walk = PreviewWalk { dag: &dag, result: Map::new(), failed: false };
    for src in sources {
        // The first rows a start would read: the source's filter and query applied.
        let t = src.table().cloned().unwrap_or_default();
        let read = || -> crate::error::Result<(Vec<Event>, crate::model::Schema)> {
            let mut c = open_connection(store, &t.connection_id)?;
            let schema = c.schema(&t.table_name)?;
            let request = crate::engine::flow::source_read(src, &schema, rows)?;
            let mut records = Vec::new();
            c.snapshot(&request, &mut |batch| {
                records.extend(batch);
                Ok(std::ops::ControlFlow::Break(()))
            })?;
            records.truncate(rows);
            let table: Arc<str> = Arc::from(t.table_name.as_str());
            let events = records
                .into_iter()
                .map(|after| Event { table: table.clone(), change: Change::Insert { after }, ts_ms: 0 })
                .collect();
            let mut filter = processors::source_filter::SourceFilter { conditions: request.filter.clone() };
            Ok((processors::Processor::process(&mut filter, events)?, schema))
        };
        match read() {
            Ok((events, schema)) => walk.visit(&src.id, events, schema, 0),
            Err(e) => walk.node_failed(&src.id, &e.message),
        }
    }
    let mut result = walk.result;
    if let Some(ids) = only {
        result.retain(|id, _| ids.contains(id));
    }
    json!({"taskId": task_id, "code": if walk.failed { 500 } else { 200 }, "nodeResult": result,
           "stats": {"allCost": now_ms() - started}})
}

/// A depth-first walk of a DAG for the preview: each node's output goes to its children.
pub(super) struct PreviewWalk<'a> {
    dag: &'a crate::api::dag::Dag,
    result: Map<String, Value>,
    failed: bool,
}

impl PreviewWalk<'_> {
    /// `schema`: the fields of `events`, shown to each processor as a start shows it.
    fn visit(&mut self, id: &str, events: Vec<Event>, schema: crate::model::Schema, depth: usize) {
        let entry = self.result.entry(id.to_string()).or_insert_with(|| json!({"code": 200, "data": []}));
        if let Some(data) = entry.get_mut("data").and_then(Value::as_array_mut) {
            data.extend(events.iter().map(|e| Value::Object(e.change.key_image().to_json())));
        }
        if depth > self.dag.nodes.len() {
            return; // a cycle; the flow itself is refused at start
        }
        let dag = self.dag;
        for child in dag.next(id) {
            let Some(node) = dag.node(child) else { continue };
            let out = match processors::of_node(node) {
                Ok(Some(mut p)) => {
                    let out_schema = p.schema(schema.clone());
                    p.process(events.clone()).map(|e| (e, out_schema))
                }
                Ok(None) => Ok((events.clone(), schema.clone())),
                Err(e) => Err(e),
            };
            match out {
                Ok((out, out_schema)) => self.visit(child, out, out_schema, depth + 1),
                Err(e) => self.node_failed(child, &e.message),
            }
        }
    }

    fn node_failed(&mut self, id: &str, message: &str) {
        self.failed = true;
        self.result.insert(id.to_string(), json!({"code": 500, "errorMsg": message}));
    }
}

pub(super) async fn table_count(State(engine): State<Shared>, Query(q): Params) -> Response {
    let conn = q.get("connectionId").cloned().unwrap_or_default();
    let table = q.get("table").cloned().unwrap_or_default();
    match with_connector(&engine, conn, move |c| c.count(&table)).await {
        Ok(n) => ok(json!({"code": 200, "rows": n})),
        Err(e) => ok(json!({"code": 500, "errorMsg": e.message})),
    }
}
