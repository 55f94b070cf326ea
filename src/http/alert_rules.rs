//! `/v1/alert-rules`: an organization's own alert rules, beside the rules of
//! `config.toml` that every organization gets. Every change invalidates the
//! cached rules, so each instance's AlertActor uses it from its next batch.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::admin_trail;
use super::api_error::ApiError;
use super::auth::Caller;
use super::extract::{Json, Path};
use super::AppState;
use crate::alerts::rule::{self, RuleDefinition};
use crate::cache::ALERT_RULES;
use crate::db::alert_rules::{self, StoredRule};
use crate::db::tenant;
use crate::messages::alert::RulesChanged;

const RESOURCE: &str = "audit.alerts";

/// A rule of `config.toml`: read-only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfiguredRule {
    /// `config:<name>`.
    pub rule_id: String,
    pub definition: RuleDefinition,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    /// The organization's own rules, by name.
    pub rules: Vec<StoredRule>,
    /// The rules every organization gets, from the worker's configuration.
    pub configured: Vec<ConfiguredRule>,
}

fn validated(definition: Json<RuleDefinition>) -> Result<RuleDefinition, ApiError> {
    let definition = definition.into_inner();
    let problems = definition.problems("");
    if problems.is_empty() {
        Ok(definition)
    } else {
        Err(ApiError::Validation(problems))
    }
}

/// Lists the organization's rules and the configured ones.
#[utoipa::path(get, path = "/v1/alert-rules", operation_id = "list_alert_rules", tag = "alerts",
    responses((status = 200, body = RuleList), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let rules = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(alert_rules::list(tx, organization_id).await?)
    })
    .await?;
    // Checked before it was put in force: reading the rules again succeeds.
    let configured = rule::configured(&state.config.alerts.rules)
        .unwrap_or_default()
        .into_iter()
        .map(|definition| ConfiguredRule {
            rule_id: format!("config:{}", definition.name),
            definition,
        })
        .collect();
    Ok(HttpResponse::Ok().json(RuleList { rules, configured }))
}

/// Adds a rule; it applies to events stored from then on.
#[utoipa::path(post, path = "/v1/alert-rules", operation_id = "create_alert_rule", tag = "alerts", request_body = RuleDefinition,
    responses((status = 201, body = StoredRule), (status = 400), (status = 401), (status = 403),
        (status = 409, description = "A rule of that name exists")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<RuleDefinition>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "manage")?;
    let definition = validated(body)?;
    let organization_id = caller.organization_id();
    let created_by = caller.actor();
    let rule = tenant::scoped(&state.pool, organization_id, async |tx| {
        let rule = alert_rules::insert(tx, organization_id, &definition, &created_by).await?;
        admin_trail::record(
            &state,
            tx,
            &caller,
            ("alert_rule", "create"),
            rule.id,
            json!(&rule),
        )
        .await?;
        Ok::<_, ApiError>(rule)
    })
    .await?;
    rules_changed(&state, organization_id).await;
    tracing::info!(rule = rule.id, name = %rule.definition.name, "Created alert rule");
    Ok(HttpResponse::Created().json(rule))
}

#[utoipa::path(get, path = "/v1/alert-rules/{id}", operation_id = "get_alert_rule", tag = "alerts",
    params(("id" = i64, Path, description = "Rule id")),
    responses((status = 200, body = StoredRule), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(rule = %id))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let rule = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(alert_rules::get(tx, organization_id, *id).await?)
    })
    .await?;
    rule.map(|rule| HttpResponse::Ok().json(rule))
        .ok_or_else(|| not_found(*id))
}

/// Replaces a rule. Its window state and open alerts stay: they belong to its id.
#[utoipa::path(put, path = "/v1/alert-rules/{id}", operation_id = "replace_alert_rule", tag = "alerts", request_body = RuleDefinition,
    params(("id" = i64, Path, description = "Rule id")),
    responses((status = 200, body = StoredRule), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 409, description = "Another rule has that name")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(rule = %id))]
pub async fn replace(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
    body: Json<RuleDefinition>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "manage")?;
    let definition = validated(body)?;
    let organization_id = caller.organization_id();
    let rule = tenant::scoped(&state.pool, organization_id, async |tx| {
        let rule = alert_rules::replace(tx, organization_id, *id, &definition).await?;
        if let Some(rule) = &rule {
            admin_trail::record(
                &state,
                tx,
                &caller,
                ("alert_rule", "update"),
                rule.id,
                json!(rule),
            )
            .await?;
        }
        Ok::<_, ApiError>(rule)
    })
    .await?
    .ok_or_else(|| not_found(*id))?;
    rules_changed(&state, organization_id).await;
    tracing::info!("Replaced alert rule");
    Ok(HttpResponse::Ok().json(rule))
}

#[utoipa::path(delete, path = "/v1/alert-rules/{id}", operation_id = "delete_alert_rule", tag = "alerts",
    params(("id" = i64, Path, description = "Rule id")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(rule = %id))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "manage")?;
    let organization_id = caller.organization_id();
    let deleted = tenant::scoped(&state.pool, organization_id, async |tx| {
        let deleted = alert_rules::delete(tx, organization_id, *id).await?;
        if deleted {
            admin_trail::record(
                &state,
                tx,
                &caller,
                ("alert_rule", "delete"),
                *id,
                json!({}),
            )
            .await?;
        }
        Ok::<_, ApiError>(deleted)
    })
    .await?;
    if !deleted {
        return Err(not_found(*id));
    }
    rules_changed(&state, organization_id).await;
    tracing::info!("Deleted alert rule");
    Ok(HttpResponse::NoContent().finish())
}

/// Makes every instance read the organization's rules again: this one's
/// AlertActor before it matches another event (the notice is queued ahead of
/// any event stored after this answer), the others through the cache's
/// invalidation announcement.
async fn rules_changed(state: &AppState, organization_id: &str) {
    state.cache.invalidate(organization_id, ALERT_RULES).await;
    state.alerts.notify(RulesChanged {
        organization_id: organization_id.to_owned(),
    });
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("alert rule {id}"))
}
