//! Plain data shared by the engine and its connectors: records, schemas, change events.
//! No I/O here.
//!
//! A [`Record`] is an ordered map of field names to typed [`Value`]s (`value.rs`): each
//! connector converts its driver's values once when it reads and once when it writes. The
//! [`Schema`] beside them says what the source's columns are, so a sink can create the right
//! column.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub mod condition;
mod convert;
mod time;
mod value;
pub use convert::convert;
pub use value::{Hasher, Plain, Record, Value, hex, is_decimal, unhex};

/// Column types every connector maps to and from (see README, "Types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Integer,
    Decimal,
    Float,
    Text,
    Bytes,
    Boolean,
    Date,
    Timestamp,
    TimestampTz,
    Json,
}

impl FieldType {
    /// The type names [`FieldType::of_name`] knows, for messages.
    pub const NAMES: &'static str = "varchar/char/text/string, int/bigint/smallint/integer/long, double/float/real, \
         decimal/numeric, boolean, date, datetime/timestamp, timestamptz, json/map/array, bytes/binary/blob/bytea";

    /// The model type of a database's or TapFlow's type name (`varchar(64)`, `BIGINT`,
    /// `Double`, `timestamp with time zone`), ignoring case and arguments; `None` if unknown.
    pub fn of_name(name: &str) -> Option<FieldType> {
        let t = name.trim().to_ascii_lowercase();
        let base = t.split('(').next().unwrap_or("").trim();
        let base = base.strip_suffix(" unsigned").unwrap_or(base).trim();
        Some(match base {
            "char" | "varchar" | "nchar" | "nvarchar" | "text" | "tinytext" | "mediumtext" | "longtext" | "string"
            | "character" | "character varying" | "uuid" | "tapstring" => FieldType::Text,
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "long" | "int2" | "int4" | "int8"
            | "int32" | "int64" => FieldType::Integer,
            "float" | "double" | "real" | "double precision" | "float4" | "float8" => FieldType::Float,
            "decimal" | "numeric" | "number" | "bigdecimal" | "decimal128" => FieldType::Decimal,
            "bool" | "boolean" | "tapboolean" => FieldType::Boolean,
            "date" | "tapdate" => FieldType::Date,
            "datetime" | "timestamp" | "timestamp without time zone" | "tapdatetime" => FieldType::Timestamp,
            "timestamptz" | "timestamp with time zone" => FieldType::TimestampTz,
            "json" | "jsonb" | "map" | "object" | "array" | "document" | "tapmap" | "taparray" => FieldType::Json,
            "bytes" | "binary" | "varbinary" | "blob" | "longblob" | "bytea" | "tapbinary" => FieldType::Bytes,
            _ => return None,
        })
    }

    /// TapData's `tapType` name for this type.
    pub fn tap_type(self) -> &'static str {
        match self {
            FieldType::Integer | FieldType::Decimal | FieldType::Float => "TapNumber",
            FieldType::Text => "TapString",
            FieldType::Bytes => "TapBinary",
            FieldType::Boolean => "TapBoolean",
            FieldType::Date => "TapDate",
            FieldType::Timestamp | FieldType::TimestampTz => "TapDateTime",
            FieldType::Json => "TapMap",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// The source's own type name (`varchar(32)`, `INTEGER`, …), shown by `desc`.
    pub data_type: String,
    #[serde(default)]
    pub primary_key: bool,
    #[serde(default = "yes")]
    pub nullable: bool,
}

impl Field {
    /// Whether the field is of the type `name` names: its own type name (`varchar(32)`, any
    /// case), that name without arguments (`varchar`), or its TapData type (`TapString`,
    /// `TapNumber`, `TapDateTime`, …).
    pub fn has_type_name(&self, name: &str) -> bool {
        let (name, own) = (name.trim(), self.data_type.trim());
        let own_base = own.split('(').next().unwrap_or("").trim();
        name.eq_ignore_ascii_case(own)
            || (!name.contains('(') && name.eq_ignore_ascii_case(own_base))
            || name.eq_ignore_ascii_case(self.ty.tap_type())
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Schema {
    pub table: String,
    pub fields: Vec<Field>,
}

impl Schema {
    pub fn primary_key(&self) -> Vec<String> {
        self.fields.iter().filter(|f| f.primary_key).map(|f| f.name.clone()).collect()
    }
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// One row change. Invalid states (an update without an after image) cannot be built.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Insert { after: Record },
    Update { before: Option<Record>, after: Record },
    Delete { before: Record },
}

impl Change {
    /// The image that identifies the row in the target: after for inserts/updates, before for deletes.
    pub fn key_image(&self) -> &Record {
        match self {
            Change::Insert { after } | Change::Update { after, .. } => after,
            Change::Delete { before } => before,
        }
    }
    pub fn op(&self) -> &'static str {
        match self {
            Change::Insert { .. } => "i",
            Change::Update { .. } => "u",
            Change::Delete { .. } => "d",
        }
    }
}

/// A change of one table, with the source's commit time (epoch ms, 0 for snapshot rows).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub table: Arc<str>,
    pub change: Change,
    pub ts_ms: i64,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A zoned timestamp (`YYYY-MM-DD HH:MM:SS[.f]` with `+HH:MM`, `+HH`, `+HHMM` or `Z`, a `T`
/// also accepted) as the same instant in UTC; `None` when the text is not one.
pub fn zoned_to_utc(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    // The shortest zoned form, `YYYY-MM-DD HH:MM:SSZ`, has 20 characters: naive timestamps
    // and dates skip the parsing.
    if s.trim().len() < 20 {
        return None;
    }
    let t = s.trim().replacen(' ', "T", 1);
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(&t) {
        return Some(dt.with_timezone(&chrono::Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%#z"] {
        if let Ok(dt) = chrono::DateTime::parse_from_str(&t, fmt) {
            return Some(dt.with_timezone(&chrono::Utc));
        }
    }
    None
}

/// A timestamp for a column without a zone: a zoned value becomes its UTC wall time (the
/// README's type tables: timestamptz into a MySQL DATETIME), others are kept as they are.
pub fn naive_text(s: &str) -> String {
    match zoned_to_utc(s) {
        Some(dt) => dt.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string(),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoned_timestamps_become_utc() {
        assert_eq!(naive_text("2024-01-02 03:04:05+02:00"), "2024-01-02 01:04:05");
        assert_eq!(naive_text("2024-01-02 03:04:05.5+00"), "2024-01-02 03:04:05.500");
        assert_eq!(naive_text("2024-01-02T03:04:05Z"), "2024-01-02 03:04:05");
        assert_eq!(naive_text("2024-01-02 03:04:05"), "2024-01-02 03:04:05");
        assert_eq!(naive_text("2024-01-02"), "2024-01-02");
    }
}
