//! What a verification reads and where it records its runs: the
//! organization's `audit_chain` in order, its events in chain order (live in
//! `audit_log`, archived ones copied into the temporary table
//! `verify_archived`, and the kept leaves in `audit_pruned_leaf` of those a
//! recorded operation removed), the chain head, and `audit_integrity_log`.
//!
//! The chain is streamed (`query_raw`), and the events are read a window of
//! chain links at a time, so a verification holds no more of either than it
//! is checking.

use chrono::{DateTime, Utc};
use futures_util::{Stream, TryStreamExt};
use serde_json::Value;
use tokio_postgres::types::{FromSql, Json, ToSql, Type};
use tokio_postgres::{GenericClient, Row, Statement};

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
///
/// Columns are read by their place in [`events`]' select list (the `column`
/// module), not by name: a lookup by name compares against every column's
/// name, and verification reads some twenty of them for each event.
pub struct ChainEvent(Row);

/// Where each column stands in [`events`]' select list (`EVENT_COLUMNS`,
/// then `removed_by`).
mod column {
    pub const ID: usize = 0;
    pub const TIMESTAMP: usize = 1;
    pub const TTL: usize = 2;
    pub const PRINCIPAL_ID: usize = 3;
    pub const ORGANIZATION_ID: usize = 4;
    pub const ACTION: usize = 5;
    pub const TARGET_RESOURCE_TYPE: usize = 6;
    pub const TARGET_RESOURCE_ID: usize = 7;
    pub const STATUS: usize = 8;
    pub const OUTCOME_DESCRIPTION: usize = 9;
    pub const HASH: usize = 10;
    pub const HASH_ALGORITHM: usize = 11;
    pub const EVENT_VERSION: usize = 12;
    pub const CORRELATION_ID: usize = 13;
    pub const DATA_CLASSIFICATION: usize = 14;
    pub const RETENTION_POLICY: usize = 15;
    pub const DETAILS: usize = 16;
    pub const IDEMPOTENCY_KEY: usize = 17;
    pub const PRINCIPAL_COMMITMENT: usize = 18;
    pub const TARGET_RESOURCE_COMMITMENT: usize = 19;
    pub const CHAIN_LINK: usize = 20;
    pub const REMOVED_BY: usize = 21;
}

/// The columns of an event [`events`] reads, in the order of [`column`].
const EVENT_COLUMNS: &str = "id, \"timestamp\", ttl, principal_id, organization_id, action, target_resource_type, \
    target_resource_id, status, outcome_description, hash, hash_algorithm, event_version, correlation_id, \
    data_classification, retention_policy, details, idempotency_key, principal_commitment, \
    target_resource_commitment, chain_link";

impl ChainEvent {
    pub fn id(&self) -> i64 {
        self.0.get(column::ID)
    }

    pub fn chain_link(&self) -> i64 {
        self.0.get(column::CHAIN_LINK)
    }

    pub fn timestamp(&self) -> DateTime<Utc> {
        self.0.get(column::TIMESTAMP)
    }

    /// The stored hash, in hex: the event's, or the kept leaf of a removed one.
    pub fn hash(&self) -> &str {
        self.0.get(column::HASH)
    }

    pub fn removed_by(&self) -> Option<Removal> {
        match self.0.get::<_, Option<&str>>(column::REMOVED_BY)? {
            "retention" => Some(Removal::Retention),
            _ => Some(Removal::GdprErasure),
        }
    }

    pub fn principal_id(&self) -> &str {
        self.0.get(column::PRINCIPAL_ID)
    }

    pub fn principal_commitment(&self) -> &str {
        self.0.get(column::PRINCIPAL_COMMITMENT)
    }

    pub fn target_resource_id(&self) -> Option<&str> {
        self.0.get(column::TARGET_RESOURCE_ID)
    }

    pub fn target_resource_commitment(&self) -> Option<&str> {
        self.0.get(column::TARGET_RESOURCE_COMMITMENT)
    }

