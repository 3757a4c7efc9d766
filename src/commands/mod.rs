//! The command library under both the shell and scripts: the verbs (parsed before Rhai sees a
//! line in the shell, callable as functions from scripts), the session they run in, name
//! resolution, and waiting on flows. Each verb documents itself in [`VERBS`]; `help` and
//! completion are generated from that list. Nothing here imports `shell/` or `script/`.

use crate::api::task::{Task, TaskStatus};
use crate::error::{Error, Result};
pub mod resolve;
pub mod session;
pub mod tasks;

use serde_json::{Value, json};
use session::Session;
use std::time::Duration;
use tasks as flowops;

pub struct Verb {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub usage: &'static str,
    pub summary: &'static str,
    pub examples: &'static [&'static str],
    /// What its first argument names: the shell completes it from this.
    pub arg: Arg,
}

/// What a verb's first argument names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    Nothing,
    Flow,
    Table,
    Connection,
    /// A verb or a connector (`help`).
    Topic,
    /// One of these words.
    Words(&'static [&'static str]),
}

pub const VERBS: &[Verb] = &[
    Verb {
        name: "show",
        aliases: &[],
        usage: "show dbs|connections|tables [like X]|flows [like X]|connectors|agents|apis, or show FLOW",
        summary: "list connections, tables of the used connection, flows, connectors, agents or Data APIs; \
                  `show FLOW` prints the Rhai that recreates a flow",
        arg: Arg::Words(&["dbs", "connections", "tables", "flows", "connectors", "agents", "apis"]),
        examples: &["show dbs", "show tables like order", "show flows", "show agents"],
    },
    Verb {
        name: "use",
        aliases: &[],
        usage: "use CONNECTION",
        summary: "choose the connection that desc, peek and count read",
        arg: Arg::Connection,
        examples: &["use Demo"],
    },
    Verb {
        name: "desc",
        aliases: &[],
        usage: "desc [table] [CONNECTION.]TABLE | desc datasource CONNECTION | desc job FLOW",
        summary: "describe a table's fields, a connection's settings (secrets masked) or a flow's nodes",
        arg: Arg::Table,
        examples: &["desc ecom_orders", "desc table Demo.ecom_orders", "desc datasource Demo", "desc job quickstart"],
    },
    Verb {
        name: "peek",
        aliases: &[],
        usage: "peek [-n N] [CONNECTION.]TABLE [FIELD=VALUE ...]",
        summary: "show the row count and the first N records (5), or the records matching FIELD=VALUE",
        arg: Arg::Table,
        examples: &["peek ecom_orders", "peek -n 2 Demo.ecom_orders", "peek Local.orders order_id=ORD789654"],
    },
    Verb {
        name: "count",
        aliases: &[],
        usage: "count [CONNECTION.]TABLE",
        summary: "count the rows of a table",
        arg: Arg::Table,
        examples: &["count ecom_orders"],
    },
    Verb {
        name: "validate",
        aliases: &[],
        usage: "validate [datasource] CONNECTION",
        summary: "test a saved connection again and reload its schema",
        arg: Arg::Connection,
        examples: &["validate datasource Demo"],
    },
    Verb {
        name: "status",
        aliases: &[],
        usage: "status FLOW",
        summary: "a flow's status, throughput, rows and delay",
        arg: Arg::Flow,
        examples: &["status quickstart"],
    },
    Verb {
        name: "stats",
        aliases: &[],
        usage: "stats FLOW",
        summary: "a flow's metrics in detail",
        arg: Arg::Flow,
        examples: &["stats quickstart"],
    },
    Verb {
        name: "logs",
        aliases: &[],
        usage: "logs FLOW [-n N | limit=N] [--level L | level=L]  (L: debug, info, warn, error)",
        summary: "a flow's recent log lines",
        arg: Arg::Flow,
        examples: &["logs quickstart -n 20 --level warn", "logs quickstart limit=10 level=warn"],
    },
    Verb {
        name: "monitor",
        aliases: &[],
        usage: "monitor FLOW [-n READINGS]",
        summary: "a status line every second until Ctrl-C, READINGS lines, or the flow stops",
        arg: Arg::Flow,
        examples: &["monitor quickstart -n 2"],
    },
    Verb {
        name: "start",
        aliases: &[],
        usage: "start FLOW",
        summary: "start a saved flow",
        arg: Arg::Flow,
        examples: &["start quickstart"],
    },
    Verb {
        name: "stop",
        aliases: &[],
        usage: "stop FLOW",
        summary: "stop a running flow",
        arg: Arg::Flow,
        examples: &["stop quickstart"],
    },
    Verb {
        name: "reset",
        aliases: &[],
        usage: "reset FLOW",
        summary: "forget a stopped flow's progress: the next start snapshots again",
        arg: Arg::Flow,
        examples: &["reset quickstart"],
    },
    Verb {
        name: "delete",
        aliases: &[],
        usage: "delete FLOW [-y] | delete datasource CONNECTION [-y]",
        summary: "delete a stopped flow, or a connection no flow uses (asks first; -y skips)",
        arg: Arg::Flow,
        examples: &["delete job quickstart -y"],
    },
    Verb {
        name: "preview",
        aliases: &[],
        usage: "preview FLOW [-n N]",
        summary: "the first N records (5) the flow would write, without running it",
        arg: Arg::Flow,
        examples: &["preview quickstart -n 2"],
    },
    Verb {
        name: "tap",
        aliases: &[],
        usage: "tap [-f] FILE",
        summary: "run a Rhai script in this session: its variables and functions stay",
        arg: Arg::Nothing,
        examples: &[],
    },
    Verb {
        name: "copy",
        aliases: &[],
        usage: "copy FLOW",
        summary: "copy a flow, as TapData does (the copy is named FLOW - Copy and is not started)",
        arg: Arg::Flow,
        examples: &["copy quickstart"],
    },
    Verb {
        name: "help",
        aliases: &["h"],
        usage: "help [VERB|CONNECTOR]",
        summary: "this list, a verb's usage, or a connector's settings",
        arg: Arg::Topic,
        examples: &["help peek", "help sqlite"],
    },
    Verb {
        name: "exit",
        aliases: &["quit"],
        usage: "exit",
        summary: "leave the shell (Ctrl-D also)",
        examples: &[],
        arg: Arg::Nothing,
    },
];

