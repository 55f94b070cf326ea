//! `/v1/legal-holds`: data the organization must keep whatever its retention
//! policies say, until the hold is released.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::admin_trail;
use super::api_error::{ApiError, FieldError};
use super::auth::Caller;
use super::extract::{Json, Path, Query};
use super::AppState;
use crate::db::legal_holds::{self, LegalHold, NewHold};
use crate::db::tenant;

const RESOURCE: &str = "audit.retention";

/// Longest reason: enough for a matter and a docket, short enough to list.
const MAX_REASON_CHARS: usize = 2000;
/// The `principal_id` column is `varchar(255)`.
const MAX_PRINCIPAL_CHARS: usize = 255;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHold {
    /// Why the data must be kept.
    #[schema(max_length = 2000, pattern = r"\S")]
    pub reason: String,
    /// Holds only this principal's events; all of them when absent.
    #[schema(max_length = 255, pattern = r"\S")]
    pub principal_id: Option<String>,
    /// Holds only events from this instant on.
    #[serde(default, deserialize_with = "crate::validation::optional_timestamp")]
    pub starts_at: Option<DateTime<Utc>>,
    /// Holds only events up to this instant; after `starts_at`.
    #[serde(default, deserialize_with = "crate::validation::optional_timestamp")]
    pub ends_at: Option<DateTime<Utc>>,
}

impl CreateHold {
    fn problems(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.reason.trim().is_empty() || self.reason.chars().count() > MAX_REASON_CHARS {
            errors.push(FieldError::new(
                "reason",
                format!("1 to {MAX_REASON_CHARS} characters, not only blanks"),
            ));
        }
        if self.principal_id.as_ref().is_some_and(|principal| {
            principal.trim().is_empty() || principal.chars().count() > MAX_PRINCIPAL_CHARS
        }) {
            errors.push(FieldError::new(
                "principal_id",
                format!("1 to {MAX_PRINCIPAL_CHARS} characters, not only blanks"),
            ));
        }
        if let (Some(starts_at), Some(ends_at)) = (self.starts_at, self.ends_at) {
            if starts_at >= ends_at {
                errors.push(FieldError::new("ends_at", "after starts_at"));
            }
        }
        errors
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HoldQuery {
    /// true: only holds in force; false: only released ones; absent: all.
    pub active: Option<bool>,
    /// Checked against the key's organization (403 when it differs).
    pub organization_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldList {
    pub holds: Vec<LegalHold>,
}

/// Places a hold: from now on nothing it covers is deleted, until it is released.
#[utoipa::path(post, path = "/v1/legal-holds", operation_id = "create_legal_hold", tag = "retention", request_body = CreateHold,
    responses((status = 201, body = LegalHold), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<CreateHold>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "create")?;
    let body = body.into_inner();
    let problems = body.problems();
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    let organization_id = caller.organization_id();
    let created_by = caller.actor();
    let hold = tenant::scoped(&state.pool, organization_id, async |tx| {
        let hold = legal_holds::insert(
            tx,
            &NewHold {
                organization_id,
                principal_id: body.principal_id.as_deref(),
                starts_at: body.starts_at,
                ends_at: body.ends_at,
                reason: &body.reason,
                created_by: &created_by,
            },
        )
        .await?;
        admin_trail::record(
            &state,
            tx,
            &caller,
            ("legal_hold", "place"),
            hold.id,
            json!(&hold),
        )
        .await?;
        Ok::<_, ApiError>(hold)
    })
    .await?;
    tracing::info!(hold = hold.id, "Placed legal hold");
    Ok(HttpResponse::Created().json(hold))
}

/// The organization's legal holds, newest first.
#[utoipa::path(get, path = "/v1/legal-holds", operation_id = "list_legal_holds", tag = "retention", params(HoldQuery),
    responses((status = 200, body = HoldList), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: Query<HoldQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let holds = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(legal_holds::list(tx, organization_id, query.active).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(HoldList { holds }))
}

#[utoipa::path(get, path = "/v1/legal-holds/{id}", operation_id = "get_legal_hold", tag = "retention",
    params(("id" = i64, Path, description = "Legal hold id")),
    responses((status = 200, body = LegalHold), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(hold = %id))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let hold = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(legal_holds::get(tx, organization_id, *id).await?)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("legal hold {id}")))?;
    Ok(HttpResponse::Ok().json(hold))
}

/// Releases a hold: what it covered follows the retention policies again.
#[utoipa::path(post, path = "/v1/legal-holds/{id}/release", operation_id = "release_legal_hold", tag = "retention",
    params(("id" = i64, Path, description = "Legal hold id")),
    responses((status = 200, body = LegalHold), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "The hold was released already")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(hold = %id))]
pub async fn release(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "update")?;
    let organization_id = caller.organization_id();
    let released_by = caller.actor();
    let released =
        tenant::scoped(
            &state.pool,
            organization_id,
            async |tx| match legal_holds::release(tx, organization_id, *id, &released_by).await? {
                Some(hold) => {
                    let change = ("legal_hold", "release");
                    admin_trail::record(
                        &state,
                        tx,
                        &caller,
                        change,
                        hold.id,
                        json!({"reason": hold.reason}),
                    )
                    .await?;
                    Ok(hold)
                }
                None => Err(match legal_holds::get(tx, organization_id, *id).await? {
                    Some(hold) => ApiError::Conflict(format!(
                        "legal hold {id} was released already, by {} at {}",
                        hold.released_by.as_deref().unwrap_or("unknown"),
                        hold.released_at
                            .map(|at| at.to_rfc3339())
                            .unwrap_or_default()
                    )),
                    None => ApiError::NotFound(format!("legal hold {id}")),
                }),
            },
        )
        .await?;
    tracing::info!("Released legal hold");
    Ok(HttpResponse::Ok().json(released))
}
