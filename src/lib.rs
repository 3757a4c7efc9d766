//! `tap`: programmable real-time data pipelines.
//!
//! Dependencies point down (ARCHITECTURE.md is the map): shell → script → commands → client →
//! api → model, with config and local (the engine as a process) beside commands; the engine
//! (server, flow) → connectors → model. datadir (private files), error and output are the base.

pub mod api;
pub mod app;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod connectors;
pub mod datadir;
pub mod engine;
pub mod error;
pub mod local;
pub mod model;
pub mod output;
pub mod script;
pub mod shell;

/// The layering rules of ARCHITECTURE.md, checked on the source: a module that names a module
/// it must not use fails here, naming the file and line.
#[cfg(test)]
mod layers {
    /// (directory or file under src/, modules it must not name).
    const RULES: &[(&str, &[&str])] = &[
        ("script", &["shell", "engine", "connectors"]),
        ("commands", &["shell", "script", "engine", "connectors"]),
        ("config", &["shell", "script", "engine", "connectors"]),
        ("client", &["shell", "script", "commands", "engine", "connectors"]),
        ("api", &["shell", "script", "commands", "client", "engine", "connectors", "output"]),
        ("connectors", &["shell", "script", "commands", "client", "engine", "output"]),
        ("engine", &["shell", "script", "commands", "client", "output"]),
        ("model", &["shell", "script", "commands", "client", "engine", "connectors", "api", "output"]),
        ("error.rs", &["shell", "script", "commands", "client", "engine", "connectors", "output"]),
    ];

    fn files(path: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        if path.is_dir() {
            for e in std::fs::read_dir(path).expect("read src").flatten() {
                files(&e.path(), out);
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path.to_path_buf());
        }
    }

    #[test]
    fn no_module_names_one_above_it() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut bad = Vec::new();
        for (module, forbidden) in RULES {
            let mut list = Vec::new();
            files(&src.join(module), &mut list);
            assert!(!list.is_empty(), "no sources for {module}");
            for file in list {
                let text = std::fs::read_to_string(&file).expect("read");
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    // `crate::engine::x`, `crate::engine;`, and `crate::{engine, …}` groups.
                    let group = code.split_once("crate::{").map(|(_, g)| g).unwrap_or("");
                    let in_group = |f: &str| {
                        group.split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == f)
                            && group.contains(&format!("{f}::"))
                            || group.split([',', '}', ' ']).any(|w| w.trim() == f)
                    };
                    for f in *forbidden {
                        if code.contains(&format!("crate::{f}::"))
                            || code.contains(&format!("crate::{f};"))
                            || in_group(f)
                        {
                            bad.push(format!("{}:{}: {module} names {f}", file.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(bad.is_empty(), "imports against the layering:\n{}", bad.join("\n"));
    }

    /// A file a newcomer can read: none over 700 lines (split it by what its parts do).
    #[test]
    fn no_source_file_is_over_700_lines() {
        let mut list = Vec::new();
        files(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut list);
        let long: Vec<String> = list
            .iter()
            .filter_map(|f| {
                let n = std::fs::read_to_string(f).expect("read").lines().count();
                (n > 700).then(|| format!("{}: {n} lines", f.display()))
            })
            .collect();
        assert!(long.is_empty(), "{}", long.join("\n"));
    }
}
