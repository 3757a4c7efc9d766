//! Secrets in connection configs, and how they are masked: the one place that decides.
//!
//! A value is secret when its key is one a connector declares secret ([`super::ConnectorInfo`]'s
//! `secrets`) or looks like one (password, passwd, secret, token, credential…), and inside any
//! other text: the password of a URI's userinfo, with or without a scheme
//! (`mongodb://u:p@h`, `u:p@h:1/db`), and secret `key=value` pairs of option strings
//! (`addtionalString: "useSSL=false&password=p"`). Masked values read `******`; a config sent
//! back with a masked value keeps the stored one ([`unmask`]), so a client that re-saves what
//! it read never overwrites a password with stars.

use crate::error::{Error, Result};
use serde_json::Value;

pub const MASK: &str = "******";

/// Whether a config key holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    const LIKE: &[&str] =
        &["password", "passwd", "pwd", "secret", "token", "credential", "access_code", "accesscode", "private_key"];
    k == "sk"
        || k == "pass"
        || LIKE.iter().any(|s| k.contains(s))
        || super::CONNECTORS.iter().any(|c| c.secrets.iter().any(|s| s.eq_ignore_ascii_case(&k)))
}

/// `text` with the password of every URI userinfo and every secret `key=value` masked.
pub fn mask_text(text: &str) -> String {
    mask_pairs(&mask_userinfo(text))
}

/// `user:password@host` → `user:******@host`, wherever it appears (a scheme or not).
fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let (head, tail) = rest.split_at(at);
        // The userinfo starts after the last delimiter before the '@'.
        let start = head
            .rfind(|c: char| c.is_whitespace() || matches!(c, '/' | ',' | '(' | '"' | '\'' | '=' | ';' | '&'))
            .map(|i| i + 1)
            .unwrap_or(0);
        let userinfo = &head[start..];
        match userinfo.split_once(':') {
            Some((user, pass)) if !pass.is_empty() && pass != MASK => {
                out.push_str(&head[..start]);
                out.push_str(user);
                out.push(':');
                out.push_str(MASK);
            }
            _ => out.push_str(head),
        }
        out.push('@');
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

/// `a=1&password=p;token=t` → `a=1&password=******;token=******`.
fn mask_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut key_start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '=' {
            let key = text[key_start..i].trim();
            let end = text[i + 1..].find(['&', ';', ' ', '\n']).map(|e| i + 1 + e).unwrap_or(text.len());
            out.push_str(&text[key_start..=i]);
            if is_secret_key(key) && end > i + 1 {
                out.push_str(MASK);
            } else {
                out.push_str(&text[i + 1..end]);
            }
            if end < text.len() {
                out.push_str(&text[end..end + 1]);
            }
            key_start = end + 1;
            while chars.peek().is_some_and(|(j, _)| *j < key_start) {
                chars.next();
            }
        }
    }
    if key_start < text.len() {
        out.push_str(&text[key_start..]);
    }
    out
}

/// Mask every secret of a document (objects and arrays, at any depth).
pub fn mask(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match x {
                    Value::Null => {}
                    Value::String(s) if is_secret_key(k) => {
                        if !s.is_empty() {
                            *s = MASK.to_string();
                        }
                    }
                    _ if is_secret_key(k) => *x = Value::String(MASK.to_string()),
                    Value::String(s) => *s = mask_text(s),
                    _ => mask(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask),
        Value::String(s) => *s = mask_text(s),
        _ => {}
    }
}

/// A config sent back (`new`) after reading a masked one: every value still masked takes the
/// stored one (`old`). A value that is masked but changed elsewhere (a URI with a new host and
/// the stars for its password) cannot be merged: an error names the key.
pub fn unmask(new: &mut Value, old: &Value) -> Result<()> {
    let (Some(n), Some(o)) = (new.as_object_mut(), old.as_object()) else { return Ok(()) };
    for (k, v) in n.iter_mut() {
        let Some(s) = v.as_str() else { continue };
        if !s.contains(MASK) {
            continue;
        }
        let stored = o.get(k);
        let stored_text = stored.and_then(Value::as_str).unwrap_or_default();
        if s == MASK || mask_text(stored_text) == s {
            *v = stored.cloned().unwrap_or(Value::Null);
        } else {
            return Err(Error::usage(format!(
                "config.{k} holds {MASK} (a masked secret) but differs from the stored value otherwise: \
                 give the whole value, secret included"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_by_key_in_uris_with_or_without_a_scheme_and_in_option_strings() {
        let mut v = json!({"config": {
            "password": "p", "passwd": "p2", "host": "h", "port": 5432, "apiToken": "t",
            "uri": "mongodb://u:secret@h:1/db", "dsn": "u:secret@h:3306/db",
            "addtionalString": "useSSL=false&password=p3;user=me", "empty": "", "nothing": null,
        }});
        mask(&mut v);
        assert_eq!(
            v,
            json!({"config": {
                "password": "******", "passwd": "******", "host": "h", "port": 5432, "apiToken": "******",
                "uri": "mongodb://u:******@h:1/db", "dsn": "u:******@h:3306/db",
                "addtionalString": "useSSL=false&password=******;user=me", "empty": "", "nothing": null,
            }})
        );
        // What is not a secret stays as it is.
        assert_eq!(mask_text("user@host and a=b"), "user@host and a=b");
    }

    #[test]
    fn masked_values_sent_back_keep_the_stored_ones() {
        let old = json!({"password": "p", "uri": "mongodb://u:secret@h/db", "host": "h"});
        let mut new = json!({"password": "******", "uri": "mongodb://u:******@h/db", "host": "h2"});
        unmask(&mut new, &old).expect("merge");
        assert_eq!(new, json!({"password": "p", "uri": "mongodb://u:secret@h/db", "host": "h2"}));
        let mut changed = json!({"uri": "mongodb://u:******@other/db"});
        let err = unmask(&mut changed, &old).expect_err("cannot merge");
        assert!(err.message.contains("config.uri"), "{}", err.message);
    }
}
