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
