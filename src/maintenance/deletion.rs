//! Deletion past `delete_after_days`: live events of the organization's
//! policies, and whole archives, unless an active legal hold covers them.
//! Every deletion is a recorded operation: the deleted events' chain leaves
//! are kept so their links still verify, an audit event in the organization's
//! own chain says what was deleted, and a checkpoint is signed after it — so
//! verification tells a deletion by retention from tampering.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::operation::{worker_built, RoundOperation, WORKER_PRINCIPAL};
use crate::archive_store::digest::Change;
use crate::archive_store::event::ArchivedEvent;
use crate::archive_store::{ArchiveError, ArchiveStore, DigestSubject};
use crate::db::archives::Archive;
use crate::db::deletions::{self, Leaf};
use crate::db::legal_holds::{self, LegalHold};
use crate::db::trail::{self, OperationKind};
use crate::db::{archives, checkpoints, retention, DbError, PgPool};
use crate::events::recorded::{self, Record};
use crate::events::retention::policy_for;
use crate::integrity::keys::IntegrityKeys;

/// The action of the audit event recording a round's deletions.
pub const DELETION_ACTION: &str = "audit.retention.deleted";

#[derive(Debug, Default, Clone, Serialize)]
pub struct DeletionReport {
    pub events: u64,
    pub archives: u64,
    /// Archives due but unreadable (corrupted): kept, and reported.
    pub failed_archives: u64,
    /// Organizations whose events changed (their cached answers are stale).
    pub organizations: Vec<String>,
}

/// Deletes every organization's events and archives past their policy at `now`.
pub async fn run(
    pool: &PgPool,
    store: &ArchiveStore,
    keys: &IntegrityKeys,
    batch: i64,
    now: DateTime<Utc>,
) -> Result<DeletionReport, DbError> {
    let mut report = DeletionReport::default();
    let organizations = archives::organizations(&**pool.get().await?).await?;
    for organization in organizations {
        let policies = retention::effective_policies(&**pool.get().await?, &organization).await?;
        let Some(soonest) = policies
            .iter()
            .filter(|policy| policy.is_active)
            .filter_map(|policy| policy.delete_after_days)
            .min()
        else {
            continue;
        };
        let delete_after = |name: &str, classification: &str| {
            policy_for(&policies, name, classification).and_then(|p| p.delete_after_days)
        };
        let mut operations: Vec<Uuid> = Vec::new();
        let mut deleted_events = 0u64;
        let mut round = RoundOperation::new(
            pool,
            keys,
            &organization,
            OperationKind::RetentionDeletion,
            DELETION_ACTION,
        );

        let pairs = archives::policy_pairs(
            &**pool.get().await?,
            &organization,
            now - Duration::days(soonest.into()),
        )
        .await?;
        for (name, classification) in pairs {
            let Some(days) = delete_after(&name, &classification) else {
                continue;
            };
            let before = now - Duration::days(days.into());
            let pair = (name.as_str(), classification.as_str());
            if !archives::any_due(&**pool.get().await?, &organization, pair, before).await? {
                continue;
            }
            let operation = round.id().await?;
            loop {
                let mut client = pool.get().await?;
                let transaction = client.transaction().await?;
                trail::enter(&transaction, operation).await?;
                let deleted =
                    deletions::delete_due_events(&transaction, &organization, pair, before, batch)
                        .await?;
                transaction.commit().await?;
                let Some((operation, count)) = deleted else {
                    break;
                };
                operations.push(operation);
                deleted_events += count as u64;
            }
        }

        let mut deleted_archives = 0u64;
        let holds = legal_holds::list(&**pool.get().await?, &organization, Some(true)).await?;
        for stored in archives::list(&**pool.get().await?, &organization).await? {
            let recorded = |key: &str| stored.metadata[key].as_str().unwrap_or_default().to_owned();
            let Some(days) = delete_after(
                &recorded("retention_policy"),
                &recorded("data_classification"),
            ) else {
                continue;
            };
            let older_than = now - Duration::days(days.into());
            if stored.last_event_at >= older_than {
                continue;
            }
            match delete_archive(pool, store, keys, &stored, older_than, &holds).await {
                Ok(Some((operation, count))) => {
                    operations.push(operation);
                    deleted_archives += 1;
                    deleted_events += count;
                }
                Ok(None) => {}
                Err(ArchiveError::Db(error)) => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, organization, "A due archive cannot be read; it is kept");
                    report.failed_archives += 1;
                }
            }
        }

        if !operations.is_empty() {
            record(
                pool,
                keys,
                &organization,
                &operations,
                deleted_events,
                deleted_archives,
            )
            .await?;
            report.events += deleted_events;
            report.organizations.push(organization.clone());
            report.archives += deleted_archives;
        }
    }
    Ok(report)
}

/// Deletes one archive after reading its events' leaves; the operation and
/// how many events went with it. `None`: a legal hold covers one of its
/// events (it is kept whole), or someone else deleted it first.
async fn delete_archive(
    pool: &PgPool,
    store: &ArchiveStore,
    keys: &IntegrityKeys,
    archive: &Archive,
    older_than: DateTime<Utc>,
    holds: &[LegalHold],
) -> Result<Option<(Uuid, u64)>, ArchiveError> {
    let mut client = pool.get().await?;
    let events = store.read(&**client, archive).await?;
    if events.iter().any(|event| {
        holds
            .iter()
            .any(|hold| hold.covers(&event.principal_id, event.timestamp))
    }) {
        return Ok(None);
    }
    let leaves: Vec<Leaf> = events.iter().map(ArchivedEvent::leaf).collect();
    let transaction = client.transaction().await?;
    let Some(operation) =
        deletions::delete_archive(&transaction, archive, older_than, &leaves).await?
    else {
        return Ok(None);
    };
    store
        .append_digest(
            &transaction,
            keys,
            Change::Deleted,
            DigestSubject::listed(archive),
        )
        .await?;
    transaction.commit().await?;
    store.delete_files(DigestSubject::listed(archive)).await;
    Ok(Some((operation, leaves.len() as u64)))
}

/// Records the organization's deletions of this round: an audit event in its
/// chain naming the operations, then a signed checkpoint.
async fn record(
    pool: &PgPool,
    keys: &IntegrityKeys,
    organization: &str,
    operations: &[Uuid],
    events_deleted: u64,
    archives_deleted: u64,
) -> Result<(), DbError> {
    recorded::append(
        pool,
        keys,
        &Record {
            organization_id: organization,
            principal_id: WORKER_PRINCIPAL,
            action: DELETION_ACTION,
            status: "success",
            outcome: format!(
                "deleted {events_deleted} events past their retention ({archives_deleted} archives)"
            ),
            target: None,
            details: json!({"operation_ids": operations, "events_deleted": events_deleted,
                            "archives_deleted": archives_deleted}),
        },
    )
    .await
    .map_err(worker_built)?;
    checkpoints::create(&**pool.get().await?, keys, Some(organization)).await?;
    Ok(())
}
