//! The query cache: L1 in this process (moka, bounded by bytes and entries,
//! per-entry TTL), L2 in Redis (compressed above `COMPRESS_ABOVE`), then
//! PostgreSQL.
//!
//! Answers come in kinds (`events`, `permissions`, …). Coherence comes from a
//! generation number per organization and kind, kept in Redis and part of
//! every key: a write bumps it before it is acknowledged, so a query issued
//! after the acknowledgement reads the new generation and misses every older
//! answer, on every instance. A write invalidates only the kinds it changes:
//! ingest does not make permissions be resolved again. The CacheActor also
//! drops L1 entries when another instance announces a bump (Redis pub/sub),
//! to free their memory early. Keys name the organization, the kind and a
//! hash of every query parameter: no answer can serve another organization.
//!
//! Redis is optional: each call is bounded by `redis.response_timeout`. While
//! Redis fails, L2 is skipped and generations are counted in this process
//! (its own writes still invalidate its own L1); those are spelled apart from
//! Redis's (`l3` against `r3`), so an answer cached during an outage is never
//! taken for a current one once Redis is back, and a bump Redis missed is
//! retried until it lands. Strict kinds (permissions) are not served from
//! memory at all while Redis cannot vouch for their generation.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
/// How often a generation bump Redis missed is tried again.
const BUMP_RETRY: Duration = Duration::from_secs(1);
/// The kind of event listings: every change to an organization's events
/// (ingest, archival, deletion) invalidates it.
pub const EVENTS: &str = "events";
/// Separates the organization from the kind in an invalidation announcement.
const ANNOUNCEMENT_SEPARATOR: char = '\u{0}';

/// A cached answer: a response body or a serialized value, shared without
/// copying.
pub type Answer = Arc<Vec<u8>>;

/// How long one kind of answer may be kept, and how strictly.
#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    pub ttl: Duration,
    /// Never served from this process's memory while Redis cannot vouch for
    /// the generation: for answers a change on another instance must overrule
    /// at once (permissions).
    pub strict: bool,
}

#[derive(Clone)]
struct Entry {
    answer: Answer,
    ttl: Duration,
}

/// Each L1 entry lives as long as its own TTL.
struct PerEntryTtl;

impl moka::Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

pub struct QueryCache {
    l1: moka::sync::Cache<String, Entry>,
    redis: RedisConnection,
    prefix: String,
    default_ttl: Duration,
    /// The longest any answer may be cached: how long a generation bump Redis
    /// missed is retried.
    longest_ttl: Duration,
    /// Per (organization, kind), the generations counted here while Redis failed.
    local_generations: DashMap<(String, String), u64>,
    metrics: Arc<Metrics>,
}

impl QueryCache {
    pub fn new(config: &Config, redis: RedisConnection, metrics: Arc<Metrics>) -> Self {
        let settings = &config.cache;
        let capacity = settings.l1_max_mb * 1024 * 1024;
        // Every entry weighs at least capacity / max_entries: the byte bound
        // then also bounds the number of entries (moka bounds one weight).
        let least_weight = capacity / settings.l1_max_entries.max(1);
        let evictions = metrics.clone();
        let l1 = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(move |key: &String, entry: &Entry| {
                let bytes = (key.len() + entry.answer.len()) as u64;
                u32::try_from(bytes.max(least_weight)).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
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
            prefix: settings.redis_prefix.clone(),
            default_ttl: settings.default_ttl,
            longest_ttl: settings.default_ttl.max(config.auth.permission_cache_ttl),
            local_generations: DashMap::new(),
            metrics,
        }
    }

    /// `cache.default_ttl`, not strict: for query listings.
    pub fn default_lifetime(&self) -> Lifetime {
        Lifetime {
            ttl: self.default_ttl,
            strict: false,
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
        lifetime: Lifetime,
        load: F,
    ) -> Result<Answer, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        let generation = match self.generation(organization_id, kind).await {
            Some(generation) => generation,
            None if lifetime.strict => {
                self.count(kind, "l1", "bypass");
                return load().await.map(Arc::new);
            }
            None => {
                let local = self
                    .local_generations
                    .get(&(organization_id.to_owned(), kind.to_owned()))
                    .map_or(0, |generation| *generation);
                format!("l{local}")
            }
        };
        let key = self.key(organization_id, kind, &generation, parameters);
        if let Some(entry) = self.l1.get(&key) {
            self.count(kind, "l1", "hit");
            return Ok(entry.answer);
        }
        self.count(kind, "l1", "miss");
        if let Some(answer) = self.l2_get(&key).await {
            self.count(kind, "l2", "hit");
            self.remember(key, answer.clone(), lifetime.ttl);
            return Ok(answer);
        }
        self.count(kind, "l2", "miss");
        let answer = Arc::new(load().await?);
        self.remember(key.clone(), answer.clone(), lifetime.ttl);
        self.l2_set(&key, &answer, lifetime.ttl).await;
        Ok(answer)
    }

    /// Makes every cached answer of this kind for the organization
    /// unreachable, here and on every instance; returns once the new
    /// generation is in Redis (or, with Redis down, counted here and retried
    /// in the background).
    pub async fn invalidate(&self, organization_id: &str, kind: &str) {
        let bump = redis::cmd("INCR")
            .arg(self.generation_key(organization_id, kind))
            .clone();
        match self.redis.query::<i64>(&bump).await {
            Ok(_) => {
                let announce = redis::cmd("PUBLISH")
                    .arg(self.channel())
                    .arg(format!("{organization_id}{ANNOUNCEMENT_SEPARATOR}{kind}"))
                    .clone();
                let _ = self.redis.query::<i64>(&announce).await;
            }
            Err(error) => {
                tracing::warn!(%error, organization_id, kind,
                    "Cannot reach Redis to invalidate cached answers; retrying in the background");
                *self
                    .local_generations
                    .entry((organization_id.to_owned(), kind.to_owned()))
                    .or_default() += 1;
                // Until Redis has it, other instances may serve answers they
                // cached before this write: bump as soon as Redis is back, for
                // as long as such an answer can live.
                let (redis, deadline) = (
                    self.redis.clone(),
                    tokio::time::Instant::now() + self.longest_ttl,
                );
                tokio::spawn(async move {
                    while tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(BUMP_RETRY).await;
                        if redis.query::<i64>(&bump).await.is_ok() {
                            return;
                        }
                    }
                });
            }
        }
        self.drop_local(organization_id, kind);
    }

