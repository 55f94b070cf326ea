//! `/v1/destinations`: where an organization's data, alerts and reports go.

use std::time::Instant;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::admin_trail;
use super::api_error::{ApiError, FieldError};
use super::auth::Caller;
use super::extract::{Json, Path};
use super::AppState;
use crate::db::destinations::{self, Destination, Health, NewDestination};
use crate::db::tenant;
use crate::deliveries::destination::{self, DeliverySettings, DestinationConfig};
use crate::deliveries::egress;
use crate::messages::delivery::DestinationsChanged;

const RESOURCE: &str = "audit.deliveries";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDestination {
    /// webhook, email, s3, ftp or syslog.
    #[serde(rename = "type")]
    #[schema(pattern = "^(webhook|email|s3|ftp|syslog)$")]
    pub kind: String,
    #[schema(max_length = 255, pattern = r"\S")]
    pub label: String,
    pub description: Option<String>,
    pub icon: Option<String>,
    pub instructions: Option<String>,
    /// Kind-specific. webhook: url, method, headers, timeout_ms, secret, previous_secret.
    /// email: host, port, tls, username, password, from, to, subject, attachment_name.
    /// s3: bucket, prefix, region, endpoint, access_key_id, secret_access_key, path_style, key_template.
    /// ftp: host, port, username, password, directory, tls, passive.
    /// syslog: host, port, tls, ca, app_name, facility.
    #[schema(value_type = Object)]
    #[serde(deserialize_with = "crate::validation::bounded_json")]
    pub config: Value,
    /// concurrency, rate_limit_per_second, failure_threshold, reset_timeout, retry_schedule, auto_disable_after.
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "crate::validation::optional_bounded_json")]
    pub settings: Option<Value>,
    /// Every signed checkpoint of the organization is delivered here
    /// (webhook and s3 only). Default false.
    pub witness: Option<bool>,
    /// s3 only: every object is stored under S3 Object Lock retention
    /// (compliance mode) for this many days (the bucket must have Object Lock).
    #[schema(minimum = 1, maximum = 36500)]
    pub object_lock_days: Option<i32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDestination {
    #[schema(max_length = 255, pattern = r"\S")]
    pub label: Option<String>,
    pub description: Option<String>,
    pub icon: Option<String>,
    pub instructions: Option<String>,
    /// Replaces the configuration; secrets sent as `***` keep their value.
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "crate::validation::optional_bounded_json")]
    pub config: Option<Value>,
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "crate::validation::optional_bounded_json")]
    pub settings: Option<Value>,
    /// false re-enables a disabled destination.
    pub disabled: Option<bool>,
    /// Every signed checkpoint of the organization is delivered here
    /// (webhook and s3 only); from the next checkpoint on.
    pub witness: Option<bool>,
    /// s3 only; `null` stops locking new objects.
    #[serde(default, deserialize_with = "crate::validation::present")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 36500)]
    pub object_lock_days: Option<Option<i32>>,
}

/// A destination as the API shows it: secrets as `***`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationView {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub label: String,
    pub description: Option<String>,
    pub icon: Option<String>,
    pub instructions: Option<String>,
    pub disabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_by: Option<String>,
    pub count_usage: i64,
    pub last_used_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub config: Value,
    #[schema(value_type = Object)]
    pub settings: Value,
    pub witness: bool,
    pub object_lock_days: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Destination> for DestinationView {
    fn from(destination: Destination) -> Self {
        DestinationView {
            id: destination.id,
            config: DestinationConfig::masked(&destination.config),
            kind: destination.kind,
            label: destination.label,
            description: destination.description,
            icon: destination.icon,
            instructions: destination.instructions,
            disabled: destination.disabled,
            disabled_at: destination.disabled_at,
            disabled_by: destination.disabled_by,
            count_usage: destination.count_usage,
            last_used_at: destination.last_used_at,
            settings: destination.settings,
            witness: destination.witness,
            object_lock_days: destination.object_lock_days,
            created_at: destination.created_at,
            updated_at: destination.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationList {
    pub destinations: Vec<DestinationView>,
}

fn check_kind(kind: &str) -> Result<(), ApiError> {
    if !destination::KINDS.contains(&kind) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "type",
            format!("one of {}", destination::KINDS.join(", ")),
        )]));
    }
    if !destination::AVAILABLE_KINDS.contains(&kind) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "type",
            format!("`{kind}` destinations are not available in this version yet"),
        )]));
    }
    Ok(())
}

