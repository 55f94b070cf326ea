//! Archival: events older than their retention policy's `archive_after_days`
//! leave the live table for archives in the configured store (see
//! [`crate::archive_store`]), one archive per organization and batch, with
//! the chain links of its events in the metadata, so that verification
//! re-hashes archived events like live ones. Events under an active legal
//! hold stay live. Also here: restoring an archive, and rewriting one for a
//! GDPR operation.

use std::pin::pin;

use chrono::{DateTime, Duration, Months, NaiveDate, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::operation::{worker_built, RoundOperation};
use crate::archive_store::digest::Change;
use crate::archive_store::event::ArchivedEvent;
use crate::archive_store::{
    ArchiveError, ArchiveHeader, ArchiveStore, ArchiveWriter, DigestSubject, Written, CHUNK_EVENTS,
};
use crate::config::PartitionsConfig;
use crate::db::archives::{self, Archive};
use crate::db::deletions::{self, Leaf, ERASURE};
use crate::db::trail::{self, OperationKind};
use crate::db::{events, retention, DbError, PgPool};
use crate::events::recorded::{self, AdminChange};
use crate::events::retention::policy_for;
use crate::integrity::keys::IntegrityKeys;

/// The action of the audit event that opens an organization's archival round
/// (a recorded operation: only inside one may events leave `audit_log`).
pub const ARCHIVAL_ACTION: &str = "audit.archive.created";

/// What an archival run did (or, in a dry run, would do).
#[derive(Debug, Default, Clone, Serialize)]
pub struct ArchiveReport {
    pub archives: usize,
    pub events: u64,
    pub uncompressed_bytes: u64,
    pub compressed_bytes: u64,
    /// Batches that failed (each recorded in `archive_dlq_event`, retried next run).
    pub failed_batches: usize,
    pub dry_run: bool,
    /// Organizations whose live events changed (their cached answers are stale).
    pub organizations: Vec<String>,
}

/// Archives every organization's events that are due at `now`.
pub async fn run(
    pool: &PgPool,
    store: &ArchiveStore,
    keys: &IntegrityKeys,
    settings: &PartitionsConfig,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<ArchiveReport, DbError> {
    let mut report = ArchiveReport {
        dry_run,
        ..ArchiveReport::default()
    };
    let organizations = archives::organizations(&**pool.get().await?).await?;
    for organization in organizations {
        let client = pool.get().await?;
        let policies = retention::effective_policies(&**client, &organization).await?;
        let Some(soonest) = policies
            .iter()
            .filter(|policy| policy.is_active)
            .filter_map(|policy| policy.archive_after_days)
            .min()
        else {
            continue;
        };
        let pairs = archives::policy_pairs(
            &**client,
            &organization,
            now - Duration::days(soonest.into()),
        )
        .await?;
        drop(client);
        let mut round = RoundOperation::new(
            pool,
            keys,
            &organization,
            OperationKind::Archival,
            ARCHIVAL_ACTION,
        );
        for (name, classification) in pairs {
            let Some(days) = policy_for(&policies, &name, &classification)
                .and_then(|policy| policy.archive_after_days)
            else {
                continue;
            };
            let pair = (name.as_str(), classification.as_str());
            let before = now - Duration::days(days.into());
            if dry_run {
                let client = pool.get().await?;
                report.events +=
                    archives::count_due(&**client, &organization, pair, before).await? as u64;
                continue;
            }
            let job = format!("{name}/{classification}");
            if !archives::any_due(&**pool.get().await?, &organization, pair, before).await? {
                archives::clear_dead_letter(&**pool.get().await?, &organization, &job).await?;
                continue;
            }
            let operation = round.id().await?;
            loop {
                let batch = Batch {
                    organization: &organization,
                    pair,
                    before,
                    now,
                };
                match archive_batch(pool, store, keys, settings, operation, &batch).await {
                    Ok(None) => {
                        archives::clear_dead_letter(&**pool.get().await?, &organization, &job)
                            .await?;
                        break;
                    }
                    Ok(Some(stored)) => {
                        report.archives += 1;
                        if !report.organizations.contains(&organization) {
                            report.organizations.push(organization.clone());
                        }
                        report.events += stored.events;
                        report.uncompressed_bytes += stored.uncompressed_bytes;
                        report.compressed_bytes += stored.compressed_bytes;
                    }
                    Err(error) => {
                        tracing::warn!(%error, organization, job, "An archival batch failed; it is retried next run");
                        report.failed_batches += 1;
                        let details = json!({"policy": name, "data_classification": classification,
                                             "older_than": before});
                        archives::dead_letter(
                            &**pool.get().await?,
                            &organization,
                            &job,
                            &error.to_string(),
                            &details,
                        )
                        .await?;
                        break;
                    }
                }
            }
        }
    }
    Ok(report)
}

struct Stored {
    events: u64,
    uncompressed_bytes: u64,
    compressed_bytes: u64,
}

/// Which events one archival batch takes.
struct Batch<'a> {
    organization: &'a str,
    /// Retention policy and data classification.
    pair: (&'a str, &'a str),
    before: DateTime<Utc>,
    now: DateTime<Utc>,
}

/// Moves one batch of due events into a new archive, in one transaction:
/// the events stream from PostgreSQL into the archive writer a chunk at a
/// time (the archive's files, for an object store, are written and read back
/// before it commits).
async fn archive_batch(
    pool: &PgPool,
    store: &ArchiveStore,
    keys: &IntegrityKeys,
    settings: &PartitionsConfig,
    operation: Uuid,
    batch: &Batch<'_>,
) -> Result<Option<Stored>, ArchiveError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    trail::enter(&transaction, operation).await?;
    let mut writer = store.writer(ArchiveHeader {
        organization_id: batch.organization.to_owned(),
        retention_policy: batch.pair.0.to_owned(),
        data_classification: batch.pair.1.to_owned(),
        archived_at: batch.now,
        replaces: None,
    })?;
    let mut ids = Vec::new();
    let mut chunk = Vec::with_capacity(CHUNK_EVENTS);
    {
        let rows = archives::select_batch(
            &transaction,
            batch.organization,
            batch.pair,
            batch.before,
            batch.now,
            i64::from(settings.archive_batch_events),
        )
        .await?;
        let mut rows = pin!(rows);
        while let Some((line, id)) = rows.try_next().await? {
            chunk.push(ArchivedEvent::parse(&line).map_err(ArchiveError::Event)?);
            ids.push(id);
            if chunk.len() == CHUNK_EVENTS {
                writer = push(writer, std::mem::take(&mut chunk)).await?;
            }
        }
    }
    if ids.is_empty() {
        return Ok(None);
    }
    let writer = push(writer, chunk).await?;
    let encoded = tokio::task::spawn_blocking(move || writer.finish())
        .await
        .expect("finishing an archive does not panic")?;
    let links: Vec<i64> = encoded.summary.links.iter().copied().collect();
    let chain_links = archives::links(&transaction, batch.organization, &links).await?;
    let written = store.store(encoded, chain_links).await?;
    let listed = async {
        archives::insert(&transaction, &written.row()).await?;
        archives::remove_live(
            &transaction,
            batch.organization,
            &ids,
            (written.first_event_at, written.last_event_at),
        )
        .await?;
        store
            .append_digest(
                &transaction,
                keys,
                Change::Written,
                DigestSubject::written(&written),
            )
            .await
    }
    .await;
    let committed = match listed {
        Ok(()) => transaction.commit().await.map_err(ArchiveError::from),
        Err(error) => Err(error),
    };
    if let Err(error) = committed {
        store.delete_files(DigestSubject::written(&written)).await;
        return Err(error);
    }
    Ok(Some(Stored {
        events: ids.len() as u64,
        uncompressed_bytes: written.uncompressed_bytes,
        compressed_bytes: written.stored_bytes,
    }))
}

