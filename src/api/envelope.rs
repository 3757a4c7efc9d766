//! TapData's response envelope, `{"reqId", "ts", "code", "data" | "message"}`, shared by the
//! engine (which writes it) and the client (which reads it).
//!
//! `code` is TapData's (`ok`, `NotLogin`, `Task.RepeatName`, …). The embedded engine adds
//! `kind`, the error's [`ErrorKind`] as a word, so the client keeps the kind the engine meant
//! (a feature the engine does not offer is `unsupported`, not a text to search); a TapData
//! cluster sends no `kind`, and its errors are `remote`.

use crate::error::{Error, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A page of a list answer (`data` of `GET /Connections`, `/Task`, `/MetadataInstances`,
/// `POST /MonitoringLogs/query`): the count of all matches and this page's items.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Page<T> {
    /// Read leniently: a server may send it as null or a float.
    #[serde(default, deserialize_with = "lenient_count")]
    pub total: u64,
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

fn lenient_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)).unwrap_or(0))
}

impl<T> Page<T> {
    pub fn new(total: usize, items: Vec<T>) -> Self {
        Page { total: total as u64, items }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    #[serde(rename = "reqId", default, skip_serializing_if = "String::is_empty")]
    pub req_id: String,
    #[serde(default)]
    pub ts: i64,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl Envelope {
    pub fn ok(data: Option<Value>) -> Self {
        Self::new("ok", data, None, None)
    }

    pub fn fail(code: &str, message: &str, kind: Option<ErrorKind>) -> Self {
        Self::new(code, None, Some(message.to_string()), kind)
    }

    fn new(code: &str, data: Option<Value>, message: Option<String>, kind: Option<ErrorKind>) -> Self {
        Envelope {
            req_id: uuid::Uuid::new_v4().to_string(),
            ts: crate::model::now_ms(),
            code: code.to_string(),
            data,
            message,
            kind: kind.map(|k| k.as_str().to_string()),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.code == "ok"
    }

    /// The error this envelope reports, with the kind the server named (`remote` when it named
    /// none, as a TapData cluster does).
    pub fn error(&self, context: &str) -> Error {
        let kind = self.kind.as_deref().and_then(ErrorKind::parse).unwrap_or(ErrorKind::Remote);
        let message = self.message.as_deref().unwrap_or("");
        let text = match (kind, context.is_empty()) {
            (ErrorKind::Remote, false) => format!("{}: {message} ({context})", self.code),
            (ErrorKind::Remote, true) => format!("{}: {message}", self.code),
            _ => message.to_string(),
        };
        Error::new(kind, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_travels_and_a_cluster_error_is_remote() {
        let e = Envelope::fail("Unsupported", "no sql here", Some(ErrorKind::Unsupported));
        let back: Envelope =
            serde_json::from_str(&serde_json::to_string(&e).unwrap_or_default()).unwrap_or(Envelope::ok(None));
        assert_eq!(back.error("").kind, ErrorKind::Unsupported);
        let cluster: Envelope =
            serde_json::from_str(r#"{"code": "Task.RepeatName", "message": "exists"}"#).unwrap_or(Envelope::ok(None));
        let err = cluster.error("/Task");
        assert_eq!(err.kind, ErrorKind::Remote);
        assert_eq!(err.message, "Task.RepeatName: exists (/Task)");
    }
}
