//! What the parts of the worker share: opened once by the build step, then
//! handed to each actor's constructor, which clones what it uses.

use std::sync::Arc;

use tokio::sync::watch;

use crate::archive_store::ArchiveStore;
use crate::auth::last_use::KeyUses;
use crate::cache::QueryCache;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::{self, PgPool};
use crate::error_tracking::ErrorTracker;
use crate::integrity::keys::IntegrityKeys;
use crate::metrics::Metrics;
use crate::redis_conn::RedisConnection;
use crate::reload::LiveConfig;
use crate::StartupError;

#[derive(Clone)]
pub struct Shared {
    /// Restart-only keys, as at start.
    pub config: Arc<Config>,
    /// The configuration in force: read the keys a reload may change here.
    pub live: LiveConfig,
    pub pool: PgPool,
    pub redis: RedisConnection,
    pub metrics: Arc<Metrics>,
    /// What maintenance reads as now (tests move it forward).
    pub clock: SharedClock,
    /// Query answers (L1 here, L2 in Redis), invalidated by every write.
    pub cache: Arc<QueryCache>,
    /// Where internal errors are recorded.
    pub errors: ErrorTracker,
    /// Signing and commitment keys of the trail.
    pub keys: Arc<IntegrityKeys>,
    /// Where archived events are read and written.
    pub archives: Arc<ArchiveStore>,
    /// API key uses noted by the authenticator, written by the KeyUseActor.
    pub key_uses: Arc<KeyUses>,
}

impl Shared {
    /// Creates and migrates the database, then opens everything else. The
    /// sender puts a reloaded configuration in force.
    pub async fn open(
        config: Config,
        clock: SharedClock,
    ) -> Result<(Self, watch::Sender<Arc<Config>>), StartupError> {
        let config = Arc::new(config);
        let (live_sender, live) = watch::channel(config.clone());
        db::ensure_database(&config.database).await?;
        db::migrations::run(&config.database).await?;
        let pool = db::pool(&config.database);
        if db::runs_as_superuser(&pool).await? {
            tracing::warn!(
                "Running as a PostgreSQL superuser, which can disable the triggers that keep the trail \
                 append-only; in production run as a role granted audit_worker_runtime (see the README)"
            );
        }
        let redis = RedisConnection::new(&config.redis)?;
        let metrics = Arc::new(Metrics::new());
        let keys = Arc::new(IntegrityKeys::load(&config.integrity, &pool).await?);
        let archives = Arc::new(
            ArchiveStore::open(&config.archive, config.partitions.archive_compression_level).await,
        );
        let cache = Arc::new(QueryCache::new(&config, redis.clone(), metrics.clone()));
        let errors = ErrorTracker::new(
            config.errors.buffer_fingerprints,
            config.errors.log_rows_per_fingerprint,
            metrics.clone(),
        );
        let shared = Self {
            config,
            live,
            pool,
            redis,
            metrics,
            clock,
            cache,
            errors,
            keys,
            archives,
            key_uses: Arc::default(),
        };
        Ok((shared, live_sender))
    }
}
