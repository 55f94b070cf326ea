//! System rules: alerts the worker raises about itself and about an
//! organization's integrity and destinations, rather than from its events.
//! They deduplicate like rule alerts (one open alert per rule and group).

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use tokio_postgres::GenericClient;

use super::model::{AlertType, Severity};
use super::rule::DEFAULT_COOLDOWN;
use crate::db::alerts::{self, Notice, Raise, Raised};
use crate::db::connection::Statements;
use crate::db::destinations::{self, Failing};
use crate::db::DbError;
use crate::metrics::Metrics;

pub const INTEGRITY_RULE: &str = "system:integrity-verification";
pub const DESTINATION_DISABLED_RULE: &str = "system:destination-disabled";
pub const BREAKER_OPEN_RULE: &str = "system:breaker-open";
pub const INGEST_ERRORS_RULE: &str = "system:ingest-error-rate";
pub const INGEST_LATENCY_RULE: &str = "system:ingest-latency";

/// A system alert to raise.
struct SystemAlert<'a> {
    organization_id: &'a str,
    rule_id: &'static str,
    group_key: String,
    severity: Severity,
    alert_type: AlertType,
    title: String,
    description: String,
    metadata: Value,
}

/// Raises (or updates) the alert and queues its notifications; returns
/// whether a new alert was created.
async fn raise(client: &impl GenericClient, alert: SystemAlert<'_>) -> Result<bool, DbError> {
    let raised = Raised {
        organization_id: alert.organization_id.to_owned(),
        rule_id: alert.rule_id.to_owned(),
        group_key: alert.group_key,
        severity: alert.severity,
        alert_type: alert.alert_type,
        title: alert.title,
        description: Some(alert.description),
        source: "system".to_owned(),
        correlation_id: None,
        metadata: alert.metadata,
        seen_at: Utc::now(),
        occurrences: 1,
        cooldown: DEFAULT_COOLDOWN,
    };
    let (alert, notice) = match alerts::raise(client, Statements::Unnamed, &raised).await? {
        Raise::Created(alert) => (alert, Notice::New),
        Raise::Updated {
            alert,
            escalated: true,
        } => (alert, Notice::Escalated),
        Raise::Updated { .. } | Raise::Suppressed => return Ok(false),
    };
    alerts::notify_subscribers(client, &alert, notice).await?;
    Ok(matches!(notice, Notice::New))
}

/// Verification of the organization's trail found problems: CRITICAL COMPLIANCE.
pub async fn integrity_failed(
    client: &impl GenericClient,
    organization_id: &str,
    problems: usize,
    summary: Value,
) -> Result<(), DbError> {
    raise(
        client,
        SystemAlert {
            organization_id,
            rule_id: INTEGRITY_RULE,
            group_key: String::new(),
            severity: Severity::Critical,
            alert_type: AlertType::Compliance,
            title: format!(
                "Integrity verification failed: {problems} problem(s) in the audit trail"
            ),
            description: "Verification found events that were changed, removed, inserted or \
                reordered outside a recorded operation."
                .to_owned(),
            metadata: summary,
        },
    )
    .await?;
    Ok(())
}

/// The worker disabled a destination that kept failing: HIGH DELIVERY.
pub async fn destination_disabled(
    client: &impl GenericClient,
    destination: &Failing,
    reason: &str,
) -> Result<(), DbError> {
    raise(
        client,
        SystemAlert {
            organization_id: &destination.organization_id,
            rule_id: DESTINATION_DISABLED_RULE,
            group_key: destination.id.to_string(),
            severity: Severity::High,
            alert_type: AlertType::Delivery,
            title: format!("Destination \"{}\" disabled", destination.label),
            description: reason.to_owned(),
            metadata: json!({"destination_id": destination.id}),
        },
    )
    .await?;
    Ok(())
}

