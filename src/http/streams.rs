//! `/v1/subscriptions`: event streams. Each sends the organization's committed
//! events that match its filter to one destination, in chain order, in
//! batches, and shows how far behind it is.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::Transaction;
use utoipa::ToSchema;

use super::admin_trail;
use super::api_error::{ApiError, FieldError};
use super::auth::Caller;
use super::extract::{Json, Path};
use super::AppState;
use crate::db::streams::{
    self, BatchLimits, ChainPosition, NewSubscription, StreamFilter, Subscription,
};
use crate::db::{destinations, tenant};
use crate::events::{CLASSIFICATIONS, STATUSES};
use crate::validation::{Strictness, TextRules};

const RESOURCE: &str = "audit.deliveries";
/// What a stream can be sent as.
const FORMATS: &[&str] = &["native", "ocsf", "splunk_hec"];
/// Destination kinds a stream cannot use: an email per batch is no stream.
const REFUSED_KINDS: &[&str] = &["email"];
const DEFAULT_MAX_EVENTS: i32 = 500;
const DEFAULT_MAX_DELAY_MS: i32 = 1000;
const MAX_EVENTS: i64 = 10_000;
/// An hour: a batch that waits longer is not a stream any more.
const MAX_DELAY_MS: i64 = 3_600_000;
/// The filter's text fields are `varchar(255)` columns.
const MAX_FILTER_CHARS: usize = 255;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamBatch {
    /// Events per batch at most: 1 to 10,000 (default 500).
    #[schema(minimum = 1, maximum = 10000)]
    pub max_events: Option<i64>,
    /// How long an event may wait for its batch to fill: 0 to 3,600,000 ms (default 1000).
    #[schema(minimum = 0, maximum = 3600000)]
    pub max_delay_ms: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStreamSubscription {
    /// A destination of the organization (not email).
    pub destination_id: i64,
    /// Which events: the filters of `GET /v1/events`; all events when absent.
    pub filter: Option<StreamFilter>,
    /// native (default), ocsf or splunk_hec.
    #[schema(pattern = "^(native|ocsf|splunk_hec)$")]
    pub format: Option<String>,
    pub batch: Option<StreamBatch>,
    /// `now` (default: what commits from now on), `earliest` (the whole
    /// trail), or an RFC 3339 instant (events from then on).
    #[schema(schema_with = start_schema)]
    pub start: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamSubscriptionChange {
    pub destination_id: Option<i64>,
    /// Replaces the whole filter.
    pub filter: Option<StreamFilter>,
    #[schema(pattern = "^(native|ocsf|splunk_hec)$")]
    pub format: Option<String>,
    /// Replaces the limits it names.
    pub batch: Option<StreamBatch>,
}

/// `start`: `now`, `earliest`, or an RFC 3339 instant (or null: `now`).
fn start_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["now", "earliest"])),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build()
        .into()
}

/// A subscription, with its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamSubscription {
    pub id: i64,
    pub destination_id: i64,
    pub filter: StreamFilter,
    pub format: String,
    pub batch: BatchLimits,
    /// As created: `now`, `earliest` or an RFC 3339 instant.
    pub start: String,
    /// `running`, `paused`, or `failing` (the destination has not taken the batch in flight yet).
    pub state: String,
    /// The last event the destination accepted; null before the first batch.
    pub last_delivered_event_id: Option<i64>,
    pub last_delivered_at: Option<DateTime<Utc>>,
    /// Matching events committed and not yet accepted, counted up to 100,000.
    pub lag_events: i64,
    /// How long the oldest of them has waited since it was written; 0 when none waits.
    pub lag_seconds: f64,
    /// Failed attempts of the batch in flight (0 when none is).
    pub consecutive_failures: i32,
    /// Why the batch in flight's last attempt failed.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamSubscriptionList {
    pub subscriptions: Vec<StreamSubscription>,
}

