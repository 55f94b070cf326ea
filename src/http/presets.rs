//! `/v1/presets`: the organization's presets (`audit_preset`), which ingest
//! applies to every event naming one (see `events::presets`). Ingest reads
//! them from the database on each request, so a change here applies to the
//! next event without any cache to invalidate.

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
use crate::db::presets::{self, StoredPreset};
use crate::db::tenant;
use crate::events::presets::{check_definition, Definition, Preset};

const RESOURCE: &str = "audit.presets";

/// A preset as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresetView {
    pub name: String,
    pub description: Option<String>,
    /// The action every event using the preset gets (and must keep).
    pub action: String,
    /// PUBLIC, INTERNAL, CONFIDENTIAL or PHI, likewise imposed.
    pub data_classification: String,
    /// Fields (or `details.<key>`) an event using the preset must carry.
    pub required_fields: Vec<String>,
    /// Values for the fields an event leaves out.
    #[schema(value_type = Object)]
    pub default_values: serde_json::Map<String, Value>,
    /// `{"fields": {"<field>": {"enum", "pattern", "min_length", "max_length"}}}`.
    #[schema(value_type = Object)]
    pub validation: Value,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<String>,
}

impl From<StoredPreset> for PresetView {
    fn from(stored: StoredPreset) -> Self {
        let Preset {
            name,
            action,
            data_classification,
            required_fields,
            default_values,
            validation,
        } = stored.preset;
        Self {
            name,
            description: stored.description,
            action,
            data_classification,
            required_fields,
            default_values,
            validation: serde_json::to_value(validation).unwrap_or_default(),
            created_at: stored.created_at,
            created_by: stored.created_by,
            updated_at: stored.updated_at,
            updated_by: stored.updated_by,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PresetList {
    pub presets: Vec<PresetView>,
}

/// A whole preset, as POST and PUT take it. `required_fields`,
/// `default_values` and `validation` are taken as raw JSON so that a wrong
/// shape is reported with its field rather than as unreadable JSON.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresetBody {
    /// 1 to 255 letters, digits, `.`, `_` and `-`, starting with a letter or
    /// digit. Required by POST; optional in a PUT, where it must match the path.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")]
    pub name: Option<String>,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    #[schema(max_length = 255, pattern = r"\S")]
    pub action: String,
    /// PUBLIC, INTERNAL (the default), CONFIDENTIAL or PHI.
    #[schema(pattern = "^(PUBLIC|INTERNAL|CONFIDENTIAL|PHI)$")]
    pub data_classification: Option<String>,
    /// Default `[]`.
    #[serde(
        default = "empty_array",
        deserialize_with = "crate::validation::bounded_json"
    )]
    #[schema(value_type = Vec<String>)]
    pub required_fields: Value,
    /// Default `{}`.
    #[serde(
        default = "empty_object",
        deserialize_with = "crate::validation::bounded_json"
    )]
    #[schema(value_type = Object)]
    pub default_values: Value,
    /// Default `{}`.
    #[serde(
        default = "empty_object",
        deserialize_with = "crate::validation::bounded_json"
    )]
    #[schema(value_type = Object)]
    pub validation: Value,
}

fn empty_array() -> Value {
    Value::Array(Vec::new())
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl PresetBody {
    /// The body as its `admin.preset.*` event records it.
    fn recorded(&self) -> Value {
        serde_json::to_value(self).expect("a preset body serializes")
    }

    /// The checked preset named `name`, or a 400 naming each bad field.
    fn check(&self, name: &str) -> Result<Preset, ApiError> {
        check_definition(&Definition {
            name,
            description: self.description.as_deref(),
            action: &self.action,
            data_classification: self.data_classification.as_deref().unwrap_or("INTERNAL"),
            required_fields: &self.required_fields,
            default_values: &self.default_values,
            validation: &self.validation,
        })
        .map_err(ApiError::Validation)
    }
}

/// Lists the organization's presets by name.
#[utoipa::path(get, path = "/v1/presets", operation_id = "list_presets", tag = "events",
    responses((status = 200, body = PresetList), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let presets = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(presets::list(tx, organization_id).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(PresetList {
        presets: presets.into_iter().map(PresetView::from).collect(),
    }))
}

/// One preset.
#[utoipa::path(get, path = "/v1/presets/{name}", operation_id = "get_preset", tag = "events",
    params(("name" = String, Path, description = "Preset name")),
    responses((status = 200, body = PresetView), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(preset = %name))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let preset = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(presets::get(tx, organization_id, &name).await?)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("preset `{name}`")))?;
    Ok(HttpResponse::Ok().json(PresetView::from(preset)))
}

