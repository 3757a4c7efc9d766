//! Processors that act on fields by their type or add one: `add_date_field_processor`
//! (a field with the time the record went through), `date_processor` (date and time fields
//! moved by hours), `field_mod_type_filter_processor` (fields of given types removed) and
//! `field_mod_type_processor` (fields converted to another type).
//!
//! A type is named as the source names it (`varchar(32)`, or `varchar` for every length), or
//! by TapData's type (`TapString`, `TapNumber`, `TapDateTime`, …): see
//! [`Field::has_type_name`]. Which fields have a type is decided from the source's schema when
//! the flow starts ([`Processor::schema`]); a field the schema did not have (a column added
//! later, a MongoDB field) is judged by its value's TapData type.

use super::{Processor, map_events};
use crate::error::{Error, Result};
use crate::model::convert;
use crate::model::{Event, Field, FieldType, Record, Schema, Value};
use chrono::{Duration, Utc};

/// `add_date_field_processor`: `field` set to the time each batch went through, in UTC.
pub struct AddDate {
    pub(super) field: String,
}

impl Processor for AddDate {
    fn schema(&mut self, mut schema: Schema) -> Schema {
        match schema.fields.iter_mut().find(|f| f.name == self.field) {
            Some(f) => {
                f.ty = FieldType::TimestampTz;
                f.data_type = String::new();
            }
            None => schema.fields.push(Field {
                name: self.field.clone(),
                ty: FieldType::TimestampTz,
                data_type: String::new(),
                primary_key: false,
                nullable: true,
            }),
        }
        schema
    }
    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>> {
        let now = Value::TimestampTz(Utc::now());
        Ok(map_events(events, |mut r| {
            r.insert(self.field.clone(), now.clone());
            r
        }))
    }
    fn rename(&self, field: &str) -> Option<String> {
        // A key field overwritten by the time would no longer find its row.
        (field != self.field).then(|| field.to_string())
    }
}

/// The fields of a schema that have one of `types`, and the names the schema has.
fn bind(schema: &Schema, types: &[String], also: impl Fn(&Field) -> bool) -> (Vec<String>, Vec<String>) {
    let matching = schema
        .fields
        .iter()
        .filter(|f| also(f) && types.iter().any(|t| f.has_type_name(t)))
        .map(|f| f.name.clone())
        .collect();
    (matching, schema.fields.iter().map(|f| f.name.clone()).collect())
}

/// Whether a field the schema did not have is of one of `types`, by its value's TapData type.
fn value_has_type(v: &Value, types: &[String]) -> bool {
    v.field_type().is_some_and(|ty| types.iter().any(|t| t.trim().eq_ignore_ascii_case(ty.tap_type())))
}

fn is_time(ty: FieldType) -> bool {
    matches!(ty, FieldType::Date | FieldType::Timestamp | FieldType::TimestampTz)
}

/// `date_processor`: date and time values of the named types moved by `hours`.
pub struct TimeAdjust {
    pub(super) hours: i64,
    pub(super) types: Vec<String>,
    /// The schema's time fields of those types, and every field the schema had.
    pub(super) bound: Option<(Vec<String>, Vec<String>)>,
}

impl TimeAdjust {
    fn every_time_field(&self) -> bool {
        self.types.iter().all(|t| t.trim().eq_ignore_ascii_case("now") || t.trim().is_empty())
    }
    fn applies(&self, field: &str, v: &Value) -> bool {
        if !v.field_type().is_some_and(is_time) {
            return false;
        }
        if self.every_time_field() {
            return true;
        }
        match &self.bound {
            Some((matching, known)) if known.iter().any(|k| k == field) => matching.iter().any(|m| m == field),
            _ => value_has_type(v, &self.types),
        }
    }
    fn shift(&self, v: &Value) -> Value {
        let d = Duration::hours(self.hours);
        match v {
            Value::Timestamp(t) => Value::Timestamp(*t + d),
            Value::TimestampTz(t) => Value::TimestampTz(*t + d),
            // A date has no time of day: it moves by whole days only.
            Value::Date(day) => Value::Date(*day + Duration::days(self.hours / 24)),
            other => other.clone(),
        }
    }
    fn apply(&self, mut r: Record) -> Record {
        for (k, v) in r.iter_mut() {
            if self.applies(k, v) {
                *v = self.shift(v);
            }
        }
        r
    }
}

