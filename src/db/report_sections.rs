//! What the sections of a report read: `audit_log`, `gdpr_operations` and
//! `alerts` over a report's organization and period, aggregated by PostgreSQL
//! (`GROUP BY`) and read through portals, a bounded number of rows at a time,
//! so a worker only ever holds one fetch whatever the size of the period.
//!
//! Every query runs in the caller's transaction: a report reads all its
//! sections from one snapshot.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{Portal, Row, Transaction};

use super::DbError;
use crate::reports::criteria::EventFilters;

/// Rows fetched from a portal at a time.
const FETCH_ROWS: i32 = 1000;

/// The event filters as SQL, on parameters `$1` to `$10` (see
/// [`event_parameters`]).
const EVENT_SCOPE: &str = "organization_id = $1 AND \"timestamp\" >= $2 AND \"timestamp\" < $3 \
    AND ($4::text IS NULL OR action = $4) AND ($5::text IS NULL OR action LIKE $5) \
    AND ($6::text IS NULL OR principal_id = $6) AND ($7::text IS NULL OR target_resource_type = $7) \
    AND ($8::text IS NULL OR target_resource_id = $8) AND ($9::text IS NULL OR status = $9) \
    AND ($10::text IS NULL OR data_classification = $10)";

/// What `failed_access` counts as denied: the action says so.
const DENIED: &str = "(action LIKE '%denied%' OR action LIKE '%unauthorized%')";

/// The events `failed_access` lists: failed, or denied.
fn failed() -> String {
    format!("{EVENT_SCOPE} AND (status = 'failure' OR {DENIED})")
}

/// The events `phi_access` lists.
fn phi() -> String {
    format!("{EVENT_SCOPE} AND data_classification = 'PHI'")
}

/// An event listing's columns, in the order its section names them.
const EVENT_SELECT: &str =
    "\"timestamp\", id, principal_id, action, status, target_resource_type, \
    target_resource_id, outcome_description, correlation_id";

/// The alerts of the period, on parameters `$1` to `$3`.
const ALERTS_IN: &str =
    "FROM alerts WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3";

/// What a report reads: its organization, period and filters.
pub struct Scope<'a> {
    pub organization_id: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub filters: &'a EventFilters,
}

/// The rows of one section. Each returns its columns in the order given,
/// which is the order the section's columns are named in.
#[derive(Debug, Clone, Copy)]
pub enum SectionQuery {
    /// Per action: action, events, success, failure, attempt, principals.
    EventsByAction,
    /// Per principal: principal_id, events, success, failure, actions,
    /// first_seen, last_seen.
    EventsByPrincipal,
    /// Per resource type: target_resource_type, events, resources, principals.
    EventsByResourceType,
    /// Failed or denied access per principal: principal_id, failures,
    /// denied, last_seen.
    FailuresByPrincipal,
    /// Failed or denied events, as an event listing.
    Failures,
    /// PHI access per principal: principal_id, events, resources,
    /// first_seen, last_seen.
    PhiByPrincipal,
    /// PHI events, as an event listing.
    PhiEvents,
    /// GDPR operations started in the period: started_at, operation_id, kind,
    /// status, strategy, subject_commitment, requested_by, completed_at,
    /// result.
    GdprOperations,
    /// `gdpr.*` events, as an event listing.
    GdprEvents,
    /// Alerts per value of one column: that column, alerts, occurrences.
    AlertsBy(AlertColumn),
    /// Alerts raised in the period: created_at, alert_id, severity, type,
    /// status, title, source, occurrences, acknowledged_at, resolved_at.
    Alerts,
}

/// The columns alerts are counted by.
#[derive(Debug, Clone, Copy)]
pub enum AlertColumn {
    Severity,
    Type,
    Status,
}

impl AlertColumn {
    fn name(self) -> &'static str {
        match self {
            AlertColumn::Severity => "severity",
            AlertColumn::Type => "type",
            AlertColumn::Status => "status",
        }
    }
}

