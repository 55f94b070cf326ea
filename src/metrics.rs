//! Prometheus metrics, one registry per running worker (so in-process test
//! workers never share counters), grouped by family: `metrics.http.requests`,
//! `metrics.cache.lookups`. Names follow Prometheus conventions: prefix
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
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::db::PgPool;

const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const ACTOR_MESSAGE_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0,
];
/// 1-2-5 steps up to the largest ingest batch.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub actors: ActorsMetrics,
    pub dependencies: DependenciesMetrics,
    pub deliveries: DeliveriesMetrics,
    pub partitions: PartitionsMetrics,
    pub cache: CacheMetrics,
    pub alerts: AlertsMetrics,
    pub reports: ReportsMetrics,
    pub errors: ErrorsMetrics,
    pub config: ConfigMetrics,
    pub ingest: IngestMetrics,
    pub streams: StreamsMetrics,
}

/// The HTTP API's requests.
pub struct HttpMetrics {
    /// HTTP requests by method ([`method_label`]), route pattern (not raw
    /// path: bounded cardinality) and status.
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
}

impl HttpMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            requests: counters(
                registry,
                "http_requests_total",
                "HTTP requests answered",
                &["method", "route", "status"],
            ),
            request_duration: histograms(
                registry,
                "http_request_duration_seconds",
                "HTTP request latency",
                HTTP_BUCKETS,
                &["method", "route"],
            ),
        }
    }
}

/// The supervised actors, each labelled by its name.
pub struct ActorsMetrics {
    /// Replies received from an actor, per actor.
    pub messages_handled: IntCounterVec,
    /// Failed replies and undeliverable messages, per actor.
    pub errors: IntCounterVec,
    pub restarts: IntCounterVec,
    /// Messages sent to an actor and not answered yet (queued or being handled).
    pub mailbox_depth: IntGaugeVec,
    /// From a message's send to its reply (queueing and handling), per actor.
    pub message_duration: HistogramVec,
    /// 1 while the actor runs, 0 while it is down or waiting to be restarted.
    pub up: IntGaugeVec,
}

impl ActorsMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            messages_handled: counters(
                registry,
                "actor_messages_handled_total",
                "Messages an actor answered",
                &["actor"],
            ),
            errors: counters(
                registry,
                "actor_errors_total",
                "Messages an actor answered with an error or could not take",
                &["actor"],
            ),
            restarts: counters(
                registry,
                "actor_restarts_total",
                "Restarts of a supervised actor",
                &["actor"],
            ),
            mailbox_depth: gauges(
                registry,
                "actor_mailbox_depth",
                "Messages sent to an actor and not answered yet",
                &["actor"],
            ),
            message_duration: histograms(
                registry,
                "actor_message_duration_seconds",
                "Time from sending a message to an actor to its reply",
                ACTOR_MESSAGE_BUCKETS,
                &["actor"],
            ),
            up: gauges(
                registry,
                "actor_up",
                "1 while a supervised actor runs",
                &["actor"],
            ),
        }
    }
}

/// PostgreSQL and Redis as the worker sees them.
pub struct DependenciesMetrics {
    /// 1 when the last heartbeat probe of the dependency succeeded.
    pub up: IntGaugeVec,
    /// Pool connections by state (`in_use`, `idle`), read at scrape time.
    pub db_pool_connections: IntGaugeVec,
}

impl DependenciesMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            up: gauges(
                registry,
                "dependency_up",
                "1 when the last probe of a dependency succeeded",
                &["dependency"],
            ),
            db_pool_connections: gauges(
                registry,
                "db_pool_connections",
                "PostgreSQL pool connections by state",
                &["state"],
            ),
        }
    }
}

/// The delivery queue and the destinations.
pub struct DeliveriesMetrics {
    /// Per destination (`destination_id`), from `destination_health`
    /// (refreshed by the HealthActor); deleted destinations have none.
    pub destination_consecutive_failures: IntGaugeVec,
    pub destination_breaker_open: IntGaugeVec,
    /// DeliveryActors running in this worker: one per active destination.
    pub actors: IntGauge,
    /// Deliveries in `delivery_queue` by status (`pending`, `retrying`, `processing`).
    pub queue_depth: IntGaugeVec,
    /// How long the oldest due delivery has been waiting (0 when none is).
    pub queue_oldest_due: Gauge,
    /// `POST /v1/deliveries` requests per enqueue transaction (group commit).
    pub enqueue_batch_requests: Histogram,
}

impl DeliveriesMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            destination_consecutive_failures: gauges(
                registry,
                "destination_consecutive_failures",
                "Consecutive failed delivery attempts per destination",
                &["destination_id"],
            ),
            destination_breaker_open: gauges(
                registry,
                "destination_breaker_open",
                "1 while a destination's circuit breaker is open",
                &["destination_id"],
            ),
            actors: gauge(
                registry,
                "delivery_actors",
                "DeliveryActors running in this worker (one per active destination)",
            ),
            queue_depth: gauges(
                registry,
                "delivery_queue_depth",
                "Deliveries in the queue by status (pending, retrying, processing)",
                &["status"],
            ),
            queue_oldest_due: float_gauge(
                registry,
                "delivery_queue_oldest_due_seconds",
                "How long the oldest due, unclaimed delivery has been waiting",
            ),
            enqueue_batch_requests: histogram(
                registry,
                "delivery_enqueue_batch_requests",
                "Requests per delivery enqueue transaction",
                BATCH_BUCKETS,
            ),
        }
    }
}

