//! `unwind_processor` (TapFlow's `flat_unwind` and `embedded_unwind`): each record becomes one
//! row per element of its array field `path`, keyed by the record's key and the element's
//! index (`includeArrayIndex`).
//!
//! * `EMBEDDED`: the element replaces the array at `path`.
//! * `FLATTEN`: an object element's fields become top-level fields `path` + joiner + name
//!   (`arrayModel` `OBJECT` or `MIX`); a scalar element replaces the array (`BASIC`, `MIX`).
//! * A record whose array is null, missing or empty keeps one row (index 0, the path null)
//!   when `preserveNullAndEmptyArrays`, else none; a scalar is an array of one.
//!
//! Changes: an update writes its rows and deletes the indexes past them that the record had
//! (flattened rows are deleted and written anew, as an element's fields may differ from the
//! last one's); a delete deletes every row the record had. How many that is comes from the before image
//! when it has the array, and from a mark the engine keeps per record key (the most rows the
//! record ever became, raised before the rows are written, so after a crash it is never less
//! than what the target holds; deleting a row that is not there is harmless).

use super::{Processor, Schema};
use crate::engine::store::Store;
use crate::error::{Error, Result};
use crate::model::{Change, Event, Field, FieldType, Record, Value};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayModel {
    Basic,
    Object,
    Mix,
}

pub struct Unwind {
    pub(super) name: String,
    pub(super) node_id: String,
    pub(super) path: String,
    pub(super) embedded: bool,
    pub(super) model: ArrayModel,
    pub(super) index: String,
    pub(super) joiner: String,
    pub(super) keep_null: bool,
    /// The records' key (the input schema's primary key).
    pub(super) key: Vec<String>,
    pub(super) state: Option<(Arc<Store>, String)>,
}

impl Unwind {
    /// The elements of a record's array: `None` when the record lacks the field entirely.
    fn elements(&self, r: &Record) -> Option<Vec<Value>> {
        Some(match r.get(self.path.as_str())? {
            Value::Array(a) => a.clone(),
            Value::Null => Vec::new(),
            other => vec![other.clone()],
        })
    }

    /// The rows a record becomes.
    fn rows(&self, r: &Record) -> Vec<Record> {
        let elements = self.elements(r).unwrap_or_default();
        let mut base = r.clone();
        base.remove(&self.path);
        let row = |i: usize, e: Option<&Value>| {
            let mut row = base.clone();
            match (e, self.embedded) {
                (None, _) => {
                    row.insert(self.path.clone(), Value::Null);
                }
                (Some(e), true) => {
                    row.insert(self.path.clone(), e.clone());
                }
                (Some(Value::Object(o)), false) if self.model != ArrayModel::Basic => {
                    for (k, v) in o {
                        row.insert(format!("{}{}{k}", self.path, self.joiner), v.clone());
                    }
                }
                (Some(e), false) => {
                    row.insert(self.path.clone(), e.clone());
                }
            }
            row.insert(self.index.clone(), Value::Int(i as i64));
            row
        };
        if elements.is_empty() {
            return if self.keep_null { vec![row(0, None)] } else { Vec::new() };
        }
        elements.iter().enumerate().map(|(i, e)| row(i, Some(e))).collect()
    }

    fn key_text(&self, r: &Record) -> Result<String> {
        let mut parts = Vec::with_capacity(self.key.len());
        for k in &self.key {
            match r.get(k.as_str()) {
                Some(v) if !v.is_null() => parts.push(v.text()),
                _ => {
                    return Err(Error::data(format!(
                        "node {:?}: a record reaching the unwind has its key field {k:?} missing or null",
                        self.name
                    )));
                }
            }
        }
        Ok(serde_json::to_string(&parts)?)
    }

    /// The key image of a record's row `i`, for a delete.
    fn row_key(&self, r: &Record, i: u64) -> Record {
        let mut k: Record = self.key.iter().filter_map(|f| Some((f.clone(), r.get(f.as_str())?.clone()))).collect();
        k.insert(self.index.clone(), Value::Int(i as i64));
        k
    }
}

impl Processor for Unwind {
    fn schema(&mut self, mut schema: Schema) -> Schema {
        if self.key.is_empty() {
            self.key = schema.primary_key();
        }
        // The path's column is typed by the rows (elements are not arrays); the index is a number.
        schema.fields.retain(|f| f.name != self.path && f.name != self.index);
        schema.fields.push(Field {
            name: self.index.clone(),
            ty: FieldType::Integer,
            data_type: String::new(),
            primary_key: false,
            nullable: false,
        });
        schema
    }

    fn known_output(&self) -> bool {
        self.embedded
    }

