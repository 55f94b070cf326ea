//! The integrity page: run a verification of the organization's trail, the
//! history of runs with their problems, the signed checkpoints (each to
//! download, to keep outside and pass back to a verification) and the
//! public key that checks them.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::layout;
use super::session::{Refusal, Viewer, CSRF_FIELD};
use crate::db::{checkpoints, tenant, verification};
use crate::http::AppState;
use crate::integrity::verify::{self, Report, Scope};

const RESOURCE: &str = "audit.integrity";
/// Runs and checkpoints shown.
const SHOWN: i64 = 20;

/// `GET /console/integrity`.
pub async fn show(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let viewer = match super::viewer_who_may(&request, &state, RESOURCE, "read").await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    match page(&state, &viewer, None).await {
        Some(page) => HttpResponse::Ok().body(page.into_string()),
        None => super::refused(Refusal::Unavailable, Some(&viewer)),
    }
}

#[derive(Deserialize)]
pub struct VerifyForm {
    csrf: Option<String>,
}

/// `POST /console/integrity/verify`: verifies the whole trail now, records
/// the run, and shows its report above the page.
pub async fn run(
    request: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<VerifyForm>,
) -> HttpResponse {
    let viewer = match super::form_viewer(&request, &state, form.csrf.as_deref()).await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    if !viewer.may(RESOURCE, "verify") {
        return super::refused(Refusal::Forbidden, Some(&viewer));
    }
    let organization_id = viewer.identity.organization_id.as_str();
    let scope = Scope {
        organization_id,
        from: None,
        to: None,
        checkpoint: None,
    };
    let verified_by = format!("api-key:{}", viewer.identity.key_id);
    let report = async {
        let report = verify::verify(&state.pool, &state.keys, &state.archives, &scope)
            .await
            .ok()?;
        let client = state.pool.get().await.ok()?;
        verify::record(&**client, organization_id, &report, &scope, &verified_by)
            .await
            .ok()?;
        Some(report)
    };
    let Some(report) = report.await else {
        return super::refused(Refusal::Unavailable, Some(&viewer));
    };
    match page(&state, &viewer, Some(&report)).await {
        Some(page) => HttpResponse::Ok().body(page.into_string()),
        None => super::refused(Refusal::Unavailable, Some(&viewer)),
    }
}

/// The page, with `report` on top when a run just ended; `None` when the
/// database cannot be read.
async fn page(state: &AppState, viewer: &Viewer, report: Option<&Report>) -> Option<Markup> {
    let organization_id = viewer.identity.organization_id.clone();
    let (runs, signed) = tenant::scoped(&state.pool, &organization_id, async |tx| {
        let runs = verification::recent_runs(tx, &organization_id, SHOWN).await?;
        let signed = checkpoints::list(tx, &organization_id, SHOWN).await?;
        Ok::<_, crate::db::DbError>((runs, signed))
    })
    .await
    .ok()?;
    let public_key = STANDARD.encode(state.keys.verifying_key().as_bytes());
    let body = html! {
        h1 { "Integrity" }
        @if let Some(report) = report {
            section aria-labelledby="report" {
                h2 #report { "This run" }
                p role="status" {
                    @if report.valid { strong.status-success { "Verified" } } @else { strong.status-failure { "Failed" } }
                    ": " (report.checked) " events and " (report.links_checked) " links checked, "
                    (report.problem_count) " problems."
                }
                (problems(&serde_json::to_value(&report.problems).unwrap_or_default()))
            }
        }
        @if viewer.may(RESOURCE, "verify") {
            form method="post" action="/console/integrity/verify" {
                input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf_token);
                button type="submit" { "Verify the whole trail now" }
            }
        }
        h2 { "Runs" }
        @if runs.is_empty() { p { "No verification has run yet." } } @else {
            div.table { table {
                thead { tr { th { "When" } th { "Outcome" } th { "Checked" } th { "Problems" } th { "By" } } }
                tbody { @for run in &runs {
                    tr {
                        td { (run.at.to_rfc3339()) }
                        td class=(if run.valid { "status-success" } else { "status-failure" }) {
                            (if run.valid { "verified" } else { "failed" })
                        }
                        td { (run.details["checked"]) " events" }
                        td { (run.details["problem_count"]) (problems(&run.details["problems"])) }
                        td { (run.verified_by.as_deref().unwrap_or("")) }
                    }
                } }
            } }
        }
        h2 { "Checkpoints" }
        @if signed.is_empty() { p { "No checkpoint is signed yet." } } @else {
            div.table { table {
                thead { tr { th { "Link" } th { "Events" } th { "Signed" } th { "Tree root" } th { "Key" } th { "File" } } }
                tbody { @for checkpoint in &signed {
                    tr {
                        td { (checkpoint.seq) }
                        td { (checkpoint.event_total) }
                        td { (checkpoint.signed_at.to_rfc3339()) }
                        td.mono { (checkpoint.tree_root.as_deref().unwrap_or("")) }
                        td.mono { (checkpoint.key_id) }
                        td { a href=(format!("/console/integrity/checkpoints/{}", checkpoint.seq)) download {
                            "checkpoint-" (checkpoint.seq) ".json" } }
                    }
                } }
            } }
        }
        h2 { "Public key" }
        dl {
            dt { "Algorithm" } dd { "Ed25519" }
            dt { "Key id" } dd.mono { (state.keys.key_id()) }
            dt { "Key (base64)" } dd.mono { (public_key) }
        }
        p { "Every key that signed: " a href="/v1/integrity/public-key" { "/v1/integrity/public-key" } "." }
    };
    Some(layout::page("Integrity", Some(viewer), body))
}

/// The first problems of a run, as a list.
fn problems(problems: &Value) -> Markup {
    html! {
        @if let Some(problems) = problems.as_array().filter(|p| !p.is_empty()) {
            ul {
                @for problem in problems.iter().take(20) {
                    li { (problem["kind"].as_str().unwrap_or("")) ": " (problem["message"].as_str().unwrap_or("")) }
                }
            }
        }
    }
}

/// `GET /console/integrity/checkpoints/{seq}`: one signed checkpoint as the
/// JSON a verification takes back.
pub async fn download(
    request: HttpRequest,
    state: web::Data<AppState>,
    seq: web::Path<String>,
) -> HttpResponse {
    let viewer = match super::viewer_who_may(&request, &state, RESOURCE, "read").await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    let organization_id = viewer.identity.organization_id.clone();
    let found = match seq.parse::<i64>() {
        Ok(seq) => tenant::scoped(&state.pool, &organization_id, async |tx| {
            checkpoints::get(tx, &organization_id, seq).await
        })
        .await
        .map_err(|_| ()),
        Err(_) => Ok(None),
    };
    match found {
        Ok(Some(checkpoint)) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"checkpoint-{}.json\"",
                    checkpoint.seq
                ),
            ))
            .body(serde_json::to_vec_pretty(&checkpoint.checkpoint).unwrap_or_default()),
        Ok(None) => HttpResponse::NotFound()
            .body(layout::notice("Not found", Some(&viewer), "No such checkpoint.").into_string()),
        Err(()) => super::refused(Refusal::Unavailable, Some(&viewer)),
    }
}
