//! `/v1/alerts` and `/v1/alert-subscriptions`: an organization's alerts (list,
//! statistics, lifecycle, custom alerts) and which destinations hear of them.

use actix_web::{web, HttpResponse};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::admin_trail;
use super::api_error::{ApiError, FieldError};
use super::auth::Caller;
use super::cursor;
use super::extract::{Json, OptionalJson, Path, Query};
use super::AppState;
use crate::alerts::model::{AlertStatus, AlertType, Severity, Transition, UnknownValue};
use crate::db::alerts::{
    self, Alert, AlertFilter, AlertStatistics, NewAlert, NewSubscription, Notice, Subscription,
    SubscriptionChange, TransitionError,
};
use crate::db::{destinations, tenant};
use crate::validation::timestamp_field;

const RESOURCE: &str = "audit.alerts";

/// The `title` column is `varchar(500)`.
const MAX_TITLE_CHARS: usize = 500;
/// The `source` column is `varchar(100)`.
const MAX_SOURCE_CHARS: usize = 100;
/// The `correlation_id` column is `varchar(255)`.
const MAX_CORRELATION_CHARS: usize = 255;
/// Enough for a post-mortem summary, short enough to list.
pub const MAX_NOTES_CHARS: usize = 10_000;
/// What a custom alert says raised it when the client does not.
const DEFAULT_SOURCE: &str = "custom";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// Any of these severities, comma-separated.
    #[param(value_type = Option<Vec<Severity>>, style = Form, explode = false, min_items = 1)]
    pub severity: Option<String>,
    /// Any of these types, comma-separated.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<Vec<AlertType>>, style = Form, explode = false, min_items = 1)]
    pub alert_type: Option<String>,
    /// Any of these statuses, comma-separated.
    #[param(value_type = Option<Vec<AlertStatus>>, style = Form, explode = false, min_items = 1)]
    pub status: Option<String>,
    /// Any of these exact sources, comma-separated.
    #[param(value_type = Option<Vec<String>>, style = Form, explode = false, min_items = 1)]
    pub source: Option<String>,
    /// Created at or after (RFC 3339); not after `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Created before (RFC 3339).
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Default 100.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Checked against the key's organization (403 when it differs).
    pub organization_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertPage {
    /// Newest first.
    pub alerts: Vec<Alert>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The values of a comma-separated filter, each one checked.
fn values<T: std::str::FromStr<Err = UnknownValue>>(
    field: &str,
    raw: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Vec<T> {
    let Some(raw) = raw else {
        return Vec::new();
    };
    let mut parsed = Vec::new();
    for value in raw.split(',') {
        match value.trim().parse::<T>() {
            Ok(value) => parsed.push(value),
            Err(error) => errors.push(FieldError::new(field, error.to_string())),
        }
    }
    parsed
}

fn filter_from(query: AlertQuery) -> Result<AlertFilter, ApiError> {
    let mut errors = Vec::new();
    let severities = values("severity", query.severity.as_deref(), &mut errors);
    let types = values("type", query.alert_type.as_deref(), &mut errors);
    let statuses = values("status", query.status.as_deref(), &mut errors);
    let sources: Vec<String> = query
        .source
        .as_deref()
        .map(|raw| {
            raw.split(',')
                .map(|source| source.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let from = timestamp_field("from", query.from.as_deref(), &mut errors);
    let to = timestamp_field("to", query.to.as_deref(), &mut errors);
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            errors.push(FieldError::new("from", "must not be after `to`"));
        }
    }
    let limit = match query.limit.as_deref().map(str::parse::<i64>) {
        None => 100,
        Some(Ok(limit)) if (1..=1000).contains(&limit) => limit,
        Some(_) => {
            errors.push(FieldError::new("limit", "must be between 1 and 1000"));
            100
        }
    };
    let after = match query.cursor.as_deref().map(cursor::decode) {
        None => None,
        Some(Some(after)) => Some(after),
        Some(None) => {
            errors.push(FieldError::new("cursor", "not a cursor this API returned"));
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(AlertFilter {
        severities,
        types,
        statuses,
        sources,
        from,
        to,
        after,
        limit,
    })
}

/// The organization's alerts, newest first, filtered, with keyset pagination.
#[utoipa::path(get, path = "/v1/alerts", operation_id = "list_alerts", tag = "alerts", params(AlertQuery),
    responses((status = 200, body = AlertPage), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: Query<AlertQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let filter = filter_from(query.into_inner())?;
    let organization_id = caller.organization_id();
    let page = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(alerts::list(tx, organization_id, &filter).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(AlertPage {
        alerts: page.alerts,
        next_cursor: page
            .next
            .map(|(created_at, id)| cursor::encode(created_at, id)),
    }))
}

/// Counts of the organization's alerts by status, severity, type and source,
/// and per day over the last 30 UTC days: what a dashboard shows.
#[utoipa::path(get, path = "/v1/alerts/statistics", operation_id = "get_alert_statistics", tag = "alerts",
    responses((status = 200, body = AlertStatistics), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn statistics(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let statistics = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(alerts::statistics(tx, organization_id).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(statistics))
}

/// One alert of the organization.
#[utoipa::path(get, path = "/v1/alerts/{id}", operation_id = "get_alert", tag = "alerts",
    params(("id" = Uuid, Path, description = "Alert id")),
    responses((status = 200, body = Alert), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(alert = %id))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let alert = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(alerts::get(tx, organization_id, *id).await?)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("alert {id}")))?;
    Ok(HttpResponse::Ok().json(alert))
}

/// Takes a lifecycle step on one of the caller's organization's alerts and
/// answers with the alert as it now is.
async fn step(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    transition: Transition<'_>,
) -> Result<HttpResponse, ApiError> {
    let organization_id = caller.organization_id();
    let alert = tenant::scoped(&state.pool, organization_id, async |tx| {
        alerts::transition(tx, organization_id, id, transition)
            .await
            .map_err(|error| match error {
                TransitionError::NotFound => ApiError::NotFound(format!("alert {id}")),
                TransitionError::NotAllowed { current, wanted } => ApiError::Conflict(format!(
                    "alert {id} is {current}: only an active{} alert can become {wanted}",
                    if wanted == AlertStatus::Acknowledged {
                        ""
                    } else {
                        " or acknowledged"
                    }
                )),
                TransitionError::Database(error) => error.into(),
            })
    })
    .await?;
    tracing::info!(status = %alert.status, "Alert moved on");
    Ok(HttpResponse::Ok().json(alert))
}

/// Says someone is on it: an active alert becomes acknowledged (and stays open,
/// so its rule keeps counting firings on it).
#[utoipa::path(post, path = "/v1/alerts/{id}/acknowledge", operation_id = "acknowledge_alert", tag = "alerts",
    params(("id" = Uuid, Path, description = "Alert id")),
    responses((status = 200, body = Alert), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "The alert is not active")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(alert = %id))]
pub async fn acknowledge(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "acknowledge")?;
    let by = caller.actor();
    step(&state, &caller, *id, Transition::Acknowledge { by: &by }).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveAlert {
    /// What was done about it.
    #[schema(max_length = 10000)]
    pub notes: Option<String>,
}

/// Closes an open alert as dealt with. Its rule stays silent for that group
/// during the rule's cooldown. The body is optional.
#[utoipa::path(post, path = "/v1/alerts/{id}/resolve", operation_id = "resolve_alert", tag = "alerts",
    params(("id" = Uuid, Path, description = "Alert id")), request_body = Option<ResolveAlert>,
    responses((status = 200, body = Alert), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 409, description = "The alert is resolved or dismissed already")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(alert = %id))]
