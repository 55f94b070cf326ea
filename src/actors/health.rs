//! HealthActor: keeps `destination_health` current from the DeliveryActors'
//! reports, written for all destinations at once every `WRITE_EVERY`. Every
//! `delivery.health_interval`, it disables destinations that have failed
//! without a single success for their `auto_disable_after` (with a reason and
//! a DELIVERY alert; the API re-enables them), and refreshes the
//! per-destination gauges and the queue's depth and oldest due delivery on
//! `/metrics`. One worker instance disables at a time (an advisory lock).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;
use chrono::Utc;
use tracing::Instrument;

use crate::alerts::system;
use crate::db::destinations::HealthBatch;
use crate::db::locks::{self, Round};
use crate::db::{deliveries, destinations, DbError, PgPool};
use crate::deliveries::destination::DeliverySettings;
use crate::messages::delivery::HealthReport;
use crate::metrics::Metrics;
use crate::shared::Shared;

/// How long reports wait to be written together. A DeliveryActor reports at
/// most every 500 ms, so `destination_health` lags its attempts by a second
/// at most.
const WRITE_EVERY: Duration = Duration::from_millis(500);

pub struct HealthActor {
    pool: PgPool,
    metrics: Arc<Metrics>,
    interval: Duration,
    /// Reported attempts not written yet, one batch per destination.
    reported: HashMap<i64, HealthBatch>,
    /// A write is scheduled or under way: one at a time, each taking every
    /// batch reported by then.
    writing: bool,
}

impl HealthActor {
    pub fn new(shared: &Shared) -> Self {
        Self {
            pool: shared.pool.clone(),
            metrics: shared.metrics.clone(),
            interval: shared.config.delivery.health_interval,
            reported: HashMap::new(),
            writing: false,
        }
    }

    fn schedule_write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.reported.is_empty() {
            return;
        }
        self.writing = true;
        ctx.run_later(WRITE_EVERY, |actor, ctx| actor.write(ctx));
    }

    /// Writes every reported batch in one transaction. Batches that could not
    /// be written are kept, ahead of those reported since, for the next write.
    fn write(&mut self, ctx: &mut Context<Self>) {
        let batches: Vec<HealthBatch> = std::mem::take(&mut self.reported).into_values().collect();
        let pool = self.pool.clone();
        let span = tracing::info_span!("destination_health_write", destinations = batches.len());
        let write = async move {
            let written = match pool.get().await {
                Ok(mut client) => destinations::record_attempts(&mut client, &batches).await,
                Err(error) => Err(error),
            };
            (batches, written)
        };
        ctx.spawn(wrap_future::<_, Self>(write.instrument(span)).map(
            |(batches, written), actor, ctx| {
                if let Err(error) = written {
                    tracing::warn!(%error, "Cannot update destination health; will retry");
                    for mut batch in batches {
                        if let Some(later) = actor.reported.remove(&batch.destination_id) {
                            batch.absorb(later);
                        }
                        actor.reported.insert(batch.destination_id, batch);
                    }
                }
                actor.writing = false;
                actor.schedule_write(ctx);
            },
        ));
    }
}

async fn round(pool: PgPool, metrics: Arc<Metrics>) -> Result<usize, DbError> {
    let client = pool.get().await?;
    let snapshot = destinations::health_snapshot(&**client).await?;
    metrics.deliveries.destination_consecutive_failures.reset();
    metrics.deliveries.destination_breaker_open.reset();
    for (id, failures, open) in snapshot {
        let label = id.to_string();
        metrics
            .deliveries
            .destination_consecutive_failures
            .with_label_values(&[&label])
            .set(i64::from(failures));
        metrics
            .deliveries
            .destination_breaker_open
            .with_label_values(&[&label])
            .set(i64::from(open));
    }
    let (depth, oldest_due) = deliveries::queue_figures(&**client).await?;
    for (status, count) in depth {
        metrics
            .deliveries
            .queue_depth
            .with_label_values(&[&status])
            .set(count);
    }
    metrics.deliveries.queue_oldest_due.set(oldest_due);
    if !locks::try_lock(&**client, Round::DestinationHealth).await? {
        return Ok(0);
    }
    let outcome = async {
        let mut disabled = 0;
        for destination in destinations::failing(&**client).await? {
            let settings = DeliverySettings::parse(Some(&destination.settings)).unwrap_or_default();
            let failing_for = (Utc::now() - destination.failing_since).to_std().unwrap_or_default();
            if let Some(reason) = settings.auto_disable_reason(failing_for) {
                destinations::disable_failing(&**client, &destination, &reason).await?;
                system::destination_disabled(&**client, &destination, &reason).await?;
                tracing::warn!(destination = destination.id, %reason, "Disabled a failing destination");
                disabled += 1;
            }
        }
        Ok::<_, DbError>(disabled)
    }
    .await;
    locks::unlock(&**client, Round::DestinationHealth).await?;
    outcome
}

/// The HealthActor's round: disable destinations failing too long, refresh the
/// gauges. The handler re-arms it once the round has ended, so rounds never
/// overlap.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct CheckHealth;

impl Actor for HealthActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(CheckHealth);
    }
}

impl Handler<HealthReport> for HealthActor {
    type Result = ();

    #[tracing::instrument(name = "health_report", skip_all, fields(destination = report.0.destination_id))]
    fn handle(&mut self, report: HealthReport, ctx: &mut Self::Context) {
        let HealthReport(batch) = report;
        match self.reported.get_mut(&batch.destination_id) {
            Some(earlier) => earlier.absorb(batch),
            None => {
                self.reported.insert(batch.destination_id, batch);
            }
        }
        self.schedule_write(ctx);
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