/// `audit_log` partitions, their maintenance and archival.
pub struct PartitionsMetrics {
    /// Per `audit_log` partition (refreshed by the PartitionActor).
    pub bytes: IntGaugeVec,
    pub rows_estimate: IntGaugeVec,
    /// Unix time of the last maintenance round this worker led.
    pub maintenance_last_run: IntGauge,
    /// Maintenance rounds by outcome (`ran`, `skipped`: another instance
    /// holds the lock, `failed`).
    pub maintenance_runs: IntCounterVec,
    pub archived_events: IntCounter,
}

impl PartitionsMetrics {
    fn new(registry: &Registry) -> Self {
        let metrics = Self {
            bytes: gauges(registry, "partition_bytes", "Size of an audit_log partition (table, indexes, TOAST)", &["partition"]),
            rows_estimate: gauges(registry, "partition_rows_estimate", "PostgreSQL's row estimate of an audit_log partition", &["partition"]),
            maintenance_last_run: gauge(registry, "partition_maintenance_last_run_timestamp_seconds", "When this worker last ran partition maintenance (Unix seconds)"),
            maintenance_runs: counters(registry, "partition_maintenance_runs_total", "Partition maintenance rounds: ran, skipped (another instance had the lock) or failed", &["outcome"]),
            archived_events: counter(registry, "archived_events_total", "Events this worker moved to archives"),
        };
        // Every outcome shows from the start, at 0, so a rate over it is defined.
        for outcome in ["ran", "skipped", "failed"] {
            metrics.maintenance_runs.with_label_values(&[outcome]);
        }
        metrics
    }
}

/// The query cache.
pub struct CacheMetrics {
    /// Look-ups by kind of answer, level (`l1`, `l2`) and outcome (`hit`,
    /// `miss`, `bypass`).
    pub lookups: IntCounterVec,
    pub evictions: IntCounterVec,
    /// Hits over hits and misses since start, per level.
    pub hit_ratio: GaugeVec,
    pub l1_bytes: IntGauge,
    pub l1_entries: IntGauge,
}

impl CacheMetrics {
    fn new(registry: &Registry) -> Self {
        let metrics = Self {
            lookups: counters(
                registry,
                "cache_lookups_total",
                "Query cache look-ups by kind of answer, level and outcome",
                &["kind", "level", "outcome"],
            ),
            evictions: counters(
                registry,
                "cache_evictions_total",
                "Query cache entries evicted for room",
                &["level"],
            ),
            hit_ratio: float_gauges(
                registry,
                "cache_hit_ratio",
                "Query cache hits over look-ups since start",
                &["kind", "level"],
            ),
            l1_bytes: gauge(
                registry,
                "cache_l1_bytes",
                "Bytes of answers held by the in-process query cache",
            ),
            l1_entries: gauge(
                registry,
                "cache_l1_entries",
                "Answers held by the in-process query cache",
            ),
        };
        metrics.evictions.with_label_values(&["l1"]);
        metrics
    }
}

/// The alert rules.
pub struct AlertsMetrics {
    pub events_evaluated: IntCounter,
    /// Events (or their matches) skipped by the rules because their backlog was full.
    pub events_skipped: IntCounter,
    /// Alerts raised by rules, by outcome (`created`, `updated`).
    pub raised: IntCounterVec,
}

impl AlertsMetrics {
    fn new(registry: &Registry) -> Self {
        let metrics = Self {
            events_evaluated: counter(
                registry,
                "alert_events_evaluated_total",
                "Events the alert rules were evaluated on",
            ),
            events_skipped: counter(
                registry,
                "alert_events_skipped_total",
                "Events or matches the alert rules skipped because their backlog was full",
            ),
            raised: counters(
                registry,
                "alerts_raised_total",
                "Alerts raised by rules: created, or an open one updated",
                &["outcome"],
            ),
        };
        // Every outcome shows from the start, at 0, so a rate over it is defined.
        for outcome in ["created", "updated"] {
            metrics.raised.with_label_values(&[outcome]);
        }
        metrics
    }
}

/// Scheduled reports.
pub struct ReportsMetrics {
    /// Run attempts by outcome (`completed`, `retrying`, `failed`).
    pub runs: IntCounterVec,
}

impl ReportsMetrics {
    fn new(registry: &Registry) -> Self {
        let metrics = Self {
            runs: counters(registry, "report_runs_total", "Report run attempts by outcome: completed, retrying (failed, tried again) or failed", &["outcome"]),
        };
        // Every outcome shows from the start, at 0, so a rate over it is defined.
        for outcome in ["completed", "retrying", "failed"] {
            metrics.runs.with_label_values(&[outcome]);
        }
        metrics
    }
}

