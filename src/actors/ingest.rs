//! IngestActor: group commit, the way PostgreSQL groups WAL flushes. A
//! request that arrives while nothing is being written starts a transaction at
//! once; requests that arrive while a transaction is being written gather for
//! the next one, which starts when a write ends, when the gathered events fill
//! a group (`group_commit_max_events`), or `group_commit_window` after the first
//! of them while fewer than `max_concurrent_writes` are being written (so that
//! large batches keep several writers busy). Each request is answered only
//! after its transaction has committed. A circuit breaker guards PostgreSQL:
//! after `breaker_failure_threshold` consecutive failed writes, requests fail
//! at once with 503 for `breaker_reset_timeout`, then one write probes again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;
use chrono::NaiveDate;
use tokio::sync::oneshot;

use super::alert::AlertActor;
use crate::breaker::Breaker;
use crate::config::IngestConfig;
use crate::db::events::{self, IdReserve, Submission, Written};
use crate::db::{DbError, PgPool};
use crate::error_tracking::{ErrorEvent, ErrorTracker, Severity};
use crate::events::Receipt;
use crate::messages::alert::{Observe, ObservedEvent};
use crate::messages::ingest::{Ingest, IngestError};
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::supervisor::ActorHandle;

type Reply = oneshot::Sender<Result<Vec<Receipt>, IngestError>>;

pub struct IngestActor {
    pool: PgPool,
    config: IngestConfig,
    /// Hears of every event stored, after its commit.
    alerts: ActorHandle<AlertActor>,
    /// Hears of every failed commit.
    errors: ErrorTracker,
    /// Batch sizes go there.
    metrics: Arc<Metrics>,
    /// Requests waiting for the next transaction.
    pending: Vec<(Submission, Reply)>,
    pending_events: usize,
    /// The window of the next group is running: cancelled when the group
    /// starts earlier.
    window: Option<SpawnHandle>,
    /// Group transactions being written now.
    in_flight: usize,
    /// Event and link ids drawn ahead of the groups that use them.
    ids: Arc<IdReserve>,
    /// Months known to have an `audit_log` partition; `None` until first read.
    known_months: Option<HashSet<NaiveDate>>,
    /// Guards PostgreSQL: open, requests fail at once with 503.
    breaker: Breaker,
}

