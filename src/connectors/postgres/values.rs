//! Values and types: PostgreSQL's column types and values to the model's and back.

use super::*;

/// Map a PostgreSQL type (information_schema `data_type`, `udt_name`) to a field type.
pub fn field_type(data_type: &str, udt: &str) -> FieldType {
    match udt {
        "int2" | "int4" | "int8" | "oid" => FieldType::Integer,
        "numeric" => FieldType::Decimal,
        "float4" | "float8" => FieldType::Float,
        "bool" => FieldType::Boolean,
        "bytea" => FieldType::Bytes,
        "date" => FieldType::Date,
        "timestamp" => FieldType::Timestamp,
        "timestamptz" => FieldType::TimestampTz,
        "json" | "jsonb" => FieldType::Json,
        _ if data_type == "ARRAY" => FieldType::Json,
        _ => FieldType::Text,
    }
}

pub fn declared_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Integer => "BIGINT",
        FieldType::Decimal => "NUMERIC",
        FieldType::Float => "DOUBLE PRECISION",
        FieldType::Text => "TEXT",
        FieldType::Bytes => "BYTEA",
        FieldType::Boolean => "BOOLEAN",
        FieldType::Date => "DATE",
        FieldType::Timestamp => "TIMESTAMP",
        FieldType::TimestampTz => "TIMESTAMPTZ",
        FieldType::Json => "JSONB",
    }
}

/// The column type for a target field: the source's own type when PostgreSQL has it (so
/// `numeric(10,2)` and `varchar(32)` survive a copy), else the model type's mapping.
pub fn column_type(f: &Field) -> String {
    let t = f.data_type.trim().to_ascii_lowercase();
    let parameterized = ["numeric(", "decimal(", "character varying(", "varchar(", "character(", "char("];
    let plain = [
        "integer",
        "smallint",
        "bigint",
        "real",
        "double precision",
        "text",
        "boolean",
        "date",
        "timestamp without time zone",
        "timestamp with time zone",
        "jsonb",
        "json",
        "bytea",
        "uuid",
        "int",
        "timestamp",
    ];
    let fits = match f.ty {
        FieldType::Decimal => t.starts_with("numeric") || t.starts_with("decimal"),
        FieldType::Text => parameterized.iter().any(|p| t.starts_with(p)) || t == "text" || t == "uuid",
        _ => plain.contains(&t.as_str()),
    };
    if fits
        && (parameterized.iter().any(|p| t.starts_with(p) && t.ends_with(')'))
            || plain.contains(&t.as_str())
            || t == "numeric")
    {
        t
    } else {
        declared_type(f.ty).to_string()
    }
}

/// Bring a `row_to_json` record to the model's conventions: timestamps with a space, bytes as
/// plain hex.
pub(super) fn normalize(rec: &mut Record, schema: &Schema) {
    for f in &schema.fields {
        if let Some(Value::String(s)) = rec.get_mut(&f.name) {
            match f.ty {
                FieldType::Timestamp | FieldType::TimestampTz if s.len() > 10 && s.as_bytes()[10] == b'T' => {
                    s.replace_range(10..11, " ");
                }
                FieldType::Bytes => {
                    if let Some(h) = s.strip_prefix("\\x") {
                        *s = h.to_string();
                    }
                }
                _ => {}
            }
        }
    }
}

/// A value for `jsonb_populate_recordset`: bytes get PostgreSQL's hex prefix, nested values stay JSON.
pub(super) fn to_pg_json(v: &Value, ty: Option<FieldType>) -> Value {
    match (v, ty) {
        (Value::String(s), Some(FieldType::Bytes)) if !s.starts_with("\\x") => json!(format!("\\x{s}")),
        _ => v.clone(),
    }
}
