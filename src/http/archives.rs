//! `/v1/archives`: the organization's archives of aged events, listed, and
//! fetched back as JSON Lines (each fetch counted), whatever store holds them.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::api_error::ApiError;
use super::auth::Caller;
use super::extract::Path;
use super::AppState;
use crate::db::archives::{self, Archive};
use crate::db::tenant;

const RESOURCE: &str = "audit.retention";

#[derive(Debug, Serialize, ToSchema)]
pub struct ArchiveList {
    pub archives: Vec<Archive>,
}

#[utoipa::path(get, path = "/v1/archives", operation_id = "list_archives", tag = "retention",
    responses((status = 200, body = ArchiveList), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let found = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(archives::list(tx, organization_id).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(ArchiveList { archives: found }))
}

/// The archived events, one JSON object per line (every stored column), after
/// checking the archive against its recorded SHA-256 sums.
#[utoipa::path(get, path = "/v1/archives/{id}", operation_id = "get_archive", tag = "retention",
    params(("id" = Uuid, Path, description = "Archive id")),
    responses((status = 200, description = "JSON Lines", content_type = "application/x-ndjson"),
        (status = 401), (status = 403), (status = 404),
        (status = 409, description = "The archive is corrupted"),
        (status = 503, description = "The archive store does not answer")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(archive = %id))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let id = *id;
    let found = tenant::scoped(&state.pool, organization_id, async |tx| {
        let found = archives::get(tx, Some(organization_id), id).await?;
        if found.is_some() {
            archives::mark_retrieved(tx, organization_id, id).await?;
        }
        Ok::<_, ApiError>(found)
    })
    .await?;
    let archive = found.ok_or_else(|| ApiError::NotFound(format!("archive {id}")))?;
    let client = state.pool.get().await?;
    let events = state.archives.read(&**client, &archive).await?;
    let mut body = String::new();
    for event in &events {
        body.push_str(&event.line());
        body.push('\n');
    }
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .body(body))
}
