//! The Rhai host: the engine with `Flow`, `DataSource`, the shell verbs as functions, and the
//! helpers scripts need (`demo()`, `sql()`, `wait_initial_sync()`), plus evaluation of chunks
//! (a file, a `-c` line, a shell line) in one persistent scope.
//!
//! Python keyword arguments become object maps: `.lookup("Src.t", #{path: "x", type: "object",
//! relation: [["a", "a"]]})`. `use` is a Rhai keyword, so the verb is `use_db(name)` in scripts.

mod sample;
use sample::demo_rows;
pub use sample::{demo, demo_into};
pub mod chain;
pub use files::{is_identifier, read_script, run_file_in};
pub mod datasource;
mod files;
pub mod flow;
mod flow_methods;
mod lookup;
mod more_steps;
pub mod nodes;
pub mod objects;
mod pipeline;
mod python;
mod setters;
mod source_opts;
mod type_steps;

use crate::commands as verbs;
use crate::commands::resolve;
use crate::commands::session::Session;
use crate::error::{Error, Result};
use flow::Flow;
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, Position};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

type RhaiResult<T> = std::result::Result<T, Box<EvalAltResult>>;

/// Carry our error through Rhai (kind preserved) and back.
/// TapFlow's camelCase spelling of a snake_case builder (`read_from` → `readFrom`), if it has one.
pub fn camel(name: &str) -> Option<String> {
    if !name.contains('_') {
        return None;
    }
    let mut out = String::new();
    let mut up = false;
    for c in name.chars() {
        match c {
            '_' => up = true,
            c if up => {
                out.extend(c.to_uppercase());
                up = false;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// Register a function under its name and its camelCase alias (TapFlow accepts both).
#[macro_export]
macro_rules! register_both {
    ($engine:expr, $name:expr, $f:expr $(,)?) => {{
        let f = $f;
        if let Some(c) = $crate::script::camel($name) {
            $engine.register_fn(c, f.clone());
        }
        $engine.register_fn($name, f);
    }};
}

fn raise(e: Error) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(e), Position::NONE))
}

/// Turn a Rhai error back into ours, with `origin:line:column` when Rhai knows the position.
pub fn from_rhai(e: &EvalAltResult, origin: &str) -> Error {
    let pos = e.position();
    let at = if pos.is_none() {
        String::new()
    } else {
        format!("{origin}:{}:{}: ", pos.line().unwrap_or(0), pos.position().unwrap_or(0))
    };
    let mut inner = e;
    loop {
        match inner {
            EvalAltResult::ErrorRuntime(d, _) if d.is::<Error>() => {
                let mut err: Error = d.clone().cast();
                if !at.is_empty() {
                    err.message = format!("{at}{}", err.message);
                }
                return err;
            }
            EvalAltResult::ErrorInFunctionCall(_, _, next, _) | EvalAltResult::ErrorInModule(_, next, _) => {
                inner = next
            }
            _ => break,
        }
    }
    let kind = match e {
        EvalAltResult::ErrorParsing(..) => crate::error::ErrorKind::Usage,
        EvalAltResult::ErrorTerminated(..) => crate::error::ErrorKind::Usage,
        EvalAltResult::ErrorFunctionNotFound(..) | EvalAltResult::ErrorVariableNotFound(..) => {
            crate::error::ErrorKind::Usage
        }
        _ => crate::error::ErrorKind::Data,
    };
    let text = e.to_string();
    let text = text.split(" (line ").next().unwrap_or(&text).to_string();
    Error::new(kind, format!("{at}{text}"))
}

fn to_json(d: &Dynamic) -> Value {
    rhai::serde::from_dynamic(d).unwrap_or(Value::Null)
}

fn strings(a: rhai::Array) -> Vec<String> {
    a.into_iter().map(|v| v.to_string()).collect()
}

/// Build the Rhai engine for a session.
pub fn engine(session: Arc<Session>) -> Engine {
    // Set by the first engine of the process; later ones find it set (the same function).
    let _ = crate::commands::objects::CHAIN.set(chain::render_task);
    let mut engine = Engine::new();
    engine.set_max_expr_depths(256, 128);
    {
        let s = session.clone();
        engine.on_print(move |text| s.out.line(text));
    }
    {
        let s = session.clone();
        engine.on_debug(move |text, _, pos| s.out.notice(&format!("debug {pos:?}: {text}")));
    }
    {
        let s = session.clone();
        engine.on_progress(move |_| if s.interrupted() { Some(Dynamic::from("interrupted")) } else { None });
    }
    datasource::register(&mut engine, &session, raise);
    setters::register(&mut engine, &session, raise);
    register_flow(&mut engine, &session);
    register_verbs(&mut engine, &session);
    engine
}

fn register_flow(engine: &mut Engine, session: &Arc<Session>) {
    objects::register(engine, session, raise);
    more_steps::register(engine, session, raise);
    type_steps::register(engine, session, raise);
    source_opts::register(engine, session, raise);
    engine.register_type_with_name::<Flow>("Flow");
    let s = session.clone();
    engine.register_fn("Flow", move |name: &str| flow::open(&s, name, false).map_err(raise));
    pipeline::register(engine, session, raise);
    flow_methods::register(engine, session, raise);
    let s = session.clone();
    engine.register_fn("Pipeline", move |name: &str| flow::open(&s, name, true).map_err(raise));
    engine.register_fn("to_string", |f: &mut Flow| f.with(|s| s.show()));
    engine.register_fn("show", |f: &mut Flow| f.with(|s| s.show()));

    macro_rules! step {
        ($name:literal, |$s:ident, $f:ident $(, $arg:ident : $ty:ty)*| $body:block) => {{
            let sess = session.clone();
            crate::register_both!(engine, $name, move |$f: &mut Flow $(, $arg: $ty)*| -> RhaiResult<Flow> {
                let $s = &sess;
                #[allow(clippy::redundant_closure_call)]
                let r: Result<()> = (|| $body)();
                r.map_err(raise)?;
                Ok($f.clone())
            });
        }};
    }
    step!("read_from", |s, f, sig: &str| { flow::read_from(s, f, sig) });
    step!("write_to", |s, f, sig: &str| { flow::write_to(s, f, sig, None) });
    step!("write_to", |s, f, sig: &str, pk: &str| { flow::write_to(s, f, sig, Some(vec![pk.to_string()])) });
    step!("write_to", |s, f, sig: &str, pk: rhai::Array| { flow::write_to(s, f, sig, Some(strings(pk))) });
    let column = more_steps::column;
    step!("exclude", |s, f, fields: rhai::Array| { column(s, f, strings(fields), false) });
    step!("include", |s, f, fields: rhai::Array| { column(s, f, strings(fields), true) });
    step!("exclude", |s, f, a: &str| { column(s, f, vec![a.into()], false) });
    step!("include", |s, f, a: &str| { column(s, f, vec![a.into()], true) });
    step!("exclude", |s, f, a: &str, b: &str| { column(s, f, vec![a.into(), b.into()], false) });
    step!("include", |s, f, a: &str, b: &str| { column(s, f, vec![a.into(), b.into()], true) });
    step!("exclude", |s, f, a: &str, b: &str, c: &str| { column(s, f, vec![a.into(), b.into(), c.into()], false) });
    step!("include", |s, f, a: &str, b: &str, c: &str| { column(s, f, vec![a.into(), b.into(), c.into()], true) });
    step!("exclude", |s, f, a: &str, b: &str, c: &str, d: &str| {
        column(s, f, vec![a.into(), b.into(), c.into(), d.into()], false)
    });
    step!("include", |s, f, a: &str, b: &str, c: &str, d: &str| {
        column(s, f, vec![a.into(), b.into(), c.into(), d.into()], true)
    });
    step!("rename_fields", |s, f, m: Map| { rename_fields(s, f, m) });
    // TapFlow's camelCase spelling is singular.
    step!("renameField", |s, f, m: Map| { rename_fields(s, f, m) });
    step!("filter", |s, f, expr: &str| {
        flow::add_step(s, f, "filter", nodes::row_filter(&nodes::filter_expression(expr), true), "filter added")
    });
    step!("filter", |s, f, expr: &str, mode: &str| {
        let keep = match mode {
            "keep" | "retain" => true,
            "delete" | "discard" => false,
            other => return Err(Error::usage(format!("filter mode must be \"keep\" or \"discard\", not {other:?}"))),
        };
        flow::add_step(s, f, "filter", nodes::row_filter(&nodes::filter_expression(expr), keep), "filter added")
    });
    step!("js", |s, f, src: &str| { more_steps::js(s, f, src, Map::new()) });
    step!("py", |s, f, src: &str| { python::py(s, f, src) });
    step!("renameTable", |s, f, prefix: &str, suffix: &str| { pipeline::rename_table(s, f, prefix, suffix) });
    step!("renameTable", |s, f, prefix: &str| { pipeline::rename_table(s, f, prefix, "") });
    step!("add_fields", |s, f, fields: rhai::Array| {
        let parsed: Vec<(String, String, String)> = fields
            .into_iter()
            .map(|x| {
                let a = strings(
                    x.into_array()
                        .map_err(|t| Error::usage(format!("add_fields takes [[name, type, js_expr], …], got {t}")))?,
                );
                Ok((
                    a.first().cloned().unwrap_or_default(),
                    a.get(1).cloned().unwrap_or_else(|| "String".into()),
                    a.get(2).cloned().unwrap_or_default(),
                ))
            })
            .collect::<Result<_>>()?;
        flow::add_step(s, f, "add_fields", nodes::add_fields(&parsed), "custom function added")
    });
    step!("lookup", |s, f, sig: &str, opts: Map| { lookup::lookup(s, f, sig, &opts) });
    step!("lookup", |s, f, sig: &str| { lookup::lookup(s, f, sig, &Map::new()) });
    step!("union", |s, f, sig: &str| { lookup::union(s, f, Some(sig), &Map::new()) });
    step!("union", |s, f, sig: &str, opts: Map| { lookup::union(s, f, Some(sig), &opts) });
    step!("union", |s, f| { lookup::union(s, f, None, &Map::new()) });
    {
        let sess = session.clone();
        engine.register_fn("rhai", move |ctx: NativeCallContext, f: &mut Flow, func: FnPtr| -> RhaiResult<Flow> {
            let src = function_source(&sess, &ctx, &func).map_err(raise)?;
            let name = func.fn_name().to_string();
            flow::add_step(&sess, f, "rhai", nodes::rhai(&src, &name), "custom function added").map_err(raise)?;
            f.with(|s| s.uses_rhai = true);
            Ok(f.clone())
        });
    }
    let s = session.clone();
    engine.register_fn("save", move |f: &mut Flow| -> RhaiResult<Flow> {
        flow::save(&s, f).map_err(raise)?;
        Ok(f.clone())
    });
    let s = session.clone();
    engine.register_fn("start", move |f: &mut Flow| -> RhaiResult<Flow> {
        flow::start(&s, f).map_err(raise)?;
        Ok(f.clone())
    });
    for verb in ["stop", "reset", "stats", "logs", "monitor"] {
        let s = session.clone();
        engine.register_fn(verb, move |f: &mut Flow| -> RhaiResult<Flow> {
            let name = f.name();
            let args = vec![name];
            let v = verbs::find(verb).ok_or_else(|| raise(Error::internal("verb")))?;
            verbs::run(&s, v, &args, &|_| true).map_err(raise)?;
            Ok(f.clone())
        });
    }
    let s = session.clone();
    engine.register_fn("delete", move |f: &mut Flow| -> RhaiResult<bool> {
        let doc = resolve::flow(&s, &f.name()).map_err(raise)?;
        verbs::delete(&s, &doc).map_err(raise)?;
        f.with(|st| st.id = None);
        Ok(true)
    });
    let s = session.clone();
    engine.register_fn("status", move |f: &mut Flow| -> RhaiResult<String> {
        let id = flow::id_of(&s, f).map_err(raise)?;
        let task = s.client.task(&id).map_err(raise)?;
        Ok(task.map(|t| t.status.to_string()).unwrap_or_default())
    });
    let s = session.clone();
    engine.register_fn("wait_initial_sync", move |f: &mut Flow| -> RhaiResult<Flow> {
        let id = flow::id_of(&s, f).map_err(raise)?;
        flow::wait_initial_sync(&s, &id, Duration::from_secs(600)).map_err(raise)?;
        Ok(f.clone())
    });
    let s = session.clone();
    engine.register_fn("wait_initial_sync", move |f: &mut Flow, secs: i64| -> RhaiResult<Flow> {
        let id = flow::id_of(&s, f).map_err(raise)?;
        let secs = bounded("wait_initial_sync's timeout (seconds)", secs, 1, MAX_WAIT_SECS).map_err(raise)?;
        flow::wait_initial_sync(&s, &id, Duration::from_secs(secs as u64)).map_err(raise)?;
        Ok(f.clone())
    });
    let s = session.clone();
    engine.register_fn("preview", move |f: &mut Flow| -> RhaiResult<Flow> {
        flow::preview(&s, f, 5).map_err(raise)?;
        Ok(f.clone())
    });
    let s = session.clone();
    engine.register_fn("preview", move |f: &mut Flow, rows: i64| -> RhaiResult<Flow> {
        flow::preview(&s, f, rows.clamp(1, 100) as usize).map_err(raise)?;
        Ok(f.clone())
    });
    let s = session.clone();
    engine.register_fn("copy", move |f: &mut Flow| -> RhaiResult<Flow> {
        let id = flow::id_of(&s, f).map_err(raise)?;
        let copy = s.client.copy_task(&id).map_err(raise)?;
        let name = copy.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        s.out.text(&format!("Copy flow '{}' to '{name}' success", f.name()));
        let new = Flow::new(&name);
        new.with(|st| st.id = copy.get("id").and_then(Value::as_str).map(str::to_string));
        Ok(new)
    });
}

/// The source of a script function, for `.rhai(f)`: every function of the session's scripts
/// as written (the latest definition of each name and arity), so `f` may call the others and
/// itself; the node names `f` as its entry.
fn function_source(session: &Session, ctx: &NativeCallContext, func: &FnPtr) -> Result<String> {
    if !func.curry().is_empty() {
        return Err(Error::usage(
            "a closure that captures variables cannot run in the engine: use a named function, or put the values in the record",
        ));
    }
    let name = func.fn_name();
    let chunks = session.chunks.lock().map_err(|_| Error::internal("chunks lock"))?;
    let _ = ctx;
    let mut found = false;
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut defs: Vec<String> = Vec::new();
    for (src, ast) in chunks.iter().rev() {
        for def in ast.iter_fn_def() {
            let key = (def.name.to_string(), def.params.len());
            if seen.contains(&key) {
                continue;
            }
            if def.name.as_str() == name {
                if def.params.len() != 1 {
                    return Err(Error::usage(format!("function {name} must take one parameter, the record")));
                }
                found = true;
            }
            let (start, end) = (def.body.start_position(), def.body.end_position());
            let text = slice(src, start, end).ok_or_else(|| {
                Error::usage(format!("cannot find the source of {}: write it with a {{ … }} body", def.name))
            })?;
            let params: Vec<&str> = def.params.iter().map(|p| p.as_str()).collect();
            defs.push(format!("fn {}({}) {text}", def.name, params.join(", ")));
            seen.push(key);
        }
    }
    if !found {
        return Err(Error::not_found(format!(
            "no script function named {name}: define it with `fn {name}(record) {{ … }}` first"
        )));
    }
    defs.reverse();
    Ok(defs.join("\n"))
}

/// The text from `start` to `end` inclusive (1-based lines and columns).
fn slice(src: &str, start: Position, end: Position) -> Option<String> {
    let (sl, sc) = (start.line()?, start.position()?);
    let (el, ec) = (end.line()?, end.position()?);
    let lines: Vec<&str> = src.lines().collect();
    let mut out = String::new();
    for l in sl..=el {
        let line: Vec<char> = lines.get(l - 1)?.chars().collect();
        let from = if l == sl { sc - 1 } else { 0 };
        let to = if l == el { ec.min(line.len()) } else { line.len() };
        out.extend(line.get(from..to)?.iter());
        if l != el {
            out.push('\n');
        }
    }
    Some(out)
}

fn rename_fields(s: &Session, f: &Flow, m: Map) -> Result<()> {
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(m.len());
    for (k, v) in m {
        // A new name must be a non-empty string: `()` or 42 would become a column "" or "42".
        match v.into_immutable_string() {
            Ok(to) if !to.is_empty() => pairs.push((k.to_string(), to.to_string())),
            Ok(_) => return Err(Error::usage(format!("rename_fields: the new name of {k:?} is empty"))),
            Err(ty) => {
                return Err(Error::usage(format!(
                    "rename_fields: the new name of {k:?} is a {ty}, not a string: write #{{ {k}: \"new_name\" }}"
                )));
            }
        }
    }
    flow::add_step(s, f, "rename_fields", nodes::rename(&pairs), "fields rename node added")?;
    flow::rename_key(f, &pairs);
    Ok(())
}

fn register_verbs(engine: &mut Engine, session: &Arc<Session>) {
    let verb1 = |engine: &mut Engine, fname: &'static str, verb: &'static str, session: &Arc<Session>| {
        let s = session.clone();
        engine.register_fn(fname, move |arg: &str| -> RhaiResult<()> {
            let v = verbs::find(verb).ok_or_else(|| raise(Error::internal("verb")))?;
            verbs::run(&s, v, &verbs::shell_words(arg), &|_| true).map_err(raise)
        });
    };
    for (f, v) in [
        ("show", "show"),
        ("use_db", "use"),
        ("desc", "desc"),
        ("peek", "peek"),
        ("count", "count"),
        ("status", "status"),
        ("stats", "stats"),
        ("logs", "logs"),
        ("start", "start"),
        ("stop", "stop"),
        ("reset", "reset"),
        ("help", "help"),
    ] {
        verb1(engine, f, v, session);
    }
    for (f, what) in
        [("show_dbs", "dbs"), ("show_tables", "tables"), ("show_flows", "flows"), ("show_connectors", "connectors")]
    {
        let s = session.clone();
        engine.register_fn(f, move || -> RhaiResult<()> { verbs::show(&s, &[what.to_string()]).map_err(raise) });
    }
    let s = session.clone();
    engine.register_fn("peek", move |table: &str, n: i64| -> RhaiResult<()> {
        verbs::peek(&s, table, n.max(0) as usize).map_err(raise)
    });
    // peek("table", #{ field: value }): the records whose fields equal those values.
    let s = session.clone();
    engine.register_fn("peek", move |table: &str, filter: rhai::Map| -> RhaiResult<()> {
        let filter: serde_json::Map<String, serde_json::Value> = filter
            .into_iter()
            .map(|(k, v)| Ok((k.to_string(), rhai::serde::from_dynamic(&v)?)))
            .collect::<RhaiResult<_>>()?;
        verbs::peek_where(&s, table, &filter, 5).map_err(raise)
    });
    let s = session.clone();
    engine.register_fn("help", move || -> RhaiResult<()> { verbs::help(&s, None).map_err(raise) });
    let s = session.clone();
    engine.register_fn("delete", move |name: &str| -> RhaiResult<()> {
        let doc = resolve::flow(&s, name).map_err(raise)?;
        verbs::delete(&s, &doc).map_err(raise)
    });
    // sql("Connection", "statement"): run a statement through the embedded engine.
    let s = session.clone();
    engine.register_fn("sql", move |conn: &str, statement: &str| -> RhaiResult<i64> {
        let doc = resolve::connection(&s, conn).map_err(raise)?;
        Ok(s.client.sql(&doc.id, statement).map_err(raise)? as i64)
    });
    // demo(): the seed's sample tables in a SQLite file; returns its path.
    // Tables a flow uses are not replaced unless `force` is true.
    let s = session.clone();
    engine.register_fn("demo", move || -> RhaiResult<String> { demo(&s, 1000, false).map_err(raise) });
    let s = session.clone();
    engine.register_fn("demo", move |rows: i64| -> RhaiResult<String> {
        demo(&s, demo_rows(rows).map_err(raise)?, false).map_err(raise)
    });
    let s = session.clone();
    engine.register_fn("demo", move |rows: i64, force: bool| -> RhaiResult<String> {
        demo(&s, demo_rows(rows).map_err(raise)?, force).map_err(raise)
    });
    let s = session.clone();
    engine.register_fn("demo_into", move |conn: &str, rows: i64| -> RhaiResult<()> {
        demo_into(&s, conn, demo_rows(rows).map_err(raise)?, false).map_err(raise)
    });
    let s = session.clone();
    engine.register_fn("demo_into", move |conn: &str, rows: i64, force: bool| -> RhaiResult<()> {
        demo_into(&s, conn, demo_rows(rows).map_err(raise)?, force).map_err(raise)
    });
    // env("NAME"): an environment variable, or "" (scripts read their servers from it).
    engine.register_fn("env", |name: &str| std::env::var(name).unwrap_or_default());
    let s = session.clone();
    engine.register_fn("sleep", move |secs: f64| -> RhaiResult<()> {
        if !(0.0..=MAX_WAIT_SECS as f64).contains(&secs) {
            return Err(raise(Error::usage(format!(
                "sleep({secs}): seconds must be from 0 to {MAX_WAIT_SECS} (a day)"
            ))));
        }
        s.sleep(Duration::from_secs_f64(secs)).map_err(raise)
    });
    let s = session.clone();
    engine.register_fn("sleep", move |secs: i64| -> RhaiResult<()> {
        let secs = bounded("sleep's seconds", secs, 0, MAX_WAIT_SECS).map_err(raise)?;
        s.sleep(Duration::from_secs(secs as u64)).map_err(raise)
    });
}

/// The longest a script waits in one call (`sleep`, `wait_initial_sync`): a day.
pub const MAX_WAIT_SECS: i64 = 86_400;

pub use crate::local::MAX_DEMO_ROWS;

/// `value` when it is within `min..=max`, else a usage error naming `what` and the bounds.
pub fn bounded(what: &str, value: i64, min: i64, max: i64) -> Result<i64> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Error::usage(format!("{what} must be from {min} to {max}, not {value}")))
    }
}

