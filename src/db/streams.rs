//! Queries on `stream_subscriptions`: an organization's event streams, each
//! with its cursor in the organization's chain, and how far behind it is.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::Json;
use tokio_postgres::{GenericClient, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use super::events::{self, action_condition, StoredEvent};
use super::{deliveries, DbError};

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    pub limits: BatchLimits,
    /// `start` as created: `now`, `earliest` or an RFC 3339 instant.
    pub start: String,
    /// Only events at or after this instant (an RFC 3339 `start`).
    pub starts_at: Option<DateTime<Utc>>,
    pub paused: bool,
    /// The last event the destination accepted.
    pub cursor: ChainPosition,
    /// The batch in flight, if any.
    pub batch: Option<Batch>,
    pub last_delivered_event_id: Option<i64>,
    pub last_delivered_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A batch sent and not yet accepted: its delivery, and how it fares.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The delivery's id, which is the batch's (`webhook-id: msg_<id>`).
    pub id: Uuid,
    /// The last event it holds.
    pub end: ChainPosition,
    /// Failed attempts of the batch so far (its delivery's retries).
    pub failures: i32,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

/// What waits for a subscription: matching events after its cursor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    /// Counted up to [`LAG_COUNT_LIMIT`].
    pub events: i64,
    /// When the oldest of them was written (its link's time).
    pub oldest_written_at: Option<DateTime<Utc>>,
}

/// A subscription's columns (`s`) and its batch's delivery's (`q`, joined).
const COLUMNS: &str = "s.id, s.organization_id, s.destination_id, s.filter, s.format, \
    s.batch_max_events, s.batch_max_delay_ms, s.start_from, s.starts_at, s.paused, \
    s.cursor_link_seq, s.cursor_event_id, s.batch_delivery_id, s.batch_link_seq, s.batch_event_id, \
    s.last_delivered_event_id, s.last_delivered_at, s.created_by, s.created_at, s.updated_at, \
    coalesce(q.retry_count, 0) AS batch_failures, q.last_error AS batch_error, \
    CASE WHEN q.last_error IS NOT NULL THEN q.updated_at END AS batch_error_at";

/// The subscriptions `WHERE` picks, with their batch's delivery.
const FROM: &str = "stream_subscriptions s LEFT JOIN delivery_queue q \
    ON q.organization_id = s.organization_id AND q.id = s.batch_delivery_id";

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
        limits: BatchLimits {
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
        batch: row
            .get::<_, Option<Uuid>>("batch_delivery_id")
            .map(|id| Batch {
                id,
                end: ChainPosition {
                    link_seq: row.get("batch_link_seq"),
                    event_id: row.get("batch_event_id"),
                },
                failures: row.get("batch_failures"),
                last_error: row.get("batch_error"),
                last_error_at: row.get("batch_error_at"),
            }),
        last_delivered_event_id: row.get("last_delivered_event_id"),
        last_delivered_at: row.get("last_delivered_at"),
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
    pub limits: BatchLimits,
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
            "INSERT INTO stream_subscriptions (organization_id, destination_id, filter, format, \
               batch_max_events, batch_max_delay_ms, start_from, starts_at, cursor_link_seq, \
               cursor_event_id, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
            &[
                &new.organization_id,
                &new.destination_id,
                &Json(new.filter),
                &new.format,
                &new.limits.max_events,
                &new.limits.max_delay_ms,
                &new.start,
                &new.starts_at,
                &new.cursor.link_seq,
                &new.cursor.event_id,
                &new.created_by,
            ],
        )
        .await?;
    found(get(client, new.organization_id, row.get("id")).await?)
}

/// A row just written is there to read in the same transaction.
fn found(subscription: Option<Subscription>) -> Result<Subscription, DbError> {
    subscription.ok_or_else(|| DbError::Decode("a stream subscription just written is gone".into()))
}

