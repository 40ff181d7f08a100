//! What every buildstats role shares: configuration, the Postgres state (tenancy and tokens),
//! authentication, Kafka plumbing, and telemetry (logs, metrics, probes).

pub mod auth;
pub mod config;
pub mod db;
pub mod kafka;
pub mod retention;
pub mod telemetry;
pub mod tenancy;
pub mod tokens;

pub use config::Config;