    /// `details`, as the JSON text the database keeps (its canonical form is
    /// written from the text, see [`crate::integrity::jcs::write_text`]).
    pub fn details_text(&self) -> Option<&str> {
        self.0
            .get::<_, Option<JsonText<'_>>>(column::DETAILS)
            .map(|JsonText(text)| text)
    }

    /// The fields the event's hash covers but `details` (left out: see
    /// [`ChainEvent::details_text`]).
    pub fn hashed_fields(&self) -> HashedFields<'_> {
        let row = &self.0;
        HashedFields {
            organization_id: row.get(column::ORGANIZATION_ID),
            timestamp: row.get(column::TIMESTAMP),
            ttl: row.get(column::TTL),
            principal_commitment: row.get(column::PRINCIPAL_COMMITMENT),
            action: row.get(column::ACTION),
            target_resource_type: row.get(column::TARGET_RESOURCE_TYPE),
            target_resource_commitment: row.get(column::TARGET_RESOURCE_COMMITMENT),
            status: row.get(column::STATUS),
            outcome_description: row.get(column::OUTCOME_DESCRIPTION),
            hash_algorithm: row.get(column::HASH_ALGORITHM),
            event_version: row.get(column::EVENT_VERSION),
            correlation_id: row.get(column::CORRELATION_ID),
            data_classification: row.get(column::DATA_CLASSIFICATION),
            retention_policy: row.get(column::RETENTION_POLICY),
            idempotency_key: row.get(column::IDEMPOTENCY_KEY),
            details: None,
        }
    }
}

/// A `jsonb` (or `json`) value as its text, borrowed from the row: in binary
/// form a `jsonb` is a version byte (1) and the text.
struct JsonText<'a>(&'a str);

impl<'a> FromSql<'a> for JsonText<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = match (ty, raw.split_first()) {
            (&Type::JSONB, Some((1, text))) => text,
            (&Type::JSONB, _) => return Err("unsupported jsonb version".into()),
            _ => raw,
        };
        Ok(JsonText(std::str::from_utf8(text)?))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }
}

/// The statement that reads a window of the organization's events: those
/// claiming chain links `$4 < chain_link <= $5`, from `$2` to `$3` (both
/// inclusive; NULL leaves that end open): live events, archived ones (when
/// `with_archived`, from `verify_archived`) and the kept leaves of those
/// recorded operations removed. Prepared once per verification, run once
/// per window ([`events_in_window`]).
///
/// There is no `ORDER BY`: the caller sorts a window's events by link and id
/// itself. Ordered by PostgreSQL, the whole range was sorted in one piece
/// before its first row came out (an external merge of 240 MB on disk for
/// 300,000 events, measured with `EXPLAIN (ANALYZE, BUFFERS)`), which made
/// the read take twice as long as the same rows unsorted. A window is read
/// through `audit_log_org_chain_link_idx`, nearly in order already.
pub async fn prepare_events(
    client: &impl GenericClient,
    with_archived: bool,
) -> Result<Statement, DbError> {
    let columns = EVENT_COLUMNS;
    let filter = "organization_id = $1 AND chain_link > $4 AND chain_link <= $5 \
        AND ($2::timestamptz IS NULL OR \"timestamp\" >= $2) AND ($3::timestamptz IS NULL OR \"timestamp\" <= $3)";
    // The leaves of removed events, in the same row shape: only the id, time,
    // hash and link are known.
    let pruned = "SELECT event_id, event_timestamp, NULL, NULL, organization_id, NULL, NULL, NULL, NULL, NULL, \
        hash, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, chain_link, operation_kind FROM audit_pruned_leaf \
        WHERE organization_id = $1 AND chain_link > $4 AND chain_link <= $5 \
          AND ($2::timestamptz IS NULL OR event_timestamp >= $2) \
          AND ($3::timestamptz IS NULL OR event_timestamp <= $3)";
    let archived = if with_archived {
        format!("UNION ALL SELECT {columns}, NULL::text FROM verify_archived WHERE {filter}")
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT {columns}, NULL::text AS removed_by FROM audit_log WHERE {filter} {archived} \
         UNION ALL {pruned}"
    );
    Ok(client.prepare(&sql).await?)
}