pub fn find(word: &str) -> Option<&'static Verb> {
    VERBS.iter().find(|v| v.name == word || v.aliases.contains(&word))
}

/// Split a shell line into a verb and its arguments, when it is one. A line is Rhai, not a verb,
/// when the word is followed by `(`, `.`, `=` or an operator (so `status("x")` and
/// `count = 3` stay Rhai).
pub fn parse(line: &str) -> Option<(&'static Verb, Vec<String>)> {
    let trimmed = line.trim().trim_end_matches(';');
    let (word, rest) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
    let verb = find(word)?;
    let rest = rest.trim();
    // `tap FILE` names a path, which may start with `/` or `.`.
    if verb.name == "tap" && !rest.is_empty() && !rest.starts_with(['(', '=']) {
        return Some((verb, shell_words(rest)));
    }
    if rest.starts_with(['(', '.', '=', '[', '+', '-', '*', '/', '<', '>', '!', '&', '|', '?'])
        && !rest.starts_with("-n")
        && !rest.starts_with("-y")
        && !rest.starts_with("--")
    {
        return None;
    }
    let args = shell_words(rest);
    Some((verb, args))
}

/// Split on whitespace, honouring single and double quotes.
pub fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() || any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        out.push(cur);
    }
    out
}

fn need<'a>(args: &'a [String], verb: &Verb) -> Result<&'a str> {
    args.first().map(String::as_str).ok_or_else(|| Error::usage(format!("usage: {}", verb.usage)))
}

/// Whether a confirmation prompt may be asked (for `delete` without `-y`).
pub type Confirm<'a> = &'a dyn Fn(&str) -> bool;

