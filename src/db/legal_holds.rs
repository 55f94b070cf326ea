//! Queries on `legal_holds`, and what a hold covers. While a hold is in force
//! (not released), nothing it covers may be deleted: not an event, not an
//! archive, not a partition.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::DbError;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LegalHold {
    pub id: i64,
    /// Narrows the hold to one principal's events; all the organization's when absent.
    pub principal_id: Option<String>,
    /// Narrows the hold to events from this instant on (inclusive).
    pub starts_at: Option<DateTime<Utc>>,
    /// Narrows the hold to events up to this instant (inclusive).
    pub ends_at: Option<DateTime<Utc>>,
    /// Why the data must be kept: the matter, the request, who asked.
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
    /// When the hold stopped protecting anything; in force while absent.
    pub released_at: Option<DateTime<Utc>>,
    pub released_by: Option<String>,
}

impl LegalHold {
    /// Whether this hold keeps `principal_id`'s event of `timestamp` (both
    /// bounds inclusive: at the edge, a hold errs on the side of keeping).
    pub fn covers(&self, principal_id: &str, timestamp: DateTime<Utc>) -> bool {
        self.released_at.is_none()
            && self
                .principal_id
                .as_deref()
                .is_none_or(|held| held == principal_id)
            && self.starts_at.is_none_or(|start| start <= timestamp)
            && self.ends_at.is_none_or(|end| timestamp <= end)
    }
}

const COLUMNS: &str = "id, principal_id, starts_at, ends_at, reason, created_at, created_by, \
    released_at, released_by";

fn hold(row: &tokio_postgres::Row) -> LegalHold {
    LegalHold {
        id: row.get("id"),
        principal_id: row.get("principal_id"),
        starts_at: row.get("starts_at"),
        ends_at: row.get("ends_at"),
        reason: row.get("reason"),
        created_at: row.get("created_at"),
        created_by: row.get("created_by"),
        released_at: row.get("released_at"),
        released_by: row.get("released_by"),
    }
}

pub struct NewHold<'a> {
    pub organization_id: &'a str,
    pub principal_id: Option<&'a str>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub reason: &'a str,
    pub created_by: &'a str,
}

pub async fn insert(client: &impl GenericClient, new: &NewHold<'_>) -> Result<LegalHold, DbError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO legal_holds (organization_id, principal_id, starts_at, ends_at, reason, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
            ),
            &[
                &new.organization_id,
                &new.principal_id,
                &new.starts_at,
                &new.ends_at,
                &new.reason,
                &new.created_by,
            ],
        )
        .await?;
    Ok(hold(&row))
}

/// The organization's holds, newest first: only those in force
/// (`active = Some(true)`), only released ones (`Some(false)`), or all.
pub async fn list(
    client: &impl GenericClient,
    organization_id: &str,
    active: Option<bool>,
) -> Result<Vec<LegalHold>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM legal_holds \
                 WHERE organization_id = $1 AND ($2::bool IS NULL OR (released_at IS NULL) = $2) \
                 ORDER BY id DESC"
            ),
            &[&organization_id, &active],
        )
        .await?;
    Ok(rows.iter().map(hold).collect())
}

pub async fn get(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<Option<LegalHold>, DbError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM legal_holds WHERE organization_id = $1 AND id = $2"),
            &[&organization_id, &id],
        )
        .await?;
    Ok(row.as_ref().map(hold))
}

/// Releases a hold in force; `None` when there is no such hold or it was
/// released already.
pub async fn release(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
    released_by: &str,
) -> Result<Option<LegalHold>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE legal_holds SET released_at = now(), released_by = $3 \
                 WHERE organization_id = $1 AND id = $2 AND released_at IS NULL RETURNING {COLUMNS}"
            ),
            &[&organization_id, &id, &released_by],
        )
        .await?;
    Ok(row.as_ref().map(hold))
}
