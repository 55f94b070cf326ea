//! The sections of each report type, read from one REPEATABLE READ snapshot
//! through portals (a bounded number of rows fetched at a time) and written as
//! they arrive. Aggregates are computed by PostgreSQL (`GROUP BY`), so the
//! worker only ever holds one fetch of rows.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{Row, Transaction};

use super::criteria::EventFilters;
use super::output::OutputSink;
use super::{ReportError, ReportType};
use crate::integrity::verify::Report as Verification;

/// Rows fetched from a portal at a time.
const FETCH_ROWS: i32 = 1000;

/// The event filters as SQL, on parameters `$1` to `$10`.
const EVENT_SCOPE: &str = "organization_id = $1 AND \"timestamp\" >= $2 AND \"timestamp\" < $3 \
    AND ($4::text IS NULL OR action = $4) AND ($5::text IS NULL OR action LIKE $5) \
    AND ($6::text IS NULL OR principal_id = $6) AND ($7::text IS NULL OR target_resource_type = $7) \
    AND ($8::text IS NULL OR target_resource_id = $8) AND ($9::text IS NULL OR status = $9) \
    AND ($10::text IS NULL OR data_classification = $10)";

/// What `failed_access` counts as denied: the action says so.
const DENIED: &str = "(action LIKE '%denied%' OR action LIKE '%unauthorized%')";

/// The columns of an event listing section.
const EVENT_COLUMNS: [&str; 9] = [
    "timestamp",
    "event_id",
    "principal_id",
    "action",
    "status",
    "target_resource_type",
    "target_resource_id",
    "outcome_description",
    "correlation_id",
];
const EVENT_SELECT: &str =
    "\"timestamp\", id, principal_id, action, status, target_resource_type, \
    target_resource_id, outcome_description, correlation_id";

/// What a report reads: its organization, period and filters.
pub struct Scope<'a> {
    pub organization_id: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub filters: &'a EventFilters,
}

