//! The REPL: rustyline with persistent history, completion (verbs, flow, connection and table
//! names as each verb's `arg` says, methods after `.` from the script engine's registry), hints, and multi-line input while a block or bracket is open.
//! One Rhai scope lives across lines. Ctrl-C clears the input, or cancels the running line;
//! Ctrl-D exits.

use crate::commands as verbs;
use crate::commands::Arg;
use crate::commands::session::Session;
use crate::error::Result;
use crate::script;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::{Hinter, HistoryHinter};
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper};
use std::sync::Arc;
use std::sync::atomic::Ordering;

struct TapHelper {
    session: Arc<Session>,
    /// What `.` completes to: the script engine's `Flow` and `DataSource` methods.
    methods: Vec<String>,
    hinter: HistoryHinter,
}

impl Completer for TapHelper {
    type Candidate = Pair;
    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(|c: char| c.is_whitespace() || "(\"'.,".contains(c)).map(|i| i + 1).unwrap_or(0);
        let word = &before[start..];
        let prev_char = before[..start].chars().last();
        let first = before.split_whitespace().next().unwrap_or("");
        let is_first_word = before[..start].trim().is_empty();
        let names = self.session.names.lock().map(|n| n.clone()).unwrap_or_default();
        let mut cands: Vec<String> = if prev_char == Some('.') {
            self.methods.clone()
        } else if is_first_word {
            verbs::VERBS
                .iter()
                .map(|v| v.name.to_string())
                .chain(["DataSource".into(), "Flow".into(), "let".into()])
                .collect()
        } else if let Some(kind) = typed_word(&before[..start]) {
            // `desc datasource <TAB>`, `start job <TAB>`: names of what the word says.
            match kind {
                verbs::objects::Kind::Connection => names.connections.clone(),
                verbs::objects::Kind::Flow => names.flows.clone(),
                verbs::objects::Kind::Table => names.tables.clone(),
                verbs::objects::Kind::Api => Vec::new(),
            }
        } else {
            let typed: &[&str] = match first {
                "desc" => &["table", "datasource", "job"],
                "delete" => &["job", "datasource"],
                "validate" => &["datasource"],
                _ if verbs::find(first).is_some_and(|v| v.arg == Arg::Flow) => &["job"],
                _ => &[],
            };
            let only_verb = before[..start].split_whitespace().count() == 1;
            let extra = typed.iter().filter(|_| only_verb).map(|s| s.to_string());
            let base: Vec<String> = match verbs::find(first).map(|v| v.arg) {
                Some(Arg::Words(words)) => words.iter().map(|s| s.to_string()).collect(),
                Some(Arg::Connection) => names.connections.clone(),
                Some(Arg::Table) => names.tables.clone(),
                Some(Arg::Flow) => names.flows.clone(),
                Some(Arg::Topic) => verbs::VERBS.iter().map(|v| v.name.to_string()).collect(),
                Some(Arg::Nothing) => Vec::new(),
                None => names.connections.iter().chain(names.flows.iter()).cloned().collect(),
            };
            base.into_iter().chain(extra).collect()
        };
        cands.sort();
        cands.dedup();
        let pairs = cands
            .into_iter()
            .filter(|c| c.starts_with(word))
            .map(|c| Pair { display: c.clone(), replacement: c })
            .collect();
        Ok((start, pairs))
    }
}

/// The kind a typed form's second word names, when the words before the cursor are exactly a
/// verb and such a word (`desc datasource `).
fn typed_word(before: &str) -> Option<verbs::objects::Kind> {
    let words: Vec<&str> = before.split_whitespace().collect();
    if words.len() != 2 || verbs::find(words[0]).is_none() {
        return None;
    }
    verbs::objects::kind_word(words[1])
}

impl Hinter for TapHelper {
    type Hint = String;
    fn hint(&self, line: &str, pos: usize, ctx: &Context<'_>) -> Option<String> {
        if let Some((v, args)) = verbs::parse(line)
            && args.is_empty()
            && pos == line.len()
            && line.trim() == v.name
        {
            return Some(format!("  — {}", v.usage));
        }
        self.hinter.hint(line, pos, ctx)
    }
}

impl Highlighter for TapHelper {}

impl Validator for TapHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if is_incomplete(ctx.input()) { ValidationResult::Incomplete } else { ValidationResult::Valid(None) })
    }
}

impl Helper for TapHelper {}