/// Hands a chunk of events to the writer on a blocking thread (encoding is
/// CPU work) and gets the writer back.
async fn push(
    mut writer: ArchiveWriter,
    chunk: Vec<ArchivedEvent>,
) -> Result<ArchiveWriter, ArchiveError> {
    tokio::task::spawn_blocking(move || writer.push(&chunk).map(|()| writer))
        .await
        .expect("encoding does not panic")
}

/// Puts an archive's events back into the live table (creating partitions as
/// needed) and deletes the archive; how many events came back.
pub async fn restore(
    pool: &PgPool,
    store: &ArchiveStore,
    keys: &IntegrityKeys,
    id: Uuid,
    principal: &str,
) -> Result<u64, ArchiveError> {
    let mut client = pool.get().await?;
    let archive = archives::get(&**client, None, id)
        .await?
        .ok_or(ArchiveError::NotFound(id))?;
    let lines: Vec<String> = store
        .read(&**client, &archive)
        .await?
        .iter()
        .map(ArchivedEvent::line)
        .collect();
    let months = months_between(
        events::month_of(archive.first_event_at),
        events::month_of(archive.last_event_at),
    );
    events::ensure_partitions(pool, &months).await?;
    let transaction = client.transaction().await?;
    let restored = archives::insert_events(&transaction, &lines).await?;
    archives::delete(&transaction, &archive.organization_id, id).await?;
    store
        .append_digest(
            &transaction,
            keys,
            Change::Deleted,
            DigestSubject::listed(&archive),
        )
        .await?;
    let change = AdminChange {
        object: "archive",
        verb: "restore",
        target_id: id.to_string(),
        details: json!({"events": restored, "first_event_at": archive.first_event_at,
                        "last_event_at": archive.last_event_at}),
    };
    recorded::admin_in(
        &transaction,
        keys,
        &archive.organization_id,
        principal,
        change,
    )
    .await
    .map_err(worker_built)?;
    transaction.commit().await?;
    store.delete_files(DigestSubject::listed(&archive)).await;
    Ok(restored)
}

