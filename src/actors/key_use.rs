//! KeyUseActor: every `auth.last_used_flush_interval` writes the API key uses
//! the authenticator noted ([`last_use::flush`]).
//!
//! An actor rather than a task owned by the `Authenticator`: it batches and
//! schedules, which is what actors are for here (DESIGN.md), and under the
//! supervisor a panic in a flush restarts it instead of silently ending the
//! writes. Its ticks re-arm after each flush, so flushes never overlap; a
//! slow or failing PostgreSQL delays only this actor, never a request. At
//! shutdown the uses noted since the last flush are dropped, as a failed
//! flush's are: `last_used_at` is a hint, not a record.

use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;

use crate::auth::last_use::{self, KeyUses};
use crate::db::PgPool;
use crate::shared::Shared;

/// Write the noted uses now: the actor's own tick.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Flush;

pub struct KeyUseActor {
    pool: PgPool,
    uses: Arc<KeyUses>,
    interval: Duration,
}

impl KeyUseActor {
    pub fn new(shared: &Shared) -> Self {
        Self {
            pool: shared.pool.clone(),
            uses: shared.key_uses.clone(),
            interval: shared.config.auth.last_used_flush_interval,
        }
    }
}

impl Actor for KeyUseActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify_later(Flush, self.interval);
    }
}

impl Handler<Flush> for KeyUseActor {
    type Result = ResponseActFuture<Self, ()>;

    #[tracing::instrument(name = "key_use_flush", skip_all)]
    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        let (uses, pool) = (self.uses.clone(), self.pool.clone());
        let work = async move { last_use::flush(&uses, &pool).await };
        Box::pin(wrap_future::<_, Self>(work).map(|written, actor, ctx| {
            if written > 0 {
                tracing::debug!(written, "Wrote the last use of API keys");
            }
            ctx.notify_later(Flush, actor.interval);
        }))
    }
}
