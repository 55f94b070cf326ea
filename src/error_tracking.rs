//! Error tracking: the worker's own internal errors, kept in `error_log` and
//! aggregated in `error_aggregation` by fingerprint.
//!
//! [`ErrorTracker::record`] is called where things fail (a 5xx, an actor that
//! stopped, a failed ingest commit, failed maintenance). It must never slow
//! down nor fail its caller, so it only adds to a bounded in-memory buffer,
//! grouped by fingerprint: a repeat of a buffered error only increments its
//! group's count, and a new fingerprint beyond `errors.buffer_fingerprints` is
//! dropped and counted. The ErrorLogActor ([`crate::actors::error_log`]) writes the
//! buffer every `errors.flush_interval` ([`flush`]): per fingerprint one upsert
//! into `error_aggregation` and at most `errors.log_rows_per_fingerprint`
//! `error_log` rows (the first of the interval), in one transaction. So a
//! storm of 10,000 identical errors costs one upsert per interval. When the
//! write fails, the taken groups go back into the buffer and the next flush
//! tries again: counts are never lost while the buffer has room.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, Utc};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::db::{error_log as store, DbError, PgPool};
use crate::metrics::Metrics;

/// How bad an error is (the CHECK of `error_log.severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
#[schema(as = ErrorSeverity)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// Every `ErrorEvent::category`: the label values of
/// `audit_worker_errors_recorded_total`, shown at 0 from the start.
pub const CATEGORIES: [&str; 5] = ["internal", "dependency", "actor", "ingest", "maintenance"];

/// One internal error, as its reporter describes it.
#[derive(Debug, Clone)]
pub struct ErrorEvent {
    /// Broad class: one of [`CATEGORIES`].
    pub category: &'static str,
    pub severity: Severity,
    /// Stable code, e.g. `internal_error`, `actor_stopped`.
    pub code: &'static str,
    pub message: String,
    pub component: String,
    pub operation: String,
    /// The tenant the failing work was for; `None` for the worker's own work.
    pub organization_id: Option<String>,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    pub retryable: bool,
    pub context: Value,
}

impl ErrorEvent {
    /// An error with no tenant, request or context (set the fields after).
    pub fn new(
        category: &'static str,
        severity: Severity,
        code: &'static str,
        component: impl Into<String>,
        operation: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        debug_assert!(
            CATEGORIES.contains(&category),
            "error category {category} is not in CATEGORIES"
        );
        Self {
            category,
            severity,
            code,
            message: message.into(),
            component: component.into(),
            operation: operation.into(),
            organization_id: None,
            request_id: None,
            correlation_id: None,
            retryable: false,
            context: Value::Null,
        }
    }

    /// Errors that differ only in ids, numbers or quoted values share it:
    /// SHA-256 (hex, 64 characters: fits `aggregation_key varchar(255)`) of
    /// category, code, component, operation and the normalised message.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            self.category,
            self.code,
            &self.component,
            &self.operation,
            &normalise(&self.message),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hex::encode(hasher.finalize())
    }
}

