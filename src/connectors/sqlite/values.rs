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

/// Read one SQLite value as JSON, using the field's type for booleans, JSON and bytes.
pub(super) fn read_value(v: ValueRef<'_>, ty: Option<FieldType>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => match ty {
            Some(FieldType::Boolean) => Value::Bool(i != 0),
            _ => Value::from(i),
        },
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t);
            match ty {
                Some(FieldType::Json) => serde_json::from_str(&s).unwrap_or(Value::String(s.into_owned())),
                _ => Value::String(s.into_owned()),
            }
        }
        ValueRef::Blob(b) => Value::String(hex(b)),
    }
}

/// Decode a change-log image (JSON written by the triggers) using the table's schema:
/// booleans arrive as 0/1, JSON columns as text.
pub(super) fn decode_image(raw: &str, schema: &Schema) -> Result<Record> {
    let mut rec: Record = serde_json::from_str(raw)?;
    for f in &schema.fields {
        if let Some(v) = rec.get_mut(&f.name) {
            match (f.ty, &*v) {
                (FieldType::Boolean, Value::Number(n)) => *v = Value::Bool(n.as_i64() != Some(0)),
                (FieldType::Json, Value::String(s)) => {
                    if let Ok(parsed) = serde_json::from_str(s) {
                        *v = parsed;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(rec)
}

/// Bind a JSON value for a column of type `ty`.
pub(super) fn bind_value(v: &Value, ty: Option<FieldType>) -> ToSqlOutput<'static> {
    let owned = match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                SqlValue::Integer(i)
            } else {
                SqlValue::Real(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => match ty {
            Some(FieldType::Bytes) => unhex(s).map(SqlValue::Blob).unwrap_or_else(|| SqlValue::Text(s.clone())),
            _ => SqlValue::Text(s.clone()),
        },
        other => SqlValue::Text(other.to_string()),
    };
    ToSqlOutput::Owned(owned)
}
