//! `lapse`: a retention-enforcement worker. See `ARCHITECTURE.md` for the map.

pub mod config;
pub mod connector;
pub mod demo;
pub mod diag;
pub mod engine;
pub mod evidence;
pub mod holds;
pub mod integrity;
pub mod intent;
pub mod metrics;
pub mod objstore;
pub mod period;
pub mod policy;
pub mod progress;
pub mod report;
pub mod reporting;
pub mod schedule;
pub mod shard;
pub mod sql;
pub mod validate;
pub mod value;
pub mod yamlpos;
