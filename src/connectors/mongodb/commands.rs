//! Writes as the classic write commands (`insert`, `update`, `delete`), each carrying many
//! statements — what the drivers' own bulk writes send to servers without `bulkWrite` (before
//! MongoDB 8; SecantusDB) — instead of one round trip per document. Consecutive statements of
//! a kind go in one command, split so that none passes the server's document size.

use super::*;
use mongodb::bson::{RawArrayBuf, RawDocumentBuf};

/// Statements per command (the server's `maxWriteBatchSize` is 100,000).
const MAX_STATEMENTS: usize = 10_000;
/// Bytes of statements per command: a command is one BSON document (16 MiB at most).
const MAX_BYTES: usize = 8 << 20;

/// One write statement.
pub(super) enum Statement<'a> {
    Insert(&'a Document),
    /// Replace the document the filter finds, or insert it.
    Upsert(&'a Document, &'a Document),
    /// Delete the document the filter finds.
    Delete(&'a Document),
}

/// A statement the server refused: its code and message.
pub(super) struct Refused {
    pub code: i32,
    pub message: String,
}

impl Refused {
    pub fn error(self, database: &str, table: &str) -> Error {
        let message = format!("MongoDB refused a write to {database}.{table}: {} (code {})", self.message, self.code);
        if REFUSED.contains(&self.code) { Error::rejected(message) } else { Error::data(message) }
    }
}

fn raw(d: &Document) -> Result<RawDocumentBuf> {
    RawDocumentBuf::from_document(d).map_err(|e| Error::data(format!("a document MongoDB cannot hold: {e}")))
}

impl Mongo {
    /// Upserts recreate a dropped collection without a word, holding only the changes from
    /// then on: a collection written before must still be there.
    pub(super) fn check_present(&mut self, table: &str) -> Result<()> {
        if self.written.contains(table) {
            let names = self
                .rt
                .run(
                    self.client
                        .database(&self.database)
                        .list_collection_names()
                        .filter(doc! {"name": table})
                        .into_future(),
                )?
                .map_err(mg_err)?;
            if names.is_empty() {
                return Err(Error::not_found(format!(
                    "MongoDB collection {}.{table} was dropped while the flow wrote to it; its upserts would \
                     recreate it holding only the changes from now on, so the flow stops: reset it to copy again",
                    self.database
                )));
            }
        }
        self.written.insert(table.to_string());
        Ok(())
    }

    /// Run a batch's operations on `table`, in order when `ordered`: one `bulkWrite` where the
    /// server has it, else the classic write commands (`commands`).
    pub(super) fn run_models(&mut self, table: &str, models: Vec<WriteModel>, ordered: bool) -> Result<()> {
        if models.is_empty() {
            return Ok(());
        }
        self.check_present(table)?;
        if self.bulk {
            self.rt.run(self.client.bulk_write(models).ordered(ordered).into_future())?.map_err(mg_err)?;
            return Ok(());
        }
        let statements: Vec<Statement> = models
            .iter()
            .filter_map(|m| match m {
                WriteModel::ReplaceOne(r) => Some(Statement::Upsert(&r.filter, &r.replacement)),
                WriteModel::DeleteOne(d) => Some(Statement::Delete(&d.filter)),
                WriteModel::InsertOne(i) => Some(Statement::Insert(&i.document)),
                _ => None,
            })
            .collect();
        match self.run_statements(table, &statements, ordered)? {
            None => Ok(()),
            Some(r) => Err(r.error(&self.database, table)),
        }
    }

    /// Run `statements` on `table` in order; the first the server refused, if any (an
    /// unordered command runs all of its own statements first).
    pub(super) fn run_statements(
        &self,
        table: &str,
        statements: &[Statement<'_>],
        ordered: bool,
    ) -> Result<Option<Refused>> {
        let mut i = 0;
        while i < statements.len() {
            let kind = std::mem::discriminant(&statements[i]);
            let (command, field) = match statements[i] {
                Statement::Insert(_) => ("insert", "documents"),
                Statement::Upsert(..) => ("update", "updates"),
                Statement::Delete(_) => ("delete", "deletes"),
            };
            let (mut array, mut n, mut bytes) = (RawArrayBuf::new(), 0, 0);
            while i < statements.len() && std::mem::discriminant(&statements[i]) == kind && n < MAX_STATEMENTS {
                let one = match statements[i] {
                    Statement::Insert(d) => raw(d)?,
                    Statement::Upsert(q, u) => {
                        let mut s = RawDocumentBuf::new();
                        s.append("q", raw(q)?);
                        s.append("u", raw(u)?);
                        s.append("upsert", true);
                        s
                    }
                    Statement::Delete(q) => {
                        let mut s = RawDocumentBuf::new();
                        s.append("q", raw(q)?);
                        s.append("limit", 1);
                        s
                    }
                };
                let len = one.as_bytes().len();
                if n > 0 && bytes + len > MAX_BYTES {
                    break;
                }
                array.push(one);
                (n, bytes, i) = (n + 1, bytes + len, i + 1);
            }
            let mut cmd = RawDocumentBuf::new();
            cmd.append(command, table);
            cmd.append(field, array);
            cmd.append("ordered", ordered);
            let reply = self
                .rt
                .run(self.client.database(&self.database).run_raw_command(cmd).into_future())?
                .map_err(mg_err)?;
            if let Ok(e) = reply.get_document("writeConcernError") {
                return Err(Error::data(format!(
                    "MongoDB: the write to {}.{table} did not meet its write concern: {}",
                    self.database,
                    e.get_str("errmsg").unwrap_or("no message")
                )));
            }
            if let Some(Bson::Document(e)) = reply.get_array("writeErrors").ok().and_then(|a| a.first()) {
                let code = e.get_i32("code").map(i64::from).or_else(|_| e.get_i64("code")).unwrap_or(0);
                let message = e.get_str("errmsg").unwrap_or("no message").to_string();
                return Ok(Some(Refused { code: code as i32, message }));
            }
        }
        Ok(None)
    }
}
