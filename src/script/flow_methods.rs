//! TapFlow's Flow methods for watching a flow from a script: `wait_status(status, t)`,
//! `wait_initial_complete(t)`, `monitor(t)` (returns after `t` seconds), `logs(#{ limit,
//! level })`, `stop(#{ force })`, `metrics()` (the `stats` keys, TapData's metric names),
//! `replicate_lag()`, `full_qps()`, `cdc_qps()` and `has_retry()`.

use super::flow::{self, Flow};
use crate::api::task::TaskStatus;
use crate::commands as verbs;
use crate::commands::session::Session;
use crate::error::{Error, ErrorKind, Result};
use rhai::{Dynamic, Engine, EvalAltResult, Map};
use std::sync::Arc;
use std::time::Duration;

type RhaiResult<T> = std::result::Result<T, Box<EvalAltResult>>;

/// A script's wait, in seconds: 1 s to a day.
fn seconds(what: &str, t: i64) -> Result<Duration> {
    if !(1..=86_400).contains(&t) {
        return Err(Error::usage(format!("{what}: {t} is not a number of seconds from 1 to 86400")));
    }
    Ok(Duration::from_secs(t as u64))
}

fn metrics(session: &Session, f: &Flow) -> Result<(crate::api::task::Task, crate::api::metrics::TaskMetrics)> {
    let id = flow::id_of(session, f)?;
    let task = session.client.task(&id)?.ok_or_else(|| Error::not_found(format!("flow {} is gone", f.name())))?;
    let m = if task.record_id.is_empty() {
        Default::default()
    } else {
        session.client.task_metrics(&task.id, &task.record_id)?
    };
    Ok((task, m))
}

/// `wait_status`: true once the flow is in `status`, false when `t` passes first; a flow that
/// fails meanwhile raises its error.
fn wait_status(session: &Session, f: &Flow, status: &str, t: Duration) -> Result<bool> {
    let wanted = TaskStatus::parse(status);
    if wanted.as_str() != status {
        return Err(Error::usage(format!(
            "wait_status: {status:?} is not a flow status (running, complete, stop, error, edit, wait_start, …)"
        )));
    }
    let id = flow::id_of(session, f)?;
    match verbs::tasks::wait_status(session, &id, &[wanted], t) {
        Ok(_) => Ok(true),
        Err(e) if e.kind == ErrorKind::Unavailable => Ok(false),
        Err(e) => Err(e),
    }
}

fn stop(session: &Session, f: &Flow, opts: &Map) -> Result<()> {
    if let Some(k) = opts.keys().find(|k| k.as_str() != "force") {
        return Err(Error::usage(format!("stop: option {k} is not one it takes (force)")));
    }
    let force = opts.get("force").map(|v| v.as_bool().unwrap_or(false)).unwrap_or(false);
    if !force {
        return verbs::stop(session, &f.name());
    }
    let id = flow::id_of(session, f)?;
    session.client.stop_task(&id, true)?;
    let ended = [TaskStatus::Stop, TaskStatus::Error, TaskStatus::Complete];
    verbs::tasks::wait_status(session, &id, &ended, Duration::from_secs(60))?;
    session.out.text(&format!("flow {} stopped (forced)", f.name()));
    Ok(())
}

fn logs(session: &Session, f: &Flow, opts: &Map) -> Result<()> {
    if let Some(k) = opts.keys().find(|k| !["limit", "level"].contains(&k.as_str())) {
        return Err(Error::usage(format!("logs: option {k} is not one it takes (limit, level)")));
    }
    let limit = match opts.get("limit") {
        None => 20,
        Some(v) => {
            v.as_int()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| Error::usage("logs: limit is a number of lines from 1 to 10000"))? as usize
        }
    };
    let level = opts.get("level").map(|v| v.to_string()).unwrap_or_else(|| "info".into());
    verbs::logs(session, &f.name(), limit, &level)
}

pub fn register(engine: &mut Engine, session: &Arc<Session>, raise: fn(Error) -> Box<EvalAltResult>) {
    let s = session.clone();
    engine.register_fn("wait_status", move |f: &mut Flow, status: &str, t: i64| -> RhaiResult<bool> {
        seconds("wait_status", t).and_then(|t| wait_status(&s, f, status, t)).map_err(raise)
    });
    let s = session.clone();
    engine.register_fn("wait_status", move |f: &mut Flow, status: &str| -> RhaiResult<bool> {
        wait_status(&s, f, status, Duration::from_secs(600)).map_err(raise)
    });
    let s = session.clone();
    engine.register_fn("wait_initial_complete", move |f: &mut Flow, t: i64| -> RhaiResult<Flow> {
        let t = seconds("wait_initial_complete", t).map_err(raise)?;
        let id = flow::id_of(&s, f).map_err(raise)?;
        flow::wait_initial_sync(&s, &id, t).map_err(raise)?;
        Ok(f.clone())
    });
    let s = session.clone();
    engine.register_fn("monitor", move |f: &mut Flow, t: i64| -> RhaiResult<Flow> {
        let t = seconds("monitor", t).map_err(raise)?;
        verbs::monitor(&s, &f.name(), Some(t.as_secs() as usize)).map_err(raise)?;
        Ok(f.clone())
    });
    let s = session.clone();
    engine.register_fn("logs", move |f: &mut Flow, opts: Map| -> RhaiResult<Flow> {
        logs(&s, f, &opts).map_err(raise)?;
        Ok(f.clone())
    });
    let s = session.clone();
    engine.register_fn("stop", move |f: &mut Flow, opts: Map| -> RhaiResult<Flow> {
        stop(&s, f, &opts).map_err(raise)?;
        Ok(f.clone())
    });
    let s = session.clone();
    engine.register_fn("metrics", move |f: &mut Flow| -> RhaiResult<Dynamic> {
        let (_, m) = metrics(&s, f).map_err(raise)?;
        rhai::serde::to_dynamic(&m)
    });
    let s = session.clone();
    engine.register_fn("replicate_lag", move |f: &mut Flow| -> RhaiResult<i64> {
        Ok(metrics(&s, f).map_err(raise)?.1.replicate_lag.unwrap_or(0))
    });
    let s = session.clone();
    engine.register_fn("full_qps", move |f: &mut Flow| -> RhaiResult<f64> {
        // Rows per second of the initial sync: so far, or over its whole run once done.
        let (_, m) = metrics(&s, f).map_err(raise)?;
        let Some(start) = m.snapshot_start_at else { return Ok(0.0) };
        let end = m.snapshot_done_at.unwrap_or_else(crate::model::now_ms);
        let secs = ((end - start).max(1) as f64) / 1000.0;
        Ok(m.snapshot_row_total as f64 / secs)
    });
    let s = session.clone();
    engine.register_fn("cdc_qps", move |f: &mut Flow| -> RhaiResult<f64> {
        let (task, m) = metrics(&s, f).map_err(raise)?;
        Ok(if task.sync_status.eq_ignore_ascii_case("cdc") { m.output_qps } else { 0.0 })
    });
    let s = session.clone();
    engine.register_fn("has_retry", move |f: &mut Flow| -> RhaiResult<bool> {
        Ok(!metrics(&s, f).map_err(raise)?.0.retrying.is_empty())
    });
}
