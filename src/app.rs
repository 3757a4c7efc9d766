//! What `tap` does with its arguments: pick the profile, connect, and run the shell, a script,
//! a single line, or a subcommand.

use crate::cli::{Cli, ConfigAction, EngineAction, Sub};
use crate::commands as verbs;
use crate::commands::session::Session;
use crate::config::{self, Kind, Profile, Source};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::script;
use crate::shell::repl;
use std::io::IsTerminal;
use std::sync::Arc;

pub fn run(cli: Cli) -> Result<()> {
    let out = Output::new(cli.json);
    match cli.sub {
        Some(Sub::Engine { listen, data_dir, allow_python, action }) => {
            return engine(listen, data_dir, allow_python, action, out);
        }
        Some(Sub::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "tap", &mut buf);
            out.line(String::from_utf8_lossy(&buf).trim_end());
            return Ok(());
        }
        Some(Sub::Config { action }) => return config_cmd(action, cli.profile.as_deref(), out),
        _ => {}
    }
    if let Some(line) = &cli.command
        && std::path::Path::new(line.trim()).is_file()
    {
        return Err(Error::usage(format!(
            "-c runs a command line, and {line} is a file: `tap --config {line}` reads a TapFlow config file, \
             `tap -f {line}` runs a script"
        )));
    }
    let session = match &cli.config {
        Some(file) => Arc::new(Session::connect(config::tapflow::read(file)?, out)?),
        None => Arc::new(connect(cli.profile.as_deref(), out)?),
    };
    match cli.sub {
        Some(Sub::Demo { rows, into, force }) => demo(&session, rows, into.as_deref(), force),
        _ => {
            if let Some(file) = cli.file {
                run_file(&session, &file)
            } else if let Some(line) = cli.command {
                run_line(&session, &line)
            } else if std::io::stdin().is_terminal() {
                repl::run(session)
            } else {
                // Lines from a pipe: run them as the shell would, stopping at the first failure.
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
                run_lines(&session, &text, "<stdin>")
            }
        }
    }
}

fn connect(flag: Option<&str>, out: Output) -> Result<Session> {
    let (_, profile, source) = config::resolve(flag)?;
    let profile = if source == Source::Default {
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            first_run(out)?
        } else {
            out.notice("tap: no cluster profile configured: using the embedded engine on this machine (`tap config` changes it)");
            profile
        }
    } else {
        profile
    };
    Session::connect(profile, out)
}

/// Log in with a profile, to check answers before they are saved.
fn check(profile: &Profile, out: Output) -> Result<()> {
    Session::connect(profile.clone(), out).map(|_| ())
}

fn first_run(out: Output) -> Result<Profile> {
    let profile = config::wizard::ask(&out, &|p| check(p, out))?;
    let name = match profile.kind {
        Kind::Embedded => "local",
        Kind::Enterprise => "enterprise",
        Kind::Cloud => "cloud",
    };
    config::wizard::save(name, profile.clone(), true)?;
    out.text(&format!("saved profile {name} in {} (mode 0600)", config::config_path().display()));
    Ok(profile)
}