/// The organization's subscriptions, oldest first.
pub async fn list(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Vec<Subscription>, DbError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM {FROM} WHERE s.organization_id = $1 ORDER BY s.id"),
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
            &format!("SELECT {COLUMNS} FROM {FROM} WHERE s.organization_id = $1 AND s.id = $2"),
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
    let updated = client
        .execute(
            "UPDATE stream_subscriptions SET destination_id = $3, filter = $4, format = $5, \
               batch_max_events = $6, batch_max_delay_ms = $7, updated_at = now() \
             WHERE organization_id = $1 AND id = $2",
            &[
                &changed.organization_id,
                &changed.id,
                &changed.destination_id,
                &Json(&changed.filter),
                &changed.format,
                &changed.limits.max_events,
                &changed.limits.max_delay_ms,
            ],
        )
        .await?;
    if updated == 0 {
        return Ok(None);
    }
    get(client, &changed.organization_id, changed.id).await
}

/// Pauses or resumes; `None` when there is no such subscription.
pub async fn set_paused(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
    paused: bool,
) -> Result<Option<Subscription>, DbError> {
    let updated = client
        .execute(
            "UPDATE stream_subscriptions SET paused = $3, updated_at = now() \
             WHERE organization_id = $1 AND id = $2",
            &[&organization_id, &id, &paused],
        )
        .await?;
    if updated == 0 {
        return Ok(None);
    }
    get(client, organization_id, id).await
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

/// The events pending for a reader (`$1` organization, after `$2`/`$3` in
/// its chain, through `$12`/`$13`, from `$4`, matching `$5`..`$10`), in chain
/// order, at most `$11`: the statement around `$columns`, which name each
/// event's columns (`e`), its link's number (`c.seq`) and when the link was
/// written (`c.created_at`).
macro_rules! pending {
    ($columns:literal) => {
        concat!(
            "SELECT ", $columns, " FROM audit_chain c \
             JOIN audit_log e ON e.organization_id = c.organization_id AND e.chain_link = c.link_id \
             WHERE c.organization_id = $1 AND c.seq >= $2 AND c.seq <= $12 \
               AND (c.seq > $2 OR e.id > $3) AND (c.seq < $12 OR e.id <= $13) \
               AND ($4::timestamptz IS NULL OR e.\"timestamp\" >= $4) \
               AND ($5::text IS NULL OR e.action = $5) \
               AND ($6::text IS NULL OR e.action LIKE $6) \
               AND ($7::text IS NULL OR e.status = $7) \
               AND ($8::text IS NULL OR e.data_classification = $8) \
               AND ($9::text IS NULL OR e.principal_id = $9) \
               AND ($10::text IS NULL OR e.target_resource_type = $10) \
             ORDER BY c.seq, e.id LIMIT $11"
        )
    };
}

/// Pending events whole, for readers that send them as they read.
const PENDING_EVENTS: &str = pending!("e.*, c.seq AS link_seq, c.created_at AS link_written_at");
/// Pending events' places only, for the StreamActor, which cuts batches by
/// place and leaves reading them to their sending.
const PENDING_PLACES: &str = pending!("e.id, c.seq AS link_seq, c.created_at AS link_written_at");

/// Links looked at, at most, to find a batch's events: a window of the chain
/// that holds about as many events as the batch may, so that the events
/// read and sorted are bounded by the batch, not by the backlog.
const LINK_WINDOW: i64 = 1000;

/// Where a reader of an organization's events stands: what it takes (its
/// filter, and only events from `starts_at` on) and the last event it has.
#[derive(Debug, Clone, Copy)]
pub struct Tail<'a> {
    pub organization_id: &'a str,
    pub filter: &'a StreamFilter,
    pub starts_at: Option<DateTime<Utc>>,
    pub after: ChainPosition,
}

impl Subscription {
    /// What the subscription reads next.
    pub fn tail(&self) -> Tail<'_> {
        Tail {
            organization_id: &self.organization_id,
            filter: &self.filter,
            starts_at: self.starts_at,
            after: self.cursor,
        }
    }
}

/// Reads the pending events of `tail` through `read` (a statement made by
/// `pending!`), at most `limit`, in links up to `through`.
async fn query_pending(
    client: &impl GenericClient,
    tail: &Tail<'_>,
    read: &str,
    limit: i64,
    through: ChainPosition,
) -> Result<Vec<Row>, DbError> {
    let filter = tail.filter;
    let (action_exact, action_prefix) = action_condition(filter.action.as_deref());
    Ok(client
        .query(
            read,
            &[
                &tail.organization_id,
                &tail.after.link_seq,
                &tail.after.event_id,
                &tail.starts_at,
                &action_exact,
                &action_prefix,
                &filter.status,
                &filter.data_classification,
                &filter.principal_id,
                &filter.target_resource_type,
                &limit,
                &through.link_seq,
                &through.event_id,
            ],
        )
        .await?)
}