/// Destinations whose breaker stayed open longer than `open_for`: one HIGH
/// DELIVERY alert each. Returns how many alerts were created.
pub async fn open_breakers(
    client: &impl GenericClient,
    open_for: Duration,
) -> Result<usize, DbError> {
    let mut created = 0;
    for breaker in destinations::open_breakers(client, open_for).await? {
        let open = (Utc::now() - breaker.opened_at)
            .to_std()
            .unwrap_or_default();
        created += usize::from(
            raise(
                client,
                SystemAlert {
                    organization_id: &breaker.organization_id,
                    rule_id: BREAKER_OPEN_RULE,
                    group_key: breaker.id.to_string(),
                    severity: Severity::High,
                    alert_type: AlertType::Delivery,
                    title: format!(
                        "Destination \"{}\" unreachable: circuit breaker open",
                        breaker.label
                    ),
                    description: format!(
                        "The circuit breaker has been open for {}; its deliveries wait.",
                        humantime::format_duration(Duration::from_secs(open.as_secs()))
                    ),
                    metadata: json!({"destination_id": breaker.id, "opened_at": breaker.opened_at}),
                },
            )
            .await?,
        );
    }
    Ok(created)
}

/// Ingest figures of this process so far, read from `/metrics`' counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestSample {
    pub requests: u64,
    pub server_errors: u64,
    pub latency_sum: f64,
    pub latency_count: u64,
}

impl IngestSample {
    pub fn read(metrics: &Metrics) -> Self {
        let mut sample = IngestSample::default();
        for family in prometheus::core::Collector::collect(&metrics.http.requests) {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                };
                if label("method").as_deref() != Some("POST")
                    || label("route").as_deref() != Some(INGEST_ROUTE)
                {
                    continue;
                }
                let count = metric.get_counter().get_value() as u64;
                sample.requests += count;
                if label("status").is_some_and(|s| s.starts_with('5')) {
                    sample.server_errors += count;
                }
            }
        }
        if let Ok(histogram) = metrics
            .http
            .request_duration
            .get_metric_with_label_values(&["POST", INGEST_ROUTE])
        {
            sample.latency_sum = histogram.get_sample_sum();
            sample.latency_count = histogram.get_sample_count();
        }
        sample
    }
}

const INGEST_ROUTE: &str = "/v1/events";

/// Thresholds of the ingest performance rules.
pub struct IngestLimits {
    pub error_rate: f64,
    pub min_requests: u64,
    pub latency: Duration,
}

/// Compares ingest between two samples of this process with the limits; raises
/// PERFORMANCE alerts in `organization_id` (the operators'). Returns how many
/// alerts were created.
pub async fn ingest_performance(
    client: &impl GenericClient,
    organization_id: &str,
    before: IngestSample,
    now: IngestSample,
    limits: &IngestLimits,
) -> Result<usize, DbError> {
    let requests = now.requests.saturating_sub(before.requests);
    let errors = now.server_errors.saturating_sub(before.server_errors);
    let timed = now.latency_count.saturating_sub(before.latency_count);
    let mut created = 0;
    if requests >= limits.min_requests.max(1) {
        let rate = errors as f64 / requests as f64;
        if rate > limits.error_rate {
            created += usize::from(
                raise(
                    client,
                    SystemAlert {
                        organization_id,
                        rule_id: INGEST_ERRORS_RULE,
                        group_key: String::new(),
                        severity: Severity::High,
                        alert_type: AlertType::Performance,
                        title: format!("Ingest errors: {:.1}% of requests failed", rate * 100.0),
                        description: format!(
                            "{errors} of {requests} ingest requests were answered with a server error \
                             (limit {:.1}%).",
                            limits.error_rate * 100.0
                        ),
                        metadata: json!({"requests": requests, "server_errors": errors}),
                    },
                )
                .await?,
            );
        }
    }
    if timed > 0 {
        let mean = Duration::from_secs_f64(
            ((now.latency_sum - before.latency_sum) / timed as f64).max(0.0),
        );
        if mean > limits.latency {
            created += usize::from(
                raise(
                    client,
                    SystemAlert {
                        organization_id,
                        rule_id: INGEST_LATENCY_RULE,
                        group_key: String::new(),
                        severity: Severity::Medium,
                        alert_type: AlertType::Performance,
                        title: format!("Ingest slow: mean latency {} ms", mean.as_millis()),
                        description: format!(
                            "The mean ingest latency over {timed} requests exceeded {} ms.",
                            limits.latency.as_millis()
                        ),
                        metadata: json!({"requests": timed, "mean_latency_ms": mean.as_millis() as u64}),
                    },
                )
                .await?,
            );
        }
    }
    Ok(created)
}
