//! Configuration: compiled-in defaults (`config.toml`), an optional file, then
//! `AUDIT_WORKER__SECTION__KEY` environment variables, then one validation pass
//! that names the offending key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::db::tls::SslMode;
use crate::db::tls::{PgTls, TlsParams};
use crate::deliveries::network_policy::{Network, NetworkPolicy};

/// The documented defaults, compiled in so the binary runs without any file.
const DEFAULTS: &str = include_str!("../config.toml");

/// Prefix of the environment variables that override configuration keys;
/// `__` separates the section from the key.
pub const ENV_PREFIX: &str = "AUDIT_WORKER__";

/// File read when no `--config` is given and it exists in the working directory.
const LOCAL_FILE: &str = "config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {} does not exist", .0.display())]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid configuration: key `{key}`: {reason}")]
    Value { key: &'static str, reason: String },
}

/// Why a production configuration is refused, one line per reason.
#[derive(Debug, thiserror::Error)]
#[error("environment = \"production\" refuses this configuration:{}",
    .0.iter().map(|reason| format!("\n  - {reason}")).collect::<String>())]
pub struct ProductionRefusals(pub Vec<String>);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `production` refuses settings that are only safe on a developer's
    /// machine ([`Config::production_refusals`]).
    pub environment: Environment,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub ingest: IngestConfig,
    pub query: QueryConfig,
    pub integrity: IntegrityConfig,
    pub delivery: DeliveryConfig,
    pub partitions: PartitionsConfig,
    pub archive: ArchiveConfig,
    pub cache: CacheConfig,
    pub alerts: AlertsConfig,
    pub gdpr: GdprConfig,
    pub reports: ReportsConfig,
    pub streams: StreamsConfig,
    pub console: ConsoleConfig,
    pub operations: OperationsConfig,
    pub errors: ErrorsConfig,
    pub log: LogConfig,
    pub supervisor: SupervisorConfig,
}

/// Where the worker runs: on a developer's machine, anything goes (keys are
/// generated into the database); in production, `serve` refuses what would
/// leave the trail's keys or its connection exposed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub bind: SocketAddr,
    /// Largest accepted request body in bytes.
    pub max_body: usize,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub tls: HttpTlsConfig,
}

/// HTTPS on the listener: off (plain HTTP) while `cert` and `key` are empty.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    /// PEM certificate chain, the leaf first; re-read on SIGHUP.
    pub cert: PathBuf,
    /// PEM private key of the leaf; re-read on SIGHUP.
    pub key: PathBuf,
    /// Send `Strict-Transport-Security` (HTTPS only).
    pub hsts: bool,
    #[serde(with = "humantime_serde")]
    pub hsts_max_age: Duration,
    pub hsts_include_subdomains: bool,
}

