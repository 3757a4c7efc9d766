//! TapData's `skipErrorEvent` with `SkipByLimit` (TapFlow's `skip_error_event_by_limit(n)`):
//! a change that is refused (a value a processor cannot convert, a row the target refuses: a
//! constraint, a value out of range; `ErrorKind::Rejected`) is skipped and logged, up to `n` in one run of the flow (a restart counts anew); the next one stops the flow
//! with the error. Without it (the default) the first such error stops the flow.
//!
//! A batch that fails is retried one change at a time, so only the changes that fail are
//! skipped; the writes are idempotent (upserts, deletes by key), so retrying the ones a failed
//! batch wrote already changes nothing.

use super::*;
use crate::error::ErrorKind;
use std::sync::atomic::AtomicU64;

pub(super) struct Skipper {
    limit: u64,
    skipped: AtomicU64,
    store: Arc<Store>,
    task_id: String,
    record_id: String,
}

impl Skipper {
    pub(super) fn of(ctx: &FlowCtx, limit: Option<u64>) -> Option<Arc<Skipper>> {
        limit.map(|limit| {
            Arc::new(Skipper {
                limit,
                skipped: AtomicU64::new(0),
                store: ctx.store.clone(),
                task_id: ctx.task_id.clone(),
                record_id: ctx.record_id.clone(),
            })
        })
    }

    /// Skip one change that failed with `e`, or — past the limit — fail with it.
    pub(super) fn skip(&self, change: &Change, e: Error) -> Result<()> {
        let n = self.skipped.fetch_add(1, Ordering::SeqCst) + 1;
        if n > self.limit {
            return Err(Error::data(format!(
                "{} (the flow skipped {} changes with errors already, its limit — skip_error_event_by_limit({}))",
                e.message, self.limit, self.limit
            )));
        }
        let shown = record_text(change.key_image());
        let message = format!("skipped a change ({n} of at most {}): {} — record: {shown}", self.limit, e.message);
        let _ = self.store.log(&self.task_id, &self.record_id, "WARN", &message);
        Ok(())
    }
}

/// Whether an error is one a skip may pass over: a record refused (by the target or a
/// processor), not a lost server, a full disk or a bug.
pub(super) fn skippable(e: &Error) -> bool {
    e.kind == ErrorKind::Rejected
}

fn through(chain: &mut [Box<dyn Processor>], mut events: Vec<Event>) -> Result<Vec<Event>> {
    for p in chain.iter_mut() {
        events = p.process(events)?;
    }
    Ok(events)
}

/// Run `events` through `chain`; with a skipper, a batch that fails with a data error runs again
/// one event at a time and the events that fail are skipped.
pub(super) fn run_chain(
    chain: &mut [Box<dyn Processor>],
    events: Vec<Event>,
    skips: Option<&Skipper>,
) -> Result<Vec<Event>> {
    let Some(skips) = skips else { return through(chain, events) };
    match through(chain, events.clone()) {
        Ok(out) => return Ok(out),
        Err(e) if !skippable(&e) => return Err(e),
        Err(_) => {}
    }
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let change = e.change.clone();
        match through(chain, vec![e]) {
            Ok(one) => out.extend(one),
            Err(err) if skippable(&err) => skips.skip(&change, err)?,
            Err(err) => return Err(err),
        }
    }
    Ok(out)
}