/// The subscription's pending events: matching, committed, after its cursor.
pub async fn lag(client: &impl GenericClient, subscription: &Subscription) -> Result<Lag, DbError> {
    let read = format!(
        "SELECT count(*) AS events, min(link_written_at) AS oldest FROM ({PENDING_PLACES}) pending"
    );
    let tail = subscription.tail();
    let everything = ChainPosition {
        link_seq: i64::MAX,
        event_id: i64::MAX,
    };
    let rows = query_pending(client, &tail, &read, LAG_COUNT_LIMIT, everything).await?;
    let row = rows
        .first()
        .ok_or_else(|| DbError::Decode("an aggregate answered no row".into()))?;
    Ok(Lag {
        events: row.get("events"),
        oldest_written_at: row.get("oldest"),
    })
}

/// Where a pending event is.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    pub position: ChainPosition,
    /// When its link was written: how long it has waited.
    pub written_at: DateTime<Utc>,
}

/// An event pending for a reader, and its place in the chain.
pub struct PendingEvent {
    pub place: Place,
    pub event: StoredEvent,
}

/// What follows a reader's place: its next events (or their places), and how
/// far they were looked for.
pub struct Pending<T> {
    /// At most the `limit` asked for, in chain order.
    pub events: Vec<T>,
    /// The end of the links looked at: no event up to there is missing from
    /// `events` (unless `events` is full), so a reader with none may move there.
    pub looked_to: Option<ChainPosition>,
    /// Whether the links looked at reach the chain's end as committed.
    pub at_end: bool,
}

impl<T> Pending<T> {
    /// Nothing found, and nowhere looked.
    pub fn nothing() -> Self {
        Self {
            events: Vec::new(),
            looked_to: None,
            at_end: true,
        }
    }
}

/// The links that hold about `limit` events after `tail`'s place (see
/// [`LINK_WINDOW`]): the last of them, and whether it ends the chain as
/// committed. `None` when the chain ends at the reader's link.
async fn window(
    client: &impl GenericClient,
    tail: &Tail<'_>,
    limit: i64,
) -> Result<Option<(i64, bool)>, DbError> {
    let links = client
        .query(
            "SELECT seq, event_count FROM audit_chain WHERE organization_id = $1 AND seq >= $2 \
             ORDER BY seq LIMIT $3",
            &[&tail.organization_id, &tail.after.link_seq, &LINK_WINDOW],
        )
        .await?;
    let mut counted = 0i64;
    let mut last_link = None;
    for link in &links {
        let seq: i64 = link.get("seq");
        last_link = Some(seq);
        // The reader's own link is partly behind it: it counts for nothing,
        // so the window always reaches past it when the chain does.
        if seq > tail.after.link_seq {
            counted += i64::from(link.get::<_, i32>("event_count"));
        }
        if counted >= limit {
            break;
        }
    }
    Ok(last_link.map(|last| {
        let at_end = links.len() < LINK_WINDOW as usize
            && links.last().map(|link| link.get::<_, i64>("seq")) == Some(last);
        (last, at_end)
    }))
}

/// The first `limit` events after `tail`'s place, in chain order, read by
/// `read` from the links that hold about `limit` events, each made by `each`.
async fn pending_in_window<T>(
    client: &impl GenericClient,
    tail: &Tail<'_>,
    limit: i64,
    read: &str,
    each: impl Fn(&Row) -> T,
) -> Result<Pending<T>, DbError> {
    let Some((last_link, at_end)) = window(client, tail, limit).await? else {
        return Ok(Pending::nothing());
    };
    let through = ChainPosition {
        link_seq: last_link,
        event_id: i64::MAX,
    };
    let rows = query_pending(client, tail, read, limit, through).await?;
    Ok(Pending {
        events: rows.iter().map(each).collect(),
        looked_to: Some(through),
        at_end,
    })
}

fn place(row: &Row) -> Place {
    Place {
        position: ChainPosition {
            link_seq: row.get("link_seq"),
            event_id: row.get("id"),
        },
        written_at: row.get("link_written_at"),
    }
}

