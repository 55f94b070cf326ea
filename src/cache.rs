//! The query cache: L1 in this process (moka, bounded by bytes and entries,
//! per-entry TTL), L2 in Redis (compressed above `COMPRESS_ABOVE`), then
//! PostgreSQL.
//!
//! Coherence comes from a per-organization generation number kept in Redis
//! and part of every key: a write bumps it before it is acknowledged, so a
//! query issued after the acknowledgement reads the new generation and misses
//! every older answer, on every instance. The CacheActor also drops an
//! organization's L1 entries when another instance announces a bump (Redis
//! pub/sub), to free the memory early. Keys name the organization and a hash
//! of every query parameter: no answer can serve another organization.
//!
//! Redis is optional: each call is bounded by `redis.response_timeout`; while
//! Redis fails, L2 is skipped and generations are counted in this process
//! (its own writes still invalidate its own L1). Those local generations are
//! spelled apart from Redis's (`l3` against `r3`), so an answer cached during
//! an outage is never taken for a current one once Redis is back. Writes made
//! on other instances during an outage reach this one's L1 only through TTL.

use std::future::Future;
use std::sync::Arc;

use dashmap::DashMap;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::redis_conn::RedisConnection;

/// L2 values longer than this are stored zstd-compressed.
const COMPRESS_ABOVE: usize = 1024;
/// First byte of an L2 value: how the rest is stored.
const PLAIN: u8 = 0;
const ZSTD: u8 = 1;

/// A cached answer: the response body, shared without copying.
pub type Answer = Arc<Vec<u8>>;

pub struct QueryCache {
    l1: moka::sync::Cache<String, Answer>,
    redis: RedisConnection,
    prefix: String,
    ttl_seconds: u64,
    /// Per organization, the generations counted here while Redis failed.
    local_generations: DashMap<String, u64>,
    metrics: Arc<Metrics>,
}

impl QueryCache {
    pub fn new(config: &Config, redis: RedisConnection, metrics: Arc<Metrics>) -> Self {
        let settings = &config.cache;
        let evictions = metrics.clone();
        let l1 = moka::sync::Cache::builder()
            .max_capacity(settings.l1_max_mb * 1024 * 1024)
            .weigher(|key: &String, value: &Answer| {
                u32::try_from(key.len() + value.len()).unwrap_or(u32::MAX)
            })
            .time_to_live(settings.default_ttl)
            .support_invalidation_closures()
            .eviction_listener(move |_, _, cause| {
                if cause.was_evicted() {
                    evictions.cache_evictions.with_label_values(&["l1"]).inc();
                }
            })
            .build();
        Self {
            l1,
            redis,
            prefix: config.cache.redis_prefix.clone(),
            ttl_seconds: settings.default_ttl.as_secs().max(1),
            local_generations: DashMap::new(),
            metrics,
        }
    }

