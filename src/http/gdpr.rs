//! `/v1/gdpr`: data subject requests. Export (streamed, or delivered),
//! pseudonymization, erasure, the reverse look-up of a pseudonym, and the
//! other requests, which are recorded. Every one is an audit event of its own;
//! the GdprActor carries them out.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::api_error::{ApiError, FieldError};
use super::auth::Caller;
use super::extract::{Json, Path};
use super::AppState;
use crate::db::gdpr::{self, Operation};
use crate::db::tenant;
use crate::gdpr::export::Format;
use crate::gdpr::operations::{Erased, ExportDelivered, ExportRequest, Pseudonymized, Reversed};
use crate::gdpr::pseudonym::Strategy;
use crate::gdpr::{statement, GdprError, RECORDED_REQUESTS};
use crate::messages::gdpr::{Erase, Export, Exported, Pseudonymize, RecordRequest, Reverse};

const RESOURCE: &str = "audit.gdpr";
/// The `principal_id` column is `varchar(255)`.
const MAX_PRINCIPAL_CHARS: usize = 255;
const MAX_DESCRIPTION_CHARS: usize = 10_000;

impl From<GdprError> for ApiError {
    fn from(error: GdprError) -> Self {
        match error {
            GdprError::Database(error) => error.into(),
            GdprError::Busy | GdprError::StrategyConflict(_) => {
                ApiError::Conflict(error.to_string())
            }
            GdprError::TooLongToEncrypt => {
                ApiError::Validation(vec![FieldError::new("principal_id", error.to_string())])
            }
            GdprError::UnknownPseudonym(_) => ApiError::NotFound(error.to_string()),
            GdprError::TooLargeToDeliver(_) | GdprError::UnknownDestination(_) => {
                ApiError::Validation(vec![FieldError::new("destination_id", error.to_string())])
            }
            GdprError::Ingest(error) => error.into(),
            GdprError::Unavailable(error) => error.into(),
            // An unreadable archive stops the request (409) before it is
            // complete; run again once the archive is repaired, it resumes.
            GdprError::Archive(error) => error.into(),
            GdprError::Undecryptable | GdprError::Record(_) => {
                tracing::error!(%error, "GDPR request failed");
                ApiError::Internal(format!("GDPR request failed: {error}"))
            }
        }
    }
}

fn check_principal(principal_id: &str, errors: &mut Vec<FieldError>) {
    if principal_id.trim().is_empty() || principal_id.chars().count() > MAX_PRINCIPAL_CHARS {
        errors.push(FieldError::new(
            "principal_id",
            format!("1 to {MAX_PRINCIPAL_CHARS} characters, not only blanks"),
        ));
    }
}

fn valid(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportBody {
    /// The data subject: their events as principal and as target, under any pseudonym.
    #[schema(max_length = 255, pattern = r"\S")]
    pub principal_id: String,
    pub format: Format,
    #[serde(default, deserialize_with = "crate::validation::optional_timestamp")]
    pub from: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "crate::validation::optional_timestamp")]
    pub to: Option<DateTime<Utc>>,
    /// Deliver the file there instead of answering with it.
    pub destination_id: Option<i64>,
}

