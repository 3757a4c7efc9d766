//! A source's filter: TapData's `conditions` (TapFlow's `read_from(…, #{ filter: "… and …" })`),
//! comparisons of a field with a value, all of which a row must pass.
//!
//! The engine decides what passes ([`Condition::passes`]): numbers as numbers, dates and
//! times as instants, text case-sensitively, a null or absent field never. A connector may
//! also push a condition down into its snapshot query, but only one its database compares the
//! same way or more loosely (numbers, times, text equality), so the database returns every row
//! the engine keeps; the engine filters the rows again either way.

use super::{FieldType, Record, Value, convert};
use std::cmp::Ordering;

/// A comparison, numbered as TapData numbers them (`1` is `>` … `5` is `=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
}

impl Op {
    /// TapData's operator number.
    pub fn of_tapdata(n: i64) -> Option<Op> {
        Some(match n {
            1 => Op::Gt,
            2 => Op::Ge,
            3 => Op::Lt,
            4 => Op::Le,
            5 => Op::Eq,
            _ => return None,
        })
    }
    pub fn tapdata(self) -> i64 {
        match self {
            Op::Gt => 1,
            Op::Ge => 2,
            Op::Lt => 3,
            Op::Le => 4,
            Op::Eq => 5,
        }
    }
    /// The operator as written: `>`, `>=`, `<`, `<=`, `=` (and `==`).
    pub fn of_text(s: &str) -> Option<Op> {
        Some(match s {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "=" | "==" => Op::Eq,
            _ => return None,
        })
    }
    pub fn sql(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "=",
        }
    }
    /// MongoDB's query operator.
    pub fn mongo(self) -> &'static str {
        match self {
            Op::Gt => "$gt",
            Op::Ge => "$gte",
            Op::Lt => "$lt",
            Op::Le => "$lte",
            Op::Eq => "$eq",
        }
    }
    fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Eq => o == Ordering::Equal,
        }
    }
}

/// `field op value`, the value typed as the field is.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: String,
    pub op: Op,
    pub value: Value,
}

impl Condition {
    /// A condition on `field` with the value as written (`10`, `'delivered'`, `2024-01-01`),
    /// typed by the field's type when the schema has it; an error says why the value is not
    /// one of that type.
    pub fn typed(field: &str, op: Op, written: &str, ty: Option<FieldType>) -> Result<Condition, String> {
        let text = unquote(written.trim());
        if field.contains('.') {
            return Err(format!(
                "the filter compares {field:?}, a nested field: a source filter compares top-level fields; use .filter(…) after read_from"
            ));
        }
        if ty == Some(FieldType::Json) {
            return Err(format!(
                "the filter compares {field:?}, a JSON field, which has no order to compare by: use .filter(…) after read_from"
            ));
        }
        let value = match ty {
            Some(ty) => convert(&Value::Text(text.to_string()), ty).ok_or_else(|| {
                format!("the filter compares {field:?} with {written}, which is not a value of its type ({ty:?})")
            })?,
            None => literal(text, written.trim() != text),
        };
        Ok(Condition { field: field.to_string(), op, value })
    }

    /// Whether a record passes; `None` when it lacks the field (a delete's key-only image).
    pub fn passes(&self, r: &Record) -> Option<bool> {
        let v = r.get(self.field.as_str())?;
        Some(compare(v, &self.value).is_some_and(|o| self.op.holds(o)))
    }
}

/// Whether a record passes every condition; `None` when it lacks a field one of them needs.
pub fn passes_all(conditions: &[Condition], r: &Record) -> Option<bool> {
    let mut all = true;
    for c in conditions {
        all &= c.passes(r)?;
    }
    Some(all)
}

fn unquote(s: &str) -> &str {
    for q in ['\'', '"'] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

/// A value written without a known type: a number when it reads as one and was not quoted.
fn literal(text: &str, quoted: bool) -> Value {
    if !quoted {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Int(i);
        }
        if let Ok(f) = text.parse::<f64>().map(Value::float)
            && !f.is_null()
        {
            return f;
        }
        if let Some(b) = match text {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        } {
            return Value::Bool(b);
        }
    }
    Value::Text(text.to_string())
}

