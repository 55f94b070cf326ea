//! Queries on `stream_subscriptions`: an organization's event streams, each
//! with its cursor in the organization's chain, and how far behind it is.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::Json;
use tokio_postgres::{GenericClient, Row};
use utoipa::ToSchema;

use super::events::action_condition;
use super::DbError;

/// Pending events are counted up to this many: a count over years of trail
/// would make every read of a subscription slow, and beyond it the number
/// says no more than "far behind".
pub const LAG_COUNT_LIMIT: i64 = 100_000;

/// The filters of `GET /v1/events` a stream takes; absent fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamFilter {
    /// Exact action, or a prefix ending in `*` (`auth.*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 255, pattern = r"\S")]
    pub action: Option<String>,
    /// attempt, success or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(attempt|success|failure)$")]
    pub status: Option<String>,
    /// PUBLIC, INTERNAL, CONFIDENTIAL or PHI.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(PUBLIC|INTERNAL|CONFIDENTIAL|PHI)$")]
    pub data_classification: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 255, pattern = r"\S")]
    pub principal_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 255, pattern = r"\S")]
    pub target_resource_type: Option<String>,
}

/// How a subscription's batches are cut: whichever limit comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct BatchLimits {
    /// Events per batch at most.
    pub max_events: i32,
    /// How long a matching event may wait for its batch to fill.
    pub max_delay_ms: i32,
}

/// A place in an organization's chain: after the event `event_id` of link
/// `link_seq`. `(0, 0)` is before the first event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainPosition {
    pub link_seq: i64,
    pub event_id: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub id: i64,
    pub organization_id: String,
    pub destination_id: i64,
    pub filter: StreamFilter,
    pub format: String,
    pub batch: BatchLimits,
    /// `start` as created: `now`, `earliest` or an RFC 3339 instant.
    pub start: String,
    /// Only events at or after this instant (an RFC 3339 `start`).
    pub starts_at: Option<DateTime<Utc>>,
    pub paused: bool,
    /// The last event the destination accepted.
    pub cursor: ChainPosition,
    pub last_delivered_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What waits for a subscription: matching events after its cursor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    /// Counted up to [`LAG_COUNT_LIMIT`].
    pub events: i64,
    /// When the oldest of them was committed (its link's time).
    pub oldest_committed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, organization_id, destination_id, filter, format, batch_max_events, \
    batch_max_delay_ms, start_from, starts_at, paused, cursor_link_seq, cursor_event_id, \
    last_delivered_at, consecutive_failures, last_error, last_error_at, created_by, created_at, \
    updated_at";

fn subscription(row: &Row) -> Result<Subscription, DbError> {
    let Json(filter) = row
        .try_get::<_, Json<StreamFilter>>("filter")
        .map_err(|error| DbError::Decode(format!("stream filter: {error}")))?;
    Ok(Subscription {
        id: row.get("id"),
        organization_id: row.get("organization_id"),
        destination_id: row.get("destination_id"),
        filter,
        format: row.get("format"),
        batch: BatchLimits {
            max_events: row.get("batch_max_events"),
            max_delay_ms: row.get("batch_max_delay_ms"),
        },
        start: row.get("start_from"),
        starts_at: row.get("starts_at"),
        paused: row.get("paused"),
        cursor: ChainPosition {
            link_seq: row.get("cursor_link_seq"),
            event_id: row.get("cursor_event_id"),
        },
        last_delivered_at: row.get("last_delivered_at"),
        consecutive_failures: row.get("consecutive_failures"),
        last_error: row.get("last_error"),
        last_error_at: row.get("last_error_at"),
        created_by: row.get("created_by"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

/// What a new subscription is; `cursor` is where it starts.
pub struct NewSubscription<'a> {
    pub organization_id: &'a str,
    pub destination_id: i64,
    pub filter: &'a StreamFilter,
    pub format: &'a str,
    pub batch: BatchLimits,
    pub start: &'a str,
    pub starts_at: Option<DateTime<Utc>>,
    pub cursor: ChainPosition,
    pub created_by: &'a str,
}

pub async fn insert(
    client: &impl GenericClient,
    new: &NewSubscription<'_>,
) -> Result<Subscription, DbError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO stream_subscriptions (organization_id, destination_id, filter, format, \
                   batch_max_events, batch_max_delay_ms, start_from, starts_at, cursor_link_seq, \
                   cursor_event_id, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
            ),
            &[
                &new.organization_id,
                &new.destination_id,
                &Json(new.filter),
                &new.format,
                &new.batch.max_events,
                &new.batch.max_delay_ms,
                &new.start,
                &new.starts_at,
                &new.cursor.link_seq,
                &new.cursor.event_id,
                &new.created_by,
            ],
        )
        .await?;
    subscription(&row)
}

/// The organization's subscriptions, oldest first.
pub async fn list(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Vec<Subscription>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM stream_subscriptions WHERE organization_id = $1 ORDER BY id"
            ),
            &[&organization_id],
        )
        .await?;
    rows.iter().map(subscription).collect()
}

