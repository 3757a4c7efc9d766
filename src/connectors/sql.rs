//! What every SQL sink does the same way, written once: preparing the target table (create it,
//! empty it, add columns, give it a key to upsert on), the columns a batch adds, and the plan
//! of a batch (runs of upserts and deletes, one image per key). Each connector adds only its
//! dialect: names, column types and the statements of a run.
//!
//! The contract (run against every connector by `tests/it/conformance.rs`): a batch ends as if
//! its changes ran one at a time. An upsert writes the fields its image carries (a null is
//! written as NULL) and leaves the row's other columns as they are: a PostgreSQL update leaves
//! unchanged large (TOAST) values out of its image, and they must survive it.

use super::{Connector, ExistingData, Target};
use crate::error::Result;
use crate::model::{Change, Field, FieldType, Hasher, Record, Schema};
use std::collections::{HashMap, HashSet};

/// A SQL connector's dialect, as the shared sink code needs it.
pub trait SqlTarget: Connector {
    /// The table's name as statements write it (schema- or database-qualified).
    fn qualified(&self, table: &str) -> String;
    /// An identifier quoted.
    fn quote_name(&self, name: &str) -> String;
    /// The column type of a target field; `is_key`: the column is part of the key (MySQL cannot
    /// index an unbounded text).
    fn column_type(&self, field: &Field, is_key: bool) -> String;
    /// Run one statement that returns nothing.
    fn ddl(&mut self, sql: &str) -> Result<()>;
    /// Remove every row (TapData's `removeData`).
    fn clear(&mut self, table: &str) -> Result<()> {
        let q = self.qualified(table);
        self.ddl(&format!("DELETE FROM {q}"))
    }
    /// What follows `CREATE TABLE t (…)`.
    fn create_options(&self) -> &'static str {
        ""
    }
    /// The table's schema, cached until [`SqlTarget::forget`].
    fn target_schema(&mut self, table: &str) -> Result<Schema>;
    /// Drop what is cached about the table (its shape changed).
    fn forget(&mut self, table: &str);
}

/// Create or check the target table (the body of [`Connector::prepare_target`]).
pub fn prepare<T: SqlTarget>(t: &mut T, target: &Target, schema: &Schema) -> Result<()> {
    let (table, key, existing) = (target.table.as_str(), &target.key[..], target.existing);
    let q = t.qualified(table);
    if existing == ExistingData::Drop {
        t.ddl(&format!("DROP TABLE IF EXISTS {q}"))?;
    }
    t.forget(table);
    if !t.tables()?.iter().any(|n| n == table) {
        let mut cols: Vec<String> = schema
            .fields
            .iter()
            .map(|f| format!("{} {}", t.quote_name(&f.name), t.column_type(f, key.contains(&f.name))))
            .collect();
        for k in key.iter().filter(|k| schema.field(k).is_none()) {
            cols.push(format!("{} {}", t.quote_name(k), t.column_type(&text_field(k), true)));
        }
        if !key.is_empty() {
            cols.push(format!("PRIMARY KEY ({})", names(t, key)));
        }
        t.ddl(&format!("CREATE TABLE {q} ({}){}", cols.join(", "), t.create_options()))?;
    } else {
        if existing == ExistingData::Remove {
            t.clear(table)?;
        }
        let present = t.schema(table)?;
        for f in schema.fields.iter().filter(|f| present.field(&f.name).is_none()) {
            let is_key = key.contains(&f.name);
            t.ddl(&format!("ALTER TABLE {q} ADD COLUMN {} {}", t.quote_name(&f.name), t.column_type(f, is_key)))?;
        }
        // Upserts find their row by the key: without a primary or unique key on exactly those
        // columns every image would add a copy.
        // Names compare as MySQL and SQLite compare them, case-insensitively.
        let wanted: HashSet<String> = key.iter().map(|k| k.to_ascii_lowercase()).collect();
        let same = |cols: &[String]| {
            cols.len() == wanted.len() && cols.iter().all(|c| wanted.contains(&c.to_ascii_lowercase()))
        };
        let uniques = t.unique_keys(table)?;
        let keyed = same(&present.primary_key()) || uniques.iter().any(|u| same(&u.columns));
        if !key.is_empty() && !keyed {
            let index = format!("tap_key_{table}");
            let index: String = index.chars().take(60).collect();
            t.ddl(&format!("CREATE UNIQUE INDEX {} ON {q} ({})", t.quote_name(&index), names(t, key))).map_err(
                |e| {
                    e.context(format!(
                        "target table {table} has no primary or unique key on ({}), and adding one failed \
                         (duplicate keys, or a column type that cannot be indexed); give it one, or name \
                         the key with write_to(\"Conn.{table}\", [fields])",
                        key.join(", ")
                    ))
                },
            )?;
        }
    }
    t.forget(table);
    Ok(())
}

