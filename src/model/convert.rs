//! One value converted to another type, as a type conversion (`type_adjust`) or a filter's
//! literal (`price > 10` against an integer column) needs it.

use super::{FieldType, Value};

/// `v` as a value of type `ty`; `None` when it is not one (null stays null).
pub fn convert(v: &Value, ty: FieldType) -> Option<Value> {
    if v.is_null() || v.field_type() == Some(ty) {
        return Some(v.clone());
    }
    let text = || match v {
        Value::Text(s) => Some(s.trim().to_string()),
        _ => None,
    };
    Some(match ty {
        FieldType::Text => Value::Text(v.text()),
        FieldType::Integer => match v {
            Value::Bool(b) => Value::Int(i64::from(*b)),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Value::Int(*f as i64),
            Value::Decimal(d) => Value::Int(integral(d)?),
            Value::Text(_) => Value::Int(integral(&text()?)?),
            _ => return None,
        },
        FieldType::Float => match v {
            Value::Bool(b) => Value::Float(f64::from(u8::from(*b))),
            Value::Text(_) => Value::float(text()?.parse::<f64>().ok().filter(|f| f.is_finite())?),
            _ => Value::float(v.as_f64()?),
        },
        FieldType::Decimal => match v {
            Value::Int(i) => Value::Decimal(i.to_string()),
            Value::Float(f) => Value::Decimal(serde_json::Number::from_f64(*f)?.to_string()),
            Value::Bool(b) => Value::Decimal(u8::from(*b).to_string()),
            Value::Text(_) => Value::Decimal(text().filter(|t| super::is_decimal(t))?),
            _ => return None,
        },
        FieldType::Boolean => match v {
            Value::Int(0) => Value::Bool(false),
            Value::Int(1) => Value::Bool(true),
            Value::Text(_) => match text()?.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "t" => Value::Bool(true),
                "false" | "0" | "no" | "f" => Value::Bool(false),
                _ => return None,
            },
            _ => return None,
        },
        FieldType::Date | FieldType::Timestamp | FieldType::TimestampTz => match v {
            Value::Date(d) => {
                let midnight = d.and_hms_opt(0, 0, 0)?;
                if ty == FieldType::Timestamp {
                    Value::Timestamp(midnight)
                } else {
                    Value::TimestampTz(midnight.and_utc())
                }
            }
            Value::Timestamp(t) => match ty {
                FieldType::Date => Value::Date(t.date()),
                _ => Value::TimestampTz(t.and_utc()),
            },
            Value::TimestampTz(t) => match ty {
                FieldType::Date => Value::Date(t.date_naive()),
                _ => Value::Timestamp(t.naive_utc()),
            },
            Value::Text(_) => Value::parse_time(&text()?, ty)?,
            _ => return None,
        },
        FieldType::Json => match v {
            Value::Text(s) => Value::from_json(serde_json::from_str(s).ok()?),
            _ => return None,
        },
        FieldType::Bytes => match v {
            Value::Text(s) => Value::Bytes(s.clone().into_bytes()),
            _ => return None,
        },
    })
}

/// A decimal's text as an integer when it has no fraction (`12`, `12.00`, `-3`).
fn integral(d: &str) -> Option<i64> {
    if let Ok(i) = d.parse::<i64>() {
        return Some(i);
    }
    let (whole, frac) = d.split_once('.')?;
    (frac.chars().all(|c| c == '0')).then(|| whole.parse::<i64>().ok()).flatten()
}
