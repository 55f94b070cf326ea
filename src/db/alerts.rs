//! Queries on `alerts` and `alert_subscriptions`: raising alerts (deduplicated
//! per rule and group, with escalation and a cooldown), their lifecycle,
//! listings and statistics, notifying subscribed destinations, and deleting
//! old closed alerts.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{GenericClient, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use super::connection::{Statements, TypedParam};
use super::deliveries::{self, NewDeliveries};
use super::DbError;
use crate::alerts::model::{AlertStatus, AlertType, Severity, Transition};
use crate::deliveries::destination::DeliverySettings;

/// The severities in ascending order, for SQL that ranks them
/// (`array_position`): one source of truth, the enum.
fn severity_ranks() -> Vec<&'static str> {
    Severity::ALL
        .iter()
        .map(|severity| severity.as_str())
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Alert {
    pub id: Uuid,
    pub organization_id: String,
    pub severity: Severity,
    #[serde(rename = "type")]
    pub alert_type: AlertType,
    pub status: AlertStatus,
    pub title: String,
    pub description: Option<String>,
    /// What raised it: `rules`, `system`, `custom`, or the client's own name.
    pub source: String,
    pub correlation_id: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Derived from `acknowledged_at` (the seed's boolean).
    pub acknowledged: bool,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    /// Derived from `resolved_at` (the seed's boolean).
    pub resolved: bool,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolution_notes: Option<String>,
    pub dismissed_at: Option<DateTime<Utc>>,
    pub dismissed_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The rule that raised it; absent for custom alerts and rule-less system ones.
    pub rule_id: Option<String>,
    /// The value of the rule's grouping field: one open alert per rule and group.
    pub group_key: Option<String>,
    /// How often the rule fired for this group while the alert was open.
    pub occurrences: i32,
    /// When the first and the latest firing's event happened.
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, organization_id, severity, type, status, title, description, source, \
    correlation_id, metadata, acknowledged, acknowledged_at, acknowledged_by, resolved, resolved_at, \
    resolved_by, resolution_notes, dismissed_at, dismissed_by, created_at, updated_at, rule_id, \
    group_key, occurrences, first_seen_at, last_seen_at";

fn alert(row: &Row) -> Result<Alert, DbError> {
    Ok(Alert {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        severity: row.try_get("severity")?,
        alert_type: row.try_get("type")?,
        status: row.try_get("status")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        source: row.try_get("source")?,
        correlation_id: row.try_get("correlation_id")?,
        metadata: row.try_get::<_, Json<Value>>("metadata")?.0,
        acknowledged: row.try_get("acknowledged")?,
        acknowledged_at: row.try_get("acknowledged_at")?,
        acknowledged_by: row.try_get("acknowledged_by")?,
        resolved: row.try_get("resolved")?,
        resolved_at: row.try_get("resolved_at")?,
        resolved_by: row.try_get("resolved_by")?,
        resolution_notes: row.try_get("resolution_notes")?,
        dismissed_at: row.try_get("dismissed_at")?,
        dismissed_by: row.try_get("dismissed_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        rule_id: row.try_get("rule_id")?,
        group_key: row.try_get("group_key")?,
        occurrences: row.try_get("occurrences")?,
        first_seen_at: row.try_get("first_seen_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
    })
}

/// An alert raised without a rule: a client's custom alert, or a one-off
/// system alert. Nothing deduplicates it.
pub struct NewAlert<'a> {
    pub organization_id: &'a str,
    pub severity: Severity,
    pub alert_type: AlertType,
    pub title: &'a str,
    pub description: Option<&'a str>,
    pub source: &'a str,
    pub correlation_id: Option<&'a str>,
    pub metadata: &'a Value,
}

pub async fn insert(client: &impl GenericClient, new: &NewAlert<'_>) -> Result<Alert, DbError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO alerts (organization_id, severity, type, title, description, source, \
                   correlation_id, metadata) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
            ),
            &[
                &new.organization_id,
                &new.severity.as_str(),
                &new.alert_type.as_str(),
                &new.title,
                &new.description,
                &new.source,
                &new.correlation_id,
                &Json(new.metadata),
            ],
        )
        .await?;
    alert(&row)
}

/// A rule fired for a group: what [`raise`] records.
#[derive(Debug, Clone)]
pub struct Raised {
    pub organization_id: String,
    pub rule_id: String,
    /// The grouping field's value (empty for a rule without grouping).
    pub group_key: String,
    pub severity: Severity,
    pub alert_type: AlertType,
    pub title: String,
    pub description: Option<String>,
    pub source: String,
    pub correlation_id: Option<String>,
    /// Kept from the firing that created the alert; later firings only count.
    pub metadata: Value,
    /// When the firing's event happened.
    pub seen_at: DateTime<Utc>,
    /// How many firings this stands for (a batch may fire a rule several
    /// times for one group); at least 1.
    pub occurrences: i32,
    /// After the group's last alert was resolved, firings are dropped this long.
    pub cooldown: Duration,
}

/// What [`raise`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Raise {
    /// No open alert for the rule and group: a new active one.
    Created(Alert),
    /// The open alert counted the firing; `escalated` when its severity rose.
    Updated { alert: Alert, escalated: bool },
    /// The group's last alert was resolved less than the cooldown ago: nothing written.
    Suppressed,
}

