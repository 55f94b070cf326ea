//! The GDPR page: the organization's data subject requests and their state,
//! and a subject's export to download. An export is written afresh at each
//! download (the worker keeps its manifest, never the file); it goes through
//! the API's own handler, so it takes the same checks and leaves the same
//! record in the trail.

use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::layout;
use super::session::{Refusal, Viewer, CSRF_FIELD};
use crate::db::gdpr::{self, Operation};
use crate::db::tenant;
use crate::gdpr::export::Format;
use crate::http::auth::Caller;
use crate::http::extract::Json;
use crate::http::gdpr::ExportBody;
use crate::http::AppState;

const RESOURCE: &str = "audit.gdpr";
/// Requests shown, newest first.
const SHOWN: i64 = 100;

/// `GET /console/gdpr`.
pub async fn show(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let viewer = match super::viewer_who_may(&request, &state, RESOURCE, "read").await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    let organization_id = viewer.identity.organization_id.clone();
    let found = tenant::scoped(&state.pool, &organization_id, async |tx| {
        gdpr::recent_operations(tx, &organization_id, SHOWN).await
    })
    .await;
    let Ok(operations) = found else {
        return super::refused(Refusal::Unavailable, Some(&viewer));
    };
    let body = html! {
        h1 { "GDPR requests" }
        @if viewer.may(RESOURCE, "export") { (export_form(&viewer)) }
        h2 { "Requests" }
        @if operations.is_empty() { p { "No request yet." } } @else {
            div.table { table {
                thead { tr { th { "Started" } th { "Request" } th { "State" } th { "By" }
                    th { "Completed" } th { "Result" } th { "Record" } } }
                tbody { @for operation in &operations { (row(operation)) } }
            } }
        }
    };
    HttpResponse::Ok().body(layout::page("GDPR requests", Some(&viewer), body).into_string())
}

fn export_form(viewer: &Viewer) -> Markup {
    html! {
        h2 { "Export a subject's events" }
        form.filters method="post" action="/console/gdpr/export" {
            input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf_token);
            label { "Subject (principal id)" input name="principal_id" required maxlength="255"; }
            label { "Format"
                select name="format" {
                    option value="json" { "JSON" }
                    option value="csv" { "CSV" }
                    option value="xml" { "XML" }
                }
            }
            button type="submit" { "Download the export" }
        }
        p.hint { "The file is written as it downloads; its manifest (count, SHA-256) then appears below." }
    }
}

fn row(operation: &Operation) -> Markup {
    let failed = operation.status == "failed";
    html! {
        tr {
            td { (operation.started_at.to_rfc3339()) }
            td { (operation.kind) }
            td class=(if failed { "status-failure" } else if operation.status == "completed" { "status-success" } else { "" }) {
                (operation.status)
            }
            td { (operation.requested_by) }
            td { (operation.completed_at.map(|at| at.to_rfc3339()).unwrap_or_default()) }
            td { (outcome(operation.result.as_ref())) }
            td { @if let Some(event) = operation.record_event_id {
                a href=(format!("/console/events/{event}")) { "event " (event) }
            } }
        }
    }
}

/// A request's result in a line: an export's manifest, else its counts.
fn outcome(result: Option<&Value>) -> Markup {
    let Some(Value::Object(fields)) = result else {
        return html! {};
    };
    html! {
        @if let Some(sha256) = fields.get("sha256").and_then(Value::as_str) {
            (fields.get("count").cloned().unwrap_or_default()) " events, "
            (fields.get("format").and_then(Value::as_str).unwrap_or("")) ", SHA-256 "
            span.mono { (sha256) }
        } @else {
            @for (name, value) in fields.iter().filter(|(_, value)| value.is_number()) {
                (name.replace('_', " ")) ": " (value) ". "
            }
        }
    }
}

#[derive(Deserialize)]
pub struct ExportForm {
    csrf: Option<String>,
    principal_id: String,
    format: Format,
}

/// `POST /console/gdpr/export`: the subject's export, as a download.
pub async fn export(
    request: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<ExportForm>,
) -> HttpResponse {
    let viewer = match super::form_viewer(&request, &state, form.csrf.as_deref()).await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    let form = form.into_inner();
    let body = ExportBody {
        principal_id: form.principal_id,
        format: form.format,
        from: None,
        to: None,
        destination_id: None,
    };
    let caller = Caller(viewer.identity.clone());
    match crate::http::gdpr::export(state, caller, Json(body)).await {
        Ok(file) => file,
        Err(error) => super::api_refused(&viewer, error),
    }
}