/// The message with what varies between occurrences of one error replaced:
/// UUIDs, long hex strings (hashes, key ids), quoted values and numbers.
pub fn normalise(message: &str) -> String {
    static PATTERNS: LazyLock<[(Regex, &str); 4]> = LazyLock::new(|| {
        [
            (
                Regex::new(r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
                    .expect("valid pattern"),
                "<uuid>",
            ),
            (
                Regex::new(r"(?i)\b[0-9a-f]{12,}\b").expect("valid pattern"),
                "<hex>",
            ),
            (
                Regex::new(r#"'[^']*'|"[^"]*"|`[^`]*`"#).expect("valid pattern"),
                "<value>",
            ),
            (Regex::new(r"\d+").expect("valid pattern"), "<n>"),
        ]
    });
    PATTERNS
        .iter()
        .fold(message.to_owned(), |text, (pattern, placeholder)| {
            pattern.replace_all(&text, *placeholder).into_owned()
        })
}

/// One occurrence kept whole (it may become an `error_log` row).
#[derive(Debug, Clone)]
pub struct Occurrence {
    pub event: ErrorEvent,
    pub at: DateTime<Utc>,
}

/// The buffered errors of one fingerprint.
#[derive(Debug, Clone)]
pub struct Group {
    pub fingerprint: String,
    /// How many occurred (the samples included).
    pub count: u64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub components: BTreeSet<String>,
    /// The first occurrences, at most `errors.log_rows_per_fingerprint`.
    pub samples: Vec<Occurrence>,
}

impl Group {
    /// Adds a later batch of the same fingerprint (after a failed flush, the
    /// taken groups come back in front of what arrived meanwhile).
    fn absorb(&mut self, later: Group, keep_samples: usize) {
        self.count += later.count;
        self.first_at = self.first_at.min(later.first_at);
        self.last_at = self.last_at.max(later.last_at);
        self.components.extend(later.components);
        let room = keep_samples.saturating_sub(self.samples.len());
        self.samples.extend(later.samples.into_iter().take(room));
    }

    /// The representative occurrence (the first one): what the aggregation row describes.
    pub fn first(&self) -> &ErrorEvent {
        &self.samples[0].event
    }
}

/// What one flush takes from the buffer.
#[derive(Debug, Default)]
pub struct Batch {
    pub groups: Vec<Group>,
    /// When the buffer began collecting these errors: the rate's denominator.
    pub since: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Buffer {
    groups: HashMap<String, Group>,
    /// When the oldest buffered error arrived: the start of the rate's window.
    since: Option<DateTime<Utc>>,
}

/// The handle every reporter holds; cheap to clone.
#[derive(Clone)]
pub struct ErrorTracker {
    buffer: Arc<Mutex<Buffer>>,
    capacity: usize,
    keep_samples: usize,
    metrics: Arc<Metrics>,
}

impl ErrorTracker {
    /// Also shows every category and severity at 0 in `errors_recorded`,
    /// so a dashboard's rate works before the first error.
    pub fn new(capacity: usize, keep_samples: usize, metrics: Arc<Metrics>) -> Self {
        for category in CATEGORIES {
            for severity in Severity::ALL {
                metrics
                    .errors
                    .recorded
                    .with_label_values(&[category, severity.as_str()]);
            }
        }
        Self {
            buffer: Arc::default(),
            capacity,
            keep_samples: keep_samples.max(1),
            metrics,
        }
    }

    /// Buffers `event`; returns at once, whatever happens. Never fails: an
    /// error of a new fingerprint while the buffer is full is dropped and counted.
    pub fn record(&self, event: ErrorEvent) {
        let fingerprint = event.fingerprint();
        let at = Utc::now();
        let (category, severity) = (event.category, event.severity.as_str());
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let full = buffer.groups.len() >= self.capacity;
        match buffer.groups.get_mut(&fingerprint) {
            Some(group) => {
                group.count += 1;
                group.last_at = at;
                group.components.insert(event.component.clone());
                if group.samples.len() < self.keep_samples {
                    group.samples.push(Occurrence { event, at });
                }
            }
            None if full => {
                drop(buffer);
                self.metrics.errors.dropped.inc();
                return;
            }
            None => {
                buffer.since.get_or_insert(at);
                buffer.groups.insert(
                    fingerprint.clone(),
                    Group {
                        fingerprint,
                        count: 1,
                        first_at: at,
                        last_at: at,
                        components: BTreeSet::from([event.component.clone()]),
                        samples: vec![Occurrence { event, at }],
                    },
                );
            }
        }
        drop(buffer);
        self.metrics
            .errors
            .recorded
            .with_label_values(&[category, severity])
            .inc();
    }

    /// Errors buffered and not yet written (for tests and the report).
    pub fn pending(&self) -> u64 {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buffer.groups.values().map(|group| group.count).sum()
    }

    /// Empties the buffer into a batch to write.
    pub fn take(&self) -> Batch {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let taken = std::mem::take(&mut *buffer);
        let mut groups: Vec<Group> = taken.groups.into_values().collect();
        groups.sort_by_key(|group| group.first_at);
        Batch {
            groups,
            since: taken.since,
        }
    }

    /// Puts back a batch whose write failed, merged with what arrived since.
    /// Fingerprints that no longer fit are dropped (and counted).
    pub fn restore(&self, batch: Batch) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = batch.since {
            buffer.since = Some(buffer.since.map_or(since, |newer| newer.min(since)));
        }
        let mut dropped = 0;
        for mut group in batch.groups {
            match buffer.groups.remove(&group.fingerprint) {
                Some(later) => {
                    group.absorb(later, self.keep_samples);
                    buffer.groups.insert(group.fingerprint.clone(), group);
                }
                None if buffer.groups.len() >= self.capacity => dropped += group.count,
                None => {
                    buffer.groups.insert(group.fingerprint.clone(), group);
                }
            }
        }
        drop(buffer);
        self.metrics.errors.dropped.inc_by(dropped);
    }
}

/// Writes everything buffered (one transaction); on failure the errors stay
/// buffered for the next try. How many errors were written.
/// `min_window` (the flush interval) bounds the window the per-minute rate is
/// computed over from below, so a burst within milliseconds is not read as
/// millions a minute.
pub async fn flush(
    tracker: &ErrorTracker,
    pool: &PgPool,
    min_window: std::time::Duration,
) -> Result<u64, DbError> {
    let batch = tracker.take();
    if batch.groups.is_empty() {
        return Ok(0);
    }
    match store::write(pool, &batch, Utc::now(), min_window).await {
        Ok(()) => Ok(batch.groups.iter().map(|group| group.count).sum()),
        Err(error) => {
            tracker.restore(batch);
            tracker.metrics.errors.flush_failures.inc();
            Err(error)
        }
    }
}

/// The JSON kept in `error_aggregation.samples` for one occurrence.
pub fn sample_json(occurrence: &Occurrence) -> Value {
    let event = &occurrence.event;
    json!({
        "timestamp": occurrence.at,
        "code": event.code,
        "message": event.message,
        "component": event.component,
        "operation": event.operation,
        "organization_id": event.organization_id,
        "request_id": event.request_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(message: &str) -> ErrorEvent {
        ErrorEvent::new(
            "internal",
            Severity::High,
            "internal_error",
            "http",
            "/v1/events",
            message,
        )
    }

    #[test]
    fn messages_differing_only_by_ids_share_a_fingerprint() {
        let a = event("event 3f2b8c1e-9d4a-4b7e-8f00-1234567890ab of key 0123456789abcdef failed after 12 ms ('x')");
        let b = event("event 7c9e6679-7425-40de-944b-e07fc1f90ae7 of key fedcba9876543210 failed after 3 ms ('y')");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), event("another failure").fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
    }

    #[test]
    fn repeats_only_count_and_new_fingerprints_beyond_capacity_are_dropped() {
        let metrics = Arc::new(Metrics::new());
        let tracker = ErrorTracker::new(1, 2, metrics.clone());
        for _ in 0..10 {
            tracker.record(event("same"));
        }
        tracker.record(event("different"));
        let batch = tracker.take();
        assert_eq!(batch.groups.len(), 1);
        assert_eq!(batch.groups[0].count, 10);
        assert_eq!(batch.groups[0].samples.len(), 2);
        assert_eq!(metrics.errors.dropped.get(), 1);
        tracker.record(event("same"));
        tracker.restore(batch);
        assert_eq!(tracker.pending(), 11);
    }
}
