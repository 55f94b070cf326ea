//! Recorded operations: the only changes PostgreSQL lets through to the trail.
//!
//! Migration V17 makes `audit_log` refuse UPDATE and DELETE unless the
//! transaction names (setting `audit_worker.operation`) a row of
//! `trail_operations` of the row's organization and of a kind allowed for
//! the statement; such a row can only be added once its record event is in the
//! organization's chain. So no change to the trail goes unrecorded, whoever
//! holds the connection.

use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use super::{DbError, PgPool};

/// What a recorded operation may do to `audit_log` (the triggers of V17 say
/// which kind may update and which may delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    /// Moves due events into an archive (deletes them from `audit_log`).
    Archival,
    /// Deletes live events past their retention.
    RetentionDeletion,
    /// Replaces a subject's identifiers by their pseudonym.
    GdprPseudonymization,
    /// Deletes a subject's events and pseudonymizes the ones kept.
    GdprErasure,
}

impl OperationKind {
    fn as_str(self) -> &'static str {
        match self {
            OperationKind::Archival => "archival",
            OperationKind::RetentionDeletion => "retention_deletion",
            OperationKind::GdprPseudonymization => "gdpr_pseudonymization",
            OperationKind::GdprErasure => "gdpr_erasure",
        }
    }
}

/// Registers the operation `id` (kept when it already exists, so a resumed
/// operation keeps its row), recorded by the chained event `record_event_id`.
pub async fn register(
    client: &impl GenericClient,
    id: Uuid,
    organization_id: &str,
    kind: OperationKind,
    record_event_id: i64,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO trail_operations (id, organization_id, kind, record_event_id) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (organization_id, id) DO NOTHING",
            &[&id, &organization_id, &kind.as_str(), &record_event_id],
        )
        .await?;
    Ok(())
}

/// Names the operation in the transaction, until it ends.
pub async fn enter(transaction: &Transaction<'_>, operation: Uuid) -> Result<(), DbError> {
    transaction
        .execute(
            "SELECT set_config('audit_worker.operation', $1, true)",
            &[&operation.to_string()],
        )
        .await?;
    Ok(())
}

/// Runs `work` in a transaction of its own inside the operation, and commits
/// it when `work` succeeds.
pub async fn within<T>(
    pool: &PgPool,
    operation: Uuid,
    work: impl AsyncFnOnce(&Transaction<'_>) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    enter(&transaction, operation).await?;
    let value = work(&transaction).await?;
    transaction.commit().await?;
    Ok(value)
}
