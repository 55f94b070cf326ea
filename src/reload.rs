//! Configuration reload (SIGHUP, or [`ConfigReloader::reload`] from a test):
//! the file is read again, validated, compared with the configuration in
//! force, and the keys that can change at run time are applied and recorded
//! in `config_change_event`, one row per changed key.
//!
//! Live keys: `[alerts]` (rules and thresholds; not `system_check_interval`,
//! which paces a timer armed at start), `auth.rate_limit_per_second` and
//! `auth.rate_limit_burst`, `ingest.max_batch` and `ingest.max_clock_skew`
//! (checked per request before anything is stored, so a change cannot tear a
//! batch in flight), and `log.level`. Every other changed key is logged as
//! needing a restart and not applied: pools, sockets, actors, keys and caches
//! are built from it once.
//!
//! Why a `tokio::sync::watch` channel and not a message per actor: the
//! `Arc<Config>` handed out at start stays the read-only view of restart-only
//! keys, and the few readers of live keys (the AlertActor, the ingest handler)
//! hold a [`LiveConfig`] receiver and read the current value when they use it.
//! A supervised actor restarted later is built from the receiver too, so it
//! starts with the reloaded values rather than those of the start — which a
//! one-off message would lose. The rate limiter is the exception: its quota
//! lives inside `governor`'s state, so the reloader swaps it explicitly
//! ([`Authenticator::set_rate_limit`]).
//!
//! A new configuration that does not parse or validate — alone, or combined
//! with the restart-only values still in force — is refused: logged with the
//! reason, the old configuration kept, and one row recorded with the field the
//! error names (`*` when it names none) and reason `rejected: …`, so the
//! history shows the attempt. A change that cannot be recorded is not applied
//! either (every applied change has its row); the reload can simply be repeated.
//!
//! When the listener serves HTTPS, every reload also re-reads its certificate
//! files (at the paths in force: changing the paths needs a restart) before
//! the configuration, whatever becomes of the latter. A new certificate is
//! presented from the next handshake on ([`ServerCertificate`]) and recorded
//! as a row for `http.tls.cert` (fingerprints before and after); files that
//! do not load keep the certificate in force, and are logged, recorded
//! (`rejected: …`) and counted as a rejected reload. Unlike a key, a
//! certificate is replaced even when its row cannot be written: a certificate
//! about to expire must not wait for the database.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError};
use crate::db::config_changes::{self, NewChange};
use crate::db::{DbError, PgPool};
use crate::events::recorded::{self, Record, RecordError};
use crate::http::tls::{ServerCertificate, Swap};
use crate::integrity::keys::IntegrityKeys;
use crate::metrics::Metrics;
use crate::telemetry;

/// The configuration in force, for the readers of live keys: read it where it
/// is used (`live.borrow()`), never keep a copy of a live value.
pub type LiveConfig = watch::Receiver<Arc<Config>>;

/// Keys (or, ending in `.`, sections) applied at run time.
const LIVE: &[&str] = &[
    "alerts.",
    "auth.rate_limit_per_second",
    "auth.rate_limit_burst",
    "ingest.max_batch",
    "ingest.max_clock_skew",
    "log.level",
];
/// Keys of a live section that still need a restart.
const RESTART_ONLY: &[&str] = &["alerts.system_check_interval"];
/// What the masked values show instead of a secret.
const MASK: &str = "***";
/// Parts of a key name that mark its value as secret.
const SECRET_WORDS: &[&str] = &["key", "secret", "password", "token"];
/// The `reason` column is `varchar(255)`.
const MAX_REASON_CHARS: usize = 255;
const APPLIED_REASON: &str = "applied at run time";
const CERTIFICATE_REASON: &str = "certificate replaced: presented to new connections";

pub fn is_live(field: &str) -> bool {
    !RESTART_ONLY.contains(&field)
        && LIVE.iter().any(|live| match live.strip_suffix('.') {
            Some(section) => field.starts_with(live) || field == section,
            None => field == *live,
        })
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the new configuration is refused, the old one kept: {0}")]
    Rejected(String),
    #[error("the change could not be recorded, so it was not applied: {0}")]
    Record(#[from] RecordError),
}

/// One changed key, values as JSON with secrets masked.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub field: String,
    pub previous: Value,
    pub new: Value,
}

