//! Connection configs, declared once. Each connector lists its keys ([`Key`]); the same list
//! checks a connection's config when it is saved (an unknown, misspelled, mistyped or missing
//! key is refused by name), fills the defaults, is served as TapData's `DatabaseTypes` and
//! printed by `help CONNECTOR`, and is the only way a connector reads its config
//! ([`Settings`]), so a key cannot be read without being declared, nor declared without being
//! checked.

use super::ConnectorInfo;
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;

/// What a key's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text; a number given is taken as its digits.
    Text,
    /// A TCP port, 1 to 65535, as a number or its digits.
    Port,
}

impl Kind {
    /// The JSON-schema type `DatabaseTypes` shows.
    pub fn schema_type(self) -> &'static str {
        match self {
            Kind::Text => "string",
            Kind::Port => "number",
        }
    }
}

/// One config key of a connector.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    /// A connection without it is refused.
    pub required: bool,
    /// The value when the key is absent or empty.
    pub default: Option<&'static str>,
    /// Another name the key is accepted under (the official client's `username`).
    pub alias: Option<&'static str>,
    /// The only values the engine does what they say, and what to do otherwise.
    pub only: Option<(&'static [&'static str], &'static str)>,
    pub about: &'static str,
}

impl Key {
    pub const fn text(name: &'static str, about: &'static str) -> Key {
        Key { name, kind: Kind::Text, required: false, default: None, alias: None, only: None, about }
    }
    pub const fn port(name: &'static str, default: &'static str, about: &'static str) -> Key {
        Key { name, kind: Kind::Port, required: false, default: Some(default), alias: None, only: None, about }
    }
    pub const fn required(mut self) -> Key {
        self.required = true;
        self
    }
    pub const fn or(mut self, default: &'static str) -> Key {
        self.default = Some(default);
        self
    }
    pub const fn alias(mut self, alias: &'static str) -> Key {
        self.alias = Some(alias);
        self
    }
    pub const fn only(mut self, values: &'static [&'static str], otherwise: &'static str) -> Key {
        self.only = Some((values, otherwise));
        self
    }
}

/// Connection config keys the official client sends for every connector
/// (`lib/params/datasource.py`), each accepted where it says what the engine does anyway:
/// (key, whether the engine does what a value says, the values it accepts).
type GenericKey = (&'static str, fn(&Value) -> bool, &'static str);

const GENERIC_KEYS: &[GenericKey] = &[
    ("__connectionType", |_| true, ""),
    ("isUri", |v| v.is_boolean(), "true or false"),
    ("ssl", |v| v == &Value::Bool(false), "false (the embedded engine connects without TLS)"),
    ("additionalString", |v| v.as_str() == Some(""), "empty (extra driver parameters are not passed on)"),
    ("addtionalString", |v| v.as_str() == Some(""), "empty (extra driver parameters are not passed on)"),
    ("timezone", |v| matches!(v.as_str(), Some("" | "+00:00" | "Z" | "UTC")), "empty or +00:00 (sessions run in UTC)"),
];

/// A connection's config as its connector reads it: the declared keys only, each checked,
/// aliases resolved, defaults filled. No `Debug`: it holds secrets.
#[derive(Clone)]
pub struct Settings {
    connector: &'static ConnectorInfo,
    values: BTreeMap<&'static str, String>,
}