/// How many times [`raise_all`] retries the firings that lost a race to a
/// concurrent creation before it settles for not knowing their previous
/// severity.
const STRICT_RAISE_ATTEMPTS: usize = 3;

/// [`raise_all`]'s statement, built once so that it is prepared once per
/// connection. One statement for every firing of a batch: raised one
/// statement each, the firings of the ingest bench's events (about 18,000
/// in one run) cost a sixth of ingest's throughput.
static RAISE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH firing AS MATERIALIZED ( \
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::jsonb[], $11::int4[], \
             $12::timestamptz[], $13::float8[]) \
           WITH ORDINALITY AS f(organization_id, rule_id, group_key, severity, type, title, \
             description, source, correlation_id, metadata, occurrences, seen_at, cooldown, ord)), \
         prior AS MATERIALIZED ( \
           SELECT f.ord, a.id, a.severity FROM firing f JOIN alerts a \
             ON a.organization_id = f.organization_id AND a.rule_id = f.rule_id \
             AND a.group_key = f.group_key \
           WHERE a.status IN ('active', 'acknowledged') \
           ORDER BY f.ord \
           FOR UPDATE OF a), \
         cooling AS MATERIALIZED ( \
           SELECT f.ord FROM firing f \
           WHERE EXISTS (SELECT 1 FROM alerts a \
             WHERE a.organization_id = f.organization_id AND a.rule_id = f.rule_id \
               AND a.group_key = f.group_key AND a.status = 'resolved' \
               AND a.resolved_at > now() - make_interval(secs => f.cooldown))), \
         upserted AS ( \
           INSERT INTO alerts (organization_id, rule_id, group_key, severity, type, title, description, \
             source, correlation_id, metadata, occurrences, first_seen_at, last_seen_at) \
           SELECT organization_id, rule_id, group_key, severity, type, title, description, source, \
             correlation_id, metadata, occurrences, seen_at, seen_at \
           FROM firing \
           WHERE ord IN (SELECT ord FROM prior) OR ord NOT IN (SELECT ord FROM cooling) \
           ORDER BY ord \
           ON CONFLICT (organization_id, rule_id, group_key) \
             WHERE rule_id IS NOT NULL AND status IN ('active', 'acknowledged') \
           DO UPDATE SET occurrences = alerts.occurrences + EXCLUDED.occurrences, \
             first_seen_at = least(alerts.first_seen_at, EXCLUDED.first_seen_at), \
             last_seen_at = greatest(alerts.last_seen_at, EXCLUDED.last_seen_at), \
             severity = CASE WHEN array_position($14::text[], EXCLUDED.severity::text) \
                                > array_position($14::text[], alerts.severity::text) \
                        THEN EXCLUDED.severity ELSE alerts.severity END, \
             updated_at = now() \
           WHERE alerts.id IN (SELECT id FROM prior) OR $15 \
           RETURNING {COLUMNS}, xmax = 0 AS inserted) \
         SELECT f.ord, upserted.*, prior.severity AS previous_severity, \
           cooling.ord IS NOT NULL AS cooling \
         FROM firing f \
         LEFT JOIN upserted ON upserted.organization_id = f.organization_id \
           AND upserted.rule_id = f.rule_id AND upserted.group_key = f.group_key \
         LEFT JOIN prior ON prior.ord = f.ord \
         LEFT JOIN cooling ON cooling.ord = f.ord \
         ORDER BY f.ord"
    )
});

