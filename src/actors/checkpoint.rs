//! CheckpointActor: every `integrity.checkpoint_interval`, signs a checkpoint of
//! each organization's chain that grew since its last one. One worker instance
//! does it at a time (a PostgreSQL advisory lock); the others skip the round.

use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;

use crate::db::{checkpoints, PgPool};
use crate::integrity::keys::IntegrityKeys;
use crate::shared::Shared;

/// Sign checkpoints of every chain that grew: the actor's own tick, re-armed
/// after each run so that two rounds never overlap.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct SignCheckpoints;

pub struct CheckpointActor {
    pool: PgPool,
    keys: Arc<IntegrityKeys>,
    interval: Duration,
}

impl CheckpointActor {
    pub fn new(shared: &Shared) -> Self {
        Self {
            pool: shared.pool.clone(),
            keys: shared.keys.clone(),
            interval: shared.config.integrity.checkpoint_interval,
        }
    }
}

impl Actor for CheckpointActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify_later(SignCheckpoints, self.interval);
    }
}

impl Handler<SignCheckpoints> for CheckpointActor {
    type Result = ResponseActFuture<Self, ()>;

    #[tracing::instrument(name = "sign_checkpoints", skip_all)]
    fn handle(&mut self, _: SignCheckpoints, _: &mut Self::Context) -> Self::Result {
        let (pool, keys) = (self.pool.clone(), self.keys.clone());
        let round = async move {
            let client = pool.get().await?;
            checkpoints::create_unless_signing(&**client, &keys).await
        };
        Box::pin(wrap_future::<_, Self>(round).map(|outcome, actor, ctx| {
            match outcome {
                Ok(Some(signed)) if signed > 0 => tracing::info!(signed, "Signed checkpoints"),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "Cannot sign checkpoints; will retry next round")
                }
            }
            ctx.notify_later(SignCheckpoints, actor.interval);
        }))
    }
}
