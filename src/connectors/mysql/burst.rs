//! Binlog events read in bursts: one entry into the connector's runtime takes the event waited
//! for and every event that has already arrived behind it, so a busy stream costs one runtime
//! entry (and no timer) per burst rather than per event.

use super::*;
use futures_util::FutureExt;
use mysql_async::binlog::events::Event as BinlogEvent;
use std::collections::VecDeque;

/// What the stream yields: an event, its error, or `None` when it ended.
pub(super) type Next = Option<std::result::Result<BinlogEvent, mysql_async::Error>>;

/// Events taken from the stream in one runtime entry, at most.
const BURST: usize = 1024;

/// Events read from the stream and not yet handled: logically still part of the stream, so
/// they go whenever it does.
#[derive(Default)]
pub(super) struct Ahead(VecDeque<Next>);

impl Ahead {
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }
}

impl Mysql {
    /// The next binlog event: one read ahead, else from the stream, waiting up to `wait` for
    /// it (`None`: only if it has arrived already). `Ok(None)` when none came in time.
    pub(super) fn next_event(&mut self, wait: Option<Duration>) -> Result<Option<Next>> {
        if let Some(next) = self.ahead.0.pop_front() {
            return Ok(Some(next));
        }
        let stream = self.stream.as_mut().ok_or_else(|| Error::internal("binlog stream"))?;
        let ahead = &mut self.ahead.0;
        let first = self.rt.run(async {
            let first = match wait {
                Some(wait) => tokio::time::timeout(wait, stream.next()).await.ok(),
                None => arrived(stream).await,
            };
            if matches!(first, Some(Some(Ok(_)))) {
                // What has arrived behind it. An error or the end is kept in its place, after
                // the events before it.
                while ahead.len() < BURST {
                    match arrived(stream).await {
                        Some(next @ Some(Ok(_))) => ahead.push_back(next),
                        Some(last) => {
                            ahead.push_back(last);
                            break;
                        }
                        None => break,
                    }
                }
            }
            first
        })?;
        Ok(first)
    }
}

/// The stream's next item if it has arrived: what is read already, else after one look at
/// the socket (a yield lets the runtime poll it, without a timer or a wait).
async fn arrived(stream: &mut BinlogStream) -> Option<Next> {
    if let Some(next) = stream.next().now_or_never() {
        return Some(next);
    }
    tokio::task::yield_now().await;
    stream.next().now_or_never()
}
