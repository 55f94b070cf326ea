//! The operators' page (keys of the operators' organization whose role
//! grants `system.operations`, as `/v1/admin` admits): the database
//! performance report and the internal errors aggregated by fingerprint.

use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde_json::Value;

use super::layout;
use super::session::{Refusal, Viewer};
use crate::db::error_log::{self, Aggregation, AggregationFilter};
use crate::db::performance::{self, PerformanceReport};
use crate::http::AppState;

/// Aggregations shown, most recently seen first.
const ERRORS_SHOWN: i64 = 50;
/// Rows shown of each of the report's longer lists.
const ROWS_SHOWN: usize = 15;

/// `GET /console/operators`.
pub async fn show(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let viewer = match Viewer::of(&request, &state).await {
        Ok(viewer) => viewer,
        Err(refusal) => return super::refused(refusal, None),
    };
    if !viewer.operator {
        return super::refused(Refusal::Forbidden, Some(&viewer));
    }
    let read = async {
        let report = performance::report(&state.pool, &state.config).await?;
        let client = state.pool.get().await?;
        let filter = AggregationFilter {
            limit: ERRORS_SHOWN,
            ..AggregationFilter::default()
        };
        let errors = error_log::list(&**client, &filter).await?;
        Ok::<_, crate::db::DbError>((report, errors))
    };
    let Ok((report, errors)) = read.await else {
        return super::refused(Refusal::Unavailable, Some(&viewer));
    };
    let body = html! {
        h1 { "Operators" }
        p { "Generated " (report.generated_at.to_rfc3339()) " for database " span.mono { (report.database) } "." }
        (health(&report))
        (slow_queries(&report))
        (tables(&report))
        (indexes(&report))
        h2 { "Internal errors" }
        (errors_table(&errors))
    };
    HttpResponse::Ok().body(layout::page("Operators", Some(&viewer), body).into_string())
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |ratio| format!("{:.2} %", ratio * 100.0))
}

fn health(report: &PerformanceReport) -> Markup {
    let connections = &report.connections;
    html! {
        h2 { "Database" }
        dl {
            dt { "Cache hits (tables)" } dd { (ratio(report.cache_hit_ratio.heap)) }
            dt { "Cache hits (indexes)" } dd { (ratio(report.cache_hit_ratio.index)) }
            dt { "This worker's pool" } dd {
                (connections.pool_open) " open, " (connections.pool_idle) " idle, at most " (connections.pool_max)
            }
            dt { "Server connections" } dd {
                @for state in &connections.server_by_state { (state.state) ": " (state.count) ". " }
            }
        }
        @if let Some(run) = report.maintenance_runs.first() {
            p { "Last maintenance: " (run.started_at.to_rfc3339()) " (" (run.trigger) ", " (run.instance) ")"
                @if let Some(error) = &run.error { ", failed: " (error) } "." }
        }
    }
}

fn slow_queries(report: &PerformanceReport) -> Markup {
    let slow = &report.slow_queries;
    html! {
        h2 { "Slow statements" }
        @if !slow.available {
            p { (slow.reason.as_deref().unwrap_or("Unavailable."))
                @if let Some(how) = slow.how_to_enable { " " (how) } }
        } @else if slow.queries.is_empty() {
            p { "None slower than " (slow.threshold_ms) " ms on average." }
        } @else {
            div.table { table {
                thead { tr { th { "Statement" } th { "Calls" } th { "Mean" } th { "Total" } } }
                tbody { @for query in slow.queries.iter().take(ROWS_SHOWN) {
                    tr { td.mono { (query.query) } td { (query.calls) }
                        td { (format!("{:.1} ms", query.mean_ms)) } td { (format!("{:.0} ms", query.total_ms)) } }
                } }
            } }
        }
    }
}

fn tables(report: &PerformanceReport) -> Markup {
    let mut largest: Vec<_> = report.tables.iter().collect();
    largest.sort_by_key(|table| std::cmp::Reverse(table.total_bytes));
    html! {
        h2 { "Largest tables" }
        div.table { table {
            thead { tr { th { "Table" } th { "Rows (estimate)" } th { "Dead rows" } th { "Size" }
                th { "Sequential scans" } th { "Index scans" } } }
            tbody { @for table in largest.into_iter().take(ROWS_SHOWN) {
                tr { td.mono { (table.table) } td { (table.rows_estimate) } td { (table.dead_tuples) }
                    td { (table.total_bytes / 1024) " KiB" } td { (table.seq_scans) } td { (table.index_scans) } }
            } }
        } }
    }
}

fn indexes(report: &PerformanceReport) -> Markup {
    html! {
        h2 { "Indexes" }
        @if report.suggested_indexes.is_empty() { p { "No index suggested." } } @else {
            ul { @for suggestion in &report.suggested_indexes {
                li { span.mono { (suggestion.table) } ": " (suggestion.reason) }
            } }
        }
        @if report.indexes.unused.is_empty() { p { "Every index has been used." } } @else {
            p { "Never used since the statistics were reset: "
                @for index in report.indexes.unused.iter().take(ROWS_SHOWN) { span.mono { (index.index) } " " } }
        }
    }
}

fn errors_table(errors: &[Aggregation]) -> Markup {
    html! {
        @if errors.is_empty() { p { "No internal error recorded." } } @else {
            div.table { table {
                thead { tr { th { "Last seen" } th { "Severity" } th { "Category" } th { "Count" }
                    th { "Per minute" } th { "Trend" } th { "Components" } th { "Latest" } } }
                tbody { @for error in errors {
                    tr {
                        td { (error.last_occurrence.to_rfc3339()) }
                        td { (error.severity) }
                        td { (error.category) }
                        td { (error.count) }
                        td { (format!("{:.2}", error.error_rate)) }
                        td { (error.trend) }
                        td { @for component in error.affected_components.as_array().into_iter().flatten() {
                            (component.as_str().unwrap_or("")) " " } }
                        td { (error.samples.get(0).and_then(|s| s.get("message")).and_then(Value::as_str).unwrap_or("")) }
                    }
                } }
            } }
        }
    }
}
