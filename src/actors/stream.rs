//! StreamActor: cuts event streams' batches and hands them to the delivery
//! machinery. Each round (at once after a round that moved something, soon
//! while a batch is in flight, else after `streams.poll_interval`) it
//! 1. moves the cursor of each subscription whose batch was delivered;
//! 2. starts again each batch whose delivery gave up, after
//!    `streams.failed_batch_retry_after`: a stream holds its place rather
//!    than skip events;
//! 3. locks the subscriptions free to start a batch (`SKIP LOCKED`, so
//!    several workers share them) and, for each whose pending events fill a
//!    batch or have waited `max_delay_ms`, queues them as one delivery.
//!
//! One batch per subscription is in flight at a time, so batches arrive in
//! chain order; a batch keeps its delivery's id across retries. Ingest never
//! waits for any of it: streams read committed events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;
use chrono::Utc;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::config::StreamsConfig;
use crate::db::streams::{self, BatchRange, NewBatch, Pending, Subscription};
use crate::db::{DbError, PgPool};
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::streams as stream_format;

/// The wait between rounds while a batch is in flight: its delivery frees
/// its stream for the next one, which should follow at once.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(10);
/// How often the subscriptions' lag (`audit_worker_stream_lag_seconds`) is
/// read again.
const LAG_REFRESH: Duration = Duration::from_secs(5);
/// Subscriptions looked at per round.
const SUBSCRIPTIONS_PER_ROUND: i64 = 100;
/// Attempts of a batch's delivery: more than any destination's retry
/// schedule, so that the schedule, not this count, decides when it gives up.
const BATCH_MAX_RETRIES: i32 = 1_000_000;

/// Run a round now: the actor's own tick, re-armed after each round so that
/// two rounds never overlap.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Round;

pub struct StreamActor {
    pool: PgPool,
    settings: StreamsConfig,
    metrics: Arc<Metrics>,
    /// When the subscriptions' lag was last read for the metrics.
    lag_read_at: Option<Instant>,
}

impl StreamActor {
    pub fn new(shared: &Shared) -> Self {
        Self {
            pool: shared.pool.clone(),
            settings: shared.config.streams.clone(),
            metrics: shared.metrics.clone(),
            lag_read_at: None,
        }
    }

    /// Counts what a round did, and shows the lag it read.
    fn observe(&self, rounded: &Rounded) {
        let batches = &self.metrics.streams.batches;
        batches
            .with_label_values(&["started"])
            .inc_by(rounded.started as u64);
        batches
            .with_label_values(&["delivered"])
            .inc_by(rounded.settled);
        batches
            .with_label_values(&["restarted"])
            .inc_by(rounded.restarted);
        if let Some(lags) = &rounded.lags {
            let gauge = &self.metrics.streams.lag_seconds;
            // Deleted subscriptions' series go.
            gauge.reset();
            for (subscription, lag) in lags {
                gauge
                    .with_label_values(&[&subscription.to_string()])
                    .set(*lag);
            }
        }
    }
}

/// What a round did.
#[derive(Debug, Default)]
struct Rounded {
    settled: u64,
    restarted: u64,
    started: usize,
    /// Batches are in flight after the round.
    in_flight: bool,
    /// Each subscription's lag in seconds, when the round read them.
    lags: Option<Vec<(i64, f64)>>,
}

async fn round(pool: PgPool, settings: StreamsConfig, read_lag: bool) -> Result<Rounded, DbError> {
    let mut client = pool.get().await?;
    let settled = streams::settle_delivered(&**client).await?;
    let restarted = streams::retry_failed(&**client, settings.failed_batch_retry_after).await?;
    let transaction = client.transaction().await?;
    let mut started = 0;
    let mut room = SUBSCRIPTIONS_PER_ROUND;
    for organization in streams::organizations_with_idle(&transaction).await? {
        let claimed = streams::claim_idle(&transaction, &organization, room).await?;
        room -= claimed.len() as i64;
        for subscription in claimed {
            if start_batch(&transaction, &subscription).await? {
                started += 1;
            }
        }
        if room == 0 {
            break;
        }
    }
    transaction.commit().await?;
    let in_flight = started > 0 || streams::any_in_flight(&**client).await?;
    let lags = if read_lag {
        Some(streams::lag_seconds(&**client).await?)
    } else {
        None
    };
    Ok(Rounded {
        settled,
        restarted,
        started,
        in_flight,
        lags,
    })
}

