//! `.py(x)`: a Python user function. `x` is a file when it ends in `.py` and names one, else
//! the Python source, in one of three forms:
//!
//! - TapData's `def process(record, context): …` — sent as written;
//! - a script that defines one function of one argument (the seed's `def pyfunc(record): …`) —
//!   sent with a `process(record, context)` that calls it, so the same flow runs on a cluster;
//! - a function body (the official client's form) — wrapped as the official client wraps it.
//!
//! A returned `None` drops the record. The embedded engine runs it in a CPython worker
//! (`engine/processors/python.rs`).

use super::flow::{self, Flow};
use super::nodes;
use crate::commands::session::Session;
use crate::error::{Error, Result};

/// The top-level `def name(params)` lines of a script: each function's name and its number of
/// parameters.
fn functions(src: &str) -> Vec<(String, usize)> {
    src.lines()
        .filter_map(|l| l.strip_prefix("def "))
        .filter_map(|rest| {
            let (name, params) = rest.split_once('(')?;
            let params = params.split_once(')').map_or(params, |(p, _)| p);
            let n = params.split(',').filter(|p| !p.trim().is_empty()).count();
            Some((name.trim().to_string(), n))
        })
        .collect()
}

/// The script a `python_processor` node carries for the user's source.
pub fn process_form(src: &str) -> Result<String> {
    let defs = functions(src);
    if defs.iter().any(|(n, _)| n == "process") || defs.is_empty() {
        // TapData's own form, or a body (wrapped as the official client wraps it).
        return Ok(nodes::python(src)["script"].as_str().unwrap_or_default().to_string());
    }
    match defs.as_slice() {
        [(name, 1)] => {
            Ok(format!("{}\n\n\ndef process(record, context):\n    return {name}(record)\n", src.trim_end()))
        }
        _ => Err(Error::usage(format!(
            "py: the script defines {} but no process(record, context): define process(record, context), \
             or give a script with one function of one argument (def f(record): … return record)",
            defs.iter()
                .map(|(n, k)| format!("{n}({k} argument{})", if *k == 1 { "" } else { "s" }))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `.py(x)` on a flow.
pub fn py(session: &Session, flow: &Flow, x: &str) -> Result<()> {
    let path = std::path::Path::new(x.trim());
    let src = if x.trim().ends_with(".py") && !x.contains('\n') {
        std::fs::read_to_string(path).map_err(|e| {
            Error::not_found(format!(
                "py: cannot read {} ({e}); a name ending in .py is read as a file, relative to {}",
                path.display(),
                std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()
            ))
        })?
    } else {
        x.to_string()
    };
    let mut node = nodes::python("");
    node["script"] = serde_json::Value::String(process_form(&src)?);
    flow::add_step(session, flow, "py", node, "custom function added")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_become_tapdatas_process_form() {
        let tapdata = "def process(record, context):\n    return record\n";
        assert_eq!(process_form(tapdata).expect("as is"), tapdata);
        let seed = "def pyfunc(record):\n    if not record['order_status']:\n        record['order_status'] = 'invalid'\n    return record";
        let wrapped = process_form(seed).expect("wrapped");
        assert!(
            wrapped.starts_with(seed)
                && wrapped.ends_with("def process(record, context):\n    return pyfunc(record)\n")
        );
        let body = process_form("record['x'] = 1\nreturn record").expect("a body");
        assert!(body.starts_with("import json") && body.contains("def process(record, context):\n    record['x'] = 1"));
        let two = process_form("def a(r):\n    return r\ndef b(r):\n    return r\n").expect_err("ambiguous");
        assert!(two.message.contains("a(1 argument), b(1 argument)"), "{}", two.message);
    }
}
