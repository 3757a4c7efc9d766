//! The sink's batch, in one transaction: runs of set-based statements over a JSON array of
//! their images (`jsonb_populate_recordset … ON CONFLICT DO UPDATE`, `DELETE … WHERE (key) IN`).
//!
//! A long run ([`crate::connectors::BULK_FROM`] images or more: a snapshot's batch, a large inserting transaction)
//! goes in with `COPY … FROM STDIN` instead, as plain inserts — the server's fastest way in, and
//! no JSON to build or parse. A keyed target always has a unique key on the flow's key
//! (`sql::prepare`), so a row that is there already makes the COPY fail with a unique
//! violation: the transaction is rolled back, the batch written again with upserts, and the
//! table written with upserts only from then on (a resumed snapshot, CDC replaying rows the
//! snapshot read). Either way the batch ends as its upserts would end it.

use super::*;
use futures_util::SinkExt;
use std::fmt::Write as _;
use tokio_postgres::error::SqlState;

enum Step {
    /// A statement and its one parameter (the images as JSON).
    Exec(String, String),
    /// A `COPY … FROM STDIN` and its rows in COPY's text format.
    Copy(String, Vec<u8>),
}

impl Postgres {
    pub(super) fn write_batch(&mut self, target: &Target, changes: &[Change]) -> Result<()> {
        let table = target.table.as_str();
        if target.key.is_empty() && !target.append {
            return Err(Error::schema(format!("target table {table} has no key to write by")));
        }
        let cols = sql::columns(self, table, changes)?;
        let copy = !self.upsert_only.contains(table);
        let steps = self.steps(target, &cols, changes, copy);
        let copied = steps.iter().any(|s| matches!(s, Step::Copy(..)));
        match self.run_steps(steps)? {
            Err(e) if copied && !target.append && e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                self.upsert_only.insert(table.to_string());
                let steps = self.steps(target, &cols, changes, false);
                self.run_steps(steps)?.map_err(pg_err)
            }
            done => done.map_err(pg_err),
        }
    }

    /// The statements of a batch; `copy`: long insert runs as COPY.
    fn steps(&self, target: &Target, cols: &[(String, FieldType)], changes: &[Change], copy: bool) -> Vec<Step> {
        let q = self.qualified(&target.table);
        let key = &target.key[..];
        let key_list = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        let mut steps = Vec::new();
        for run in sql::runs(changes, target) {
            let run_cols = run.columns(cols);
            let col_list = run_cols.iter().map(|(c, _)| quote(c)).collect::<Vec<_>>().join(", ");
            let names = || run_cols.iter().map(|(c, _)| c).collect::<Vec<_>>();
            match run {
                Run::Append(images) | Run::Upsert(images) if copy && images.len() >= crate::connectors::BULK_FROM => {
                    steps.push(Step::Copy(format!("COPY {q} ({col_list}) FROM STDIN"), copy_rows(&images, &run_cols)))
                }
                Run::Append(images) => steps.push(Step::Exec(
                    format!(
                        "INSERT INTO {q} ({col_list}) SELECT {col_list} FROM jsonb_populate_recordset(NULL::{q}, $1::text::jsonb)"
                    ),
                    payload(&images, &names()),
                )),
                Run::Upsert(images) => {
                    let updates: Vec<String> = run_cols
                        .iter()
                        .filter(|(c, _)| !key.contains(c))
                        .map(|(c, _)| format!("{0} = EXCLUDED.{0}", quote(c)))
                        .collect();
                    let conflict = if updates.is_empty() {
                        "DO NOTHING".into()
                    } else {
                        format!("DO UPDATE SET {}", updates.join(", "))
                    };
                    steps.push(Step::Exec(
                        format!(
                            "INSERT INTO {q} ({col_list}) SELECT {col_list} FROM jsonb_populate_recordset(NULL::{q}, $1::text::jsonb) ON CONFLICT ({key_list}) {conflict}"
                        ),
                        payload(&images, &names()),
                    ))
                }
                Run::Delete(images) => steps.push(Step::Exec(
                    format!(
                        "DELETE FROM {q} WHERE ({key_list}) IN (SELECT {key_list} FROM jsonb_populate_recordset(NULL::{q}, $1::text::jsonb))"
                    ),
                    payload(&images, &key.iter().collect::<Vec<_>>()),
                )),
            }
        }
        steps
    }

    /// Run the steps in one transaction; the driver's error is kept for the caller to read.
    fn run_steps(&mut self, steps: Vec<Step>) -> Result<std::result::Result<(), tokio_postgres::Error>> {
        let client = &mut self.client;
        self.rt.run(async {
            let tx = client.transaction().await?;
            for step in steps {
                match step {
                    Step::Exec(sql, payload) => {
                        tx.execute(sql.as_str(), &[&payload]).await?;
                    }
                    Step::Copy(sql, rows) => {
                        let sink = tx.copy_in::<_, bytes::Bytes>(sql.as_str()).await?;
                        futures_util::pin_mut!(sink);
                        sink.send(bytes::Bytes::from(rows)).await?;
                        sink.finish().await?;
                    }
                }
            }
            tx.commit().await
        })
    }
}

/// Rows in COPY's text format: tab-separated, `\N` for null, each value as the upsert's JSON
/// would give it to the column (`values::payload`): a JSON column's value as JSON, bytes with
/// PostgreSQL's hex prefix, others as their text.
pub(super) fn copy_rows(images: &[&Record], cols: &[&(String, FieldType)]) -> Vec<u8> {
    let mut out = String::with_capacity(images.len() * cols.len() * 12);
    let mut json = String::new();
    for r in images {
        for (i, (name, ty)) in cols.iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            match r.get(name) {
                None | Some(Value::Null) => out.push_str("\\N"),
                Some(v) if *ty == FieldType::Json => {
                    json.clear();
                    values::json_value(v, &mut json);
                    escape(&json, &mut out);
                }
                Some(Value::Text(s) | Value::Decimal(s)) => escape(s, &mut out),
                Some(Value::Bytes(b)) => {
                    out.push_str("\\\\x");
                    out.push_str(&crate::model::hex(b));
                }
                Some(v @ (Value::Object(_) | Value::Array(_))) => {
                    json.clear();
                    values::json_value(v, &mut json);
                    escape(&json, &mut out);
                }
                // Numbers, booleans, dates and timestamps hold nothing to escape: written as
                // their text straight into the rows, no string of their own (writing into a
                // String cannot fail).
                Some(v) => {
                    let _ = write!(out, "{v}");
                }
            }
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// A value escaped for COPY's text format.
fn escape(s: &str, out: &mut String) {
    if !s.bytes().any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r')) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}
