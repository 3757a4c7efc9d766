//! Types of TapData's REST API shared by the client and the engine (DESIGN decision 12).
//! `task`: a task and its status; `connection`: a connection; `dag`: the DAG with the rule for
//! every field of every node type; `steps`: the processor nodes the engine runs; `envelope`: every answer; `metadata`: a table's
//! MetadataInstances document.

pub mod connection;
pub mod dag;
pub mod envelope;
pub mod metadata;
pub mod steps;
pub mod task;