    /// Applies an invalidation another instance announced: drops the L1
    /// entries it made unreachable.
    pub fn apply_announcement(&self, announcement: &str) {
        if let Some((organization_id, kind)) = announcement.split_once(ANNOUNCEMENT_SEPARATOR) {
            self.drop_local(organization_id, kind);
        }
    }

    /// The pub/sub channel generation bumps are announced on.
    pub fn channel(&self) -> String {
        format!("{}invalidations", self.prefix)
    }

    fn drop_local(&self, organization_id: &str, kind: &str) {
        let prefix = format!("{}q:{organization_id}:{kind}:", self.prefix);
        let _ = self
            .l1
            .invalidate_entries_if(move |key, _| key.starts_with(&prefix));
    }

    fn remember(&self, key: String, answer: Answer, ttl: Duration) {
        self.l1.insert(key, Entry { answer, ttl });
        self.metrics
            .cache_l1_bytes
            .set(i64::try_from(self.l1.weighted_size()).unwrap_or(i64::MAX));
        self.metrics
            .cache_l1_entries
            .set(i64::try_from(self.l1.entry_count()).unwrap_or(i64::MAX));
    }

    /// The generation as Redis holds it (`r…` in keys); `None` while Redis fails.
    async fn generation(&self, organization_id: &str, kind: &str) -> Option<String> {
        self.redis
            .query::<Option<i64>>(redis::cmd("GET").arg(self.generation_key(organization_id, kind)))
            .await
            .ok()
            .map(|generation| format!("r{}", generation.unwrap_or(0)))
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

    async fn l2_set(&self, key: &str, answer: &[u8], ttl: Duration) {
        let mut stored = Vec::with_capacity(answer.len().min(COMPRESS_ABOVE) + 1);
        if answer.len() > COMPRESS_ABOVE {
            let Ok(compressed) = zstd::encode_all(answer, 3) else {
                return;
            };
            stored.push(ZSTD);
            stored.extend(compressed);
        } else {
            stored.push(PLAIN);
            stored.extend_from_slice(answer);
        }
        let command = redis::cmd("SET")
            .arg(key)
            .arg(stored)
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .clone();
        let _ = self.redis.query::<()>(&command).await;
    }

    fn key(&self, organization_id: &str, kind: &str, generation: &str, parameters: &str) -> String {
        let digest = hex::encode(Sha256::digest(parameters.as_bytes()));
        format!(
            "{}q:{organization_id}:{kind}:{generation}:{digest}",
            self.prefix
        )
    }

    fn generation_key(&self, organization_id: &str, kind: &str) -> String {
        format!("{}generation:{organization_id}:{kind}", self.prefix)
    }

    fn count(&self, kind: &str, level: &str, outcome: &str) {
        let lookups = &self.metrics.cache_lookups;
        lookups.with_label_values(&[kind, level, outcome]).inc();
        let hits = lookups.with_label_values(&[kind, level, "hit"]).get();
        let misses = lookups.with_label_values(&[kind, level, "miss"]).get();
        if hits + misses > 0 {
            self.metrics
                .cache_hit_ratio
                .with_label_values(&[kind, level])
                .set(hits as f64 / (hits + misses) as f64);
        }
    }
}
