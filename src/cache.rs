//! The query cache: L1 in this process (moka, bounded by bytes and entries,
//! per-entry TTL), L2 in Redis (compressed above `COMPRESS_ABOVE`), then
//! PostgreSQL.
//!
//! Answers come in kinds (`events`, `permissions`, …). Coherence comes from a
//! generation number per organization and kind, kept in Redis: every answer
//! is stored with the generation it was computed at (in its L2 key, beside
//! it in L1), and a write bumps the generation before it is acknowledged, so
//! a query issued after the acknowledgement reads the new generation and
//! takes no older answer, on every instance. One Redis round trip per query
//! reads the generation and, when L1 cannot answer, the L2 answer. A write invalidates only the kinds it changes:
//! ingest does not make permissions be resolved again. Bumps of the alert
//! rules are also announced (Redis pub/sub): the CacheActor tells the
//! AlertActor to reload them. Keys name the organization, the kind and a
//! hash of every query parameter: no answer can serve another organization.
//!
//! Redis is optional: each call is bounded by `redis.response_timeout`, and
//! after a failure Redis is skipped for a back-off (`redis_conn`); a skipped
//! call is a failed one here. While Redis fails, L2 is skipped and
//! generations are counted in this process (its own writes still invalidate
//! its own L1); those are spelled apart from Redis's and name the outage
//! (`l4.3` against `r3`), so an answer cached during an outage is never taken
//! for a current one once Redis is back, nor in a later outage. A bump Redis
//! missed is retried until it lands (one task for all of them, one bump per
//! organization and kind), and this instance does not trust Redis's
//! generation of that organization and kind before it has landed, so its own
//! acknowledged writes show in its answers. Other instances see such a write
//! once the bump lands: within about the back-off when only this instance
//! lost Redis. Strict kinds (permissions) are not served from memory at all
//! while Redis cannot vouch for their generation.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::redis_conn::{RedisConnection, RedisError};

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
/// The kind of a key's permissions: every change to an organization's roles
/// or keys invalidates it.
pub const PERMISSIONS: &str = "permissions";
/// The kind of an organization's own alert rules: every change to them
/// invalidates it, so every instance picks the change up.
pub const ALERT_RULES: &str = "alert_rules";
/// Every kind of answer: the `kind` label values of the cache's metrics,
/// shown at 0 from the start. The cache names them all, so that its metrics
/// need nothing from the areas it serves.
const KINDS: [&str; 3] = [EVENTS, PERMISSIONS, ALERT_RULES];
/// Reads the generation (KEYS[1]) and, unless it equals the one L1 holds
/// (ARGV[2]), the L2 answer stored under the slot (ARGV[1]) for it. (The L2
/// key is built here: fine for a single Redis, not for Redis Cluster.)
const LOOKUP_SCRIPT: &str = "local g = 'r' .. (redis.call('GET', KEYS[1]) or '0') \
    if g == ARGV[2] then return {g} end \
    local answer = redis.call('GET', ARGV[1] .. ':' .. g) \
    if answer then return {g, answer} end \
    return {g}";
/// The kinds whose bumps are announced: only those a listener acts on.
/// Announcing every ingest request's bump cost Redis a PUBLISH per request
/// and every instance a message to read and drop.
const ANNOUNCED_KINDS: [&str; 1] = [ALERT_RULES];
/// Bumps a generation and announces it, in one round trip.
const BUMP_SCRIPT: &str = "local g = redis.call('INCR', KEYS[1]) \
    redis.call('PUBLISH', ARGV[1], ARGV[2]) \
    return g";
/// Separates the organization from the kind in an invalidation announcement.
const ANNOUNCEMENT_SEPARATOR: char = '\u{0}';

/// A cached answer: a response body or a serialized value, shared without
/// copying.
pub type Answer = Arc<Vec<u8>>;

/// How long one kind of answer may be kept, and how strictly.
#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    /// Zero: not cached at all.
    pub ttl: Duration,
    /// Never served from this process's memory while Redis cannot vouch for
    /// the generation: for answers a change on another instance must overrule
    /// at once (permissions).
    pub strict: bool,
}

#[derive(Clone)]
struct Entry {
    /// The generation the answer was computed at: stale once it moved on.
    generation: String,
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
    /// Shared with the task that retries them.
    missed_bumps: Arc<MissedBumps>,
    metrics: Arc<Metrics>,
}

