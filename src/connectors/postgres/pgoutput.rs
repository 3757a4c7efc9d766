//! A `pgoutput` (protocol version 1) decoder: Relation, Insert, Update and Delete messages into
//! change events; Begin/Commit arrive as separate replication events. A relation sent again
//! with columns dropped, renamed or retyped, and a Truncate of a table of the flow's schema, are
//! errors: the flow cannot follow them.
//!
//! Values come as text and are typed by the column's type OID: booleans, integers, floats and
//! numerics become JSON numbers/booleans, JSON columns JSON, bytea plain hex, the rest strings.

use crate::error::{Error, Result};
use crate::model::{Change, Event, Record, Value};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
struct Relation {
    schema: String,
    table: Arc<str>,
    columns: Vec<(String, u32)>,
}

#[derive(Default)]
pub struct Decoder {
    relations: HashMap<u32, Relation>,
    /// Tables whose relation came again with columns added, since the last take.
    pub(super) altered: Vec<String>,
    /// The columns of the tables read when replication started: pgoutput sends a relation only
    /// before its first change in a session, so a column added before that is found against these.
    pub(super) known: HashMap<String, Vec<String>>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or_else(short)?;
        self.pos += 1;
        Ok(b)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos + n).ok_or_else(short)?;
        self.pos += n;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstr(&mut self) -> Result<String> {
        let rest = &self.buf[self.pos..];
        let end = rest.iter().position(|&b| b == 0).ok_or_else(short)?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }
}

fn short() -> Error {
    Error::internal("truncated pgoutput message")
}

impl Decoder {
    fn tuple(&self, c: &mut Cursor<'_>, rel: &Relation) -> Result<Record> {
        let n = c.u16()? as usize;
        let mut rec = Record::with_capacity(n);
        for i in 0..n {
            let (name, oid) = rel.columns.get(i).cloned().unwrap_or_else(|| (format!("col{i}"), 25));
            match c.u8()? {
                b'n' => {
                    rec.insert(name, Value::Null);
                }
                b'u' => {} // unchanged TOAST value: not sent; leave the field out
                b't' => {
                    let len = c.u32()? as usize;
                    let text = String::from_utf8_lossy(c.take(len)?).into_owned();
                    rec.insert(name, super::values::from_text(&text, oid));
                }
                b'b' => {
                    let len = c.u32()? as usize;
                    let _ = c.take(len)?;
                    return Err(Error::unsupported("binary pgoutput values are not requested and not supported"));
                }
                other => return Err(Error::internal(format!("unknown pgoutput tuple kind {other}"))),
            }
        }
        Ok(rec)
    }

    fn relation(&self, id: u32) -> Result<&Relation> {
        self.relations.get(&id).ok_or_else(|| Error::internal(format!("pgoutput change for unknown relation {id}")))
    }