/// What a GDPR operation does to one archive.
pub struct Rewrite {
    /// The operation (recorded in the organization's chain) it is part of.
    pub operation: Uuid,
    /// The events to keep, changed as the operation wants them.
    pub events: Vec<ArchivedEvent>,
    /// The leaves of the events it erases (kept, as erasure keeps them).
    pub erased: Vec<Leaf>,
}

/// Replaces `archive` by a new archive of `rewrite.events` (or by nothing,
/// when none is left), in one transaction that also keeps the removed
/// events' leaves and appends the digest; the old files go after it commits.
/// A crash leaves either the old archive listed, or the new one: running the
/// operation again finds what is left to do.
pub async fn rewrite(
    pool: &PgPool,
    store: &ArchiveStore,
    keys: &IntegrityKeys,
    archive: &Archive,
    rewrite: Rewrite,
) -> Result<(), ArchiveError> {
    let Rewrite {
        operation,
        events,
        erased,
    } = rewrite;
    let written = if events.is_empty() {
        None
    } else {
        let recorded = |key: &str| {
            archive.metadata[key]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let archived_at = archive.metadata["archived_at"]
            .as_str()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map_or(archive.created_at, |time| time.with_timezone(&Utc));
        let header = ArchiveHeader {
            organization_id: archive.organization_id.clone(),
            retention_policy: recorded("retention_policy"),
            data_classification: recorded("data_classification"),
            archived_at,
            replaces: Some(archive.id),
        };
        let chain_links = archive.metadata["chain_links"].clone();
        Some(store.write(header, events, chain_links).await?)
    };
    let replacement = Replacement {
        operation,
        written: written.as_ref(),
        erased: &erased,
    };
    let replaced = replace(pool, store, keys, archive, replacement).await;
    if !matches!(replaced, Ok(true)) {
        if let Some(written) = &written {
            store.delete_files(DigestSubject::written(written)).await;
        }
        return replaced.map(|_| ());
    }
    store.delete_files(DigestSubject::listed(archive)).await;
    Ok(())
}

/// What replaces an archive: a new one (or none), and the leaves of the
/// events erased from it.
struct Replacement<'a> {
    operation: Uuid,
    written: Option<&'a Written>,
    erased: &'a [Leaf],
}

/// Unlists `archive` and lists its replacement, in one transaction; false
/// when another run replaced it first.
async fn replace(
    pool: &PgPool,
    store: &ArchiveStore,
    keys: &IntegrityKeys,
    archive: &Archive,
    replacement: Replacement<'_>,
) -> Result<bool, ArchiveError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    trail::enter(&transaction, replacement.operation).await?;
    if !archives::delete(&transaction, &archive.organization_id, archive.id).await? {
        // Another run replaced it first.
        return Ok(false);
    }
    deletions::keep_leaves(
        &transaction,
        &archive.organization_id,
        replacement.erased,
        replacement.operation,
        ERASURE,
    )
    .await?;
    match replacement.written {
        Some(written) => {
            archives::insert(&transaction, &written.row()).await?;
            store
                .append_digest(
                    &transaction,
                    keys,
                    Change::Rewritten,
                    DigestSubject::written(written),
                )
                .await?;
        }
        None => {
            store
                .append_digest(
                    &transaction,
                    keys,
                    Change::Deleted,
                    DigestSubject::listed(archive),
                )
                .await?;
        }
    }
    transaction.commit().await?;
    Ok(true)
}

/// The first days of every month from `first`'s to `last`'s.
fn months_between(first: NaiveDate, last: NaiveDate) -> Vec<NaiveDate> {
    std::iter::successors(Some(first), |month| {
        month
            .checked_add_months(Months::new(1))
            .filter(|next| *next <= last)
    })
    .collect()
}