/// The generation bumps Redis missed, one per (organization, kind) however
/// many writes missed it: a single bump after the last of them makes every
/// answer computed before any of them unreachable.
#[derive(Default)]
struct MissedBumps {
    pending: DashMap<(String, String), MissedBump>,
    /// Numbers the writes that missed their bump.
    writes: AtomicU64,
    /// A task is retrying the pending bumps (at most one runs).
    retrying: AtomicBool,
}

struct MissedBump {
    /// After this, every answer cached before the last write has expired:
    /// the bump is no longer needed.
    needed_until: tokio::time::Instant,
    /// The last write that missed it. A bump that lands clears the entry only
    /// if no write missed since its number was read: a later write may have
    /// committed after the bump was made.
    write: u64,
}

impl QueryCache {
    pub fn new(config: &Config, redis: RedisConnection, metrics: Arc<Metrics>) -> Self {
        let settings = &config.cache;
        let capacity = settings.l1_max_mb * 1024 * 1024;
        // Every entry weighs at least capacity / max_entries: the byte bound
        // then also bounds the number of entries (moka bounds one weight).
        let least_weight = capacity / settings.l1_max_entries.max(1);
        for kind in KINDS {
            for (level, outcome) in [
                ("l1", "hit"),
                ("l1", "miss"),
                ("l1", "bypass"),
                ("l2", "hit"),
                ("l2", "miss"),
            ] {
                metrics
                    .cache
                    .lookups
                    .with_label_values(&[kind, level, outcome]);
            }
        }
        let evictions = metrics.clone();
        let l1 = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(move |key: &String, entry: &Entry| {
                let bytes = (key.len() + entry.answer.len()) as u64;
                u32::try_from(bytes.max(least_weight)).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_, _, cause| {
                if cause.was_evicted() {
                    evictions.cache.evictions.with_label_values(&["l1"]).inc();
                }
            })
            .build();
        Self {
            l1,
            redis,
            prefix: settings.redis_prefix.clone(),
            // Disabled: listings get a zero lifetime, which is never cached.
            default_ttl: if settings.enabled {
                settings.default_ttl
            } else {
                Duration::ZERO
            },
            longest_ttl: settings.default_ttl.max(config.auth.permission_cache_ttl),
            local_generations: DashMap::new(),
            missed_bumps: Arc::default(),
            metrics,
        }
    }

    /// `cache.default_ttl` (zero when `cache.enabled` is false), not strict:
    /// for query listings.
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
        if lifetime.ttl.is_zero() {
            return load().await.map(Arc::new);
        }
        let slot = self.slot(organization_id, kind, parameters);
        let cached = self.l1.get(&slot);
        // One Redis round trip: the current generation, and the L2 answer
        // unless L1 holds this generation's already. Redis's generation is not
        // to be trusted while it lacks a bump for one of this instance's
        // writes: that write would be missing from the answer.
        let found = if self.land_missed_bump(organization_id, kind).await {
            self.lookup(&slot, organization_id, kind, cached.as_ref())
                .await
        } else {
            None
        };
        let from_redis = found.is_some();
        let (generation, from_l2) = match found {
            Some(found) => found,
            None if lifetime.strict => {
                self.count(kind, "l1", "bypass");
                return load().await.map(Arc::new);
            }
            None => {
                let local = self
                    .local_generations
                    .get(&(organization_id.to_owned(), kind.to_owned()))
                    .map_or(0, |generation| *generation);
                (format!("l{}.{local}", self.redis.epoch()), None)
            }
        };
        if let Some(entry) = cached.filter(|entry| entry.generation == generation) {
            self.count(kind, "l1", "hit");
            return Ok(entry.answer);
        }
        self.count(kind, "l1", "miss");
        if let Some(answer) = from_l2 {
            self.count(kind, "l2", "hit");
            self.remember(slot, generation, answer.clone(), lifetime.ttl);
            return Ok(answer);
        }
        self.count(kind, "l2", "miss");
        let answer = Arc::new(load().await?);
        // L2 is only ever read at Redis's generations.
        if from_redis {
            self.l2_set(format!("{slot}:{generation}"), answer.clone(), lifetime.ttl);
        }
        self.remember(slot, generation, answer.clone(), lifetime.ttl);
        Ok(answer)
    }