/// Queues the subscription's next batch if it is due: full (or more wait
/// beyond what was looked at), or its oldest event has waited `max_delay_ms`.
/// A batch is queued as the range of the chain it covers; its delivery reads
/// and writes its events as it sends them. With no event of its own in the
/// links looked at, the subscription moves past them. Whether it moved
/// either way.
async fn start_batch(
    transaction: &impl GenericClient,
    subscription: &Subscription,
) -> Result<bool, DbError> {
    let limits = subscription.limits;
    let tail = subscription.tail();
    let Pending {
        events: pending,
        looked_to,
        at_end,
    } = streams::pending_places(transaction, &tail, i64::from(limits.max_events)).await?;
    let (Some(first), Some(last)) = (pending.first(), pending.last()) else {
        return match looked_to.filter(|to| *to != subscription.cursor) {
            Some(to) => {
                streams::skip_to(transaction, subscription, to).await?;
                Ok(true)
            }
            None => Ok(false),
        };
    };
    let waited = (Utc::now() - first.written_at).to_std().unwrap_or_default();
    let full = pending.len() >= limits.max_events as usize || !at_end;
    if !full && waited < Duration::from_millis(limits.max_delay_ms as u64) {
        return Ok(false);
    }
    let range = BatchRange {
        subscription_id: subscription.id,
        format: subscription.format.clone(),
        filter: subscription.filter.clone(),
        starts_at: subscription.starts_at,
        after: subscription.cursor,
        through: last.position,
    };
    let object_key = stream_format::object_key(
        &subscription.organization_id,
        subscription.id,
        Utc::now(),
        first.position.event_id,
        last.position.event_id,
    );
    let batch = NewBatch {
        id: Uuid::now_v7(),
        range: &range,
        object_key: &object_key,
        max_retries: BATCH_MAX_RETRIES,
    };
    streams::start_batch(transaction, subscription, &batch).await?;
    tracing::debug!(
        subscription = subscription.id,
        batch = %batch.id,
        events = pending.len(),
        "Queued a stream batch"
    );
    Ok(true)
}

impl Actor for StreamActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.settings.enabled {
            ctx.notify(Round);
        }
    }
}

impl Handler<Round> for StreamActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Round, _: &mut Self::Context) -> Self::Result {
        let span = tracing::debug_span!("stream_round");
        let read_lag = self
            .lag_read_at
            .is_none_or(|read_at| read_at.elapsed() >= LAG_REFRESH);
        if read_lag {
            self.lag_read_at = Some(Instant::now());
        }
        let work = round(self.pool.clone(), self.settings.clone(), read_lag);
        Box::pin(
            wrap_future::<_, Self>(tracing::Instrument::instrument(work, span)).map(
                |outcome, actor, ctx| {
                    if let Ok(rounded) = &outcome {
                        actor.observe(rounded);
                    }
                    match outcome {
                        // Work moved: the next round may find more at once
                        // (a delivered batch frees its stream for the next).
                        Ok(rounded) if rounded.settled + rounded.restarted > 0 || rounded.started > 0 => {
                            tracing::debug!(?rounded, "Stream round");
                            ctx.notify(Round);
                        }
                        Ok(rounded) if rounded.in_flight => {
                            ctx.notify_later(Round, IN_FLIGHT_POLL);
                        }
                        Ok(_) => {
                            ctx.notify_later(Round, actor.settings.poll_interval);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "Stream round failed; trying again at the next one");
                            ctx.notify_later(Round, actor.settings.poll_interval);
                        }
                    }
                },
            ),
        )
    }
}
