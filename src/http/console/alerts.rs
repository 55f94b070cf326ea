//! The alerts page: the organization's alerts by status and severity, and
//! the steps the role allows on each (acknowledge, resolve with notes,
//! dismiss), each a form with the session's CSRF token.

use std::str::FromStr;

use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::charts::{self, Column};
use super::layout;
use super::session::{self, Refusal, Viewer, CSRF_FIELD};
use crate::alerts::model::{AlertStatus, Severity, Transition};
use crate::db::alerts::{self, Alert, AlertFilter, AlertStatistics, TransitionError};
use crate::db::tenant;
use crate::http::alerts::MAX_NOTES_CHARS;
use crate::http::AppState;

const RESOURCE: &str = "audit.alerts";
/// Alerts shown, newest first.
const SHOWN: i64 = 100;

#[derive(Debug, Default, Deserialize)]
pub struct AlertSearch {
    #[serde(default)]
    status: String,
    #[serde(default)]
    severity: String,
}

/// `GET /console/alerts`.
pub async fn list(
    request: HttpRequest,
    state: web::Data<AppState>,
    search: web::Query<AlertSearch>,
) -> HttpResponse {
    let viewer = match super::viewer_who_may(&request, &state, RESOURCE, "read").await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    // Open alerts unless another status is asked for; unknown values match all.
    let statuses = match search.status.as_str() {
        "" => vec![AlertStatus::Active, AlertStatus::Acknowledged],
        "all" => Vec::new(),
        other => AlertStatus::from_str(other).into_iter().collect(),
    };
    let filter = AlertFilter {
        severities: Severity::from_str(&search.severity).into_iter().collect(),
        types: Vec::new(),
        statuses,
        sources: Vec::new(),
        from: None,
        to: None,
        after: None,
        limit: SHOWN,
    };
    let organization_id = viewer.identity.organization_id.clone();
    let found = tenant::scoped(&state.pool, &organization_id, async |tx| {
        let page = alerts::list(tx, &organization_id, &filter).await?;
        let statistics = alerts::statistics(tx, &organization_id).await?;
        Ok::<_, crate::db::DbError>((page, statistics))
    })
    .await;
    let Ok((page, statistics)) = found else {
        return super::refused(Refusal::Unavailable, Some(&viewer));
    };
    let body = html! {
        h1 { "Alerts" }
        (charts_of(&statistics))
        (search_form(&search))
        @if page.alerts.is_empty() {
            p { "No alert matches." }
        } @else {
            div.table {
                table {
                    thead { tr { th { "Raised" } th { "Severity" } th { "Type" } th { "Status" }
                        th { "Alert" } th { "Actions" } } }
                    tbody {
                        @for alert in &page.alerts {
                            tr { (row(&viewer, alert)) }
                        }
                    }
                }
            }
        }
    };
    HttpResponse::Ok().body(layout::page("Alerts", Some(&viewer), body).into_string())
}

/// The statistics of `GET /v1/alerts/statistics`, drawn.
fn charts_of(statistics: &AlertStatistics) -> Markup {
    let named = |counts: &std::collections::BTreeMap<String, i64>| -> Vec<(String, i64)> {
        counts
            .iter()
            .map(|(name, count)| (name.clone(), *count))
            .collect()
    };
    let by_severity: Vec<(String, i64)> = Severity::ALL
        .iter()
        .map(|severity| {
            let count = statistics
                .by_severity
                .get(severity.as_str())
                .copied()
                .unwrap_or(0);
            (severity.as_str().to_owned(), count)
        })
        .collect();
    let trend: Vec<Column> = statistics
        .daily_trend
        .iter()
        .map(|day| Column {
            label: day.date.format("%m-%d").to_string(),
            title: format!("{}: {} alerts", day.date, day.count),
            parts: vec![("bar", day.count)],
        })
        .collect();
    let days = trend.len();
    let raised: i64 = statistics.daily_trend.iter().map(|day| day.count).sum();
    html! {
        div.charts {
            figure {
                (charts::bars(&format!("Alerts by severity, {} in all", statistics.total), &by_severity))
                figcaption { "By severity (" (statistics.total) " alerts)" }
            }
            figure {
                (charts::bars("Alerts by status", &named(&statistics.by_status)))
                figcaption { "By status" }
            }
            figure {
                (charts::columns(&format!("Alerts raised on each of the last {days} days (UTC): {raised}"), &trend))
                figcaption { "Raised per day, last " (days) " days (UTC)" }
            }
        }
    }
}