/// The subscription as the API shows it, its lag read in `transaction`.
pub async fn view(
    transaction: &Transaction<'_>,
    subscription: Subscription,
) -> Result<StreamSubscription, ApiError> {
    let lag = streams::lag(transaction, &subscription).await?;
    let batch = subscription.batch.as_ref();
    let state = if subscription.paused {
        "paused"
    } else if batch.is_some_and(|batch| batch.failures > 0) {
        "failing"
    } else {
        "running"
    };
    let lag_seconds = lag.oldest_written_at.map_or(0.0, |oldest| {
        (Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0
    });
    Ok(StreamSubscription {
        id: subscription.id,
        destination_id: subscription.destination_id,
        filter: subscription.filter,
        format: subscription.format,
        batch: subscription.limits,
        start: subscription.start,
        state: state.to_owned(),
        last_delivered_event_id: subscription.last_delivered_event_id,
        last_delivered_at: subscription.last_delivered_at,
        lag_events: lag.events,
        lag_seconds,
        consecutive_failures: batch.map_or(0, |batch| batch.failures),
        last_error: batch.and_then(|batch| batch.last_error.clone()),
        last_error_at: batch.and_then(|batch| batch.last_error_at),
        created_by: subscription.created_by,
        created_at: subscription.created_at,
        updated_at: subscription.updated_at,
    })
}

/// The problems of a filter, each named `<prefix><field>`.
pub(super) fn filter_problems(filter: &StreamFilter, prefix: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let texts = [
        ("action", &filter.action),
        ("principal_id", &filter.principal_id),
        ("target_resource_type", &filter.target_resource_type),
    ];
    for (field, value) in texts {
        let Some(value) = value else { continue };
        let problem = TextRules::REQUEST
            .problem(value, Strictness::Text)
            .or_else(|| {
                (value.trim().is_empty() || value.chars().count() > MAX_FILTER_CHARS)
                    .then(|| format!("1 to {MAX_FILTER_CHARS} characters, not only blanks"))
            });
        if let Some(problem) = problem {
            errors.push(FieldError::new(format!("{prefix}{field}"), problem));
        }
    }
    let choices = [
        ("status", &filter.status, STATUSES),
        (
            "data_classification",
            &filter.data_classification,
            CLASSIFICATIONS,
        ),
    ];
    for (field, value, allowed) in choices {
        if value
            .as_ref()
            .is_some_and(|value| !allowed.contains(&value.as_str()))
        {
            errors.push(FieldError::new(
                format!("{prefix}{field}"),
                format!("must be one of {}", allowed.join(", ")),
            ));
        }
    }
    errors
}

fn format_problem(format: &str) -> Option<FieldError> {
    (!FORMATS.contains(&format))
        .then(|| FieldError::new("format", format!("must be one of {}", FORMATS.join(", "))))
}

/// `batch` applied over `limits`.
fn batch_limits(
    batch: &StreamBatch,
    limits: BatchLimits,
    errors: &mut Vec<FieldError>,
) -> BatchLimits {
    let mut bounded =
        |field: &str, value: Option<i64>, range: std::ops::RangeInclusive<i64>, current: i32| {
            match value {
                None => current,
                Some(value) if range.contains(&value) => value as i32,
                Some(_) => {
                    errors.push(FieldError::new(
                        format!("batch.{field}"),
                        format!("must be between {} and {}", range.start(), range.end()),
                    ));
                    current
                }
            }
        };
    BatchLimits {
        max_events: bounded(
            "max_events",
            batch.max_events,
            1..=MAX_EVENTS,
            limits.max_events,
        ),
        max_delay_ms: bounded(
            "max_delay_ms",
            batch.max_delay_ms,
            0..=MAX_DELAY_MS,
            limits.max_delay_ms,
        ),
    }
}

/// Where a stream starts: `now`, `earliest` or an RFC 3339 instant.
enum Start {
    Now,
    Earliest,
    At(DateTime<Utc>),
}

fn parse_start(start: &str) -> Result<Start, FieldError> {
    match start {
        "now" => Ok(Start::Now),
        "earliest" => Ok(Start::Earliest),
        instant => DateTime::parse_from_rfc3339(instant)
            .map(|at| Start::At(at.with_timezone(&Utc)))
            .map_err(|_| {
                FieldError::new(
                    "start",
                    "`now`, `earliest`, or an RFC 3339 instant such as 2026-01-31T00:00:00Z",
                )
            }),
    }
}

/// 400 naming `destination_id` unless it is one of the organization's
/// destinations that can carry a stream.
async fn check_destination(
    transaction: &Transaction<'_>,
    organization_id: &str,
    id: i64,
) -> Result<(), ApiError> {
    let refused =
        |problem: String| ApiError::Validation(vec![FieldError::new("destination_id", problem)]);
    match destinations::get(transaction, organization_id, id).await? {
        None => Err(refused(format!("no destination {id}"))),
        Some(destination) if REFUSED_KINDS.contains(&destination.kind.as_str()) => Err(refused(
            format!("destination {id} is an {} destination, which cannot carry a stream: use a webhook, s3, ftp or syslog destination", destination.kind),
        )),
        Some(_) => Ok(()),
    }
}

/// Subscribes a destination to the organization's events.
#[utoipa::path(post, path = "/v1/subscriptions", operation_id = "create_subscription", tag = "streams", request_body = NewStreamSubscription,
    responses((status = 201, body = StreamSubscription), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<NewStreamSubscription>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "create")?;
    let body = body.into_inner();
    let filter = body.filter.unwrap_or_default();
    let format = body.format.unwrap_or_else(|| "native".to_owned());
    let start_text = body.start.unwrap_or_else(|| "now".to_owned());
    let mut errors = filter_problems(&filter, "filter.");
    errors.extend(format_problem(&format));
    let defaults = BatchLimits {
        max_events: DEFAULT_MAX_EVENTS,
        max_delay_ms: DEFAULT_MAX_DELAY_MS,
    };
    let batch = batch_limits(&body.batch.unwrap_or_default(), defaults, &mut errors);
    let start = parse_start(&start_text)
        .map_err(|problem| errors.push(problem))
        .ok();
    let Some(start) = start.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let organization_id = caller.organization_id();
    let created_by = caller.actor();
    let created = tenant::scoped(&state.pool, organization_id, async |tx| {
        check_destination(tx, organization_id, body.destination_id).await?;
        let (cursor, starts_at) = match start {
            Start::Now => (streams::chain_end(tx, organization_id).await?, None),
            Start::Earliest => (ChainPosition::default(), None),
            Start::At(at) => (ChainPosition::default(), Some(at)),
        };
        let subscription = streams::insert(
            tx,
            &NewSubscription {
                organization_id,
                destination_id: body.destination_id,
                filter: &filter,
                format: &format,
                limits: batch,
                start: &start_text,
                starts_at,
                cursor,
                created_by: &created_by,
            },
        )
        .await?;
        let view = view(tx, subscription).await?;
        let change = ("stream_subscription", "create");
        admin_trail::record(&state, tx, &caller, change, view.id, json!(&view)).await?;
        Ok::<_, ApiError>(view)
    })
    .await?;
    tracing::info!(
        subscription = created.id,
        "Subscribed a destination to the event stream"
    );
    Ok(HttpResponse::Created().json(created))
}

