//! `/v1/report-templates` and `/v1/reports`: report templates, scheduled
//! reports, their runs and the runs' outputs (permission `audit.reports`;
//! downloading an output is `export`, since it may list PHI events).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::Utc;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::admin_trail;
use super::api_error::ApiError;
use super::auth::Caller;
use super::cursor;
use super::extract::{Json, Path, Query};
use super::AppState;
use crate::db::reports::{self, Execution, ScheduledReport, Template};
use crate::db::{destinations, tenant};
use crate::messages::report::RunDue;
use crate::reports::definition::{
    self, Found, ReportDefinition, ReportInput, ScheduleInput, TemplateInput, MAX_TAGS,
};
use crate::reports::output;
use crate::reports::{Format, ReportType};
use crate::validation::FieldError;

const RESOURCE: &str = "audit.reports";

// --- Templates -------------------------------------------------------------

/// A template: defaults for the reports made from it. `PATCH` takes any subset.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    #[schema(max_length = 255, pattern = r"\S")]
    pub name: Option<String>,
    #[schema(max_length = 4000)]
    pub description: Option<String>,
    #[schema(value_type = Option<ReportType>)]
    pub report_type: Option<String>,
    /// Criteria (see `POST /v1/reports`).
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "crate::validation::optional_bounded_json")]
    pub default_criteria: Option<Value>,
    /// Default json.
    #[schema(value_type = Option<Format>)]
    pub default_format: Option<String>,
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "crate::validation::optional_bounded_json")]
    pub default_export_config: Option<Value>,
    #[schema(schema_with = tags_schema)]
    pub tags: Option<Vec<String>>,
    pub is_active: Option<bool>,
}

/// A template's `tags`, as [`definition::template`] checks them.
fn tags_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .schema_type(
            [Type::Array, Type::Null]
                .into_iter()
                .collect::<utoipa::openapi::schema::SchemaType>(),
        )
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(100)),
        )
        .max_items(Some(MAX_TAGS))
        .build()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<Template>,
}

impl From<TemplateBody> for TemplateInput {
    fn from(body: TemplateBody) -> Self {
        TemplateInput {
            name: body.name,
            description: body.description,
            report_type: body.report_type,
            default_criteria: body.default_criteria,
            default_format: body.default_format,
            default_export_config: body.default_export_config,
            tags: body.tags,
            is_active: body.is_active,
        }
    }
}

#[utoipa::path(get, path = "/v1/report-templates", operation_id = "list_report_templates", tag = "reports",
    responses((status = 200, body = TemplateList), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list_templates(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let templates = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(reports::list_templates(tx, organization_id).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(TemplateList { templates }))
}

#[utoipa::path(post, path = "/v1/report-templates", operation_id = "create_report_template", tag = "reports", request_body = TemplateBody,
    responses((status = 201, body = Template), (status = 400), (status = 401), (status = 403),
        (status = 409, description = "A template of that name exists")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn create_template(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<TemplateBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "create")?;
    let organization_id = caller.organization_id();
    let actor = caller.actor();
    let definition =
        definition::template(body.into_inner().into(), None).map_err(ApiError::Validation)?;
    let created = tenant::scoped(&state.pool, organization_id, async |tx| {
        let created =
            reports::insert_template(tx, organization_id, &definition.fields(), &actor).await?;
        let change = ("report_template", "create");
        admin_trail::record(&state, tx, &caller, change, created.id, json!(&created)).await?;
        Ok::<_, ApiError>(created)
    })
    .await?;
    Ok(HttpResponse::Created().json(created))
}

#[utoipa::path(get, path = "/v1/report-templates/{id}", operation_id = "get_report_template", tag = "reports",
    params(("id" = Uuid, Path, description = "Template id")),
    responses((status = 200, body = Template), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(template = %id))]
pub async fn get_template(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let template = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(reports::get_template(tx, organization_id, *id).await?)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("report template {id}")))?;
    Ok(HttpResponse::Ok().json(template))
}

#[utoipa::path(patch, path = "/v1/report-templates/{id}", operation_id = "update_report_template", tag = "reports", request_body = TemplateBody,
    params(("id" = Uuid, Path, description = "Template id")),
    responses((status = 200, body = Template), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 409)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(template = %id))]
