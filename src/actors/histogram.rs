//! HistogramActor: every few seconds, adds the events of each organization's
//! new chain links to the hourly counts the console draws its histogram from
//! ([`crate::db::histogram`]). Workers share the rounds: an organization
//! another worker is counting is skipped. A reader adds what is not counted
//! yet, so a slow round delays nothing but makes reading slower.

use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;

use crate::db::{histogram, DbError, PgPool};
use crate::shared::Shared;

/// How often a round starts (after the last one ended).
const ROUND_INTERVAL: Duration = Duration::from_secs(2);
/// Links counted in one transaction: a short hold of the progress row, which
/// a deletion of the organization's events waits for.
const LINKS_PER_STEP: i64 = 500;

/// Count the new links of every organization: the actor's own tick.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct CountNewLinks;

pub struct HistogramActor {
    pool: PgPool,
}

impl HistogramActor {
    pub fn new(shared: &Shared) -> Self {
        Self {
            pool: shared.pool.clone(),
        }
    }
}

impl Actor for HistogramActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify_later(CountNewLinks, ROUND_INTERVAL);
    }
}

/// One round: each organization behind, until it is caught up.
async fn round(pool: PgPool) -> Result<i64, DbError> {
    let behind = {
        let client = pool.get().await?;
        histogram::behind(&**client).await?
    };
    let mut counted = 0;
    for organization_id in behind {
        loop {
            let links = histogram::roll_up(&pool, &organization_id, LINKS_PER_STEP).await?;
            counted += links;
            if links < LINKS_PER_STEP {
                break;
            }
        }
    }
    Ok(counted)
}

impl Handler<CountNewLinks> for HistogramActor {
    type Result = ResponseActFuture<Self, ()>;

    #[tracing::instrument(name = "count_new_links", skip_all)]
    fn handle(&mut self, _: CountNewLinks, _: &mut Self::Context) -> Self::Result {
        Box::pin(
            wrap_future::<_, Self>(round(self.pool.clone())).map(|outcome, _, ctx| {
                match outcome {
                    Ok(links) if links > 0 => tracing::debug!(links, "Counted links"),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "Cannot count new links; will retry next round")
                    }
                }
                ctx.notify_later(CountNewLinks, ROUND_INTERVAL);
            }),
        )
    }
}