/// Writes the sections of `report_type`; returns the records it processed
/// (events, operations or alerts) and its summary figures.
pub async fn sections(
    transaction: &Transaction<'_>,
    sink: &mut OutputSink,
    report_type: ReportType,
    scope: &Scope<'_>,
    verification: &Verification,
) -> Result<(u64, Map<String, Value>), ReportError> {
    let (action, action_like) = scope.filters.action_parameters();
    let filters = scope.filters;
    let event_parameters: [&(dyn ToSql + Sync); 10] = [
        &scope.organization_id,
        &scope.from,
        &scope.to,
        &action,
        &action_like,
        &filters.principal_id,
        &filters.target_resource_type,
        &filters.target_resource_id,
        &filters.status,
        &filters.data_classification,
    ];
    let period: [&(dyn ToSql + Sync); 3] = [&scope.organization_id, &scope.from, &scope.to];
    let mut summary = Map::new();
    let records = match report_type {
        ReportType::AccessSummary => {
            let totals = transaction
                .query_one(
                    &format!(
                        "SELECT count(*) AS events, \
                           count(*) FILTER (WHERE status = 'success') AS success, \
                           count(*) FILTER (WHERE status = 'failure') AS failure, \
                           count(*) FILTER (WHERE status = 'attempt') AS attempt, \
                           count(DISTINCT principal_id) AS principals \
                         FROM audit_log WHERE {EVENT_SCOPE}"
                    ),
                    &event_parameters,
                )
                .await?;
            for column in ["events", "success", "failure", "attempt", "principals"] {
                summary.insert(column.into(), json!(totals.get::<_, i64>(column)));
            }
            section(
                transaction,
                sink,
                ("by_action", "Events by action"),
                &["action", "events", "success", "failure", "attempt", "principals"],
                &format!(
                    "SELECT action, count(*), count(*) FILTER (WHERE status = 'success'), \
                       count(*) FILTER (WHERE status = 'failure'), count(*) FILTER (WHERE status = 'attempt'), \
                       count(DISTINCT principal_id) \
                     FROM audit_log WHERE {EVENT_SCOPE} GROUP BY action ORDER BY count(*) DESC, action"
                ),
                &event_parameters,
            )
            .await?;
            section(
                transaction,
                sink,
                ("by_principal", "Events by principal"),
                &["principal_id", "events", "success", "failure", "actions", "first_seen", "last_seen"],
                &format!(
                    "SELECT principal_id, count(*), count(*) FILTER (WHERE status = 'success'), \
                       count(*) FILTER (WHERE status = 'failure'), count(DISTINCT action), \
                       min(\"timestamp\"), max(\"timestamp\") \
                     FROM audit_log WHERE {EVENT_SCOPE} GROUP BY principal_id ORDER BY count(*) DESC, principal_id"
                ),
                &event_parameters,
            )
            .await?;
            section(
                transaction,
                sink,
                ("by_resource_type", "Events by resource type"),
                &["target_resource_type", "events", "resources", "principals"],
                &format!(
                    "SELECT target_resource_type, count(*), count(DISTINCT target_resource_id), \
                       count(DISTINCT principal_id) \
                     FROM audit_log WHERE {EVENT_SCOPE} \
                     GROUP BY target_resource_type ORDER BY count(*) DESC, target_resource_type NULLS LAST"
                ),
                &event_parameters,
            )
            .await?;
            totals.get::<_, i64>("events") as u64
        }
        ReportType::FailedAccess => {
            let condition = format!("{EVENT_SCOPE} AND (status = 'failure' OR {DENIED})");
            section(
                transaction,
                sink,
                ("by_principal", "Failed or denied access by principal"),
                &["principal_id", "failures", "denied", "last_seen"],
                &format!(
                    "SELECT principal_id, count(*) FILTER (WHERE status = 'failure'), \
                       count(*) FILTER (WHERE {DENIED}), max(\"timestamp\") \
                     FROM audit_log WHERE {condition} GROUP BY principal_id ORDER BY count(*) DESC, principal_id"
                ),
                &event_parameters,
            )
            .await?;
            let events = section(
                transaction,
                sink,
                ("events", "Failed or denied access"),
                &EVENT_COLUMNS,
                &format!(
                    "SELECT {EVENT_SELECT} FROM audit_log WHERE {condition} ORDER BY \"timestamp\", id"
                ),
                &event_parameters,
            )
            .await?;
            summary.insert("events".into(), json!(events));
            events
        }
        ReportType::PhiAccess => {
            let condition = format!("{EVENT_SCOPE} AND data_classification = 'PHI'");
            section(
                transaction,
                sink,
                ("by_principal", "PHI access by principal"),
                &["principal_id", "events", "resources", "first_seen", "last_seen"],
                &format!(
                    "SELECT principal_id, count(*), count(DISTINCT target_resource_id), \
                       min(\"timestamp\"), max(\"timestamp\") \
                     FROM audit_log WHERE {condition} GROUP BY principal_id ORDER BY count(*) DESC, principal_id"
                ),
                &event_parameters,
            )
            .await?;
            let events = section(
                transaction,
                sink,
                ("events", "Every PHI event"),
                &EVENT_COLUMNS,
                &format!(
                    "SELECT {EVENT_SELECT} FROM audit_log WHERE {condition} ORDER BY \"timestamp\", id"
                ),
                &event_parameters,
            )
            .await?;
            summary.insert("events".into(), json!(events));
            events
        }
        ReportType::GdprActivity => {
            let operations = section(
                transaction,
                sink,
                ("operations", "GDPR operations"),
                &[
                    "started_at",
                    "operation_id",
                    "kind",
                    "status",
                    "strategy",
                    "subject_commitment",
                    "requested_by",
                    "completed_at",
                    "result",
                ],
                "SELECT started_at, id::text, kind, status, strategy, subject_commitment, requested_by, \
                   completed_at, result \
                 FROM gdpr_operations WHERE organization_id = $1 AND started_at >= $2 AND started_at < $3 \
                 ORDER BY started_at, id",
                &period,
            )
            .await?;
            let events = section(
                transaction,
                sink,
                ("events", "GDPR events"),
                &EVENT_COLUMNS,
                &format!(
                    "SELECT {EVENT_SELECT} FROM audit_log WHERE {EVENT_SCOPE} AND action LIKE 'gdpr.%' \
                     ORDER BY \"timestamp\", id"
                ),
                &event_parameters,
            )
            .await?;
            summary.insert("operations".into(), json!(operations));
            summary.insert("events".into(), json!(events));
            operations + events
        }
        ReportType::Integrity => {
            sink.writer.section(
                "problems",
                "Problems found",
                &["kind", "event_id", "seq", "message"],
            );
            for problem in &verification.problems {
                sink.writer.row(&[
                    json!(problem.kind),
                    json!(problem.event_id),
                    json!(problem.seq),
                    json!(problem.message),
                ]);
                sink.flush_if_full().await?;
            }
            sink.writer.end_section();
            summary.insert("events_checked".into(), json!(verification.checked));
            summary.insert("problems".into(), json!(verification.problem_count));
            verification.checked
        }
        ReportType::AlertsSummary => {
            let alerts_in =
                "FROM alerts WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3";
            for (name, title, column) in [
                ("by_severity", "Alerts by severity", "severity"),
                ("by_type", "Alerts by type", "type"),
                ("by_status", "Alerts by status", "status"),
            ] {
                section(
                    transaction,
                    sink,
                    (name, title),
                    &[column, "alerts", "occurrences"],
                    &format!(
                        "SELECT {column}, count(*), sum(occurrences) {alerts_in} \
                         GROUP BY {column} ORDER BY count(*) DESC, {column}"
                    ),
                    &period,
                )
                .await?;
            }
            let alerts = section(
                transaction,
                sink,
                ("alerts", "Alerts"),
                &[
                    "created_at",
                    "alert_id",
                    "severity",
                    "type",
                    "status",
                    "title",
                    "source",
                    "occurrences",
                    "acknowledged_at",
                    "resolved_at",
                ],
                &format!(
                    "SELECT created_at, id::text, severity, type, status, title, source, occurrences, \
                       acknowledged_at, resolved_at {alerts_in} ORDER BY created_at, id"
                ),
                &period,
            )
            .await?;
            summary.insert("alerts".into(), json!(alerts));
            alerts
        }
    };
    summary.insert("records_processed".into(), json!(records));
    Ok((records, summary))
}

/// Writes one section from a query, fetching [`FETCH_ROWS`] rows at a time;
/// returns its row count.
async fn section(
    transaction: &Transaction<'_>,
    sink: &mut OutputSink,
    (name, title): (&str, &str),
    columns: &[&'static str],
    sql: &str,
    parameters: &[&(dyn ToSql + Sync)],
) -> Result<u64, ReportError> {
    sink.writer.section(name, title, columns);
    let statement = transaction.prepare(sql).await?;
    let portal = transaction.bind(&statement, parameters).await?;
    loop {
        let rows = transaction.query_portal(&portal, FETCH_ROWS).await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            sink.writer.row(&cells(row)?);
            sink.flush_if_full().await?;
        }
    }
    Ok(sink.writer.end_section())
}

/// A row as JSON values, by the column types these queries return.
fn cells(row: &Row) -> Result<Vec<Value>, ReportError> {
    use tokio_postgres::types::Type;
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