pub async fn update_template(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<TemplateBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "update")?;
    let organization_id = caller.organization_id();
    let actor = caller.actor();
    let mut client = state.pool.get().await?;
    let transaction = tenant::begin(&mut client, organization_id).await?;
    let existing = reports::get_template(&transaction, organization_id, *id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("report template {id}")))?;
    let definition = definition::template(body.into_inner().into(), Some(&existing))
        .map_err(ApiError::Validation)?;
    let updated = reports::update_template(
        &transaction,
        organization_id,
        *id,
        &definition.fields(),
        &actor,
    )
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("report template {id}")))?;
    let change = ("report_template", "update");
    admin_trail::record(&state, &transaction, &caller, change, *id, json!(&updated)).await?;
    transaction.commit().await?;
    Ok(HttpResponse::Ok().json(updated))
}

#[utoipa::path(delete, path = "/v1/report-templates/{id}", operation_id = "delete_report_template", tag = "reports",
    params(("id" = Uuid, Path, description = "Template id")),
    responses((status = 204, description = "Deleted; reports made from it keep their settings"),
        (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(template = %id))]
pub async fn delete_template(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "delete")?;
    let organization_id = caller.organization_id();
    let deleted = tenant::scoped(&state.pool, organization_id, async |tx| {
        let deleted = reports::delete_template(tx, organization_id, *id).await?;
        if deleted {
            let change = ("report_template", "delete");
            admin_trail::record(&state, tx, &caller, change, *id, json!({})).await?;
        }
        Ok::<_, ApiError>(deleted)
    })
    .await?;
    if deleted {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("report template {id}")))
    }
}

// --- Scheduled reports -----------------------------------------------------

/// When a report runs.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// Five fields: minute hour day-of-month month day-of-week (`0 6 * * 1`).
    pub cron: String,
    /// IANA time zone the expression is read in; default `UTC`.
    pub timezone: Option<String>,
}

/// A scheduled report. `PATCH` takes any subset. With `template_id`, what the
/// body leaves out comes from the template.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    #[schema(max_length = 255, pattern = r"\S")]
    pub name: Option<String>,
    #[schema(max_length = 4000)]
    pub description: Option<String>,
    pub template_id: Option<Uuid>,
    /// Required unless the template gives it.
    #[schema(value_type = Option<ReportType>)]
    pub report_type: Option<String>,
    /// `time_range`: `{"last": "7d"}`, `{"previous": "day|week|month"}` (in the
    /// schedule's time zone) or `{"from", "to"}`; default: since the previous
    /// slot. Event filters as `GET /v1/events` takes them: action (`auth.*`
    /// for a prefix), principal_id, target_resource_type, target_resource_id,
    /// status, data_classification.
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "crate::validation::optional_bounded_json")]
    pub criteria: Option<Value>,
    /// Default json, or the template's.
    #[schema(value_type = Option<Format>)]
    pub format: Option<String>,
    pub schedule: Option<ScheduleBody>,
    /// Destinations each run's output is delivered to, each once.
    // A literal, as utoipa requires: definition::MAX_DESTINATIONS.
    #[schema(max_items = 20)]
    pub destination_ids: Option<Vec<i64>>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportList {
    pub reports: Vec<ScheduledReport>,
}

impl From<ReportBody> for ReportInput {
    fn from(body: ReportBody) -> Self {
        ReportInput {
            name: body.name,
            description: body.description,
            template_id: body.template_id,
            report_type: body.report_type,
            criteria: body.criteria,
            format: body.format,
            schedule: body.schedule.map(|schedule| ScheduleInput {
                cron: schedule.cron,
                timezone: schedule.timezone,
            }),
            destination_ids: body.destination_ids,
            enabled: body.enabled,
        }
    }
}

/// Validates a report body over `existing` (PATCH) or nothing (POST), with
/// the template and destinations it names read in the caller's transaction.
async fn report_definition(
    client: &impl tokio_postgres::GenericClient,
    organization_id: &str,
    body: ReportBody,
    existing: Option<&ScheduledReport>,
) -> Result<ReportDefinition, ApiError> {
    let input = ReportInput::from(body);
    let template = match input.template_id {
        Some(id) => reports::get_template(client, organization_id, id).await?,
        None => None,
    };
    let wanted = input.destinations_to_find(existing);
    let destination_ids = if wanted.is_empty() {
        Vec::new()
    } else {
        destinations::get_many(client, organization_id, &wanted)
            .await?
            .into_iter()
            .map(|destination| destination.id)
            .collect()
    };
    let found = Found {
        template,
        destination_ids,
    };
    definition::report(input, existing, found, Utc::now()).map_err(ApiError::Validation)
}