/// Creates a preset; 409 when the organization has one of that name (replace it with PUT).
#[utoipa::path(post, path = "/v1/presets", operation_id = "create_preset", tag = "events", request_body = PresetBody,
    responses((status = 201, body = PresetView), (status = 400, body = super::api_error::ErrorBody),
        (status = 401), (status = 403),
        (status = 409, description = "The organization has a preset of that name already")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<PresetBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "create")?;
    let body = body.into_inner();
    let Some(name) = body.name.clone() else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "name",
            "is required",
        )]));
    };
    let preset = body.check(&name)?;
    let organization_id = caller.organization_id();
    let actor = caller.actor();
    let created = tenant::scoped(&state.pool, organization_id, async |tx| {
        let created = presets::insert(
            tx,
            organization_id,
            &preset,
            body.description.as_deref(),
            &actor,
        )
        .await?;
        if created.is_some() {
            admin_trail::record(
                &state,
                tx,
                &caller,
                ("preset", "create"),
                &name,
                body.recorded(),
            )
            .await?;
        }
        Ok::<_, ApiError>(created)
    })
    .await?
    .ok_or_else(|| {
        ApiError::Conflict(format!(
            "a preset named `{name}` exists already; replace it with PUT /v1/presets/{name}"
        ))
    })?;
    tracing::info!(preset = %name, "Created preset");
    Ok(HttpResponse::Created().json(PresetView::from(created)))
}

/// Creates the preset (201) or replaces it whole (200): fields left out of the
/// body take their defaults, they do not keep their old values.
#[utoipa::path(put, path = "/v1/presets/{name}", operation_id = "put_preset", tag = "events", request_body = PresetBody,
    params(("name" = String, Path, description = "Preset name")),
    responses((status = 201, body = PresetView), (status = 200, body = PresetView),
        (status = 400, body = super::api_error::ErrorBody), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(preset = %name))]
pub async fn put(
    state: web::Data<AppState>,
    caller: Caller,
    name: Path<String>,
    body: Json<PresetBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "update")?;
    let body = body.into_inner();
    if body.name.as_ref().is_some_and(|named| *named != *name) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "name",
            format!("must be the name in the path (`{name}`): a preset cannot be renamed"),
        )]));
    }
    let preset = body.check(&name)?;
    let organization_id = caller.organization_id();
    let actor = caller.actor();
    let (saved, created) = tenant::scoped(&state.pool, organization_id, async |tx| {
        let (saved, created) = presets::upsert(
            tx,
            organization_id,
            &preset,
            body.description.as_deref(),
            &actor,
        )
        .await?;
        let change = ("preset", if created { "create" } else { "update" });
        admin_trail::record(&state, tx, &caller, change, &*name, body.recorded()).await?;
        Ok::<_, ApiError>((saved, created))
    })
    .await?;
    tracing::info!(created, "Saved preset");
    Ok(if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    }
    .json(PresetView::from(saved)))
}

/// Deletes a preset; events naming it are refused from then on, as for any
/// unknown preset.
#[utoipa::path(delete, path = "/v1/presets/{name}", operation_id = "delete_preset", tag = "events",
    params(("name" = String, Path, description = "Preset name")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(preset = %name))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "delete")?;
    let organization_id = caller.organization_id();
    let deleted = tenant::scoped(&state.pool, organization_id, async |tx| {
        let deleted = presets::delete(tx, organization_id, &name).await?;
        if deleted {
            admin_trail::record(&state, tx, &caller, ("preset", "delete"), &*name, json!({}))
                .await?;
        }
        Ok::<_, ApiError>(deleted)
    })
    .await?;
    if deleted {
        tracing::info!("Deleted preset");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("preset `{name}`")))
    }
}