    /// Makes every cached answer of this kind for the organization
    /// unreachable, here and on every instance; returns once the new
    /// generation is in Redis (or, with Redis down, counted here and retried
    /// in the background).
    ///
    /// The L1 entries themselves stay until replaced, expired or evicted
    /// (within `cache.l1_max_mb`): every read compares an entry's generation
    /// with the current one, so an outdated entry is never served. Dropping
    /// them here would cost a scan of L1 on every write (ingest writes
    /// hundreds of times a second).
    pub async fn invalidate(&self, organization_id: &str, kind: &str) {
        let bump = if ANNOUNCED_KINDS.contains(&kind) {
            redis::cmd("EVAL")
                .arg(BUMP_SCRIPT)
                .arg(1)
                .arg(generation_key(&self.prefix, organization_id, kind))
                .arg(self.channel())
                .arg(format!("{organization_id}{ANNOUNCEMENT_SEPARATOR}{kind}"))
                .clone()
        } else {
            bump_command(&self.prefix, organization_id, kind)
        };
        if let Err(error) = self.redis.query::<i64>(&bump).await {
            *self
                .local_generations
                .entry((organization_id.to_owned(), kind.to_owned()))
                .or_default() += 1;
            self.miss_bump(organization_id, kind, &error);
        }
    }

    /// False while Redis is backed off (`redis_conn`): for the invalidation
    /// listener, which keeps a connection of its own.
    pub fn redis_available(&self) -> bool {
        self.redis.available()
    }

    /// Until Redis has the bump, other instances may serve answers they
    /// cached before the write: it is made as soon as Redis is back, for as
    /// long as such an answer can live.
    fn miss_bump(&self, organization_id: &str, kind: &str, error: &RedisError) {
        let missed = &self.missed_bumps;
        let bump = MissedBump {
            needed_until: tokio::time::Instant::now() + self.longest_ttl,
            write: missed.writes.fetch_add(1, Ordering::Relaxed) + 1,
        };
        match missed
            .pending
            .entry((organization_id.to_owned(), kind.to_owned()))
        {
            MapEntry::Occupied(mut pending) => *pending.get_mut() = bump,
            // Once per organization and kind, not once per write of an outage.
            MapEntry::Vacant(pending) => {
                pending.insert(bump);
                tracing::warn!(%error, organization_id, kind,
                    "Cannot reach Redis to invalidate cached answers; retrying in the background");
            }
        }
        if !missed.retrying.swap(true, Ordering::SeqCst) {
            tokio::spawn(retry_missed_bumps(
                self.redis.clone(),
                self.prefix.clone(),
                missed.clone(),
            ));
        }
    }

    /// Makes the bump Redis missed for this organization and kind, if any;
    /// false when there is one and it still cannot be made.
    async fn land_missed_bump(&self, organization_id: &str, kind: &str) -> bool {
        let missed = &self.missed_bumps;
        if !missed.retrying.load(Ordering::SeqCst) {
            return true;
        }
        let key = (organization_id.to_owned(), kind.to_owned());
        let Some(write) = missed.pending.get(&key).map(|bump| bump.write) else {
            return true;
        };
        let bump = bump_command(&self.prefix, organization_id, kind);
        if self.redis.query::<i64>(&bump).await.is_err() {
            return false;
        }
        missed
            .pending
            .remove_if(&key, |_, bump| bump.write == write);
        true
    }

    /// The organization and kind an invalidation announcement names. The
    /// announcement itself changes nothing in L1 (see [`Self::invalidate`]):
    /// it tells listeners, such as the AlertActor, that what they hold is outdated.
    pub fn announced(announcement: &str) -> Option<(&str, &str)> {
        announcement.split_once(ANNOUNCEMENT_SEPARATOR)
    }

    /// The pub/sub channel generation bumps are announced on.
    pub fn channel(&self) -> String {
        format!("{}invalidations", self.prefix)
    }

    fn remember(&self, slot: String, generation: String, answer: Answer, ttl: Duration) {
        self.l1.insert(
            slot,
            Entry {
                generation,
                answer,
                ttl,
            },
        );
        self.metrics
            .cache
            .l1_bytes
            .set(i64::try_from(self.l1.weighted_size()).unwrap_or(i64::MAX));
        self.metrics
            .cache
            .l1_entries
            .set(i64::try_from(self.l1.entry_count()).unwrap_or(i64::MAX));
    }

