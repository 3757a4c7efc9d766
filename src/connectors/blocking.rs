//! The one boundary between the blocking connector API and the async drivers underneath.
//!
//! Every connector method is blocking (the runner gives each flow a thread). Connectors built
//! on async drivers (PostgreSQL, MySQL, MongoDB) own a small current-thread runtime each and
//! enter it only through [`Blocking::run`]. Two rules make nesting impossible:
//!
//! * a connector never calls back into the runner (a snapshot's `emit`) from inside `run`:
//!   it reads a batch inside the runtime, leaves it, then hands the batch over — so the sink
//!   of another connector, with its own runtime, is always entered from plain thread context;
//! * `run` refuses, with an internal error instead of tokio's panic, to be entered from inside
//!   another connector's `run`, so a future mistake is a clear flow error, not a dead thread.

use crate::error::{Error, Result};
use std::cell::Cell;
use std::future::Future;
use std::ops::ControlFlow;

pub struct Blocking {
    rt: tokio::runtime::Runtime,
}

impl Blocking {
    pub fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("cannot start a connector runtime: {e}")))?;
        Ok(Self { rt })
    }

    /// Drive `f` to completion on this connector's runtime.
    pub fn run<F: Future>(&self, f: F) -> Result<F::Output> {
        if INSIDE.with(Cell::get) {
            return Err(Error::internal(
                "a connector was entered from inside another connector's runtime (a bug: batches are handed over outside it)",
            ));
        }
        INSIDE.with(|i| i.set(true));
        let _reset = Reset;
        Ok(self.rt.block_on(f))
    }
}

/// Hand the batches `next` reads (inside a runtime) to `emit` (outside it), until a batch
/// comes back shorter than `batch` or `emit` says to stop: the snapshot loop of every async
/// connector.
pub fn pump<T>(
    batch: usize,
    mut next: impl FnMut() -> Result<Vec<T>>,
    emit: &mut dyn FnMut(Vec<T>) -> Result<ControlFlow<()>>,
) -> Result<()> {
    loop {
        let rows = next()?;
        let last = rows.len() < batch;
        if !rows.is_empty() && emit(rows)?.is_break() {
            return Ok(());
        }
        if last {
            return Ok(());
        }
    }
}

thread_local! {
    /// Whether this thread is inside some connector's `run` (tokio's own check would also
    /// refuse the blocking threads the engine's server hands connector calls to).
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Clears [`INSIDE`] however `run` ends (a panic included).
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        INSIDE.with(|i| i.set(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_entry_is_an_error_not_a_panic() {
        let outer = Blocking::new().expect("runtime");
        let inner = Blocking::new().expect("runtime");
        let nested = outer.run(async { inner.run(async { 1 }) }).expect("outer");
        assert_eq!(nested.expect_err("nested").kind, crate::error::ErrorKind::Internal);
        assert_eq!(inner.run(async { 2 }).expect("plain"), 2);
    }
}