impl HttpTlsConfig {
    /// Whether the listener serves HTTPS.
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }

    /// The `Strict-Transport-Security` value every answer carries, when HSTS is on.
    pub fn hsts_header(&self) -> Option<String> {
        (self.enabled() && self.hsts).then(|| {
            let mut value = format!("max-age={}", self.hsts_max_age.as_secs());
            if self.hsts_include_subdomains {
                value.push_str("; includeSubDomains");
            }
            value
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: PostgresUrl,
    pub pool_max_size: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub health_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: RedisUrl,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// After a failed or timed-out command, how long every call skips Redis
    /// before one probes it (see `redis_conn`).
    #[serde(with = "humantime_serde")]
    pub outage_backoff: Duration,
    /// The longest the back-off grows to, doubling at each failed probe.
    #[serde(with = "humantime_serde")]
    pub outage_backoff_max: Duration,
    /// PEM CA certificates a `rediss://` server must chain to; empty: the
    /// system's trusted roots.
    pub ca_file: PathBuf,
    /// PEM client certificate and key for servers that ask for one
    /// (`tls-auth-clients`); both or neither.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl RedisConfig {
    /// Whether the URL asks for TLS (`rediss://`), which cannot fall back to clear text.
    pub fn tls(&self) -> bool {
        self.url.as_str().starts_with("rediss://")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(with = "humantime_serde")]
    pub key_cache_ttl: Duration,
    /// At most this many KiB of verified keys in each worker's key cache.
    pub key_cache_max_kb: u64,
    #[serde(with = "humantime_serde")]
    pub key_grace_period: Duration,
    #[serde(with = "humantime_serde")]
    pub permission_cache_ttl: Duration,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// How often the noted uses of API keys are written to `last_used_at`.
    #[serde(with = "humantime_serde")]
    pub last_used_flush_interval: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub max_batch: usize,
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    #[serde(with = "humantime_serde")]
    pub group_commit_window: Duration,
    pub group_commit_max_events: usize,
    pub max_concurrent_writes: usize,
    pub breaker_failure_threshold: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_reset_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionsConfig {
    pub months_ahead: u32,
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    pub archive_batch_events: u32,
    pub archive_compression_level: i32,
}

/// Where new archives are written (existing ones are read where they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveStoreKind {
    /// `archive_storage`: JSON Lines, zstd, in PostgreSQL.
    Postgres,
    /// Parquet objects in an S3-compatible bucket.
    S3,
    /// Parquet files under a local (or mounted) directory.
    Directory,
}

impl ArchiveStoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::S3 => "s3",
            Self::Directory => "directory",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    pub store: ArchiveStoreKind,
    pub bucket: String,
    pub prefix: String,
    /// Empty: the AWS default for the region.
    pub endpoint: String,
    pub region: String,
    pub force_path_style: bool,
    pub directory: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    #[serde(with = "humantime_serde")]
    pub default_window: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrityConfig {
    pub commitment_key: Secret,
    pub signing_key: Secret,
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    pub encryption_key: Secret,
    /// Keys destination secrets may still be sealed under: opened, never
    /// used to seal (`keys rotate --kind encryption` re-seals under the current one).
    pub previous_encryption_keys: Vec<Secret>,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    pub max_in_flight: usize,
    pub max_in_flight_per_destination: usize,
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Networks deliveries may always reach, before any other rule (see
    /// [`crate::deliveries::network_policy`]).
    pub allowed_networks: Vec<Network>,
    /// Networks deliveries may not reach: a tenant's destination must never
    /// reach the worker's own networks (cloud metadata, private services).
    pub denied_networks: Vec<Network>,
    /// Loopback is refused unless this is true (tests, local development).
    pub allow_loopback: bool,
}

impl DeliveryConfig {
    /// The policy every destination's connections are held to.
    pub fn network_policy(&self) -> NetworkPolicy {
        NetworkPolicy::new(
            self.allowed_networks.clone(),
            self.denied_networks.clone(),
            self.allow_loopback,
        )
    }
}

/// A secret value, written inline (base64) or as a reference to where it
/// lives: `file:PATH` (the file's text, surrounding whitespace trimmed) or
/// `env:NAME` (an environment variable), so that production keys can come
/// from a secret store's mounted file or injected variable and never sit in
/// the configuration file. References are read when the configuration is
/// loaded: a missing file or variable is named, with its key, at start-up.
/// Printed as its reference, or `***` when inline; read only through
/// [`Secret::expose`].
#[derive(Clone, Default)]
pub struct Secret {
    /// `file:…` or `env:…` as written; `None` for an inline value.
    reference: Option<String>,
    value: String,
}

impl Secret {
    /// An inline value.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            reference: None,
            value: value.into(),
        }
    }

    /// Reads a value as written in the configuration: inline, `file:PATH` or `env:NAME`.
    pub fn resolve(written: &str) -> Result<Self, String> {
        let value = if let Some(path) = written.strip_prefix("file:") {
            std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {written}: {error}"))?
        } else if let Some(name) = written.strip_prefix("env:") {
            std::env::var(name).map_err(|error| format!("cannot read {written}: {error}"))?
        } else {
            return Ok(Self::new(written));
        };
        let value = value.trim().to_owned();
        if value.is_empty() {
            return Err(format!("{written} is empty"));
        }
        Ok(Self {
            reference: Some(written.to_owned()),
            value,
        })
    }

    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where the value comes from: `file:PATH`, `env:NAME`, or `None` when
    /// written inline (or not at all).
    pub fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }

    /// Nothing configured: the worker would generate the key into its database.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// What is printed in place of the value.
    fn printed(&self) -> &str {
        match (&self.reference, self.value.is_empty()) {
            (Some(reference), _) => reference,
            (None, true) => "",
            (None, false) => "***",
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let written = String::deserialize(deserializer)?;
        Self::resolve(&written).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.printed())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.printed())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    pub redis_prefix: String,
    pub l1_max_mb: u64,
    pub l1_max_entries: u64,
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    pub enabled: bool,
    pub retention_days: u32,
    #[serde(with = "humantime_serde")]
    pub system_check_interval: Duration,
    pub system_organization: String,
    #[serde(with = "humantime_serde")]
    pub breaker_open_after: Duration,
    pub ingest_error_rate: f64,
    pub ingest_min_requests: u64,
    #[serde(with = "humantime_serde")]
    pub ingest_latency: Duration,
    pub max_backlog_events: usize,
    /// Rules every organization gets, as written: what a rule is belongs to
    /// the alert area, which reads and checks them
    /// ([`configured`](crate::alerts::rule::configured)).
    #[serde(default)]
    pub rules: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GdprConfig {
    pub pseudonym_key: Secret,
    pub encryption_key: Secret,
    /// Keys pseudonym originals may still be sealed under (see
    /// `delivery.previous_encryption_keys`).
    pub previous_encryption_keys: Vec<Secret>,
    pub preserve_actions: Vec<String>,
    pub preserve_classifications: Vec<String>,
    pub batch_size: i64,
    pub max_delivery_bytes: u64,
}

/// The operators' tools under `/v1/admin` and `audit-worker db`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperationsConfig {
    /// The operators' organization: only its keys (with `system.operations`)
    /// reach `/v1/admin`; tenants never do, whatever their role.
    pub organization: String,
    /// Statements slower than this on average are reported as slow.
    #[serde(with = "humantime_serde")]
    pub slow_query_threshold: Duration,
    /// Tables smaller than this are never suggested an index.
    pub seq_scan_min_rows: i64,
    /// How often the database maintenance job runs; zero disables it.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// Dead over live tuples above which maintenance vacuums a table.
    pub vacuum_dead_ratio: f64,
    /// `statement_timeout` of an operator's EXPLAIN.
    #[serde(with = "humantime_serde")]
    pub explain_timeout: Duration,
}

/// Error tracking: what the worker buffers and writes to error_log / error_aggregation.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorsConfig {
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Distinct fingerprints held between flushes; errors of new ones beyond it are dropped (and counted).
    pub buffer_fingerprints: usize,
    /// error_log rows written per fingerprint per flush (the rest only count).
    pub log_rows_per_fingerprint: usize,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    pub max_attempts: i32,
    pub concurrency: usize,
    pub max_delivery_bytes: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub failed_batch_retry_after: Duration,
    pub tail_max_per_key: usize,
    #[serde(with = "humantime_serde")]
    pub tail_heartbeat: Duration,
    pub tail_buffer_events: usize,
}

