//! `/v1/retention-policies`: how long the organization keeps its events. The
//! built-in policies are listed with the organization's own; saving a policy
//! under a built-in's name overrides it, deleting that policy restores it.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::admin_trail;
use super::api_error::ApiError;
use super::auth::Caller;
use super::extract::{Json, Path};
use super::AppState;
use crate::db::{retention, tenant};
use crate::events::retention::RetentionPolicy;

const RESOURCE: &str = "audit.retention";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    /// A built-in's name overrides that built-in.
    #[schema(pattern = "^[a-z0-9_]{1,100}$")]
    pub policy_name: String,
    #[schema(minimum = 1)]
    pub retention_days: i32,
    /// At most `retention_days`; never archived when absent.
    #[schema(minimum = 0)]
    pub archive_after_days: Option<i32>,
    /// At least `archive_after_days`; never deleted when absent.
    #[schema(minimum = 1)]
    pub delete_after_days: Option<i32>,
    /// PUBLIC, INTERNAL, CONFIDENTIAL or PHI.
    #[schema(pattern = "^(PUBLIC|INTERNAL|CONFIDENTIAL|PHI)$")]
    pub data_classification: String,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    /// Default true.
    pub is_active: Option<bool>,
}

/// Absent fields keep their value; `null` clears a nullable one. The name
/// cannot change: events refer to the policy by it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    #[schema(minimum = 1)]
    pub retention_days: Option<i32>,
    #[serde(default, deserialize_with = "crate::validation::present")]
    #[schema(value_type = Option<i32>, minimum = 0)]
    pub archive_after_days: Option<Option<i32>>,
    #[serde(default, deserialize_with = "crate::validation::present")]
    #[schema(value_type = Option<i32>, minimum = 1)]
    pub delete_after_days: Option<Option<i32>>,
    /// PUBLIC, INTERNAL, CONFIDENTIAL or PHI.
    #[schema(pattern = "^(PUBLIC|INTERNAL|CONFIDENTIAL|PHI)$")]
    pub data_classification: Option<String>,
    #[serde(default, deserialize_with = "crate::validation::present")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    pub is_active: Option<bool>,
}

impl UpdatePolicy {
    fn apply(self, policy: &mut RetentionPolicy) {
        if let Some(days) = self.retention_days {
            policy.retention_days = days;
        }
        if let Some(days) = self.archive_after_days {
            policy.archive_after_days = days;
        }
        if let Some(days) = self.delete_after_days {
            policy.delete_after_days = days;
        }
        if let Some(classification) = self.data_classification {
            policy.data_classification = classification;
        }
        if let Some(description) = self.description {
            policy.description = description;
        }
        if let Some(active) = self.is_active {
            policy.is_active = active;
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    pub policies: Vec<RetentionPolicy>,
}

/// The organization's effective policies by name: its own and the built-ins it has not overridden.
#[utoipa::path(get, path = "/v1/retention-policies", operation_id = "list_retention_policies", tag = "retention",
    responses((status = 200, body = PolicyList), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let policies = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(retention::effective_policies(tx, organization_id).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(PolicyList { policies }))
}

/// Creates a policy; one named like a built-in overrides that built-in.
#[utoipa::path(post, path = "/v1/retention-policies", operation_id = "create_retention_policy", tag = "retention", request_body = CreatePolicy,
    responses((status = 201, body = RetentionPolicy), (status = 400), (status = 401), (status = 403),
        (status = 409, description = "The organization has a policy of that name already")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<CreatePolicy>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "create")?;
    let body = body.into_inner();
    let new = RetentionPolicy {
        id: None,
        policy_name: body.policy_name,
        retention_days: body.retention_days,
        archive_after_days: body.archive_after_days,
        delete_after_days: body.delete_after_days,
        data_classification: body.data_classification,
        description: body.description,
        is_active: body.is_active.unwrap_or(true),
        built_in: false,
        created_at: None,
        updated_at: None,
        created_by: Some(caller.actor()),
    };
    let problems = new.problems();
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    let organization_id = caller.organization_id();
    let created = tenant::scoped(&state.pool, organization_id, async |tx| {
        let created = retention::insert(tx, organization_id, &new).await?;
        if let Some(created) = &created {
            let id = created.id.unwrap_or_default();
            let change = ("retention_policy", "create");
            admin_trail::record(&state, tx, &caller, change, id, json!(created)).await?;
        }
        Ok::<_, ApiError>(created)
    })
    .await?
    .ok_or_else(|| {
        ApiError::Conflict(format!(
            "a retention policy named `{}` exists already; change it with PATCH",
            new.policy_name
        ))
    })?;
    tracing::info!(policy = created.policy_name, "Created retention policy");
    Ok(HttpResponse::Created().json(created))
}

/// Changes one of the organization's policies (not its name).
#[utoipa::path(patch, path = "/v1/retention-policies/{id}", operation_id = "update_retention_policy", tag = "retention", request_body = UpdatePolicy,
    params(("id" = i64, Path, description = "Policy id")),
    responses((status = 200, body = RetentionPolicy), (status = 400), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(policy = %id))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
    body: Json<UpdatePolicy>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "update")?;
    let body = body.into_inner();
    let organization_id = caller.organization_id();
    let id = id.into_inner();
    let (state, caller) = (&state, &caller);
    let updated = tenant::scoped(&state.pool, organization_id, async move |tx| {
        let mut policy = retention::get_for_update(tx, organization_id, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("retention policy {id}")))?;
        body.apply(&mut policy);
        let problems = policy.problems();
        if !problems.is_empty() {
            return Err(ApiError::Validation(problems));
        }
        let updated = retention::update(tx, organization_id, &policy).await?;
        admin_trail::record(
            state,
            tx,
            caller,
            ("retention_policy", "update"),
            id,
            json!(&updated),
        )
        .await?;
        Ok(updated)
    })
    .await?;
    tracing::info!("Changed retention policy");
    Ok(HttpResponse::Ok().json(updated))
}

/// Deletes one of the organization's policies; a built-in of the same name applies again.
#[utoipa::path(delete, path = "/v1/retention-policies/{id}", operation_id = "delete_retention_policy", tag = "retention",
    params(("id" = i64, Path, description = "Policy id")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(policy = %id))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "delete")?;
    let organization_id = caller.organization_id();
    let deleted = tenant::scoped(&state.pool, organization_id, async |tx| {
        let deleted = retention::delete(tx, organization_id, *id).await?;
        if deleted {
            admin_trail::record(
                &state,
                tx,
                &caller,
                ("retention_policy", "delete"),
                *id,
                json!({}),
            )
            .await?;
        }
        Ok::<_, ApiError>(deleted)
    })
    .await?;
    if deleted {
        tracing::info!("Deleted retention policy");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("retention policy {id}")))
    }
}
