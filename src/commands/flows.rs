use super::*;

/// The status line, as TapFlow prints it.
pub fn status_line(session: &Session, doc: &Task) -> Result<(String, Value)> {
    let task = session.client.task(&doc.id)?.unwrap_or_else(|| doc.clone());
    let name = task.name.clone();
    let status = task.status.to_string();
    let m = if task.record_id.is_empty() {
        Default::default()
    } else {
        session.client.task_metrics(&task.id, &task.record_id)?
    };
    let (qps, rows, lag) = (m.output_qps, m.snapshot_row_total, m.replicate_lag.unwrap_or(0));
    let mut line =
        format!("flow {name} current status is: {status}, qps is: {qps:.1}, total rows: {rows}, delay is: {lag}ms");
    if let (Some(p50), Some(p99)) = (m.replicate_lag_p50, m.replicate_lag_p99) {
        // Commit → written over the last minute's changes.
        line.push_str(&format!(", lag p50/p99: {p50}/{p99}ms"));
    }
    if super::progress::in_snapshot(&task) && !task.record_id.is_empty() {
        line.push_str(&format!("\n  {}", super::progress::describe(&m, 0.0)));
    } else if m.table_total > 1 {
        // A flow of many tables (a Pipeline): how many are copied; `logs` names each as it is.
        line.push_str(&format!(", tables copied: {} of {}", m.snapshot_table_total.min(m.table_total), m.table_total));
    }
    if task.status == TaskStatus::Error {
        line.push_str(&format!("\n  error: {}", flowops::last_error(session, &task)));
    }
    let retrying = task.retrying.clone();
    if !retrying.is_empty() && task.status != TaskStatus::Error {
        line.push_str(&format!("\n  {retrying}"));
    }
    let mut v = json!({"name": name, "status": status, "qps": qps, "total_rows": rows, "delay_ms": lag,
                   "sync_phase": task.sync_status, "tables": m.table_total, "tables_copied": m.snapshot_table_total,
                   "snapshot_rows_estimate": m.snapshot_row_estimate,
                   "lag_p50_ms": m.replicate_lag_p50, "lag_p99_ms": m.replicate_lag_p99});
    if !retrying.is_empty() {
        v["retrying"] = json!(retrying);
    }
    Ok((line, v))
}

pub fn status(session: &Session, name: &str) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    let (line, v) = status_line(session, &doc)?;
    session.out.either(&line, &v);
    Ok(())
}

pub fn stats(session: &Session, name: &str) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    let record = doc.record_id.clone();
    let task = session.client.task(&doc.id)?.unwrap_or(doc);
    let record = if record.is_empty() { task.record_id.clone() } else { record };
    if record.is_empty() {
        return Err(Error::usage(format!("flow {name} has never run: `start {name}` first")));
    }
    let m = session.client.task_metrics(&task.id, &record)?;
    if session.out.json {
        session.out.value(&json!(m));
        return Ok(());
    }
    let rows = vec![
        vec!["status".into(), task.status.to_string()],
        vec!["phase".into(), task.sync_status.clone()],
        vec![
            "input insert/update/delete".into(),
            format!("{} / {} / {}", m.input_insert_total, m.input_update_total, m.input_delete_total),
        ],
        vec![
            "output insert/update/delete".into(),
            format!("{} / {} / {}", m.output_insert_total, m.output_update_total, m.output_delete_total),
        ],
        vec!["snapshot rows".into(), m.snapshot_row_total.to_string()],
        vec!["qps (in / out)".into(), format!("{} / {}", Value::from(m.input_qps), Value::from(m.output_qps))],
        vec!["delay (ms)".into(), m.replicate_lag.unwrap_or(0).to_string()],
    ];
    session.out.table(&["metric", "value"], rows);
    Ok(())
}