/// The first `limit` events after `tail`'s place, whole, in chain order.
pub async fn pending(
    client: &impl GenericClient,
    tail: &Tail<'_>,
    limit: i64,
) -> Result<Pending<PendingEvent>, DbError> {
    pending_in_window(client, tail, limit, PENDING_EVENTS, |row| PendingEvent {
        place: place(row),
        event: events::stored(row),
    })
    .await
}

/// The places of the first `limit` events after `tail`'s place.
pub async fn pending_places(
    client: &impl GenericClient,
    tail: &Tail<'_>,
    limit: i64,
) -> Result<Pending<Place>, DbError> {
    pending_in_window(client, tail, limit, PENDING_PLACES, place).await
}

/// A stream's batch as its delivery names it (the stored payload of a
/// `stream` delivery): the events of the organization's chain after `after`
/// through `through` that match `filter`, written as `format`. Its events are
/// read as it is sent, so a batch is not stored once per subscription, and
/// pseudonymization or erasure done meanwhile applies to what is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRange {
    pub subscription_id: i64,
    pub format: String,
    pub filter: StreamFilter,
    pub starts_at: Option<DateTime<Utc>>,
    pub after: ChainPosition,
    pub through: ChainPosition,
}

/// The events of the organization's batch `range`, in chain order.
pub async fn batch_events(
    client: &impl GenericClient,
    organization_id: &str,
    range: &BatchRange,
) -> Result<Vec<StoredEvent>, DbError> {
    let tail = Tail {
        organization_id,
        filter: &range.filter,
        starts_at: range.starts_at,
        after: range.after,
    };
    let rows = query_pending(client, &tail, PENDING_EVENTS, i64::MAX, range.through).await?;
    Ok(rows.iter().map(events::stored).collect())
}

/// Moves an idle subscription's cursor past events that are not its own
/// (`to`, where [`pending`] looked up to without finding one).
pub async fn skip_to(
    client: &impl GenericClient,
    subscription: &Subscription,
    to: ChainPosition,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE stream_subscriptions SET cursor_link_seq = $3, cursor_event_id = $4 \
             WHERE organization_id = $1 AND id = $2 AND batch_delivery_id IS NULL",
            &[
                &subscription.organization_id,
                &subscription.id,
                &to.link_seq,
                &to.event_id,
            ],
        )
        .await?;
    Ok(())
}

/// Where the organization's event `event_id` is in its chain; `None` when it
/// has no such event.
pub async fn position_of(
    client: &impl GenericClient,
    organization_id: &str,
    event_id: i64,
) -> Result<Option<ChainPosition>, DbError> {
    let row = client
        .query_opt(
            "SELECT c.seq FROM audit_log e JOIN audit_chain c \
               ON c.organization_id = e.organization_id AND c.link_id = e.chain_link \
             WHERE e.organization_id = $1 AND e.id = $2",
            &[&organization_id, &event_id],
        )
        .await?;
    Ok(row.map(|row| ChainPosition {
        link_seq: row.get("seq"),
        event_id,
    }))
}

