//! Types of TapData's REST API shared by the client and the engine (DESIGN decision 12).
//! This starts with the task's status; the documents move here step by step.

pub mod task;
