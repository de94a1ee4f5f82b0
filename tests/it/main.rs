//! Integration tests: one binary, modules per area. See `common` for the harness.

mod bad_input;
mod chart;
mod common;
mod conformance;
mod corpus;
mod crash;
mod faults;
mod no_pii;
mod objects;
mod observe;
mod operations;
mod privilege;
mod proxy;
mod reports;
mod secrets;
mod shard;
