//! `tap`: programmable real-time data pipelines.
//!
//! Dependencies point down: shell → script → client; engine → connectors → model.

pub mod api;
pub mod app;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod connectors;
pub mod engine;
pub mod error;
pub mod model;
pub mod output;
pub mod script;
pub mod shell;
