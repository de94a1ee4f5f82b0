//! Integration tests: one binary, modules per area. See `common` for the harness.

mod bad_input;
mod chart;
mod common;
mod conformance;
mod corpus;
mod no_pii;
mod objects;
mod privilege;
mod reports;
mod secrets;
