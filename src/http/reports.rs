//! `/v1/report-templates` and `/v1/reports`: report templates, scheduled
//! reports, their runs and the runs' outputs (permission `audit.reports`;
//! downloading an output is `export`, since it may list PHI events).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::cursor;
use super::errors::ApiError;
use super::extract::{Json, Path, Query};
use super::AppState;
use crate::db::reports::{
    self, Execution, ReportFields, ScheduledReport, Template, TemplateFields,
};
use crate::db::{destinations, tenant};
use crate::messages::report::RunDue;
use crate::reports::criteria::Criteria;
use crate::reports::output;
use crate::reports::schedule::Schedule;
use crate::reports::{Format, ReportType};
use crate::validation::FieldError;

const RESOURCE: &str = "audit.reports";
const MAX_DESTINATIONS: usize = 20;
const MAX_TAGS: usize = 50;

// --- Validation shared by templates and reports -----------------------------

fn check_name(name: Option<&str>, errors: &mut Vec<FieldError>) {
    match name {
        None => errors.push(FieldError::new("name", "is required")),
        Some(name) if name.trim().is_empty() || name.chars().count() > 255 => {
            errors.push(FieldError::new("name", "must be 1 to 255 characters"))
        }
        Some(_) => {}
    }
}

fn check_description(description: Option<&str>, errors: &mut Vec<FieldError>) {
    if description.is_some_and(|d| d.chars().count() > 4000) {
        errors.push(FieldError::new("description", "at most 4000 characters"));
    }
}

fn report_type(
    field: &str,
    value: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<ReportType> {
    match value {
        None => {
            errors.push(FieldError::new(field, "is required"));
            None
        }
        Some(value) => ReportType::parse(value).or_else(|| {
            errors.push(FieldError::new(
                field,
                format!("must be one of {}", ReportType::names()),
            ));
            None
        }),
    }
}

fn format(field: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<Format> {
    Format::parse(value).or_else(|| {
        let hint = if value == "pdf" {
            "pdf is not produced: use html, the human-readable format"
        } else {
            "must be json, csv or html"
        };
        errors.push(FieldError::new(field, hint));
        None
    })
}

/// Validates criteria for `report_type` and returns their stored form.
fn criteria(
    value: &Value,
    report_type: Option<ReportType>,
    errors: &mut Vec<FieldError>,
) -> Option<Value> {
    let report_type = report_type?;
    match Criteria::parse(value, report_type) {
        Ok(criteria) => Some(criteria.to_json()),
        Err(problems) => {
            errors.extend(problems);
            None
        }
    }
}

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

/// A template's `tags`, as [`template_fields`] checks them.
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

/// Validates a template body over `existing` (PATCH) or nothing (POST).
fn template_fields(
    body: TemplateBody,
    existing: Option<&Template>,
) -> Result<OwnedTemplate, ApiError> {
    let mut errors = Vec::new();
    let name = body.name.or_else(|| existing.map(|t| t.name.clone()));
    check_name(name.as_deref(), &mut errors);
    let description = body
        .description
        .or_else(|| existing.and_then(|t| t.description.clone()));
    check_description(description.as_deref(), &mut errors);
    let type_name = body
        .report_type
        .or_else(|| existing.map(|t| t.report_type.clone()));
    let kind = report_type("report_type", type_name.as_deref(), &mut errors);
    let raw_criteria = body
        .default_criteria
        .or_else(|| existing.map(|t| t.default_criteria.clone()))
        .unwrap_or(Value::Null);
    let mut criteria_errors = Vec::new();
    let default_criteria = criteria(&raw_criteria, kind, &mut criteria_errors);
    // The criteria's errors name `criteria.*`; here the field is default_criteria.
    errors.extend(criteria_errors.into_iter().map(|mut error| {
        error.field = error.field.replacen("criteria", "default_criteria", 1);
        error
    }));
    let default_format = body
        .default_format
        .or_else(|| existing.map(|t| t.default_format.clone()))
        .unwrap_or_else(|| "json".into());
    format("default_format", &default_format, &mut errors);
    let default_export_config = body
        .default_export_config
        .or_else(|| existing.map(|t| t.default_export_config.clone()))
        .unwrap_or_else(|| Value::Object(Default::default()));
    if !default_export_config.is_object() {
        errors.push(FieldError::new(
            "default_export_config",
            "must be an object",
        ));
    }
    let tags = match body.tags {
        Some(tags) => tags,
        None => existing
            .and_then(|t| serde_json::from_value(t.tags.clone()).ok())
            .unwrap_or_default(),
    };
    if tags.len() > MAX_TAGS || tags.iter().any(|t| t.is_empty() || t.chars().count() > 100) {
        errors.push(FieldError::new(
            "tags",
            format!("at most {MAX_TAGS} tags of 1 to 100 characters"),
        ));
    }
    match (name, type_name, default_criteria) {
        (Some(name), Some(report_type), Some(default_criteria)) if errors.is_empty() => {
            Ok(OwnedTemplate {
                name,
                description,
                report_type,
                default_criteria,
                default_format,
                default_export_config,
                tags,
                is_active: body
                    .is_active
                    .or(existing.map(|t| t.is_active))
                    .unwrap_or(true),
            })
        }
        _ => Err(ApiError::Validation(errors)),
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
    let fields = template_fields(body.into_inner(), None)?;
    let created = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(
            reports::insert_template(tx, organization_id, &fields.borrowed(), &actor).await?,
        )
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
    let fields = template_fields(body.into_inner(), Some(&existing))?;
    let updated = reports::update_template(
        &transaction,
        organization_id,
        *id,
        &fields.borrowed(),
        &actor,
    )
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("report template {id}")))?;
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
        Ok::<_, ApiError>(reports::delete_template(tx, organization_id, *id).await?)
    })
    .await?;
    if deleted {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("report template {id}")))
    }
}