/// Records a rule's firing for a group: [`raise_all`] for one firing.
pub async fn raise(
    client: &impl GenericClient,
    statements: Statements<'_>,
    raised: &Raised,
) -> Result<Raise, DbError> {
    let mut outcomes = raise_all(client, statements, std::slice::from_ref(raised)).await?;
    Ok(outcomes.pop().expect("one outcome per firing"))
}

/// Records rules' firings, each for its group: counts it on the open alert
/// of that rule and group (keeping the higher severity), or drops it within
/// the cooldown after the group's last resolution, or creates a new active
/// alert. Returns what became of each firing, in order. No two firings may
/// share an organization, rule and group (fold them first: see
/// [`Raised::occurrences`]).
///
/// One statement decides for all of them, so concurrent callers on any
/// instance agree: the open alerts are locked (`FOR UPDATE`, in the firings'
/// order) as they are read, so the severity each had before is exact, and the
/// upsert goes through the partial unique index `alerts_open_rule_group_idx`,
/// so two callers never create two open alerts for a group. An update applies
/// only to an alert that was read and locked: when a concurrent caller created
/// a group's open alert after this statement's snapshot, nothing is written
/// for that firing and it is sent again (under READ COMMITTED the new
/// snapshot sees that alert). After [`STRICT_RAISE_ATTEMPTS`] such losses the
/// update applies anyway and reports no escalation. The cooldown is read from
/// the same snapshot: a firing that races the resolution of its group's alert
/// creates a new alert rather than being dropped.
#[tracing::instrument(skip_all, fields(firings = raised.len()))]
pub async fn raise_all(
    client: &impl GenericClient,
    statements: Statements<'_>,
    raised: &[Raised],
) -> Result<Vec<Raise>, DbError> {
    debug_assert!(
        {
            let mut keys: Vec<_> = raised
                .iter()
                .map(|r| (&r.organization_id, &r.rule_id, &r.group_key))
                .collect();
            keys.sort_unstable();
            keys.windows(2).all(|pair| pair[0] != pair[1])
        },
        "firings of one group must be folded into one"
    );
    let ranks = severity_ranks();
    let mut outcomes: Vec<Option<Raise>> = vec![None; raised.len()];
    // Indexes (into `raised`) of the firings still to record.
    let mut pending: Vec<usize> = (0..raised.len()).collect();
    let mut attempt = 0;
    while !pending.is_empty() {
        attempt += 1;
        let lenient = attempt > STRICT_RAISE_ATTEMPTS;
        let firings = FiringColumns::new(pending.iter().map(|&index| &raised[index]));
        let mut params = firings.params();
        params.push((&ranks, Type::TEXT_ARRAY));
        params.push((&lenient, Type::BOOL));
        let rows = statements.query(client, RAISE.as_str(), &params).await?;
        if rows.len() != pending.len() {
            return Err(DbError::Decode(format!(
                "{} rows answered {} alert firings",
                rows.len(),
                pending.len()
            )));
        }
        let mut lost = Vec::new();
        for (row, index) in rows.iter().zip(&pending) {
            let inserted: Option<bool> = row.try_get("inserted")?;
            let outcome = match inserted {
                Some(true) => Raise::Created(alert(row)?),
                Some(false) => {
                    let alert = alert(row)?;
                    let previous: Option<Severity> = row.try_get("previous_severity")?;
                    let escalated = previous.is_some_and(|previous| alert.severity > previous);
                    Raise::Updated { alert, escalated }
                }
                // Nothing proposed (the cooldown): the only way a lenient attempt writes nothing.
                None if lenient || row.try_get::<_, bool>("cooling")? => Raise::Suppressed,
                None => {
                    lost.push(*index);
                    continue;
                }
            };
            outcomes[*index] = Some(outcome);
        }
        if !lost.is_empty() {
            tracing::debug!(
                attempt,
                firings = lost.len(),
                "Lost races to concurrent alert creations; sending those firings again"
            );
        }
        pending = lost;
    }
    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every firing recorded"))
        .collect())
}

