//! EnqueueActor: group commit for `POST /v1/deliveries`. A request that
//! arrives while no group is being written starts one at once; the others
//! gather and go together when that group ends, or beside it as soon as they
//! hold `SECOND_GROUP_DELIVERIES` deliveries (up to `MAX_GROUPS_IN_FLIGHT`
//! groups). Each group is one transaction (see
//! [`deliveries::enqueue_group`]), and each request is answered only after
//! its transaction has committed; then one `NOTIFY` (see
//! [`deliveries::wake`]) wakes the queues.
//!
//! Why: a transaction per request paid a WAL flush and its fixed statements
//! per request; a group shares them. Why small groups wait rather than go
//! beside the one in flight: calls of one delivery from 8 clients were
//! written 2.1 to a group with two groups in flight, and PostgreSQL's CPU,
//! spent per transaction far more than per row, bounded the rate (2,559 and
//! 2,574 deliveries/s against 3,005 and 3,048 with one group at a time).

use std::sync::Arc;

use actix::fut::wrap_future;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::db::deliveries::{self, Delivery, Queued, Request};
use crate::db::{DbError, PgPool};
use crate::deliveries::destination::DeliverySettings;
use crate::messages::delivery::{Enqueue, EnqueueError};
use crate::metrics::Metrics;
use crate::shared::Shared;

/// Groups written at once, each on its own pooled connection: a large
/// group's statements run while the previous one waits for its commit to
/// be flushed, and commits that wait together share one flush.
const MAX_GROUPS_IN_FLIGHT: usize = 2;
/// Deliveries gathered that start a group beside the one being written
/// (a full request's worth); fewer wait for it to end.
const SECOND_GROUP_DELIVERIES: usize = 100;
/// At most this many deliveries in one group (a request brings up to 100),
/// so that a burst of requests is written in transactions of bounded size.
const MAX_GROUP_DELIVERIES: usize = 5_000;

type Reply = oneshot::Sender<Result<Vec<Delivery>, EnqueueError>>;

pub struct EnqueueActor {
    pool: PgPool,
    /// Group sizes go there.
    metrics: Arc<Metrics>,
    /// Requests waiting for a group to end.
    pending: Vec<(Request, Reply)>,
    /// Deliveries of the pending requests.
    pending_deliveries: usize,
    /// Groups being written now.
    in_flight: usize,
    /// The retries of a destination without settings, counted once.
    default_retries: i32,
}

impl EnqueueActor {
    pub fn new(shared: &Shared) -> Self {
        Self {
            pool: shared.pool.clone(),
            metrics: shared.metrics.clone(),
            pending: Vec::new(),
            pending_deliveries: 0,
            in_flight: 0,
            default_retries: DeliverySettings::default().retry_waits().len() as i32,
        }
    }

    /// Writes what waits as one group, if a writer is free and (beside a
    /// group in flight) enough waits.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let beside = self.in_flight > 0;
        if self.pending.is_empty()
            || self.in_flight >= MAX_GROUPS_IN_FLIGHT
            || (beside && self.pending_deliveries < SECOND_GROUP_DELIVERIES)
        {
            return;
        }
        let mut deliveries = 0;
        let taken = self
            .pending
            .iter()
            .take_while(|(request, _)| {
                deliveries += request.destination_ids.len();
                deliveries <= MAX_GROUP_DELIVERIES
            })
            .count()
            .max(1);
        let (requests, replies): (Vec<Request>, Vec<Reply>) = self.pending.drain(..taken).unzip();
        self.pending_deliveries -= requests
            .iter()
            .map(|request| request.destination_ids.len())
            .sum::<usize>();
        self.in_flight += 1;
        self.metrics
            .deliveries
            .enqueue_batch_requests
            .observe(requests.len() as f64);
        let span = tracing::info_span!("enqueue_group", requests = requests.len());
        let scheduled: Vec<Option<DateTime<Utc>>> = requests
            .iter()
            .map(|request| request.scheduled_at)
            .collect();
        let write = write_isolating(self.pool.clone(), requests, self.default_retries);
        ctx.spawn(
            wrap_future::<_, Self>(tracing::Instrument::instrument(write, span)).map(
                move |outcomes, actor, ctx| {
                    actor.in_flight -= 1;
                    // The earliest due time of what was queued (a delivery without one is due now).
                    let earliest = outcomes
                        .iter()
                        .zip(&scheduled)
                        .filter(|(outcome, _)| outcome.as_ref().is_ok_and(|d| !d.is_empty()))
                        .map(|(_, at)| at.unwrap_or(DateTime::<Utc>::MIN_UTC))
                        .min();
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                    // After the answers: they wait for the commit, not for the wake-up.
                    if let Some(earliest) = earliest {
                        let due = (earliest > Utc::now()).then_some(earliest);
                        ctx.spawn(wrap_future(wake(actor.pool.clone(), due)));
                    }
                    // What gathered meanwhile goes next.
                    actor.flush(ctx);
                },
            ),
        );
    }
}

