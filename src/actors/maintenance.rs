//! MaintenanceActor: every `operations.maintenance_interval` (zero: never)
//! runs database maintenance ([`maintenance::database::run`]: ANALYZE, and
//! VACUUM where dead tuples pile up), one worker instance at a time; the
//! others skip the round. Failures are recorded by the error tracker.

use std::sync::Arc;

use actix::fut::wrap_future;
use actix::prelude::*;

use crate::config::Config;
use crate::error_tracking::{ErrorEvent, ErrorTracker, Severity};
use crate::maintenance::database::{self, Trigger};
use crate::shared::Shared;

/// Run database maintenance now: the actor's own tick, re-armed after each run.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct MaintainDatabase;

pub struct MaintenanceActor {
    config: Arc<Config>,
    errors: ErrorTracker,
}

impl MaintenanceActor {
    pub fn new(shared: &Shared) -> Self {
        Self {
            config: shared.config.clone(),
            errors: shared.errors.clone(),
        }
    }

    fn schedule(&self, ctx: &mut Context<Self>) {
        let interval = self.config.operations.maintenance_interval;
        if !interval.is_zero() {
            ctx.notify_later(MaintainDatabase, interval);
        }
    }
}

impl Actor for MaintenanceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.schedule(ctx);
    }
}

impl Handler<MaintainDatabase> for MaintenanceActor {
    type Result = ResponseActFuture<Self, ()>;

    #[tracing::instrument(name = "database_maintenance", skip_all)]
    fn handle(&mut self, _: MaintainDatabase, _: &mut Self::Context) -> Self::Result {
        let config = self.config.clone();
        let work = async move { database::run(&config, Trigger::Schedule).await };
        Box::pin(wrap_future::<_, Self>(work).map(|outcome, actor, ctx| {
            match outcome {
                Ok(Some(run)) => tracing::info!(run = run.id, "Database maintenance done"),
                Ok(None) => tracing::debug!("Another worker is maintaining the database"),
                Err(error) => {
                    tracing::warn!(%error, "Database maintenance failed; the next round retries");
                    actor.errors.record(maintenance_failure(&error));
                }
            }
            actor.schedule(ctx);
        }))
    }
}

/// The tracked error of a failed maintenance run.
pub fn maintenance_failure(error: &database::MaintenanceError) -> ErrorEvent {
    let mut event = ErrorEvent::new(
        "maintenance",
        Severity::Medium,
        "maintenance_failed",
        "maintenance",
        "database",
        error.to_string(),
    );
    event.retryable = true;
    event
}
