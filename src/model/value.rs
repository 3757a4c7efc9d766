//! Typed values: what one field of a record holds on its way from a source to a sink.
//!
//! A connector converts its driver's values to [`Value`] once, when it reads, and back once,
//! when it writes; everything between (processors, lookups, the batch planner) sees the type,
//! not a string that might be a date. Text forms, used where a value must be text (a SQL
//! parameter of a text column, a key, JSON for a user function): dates `YYYY-MM-DD`,
//! timestamps `YYYY-MM-DD HH:MM:SS[.fff]`, zoned timestamps the same in UTC with `+00:00`,
//! decimals their exact digits, bytes lowercase hex.
//!
//! Two JSON forms: [`Value::to_json`] is plain JSON for people and user functions (a decimal
//! becomes a number, a date its text); the serde form (`Serialize`/`Deserialize`, used to
//! keep records in the engine's own stores) is lossless, tagging the types JSON lacks as
//! `{"$decimal": "12.10"}`, `{"$bytes": "00ff"}`, `{"$date": …}`, `{"$timestamp": …}`,
//! `{"$timestamptz": …}`.

use super::FieldType;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// An exact decimal, as its digits (`-12.50`): no binary rounding on the way.
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
    /// An instant, kept in UTC.
    TimestampTz(DateTime<Utc>),
    /// A nested document (a MongoDB subdocument, a JSON column's object, a lookup's object).
    Object(Record),
    Array(Vec<Value>),
}

/// One row or document: field names in their order, each with its value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record(IndexMap<String, Value, Hasher>);

/// How a record hashes its field names: foldhash, seeded per process. SipHash (the standard
/// one) was 8% of a PostgreSQL snapshot's engine CPU, on names a few bytes long.
pub type Hasher = foldhash::fast::RandomState;

impl Record {
    pub fn new() -> Self {
        Record(IndexMap::default())
    }
    pub fn with_capacity(n: usize) -> Self {
        Record(IndexMap::with_capacity_and_hasher(n, Hasher::default()))
    }
    /// Remove a field, keeping the order of the others.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.0.shift_remove(name)
    }
    /// The record as plain JSON ([`Value::to_json`] for each field).
    pub fn to_json(&self) -> serde_json::Map<String, Json> {
        self.0.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()
    }
    /// A JSON object as a record, each value as [`Value::from_json`] reads it.
    pub fn from_json(map: serde_json::Map<String, Json>) -> Self {
        map.into_iter().map(|(k, v)| (k, Value::from_json(v))).collect()
    }
    /// A JSON value that must be an object; `None` otherwise.
    pub fn from_json_value(v: Json) -> Option<Self> {
        match v {
            Json::Object(m) => Some(Self::from_json(m)),
            _ => None,
        }
    }
}