pub async fn get(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<Option<Subscription>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM stream_subscriptions WHERE organization_id = $1 AND id = $2"
            ),
            &[&organization_id, &id],
        )
        .await?;
    row.as_ref().map(subscription).transpose()
}

/// Stores what a change may change: destination, filter, format, batch limits.
pub async fn update(
    client: &impl GenericClient,
    changed: &Subscription,
) -> Result<Option<Subscription>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE stream_subscriptions SET destination_id = $3, filter = $4, format = $5, \
                   batch_max_events = $6, batch_max_delay_ms = $7, updated_at = now() \
                 WHERE organization_id = $1 AND id = $2 RETURNING {COLUMNS}"
            ),
            &[
                &changed.organization_id,
                &changed.id,
                &changed.destination_id,
                &Json(&changed.filter),
                &changed.format,
                &changed.batch.max_events,
                &changed.batch.max_delay_ms,
            ],
        )
        .await?;
    row.as_ref().map(subscription).transpose()
}

/// Pauses or resumes; `None` when there is no such subscription.
pub async fn set_paused(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
    paused: bool,
) -> Result<Option<Subscription>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE stream_subscriptions SET paused = $3, updated_at = now() \
                 WHERE organization_id = $1 AND id = $2 RETURNING {COLUMNS}"
            ),
            &[&organization_id, &id, &paused],
        )
        .await?;
    row.as_ref().map(subscription).transpose()
}

/// Deletes it; whether there was one.
pub async fn delete(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<bool, DbError> {
    Ok(client
        .execute(
            "DELETE FROM stream_subscriptions WHERE organization_id = $1 AND id = $2",
            &[&organization_id, &id],
        )
        .await?
        == 1)
}

/// The end of the organization's chain as committed now: a stream that
/// starts `now` delivers only what commits after it.
pub async fn chain_end(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<ChainPosition, DbError> {
    let row = client
        .query_opt(
            "SELECT seq, last_event_id FROM audit_chain WHERE organization_id = $1 \
             ORDER BY seq DESC LIMIT 1",
            &[&organization_id],
        )
        .await?;
    Ok(
        row.map_or_else(ChainPosition::default, |row| ChainPosition {
            link_seq: row.get("seq"),
            event_id: row.get("last_event_id"),
        }),
    )
}

/// The subscription's pending events: matching, committed, after its cursor.
pub async fn lag(client: &impl GenericClient, subscription: &Subscription) -> Result<Lag, DbError> {
    let filter = &subscription.filter;
    let (action_exact, action_prefix) = action_condition(filter.action.as_deref());
    let row = client
        .query_one(
            "WITH pending AS ( \
               SELECT c.created_at FROM audit_chain c \
               JOIN audit_log e ON e.organization_id = c.organization_id AND e.chain_link = c.link_id \
               WHERE c.organization_id = $1 AND c.seq >= $2 AND (c.seq > $2 OR e.id > $3) \
                 AND ($4::timestamptz IS NULL OR e.\"timestamp\" >= $4) \
                 AND ($5::text IS NULL OR e.action = $5) \
                 AND ($6::text IS NULL OR e.action LIKE $6) \
                 AND ($7::text IS NULL OR e.status = $7) \
                 AND ($8::text IS NULL OR e.data_classification = $8) \
                 AND ($9::text IS NULL OR e.principal_id = $9) \
                 AND ($10::text IS NULL OR e.target_resource_type = $10) \
               ORDER BY c.seq, e.id LIMIT $11) \
             SELECT count(*) AS events, min(created_at) AS oldest FROM pending",
            &[
                &subscription.organization_id,
                &subscription.cursor.link_seq,
                &subscription.cursor.event_id,
                &subscription.starts_at,
                &action_exact,
                &action_prefix,
                &filter.status,
                &filter.data_classification,
                &filter.principal_id,
                &filter.target_resource_type,
                &LAG_COUNT_LIMIT,
            ],
        )
        .await?;
    Ok(Lag {
        events: row.get("events"),
        oldest_committed_at: row.get("oldest"),
    })
}