/// How two values order, when they can be compared: numbers with numbers, text with text,
/// times with times (a date as its midnight, a naive time as UTC), booleans with booleans.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    use Value::*;
    match (a, b) {
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (Int(_) | Decimal(_), Int(_) | Decimal(_)) => match (exact(a), exact(b)) {
            (Some(x), Some(y)) => Some(cmp_exact(&x, &y)),
            _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
        },
        (Int(_) | Float(_) | Decimal(_), Int(_) | Float(_) | Decimal(_)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Text(x), Text(y)) => Some(x.cmp(y)),
        (Bool(x), Bool(y)) => Some(x.cmp(y)),
        (Date(_) | Timestamp(_) | TimestampTz(_), Date(_) | Timestamp(_) | TimestampTz(_)) => {
            Some(instant(a)?.cmp(&instant(b)?))
        }
        _ => None,
    }
}

/// An integer's or plain decimal's digits: (negative, whole part without leading zeros, fraction
/// without trailing zeros); `None` for an exponent form.
fn exact(v: &Value) -> Option<(bool, String, String)> {
    let s = match v {
        Value::Int(i) => i.to_string(),
        Value::Decimal(d) => d.trim().to_string(),
        _ => return None,
    };
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(&s)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty() || !whole.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole = whole.trim_start_matches('0').to_string();
    let frac = frac.trim_end_matches('0').to_string();
    let zero = whole.is_empty() && frac.is_empty();
    Some((neg && !zero, whole, frac))
}

fn cmp_exact(a: &(bool, String, String), b: &(bool, String, String)) -> Ordering {
    let magnitude = |x: &(bool, String, String), y: &(bool, String, String)| {
        x.1.len().cmp(&y.1.len()).then_with(|| x.1.cmp(&y.1)).then_with(|| x.2.cmp(&y.2))
    };
    match (a.0, b.0) {
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (false, false) => magnitude(a, b),
        (true, true) => magnitude(b, a),
    }
}

fn instant(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    match v {
        Value::Date(d) => Some(d.and_hms_opt(0, 0, 0)?.and_utc()),
        Value::Timestamp(t) => Some(t.and_utc()),
        Value::TimestampTz(t) => Some(*t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pairs: &[(&str, Value)]) -> Record {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn conditions_compare_typed_values_and_say_when_a_field_is_absent() {
        let price = Condition::typed("price", Op::Gt, "10", Some(FieldType::Decimal)).expect("typed");
        assert_eq!(price.value, Value::Decimal("10".into()));
        assert_eq!(price.passes(&rec(&[("price", Value::Decimal("10.50".into()))])), Some(true));
        assert_eq!(price.passes(&rec(&[("price", Value::Int(9))])), Some(false));
        assert_eq!(price.passes(&rec(&[("price", Value::Null)])), Some(false));
        assert_eq!(price.passes(&rec(&[("id", Value::Int(1))])), None);
        let status = Condition::typed("s", Op::Eq, "'delivered'", Some(FieldType::Text)).expect("typed");
        assert_eq!(status.value, Value::Text("delivered".into()));
        assert_eq!(status.passes(&rec(&[("s", Value::Text("Delivered".into()))])), Some(false));
        let day = Condition::typed("d", Op::Ge, "'2024-01-01'", Some(FieldType::Timestamp)).expect("typed");
        let at = Value::parse_time("2024-01-01 00:00:01", FieldType::Timestamp).expect("ts");
        assert_eq!(day.passes(&rec(&[("d", at)])), Some(true));
        let err = Condition::typed("n", Op::Gt, "'abc'", Some(FieldType::Integer)).expect_err("not a number");
        assert!(err.contains("\"n\"") && err.contains("'abc'"), "{err}");
        assert_eq!(Condition::typed("x", Op::Eq, "7", None).expect("literal").value, Value::Int(7));
        // Decimals compare by their digits, as the databases do.
        let d = |s: &str| Value::Decimal(s.into());
        assert_eq!(compare(&d("0.29999999999999999"), &d("0.3")), Some(Ordering::Less));
        assert_eq!(compare(&d("-1.50"), &Value::Int(-1)), Some(Ordering::Less));
        assert_eq!(compare(&d("010.0"), &Value::Int(10)), Some(Ordering::Equal));
        assert_eq!(compare(&d("-0.0"), &Value::Int(0)), Some(Ordering::Equal));
        assert!(Condition::typed("a.b", Op::Eq, "1", None).is_err());
        assert!(Condition::typed("j", Op::Eq, "1", Some(FieldType::Json)).is_err());
        assert_eq!(Condition::typed("x", Op::Eq, "'7'", None).expect("literal").value, Value::Text("7".into()));
    }
}
