//! `/v1/roles`: the organization's roles, built-in and custom.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::admin_trail;
use super::api_error::{ApiError, FieldError};
use super::auth::Caller;
use super::extract::{Json, Path};
use super::AppState;
use crate::auth::permissions::{self, Permission, RoleDefinition};
use crate::db::{api_keys, roles, tenant};

const RESOURCE: &str = "organization.roles";

#[derive(Debug, Serialize, ToSchema)]
pub struct RoleView {
    pub name: String,
    pub description: Option<String>,
    /// Built-in roles exist in every organization and cannot be changed.
    pub built_in: bool,
    pub permissions: Vec<Permission>,
    pub inherits: Vec<String>,
    /// Its own permissions plus, transitively, those of the roles it inherits.
    pub effective_permissions: Vec<Permission>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoleList {
    pub roles: Vec<RoleView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRole {
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    #[serde(default)]
    pub permissions: Vec<Permission>,
    /// Names of roles whose permissions this one also grants.
    #[serde(default)]
    pub inherits: Vec<String>,
}

fn view(
    role: &RoleDefinition,
    catalog: &std::collections::HashMap<String, RoleDefinition>,
) -> RoleView {
    RoleView {
        name: role.name.clone(),
        description: role.description.clone(),
        built_in: permissions::is_built_in(&role.name),
        permissions: role.permissions.clone(),
        inherits: role.inherits.clone(),
        effective_permissions: permissions::resolve(&role.name, catalog)
            .unwrap_or_default()
            .iter()
            .cloned()
            .collect(),
    }
}

/// Lists every role of the organization, built-in ones first.
#[utoipa::path(get, path = "/v1/roles", operation_id = "list_roles", tag = "access",
    responses((status = 200, body = RoleList), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let catalog = state.auth.role_catalog(caller.organization_id()).await?;
    let mut roles: Vec<RoleView> = catalog.values().map(|role| view(role, &catalog)).collect();
    roles.sort_by(|a, b| {
        b.built_in
            .cmp(&a.built_in)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(HttpResponse::Ok().json(RoleList { roles }))
}

/// One role with its effective permissions.
#[utoipa::path(get, path = "/v1/roles/{name}", operation_id = "get_role", tag = "access",
    params(("name" = String, Path, description = "Role name")),
    responses((status = 200, body = RoleView), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(role = %name))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let catalog = state.auth.role_catalog(caller.organization_id()).await?;
    let role = catalog
        .get(name.as_str())
        .ok_or_else(|| ApiError::NotFound(format!("role `{name}`")))?;
    Ok(HttpResponse::Ok().json(view(role, &catalog)))
}

/// Creates or replaces a custom role. Refused: built-in names, unknown
/// permissions or parents, inheritance cycles, and roles granting more than the
/// caller holds.
#[utoipa::path(put, path = "/v1/roles/{name}", operation_id = "put_role", tag = "access", request_body = PutRole,
    params(("name" = String, Path, pattern = "^[a-z0-9][a-z0-9:._-]{0,99}$",
        description = "Role name: lower-case letters, digits and `:._-`; not a built-in's")),
    responses((status = 201, body = RoleView), (status = 200, body = RoleView), (status = 400),
        (status = 401), (status = 403), (status = 409)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(role = %name))]
pub async fn put(
    state: web::Data<AppState>,
    caller: Caller,
    name: Path<String>,
    body: Json<PutRole>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "update")?;
    let body = body.into_inner();
    let name = name.into_inner();
    if permissions::is_built_in(&name) {
        return Err(ApiError::Conflict(format!(
            "`{name}` is a built-in role and cannot be changed"
        )));
    }
    let role = RoleDefinition {
        name,
        description: body.description,
        permissions: body.permissions,
        inherits: body.inherits,
    };
    validate_shape(&role)?;

    let organization_id = caller.organization_id();
    let mut client = state.pool.get().await?;
    let transaction = tenant::begin(&mut client, organization_id).await?;
    roles::lock_organization(&transaction, organization_id).await?;
    let mut catalog = permissions::role_catalog(roles::list(&transaction, organization_id).await?);
    let unknown: Vec<FieldError> = role
        .inherits
        .iter()
        .enumerate()
        .filter(|(_, parent)| !catalog.contains_key(parent.as_str()) && **parent != role.name)
        .map(|(i, parent)| {
            FieldError::new(
                format!("inherits[{i}]"),
                format!("no role named `{parent}`"),
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::Validation(unknown));
    }
    catalog.insert(role.name.clone(), role.clone());
    if let Some(cycle) = permissions::find_cycle(&role.name, &catalog) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "inherits",
            format!("inheritance cycle: {}", cycle.join(" → ")),
        )]));
    }
    // Changing a role changes every role inheriting it: none may end up granting
    // more than the caller holds.
    for affected in catalog.keys() {
        let granted = permissions::resolve(affected, &catalog).unwrap_or_default();
        let touches =
            affected == &role.name || permissions::inherits_from(affected, &role.name, &catalog);
        if touches && !caller.0.permissions.includes(&granted) {
            return Err(ApiError::Forbidden(format!(
                "the role `{affected}` would grant more than your own role `{}`",
                caller.0.role
            )));
        }
    }
    let created = roles::upsert(&transaction, organization_id, &role).await?;
    let verb = if created { "create" } else { "update" };
    let details = json!({"description": role.description, "permissions": role.permissions,
                         "inherits": role.inherits});
    admin_trail::record(
        &state,
        &transaction,
        &caller,
        ("role", verb),
        &role.name,
        details,
    )
    .await?;
    transaction.commit().await?;
    state.auth.roles_changed(organization_id).await;
    tracing::info!(created, "Saved role");
    let body = view(&role, &catalog);
    Ok(if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    }
    .json(body))
}

