//! A connection document as the client reads it.

use super::task::text;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A connection: the fields the client acts on, typed; every other field kept as it came.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    #[serde(default, deserialize_with = "text")]
    pub id: String,
    #[serde(default, deserialize_with = "text")]
    pub name: String,
    /// The connector's name (`Mysql`, `PostgreSQL`, …).
    #[serde(default, deserialize_with = "text")]
    pub database_type: String,
    /// `source`, `target` or `source_and_target`.
    #[serde(default, deserialize_with = "text")]
    pub connection_type: String,
    /// `testing`, `ready` or `invalid`.
    #[serde(default, deserialize_with = "text")]
    pub status: String,
    /// The schema load: `loading`, `finished`, `error`, `invalid`.
    #[serde(rename = "loadFieldsStatus", default, deserialize_with = "text", skip_serializing_if = "String::is_empty")]
    pub load_fields_status: String,
    #[serde(rename = "loadFieldErrMsg", default, deserialize_with = "text", skip_serializing_if = "String::is_empty")]
    pub load_error: String,
    #[serde(default, deserialize_with = "object")]
    pub config: Map<String, Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Connection {
    /// Whether flows may read from it (every type but `target`).
    pub fn can_read(&self) -> bool {
        self.connection_type != "target"
    }

    /// Whether flows may write to it (every type but `source`).
    pub fn can_write(&self) -> bool {
        self.connection_type != "source"
    }
}

/// An object a server may send as null or leave out.
fn object<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(o) => o,
        _ => Map::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_document_is_typed_and_keeps_the_rest() {
        let doc = serde_json::json!({"id": "c1", "name": "Demo", "database_type": "SQLite",
            "connection_type": "source", "status": "ready", "config": null, "pdkHash": "h", "loadFieldsStatus": "finished"});
        let c: Connection = serde_json::from_value(doc).expect("a connection");
        assert_eq!((c.name.as_str(), c.load_fields_status.as_str()), ("Demo", "finished"));
        assert!(c.can_read() && !c.can_write() && c.config.is_empty());
        assert_eq!(c.extra["pdkHash"], "h");
    }
}
