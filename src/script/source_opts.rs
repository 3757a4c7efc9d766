//! `read_from`'s options, as TapFlow's `read_from(source, setting = {}, query = None,
//! filter = None, quiet = False)`: `read_from("C.t", #{ filter: "…" })`, `#{ query: "SELECT …" }`,
//! `#{ setting: #{ … } }`, `#{ quiet: true }`. A trailing map is read as these keyword arguments
//! when every key is one of them; otherwise it is the `setting` itself. Also the flow's sync
//! type (`full_sync`, `only_cdc`, `include_cdc`), which a query source makes snapshot-only,
//! `skip_error_event_by_limit(n)`, `config(#{ … })` (TapData's task settings) and
//! `enable_join_value_change()`.

use super::flow::{self, Flow};
use super::objects::TableSpec;
use crate::commands::session::Session;
use crate::error::{Error, Result};
use crate::model::condition::Op;
use rhai::{Dynamic, Engine, EvalAltResult, Map};
use serde_json::{Value, json};
use std::sync::Arc;

const PARAMS: [&str; 4] = ["setting", "query", "filter", "quiet"];

/// TapFlow's source filter, `field op value` parts joined by `and` (op one of `>`, `>=`, `<`,
/// `<=`, `=`, `==`), as TapData's `conditions`; anything else is refused with what to use.
pub fn conditions(filter: &str) -> Result<Vec<Value>> {
    let refuse = |why: &str| {
        Error::usage(format!(
            "read_from filter {filter:?}: {why}. A source filter is `field op value` parts joined by `and`, op one of \
             > >= < <= = (it is pushed down to the database); for anything else (or, !=, functions) add \
             .filter(\"…\") after read_from, which the engine applies to every row"
        ))
    };
    let mut out = Vec::new();
    for part in split_and(filter) {
        let part = part.trim();
        if part.is_empty() {
            return Err(refuse("a part between `and`s is empty"));
        }
        let Some((at, op_text)) = find_op(part) else { return Err(refuse(&format!("{part:?} has no comparison"))) };
        let (field, value) = (part[..at].trim(), part[at + op_text.len()..].trim());
        let ident = !field.is_empty()
            && field.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !field.starts_with(|c: char| c.is_ascii_digit());
        if !ident {
            return Err(refuse(&format!("{field:?} is not a field name")));
        }
        let quoted = value.len() >= 2
            && ((value.starts_with('\'') && value.ends_with('\'')) || (value.starts_with('"') && value.ends_with('"')));
        let bare_ok = !value.is_empty() && value.chars().all(|c| c.is_alphanumeric() || "-+.:_".contains(c));
        if !(quoted || bare_ok) || find_op(value).is_some() {
            return Err(refuse(&format!("{value:?} is not one value")));
        }
        let op = Op::of_text(op_text).ok_or_else(|| refuse(&format!("{op_text} is not a comparison it takes")))?;
        // Kept as written (quotes too, as the official client keeps them): the engine types it
        // by the field, and a quoted value stays text where the field's type is unknown.
        out.push(json!({"fastQuery": false, "form": "BEFORE", "key": field, "number": 1,
                        "operator": op.tapdata(), "value": value, "unit": "DAY"}));
    }
    Ok(out)
}

/// The parts of a filter between the word `and` (any case), outside quotes.
fn split_and(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quote: Option<char> = None;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None => {
                let word: String = chars[i..chars.len().min(i + 3)].iter().collect();
                let before = i == 0 || chars[i - 1].is_whitespace();
                let after = chars.get(i + 3).is_none_or(|c| c.is_whitespace());
                if word.eq_ignore_ascii_case("and") && before && after {
                    parts.push(String::new());
                    i += 3;
                    continue;
                }
            }
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
        i += 1;
    }
    parts
}

/// The first comparison outside quotes: its byte offset and text; `!=`, `<>` and a lone `!`
/// are reported as one so the caller refuses them.
fn find_op(s: &str) -> Option<(usize, &str)> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if "<>=!".contains(c) => {
                let two = s.get(i..i + 2).unwrap_or("");
                let op = if [">=", "<=", "==", "!=", "<>"].contains(&two) { two } else { &s[i..i + 1] };
                return Some((i, op));
            }
            None => {}
        }
    }
    None
}

