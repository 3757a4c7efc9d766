//! A snapshot's progress you can see: while a flow copies its tables, `start`,
//! `wait_initial_sync()` and `monitor` show rows copied of the sources' estimate, rows/s and the
//! time left (and the table, for a flow of many tables): a live line on a terminal, nothing
//! extra without one.

use super::session::Session;
use crate::api::metrics::TaskMetrics;
use crate::api::task::{Task, TaskStatus};
use crate::error::Result;
use std::time::{Duration, Instant};

/// `12,345`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// The progress line of a snapshot: `rate` is rows/s measured by the caller (0: not yet).
pub fn describe(m: &TaskMetrics, rate: f64) -> String {
    // The embedded engine sends its estimate apart; TapData's `snapshotRowTotal` is the rows
    // to copy and `snapshotInsertRowTotal` those copied.
    let done = copied(m);
    let estimate = if m.snapshot_row_estimate > 0 { m.snapshot_row_estimate } else { m.snapshot_row_total }.max(done);
    let mut line = if estimate > 0 {
        format!("snapshot: {} of ~{} rows ({}%)", thousands(done), thousands(estimate), done * 100 / estimate)
    } else {
        format!("snapshot: {} rows", thousands(done))
    };
    if rate >= 1.0 {
        line.push_str(&format!(", {} rows/s", thousands(rate as u64)));
        if estimate > done {
            line.push_str(&format!(", about {} left", duration((estimate - done) as f64 / rate)));
        }
    }
    if m.table_total > 1 {
        let copied = m.snapshot_table_total.min(m.table_total);
        line.push_str(&format!(", tables copied: {copied} of {}", m.table_total));
        if !m.snapshot_table.is_empty() {
            line.push_str(&format!(", now {}", m.snapshot_table));
        }
    }
    line
}

/// Rows copied so far.
fn copied(m: &TaskMetrics) -> u64 {
    if m.snapshot_insert_row_total > 0 { m.snapshot_insert_row_total } else { m.snapshot_row_total }
}

/// Whether the task is copying its snapshot now.
pub fn in_snapshot(task: &Task) -> bool {
    task.status == TaskStatus::Running && !task.initial_sync_done()
}

/// Show the live line until the snapshot ends, `until` passes, or Ctrl-C (the flow goes on).
/// Without a terminal, or in JSON mode, it returns at once.
pub fn follow(session: &Session, id: &str, until: Option<Instant>) -> Result<()> {
    if !session.out.live_ok() {
        return Ok(());
    }
    let mut last: Option<(Instant, u64)> = None;
    let mut rate = 0.0;
    let mut shown = false;
    loop {
        let Some(task) = session.client.task(id)? else { break };
        if !in_snapshot(&task) || until.is_some_and(|u| Instant::now() > u) {
            break;
        }
        if !task.record_id.is_empty() {
            let m = session.client.task_metrics(&task.id, &task.record_id)?;
            let now = Instant::now();
            if let Some((t, rows)) = last {
                let secs = now.duration_since(t).as_secs_f64();
                if secs > 0.0 {
                    let r = copied(&m).saturating_sub(rows) as f64 / secs;
                    rate = if rate == 0.0 { r } else { 0.7 * rate + 0.3 * r };
                }
            }
            last = Some((now, copied(&m)));
            session.out.live(&describe(&m, rate));
            shown = true;
        }
        if session.sleep(Duration::from_millis(500)).is_err() {
            if shown {
                session.out.live_end();
            }
            session.out.text(&format!("(stopped watching; the flow goes on: `status {}` shows it)", task.name));
            return Ok(());
        }
    }
    if shown {
        session.out.live_end();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_rows_of_the_estimate_rate_and_time_left() {
        let m = TaskMetrics { snapshot_row_total: 12_000, snapshot_row_estimate: 100_000, ..Default::default() };
        assert_eq!(describe(&m, 0.0), "snapshot: 12,000 of ~100,000 rows (12%)");
        assert_eq!(describe(&m, 4_400.0), "snapshot: 12,000 of ~100,000 rows (12%), 4,400 rows/s, about 20 s left");
        let many = TaskMetrics {
            snapshot_row_total: 500,
            snapshot_row_estimate: 400,
            table_total: 100,
            snapshot_table_total: 3,
            snapshot_table: "t4".into(),
            ..Default::default()
        };
        assert_eq!(describe(&many, 0.0), "snapshot: 500 of ~500 rows (100%), tables copied: 3 of 100, now t4");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(duration(3725.0), "1 h 2 min");
    }
}