/// Evaluate one chunk of Rhai in `scope`, keeping its functions in `lib` for later chunks.
/// A `\` that ends a line outside a string continues the line, as in TapFlow's README chains:
/// it becomes a space (the newline stays, so positions in errors stay true).
pub fn join_continued_lines(source: &str) -> std::borrow::Cow<'_, str> {
    if !source.contains('\\') {
        return std::borrow::Cow::Borrowed(source);
    }
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) => {
                out.push(c);
                if c == '\\' && i + 1 < chars.len() {
                    out.push(chars[i + 1]);
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '`' || c == '\'' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '\\' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j] == ' ' || chars[j] == '\t' || chars[j] == '\r') {
                    j += 1;
                }
                if j == chars.len() || chars[j] == '\n' {
                    out.push(' ');
                } else {
                    out.push(c);
                }
            }
            None => out.push(c),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

pub fn eval_chunk(
    engine: &Engine,
    session: &Session,
    scope: &mut rhai::Scope<'static>,
    lib: &mut rhai::AST,
    source: &str,
    origin: &str,
) -> Result<Dynamic> {
    let source = join_continued_lines(source);
    let source = source.as_ref();
    let ast = engine.compile_with_scope(scope, source).map_err(|e| {
        let pos = e.position();
        Error::usage(format!(
            "{origin}:{}:{}: syntax error: {}",
            pos.line().unwrap_or(0),
            pos.position().unwrap_or(0),
            e.err_type()
        ))
    })?;
    if let Ok(mut c) = session.chunks.lock() {
        c.push((source.to_string(), ast.clone()));
    }
    *lib += ast;
    let result = engine.eval_ast_with_scope::<Dynamic>(scope, lib);
    lib.clear_statements();
    result.map_err(|e| from_rhai(&e, origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailing_backslash_continues_the_line_outside_strings() {
        let chain = "Flow(\"f\") \\\n    .read_from(\"A.t\") \\  \n    .write_to(\"B.t\")";
        assert_eq!(join_continued_lines(chain), "Flow(\"f\")  \n    .read_from(\"A.t\")    \n    .write_to(\"B.t\")");
        // Inside a string, and before other characters, a backslash stays.
        assert_eq!(join_continued_lines("let s = \"a\\\nb\";"), "let s = \"a\\\nb\";");
        assert_eq!(join_continued_lines("x \\ y"), "x \\ y");
    }
}

/// The methods scripts can call on a `Flow` or a `DataSource` (what `.` completes to), read from
/// the engine's own function registry, so completion offers exactly what is registered.
pub fn method_names(engine: &Engine) -> Vec<String> {
    let mut names: Vec<String> = engine
        .gen_fn_signatures(false)
        .into_iter()
        .filter_map(|sig| {
            let (name, params) = sig.split_once('(')?;
            let first = params.split([',', ')']).next()?.trim_start_matches("_: ").trim_start_matches("&mut ");
            matches!(first, "Flow" | "DataSource").then(|| name.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod method_tests {
    #[test]
    fn methods_come_from_the_registry() {
        let session = std::sync::Arc::new(crate::commands::session::Session::offline());
        let names = super::method_names(&super::engine(session));
        for m in
            ["read_from", "write_to", "lookup", "rename_fields", "save", "start", "host", "test", "wait_initial_sync"]
        {
            assert!(names.iter().any(|n| n == m), "{m} in {names:?}");
        }
        // Functions that are not methods (constructors, verbs) are not offered after a dot.
        for f in ["Flow", "DataSource", "show_flows", "sql"] {
            assert!(!names.iter().any(|n| n == f), "{f} is not a method");
        }
    }
}
