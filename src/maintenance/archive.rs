//! Archival: events older than their retention policy's `archive_after_days`
//! leave the live table for compressed archives (`archive_storage`): JSON
//! Lines of every column, zstd-compressed, one archive per organization and
//! batch, with the SHA-256 of both forms and the chain links of its events in
//! the metadata, so that verification re-hashes archived events like live
//! ones. Events under an active legal hold stay live.

use chrono::{DateTime, Duration, Months, NaiveDate, Utc};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::operation::{worker_built, RoundOperation};
use crate::config::PartitionsConfig;
use crate::db::archives::{self, Archive, NewArchive};
use crate::db::trail::{self, OperationKind};
use crate::db::{events, retention, DbError, PgPool};
use crate::events::recorded::{self, AdminChange};
use crate::events::retention::policy_for;
use crate::integrity::keys::IntegrityKeys;

/// The action of the audit event that opens an organization's archival round
/// (a recorded operation: only inside one may events leave `audit_log`).
pub const ARCHIVAL_ACTION: &str = "audit.archive.created";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("no archive {0}")]
    NotFound(Uuid),
    #[error("archive {id} is corrupted: {problem}")]
    Corrupted { id: Uuid, problem: String },
    #[error("cannot compress an archive: {0}")]
    Compress(#[source] std::io::Error),
}

impl From<tokio_postgres::Error> for ArchiveError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(error.into())
    }
}

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
    keys: &IntegrityKeys,
    settings: &PartitionsConfig,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<ArchiveReport, DbError> {
    let mut report = ArchiveReport {
        dry_run,
        ..ArchiveReport::default()
    };
    let organizations = archives::organizations(&*pool.get().await?).await?;
    for organization in organizations {
        let client = pool.get().await?;
        let policies = retention::effective_policies(&*client, &organization).await?;
        let Some(soonest) = policies
            .iter()
            .filter(|policy| policy.is_active)
            .filter_map(|policy| policy.archive_after_days)
            .min()
        else {
            continue;
        };
        let pairs = archives::policy_pairs(
            &*client,
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
                    archives::count_due(&*client, &organization, pair, before).await? as u64;
                continue;
            }
            let job = format!("{name}/{classification}");
            if !archives::any_due(&*pool.get().await?, &organization, pair, before).await? {
                archives::clear_dead_letter(&*pool.get().await?, &organization, &job).await?;
                continue;
            }
            let operation = round.id().await?;
            loop {
                match archive_batch(pool, settings, operation, &organization, pair, before, now)
                    .await
                {
                    Ok(None) => {
                        archives::clear_dead_letter(&*pool.get().await?, &organization, &job)
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
                            &*pool.get().await?,
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

/// Moves one batch of due events into a new archive, in one transaction.
async fn archive_batch(
    pool: &PgPool,
    settings: &PartitionsConfig,
    operation: Uuid,
    organization: &str,
    pair: (&str, &str),
    before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<Stored>, ArchiveError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    trail::enter(&transaction, operation).await?;
    let Some(batch) = archives::select_batch(
        &transaction,
        organization,
        pair,
        before,
        now,
        i64::from(settings.archive_batch_events),
    )
    .await?
    else {
        return Ok(None);
    };
    let links = archives::links(&transaction, organization, &batch.links).await?;
    let mut body = batch.lines.join("\n");
    body.push('\n');
    let level = settings.archive_compression_level;
    let (body, compressed) = tokio::task::spawn_blocking(move || {
        let compressed = zstd::encode_all(body.as_bytes(), level);
        (body, compressed)
    })
    .await
    .expect("compression does not panic");
    let compressed = compressed.map_err(ArchiveError::Compress)?;
    let metadata = json!({
        "format": "jsonl",
        "compression": "zstd",
        "event_count": batch.ids.len(),
        "first_event_id": batch.ids.iter().min(),
        "last_event_id": batch.ids.iter().max(),
        "first_event_at": batch.first_event_at,
        "last_event_at": batch.last_event_at,
        "uncompressed_bytes": body.len(),
        "compressed_bytes": compressed.len(),
        "sha256_uncompressed": hex::encode(Sha256::digest(body.as_bytes())),
        "sha256_compressed": hex::encode(Sha256::digest(&compressed)),
        "retention_policy": pair.0,
        "data_classification": pair.1,
        "archived_at": now,
        "chain_links": links,
    });
    archives::store(
        &transaction,
        &NewArchive {
            organization_id: organization,
            metadata: &metadata,
            data: &compressed,
            event_count: batch.ids.len() as i32,
            first_event_at: batch.first_event_at,
            last_event_at: batch.last_event_at,
            first_link: *batch.links.first().expect("a non-empty batch"),
            last_link: *batch.links.last().expect("a non-empty batch"),
        },
        &batch.ids,
    )
    .await?;
    transaction.commit().await?;
    Ok(Some(Stored {
        events: batch.ids.len() as u64,
        uncompressed_bytes: body.len() as u64,
        compressed_bytes: compressed.len() as u64,
    }))
}

/// The archive's events, one JSON object per line, after checking both
/// SHA-256 sums and the count its metadata records.
pub fn open(archive: &Archive, data: &[u8]) -> Result<Vec<String>, ArchiveError> {
    let corrupted = |problem: String| ArchiveError::Corrupted {
        id: archive.id,
        problem,
    };
    let recorded = |key: &str| {
        archive.metadata[key]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    if hex::encode(Sha256::digest(data)) != recorded("sha256_compressed") {
        return Err(corrupted(
            "its compressed bytes no longer match their SHA-256".to_owned(),
        ));
    }
    let body = zstd::decode_all(data)
        .map_err(|error| corrupted(format!("it does not decompress: {error}")))?;
    if hex::encode(Sha256::digest(&body)) != recorded("sha256_uncompressed") {
        return Err(corrupted(
            "its content no longer matches its SHA-256".to_owned(),
        ));
    }
    let text = String::from_utf8(body).map_err(|_| corrupted("it is not UTF-8".to_owned()))?;
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.len() != archive.event_count as usize {
        return Err(corrupted(format!(
            "it holds {} events, not {}",
            lines.len(),
            archive.event_count
        )));
    }
    Ok(lines)
}

/// Puts an archive's events back into the live table (creating partitions as
/// needed) and deletes the archive; how many events came back.
pub async fn restore(
    pool: &PgPool,
    keys: &IntegrityKeys,
    id: Uuid,
    principal: &str,
) -> Result<u64, ArchiveError> {
    let mut client = pool.get().await?;
    let (archive, data) = archives::get(&*client, None, id)
        .await?
        .ok_or(ArchiveError::NotFound(id))?;
    let lines = open(&archive, &data)?;
    let months = months_between(
        events::month_of(archive.first_event_at),
        events::month_of(archive.last_event_at),
    );
    events::ensure_partitions(pool, &months).await?;
    let transaction = client.transaction().await?;
    let restored = archives::insert_events(&transaction, &lines).await?;
    archives::delete(&transaction, id).await?;
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
    Ok(restored)
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
