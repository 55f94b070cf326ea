//! `/v1/api-keys`: an organization's administrators issue, list, rotate and
//! revoke keys.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::admin_trail;
use super::api_error::{ApiError, FieldError};
use super::auth::Caller;
use super::extract::{Json, OptionalJson, Path};
use super::AppState;
use crate::admin::rotation_details;
use crate::auth::{self, permissions, GracePeriod, IssueError, KeyRequest, RotateError};
use crate::db::api_keys::{self, ApiKeyInfo};
use crate::db::tenant;

const RESOURCE: &str = "organization.api_keys";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A built-in or custom role of the organization.
    pub role: String,
    /// A label for people.
    #[schema(max_length = 255)]
    pub name: Option<String>,
    /// When the key stops working (RFC 3339, in the future). Leave it and
    /// `expires_in` out for a key that never expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// How long from now the key works, as `90d`, `12h` or `1y 2months`
    /// (instead of `expires_at`, never with it).
    #[schema(example = "90d")]
    pub expires_in: Option<String>,
}

/// How long the secret being replaced keeps working.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateApiKey {
    /// A duration such as `24h`, `90min` or `0s` (the old secret stops
    /// working at once); at most 30 days. Default: `24h`.
    #[schema(example = "24h")]
    pub grace_period: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The key itself: shown this once, stored only as a hash.
    pub key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyInfo>,
}

/// Issues a key. A caller can only issue keys whose role grants no more than its own.
#[utoipa::path(post, path = "/v1/api-keys", operation_id = "create_api_key", tag = "access", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<CreateApiKey>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "create")?;
    let body = body.into_inner();
    if body
        .name
        .as_ref()
        .is_some_and(|name| name.chars().count() > 255)
    {
        return Err(ApiError::Validation(vec![FieldError::new(
            "name",
            "at most 255 characters",
        )]));
    }
    let (expires_at, expiry_field) = expiry(&body)?;
    let organization_id = caller.organization_id();
    let catalog = state.auth.role_catalog(organization_id).await?;
    let Some(granted) = permissions::resolve(&body.role, &catalog) else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "role",
            format!("no role named `{}` in this organization", body.role),
        )]));
    };
    if !caller.0.permissions.includes(&granted) {
        return Err(ApiError::Forbidden(format!(
            "the role `{}` grants more than your own role `{}`",
            body.role, caller.0.role
        )));
    }
    let mut client = state.pool.get().await?;
    let transaction = tenant::begin(&mut client, organization_id).await?;
    let request = KeyRequest {
        organization_id,
        role: &body.role,
        name: body.name.as_deref(),
        expires_at,
    };
    let issued = auth::issue_key(&transaction, &catalog, &request, &caller.actor())
        .await
        .map_err(|error| match error {
            IssueError::Database(error) => ApiError::from(error),
            IssueError::PastExpiry(_) => {
                ApiError::Validation(vec![FieldError::new(expiry_field, error.to_string())])
            }
            other => ApiError::Validation(vec![FieldError::new("role", other.to_string())]),
        })?;
    admin_trail::record(
        &state,
        &transaction,
        &caller,
        ("api_key", "create"),
        &issued.info.id,
        json!({"role": body.role, "name": body.name, "expires_at": expires_at}),
    )
    .await?;
    transaction.commit().await?;
    tracing::info!(key_id = %issued.info.id, role = %body.role, "Issued API key");
    Ok(HttpResponse::Created().json(CreatedApiKey {
        info: issued.info,
        key: issued.key,
    }))
}

/// The key's expiry as `body` asks for it (`expires_at`, or `expires_in` from
/// now), and the field that asked, to name in a refusal.
fn expiry(body: &CreateApiKey) -> Result<(Option<DateTime<Utc>>, &'static str), ApiError> {
    let refuse =
        |field, message: String| ApiError::Validation(vec![FieldError::new(field, message)]);
    match (body.expires_at, body.expires_in.as_deref()) {
        (Some(_), Some(_)) => Err(refuse(
            "expires_in",
            "give `expires_at` or `expires_in`, not both".to_owned(),
        )),
        (Some(at), None) if at <= Utc::now() => Err(refuse(
            "expires_at",
            format!("{} is not in the future", at.to_rfc3339()),
        )),
        (at, None) => Ok((at, "expires_at")),
        (None, Some(raw)) => {
            let after = humantime::parse_duration(raw).map_err(|error| {
                refuse("expires_in", format!("not a duration like `90d`: {error}"))
            })?;
            if after.is_zero() {
                return Err(refuse("expires_in", "must be longer than zero".to_owned()));
            }
            let at = auth::instant_after(Utc::now(), after)
                .map_err(|problem| refuse("expires_in", problem))?;
            Ok((Some(at), "expires_in"))
        }
    }
}