pub fn run(session: &Session, verb: &Verb, args: &[String], confirm: Confirm<'_>) -> Result<()> {
    use objects::Kind;
    match verb.name {
        "show" => show(session, args),
        "use" => use_connection(session, need(args, verb)?),
        "peek" => {
            let (n, rest) = take_n(&table_args(verb, args)?, 5)?;
            let table = rest.first().ok_or_else(|| Error::usage(format!("usage: {}", verb.usage)))?;
            let filter = parse_filter(&rest[1..], verb)?;
            if filter.is_empty() { peek(session, table, n) } else { peek_where(session, table, &filter, n) }
        }
        "count" => count(session, need(&table_args(verb, args)?, verb)?),
        "desc" => match objects::typed(args) {
            (Some(Kind::Connection), rest) => objects::desc_connection(session, need(&rest, verb)?),
            (Some(Kind::Flow), rest) => objects::desc_flow(session, need(&rest, verb)?),
            (None | Some(Kind::Table), rest) => desc(session, need(&rest, verb)?),
            (Some(Kind::Api), _) => Err(Error::usage(format!("desc describes no Data API (usage: {})", verb.usage))),
        },
        "validate" => match objects::typed(args) {
            (None | Some(Kind::Connection), rest) => {
                let c = resolve::connection(session, need(&rest, verb)?)?;
                objects::validate_connection(session, &c)
            }
            _ => Err(Error::usage(format!("validate tests a connection (usage: {})", verb.usage))),
        },
        "preview" => {
            let (n, rest) = take_n(&objects::flow_args(verb, args)?, 5)?;
            let task = objects::full_task(session, need(&rest, verb)?)?;
            objects::preview(session, &task, n.min(100)).map(|_| ())
        }
        "tap" => Err(Error::usage("`tap FILE` runs a script inside the shell; from the command line: `tap -f FILE`")),
        "delete" => {
            let yes = args.iter().any(|a| a == "-y" || a == "--yes");
            let words: Vec<String> = args.iter().filter(|a| !a.starts_with('-')).cloned().collect();
            let (kind, rest) = objects::typed(&words);
            let name = rest.first().ok_or_else(|| Error::usage(format!("usage: {}", verb.usage)))?;
            match kind {
                Some(Kind::Connection) => {
                    let c = resolve::connection(session, name)?;
                    if !yes && !confirm(&format!("Are you sure you want to delete datasource {} (y/[n]): ", c.name)) {
                        session.out.text("not deleted");
                        return Ok(());
                    }
                    objects::delete_connection(session, &c)
                }
                None | Some(Kind::Flow) => {
                    let doc = resolve::flow(session, name)?;
                    if !yes && !confirm(&format!("Are you sure you want to delete flow {name} (y/[n]): ")) {
                        session.out.text("not deleted");
                        return Ok(());
                    }
                    delete(session, &doc)
                }
                Some(_) => Err(Error::usage(format!("delete removes a flow or a datasource (usage: {})", verb.usage))),
            }
        }
        "help" => help(session, args.first().map(String::as_str)),
        "exit" => Ok(()),
        _ => run_flow_verb(session, verb, &objects::flow_args(verb, args)?),
    }
}

/// `peek table T`, `count table T`: the typed form's word removed.
fn table_args(verb: &Verb, args: &[String]) -> Result<Vec<String>> {
    match objects::typed(args) {
        (None | Some(objects::Kind::Table), rest) => Ok(rest),
        _ => Err(Error::usage(format!("{} reads a table (usage: {})", verb.name, verb.usage))),
    }
}

/// The verbs that act on one flow (their typed form's `job` already removed).
fn run_flow_verb(session: &Session, verb: &Verb, args: &[String]) -> Result<()> {
    match verb.name {
        "status" => status(session, need(args, verb)?),
        "stats" => stats(session, need(args, verb)?),
        "logs" => {
            let (mut n, rest) = take_n(args, 20)?;
            let mut level = "info".to_string();
            let mut name: Option<String> = None;
            let mut i = 0;
            while i < rest.len() {
                let arg = &rest[i];
                if arg == "--level" {
                    level =
                        rest.get(i + 1).cloned().ok_or_else(|| Error::usage("--level needs info, warn or error"))?;
                    i += 2;
                    continue;
                }
                // TapFlow's spelling: `logs FLOW limit=10 level=warn`.
                if let Some((key, value)) = arg.split_once('=') {
                    match key {
                        "limit" => {
                            n = value.parse().ok().filter(|v| (1..=MAX_N).contains(v)).ok_or_else(|| {
                                Error::usage(format!("limit must be from 1 to {MAX_N}, not {value:?}"))
                            })?;
                        }
                        "level" => level = value.to_string(),
                        other => {
                            return Err(Error::usage(format!(
                                "logs takes limit=N and level=debug|info|warn|error, not {other}= (usage: {})",
                                verb.usage
                            )));
                        }
                    }
                } else if let Some(first) = &name {
                    return Err(Error::usage(format!(
                        "logs takes one flow, not {first:?} and {arg:?} (usage: {})",
                        verb.usage
                    )));
                } else {
                    name = Some(arg.clone());
                }
                i += 1;
            }
            logs(session, &name.ok_or_else(|| Error::usage(format!("usage: {}", verb.usage)))?, n, &level)
        }
        "monitor" => {
            let given = args.iter().any(|a| a == "-n");
            let (n, rest) = take_n(args, 1)?;
            monitor(session, need(&rest, verb)?, given.then_some(n))
        }
        "start" => start(session, need(args, verb)?),
        "stop" => stop(session, need(args, verb)?),
        "reset" => reset(session, need(args, verb)?),
        "copy" => {
            let doc = resolve::flow(session, need(args, verb)?)?;
            let copy = session.client.copy_task(&doc.id)?;
            session.out.either(
                &format!("Copy flow '{}' to '{}' success", doc.name, s(&copy, "name")),
                &json!({"flow": doc.name, "copy": s(&copy, "name")}),
            );
            Ok(())
        }
        other => Err(Error::internal(format!("verb {other} has no implementation"))),
    }
}

