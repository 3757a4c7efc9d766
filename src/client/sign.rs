//! TapData Cloud request signing (access key / secret key), exactly as the official client does
//! it (`reference/tapflow-client.md` §4.3), and Python-compatible JSON text: the signature covers
//! the body bytes, which the official client produces with `json.dumps` defaults.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;

/// `urllib.parse.quote_plus`: unreserved `A–Z a–z 0–9 _ . - ~` kept, space → `+`, the rest
/// `%XX` (uppercase) over UTF-8.
pub fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The string to sign: `METHOD:k=v&…:` over sorted, quote_plus-encoded pairs, with the
/// official client's replacements, then the body.
pub fn string_to_sign(method: &str, params: &[(String, String)], body: &str) -> String {
    let mut pairs: Vec<(String, String)> = params.iter().map(|(k, v)| (quote_plus(k), quote_plus(v))).collect();
    pairs.sort();
    let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let head = format!("{}:{}:", method.to_uppercase(), joined.join("&"))
        .replace('*', "%2A")
        .replace("%27", "%22")
        .replace('+', "%20")
        .replace("%7E", "~");
    head + body
}

/// `base64(HMAC-SHA1(sk, string_to_sign))`.
pub fn sign(sk: &str, string_to_sign: &str) -> String {
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(sk.as_bytes()).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// JSON text as Python's `json.dumps` writes it by default: `", "` and `": "` separators,
/// non-ASCII escaped as `\uXXXX`, keys in insertion order.
pub fn python_json(v: &Value) -> String {
    let mut out = String::new();
    write_py(v, &mut out);
    out
}

fn write_py(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_py_str(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_str(k, out);
                out.push_str(": ");
                write_py(x, out);
            }
            out.push('}');
        }
    }
}

fn write_py_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(filter: Option<&str>) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if let Some(f) = filter {
            p.push(("filter".to_string(), f.to_string()));
        }
        p.push(("ts".into(), "1700000000123".into()));
        p.push(("nonce".into(), "11111111-2222-3333-4444-555555555555".into()));
        p.push(("signVersion".into(), "1.0".into()));
        p.push(("accessKey".into(), "AK123".into()));
        p
    }

    #[test]
    fn reference_vector_get_with_filter() {
        let filter = python_json(&json!({"limit": 10, "where": {"createType": {"$ne": "System"}}}));
        assert_eq!(filter, r#"{"limit": 10, "where": {"createType": {"$ne": "System"}}}"#);
        let s = string_to_sign("GET", &params(Some(&filter)), "");
        assert_eq!(
            s,
            "GET:accessKey=AK123&filter=%7B%22limit%22%3A%2010%2C%20%22where%22%3A%20%7B%22createType%22%3A%20%7B%22%24ne%22%3A%20%22System%22%7D%7D%7D&nonce=11111111-2222-3333-4444-555555555555&signVersion=1.0&ts=1700000000123:"
        );
        assert_eq!(sign("SK456", &s), "vKl8eNvdjNRpH1ZzfppZ/vZmaas=");
    }

    #[test]
    fn reference_vector_post_with_unicode_body() {
        let body = python_json(&json!({"name": "测试 flow", "a": [1, 2]}));
        assert_eq!(body, r#"{"name": "\u6d4b\u8bd5 flow", "a": [1, 2]}"#);
        let s = string_to_sign("POST", &params(None), &body);
        assert_eq!(sign("SK456", &s), "ZTZzR2uUAfB6lCbQS+e78XEcyR0=");
    }

    #[test]
    fn reference_vector_get_agent() {
        let s = string_to_sign("GET", &params(None), "");
        assert_eq!(
            s,
            "GET:accessKey=AK123&nonce=11111111-2222-3333-4444-555555555555&signVersion=1.0&ts=1700000000123:"
        );
        assert_eq!(sign("SK456", &s), "yatg0/uEy9BsnoACtfNX2UOjEpA=");
    }
}