impl std::ops::Deref for Record {
    type Target = IndexMap<String, Value, Hasher>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Record {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl FromIterator<(String, Value)> for Record {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Record(iter.into_iter().collect())
    }
}

impl IntoIterator for Record {
    type Item = (String, Value);
    type IntoIter = indexmap::map::IntoIter<String, Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Record {
    type Item = (&'a String, &'a Value);
    type IntoIter = indexmap::map::Iter<'a, String, Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IndexMap::<String, Value, Hasher>::deserialize(d).map(Record)
    }
}

const TAGS: [&str; 5] = ["$decimal", "$bytes", "$date", "$timestamp", "$timestamptz"];

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// A number's value as a float (a decimal's nearest).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Decimal(d) => d.parse().ok(),
            _ => None,
        }
    }
    pub fn as_object(&self) -> Option<&Record> {
        match self {
            Value::Object(r) => Some(r),
            _ => None,
        }
    }

    /// The model type this value has; `None` for null.
    pub fn field_type(&self) -> Option<FieldType> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(_) => FieldType::Boolean,
            Value::Int(_) => FieldType::Integer,
            Value::Float(_) => FieldType::Float,
            Value::Decimal(_) => FieldType::Decimal,
            Value::Text(_) => FieldType::Text,
            Value::Bytes(_) => FieldType::Bytes,
            Value::Date(_) => FieldType::Date,
            Value::Timestamp(_) => FieldType::Timestamp,
            Value::TimestampTz(_) => FieldType::TimestampTz,
            Value::Object(_) | Value::Array(_) => FieldType::Json,
        })
    }

    /// A float as a value; NaN and the infinities, which JSON and most targets cannot hold, as null.
    pub fn float(f: f64) -> Value {
        if f.is_finite() { Value::Float(f) } else { Value::Null }
    }

    /// The value's text form (module docs); a nested value as JSON text, null as `null`.
    pub fn text(&self) -> String {
        match self {
            Value::Text(s) | Value::Decimal(s) => s.clone(),
            // Written straight from the value: the same text as `to_json().to_string()`
            // without building the JSON tree first (a wide document's columns are large).
            Value::Object(_) | Value::Array(_) => serde_json::to_string(&Plain(self)).unwrap_or_default(),
            other => other.to_string(),
        }
    }

    /// Plain JSON: decimals as numbers (as JSON numbers are read: binary floats), dates,
    /// timestamps and bytes as their text forms.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map(Json::Number).unwrap_or(Json::Null),
            Value::Decimal(s) => match s.parse::<i64>() {
                Ok(i) => Json::from(i),
                Err(_) => s
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Json::Number)
                    .unwrap_or_else(|| Json::String(s.clone())),
            },
            Value::Text(s) => Json::String(s.clone()),
            Value::Object(r) => Json::Object(r.to_json()),
            Value::Array(a) => Json::Array(a.iter().map(Value::to_json).collect()),
            other => Json::String(other.to_string()),
        }
    }

    /// Plain JSON read without a type: integers as integers (beyond i64 as decimals), other
    /// numbers as floats, strings as text, objects and arrays nested.
    pub fn from_json(v: Json) -> Value {
        match v {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(b),
            Json::Number(n) => number(&n),
            Json::String(s) => Value::Text(s),
            Json::Array(a) => Value::Array(a.into_iter().map(Value::from_json).collect()),
            Json::Object(m) => Value::Object(Record::from_json(m)),
        }
    }

    /// Plain JSON read as a field of type `ty`: a date's text becomes a date, a decimal's
    /// number or text a decimal, hex a byte string, 0/1 a boolean. A value that is not of the
    /// type (free text in a SQLite DATE column) stays as JSON reads it.
    pub fn from_json_as(v: Json, ty: Option<FieldType>) -> Value {
        let Some(ty) = ty else { return Value::from_json(v) };
        match (ty, v) {
            (_, Json::Null) => Value::Null,
            (FieldType::Boolean, Json::Number(n)) if n.is_i64() => Value::Bool(n.as_i64() != Some(0)),
            (FieldType::Decimal, Json::Number(n)) => Value::Decimal(n.to_string()),
            (FieldType::Decimal, Json::String(s)) if is_decimal(&s) => Value::Decimal(s),
            (FieldType::Float, Json::Number(n)) => Value::float(n.as_f64().unwrap_or(f64::NAN)),
            (FieldType::Text, Json::Number(n)) => Value::Text(n.to_string()),
            (FieldType::Bytes, Json::String(s)) => match unhex(s.strip_prefix("\\x").unwrap_or(&s)) {
                Some(b) => Value::Bytes(b),
                None => Value::Text(s),
            },
            (FieldType::Date | FieldType::Timestamp | FieldType::TimestampTz, Json::String(s)) => {
                Value::parse_time(&s, ty).unwrap_or(Value::Text(s))
            }
            (FieldType::Json, Json::String(s)) => match serde_json::from_str::<Json>(&s) {
                Ok(parsed) => Value::from_json(parsed),
                Err(_) => Value::Text(s),
            },
            (_, other) => Value::from_json(other),
        }
    }

    /// This value read as a field of type `ty` (user input, a user function's output): text
    /// or a number that is a value of the type becomes it (`from_json_as`), others stay.
    pub fn as_type(&self, ty: Option<FieldType>) -> Value {
        match (self, ty) {
            (Value::Text(_) | Value::Int(_) | Value::Float(_), Some(t)) if self.field_type() != ty => {
                Value::from_json_as(self.to_json(), Some(t))
            }
            _ => self.clone(),
        }
    }

    /// A date or timestamp's text as a value of type `ty` (Date, Timestamp or TimestampTz):
    /// `T` or a space between date and time, an optional fraction, for zoned ones an offset
    /// (`+HH:MM`, `+HH`, `+HHMM`, `Z`; none means UTC). A zoned text read as a naive timestamp
    /// is its UTC wall time; a date read as a timestamp is its midnight.
    pub fn parse_time(s: &str, ty: FieldType) -> Option<Value> {
        let s = s.trim();
        // The common forms, read without chrono's format parsing (a text that is all of one
        // carries no offset, so it is never a zoned one).
        match ty {
            FieldType::Date => {
                if let Some(d) = super::time::fast_date(s.as_bytes()) {
                    return Some(Value::Date(d));
                }
            }
            FieldType::Timestamp | FieldType::TimestampTz => {
                if let Some(t) = super::time::fast_timestamp(s.as_bytes()) {
                    return Some(match ty {
                        FieldType::Timestamp => Value::Timestamp(t),
                        _ => Value::TimestampTz(t.and_utc()),
                    });
                }
            }
            _ => {}
        }
        super::time::parse_time_general(s, ty)
    }
}

