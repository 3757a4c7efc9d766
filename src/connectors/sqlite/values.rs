//! Values and types: SQLite's declared types and values to the model's and back.

use super::*;

/// Map a declared SQLite column type to a field type, by SQLite's own affinity rules plus the
/// common names for dates, booleans, decimals and JSON.
pub fn field_type(declared: &str) -> FieldType {
    let t = declared.to_ascii_uppercase();
    if t.contains("BOOL") {
        FieldType::Boolean
    } else if t.contains("TIMESTAMPTZ") || t.contains("WITH TIME ZONE") {
        FieldType::TimestampTz
    } else if t.contains("DATETIME") || t.contains("TIMESTAMP") {
        FieldType::Timestamp
    } else if t.contains("DATE") {
        FieldType::Date
    } else if t.contains("INT") {
        FieldType::Integer
    } else if t.contains("JSON") {
        FieldType::Json
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        FieldType::Text
    } else if t.contains("BLOB") || t.contains("BINARY") || t.contains("BYTEA") {
        FieldType::Bytes
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        FieldType::Float
    } else if t.contains("DEC") || t.contains("NUM") {
        FieldType::Decimal
    } else {
        FieldType::Text
    }
}

/// The declared type a target column gets for a field type.
pub fn declared_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Integer => "INTEGER",
        FieldType::Decimal => "NUMERIC",
        FieldType::Float => "REAL",
        FieldType::Text => "TEXT",
        FieldType::Bytes => "BLOB",
        FieldType::Boolean => "BOOLEAN",
        FieldType::Date => "DATE",
        FieldType::Timestamp => "DATETIME",
        FieldType::TimestampTz => "TIMESTAMPTZ",
        FieldType::Json => "JSON",
    }
}

/// Read one SQLite value as the model's, typed by the column's declared type where the
/// stored value is of it (SQLite lets any column hold any value; one that is not stays as
/// stored: free text in a DATE column is text).
pub(super) fn read_value(v: ValueRef<'_>, ty: Option<FieldType>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => match ty {
            Some(FieldType::Boolean) => Value::Bool(i != 0),
            Some(FieldType::Decimal) => Value::Decimal(i.to_string()),
            Some(FieldType::Float) => Value::Float(i as f64),
            _ => Value::Int(i),
        },
        ValueRef::Real(f) => match ty {
            Some(FieldType::Decimal) if f.is_finite() => Value::Decimal(f.to_string()),
            _ => Value::float(f),
        },
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t).into_owned();
            match ty {
                Some(FieldType::Json | FieldType::Date | FieldType::Timestamp | FieldType::TimestampTz) => {
                    Value::from_json_as(serde_json::Value::String(s), ty)
                }
                Some(FieldType::Decimal) if is_decimal(&s) => Value::Decimal(s),
                _ => Value::Text(s),
            }
        }
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

/// Decode a change-log image (JSON written by the triggers, bytes as hex) using the table's
/// schema.
pub(super) fn decode_image(raw: &str, schema: &Schema) -> Result<Record> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let ty = schema.field(&k).map(|f| f.ty);
            let v = match (ty, v) {
                // The triggers write a JSON column's text as text.
                (Some(FieldType::Json), serde_json::Value::String(s)) => read_value(ValueRef::Text(s.as_bytes()), ty),
                (ty, v) => Value::from_json_as(v, ty),
            };
            (k, v)
        })
        .collect())
}

/// Bind a value: SQLite's own classes where it has them, the text form for the rest (the
/// column's affinity turns a decimal's text into a number).
pub(super) fn bind_value(v: &Value) -> ToSqlOutput<'_> {
    let owned = match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Int(i) => SqlValue::Integer(*i),
        Value::Float(f) => SqlValue::Real(*f),
        // Borrowed: a row's texts are bound without a copy.
        Value::Text(s) | Value::Decimal(s) => return ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Value::Bytes(b) => return ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        other => SqlValue::Text(other.text()),
    };
    ToSqlOutput::Owned(owned)
}