pub fn logs(session: &Session, name: &str, n: usize, level: &str) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    let task = session.client.task(&doc.id)?.unwrap_or(doc);
    let levels: &[&str] = match level.to_ascii_lowercase().as_str() {
        "debug" => &["DEBUG", "INFO", "WARN", "ERROR"],
        "info" => &["INFO", "WARN", "ERROR"],
        "warn" => &["WARN", "ERROR"],
        "error" => &["ERROR"],
        other => return Err(Error::usage(format!("--level must be debug, info, warn or error, not {other:?}"))),
    };
    let mut items = session.client.task_logs(&task.id, &task.record_id, levels, n)?;
    items.reverse();
    if session.out.json {
        session.out.value(&json!(items));
        return Ok(());
    }
    if items.is_empty() {
        session.out.line(&format!("flow {name} has no log lines at level {level} or above"));
    }
    for it in items {
        let when = chrono::DateTime::from_timestamp_millis(it.timestamp)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        session.out.line(&format!("{when} {:<5} {}", it.level, it.message));
    }
    Ok(())
}

/// A status line every second: `readings` of them, or until Ctrl-C; it ends as soon as the flow
/// is no longer active (stopped, complete, in error), so a script that monitors a flow to its
/// end returns, and a flow in error makes the command fail with its cause.
pub fn monitor(session: &Session, name: &str, readings: Option<usize>) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    if readings.is_none() {
        session.out.text("(Ctrl-C stops watching; the flow keeps running)");
    }
    let mut n = 0;
    loop {
        let (line, v) = status_line(session, &doc)?;
        session.out.either(&line, &v);
        n += 1;
        let status = TaskStatus::parse(v["status"].as_str().unwrap_or(""));
        if !status.is_active() {
            if status == TaskStatus::Error {
                return Err(Error::data(format!("flow {name} is in error: {}", flowops::last_error(session, &doc))));
            }
            return Ok(());
        }
        if readings.is_some_and(|r| n >= r) || session.sleep(Duration::from_secs(1)).is_err() {
            return Ok(());
        }
    }
}

pub fn start(session: &Session, name: &str) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    if matches!(doc.status, TaskStatus::Running | TaskStatus::Scheduling | TaskStatus::WaitRun) {
        session.out.text(&format!("flow {name} is already {}", doc.status));
        return Ok(());
    }
    session.client.start_task(&doc.id).map_err(|e| e.context(format!("cannot start flow {name}")))?;
    flowops::wait_status(session, &doc.id, &[TaskStatus::Running, TaskStatus::Complete], Duration::from_secs(60))?;
    session.out.either(&format!("flow {name} started"), &json!({"flow": name, "status": "running"}));
    // On a terminal, the snapshot's progress until it is copied (Ctrl-C leaves it running).
    super::progress::follow(session, &doc.id, None)?;
    Ok(())
}

pub fn stop(session: &Session, name: &str) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    if !doc.status.is_active() {
        session.out.text(&format!("flow {name} is {}, not running", doc.status));
        return Ok(());
    }
    session.client.stop_task(&doc.id, false)?;
    let ended = [TaskStatus::Stop, TaskStatus::Error, TaskStatus::Complete];
    flowops::wait_status(session, &doc.id, &ended, Duration::from_secs(60))?;
    session.out.either(&format!("flow {name} stopped"), &json!({"flow": name, "status": "stop"}));
    Ok(())
}

pub fn reset(session: &Session, name: &str) -> Result<()> {
    let doc = resolve::flow(session, name)?;
    session.client.reset_task(&doc.id).map_err(|e| e.context(format!("cannot reset flow {name}")))?;
    session.out.either(&format!("flow {name} reset"), &json!({"flow": name, "reset": true}));
    Ok(())
}

pub fn delete(session: &Session, doc: &Task) -> Result<()> {
    let name = &doc.name;
    session.client.delete_task(&doc.id).map_err(|e| e.context(format!("cannot delete flow {name}")))?;
    session.out.either(&format!("flow {name} deleted"), &json!({"flow": name, "deleted": true}));
    Ok(())
}