impl SectionQuery {
    fn sql(self) -> String {
        match self {
            SectionQuery::EventsByAction => format!(
                "SELECT action, count(*), count(*) FILTER (WHERE status = 'success'), \
                   count(*) FILTER (WHERE status = 'failure'), count(*) FILTER (WHERE status = 'attempt'), \
                   count(DISTINCT principal_id) \
                 FROM audit_log WHERE {EVENT_SCOPE} GROUP BY action ORDER BY count(*) DESC, action"
            ),
            SectionQuery::EventsByPrincipal => format!(
                "SELECT principal_id, count(*), count(*) FILTER (WHERE status = 'success'), \
                   count(*) FILTER (WHERE status = 'failure'), count(DISTINCT action), \
                   min(\"timestamp\"), max(\"timestamp\") \
                 FROM audit_log WHERE {EVENT_SCOPE} GROUP BY principal_id ORDER BY count(*) DESC, principal_id"
            ),
            SectionQuery::EventsByResourceType => format!(
                "SELECT target_resource_type, count(*), count(DISTINCT target_resource_id), \
                   count(DISTINCT principal_id) \
                 FROM audit_log WHERE {EVENT_SCOPE} \
                 GROUP BY target_resource_type ORDER BY count(*) DESC, target_resource_type NULLS LAST"
            ),
            SectionQuery::FailuresByPrincipal => format!(
                "SELECT principal_id, count(*) FILTER (WHERE status = 'failure'), \
                   count(*) FILTER (WHERE {DENIED}), max(\"timestamp\") \
                 FROM audit_log WHERE {} GROUP BY principal_id ORDER BY count(*) DESC, principal_id",
                failed()
            ),
            SectionQuery::Failures => format!(
                "SELECT {EVENT_SELECT} FROM audit_log WHERE {} ORDER BY \"timestamp\", id",
                failed()
            ),
            SectionQuery::PhiByPrincipal => format!(
                "SELECT principal_id, count(*), count(DISTINCT target_resource_id), \
                   min(\"timestamp\"), max(\"timestamp\") \
                 FROM audit_log WHERE {} GROUP BY principal_id ORDER BY count(*) DESC, principal_id",
                phi()
            ),
            SectionQuery::PhiEvents => format!(
                "SELECT {EVENT_SELECT} FROM audit_log WHERE {} ORDER BY \"timestamp\", id",
                phi()
            ),
                        SectionQuery::GdprOperations => {
                "SELECT started_at, id::text, kind, status, strategy, subject_commitment, requested_by, \
                   completed_at, result \
                 FROM gdpr_operations WHERE organization_id = $1 AND started_at >= $2 AND started_at < $3 \
                 ORDER BY started_at, id"
                    .to_owned()
            }
            SectionQuery::GdprEvents => format!(
                "SELECT {EVENT_SELECT} FROM audit_log WHERE {EVENT_SCOPE} AND action LIKE 'gdpr.%' \
                 ORDER BY \"timestamp\", id"
            ),
            SectionQuery::AlertsBy(column) => {
                let column = column.name();
                format!(
                    "SELECT {column}, count(*), sum(occurrences) {ALERTS_IN} \
                     GROUP BY {column} ORDER BY count(*) DESC, {column}"
                )
            }
            SectionQuery::Alerts => format!(
                "SELECT created_at, id::text, severity, type, status, title, source, occurrences, \
                   acknowledged_at, resolved_at {ALERTS_IN} ORDER BY created_at, id"
            ),
        }
    }

    /// Whether the query applies the event filters (`$1` to `$10`) rather
    /// than the period alone (`$1` to `$3`).
    fn reads_events(self) -> bool {
        !matches!(
            self,
            SectionQuery::GdprOperations | SectionQuery::AlertsBy(_) | SectionQuery::Alerts
        )
    }
}

/// The figures of an access summary over the whole period.
pub struct AccessTotals {
    pub events: i64,
    pub success: i64,
    pub failure: i64,
    pub attempt: i64,
    /// Distinct principals.
    pub principals: i64,
}

