//! CacheActor: listens on the Redis channel where every instance announces the
//! organizations whose alert rules it changed (their cache generation
//! bumped), and tells the AlertActor. (The L1 cache needs no notice: each
//! read compares generations.) It reconnects by itself once Redis is back.

use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;
use futures_util::StreamExt;

use super::alert::AlertActor;
use crate::cache::QueryCache;
use crate::cache::ALERT_RULES;
use crate::config::Config;
use crate::messages::alert::RulesChanged;
use crate::redis_conn::RedisConnection;
use crate::shared::Shared;
use crate::supervisor::ActorHandle;

/// Wait before subscribing again after Redis went away.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

pub struct CacheActor {
    config: Arc<Config>,
    cache: Arc<QueryCache>,
    /// For its client: the subscription needs a connection of its own, with
    /// the same TLS settings as the shared one.
    redis: RedisConnection,
    alerts: ActorHandle<AlertActor>,
}

impl CacheActor {
    pub fn new(shared: &Shared, alerts: ActorHandle<AlertActor>) -> Self {
        Self {
            config: shared.config.clone(),
            cache: shared.cache.clone(),
            redis: shared.redis.clone(),
            alerts,
        }
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.spawn(wrap_future(listen(
            self.config.clone(),
            self.redis.client(),
            self.cache.clone(),
            self.alerts.clone(),
        )));
    }
}

/// Hears the announced invalidations; runs inside the actor's context, so it
/// ends with the actor.
async fn listen(
    config: Arc<Config>,
    client: redis::Client,
    cache: Arc<QueryCache>,
    alerts: ActorHandle<AlertActor>,
) {
    let channel = cache.channel();
    loop {
        // While Redis is backed off it is known to fail: wait for a probe
        // (the heartbeat's, at least) to find it back instead of trying it
        // from here as well.
        if !cache.redis_available() {
            tokio::time::sleep(RESUBSCRIBE_AFTER).await;
            continue;
        }
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(config.redis.connect_timeout, subscribed).await {
            Ok(Ok(pubsub)) => {
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    if let Ok(announcement) = message.get_payload::<String>() {
                        if let Some((organization_id, ALERT_RULES)) =
                            QueryCache::announced(&announcement)
                        {
                            alerts.notify(RulesChanged {
                                organization_id: organization_id.to_owned(),
                            });
                        }
                    }
                }
                tracing::warn!("Lost the cache invalidation channel; subscribing again");
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "Cannot subscribe to cache invalidations yet")
            }
            Err(_) => tracing::debug!("Subscribing to cache invalidations timed out"),
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}