/// The organization's subscriptions, oldest first, each with its progress.
#[utoipa::path(get, path = "/v1/subscriptions", operation_id = "list_subscriptions", tag = "streams",
    responses((status = 200, body = StreamSubscriptionList), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let subscriptions = tenant::scoped(&state.pool, organization_id, async |tx| {
        let mut views = Vec::new();
        for subscription in streams::list(tx, organization_id).await? {
            views.push(view(tx, subscription).await?);
        }
        Ok::<_, ApiError>(views)
    })
    .await?;
    Ok(HttpResponse::Ok().json(StreamSubscriptionList { subscriptions }))
}

/// One subscription and its progress.
#[utoipa::path(get, path = "/v1/subscriptions/{id}", operation_id = "get_subscription", tag = "streams",
    params(("id" = i64, Path, description = "Subscription id")),
    responses((status = 200, body = StreamSubscription), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(subscription = %id))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let found = tenant::scoped(&state.pool, organization_id, async |tx| {
        let subscription = streams::get(tx, organization_id, *id)
            .await?
            .ok_or_else(|| not_found(*id))?;
        view(tx, subscription).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(found))
}

/// Changes its destination, filter, format or batch limits; its cursor stays.
#[utoipa::path(patch, path = "/v1/subscriptions/{id}", operation_id = "update_subscription", tag = "streams",
    params(("id" = i64, Path, description = "Subscription id")), request_body = StreamSubscriptionChange,
    responses((status = 200, body = StreamSubscription), (status = 400), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(subscription = %id))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
    body: Json<StreamSubscriptionChange>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "update")?;
    let body = body.into_inner();
    let mut errors = body
        .filter
        .as_ref()
        .map(|filter| filter_problems(filter, "filter."))
        .unwrap_or_default();
    errors.extend(body.format.as_deref().and_then(format_problem));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let organization_id = caller.organization_id();
    let updated = tenant::scoped(&state.pool, organization_id, async |tx| {
        let mut subscription = streams::get(tx, organization_id, *id)
            .await?
            .ok_or_else(|| not_found(*id))?;
        let mut errors = Vec::new();
        if let Some(batch) = &body.batch {
            subscription.limits = batch_limits(batch, subscription.limits, &mut errors);
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        if let Some(destination_id) = body.destination_id {
            check_destination(tx, organization_id, destination_id).await?;
            subscription.destination_id = destination_id;
        }
        if let Some(filter) = &body.filter {
            subscription.filter = filter.clone();
        }
        if let Some(format) = &body.format {
            subscription.format = format.clone();
        }
        let changed = streams::update(tx, &subscription)
            .await?
            .ok_or_else(|| not_found(*id))?;
        let view = view(tx, changed).await?;
        let change = ("stream_subscription", "update");
        admin_trail::record(&state, tx, &caller, change, view.id, json!(&view)).await?;
        Ok(view)
    })
    .await?;
    tracing::info!("Changed a stream subscription");
    Ok(HttpResponse::Ok().json(updated))
}

