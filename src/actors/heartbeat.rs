//! HeartbeatActor: probes PostgreSQL and Redis at a fixed interval, keeps the
//! `audit_worker_dependency_up` gauge current, and logs each change of state
//! once (an outage is one warning, not one per request).

use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;

use crate::db::{self, PgPool};
use crate::metrics::Metrics;
use crate::redis_conn::RedisConnection;
use crate::shared::Shared;

/// Probe the dependencies now: the actor's own tick, re-armed after each
/// probe finishes so that two probes never overlap.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Beat;

pub struct HeartbeatActor {
    pool: PgPool,
    redis: RedisConnection,
    metrics: Arc<Metrics>,
    interval: Duration,
    /// Time limit of the PostgreSQL probe.
    probe_timeout: Duration,
    /// Last known state per dependency; `None` until the first probe.
    postgres_up: Option<bool>,
    redis_up: Option<bool>,
}

impl HeartbeatActor {
    pub fn new(shared: &Shared) -> Self {
        Self {
            pool: shared.pool.clone(),
            redis: shared.redis.clone(),
            metrics: shared.metrics.clone(),
            interval: shared.config.supervisor.heartbeat_interval,
            probe_timeout: shared.config.database.health_timeout,
            postgres_up: None,
            redis_up: None,
        }
    }
}

/// Updates the gauge and logs only when the state changed since the last probe.
fn record(
    metrics: &Metrics,
    last: &mut Option<bool>,
    dependency: &'static str,
    outcome: Result<(), String>,
) {
    let up = outcome.is_ok();
    metrics
        .dependencies
        .up
        .with_label_values(&[dependency])
        .set(i64::from(up));
    if *last != Some(up) {
        match outcome {
            Ok(()) => tracing::info!(dependency, "Dependency is reachable"),
            Err(error) => tracing::warn!(dependency, %error, "Dependency is unreachable"),
        }
    }
    *last = Some(up);
}

impl Actor for HeartbeatActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(Beat);
    }
}

impl Handler<Beat> for HeartbeatActor {
    type Result = ResponseActFuture<Self, ()>;

    #[tracing::instrument(name = "heartbeat", skip_all)]
    fn handle(&mut self, _: Beat, _: &mut Self::Context) -> Self::Result {
        let (pool, redis, timeout) = (self.pool.clone(), self.redis.clone(), self.probe_timeout);
        let probes = async move {
            let (postgres, redis) = tokio::join!(db::ping(&pool, timeout), redis.ping());
            (
                postgres.map_err(|e| e.to_string()),
                redis.map_err(|e| e.to_string()),
            )
        };
        Box::pin(
            wrap_future::<_, Self>(probes).map(|(postgres, redis), actor, ctx| {
                record(&actor.metrics, &mut actor.postgres_up, "postgres", postgres);
                record(&actor.metrics, &mut actor.redis_up, "redis", redis);
                // Re-armed only after this probe finished, so probes never overlap.
                ctx.notify_later(Beat, actor.interval);
            }),
        )
    }
}
