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

/// A MySQL value as the model's, typed by the field (the text protocol gives every value as
/// text; the binlog gives numbers and dates as themselves). A zero date (`0000-00-00`) or any
/// other value that is not of the column's type stays text.
pub(super) fn to_value(v: My, ty: Option<FieldType>) -> Value {
    match v {
        My::NULL => Value::Null,
        My::Int(i) => match ty {
            Some(FieldType::Boolean) => Value::Bool(i != 0),
            Some(FieldType::Decimal) => Value::Decimal(i.to_string()),
            Some(FieldType::Float) => Value::Float(i as f64),
            _ => Value::Int(i),
        },
        My::UInt(u) => i64::try_from(u).map(Value::Int).unwrap_or_else(|_| Value::Decimal(u.to_string())),
        My::Float(f) => Value::float(f64::from(f)),
        My::Double(f) => Value::float(f),
        My::Date(y, mo, d, h, mi, s, us) => {
            let date = chrono::NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(d));
            let time = date.and_then(|d| d.and_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us));
            match (ty, date, time) {
                (Some(FieldType::Date), Some(d), _) => Value::Date(d),
                (Some(FieldType::TimestampTz), _, Some(t)) => Value::TimestampTz(t.and_utc()),
                (_, _, Some(t)) => Value::Timestamp(t),
                _ => Value::Text(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")),
            }
        }
        My::Time(neg, d, h, m, s, _) => {
            Value::Text(format!("{}{:02}:{m:02}:{s:02}", if neg { "-" } else { "" }, u32::from(h) + d * 24))
        }
        My::Bytes(b) => {
            if ty == Some(FieldType::Bytes) {
                return Value::Bytes(b);
            }
            let s = String::from_utf8_lossy(&b).into_owned();
            match ty {
                Some(FieldType::Integer) => match s.parse::<i64>() {
                    Ok(i) => Value::Int(i),
                    Err(_) if is_decimal(&s) => Value::Decimal(s),
                    Err(_) => Value::Text(s),
                },
                Some(FieldType::Decimal) if is_decimal(&s) => Value::Decimal(s),
                Some(FieldType::Float) => s.parse::<f64>().map(Value::float).unwrap_or(Value::Text(s)),
                Some(FieldType::Boolean) => Value::Bool(b.first().is_some_and(|c| *c != 0 && *c != b'0')),
                Some(FieldType::Json | FieldType::Date | FieldType::Timestamp | FieldType::TimestampTz) => {
                    Value::from_json_as(serde_json::Value::String(s), ty)
                }
                _ => Value::Text(s),
            }
        }
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

/// A value as a MySQL parameter for a column of type `ty`: dates and timestamps as MySQL
/// dates (an instant as its UTC wall time: MySQL has no zoned type), decimals and text as
/// text, nested values as JSON text.
pub(super) fn to_my(v: &Value, ty: Option<FieldType>) -> My {
    use chrono::{Datelike, Timelike};
    let datetime = |t: chrono::NaiveDateTime| {
        My::Date(
            t.year() as u16,
            t.month() as u8,
            t.day() as u8,
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
            t.nanosecond() / 1000,
        )
    };
    match v {
        Value::Null => My::NULL,
        Value::Bool(b) => My::Int(i64::from(*b)),
        Value::Int(i) => My::Int(*i),
        Value::Float(f) => My::Double(*f),
        Value::Bytes(b) => My::Bytes(b.clone()),
        Value::Date(d) => My::Date(d.year() as u16, d.month() as u8, d.day() as u8, 0, 0, 0, 0),
        Value::Timestamp(t) => datetime(*t),
        Value::TimestampTz(t) => datetime(t.naive_utc()),
        // Text for a DATETIME may carry an offset (a user function's output); naive ones skip
        // the parsing (`zoned_to_utc`).
        Value::Text(s) if matches!(ty, Some(FieldType::Timestamp | FieldType::TimestampTz)) => {
            My::Bytes(crate::model::naive_text(s).into_bytes())
        }
        Value::Text(s) | Value::Decimal(s) => My::Bytes(s.as_bytes().to_vec()),
        other => My::Bytes(other.text().into_bytes()),
    }
}