/// Owned template fields, to carry them from validation to the query.
struct OwnedTemplate {
    name: String,
    description: Option<String>,
    report_type: String,
    default_criteria: Value,
    default_format: String,
    default_export_config: Value,
    tags: Vec<String>,
    is_active: bool,
}

impl OwnedTemplate {
    fn borrowed(&self) -> TemplateFields<'_> {
        TemplateFields {
            name: &self.name,
            description: self.description.as_deref(),
            report_type: &self.report_type,
            default_criteria: &self.default_criteria,
            default_format: &self.default_format,
            default_export_config: &self.default_export_config,
            tags: &self.tags,
            is_active: self.is_active,
        }
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
    #[schema(max_items = 20)]
    pub destination_ids: Option<Vec<i64>>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportList {
    pub reports: Vec<ScheduledReport>,
}

struct OwnedReport {
    name: String,
    description: Option<String>,
    template_id: Option<Uuid>,
    report_type: String,
    criteria: Value,
    format: String,
    schedule: Value,
    destination_ids: Vec<i64>,
    enabled: bool,
    next_run: Option<DateTime<Utc>>,
}

impl OwnedReport {
    fn borrowed(&self) -> ReportFields<'_> {
        ReportFields {
            name: &self.name,
            description: self.description.as_deref(),
            template_id: self.template_id,
            report_type: &self.report_type,
            criteria: &self.criteria,
            format: &self.format,
            schedule: &self.schedule,
            destination_ids: &self.destination_ids,
            enabled: self.enabled,
            next_run: self.next_run,
        }
    }
}