fn number(n: &serde_json::Number) -> Value {
    if let Some(i) = n.as_i64() {
        Value::Int(i)
    } else if n.is_u64() {
        Value::Decimal(n.to_string())
    } else {
        Value::float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Whether a text is a decimal number (`-12.50`, `1e3`), as a decimal value must be.
pub fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.parse::<f64>().is_ok_and(f64::is_finite) && !s.contains(['i', 'I', 'n', 'N'])
}

/// `%Y-%m-%d`, written directly (chrono's format strings are parsed anew on every call, which
/// was a tenth of a snapshot's CPU); years outside 0..=9999 as chrono writes them.
fn write_date(f: &mut fmt::Formatter<'_>, d: &NaiveDate) -> fmt::Result {
    use chrono::Datelike;
    if !(0..=9999).contains(&d.year()) {
        return write!(f, "{}", d.format("%Y-%m-%d"));
    }
    write!(f, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// `%Y-%m-%d %H:%M:%S%.f`, written directly: the fraction with 3, 6 or 9 digits as needed (none
/// when whole), as chrono's `%.f` writes it; a leap second as chrono writes it.
fn write_timestamp(f: &mut fmt::Formatter<'_>, t: &NaiveDateTime) -> fmt::Result {
    use chrono::Timelike;
    let nanos = t.nanosecond();
    if nanos >= 1_000_000_000 || !(0..=9999).contains(&chrono::Datelike::year(t)) {
        return write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.f"));
    }
    write_date(f, &t.date())?;
    write!(f, " {:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())?;
    match nanos {
        0 => Ok(()),
        n if n % 1_000_000 == 0 => write!(f, ".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => write!(f, ".{:06}", n / 1_000),
        n => write!(f, ".{n:09}"),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", Json::from(*x)),
            Value::Decimal(s) | Value::Text(s) => f.write_str(s),
            Value::Bytes(b) => f.write_str(&hex(b)),
            Value::Date(d) => write_date(f, d),
            Value::Timestamp(t) => write_timestamp(f, t),
            Value::TimestampTz(t) => {
                write_timestamp(f, &t.naive_utc())?;
                f.write_str("+00:00")
            }
            Value::Object(_) | Value::Array(_) => write!(f, "{}", self.to_json()),
        }
    }
}

/// A value equals plain JSON when its plain form ([`Value::to_json`]) does (for tests and
/// JSON inputs; compare with a `Value` to check the type).
impl PartialEq<Json> for Value {
    fn eq(&self, other: &Json) -> bool {
        self.to_json() == *other
    }
}

impl From<Json> for Value {
    fn from(v: Json) -> Self {
        Value::from_json(v)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let tagged = |s: S, tag: &str, text: String| {
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry(tag, &text)?;
            m.end()
        };
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Text(t) => s.serialize_str(t),
            Value::Decimal(d) => tagged(s, TAGS[0], d.clone()),
            Value::Bytes(_) => tagged(s, TAGS[1], self.to_string()),
            Value::Date(_) => tagged(s, TAGS[2], self.to_string()),
            Value::Timestamp(_) => tagged(s, TAGS[3], self.to_string()),
            Value::TimestampTz(_) => tagged(s, TAGS[4], self.to_string()),
            Value::Object(r) => r.serialize(s),
            Value::Array(a) => a.serialize(s),
        }
    }
}

/// A value or record serialised as plain JSON ([`Value::to_json`]'s form) without building
/// the JSON first: what user functions and API answers get.
pub struct Plain<'a, T: ?Sized>(pub &'a T);

impl Serialize for Plain<'_, Value> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Text(t) => s.serialize_str(t),
            Value::Object(r) => Plain(r).serialize(s),
            Value::Array(a) => s.collect_seq(a.iter().map(Plain)),
            other => other.to_json().serialize(s),
        }
    }
}

impl Serialize for Plain<'_, Record> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, Plain(v))))
    }
}