/// Kinds that can be witnesses: a witness must keep each checkpoint where
/// `verify --checkpoint` can fetch it back (an HTTPS URL the receiver serves,
/// or an S3 object). An email is no store, and an FTP upload is named by
/// its delivery, not by its checkpoint.
const WITNESS_KINDS: &[&str] = &["webhook", "s3"];
const MAX_OBJECT_LOCK_DAYS: i32 = 36500;

/// `witness` and `object_lock_days` as the destination's kind allows them.
fn check_witness(kind: &str, witness: bool, object_lock_days: Option<i32>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if witness && !WITNESS_KINDS.contains(&kind) {
        errors.push(FieldError::new(
            "witness",
            format!(
                "only {} destinations can be witnesses",
                WITNESS_KINDS.join(" and ")
            ),
        ));
    }
    if let Some(days) = object_lock_days {
        if kind != "s3" {
            errors.push(FieldError::new(
                "object_lock_days",
                "only s3 destinations keep objects under Object Lock",
            ));
        } else if !(1..=MAX_OBJECT_LOCK_DAYS).contains(&days) {
            errors.push(FieldError::new(
                "object_lock_days",
                format!("between 1 and {MAX_OBJECT_LOCK_DAYS} days"),
            ));
        }
    }
    errors
}

fn check_label(label: &str) -> Option<FieldError> {
    (label.trim().is_empty() || label.chars().count() > 255)
        .then(|| FieldError::new("label", "1 to 255 characters"))
}

/// Creates a destination; its secrets are stored encrypted and never shown again.
#[utoipa::path(post, path = "/v1/destinations", operation_id = "create_destination", tag = "delivery", request_body = CreateDestination,
    responses((status = 201, body = DestinationView), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<CreateDestination>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "create")?;
    let body = body.into_inner();
    check_kind(&body.kind)?;
    let mut errors: Vec<FieldError> = check_label(&body.label).into_iter().collect();
    let witness = body.witness.unwrap_or(false);
    errors.extend(check_witness(&body.kind, witness, body.object_lock_days));
    let checked = DestinationConfig::validate(&body.kind, &body.config, None)
        .map_err(|e| errors.extend(e))
        .ok();
    let settings = DeliverySettings::parse(body.settings.as_ref())
        .map_err(|e| errors.extend(e))
        .ok();
    let (Some(checked), Some(settings)) = (checked, settings) else {
        return Err(ApiError::Validation(errors));
    };
    errors.extend(checked.check_network(&state.egress).await);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let organization_id = caller.organization_id();
    let sealed = checked.sealed(&state.secrets);
    let settings = serde_json::to_value(settings).expect("settings serialize");
    let destination = tenant::scoped(&state.pool, organization_id, async |tx| {
        let destination = destinations::insert(
            tx,
            &NewDestination {
                organization_id,
                kind: &body.kind,
                label: &body.label,
                description: body.description.as_deref(),
                icon: body.icon.as_deref(),
                instructions: body.instructions.as_deref(),
                config: &sealed,
                settings: &settings,
                witness,
                object_lock_days: body.object_lock_days,
            },
        )
        .await?;
        let details = json!(DestinationView::from(destination.clone()));
        let change = ("destination", "create");
        admin_trail::record(&state, tx, &caller, change, destination.id, details).await?;
        Ok::<_, ApiError>(destination)
    })
    .await?;
    tracing::info!(destination = destination.id, "Created destination");
    state.queue.notify(DestinationsChanged);
    Ok(HttpResponse::Created().json(DestinationView::from(destination)))
}