/// What a reload did.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    /// Live keys applied (and recorded); empty when nothing live changed.
    pub applied: Vec<Change>,
    /// Changed keys that need a restart (not applied).
    pub needs_restart: Vec<Change>,
    pub previous_version: String,
    pub new_version: String,
    /// What became of the listener's certificate; `None` without HTTPS.
    pub certificate: Option<CertificateReload>,
}

/// The listener's certificate after a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateReload {
    /// The files hold the certificate already in force.
    Unchanged,
    /// A new certificate is presented from now on (SHA-256 fingerprints of the leaf).
    Replaced { previous: String, new: String },
    /// The files did not load: the certificate in force stays.
    Kept { reason: String },
}

/// Reads the configuration again and applies what may change at run time.
pub struct ConfigReloader {
    /// The `--config` file; `None`: `./config.toml` when present, as at start.
    source: Option<PathBuf>,
    live: watch::Sender<Arc<Config>>,
    auth: Arc<Authenticator>,
    pool: PgPool,
    keys: Arc<IntegrityKeys>,
    metrics: Arc<Metrics>,
    /// The listener's certificate, re-read by every reload; `None` without HTTPS.
    certificate: Option<Arc<ServerCertificate>>,
    /// One reload at a time: two SIGHUPs in a row must not interleave their
    /// compare-record-apply steps.
    running: tokio::sync::Mutex<()>,
}