pub async fn resolve(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
    body: OptionalJson<ResolveAlert>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "resolve")?;
    let body = body.into_inner().unwrap_or_default();
    if body
        .notes
        .as_ref()
        .is_some_and(|notes| notes.chars().count() > MAX_NOTES_CHARS)
    {
        return Err(ApiError::Validation(vec![FieldError::new(
            "notes",
            format!("at most {MAX_NOTES_CHARS} characters"),
        )]));
    }
    let by = caller.actor();
    step(
        &state,
        &caller,
        *id,
        Transition::Resolve {
            by: &by,
            notes: body.notes.as_deref(),
        },
    )
    .await
}

/// Closes an open alert as not worth acting on. Unlike a resolution, it starts
/// no cooldown: the rule may raise it again.
#[utoipa::path(post, path = "/v1/alerts/{id}/dismiss", operation_id = "dismiss_alert", tag = "alerts",
    params(("id" = Uuid, Path, description = "Alert id")),
    responses((status = 200, body = Alert), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "The alert is resolved or dismissed already")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(alert = %id))]
pub async fn dismiss(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "dismiss")?;
    let by = caller.actor();
    step(&state, &caller, *id, Transition::Dismiss { by: &by }).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAlert {
    #[schema(value_type = Severity)]
    pub severity: String,
    /// Always CUSTOM: other types are raised by the worker itself.
    #[serde(rename = "type")]
    #[schema(pattern = "^CUSTOM$")]
    pub alert_type: Option<String>,
    #[schema(max_length = 500, pattern = r"\S")]
    pub title: String,
    pub description: Option<String>,
    /// What raised it; default `custom`.
    #[schema(max_length = 100, pattern = r"\S")]
    pub source: Option<String>,
    /// Ties the alert to the events or requests behind it.
    #[schema(min_length = 1, max_length = 255)]
    pub correlation_id: Option<String>,
    /// A JSON object; default `{}`.
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "crate::validation::optional_bounded_json")]
    pub metadata: Option<Value>,
}