/// The firings of one [`raise_all`] statement, a column each.
#[derive(Default)]
struct FiringColumns<'a> {
    organization_ids: Vec<&'a str>,
    rule_ids: Vec<&'a str>,
    group_keys: Vec<&'a str>,
    severities: Vec<&'static str>,
    types: Vec<&'static str>,
    titles: Vec<&'a str>,
    descriptions: Vec<Option<&'a str>>,
    sources: Vec<&'a str>,
    correlation_ids: Vec<Option<&'a str>>,
    metadata: Vec<Json<&'a Value>>,
    occurrences: Vec<i32>,
    seen_at: Vec<DateTime<Utc>>,
    cooldowns: Vec<f64>,
}

impl<'a> FiringColumns<'a> {
    fn new(firings: impl Iterator<Item = &'a Raised>) -> Self {
        let mut columns = Self::default();
        for raised in firings {
            columns.organization_ids.push(&raised.organization_id);
            columns.rule_ids.push(&raised.rule_id);
            columns.group_keys.push(&raised.group_key);
            columns.severities.push(raised.severity.as_str());
            columns.types.push(raised.alert_type.as_str());
            columns.titles.push(&raised.title);
            columns.descriptions.push(raised.description.as_deref());
            columns.sources.push(&raised.source);
            columns
                .correlation_ids
                .push(raised.correlation_id.as_deref());
            columns.metadata.push(Json(&raised.metadata));
            columns.occurrences.push(raised.occurrences.max(1));
            columns.seen_at.push(raised.seen_at);
            columns.cooldowns.push(raised.cooldown.as_secs_f64());
        }
        columns
    }

    /// `$1` to `$13` of [`RAISE`].
    fn params(&self) -> Vec<TypedParam<'_>> {
        vec![
            (&self.organization_ids, Type::TEXT_ARRAY),
            (&self.rule_ids, Type::TEXT_ARRAY),
            (&self.group_keys, Type::TEXT_ARRAY),
            (&self.severities, Type::TEXT_ARRAY),
            (&self.types, Type::TEXT_ARRAY),
            (&self.titles, Type::TEXT_ARRAY),
            (&self.descriptions, Type::TEXT_ARRAY),
            (&self.sources, Type::TEXT_ARRAY),
            (&self.correlation_ids, Type::TEXT_ARRAY),
            (&self.metadata, Type::JSONB_ARRAY),
            (&self.occurrences, Type::INT4_ARRAY),
            (&self.seen_at, Type::TIMESTAMPTZ_ARRAY),
            (&self.cooldowns, Type::FLOAT8_ARRAY),
        ]
    }
}

/// Why a lifecycle step was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("no such alert")]
    NotFound,
    #[error("the alert is {current}; it cannot become {wanted}")]
    NotAllowed {
        current: AlertStatus,
        wanted: AlertStatus,
    },
    #[error(transparent)]
    Database(#[from] DbError),
}