impl ConfigReloader {
    pub fn new(
        source: Option<PathBuf>,
        live: watch::Sender<Arc<Config>>,
        auth: Arc<Authenticator>,
        pool: PgPool,
        keys: Arc<IntegrityKeys>,
        metrics: Arc<Metrics>,
        certificate: Option<Arc<ServerCertificate>>,
    ) -> Self {
        Self {
            source,
            live,
            auth,
            pool,
            keys,
            metrics,
            certificate,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<Config> {
        self.live.borrow().clone()
    }

    /// What `changed_by` names: the trigger and the file.
    fn author(&self, trigger: &str) -> String {
        let file = self.source.as_ref().map_or_else(
            || "./config.toml or defaults".to_owned(),
            |path| path.display().to_string(),
        );
        let author = format!("{trigger}:{file}");
        author.chars().take(255).collect()
    }

    /// Reads the file (and the environment) again. `trigger` (e.g. `sighup`)
    /// goes into `changed_by`. Logs its outcome and counts it in
    /// `audit_worker_config_reloads_total`.
    #[tracing::instrument(skip_all, fields(trigger))]
    pub async fn reload(&self, trigger: &str) -> Result<ReloadReport, ReloadError> {
        let _running = self.running.lock().await;
        let certificate = self.reload_certificate(trigger).await;
        let outcome = self.reload_once(trigger).await.map(|mut report| {
            report.certificate = certificate.clone();
            report
        });
        let label = match (&outcome, &certificate) {
            (Err(_), _) | (_, Some(CertificateReload::Kept { .. })) => "rejected",
            (_, Some(CertificateReload::Replaced { .. })) => "applied",
            (Ok(report), _) if report.applied.is_empty() => "unchanged",
            (Ok(_), _) => "applied",
        };
        self.metrics
            .config
            .reloads
            .with_label_values(&[label])
            .inc();
        outcome
    }

    async fn reload_once(&self, trigger: &str) -> Result<ReloadReport, ReloadError> {
        let current = self.current();
        let previous_version = version(&current);
        let loaded = Config::load(self.source.as_deref());
        let next = loaded.and_then(|file| {
            let next = merge_live(&current, &file);
            next.validate()?;
            crate::check_config(&next)?;
            Ok((file, next))
        });
        let (file, next) = match next {
            Ok(both) => both,
            Err(error) => {
                let field = faulty_key(&error);
                let reason = mask_text(&error.to_string());
                tracing::error!(%reason, "Configuration reload refused; the old configuration stays in force");
                let row = NewChange {
                    field: &field,
                    previous_value: None,
                    new_value: None,
                    changed_by: &self.author(trigger),
                    reason: &truncate(&format!("rejected: {reason}")),
                    environment: &environment(),
                    previous_version: &previous_version,
                    new_version: None,
                };
                let organization = &current.operations.organization;
                if let Err(record) = self.record(organization, &[row], "failure").await {
                    tracing::warn!(error = %record, "Cannot record the refused reload");
                }
                return Err(ReloadError::Rejected(reason));
            }
        };

        let needs_restart: Vec<Change> = diff(&current, &file)
            .into_iter()
            .filter(|change| !is_live(&change.field))
            .collect();
        for change in &needs_restart {
            tracing::warn!(
                field = change.field,
                previous = %change.previous,
                new = %change.new,
                "Configuration key changed; it needs a restart and is not applied"
            );
        }
        let applied = diff(&current, &next);
        let new_version = version(&next);
        let report = ReloadReport {
            applied,
            needs_restart,
            previous_version,
            new_version,
            certificate: None,
        };
        if report.applied.is_empty() {
            tracing::info!("Configuration reloaded: no key that applies at run time changed");
            return Ok(report);
        }

        let (author, environment) = (self.author(trigger), environment());
        let rows: Vec<NewChange<'_>> = report
            .applied
            .iter()
            .map(|change| NewChange {
                field: &change.field,
                previous_value: Some(&change.previous),
                new_value: Some(&change.new),
                changed_by: &author,
                reason: APPLIED_REASON,
                environment: &environment,
                previous_version: &report.previous_version,
                new_version: Some(&report.new_version),
            })
            .collect();
        self.record(&current.operations.organization, &rows, "success")
            .await?;

        if next.log.level != current.log.level && !telemetry::set_level(&next.log.level) {
            tracing::warn!(
                "log.level recorded but not in effect: RUST_LOG is set, or the worker installed no log subscriber"
            );
        }
        if (next.auth.rate_limit_per_second, next.auth.rate_limit_burst)
            != (
                current.auth.rate_limit_per_second,
                current.auth.rate_limit_burst,
            )
        {
            self.auth
                .set_rate_limit(next.auth.rate_limit_per_second, next.auth.rate_limit_burst);
        }
        self.live.send_replace(Arc::new(next));
        for change in &report.applied {
            tracing::info!(field = change.field, previous = %change.previous, new = %change.new, "Configuration key applied");
        }
        Ok(report)
    }

    /// Re-reads the listener's certificate files and records a change or a
    /// refusal; `None` without HTTPS.
    async fn reload_certificate(&self, trigger: &str) -> Option<CertificateReload> {
        let certificate = self.certificate.as_ref()?;
        let (outcome, values, reason) = match certificate.reload() {
            Ok(swap) if swap.previous == swap.new => return Some(CertificateReload::Unchanged),
            Ok(Swap { previous, new }) => {
                tracing::info!(%previous, %new, "Listener certificate replaced; new connections get it");
                let values = (
                    json!(format!("sha256:{previous}")),
                    json!(format!("sha256:{new}")),
                );
                let replaced = CertificateReload::Replaced { previous, new };
                (replaced, Some(values), CERTIFICATE_REASON.to_owned())
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(%reason, "Listener certificate not reloaded; the one in force stays");
                let recorded = truncate(&format!(
                    "rejected: {reason}; the certificate in force stays"
                ));
                (CertificateReload::Kept { reason }, None, recorded)
            }
        };
        let current = self.current();
        let config_version = version(&current);
        let row = NewChange {
            field: "http.tls.cert",
            previous_value: values.as_ref().map(|(previous, _)| previous),
            new_value: values.as_ref().map(|(_, new)| new),
            changed_by: &self.author(trigger),
            reason: &reason,
            environment: &environment(),
            previous_version: &config_version,
            new_version: values.as_ref().map(|_| config_version.as_str()),
        };
        let status = if values.is_some() {
            "success"
        } else {
            "failure"
        };
        let organization = &current.operations.organization;
        if let Err(error) = self.record(organization, &[row], status).await {
            tracing::warn!(%error, "Cannot record the certificate reload");
        }
        Some(outcome)
    }

    /// Stores the reload's rows of `config_changes` and its event
    /// `admin.config.reload` (with `status`) in the operators' organization.
    async fn record(
        &self,
        organization: &str,
        rows: &[NewChange<'_>],
        status: &str,
    ) -> Result<(), RecordError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await.map_err(DbError::from)?;
        for row in rows {
            config_changes::insert(&transaction, row).await?;
        }
        let changes: Vec<Value> = rows
            .iter()
            .map(|row| {
                json!({"field": row.field, "previous": row.previous_value, "new": row.new_value,
                       "reason": row.reason})
            })
            .collect();
        let record = Record {
            organization_id: organization,
            principal_id: rows.first().map_or("config", |row| row.changed_by),
            action: "admin.config.reload",
            status,
            outcome: format!("configuration reload: {} key(s), {status}", rows.len()),
            target: Some((
                "config",
                rows.first().map_or("", |row| row.previous_version),
            )),
            details: json!({"changes": changes}),
        };
        recorded::append_in(&transaction, &self.keys, &record).await?;
        transaction.commit().await.map_err(DbError::from)?;
        Ok(())
    }
}

/// `current` with the live keys taken from `file`: what is in force after the reload.
fn merge_live(current: &Config, file: &Config) -> Config {
    let mut next = current.clone();
    next.alerts = file.alerts.clone();
    next.alerts.system_check_interval = current.alerts.system_check_interval;
    next.auth.rate_limit_per_second = file.auth.rate_limit_per_second;
    next.auth.rate_limit_burst = file.auth.rate_limit_burst;
    next.ingest.max_batch = file.ingest.max_batch;
    next.ingest.max_clock_skew = file.ingest.max_clock_skew;
    next.log.level = file.log.level.clone();
    next
}

/// Every key whose value differs, by dotted path, values masked. Arrays (such
/// as `alerts.rules`) are one key. Secrets print as `***` either way, so they
/// are compared by their real values ([`Config::secret_keys_differing`]).
pub fn diff(before: &Config, after: &Config) -> Vec<Change> {
    let (old, new) = (flatten_config(before), flatten_config(after));
    let mut changes: Vec<Change> = old
        .iter()
        .filter(|(field, value)| new.get(*field) != Some(value))
        .map(|(field, value)| Change {
            field: field.clone(),
            previous: mask(field, value),
            new: new
                .get(field)
                .map_or(Value::Null, |value| mask(field, value)),
        })
        .collect();
    for field in before.secret_keys_differing(after) {
        if !changes.iter().any(|change| change.field == field) {
            changes.push(Change {
                field: field.to_owned(),
                previous: Value::String(MASK.to_owned()),
                new: Value::String(MASK.to_owned()),
            });
        }
    }
    changes.sort_by(|a, b| a.field.cmp(&b.field));
    changes
}

fn flatten_config(config: &Config) -> BTreeMap<String, Value> {
    let mut flat = BTreeMap::new();
    flatten(
        "",
        &serde_json::to_value(config).unwrap_or_default(),
        &mut flat,
    );
    flat
}

fn flatten(prefix: &str, value: &Value, into: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, value, into);
            }
        }
        leaf => {
            into.insert(prefix.to_owned(), leaf.clone());
        }
    }
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| name.contains(word))
}

