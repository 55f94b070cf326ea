//! Partition maintenance and the data lifecycle: partitions kept ready ahead,
//! aged events archived, expired events and archives deleted (as recorded
//! operations), empty expired partitions dropped. The PartitionActor
//! runs it on a schedule, one worker instance at a time (an advisory lock held
//! by a session of its own); the CLI runs the same pieces on demand.

pub mod archive;
pub mod database;
pub mod deletion;
pub mod operation;
pub mod partitions;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::archive_store::ArchiveStore;
use crate::config::Config;
use crate::db::locks::{self, Round};
use crate::db::{self, retention, DbError, PgPool};
use crate::events::retention::built_in_policies;
use crate::integrity::keys::IntegrityKeys;

/// What one maintenance round did; `ran` is false when another worker held the lock.
#[derive(Debug, Default)]
pub struct Report {
    pub ran: bool,
    pub partitions_created: Vec<String>,
    pub archived: archive::ArchiveReport,
    pub deleted: deletion::DeletionReport,
    pub partitions_dropped: Vec<String>,
    pub took: Duration,
}

pub async fn run(
    config: &Config,
    pool: &PgPool,
    store: &ArchiveStore,
    keys: &IntegrityKeys,
    now: DateTime<Utc>,
) -> Result<Report, DbError> {
    let started = Instant::now();
    let session = db::connect(&config.database, &config.database.url).await?;
    if !locks::try_lock(&session, Round::PartitionMaintenance).await? {
        return Ok(Report::default());
    }
    let settings = &config.partitions;
    let partitions_created = partitions::ensure_ahead(pool, now, settings.months_ahead).await?;
    let archived = archive::run(pool, store, keys, settings, now, false).await?;
    let deleted = deletion::run(
        pool,
        store,
        keys,
        i64::from(settings.archive_batch_events),
        now,
    )
    .await?;
    let keep_days = longest_retention_days(pool).await?;
    let partitions_dropped = partitions::drop_expired(pool, now, keep_days, false)
        .await?
        .into_iter()
        .filter(|expired| expired.dropped)
        .map(|expired| expired.name)
        .collect();
    // Closing the session releases the lock.
    drop(session);
    Ok(Report {
        ran: true,
        partitions_created,
        archived,
        deleted,
        partitions_dropped,
        took: started.elapsed(),
    })
}

/// The longest time any active policy (of any organization, or built in)
/// keeps data: partitions older than that hold nothing anyone must keep.
pub async fn longest_retention_days(pool: &PgPool) -> Result<i64, DbError> {
    let client = pool.get().await?;
    let configured = retention::longest_retention_days(&**client).await?;
    let built_in = built_in_policies()
        .iter()
        .map(|policy| {
            i64::from(policy.delete_after_days.unwrap_or(policy.retention_days))
                .max(policy.retention_days.into())
        })
        .max()
        .unwrap_or_default();
    Ok(configured.unwrap_or_default().max(built_in))
}
