//! What each report type contains: its sections (name, title, columns and the
//! rows they list) and its summary figures. Sections are written as their rows
//! arrive from one snapshot ([`crate::db::report_sections`] reads them a
//! bounded number at a time), so a report never sits in memory.

use serde_json::{json, Map, Value};
use tokio_postgres::Transaction;

use super::output::OutputSink;
use super::{ReportError, ReportType};
use crate::db::report_sections::{self, AlertColumn, Scope, SectionQuery};
use crate::integrity::verify::Report as Verification;

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

/// Writes the sections of `report_type`; returns the records it processed
/// (events, operations or alerts) and its summary figures.
pub async fn sections(
    transaction: &Transaction<'_>,
    sink: &mut OutputSink,
    report_type: ReportType,
    scope: &Scope<'_>,
    verification: &Verification,
) -> Result<(u64, Map<String, Value>), ReportError> {
    let mut report = Sections {
        transaction,
        scope,
        sink,
        summary: Map::new(),
    };
    let records = match report_type {
        ReportType::AccessSummary => report.access_summary().await?,
        ReportType::FailedAccess => report.failed_access().await?,
        ReportType::PhiAccess => report.phi_access().await?,
        ReportType::GdprActivity => report.gdpr_activity().await?,
        ReportType::Integrity => report.integrity(verification).await?,
        ReportType::AlertsSummary => report.alerts_summary().await?,
    };
    report
        .summary
        .insert("records_processed".into(), json!(records));
    Ok((records, report.summary))
}

/// A report being written: where its rows come from and go, and the summary
/// figures gathered on the way.
struct Sections<'a, 't> {
    transaction: &'a Transaction<'t>,
    scope: &'a Scope<'a>,
    sink: &'a mut OutputSink,
    summary: Map<String, Value>,
}

impl Sections<'_, '_> {
    /// Events by action, principal and resource type; the records are the
    /// period's events.
    async fn access_summary(&mut self) -> Result<u64, ReportError> {
        let totals = report_sections::access_totals(self.transaction, self.scope).await?;
        for (figure, value) in [
            ("events", totals.events),
            ("success", totals.success),
            ("failure", totals.failure),
            ("attempt", totals.attempt),
            ("principals", totals.principals),
        ] {
            self.summary.insert(figure.into(), json!(value));
        }
        self.section(
            ("by_action", "Events by action"),
            &[
                "action",
                "events",
                "success",
                "failure",
                "attempt",
                "principals",
            ],
            SectionQuery::EventsByAction,
        )
        .await?;
        self.section(
            ("by_principal", "Events by principal"),
            &[
                "principal_id",
                "events",
                "success",
                "failure",
                "actions",
                "first_seen",
                "last_seen",
            ],
            SectionQuery::EventsByPrincipal,
        )
        .await?;
        self.section(
            ("by_resource_type", "Events by resource type"),
            &["target_resource_type", "events", "resources", "principals"],
            SectionQuery::EventsByResourceType,
        )
        .await?;
        Ok(totals.events as u64)
    }

    /// Failed or denied access, by principal and event by event.
    async fn failed_access(&mut self) -> Result<u64, ReportError> {
        self.section(
            ("by_principal", "Failed or denied access by principal"),
            &["principal_id", "failures", "denied", "last_seen"],
            SectionQuery::FailuresByPrincipal,
        )
        .await?;
        let events = self
            .section(
                ("events", "Failed or denied access"),
                &EVENT_COLUMNS,
                SectionQuery::Failures,
            )
            .await?;
        self.summary.insert("events".into(), json!(events));
        Ok(events)
    }

    /// PHI access, by principal and event by event.
    async fn phi_access(&mut self) -> Result<u64, ReportError> {
        self.section(
            ("by_principal", "PHI access by principal"),
            &[
                "principal_id",
                "events",
                "resources",
                "first_seen",
                "last_seen",
            ],
            SectionQuery::PhiByPrincipal,
        )
        .await?;
        let events = self
            .section(
                ("events", "Every PHI event"),
                &EVENT_COLUMNS,
                SectionQuery::PhiEvents,
            )
            .await?;
        self.summary.insert("events".into(), json!(events));
        Ok(events)
    }

    /// The GDPR operations of the period and the GDPR events.
    async fn gdpr_activity(&mut self) -> Result<u64, ReportError> {
        let operations = self
            .section(
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
                SectionQuery::GdprOperations,
            )
            .await?;
        let events = self
            .section(
                ("events", "GDPR events"),
                &EVENT_COLUMNS,
                SectionQuery::GdprEvents,
            )
            .await?;
        self.summary.insert("operations".into(), json!(operations));
        self.summary.insert("events".into(), json!(events));
        Ok(operations + events)
    }

    /// The problems the period's verification found; the records are the
    /// events it checked.
    async fn integrity(&mut self, verification: &Verification) -> Result<u64, ReportError> {
        self.sink.writer.section(
            "problems",
            "Problems found",
            &["kind", "event_id", "seq", "message"],
        );
        for problem in &verification.problems {
            self.sink.writer.row(&[
                json!(problem.kind),
                json!(problem.event_id),
                json!(problem.seq),
                json!(problem.message),
            ]);
            self.sink.flush_if_full().await?;
        }
        self.sink.writer.end_section();
        self.summary
            .insert("events_checked".into(), json!(verification.checked));
        self.summary
            .insert("problems".into(), json!(verification.problem_count));
        Ok(verification.checked)
    }

    /// Alerts by severity, type and status, then one by one.
    async fn alerts_summary(&mut self) -> Result<u64, ReportError> {
        for (name, title, column, grouping) in [
            (
                "by_severity",
                "Alerts by severity",
                "severity",
                AlertColumn::Severity,
            ),
            ("by_type", "Alerts by type", "type", AlertColumn::Type),
            (
                "by_status",
                "Alerts by status",
                "status",
                AlertColumn::Status,
            ),
        ] {
            self.section(
                (name, title),
                &[column, "alerts", "occurrences"],
                SectionQuery::AlertsBy(grouping),
            )
            .await?;
        }
        let alerts = self
            .section(
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
                SectionQuery::Alerts,
            )
            .await?;
        self.summary.insert("alerts".into(), json!(alerts));
        Ok(alerts)
    }

    /// Writes one section of the rows `query` reads, as they are fetched;
    /// returns its row count.
    async fn section(
        &mut self,
        (name, title): (&str, &str),
        columns: &[&'static str],
        query: SectionQuery,
    ) -> Result<u64, ReportError> {
        self.sink.writer.section(name, title, columns);
        let mut rows = report_sections::open(self.transaction, query, self.scope).await?;
        loop {
            let fetched = rows.next().await?;
            if fetched.is_empty() {
                break;
            }
            for cells in &fetched {
                self.sink.writer.row(cells);
                self.sink.flush_if_full().await?;
            }
        }
        Ok(self.sink.writer.end_section())
    }
}