/// Writes the group in one transaction. When PostgreSQL refuses it for a
/// reason other than an outage, one request may be the cause (a payload
/// `jsonb` refuses, say): the requests are then written one by one, so that
/// only the request at fault fails.
async fn write_isolating(
    pool: PgPool,
    requests: Vec<Request>,
    default_retries: i32,
) -> Vec<Result<Vec<Delivery>, EnqueueError>> {
    let error = match write(&pool, &requests, default_retries).await {
        Ok(queued) => return queued.into_iter().map(answer).collect(),
        Err(error) => error,
    };
    if error.is_unavailable() {
        tracing::warn!(%error, requests = requests.len(), "Enqueue transaction failed; nothing of it was queued");
        return requests
            .iter()
            .map(|_| Err(EnqueueError::Unavailable))
            .collect();
    }
    if requests.len() == 1 {
        return vec![Err(EnqueueError::Refused(error))];
    }
    tracing::warn!(%error, requests = requests.len(), "Enqueue group failed; writing its requests one by one");
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in &requests {
        outcomes.push(
            match write(&pool, std::slice::from_ref(request), default_retries).await {
                Ok(mut queued) => answer(queued.remove(0)),
                Err(error) if error.is_unavailable() => Err(EnqueueError::Unavailable),
                Err(error) => Err(EnqueueError::Refused(error)),
            },
        );
    }
    outcomes
}

/// One transaction for `requests`.
async fn write(
    pool: &PgPool,
    requests: &[Request],
    default_retries: i32,
) -> Result<Vec<Queued>, DbError> {
    let mut client = pool.get().await?;
    deliveries::enqueue_group(&mut client, requests, default_retries).await
}

/// Wakes the queues for a group's committed deliveries, due at `due` (now
/// when `None`). A lost wake-up only leaves them to the queues' next poll.
async fn wake(pool: PgPool, due: Option<DateTime<Utc>>) {
    let woken = async {
        let client = pool.get().await?;
        deliveries::wake(&client, due).await
    };
    if let Err(error) = woken.await {
        tracing::warn!(%error, "Cannot wake the delivery queues; they find the deliveries at their next poll");
    }
}

fn answer(queued: Queued) -> Result<Vec<Delivery>, EnqueueError> {
    match queued {
        Queued::Deliveries(deliveries) => Ok(deliveries),
        Queued::UnknownDestinations(unknown) => Err(EnqueueError::UnknownDestinations(unknown)),
    }
}

impl Actor for EnqueueActor {
    type Context = Context<Self>;
}

impl Handler<Enqueue> for EnqueueActor {
    type Result = ResponseFuture<Result<Vec<Delivery>, EnqueueError>>;

    fn handle(&mut self, Enqueue(request): Enqueue, ctx: &mut Self::Context) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        self.pending_deliveries += request.destination_ids.len();
        self.pending.push((request, reply));
        self.flush(ctx);
        Box::pin(async move { answer.await.unwrap_or(Err(EnqueueError::Unavailable)) })
    }
}
