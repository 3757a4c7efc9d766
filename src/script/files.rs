//! Scripts from files: `tap -f FILE`, and `tap FILE` inside the shell (run in the shell's
//! own scope); which connection names the shell can bind as variables.

use super::eval_chunk;
use crate::commands as verbs;
use crate::commands::session::Session;
use crate::error::{Error, Result};
use rhai::Engine;

/// Whether `name` can be a Rhai variable (a connection bound by name in the shell).
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !super::chain::RESERVED.contains(&name)
}

/// A script file's text; a Python file is refused with the way to Rhai.
pub fn read_script(file: &std::path::Path) -> Result<String> {
    if file.extension().is_some_and(|e| e == "py") {
        return Err(Error::usage(format!(
            "{}: tap runs Rhai scripts, not Python. TapFlow's Python translates line for line: \
             `Flow(\"name\").read_from(\"Conn.table\")…`, `let` for variables, `#{{ key: value }}` for dicts, \
             `fn f(record) {{ … }}` for functions (docs/from-tapflow.md shows each)",
            file.display()
        )));
    }
    std::fs::read_to_string(file).map_err(|e| Error::usage(format!("cannot read {}: {e}", file.display())))
}

/// `tap FILE` (or `tap -f FILE`) inside the shell: the script runs in the shell's own scope, so
/// the variables and functions it defines stay; a file of verbs runs line by line.
pub fn run_file_in(
    engine: &Engine,
    session: &Session,
    scope: &mut rhai::Scope<'static>,
    lib: &mut rhai::AST,
    args: &[String],
) -> Result<()> {
    let path = match args {
        [f] if !f.starts_with('-') => f,
        [flag, f] if flag == "-f" => f,
        _ => return Err(Error::usage("usage: tap [-f] FILE (a Rhai script)")),
    };
    let text = read_script(std::path::Path::new(path))?;
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("//")).collect();
    if !lines.is_empty() && lines.iter().all(|l| verbs::parse(l).is_some()) {
        for l in lines {
            if let Some((verb, args)) = verbs::parse(l) {
                verbs::run(session, verb, &args, &|_| false)?;
            }
        }
        return Ok(());
    }
    eval_chunk(engine, session, scope, lib, &text, path).map(|_| ())
}