/// The web console's sessions and sign-in.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A session ends this long after its sign-in, however active.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// A session ends after this long without a request.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Failed sign-ins per client address and minute; more get 429.
    pub failed_sign_ins_per_minute: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    #[serde(with = "humantime_serde")]
    pub restart_backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    pub restart_backoff_max: Duration,
    #[serde(with = "humantime_serde")]
    pub restart_reset_after: Duration,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
}

impl Config {
    /// The compiled-in defaults alone, ignoring files and the environment.
    pub fn defaults() -> Self {
        Self::extract(Figment::from(Toml::string(DEFAULTS)))
            .expect("the compiled-in config.toml is valid")
    }

    /// Defaults, then `path` (or `./config.toml` when present), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        match path {
            Some(path) if !path.is_file() => {
                return Err(ConfigError::MissingFile(path.to_path_buf()))
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(LOCAL_FILE).is_file() => {
                figment = figment.merge(Toml::file_exact(LOCAL_FILE))
            }
            None => {}
        }
        Self::extract(figment.merge(Env::prefixed(ENV_PREFIX).split("__")))
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that serde's types cannot express; every message names its key.
    /// Also run on a reloaded configuration merged with the values in force.
    /// The checks run in a fixed order: with several bad keys, the same one is named.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_timeouts()?;
        self.validate_ingest_and_delivery()?;
        self.validate_partitions()?;
        self.validate_archive()?;
        self.validate_keys()?;
        self.validate_limits()?;
        self.validate_alerts()?;
        self.validate_operations()?;
        self.validate_tls()?;
        self.validate_gdpr_reports_and_log()
    }

    /// TLS settings that belong together: a certificate with its key, and
    /// Redis TLS files only with a `rediss://` URL (they would be ignored).
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let set = |path: &Path| !path.as_os_str().is_empty();
        let listener = &self.http.tls;
        match (set(&listener.cert), set(&listener.key)) {
            (true, false) => return Err(invalid("http.tls.key", "is required with http.tls.cert")),
            (false, true) => return Err(invalid("http.tls.cert", "is required with http.tls.key")),
            _ => {}
        }
        if listener.hsts && !listener.enabled() {
            return Err(invalid(
                "http.tls.hsts",
                "needs http.tls.cert and http.tls.key: HSTS is only sent over HTTPS",
            ));
        }
        let redis = &self.redis;
        match (set(&redis.client_cert), set(&redis.client_key)) {
            (true, false) => {
                return Err(invalid(
                    "redis.client_key",
                    "is required with redis.client_cert",
                ))
            }
            (false, true) => {
                return Err(invalid(
                    "redis.client_cert",
                    "is required with redis.client_key",
                ))
            }
            _ => {}
        }
        if !redis.tls() {
            for (key, path) in [
                ("redis.ca_file", &redis.ca_file),
                ("redis.client_cert", &redis.client_cert),
            ] {
                if set(path) {
                    return Err(invalid(
                        key,
                        "is only used with a `rediss://` redis.url (TLS); this URL is clear text",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Reads and parses every TLS file the configuration names, so that a
    /// wrong path fails `serve` and `check-config` with the key and the file.
    /// Not part of [`validate`](Self::validate): a reload must not be refused
    /// because a certificate file is being replaced (the listener's is
    /// re-read on its own, and a bad one keeps the old in force).
    pub fn check_tls_files(&self) -> Result<(), ConfigError> {
        if self.http.tls.enabled() {
            crate::http::tls::certified_key(&self.http.tls.cert, &self.http.tls.key)
                .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        }
        let redis_files: [(&'static str, &Path, bool); 3] = [
            ("redis.ca_file", &self.redis.ca_file, true),
            ("redis.client_cert", &self.redis.client_cert, true),
            ("redis.client_key", &self.redis.client_key, false),
        ];
        for (key, path, certificates) in redis_files {
            if path.as_os_str().is_empty() {
                continue;
            }
            let checked = match certificates {
                true => crate::tls::load_certificates(path).map(drop),
                false => crate::tls::load_private_key(path).map(drop),
            };
            checked.map_err(|error| invalid(key, &error.to_string()))?;
        }
        Ok(())
    }

    /// Durations that must be longer than zero.
    fn validate_timeouts(&self) -> Result<(), ConfigError> {
        let positive = [
            ("http.shutdown_timeout", self.http.shutdown_timeout),
            ("database.connect_timeout", self.database.connect_timeout),
            ("database.health_timeout", self.database.health_timeout),
            ("database.startup_timeout", self.database.startup_timeout),
            ("redis.connect_timeout", self.redis.connect_timeout),
            ("redis.response_timeout", self.redis.response_timeout),
            ("redis.outage_backoff", self.redis.outage_backoff),
            (
                "supervisor.restart_backoff_min",
                self.supervisor.restart_backoff_min,
            ),
            (
                "supervisor.heartbeat_interval",
                self.supervisor.heartbeat_interval,
            ),
            (
                "auth.last_used_flush_interval",
                self.auth.last_used_flush_interval,
            ),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        Ok(())
    }

    /// Ingest, delivery and cache sizes.
    fn validate_ingest_and_delivery(&self) -> Result<(), ConfigError> {
        if self.http.max_body < 1024 {
            return Err(invalid("http.max_body", "must be at least 1024 bytes"));
        }
        if self.ingest.max_batch == 0 {
            return Err(invalid("ingest.max_batch", "must be at least 1"));
        }
        if self.ingest.group_commit_max_events < self.ingest.max_batch {
            return Err(invalid(
                "ingest.group_commit_max_events",
                "must not be smaller than ingest.max_batch",
            ));
        }
        if self.ingest.max_concurrent_writes == 0
            || self.ingest.max_concurrent_writes as u32 >= self.database.pool_max_size
        {
            return Err(invalid(
                "ingest.max_concurrent_writes",
                "must be at least 1 and below database.pool_max_size (queries need connections too)",
            ));
        }
        if self.ingest.breaker_failure_threshold == 0 {
            return Err(invalid(
                "ingest.breaker_failure_threshold",
                "must be at least 1",
            ));
        }
        if self.delivery.max_in_flight == 0 {
            return Err(invalid("delivery.max_in_flight", "must be at least 1"));
        }
        if !(1..=self.delivery.max_in_flight).contains(&self.delivery.max_in_flight_per_destination)
        {
            return Err(invalid(
                "delivery.max_in_flight_per_destination",
                "must be between 1 and delivery.max_in_flight",
            ));
        }
        if self.cache.l1_max_mb == 0 || self.cache.l1_max_entries == 0 {
            return Err(invalid(
                "cache.l1_max_mb",
                "the L1 cache needs at least 1 MiB and 1 entry",
            ));
        }
        if self.cache.default_ttl.is_zero() {
            return Err(invalid("cache.default_ttl", "must be positive"));
        }
        Ok(())
    }

    /// Partition maintenance and archival.
    fn validate_partitions(&self) -> Result<(), ConfigError> {
        if self.partitions.months_ahead > 120 {
            return Err(invalid("partitions.months_ahead", "must be at most 120"));
        }
        if self.partitions.maintenance_interval.is_zero() {
            return Err(invalid(
                "partitions.maintenance_interval",
                "must be positive",
            ));
        }
        if self.partitions.archive_batch_events == 0 {
            return Err(invalid(
                "partitions.archive_batch_events",
                "must be at least 1",
            ));
        }
        if !(1..=19).contains(&self.partitions.archive_compression_level) {
            return Err(invalid(
                "partitions.archive_compression_level",
                "must be between 1 and 19",
            ));
        }
        Ok(())
    }

    /// The archive store: what its kind needs is given, and well formed.
    fn validate_archive(&self) -> Result<(), ConfigError> {
        let archive = &self.archive;
        if archive.prefix.starts_with('/') || archive.prefix.ends_with('/') {
            return Err(invalid(
                "archive.prefix",
                "must not begin or end with `/` (it is joined to the object names with one)",
            ));
        }
        if !archive.endpoint.is_empty() {
            let url = url::Url::parse(&archive.endpoint)
                .map_err(|error| invalid("archive.endpoint", &error.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid("archive.endpoint", "must be an http(s) URL"));
            }
        }
        match archive.store {
            ArchiveStoreKind::S3 if archive.bucket.is_empty() => Err(invalid(
                "archive.bucket",
                "is required when archive.store is \"s3\"",
            )),
            ArchiveStoreKind::S3 if archive.region.is_empty() => Err(invalid(
                "archive.region",
                "is required when archive.store is \"s3\"",
            )),
            ArchiveStoreKind::Directory if !archive.directory.is_absolute() => Err(invalid(
                "archive.directory",
                "must be an absolute path when archive.store is \"directory\"",
            )),
            _ => Ok(()),
        }
    }

    /// The 32-byte keys, each with its key: what production requires
    /// configured, and what must decode to 32 bytes when given.
    fn keys(&self) -> [(&'static str, &Secret); 5] {
        [
            ("integrity.commitment_key", &self.integrity.commitment_key),
            ("integrity.signing_key", &self.integrity.signing_key),
            ("delivery.encryption_key", &self.delivery.encryption_key),
            ("gdpr.pseudonym_key", &self.gdpr.pseudonym_key),
            ("gdpr.encryption_key", &self.gdpr.encryption_key),
        ]
    }

    /// The earlier encryption keys, each list with its key.
    fn previous_keys(&self) -> [(&'static str, &[Secret]); 2] {
        [
            (
                "delivery.previous_encryption_keys",
                &self.delivery.previous_encryption_keys,
            ),
            (
                "gdpr.previous_encryption_keys",
                &self.gdpr.previous_encryption_keys,
            ),
        ]
    }

    /// Keys, which are empty (generated) or 32 bytes; previous keys, which
    /// are 32 bytes.
    fn validate_keys(&self) -> Result<(), ConfigError> {
        let is_key = |value: &Secret| {
            base64::engine::general_purpose::STANDARD
                .decode(value.expose())
                .is_ok_and(|bytes| bytes.len() == 32)
        };
        for (key, value) in self.keys() {
            if !value.is_empty() && !is_key(value) {
                return Err(invalid(key, "must be the base64 encoding of 32 bytes"));
            }
        }
        for (key, values) in self.previous_keys() {
            if !values.iter().all(is_key) {
                return Err(invalid(key, "must hold base64 encodings of 32 bytes"));
            }
        }
        Ok(())
    }

    /// In production, refuses what [`Self::production_refusals`] lists.
    pub fn check_production(&self) -> Result<(), ProductionRefusals> {
        let refusals = match self.environment {
            Environment::Production => self.production_refusals(),
            Environment::Development => Vec::new(),
        };
        if refusals.is_empty() {
            Ok(())
        } else {
            Err(ProductionRefusals(refusals))
        }
    }

    /// Why `serve` refuses this configuration when `environment` is
    /// `production`, one line per reason; empty when nothing is refused.
    fn production_refusals(&self) -> Vec<String> {
        let mut refusals: Vec<String> = self
            .keys()
            .into_iter()
            .filter(|(_, value)| value.is_empty())
            .map(|(key, _)| {
                format!(
                    "{key} is not configured: it would be generated into the database it protects \
                     (give it as file:PATH or env:NAME)"
                )
            })
            .collect();
        refusals.extend(self.database.url.production_refusal());
        if !self.redis.tls() && !self.redis.url.is_loopback() {
            refusals.push(format!(
                "redis.url reaches a host other than this machine in clear text: use rediss:// ({})",
                self.redis.url
            ));
        }
        refusals
    }

    /// Rate limits, the pool and back-offs.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        if self.auth.rate_limit_per_second == 0 {
            return Err(invalid("auth.rate_limit_per_second", "must be at least 1"));
        }
        if self.auth.rate_limit_burst == 0 {
            return Err(invalid("auth.rate_limit_burst", "must be at least 1"));
        }
        if self.auth.key_cache_max_kb == 0 {
            return Err(invalid("auth.key_cache_max_kb", "must be at least 1"));
        }
        if self.database.pool_max_size == 0 {
            return Err(invalid("database.pool_max_size", "must be at least 1"));
        }
        if self.redis.outage_backoff_max < self.redis.outage_backoff {
            return Err(invalid(
                "redis.outage_backoff_max",
                "must not be shorter than redis.outage_backoff",
            ));
        }
        if self.supervisor.restart_backoff_max < self.supervisor.restart_backoff_min {
            return Err(invalid(
                "supervisor.restart_backoff_max",
                "must not be shorter than supervisor.restart_backoff_min",
            ));
        }
        if self.console.idle_timeout.is_zero()
            || self.console.idle_timeout > self.console.session_ttl
        {
            return Err(invalid(
                "console.idle_timeout",
                "must be more than 0 and at most console.session_ttl",
            ));
        }
        if self.console.failed_sign_ins_per_minute == 0 {
            return Err(invalid(
                "console.failed_sign_ins_per_minute",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// GDPR, reports and the log filter.
    fn validate_gdpr_reports_and_log(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.gdpr.batch_size) {
            return Err(invalid("gdpr.batch_size", "must be between 1 and 100000"));
        }
        if let Some(classification) = self
            .gdpr
            .preserve_classifications
            .iter()
            .find(|c| !crate::events::CLASSIFICATIONS.contains(&c.as_str()))
        {
            return Err(ConfigError::Invalid(format!(
                "key `gdpr.preserve_classifications`: {classification} is not one of {}",
                crate::events::CLASSIFICATIONS.join(", ")
            )));
        }
        if self.streams.poll_interval.is_zero() {
            return Err(invalid("streams.poll_interval", "must be longer than zero"));
        }
        if self.streams.tail_heartbeat.is_zero() {
            return Err(invalid(
                "streams.tail_heartbeat",
                "must be longer than zero",
            ));
        }
        if self.streams.tail_max_per_key == 0 || self.streams.tail_buffer_events == 0 {
            return Err(invalid(
                "streams.tail_max_per_key",
                "streams.tail_max_per_key and streams.tail_buffer_events must be at least 1",
            ));
        }
        if self.reports.poll_interval.is_zero() {
            return Err(invalid("reports.poll_interval", "must be longer than zero"));
        }
        if self.reports.lease < Duration::from_secs(10) {
            return Err(invalid("reports.lease", "must be at least 10s"));
        }
        if !(1..=100).contains(&self.reports.max_attempts) {
            return Err(invalid("reports.max_attempts", "must be between 1 and 100"));
        }
        if !(1..=64).contains(&self.reports.concurrency) {
            return Err(invalid("reports.concurrency", "must be between 1 and 64"));
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", &error.to_string()));
        }
        Ok(())
    }
}

impl Config {
    fn validate_operations(&self) -> Result<(), ConfigError> {
        let operations = &self.operations;
        if operations.seq_scan_min_rows < 0 {
            return Err(invalid(
                "operations.seq_scan_min_rows",
                "must not be negative",
            ));
        }
        if !(operations.vacuum_dead_ratio > 0.0 && operations.vacuum_dead_ratio <= 100.0) {
            return Err(invalid(
                "operations.vacuum_dead_ratio",
                "must be a ratio above 0 (and at most 100)",
            ));
        }
        if operations.explain_timeout.is_zero() {
            return Err(invalid("operations.explain_timeout", "must be positive"));
        }
        let errors = &self.errors;
        if errors.flush_interval.is_zero() {
            return Err(invalid("errors.flush_interval", "must be positive"));
        }
        if errors.buffer_fingerprints == 0 {
            return Err(invalid("errors.buffer_fingerprints", "must be at least 1"));
        }
        if errors.log_rows_per_fingerprint > 100 {
            return Err(invalid(
                "errors.log_rows_per_fingerprint",
                "must be at most 100",
            ));
        }
        if errors.retention.is_zero() {
            return Err(invalid("errors.retention", "must be positive"));
        }
        Ok(())
    }

    /// The secret keys (and URLs, whose passwords print masked) whose real
    /// values differ between `self` and `other`: a comparison of the printed
    /// forms cannot see a changed secret.
    pub(crate) fn secret_keys_differing(&self, other: &Config) -> Vec<&'static str> {
        let urls = [
            (
                "database.url",
                self.database.url.raw.as_str(),
                other.database.url.raw.as_str(),
            ),
            (
                "redis.url",
                self.redis.url.as_str(),
                other.redis.url.as_str(),
            ),
        ];
        let keys = self
            .keys()
            .into_iter()
            .zip(other.keys())
            .map(|((key, mine), (_, theirs))| (key, mine.expose(), theirs.expose()));
        let mut differing: Vec<&'static str> = urls
            .into_iter()
            .chain(keys)
            .filter(|(_, mine, theirs)| mine != theirs)
            .map(|(key, _, _)| key)
            .collect();
        for ((key, mine), (_, theirs)) in
            self.previous_keys().into_iter().zip(other.previous_keys())
        {
            if mine
                .iter()
                .map(Secret::expose)
                .ne(theirs.iter().map(Secret::expose))
            {
                differing.push(key);
            }
        }
        differing
    }

    fn validate_alerts(&self) -> Result<(), ConfigError> {
        let alerts = &self.alerts;
        if alerts.retention_days == 0 {
            return Err(invalid("alerts.retention_days", "must be at least 1"));
        }
        if alerts.system_check_interval.is_zero() {
            return Err(invalid("alerts.system_check_interval", "must be positive"));
        }
        if alerts.system_organization.trim().is_empty() || alerts.system_organization.len() > 255 {
            return Err(invalid(
                "alerts.system_organization",
                "must be 1 to 255 characters",
            ));
        }
        if !(0.0..=1.0).contains(&alerts.ingest_error_rate) {
            return Err(invalid(
                "alerts.ingest_error_rate",
                "must be a fraction between 0 and 1",
            ));
        }
        if alerts.max_backlog_events == 0 {
            return Err(invalid("alerts.max_backlog_events", "must be at least 1"));
        }
        Ok(())
    }
}

/// Names each bad key in lower case as `config.toml` spells it (`http.bind`),
/// with where its value came from (a file, or the environment variable's name).
fn describe(errors: figment::Error) -> ConfigError {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|error| {
            let key = error.path.join(".").to_lowercase();
            let origin = match error.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
                _ if error
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.name.contains("environment")) =>
                {
                    // A list's element (`denied_networks.0`) comes from the
                    // variable of the whole list.
                    let variable: Vec<&str> = error
                        .path
                        .iter()
                        .map(String::as_str)
                        .take_while(|part| !part.chars().all(|c| c.is_ascii_digit()))
                        .collect();
                    format!(" (from {ENV_PREFIX}{})", variable.join("__").to_uppercase())
                }
                _ => String::new(),
            };
            if key.is_empty() {
                format!("{}{origin}", error.kind)
            } else {
                format!("key `{key}`{origin}: {}", error.kind)
            }
        })
        .collect();
    ConfigError::Invalid(lines.join("; "))
}

fn invalid(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::Value {
        key,
        reason: reason.to_owned(),
    }
}

/// A PostgreSQL URL, parsed when the configuration is read so that a typo is
/// reported with its key; printed without its password.
///
/// libpq's TLS parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`)
/// are taken out before tokio-postgres parses the rest (it knows neither the
/// verifying modes nor the files), and their files read at once
/// ([`PgTls::load`]); `raw` keeps them, for display and [`with_database`](Self::with_database).
#[derive(Clone)]
pub struct PostgresUrl {
    raw: String,
    parsed: tokio_postgres::Config,
    tls: Arc<PgTls>,
}

impl PostgresUrl {
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.parsed
    }

    /// The TLS settings every connection to this URL uses.
    pub fn tls(&self) -> &PgTls {
        &self.tls
    }

    /// The `sslmode` in force: libpq's default `prefer` when the URL names none.
    pub fn ssl_mode(&self) -> SslMode {
        self.tls.mode()
    }

    /// Whether every host is this machine: a Unix socket, `localhost` or a
    /// loopback address (and so is every `hostaddr`). False for a URL without hosts.
    pub fn is_loopback_only(&self) -> bool {
        use tokio_postgres::config::Host;
        let hosts = self.parsed.get_hosts();
        !hosts.is_empty()
            && hosts.iter().all(|host| match host {
                Host::Unix(_) => true,
                Host::Tcp(name) => loopback_host(name),
            })
            && self
                .parsed
                .get_hostaddrs()
                .iter()
                .all(|ip| ip.is_loopback())
    }

    /// The hosts, for messages (`db1,db2`; a socket folder as a path).
    pub fn hosts(&self) -> String {
        use tokio_postgres::config::Host;
        let hosts: Vec<String> = self
            .parsed
            .get_hosts()
            .iter()
            .map(|host| match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        hosts.join(",")
    }

    /// The database this URL names (`postgres` when it names none, as libpq does).
    pub fn database_name(&self) -> &str {
        self.parsed.get_dbname().unwrap_or("postgres")
    }

    /// Why production refuses this URL: TLS not required while a host is
    /// not this machine (the connection would carry PHI in clear, or to
    /// whoever answers).
    fn production_refusal(&self) -> Option<String> {
        (self.ssl_mode() < SslMode::Require && !self.is_loopback_only()).then(|| {
            format!(
                "database.url reaches a host other than this machine without sslmode=require or stronger ({self})"
            )
        })
    }

    /// The same server, credentials and TLS settings, another database.
    pub fn with_database(&self, name: &str) -> Self {
        let mut parsed = self.parsed.clone();
        parsed.dbname(name);
        let raw = match self.raw.split_once('?') {
            Some((base, query)) => format!("{}/{name}?{query}", strip_path(base)),
            None => format!("{}/{name}", strip_path(&self.raw)),
        };
        Self {
            raw,
            parsed,
            tls: self.tls.clone(),
        }
    }
}

/// Drops the `/database` part of a `postgres://user@host:port/database` URL.
fn strip_path(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// Takes libpq's TLS parameters out of a connection string, URL
/// (`postgres://…?sslmode=verify-full&…`) or key/value (`host=… sslmode=…`):
/// what remains is for tokio-postgres.
fn split_tls_params(raw: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
        let mut rest = String::with_capacity(raw.len());
        let mut copied = 0;
        for (span, name, value) in key_value_pairs(raw)? {
            if params.take(&name, value) {
                rest.push_str(&raw[copied..span.start]);
                copied = span.end;
            }
        }
        rest.push_str(&raw[copied..]);
        return Ok((rest, params));
    }
    let Some((base, query)) = raw.split_once('?') else {
        return Ok((raw.to_owned(), params));
    };
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|error| format!("parameter `{text}`: {error}"))
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !params.take(&decode(name)?, decode(value)?) {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

/// The `name = value` pairs of a key/value connection string, each with the
/// bytes it spans, values unquoted and unescaped as libpq reads them. Written
/// here because tokio-postgres keeps its parser private.
fn key_value_pairs(raw: &str) -> Result<Vec<(std::ops::Range<usize>, String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = raw.char_indices().peekable();
    let skip_spaces = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_spaces(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            return Ok(pairs);
        };
        let mut name = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            name.push(c);
        }
        skip_spaces(&mut chars);
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!("`{name}` has no `=` and value"));
        }
        skip_spaces(&mut chars);
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        let mut end = raw.len();
        let mut closed = !quoted;
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, escaped)| escaped)),
                '\'' if quoted => {
                    closed = true;
                    end = at + 1;
                    break;
                }
                c if !quoted && c.is_whitespace() => {
                    end = at;
                    break;
                }
                c => value.push(c),
            }
        }
        if !closed {
            return Err(format!("the quoted value of `{name}` is not closed"));
        }
        pairs.push((start..end, name, value));
    }
}

