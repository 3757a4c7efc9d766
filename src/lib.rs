//! `tap`: programmable real-time data pipelines.
//!
//! Dependencies point down: shell → script → client → api; engine → connectors → model.

pub mod connectors;
pub mod engine;
pub mod error;
pub mod model;
pub mod output;
