//! The interactive shell and the verbs it parses before Rhai sees a line.

pub mod repl;