#[utoipa::path(get, path = "/v1/destinations", operation_id = "list_destinations", tag = "delivery",
    responses((status = 200, body = DestinationList), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let found = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(destinations::list(tx, organization_id).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(DestinationList {
        destinations: found.into_iter().map(DestinationView::from).collect(),
    }))
}

async fn load(state: &AppState, caller: &Caller, id: i64) -> Result<Destination, ApiError> {
    let organization_id = caller.organization_id();
    let found = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(destinations::get(tx, organization_id, id).await?)
    })
    .await?;
    found.ok_or_else(|| ApiError::NotFound(format!("destination {id}")))
}

#[utoipa::path(get, path = "/v1/destinations/{id}", operation_id = "get_destination", tag = "delivery",
    params(("id" = i64, Path, description = "Destination id")),
    responses((status = 200, body = DestinationView), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(destination = %id))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    Ok(HttpResponse::Ok().json(DestinationView::from(load(&state, &caller, *id).await?)))
}

/// Changes a destination; `"disabled": false` re-enables one that was disabled.
#[utoipa::path(patch, path = "/v1/destinations/{id}", operation_id = "update_destination", tag = "delivery", request_body = UpdateDestination,
    params(("id" = i64, Path, description = "Destination id")),
    responses((status = 200, body = DestinationView), (status = 400), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(destination = %id))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
    body: Json<UpdateDestination>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "update")?;
    let body = body.into_inner();
    let mut destination = load(&state, &caller, *id).await?;
    let (body_label, body_description) = (body.label.clone(), body.description.clone());
    let (body_config, body_settings) = (body.config.is_some(), body.settings.is_some());
    let mut errors = Vec::new();
    if let Some(label) = body.label {
        errors.extend(check_label(&label));
        destination.label = label;
    }
    destination.description = body.description.or(destination.description);
    destination.icon = body.icon.or(destination.icon);
    destination.instructions = body.instructions.or(destination.instructions);
    if let Some(config) = &body.config {
        let stored = DestinationConfig::unsealed_value(&destination.config, &state.secrets).ok();
        match DestinationConfig::validate(&destination.kind, config, stored.as_ref()) {
            Ok(checked) => {
                errors.extend(checked.check_network(&state.egress).await);
                destination.config = checked.sealed(&state.secrets);
            }
            Err(problems) => errors.extend(problems),
        }
    }
    if let Some(settings) = &body.settings {
        match DeliverySettings::parse(Some(settings)) {
            Ok(settings) => {
                destination.settings = serde_json::to_value(settings).expect("settings serialize")
            }
            Err(problems) => errors.extend(problems),
        }
    }
    destination.witness = body.witness.unwrap_or(destination.witness);
    destination.object_lock_days = body
        .object_lock_days
        .unwrap_or(destination.object_lock_days);
    errors.extend(check_witness(
        &destination.kind,
        destination.witness,
        destination.object_lock_days,
    ));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    match body.disabled {
        Some(true) if !destination.disabled => {
            destination.disabled = true;
            destination.disabled_at = Some(Utc::now());
            destination.disabled_by = Some(caller.actor());
        }
        Some(false) if destination.disabled => {
            destination.disabled = false;
            destination.disabled_at = None;
            destination.disabled_by = None;
        }
        _ => {}
    }
    let organization_id = caller.organization_id();
    let mut client = state.pool.get().await?;
    let transaction = tenant::begin(&mut client, organization_id).await?;
    let reenabled = body.disabled == Some(false);
    let updated = destinations::update(&transaction, &destination).await?;
    if reenabled {
        destinations::reset_health(&transaction, organization_id, updated.id).await?;
    }
    let verb = match body.disabled {
        Some(false) => "enable",
        Some(true) => "disable",
        _ => "update",
    };
    let view = json!(DestinationView::from(updated.clone()));
    let details = json!({
        "label": body_label,
        "description": body_description,
        "config": body_config.then(|| view["config"].clone()),
        "settings": body_settings.then(|| view["settings"].clone()),
        "disabled": body.disabled,
        "witness": body.witness,
        "object_lock_days": body.object_lock_days,
    });
    admin_trail::record(
        &state,
        &transaction,
        &caller,
        ("destination", verb),
        updated.id,
        details,
    )
    .await?;
    transaction.commit().await?;
    if body.disabled.is_some() {
        state.queue.notify(DestinationsChanged);
    }
    Ok(HttpResponse::Ok().json(DestinationView::from(updated)))
}