/// The most records or lines one verb shows (`peek -n`, `logs -n`).
const MAX_N: usize = 10_000;

fn take_n(args: &[String], default: usize) -> Result<(usize, Vec<String>)> {
    let mut n = default;
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "-n" {
            let v = args.get(i + 1).ok_or_else(|| Error::usage("-n needs a number"))?;
            n = v.parse().map_err(|_| Error::usage(format!("-n needs a number, not {v:?}")))?;
            if !(1..=MAX_N).contains(&n) {
                return Err(Error::usage(format!("-n must be from 1 to {MAX_N}, not {n}")));
            }
            i += 2;
        } else {
            rest.push(args[i].clone());
            i += 1;
        }
    }
    Ok((n, rest))
}

fn short(id: &str) -> String {
    id.chars().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

pub fn help(session: &Session, topic: Option<&str>) -> Result<()> {
    match topic {
        None => {
            let rows = VERBS.iter().map(|v| vec![v.usage.to_string(), v.summary.to_string()]).collect();
            session.out.table(&["verb", "what it does"], rows);
            session
                .out
                .text("In Rhai: DataSource(connector, name, #{config}).save(); Flow(name).read_from(\"Conn.table\")");
            session.out.text("  .exclude(\"a\").rename_fields(#{old: \"new\"}).rhai(fn_name).write_to(\"Conn.table\").save().start()");
            session.out.text(
                "`help VERB` shows a verb's examples; `help CONNECTOR` its settings (`show connectors` lists them).",
            );
            Ok(())
        }
        Some(t) => {
            if let Some(v) = find(t) {
                session.out.line(&format!("usage: {}\n  {}", v.usage, v.summary));
                for e in v.examples {
                    session.out.line(&format!("  e.g. {e}"));
                }
                return Ok(());
            }
            let all = session.client.connectors()?;
            let c = all.iter().find(|c| s(c, "name").eq_ignore_ascii_case(t)).ok_or_else(|| {
                let verbs: Vec<&str> = VERBS.iter().map(|v| v.name).collect();
                let conns: Vec<&str> = all.iter().map(|c| s(c, "name")).collect();
                Error::not_found(format!(
                    "no verb or connector {t:?}; verbs: {}; connectors: {}",
                    verbs.join(", "),
                    conns.join(", ")
                ))
            })?;
            let props =
                c.pointer("/properties/connection/properties").and_then(Value::as_object).cloned().unwrap_or_default();
            let (req, opt): (Vec<_>, Vec<_>) = props.iter().partition(|(_, p)| p.get("required") == Some(&json!(true)));
            session.out.line("required config:");
            for (k, p) in req {
                session.out.line(&format!("    {k}: {} (Type: {})", s(p, "description"), s(p, "type")));
            }
            session.out.line("optional config:");
            for (k, p) in opt {
                session.out.line(&format!("    {k}: {} (Type: {})", s(p, "description"), s(p, "type")));
            }
            Ok(())
        }
    }
}

mod browse;
mod flows;
pub mod objects;
pub mod progress;

pub use browse::*;
pub use flows::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_versus_rhai() {
        assert_eq!(parse("show dbs").map(|(v, a)| (v.name, a)), Some(("show", vec!["dbs".to_string()])));
        assert_eq!(
            parse("peek -n 2 'my table'").map(|(v, a)| (v.name, a)),
            Some(("peek", vec!["-n".into(), "2".into(), "my table".into()]))
        );
        assert_eq!(parse("h").map(|(v, _)| v.name), Some("help"));
        assert!(parse("status(\"x\")").is_none());
        assert!(parse("count = 3").is_none());
        assert!(parse("let x = 1").is_none());
        assert!(parse("start.len()").is_none());
        assert_eq!(parse("logs f --level warn").map(|(_, a)| a.len()), Some(3));
    }
}
