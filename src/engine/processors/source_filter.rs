//! A source's own filter (TapData's `conditions`), first in the source's chain: the snapshot's
//! rows and every change pass it. An update that leaves the filter deletes the row by its key
//! (its before image when it has one, else its after image: deleting a row the target does
//! not hold is harmless); one that enters it is written; an insert outside it never arrives.
//! A delete whose image lacks a filtered field (a key-only image) is passed on.

use super::Processor;
use crate::error::Result;
use crate::model::condition::{Condition, passes_all};
use crate::model::{Change, Event};

pub struct SourceFilter {
    pub conditions: Vec<Condition>,
}

impl Processor for SourceFilter {
    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>> {
        let c = &self.conditions;
        Ok(events
            .into_iter()
            .filter_map(|mut e| {
                e.change = match e.change {
                    Change::Insert { after } => {
                        if passes_all(c, &after) != Some(true) {
                            return None;
                        }
                        Change::Insert { after }
                    }
                    Change::Update { before, after } => {
                        let was = before.as_ref().and_then(|b| passes_all(c, b));
                        match (passes_all(c, &after) == Some(true), was) {
                            (true, _) => Change::Update { before, after },
                            (false, Some(false)) => return None,
                            (false, Some(true)) => Change::Delete { before: before.unwrap_or(after) },
                            (false, None) => Change::Delete { before: after },
                        }
                    }
                    Change::Delete { before } => {
                        if passes_all(c, &before) == Some(false) {
                            return None;
                        }
                        Change::Delete { before }
                    }
                };
                Some(e)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::condition::Op;
    use crate::model::{Record, Value};
    use std::sync::Arc;

    fn rec(id: i64, n: Option<i64>) -> Record {
        let mut r: Record = [("id".to_string(), Value::Int(id))].into_iter().collect();
        if let Some(n) = n {
            r.insert("n".into(), Value::Int(n));
        }
        r
    }
    fn ev(change: Change) -> Event {
        Event { table: Arc::from("t"), change, ts_ms: 0 }
    }

    #[test]
    fn changes_that_leave_the_filter_delete_and_inserts_outside_it_never_arrive() {
        let mut f =
            SourceFilter { conditions: vec![Condition { field: "n".into(), op: Op::Gt, value: Value::Int(10) }] };
        let out = f
            .process(vec![
                ev(Change::Insert { after: rec(1, Some(5)) }),
                ev(Change::Insert { after: rec(2, Some(50)) }),
                ev(Change::Update { before: Some(rec(2, Some(50))), after: rec(2, Some(1)) }),
                ev(Change::Update { before: None, after: rec(3, Some(1)) }),
                ev(Change::Update { before: Some(rec(4, Some(1))), after: rec(4, Some(2)) }),
                ev(Change::Delete { before: rec(5, None) }),
                ev(Change::Delete { before: rec(6, Some(1)) }),
            ])
            .expect("run");
        let changes: Vec<Change> = out.into_iter().map(|e| e.change).collect();
        assert_eq!(
            changes,
            vec![
                Change::Insert { after: rec(2, Some(50)) },
                Change::Delete { before: rec(2, Some(50)) },
                Change::Delete { before: rec(3, Some(1)) },
                Change::Delete { before: rec(5, None) },
            ]
        );
    }
}