/// Ends the subscription; batches in flight may still arrive.
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", operation_id = "delete_subscription", tag = "streams",
    params(("id" = i64, Path, description = "Subscription id")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(subscription = %id))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "delete")?;
    let organization_id = caller.organization_id();
    tenant::scoped(&state.pool, organization_id, async |tx| {
        if !streams::delete(tx, organization_id, *id).await? {
            return Err(not_found(*id));
        }
        let change = ("stream_subscription", "delete");
        admin_trail::record(&state, tx, &caller, change, *id, json!({})).await
    })
    .await?;
    tracing::info!("Deleted a stream subscription");
    Ok(HttpResponse::NoContent().finish())
}

/// Stops sending; the cursor stays where it is.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/pause", operation_id = "pause_subscription", tag = "streams",
    params(("id" = i64, Path, description = "Subscription id")),
    responses((status = 200, body = StreamSubscription), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(subscription = %id))]
pub async fn pause(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    set_paused(state, caller, *id, true).await
}

/// Sends again from where the stream stopped.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/resume", operation_id = "resume_subscription", tag = "streams",
    params(("id" = i64, Path, description = "Subscription id")),
    responses((status = 200, body = StreamSubscription), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(subscription = %id))]
pub async fn resume(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    set_paused(state, caller, *id, false).await
}

async fn set_paused(
    state: web::Data<AppState>,
    caller: Caller,
    id: i64,
    paused: bool,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "update")?;
    let organization_id = caller.organization_id();
    let changed = tenant::scoped(&state.pool, organization_id, async |tx| {
        let subscription = streams::set_paused(tx, organization_id, id, paused)
            .await?
            .ok_or_else(|| not_found(id))?;
        let view = view(tx, subscription).await?;
        let change = (
            "stream_subscription",
            if paused { "pause" } else { "resume" },
        );
        admin_trail::record(&state, tx, &caller, change, id, json!({})).await?;
        Ok::<_, ApiError>(view)
    })
    .await?;
    Ok(HttpResponse::Ok().json(changed))
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("subscription {id}"))
}
