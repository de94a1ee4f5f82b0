//! Integration tests: one binary, modules per area. See `common` for the harness.

mod chart;
mod common;
mod conformance;
mod reports;