/// Exports a subject's events. Without `destination_id` the file is the
/// response, streamed (any size, constant memory); its manifest (count, time
/// range, SHA-256 of the file) is at `GET /v1/gdpr/requests/{X-Gdpr-Request-Id}`
/// once the download ends. With one, the file is queued for that destination
/// and the answer is 202 with the manifest.
#[utoipa::path(post, path = "/v1/gdpr/export", operation_id = "gdpr_export", tag = "gdpr", request_body = ExportBody,
    responses((status = 200, description = "The export file (JSON, CSV or XML)"),
        (status = 202, body = ExportDelivered), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn export(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<ExportBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "export")?;
    let body = body.into_inner();
    let mut errors = Vec::new();
    check_principal(&body.principal_id, &mut errors);
    if let (Some(from), Some(to)) = (body.from, body.to) {
        if from > to {
            errors.push(FieldError::new("from", "must not be after `to`"));
        }
    }
    valid(errors)?;
    let request = ExportRequest {
        organization_id: caller.organization_id().to_owned(),
        principal_id: body.principal_id,
        format: body.format,
        from: body.from,
        to: body.to,
        requested_by: caller.actor(),
    };
    let exported = state
        .gdpr
        .send(Export {
            request,
            destination_id: body.destination_id,
        })
        .await??;
    match exported {
        Exported::Delivered(delivered) => Ok(HttpResponse::Accepted().json(delivered)),
        Exported::Stream(stream) => {
            let request_id = stream.request_id;
            let chunks = futures_util::stream::unfold(stream.body, |mut body| async move {
                let chunk = body.recv().await?;
                Some((
                    chunk.map_err(|error| {
                        tracing::warn!(%error, "Export stopped half-way");
                        actix_web::error::ErrorInternalServerError("the export failed")
                    }),
                    body,
                ))
            });
            Ok(HttpResponse::Ok()
                .content_type(stream.format.content_type())
                .insert_header(("X-Gdpr-Request-Id", request_id.to_string()))
                .insert_header((
                    header::LINK,
                    format!("</v1/gdpr/requests/{request_id}>; rel=\"manifest\""),
                ))
                .insert_header((
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"gdpr-export-{request_id}.{}\"",
                        stream.format.extension()
                    ),
                ))
                .streaming(chunks))
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PseudonymizeBody {
    #[schema(max_length = 255, pattern = r"\S")]
    pub principal_id: String,
    pub strategy: Strategy,
}

/// Replaces a subject's identifier by a pseudonym in every event of the
/// organization. Repeating the request returns the same pseudonym (and
/// catches events stored since); a subject keeps the strategy it was first
/// given (409 for another).
#[utoipa::path(post, path = "/v1/gdpr/pseudonymize", operation_id = "gdpr_pseudonymize", tag = "gdpr", request_body = PseudonymizeBody,
    responses((status = 200, body = Pseudonymized), (status = 400), (status = 401), (status = 403),
        (status = 409, description = "Another strategy, or an operation on the subject is running")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn pseudonymize(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<PseudonymizeBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "pseudonymize")?;
    let body = body.into_inner();
    let mut errors = Vec::new();
    check_principal(&body.principal_id, &mut errors);
    valid(errors)?;
    let done = state
        .gdpr
        .send(Pseudonymize {
            organization_id: caller.organization_id().to_owned(),
            principal_id: body.principal_id,
            strategy: body.strategy,
            requested_by: caller.actor(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(done))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseBody {
    #[schema(max_length = 255, pattern = r"\S")]
    pub principal_id: String,
    /// Keep (pseudonymized) the events `gdpr.preserve_actions` and
    /// `gdpr.preserve_classifications` name; default true. Events under a
    /// legal hold are kept either way.
    #[serde(default = "preserve_by_default")]
    pub preserve_compliance: bool,
}

fn preserve_by_default() -> bool {
    true
}

/// Erases a subject: deletes their own events except those that must be
/// kept, which are pseudonymized, and pseudonymizes the subject in other
/// principals' events that name them.
#[utoipa::path(post, path = "/v1/gdpr/erase", operation_id = "gdpr_erase", tag = "gdpr", request_body = EraseBody,
    responses((status = 200, body = Erased), (status = 400), (status = 401), (status = 403),
        (status = 409, description = "An operation on the subject is running")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn erase(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<EraseBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "delete")?;
    let body = body.into_inner();
    let mut errors = Vec::new();
    check_principal(&body.principal_id, &mut errors);
    valid(errors)?;
    let done = state
        .gdpr
        .send(Erase {
            organization_id: caller.organization_id().to_owned(),
            principal_id: body.principal_id,
            preserve_compliance: body.preserve_compliance,
            requested_by: caller.actor(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(done))
}

/// The original identifier behind a pseudonym, for a role holding
/// `audit.gdpr:reverse`; every look-up is recorded as an audit event.
#[utoipa::path(get, path = "/v1/gdpr/pseudonyms/{pseudonym_id}", operation_id = "gdpr_reverse_pseudonym", tag = "gdpr",
    params(("pseudonym_id" = String, Path, description = "A pseudonym this organization gave")),
    responses((status = 200, body = Reversed), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn reverse(
    state: web::Data<AppState>,
    caller: Caller,
    pseudonym_id: Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "reverse")?;
    let done = state
        .gdpr
        .send(Reverse {
            organization_id: caller.organization_id().to_owned(),
            pseudonym_id: pseudonym_id.into_inner(),
            requested_by: caller.actor(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(done))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    /// rectification | restriction | objection
    #[serde(rename = "type")]
    #[schema(pattern = "^(rectification|restriction|objection)$")]
    pub kind: String,
    #[schema(max_length = 255, pattern = r"\S")]
    pub principal_id: String,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordedRequest {
    pub request_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    /// What the worker does with the request.
    pub statement: &'static str,
}

/// Records a data subject request the worker does not act on by itself, and
/// says what it does with it.
#[utoipa::path(post, path = "/v1/gdpr/requests", operation_id = "record_gdpr_request", tag = "gdpr", request_body = RequestBody,
    responses((status = 202, body = RecordedRequest), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn record_request(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<RequestBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "create")?;
    let body = body.into_inner();
    let mut errors = Vec::new();
    if !RECORDED_REQUESTS.contains(&body.kind.as_str()) {
        errors.push(FieldError::new(
            "type",
            format!(
                "one of {}; use /v1/gdpr/export, /pseudonymize or /erase for the others",
                RECORDED_REQUESTS.join(", ")
            ),
        ));
    }
    check_principal(&body.principal_id, &mut errors);
    if body
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        errors.push(FieldError::new(
            "description",
            format!("at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    valid(errors)?;
    let operation = state
        .gdpr
        .send(RecordRequest {
            organization_id: caller.organization_id().to_owned(),
            kind: body.kind.clone(),
            principal_id: body.principal_id,
            description: body.description,
            requested_by: caller.actor(),
        })
        .await??;
    Ok(HttpResponse::Accepted().json(RecordedRequest {
        request_id: operation.id,
        statement: statement(&body.kind),
        kind: body.kind,
    }))
}

/// One GDPR request: its kind, status, who asked, and its result (an
/// export's manifest).
#[utoipa::path(get, path = "/v1/gdpr/requests/{id}", operation_id = "get_gdpr_request", tag = "gdpr",
    params(("id" = Uuid, Path, description = "Request id")),
    responses((status = 200, body = Operation), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(request = %id))]
pub async fn get_request(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let operation = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(gdpr::get_operation(tx, organization_id, *id).await?)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("GDPR request {id}")))?;
    Ok(HttpResponse::Ok().json(operation))
}
