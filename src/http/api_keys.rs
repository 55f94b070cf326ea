//! `/v1/api-keys`: an organization's administrators issue, list and revoke keys.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::admin_trail;
use super::api_error::{ApiError, FieldError};
use super::auth::Caller;
use super::extract::{Json, Path};
use super::AppState;
use crate::auth::{self, permissions, IssueError};
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
    let issued = auth::issue_key(
        &transaction,
        &catalog,
        organization_id,
        &body.role,
        body.name.as_deref(),
        &caller.actor(),
    )
    .await
    .map_err(|error| match error {
        IssueError::Database(error) => ApiError::from(error),
        other => ApiError::Validation(vec![FieldError::new("role", other.to_string())]),
    })?;
    admin_trail::record(
        &state,
        &transaction,
        &caller,
        ("api_key", "create"),
        &issued.info.id,
        json!({"role": body.role, "name": body.name}),
    )
    .await?;
    transaction.commit().await?;
    tracing::info!(key_id = %issued.info.id, role = %body.role, "Issued API key");
    Ok(HttpResponse::Created().json(CreatedApiKey {
        info: issued.info,
        key: issued.key,
    }))
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
    let revoked =
        api_keys::revoke(&transaction, Some(organization_id), &id, &caller.actor()).await?;
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
