//! HealthActor: every `delivery.health_interval`, disables destinations that
//! have failed without a single success for their `auto_disable_after` (with a
//! reason and a DELIVERY alert; the API re-enables them), and refreshes the
//! per-destination gauges and the queue's depth and oldest due delivery on
//! `/metrics`. `destination_health` itself is kept current by each attempt.
//! One worker instance disables at a time (an advisory lock).

use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;
use chrono::Utc;

use crate::alerts::system;
use crate::db::{deliveries, destinations, DbError, PgPool};
use crate::delivery::config::DeliverySettings;
use crate::messages::delivery::CheckHealth;
use crate::metrics::Metrics;

/// Advisory lock key of the disabling round ("audit_hl").
const LOCK_KEY: i64 = 0x6175_6469_745f_686c;

pub struct HealthActor {
    pool: PgPool,
    metrics: Arc<Metrics>,
    interval: Duration,
}

impl HealthActor {
    pub fn new(pool: PgPool, metrics: Arc<Metrics>, interval: Duration) -> Self {
        Self {
            pool,
            metrics,
            interval,
        }
    }
}

async fn round(pool: PgPool, metrics: Arc<Metrics>) -> Result<usize, DbError> {
    let client = pool.get().await?;
    let snapshot = destinations::health_snapshot(&*client).await?;
    metrics.destination_consecutive_failures.reset();
    metrics.destination_breaker_open.reset();
    for (id, failures, open) in snapshot {
        let label = id.to_string();
        metrics
            .destination_consecutive_failures
            .with_label_values(&[&label])
            .set(i64::from(failures));
        metrics
            .destination_breaker_open
            .with_label_values(&[&label])
            .set(i64::from(open));
    }
    let (depth, oldest_due) = deliveries::queue_figures(&*client).await?;
    for (status, count) in depth {
        metrics
            .delivery_queue_depth
            .with_label_values(&[&status])
            .set(count);
    }
    metrics.delivery_queue_oldest_due.set(oldest_due);
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
        .await?
        .get(0);
    if !locked {
        return Ok(0);
    }
    let outcome = async {
        let mut disabled = 0;
        for destination in destinations::failing(&*client).await? {
            let limit = DeliverySettings::parse(Some(&destination.settings)).unwrap_or_default().auto_disable_after;
            let failing_for = (Utc::now() - destination.failing_since).to_std().unwrap_or_default();
            if failing_for >= limit {
                let reason = format!(
                    "no successful delivery for {} (auto_disable_after is {})",
                    humantime::format_duration(Duration::from_secs(failing_for.as_secs())),
                    humantime::format_duration(limit)
                );
                destinations::disable_failing(&*client, &destination, &reason).await?;
                system::destination_disabled(&*client, &destination, &reason).await?;
                tracing::warn!(destination = destination.id, %reason, "Disabled a failing destination");
                disabled += 1;
            }
        }
        Ok::<_, DbError>(disabled)
    }
    .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await?;
    outcome
}

impl Actor for HealthActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(CheckHealth);
    }
}

impl Handler<CheckHealth> for HealthActor {
    type Result = ResponseActFuture<Self, ()>;

    #[tracing::instrument(name = "destination_health", skip_all)]
    fn handle(&mut self, _: CheckHealth, _: &mut Self::Context) -> Self::Result {
        let work = round(self.pool.clone(), self.metrics.clone());
        Box::pin(wrap_future::<_, Self>(work).map(|outcome, actor, ctx| {
            if let Err(error) = outcome {
                tracing::warn!(%error, "Cannot check destination health; will retry next round");
            }
            ctx.notify_later(CheckHealth, actor.interval);
        }))
    }
}