/// Deletes a custom role that no other role inherits and no live key holds.
#[utoipa::path(delete, path = "/v1/roles/{name}", operation_id = "delete_role", tag = "access",
    params(("name" = String, Path, description = "Role name")),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(role = %name))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "delete")?;
    if permissions::is_built_in(&name) {
        return Err(ApiError::Conflict(format!(
            "`{name}` is a built-in role and cannot be deleted"
        )));
    }
    let organization_id = caller.organization_id();
    let mut client = state.pool.get().await?;
    let transaction = tenant::begin(&mut client, organization_id).await?;
    roles::lock_organization(&transaction, organization_id).await?;
    let custom = roles::list(&transaction, organization_id).await?;
    if !custom.iter().any(|role| role.name == *name) {
        return Err(ApiError::NotFound(format!("role `{name}`")));
    }
    let heirs: Vec<&str> = custom
        .iter()
        .filter(|role| role.inherits.contains(&name))
        .map(|role| role.name.as_str())
        .collect();
    if !heirs.is_empty() {
        return Err(ApiError::Conflict(format!(
            "`{name}` is inherited by {}; change those roles first",
            heirs.join(", ")
        )));
    }
    let holders = api_keys::count_active_with_role(&transaction, organization_id, &name).await?;
    if holders > 0 {
        return Err(ApiError::Conflict(format!(
            "{holders} active API key(s) hold `{name}`; revoke them first"
        )));
    }
    roles::delete(&transaction, organization_id, &name).await?;
    admin_trail::record(
        &state,
        &transaction,
        &caller,
        ("role", "delete"),
        &*name,
        json!({}),
    )
    .await?;
    transaction.commit().await?;
    state.auth.roles_changed(organization_id).await;
    tracing::info!("Deleted role");
    Ok(HttpResponse::NoContent().finish())
}

/// Checks that need no database: the name's form and each permission.
fn validate_shape(role: &RoleDefinition) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let name_ok = role.name.len() <= 100
        && role
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && role
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ":._-".contains(c));
    if !name_ok {
        errors.push(FieldError::new(
            "name",
            "1 to 100 lower-case letters, digits or `:._-`, starting with a letter or digit",
        ));
    }
    for (i, permission) in role.permissions.iter().enumerate() {
        if let Some(problem) = permission.problem() {
            errors.push(FieldError::new(format!("permissions[{i}]"), problem));
        }
    }
    if role
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 10_000)
    {
        errors.push(FieldError::new("description", "at most 10000 characters"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}
