//! Types of TapData's REST API shared by the client and the engine (DESIGN decision 12).
//! `task`: the task status; `dag`: the DAG with the rule for every field of every node type.

pub mod dag;
pub mod envelope;
pub mod task;