    /// The current generation as Redis holds it (`r…`), and the L2 answer
    /// for it unless `cached` is of that generation already: one round trip
    /// (a Lua script). `None` while Redis fails.
    async fn lookup(
        &self,
        slot: &str,
        organization_id: &str,
        kind: &str,
        cached: Option<&Entry>,
    ) -> Option<(String, Option<Answer>)> {
        let command = redis::cmd("EVAL")
            .arg(LOOKUP_SCRIPT)
            .arg(1)
            .arg(generation_key(&self.prefix, organization_id, kind))
            .arg(slot)
            .arg(cached.map_or("", |entry| entry.generation.as_str()))
            .clone();
        let mut reply = self
            .redis
            .query::<Vec<Vec<u8>>>(&command)
            .await
            .ok()?
            .into_iter();
        let generation = String::from_utf8(reply.next()?).ok()?;
        let answer = reply.next().and_then(|stored| match stored.split_first() {
            Some((&PLAIN, rest)) => Some(Arc::new(rest.to_vec())),
            Some((&ZSTD, rest)) => zstd::decode_all(rest).ok().map(Arc::new),
            _ => None,
        });
        Some((generation, answer))
    }

    /// Stores the answer in Redis off the request's path: the caller has it
    /// already, and another instance asking meanwhile only misses L2 once.
    fn l2_set(&self, key: String, answer: Answer, ttl: Duration) {
        let redis = self.redis.clone();
        tokio::spawn(async move {
            let mut stored = Vec::with_capacity(answer.len().min(COMPRESS_ABOVE) + 1);
            if answer.len() > COMPRESS_ABOVE {
                let Ok(compressed) = zstd::encode_all(answer.as_slice(), 3) else {
                    return;
                };
                stored.push(ZSTD);
                stored.extend(compressed);
            } else {
                stored.push(PLAIN);
                stored.extend_from_slice(&answer);
            }
            let command = redis::cmd("SET")
                .arg(key)
                .arg(stored)
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .clone();
            let _ = redis.query::<()>(&command).await;
        });
    }

    /// The L1 key of a query: organization, kind and a hash of its
    /// parameters. Its L2 key adds the generation.
    fn slot(&self, organization_id: &str, kind: &str, parameters: &str) -> String {
        let digest = hex::encode(Sha256::digest(parameters.as_bytes()));
        format!("{}q:{organization_id}:{kind}:{digest}", self.prefix)
    }

    fn count(&self, kind: &str, level: &str, outcome: &str) {
        debug_assert!(KINDS.contains(&kind), "cache kind {kind} is not in KINDS");
        let lookups = &self.metrics.cache.lookups;
        lookups.with_label_values(&[kind, level, outcome]).inc();
        let hits = lookups.with_label_values(&[kind, level, "hit"]).get();
        let misses = lookups.with_label_values(&[kind, level, "miss"]).get();
        if hits + misses > 0 {
            self.metrics
                .cache
                .hit_ratio
                .with_label_values(&[kind, level])
                .set(hits as f64 / (hits + misses) as f64);
        }
    }
}

fn generation_key(prefix: &str, organization_id: &str, kind: &str) -> String {
    format!("{prefix}generation:{organization_id}:{kind}")
}

fn bump_command(prefix: &str, organization_id: &str, kind: &str) -> redis::Cmd {
    redis::cmd("INCR")
        .arg(generation_key(prefix, organization_id, kind))
        .clone()
}

/// Makes the bumps Redis missed, every `BUMP_RETRY` until none is pending.
/// While Redis is backed off each round fails at once; once the back-off is
/// over, a round's first bump may be the probe that finds Redis back.
async fn retry_missed_bumps(redis: RedisConnection, prefix: String, missed: Arc<MissedBumps>) {
    loop {
        tokio::time::sleep(BUMP_RETRY).await;
        let now = tokio::time::Instant::now();
        missed.pending.retain(|_, bump| bump.needed_until > now);
        let due: Vec<((String, String), u64)> = missed
            .pending
            .iter()
            .map(|pending| (pending.key().clone(), pending.write))
            .collect();
        for ((organization_id, kind), write) in due {
            let bump = bump_command(&prefix, &organization_id, &kind);
            if redis.query::<i64>(&bump).await.is_err() {
                // Redis fails: the others would too.
                break;
            }
            missed
                .pending
                .remove_if(&(organization_id, kind), |_, bump| bump.write == write);
        }
        if missed.pending.is_empty() {
            missed.retrying.store(false, Ordering::SeqCst);
            // A bump missed between the check and the store saw this task
            // running and started none: keep going for it, unless another
            // task has been started since.
            if missed.pending.is_empty() || missed.retrying.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }
}
