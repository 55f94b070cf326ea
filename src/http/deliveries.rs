//! `/v1/deliveries`: queue data for an organization's destinations, follow it,
//! and replay dead letters.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::admin_trail;
use super::api_error::{ApiError, FieldError};
use super::auth::Caller;
use super::extract::{Json, Path, Query};
use super::AppState;
use crate::db::deliveries::{self, AttemptLog, Delivery, Replay, Request};
use crate::db::tenant;
use crate::messages::delivery::Enqueue;

const RESOURCE: &str = "audit.deliveries";
const STATUSES: &[&str] = &["pending", "processing", "retrying", "delivered", "failed"];

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeliveries {
    /// The organization's destinations, each once.
    #[schema(min_items = 1, max_items = 100)]
    pub destination_ids: Vec<i64>,
    /// The JSON object to deliver.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Higher first; default 0.
    #[schema(minimum = 0, maximum = 10)]
    pub priority: Option<i16>,
    /// Not before this time (RFC 3339); default now.
    #[serde(default, deserialize_with = "crate::validation::optional_timestamp")]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// A repeated key returns the deliveries it created the first time.
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    pub correlation_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptLog>,
}

/// Queues the payload for each destination: 202, one delivery per destination.
#[utoipa::path(post, path = "/v1/deliveries", operation_id = "create_deliveries", tag = "delivery", request_body = CreateDeliveries,
    responses((status = 202, body = DeliveryList), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<CreateDeliveries>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "create")?;
    let body = body.into_inner();
    let mut errors = Vec::new();
    let mut ids = body.destination_ids.clone();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() || ids.len() != body.destination_ids.len() || ids.len() > 100 {
        errors.push(FieldError::new(
            "destination_ids",
            "1 to 100 distinct destination ids",
        ));
    }
    if !body.payload.is_object() {
        errors.push(FieldError::new("payload", "must be a JSON object"));
    }
    let priority = body.priority.unwrap_or(0);
    if !(0..=10).contains(&priority) {
        errors.push(FieldError::new("priority", "between 0 and 10"));
    }
    for (field, value) in [
        ("idempotency_key", &body.idempotency_key),
        ("correlation_id", &body.correlation_id),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.chars().count() > 255)
        {
            errors.push(FieldError::new(field, "1 to 255 characters"));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // The EnqueueActor writes it with the requests that arrive meanwhile,
    // and answers once their transaction has committed.
    let queued = state
        .enqueue
        .send(Enqueue(Request {
            organization_id: caller.organization_id().to_owned(),
            destination_ids: body.destination_ids,
            payload: body.payload,
            priority,
            scheduled_at: body.scheduled_at,
            idempotency_key: body.idempotency_key,
            correlation_id: body.correlation_id,
        }))
        .await??;
    Ok(HttpResponse::Accepted().json(DeliveryList { deliveries: queued }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// pending | processing | retrying | delivered | failed (`failed`: the dead letters).
    #[param(pattern = "^(pending|processing|retrying|delivered|failed)$")]
    pub status: Option<String>,
    /// Default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Checked against the key's organization (403 when it differs).
    pub organization_id: Option<String>,
}

/// The organization's deliveries, newest first.
#[utoipa::path(get, path = "/v1/deliveries", operation_id = "list_deliveries", tag = "delivery", params(DeliveryQuery),
    responses((status = 200, body = DeliveryList), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: Query<DeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let mut errors = Vec::new();
    if query
        .status
        .as_deref()
        .is_some_and(|s| !STATUSES.contains(&s))
    {
        errors.push(FieldError::new(
            "status",
            format!("one of {}", STATUSES.join(", ")),
        ));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        errors.push(FieldError::new("limit", "between 1 and 1000"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let organization_id = caller.organization_id();
    let found = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(
            deliveries::list(tx, organization_id, query.status.as_deref(), limit).await?,
        )
    })
    .await?;
    Ok(HttpResponse::Ok().json(DeliveryList { deliveries: found }))
}

/// One delivery with every attempt.
#[utoipa::path(get, path = "/v1/deliveries/{id}", operation_id = "get_delivery", tag = "delivery",
    params(("id" = Uuid, Path, description = "Delivery id")),
    responses((status = 200, body = DeliveryDetail), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(delivery = %id))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let mut client = state.pool.get().await?;
    let transaction = tenant::begin(&mut client, organization_id).await?;
    let delivery = deliveries::get(&transaction, organization_id, *id).await?;
    let attempts = deliveries::attempts(&transaction, organization_id, *id).await?;
    transaction.commit().await?;
    let delivery = delivery.ok_or_else(|| ApiError::NotFound(format!("delivery {id}")))?;
    Ok(HttpResponse::Ok().json(DeliveryDetail { delivery, attempts }))
}

/// Replays a dead letter (a `failed` delivery) with its retries restored.
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", operation_id = "retry_delivery", tag = "delivery",
    params(("id" = Uuid, Path, description = "Delivery id")),
    responses((status = 202, body = Delivery), (status = 401), (status = 403), (status = 404), (status = 409)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(delivery = %id))]
pub async fn retry(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "update")?;
    let organization_id = caller.organization_id();
    let mut client = state.pool.get().await?;
    let transaction = tenant::begin(&mut client, organization_id).await?;
    let replay = deliveries::replay(&transaction, organization_id, *id).await?;
    if let Replay::Replayed(delivery) = &replay {
        let details = json!({"destination_id": delivery.destination_id});
        admin_trail::record(
            &state,
            &transaction,
            &caller,
            ("delivery", "replay"),
            *id,
            details,
        )
        .await?;
    }
    transaction.commit().await?;
    match replay {
        Replay::Replayed(delivery) => Ok(HttpResponse::Accepted().json(delivery)),
        Replay::NotFailed => Err(ApiError::Conflict(format!(
            "delivery {id} is not failed; only dead letters are replayed"
        ))),
        Replay::DestinationDeleted(destination) => Err(ApiError::Conflict(format!(
            "destination {destination} of delivery {id} was deleted; nothing could deliver it"
        ))),
        Replay::NotFound => Err(ApiError::NotFound(format!("delivery {id}"))),
    }
}
