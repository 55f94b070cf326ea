//! The destinations page: each destination's health (breaker, success rate,
//! latency, failures), enable and disable, a connection test; the dead
//! letters, each to replay; the streams with their lag. Every change goes
//! through the API's own handler, so the console takes exactly the API's
//! checks and leaves the same record in the trail.

use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::layout;
use super::session::{self, Refusal, Viewer, CSRF_FIELD};
use crate::db::deliveries::{self, Delivery};
use crate::db::destinations::{self, Destination, Health};
use crate::db::{streams, tenant};
use crate::http::auth::Caller;
use crate::http::destinations::{check_connection, ConnectionTest};
use crate::http::extract::{Json, Path};
use crate::http::streams::{view, StreamSubscription};
use crate::http::{api_error::ApiError, AppState};

const RESOURCE: &str = "audit.deliveries";
/// Dead letters shown, newest first.
const DEAD_LETTERS: i64 = 50;

/// What the page shows, read in one transaction.
struct Overview {
    destinations: Vec<(Destination, Option<Health>)>,
    dead_letters: Vec<Delivery>,
    streams: Vec<StreamSubscription>,
}

/// `GET /console/destinations`.
pub async fn show(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match super::viewer_who_may(&request, &state, RESOURCE, "read").await {
        Ok(viewer) => page(&state, &viewer, None).await,
        Err(refused) => refused,
    }
}

/// The page, with the outcome of a connection test on top when one ran.
async fn page(state: &AppState, viewer: &Viewer, tested: Option<ConnectionTest>) -> HttpResponse {
    let organization_id = viewer.identity.organization_id.clone();
    let read = tenant::scoped(&state.pool, &organization_id, async |tx| {
        let mut listed = Vec::new();
        for destination in destinations::list(tx, &organization_id).await? {
            let health = destinations::health(tx, &organization_id, destination.id).await?;
            listed.push((destination, health));
        }
        let dead_letters =
            deliveries::list(tx, &organization_id, Some("failed"), DEAD_LETTERS).await?;
        let mut shown = Vec::new();
        for subscription in streams::list(tx, &organization_id).await? {
            shown.push(view(tx, subscription).await?);
        }
        Ok::<_, ApiError>(Overview {
            destinations: listed,
            dead_letters,
            streams: shown,
        })
    })
    .await;
    let Ok(overview) = read else {
        return super::refused(Refusal::Unavailable, Some(viewer));
    };
    let body = html! {
        h1 { "Destinations" }
        @if let Some(tested) = tested {
            p.outcome role="status" {
                strong class=(if tested.reachable { "status-success" } else { "status-failure" }) {
                    (if tested.reachable { "Reachable" } else { "Unreachable" })
                }
                ": " (tested.message) " (" (tested.latency_ms) " ms)."
            }
        }
        (destinations_table(viewer, &overview.destinations))
        h2 { "Dead letters" }
        (dead_letters_table(viewer, &overview.dead_letters))
        h2 { "Streams" }
        (streams_table(&overview.streams))
    };
    HttpResponse::Ok().body(layout::page("Destinations", Some(viewer), body).into_string())
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |rate| format!("{rate:.1} %"))
}

fn destinations_table(viewer: &Viewer, listed: &[(Destination, Option<Health>)]) -> Markup {
    html! {
        @if listed.is_empty() { p { "No destination yet." } } @else {
            div.table { table {
                thead { tr { th { "Destination" } th { "Kind" } th { "State" } th { "Breaker" }
                    th { "Success" } th { "Latency" } th { "Failures" } th { "Actions" } } }
                tbody { @for (destination, health) in listed {
                    tr {
                        td { (destination.label) }
                        td { (destination.kind) }
                        td { (if destination.disabled { "disabled" } else { "enabled" })
                            @if let Some(reason) = health.as_ref().and_then(|h| h.disabled_reason.as_deref()) {
                                br; (reason)
                            }
                        }
                        td { (health.as_ref().map_or("closed", |h| h.circuit_breaker_state.as_str())) }
                        td { (percent(health.as_ref().and_then(|h| h.success_rate))) }
                        td { (health.as_ref().and_then(|h| h.average_response_time).map_or_else(|| "–".to_owned(), |ms| format!("{ms} ms"))) }
                        td { (health.as_ref().map_or(0, |h| h.consecutive_failures)) " in a row" }
                        td {
                            @if viewer.may(RESOURCE, "update") {
                                @let step = if destination.disabled { "enable" } else { "disable" };
                                form method="post" action=(format!("/console/destinations/{}/{step}", destination.id)) {
                                    input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf_token);
                                    button type="submit" { (if destination.disabled { "Enable" } else { "Disable" }) }
                                }
                                form method="post" action=(format!("/console/destinations/{}/test", destination.id)) {
                                    input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf_token);
                                    button type="submit" { "Test" }
                                }
                            }
                        }
                    }
                } }
            } }
        }
    }
}