/// Validates a report body over `existing` (PATCH) or nothing (POST),
/// reading its template and destinations in the caller's transaction.
async fn report_fields(
    client: &impl tokio_postgres::GenericClient,
    organization_id: &str,
    body: ReportBody,
    existing: Option<&ScheduledReport>,
) -> Result<OwnedReport, ApiError> {
    let mut errors = Vec::new();
    let template = match body.template_id {
        Some(id) => match reports::get_template(client, organization_id, id).await? {
            Some(template) if template.is_active => Some(template),
            Some(_) => {
                errors.push(FieldError::new("template_id", "the template is not active"));
                None
            }
            None => {
                errors.push(FieldError::new("template_id", format!("no template {id}")));
                None
            }
        },
        None => None,
    };
    let template_id = body.template_id.or(existing.and_then(|r| r.template_id));
    let name = body.name.or_else(|| existing.map(|r| r.name.clone()));
    check_name(name.as_deref(), &mut errors);
    let description = body
        .description
        .or_else(|| existing.and_then(|r| r.description.clone()))
        .or_else(|| template.as_ref().and_then(|t| t.description.clone()));
    check_description(description.as_deref(), &mut errors);
    let type_name = body
        .report_type
        .or_else(|| existing.map(|r| r.report_type.clone()))
        .or_else(|| template.as_ref().map(|t| t.report_type.clone()));
    let kind = report_type("report_type", type_name.as_deref(), &mut errors);
    let raw_criteria = body
        .criteria
        .or_else(|| existing.map(|r| r.criteria.clone()))
        .or_else(|| template.as_ref().map(|t| t.default_criteria.clone()))
        .unwrap_or(Value::Null);
    let stored_criteria = criteria(&raw_criteria, kind, &mut errors);
    let format_name = body
        .format
        .or_else(|| existing.map(|r| r.format.clone()))
        .or_else(|| template.as_ref().map(|t| t.default_format.clone()))
        .unwrap_or_else(|| "json".into());
    format("format", &format_name, &mut errors);
    let schedule_changed = body.schedule.is_some();
    let schedule_json = match body.schedule {
        Some(schedule) => Some(serde_json::json!({
            "cron": schedule.cron,
            "timezone": schedule.timezone.unwrap_or_else(|| "UTC".into()),
        })),
        None => existing.map(|r| r.schedule.clone()),
    };
    let schedule = match &schedule_json {
        None => {
            errors.push(FieldError::new("schedule", "is required"));
            None
        }
        Some(json) => Schedule::parse(
            "schedule",
            json["cron"].as_str().unwrap_or_default(),
            json["timezone"].as_str().unwrap_or_default(),
        )
        .map_err(|problems| errors.extend(problems))
        .ok(),
    };
    let destination_ids = body
        .destination_ids
        .or_else(|| existing.map(|r| r.destination_ids.clone()))
        .unwrap_or_default();
    if destination_ids.len() > MAX_DESTINATIONS {
        errors.push(FieldError::new(
            "destination_ids",
            format!("at most {MAX_DESTINATIONS}"),
        ));
    } else if !destination_ids.is_empty() {
        let found = destinations::get_many(client, organization_id, &destination_ids).await?;
        for (i, id) in destination_ids.iter().enumerate() {
            if destination_ids[..i].contains(id) {
                errors.push(FieldError::new(
                    format!("destination_ids[{i}]"),
                    "listed twice",
                ));
            } else if !found.iter().any(|destination| destination.id == *id) {
                errors.push(FieldError::new(
                    format!("destination_ids[{i}]"),
                    format!("no destination {id}"),
                ));
            }
        }
    }
    let enabled = body.enabled.or(existing.map(|r| r.enabled)).unwrap_or(true);
    let (Some(name), Some(report_type), Some(criteria), Some(schedule), Some(schedule_json)) =
        (name, type_name, stored_criteria, schedule, schedule_json)
    else {
        return Err(ApiError::Validation(errors));
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // A schedule keeps its pending slot unless it changed or was re-enabled
    // (which then does not catch up the time it was off).
    let next_run = match existing {
        _ if !enabled => None,
        Some(existing) if !schedule_changed && existing.enabled && existing.next_run.is_some() => {
            existing.next_run
        }
        _ => schedule.next_after(Utc::now()),
    };
    Ok(OwnedReport {
        name,
        description,
        template_id,
        report_type,
        criteria,
        format: format_name,
        schedule: schedule_json,
        destination_ids,
        enabled,
        next_run,
    })
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
        let fields = report_fields(tx, organization_id, body, None).await?;
        Ok::<_, ApiError>(
            reports::insert_report(tx, organization_id, &fields.borrowed(), &actor).await?,
        )
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
        let fields = report_fields(tx, organization_id, body, Some(&existing)).await?;
        reports::update_report(tx, organization_id, *id, &fields.borrowed(), &actor)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("report {id}")))
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
        Ok::<_, ApiError>(reports::delete_report(tx, organization_id, *id).await?)
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