/// Takes a lifecycle step in one conditional UPDATE, so two callers racing on
/// one alert cannot both succeed. When nothing matched, a second read tells an
/// unknown alert from one in the wrong status; statuses only move forward, so
/// a status that refused the step still refuses it at that read.
#[tracing::instrument(skip(client, transition), fields(to = %transition.target()))]
pub async fn transition(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
    transition: Transition<'_>,
) -> Result<Alert, TransitionError> {
    let (set, from, by, notes) = match transition {
        Transition::Acknowledge { by } => (
            "status = 'acknowledged', acknowledged_at = now(), acknowledged_by = $3",
            "('active')",
            by,
            None,
        ),
        Transition::Resolve { by, notes } => (
            "status = 'resolved', resolved_at = now(), resolved_by = $3, resolution_notes = $4",
            "('active', 'acknowledged')",
            by,
            Some(notes),
        ),
        Transition::Dismiss { by } => (
            "status = 'dismissed', dismissed_at = now(), dismissed_by = $3",
            "('active', 'acknowledged')",
            by,
            None,
        ),
    };
    let mut parameters: Vec<&(dyn ToSql + Sync)> = vec![&organization_id, &id, &by];
    if let Some(notes) = &notes {
        parameters.push(notes);
    }
    let row = client
        .query_opt(
            &format!(
                "UPDATE alerts SET {set}, updated_at = now() \
                 WHERE organization_id = $1 AND id = $2 AND status IN {from} RETURNING {COLUMNS}"
            ),
            &parameters,
        )
        .await
        .map_err(DbError::from)?;
    if let Some(row) = row {
        return Ok(alert(&row)?);
    }
    let current = client
        .query_opt(
            "SELECT status FROM alerts WHERE organization_id = $1 AND id = $2",
            &[&organization_id, &id],
        )
        .await
        .map_err(DbError::from)?;
    match current {
        Some(row) => Err(TransitionError::NotAllowed {
            current: row.try_get("status").map_err(DbError::from)?,
            wanted: transition.target(),
        }),
        None => Err(TransitionError::NotFound),
    }
}

pub async fn get(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
) -> Result<Option<Alert>, DbError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM alerts WHERE organization_id = $1 AND id = $2"),
            &[&organization_id, &id],
        )
        .await?;
    row.as_ref().map(alert).transpose()
}

/// Which alerts a listing returns. An empty list of values means any.
#[derive(Debug, Clone)]
pub struct AlertFilter {
    pub severities: Vec<Severity>,
    pub types: Vec<AlertType>,
    pub statuses: Vec<AlertStatus>,
    pub sources: Vec<String>,
    /// Created at or after (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Created before (exclusive).
    pub to: Option<DateTime<Utc>>,
    /// Continue after this `(created_at, id)`, newest first.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub alerts: Vec<Alert>,
    /// The `(created_at, id)` to continue after, when more alerts match.
    pub next: Option<(DateTime<Utc>, Uuid)>,
}

/// A page of the organization's alerts, newest first: `(created_at, id)`
/// descending and strictly after the cursor, so paging never repeats an alert
/// nor skips one that existed when the listing began.
pub async fn list(
    client: &impl GenericClient,
    organization_id: &str,
    filter: &AlertFilter,
) -> Result<Page, DbError> {
    let severities: Vec<&str> = filter.severities.iter().map(|s| s.as_str()).collect();
    let types = type_names(&filter.types);
    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    let (after_created, after_id) = filter.after.unzip();
    // One more than asked: whether it comes back says if there is a next page.
    let fetch = filter.limit + 1;
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM alerts \
                 WHERE organization_id = $1 \
                   AND (cardinality($2::text[]) = 0 OR severity = ANY($2)) \
                   AND (cardinality($3::text[]) = 0 OR type = ANY($3)) \
                   AND (cardinality($4::text[]) = 0 OR status = ANY($4)) \
                   AND (cardinality($5::text[]) = 0 OR source = ANY($5)) \
                   AND ($6::timestamptz IS NULL OR created_at >= $6) \
                   AND ($7::timestamptz IS NULL OR created_at < $7) \
                   AND ($8::timestamptz IS NULL OR (created_at, id) < ($8, $9::uuid)) \
                 ORDER BY created_at DESC, id DESC LIMIT $10"
            ),
            &[
                &organization_id,
                &severities,
                &types,
                &statuses,
                &filter.sources,
                &filter.from,
                &filter.to,
                &after_created,
                &after_id,
                &fetch,
            ],
        )
        .await?;
    let mut alerts = rows.iter().map(alert).collect::<Result<Vec<_>, _>>()?;
    let more = alerts.len() as i64 > filter.limit;
    alerts.truncate(filter.limit.max(0) as usize);
    let next = more
        .then(|| alerts.last().map(|last| (last.created_at, last.id)))
        .flatten();
    Ok(Page { alerts, next })
}