fn dead_letters_table(viewer: &Viewer, dead: &[Delivery]) -> Markup {
    html! {
        @if dead.is_empty() { p { "No dead letter." } } @else {
            div.table { table {
                thead { tr { th { "Delivery" } th { "Destination" } th { "Failed" } th { "Attempts" }
                    th { "Last error" } th { "Actions" } } }
                tbody { @for delivery in dead {
                    tr {
                        td.mono { (delivery.id) }
                        td { (delivery.destination_id) }
                        td { (delivery.processed_at.map(|at| at.to_rfc3339()).unwrap_or_default()) }
                        td { (delivery.retry_count) }
                        td { (delivery.last_error.as_deref().unwrap_or("")) }
                        td {
                            @if viewer.may(RESOURCE, "update") {
                                form method="post" action=(format!("/console/deliveries/{}/replay", delivery.id)) {
                                    input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf_token);
                                    button type="submit" { "Replay" }
                                }
                            }
                        }
                    }
                } }
            } }
        }
    }
}

fn streams_table(shown: &[StreamSubscription]) -> Markup {
    html! {
        @if shown.is_empty() { p { "No stream." } } @else {
            div.table { table {
                thead { tr { th { "Stream" } th { "Destination" } th { "Format" } th { "State" }
                    th { "Lag" } th { "Last delivered" } th { "Last error" } } }
                tbody { @for stream in shown {
                    tr {
                        td { (stream.id) }
                        td { (stream.destination_id) }
                        td { (stream.format) }
                        td { (stream.state) }
                        td { (stream.lag_events) " events, " (format!("{:.1}", stream.lag_seconds)) " s" }
                        td { (stream.last_delivered_at.map(|at| at.to_rfc3339()).unwrap_or_default()) }
                        td { (stream.last_error.as_deref().unwrap_or("")) }
                    }
                } }
            } }
        }
    }
}

#[derive(Deserialize)]
pub struct ChangeForm {
    csrf: Option<String>,
}

/// The page after a change the API made: back to the destinations, or why not.
fn after(viewer: &Viewer, done: Result<HttpResponse, ApiError>) -> HttpResponse {
    match done {
        Ok(_) => session::see_other("/console/destinations"),
        Err(error) => super::api_refused(viewer, error),
    }
}

/// `POST /console/destinations/{id}/{enable|disable|test}`: a change of
/// state, or a connection test whose outcome the page shows.
pub async fn step(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(i64, String)>,
    form: web::Form<ChangeForm>,
) -> HttpResponse {
    let viewer = match super::form_viewer(&request, &state, form.csrf.as_deref()).await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    let (id, step) = path.into_inner();
    let disabled = match step.as_str() {
        "enable" => false,
        "disable" => true,
        "test" => {
            let caller = Caller(viewer.identity.clone());
            return match check_connection(&state, &caller, id).await {
                Ok(tested) => page(&state, &viewer, Some(tested)).await,
                Err(refused) => after(&viewer, Err(refused)),
            };
        }
        _ => return after(&viewer, Err(ApiError::NotFound(format!("/{step}")))),
    };
    let change = serde_json::from_value(json!({"disabled": disabled}))
        .expect("a change of state is an update");
    let caller = Caller(viewer.identity.clone());
    let done = crate::http::destinations::update(state, caller, Path(id), Json(change)).await;
    after(&viewer, done)
}

/// `POST /console/deliveries/{id}/replay`: a dead letter queued again.
pub async fn replay(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: web::Form<ChangeForm>,
) -> HttpResponse {
    let viewer = match super::form_viewer(&request, &state, form.csrf.as_deref()).await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return after(&viewer, Err(ApiError::NotFound(format!("delivery {id}"))));
    };
    let caller = Caller(viewer.identity.clone());
    let done = crate::http::deliveries::retry(state, caller, Path(id)).await;
    after(&viewer, done)
}
