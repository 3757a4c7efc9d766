//! Types of TapData's REST API shared by the client and the engine (DESIGN decision 12).
//! `task`: a task and its status; `connection`: a connection; `dag`: the DAG with the rule for
//! every field of every node type; `steps`: the processor nodes the engine runs; `envelope`: every answer; `log`: a MonitoringLogs item;
//! `metadata`: a table's MetadataInstances document; `metrics`: a task's metrics sample.

pub mod connection;
pub mod dag;
pub mod envelope;
pub mod log;
pub mod metadata;
pub mod metrics;
pub mod rules;
pub mod steps;
pub mod task;
