//! The integrity page: run a verification of the organization's trail (in
//! the background, its progress shown while it runs), the history of runs with their problems, the signed checkpoints (each to
//! download, to keep outside and pass back to a verification) and the
//! public key that checks them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::layout;
use super::session::{self, Refusal, Viewer, CSRF_FIELD};
use crate::db::{checkpoints, tenant, verification};
use crate::http::AppState;
use crate::integrity::verify::{self, Scope};

const RESOURCE: &str = "audit.integrity";
/// Runs and checkpoints shown.
const SHOWN: i64 = 20;
/// How often the page reloads while a verification runs.
const RELOAD_SECONDS: u32 = 2;

/// `GET /console/integrity`.
pub async fn show(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let viewer = match super::viewer_who_may(&request, &state, RESOURCE, "read").await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    match page(&state, &viewer).await {
        Some(page) => HttpResponse::Ok().body(page.into_string()),
        None => super::refused(Refusal::Unavailable, Some(&viewer)),
    }
}

#[derive(Deserialize)]
pub struct VerifyForm {
    csrf: Option<String>,
}

/// How often a running verification writes how far it got.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// `POST /console/integrity/verify`: starts a verification of the whole
/// trail, unless one is running, and shows the page, which follows its
/// progress until the run is recorded in the history.
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
    let organization_id = viewer.identity.organization_id.clone();
    let verified_by = format!("api-key:{}", viewer.identity.key_id);
    let started = tenant::scoped(&state.pool, &organization_id, async |tx| {
        verification::start_progress(tx, &organization_id, &verified_by).await
    })
    .await;
    match started {
        Ok(true) => {
            actix_web::rt::spawn(verify_in_background(
                state.into_inner(),
                organization_id,
                verified_by,
            ));
        }
        // One is running: the page shows it.
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(%error, "Cannot start a verification");
            return super::refused(Refusal::Unavailable, Some(&viewer));
        }
    }
    session::see_other("/console/integrity")
}

/// Verifies the organization's whole trail, writing how far it got as it
/// goes, then records the run (its report joins the history) and clears
/// the progress.
#[tracing::instrument(skip(state, verified_by))]
async fn verify_in_background(state: Arc<AppState>, organization_id: String, verified_by: String) {
    let checked = AtomicU64::new(0);
    let scope = Scope {
        organization_id: &organization_id,
        from: None,
        to: None,
        checkpoint: None,
        progress: Some(&checked),
    };
    let verifying = verify::verify(&state.pool, &state.keys, &state.archives, &scope);
    let mut verifying = std::pin::pin!(verifying);
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    let outcome = loop {
        tokio::select! {
            outcome = &mut verifying => break outcome,
            _ = every.tick() => {
                let so_far = checked.load(Ordering::Relaxed) as i64;
                let written = tenant::scoped(&state.pool, &organization_id, async |tx| {
                    verification::update_progress(tx, &organization_id, so_far).await
                })
                .await;
                if let Err(error) = written {
                    tracing::warn!(%error, "Cannot write a verification's progress");
                }
            }
        }
    };
    let recorded = async {
        let report = outcome.map_err(|error| error.to_string())?;
        let client = state.pool.get().await.map_err(|error| error.to_string())?;
        verify::record(&**client, &organization_id, &report, &scope, &verified_by)
            .await
            .map_err(|error| error.to_string())
    };
    if let Err(error) = recorded.await {
        tracing::error!(%error, "A verification started from the console failed");
    }
    let cleared = tenant::scoped(&state.pool, &organization_id, async |tx| {
        verification::finish_progress(tx, &organization_id).await
    })
    .await;
    if let Err(error) = cleared {
        tracing::warn!(%error, "Cannot clear a verification's progress");
    }
}

/// The page; `None` when the database cannot be read.
async fn page(state: &AppState, viewer: &Viewer) -> Option<Markup> {
    let organization_id = viewer.identity.organization_id.clone();
    let (running, runs, signed) = tenant::scoped(&state.pool, &organization_id, async |tx| {
        let running = verification::progress(tx, &organization_id).await?;
        let runs = verification::recent_runs(tx, &organization_id, SHOWN).await?;
        let signed = checkpoints::list(tx, &organization_id, SHOWN).await?;
        Ok::<_, crate::db::DbError>((running, runs, signed))
    })
    .await
    .ok()?;
    let public_key = STANDARD.encode(state.keys.verifying_key().as_bytes());
    // What changes while a run goes on: its progress, the button, the runs.
    let live = html! {
        @if let Some(running) = &running {
            section aria-labelledby="running" {
                h2 #running { "Verification running" }
                p role="status" {
                    (running.events_checked) " of " (running.events_total) " events checked; started "
                    (running.started_at.to_rfc3339()) " by " (running.started_by) "."
                }
                progress max=(running.events_total.max(1)) value=(running.events_checked) aria-labelledby="running" {}
                p.hint { "This part is read again every two seconds until the run ends; its report then heads the runs." }
            }
        }
        @if viewer.may(RESOURCE, "verify") && running.is_none() {
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
    };
    let body = html! {
        h1 { "Integrity" }
        @if running.is_some() {
            div #live hx-get="/console/integrity" hx-trigger=(format!("every {RELOAD_SECONDS}s"))
                hx-select="#live" hx-swap="outerHTML" { (live) }
        } @else {
            div #live { (live) }
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
    Some(match running {
        Some(_) => layout::live_page("Integrity", viewer, body, RELOAD_SECONDS),
        None => layout::page("Integrity", Some(viewer), body),
    })
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