/// Counts the events in `scope` by status, and their principals.
pub async fn access_totals(
    transaction: &Transaction<'_>,
    scope: &Scope<'_>,
) -> Result<AccessTotals, DbError> {
    let (action, action_like) = scope.filters.action_parameters();
    let row = transaction
        .query_one(
            &format!(
                "SELECT count(*) AS events, \
                   count(*) FILTER (WHERE status = 'success') AS success, \
                   count(*) FILTER (WHERE status = 'failure') AS failure, \
                   count(*) FILTER (WHERE status = 'attempt') AS attempt, \
                   count(DISTINCT principal_id) AS principals \
                 FROM audit_log WHERE {EVENT_SCOPE}"
            ),
            &event_parameters(scope, &action, &action_like),
        )
        .await?;
    Ok(AccessTotals {
        events: row.get("events"),
        success: row.get("success"),
        failure: row.get("failure"),
        attempt: row.get("attempt"),
        principals: row.get("principals"),
    })
}

/// The parameters of [`EVENT_SCOPE`]; `action` and `action_like` are
/// [`EventFilters::action_parameters`], kept by the caller for as long as the
/// parameters are used.
fn event_parameters<'a>(
    scope: &'a Scope<'_>,
    action: &'a Option<String>,
    action_like: &'a Option<String>,
) -> [&'a (dyn ToSql + Sync); 10] {
    let filters = scope.filters;
    [
        &scope.organization_id,
        &scope.from,
        &scope.to,
        action,
        action_like,
        &filters.principal_id,
        &filters.target_resource_type,
        &filters.target_resource_id,
        &filters.status,
        &filters.data_classification,
    ]
}

/// A section's rows as they are fetched.
pub struct SectionRows<'a, 't> {
    transaction: &'a Transaction<'t>,
    portal: Portal,
}

/// Starts reading `query` over `scope` in `transaction`.
pub async fn open<'a, 't>(
    transaction: &'a Transaction<'t>,
    query: SectionQuery,
    scope: &Scope<'_>,
) -> Result<SectionRows<'a, 't>, DbError> {
    let statement = transaction.prepare(&query.sql()).await?;
    let portal = if query.reads_events() {
        let (action, action_like) = scope.filters.action_parameters();
        let parameters = event_parameters(scope, &action, &action_like);
        transaction.bind(&statement, &parameters).await?
    } else {
        let period: [&(dyn ToSql + Sync); 3] = [&scope.organization_id, &scope.from, &scope.to];
        transaction.bind(&statement, &period).await?
    };
    Ok(SectionRows {
        transaction,
        portal,
    })
}

impl SectionRows<'_, '_> {
    /// The next rows, at most [`FETCH_ROWS`], each as a value per column;
    /// none once every row was read.
    pub async fn next(&mut self) -> Result<Vec<Vec<Value>>, DbError> {
        let rows = self
            .transaction
            .query_portal(&self.portal, FETCH_ROWS)
            .await?;
        rows.iter().map(cells).collect()
    }
}

/// A row as JSON values, by the column types these queries return.
fn cells(row: &Row) -> Result<Vec<Value>, DbError> {
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            // Text for every other type these queries return (varchar, text).
            let value = match *column.type_() {
                Type::INT8 => json!(row.try_get::<_, Option<i64>>(i)?),
                Type::INT4 => json!(row.try_get::<_, Option<i32>>(i)?),
                Type::TIMESTAMPTZ => json!(row
                    .try_get::<_, Option<DateTime<Utc>>>(i)?
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))),
                Type::JSONB | Type::JSON => row
                    .try_get::<_, Option<Json<Value>>>(i)?
                    .map(|Json(value)| value)
                    .unwrap_or(Value::Null),
                _ => json!(row.try_get::<_, Option<String>>(i)?),
            };
            Ok(value)
        })
        .collect()
}