/// Alerts created on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DailyCount {
    pub date: NaiveDate,
    pub count: i64,
}

/// An organization's alerts counted several ways.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AlertStatistics {
    pub total: i64,
    /// Every status, zeros included.
    pub by_status: BTreeMap<String, i64>,
    /// Every severity, zeros included.
    pub by_severity: BTreeMap<String, i64>,
    /// Every type, zeros included.
    pub by_type: BTreeMap<String, i64>,
    /// The sources that have alerts.
    pub by_source: BTreeMap<String, i64>,
    /// Alerts created on each of the last 30 UTC days, today last, zeros included.
    pub daily_trend: Vec<DailyCount>,
}

/// How many days the trend covers, today included.
const TREND_DAYS: i32 = 30;

pub async fn statistics(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<AlertStatistics, DbError> {
    fn zeros(names: impl Iterator<Item = &'static str>) -> BTreeMap<String, i64> {
        names.map(|name| (name.to_owned(), 0)).collect()
    }
    let mut statistics = AlertStatistics {
        total: 0,
        by_status: zeros(AlertStatus::ALL.iter().map(|s| s.as_str())),
        by_severity: zeros(Severity::ALL.iter().map(|s| s.as_str())),
        by_type: zeros(AlertType::ALL.iter().map(|t| t.as_str())),
        by_source: BTreeMap::new(),
        daily_trend: Vec::new(),
    };
    // One scan for every breakdown; the columns are NOT NULL, so the one that
    // is set tells which grouping a row belongs to (none: the total).
    let rows = client
        .query(
            "SELECT status, severity, type, source, count(*) AS count FROM alerts \
             WHERE organization_id = $1 \
             GROUP BY GROUPING SETS ((status), (severity), (type), (source), ())",
            &[&organization_id],
        )
        .await?;
    for row in &rows {
        let count: i64 = row.try_get("count")?;
        let key = |column: &str| row.try_get::<_, Option<String>>(column);
        if let Some(status) = key("status")? {
            statistics.by_status.insert(status, count);
        } else if let Some(severity) = key("severity")? {
            statistics.by_severity.insert(severity, count);
        } else if let Some(alert_type) = key("type")? {
            statistics.by_type.insert(alert_type, count);
        } else if let Some(source) = key("source")? {
            statistics.by_source.insert(source, count);
        } else {
            statistics.total = count;
        }
    }
    // Days are UTC days, and "today" is the database's, like created_at.
    let rows = client
        .query(
            "SELECT day::date AS date, count(a.id) AS count \
             FROM generate_series((now() AT TIME ZONE 'UTC')::date - ($2::int - 1), \
                                  (now() AT TIME ZONE 'UTC')::date, interval '1 day') AS day \
             LEFT JOIN alerts a ON a.organization_id = $1 \
               AND a.created_at >= day AT TIME ZONE 'UTC' \
               AND a.created_at < (day + interval '1 day') AT TIME ZONE 'UTC' \
             GROUP BY day ORDER BY day",
            &[&organization_id, &TREND_DAYS],
        )
        .await?;
    statistics.daily_trend = rows
        .iter()
        .map(|row| {
            Ok(DailyCount {
                date: row.try_get("date")?,
                count: row.try_get("count")?,
            })
        })
        .collect::<Result<_, DbError>>()?;
    Ok(statistics)
}

/// Why subscribers hear of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    New,
    /// An open alert's severity rose.
    Escalated,
}

impl Notice {
    /// The `event` of the delivered payload.
    pub fn event(self) -> &'static str {
        match self {
            Notice::New => "alert.created",
            Notice::Escalated => "alert.escalated",
        }
    }
}

