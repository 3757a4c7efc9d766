//! Change streams read in bursts (the MySQL binlog, PostgreSQL's replication stream): one
//! entry into a connector's runtime takes the item waited for and every item that has already
//! arrived behind it, so a busy stream costs one runtime entry (and no timer) per burst rather
//! than per item.

use crate::connectors::blocking::Blocking;
use crate::error::Result;
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

/// Items taken from a stream in one runtime entry, at most.
const BURST: usize = 1024;

/// A stream of change items, as its driver yields them.
pub trait Items {
    type Item;
    /// The next item (an error and the stream's end are items too). Cancel-safe: dropping
    /// the future unfinished loses nothing.
    fn next_item(&mut self) -> impl Future<Output = Self::Item>;
    /// Whether an item is an event, after which the stream goes on (not an error or its end).
    fn goes_on(item: &Self::Item) -> bool;
}

/// Items read from a stream and not yet handled: logically still part of the stream, so they
/// go whenever it does.
pub struct Ahead<T>(VecDeque<T>);

impl<T> Default for Ahead<T> {
    fn default() -> Self {
        Self(VecDeque::new())
    }
}

impl<T> Ahead<T> {
    /// The first item read ahead.
    fn pop(&mut self) -> Option<T> {
        self.0.pop_front()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// The next item: the first read ahead, else from the stream through [`next`] on the
/// connector's runtime `rt`. `Ok(None)` when none came in time.
pub fn take<S: Items>(
    rt: &Blocking,
    stream: &mut S,
    wait: Option<Duration>,
    ahead: &mut Ahead<S::Item>,
) -> Result<Option<S::Item>> {
    match ahead.pop() {
        Some(item) => Ok(Some(item)),
        None => rt.run(next(stream, wait, ahead)),
    }
}

/// The next item, waiting up to `wait` for it (`None`: only if it has arrived already), with
/// every item arrived behind it kept in `ahead` (an error or the end in its place after the
/// events before it). `None` when none came in time. Run inside the connector's runtime, once
/// `ahead` is empty.
async fn next<S: Items>(stream: &mut S, wait: Option<Duration>, ahead: &mut Ahead<S::Item>) -> Option<S::Item> {
    let first = match wait {
        Some(wait) => tokio::time::timeout(wait, stream.next_item()).await.ok(),
        None => arrived(stream).await,
    };
    if first.as_ref().is_some_and(S::goes_on) {
        while ahead.0.len() < BURST {
            let Some(item) = arrived(stream).await else { break };
            let goes_on = S::goes_on(&item);
            ahead.0.push_back(item);
            if !goes_on {
                break;
            }
        }
    }
    first
}

/// The stream's next item if it has arrived: what is read already, else after one look at
/// the socket (a yield lets the runtime poll it and run the driver's tasks, without a timer or
/// a wait).
async fn arrived<S: Items>(stream: &mut S) -> Option<S::Item> {
    if let Some(item) = stream.next_item().now_or_never() {
        return Some(item);
    }
    tokio::task::yield_now().await;
    stream.next_item().now_or_never()
}