/// The node fields of `read_from`'s options; whether the source reads a query.
fn source_fields(opts: Map) -> Result<(serde_json::Map<String, Value>, bool)> {
    let mut fields = serde_json::Map::new();
    let keywords = !opts.is_empty() && opts.keys().all(|k| PARAMS.contains(&k.as_str()));
    let (setting, query, filter, quiet) = if keywords {
        let get = |k: &str| opts.get(k).cloned();
        (get("setting"), get("query"), get("filter"), get("quiet"))
    } else {
        (Some(Dynamic::from_map(opts)), None, None, None)
    };
    if let Some(s) = setting {
        let json: Value = rhai::serde::from_dynamic(&s).map_err(|e| Error::usage(format!("read_from setting: {e}")))?;
        let Value::Object(o) = json else { return Err(Error::usage("read_from setting: give a map of node fields")) };
        fields.extend(o);
    }
    let text = |what: &str, v: Dynamic| -> Result<String> {
        v.into_string().map_err(|t| Error::usage(format!("read_from {what}: give it as a string, not a {t}")))
    };
    let has_query = match query {
        Some(q) => {
            let q = text("query", q)?;
            if q.trim().is_empty() {
                return Err(Error::usage("read_from query: the query is empty"));
            }
            fields.insert("customCommand".into(), json!({"command": "executeQuery", "params": {"sql": q}}));
            fields.insert("enableCustomCommand".into(), json!(true));
            true
        }
        None => false,
    };
    if let Some(f) = filter {
        fields.insert("conditions".into(), Value::Array(conditions(&text("filter", f)?)?));
        fields.insert("isFilter".into(), json!(true));
    }
    if let Some(q) = quiet {
        let q = q.as_bool().map_err(|t| Error::usage(format!("read_from quiet: true or false, not a {t}")))?;
        fields.insert("quiet".into(), json!(q));
    }
    Ok((fields, has_query))
}

fn read_with(session: &Session, f: &Flow, sig: &str, base: &serde_json::Map<String, Value>, opts: Map) -> Result<Flow> {
    let (mut fields, query) = source_fields(opts.clone())?;
    let mut all = base.clone();
    all.append(&mut fields);
    flow::read_from_node(session, f, sig, &all)?;
    if query {
        f.with(|s| {
            s.query_source = true;
            s.sync_type = "initial_sync".into();
        });
        session.out.text("Flow updated: the source reads a query, so the flow copies its rows once (full_sync)");
    }
    Ok(f.clone())
}

