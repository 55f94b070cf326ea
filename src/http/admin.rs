//! `/v1/admin`: the platform operators' tools. Only keys of the operators'
//! organization (`operations.organization`) whose role grants
//! `system.operations` get in ([`Caller::require_operator`]); tenants get 403,
//! whatever their role.

use actix_web::{web, HttpResponse};

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api_error::{ApiError, FieldError};
use super::auth::Caller;
use super::extract::{Json, Path, Query};
use super::AppState;
use crate::db::error_log::{self, Aggregation, AggregationFilter, ErrorLogEntry};
use crate::db::maintenance_runs::MaintenanceRun;
use crate::db::performance::{self, ExplainError, PerformanceReport};
use crate::error_tracking::Severity;
use crate::maintenance::database::{self, MaintenanceError, Trigger};
use crate::validation::timestamp_field;

/// error_log rows shown with one aggregation.
const RECENT_ROWS: i64 = 50;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ErrorQuery {
    #[param(value_type = Option<crate::error_tracking::Severity>)]
    pub severity: Option<String>,
    /// e.g. internal, dependency, actor, ingest, maintenance.
    pub category: Option<String>,
    /// Aggregations that affected this component (e.g. http, ingest, an actor's name).
    pub component: Option<String>,
    /// Last seen at or after (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Aggregations to skip, default 0.
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorList {
    /// Most recently seen first.
    pub aggregations: Vec<Aggregation>,
    /// The `offset` of the next page, when this one was full.
    pub next_offset: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorAggregationDetail {
    pub aggregation: Aggregation,
    /// Its most recent error_log rows (at most 50).
    pub recent: Vec<ErrorLogEntry>,
}

/// Internal errors aggregated by fingerprint.
#[utoipa::path(get, path = "/v1/admin/errors", operation_id = "list_errors", tag = "admin", params(ErrorQuery),
    responses((status = 200, body = ErrorList), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list_errors(
    state: web::Data<AppState>,
    caller: Caller,
    query: Query<ErrorQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_operator(&state.config.operations.organization, "read")?;
    let mut problems = Vec::new();
    if let Some(severity) = &query.severity {
        if serde_json::from_value::<Severity>(serde_json::Value::from(severity.as_str())).is_err() {
            problems.push(FieldError::new(
                "severity",
                "must be one of LOW, MEDIUM, HIGH, CRITICAL",
            ));
        }
    }
    let since = timestamp_field("since", query.since.as_deref(), &mut problems);
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        problems.push(FieldError::new("limit", "must be between 1 and 500"));
    }
    let offset = query.offset.unwrap_or(0);
    if offset < 0 {
        problems.push(FieldError::new("offset", "must not be negative"));
    }
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    let filter = AggregationFilter {
        severity: query.severity.as_deref(),
        category: query.category.as_deref(),
        component: query.component.as_deref(),
        since,
        limit,
        offset,
    };
    let client = state.pool.get().await?;
    let aggregations = error_log::list(&**client, &filter).await?;
    // `then`, not `then_some`: the sum is only wanted (and only fits) for a full page.
    let next_offset = (aggregations.len() as i64 == limit)
        .then(|| offset.checked_add(limit))
        .flatten();
    Ok(HttpResponse::Ok().json(ErrorList {
        aggregations,
        next_offset,
    }))
}

/// One aggregation and its recent occurrences.
#[utoipa::path(get, path = "/v1/admin/errors/{aggregation_key}", operation_id = "get_error", tag = "admin",
    params(("aggregation_key" = String, Path, description = "The fingerprint")),
    responses((status = 200, body = ErrorAggregationDetail), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn get_error(
    state: web::Data<AppState>,
    caller: Caller,
    key: Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_operator(&state.config.operations.organization, "read")?;
    let client = state.pool.get().await?;
    let aggregation = error_log::get(&**client, &key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("error aggregation {key}")))?;
    let recent = error_log::recent(&**client, &key, RECENT_ROWS).await?;
    Ok(HttpResponse::Ok().json(ErrorAggregationDetail {
        aggregation,
        recent,
    }))
}

/// The database performance report: slow statements, index usage, table and
/// partition statistics, cache hit ratio, connections, suggested indexes and
/// the last maintenance runs.
#[utoipa::path(get, path = "/v1/admin/performance", operation_id = "get_performance_report", tag = "admin",
    responses((status = 200, body = PerformanceReport), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn performance(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require_operator(&state.config.operations.organization, "read")?;
    let report = performance::report(&state.pool, &state.config).await?;
    Ok(HttpResponse::Ok().json(report))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// One read-only statement: SELECT, or WITH … SELECT without data-modifying CTEs.
    pub query: String,
    /// Run the query (EXPLAIN ANALYZE), bounded by `operations.explain_timeout`.
    #[serde(default)]
    pub analyze: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainResponse {
    /// PostgreSQL's `EXPLAIN (FORMAT JSON)` output.
    #[schema(value_type = Vec<Object>)]
    pub plan: serde_json::Value,
}

/// EXPLAIN of one read-only query, in a READ ONLY transaction with a timeout.
#[utoipa::path(post, path = "/v1/admin/performance/explain", operation_id = "explain_query", tag = "admin",
    request_body = ExplainRequest,
    responses((status = 200, body = ExplainResponse),
        (status = 400, description = "Not a single read-only query, or PostgreSQL refused it"),
        (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(analyze = body.analyze))]
pub async fn explain(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<ExplainRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_operator(&state.config.operations.organization, "read")?;
    let plan = performance::explain(
        &state.pool,
        &body.query,
        body.analyze,
        state.config.operations.explain_timeout,
    )
    .await
    .map_err(|error| match error {
        ExplainError::Refused(problem) | ExplainError::Rejected(problem) => {
            ApiError::Validation(vec![FieldError::new("query", problem)])
        }
        ExplainError::Database(error) => error.into(),
    })?;
    Ok(HttpResponse::Ok().json(ExplainResponse { plan }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MaintenanceOutcome {
    /// False when another worker instance was running maintenance.
    pub ran: bool,
    pub run: Option<MaintenanceRun>,
}

/// Runs database maintenance now (ANALYZE; VACUUM where dead tuples exceed
/// `operations.vacuum_dead_ratio`), unless another instance is running it.
#[utoipa::path(post, path = "/v1/admin/maintenance/run", operation_id = "run_maintenance", tag = "admin",
    responses((status = 200, body = MaintenanceOutcome), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn run_maintenance(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require_operator(&state.config.operations.organization, "manage")?;
    match database::run(&state.config, Trigger::Operator).await {
        Ok(run) => Ok(HttpResponse::Ok().json(MaintenanceOutcome {
            ran: run.is_some(),
            run,
        })),
        Err(MaintenanceError::Database(error)) => Err(error.into()),
        // Recorded (with the run) in maintenance_runs, and as this request's internal error.
        Err(error) => Err(ApiError::Internal(error.to_string())),
    }
}