/// Whether brackets, braces or a string are still open (so Enter continues the input).
pub fn is_incomplete(input: &str) -> bool {
    let mut depth: i32 = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut line_comment = false;
    let mut prev = ' ';
    for c in input.chars() {
        if line_comment {
            if c == '\n' {
                line_comment = false;
            }
            prev = c;
            continue;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            prev = c;
            continue;
        }
        match c {
            '"' | '`' | '\'' => quote = Some(c),
            '/' if prev == '/' => line_comment = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
        prev = c;
    }
    depth > 0 || quote.is_some_and(|q| q == '`') || input.trim_end().ends_with('\\')
}

fn history_path(session: &Session) -> std::path::PathBuf {
    let _ = session;
    crate::config::config_dir().join("history")
}

/// Run the shell until `exit` or Ctrl-D.
pub fn run(session: Arc<Session>) -> Result<()> {
    let engine = script::engine(session.clone());
    let mut scope = rhai::Scope::new();
    let mut lib = rhai::AST::empty();
    let mut ed: Editor<TapHelper, rustyline::history::DefaultHistory> =
        Editor::new().map_err(|e| crate::error::Error::internal(format!("line editor: {e}")))?;
    let mut methods = script::method_names(&engine);
    // The setters of every key a connector declares (`.logPluginName(…)`) complete too.
    for c in session.client.connectors().unwrap_or_default() {
        if let Some(props) = c.pointer("/properties/connection/properties").and_then(serde_json::Value::as_object) {
            methods.extend(props.keys().cloned());
        }
    }
    methods.sort();
    methods.dedup();
    ed.set_helper(Some(TapHelper { session: session.clone(), methods, hinter: HistoryHinter::new() }));
    let history = history_path(&session);
    let _ = std::fs::create_dir_all(history.parent().unwrap_or(std::path::Path::new(".")));
    let _ = ed.load_history(&history);
    watch_ctrl_c(session.clone());
    // Fill the completion caches quietly.
    if let Ok(c) = session.client.connections() {
        crate::commands::resolve::remember_connections(&session, &c);
        // As TapFlow binds them: each connection whose name is a Rhai identifier is a variable
        // holding it (`Demo.desc()`, `Demo.validate()`).
        for conn in &c {
            if script::is_identifier(&conn.name) {
                scope.push(conn.name.clone(), script::datasource::from_connection(conn));
            }
        }
    }
    if let Ok(t) = session.client.tasks() {
        crate::commands::resolve::remember_flows(&session, &t);
    }
    session.out.text(&format!(
        "tap {} — {}. `help` lists verbs; Ctrl-D exits.",
        env!("CARGO_PKG_VERSION"),
        session.profile.describe()
    ));
    loop {
        session.interrupted.store(false, Ordering::SeqCst);
        let line = match ed.readline("tap> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(crate::error::Error::internal(format!("line editor: {e}"))),
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let _ = ed.add_history_entry(trimmed);
        if matches!(trimmed, "exit" | "quit" | "exit;" | "quit;") {
            break;
        }
        let result = match verbs::parse(trimmed) {
            Some((verb, args)) if verb.name == "tap" => {
                script::run_file_in(&engine, &session, &mut scope, &mut lib, &args)
            }
            Some((verb, args)) => {
                let confirm = |q: &str| -> bool {
                    let mut e: Editor<(), rustyline::history::DefaultHistory> = match Editor::new() {
                        Ok(e) => e,
                        Err(_) => return false,
                    };
                    matches!(e.readline(q).as_deref().map(str::trim), Ok("y" | "Y" | "yes"))
                };
                verbs::run(&session, verb, &args, &confirm)
            }
            None => script::eval_chunk(&engine, &session, &mut scope, &mut lib, &line, "<shell>").map(|v| {
                if !v.is_unit() && !v.is::<script::flow::Flow>() && !v.is::<script::datasource::DataSource>() {
                    session.out.line(&v.to_string());
                }
            }),
        };
        if let Err(e) = result {
            if session.interrupted() {
                session.out.error("interrupted");
            } else {
                session.out.error(&e.message);
            }
        }
    }
    let _ = ed.save_history(&history);
    Ok(())
}

/// Ctrl-C while a line runs sets the session's flag (checked by Rhai and by waits) instead of
/// killing the shell.
fn watch_ctrl_c(session: Arc<Session>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            loop {
                if tokio::signal::ctrl_c().await.is_err() {
                    return;
                }
                session.interrupted.store(true, Ordering::SeqCst);
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::is_incomplete;

    #[test]
    fn open_blocks_continue_the_input() {
        assert!(is_incomplete("fn f(r) {"));
        assert!(is_incomplete("Flow(\"x\")\n  .read_from(\"a.b\""));
        assert!(!is_incomplete("let x = \"{\";"));
        assert!(!is_incomplete("fn f(r) { r } // {"));
        assert!(is_incomplete("let a = 1 + \\"));
    }
}