/// Organizations with a subscription that may start a batch (running, none
/// in flight). Read without locks, so that Citus runs it on every shard;
/// [`claim_idle`] then locks each organization's subscriptions on its own.
pub async fn organizations_with_idle(client: &impl GenericClient) -> Result<Vec<String>, DbError> {
    let rows = client
        .query(
            "SELECT DISTINCT organization_id FROM stream_subscriptions \
             WHERE NOT paused AND batch_delivery_id IS NULL ORDER BY organization_id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Locks up to `limit` subscriptions of the organization that may start a
/// batch (running, none in flight); those another worker holds are skipped.
pub async fn claim_idle(
    transaction: &impl GenericClient,
    organization_id: &str,
    limit: i64,
) -> Result<Vec<Subscription>, DbError> {
    let rows = transaction
        .query(
            &format!(
                "SELECT {COLUMNS} FROM {FROM} WHERE s.organization_id = $1 AND s.id IN ( \
                   SELECT id FROM stream_subscriptions \
                   WHERE organization_id = $1 AND NOT paused AND batch_delivery_id IS NULL \
                   ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 ORDER BY s.id"
            ),
            &[&organization_id, &limit],
        )
        .await?;
    rows.iter().map(subscription).collect()
}

/// A batch about to be sent: its delivery, and the last event it holds.
pub struct NewBatch<'a> {
    pub id: Uuid,
    /// Its events, which its delivery reads as it sends them.
    pub range: &'a BatchRange,
    /// Where an S3 or FTP destination stores it.
    pub object_key: &'a str,
    /// Attempts before the delivery stops; the worker starts it again after
    /// `streams.failed_batch_retry_after`, so a stream never drops a batch.
    pub max_retries: i32,
}

/// Queues `batch` as the subscription's delivery in flight (in the
/// transaction that locked the subscription), and wakes the queues.
pub async fn start_batch(
    transaction: &impl GenericClient,
    subscription: &Subscription,
    batch: &NewBatch<'_>,
) -> Result<(), DbError> {
    transaction
        .execute(
            "INSERT INTO delivery_queue (id, organization_id, destination_id, payload, max_retries, \
               object_key, body) \
             VALUES ($1, $2, $3, $4, $5, $6, 'stream')",
            &[
                &batch.id,
                &subscription.organization_id,
                &subscription.destination_id,
                &Json(batch.range),
                &batch.max_retries,
                &batch.object_key,
            ],
        )
        .await?;
    transaction
        .execute(
            "UPDATE stream_subscriptions SET batch_delivery_id = $3, batch_link_seq = $4, \
               batch_event_id = $5 \
             WHERE organization_id = $1 AND id = $2",
            &[
                &subscription.organization_id,
                &subscription.id,
                &batch.id,
                &batch.range.through.link_seq,
                &batch.range.through.event_id,
            ],
        )
        .await?;
    deliveries::announce(transaction).await
}

/// Every subscription, of any organization, with how long the oldest event
/// of its organization's chain after its cursor has waited (its filter
/// aside: a stream moves past what it does not take at its next round);
/// 0 when none waits.
pub async fn lag_seconds(client: &impl GenericClient) -> Result<Vec<(i64, f64)>, DbError> {
    let rows = client
        .query(
            "SELECT s.id, coalesce(extract(epoch FROM now() - ( \
               SELECT c.created_at FROM audit_chain c \
               WHERE c.organization_id = s.organization_id AND c.seq >= s.cursor_link_seq \
                 AND (c.seq > s.cursor_link_seq OR c.last_event_id > s.cursor_event_id) \
               ORDER BY c.seq LIMIT 1)), 0)::float8 AS lag \
             FROM stream_subscriptions s",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| (row.get("id"), row.get("lag")))
        .collect())
}

/// Whether any subscription, of any organization, has a batch in flight.
pub async fn any_in_flight(client: &impl GenericClient) -> Result<bool, DbError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM stream_subscriptions WHERE batch_delivery_id IS NOT NULL)",
            &[],
        )
        .await?
        .get(0))
}

/// Moves the cursor of every subscription whose batch was delivered to that
/// batch's end, across organizations; how many moved.
pub async fn settle_delivered(client: &impl GenericClient) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "UPDATE stream_subscriptions s SET cursor_link_seq = s.batch_link_seq, \
               cursor_event_id = s.batch_event_id, batch_delivery_id = NULL, batch_link_seq = NULL, \
               batch_event_id = NULL, last_delivered_event_id = s.batch_event_id, \
               last_delivered_at = q.processed_at, updated_at = now() \
             FROM delivery_queue q \
             WHERE q.organization_id = s.organization_id AND q.id = s.batch_delivery_id \
               AND q.status = 'delivered'",
            &[],
        )
        .await?)
}

/// Sends again the batches whose delivery gave up (retries exhausted, or a
/// refusal) longer than `after` ago: a stream holds its place until its
/// destination takes the batch. How many were started again.
pub async fn retry_failed(client: &impl GenericClient, after: Duration) -> Result<u64, DbError> {
    let restarted = client
        .execute(
            "UPDATE delivery_queue q SET status = 'retrying', retry_count = 0, next_retry_at = now(), \
               processed_at = NULL, updated_at = now() \
             FROM stream_subscriptions s \
             WHERE q.organization_id = s.organization_id AND q.id = s.batch_delivery_id \
               AND q.status = 'failed' \
               AND q.processed_at < now() - make_interval(secs => $1)",
            &[&after.as_secs_f64()],
        )
        .await?;
    if restarted > 0 {
        deliveries::announce(client).await?;
    }
    Ok(restarted)
}