    /// The answer to query `kind` with `parameters` (every parameter that
    /// shapes it) for the organization: from L1, else L2, else `load`, which
    /// fills both.
    pub async fn get_or_load<E, F, Fut>(
        &self,
        organization_id: &str,
        kind: &str,
        parameters: &str,
        load: F,
    ) -> Result<Answer, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        let generation = self.generation(organization_id).await;
        let key = self.key(organization_id, &generation, kind, parameters);
        if let Some(answer) = self.l1.get(&key) {
            self.count("l1", "hit");
            return Ok(answer);
        }
        self.count("l1", "miss");
        if let Some(answer) = self.l2_get(&key).await {
            self.count("l2", "hit");
            self.l1.insert(key, answer.clone());
            return Ok(answer);
        }
        self.count("l2", "miss");
        let answer = Arc::new(load().await?);
        self.l1.insert(key.clone(), answer.clone());
        self.l2_set(&key, &answer).await;
        self.refresh_gauges();
        Ok(answer)
    }

    /// Makes every cached answer of the organization unreachable, here and on
    /// every instance; returns once the new generation is in Redis (or, with
    /// Redis down, counted here).
    pub async fn invalidate_organization(&self, organization_id: &str) {
        let bumped = self
            .redis
            .query::<i64>(redis::cmd("INCR").arg(self.generation_key(organization_id)))
            .await;
        match bumped {
            Ok(_) => {
                let announce = redis::cmd("PUBLISH")
                    .arg(self.channel())
                    .arg(organization_id)
                    .clone();
                let _ = self.redis.query::<i64>(&announce).await;
            }
            Err(error) => {
                tracing::debug!(%error, "Redis unavailable: invalidating this instance only");
                *self
                    .local_generations
                    .entry(organization_id.to_owned())
                    .or_default() += 1;
            }
        }
        self.drop_local(organization_id);
    }

    /// Drops the organization's L1 entries (announced by another instance).
    pub fn drop_local(&self, organization_id: &str) {
        let prefix = format!("{}q:{organization_id}:", self.prefix);
        let _ = self
            .l1
            .invalidate_entries_if(move |key, _| key.starts_with(&prefix));
    }

    /// The pub/sub channel generation bumps are announced on.
    pub fn channel(&self) -> String {
        format!("{}invalidations", self.prefix)
    }

    /// The organization's generation as it goes into keys: Redis's (`r…`),
    /// or while Redis fails, this instance's own count (`l…`).
    async fn generation(&self, organization_id: &str) -> String {
        let read = self
            .redis
            .query::<Option<i64>>(redis::cmd("GET").arg(self.generation_key(organization_id)))
            .await;
        match read {
            Ok(generation) => format!("r{}", generation.unwrap_or(0)),
            Err(_) => {
                let local = self
                    .local_generations
                    .get(organization_id)
                    .map_or(0, |generation| *generation);
                format!("l{local}")
            }
        }
    }

    async fn l2_get(&self, key: &str) -> Option<Answer> {
        let stored: Vec<u8> = self
            .redis
            .query::<Option<Vec<u8>>>(redis::cmd("GET").arg(key))
            .await
            .ok()??;
        match stored.split_first() {
            Some((&PLAIN, rest)) => Some(Arc::new(rest.to_vec())),
            Some((&ZSTD, rest)) => zstd::decode_all(rest).ok().map(Arc::new),
            _ => None,
        }
    }

    async fn l2_set(&self, key: &str, answer: &[u8]) {
        let mut stored = Vec::with_capacity(answer.len().min(COMPRESS_ABOVE) + 1);
        match answer.len() > COMPRESS_ABOVE {
            true => match zstd::encode_all(answer, 3) {
                Ok(compressed) => {
                    stored.push(ZSTD);
                    stored.extend(compressed);
                }
                Err(_) => return,
            },
            false => {
                stored.push(PLAIN);
                stored.extend_from_slice(answer);
            }
        }
        let command = redis::cmd("SET")
            .arg(key)
            .arg(stored)
            .arg("EX")
            .arg(self.ttl_seconds)
            .clone();
        let _ = self.redis.query::<()>(&command).await;
    }

    fn key(&self, organization_id: &str, generation: &str, kind: &str, parameters: &str) -> String {
        let digest = hex::encode(Sha256::digest(parameters.as_bytes()));
        format!(
            "{}q:{organization_id}:{generation}:{kind}:{digest}",
            self.prefix
        )
    }

    fn generation_key(&self, organization_id: &str) -> String {
        format!("{}generation:{organization_id}", self.prefix)
    }

    fn count(&self, level: &str, outcome: &str) {
        self.metrics
            .cache_lookups
            .with_label_values(&[level, outcome])
            .inc();
    }

    fn refresh_gauges(&self) {
        self.metrics
            .cache_l1_bytes
            .set(i64::try_from(self.l1.weighted_size()).unwrap_or(i64::MAX));
        self.metrics
            .cache_l1_entries
            .set(i64::try_from(self.l1.entry_count()).unwrap_or(i64::MAX));
    }
}