impl CreateAlert {
    /// The severity, or every problem of the request, each naming its field.
    fn validated(&self) -> Result<Severity, Vec<FieldError>> {
        let mut errors = Vec::new();
        let severity = self
            .severity
            .parse::<Severity>()
            .map_err(|error| errors.push(FieldError::new("severity", error.to_string())));
        let custom = AlertType::Custom.as_str();
        if self.alert_type.as_deref().is_some_and(|t| t != custom) {
            errors.push(FieldError::new(
                "type",
                format!("only {custom}: other types are raised by the worker"),
            ));
        }
        if self.title.trim().is_empty() || self.title.chars().count() > MAX_TITLE_CHARS {
            errors.push(FieldError::new(
                "title",
                format!("1 to {MAX_TITLE_CHARS} characters, not only blanks"),
            ));
        }
        if self.source.as_ref().is_some_and(|source| {
            source.trim().is_empty() || source.chars().count() > MAX_SOURCE_CHARS
        }) {
            errors.push(FieldError::new(
                "source",
                format!("1 to {MAX_SOURCE_CHARS} characters, not only blanks"),
            ));
        }
        if self
            .correlation_id
            .as_ref()
            .is_some_and(|id| id.is_empty() || id.chars().count() > MAX_CORRELATION_CHARS)
        {
            errors.push(FieldError::new(
                "correlation_id",
                format!("1 to {MAX_CORRELATION_CHARS} characters"),
            ));
        }
        if self.metadata.as_ref().is_some_and(|m| !m.is_object()) {
            errors.push(FieldError::new("metadata", "must be a JSON object"));
        }
        match severity {
            Ok(severity) if errors.is_empty() => Ok(severity),
            _ => Err(errors),
        }
    }
}