/// The error tracker.
pub struct ErrorsMetrics {
    /// Internal errors handed to the error tracker, by category and severity.
    pub recorded: IntCounterVec,
    /// Internal errors the tracker could not buffer (too many distinct fingerprints).
    pub dropped: IntCounter,
    /// Flushes that failed (their errors stay buffered and are retried).
    pub flush_failures: IntCounter,
}

impl ErrorsMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            recorded: counters(
                registry,
                "errors_recorded_total",
                "Internal errors recorded by the error tracker",
                &["category", "severity"],
            ),
            dropped: counter(
                registry,
                "errors_dropped_total",
                "Internal errors dropped because the error tracker's buffer was full",
            ),
            flush_failures: counter(
                registry,
                "errors_flush_failures_total",
                "Error tracker flushes that failed and will be retried",
            ),
        }
    }
}

/// Configuration reloads.
pub struct ConfigMetrics {
    /// Reloads by outcome (`applied`, `rejected`, `unchanged`).
    pub reloads: IntCounterVec,
}

impl ConfigMetrics {
    fn new(registry: &Registry) -> Self {
        let metrics = Self {
            reloads: counters(
                registry,
                "config_reloads_total",
                "Configuration reloads (SIGHUP): applied, rejected, or unchanged",
                &["outcome"],
            ),
        };
        // Every outcome shows from the start, at 0, so a rate over it is defined.
        for outcome in ["applied", "rejected", "unchanged"] {
            metrics.reloads.with_label_values(&[outcome]);
        }
        metrics
    }
}

/// Ingest's group commit.
pub struct IngestMetrics {
    /// Events per ingest transaction (group commit).
    pub batch_events: Histogram,
    pub batch_requests: Histogram,
}

impl IngestMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            batch_events: histogram(
                registry,
                "ingest_batch_events",
                "Events per ingest transaction",
                BATCH_BUCKETS,
            ),
            batch_requests: histogram(
                registry,
                "ingest_batch_requests",
                "Requests per ingest transaction",
                BATCH_BUCKETS,
            ),
        }
    }
}

/// Event streams (the StreamActor).
pub struct StreamsMetrics {
    /// Batches by what became of them: `started`, `delivered` (the cursor
    /// moved), `restarted` (sent again after its delivery gave up).
    pub batches: IntCounterVec,
    /// Per subscription (`subscription_id`): how long the oldest event after
    /// its cursor has waited (0 when none does). Refreshed every few seconds
    /// by the StreamActor of any worker; deleted subscriptions have none.
    pub lag_seconds: GaugeVec,
}

impl StreamsMetrics {
    fn new(registry: &Registry) -> Self {
        let metrics = Self {
            batches: counters(
                registry,
                "stream_batches_total",
                "Stream batches started, delivered, or restarted after their delivery gave up",
                &["outcome"],
            ),
            lag_seconds: float_gauges(
                registry,
                "stream_lag_seconds",
                "How long the oldest event after a stream subscription's cursor has waited",
                &["subscription_id"],
            ),
        };
        for outcome in ["started", "delivered", "restarted"] {
            metrics.batches.with_label_values(&[outcome]);
        }
        metrics
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("audit_worker".to_owned()), None)
            .expect("a valid metric prefix");
        Self {
            http: HttpMetrics::new(&registry),
            actors: ActorsMetrics::new(&registry),
            dependencies: DependenciesMetrics::new(&registry),
            deliveries: DeliveriesMetrics::new(&registry),
            partitions: PartitionsMetrics::new(&registry),
            cache: CacheMetrics::new(&registry),
            alerts: AlertsMetrics::new(&registry),
            reports: ReportsMetrics::new(&registry),
            errors: ErrorsMetrics::new(&registry),
            config: ConfigMetrics::new(&registry),
            ingest: IngestMetrics::new(&registry),
            streams: StreamsMetrics::new(&registry),
            registry,
        }
    }

    /// Shows the series of `actor` from the start: its counters at 0.
    pub fn register_actor(&self, actor: &str) {
        let actors = &self.actors;
        actors.messages_handled.with_label_values(&[actor]);
        actors.errors.with_label_values(&[actor]);
        actors.restarts.with_label_values(&[actor]);
        actors.mailbox_depth.with_label_values(&[actor]);
        actors.message_duration.with_label_values(&[actor]);
    }

    /// The Prometheus text exposition of every metric, pool figures refreshed first.
    pub fn render(&self, pool: &PgPool) -> String {
        let state = pool.state();
        let in_use = state.connections.saturating_sub(state.idle_connections);
        let connections = &self.dependencies.db_pool_connections;
        connections
            .with_label_values(&["in_use"])
            .set(i64::from(in_use));
        connections
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

/// Registers `metric` in `registry` as it is made, so that no metric is
/// made and forgotten.
fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

// Metrics of each kind, registered as they are made, from their name, help,
// labels and buckets: all the code's own, so a bad one is a bug, hence the
// `expect`s.

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("valid metric"))
}

fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn float_gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    register(registry, Gauge::new(name, help).expect("valid metric"))
}

fn float_gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(
        registry,
        GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    register(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
            .expect("valid metric"),
    )
}

fn histograms(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )
        .expect("valid metric"),
    )
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
