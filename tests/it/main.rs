//! The one integration test binary: the real `tap` binary against the real embedded engine and
//! real database servers (started by `scripts/test`).

mod big_txn;
mod campaign;
mod cli;
mod cluster;
mod conformance;
mod ddl;
mod engine_mongo;
mod engine_mysql;
mod engine_postgres;
mod engine_sqlite;
mod examples;
mod exits;
mod flow_methods;
mod harness;
mod keys;
mod lookup;
mod matrix;
mod pipeline;
mod pre_images;
mod pty;
mod python_udf;
mod security;
mod seed_flows;
mod source_opts;
mod tapflow;
mod transcripts;
mod truth;
mod udf;
mod underneath;
mod verbs;
mod wire;
mod write_modes;