/// Raises a CUSTOM alert (a client's own monitoring, say) and, in the same
/// transaction, queues its notification to every subscribed destination: the
/// alert and its deliveries exist together or not at all.
#[utoipa::path(post, path = "/v1/alerts", operation_id = "create_alert", tag = "alerts", request_body = CreateAlert,
    responses((status = 201, body = Alert), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<CreateAlert>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "create")?;
    let mut body = body.into_inner();
    let severity = body.validated().map_err(ApiError::Validation)?;
    let organization_id = caller.organization_id();
    let metadata = body
        .metadata
        .take()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let (alert, notified) = tenant::scoped(&state.pool, organization_id, async |tx| {
        let alert = alerts::insert(
            tx,
            &NewAlert {
                organization_id,
                severity,
                alert_type: AlertType::Custom,
                title: &body.title,
                description: body.description.as_deref(),
                source: body.source.as_deref().unwrap_or(DEFAULT_SOURCE),
                correlation_id: body.correlation_id.as_deref(),
                metadata: &metadata,
            },
        )
        .await?;
        let notified = alerts::notify_subscribers(tx, &alert, Notice::New).await?;
        Ok::<_, ApiError>((alert, notified))
    })
    .await?;
    tracing::info!(alert = %alert.id, %severity, notified, "Raised a custom alert");
    Ok(HttpResponse::Created().json(alert))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// One of the organization's destinations; one subscription each.
    pub destination_id: i64,
    /// Alerts at least this severe; default HIGH.
    #[schema(value_type = Option<Severity>)]
    pub min_severity: Option<String>,
    /// Alerts of these types; empty or absent: every type.
    #[schema(value_type = Option<Vec<AlertType>>)]
    pub types: Option<Vec<String>>,
    /// Default true.
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscription {
    #[schema(value_type = Option<Severity>)]
    pub min_severity: Option<String>,
    /// Empty: every type.
    #[schema(value_type = Option<Vec<AlertType>>)]
    pub types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// Checks a subscription's `min_severity` and `types`, naming each bad one.
fn subscription_fields(
    min_severity: Option<&str>,
    types: Option<&[String]>,
    errors: &mut Vec<FieldError>,
) -> (Option<Severity>, Option<Vec<AlertType>>) {
    let min_severity = min_severity.and_then(|raw| match raw.parse::<Severity>() {
        Ok(severity) => Some(severity),
        Err(error) => {
            errors.push(FieldError::new("min_severity", error.to_string()));
            None
        }
    });
    let types = types.map(|types| {
        let mut parsed = Vec::new();
        for (i, raw) in types.iter().enumerate() {
            match raw.parse::<AlertType>() {
                Ok(alert_type) => parsed.push(alert_type),
                Err(error) => {
                    errors.push(FieldError::new(format!("types[{i}]"), error.to_string()))
                }
            }
        }
        parsed.sort_unstable();
        parsed.dedup();
        parsed
    });
    (min_severity, types)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    pub subscriptions: Vec<Subscription>,
}

/// Subscribes one of the organization's destinations to its alerts: each new
/// or escalated alert that passes the filters is delivered there.
#[utoipa::path(post, path = "/v1/alert-subscriptions", operation_id = "create_alert_subscription", tag = "alerts",
    request_body = CreateSubscription,
    responses((status = 201, body = Subscription), (status = 400), (status = 401), (status = 403),
        (status = 409, description = "The destination has a subscription already")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn create_subscription(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<CreateSubscription>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "manage")?;
    let body = body.into_inner();
    let mut errors = Vec::new();
    let (min_severity, types) = subscription_fields(
        body.min_severity.as_deref(),
        body.types.as_deref(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let organization_id = caller.organization_id();
    let created_by = caller.actor();
    let subscription = tenant::scoped(&state.pool, organization_id, async |tx| {
        if destinations::get(tx, organization_id, body.destination_id)
            .await?
            .is_none()
        {
            return Err(ApiError::Validation(vec![FieldError::new(
                "destination_id",
                format!("no destination {}", body.destination_id),
            )]));
        }
        let subscription = alerts::insert_subscription(
            tx,
            &NewSubscription {
                organization_id,
                destination_id: body.destination_id,
                min_severity: min_severity.unwrap_or(Severity::High),
                types: types.as_deref().unwrap_or_default(),
                enabled: body.enabled.unwrap_or(true),
                created_by: &created_by,
            },
        )
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "destination {} has an alert subscription already; change that one",
                body.destination_id
            ))
        })?;
        let change = ("alert_subscription", "create");
        let details = json!(&subscription);
        admin_trail::record(&state, tx, &caller, change, subscription.id, details).await?;
        Ok(subscription)
    })
    .await?;
    tracing::info!(
        subscription = subscription.id,
        "Subscribed a destination to alerts"
    );
    Ok(HttpResponse::Created().json(subscription))
}