/// Queues one delivery of `{"event", "alert"}` to each destination subscribed
/// to this alert: [`notify_all`] for one notice.
pub async fn notify_subscribers(
    client: &impl GenericClient,
    alert: &Alert,
    notice: Notice,
) -> Result<usize, DbError> {
    notify_all(client, &[(alert, notice)]).await
}

/// A subscription whose destination can be delivered to.
struct Subscriber {
    organization_id: String,
    destination_id: i64,
    min_severity: Severity,
    /// Empty: every type.
    types: Vec<String>,
    max_retries: i32,
}

impl Subscriber {
    fn hears_of(&self, alert: &Alert) -> bool {
        self.organization_id == alert.organization_id
            && alert.severity >= self.min_severity
            && (self.types.is_empty() || self.types.iter().any(|t| t == alert.alert_type.as_str()))
    }
}

/// Queues, for each notice, one delivery of `{"event", "alert"}` to each
/// destination subscribed to its alert (enabled subscription, destination
/// neither disabled nor deleted, severity at least the subscription's
/// minimum, type among its types or any). The idempotency key names the
/// alert, the event and the severity, so a repeated call (a retried batch,
/// two workers racing on an escalation) queues nothing twice. Returns how
/// many deliveries the notices have.
///
/// The subscriptions of the notices' organizations are read once, whatever
/// the number of notices: a batch of rule firings creating an alert per
/// principal read them once per alert before.
#[tracing::instrument(skip_all, fields(notices = notices.len()))]
pub async fn notify_all(
    client: &impl GenericClient,
    notices: &[(&Alert, Notice)],
) -> Result<usize, DbError> {
    if notices.is_empty() {
        return Ok(0);
    }
    let mut organizations: Vec<&str> = notices
        .iter()
        .map(|(alert, _)| alert.organization_id.as_str())
        .collect();
    organizations.sort_unstable();
    organizations.dedup();
    let rows = client
        .query_typed(
            "SELECT s.organization_id, s.destination_id, s.min_severity, s.types, d.settings \
             FROM alert_subscriptions s \
             JOIN delivery_destinations d ON d.id = s.destination_id AND d.organization_id = s.organization_id \
             WHERE s.organization_id = ANY($1) AND s.enabled AND NOT d.disabled AND d.deleted_at IS NULL \
             ORDER BY s.destination_id",
            &[(&organizations, Type::TEXT_ARRAY)],
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let subscribers = rows
        .iter()
        .map(|row| {
            let settings = row.try_get::<_, Json<Value>>("settings")?.0;
            let settings = DeliverySettings::parse(Some(&settings)).unwrap_or_default();
            Ok(Subscriber {
                organization_id: row.try_get("organization_id")?,
                destination_id: row.try_get("destination_id")?,
                min_severity: row.try_get("min_severity")?,
                types: row.try_get("types")?,
                max_retries: settings.retry_waits().len() as i32,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    // The enqueues are sent together: the connection pipelines them.
    let enqueues = notices.iter().filter_map(|&(alert, notice)| {
        let (destination_ids, max_retries): (Vec<i64>, Vec<i32>) = subscribers
            .iter()
            .filter(|subscriber| subscriber.hears_of(alert))
            .map(|subscriber| (subscriber.destination_id, subscriber.max_retries))
            .unzip();
        (!destination_ids.is_empty()).then_some(async move {
            let payload = json!({"event": notice.event(), "alert": alert});
            let idempotency_key =
                format!("alert:{}:{}:{}", alert.id, notice.event(), alert.severity);
            let correlation_id = alert.id.to_string();
            let queued = deliveries::enqueue(
                client,
                &NewDeliveries {
                    organization_id: &alert.organization_id,
                    destination_ids: &destination_ids,
                    payload: &payload,
                    priority: 0,
                    scheduled_at: None,
                    idempotency_key: Some(&idempotency_key),
                    correlation_id: Some(&correlation_id),
                    max_retries: &max_retries,
                },
            )
            .await?;
            Ok::<_, DbError>(queued.len())
        })
    });
    Ok(futures_util::future::try_join_all(enqueues)
        .await?
        .into_iter()
        .sum())
}

/// Deletes the resolved or dismissed alerts, of every organization, closed
/// before `cutoff`; returns how many. One statement across organizations,
/// without row locks taken first, so that Citus runs it on every shard at
/// once (`docs/scaling.md`).
pub async fn delete_closed_before(
    client: &impl GenericClient,
    cutoff: DateTime<Utc>,
) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "DELETE FROM alerts \
             WHERE status IN ('resolved', 'dismissed') AND coalesce(resolved_at, dismissed_at) < $1",
            &[&cutoff],
        )
        .await?)
}

/// Which of an organization's alerts a destination hears of.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Subscription {
    pub id: i64,
    pub destination_id: i64,
    /// Alerts at least this severe.
    pub min_severity: Severity,
    /// Alerts of these types; empty: every type.
    pub types: Vec<AlertType>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
}

const SUBSCRIPTION_COLUMNS: &str =
    "id, destination_id, min_severity, types, enabled, created_at, created_by";

fn subscription(row: &Row) -> Result<Subscription, DbError> {
    Ok(Subscription {
        id: row.try_get("id")?,
        destination_id: row.try_get("destination_id")?,
        min_severity: row.try_get("min_severity")?,
        types: row.try_get("types")?,
        enabled: row.try_get("enabled")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

fn type_names(types: &[AlertType]) -> Vec<&'static str> {
    types.iter().map(|t| t.as_str()).collect()
}

pub struct NewSubscription<'a> {
    pub organization_id: &'a str,
    pub destination_id: i64,
    pub min_severity: Severity,
    pub types: &'a [AlertType],
    pub enabled: bool,
    pub created_by: &'a str,
}

/// Subscribes a destination; `None` when it has a subscription already (one
/// per destination).
pub async fn insert_subscription(
    client: &impl GenericClient,
    new: &NewSubscription<'_>,
) -> Result<Option<Subscription>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "INSERT INTO alert_subscriptions (organization_id, destination_id, min_severity, types, enabled, \
                   created_by) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (organization_id, destination_id) DO NOTHING RETURNING {SUBSCRIPTION_COLUMNS}"
            ),
            &[
                &new.organization_id,
                &new.destination_id,
                &new.min_severity.as_str(),
                &type_names(new.types),
                &new.enabled,
                &new.created_by,
            ],
        )
        .await?;
    row.as_ref().map(subscription).transpose()
}