/// The events of one window (see [`prepare_events`]), as they come: the
/// window's links `after < chain_link <= upto`. The query is sent when the
/// future is first polled, so the next window can be asked for while the
/// current one is still being read.
pub async fn events_in_window(
    client: &impl GenericClient,
    statement: &Statement,
    organization_id: &str,
    (lower, upper): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    (after, upto): (i64, i64),
) -> Result<impl Stream<Item = Result<ChainEvent, DbError>>, DbError> {
    let rows = client
        .query_raw(
            statement,
            [
                &organization_id as &(dyn ToSql + Sync),
                &lower,
                &upper,
                &after,
                &upto,
            ],
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

/// A verification run as `audit_integrity_log` keeps it.
#[derive(Debug, Clone)]
pub struct Run {
    pub at: DateTime<Utc>,
    pub valid: bool,
    pub verified_by: Option<String>,
    /// What [`crate::integrity::verify::record`] wrote: counts and problems.
    pub details: Value,
}

/// The organization's last `limit` verification runs, newest first.
pub async fn recent_runs(
    client: &impl GenericClient,
    organization_id: &str,
    limit: i64,
) -> Result<Vec<Run>, DbError> {
    let rows = client
        .query(
            "SELECT verification_timestamp, verification_status, verified_by, verification_details \
             FROM audit_integrity_log WHERE organization_id = $1 AND audit_log_id IS NULL \
             ORDER BY verification_timestamp DESC, id DESC LIMIT $2",
            &[&organization_id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Run {
            at: row.get(0),
            valid: row.get::<_, String>(1) == "success",
            verified_by: row.get(2),
            details: row
                .get::<_, Option<Json<Value>>>(3)
                .map_or(Value::Null, |Json(details)| details),
        })
        .collect())
}

/// A run the console started, as far as it got (migration V27).
#[derive(Debug, Clone)]
pub struct Progress {
    pub started_at: DateTime<Utc>,
    pub started_by: String,
    pub events_total: i64,
    pub events_checked: i64,
}

/// A run whose progress was not updated for this long has stopped with its
/// worker (a running one updates it twice a second).
const STALLED_AFTER: &str = "30 seconds";

/// Registers a run of the organization's whole trail, unless one is running:
/// `false` then.
pub async fn start_progress(
    client: &impl GenericClient,
    organization_id: &str,
    started_by: &str,
) -> Result<bool, DbError> {
    let started = client
        .query_opt(
            &format!(
                "INSERT INTO verification_progress (organization_id, started_by, events_total) \
                 SELECT $1::text, $2::text, coalesce((SELECT event_total FROM audit_chain_head \
                                                      WHERE organization_id = $1::text), 0) \
                 ON CONFLICT (organization_id) DO UPDATE \
                   SET started_at = now(), started_by = excluded.started_by, \
                       events_total = excluded.events_total, events_checked = 0, updated_at = now() \
                   WHERE verification_progress.updated_at < now() - interval '{STALLED_AFTER}' \
                 RETURNING organization_id"
            ),
            &[&organization_id, &started_by],
        )
        .await?;
    Ok(started.is_some())
}

pub async fn update_progress(
    client: &impl GenericClient,
    organization_id: &str,
    events_checked: i64,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE verification_progress SET events_checked = $2, updated_at = now() \
             WHERE organization_id = $1",
            &[&organization_id, &events_checked],
        )
        .await?;
    Ok(())
}

pub async fn finish_progress(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<(), DbError> {
    client
        .execute(
            "DELETE FROM verification_progress WHERE organization_id = $1",
            &[&organization_id],
        )
        .await?;
    Ok(())
}

/// The organization's run in progress, if one is.
pub async fn progress(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Option<Progress>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT started_at, started_by, events_total, events_checked FROM verification_progress \
                 WHERE organization_id = $1 AND updated_at >= now() - interval '{STALLED_AFTER}'"
            ),
            &[&organization_id],
        )
        .await?;
    Ok(row.map(|row| Progress {
        started_at: row.get(0),
        started_by: row.get(1),
        events_total: row.get(2),
        events_checked: row.get(3),
    }))
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