impl FromStr for PostgresUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let (rest, params) = split_tls_params(raw)?;
        let mut parsed = tokio_postgres::Config::from_str(&rest).map_err(|e| e.to_string())?;
        let tls = PgTls::load(&params).map_err(|e| e.to_string())?;
        parsed.ssl_mode(tls.driver_mode());
        Ok(Self {
            raw: raw.to_owned(),
            parsed,
            tls: Arc::new(tls),
        })
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_password(&self.raw))
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// A Redis URL, checked when the configuration is read; printed without its password.
#[derive(Clone)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A Unix socket, or a TCP host on this machine.
    fn is_loopback(&self) -> bool {
        match url::Url::parse(&self.0) {
            Ok(url) if url.scheme().contains("unix") => true,
            Ok(url) => url.host_str().is_some_and(loopback_host),
            Err(_) => false,
        }
    }
}

/// `localhost` or a loopback address (IPv6 in brackets or not).
fn loopback_host(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        redis::Client::open(raw).map_err(|e| e.to_string())?;
        Ok(Self(raw.to_owned()))
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_password(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
pub(crate) fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

macro_rules! string_backed_serde {
    ($type:ty) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    };
}

string_backed_serde!(PostgresUrl);
string_backed_serde!(RedisUrl);
string_backed_serde!(Network);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let config = Config::defaults();
        assert_eq!(config.http.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(
            config.database.url.to_string(),
            "postgres://postgres@127.0.0.1:5432/audit_worker"
        );
        assert_eq!(config.redis.url.as_str(), "redis://127.0.0.1:6379/0");
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn passwords_are_masked_when_printed() {
        let url: PostgresUrl = "postgres://app:s3cret@db:5432/audit".parse().unwrap();
        assert_eq!(url.to_string(), "postgres://app:***@db:5432/audit");
        let url: RedisUrl = "redis://:hunter2@cache:6379/0".parse().unwrap();
        assert_eq!(url.to_string(), "redis://:***@cache:6379/0");
    }

    #[test]
    fn with_database_swaps_only_the_database_name() {
        let url: PostgresUrl = "postgres://app@db:5432/audit?connect_timeout=3"
            .parse()
            .unwrap();
        let admin = url.with_database("postgres");
        assert_eq!(admin.database_name(), "postgres");
        assert_eq!(
            admin.to_string(),
            "postgres://app@db:5432/postgres?connect_timeout=3"
        );
        assert_eq!(url.database_name(), "audit");
    }

    #[test]
    fn tls_parameters_are_taken_out_of_the_url_and_kept_for_display() {
        let url: PostgresUrl =
            "postgres://app@db:5432/audit?sslmode=verify-full&sslrootcert=system&connect_timeout=3"
                .parse()
                .unwrap();
        assert_eq!(url.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(
            url.config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(
            url.config().get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        let admin = url.with_database("postgres");
        assert_eq!(admin.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(
            admin.to_string(),
            "postgres://app@db:5432/postgres?sslmode=verify-full&sslrootcert=system&connect_timeout=3"
        );

        let plain: PostgresUrl = "postgres://app@db/audit".parse().unwrap();
        assert_eq!(plain.ssl_mode(), SslMode::Prefer);
        let disabled: PostgresUrl = "postgres://app@db/audit?sslmode=disable".parse().unwrap();
        assert_eq!(
            disabled.config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn tls_parameters_are_taken_out_of_a_key_value_string() {
        let (rest, params) = split_tls_params(
            "host=db sslmode = verify-ca sslrootcert='/etc/my ca/root.crt' dbname=audit sslkey=/k\\ey",
        )
        .unwrap();
        assert_eq!(params.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(params.sslrootcert.as_deref(), Some("/etc/my ca/root.crt"));
        assert_eq!(
            params.sslkey.as_deref(),
            Some("/key"),
            "a backslash escapes"
        );
        let parsed = tokio_postgres::Config::from_str(&rest).unwrap();
        assert_eq!(parsed.get_dbname(), Some("audit"));
        assert!(split_tls_params("host=db sslmode").is_err());
        assert!(split_tls_params("host=db sslrootcert='/open").is_err());
    }

    #[test]
    fn a_bad_tls_parameter_names_the_url_key_and_the_file() {
        for (url, expected) in [
            ("postgres://h/d?sslmode=verify-full", "needs sslrootcert"),
            ("postgres://h/d?sslmode=allow", "sslmode `allow`"),
            (
                "postgres://h/d?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
                "sslrootcert: cannot read /nonexistent/ca.pem",
            ),
        ] {
            let figment = Figment::from(Toml::string(DEFAULTS))
                .merge(Toml::string(&format!("[database]\nurl = \"{url}\"\n")));
            let error = Config::extract(figment).unwrap_err().to_string();
            assert!(error.contains("database.url"), "{error}");
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn loopback_only_means_every_host_is_this_machine() {
        for (url, loopback) in [
            ("postgres://u@127.0.0.1/d", true),
            ("postgres://u@localhost:5433/d", true),
            ("postgres://u@[::1]/d", true),
            ("postgres://u@%2Frun%2Fpostgresql/d", true),
            ("postgres://u@localhost,db.internal/d", false),
            ("postgres://u@db.internal/d", false),
            ("postgres://u@localhost/d?hostaddr=10.0.0.5", false),
        ] {
            let url: PostgresUrl = url.parse().unwrap();
            assert_eq!(url.is_loopback_only(), loopback, "{url}");
        }
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let figment = Figment::from(Toml::string(DEFAULTS))
            .merge(Toml::string("[database]\npool_max_size = 0\n"));
        let error = Config::extract(figment).unwrap_err().to_string();
        assert!(error.contains("database.pool_max_size"), "{error}");

        let figment = Figment::from(Toml::string(DEFAULTS))
            .merge(Toml::string("[http]\nbind = \"not an address\"\n"));
        let error = Config::extract(figment).unwrap_err().to_string();
        assert!(error.contains("http.bind"), "{error}");
    }

    #[test]
    fn a_bad_network_names_its_key() {
        for (key, toml) in [
            (
                "delivery.denied_networks",
                "[delivery]\ndenied_networks = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
            ),
            (
                "delivery.allowed_networks",
                "[delivery]\nallowed_networks = [\"intranet\"]\n",
            ),
        ] {
            let figment = Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(toml));
            let error = Config::extract(figment).unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
            assert!(error.contains("CIDR"), "{error}");
        }
        let figment = Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(
            "[delivery]\nallowed_networks = [\"10.20.0.0/16\"]\nallow_loopback = true\n",
        ));
        let delivery = Config::extract(figment).unwrap().delivery;
        assert_eq!(delivery.allowed_networks[0].to_string(), "10.20.0.0/16");
        assert!(delivery.allow_loopback);
        assert!(!Config::defaults().delivery.allow_loopback);
    }

    /// TLS keys that only make sense together are refused alone, naming
    /// the key to fix.
    #[test]
    fn tls_settings_are_refused_when_incomplete_or_ignored() {
        for (toml, key) in [
            ("[http.tls]\ncert = \"/etc/aw/cert.pem\"\n", "http.tls.key"),
            ("[http.tls]\nkey = \"/etc/aw/key.pem\"\n", "http.tls.cert"),
            ("[http.tls]\nhsts = true\n", "http.tls.hsts"),
            (
                "[redis]\nurl = \"rediss://cache:6380/0\"\nclient_cert = \"/c.pem\"\n",
                "redis.client_key",
            ),
            ("[redis]\nca_file = \"/etc/aw/ca.pem\"\n", "redis.ca_file"),
            (
                "[redis]\nclient_cert = \"/c.pem\"\nclient_key = \"/k.pem\"\n",
                "redis.client_cert",
            ),
        ] {
            let figment = Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(toml));
            let error = Config::extract(figment).unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")), "{toml}: {error}");
        }
        let figment = Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(
            "[redis]\nurl = \"rediss://cache:6380/0\"\nca_file = \"/etc/aw/ca.pem\"\n\
             [http.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nhsts = true\n\
             hsts_max_age = \"1day\"\nhsts_include_subdomains = true\n",
        ));
        let config = Config::extract(figment).unwrap();
        assert!(config.redis.tls());
        assert_eq!(
            config.http.tls.hsts_header().as_deref(),
            Some("max-age=86400; includeSubDomains")
        );
        let error = config.check_tls_files().unwrap_err().to_string();
        assert!(
            error.contains("`http.tls.cert`") && error.contains("/c.pem"),
            "{error}"
        );
        assert!(!Config::defaults().http.tls.enabled());
        assert_eq!(Config::defaults().http.tls.hsts_header(), None);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let figment =
            Figment::from(Toml::string(DEFAULTS)).merge(Toml::string("[http]\nbnid = \"x\"\n"));
        let error = Config::extract(figment).unwrap_err().to_string();
        assert!(error.contains("bnid"), "{error}");
    }
}