#[utoipa::path(get, path = "/v1/reports", operation_id = "list_reports", tag = "reports",
    responses((status = 200, body = ReportList), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list_reports(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let reports = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(reports::list_reports(tx, organization_id).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(ReportList { reports }))
}

#[utoipa::path(post, path = "/v1/reports", operation_id = "create_report", tag = "reports", request_body = ReportBody,
    responses((status = 201, body = ScheduledReport), (status = 400), (status = 401), (status = 403),
        (status = 409, description = "A report of that name exists")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn create_report(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<ReportBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "create")?;
    let organization_id = caller.organization_id();
    let actor = caller.actor();
    let body = body.into_inner();
    let report = tenant::scoped(&state.pool, organization_id, async |tx| {
        let definition = report_definition(tx, organization_id, body, None).await?;
        let report =
            reports::insert_report(tx, organization_id, &definition.fields(), &actor).await?;
        admin_trail::record(
            &state,
            tx,
            &caller,
            ("report", "create"),
            report.id,
            json!(&report),
        )
        .await?;
        Ok::<_, ApiError>(report)
    })
    .await?;
    tracing::info!(report = %report.id, next_run = ?report.next_run, "Created scheduled report");
    Ok(HttpResponse::Created().json(report))
}

#[utoipa::path(get, path = "/v1/reports/{id}", operation_id = "get_report", tag = "reports",
    params(("id" = Uuid, Path, description = "Report id")),
    responses((status = 200, body = ScheduledReport), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(report = %id))]
pub async fn get_report(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let report = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(reports::get_report(tx, organization_id, *id).await?)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("report {id}")))?;
    Ok(HttpResponse::Ok().json(report))
}

#[utoipa::path(patch, path = "/v1/reports/{id}", operation_id = "update_report", tag = "reports", request_body = ReportBody,
    params(("id" = Uuid, Path, description = "Report id")),
    responses((status = 200, body = ScheduledReport), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 409)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(report = %id))]
pub async fn update_report(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<ReportBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "update")?;
    let organization_id = caller.organization_id();
    let actor = caller.actor();
    let body = body.into_inner();
    let report = tenant::scoped(&state.pool, organization_id, async |tx| {
        let existing = reports::get_report(tx, organization_id, *id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("report {id}")))?;
        let definition = report_definition(tx, organization_id, body, Some(&existing)).await?;
        let report = reports::update_report(tx, organization_id, *id, &definition.fields(), &actor)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("report {id}")))?;
        admin_trail::record(
            &state,
            tx,
            &caller,
            ("report", "update"),
            *id,
            json!(&report),
        )
        .await?;
        Ok::<_, ApiError>(report)
    })
    .await?;
    Ok(HttpResponse::Ok().json(report))
}

#[utoipa::path(delete, path = "/v1/reports/{id}", operation_id = "delete_report", tag = "reports",
    params(("id" = Uuid, Path, description = "Report id")),
    responses((status = 204, description = "Deleted with its runs and their outputs"),
        (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(report = %id))]
pub async fn delete_report(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "delete")?;
    let organization_id = caller.organization_id();
    let deleted = tenant::scoped(&state.pool, organization_id, async |tx| {
        let deleted = reports::delete_report(tx, organization_id, *id).await?;
        if deleted {
            admin_trail::record(&state, tx, &caller, ("report", "delete"), *id, json!({})).await?;
        }
        Ok::<_, ApiError>(deleted)
    })
    .await?;
    if deleted {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("report {id}")))
    }
}

// --- Runs ------------------------------------------------------------------

/// Queues a run of the report now (its period ends now); 202 with the run.
#[utoipa::path(post, path = "/v1/reports/{id}/run", operation_id = "run_report", tag = "reports",
    params(("id" = Uuid, Path, description = "Report id")),
    responses((status = 202, body = Execution), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(report = %id))]