impl Settings {
    /// Check `config` against the connector's declaration (see the module doc).
    pub fn parse(info: &'static ConnectorInfo, config: &Value) -> Result<Settings> {
        let name = info.name;
        let empty = serde_json::Map::new();
        let obj = match config {
            Value::Object(o) => o,
            Value::Null => &empty,
            other => return Err(Error::config(format!("the {name} config is {other}, it must be an object"))),
        };
        let mut values = BTreeMap::new();
        let mut canonical = std::collections::HashSet::new();
        for (key, value) in obj {
            if value.is_null() {
                continue;
            }
            if let Some(k) = info.config.iter().find(|k| k.name == key || k.alias == Some(key.as_str())) {
                // A secret's value is never shown, not even a wrong one.
                let shown = if info.secrets.contains(&k.name) || k.name == "uri" {
                    "a value".to_string()
                } else {
                    value.to_string()
                };
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => {
                        return Err(Error::config(format!(
                            "{name} config key {key} is {shown}; it takes {}",
                            if k.kind == Kind::Port { "a port number" } else { "text" }
                        )));
                    }
                };
                if text.is_empty() {
                    continue;
                }
                if k.kind == Kind::Port && text.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
                    return Err(Error::config(format!(
                        "{name} config key {key} is {value}; it takes a port from 1 to 65535"
                    )));
                }
                if let Some((allowed, otherwise)) = k.only
                    && !allowed.contains(&text.as_str())
                {
                    return Err(Error::config(format!("{name} config key {key} is {shown}: {otherwise}")));
                }
                // The key's own name wins over its alias, whatever their order in the config.
                if key == k.name {
                    canonical.insert(k.name);
                } else if canonical.contains(k.name) {
                    continue;
                }
                values.insert(k.name, text);
                continue;
            }
            if let Some((_, accepts, accepted)) = GENERIC_KEYS.iter().find(|(k, ..)| k == key) {
                if accepts(value) {
                    continue;
                }
                // Extra driver parameters may hold a password: their text is not shown.
                let shown = if value.is_string() { "a value".to_string() } else { value.to_string() };
                return Err(Error::config(format!(
                    "{name} config key {key} is {shown}, which the embedded engine does not do (it accepts {accepted}): remove it"
                )));
            }
            let known: Vec<&str> = info.config.iter().map(|k| k.name).collect();
            return Err(Error::config(format!(
                "{name} has no config key {key:?} (it has {}): check its spelling, `help {}` lists them",
                known.join(", "),
                name.to_ascii_lowercase()
            )));
        }
        for k in info.config {
            if !values.contains_key(k.name) {
                match k.default {
                    Some(d) => {
                        values.insert(k.name, d.to_string());
                    }
                    None if k.required => {
                        return Err(Error::config(format!(
                            "the {name} connection needs {:?}: {} (`help {}` lists the keys)",
                            k.name,
                            k.about,
                            name.to_ascii_lowercase()
                        )));
                    }
                    None => {}
                }
            }
        }
        Ok(Settings { connector: info, values })
    }

    /// A declared key's value (given or default), `None` when it has neither.
    pub fn get(&self, key: &str) -> Option<&str> {
        debug_assert!(
            self.connector.config.iter().any(|k| k.name == key),
            "{} reads config key {key}, which it does not declare",
            self.connector.name
        );
        self.values.get(key).map(String::as_str)
    }

    /// A declared key that has a value: a required key, or one with a default.
    pub fn value(&self, key: &str) -> &str {
        self.get(key).unwrap_or_default()
    }

    /// A declared port key's value (checked when parsed).
    pub fn port(&self, key: &str) -> u16 {
        self.get(key).and_then(|p| p.parse().ok()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::{CONNECTORS, find};
    use serde_json::json;

    fn info(name: &str) -> &'static ConnectorInfo {
        find(name).expect("connector")
    }

    #[test]
    fn configs_are_checked_against_the_declaration_and_defaults_filled() {
        let pg = info("postgres");
        let s = Settings::parse(pg, &json!({"database": "d", "username": "u", "port": "5433", "ssl": false}))
            .expect("valid");
        assert_eq!(
            (s.value("host"), s.port("port"), s.value("schema"), s.value("user")),
            ("127.0.0.1", 5433, "public", "u")
        );
        assert_eq!(s.get("password"), None);
        let refused = |config: Value| match Settings::parse(pg, &config) {
            Ok(_) => panic!("{config} was accepted"),
            Err(e) => e.message,
        };
        assert!(refused(json!({"database": "d", "user": "u", "prot": 1})).contains("no config key \"prot\""));
        assert!(refused(json!({"database": "d", "user": "u", "port": 70000})).contains("port from 1 to 65535"));
        assert!(refused(json!({"database": "d", "user": "u", "port": true})).contains("port number"));
        assert!(refused(json!({"user": "u"})).contains("needs \"database\""));
        assert!(refused(json!({"database": "d", "user": "u", "logPluginName": "wal2json"})).contains("pgoutput"));
        assert!(refused(json!({"database": "d", "user": "u", "ssl": true})).contains("without TLS"));
        assert!(refused(json!("notanobject")).contains("must be an object"));
        let extra = refused(json!({"database": "d", "user": "u", "addtionalString": "password=hunter2"}));
        assert!(!extra.contains("hunter2"), "{extra}");
        // The key's own name wins over its alias, in either order.
        for config in [
            json!({"database": "d", "user": "a", "username": "b"}),
            json!({"database": "d", "username": "b", "user": "a"}),
        ] {
            assert_eq!(Settings::parse(pg, &config).map(|s| s.value("user").to_string()).ok().as_deref(), Some("a"));
        }
    }

    #[test]
    fn every_declaration_is_well_formed() {
        for c in CONNECTORS {
            for k in c.config {
                assert!(!(k.required && k.default.is_some()), "{}.{}: required keys have no default", c.name, k.name);
                assert!(!k.about.is_empty(), "{}.{} says what it is", c.name, k.name);
                assert_eq!(c.config.iter().filter(|o| o.name == k.name).count(), 1, "{}.{} once", c.name, k.name);
            }
            for s in c.secrets {
                assert!(c.config.iter().any(|k| k.name == *s), "{}: secret {s} is a declared key", c.name);
            }
        }
    }
}
