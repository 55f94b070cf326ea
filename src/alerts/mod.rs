//! Alerting: rules (from `config.toml` and per organization) matched against
//! newly stored events off the ingest path, system rules about integrity,
//! destinations and ingest itself, and the alerts they raise.

pub mod engine;
pub mod model;
pub mod rule;
pub mod system;