fn search_form(search: &AlertSearch) -> Markup {
    let statuses = ["", "all", "active", "acknowledged", "resolved", "dismissed"];
    html! {
        form.filters method="get" action="/console/alerts" role="search" {
            label { "Status"
                select name="status" {
                    @for status in statuses {
                        option value=(status) selected[search.status == status] {
                            (if status.is_empty() { "open" } else { status })
                        }
                    }
                }
            }
            label { "Severity"
                select name="severity" {
                    option value="" { "any" }
                    @for severity in Severity::ALL {
                        option value=(severity.as_str()) selected[search.severity == severity.as_str()] {
                            (severity.as_str())
                        }
                    }
                }
            }
            button type="submit" { "Show" }
        }
    }
}

fn row(viewer: &Viewer, alert: &Alert) -> Markup {
    let open = matches!(
        alert.status,
        AlertStatus::Active | AlertStatus::Acknowledged
    );
    let action = |step: &str| format!("/console/alerts/{}/{step}", alert.id);
    html! {
        td { (alert.created_at.to_rfc3339()) }
        td { (alert.severity.as_str()) }
        td { (alert.alert_type.as_str()) }
        td { (alert.status.as_str()) }
        td {
            strong { (alert.title) }
            @if let Some(description) = &alert.description { br; (description) }
            @if let Some(notes) = &alert.resolution_notes { br; em { "Notes: " (notes) } }
        }
        td {
            @if alert.status == AlertStatus::Active && viewer.may(RESOURCE, "acknowledge") {
                form method="post" action=(action("acknowledge")) {
                    input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf_token);
                    button type="submit" { "Acknowledge" }
                }
            }
            @if open && viewer.may(RESOURCE, "resolve") {
                form method="post" action=(action("resolve")) {
                    input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf_token);
                    label { "Notes"
                        textarea name="notes" rows="2" maxlength=(MAX_NOTES_CHARS) {}
                    }
                    button type="submit" { "Resolve" }
                }
            }
            @if open && viewer.may(RESOURCE, "dismiss") {
                form method="post" action=(action("dismiss")) {
                    input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf_token);
                    button type="submit" { "Dismiss" }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct StepForm {
    csrf: Option<String>,
    notes: Option<String>,
}

/// `POST /console/alerts/{id}/{acknowledge|resolve|dismiss}`: the step, then
/// back to the alerts.
pub async fn step(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<StepForm>,
) -> HttpResponse {
    let viewer = match super::form_viewer(&request, &state, form.csrf.as_deref()).await {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    let (id, step) = path.into_inner();
    let by = format!("api-key:{}", viewer.identity.key_id);
    let notes = form
        .notes
        .as_deref()
        .map(str::trim)
        .filter(|notes| !notes.is_empty());
    let transition = match step.as_str() {
        "acknowledge" => Transition::Acknowledge { by: &by },
        "resolve" => Transition::Resolve { by: &by, notes },
        "dismiss" => Transition::Dismiss { by: &by },
        _ => return not_found(&viewer),
    };
    if !viewer.may(RESOURCE, &step) {
        return super::refused(Refusal::Forbidden, Some(&viewer));
    }
    if notes.is_some_and(|notes| notes.chars().count() > MAX_NOTES_CHARS) {
        let message = format!("Notes hold at most {MAX_NOTES_CHARS} characters.");
        return HttpResponse::BadRequest()
            .body(layout::notice("Too long", Some(&viewer), &message).into_string());
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found(&viewer);
    };
    let organization_id = viewer.identity.organization_id.clone();
    let stepped = tenant::scoped(&state.pool, &organization_id, async |tx| {
        alerts::transition(tx, &organization_id, id, transition).await
    })
    .await;
    match stepped {
        Ok(_) => session::see_other("/console/alerts"),
        Err(TransitionError::NotFound) => not_found(&viewer),
        Err(TransitionError::NotAllowed { current, .. }) => {
            let message = format!("This alert is {current} already.");
            HttpResponse::Conflict()
                .body(layout::notice("Already done", Some(&viewer), &message).into_string())
        }
        Err(TransitionError::Database(_)) => super::refused(Refusal::Unavailable, Some(&viewer)),
    }
}

fn not_found(viewer: &Viewer) -> HttpResponse {
    HttpResponse::NotFound().body(
        layout::notice(
            "Not found",
            Some(viewer),
            "No such alert in your organization.",
        )
        .into_string(),
    )
}
