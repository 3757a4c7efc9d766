//! The snapshot's typed read: each column arrives in PostgreSQL's binary format and is decoded
//! by its type, straight into the model's values — no JSON text per row, on either side.
//!
//! The common types are read as they are stored; `numeric` as its text (exact digits); every
//! other type (arrays, composites, domains, enums, uuid, intervals, …) through `to_jsonb`, typed
//! by the table's field as a JSON row would be, so no type is read worse than before.

use super::*;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use tokio_postgres::types::{FromSql, Type};

/// How one column is read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Col {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Text,
    /// `numeric`, selected as its text.
    Numeric,
    Bytea,
    Date,
    Timestamp,
    TimestampTz,
    Json,
    Jsonb,
    /// Selected through `to_jsonb`, typed as the table's field of its name (if any).
    Other(Option<FieldType>),
}

/// A column of type `ty`: the expression that selects it from `tap_row`, and how it is read.
pub(super) fn column(name: &str, ty: &Type, field: Option<FieldType>) -> (String, Col) {
    let q = quote(name);
    let col = match *ty {
        Type::BOOL => Col::Bool,
        Type::INT2 => Col::Int2,
        Type::INT4 => Col::Int4,
        Type::INT8 => Col::Int8,
        Type::OID => Col::Oid,
        Type::FLOAT4 => Col::Float4,
        Type::FLOAT8 => Col::Float8,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Col::Text,
        Type::NUMERIC => return (format!("tap_row.{q}::text AS {q}"), Col::Numeric),
        Type::BYTEA => Col::Bytea,
        Type::DATE => Col::Date,
        Type::TIMESTAMP => Col::Timestamp,
        Type::TIMESTAMPTZ => Col::TimestampTz,
        Type::JSON => Col::Json,
        Type::JSONB => Col::Jsonb,
        _ => return (format!("to_jsonb(tap_row.{q}) AS {q}"), Col::Other(field)),
    };
    (format!("tap_row.{q}"), col)
}

/// A column's value as PostgreSQL sent it: its bytes, or none for null.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// One row, its columns read as `cols` says, named `names`.
pub(super) fn decode(row: &tokio_postgres::Row, names: &[String], cols: &[Col]) -> Result<Record> {
    let mut out = Record::new();
    for (i, (name, col)) in names.iter().zip(cols).enumerate() {
        let Raw(raw) = row.try_get::<_, Raw>(i).map_err(pg_err)?;
        let v = match raw {
            None => Value::Null,
            Some(b) => value(b, *col).map_err(|e| Error::data(format!("column {name}: {e}")))?,
        };
        out.insert(name.clone(), v);
    }
    Ok(out)
}

fn be<const N: usize>(b: &[u8]) -> std::result::Result<[u8; N], String> {
    b.try_into().map_err(|_| format!("expected {N} bytes in the binary value, got {}", b.len()))
}

/// PostgreSQL's epoch for dates and timestamps.
fn epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default().and_hms_opt(0, 0, 0).unwrap_or_default()
}

fn micros(b: &[u8]) -> std::result::Result<Option<NaiveDateTime>, String> {
    let us = i64::from_be_bytes(be(b)?);
    if us == i64::MAX || us == i64::MIN {
        return Ok(None);
    }
    epoch().checked_add_signed(TimeDelta::microseconds(us)).map(Some).ok_or_else(|| "timestamp out of range".into())
}

fn infinity(positive: bool) -> Value {
    Value::Text(if positive { "infinity" } else { "-infinity" }.into())
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn json(b: &[u8]) -> std::result::Result<serde_json::Value, String> {
    serde_json::from_slice(b).map_err(|e| format!("not JSON: {e}"))
}

fn value(b: &[u8], col: Col) -> std::result::Result<Value, String> {
    Ok(match col {
        Col::Bool => Value::Bool(b.first().is_some_and(|&x| x != 0)),
        Col::Int2 => Value::Int(i16::from_be_bytes(be(b)?).into()),
        Col::Int4 => Value::Int(i32::from_be_bytes(be(b)?).into()),
        Col::Int8 => Value::Int(i64::from_be_bytes(be(b)?)),
        Col::Oid => Value::Int(u32::from_be_bytes(be(b)?).into()),
        // As PostgreSQL prints it (the shortest text that reads back), not the wider binary value.
        Col::Float4 => Value::float(f32::from_be_bytes(be(b)?).to_string().parse().unwrap_or(f64::NAN)),
        Col::Float8 => Value::float(f64::from_be_bytes(be(b)?)),
        Col::Text => Value::Text(text(b)),
        Col::Numeric => {
            let s = text(b);
            if crate::model::is_decimal(&s) { Value::Decimal(s) } else { Value::Text(s) }
        }
        Col::Bytea => Value::Bytes(b.to_vec()),
        Col::Date => match i32::from_be_bytes(be(b)?) {
            d @ (i32::MAX | i32::MIN) => infinity(d == i32::MAX),
            d => Value::Date(epoch().date().checked_add_signed(TimeDelta::days(d.into())).ok_or("date out of range")?),
        },
        Col::Timestamp => match micros(b)? {
            Some(t) => Value::Timestamp(t),
            None => infinity(i64::from_be_bytes(be(b)?) > 0),
        },
        Col::TimestampTz => match micros(b)? {
            Some(t) => Value::TimestampTz(DateTime::<Utc>::from_naive_utc_and_offset(t, Utc)),
            None => infinity(i64::from_be_bytes(be(b)?) > 0),
        },
        Col::Json => Value::from_json(json(b)?),
        Col::Jsonb => Value::from_json(json(b.get(1..).unwrap_or_default())?),
        Col::Other(ty) => match ty {
            Some(FieldType::Json) | None => Value::from_json(json(b.get(1..).unwrap_or_default())?),
            ty => Value::from_json_as(json(b.get(1..).unwrap_or_default())?, ty),
        },
    })
}