/// An offset written as TapFlow writes it (`+8`, `-05`, `+05:30`, `UTC`, `Z`), in seconds.
fn offset_secs(tz: &str) -> Result<i32> {
    let t = tz.trim();
    if t.eq_ignore_ascii_case("utc") || t.eq_ignore_ascii_case("z") || t.is_empty() {
        return Ok(0);
    }
    let bad = || {
        Error::usage(format!("time zone {tz:?}: write it as an offset from UTC, like \"+8\", \"-05:00\" or \"UTC\""))
    };
    let (sign, rest) = match (t.strip_prefix('+'), t.strip_prefix('-')) {
        (Some(r), _) => (1, r),
        (_, Some(r)) => (-1, r),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.chars().all(|c| c.is_ascii_digit());
    if !digits(h) || !digits(m) {
        return Err(bad());
    }
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// A start time as epoch ms: milliseconds as they are, `"now"`, or a date and time
/// (`2024-05-06 07:08:09`, `T` or a space) in zone `tz` unless it names its own offset.
fn start_ms(t: &Dynamic, tz: &str) -> Result<Option<i64>> {
    if let Ok(ms) = t.as_int() {
        return Ok(Some(ms));
    }
    let text = t.clone().into_string().map_err(|ty| {
        Error::usage(format!("the start time is a {ty}: give epoch milliseconds or \"YYYY-MM-DD HH:MM:SS\""))
    })?;
    if text.trim().eq_ignore_ascii_case("now") || text.trim().is_empty() {
        return Ok(None);
    }
    if let Some(z) =
        crate::model::zoned_to_utc(text.trim()).filter(|_| text.contains(['+', 'Z']) || text.matches('-').count() > 2)
    {
        return Ok(Some(z.timestamp_millis()));
    }
    let naive = match crate::model::Value::parse_time(&text, crate::model::FieldType::Timestamp) {
        Some(crate::model::Value::Timestamp(n)) => n,
        _ => {
            return Err(Error::usage(format!(
                "the start time {text:?} is not \"YYYY-MM-DD HH:MM:SS\" or epoch milliseconds"
            )));
        }
    };
    Ok(Some(naive.and_utc().timestamp_millis() - i64::from(offset_secs(tz)?) * 1000))
}

fn cdc_from(f: &mut Flow, what: &str, t: Dynamic, tz: &str) -> Result<Flow> {
    let at = start_ms(&t, tz)?;
    offset_secs(tz)?;
    f.with(|s| {
        if s.query_source {
            return Err(Error::usage(format!(
                "{what}: a table of the flow is read by a query, which has no change stream to follow"
            )));
        }
        if s.sources.is_empty() {
            return Err(Error::usage(format!(
                "{what}: call read_from(\"Connection.table\") first, so the start point names its source"
            )));
        }
        let points: Vec<Value> = s
            .sources
            .iter()
            .map(|(node_id, _)| {
                let node = s.nodes.iter().find(|n| n.get("id").and_then(Value::as_str) == Some(node_id));
                let get = |k: &str| node.and_then(|n| n.pointer(k)).cloned().unwrap_or(Value::Null);
                let mut p = json!({"pointType": if at.is_some() { "localTZ" } else { "current" },
                    "connectionId": get("/connectionId"), "connectionName": get("/attrs/connectionName"),
                    "nodeId": node_id, "nodeName": get("/attrs/connectionName")});
                if let Some(ms) = at {
                    p["dateTime"] = json!(ms);
                }
                p
            })
            .collect();
        s.sync_type = "cdc".into();
        s.settings.insert("syncPoints".into(), Value::Array(points));
        s.settings.insert("timeZone".into(), json!(tz));
        Ok(())
    })?;
    Ok(f.clone())
}

pub fn register(engine: &mut Engine, session: &Arc<Session>, raise: fn(Error) -> Box<EvalAltResult>) {
    let s = session.clone();
    crate::register_both!(engine, "read_from", move |f: &mut Flow, sig: &str, opts: Map| {
        read_with(&s, f, sig, &serde_json::Map::new(), opts).map_err(raise)
    });
    let s = session.clone();
    crate::register_both!(engine, "read_from", move |f: &mut Flow, spec: TableSpec, opts: Map| {
        if spec.sink {
            return Err(raise(Error::usage(format!("read_from takes a Source, not {}: write Source(…)", spec.show()))));
        }
        read_with(&s, f, &spec.sig, &spec.fields, opts).map_err(raise)
    });
    // `config(#{ … })`: TapData's task settings, laid over the defaults; a key that is not one
    // is refused here, a value the engine does not do at save (api::rules::TASK_SETTINGS).
    engine.register_fn("config", move |f: &mut Flow, m: Map| -> std::result::Result<Flow, Box<EvalAltResult>> {
        let defaults = super::nodes::sync_settings("initial_sync+cdc");
        let known = |k: &str| {
            defaults.get(k).is_some()
                || crate::api::rules::TASK_SETTINGS.iter().any(|(t, _)| *t == k)
                || k == "skipErrorEvent"
        };
        for (k, v) in m {
            if !known(&k) {
                let mut names: Vec<String> =
                    defaults.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
                names.extend(crate::api::rules::TASK_SETTINGS.iter().map(|(t, _)| t.to_string()));
                names.sort();
                names.dedup();
                return Err(raise(Error::usage(format!(
                    "config: {k} is not a TapData task setting (they are {})",
                    names.join(", ")
                ))));
            }
            let v: Value =
                rhai::serde::from_dynamic(&v).map_err(|e| raise(Error::usage(format!("config {k}: {e}"))))?;
            if k == "type" {
                let ty = v.as_str().unwrap_or_default().to_string();
                if ty.contains("cdc") && f.with(|s| s.query_source) {
                    return Err(raise(Error::usage(
                        "config type: a table of the flow is read by a query, which has no change stream to follow",
                    )));
                }
                f.with(|s| s.sync_type = ty);
                continue;
            }
            f.with(|s| s.settings.insert(k.to_string(), v));
        }
        Ok(f.clone())
    });
    // `enable_join_value_change()`: lookups added after it say their join values may change
    // (the engine follows such changes either way).
    engine.register_fn("enable_join_value_change", |f: &mut Flow| {
        f.with(|s| s.join_value_change = true);
        f.clone()
    });
    // `skip_error_event_by_limit(n)`: up to n changes with data errors skipped (and logged).
    engine.register_fn(
        "skip_error_event_by_limit",
        move |f: &mut Flow, n: i64| -> std::result::Result<Flow, Box<EvalAltResult>> {
            let n = u64::try_from(n)
                .map_err(|_| raise(Error::usage(format!("skip_error_event_by_limit: {n} is not a count"))))?;
            f.with(|s| {
                s.skip_limit = Some(n);
            });
            Ok(f.clone())
        },
    );
    // `only_cdc(start_time)`, `start_at(start_time, tz = "+8")`, `config_cdc_start_time(…)`: a
    // CDC-only flow from that time (TapData's `syncPoints`).
    for name in ["only_cdc", "start_at", "config_cdc_start_time"] {
        engine.register_fn(name, move |f: &mut Flow, t: Dynamic| -> std::result::Result<Flow, Box<EvalAltResult>> {
            cdc_from(f, name, t, "+8").map_err(raise)
        });
        engine.register_fn(
            name,
            move |f: &mut Flow, t: Dynamic, tz: &str| -> std::result::Result<Flow, Box<EvalAltResult>> {
                cdc_from(f, name, t, tz).map_err(raise)
            },
        );
    }
    for (name, ty) in [("full_sync", "initial_sync"), ("only_cdc", "cdc"), ("include_cdc", "initial_sync+cdc")] {
        engine.register_fn(name, move |f: &mut Flow| -> std::result::Result<Flow, Box<EvalAltResult>> {
            if ty.contains("cdc") && f.with(|s| s.query_source) {
                return Err(raise(Error::usage(format!(
                    "{name}(): a table of the flow is read by a query, which has no change stream to follow: such a flow is copied once (full_sync)"
                ))));
            }
            f.with(|s| s.sync_type = ty.to_string());
            Ok(f.clone())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tapflow_filters_become_conditions_and_others_are_refused_with_what_to_use() {
        let c = conditions("order_status = 'delivered' and price > 10").expect("parses");
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0]["key"].clone(), c[0]["operator"].clone(), c[0]["value"].clone()),
            (json!("order_status"), json!(5), json!("'delivered'"))
        );
        assert_eq!(
            (c[1]["key"].clone(), c[1]["operator"].clone(), c[1]["value"].clone()),
            (json!("price"), json!(1), json!("10"))
        );
        // `brand` holds "and" and a quoted value may too: neither is split.
        let c = conditions("brand == 'black and white' AND qty <= 3").expect("parses");
        assert_eq!(
            (c[0]["key"].clone(), c[0]["value"].clone(), c[1]["operator"].clone()),
            (json!("brand"), json!("'black and white'"), json!(4))
        );
        for bad in ["a > 1 or b < 2", "a != 1", "(a > 1)", "a > 1 and", "a", "len(a) > 1", "a > b > c", "a.b = 1"] {
            let err = conditions(bad).expect_err(bad);
            assert!(err.message.contains(".filter("), "{bad}: {}", err.message);
        }
    }
}
