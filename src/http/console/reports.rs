//! The reports page: the organization's report schedules, each with its
//! latest runs and their outputs to download (through the API's own handler,
//! which streams the stored output and its SHA-256).

use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use uuid::Uuid;

use super::layout;
use super::session::{Refusal, Viewer};
use crate::db::reports::{self, Execution, ScheduledReport};
use crate::db::tenant;
use crate::http::auth::Caller;
use crate::http::extract::Path;
use crate::http::AppState;

const RESOURCE: &str = "audit.reports";
/// Runs shown under each schedule, newest first.
const RUNS_SHOWN: i64 = 5;

/// `GET /console/reports`.
pub async fn show(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let viewer = match super::viewer_who_may(&request, &state, RESOURCE, "read").await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    let organization_id = viewer.identity.organization_id.clone();
    let found = tenant::scoped(&state.pool, &organization_id, async |tx| {
        let mut listed = Vec::new();
        for report in reports::list_reports(tx, &organization_id).await? {
            let runs =
                reports::list_executions(tx, &organization_id, report.id, None, RUNS_SHOWN).await?;
            listed.push((report, runs));
        }
        Ok::<_, crate::db::DbError>(listed)
    })
    .await;
    let Ok(listed) = found else {
        return super::refused(Refusal::Unavailable, Some(&viewer));
    };
    let body = html! {
        h1 { "Reports" }
        @if listed.is_empty() { p { "No report is scheduled." } }
        @for (report, runs) in &listed {
            section aria-labelledby=(format!("report-{}", report.id)) {
                h2 id=(format!("report-{}", report.id)) { (report.name) }
                (schedule(report))
                (runs_table(&viewer, report, runs))
            }
        }
    };
    HttpResponse::Ok().body(layout::page("Reports", Some(&viewer), body).into_string())
}

fn schedule(report: &ScheduledReport) -> Markup {
    html! {
        dl {
            dt { "Type" } dd { (report.report_type) " (" (report.format) ")" }
            dt { "Schedule" } dd.mono {
                (report.schedule["cron"].as_str().unwrap_or("")) " "
                (report.schedule["timezone"].as_str().unwrap_or("UTC"))
            }
            dt { "State" } dd { (if report.enabled { "enabled" } else { "disabled" }) }
            dt { "Last run" } dd { (report.last_run.map(|at| at.to_rfc3339()).unwrap_or_else(|| "never".into())) }
            dt { "Next run" } dd { (report.next_run.map(|at| at.to_rfc3339()).unwrap_or_else(|| "none".into())) }
        }
    }
}

fn runs_table(viewer: &Viewer, report: &ScheduledReport, runs: &[Execution]) -> Markup {
    html! {
        @if runs.is_empty() { p { "No run yet." } } @else {
            div.table { table {
                thead { tr { th { "Slot" } th { "Trigger" } th { "State" } th { "Events" }
                    th { "Took" } th { "Output" } } }
                tbody { @for run in runs {
                    tr {
                        td { (run.scheduled_time.to_rfc3339()) }
                        td { (run.trigger) }
                        td class=(match run.status.as_str() { "completed" => "status-success", "failed" => "status-failure", _ => "" }) {
                            (run.status)
                            @if let Some(error) = &run.error { br; (error) }
                        }
                        td { (run.records_processed.map(|n| n.to_string()).unwrap_or_default()) }
                        td { (run.duration.map(|ms| format!("{ms} ms")).unwrap_or_default()) }
                        td {
                            @if let (Some(format), Some(bytes)) = (&run.output_format, run.output_bytes) {
                                @if viewer.may(RESOURCE, "export") {
                                    a href=(format!("/console/reports/{}/runs/{}/output", report.id, run.id)) download {
                                        (format) ", " (bytes) " bytes"
                                    }
                                } @else { (format) ", " (bytes) " bytes" }
                            }
                        }
                    }
                } }
            } }
        }
    }
}

/// `GET /console/reports/{id}/runs/{run}/output`: a run's stored output.
pub async fn download(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let viewer = match super::viewer_who_may(&request, &state, RESOURCE, "export").await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    let (Ok(report_id), Ok(run_id)) = (Uuid::parse_str(&path.0), Uuid::parse_str(&path.1)) else {
        return HttpResponse::NotFound()
            .body(layout::notice("Not found", Some(&viewer), "No such run.").into_string());
    };
    let caller = Caller(viewer.identity.clone());
    match crate::http::reports::download_output(state, caller, Path((report_id, run_id))).await {
        Ok(file) => file,
        Err(error) => super::api_refused(&viewer, error),
    }
}