pub async fn list_subscriptions(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Vec<Subscription>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM alert_subscriptions WHERE organization_id = $1 ORDER BY id"
            ),
            &[&organization_id],
        )
        .await?;
    rows.iter().map(subscription).collect()
}

pub async fn get_subscription(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<Option<Subscription>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM alert_subscriptions WHERE organization_id = $1 AND id = $2"
            ),
            &[&organization_id, &id],
        )
        .await?;
    row.as_ref().map(subscription).transpose()
}

/// The fields a change sets; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionChange {
    pub min_severity: Option<Severity>,
    pub types: Option<Vec<AlertType>>,
    pub enabled: Option<bool>,
}

/// Applies a change; `None` when the organization has no such subscription.
pub async fn update_subscription(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
    change: &SubscriptionChange,
) -> Result<Option<Subscription>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE alert_subscriptions SET min_severity = coalesce($3, min_severity), \
                   types = coalesce($4::text[], types), enabled = coalesce($5, enabled) \
                 WHERE organization_id = $1 AND id = $2 RETURNING {SUBSCRIPTION_COLUMNS}"
            ),
            &[
                &organization_id,
                &id,
                &change.min_severity.map(Severity::as_str),
                &change.types.as_deref().map(type_names),
                &change.enabled,
            ],
        )
        .await?;
    row.as_ref().map(subscription).transpose()
}

/// Whether the organization had such a subscription (it has not any more).
pub async fn delete_subscription(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<bool, DbError> {
    Ok(client
        .execute(
            "DELETE FROM alert_subscriptions WHERE organization_id = $1 AND id = $2",
            &[&organization_id, &id],
        )
        .await?
        > 0)
}