impl Processor for TimeAdjust {
    fn schema(&mut self, schema: Schema) -> Schema {
        self.bound = Some(bind(&schema, &self.types, |f| is_time(f.ty)));
        schema
    }
    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>> {
        Ok(map_events(events, |r| self.apply(r)))
    }
    fn rename(&self, field: &str) -> Option<String> {
        // A key moved in time would no longer find the row it wrote.
        match &self.bound {
            Some((matching, _)) if matching.iter().any(|m| m == field) => None,
            _ => Some(field.to_string()),
        }
    }
}

/// `field_mod_type_filter_processor`: the fields of the named types removed.
pub struct TypeFilter {
    pub(super) types: Vec<String>,
    pub(super) bound: Option<(Vec<String>, Vec<String>)>,
}

impl TypeFilter {
    fn removes(&self, field: &str, v: &Value) -> bool {
        match &self.bound {
            Some((matching, known)) if known.iter().any(|k| k == field) => matching.iter().any(|m| m == field),
            _ => value_has_type(v, &self.types),
        }
    }
}

impl Processor for TypeFilter {
    fn schema(&mut self, mut schema: Schema) -> Schema {
        let (matching, known) = bind(&schema, &self.types, |_| true);
        schema.fields.retain(|f| !matching.contains(&f.name));
        self.bound = Some((matching, known));
        schema
    }
    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>> {
        Ok(map_events(events, |mut r| {
            r.retain(|k, v| !self.removes(k, v));
            r
        }))
    }
    fn rename(&self, field: &str) -> Option<String> {
        match &self.bound {
            Some((matching, _)) if matching.iter().any(|m| m == field) => None,
            _ => Some(field.to_string()),
        }
    }
}

/// `field_mod_type_processor`: each named field converted to its new type; a value that is
/// not one of the type (`"abc"` to an integer, `2.5` to an integer) stops the flow, naming it.
pub struct TypeAdjust {
    pub(super) name: String,
    pub(super) converts: Vec<(String, String, FieldType)>,
}

impl TypeAdjust {
    pub(super) fn new(name: &str, converts: Vec<(String, String)>) -> Result<Self> {
        let converts = converts
            .into_iter()
            .map(|(f, t)| {
                let ty = FieldType::of_name(&t).ok_or_else(|| {
                    Error::unsupported(format!("node {name:?}: {t:?} is not a type the engine knows"))
                })?;
                Ok((f, t, ty))
            })
            .collect::<Result<_>>()?;
        Ok(TypeAdjust { name: name.to_string(), converts })
    }
    fn apply(&self, mut r: Record) -> Result<Record> {
        for (field, shown, ty) in &self.converts {
            if let Some(v) = r.get_mut(field.as_str()) {
                *v = convert(v, *ty).ok_or_else(|| {
                    Error::rejected(format!(
                        "node {:?}: the value {} of field {field:?} cannot be converted to {shown}",
                        self.name,
                        v.to_json()
                    ))
                })?;
            }
        }
        Ok(r)
    }
}