/// Before a batch is written: the table gets a column for each field of its images it lacks
/// (typed from the first value). Returns the table's columns with their types.
pub fn columns<T: SqlTarget>(t: &mut T, table: &str, changes: &[Change]) -> Result<Vec<(String, FieldType)>> {
    let mut schema = t.target_schema(table)?;
    let mut added = false;
    let mut last: Option<&Record> = None;
    for c in changes {
        if let Change::Insert { after } | Change::Update { after, .. } = c {
            // An image with the fields of the one before it adds no column.
            if last.is_some_and(|l| same_fields(l, after)) {
                continue;
            }
            last = Some(after);
            for (name, v) in after {
                if schema.field(name).is_some() {
                    continue;
                }
                let f = Field {
                    name: name.clone(),
                    ty: v.field_type().unwrap_or(FieldType::Text),
                    data_type: String::new(),
                    primary_key: false,
                    nullable: true,
                };
                let q = t.qualified(table);
                t.ddl(&format!("ALTER TABLE {q} ADD COLUMN {} {}", t.quote_name(name), t.column_type(&f, false)))?;
                schema.fields.push(f);
                added = true;
            }
        }
    }
    if added {
        t.forget(table);
        schema = t.target_schema(table)?;
    }
    Ok(schema.fields.iter().map(|f| (f.name.clone(), f.ty)).collect())
}

/// Consecutive changes of one kind, each key once.
#[derive(Debug, PartialEq)]
pub enum Run<'a> {
    /// Images to insert or update by key, all with the same fields: a statement writes those
    /// fields and leaves the row's other columns as they are.
    Upsert(Vec<&'a Record>),
    /// Images whose key fields name rows to delete.
    Delete(Vec<&'a Record>),
    /// Images to insert as new rows (an appending target), all with the same fields.
    Append(Vec<&'a Record>),
}

impl Run<'_> {
    /// The columns of `cols` an upsert run writes: those its images carry.
    pub fn columns<'c>(&self, cols: &'c [(String, FieldType)]) -> Vec<&'c (String, FieldType)> {
        match self {
            Run::Upsert(images) | Run::Append(images) => {
                let first = images.first();
                cols.iter().filter(|(c, _)| first.is_some_and(|r| r.contains_key(c))).collect()
            }
            Run::Delete(_) => Vec::new(),
        }
    }
}

/// How a batch is written to `target`: by key ([`plan`]), or, on an appending target, as runs
/// of inserts of every change's image (an update's after image, a delete's before image), in
/// order, one shape per run.
pub fn runs<'a>(changes: &'a [Change], target: &Target) -> Vec<Run<'a>> {
    if !target.append {
        return plan(changes, &target.key);
    }
    // Each run's shape is its first image's fields (`same_fields`), as in `plan`.
    let mut runs: Vec<Vec<&'a Record>> = Vec::new();
    for c in changes {
        let image = c.key_image();
        match runs.last_mut() {
            Some(images) if same_fields(images[0], image) => images.push(image),
            _ => runs.push(vec![image]),
        }
    }
    runs.into_iter().map(Run::Append).collect()
}

/// A batch as runs of upserts and deletes in order. A key change becomes a delete of the old key
/// then an upsert of the new. An upsert run holds images of one shape (the same fields; another
/// shape starts a new run), and only the last image of each key, so one multi-row statement per
/// run writes each row once (PostgreSQL's ON CONFLICT refuses to touch a row twice) and ends
/// where the changes one by one would.
pub fn plan<'a>(changes: &'a [Change], key: &[String]) -> Vec<Run<'a>> {
    // (upsert, the run's first image — its fields are the run's shape —, images in order — a
    // replaced one leaves its slot empty —, key → slot)
    type Open<'a> = (bool, &'a Record, Vec<Option<&'a Record>>, HashMap<String, usize, Hasher>);
    let mut runs: Vec<Open<'a>> = Vec::new();
    let mut push = |upsert: bool, image: &'a Record| {
        if runs.last().is_none_or(|(u, first, ..)| *u != upsert || (upsert && !same_fields(first, image))) {
            runs.push((upsert, image, Vec::new(), HashMap::default()));
        }
        let (_, _, images, at) = runs.last_mut().expect("a run was pushed");
        // The image takes the latest place: a database that compares keys by its own rules
        // (case-insensitive text) then ends at the last one, as one by one would.
        if let Some(i) = at.insert(key_text(image, key), images.len()) {
            images[i] = None;
        }
        images.push(Some(image));
    };
    for c in changes {
        match c {
            Change::Insert { after } => push(true, after),
            Change::Update { before, after } => {
                if let Some(b) = before
                    && key.iter().any(|k| b.get(k).is_some_and(|v| Some(v) != after.get(k)))
                {
                    push(false, b);
                }
                push(true, after);
            }
            Change::Delete { before } => push(false, before),
        }
    }
    runs.into_iter()
        .map(|(upsert, _, images, _)| {
            let images: Vec<&Record> = images.into_iter().flatten().collect();
            if upsert { Run::Upsert(images) } else { Run::Delete(images) }
        })
        .collect()
}