impl Record {
    /// A user function's answer (plain JSON) to this record: a field it left as it was keeps
    /// its typed value; a changed one is read as the type the field had where JSON cannot say
    /// it (decimal, bytes, date, timestamp), else as JSON says; new fields as JSON says.
    pub fn from_json_like(map: serde_json::Map<String, Json>, like: &Record) -> Record {
        map.into_iter()
            .map(|(k, v)| {
                let v = match like.get(&k) {
                    Some(old) => Value::from_json_like(v, old),
                    None => Value::from_json(v),
                };
                (k, v)
            })
            .collect()
    }
}

impl Value {
    /// See [`Record::from_json_like`].
    pub fn from_json_like(v: Json, like: &Value) -> Value {
        match (v, like) {
            (Json::Object(m), Value::Object(old)) => Value::Object(Record::from_json_like(m, old)),
            (v, _) if like.to_json() == v => like.clone(),
            (v, _) => match like.field_type() {
                Some(
                    t @ (FieldType::Decimal
                    | FieldType::Bytes
                    | FieldType::Date
                    | FieldType::Timestamp
                    | FieldType::TimestampTz),
                ) => Value::from_json_as(v, Some(t)),
                _ => Value::from_json(v),
            },
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Value::from_tagged(Json::deserialize(d)?))
    }
}

