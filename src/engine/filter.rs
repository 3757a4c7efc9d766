//! TapData's LoopBack-style `filter` query parameter, applied to JSON documents in memory:
//! `where` (a Mongo-like query with the LoopBack aliases `like`, `options`, `in`, `inq`, `neq`),
//! `order`, `skip`, `limit` and `fields`.
//!
//! Supported operators: equality, `$ne`, `$in`, `$nin`, `$regex` (+ `$options: "i"`), `$gt`,
//! `$gte`, `$lt`, `$lte`, `$exists`, `$or`, `$and`. Dotted paths reach into nested objects
//! (`source.id`). Unknown operators match nothing, so a typo never returns everything.

use serde_json::{Map, Value};
use std::cmp::Ordering;

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub where_: Option<Value>,
    pub order: Vec<(String, bool)>,
    pub skip: usize,
    pub limit: Option<usize>,
    pub fields: Option<Map<String, Value>>,
}

impl Filter {
    /// Parse the `filter` query parameter (absent or empty → no filter).
    pub fn parse(text: Option<&str>) -> Result<Self, String> {
        let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
            return Ok(Self::default());
        };
        let v: Value = serde_json::from_str(text).map_err(|e| format!("filter is not valid JSON: {e}"))?;
        let mut f = Filter { where_: v.get("where").cloned(), ..Default::default() };
        match v.get("order") {
            Some(Value::String(s)) => f.order = parse_order(s),
            Some(Value::Array(a)) => f.order = a.iter().filter_map(Value::as_str).flat_map(parse_order).collect(),
            _ => {}
        }
        f.skip = v.get("skip").and_then(Value::as_u64).unwrap_or(0) as usize;
        f.limit = v.get("limit").and_then(Value::as_u64).map(|l| l as usize);
        f.fields = v.get("fields").and_then(Value::as_object).cloned();
        Ok(f)
    }

    pub fn matches(&self, doc: &Value) -> bool {
        self.where_.as_ref().is_none_or(|w| matches_query(doc, w))
    }

    /// Filter, order, page and project `docs`. Returns (total matching, page).
    pub fn apply(&self, docs: Vec<Value>, default_limit: usize) -> (usize, Vec<Value>) {
        let mut hits: Vec<Value> = docs.into_iter().filter(|d| self.matches(d)).collect();
        let total = hits.len();
        if !self.order.is_empty() {
            hits.sort_by(|a, b| {
                for (field, asc) in &self.order {
                    let o = compare(lookup(a, field), lookup(b, field));
                    if o != Ordering::Equal {
                        return if *asc { o } else { o.reverse() };
                    }
                }
                Ordering::Equal
            });
        }
        let limit = self.limit.unwrap_or(default_limit);
        let page: Vec<Value> = hits.into_iter().skip(self.skip).take(limit).map(|d| self.project(d)).collect();
        (total, page)
    }

    fn project(&self, doc: Value) -> Value {
        let Some(fields) = &self.fields else { return doc };
        let include: Vec<&String> = fields.iter().filter(|(_, v)| is_true(v)).map(|(k, _)| k).collect();
        let Value::Object(mut map) = doc else { return doc };
        if include.is_empty() {
            for (k, v) in fields {
                if !is_true(v) {
                    map.remove(k);
                }
            }
            return Value::Object(map);
        }
        let mut out = Map::new();
        for k in include {
            if let Some(v) = map.remove(k.as_str()) {
                out.insert(k.clone(), v);
            }
        }
        if let Some(id) = map.remove("id") {
            out.entry("id").or_insert(id);
        }
        Value::Object(out)
    }
}

fn is_true(v: &Value) -> bool {
    matches!(v, Value::Bool(true)) || v.as_i64() == Some(1)
}

fn parse_order(s: &str) -> Vec<(String, bool)> {
    s.split(',')
        .filter_map(|part| {
            let mut it = part.split_whitespace();
            let field = it.next()?.to_string();
            let asc = !it.next().is_some_and(|d| d.eq_ignore_ascii_case("desc"));
            Some((field, asc))
        })
        .collect()
}

/// The value at a dotted path.
pub fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = doc;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

fn matches_query(doc: &Value, query: &Value) -> bool {
    let Some(q) = query.as_object() else { return true };
    q.iter().all(|(key, cond)| match key.as_str() {
        "$or" | "or" => cond.as_array().is_some_and(|a| a.iter().any(|c| matches_query(doc, c))),
        "$and" | "and" => cond.as_array().is_some_and(|a| a.iter().all(|c| matches_query(doc, c))),
        "user_id" => true, // scoped by the server, as TapData does
        _ => matches_condition(lookup(doc, key), cond),
    })
}

fn equal(a: Option<&Value>, b: &Value) -> bool {
    match (a, b) {
        (None, Value::Null) => true,
        (Some(Value::Number(x)), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Some(Value::Array(items)), v) if !v.is_array() => items.contains(v),
        (Some(x), y) => x == y,
        (None, _) => false,
    }
}

