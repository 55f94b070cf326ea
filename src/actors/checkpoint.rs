//! CheckpointActor: every `integrity.checkpoint_interval`, signs a checkpoint of
//! each organization's chain that grew since its last one. One worker instance
//! does it at a time (a PostgreSQL advisory lock); the others skip the round.

use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;

use crate::db::{checkpoints, DbError, PgPool};
use crate::integrity::keys::IntegrityKeys;
use crate::messages::checkpoint::SignCheckpoints;

/// Advisory lock key of the checkpoint round ("audit_cp").
const LOCK_KEY: i64 = 0x6175_6469_745f_6370;

pub struct CheckpointActor {
    pool: PgPool,
    keys: Arc<IntegrityKeys>,
    interval: Duration,
}

impl CheckpointActor {
    pub fn new(pool: PgPool, keys: Arc<IntegrityKeys>, interval: Duration) -> Self {
        Self {
            pool,
            keys,
            interval,
        }
    }
}

impl Actor for CheckpointActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify_later(SignCheckpoints, self.interval);
    }
}

/// Signs the due checkpoints if this instance wins the lock; returns how many.
async fn sign_round(pool: PgPool, keys: Arc<IntegrityKeys>) -> Result<Option<usize>, DbError> {
    let client = pool.get().await?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
        .await?
        .get(0);
    if !locked {
        return Ok(None);
    }
    let signed = checkpoints::create(&*client, &keys, None).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await?;
    Ok(Some(signed?))
}

impl Handler<SignCheckpoints> for CheckpointActor {
    type Result = ResponseActFuture<Self, ()>;

    #[tracing::instrument(name = "sign_checkpoints", skip_all)]
    fn handle(&mut self, _: SignCheckpoints, _: &mut Self::Context) -> Self::Result {
        let round = sign_round(self.pool.clone(), self.keys.clone());
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
