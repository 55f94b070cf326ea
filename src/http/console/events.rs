//! The events pages: the filters of `GET /v1/events` as a GET form (a
//! search is a shareable URL), newest first with keyset pagination, each
//! row linking to the event's page (every field and its hash).

use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use maud::{html, Markup, PreEscaped};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::session::{Refusal, Viewer};
use super::{histogram, layout};
use crate::db::events::{self, StoredEvent};
use crate::db::proofs::{self, ProveError};
use crate::db::{signing_keys, tenant};
use crate::events::{table, CLASSIFICATIONS, STATUSES};
use crate::http::events::{event_filter, export_response, EventQuery, ExportFormat};
use crate::http::AppState;

const RESOURCE: &str = "audit.events";
const PAGE: i64 = 50;

/// The search form's fields, as the URL carries them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Search {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    to: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    principal_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    target_resource_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    data_classification: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cursor: String,
    /// An export's `csv` or `ndjson`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    format: Option<String>,
}

fn some(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|text| !text.is_empty())
}

/// An instant as the form sends it: RFC 3339, or a `datetime-local` value
/// (no offset), read as UTC.
fn instant(text: &str) -> Option<String> {
    let text = some(text)?;
    if chrono::DateTime::parse_from_rfc3339(&text).is_ok() {
        return Some(text);
    }
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(&text, format).ok())
        .map(|local| local.and_utc().to_rfc3339())
        .or(Some(text))
}

impl Search {
    fn query(&self) -> EventQuery {
        EventQuery {
            from: instant(&self.from),
            to: instant(&self.to),
            action: some(&self.action),
            principal_id: some(&self.principal_id),
            target_resource_type: some(&self.target_resource_type),
            target_resource_id: None,
            status: some(&self.status),
            correlation_id: None,
            data_classification: some(&self.data_classification),
            limit: Some(PAGE),
            cursor: some(&self.cursor),
            organization_id: None,
        }
    }
}

/// `GET /console/events`.
pub async fn list(
    request: HttpRequest,
    state: web::Data<AppState>,
    search: web::Query<Search>,
) -> HttpResponse {
    let viewer = match super::viewer_who_may(&request, &state, RESOURCE, "read").await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    let search = search.into_inner();
    let filter = match event_filter(search.query(), &state) {
        Ok(filter) => filter,
        Err(error) => return bad_search(&viewer, &search, &error.to_string()),
    };
    let organization_id = viewer.identity.organization_id.clone();
    let listing = tenant::scoped(&state.pool, &organization_id, async |tx| {
        events::list(tx, &organization_id, &filter).await
    });
    let (found, histogram) = futures_util::join!(
        listing,
        histogram::section(&state, &organization_id, &filter)
    );
    let Ok(found) = found else {
        return super::refused(Refusal::Unavailable, Some(&viewer));
    };
    let older = (found.len() as i64 == PAGE)
        .then(|| found.last().map(crate::http::events::encode_cursor))
        .flatten()
        .map(|cursor| Search {
            cursor,
            ..search.clone()
        });
    let body = html! {
        h1 { "Events" }
        (search_form(&search))
        (histogram)
        (table_of(&found))
        @if viewer.may(RESOURCE, "export") {
            p {
                "Export this search: "
                a href=(url("/console/events/export", &Search { cursor: String::new(), format: Some("csv".into()), ..search.clone() })) download { "CSV" }
                " · "
                a href=(url("/console/events/export", &Search { cursor: String::new(), format: Some("ndjson".into()), ..search.clone() })) download { "NDJSON" }
            }
        }
        nav.pager aria-label="Pages" {
            @if !search.cursor.is_empty() {
                a href=(url("/console/events", &Search { cursor: String::new(), ..search.clone() })) { "Newest" }
            }
            @if let Some(older) = &older {
                a href=(url("/console/events", older)) rel="next" { "Older" }
            }
        }
    };
    HttpResponse::Ok().body(layout::page("Events", Some(&viewer), body).into_string())
}

