//! Prometheus metrics, one registry per running worker (so in-process test
//! workers never share counters). Names follow Prometheus conventions: prefix
//! `audit_worker_`, base units, counters ending in `_total`, small label sets.
//!
//! Every label value comes from a set the worker knows, never from what a
//! client sends, or one request with a made-up value would add a series for
//! good: HTTP methods outside the standard ones are `other`, routes are the
//! route's pattern (`unmatched` for unknown paths), statuses are those the
//! worker answers with; actors, dependencies, kinds, levels, outcomes,
//! categories and severities are names in the code; partitions and
//! destinations are those that exist (their series go when they do).
//! Counters that dashboards take a `rate()` or `increase()` of exist at 0
//! from the start for every label value known then.

use actix_web::http::Method;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::db::PgPool;

pub struct Metrics {
    registry: Registry,
    /// HTTP requests by method ([`method_label`]), route pattern (not raw
    /// path: bounded cardinality) and status.
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    /// Replies received from an actor, per actor.
    pub actor_messages_handled: IntCounterVec,
    /// Failed replies and undeliverable messages, per actor.
    pub actor_errors: IntCounterVec,
    pub actor_restarts: IntCounterVec,
    /// Messages sent to an actor and not answered yet (queued or being handled).
    pub actor_mailbox_depth: IntGaugeVec,
    /// From a message's send to its reply (queueing and handling), per actor.
    pub actor_message_duration: HistogramVec,
    /// 1 while the actor runs, 0 while it is down or waiting to be restarted.
    pub actor_up: IntGaugeVec,
    /// 1 when the last heartbeat probe of the dependency succeeded.
    pub dependency_up: IntGaugeVec,
    /// Pool connections by state (`in_use`, `idle`), read at scrape time.
    pub db_pool_connections: IntGaugeVec,
    /// Per destination (`destination_id`), from `destination_health`
    /// (refreshed by the HealthActor); deleted destinations have none.
    pub destination_consecutive_failures: IntGaugeVec,
    pub destination_breaker_open: IntGaugeVec,
    /// DeliveryActors running in this worker: one per active destination.
    pub delivery_actors: IntGauge,
    /// Per `audit_log` partition (refreshed by the PartitionActor).
    pub partition_bytes: IntGaugeVec,
    pub partition_rows_estimate: IntGaugeVec,
    /// Unix time of the last maintenance round this worker led.
    pub partition_maintenance_last_run: IntGauge,
    pub archived_events: IntCounter,
    /// Query cache look-ups by kind of answer, level (`l1`, `l2`) and outcome
    /// (`hit`, `miss`, `bypass`).
    pub cache_lookups: IntCounterVec,
    pub cache_evictions: IntCounterVec,
    /// Hits over hits and misses since start, per level.
    pub cache_hit_ratio: GaugeVec,
    pub cache_l1_bytes: IntGauge,
    pub cache_l1_entries: IntGauge,
    /// Events the alert rules were evaluated on.
    pub alert_events_evaluated: IntCounter,
    /// Events (or their matches) skipped by the rules because their backlog was full.
    pub alert_events_skipped: IntCounter,
    /// Alerts raised by rules, by outcome (`created`, `updated`).
    pub alerts_raised: IntCounterVec,
    /// Report run attempts by outcome (`completed`, `retrying`, `failed`).
    pub report_runs: IntCounterVec,
    /// Internal errors handed to the error tracker, by category and severity.
    pub errors_recorded: IntCounterVec,
    /// Internal errors the tracker could not buffer (too many distinct fingerprints).
    pub errors_dropped: IntCounter,
    /// Error-tracker flushes that failed (their errors stay buffered and are retried).
    pub errors_flush_failures: IntCounter,
    /// Configuration reloads by outcome (`applied`, `rejected`, `unchanged`).
    pub config_reloads: IntCounterVec,
    /// Deliveries in `delivery_queue` by status (`pending`, `retrying`, `processing`).
    pub delivery_queue_depth: IntGaugeVec,
    /// How long the oldest due delivery has been waiting (0 when none is).
    pub delivery_queue_oldest_due: Gauge,
    /// Events per ingest transaction (group commit).
    pub ingest_batch_events: Histogram,
    /// Requests per ingest transaction.
    pub ingest_batch_requests: Histogram,
    /// Partition maintenance rounds by outcome (`ran`, `skipped`: another
    /// instance holds the lock, `failed`).
    pub partition_maintenance_runs: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("audit_worker".to_owned()), None)
            .expect("a valid metric prefix");
        let metrics = Self {
            http_requests: IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests answered"),
                &["method", "route", "status"],
            )
            .expect("valid metric"),
            http_request_duration: HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ]),
                &["method", "route"],
            )
            .expect("valid metric"),
            actor_messages_handled: IntCounterVec::new(
                Opts::new("actor_messages_handled_total", "Messages an actor answered"),
                &["actor"],
            )
            .expect("valid metric"),
            actor_errors: IntCounterVec::new(
                Opts::new(
                    "actor_errors_total",
                    "Messages an actor answered with an error or could not take",
                ),
                &["actor"],
            )
            .expect("valid metric"),
            actor_restarts: IntCounterVec::new(
                Opts::new("actor_restarts_total", "Restarts of a supervised actor"),
                &["actor"],
            )
            .expect("valid metric"),
            actor_mailbox_depth: IntGaugeVec::new(
                Opts::new(
                    "actor_mailbox_depth",
                    "Messages sent to an actor and not answered yet",
                ),
                &["actor"],
            )
            .expect("valid metric"),
            actor_message_duration: HistogramVec::new(
                HistogramOpts::new(
                    "actor_message_duration_seconds",
                    "Time from sending a message to an actor to its reply",
                )
                .buckets(vec![
                    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0,
                ]),
                &["actor"],
            )
            .expect("valid metric"),
            actor_up: IntGaugeVec::new(
                Opts::new("actor_up", "1 while a supervised actor runs"),
                &["actor"],
            )
            .expect("valid metric"),
            dependency_up: IntGaugeVec::new(
                Opts::new(
                    "dependency_up",
                    "1 when the last probe of a dependency succeeded",
                ),
                &["dependency"],
            )
            .expect("valid metric"),
            db_pool_connections: IntGaugeVec::new(
                Opts::new(
                    "db_pool_connections",
                    "PostgreSQL pool connections by state",
                ),
                &["state"],
            )
            .expect("valid metric"),
            destination_consecutive_failures: IntGaugeVec::new(
                Opts::new(
                    "destination_consecutive_failures",
                    "Consecutive failed delivery attempts per destination",
                ),
                &["destination_id"],
            )
            .expect("valid metric"),
            destination_breaker_open: IntGaugeVec::new(
                Opts::new(
                    "destination_breaker_open",
                    "1 while a destination's circuit breaker is open",
                ),
                &["destination_id"],
            )
            .expect("valid metric"),
            delivery_actors: IntGauge::new(
                "delivery_actors",
                "DeliveryActors running in this worker (one per active destination)",
            )
            .expect("valid metric"),
            partition_bytes: IntGaugeVec::new(
                Opts::new(
                    "partition_bytes",
                    "Size of an audit_log partition (table, indexes, TOAST)",
                ),
                &["partition"],
            )
            .expect("valid metric"),
            partition_rows_estimate: IntGaugeVec::new(
                Opts::new(
                    "partition_rows_estimate",
                    "PostgreSQL's row estimate of an audit_log partition",
                ),
                &["partition"],
            )
            .expect("valid metric"),
            partition_maintenance_last_run: IntGauge::new(
                "partition_maintenance_last_run_timestamp_seconds",
                "When this worker last ran partition maintenance (Unix seconds)",
            )
            .expect("valid metric"),
            archived_events: IntCounter::new(
                "archived_events_total",
                "Events this worker moved to archives",
            )
            .expect("valid metric"),
            cache_lookups: IntCounterVec::new(
                Opts::new(
                    "cache_lookups_total",
                    "Query cache look-ups by kind of answer, level and outcome",
                ),
                &["kind", "level", "outcome"],
            )
            .expect("valid metric"),
            cache_evictions: IntCounterVec::new(
                Opts::new(
                    "cache_evictions_total",
                    "Query cache entries evicted for room",
                ),
                &["level"],
            )
            .expect("valid metric"),
            cache_hit_ratio: GaugeVec::new(
                Opts::new(
                    "cache_hit_ratio",
                    "Query cache hits over look-ups since start",
                ),
                &["kind", "level"],
            )
            .expect("valid metric"),
            cache_l1_bytes: IntGauge::new(
                "cache_l1_bytes",
                "Bytes of answers held by the in-process query cache",
            )
            .expect("valid metric"),
            cache_l1_entries: IntGauge::new(
                "cache_l1_entries",
                "Answers held by the in-process query cache",
            )
            .expect("valid metric"),
            alert_events_evaluated: IntCounter::new(
                "alert_events_evaluated_total",
                "Events the alert rules were evaluated on",
            )
            .expect("valid metric"),
            alert_events_skipped: IntCounter::new(
                "alert_events_skipped_total",
                "Events or matches the alert rules skipped because their backlog was full",
            )
            .expect("valid metric"),
            alerts_raised: IntCounterVec::new(
                Opts::new(
                    "alerts_raised_total",
                    "Alerts raised by rules: created, or an open one updated",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            report_runs: IntCounterVec::new(
                Opts::new(
                    "report_runs_total",
                    "Report run attempts by outcome: completed, retrying (failed, tried again) or failed",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            config_reloads: IntCounterVec::new(
                Opts::new(
                    "config_reloads_total",
                    "Configuration reloads (SIGHUP): applied, rejected, or unchanged",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            errors_recorded: IntCounterVec::new(
                Opts::new(
                    "errors_recorded_total",
                    "Internal errors recorded by the error tracker",
                ),
                &["category", "severity"],
            )
            .expect("valid metric"),
            errors_dropped: IntCounter::new(
                "errors_dropped_total",
                "Internal errors dropped because the error tracker's buffer was full",
            )
            .expect("valid metric"),
            errors_flush_failures: IntCounter::new(
                "errors_flush_failures_total",
                "Error tracker flushes that failed and will be retried",
            )
            .expect("valid metric"),
            delivery_queue_depth: IntGaugeVec::new(
                Opts::new(
                    "delivery_queue_depth",
                    "Deliveries in the queue by status (pending, retrying, processing)",
                ),
                &["status"],
            )
            .expect("valid metric"),
            delivery_queue_oldest_due: Gauge::new(
                "delivery_queue_oldest_due_seconds",
                "How long the oldest due, unclaimed delivery has been waiting",
            )
            .expect("valid metric"),
            ingest_batch_events: Histogram::with_opts(
                HistogramOpts::new("ingest_batch_events", "Events per ingest transaction")
                    .buckets(batch_buckets()),
            )
            .expect("valid metric"),
            ingest_batch_requests: Histogram::with_opts(
                HistogramOpts::new("ingest_batch_requests", "Requests per ingest transaction")
                    .buckets(batch_buckets()),
            )
            .expect("valid metric"),
            partition_maintenance_runs: IntCounterVec::new(
                Opts::new(
                    "partition_maintenance_runs_total",
                    "Partition maintenance rounds: ran, skipped (another instance had the lock) or failed",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            registry,
        };
        // Every outcome shows from the start, at 0, so a rate over it is defined.
        for outcome in ["applied", "rejected", "unchanged"] {
            metrics.config_reloads.with_label_values(&[outcome]);
        }
        for outcome in ["ran", "skipped", "failed"] {
            metrics
                .partition_maintenance_runs
                .with_label_values(&[outcome]);
        }
        for outcome in ["completed", "retrying", "failed"] {
            metrics.report_runs.with_label_values(&[outcome]);
        }
        for outcome in ["created", "updated"] {
            metrics.alerts_raised.with_label_values(&[outcome]);
        }
        metrics.cache_evictions.with_label_values(&["l1"]);
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.http_requests.clone()),
            Box::new(metrics.http_request_duration.clone()),
            Box::new(metrics.actor_messages_handled.clone()),
            Box::new(metrics.actor_errors.clone()),
            Box::new(metrics.actor_restarts.clone()),
            Box::new(metrics.actor_mailbox_depth.clone()),
            Box::new(metrics.actor_up.clone()),
            Box::new(metrics.dependency_up.clone()),
            Box::new(metrics.db_pool_connections.clone()),
            Box::new(metrics.destination_consecutive_failures.clone()),
            Box::new(metrics.destination_breaker_open.clone()),
            Box::new(metrics.delivery_actors.clone()),
            Box::new(metrics.partition_bytes.clone()),
            Box::new(metrics.partition_rows_estimate.clone()),
            Box::new(metrics.partition_maintenance_last_run.clone()),
            Box::new(metrics.archived_events.clone()),
            Box::new(metrics.cache_lookups.clone()),
            Box::new(metrics.cache_evictions.clone()),
            Box::new(metrics.cache_hit_ratio.clone()),
            Box::new(metrics.cache_l1_bytes.clone()),
            Box::new(metrics.cache_l1_entries.clone()),
            Box::new(metrics.alert_events_evaluated.clone()),
            Box::new(metrics.alert_events_skipped.clone()),
            Box::new(metrics.alerts_raised.clone()),
            Box::new(metrics.report_runs.clone()),
            Box::new(metrics.errors_recorded.clone()),
            Box::new(metrics.errors_dropped.clone()),
            Box::new(metrics.errors_flush_failures.clone()),
            Box::new(metrics.config_reloads.clone()),
            Box::new(metrics.actor_message_duration.clone()),
            Box::new(metrics.delivery_queue_depth.clone()),
            Box::new(metrics.delivery_queue_oldest_due.clone()),
            Box::new(metrics.ingest_batch_events.clone()),
            Box::new(metrics.ingest_batch_requests.clone()),
            Box::new(metrics.partition_maintenance_runs.clone()),
        ];
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("metric names are unique");
        }
        metrics
    }

    /// Shows the series of `actor` from the start: its counters at 0.
    pub fn register_actor(&self, actor: &str) {
        self.actor_messages_handled.with_label_values(&[actor]);
        self.actor_errors.with_label_values(&[actor]);
        self.actor_restarts.with_label_values(&[actor]);
        self.actor_mailbox_depth.with_label_values(&[actor]);
        self.actor_message_duration.with_label_values(&[actor]);
    }

    /// The Prometheus text exposition of every metric, pool figures refreshed first.
    pub fn render(&self, pool: &PgPool) -> String {
        let state = pool.state();
        let in_use = state.connections.saturating_sub(state.idle_connections);
        self.db_pool_connections
            .with_label_values(&["in_use"])
            .set(i64::from(in_use));
        self.db_pool_connections
            .with_label_values(&["idle"])
            .set(i64::from(state.idle_connections));
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding of gathered metrics cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `method` label of an HTTP request: a client may send any token as its
/// method, so all but the standard ones share `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// 1-2-5 steps up to the largest ingest batch.
fn batch_buckets() -> Vec<f64> {
    vec![
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
    ]
}