/// Lists the organization's keys (never their secrets).
#[utoipa::path(get, path = "/v1/api-keys", operation_id = "list_api_keys", tag = "access",
    responses((status = 200, body = ApiKeyList), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let keys = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(api_keys::list(tx, Some(organization_id)).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(ApiKeyList { api_keys: keys }))
}

/// Gives a key of the organization a new secret, shown this once: same id,
/// role and expiry. The replaced secret keeps working for `grace_period`
/// (default 24h), then gets 401 `key_rotated`; rotating again within that
/// time ends the older replaced secret at once (only the latest is kept).
/// Other instances accept the new secret within a second and honour the old
/// one's end within `auth.key_cache_ttl`. A caller may rotate only keys whose role
/// grants no more than its own, as it may only issue those.
#[utoipa::path(post, path = "/v1/api-keys/{id}/rotate", operation_id = "rotate_api_key", tag = "access",
    params(("id" = String, Path, description = "Key id")), request_body = Option<RotateApiKey>,
    responses((status = 200, body = CreatedApiKey), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 409, description = "The key is revoked or has expired")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(key = %id))]
pub async fn rotate(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<String>,
    body: OptionalJson<RotateApiKey>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "create")?;
    let grace = match body.into_inner().unwrap_or_default().grace_period {
        Some(raw) => GracePeriod::parse(&raw).map_err(|message| {
            ApiError::Validation(vec![FieldError::new("grace_period", message)])
        })?,
        None => GracePeriod::DEFAULT,
    };
    let organization_id = caller.organization_id();
    let catalog = state.auth.role_catalog(organization_id).await?;
    let mut client = state.pool.get().await?;
    let transaction = tenant::begin(&mut client, organization_id).await?;
    let key = api_keys::lock(&transaction, organization_id, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("API key `{id}`")))?;
    // The caller receives the key's new secret: the key's role must be one it could issue.
    let granted = permissions::resolve(&key.role, &catalog).unwrap_or_default();
    if !caller.0.permissions.includes(&granted) {
        return Err(ApiError::Forbidden(format!(
            "the key's role `{}` grants more than your own role `{}`",
            key.role, caller.0.role
        )));
    }
    let rotated =
        auth::rotate_key(&transaction, &key, grace)
            .await
            .map_err(|error| match error {
                RotateError::Database(error) => ApiError::from(error),
                RotateError::Revoked(_) | RotateError::Expired(_) => {
                    ApiError::Conflict(error.to_string())
                }
            })?;
    admin_trail::record(
        &state,
        &transaction,
        &caller,
        ("api_key", "rotate"),
        &*id,
        rotation_details(&rotated, grace),
    )
    .await?;
    transaction.commit().await?;
    state.auth.forget_key(&id);
    tracing::info!(
        grace_seconds = grace.duration().as_secs(),
        "Rotated API key"
    );
    Ok(HttpResponse::Ok().json(CreatedApiKey {
        info: rotated.info,
        key: rotated.key,
    }))
}

/// Revokes a key of the organization (idempotent). It stops working at once on
/// this instance and within `auth.key_cache_ttl` everywhere.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", operation_id = "revoke_api_key", tag = "access",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(key = %id))]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "delete")?;
    let organization_id = caller.organization_id();
    let mut client = state.pool.get().await?;
    let transaction = tenant::begin(&mut client, organization_id).await?;
    let revoked = api_keys::revoke(&transaction, organization_id, &id, &caller.actor()).await?;
    if revoked.is_some() {
        admin_trail::record(
            &state,
            &transaction,
            &caller,
            ("api_key", "revoke"),
            &*id,
            json!({}),
        )
        .await?;
    }
    transaction.commit().await?;
    match revoked {
        Some(_) => {
            state.auth.forget_key(&id);
            tracing::info!("Revoked API key");
            Ok(HttpResponse::NoContent().finish())
        }
        None => Err(ApiError::NotFound(format!("API key `{id}`"))),
    }
}
