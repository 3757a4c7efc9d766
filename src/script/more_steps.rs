//! More of TapFlow's processor builders: `rename(old, new)`, `rowFilter(expression, type)`,
//! `filter_columns(fields, type)` (and `filterColumn`), the one-field forms of `add_fields`
//! (and `add_field`), `js(script, declareScript)` and `js(script, #{ declareScript, pk, name })`,
//! and `include` / `exclude` with up to ten names. Each emits a node the engine runs.

use super::flow::{self, Flow};
use super::nodes;
use crate::commands::session::Session;
use crate::error::{Error, Result};
use rhai::{Engine, EvalAltResult};
use std::sync::Arc;

type Out = std::result::Result<Flow, Box<EvalAltResult>>;

fn keep_of(what: &str, mode: &str, keep: [&str; 2], drop: [&str; 2]) -> Result<bool> {
    if keep.contains(&mode) {
        Ok(true)
    } else if drop.contains(&mode) {
        Ok(false)
    } else {
        Err(Error::usage(format!(
            "{what}: the type is {:?} or {:?} (drop: {:?} or {:?}), not {mode:?}",
            keep[0], keep[1], drop[0], drop[1]
        )))
    }
}

/// `js(script, declareScript = "", language = "js", name = "JS", pk = None)`: a script ending in
/// `.js` that names a file is read from it; `pk` (a field or a list) declares the key of the
/// records the function returns (`TapModelDeclare.setPk`), which the target then writes by.
pub fn js(s: &Session, f: &Flow, src: &str, opts: rhai::Map) -> Result<()> {
    if let Some(k) = opts.keys().find(|k| !["declareScript", "language", "name", "pk"].contains(&k.as_str())) {
        return Err(Error::usage(format!("js: {k} is not one of its parameters (declareScript, language, name, pk)")));
    }
    let text = |k: &str| opts.get(k).map(|v| v.to_string());
    if let Some(lang) = text("language").filter(|l| !l.eq_ignore_ascii_case("js")) {
        return Err(Error::usage(format!("js: language {lang:?} is not JavaScript: use .py(…) for Python")));
    }
    let src = if src.ends_with(".js") && std::path::Path::new(src).exists() {
        std::fs::read_to_string(src)?
    } else {
        src.to_string()
    };
    let pk: Vec<String> = match opts.get("pk") {
        None => Vec::new(),
        Some(v) if v.is_array() => {
            v.clone().into_array().unwrap_or_default().into_iter().map(|x| x.to_string()).collect()
        }
        Some(v) => vec![v.to_string()],
    };
    let mut declare = text("declareScript").unwrap_or_default();
    for k in &pk {
        if !declare.is_empty() && !declare.trim_end().ends_with(';') {
            declare.push_str(";\n");
        }
        declare.push_str(&format!("TapModelDeclare.setPk(tapTable, '{k}');\n"));
    }
    let name = text("name").unwrap_or_else(|| "JS".into());
    flow::add_step(s, f, "js", nodes::js(&src, &declare, &name), "custom function added")?;
    if !pk.is_empty() {
        f.with(|st| st.key = pk);
    }
    Ok(())
}

/// `exclude(…)` / `include(…)`: TapFlow's column filter (the official JS).
pub fn column(s: &Session, f: &Flow, fields: Vec<String>, keep: bool) -> Result<()> {
    let what = if keep { "include" } else { "exclude" };
    if fields.is_empty() {
        return Err(Error::usage(format!("{what}: name the fields")));
    }
    flow::add_step(s, f, what, nodes::column_filter(&fields, keep), "column filter added")
}

