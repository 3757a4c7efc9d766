//! Values and types: MySQL's column types and values to the model's and back.

use super::*;

/// Map MySQL's information_schema `DATA_TYPE` / `COLUMN_TYPE` to a field type.
pub fn field_type(data_type: &str, column_type: &str) -> FieldType {
    match data_type {
        "tinyint" if column_type.starts_with("tinyint(1)") => FieldType::Boolean,
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "bit" | "year" => FieldType::Integer,
        "decimal" | "numeric" => FieldType::Decimal,
        "float" | "double" | "real" => FieldType::Float,
        "binary" | "varbinary" | "blob" | "tinyblob" | "mediumblob" | "longblob" => FieldType::Bytes,
        "date" => FieldType::Date,
        "datetime" => FieldType::Timestamp,
        // A TIMESTAMP is an instant (stored in UTC); the connector's sessions run in UTC.
        "timestamp" => FieldType::TimestampTz,
        "json" => FieldType::Json,
        _ => FieldType::Text,
    }
}

/// The column type a target field gets; the source's own type when it is a MySQL one.
pub(super) fn column_type(f: &Field, is_key: bool) -> String {
    // The source's own type is kept when it is exactly a MySQL type (`decimal(10,2)`,
    // `varchar(40)`, `int`) of the same model type: another database's `int64` is not one.
    let t = f.data_type.to_ascii_lowercase();
    let (base, args) = t.split_once('(').unwrap_or((t.as_str(), ""));
    let args_ok = args.is_empty()
        || (args.ends_with(')') && args[..args.len() - 1].chars().all(|c| c.is_ascii_digit() || c == ','));
    let same_type = field_type(base, &t) == f.ty;
    let keep =
        ["decimal", "varchar", "char", "int", "bigint", "smallint", "tinyint", "double", "float", "date", "datetime"];
    if keep.contains(&base) && args_ok && same_type {
        return t;
    }
    match f.ty {
        FieldType::Integer => "BIGINT".into(),
        FieldType::Decimal => "DECIMAL(38,10)".into(),
        FieldType::Float => "DOUBLE".into(),
        FieldType::Text if is_key => "VARCHAR(255)".into(),
        FieldType::Text => "LONGTEXT".into(),
        FieldType::Bytes if is_key => "VARBINARY(255)".into(),
        FieldType::Bytes => "LONGBLOB".into(),
        FieldType::Boolean => "BOOLEAN".into(),
        FieldType::Date => "DATE".into(),
        FieldType::Timestamp | FieldType::TimestampTz => "DATETIME(6)".into(),
        FieldType::Json => "JSON".into(),
    }
}

/// A MySQL value as JSON, typed by the field.
pub(super) fn to_json(v: My, ty: Option<FieldType>) -> Value {
    match v {
        My::NULL => Value::Null,
        My::Int(i) if ty == Some(FieldType::Boolean) => Value::Bool(i != 0),
        My::Int(i) => json!(i),
        My::UInt(u) => json!(u),
        My::Float(f) => serde_json::Number::from_f64(f64::from(f)).map(Value::Number).unwrap_or(Value::Null),
        My::Double(f) => serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
        My::Date(y, mo, d, h, mi, s, us) => {
            if ty == Some(FieldType::Date) {
                json!(format!("{y:04}-{mo:02}-{d:02}"))
            } else if ty == Some(FieldType::TimestampTz) {
                let frac = if us > 0 { format!(".{us:06}") } else { String::new() };
                json!(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{frac}+00:00"))
            } else if us > 0 {
                json!(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"))
            } else {
                json!(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
            }
        }
        My::Time(neg, d, h, m, s, _) => {
            json!(format!("{}{:02}:{m:02}:{s:02}", if neg { "-" } else { "" }, u32::from(h) + d * 24))
        }
        My::Bytes(b) => match ty {
            Some(FieldType::Bytes) => json!(hex(&b)),
            Some(FieldType::Decimal | FieldType::Float | FieldType::Integer) => {
                let s = String::from_utf8_lossy(&b);
                s.parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| {
                        s.parse::<f64>()
                            .map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null))
                    })
                    .unwrap_or_else(|_| Value::String(s.into_owned()))
            }
            Some(FieldType::Json) => {
                let s = String::from_utf8_lossy(&b);
                serde_json::from_str(&s).unwrap_or_else(|_| Value::String(s.into_owned()))
            }
            Some(FieldType::Boolean) => Value::Bool(b.first().is_some_and(|c| *c != 0 && *c != b'0')),
            _ => Value::String(String::from_utf8_lossy(&b).into_owned()),
        },
    }
}

/// Seconds (and microseconds) since the epoch as a MySQL date-time value in UTC.
pub(super) fn epoch_to_my(secs: i64, micros: u32) -> My {
    use chrono::{Datelike, Timelike};
    match chrono::DateTime::from_timestamp(secs, micros * 1000) {
        Some(t) => My::Date(
            t.year() as u16,
            t.month() as u8,
            t.day() as u8,
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
            micros,
        ),
        None => My::Int(secs),
    }
}

/// A JSON value as a MySQL parameter.
pub(super) fn to_my(v: &Value, ty: Option<FieldType>) -> My {
    match v {
        Value::Null => My::NULL,
        Value::Bool(b) => My::Int(i64::from(*b)),
        Value::Number(n) => n.as_i64().map(My::Int).unwrap_or_else(|| My::Double(n.as_f64().unwrap_or(0.0))),
        Value::String(s) if ty == Some(FieldType::Bytes) => {
            My::Bytes(unhex(s).unwrap_or_else(|| s.as_bytes().to_vec()))
        }
        // The type is the target column's (a DATETIME reads back as a timestamp), so any
        // timestamp text may carry an offset; naive ones skip the parsing (`zoned_to_utc`).
        Value::String(s) if matches!(ty, Some(FieldType::Timestamp | FieldType::TimestampTz)) => {
            My::Bytes(crate::model::naive_text(s).into_bytes())
        }
        Value::String(s) => My::Bytes(s.as_bytes().to_vec()),
        other => My::Bytes(other.to_string().into_bytes()),
    }
}