    fn attach(&mut self, store: &Arc<Store>, task_id: &str) {
        self.state = Some((store.clone(), task_id.to_string()));
    }

    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>> {
        if self.key.is_empty() {
            return Err(Error::schema(format!(
                "node {:?}: the table has no primary key, which with the index keys the rows an array becomes",
                self.name
            )));
        }
        // The marks of the records that change or go.
        let mut keys = Vec::new();
        for e in &events {
            if let Change::Update { after: r, .. } | Change::Delete { before: r } = &e.change {
                keys.push(self.key_text(r)?);
            }
        }
        let stored = match &self.state {
            Some((store, task)) if !keys.is_empty() => store.unwind_marks(task, &self.node_id, &keys)?,
            _ => vec![0; keys.len()],
        };
        // The marks as this batch raises them: a later change of the same record in the batch
        // sees the rows an earlier one wrote.
        let mut marks: std::collections::HashMap<String, u64> = keys.into_iter().zip(stored).collect();
        let mut raised: Vec<(String, u64)> = Vec::new();
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let (table, ts_ms) = (e.table.clone(), e.ts_ms);
            let push = |out: &mut Vec<Event>, change| out.push(Event { table: table.clone(), change, ts_ms });
            match e.change {
                Change::Insert { after } => {
                    let rows = self.rows(&after);
                    let k = self.key_text(&after)?;
                    let m = marks.entry(k.clone()).or_insert(0);
                    *m = (*m).max(rows.len() as u64);
                    raised.push((k, rows.len() as u64));
                    for r in rows {
                        push(&mut out, Change::Insert { after: r });
                    }
                }
                Change::Update { before, after } => {
                    let k = self.key_text(&after)?;
                    let had = before.as_ref().and_then(|b| self.elements(b)).map_or(0, |e| e.len().max(1) as u64);
                    let rows = self.rows(&after);
                    let n = rows.len() as u64;
                    let m = marks.entry(k.clone()).or_insert(0);
                    let mark = *m;
                    *m = (*m).max(n);
                    raised.push((k, n));
                    // A key that changed leaves every row of the old one; a flattened row is
                    // rewritten whole (its element's fields may differ from the last one's), an
                    // embedded one is updated and the indexes past the array deleted.
                    let moved = before.as_ref().filter(|b| self.key_text(b).ok() != self.key_text(&after).ok());
                    let first_gone = if moved.is_some() || !self.embedded { 0 } else { n };
                    for i in first_gone..had.max(mark).max(n * u64::from(!self.embedded)) {
                        push(&mut out, Change::Delete { before: self.row_key(moved.unwrap_or(&after), i) });
                    }
                    for r in rows {
                        push(&mut out, Change::Update { before: None, after: r });
                    }
                }
                Change::Delete { before } => {
                    let mark = marks.get(&self.key_text(&before)?).copied().unwrap_or(0);
                    let had = self.elements(&before).map_or(0, |e| e.len() as u64);
                    let n = had.max(mark).max(u64::from(self.keep_null));
                    for i in 0..n {
                        push(&mut out, Change::Delete { before: self.row_key(&before, i) });
                    }
                }
            }
        }
        if let Some((store, task)) = &self.state {
            store.raise_unwind_marks(task, &self.node_id, &raised)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unwind(embedded: bool, model: ArrayModel) -> Unwind {
        Unwind {
            name: "U".into(),
            node_id: "u".into(),
            path: "items".into(),
            embedded,
            model,
            index: "_index".into(),
            joiner: "_".into(),
            keep_null: true,
            key: vec!["id".into()],
            state: None,
        }
    }
    fn rec(v: serde_json::Value) -> Record {
        Record::from_json_value(v).unwrap_or_default()
    }
    fn ev(change: Change) -> Event {
        Event { table: Arc::from("t"), change, ts_ms: 0 }
    }
    fn images(out: Vec<Event>) -> Vec<(String, serde_json::Value)> {
        out.into_iter()
            .map(|e| (e.change.op().to_string(), serde_json::Value::Object(e.change.key_image().to_json())))
            .collect()
    }

    #[test]
    fn a_delete_in_the_batch_of_its_insert_deletes_every_row_the_insert_wrote() {
        let mut u = unwind(true, ArrayModel::Basic);
        let out = u
            .process(vec![
                ev(Change::Insert { after: rec(json!({"id": 1, "items": [1, 2, 3]})) }),
                ev(Change::Delete { before: rec(json!({"id": 1})) }),
            ])
            .expect("run");
        let deletes = out.iter().filter(|e| matches!(e.change, Change::Delete { .. })).count();
        assert_eq!(deletes, 3);
    }

    #[test]
    fn arrays_become_rows_keyed_by_index_and_shrinking_arrays_delete_the_rest() {
        let mut u = unwind(false, ArrayModel::Mix);
        let out = u
            .process(vec![
                ev(Change::Insert { after: rec(json!({"id": 1, "items": [{"sku": "a", "q": 2}, "loose"]})) }),
                ev(Change::Insert { after: rec(json!({"id": 2, "items": []})) }),
            ])
            .expect("run");
        assert_eq!(
            images(out),
            vec![
                ("i".into(), json!({"id": 1, "items_sku": "a", "items_q": 2, "_index": 0})),
                ("i".into(), json!({"id": 1, "items": "loose", "_index": 1})),
                ("i".into(), json!({"id": 2, "items": null, "_index": 0})),
            ]
        );
        let mut u = unwind(true, ArrayModel::Basic);
        let out = u
            .process(vec![
                ev(Change::Update {
                    before: Some(rec(json!({"id": 1, "items": [1, 2, 3]}))),
                    after: rec(json!({"id": 1, "items": [9]})),
                }),
                ev(Change::Delete { before: rec(json!({"id": 2})) }),
            ])
            .expect("run");
        assert_eq!(
            images(out),
            vec![
                ("d".into(), json!({"id": 1, "_index": 1})),
                ("d".into(), json!({"id": 1, "_index": 2})),
                ("u".into(), json!({"id": 1, "items": 9, "_index": 0})),
                ("d".into(), json!({"id": 2, "_index": 0})),
            ]
        );
    }
}