pub fn register(engine: &mut Engine, session: &Arc<Session>, raise: fn(Error) -> Box<EvalAltResult>) {
    let s = session.clone();
    engine.register_fn("js", move |f: &mut Flow, src: &str, declare: &str| -> Out {
        let mut m = rhai::Map::new();
        m.insert("declareScript".into(), declare.into());
        js(&s, f, src, m).map_err(raise)?;
        Ok(f.clone())
    });
    let s = session.clone();
    engine.register_fn("js", move |f: &mut Flow, src: &str, opts: rhai::Map| -> Out {
        js(&s, f, src, opts).map_err(raise)?;
        Ok(f.clone())
    });
    // `include` / `exclude` with five to ten names (one to four, and lists, in script/mod.rs).
    macro_rules! columns {
        ($($a:ident),+) => {
            for (name, keep) in [("exclude", false), ("include", true)] {
                let s = session.clone();
                engine.register_fn(name, move |f: &mut Flow, $($a: &str),+| -> Out {
                    column(&s, f, vec![$($a.to_string()),+], keep).map_err(raise)?;
                    Ok(f.clone())
                });
            }
        };
    }
    columns!(a, b, c, d, e);
    columns!(a, b, c, d, e, g);
    columns!(a, b, c, d, e, g, h);
    columns!(a, b, c, d, e, g, h, i);
    columns!(a, b, c, d, e, g, h, i, j);
    columns!(a, b, c, d, e, g, h, i, j, k);

    // `rename(old, new)`: one field, as a field-rename node, so the sink key follows it.
    let s = session.clone();
    engine.register_fn("rename", move |f: &mut Flow, old: &str, new: &str| -> Out {
        if old.is_empty() || new.is_empty() {
            return Err(raise(Error::usage("rename(old, new): both names must be non-empty")));
        }
        let pairs = vec![(old.to_string(), new.to_string())];
        flow::add_step(&s, f, "rename", nodes::rename(&pairs), "rename added").map_err(raise)?;
        flow::rename_key(f, &pairs);
        Ok(f.clone())
    });

    // `rowFilter(expression, type = "retain")`: a JavaScript expression over `record`, as written.
    let row_filter = {
        let s = session.clone();
        move |f: &mut Flow, expr: &str, mode: &str| -> Result<Flow> {
            let keep = keep_of("rowFilter", mode, ["retain", "keep"], ["discard", "delete"])?;
            if expr.trim().is_empty() {
                return Err(Error::usage("rowFilter: the expression is empty"));
            }
            flow::add_step(&s, f, "rowFilter", nodes::row_filter(expr, keep), "row filter added")?;
            Ok(f.clone())
        }
    };
    let rf = row_filter.clone();
    engine.register_fn("rowFilter", move |f: &mut Flow, expr: &str| rf(f, expr, "retain").map_err(raise));
    engine
        .register_fn("rowFilter", move |f: &mut Flow, expr: &str, mode: &str| row_filter(f, expr, mode).map_err(raise));

    // `filter_columns(fields, type = "keep")` / `filterColumn`: the official column filter.
    let columns = {
        let s = session.clone();
        move |f: &mut Flow, fields: rhai::Array, mode: &str| -> Result<Flow> {
            let keep = keep_of("filter_columns", mode, ["keep", "retain"], ["delete", "discard"])?;
            let fields: Vec<String> = fields.into_iter().map(|v| v.to_string()).collect();
            if fields.is_empty() {
                return Err(Error::usage("filter_columns: give the fields, as a list"));
            }
            flow::add_step(&s, f, "filter_columns", nodes::column_filter(&fields, keep), "column filter added")?;
            Ok(f.clone())
        }
    };
    for name in ["filter_columns", "filterColumn"] {
        let c = columns.clone();
        engine.register_fn(name, move |f: &mut Flow, fields: rhai::Array| c(f, fields, "keep").map_err(raise));
        let c = columns.clone();
        engine
            .register_fn(name, move |f: &mut Flow, fields: rhai::Array, mode: &str| c(f, fields, mode).map_err(raise));
    }

    // `add_field(name, type, js)` / `add_fields(name, type, js)`: one field, its JavaScript
    // value (`type` is TapFlow's: String, Date, DateTime, Double, Long, Map, Array, …).
    for name in ["add_field", "add_fields"] {
        let s = session.clone();
        engine.register_fn(name, move |f: &mut Flow, field: &str, ty: &str, expr: &str| -> Out {
            if field.is_empty() {
                return Err(raise(Error::usage(format!("{name}: the field name is empty"))));
            }
            let fields = vec![(field.to_string(), ty.to_string(), expr.to_string())];
            flow::add_step(&s, f, name, nodes::add_fields(&fields), "field added").map_err(raise)?;
            Ok(f.clone())
        });
    }
}
