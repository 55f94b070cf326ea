//! What a verification reads and where it records its runs: the
//! organization's `audit_chain` in order, its events in chain order (live in
//! `audit_log`, archived ones copied into the temporary table
//! `verify_archived`, and the kept leaves in `audit_pruned_leaf` of those a
//! recorded operation removed), the chain head, and `audit_integrity_log`.
//!
//! The chain and the events are streamed (`query_raw`), so a verification
//! holds no more of either than it is checking.

use chrono::{DateTime, Utc};
use futures_util::{Stream, TryStreamExt};
use serde_json::Value;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{GenericClient, Row};

use super::DbError;
use crate::integrity::canonical::HashedFields;

/// A chain row as verification reads it.
pub struct ChainLink {
    pub link_id: i64,
    pub seq: i64,
    pub event_count: i64,
    pub first_event_id: i64,
    pub last_event_id: i64,
    pub min_timestamp: DateTime<Utc>,
    pub max_timestamp: DateTime<Utc>,
    pub merkle_root: String,
    pub prev_link: String,
    pub link: String,
}

impl ChainLink {
    fn from_row(row: &Row) -> Self {
        ChainLink {
            link_id: row.get("link_id"),
            seq: row.get("seq"),
            min_timestamp: row.get("min_timestamp"),
            max_timestamp: row.get("max_timestamp"),
            event_count: i64::from(row.get::<_, i32>("event_count")),
            first_event_id: row.get("first_event_id"),
            last_event_id: row.get("last_event_id"),
            merkle_root: row.get("merkle_root"),
            prev_link: row.get("prev_link"),
            link: row.get("link"),
        }
    }
}

/// The organization's whole chain, in order.
pub async fn chain_links(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<impl Stream<Item = Result<ChainLink, DbError>>, DbError> {
    let rows = client
        .query_raw(
            "SELECT link_id, seq, event_count, first_event_id, last_event_id, min_timestamp, max_timestamp, \
               merkle_root, prev_link, link \
             FROM audit_chain WHERE organization_id = $1 ORDER BY seq",
            [&organization_id as &(dyn ToSql + Sync)],
        )
        .await?;
    Ok(rows
        .map_ok(|row| ChainLink::from_row(&row))
        .map_err(DbError::from))
}

/// Creates `verify_archived`, where the archived events a verification reads
/// beside `audit_log` are copied; it is dropped when the transaction ends.
pub async fn create_archived_copy(client: &impl GenericClient) -> Result<(), DbError> {
    client
        .batch_execute("CREATE TEMPORARY TABLE verify_archived (LIKE audit_log) ON COMMIT DROP")
        .await?;
    Ok(())
}

/// Copies archived events (JSON objects of every column, as an archive holds
/// them) into `verify_archived` as they are.
pub async fn copy_archived(client: &impl GenericClient, lines: &[String]) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "INSERT INTO verify_archived SELECT (jsonb_populate_record(NULL::audit_log, line::jsonb)).* \
             FROM unnest($1::text[]) AS line",
            &[&lines],
        )
        .await?)
}

/// Which recorded operation removed an event whose chain leaf was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Retention,
    GdprErasure,
}

/// An event as verification reads it. One a recorded operation removed has
/// only its id, time, hash and link: the rest reads as absent.
pub struct ChainEvent(Row);

impl ChainEvent {
    pub fn id(&self) -> i64 {
        self.0.get("id")
    }

    pub fn chain_link(&self) -> i64 {
        self.0.get("chain_link")
    }

    pub fn timestamp(&self) -> DateTime<Utc> {
        self.0.get("timestamp")
    }

    /// The stored hash, in hex: the event's, or the kept leaf of a removed one.
    pub fn hash(&self) -> &str {
        self.0.get("hash")
    }

    pub fn removed_by(&self) -> Option<Removal> {
        match self.0.get::<_, Option<&str>>("removed_by")? {
            "retention" => Some(Removal::Retention),
            _ => Some(Removal::GdprErasure),
        }
    }

    pub fn principal_id(&self) -> &str {
        self.0.get("principal_id")
    }

    pub fn principal_commitment(&self) -> &str {
        self.0.get("principal_commitment")
    }

    pub fn target_resource_id(&self) -> Option<&str> {
        self.0.get("target_resource_id")
    }

    pub fn target_resource_commitment(&self) -> Option<&str> {
        self.0.get("target_resource_commitment")
    }