    /// Decode one message; `None` for messages that carry no row change (or other schemas).
    pub fn decode(&mut self, data: &[u8], schema: &str) -> Result<Option<Event>> {
        let mut c = Cursor { buf: data, pos: 0 };
        let kind = c.u8()?;
        match kind {
            b'R' => {
                let id = c.u32()?;
                let ns = c.cstr()?;
                let name = c.cstr()?;
                let _identity = c.u8()?;
                let n = c.u16()? as usize;
                let mut columns = Vec::with_capacity(n);
                for _ in 0..n {
                    let _flags = c.u8()?;
                    let col = c.cstr()?;
                    let oid = c.u32()?;
                    let _typmod = c.u32()?;
                    columns.push((col, oid));
                }
                if ns == schema
                    && !self.relations.contains_key(&id)
                    && let Some(known) = self.known.get(&name)
                    && columns.iter().any(|(c, _)| !known.contains(c))
                    && !self.altered.contains(&name)
                {
                    self.altered.push(name.clone());
                }
                // A relation sent again after DDL: added columns are followed, others are not.
                if let Some(old) = self.relations.get(&id)
                    && old.schema == schema
                {
                    let changed: Vec<&str> = old
                        .columns
                        .iter()
                        .filter(|(c, oid)| !columns.iter().any(|(n, o)| n == c && o == oid))
                        .map(|(c, _)| c.as_str())
                        .collect();
                    if !changed.is_empty() {
                        return Err(Error::unsupported(format!(
                            "PostgreSQL source table {ns}.{name}: column(s) {} were dropped, renamed or retyped; \
                             the flow follows added columns only, so it stops: reset it to copy the table again",
                            changed.join(", ")
                        )));
                    }
                    if columns.len() > old.columns.len() && !self.altered.contains(&name) {
                        self.altered.push(name.clone());
                    }
                }
                self.relations.insert(id, Relation { schema: ns, table: Arc::from(name.as_str()), columns });
                Ok(None)
            }
            b'I' => {
                let rel = self.relation(c.u32()?)?.clone();
                if c.u8()? != b'N' {
                    return Err(Error::internal("pgoutput insert without a new tuple"));
                }
                let after = self.tuple(&mut c, &rel)?;
                Ok((rel.schema == schema).then(|| Event {
                    table: rel.table.clone(),
                    change: Change::Insert { after },
                    ts_ms: 0,
                }))
            }
            b'U' => {
                let rel = self.relation(c.u32()?)?.clone();
                let mut before = None;
                let mut tag = c.u8()?;
                if tag == b'K' || tag == b'O' {
                    before = Some(self.tuple(&mut c, &rel)?);
                    tag = c.u8()?;
                }
                if tag != b'N' {
                    return Err(Error::internal("pgoutput update without a new tuple"));
                }
                let mut after = self.tuple(&mut c, &rel)?;
                // Unchanged TOAST columns are absent from the new tuple: keep the old values.
                if let Some(b) = &before {
                    for (k, v) in b {
                        after.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                Ok((rel.schema == schema).then(|| Event {
                    table: rel.table.clone(),
                    change: Change::Update { before, after },
                    ts_ms: 0,
                }))
            }
            b'D' => {
                let rel = self.relation(c.u32()?)?.clone();
                let tag = c.u8()?;
                if tag != b'K' && tag != b'O' {
                    return Err(Error::internal("pgoutput delete without an old tuple"));
                }
                let before = self.tuple(&mut c, &rel)?;
                Ok((rel.schema == schema).then(|| Event {
                    table: rel.table.clone(),
                    change: Change::Delete { before },
                    ts_ms: 0,
                }))
            }
            b'T' => {
                // TRUNCATE of published tables: the target would keep every row.
                let n = c.u32()? as usize;
                let _options = c.u8()?;
                for _ in 0..n {
                    if let Some(rel) = self.relations.get(&c.u32()?)
                        && rel.schema == schema
                    {
                        return Err(Error::unsupported(format!(
                            "PostgreSQL source table {}.{} was truncated; the flow stops (the target would keep \
                             every row): reset it to copy the table again",
                            rel.schema, rel.table
                        )));
                    }
                }
                Ok(None)
            }
            // Begin/Commit come as their own replication events; Origin, Type, Message: no rows.
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Relation message as pgoutput sends it: id, namespace, name, identity, columns.
    fn relation(id: u32, columns: &[(&str, u32)]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(id.to_be_bytes());
        m.extend(b"public\0items\0");
        m.push(b'd');
        m.extend((columns.len() as u16).to_be_bytes());
        for (name, oid) in columns {
            m.push(0);
            m.extend(name.as_bytes());
            m.push(0);
            m.extend(oid.to_be_bytes());
            m.extend((-1i32).to_be_bytes());
        }
        m
    }

    #[test]
    fn added_columns_are_followed_and_other_ddl_stops() {
        let mut d = Decoder::default();
        assert!(d.decode(&relation(7, &[("id", 23), ("v", 25)]), "public").expect("first").is_none());
        // The same relation with a column added (ALTER TABLE … ADD COLUMN): followed.
        assert!(d.decode(&relation(7, &[("id", 23), ("v", 25), ("n", 23)]), "public").is_ok());
        // A column renamed, dropped or retyped: refused, naming it.
        let err = d.decode(&relation(7, &[("id", 23), ("w", 25), ("n", 23)]), "public").unwrap_err();
        assert!(err.message.contains("column(s) v were dropped, renamed or retyped"), "{}", err.message);
        let mut d = Decoder::default();
        d.decode(&relation(7, &[("id", 23), ("v", 25)]), "public").expect("first");
        let err = d.decode(&relation(7, &[("id", 20), ("v", 25)]), "public").unwrap_err();
        assert!(err.message.contains("column(s) id"), "{}", err.message);
        // Another schema's relations are not the flow's.
        assert!(d.decode(&relation(7, &[("x", 25)]), "other").is_ok());
    }

    #[test]
    fn a_truncate_of_a_flow_table_stops() {
        let mut d = Decoder::default();
        d.decode(&relation(7, &[("id", 23)]), "public").expect("relation");
        let mut t = vec![b'T'];
        t.extend(1u32.to_be_bytes());
        t.push(0);
        t.extend(7u32.to_be_bytes());
        let err = d.decode(&t, "public").unwrap_err();
        assert!(err.message.contains("public.items was truncated"), "{}", err.message);
        let mut unknown = vec![b'T'];
        unknown.extend(1u32.to_be_bytes());
        unknown.push(0);
        unknown.extend(9u32.to_be_bytes());
        assert!(d.decode(&unknown, "public").expect("not ours").is_none());
    }
}