fn matches_condition(value: Option<&Value>, cond: &Value) -> bool {
    let Some(ops) = cond.as_object().filter(|o| o.keys().all(|k| is_operator(k))) else {
        return equal(value, cond);
    };
    if ops.is_empty() {
        return equal(value, cond);
    }
    let case_insensitive =
        ops.get("$options").or_else(|| ops.get("options")).and_then(Value::as_str).is_some_and(|o| o.contains('i'));
    ops.iter().all(|(op, arg)| match op.as_str() {
        "$ne" | "ne" | "neq" | "$neq" => !equal(value, arg),
        "$in" | "in" | "inq" | "$inq" => arg.as_array().is_some_and(|a| a.iter().any(|x| equal(value, x))),
        "$nin" | "nin" => arg.as_array().is_some_and(|a| !a.iter().any(|x| equal(value, x))),
        "$regex" | "like" | "$like" => {
            let (Some(Value::String(s)), Some(pattern)) = (value, arg.as_str()) else { return false };
            regex_like(s, pattern, case_insensitive)
        }
        "$options" | "options" => true,
        "$gt" | "gt" => value.is_some_and(|v| compare(Some(v), Some(arg)) == Ordering::Greater),
        "$gte" | "gte" => value.is_some_and(|v| compare(Some(v), Some(arg)) != Ordering::Less),
        "$lt" | "lt" => value.is_some_and(|v| compare(Some(v), Some(arg)) == Ordering::Less),
        "$lte" | "lte" => value.is_some_and(|v| compare(Some(v), Some(arg)) != Ordering::Greater),
        "$exists" => value.is_some() == is_true(arg),
        _ => false,
    })
}

fn is_operator(k: &str) -> bool {
    k.starts_with('$')
        || matches!(k, "like" | "options" | "in" | "inq" | "neq" | "ne" | "nin" | "gt" | "gte" | "lt" | "lte")
}

/// The regex subset clients send: literal text with `\` escapes, `^`, `$` and `.*`.
fn regex_like(s: &str, pattern: &str, ci: bool) -> bool {
    let (s, pattern) =
        if ci { (s.to_lowercase(), pattern.to_lowercase()) } else { (s.to_string(), pattern.to_string()) };
    let anchored_start = pattern.starts_with('^');
    let anchored_end = pattern.ends_with('$') && !pattern.ends_with("\\$");
    let mut body = pattern.as_str();
    if anchored_start {
        body = &body[1..];
    }
    if anchored_end {
        body = &body[..body.len() - 1];
    }
    // Split on `.*`, unescape each literal piece, and match the pieces in order.
    let pieces: Vec<String> = body.split(".*").map(unescape).collect();
    let mut pos = 0usize;
    for (i, piece) in pieces.iter().enumerate() {
        if i == 0 && anchored_start {
            if !s.starts_with(piece.as_str()) {
                return false;
            }
            pos = piece.len();
            continue;
        }
        match s[pos..].find(piece.as_str()) {
            Some(at) => pos += at + piece.len(),
            None => return false,
        }
    }
    if anchored_end {
        let last = pieces.last().map(String::as_str).unwrap_or("");
        return s.ends_with(last) && (pieces.len() > 1 || !anchored_start || s.len() == last.len());
    }
    true
}

fn unescape(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn where_operators_and_aliases() {
        let docs = vec![
            json!({"id": "1", "name": "orders_flow", "source": {"id": "c1"}, "createType": "User"}),
            json!({"id": "2", "name": "Other", "source": {"id": "c2"}, "createType": "System"}),
        ];
        let f = Filter::parse(Some(r#"{"where": {"createType": {"$ne": "System"}}, "limit": 10}"#)).expect("parse");
        assert_eq!(f.apply(docs.clone(), 20).1.len(), 1);
        let f = Filter::parse(Some(r#"{"where": {"source.id": "c2"}}"#)).expect("parse");
        assert_eq!(f.apply(docs.clone(), 20).1[0]["id"], "2");
        let f = Filter::parse(Some(r#"{"where": {"name": {"like": "FLOW", "options": "i"}}}"#)).expect("parse");
        assert_eq!(f.apply(docs.clone(), 20).1.len(), 1);
        let f = Filter::parse(Some(r#"{"where": {"name": {"like": "orders\\_flow"}}}"#)).expect("parse");
        assert_eq!(f.apply(docs.clone(), 20).0, 1);
        let f = Filter::parse(Some(
            r#"{"where": {"id": {"in": ["1", "2"]}}, "order": "name DESC", "fields": {"name": true}}"#,
        ))
        .expect("parse");
        let (total, page) = f.apply(docs.clone(), 20);
        assert_eq!(total, 2);
        assert_eq!(page[0], json!({"name": "orders_flow", "id": "1"}));
        let f = Filter::parse(Some(r#"{"where": {"name": {"$bogus": 1}}}"#)).expect("parse");
        assert_eq!(f.apply(docs, 20).0, 0, "unknown operators match nothing");
    }
}
