//! The plain flow's CDC loop, pipelined: a reader thread owns the source connections and reads
//! the next batch while this thread writes the one before, so a busy stream costs about the
//! longer of reading and writing instead of their sum.
//!
//! The order of [`run::cdc_loop`](super::run::cdc_loop) holds: a position is saved only after
//! its events are written, and acknowledged to the source only after it is saved (the reader
//! acknowledges what this thread sends back before it reads again). At most one batch waits
//! between the threads, so memory follows the batch size (three batches at most: one being
//! read, one waiting, one being written). On a quiet stream (small batches) the reader waits
//! for the writer to finish before it pauses, as the unpipelined loop did: reading ahead there
//! only made more, smaller batches, each with its transaction and checkpoint.

use super::*;
use run::Sources;
use std::sync::mpsc;

/// One read of one source connection, handed from the reader to the writer.
struct Read {
    /// The connection's index in the flow's sources.
    source: usize,
    events: Vec<Event>,
    /// The position the read started at, and the one after it.
    from: Position,
    next: Position,
    /// The tables that gained columns in it, with their schema as the source has it now.
    altered: Vec<(String, Schema)>,
}

/// Read `sources` on a thread of their own and hand each batch to `apply` on this one (with the
/// tables altered in it, and their schemas), saving and acknowledging each position after its
/// events are written.
pub(super) fn cdc_pipelined(
    ctx: &FlowCtx,
    sources: &mut Sources,
    checkpoint: &mut Checkpoint,
    mut apply: impl FnMut(&str, &[(String, Schema)], Vec<Event>) -> Result<()>,
) -> Result<Outcome> {
    ctx.log("INFO", "Incremental sync (CDC) started");
    let ids: Vec<String> = sources.iter().map(|(id, _, _)| id.clone()).collect();
    let start: Vec<Position> =
        ids.iter().map(|id| checkpoint.positions.get(id).cloned().unwrap_or(Value::Null)).collect();
    let (tx, rx) = mpsc::sync_channel::<Result<Read>>(1);
    let (ack_tx, ack_rx) = mpsc::channel::<(usize, Option<Position>)>();
    // Set when this side stops taking batches, so a reader finding nothing to hand over ends too.
    let quit = AtomicBool::new(false);
    let quit = &quit;
    std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("tap-cdc-read".into())
            .spawn_scoped(s, move || {
                let outcome = read_loop(ctx, sources, start, &tx, &ack_rx, quit);
                if let Err(e) = outcome {
                    // The writer reports it (unless it stopped taking batches first).
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| Error::internal(format!("cannot start the CDC reader thread: {e}")))?;
        let mut written = Ok(());
        for read in rx.iter() {
            if let Err(e) = read.and_then(|r| write_one(ctx, checkpoint, &ids, r, &mut apply, &ack_tx)) {
                written = Err(e);
                break;
            }
        }
        // The reader ends at its next read (or hand-over, which fails).
        quit.store(true, Ordering::SeqCst);
        drop(rx);
        reader.join().map_err(|_| Error::internal("the CDC reader thread panicked"))?;
        written
    })?;
    Ok(Outcome::Stopped)
}

/// The reader: each source in turn, from where the last read ended, until the flow stops or
/// the writer stops taking batches (`quit`).
fn read_loop(
    ctx: &FlowCtx,
    sources: &mut Sources,
    mut at: Vec<Position>,
    tx: &mpsc::SyncSender<Result<Read>>,
    acks: &mpsc::Receiver<(usize, Option<Position>)>,
    quit: &AtomicBool,
) -> Result<()> {
    let flow_id = ctx.task_id.as_str();
    let wait = Duration::from_millis((200 / sources.len().max(1)) as u64);
    // Reads handed over that the writer has not finished yet.
    let mut outstanding = 0usize;
    let done = |sources: &mut Sources, (i, saved): (usize, Option<Position>), outstanding: &mut usize| {
        *outstanding = outstanding.saturating_sub(1);
        match (saved, sources.get_mut(i)) {
            (Some(position), Some((_, conn, _))) => conn.cdc_ack(flow_id, &position),
            _ => Ok(()),
        }
    };
    let ack = |sources: &mut Sources, outstanding: &mut usize| -> Result<()> {
        acks.try_iter().try_for_each(|m| done(sources, m, outstanding))
    };
    let mut last_save = Instant::now();
    while !ctx.stopped() && !quit.load(Ordering::SeqCst) {
        ack(sources, &mut outstanding)?;
        // The counters are kept every few seconds, busy or idle (the writer updates them too).
        if last_save.elapsed() > Duration::from_secs(2) {
            ctx.save_metrics();
            last_save = Instant::now();
        }
        let mut small = true;
        for (i, (_, conn, tables)) in sources.iter_mut().enumerate() {
            let from = at[i].clone();
            let (events, next) = conn.changes(flow_id, tables, &from, CDC_BATCH, wait)?;
            small &= !events.is_empty() && events.len() < PACE_BELOW;
            ctx.notices(conn.as_mut());
            let mut altered = Vec::new();
            for table in conn.take_altered() {
                let schema = conn.schema(&table)?;
                altered.push((table, schema));
            }
            if events.is_empty() && altered.is_empty() && next == from {
                // Nothing to hand over: the counters note the quiet here (else `deliver` does).
                if let Ok(mut m) = ctx.metrics.lock() {
                    m.replicate_lag = 0;
                    m.tick();
                }
                continue;
            }
            at[i] = next.clone();
            if tx.send(Ok(Read { source: i, events, from, next, altered })).is_err() {
                return Ok(());
            }
            outstanding += 1;
        }
        if small && !ctx.stopped() {
            // A quiet stream: the writer finishes what it has, then the pause, so what is
            // committed meanwhile comes as one batch (reading ahead pays for full batches only;
            // on small ones it made more, smaller batches and cost CPU per change).
            while outstanding > 0 && !ctx.stopped() && !quit.load(Ordering::SeqCst) {
                match acks.recv_timeout(Duration::from_millis(50)) {
                    Ok(m) => done(sources, m, &mut outstanding)?,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            std::thread::sleep(CDC_PACE);
        }
    }
    // Whatever was saved meanwhile is acknowledged before the connections close.
    ack(sources, &mut outstanding)
}

/// The writer's part of one read: its events written, then its position saved, then handed
/// back to the reader to acknowledge.
fn write_one(
    ctx: &FlowCtx,
    checkpoint: &mut Checkpoint,
    ids: &[String],
    read: Read,
    apply: &mut impl FnMut(&str, &[(String, Schema)], Vec<Event>) -> Result<()>,
    acks: &mpsc::Sender<(usize, Option<Position>)>,
) -> Result<()> {
    let id = ids.get(read.source).ok_or_else(|| Error::internal("CDC source"))?;
    let Read { source, events, from, next, altered } = read;
    let write = |events| apply(id, &altered, events);
    let moved = (from != next).then_some(next);
    let saved = run::deliver(ctx, checkpoint, id, moved, events, !altered.is_empty(), write)?;
    // Done, and the position to acknowledge if one was saved. The reader is gone only once the
    // flow ends: nothing is left to acknowledge then.
    let _ = acks.send((source, saved));
    Ok(())
}
