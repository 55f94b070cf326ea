//! Alerting: rules (from `config.toml` and per organization) matched against
//! newly stored events off the ingest path, system rules about integrity,
//! destinations and ingest itself, and the alerts they raise.

pub mod engine;
pub mod rule;
pub mod system;

/// The cache kind of an organization's own rules: every change to them
/// invalidates it, so every instance picks the change up.
pub const RULES_CACHE_KIND: &str = "alert_rules";
