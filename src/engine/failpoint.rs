//! Runtime failpoints, for tests that must crash the engine at a known moment instead of after
//! a guessed sleep. `TAP_FAILPOINT=after_batch:3` aborts the engine process right after the
//! third batch any flow writes to a target; several are separated by commas
//! (`after_batch:3,after_checkpoint:5`). Unset, every failpoint is one relaxed atomic load.
//!
//! Points: `after_batch` (a sink batch is written, its position not yet saved; the documents
//! of a lookup's build too), `after_checkpoint` (a CDC position is saved, not yet acknowledged
//! to the source) and `after_lookup_copy` (a batch of a lookup's table copy is committed, the
//! table not yet marked done).
//! The process aborts (no destructors, no flush), as a SIGKILL or a power cut would end it.
//! `hold_after_batch:N` instead holds the flow after its Nth batch while the file named by
//! `TAP_FAILPOINT_HOLD` exists.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Point {
    name: String,
    at: u64,
    seen: AtomicU64,
}

fn points() -> &'static [Point] {
    static POINTS: OnceLock<Vec<Point>> = OnceLock::new();
    POINTS.get_or_init(|| {
        let spec = std::env::var("TAP_FAILPOINT").unwrap_or_default();
        spec.split(',')
            .filter_map(|p| p.trim().split_once(':'))
            .filter_map(|(name, n)| {
                Some(Point { name: name.to_string(), at: n.parse().ok()?, seen: AtomicU64::new(0) })
            })
            .collect()
    })
}

/// `hold_NAME:N` (with `TAP_FAILPOINT_HOLD=FILE`): from the Nth pass through `NAME` on, wait
/// while FILE exists, so a test sees a flow mid-snapshot, then lets it go by removing the file.
pub fn hold(name: &str) {
    let Some(p) = points().iter().find(|p| p.name.strip_prefix("hold_") == Some(name)) else { return };
    if p.seen.fetch_add(1, Ordering::SeqCst) + 1 < p.at {
        return;
    }
    let Some(file) = std::env::var_os("TAP_FAILPOINT_HOLD") else { return };
    while std::path::Path::new(&file).exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Count a pass through the failpoint `name`; abort the process when its count is reached.
pub fn hit(name: &str) {
    for p in points().iter().filter(|p| p.name == name) {
        if p.seen.fetch_add(1, Ordering::SeqCst) + 1 == p.at {
            std::process::abort();
        }
    }
}