/// Deletes a destination. Its delivery history stays; its queued deliveries fail.
#[utoipa::path(delete, path = "/v1/destinations/{id}", operation_id = "delete_destination", tag = "delivery",
    params(("id" = i64, Path, description = "Destination id")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(destination = %id))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "delete")?;
    let organization_id = caller.organization_id();
    let deleted = tenant::scoped(&state.pool, organization_id, async |tx| {
        let deleted = destinations::delete(tx, organization_id, *id).await?;
        if deleted {
            let change = ("destination", "delete");
            admin_trail::record(&state, tx, &caller, change, *id, json!({})).await?;
        }
        Ok::<_, ApiError>(deleted)
    })
    .await?;
    if deleted {
        state.queue.notify(DestinationsChanged);
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("destination {id}")))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionTest {
    pub reachable: bool,
    pub latency_ms: u64,
    pub message: String,
}

/// Checks that the destination's host accepts connections, without delivering anything.
#[utoipa::path(post, path = "/v1/destinations/{id}/test", operation_id = "test_destination", tag = "delivery",
    params(("id" = i64, Path, description = "Destination id")),
    responses((status = 200, body = ConnectionTest), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(destination = %id))]
pub async fn test(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(check_connection(&state, &caller, *id).await?))
}

/// What [`test`] answers, for the console too: whether the destination's
/// host accepts a connection now, and how long it took.
pub async fn check_connection(
    state: &AppState,
    caller: &Caller,
    id: i64,
) -> Result<ConnectionTest, ApiError> {
    caller.require(RESOURCE, "update")?;
    let destination = load(state, caller, id).await?;
    let checked =
        DestinationConfig::unsealed(&destination.kind, &destination.config, &state.secrets)
            .map_err(|error| {
                tracing::error!(%error, "Cannot open a destination's configuration");
                ApiError::Internal(format!(
                    "cannot open a destination's configuration: {error}"
                ))
            })?;
    let (host, port, timeout) = checked.endpoint();
    let address = format!("{host}:{port}");
    let started = Instant::now();
    // Held to the network policy like a delivery: only allowed addresses.
    let connect = async {
        let parsed = egress::parse_host(&host)
            .ok_or_else(|| format!("`{host}` is not a host name or IP address"))?;
        let allowed = state
            .egress
            .resolve(&parsed, port)
            .await
            .map_err(|error| error.to_string())?;
        tokio::net::TcpStream::connect(&allowed[..])
            .await
            .map_err(|error| format!("cannot connect to {address}: {error}"))
    };
    let (reachable, message) = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_)) => (true, format!("{address} accepts connections")),
        Ok(Err(message)) => (false, message),
        Err(_) => (
            false,
            format!(
                "no connection to {address} within {} ms",
                timeout.as_millis()
            ),
        ),
    };
    Ok(ConnectionTest {
        reachable,
        latency_ms: started.elapsed().as_millis() as u64,
        message,
    })
}

/// The destination's delivery health: totals, success rate, response time, breaker.
#[utoipa::path(get, path = "/v1/destinations/{id}/health", operation_id = "get_destination_health", tag = "delivery",
    params(("id" = i64, Path, description = "Destination id")),
    responses((status = 200, body = Health), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(destination = %id))]
pub async fn health(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let health = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(destinations::health(tx, organization_id, *id).await?)
    })
    .await?;
    health
        .map(|health| HttpResponse::Ok().json(health))
        .ok_or_else(|| ApiError::NotFound(format!("destination {id}")))
}
