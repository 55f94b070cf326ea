//! Queries on `event_histogram` (events per hour, UTC, and status) and its
//! progress through each organization's chain (migration V26): the roll-up
//! that counts new links, and the histogram of a search, read from the
//! counts or, for filters the counts do not keep, from the events.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Transaction};

use super::events::{EventFilter, FilterValues, FILTERED_EVENTS};
use super::{DbError, PgPool};

/// The width of a histogram's bars, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bucket {
    Hour,
    Day,
    Month,
    Year,
}

impl Bucket {
    /// `date_trunc`'s name of the unit.
    pub fn unit(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Month => "month",
            Bucket::Year => "year",
        }
    }
}

/// Events of one bar and one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub bucket: DateTime<Utc>,
    pub status: String,
    pub events: i64,
}

/// Organizations whose chain has links the counts do not hold yet. Spans
/// organizations: the roll-up's round, run by the worker itself.
pub async fn behind(client: &impl GenericClient) -> Result<Vec<String>, DbError> {
    let rows = client
        .query(
            "SELECT h.organization_id FROM audit_chain_head h \
             LEFT JOIN event_histogram_progress p ON p.organization_id = h.organization_id \
             WHERE h.seq > coalesce(p.through_seq, 0) ORDER BY h.organization_id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Adds the events of the organization's next `max_links` links to the
/// counts. Returns how many links it counted: 0 when none was left, or when
/// another worker is counting this organization right now.
pub async fn roll_up(pool: &PgPool, organization_id: &str, max_links: i64) -> Result<i64, DbError> {
    super::tenant::scoped(pool, organization_id, async |tx| {
        tx.execute(
            "INSERT INTO event_histogram_progress (organization_id, through_seq) VALUES ($1, 0) \
             ON CONFLICT (organization_id) DO NOTHING",
            &[&organization_id],
        )
        .await?;
        // Its own statement, before the counting one: that one's snapshot then
        // sees every deletion that held this row before (see the trigger).
        let locked = tx
            .query_opt(
                "SELECT through_seq FROM event_histogram_progress WHERE organization_id = $1 \
                 FOR UPDATE SKIP LOCKED",
                &[&organization_id],
            )
            .await?;
        let Some(locked) = locked else {
            return Ok(0);
        };
        let through: i64 = locked.get(0);
        without_jit(tx).await?;
        let row = tx
            .query_one(
                &format!(
                "WITH links AS ( \
                   SELECT seq, link_id, min_timestamp, max_timestamp FROM audit_chain \
                   WHERE organization_id = $1 AND seq > $2 ORDER BY seq LIMIT $3), \
                 counted AS ( \
                   SELECT date_trunc('hour', e.\"timestamp\", 'UTC') AS hour, e.status, count(*) AS events \
                   FROM links c {EVENTS_OF_LINK} \
                   GROUP BY 1, 2), \
                 added AS ( \
                   INSERT INTO event_histogram (organization_id, hour, status, events) \
                   SELECT $1, hour, status, events FROM counted \
                   ON CONFLICT (organization_id, hour, status) \
                   DO UPDATE SET events = event_histogram.events + excluded.events) \
                 UPDATE event_histogram_progress SET through_seq = coalesce((SELECT max(seq) FROM links), $2) \
                 WHERE organization_id = $1 RETURNING through_seq"
                ),
                &[&organization_id, &through, &max_links],
            )
            .await?;
        Ok(row.get::<_, i64>(0) - through)
    })
    .await
}

/// The events of each link `c` of a query: one index look-up per link (the
/// `OFFSET 0` keeps PostgreSQL from turning it into a join that reads a
/// whole partition), in the partition of the link's time span.
const EVENTS_OF_LINK: &str = "CROSS JOIN LATERAL ( \
       SELECT \"timestamp\", status FROM audit_log \
       WHERE organization_id = $1 AND chain_link = c.link_id \
         AND \"timestamp\" BETWEEN c.min_timestamp AND c.max_timestamp \
       OFFSET 0) e";

/// These statements are bounded (the links not counted yet, or a limit) but
/// may be estimated dear: compiling them (JIT) would cost far more than
/// running them.
async fn without_jit(transaction: &Transaction<'_>) -> Result<(), DbError> {
    transaction
        .execute("SELECT set_config('jit', 'off', true)", &[])
        .await?;
    Ok(())
}

/// The organization's events per `bucket` and status in `[from, to)`, with
/// `status` if given, from the counts: whole hours, so an hour the range cuts
/// counts whole. Adds the links not yet counted.
pub async fn counted(
    transaction: &Transaction<'_>,
    organization_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    status: Option<&str>,
    bucket: Bucket,
) -> Result<Vec<Count>, DbError> {
    without_jit(transaction).await?;
    let rows = transaction
        .query(
            &format!(
            "WITH progress AS ( \
               SELECT coalesce((SELECT through_seq FROM event_histogram_progress \
                                WHERE organization_id = $1), 0) AS through_seq), \
             fresh AS ( \
               SELECT date_trunc('hour', e.\"timestamp\", 'UTC') AS hour, e.status, count(*) AS events \
               FROM progress p \
               JOIN audit_chain c ON c.organization_id = $1 AND c.seq > p.through_seq \
               {EVENTS_OF_LINK} \
               GROUP BY 1, 2), \
             hours AS ( \
               SELECT hour, status, events FROM event_histogram WHERE organization_id = $1 \
               UNION ALL SELECT hour, status, events FROM fresh) \
             SELECT date_trunc($5, hour, 'UTC') AS bucket, status, sum(events)::bigint AS events \
             FROM hours \
             WHERE hour >= date_trunc('hour', $2::timestamptz, 'UTC') AND hour < $3 \
               AND ($4::text IS NULL OR status = $4) \
             GROUP BY 1, 2 HAVING sum(events) > 0 ORDER BY 1, 2"
            ),
            &[&organization_id, &from, &to, &status, &bucket.unit()],
        )
        .await?;
    Ok(rows.iter().map(count).collect())
}

/// The events per `bucket` and status matching `filter`, counted from the
/// events themselves (for filters the counts do not keep): `None` when more
/// than `most` match. Within `budget` too: PostgreSQL cancels a count that
/// takes longer (an error), as one whose filter no index serves may.
pub async fn matching(
    transaction: &Transaction<'_>,
    organization_id: &str,
    filter: &EventFilter,
    bucket: Bucket,
    (most, budget): (i64, Duration),
) -> Result<Option<Vec<Count>>, DbError> {
    without_jit(transaction).await?;
    transaction
        .execute(
            "SELECT set_config('statement_timeout', $1, true)",
            &[&format!("{}ms", budget.as_millis())],
        )
        .await?;
    let filtered = FilterValues::new(organization_id, filter);
    let rows = transaction
        .query(
            &format!(
                "SELECT date_trunc($12, \"timestamp\", 'UTC') AS bucket, status, count(*) AS events \
                 FROM (SELECT \"timestamp\", status FROM audit_log WHERE {FILTERED_EVENTS} LIMIT $13) matched \
                 GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            &filtered.then(&[&bucket.unit(), &(most + 1)]),
        )
        .await?;
    let counts: Vec<Count> = rows.iter().map(count).collect();
    let matched: i64 = counts.iter().map(|count| count.events).sum();
    Ok((matched <= most).then_some(counts))
}

fn count(row: &tokio_postgres::Row) -> Count {
    Count {
        bucket: row.get("bucket"),
        status: row.get("status"),
        events: row.get("events"),
    }
}