impl Processor for TypeAdjust {
    fn schema(&mut self, mut schema: Schema) -> Schema {
        for f in &mut schema.fields {
            if let Some((_, shown, ty)) = self.converts.iter().find(|(n, _, _)| *n == f.name) {
                f.ty = *ty;
                f.data_type = shown.clone();
            }
        }
        schema
    }
    fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>> {
        let mut failed = None;
        let out = map_events(events, |r| match self.apply(r) {
            Ok(r) => r,
            Err(e) => {
                failed.get_or_insert(e);
                Record::new()
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Change;
    use serde_json::json;
    use std::sync::Arc;

    fn field(name: &str, ty: FieldType, data_type: &str) -> Field {
        Field { name: name.into(), ty, data_type: data_type.into(), primary_key: false, nullable: true }
    }
    fn schema() -> Schema {
        Schema {
            table: "t".into(),
            fields: vec![
                field("id", FieldType::Integer, "int"),
                field("note", FieldType::Text, "varchar(40)"),
                field("body", FieldType::Text, "text"),
                field("at", FieldType::Timestamp, "datetime"),
                field("day", FieldType::Date, "date"),
            ],
        }
    }
    fn insert(r: Record) -> Event {
        Event { table: Arc::from("t"), change: Change::Insert { after: r }, ts_ms: 0 }
    }
    fn row() -> Record {
        let mut r = Record::new();
        r.insert("id".into(), Value::Int(1));
        r.insert("note".into(), Value::Null);
        r.insert("body".into(), Value::Text("b".into()));
        r.insert("at".into(), Value::parse_time("2024-01-01 23:30:00", FieldType::Timestamp).expect("ts"));
        r.insert("day".into(), Value::parse_time("2024-01-01", FieldType::Date).expect("date"));
        r.insert("extra".into(), Value::Text("x".into()));
        r
    }
    fn after(mut out: Vec<Event>) -> Record {
        match out.remove(0).change {
            Change::Insert { after } => after,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_type_filter_removes_the_fields_of_a_type_even_when_they_are_null() {
        let mut p = TypeFilter { types: vec!["varchar".into(), "TapDate".into()], bound: None };
        let s = p.schema(schema());
        let names: Vec<&str> = s.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["id", "body", "at"]);
        let out = after(p.process(vec![insert(row())]).expect("run"));
        assert_eq!(out.keys().cloned().collect::<Vec<_>>(), ["id", "body", "at", "extra"]);
        assert_eq!(p.rename("note"), None);
        // `varchar(10)` names that length only.
        let mut p = TypeFilter { types: vec!["varchar(10)".into()], bound: None };
        p.schema(schema());
        let out = after(p.process(vec![insert(row())]).expect("run"));
        assert_eq!(out.keys().cloned().collect::<Vec<_>>(), ["id", "note", "body", "at", "day", "extra"]);
        // A TapData type names every field of it; one the schema lacked goes by its value.
        let mut p = TypeFilter { types: vec!["TapString".into()], bound: None };
        p.schema(schema());
        let out = after(p.process(vec![insert(row())]).expect("run"));
        assert_eq!(out.keys().cloned().collect::<Vec<_>>(), ["id", "at", "day"]);
    }

    #[test]
    fn time_adjust_moves_the_named_types_or_every_time_field() {
        let mut p = TimeAdjust { hours: 2, types: vec!["datetime".into()], bound: None };
        p.schema(schema());
        let out = after(p.process(vec![insert(row())]).expect("run"));
        assert_eq!(out["at"].to_string(), "2024-01-02 01:30:00");
        assert_eq!(out["day"].to_string(), "2024-01-01");
        let mut p = TimeAdjust { hours: -24, types: vec!["now".into()], bound: None };
        p.schema(schema());
        let out = after(p.process(vec![insert(row())]).expect("run"));
        assert_eq!(
            (out["at"].to_string(), out["day"].to_string()),
            ("2023-12-31 23:30:00".into(), "2023-12-31".into())
        );
    }

    #[test]
    fn type_adjust_converts_values_and_the_schema_and_names_a_value_it_cannot() {
        let mut p = TypeAdjust::new("T", vec![("body".into(), "int".into()), ("id".into(), "varchar(8)".into())])
            .expect("known types");
        let s = p.schema(schema());
        assert_eq!((s.fields[0].ty, s.fields[0].data_type.as_str()), (FieldType::Text, "varchar(8)"));
        let mut r = row();
        r.insert("body".into(), Value::Text(" 42 ".into()));
        let out = after(p.process(vec![insert(r)]).expect("run"));
        assert_eq!((out["id"].clone(), out["body"].clone()), (Value::Text("1".into()), Value::Int(42)));
        let err = p.process(vec![insert(row())]).expect_err("b is no integer");
        assert!(err.message.contains("\"b\"") && err.message.contains("\"body\"") && err.message.contains("int"));
        assert_eq!(convert(&Value::Float(2.5), FieldType::Integer), None);
        assert_eq!(convert(&Value::Decimal("12.00".into()), FieldType::Integer), Some(Value::Int(12)));
        assert_eq!(
            convert(&Value::Text("2024-05-06".into()), FieldType::Date).map(|v| v.to_string()),
            Some("2024-05-06".into())
        );
        assert_eq!(Value::from_json(json!(1)), Value::Int(1));
    }

    #[test]
    fn an_added_time_field_is_a_zoned_timestamp_in_every_image() {
        let mut p = AddDate { field: "synced_at".into() };
        let s = p.schema(schema());
        assert_eq!(s.fields.last().map(|f| (f.name.as_str(), f.ty)), Some(("synced_at", FieldType::TimestampTz)));
        let out = after(p.process(vec![insert(row())]).expect("run"));
        assert!(matches!(out["synced_at"], Value::TimestampTz(_)));
    }
}
