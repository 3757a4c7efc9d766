//! Command-line arguments exactly as typed; no behaviour here.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "tap",
    version,
    disable_version_flag = true,
    about = "Programmable real-time data pipelines: a TapFlow-compatible shell, a TapData client and an embedded CDC engine"
)]
pub struct Cli {
    /// Print the version (-V works too).
    #[arg(short = 'v', long = "version", visible_short_alias = 'V', action = clap::ArgAction::Version)]
    pub version: Option<bool>,
    /// Run a Rhai script file (every shell verb is a function there).
    #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with = "command")]
    pub file: Option<PathBuf>,
    /// Run one shell line or Rhai statement and exit.
    #[arg(short = 'c', long = "command", value_name = "LINE")]
    pub command: Option<String>,
    /// Use a TapFlow config file (`~/.tapflow/config.ini` format) for this run only.
    #[arg(long = "config", global = true, value_name = "FILE", conflicts_with = "profile")]
    pub config: Option<PathBuf>,
    /// The cluster profile to use (see `tap config list`).
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Print machine-readable JSON from verbs.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub sub: Option<Sub>,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Run the embedded engine in the foreground, or manage it.
    Engine {
        /// Address to listen on.
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
        /// Where the engine keeps its store, logs and access code.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Run Python functions (`.py(…)`) although the engine listens beyond loopback: they run
        /// with the engine's rights, so whoever holds a token runs code on this machine.
        #[arg(long)]
        allow_python: bool,
        #[command(subcommand)]
        action: Option<EngineAction>,
    },
    /// Set up cluster profiles: with no action, (re)run the setup for the default profile.
    Config {
        #[command(subcommand)]
        action: Option<ConfigAction>,
    },
    /// Create the seed's e-commerce sample tables.
    Demo {
        /// Number of orders (other tables scale with it).
        #[arg(long, default_value_t = 1000)]
        rows: usize,
        /// A saved connection to fill instead of the default SQLite file.
        #[arg(long, value_name = "CONNECTION")]
        into: Option<String>,
        /// Replace the sample tables even when flows use them (their change capture goes too).
        #[arg(long)]
        force: bool,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum EngineAction {
    /// Print the engine's address, state, data dir and access code.
    Status,
    /// Stop the running engine.
    Stop,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// List profiles (secrets masked).
    List,
    /// Add (or replace) a profile by answering the setup questions.
    Add { name: String },
    /// Remove a profile.
    Remove { name: String },
    /// Make a profile the default.
    Default { name: String },
    /// Import TapFlow's settings into a profile: FILE, else ~/.tapflow/config.ini, else an
    /// agent's application.yml (./.workDir or ./application.yml).
    Import {
        file: Option<PathBuf>,
        /// The profile's name.
        #[arg(long, default_value = "tapflow")]
        name: String,
    },
}
