//! ErrorLogActor: every `errors.flush_interval` writes what the [`ErrorTracker`]
//! buffered ([`error_tracking::flush`]), and about once an hour deletes
//! `error_log` rows older than `errors.retention`. A failed write leaves the
//! errors buffered for the next tick; ticks never overlap (each re-arms after
//! its work). At shutdown the application writes what is left.

use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;
use chrono::Utc;

use crate::config::ErrorsConfig;
use crate::db::{error_log as store, DbError, PgPool};
use crate::error_tracking::{self, ErrorTracker};
use crate::shared::Shared;

/// How often old `error_log` rows are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Write the buffered errors now: the actor's own tick, re-armed after each
/// write so that two writes never overlap.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Flush;

pub struct ErrorLogActor {
    pool: PgPool,
    tracker: ErrorTracker,
    config: ErrorsConfig,
    /// When the last retention pass ran; `None` until the first flush.
    pruned_at: Option<Instant>,
}

impl ErrorLogActor {
    pub fn new(shared: &Shared) -> Self {
        Self {
            pool: shared.pool.clone(),
            tracker: shared.errors.clone(),
            config: shared.config.errors.clone(),
            pruned_at: None,
        }
    }
}

impl Actor for ErrorLogActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify_later(Flush, self.config.flush_interval);
    }
}

async fn tick(
    tracker: ErrorTracker,
    pool: PgPool,
    window: Duration,
    prune_before: Option<chrono::DateTime<Utc>>,
) -> Result<(u64, u64), DbError> {
    let written = error_tracking::flush(&tracker, &pool, window).await?;
    let pruned = match prune_before {
        Some(before) => store::delete_older_than(&**pool.get().await?, before).await?,
        None => 0,
    };
    Ok((written, pruned))
}

impl Handler<Flush> for ErrorLogActor {
    type Result = ResponseActFuture<Self, ()>;

    #[tracing::instrument(name = "error_flush", skip_all)]
    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        let prune = self
            .pruned_at
            .is_none_or(|at| at.elapsed() >= RETENTION_EVERY);
        let prune_before = prune.then(|| {
            Utc::now()
                - chrono::Duration::from_std(self.config.retention).unwrap_or(chrono::Duration::MAX)
        });
        let work = tick(
            self.tracker.clone(),
            self.pool.clone(),
            self.config.flush_interval,
            prune_before,
        );
        Box::pin(wrap_future::<_, Self>(work).map(move |outcome, actor, ctx| {
            match outcome {
                Ok((written, pruned)) => {
                    if prune {
                        actor.pruned_at = Some(Instant::now());
                    }
                    if written > 0 || pruned > 0 {
                        tracing::debug!(written, pruned, "Wrote tracked errors");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "Could not write tracked errors; keeping them buffered")
                }
            }
            ctx.notify_later(Flush, actor.config.flush_interval);
        }))
    }
}