impl Value {
    /// The serde form back (module docs).
    pub fn from_tagged(v: Json) -> Value {
        match v {
            Json::Object(m) if m.len() == 1 => {
                let (k, inner) = m.iter().next().map(|(k, v)| (k.as_str(), v)).unwrap_or(("", &Json::Null));
                if let (Some(i), Json::String(text)) = (TAGS.iter().position(|t| *t == k), inner) {
                    let typed = match i {
                        0 => Some(Value::Decimal(text.clone())),
                        1 => unhex(text).map(Value::Bytes),
                        2 => Value::parse_time(text, FieldType::Date),
                        3 => Value::parse_time(text, FieldType::Timestamp),
                        _ => Value::parse_time(text, FieldType::TimestampTz),
                    };
                    if let Some(t) = typed {
                        return t;
                    }
                }
                Value::Object(m.into_iter().map(|(k, v)| (k, Value::from_tagged(v))).collect())
            }
            Json::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, Value::from_tagged(v))).collect()),
            Json::Array(a) => Value::Array(a.into_iter().map(Value::from_tagged).collect()),
            other => Value::from_json(other),
        }
    }
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Lowercase or uppercase hex back to bytes; `None` if it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_and_times_are_written_as_chrono_writes_them() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
        for d in [day(2024, 2, 29), day(1, 1, 1), day(0, 1, 1), day(9999, 12, 31), day(10000, 1, 1), day(-44, 3, 15)] {
            assert_eq!(Value::Date(d).to_string(), d.format("%Y-%m-%d").to_string());
            for nanos in [0, 500_000_000, 123_000_000, 123_456_000, 123_456_789, 7, 1_000_000_000, 1_500_000_000] {
                let Some(t) = d.and_hms_nano_opt(23, 59, 59, nanos) else { continue };
                assert_eq!(Value::Timestamp(t).to_string(), t.format("%Y-%m-%d %H:%M:%S%.f").to_string(), "{t:?}");
                let z = t.and_utc();
                assert_eq!(Value::TimestampTz(z).to_string(), z.format("%Y-%m-%d %H:%M:%S%.f+00:00").to_string());
            }
        }
    }

    fn every_type() -> Record {
        let ts = NaiveDateTime::parse_from_str("2024-01-02 03:04:05.5", "%Y-%m-%d %H:%M:%S%.f").unwrap_or_default();
        [
            ("n", Value::Null),
            ("b", Value::Bool(true)),
            ("i", Value::Int(-7)),
            ("f", Value::Float(1.0)),
            ("d", Value::Decimal("12.10".into())),
            ("t", Value::Text("{\"$date\": \"x\"}".into())),
            ("y", Value::Bytes(vec![0, 255, 16])),
            ("dt", Value::parse_time("2024-02-29", FieldType::Date).unwrap_or_default()),
            ("ts", Value::Timestamp(ts)),
            ("tz", Value::parse_time("2024-01-02 03:04:05+02:00", FieldType::TimestampTz).unwrap_or_default()),
            ("o", Value::Object([("x".to_string(), Value::Decimal("1".into()))].into_iter().collect())),
            ("a", Value::Array(vec![Value::Int(1), Value::Text("2".into())])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn the_stored_form_keeps_every_type() {
        let r = every_type();
        let text = serde_json::to_string(&r).unwrap_or_default();
        let back: Record = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, r, "{text}");
        assert!(text.contains(r#""d":{"$decimal":"12.10"}"#), "{text}");
        assert!(text.contains(r#""f":1.0"#), "a float stays a float: {text}");
    }

    #[test]
    fn plain_json_is_for_people() {
        let j = Json::Object(every_type().to_json());
        assert_eq!(j["d"], json!(12.1));
        assert_eq!(j["y"], json!("00ff10"));
        assert_eq!(j["dt"], json!("2024-02-29"));
        assert_eq!(j["ts"], json!("2024-01-02 03:04:05.500"));
        assert_eq!(j["tz"], json!("2024-01-02 01:04:05+00:00"));
        assert_eq!(j["o"], json!({"x": 1}));
    }

    #[test]
    fn json_read_as_a_type() {
        let as_ = |v: Json, ty| Value::from_json_as(v, Some(ty));
        assert_eq!(as_(json!(12.5), FieldType::Decimal), Value::Decimal("12.5".into()));
        assert_eq!(as_(json!("00ff"), FieldType::Bytes), Value::Bytes(vec![0, 255]));
        assert_eq!(as_(json!("\\x00ff"), FieldType::Bytes), Value::Bytes(vec![0, 255]));
        assert_eq!(as_(json!(1), FieldType::Boolean), Value::Bool(true));
        assert_eq!(as_(json!("not a date"), FieldType::Date), Value::Text("not a date".into()));
        assert_eq!(
            as_(json!("{\"a\":1}"), FieldType::Json),
            Value::Object(Record::from_json(serde_json::Map::from_iter([("a".to_string(), json!(1))])))
        );
        assert_eq!(as_(json!("2024-01-02T03:04:05Z"), FieldType::Timestamp).to_string(), "2024-01-02 03:04:05");
        assert_eq!(as_(json!("2024-01-02 03:04:05"), FieldType::TimestampTz).to_string(), "2024-01-02 03:04:05+00:00");
        assert_eq!(Value::from_json(json!(u64::MAX)), Value::Decimal(u64::MAX.to_string()));
    }

    #[test]
    fn a_user_function_keeps_the_types_it_leaves_alone() {
        let input = every_type();
        let plain = serde_json::to_value(Plain(&input)).unwrap_or_default();
        assert_eq!(plain, Json::Object(input.to_json()), "Plain writes what to_json builds");
        let Json::Object(mut out) = plain else { return };
        out.insert("ts".into(), json!("2025-05-05 05:05:05"));
        out.insert("t".into(), json!(5));
        out.insert("new".into(), json!("2025-05-05"));
        let back = Record::from_json_like(out, &input);
        assert_eq!(back["d"], Value::Decimal("12.10".into()), "unchanged: exact, not the float it showed");
        assert_eq!(back["y"], input["y"]);
        assert_eq!(back["tz"], input["tz"]);
        assert_eq!(back["o"], input["o"]);
        assert_eq!(back["ts"], Value::parse_time("2025-05-05 05:05:05", FieldType::Timestamp).unwrap_or_default());
        assert_eq!(back["t"], Value::Int(5), "a text field given a number is a number");
        assert_eq!(back["new"], Value::Text("2025-05-05".into()));
    }

    #[test]
    fn removing_a_field_keeps_the_order() {
        let mut r = every_type();
        r.remove("i");
        let keys: Vec<&str> = r.keys().map(String::as_str).collect();
        assert_eq!(keys[..3], ["n", "b", "f"]);
    }

    #[test]
    fn a_nested_value_is_written_as_its_plain_json() {
        let day = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap_or_default();
        let t = day.and_hms_nano_opt(1, 2, 3, 4_000_000).unwrap_or_default();
        let inner: Record = [
            ("n", Value::Null),
            ("b", Value::Bool(true)),
            ("i", Value::Int(-7)),
            ("f", Value::Float(1.5)),
            ("inf", Value::Float(f64::INFINITY)),
            ("d", Value::Decimal("12.30".into())),
            ("big", Value::Decimal("123456789012345678901234567890".into())),
            ("s", Value::Text("quote \" é \u{1}".into())),
            ("bytes", Value::Bytes(vec![0, 255])),
            ("day", Value::Date(day)),
            ("ts", Value::Timestamp(t)),
            ("tz", Value::TimestampTz(t.and_utc())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let v = Value::Array(vec![
            Value::Object(inner.clone()),
            Value::Array(vec![Value::Int(1)]),
            Value::Object(Record::new()),
        ]);
        assert_eq!(v.text(), v.to_json().to_string());
        assert_eq!(Value::Object(inner.clone()).text(), Value::Object(inner).to_json().to_string());
    }
}