fn url(path: &str, search: &Search) -> String {
    let query = serde_urlencoded::to_string(search).unwrap_or_default();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

fn search_form(search: &Search) -> Markup {
    let text = |name: &str, label: &str, value: &str| {
        html! {
            label { (label) input type="text" name=(name) value=(value); }
        }
    };
    let choice = |name: &str, label: &str, options: &[&str], value: &str| {
        html! {
            label { (label)
                select name=(name) {
                    option value="" { "any" }
                    @for option in options {
                        option value=(option) selected[*option == value] { (option) }
                    }
                }
            }
        }
    };
    html! {
        form.filters method="get" action="/console/events" role="search" {
            label { "From (UTC)" input type="datetime-local" name="from" value=(search.from) step="1"; }
            label { "To (UTC)" input type="datetime-local" name="to" value=(search.to) step="1"; }
            (text("action", "Action (prefix*)", &search.action))
            (text("principal_id", "Principal", &search.principal_id))
            (text("target_resource_type", "Resource type", &search.target_resource_type))
            (choice("status", "Status", STATUSES, &search.status))
            (choice("data_classification", "Classification", CLASSIFICATIONS, &search.data_classification))
            button type="submit" { "Search" }
        }
    }
}

fn table_of(found: &[StoredEvent]) -> Markup {
    html! {
        @if found.is_empty() {
            p { "No event matches." }
        } @else {
            div.table {
                table {
                    thead { tr { th { "Time" } th { "Principal" } th { "Action" } th { "Status" }
                        th { "Resource" } th { "Classification" } } }
                    tbody {
                        @for event in found {
                            tr {
                                td { a href=(format!("/console/events/{}", event.id)) { (event.timestamp) } }
                                td { (event.principal_id) }
                                td { (event.action) }
                                td class=(format!("status-{}", event.status)) { (event.status) }
                                td { (event.target_resource_type.as_deref().unwrap_or("")) " "
                                     (event.target_resource_id.as_deref().unwrap_or("")) }
                                td { (event.data_classification) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/events/export?…&format=csv|ndjson`: the search as a file,
/// as `GET /v1/events/export` writes it (streamed, any size).
pub async fn export(
    request: HttpRequest,
    state: web::Data<AppState>,
    search: web::Query<Search>,
) -> HttpResponse {
    let viewer = match super::viewer_who_may(&request, &state, RESOURCE, "export").await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    let Some(format) = ExportFormat::parse(search.format.as_deref()) else {
        return bad_search(&viewer, &search, "format: must be csv or ndjson");
    };
    match event_filter(search.query(), &state) {
        Ok(filter) => export_response(&state, &viewer.identity.organization_id, filter, format),
        Err(error) => bad_search(&viewer, &search, &error.to_string()),
    }
}

fn bad_search(viewer: &Viewer, search: &Search, problem: &str) -> HttpResponse {
    let page = layout::page(
        "Events",
        Some(viewer),
        html! { (search_form(search)) p.notice role="alert" { (problem) } },
    );
    HttpResponse::BadRequest().body(page.into_string())
}

/// `GET /console/events/{id}`: every field of one event, and its hash.
pub async fn show(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> HttpResponse {
    let viewer = match super::viewer_who_may(&request, &state, RESOURCE, "read").await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    let Ok(id) = id.parse::<i64>() else {
        return not_found(&viewer);
    };
    let organization_id = viewer.identity.organization_id.clone();
    let found = tenant::scoped(&state.pool, &organization_id, async |tx| {
        events::get(tx, &organization_id, id).await
    })
    .await;
    let event = match found {
        Ok(Some(event)) => event,
        Ok(None) => return not_found(&viewer),
        Err(_) => return super::refused(Refusal::Unavailable, Some(&viewer)),
    };
    let proof = proof_data(&state, &organization_id, id).await;
    let body = html! {
        h1 { "Event " (event.id) }
        dl {
            @for (column, value) in table::COLUMNS.iter().zip(table::values(&event)) {
                dt { (column) }
                @if *column == "details" {
                    dd.mono { pre { (value.unwrap_or_default()) } }
                } @else if *column == "hash" {
                    dd.mono { (value.unwrap_or_default()) }
                } @else {
                    dd { (value.unwrap_or_default()) }
                }
            }
        }
        section aria-labelledby="proof" {
            h2 #proof { "Inclusion proof" }
            @match &proof {
                Ok(data) => {
                    p #proof-status role="status" { "Checking the proof in this browser…" }
                    script #proof-data type="application/json" { (PreEscaped(data)) }
                    script src="/console/assets/verify.js" {}
                }
                Err(why) => p { (why) },
            }
        }
        p { a href="/console/events" { "Back to the events" } }
    };
    let title = format!("Event {}", event.id);
    HttpResponse::Ok().body(layout::page(&title, Some(&viewer), body).into_string())
}

/// The event's inclusion proof against the latest checkpoint, with every
/// published signing key, as the JSON `verify.js` reads from the page (`<`,
/// `>` and `&` escaped, so that it cannot end its element); or why there is
/// none to check.
async fn proof_data(state: &AppState, organization_id: &str, id: i64) -> Result<String, String> {
    let read = tenant::scoped(&state.pool, organization_id, async |tx| {
        let proof = proofs::event_proof(tx, &state.archives, organization_id, id, None).await;
        let keys = signing_keys::list(tx).await.map_err(ProveError::from)?;
        Ok::<_, ProveError>((proof, keys))
    })
    .await;
    let (proof, keys) = match read {
        Ok((Ok(proof), keys)) => (proof, keys),
        Ok((Err(ProveError::NoCheckpoint | ProveError::NewerThanCheckpoint { .. }), _)) => {
            return Err(
                "No signed checkpoint covers this event yet: its proof can be \
                        checked once the next checkpoint is signed."
                    .to_owned(),
            )
        }
        Ok((Err(error), _)) => return Err(format!("No proof can be given: {error}.")),
        Err(_) => return Err("The proof cannot be read just now.".to_owned()),
    };
    let keys: Vec<_> = keys
        .iter()
        .map(|key| json!({"key_id": key.key_id, "public_key": STANDARD.encode(&key.public_key)}))
        .collect();
    let data = json!({"proof": proof, "keys": keys}).to_string();
    Ok(data
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026"))
}

fn not_found(viewer: &Viewer) -> HttpResponse {
    HttpResponse::NotFound().body(
        layout::notice(
            "Not found",
            Some(viewer),
            "No such event in your organization.",
        )
        .into_string(),
    )
}