/// `value` as it may be stored and logged: `***` for a key whose name (any
/// part of its dotted path, or any nested object key) marks a secret, and
/// URL passwords masked in every string.
pub fn mask(field: &str, value: &Value) -> Value {
    if field.split('.').any(is_secret_name) {
        return masked_leaf(value);
    }
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let masked = if is_secret_name(key) {
                        masked_leaf(value)
                    } else {
                        mask("", value)
                    };
                    (key.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|item| mask("", item)).collect()),
        Value::String(text) => Value::String(mask_text(text)),
        other => other.clone(),
    }
}

/// An empty secret stays visibly empty (unset); any other value becomes `***`.
fn masked_leaf(value: &Value) -> Value {
    match value {
        Value::String(text) if text.is_empty() => value.clone(),
        Value::Null => Value::Null,
        _ => Value::String(MASK.to_owned()),
    }
}

/// Masks the password of every `scheme://user:password@host` in `text`.
fn mask_text(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(crate::config::mask_password)
        .collect()
}

/// The key a configuration error names (`key \`alerts.rules[0].threshold\`: …`),
/// or `*` when it names none (a file that does not parse).
fn faulty_key(error: &ConfigError) -> String {
    match error {
        ConfigError::Value { key, .. } => (*key).to_owned(),
        other => {
            let text = other.to_string();
            text.split_once("key `")
                .and_then(|(_, rest)| rest.split_once('`'))
                .map_or_else(|| "*".to_owned(), |(key, _)| truncate(key))
        }
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(MAX_REASON_CHARS).collect()
}

/// A short SHA-256 of the configuration as printed (secrets masked): enough
/// to tell versions apart in the history, without revealing a secret.
pub fn version(config: &Config) -> String {
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..6])
}

