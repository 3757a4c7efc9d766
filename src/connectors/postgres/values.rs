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

/// The select list a snapshot reads a row with, for `row_to_json`: numerics as their text, so
/// no digit is lost to JSON's binary numbers.
pub(super) fn select_list(schema: &Schema) -> String {
    if schema.fields.is_empty() {
        return "*".into();
    }
    let cols: Vec<String> = schema
        .fields
        .iter()
        .map(|f| match f.ty {
            FieldType::Decimal => format!("{0}::text AS {0}", quote(&f.name)),
            _ => quote(&f.name),
        })
        .collect();
    cols.join(", ")
}

/// A `row_to_json` row as a record, typed by the table's schema (JSON columns arrive as JSON).
pub(super) fn decode_row(text: &str, schema: &Schema) -> Result<Record> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let v = match schema.field(&k).map(|f| f.ty) {
                Some(FieldType::Json) | None => Value::from_json(v),
                ty => Value::from_json_as(v, ty),
            };
            (k, v)
        })
        .collect())
}

/// A pgoutput text value typed by its type's OID.
pub(super) fn from_text(text: &str, oid: u32) -> Value {
    let s = || Value::Text(text.to_string());
    match oid {
        16 => Value::Bool(text == "t"),
        20 | 21 | 23 | 26 => text.parse::<i64>().map(Value::Int).unwrap_or_else(|_| s()),
        700 | 701 => text.parse::<f64>().map(Value::float).unwrap_or_else(|_| s()),
        1700 if crate::model::is_decimal(text) => Value::Decimal(text.to_string()),
        114 | 3802 => serde_json::from_str(text).map(Value::from_json).unwrap_or_else(|_| s()),
        17 => crate::model::unhex(text.strip_prefix("\\x").unwrap_or(text)).map(Value::Bytes).unwrap_or_else(s),
        1082 => Value::parse_time(text, FieldType::Date).unwrap_or_else(s),
        1114 => Value::parse_time(text, FieldType::Timestamp).unwrap_or_else(s),
        1184 => Value::parse_time(text, FieldType::TimestampTz).unwrap_or_else(s),
        _ => s(),
    }
}

/// A JSON array of images for `jsonb_populate_recordset`, each with `fields` (those it
/// has): decimals as JSON numbers with their exact digits, bytes with PostgreSQL's hex prefix,
/// dates and timestamps as their text, nested values as JSON.
pub(super) fn payload(images: &[&Record], fields: &[&String]) -> String {
    let mut out = String::with_capacity(images.len() * fields.len() * 12 + 2);
    out.push('[');
    for (i, r) in images.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        let mut first = true;
        for f in fields {
            if let Some(v) = r.get(*f) {
                if !first {
                    out.push(',');
                }
                first = false;
                json_string(f, &mut out);
                out.push(':');
                json_value(v, &mut out);
            }
        }
        out.push('}');
    }
    out.push(']');
    out
}

/// `s` as a JSON string literal, appended without an intermediate value.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
    } else {
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
    }
    out.push('"');
}

pub(super) fn json_value(v: &Value, out: &mut String) {
    match v {
        Value::Decimal(d) if json_number(d) => out.push_str(d),
        Value::Bytes(b) => json_string(&format!("\\x{}", crate::model::hex(b)), out),
        Value::Object(r) => {
            out.push('{');
            for (i, (k, v)) in r.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                json_value(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_value(v, out);
            }
            out.push(']');
        }
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) => out.push_str(&v.to_json().to_string()),
        other => json_string(&other.text(), out),
    }
}

/// Whether a decimal's text is a JSON number as it stands (`-12.50`, `1E+3`; not `.5` or `NaN`).
fn json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    let int_start = i;
    if !digits(&mut i) || (b[int_start] == b'0' && i - int_start > 1) {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// The conditions PostgreSQL compares as the engine does (numbers, decimals, times, booleans;
/// text only for equality, since its order follows the collation), as a WHERE clause whose
/// literals PostgreSQL types as the columns are.
pub(super) fn pushed_filter(filter: &[crate::model::condition::Condition]) -> String {
    use crate::model::condition::Op;
    let parts: Vec<String> = filter
        .iter()
        .filter_map(|c| {
            let literal = match &c.value {
                Value::Int(i) => i.to_string(),
                Value::Text(t) if c.op == Op::Eq => text_literal(t),
                Value::Text(_) => return None,
                Value::Decimal(_) | Value::Date(_) | Value::Timestamp(_) | Value::TimestampTz(_) | Value::Bool(_) => {
                    text_literal(&c.value.text())
                }
                _ => return None,
            };
            Some(format!("{} {} {literal}", quote(&c.field), c.op.sql()))
        })
        .collect();
    if parts.is_empty() { String::new() } else { format!(" WHERE {}", parts.join(" AND ")) }
}

/// An escape-string literal, whatever `standard_conforming_strings` says.
fn text_literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in ["plain", "", "quote \" and \\ back", "tab\tnew\nline\r", "\u{1}\u{1f}", "é 漢 🎉", "\u{7f}"] {
            let mut out = String::new();
            json_string(s, &mut out);
            assert_eq!(serde_json::from_str::<String>(&out).ok().as_deref(), Some(s), "{out}");
        }
    }

    #[test]
    fn decimals_keep_their_digits_into_postgresql() {
        let r: Record = [
            ("d".to_string(), Value::Decimal("12345678901234567890.0123456789".into())),
            ("n".to_string(), Value::Decimal("NaN".into())),
            ("b".to_string(), Value::Bytes(vec![0, 255])),
            ("t".to_string(), Value::Text("a\"b".into())),
        ]
        .into_iter()
        .collect();
        let fields: Vec<String> = ["d", "n", "b", "t", "absent"].map(String::from).to_vec();
        let text = payload(&[&r], &fields.iter().collect::<Vec<_>>());
        assert_eq!(text, r#"[{"d":12345678901234567890.0123456789,"n":"NaN","b":"\\x00ff","t":"a\"b"}]"#);
        for (s, ok) in [("1", true), ("-0.5", true), ("1E+3", true), ("01", false), (".5", false), ("1.", false)] {
            assert_eq!(json_number(s), ok, "{s}");
        }
    }
}