fn config_cmd(action: Option<ConfigAction>, flag: Option<&str>, out: Output) -> Result<()> {
    match action {
        None => {
            let profile = config::wizard::ask(&out, &|p| check(p, out))?;
            let name = flag.unwrap_or("default");
            config::wizard::save(name, profile, true)?;
            out.text(&format!("saved profile {name} in {}", config::config_path().display()));
            Ok(())
        }
        Some(ConfigAction::List) => {
            let file = config::File::load()?.unwrap_or_default();
            let rows: Vec<Vec<String>> = file
                .profiles
                .iter()
                .map(|(n, p)| {
                    let default = if file.default.as_deref() == Some(n.as_str()) { "*" } else { "" };
                    vec![default.to_string(), n.clone(), format!("{:?}", p.kind).to_lowercase(), p.describe()]
                })
                .collect();
            if rows.is_empty() && !out.json {
                out.line(&format!("no profiles in {} — the embedded engine is used", config::config_path().display()));
            } else {
                out.table(&["default", "name", "kind", "where"], rows);
            }
            Ok(())
        }
        Some(ConfigAction::Add { name }) => {
            let profile = config::wizard::ask(&out, &|p| check(p, out))?;
            config::wizard::save(&name, profile, false)?;
            out.text(&format!("saved profile {name}"));
            Ok(())
        }
        Some(ConfigAction::Remove { name }) => {
            let mut file = config::File::load()?.unwrap_or_default();
            if file.profiles.remove(&name).is_none() {
                let known: Vec<&String> = file.profiles.keys().collect();
                return Err(Error::not_found(format!("no profile named {name:?}; profiles: {known:?}")));
            }
            if file.default.as_deref() == Some(name.as_str()) {
                file.default = file.profiles.keys().next().cloned();
            }
            file.save()?;
            out.text(&format!("removed profile {name}"));
            Ok(())
        }
        Some(ConfigAction::Import { file, name }) => {
            let file = match file {
                Some(f) => f,
                None => [config::tapflow::default_ini(), config::tapflow::default_application_yml()]
                    .into_iter()
                    .find(|f| f.is_file())
                    .ok_or_else(|| {
                        Error::not_found(format!(
                            "no TapFlow settings to import: neither {} nor {} exists (name a file: `tap config import FILE`)",
                            config::tapflow::default_ini().display(),
                            config::tapflow::default_application_yml().display()
                        ))
                    })?,
            };
            let profile = config::tapflow::read(&file)?;
            config::validate(&name, &profile)?;
            let described = profile.describe();
            config::wizard::save(&name, profile, false)?;
            let file_now = config::File::load()?.unwrap_or_default();
            let default = file_now.default.as_deref() == Some(name.as_str());
            out.text(&format!(
                "imported {} into profile {name} ({described}){}",
                file.display(),
                if default {
                    ", the default".to_string()
                } else {
                    format!(": `tap --profile {name}` uses it, `tap config default {name}` makes it the default")
                }
            ));
            Ok(())
        }
        Some(ConfigAction::Default { name }) => {
            let mut file = config::File::load()?.unwrap_or_default();
            if !file.profiles.contains_key(&name) {
                return Err(Error::not_found(format!("no profile named {name:?}")));
            }
            file.default = Some(name.clone());
            file.save()?;
            out.text(&format!("default profile is now {name}"));
            Ok(())
        }
    }
}

fn engine(
    listen: Option<String>,
    data_dir: Option<std::path::PathBuf>,
    allow_python: bool,
    action: Option<EngineAction>,
    out: Output,
) -> Result<()> {
    // Defaults come from the embedded profile (and TAP_SERVER / TAP_DATA_DIR).
    let profile = config::resolve(None)
        .map(|(_, p, _)| p)
        .ok()
        .filter(|p| p.kind == Kind::Embedded)
        .unwrap_or_else(Profile::embedded);
    let listen = listen.unwrap_or_else(|| profile.server());
    let data_dir = data_dir.unwrap_or_else(|| profile.data_dir());
    match action {
        None => crate::engine::run(&listen, &data_dir, allow_python),
        Some(EngineAction::Status) => {
            let st = crate::local::status(&data_dir, &listen)?;
            print_status(&st, out);
            Ok(())
        }
        Some(EngineAction::Stop) => {
            let st = crate::local::stop(&data_dir, &listen)?;
            print_status(&st, out);
            Ok(())
        }
    }
}

fn print_status(st: &crate::local::EngineStatus, out: Output) {
    let v = serde_json::json!({"address": st.address, "state": st.state, "data_dir": st.data_dir, "access_code": st.access_code});
    out.either(
        &format!(
            "address:     {}\nstate:       {}\ndata dir:    {}\naccess code: {}",
            st.address,
            st.state,
            st.data_dir,
            if st.access_code.is_empty() { "(not generated yet)" } else { &st.access_code }
        ),
        &v,
    );
}