/// Whether two images have the same fields in the same order.
pub fn same_fields(a: &Record, b: &Record) -> bool {
    a.len() == b.len() && a.keys().zip(b.keys()).all(|(x, y)| x == y)
}

/// The key fields of an image as one text, each part length-prefixed so no two keys share it.
/// A key column has one type, so values of the same text (`1` and `"1"`) are one row.
fn key_text(image: &Record, key: &[String]) -> String {
    use crate::model::Value;
    use std::borrow::Cow;
    use std::fmt::Write as _;
    let mut s = String::new();
    for k in key {
        let part = match image.get(k) {
            Some(Value::Text(t) | Value::Decimal(t)) => Cow::Borrowed(t.as_str()),
            v => Cow::Owned(v.map(Value::text).unwrap_or_default()),
        };
        // Writing into a String cannot fail.
        let _ = write!(s, "{}:{part};", part.len());
    }
    s
}

fn names<T: SqlTarget>(t: &T, cols: &[String]) -> String {
    cols.iter().map(|c| t.quote_name(c)).collect::<Vec<_>>().join(", ")
}

fn text_field(name: &str) -> Field {
    Field { name: name.into(), ty: FieldType::Text, data_type: String::new(), primary_key: true, nullable: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: serde_json::Value) -> Record {
        Record::from_json_value(v).expect("object")
    }

    fn ids(run: &Run) -> Vec<String> {
        let (Run::Upsert(v) | Run::Delete(v) | Run::Append(v)) = run;
        v.iter().map(|r| format!("{}{}", r["id"], r.get("n").map(|n| format!("/{n}")).unwrap_or_default())).collect()
    }

    #[test]
    fn a_batch_plans_as_runs_with_each_key_once_and_key_changes_moving_rows() {
        let key = vec!["id".to_string()];
        let changes = vec![
            Change::Insert { after: rec(json!({"id": 1, "n": 1})) },
            Change::Insert { after: rec(json!({"id": 2, "n": 1})) },
            Change::Update { before: None, after: rec(json!({"id": 1, "n": 2})) },
            Change::Insert { after: rec(json!({"id": 3, "n": 1})) },
            // A key change inside the run: the old row goes before the new one is written,
            // and after the insert of 3 that precedes it.
            Change::Update { before: Some(rec(json!({"id": 3}))), after: rec(json!({"id": 4, "n": 1})) },
            Change::Delete { before: rec(json!({"id": 2})) },
            Change::Delete { before: rec(json!({"id": 2})) },
            Change::Insert { after: rec(json!({"id": 2, "n": 3})) },
        ];
        let runs = plan(&changes, &key);
        let shown: Vec<(bool, Vec<String>)> = runs.iter().map(|r| (matches!(r, Run::Upsert(_)), ids(r))).collect();
        assert_eq!(
            shown,
            vec![
                (true, vec!["2/1".into(), "1/2".into(), "3/1".into()]),
                (false, vec!["3".into()]),
                (true, vec!["4/1".into()]),
                (false, vec!["2".into()]),
                (true, vec!["2/3".into()]),
            ]
        );
    }

    #[test]
    fn an_appending_target_inserts_every_image_in_order() {
        let target = Target::appending("log", ExistingData::Keep);
        let changes = vec![
            Change::Insert { after: rec(json!({"id": 1, "n": 1})) },
            Change::Update { before: Some(rec(json!({"id": 1, "n": 1}))), after: rec(json!({"id": 1, "n": 2})) },
            Change::Delete { before: rec(json!({"id": 1})) },
            Change::Insert { after: rec(json!({"id": 1, "n": 3})) },
        ];
        let runs = runs(&changes, &target);
        assert!(runs.iter().all(|r| matches!(r, Run::Append(_))));
        assert_eq!(runs.iter().map(ids).collect::<Vec<_>>(), vec![vec!["1/1", "1/2"], vec!["1"], vec!["1/3"]]);
    }

    #[test]
    fn an_image_of_another_shape_starts_a_run() {
        let key = vec!["id".to_string()];
        let changes = vec![
            Change::Insert { after: rec(json!({"id": 1, "n": 1})) },
            Change::Insert { after: rec(json!({"id": 2})) },
            Change::Insert { after: rec(json!({"id": 1, "n": 2})) },
        ];
        let runs = plan(&changes, &key);
        assert_eq!(runs.iter().map(ids).collect::<Vec<_>>(), vec![vec!["1/1"], vec!["2"], vec!["1/2"]]);
    }

    #[test]
    fn keys_of_one_text_are_one_row_whatever_their_types() {
        // A key column has one type: 1 and "1" name the same row, which one statement must
        // not write twice (PostgreSQL refuses an upsert that touches a row twice).
        let key = vec!["id".to_string()];
        let changes =
            vec![Change::Insert { after: rec(json!({"id": 1})) }, Change::Insert { after: rec(json!({"id": "1"})) }];
        assert_eq!(ids(&plan(&changes, &key)[0]), vec!["1"]);
    }
}