pub async fn run_now(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "create")?;
    let organization_id = caller.organization_id();
    let actor = caller.actor();
    let execution = tenant::scoped(&state.pool, organization_id, async |tx| {
        reports::get_report(tx, organization_id, *id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("report {id}")))?;
        Ok::<_, ApiError>(reports::insert_manual_run(tx, organization_id, *id, &actor).await?)
    })
    .await?;
    state.reports.notify(RunDue);
    Ok(HttpResponse::Accepted().json(execution))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExecutionQuery {
    /// Default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionPage {
    /// Newest slot first.
    pub executions: Vec<Execution>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/reports/{id}/executions", operation_id = "list_report_executions", tag = "reports",
    params(("id" = Uuid, Path, description = "Report id"), ExecutionQuery),
    responses((status = 200, body = ExecutionPage), (status = 400), (status = 401), (status = 403),
        (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(report = %id))]
pub async fn list_executions(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<Uuid>,
    query: Query<ExecutionQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let limit = query.limit.unwrap_or(50);
    let mut errors = Vec::new();
    if !(1..=200).contains(&limit) {
        errors.push(FieldError::new("limit", "must be between 1 and 200"));
    }
    let before = match query.cursor.as_deref().map(cursor::decode) {
        None => None,
        Some(Some(before)) => Some(before),
        Some(None) => {
            errors.push(FieldError::new("cursor", "not a cursor this API returned"));
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let organization_id = caller.organization_id();
    let executions = tenant::scoped(&state.pool, organization_id, async |tx| {
        reports::get_report(tx, organization_id, *id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("report {id}")))?;
        Ok::<_, ApiError>(reports::list_executions(tx, organization_id, *id, before, limit).await?)
    })
    .await?;
    let next_cursor = (executions.len() as i64 == limit)
        .then(|| {
            executions
                .last()
                .map(|run| cursor::encode(run.scheduled_time, run.id))
        })
        .flatten();
    Ok(HttpResponse::Ok().json(ExecutionPage {
        executions,
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/reports/{id}/executions/{execution_id}", operation_id = "get_report_execution", tag = "reports",
    params(("id" = Uuid, Path, description = "Report id"),
        ("execution_id" = Uuid, Path, description = "Run id")),
    responses((status = 200, body = Execution), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(report = %path.0.0, execution = %path.0.1))]
pub async fn get_execution(
    state: web::Data<AppState>,
    caller: Caller,
    path: Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let (report_id, execution_id) = path.into_inner();
    let execution =
        find_execution(&state, caller.organization_id(), report_id, execution_id).await?;
    Ok(HttpResponse::Ok().json(execution))
}

/// The output of a completed run, streamed as it was stored; its SHA-256 is
/// the run's `output_sha256` (also in the `X-Content-SHA256` header).
#[utoipa::path(get, path = "/v1/reports/{id}/executions/{execution_id}/output", operation_id = "download_report_output", tag = "reports",
    params(("id" = Uuid, Path, description = "Report id"),
        ("execution_id" = Uuid, Path, description = "Run id")),
    responses((status = 200, description = "The output (JSON, CSV or HTML)"), (status = 401),
        (status = 403), (status = 404), (status = 409, description = "The run has not completed")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(report = %path.0.0, execution = %path.0.1))]
pub async fn download_output(
    state: web::Data<AppState>,
    caller: Caller,
    path: Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "export")?;
    let (report_id, execution_id) = path.into_inner();
    let organization_id = caller.organization_id();
    let execution = find_execution(&state, organization_id, report_id, execution_id).await?;
    let (Some(format), Some(sha256)) = (
        execution.output_format.as_deref().and_then(Format::parse),
        execution.output_sha256.as_deref(),
    ) else {
        return Err(ApiError::Conflict(format!(
            "run {execution_id} is {} and has no output",
            execution.status
        )));
    };
    let chunks = output::read(state.pool.clone(), organization_id.to_owned(), execution_id)
        .map_err(|error| {
            tracing::warn!(%error, "A report output download stopped half-way");
            actix_web::error::ErrorInternalServerError("the output could not be read")
        });
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header(("X-Content-SHA256", sha256.to_owned()))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"report-{execution_id}.{}\"",
                format.as_str()
            ),
        ))
        .streaming(chunks))
}

async fn find_execution(
    state: &AppState,
    organization_id: &str,
    report_id: Uuid,
    execution_id: Uuid,
) -> Result<Execution, ApiError> {
    tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(
            reports::get_execution(tx, organization_id, report_id, execution_id).await?,
        )
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("run {execution_id} of report {report_id}")))
}