/// The organization's alert subscriptions.
#[utoipa::path(get, path = "/v1/alert-subscriptions", operation_id = "list_alert_subscriptions", tag = "alerts",
    responses((status = 200, body = SubscriptionList), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list_subscriptions(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let subscriptions = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(alerts::list_subscriptions(tx, organization_id).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(SubscriptionList { subscriptions }))
}

#[utoipa::path(get, path = "/v1/alert-subscriptions/{id}", operation_id = "get_alert_subscription", tag = "alerts",
    params(("id" = i64, Path, description = "Subscription id")),
    responses((status = 200, body = Subscription), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(subscription = %id))]
pub async fn get_subscription(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let subscription = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(alerts::get_subscription(tx, organization_id, *id).await?)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("alert subscription {id}")))?;
    Ok(HttpResponse::Ok().json(subscription))
}

/// Changes what a destination hears of; absent fields keep their value.
#[utoipa::path(patch, path = "/v1/alert-subscriptions/{id}", operation_id = "update_alert_subscription", tag = "alerts",
    params(("id" = i64, Path, description = "Subscription id")), request_body = UpdateSubscription,
    responses((status = 200, body = Subscription), (status = 400), (status = 401), (status = 403),
        (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(subscription = %id))]
pub async fn update_subscription(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
    body: Json<UpdateSubscription>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "manage")?;
    let body = body.into_inner();
    let mut errors = Vec::new();
    let (min_severity, types) = subscription_fields(
        body.min_severity.as_deref(),
        body.types.as_deref(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let change = SubscriptionChange {
        min_severity,
        types,
        enabled: body.enabled,
    };
    let organization_id = caller.organization_id();
    let subscription = tenant::scoped(&state.pool, organization_id, async |tx| {
        let subscription = alerts::update_subscription(tx, organization_id, *id, &change).await?;
        if let Some(subscription) = &subscription {
            let change = ("alert_subscription", "update");
            admin_trail::record(&state, tx, &caller, change, *id, json!(subscription)).await?;
        }
        Ok::<_, ApiError>(subscription)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("alert subscription {id}")))?;
    Ok(HttpResponse::Ok().json(subscription))
}

/// Stops a destination hearing of alerts; deliveries already queued still go.
#[utoipa::path(delete, path = "/v1/alert-subscriptions/{id}", operation_id = "delete_alert_subscription", tag = "alerts",
    params(("id" = i64, Path, description = "Subscription id")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(subscription = %id))]
pub async fn delete_subscription(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "manage")?;
    let organization_id = caller.organization_id();
    let deleted = tenant::scoped(&state.pool, organization_id, async |tx| {
        let deleted = alerts::delete_subscription(tx, organization_id, *id).await?;
        if deleted {
            let change = ("alert_subscription", "delete");
            admin_trail::record(&state, tx, &caller, change, *id, json!({})).await?;
        }
        Ok::<_, ApiError>(deleted)
    })
    .await?;
    if !deleted {
        return Err(ApiError::NotFound(format!("alert subscription {id}")));
    }
    tracing::info!("Deleted an alert subscription");
    Ok(HttpResponse::NoContent().finish())
}