fn demo(session: &Session, rows: usize, into: Option<&str>, force: bool) -> Result<()> {
    let rows = script::bounded("--rows", rows.try_into().unwrap_or(i64::MAX), 1, script::MAX_DEMO_ROWS)? as usize;
    match into {
        None => script::demo(session, rows, force).map(|_| ()),
        Some(conn) => script::demo_into(session, conn, rows, force),
    }
}

fn run_file(session: &Arc<Session>, file: &std::path::Path) -> Result<()> {
    let text = script::read_script(file)?;
    run_source(session, &text, &file.display().to_string())
}

/// A script runs as one Rhai program; a line that is a shell verb is run as the verb.
fn run_source(session: &Arc<Session>, text: &str, origin: &str) -> Result<()> {
    let engine = script::engine(session.clone());
    let mut scope = rhai::Scope::new();
    let mut lib = rhai::AST::empty();
    // A file of verbs only (a transcript) runs line by line; otherwise it is one Rhai program.
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("//")).collect();
    if !lines.is_empty() && lines.iter().all(|l| verbs::parse(l).is_some()) {
        for l in lines {
            run_line_with(session, &engine, &mut scope, &mut lib, l, origin)?;
        }
        return Ok(());
    }
    script::eval_chunk(&engine, session, &mut scope, &mut lib, text, origin).map(|_| ())
}

/// Run input line by line as the shell does: verbs, or Rhai statements that may span lines
/// while a block or bracket is open; one scope throughout.
fn run_lines(session: &Arc<Session>, text: &str, origin: &str) -> Result<()> {
    let engine = script::engine(session.clone());
    let mut scope = rhai::Scope::new();
    let mut lib = rhai::AST::empty();
    let mut pending = String::new();
    for (n, line) in text.lines().enumerate() {
        if pending.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with("//")) {
            continue;
        }
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(line);
        if repl::is_incomplete(&pending) {
            continue;
        }
        let chunk = std::mem::take(&mut pending);
        if matches!(chunk.trim(), "exit" | "quit") {
            return Ok(());
        }
        run_line_with(session, &engine, &mut scope, &mut lib, chunk.trim(), &format!("{origin}:{}", n + 1))?;
    }
    if !pending.trim().is_empty() {
        return Err(Error::usage(format!("{origin}: input ended inside an open block or string")));
    }
    Ok(())
}

fn run_line(session: &Arc<Session>, line: &str) -> Result<()> {
    let engine = script::engine(session.clone());
    let mut scope = rhai::Scope::new();
    let mut lib = rhai::AST::empty();
    run_line_with(session, &engine, &mut scope, &mut lib, line, "<command>")
}

fn run_line_with(
    session: &Arc<Session>,
    engine: &rhai::Engine,
    scope: &mut rhai::Scope<'static>,
    lib: &mut rhai::AST,
    line: &str,
    origin: &str,
) -> Result<()> {
    match verbs::parse(line) {
        Some((verb, args)) if verb.name == "tap" => script::run_file_in(engine, session, scope, lib, &args),
        Some((verb, args)) => {
            if verb.name == "delete" && !args.iter().any(|a| a == "-y" || a == "--yes") {
                return Err(Error::usage(
                    "delete asks for confirmation, and there is no terminal: add -y (`delete NAME -y`)",
                ));
            }
            verbs::run(session, verb, &args, &|_| false)
        }
        None => script::eval_chunk(engine, session, scope, lib, line, origin).map(|v| {
            if !v.is_unit() && !v.is::<script::flow::Flow>() && !v.is::<script::datasource::DataSource>() {
                session.out.line(&v.to_string());
            }
        }),
    }
}