impl IngestActor {
    pub fn new(shared: &Shared, alerts: ActorHandle<AlertActor>) -> Self {
        let config = shared.config.ingest.clone();
        Self {
            pool: shared.pool.clone(),
            alerts,
            errors: shared.errors.clone(),
            metrics: shared.metrics.clone(),
            pending: Vec::new(),
            pending_events: 0,
            window: None,
            in_flight: 0,
            ids: Arc::default(),
            known_months: None,
            breaker: Breaker::new(
                config.breaker_failure_threshold,
                config.breaker_reset_timeout,
            ),
            config,
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(window) = self.window.take() {
            ctx.cancel_future(window);
        }
        if self.in_flight >= self.config.max_concurrent_writes || self.pending.is_empty() {
            return;
        }
        self.in_flight += 1;
        let batch = std::mem::take(&mut self.pending);
        self.pending_events = 0;
        let (submissions, replies): (Vec<Submission>, Vec<Reply>) = batch.into_iter().unzip();
        self.metrics
            .ingest
            .batch_requests
            .observe(submissions.len() as f64);
        self.metrics.ingest.batch_events.observe(
            submissions
                .iter()
                .map(|submission| submission.events.len())
                .sum::<usize>() as f64,
        );
        let pool = self.pool.clone();
        let known = self.known_months.clone();
        let write = write_isolating(pool, self.ids.clone(), known, submissions);
        let span = tracing::info_span!("ingest_group", requests = replies.len());
        ctx.spawn(
            wrap_future::<_, Self>(tracing::Instrument::instrument(write, span)).map(
                move |group, actor, ctx| {
                    actor.in_flight -= 1;
                    actor.finish(group, replies);
                    // What gathered while this group was written goes next.
                    actor.flush(ctx);
                },
            ),
        );
    }

    /// Answers each request of a written group, hands the stored events to
    /// the AlertActor and keeps the breaker's count.
    fn finish(&mut self, group: GroupWrite, replies: Vec<Reply>) {
        if let Some(known) = group.known {
            self.known_months
                .get_or_insert_with(HashSet::new)
                .extend(known);
        }
        let mut stored = group.stored;
        let mut observed = Vec::with_capacity(stored.len());
        let mut outage = false;
        let mut failures = Vec::new();
        for ((reply, outcome), submission) in replies
            .into_iter()
            .zip(group.outcomes)
            .zip(group.submissions)
        {
            match outcome {
                Ok(receipts) => {
                    for (event, receipt) in submission.events.into_iter().zip(&receipts) {
                        // `remove`: an event repeated within the group is observed once.
                        if stored.remove(&receipt.id) {
                            observed.push(ObservedEvent {
                                id: receipt.id,
                                event,
                            });
                        }
                    }
                    let _ = reply.send(Ok(receipts));
                }
                Err(error) => {
                    outage |= error.is_unavailable();
                    failures.push((reply, error));
                }
            }
        }
        if !observed.is_empty() {
            self.alerts.notify(Observe(observed));
        }
        let now = Instant::now();
        if outage {
            if self.breaker.failed(now) {
                tracing::warn!(
                    reset_after = ?self.config.breaker_reset_timeout,
                    "Database breaker open: ingest answers 503 at once"
                );
            }
            // The cached partition list may be stale after an outage.
            self.known_months = None;
        } else {
            // PostgreSQL answered, even if it refused some request.
            self.breaker.succeeded();
        }
        let retry_after = self.breaker.open_for(now).unwrap_or(Duration::from_secs(1));
        // One log line and one recorded error per failed write, however many
        // requests shared it.
        let mut recorded: Vec<&Arc<DbError>> = Vec::new();
        for (_, error) in &failures {
            if recorded.iter().any(|seen| Arc::ptr_eq(seen, error)) {
                continue;
            }
            recorded.push(error);
            let requests = failures
                .iter()
                .filter(|(_, other)| Arc::ptr_eq(other, error))
                .count();
            self.record_failure(error, requests);
        }
        for (reply, error) in failures {
            let _ = reply.send(Err(if error.is_unavailable() {
                IngestError::Unavailable { retry_after }
            } else {
                IngestError::Failed
            }));
        }
    }

    /// Logs a failed write and hands it to the error tracker.
    fn record_failure(&self, error: &DbError, requests: usize) {
        let unavailable = error.is_unavailable();
        if unavailable {
            tracing::warn!(%error, requests, "Ingest transaction failed; nothing of it was stored");
        } else {
            tracing::error!(%error, requests, "Ingest transaction failed; nothing of it was stored");
        }
        let mut event = ErrorEvent::new(
            if unavailable { "dependency" } else { "ingest" },
            if unavailable {
                Severity::Medium
            } else {
                Severity::High
            },
            "ingest_commit_failed",
            "ingest",
            "write_group",
            error.to_string(),
        );
        event.retryable = unavailable;
        event.context = serde_json::json!({ "requests": requests });
        self.errors.record(event);
    }
}

/// What became of a group: each request's receipts or error, in order.
struct GroupWrite {
    /// The months now known to have a partition (`None`: unknown after an error).
    known: Option<HashSet<NaiveDate>>,
    outcomes: Vec<Result<Vec<Receipt>, Arc<DbError>>>,
    /// Ids of the events stored (not answered by an earlier idempotency key).
    stored: HashSet<i64>,
    submissions: Vec<Submission>,
}

/// Writes the group in one transaction. When that fails for a reason other
/// than an outage, one request's events may be the cause (a value PostgreSQL
/// refuses, a month whose partition cannot be made): the requests are then
/// written one by one, so that only the request at fault fails and no
/// organization pays for another's input.
async fn write_isolating(
    pool: PgPool,
    ids: Arc<IdReserve>,
    known: Option<HashSet<NaiveDate>>,
    submissions: Vec<Submission>,
) -> GroupWrite {
    let error = match write_together(&pool, &ids, known.clone(), &submissions).await {
        Ok((known, written)) => {
            return GroupWrite {
                known: Some(known),
                outcomes: written.receipts.into_iter().map(Ok).collect(),
                stored: written.stored,
                submissions,
            }
        }
        Err(error) => Arc::new(error),
    };
    if error.is_unavailable() || submissions.len() == 1 {
        return GroupWrite {
            known: None,
            outcomes: submissions.iter().map(|_| Err(error.clone())).collect(),
            stored: HashSet::new(),
            submissions,
        };
    }
    tracing::warn!(%error, requests = submissions.len(), "Group commit failed; writing its requests one by one");
    let mut known = known;
    let mut outcomes = Vec::with_capacity(submissions.len());
    let mut stored = HashSet::new();
    for submission in &submissions {
        match write_together(&pool, &ids, known.clone(), std::slice::from_ref(submission)).await {
            Ok((now_known, written)) => {
                known = Some(now_known);
                stored.extend(written.stored);
                outcomes.push(Ok(written.receipts.into_iter().next().unwrap_or_default()));
            }
            Err(error) => outcomes.push(Err(Arc::new(error))),
        }
    }
    GroupWrite {
        known,
        outcomes,
        stored,
        submissions,
    }
}

/// One transaction for all of `submissions`, after making their partitions.
async fn write_together(
    pool: &PgPool,
    ids: &IdReserve,
    known: Option<HashSet<NaiveDate>>,
    submissions: &[Submission],
) -> Result<(HashSet<NaiveDate>, Written), DbError> {
    let known = ensure_partitions(pool, known, submissions).await?;
    let written = events::write_group(pool, ids, submissions).await?;
    Ok((known, written))
}

/// Makes sure every month of the submitted events has a partition, so that no
/// event is refused for want of one; returns the updated set of known months.
async fn ensure_partitions(
    pool: &PgPool,
    known: Option<HashSet<NaiveDate>>,
    submissions: &[Submission],
) -> Result<HashSet<NaiveDate>, DbError> {
    let mut known = match known {
        Some(known) => known,
        None => {
            let client = pool.get().await?;
            events::partition_months(&**client)
                .await?
                .into_iter()
                .collect()
        }
    };
    let mut missing: Vec<NaiveDate> = submissions
        .iter()
        .flat_map(|submission| {
            submission
                .events
                .iter()
                .map(|event| events::month_of(event.timestamp))
        })
        .filter(|month| !known.contains(month))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        events::ensure_partitions(pool, &missing).await?;
        tracing::info!(months = ?missing, "Created audit_log partitions on demand");
        known.extend(missing);
    }
    Ok(known)
}

impl Actor for IngestActor {
    type Context = Context<Self>;
}

impl Handler<Ingest> for IngestActor {
    type Result = ResponseFuture<Result<Vec<Receipt>, IngestError>>;

    fn handle(&mut self, ingest: Ingest, ctx: &mut Self::Context) -> Self::Result {
        if let Err(retry_after) = self.breaker.admit(Instant::now()) {
            return Box::pin(async move { Err(IngestError::Unavailable { retry_after }) });
        }
        let (reply, answer) = oneshot::channel();
        self.pending_events += ingest.events.len();
        self.pending.push((
            Submission {
                events: ingest.events,
                received: ingest.received,
            },
            reply,
        ));
        if self.in_flight == 0 || self.pending_events >= self.config.group_commit_max_events {
            self.flush(ctx);
        } else if self.window.is_none() && self.in_flight < self.config.max_concurrent_writes {
            self.window = Some(
                ctx.run_later(self.config.group_commit_window, |actor, ctx| {
                    actor.window = None;
                    actor.flush(ctx)
                }),
            );
        }
        Box::pin(async move {
            answer.await.unwrap_or(Err(IngestError::Unavailable {
                retry_after: Duration::from_secs(1),
            }))
        })
    }
}