    /// `details`, parsed (for [`ChainEvent::hashed_fields`] to borrow).
    pub fn details(&self) -> Option<Value> {
        self.0
            .get::<_, Option<Json<Value>>>("details")
            .map(|Json(value)| value)
    }

    /// The fields the event's hash covers, with its `details` as parsed.
    pub fn hashed_fields<'a>(&'a self, details: Option<&'a Value>) -> HashedFields<'a> {
        let row = &self.0;
        HashedFields {
            organization_id: row.get("organization_id"),
            timestamp: row.get("timestamp"),
            ttl: row.get("ttl"),
            principal_commitment: row.get("principal_commitment"),
            action: row.get("action"),
            target_resource_type: row.get("target_resource_type"),
            target_resource_commitment: row.get("target_resource_commitment"),
            status: row.get("status"),
            outcome_description: row.get("outcome_description"),
            hash_algorithm: row.get("hash_algorithm"),
            event_version: row.get("event_version"),
            correlation_id: row.get("correlation_id"),
            data_classification: row.get("data_classification"),
            retention_policy: row.get("retention_policy"),
            idempotency_key: row.get("idempotency_key"),
            details,
        }
    }
}

/// The organization's events from `lower` to `upper` (both inclusive; `None`
/// leaves that end open), by chain link and by id within one: live events,
/// archived ones (when `with_archived`, from `verify_archived`) and the kept
/// leaves of those recorded operations removed.
pub async fn events(
    client: &impl GenericClient,
    organization_id: &str,
    (lower, upper): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    with_archived: bool,
) -> Result<impl Stream<Item = Result<ChainEvent, DbError>>, DbError> {
    let columns = "id, \"timestamp\", ttl, principal_id, organization_id, action, target_resource_type, \
        target_resource_id, status, outcome_description, hash, hash_algorithm, event_version, correlation_id, \
        data_classification, retention_policy, details, idempotency_key, principal_commitment, \
        target_resource_commitment, chain_link";
    let filter = "organization_id = $1 \
        AND ($2::timestamptz IS NULL OR \"timestamp\" >= $2) AND ($3::timestamptz IS NULL OR \"timestamp\" <= $3)";
    // The leaves of removed events, in the same row shape: only the id, time,
    // hash and link are known.
    let pruned = "SELECT event_id, event_timestamp, NULL, NULL, organization_id, NULL, NULL, NULL, NULL, NULL, \
        hash, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, chain_link, operation_kind FROM audit_pruned_leaf \
        WHERE organization_id = $1 AND ($2::timestamptz IS NULL OR event_timestamp >= $2) \
          AND ($3::timestamptz IS NULL OR event_timestamp <= $3)";
    let archived = if with_archived {
        format!("UNION ALL SELECT {columns}, NULL::text FROM verify_archived WHERE {filter}")
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT {columns}, NULL::text AS removed_by FROM audit_log WHERE {filter} {archived} \
         UNION ALL {pruned} ORDER BY chain_link, id"
    );
    let rows = client
        .query_raw(
            &sql,
            [&organization_id as &(dyn ToSql + Sync), &lower, &upper],
        )
        .await?;
    Ok(rows.map_ok(ChainEvent).map_err(DbError::from))
}

/// The number of links the organization's chain head records, if it has one.
pub async fn head_seq(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Option<i64>, DbError> {
    let row = client
        .query_opt(
            "SELECT seq FROM audit_chain_head WHERE organization_id = $1",
            &[&organization_id],
        )
        .await?;
    Ok(row.map(|row| row.get("seq")))
}

/// The hash of the organization's chain link `seq`, if the chain holds it.
pub async fn link_at(
    client: &impl GenericClient,
    organization_id: &str,
    seq: i64,
) -> Result<Option<String>, DbError> {
    let row = client
        .query_opt(
            "SELECT link FROM audit_chain WHERE organization_id = $1 AND seq = $2",
            &[&organization_id, &seq],
        )
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// Records a verification run in `audit_integrity_log`.
pub async fn record_run(
    client: &impl GenericClient,
    organization_id: &str,
    valid: bool,
    details: &Value,
    verified_by: &str,
) -> Result<(), DbError> {
    let status = if valid { "success" } else { "failure" };
    client
        .execute(
            "INSERT INTO audit_integrity_log (organization_id, verification_status, verification_details, verified_by) \
             VALUES ($1, $2, $3, $4)",
            &[&organization_id, &status, &Json(details), &verified_by],
        )
        .await?;
    Ok(())
}