/// Where the worker runs, for the `environment` column.
fn environment() -> String {
    hostname::get()
        .map(|name| name.to_string_lossy().chars().take(100).collect())
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_keys_are_the_documented_ones() {
        for live in [
            "alerts.rules",
            "alerts.ingest_error_rate",
            "auth.rate_limit_burst",
            "ingest.max_batch",
            "log.level",
        ] {
            assert!(is_live(live), "{live}");
        }
        for restart in [
            "alerts.system_check_interval",
            "auth.key_cache_ttl",
            "ingest.group_commit_window",
            "log.format",
            "database.url",
            "alertsx",
        ] {
            assert!(!is_live(restart), "{restart}");
        }
    }

    #[test]
    fn secrets_are_masked_by_key_name_and_in_urls() {
        assert_eq!(mask("gdpr.pseudonym_key", &Value::from("abc")), "***");
        assert_eq!(mask("gdpr.pseudonym_key", &Value::from("")), "");
        assert_eq!(
            mask("x.y", &serde_json::json!({"api_token": 5, "keep": "v"})),
            serde_json::json!({"api_token": "***", "keep": "v"})
        );
        assert_eq!(
            mask(
                "database.url",
                &Value::from("postgres://app:s3cret@db:5432/x")
            ),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            mask_text("bad url postgres://a:b@h/x here"),
            "bad url postgres://a:***@h/x here"
        );
    }

    #[test]
    fn a_refusal_names_the_key_at_fault_when_it_can() {
        let invalid = ConfigError::Invalid(
            "key `alerts.rules[1].threshold` (in /etc/aw.toml): must be at least 1".to_owned(),
        );
        assert_eq!(faulty_key(&invalid), "alerts.rules[1].threshold");
        let value = ConfigError::Value {
            key: "auth.rate_limit_burst",
            reason: "must be at least 1".to_owned(),
        };
        assert_eq!(faulty_key(&value), "auth.rate_limit_burst");
        let parse = ConfigError::Invalid("expected `]` at line 1".to_owned());
        assert_eq!(faulty_key(&parse), "*");
    }

    #[test]
    fn diff_names_each_changed_key_and_sees_secret_changes() {
        let before = Config::defaults();
        let mut after = before.clone();
        after.auth.rate_limit_burst = 7;
        after.alerts.rules.clear();
        after.gdpr.pseudonym_key = crate::config::Secret::new("c2VjcmV0");
        let fields: Vec<String> = diff(&before, &after)
            .into_iter()
            .map(|change| change.field)
            .collect();
        assert_eq!(
            fields,
            [
                "alerts.rules",
                "auth.rate_limit_burst",
                "gdpr.pseudonym_key"
            ]
        );
        let secret = diff(&before, &after).pop().unwrap();
        assert_eq!(secret.new, "***");
        assert_ne!(version(&before), version(&after));
    }
}
