//! Queries on `report_templates`, `scheduled_reports`, `report_executions`
//! (which doubles as the queue of runs: pending, then claimed under a lease)
//! and `report_outputs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::Json;
use tokio_postgres::{GenericClient, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{save_error, DbError, SaveError};

// --- Templates -------------------------------------------------------------

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Template {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub report_type: String,
    #[schema(value_type = Object)]
    pub default_criteria: Value,
    pub default_format: String,
    #[schema(value_type = Object)]
    pub default_export_config: Value,
    #[schema(value_type = Vec<String>)]
    pub tags: Value,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<String>,
}

/// A template's fields as validated.
pub struct TemplateFields<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub report_type: &'a str,
    pub default_criteria: &'a Value,
    pub default_format: &'a str,
    pub default_export_config: &'a Value,
    pub tags: &'a [String],
    pub is_active: bool,
}

const TEMPLATE_COLUMNS: &str =
    "id, name, description, report_type, default_criteria, default_format, \
    default_export_config, tags, is_active, created_at, created_by, updated_at, updated_by";

fn template(row: &Row) -> Result<Template, DbError> {
    Ok(Template {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        report_type: row.try_get("report_type")?,
        default_criteria: row.try_get::<_, Json<Value>>("default_criteria")?.0,
        default_format: row.try_get("default_format")?,
        default_export_config: row.try_get::<_, Json<Value>>("default_export_config")?.0,
        tags: row.try_get::<_, Json<Value>>("tags")?.0,
        is_active: row.try_get("is_active")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        updated_at: row.try_get("updated_at")?,
        updated_by: row.try_get("updated_by")?,
    })
}

pub async fn insert_template(
    client: &impl GenericClient,
    organization_id: &str,
    fields: &TemplateFields<'_>,
    actor: &str,
) -> Result<Template, SaveError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO report_templates (organization_id, name, description, report_type, default_criteria, \
                   default_format, default_export_config, tags, is_active, created_by, updated_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING {TEMPLATE_COLUMNS}"
            ),
            &[
                &organization_id,
                &fields.name,
                &fields.description,
                &fields.report_type,
                &Json(fields.default_criteria),
                &fields.default_format,
                &Json(fields.default_export_config),
                &Json(fields.tags),
                &fields.is_active,
                &actor,
            ],
        )
        .await
        .map_err(|error| save_error(error, fields.name))?;
    Ok(template(&row)?)
}

pub async fn update_template(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
    fields: &TemplateFields<'_>,
    actor: &str,
) -> Result<Option<Template>, SaveError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE report_templates SET name = $3, description = $4, report_type = $5, default_criteria = $6, \
                   default_format = $7, default_export_config = $8, tags = $9, is_active = $10, \
                   updated_by = $11, updated_at = now() \
                 WHERE organization_id = $1 AND id = $2 RETURNING {TEMPLATE_COLUMNS}"
            ),
            &[
                &organization_id,
                &id,
                &fields.name,
                &fields.description,
                &fields.report_type,
                &Json(fields.default_criteria),
                &fields.default_format,
                &Json(fields.default_export_config),
                &Json(fields.tags),
                &fields.is_active,
                &actor,
            ],
        )
        .await
        .map_err(|error| save_error(error, fields.name))?;
    Ok(row.as_ref().map(template).transpose()?)
}

pub async fn list_templates(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Vec<Template>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {TEMPLATE_COLUMNS} FROM report_templates WHERE organization_id = $1 ORDER BY name"
            ),
            &[&organization_id],
        )
        .await?;
    rows.iter().map(template).collect()
}

pub async fn get_template(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
) -> Result<Option<Template>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {TEMPLATE_COLUMNS} FROM report_templates WHERE organization_id = $1 AND id = $2"
            ),
            &[&organization_id, &id],
        )
        .await?;
    row.as_ref().map(template).transpose()
}

pub async fn delete_template(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
) -> Result<bool, DbError> {
    let deleted = client
        .execute(
            "DELETE FROM report_templates WHERE organization_id = $1 AND id = $2",
            &[&organization_id, &id],
        )
        .await?;
    Ok(deleted > 0)
}

// --- Scheduled reports -----------------------------------------------------

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduledReport {
    pub id: Uuid,
    pub organization_id: String,
    pub name: String,
    pub description: Option<String>,
    pub template_id: Option<Uuid>,
    pub report_type: String,
    #[schema(value_type = Object)]
    pub criteria: Value,
    pub format: String,
    /// `{"cron": "0 6 * * 1", "timezone": "Europe/Paris"}`.
    #[schema(value_type = Object)]
    pub schedule: Value,
    /// Where each run's output is delivered.
    pub destination_ids: Vec<i64>,
    pub enabled: bool,
    pub last_run: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<String>,
}

/// A schedule's fields as validated.
pub struct ReportFields<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub template_id: Option<Uuid>,
    pub report_type: &'a str,
    pub criteria: &'a Value,
    pub format: &'a str,
    pub schedule: &'a Value,
    pub destination_ids: &'a [i64],
    pub enabled: bool,
    pub next_run: Option<DateTime<Utc>>,
}

const REPORT_COLUMNS: &str = "id, organization_id, name, description, template_id, report_type, criteria, format, schedule, \
    delivery, enabled, last_run, next_run, created_at, created_by, updated_at, updated_by";

fn scheduled_report(row: &Row) -> Result<ScheduledReport, DbError> {
    let delivery = row.try_get::<_, Json<Value>>("delivery")?.0;
    Ok(ScheduledReport {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        template_id: row.try_get("template_id")?,
        report_type: row.try_get("report_type")?,
        criteria: row.try_get::<_, Json<Value>>("criteria")?.0,
        format: row.try_get("format")?,
        schedule: row.try_get::<_, Json<Value>>("schedule")?.0,
        destination_ids: delivery["destination_ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default(),
        enabled: row.try_get("enabled")?,
        last_run: row.try_get("last_run")?,
        next_run: row.try_get("next_run")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        updated_at: row.try_get("updated_at")?,
        updated_by: row.try_get("updated_by")?,
    })
}

pub async fn insert_report(
    client: &impl GenericClient,
    organization_id: &str,
    fields: &ReportFields<'_>,
    actor: &str,
) -> Result<ScheduledReport, SaveError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO scheduled_reports (organization_id, name, description, template_id, report_type, \
                   criteria, format, schedule, delivery, enabled, next_run, created_by, updated_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING {REPORT_COLUMNS}"
            ),
            &[
                &organization_id,
                &fields.name,
                &fields.description,
                &fields.template_id,
                &fields.report_type,
                &Json(fields.criteria),
                &fields.format,
                &Json(fields.schedule),
                &Json(serde_json::json!({"destination_ids": fields.destination_ids})),
                &fields.enabled,
                &fields.next_run,
                &actor,
            ],
        )
        .await
        .map_err(|error| save_error(error, fields.name))?;
    Ok(scheduled_report(&row)?)
}

pub async fn update_report(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
    fields: &ReportFields<'_>,
    actor: &str,
) -> Result<Option<ScheduledReport>, SaveError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE scheduled_reports SET name = $3, description = $4, template_id = $5, report_type = $6, \
                   criteria = $7, format = $8, schedule = $9, delivery = $10, enabled = $11, next_run = $12, \
                   updated_by = $13, updated_at = now() \
                 WHERE organization_id = $1 AND id = $2 RETURNING {REPORT_COLUMNS}"
            ),
            &[
                &organization_id,
                &id,
                &fields.name,
                &fields.description,
                &fields.template_id,
                &fields.report_type,
                &Json(fields.criteria),
                &fields.format,
                &Json(fields.schedule),
                &Json(serde_json::json!({"destination_ids": fields.destination_ids})),
                &fields.enabled,
                &fields.next_run,
                &actor,
            ],
        )
        .await
        .map_err(|error| save_error(error, fields.name))?;
    Ok(row.as_ref().map(scheduled_report).transpose()?)
}

pub async fn list_reports(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Vec<ScheduledReport>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {REPORT_COLUMNS} FROM scheduled_reports WHERE organization_id = $1 ORDER BY name"
            ),
            &[&organization_id],
        )
        .await?;
    rows.iter().map(scheduled_report).collect()
}

pub async fn get_report(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
) -> Result<Option<ScheduledReport>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {REPORT_COLUMNS} FROM scheduled_reports WHERE organization_id = $1 AND id = $2"
            ),
            &[&organization_id, &id],
        )
        .await?;
    row.as_ref().map(scheduled_report).transpose()
}

pub async fn delete_report(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
) -> Result<bool, DbError> {
    let deleted = client
        .execute(
            "DELETE FROM scheduled_reports WHERE organization_id = $1 AND id = $2",
            &[&organization_id, &id],
        )
        .await?;
    Ok(deleted > 0)
}

/// Organizations with a due schedule. Read without locks, so that Citus
/// runs it on every shard; [`lock_due`] then locks each organization's
/// schedules on its own.
pub async fn organizations_due(client: &impl GenericClient) -> Result<Vec<String>, DbError> {
    let rows = client
        .query(
            "SELECT DISTINCT organization_id FROM scheduled_reports \
             WHERE enabled AND next_run <= now() ORDER BY organization_id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Due schedules of the organization, locked (others skip them) until the
/// caller's transaction ends.
pub async fn lock_due(
    client: &impl GenericClient,
    organization_id: &str,
    limit: i64,
) -> Result<Vec<ScheduledReport>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {REPORT_COLUMNS} FROM scheduled_reports \
                 WHERE organization_id = $1 AND enabled AND next_run <= now() \
                 ORDER BY next_run LIMIT $2 FOR UPDATE SKIP LOCKED"
            ),
            &[&organization_id, &limit],
        )
        .await?;
    rows.iter().map(scheduled_report).collect()
}

/// Moves a locked due schedule to its next slot and queues the run of
/// `slot` (once: a slot already queued is not queued again).
pub async fn queue_slot(
    client: &impl GenericClient,
    report: &ScheduledReport,
    slot: DateTime<Utc>,
    missed_slots: i64,
    next_run: Option<DateTime<Utc>>,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO report_executions (report_config_id, organization_id, scheduled_time, trigger, \
               status, lease_until, export_result) \
             VALUES ($1, $2, $3, 'scheduled', 'pending', now(), $4) \
             ON CONFLICT (organization_id, report_config_id, scheduled_time) WHERE trigger = 'scheduled' \
             DO NOTHING",
            &[
                &report.id,
                &report.organization_id,
                &slot,
                &Json(serde_json::json!({"missed_slots": missed_slots})),
            ],
        )
        .await?;
    client
        .execute(
            "UPDATE scheduled_reports SET next_run = $3 WHERE organization_id = $1 AND id = $2",
            &[&report.organization_id, &report.id, &next_run],
        )
        .await?;
    Ok(())
}

// --- Executions ------------------------------------------------------------

/// A run of a report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Execution {
    pub id: Uuid,
    pub report_id: Uuid,
    pub organization_id: String,
    /// `scheduled` (a cron slot) or `manual`.
    pub trigger: String,
    /// The slot, or when a manual run was asked for.
    pub scheduled_time: DateTime<Utc>,
    /// When the last attempt started.
    pub execution_time: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// `pending`, `running`, `completed` or `failed`.
    pub status: String,
    pub attempts: i32,
    /// Milliseconds.
    pub duration: Option<i32>,
    pub records_processed: Option<i64>,
    pub period_from: Option<DateTime<Utc>>,
    pub period_to: Option<DateTime<Utc>>,
    pub output_format: Option<String>,
    /// SHA-256 (hex) of the output as downloaded.
    pub output_sha256: Option<String>,
    pub output_bytes: Option<i64>,
    /// The report's summary figures, and `missed_slots` for a catch-up run.
    #[schema(value_type = Option<Object>)]
    pub export_result: Option<Value>,
    /// The verification of the covered period.
    #[schema(value_type = Option<Object>)]
    pub integrity_report: Option<Value>,
    /// One entry per destination: its delivery and that delivery's status.
    #[schema(value_type = Vec<Object>)]
    pub delivery_attempts: Value,
    pub error: Option<String>,
    pub requested_by: Option<String>,
}

/// Every column but `delivery_attempts`, which a query adds as it stands
/// (`e.delivery_attempts`) or with each delivery's status ([`DELIVERY_STATUS`]).
const EXECUTION_COLUMNS: &str = "e.id, e.report_config_id, e.organization_id, e.trigger, e.scheduled_time, \
    e.execution_time, e.completed_at, e.status, e.attempts, e.duration, e.records_processed, e.period_from, \
    e.period_to, e.output_format, e.output_sha256, e.output_bytes, e.export_result, e.integrity_report, \
    e.error, e.requested_by";

/// `delivery_attempts` with each delivery's current status and attempts
/// (from `delivery_queue`), so a run shows how its deliveries went.
const DELIVERY_STATUS: &str = concat!(
    "coalesce((SELECT jsonb_agg(a.attempt || coalesce(jsonb_build_object('status', ",
    super::deliveries::shown_status!("q."),
    ", 'attempts', q.retry_count, 'last_error', q.last_error, \
      'processed_at', q.processed_at), '{}'::jsonb) ORDER BY a.n) \
    FROM jsonb_array_elements(e.delivery_attempts) WITH ORDINALITY AS a(attempt, n) \
    LEFT JOIN delivery_queue q ON q.organization_id = e.organization_id \
      AND q.id::text = a.attempt ->> 'delivery_id'), '[]'::jsonb) AS delivery_attempts"
);

fn execution(row: &Row) -> Result<Execution, DbError> {
    Ok(Execution {
        id: row.try_get("id")?,
        report_id: row.try_get("report_config_id")?,
        organization_id: row.try_get("organization_id")?,
        trigger: row.try_get("trigger")?,
        scheduled_time: row.try_get("scheduled_time")?,
        execution_time: row.try_get("execution_time")?,
        completed_at: row.try_get("completed_at")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        duration: row.try_get("duration")?,
        records_processed: row.try_get("records_processed")?,
        period_from: row.try_get("period_from")?,
        period_to: row.try_get("period_to")?,
        output_format: row.try_get("output_format")?,
        output_sha256: row.try_get("output_sha256")?,
        output_bytes: row.try_get("output_bytes")?,
        export_result: row
            .try_get::<_, Option<Json<Value>>>("export_result")?
            .map(|Json(v)| v),
        integrity_report: row
            .try_get::<_, Option<Json<Value>>>("integrity_report")?
            .map(|Json(v)| v),
        delivery_attempts: row.try_get::<_, Json<Value>>("delivery_attempts")?.0,
        error: row.try_get("error")?,
        requested_by: row.try_get("requested_by")?,
    })
}

/// Queues a manual run of `report_id` now.
pub async fn insert_manual_run(
    client: &impl GenericClient,
    organization_id: &str,
    report_id: Uuid,
    requested_by: &str,
) -> Result<Execution, DbError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO report_executions AS e (report_config_id, organization_id, scheduled_time, trigger, \
                   status, lease_until, requested_by) \
                 VALUES ($1, $2, now(), 'manual', 'pending', now(), $3) RETURNING {EXECUTION_COLUMNS}, e.delivery_attempts"
            ),
            &[&report_id, &organization_id, &requested_by],
        )
        .await?;
    execution(&row)
}

/// The runs of a report, newest slot first, `limit` of them before `before`.
pub async fn list_executions(
    client: &impl GenericClient,
    organization_id: &str,
    report_id: Uuid,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Execution>, DbError> {
    let (before_time, before_id) = before.unzip();
    let rows = client
        .query(
            &format!(
                "SELECT {EXECUTION_COLUMNS}, {DELIVERY_STATUS} FROM report_executions e \
                 WHERE e.organization_id = $1 AND e.report_config_id = $2 \
                   AND ($3::timestamptz IS NULL OR (e.scheduled_time, e.id) < ($3, $4)) \
                 ORDER BY e.scheduled_time DESC, e.id DESC LIMIT $5"
            ),
            &[
                &organization_id,
                &report_id,
                &before_time,
                &before_id,
                &limit,
            ],
        )
        .await?;
    rows.iter().map(execution).collect()
}

pub async fn get_execution(
    client: &impl GenericClient,
    organization_id: &str,
    report_id: Uuid,
    id: Uuid,
) -> Result<Option<Execution>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {EXECUTION_COLUMNS}, {DELIVERY_STATUS} FROM report_executions e \
                 WHERE e.organization_id = $1 AND e.report_config_id = $2 AND e.id = $3"
            ),
            &[&organization_id, &report_id, &id],
        )
        .await?;
    row.as_ref().map(execution).transpose()
}

/// Marks `failed` the runs whose lease ran out after their last attempt (the
/// worker running them stopped); returns how many.
pub async fn fail_abandoned(
    client: &impl GenericClient,
    max_attempts: i32,
) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "UPDATE report_executions SET status = 'failed', lease_until = NULL, completed_at = now(), \
               error = coalesce(error || '; ', '') || 'the worker running its last attempt stopped' \
             WHERE status IN ('pending', 'running') AND lease_until <= now() AND attempts >= $1",
            &[&max_attempts],
        )
        .await?)
}

/// Organizations with runs to claim: due (pending) or abandoned (lease run
/// out). Read without locks, so that Citus runs it on every shard; [`claim`]
/// then claims each organization's runs on its own.
pub async fn organizations_claimable(client: &impl GenericClient) -> Result<Vec<String>, DbError> {
    let rows = client
        .query(
            "SELECT DISTINCT organization_id FROM report_executions \
             WHERE status IN ('pending', 'running') AND lease_until <= now() ORDER BY organization_id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Claims up to `limit` of the organization's runs that are due (pending) or
/// abandoned (lease run out) for `lease`; concurrent claimers skip each
/// other's rows.
pub async fn claim(
    client: &impl GenericClient,
    organization_id: &str,
    worker: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Execution>, DbError> {
    let rows = client
        .query(
            &format!(
                "UPDATE report_executions e SET status = 'running', claimed_by = $2, attempts = e.attempts + 1, \
                   lease_until = now() + $3 * interval '1 millisecond', execution_time = now() \
                 WHERE e.organization_id = $1 AND e.id IN (SELECT id FROM report_executions \
                   WHERE organization_id = $1 AND status IN ('pending', 'running') AND lease_until <= now() \
                   ORDER BY lease_until LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 RETURNING {EXECUTION_COLUMNS}, e.delivery_attempts"
            ),
            &[&organization_id, &worker, &(lease.as_millis() as f64), &limit],
        )
        .await?;
    rows.iter().map(execution).collect()
}

/// Extends this worker's claim of the organization's run; false when it is
/// no longer this worker's.
pub async fn renew_lease(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
    worker: &str,
    lease: Duration,
) -> Result<bool, DbError> {
    Ok(client
        .execute(
            "UPDATE report_executions SET lease_until = now() + $4 * interval '1 millisecond' \
             WHERE organization_id = $1 AND id = $2 AND claimed_by = $3 AND status = 'running'",
            &[&organization_id, &id, &worker, &(lease.as_millis() as f64)],
        )
        .await?
        > 0)
}

/// What a completed run records.
pub struct Completion<'a> {
    pub period: (DateTime<Utc>, DateTime<Utc>),
    pub duration_ms: i32,
    pub records_processed: i64,
    pub format: &'a str,
    pub sha256: &'a str,
    pub bytes: i64,
    pub export_result: &'a Value,
    pub integrity_report: &'a Value,
    pub delivery_attempts: &'a Value,
}

/// Records a completed run (if this worker still holds it) and the
/// schedule's `last_run`.
pub async fn complete(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
    worker: &str,
    done: &Completion<'_>,
) -> Result<bool, DbError> {
    let updated = client
        .execute(
            "UPDATE report_executions SET status = 'completed', lease_until = NULL, completed_at = now(), \
               period_from = $4, period_to = $5, duration = $6, records_processed = $7, output_format = $8, \
               output_sha256 = $9, output_bytes = $10, \
               export_result = coalesce(export_result, '{}'::jsonb) || $11, integrity_report = $12, \
               delivery_attempts = $13, error = NULL \
             WHERE organization_id = $1 AND id = $2 AND claimed_by = $3 AND status = 'running'",
            &[
                &organization_id,
                &id,
                &worker,
                &done.period.0,
                &done.period.1,
                &done.duration_ms,
                &done.records_processed,
                &done.format,
                &done.sha256,
                &done.bytes,
                &Json(done.export_result),
                &Json(done.integrity_report),
                &Json(done.delivery_attempts),
            ],
        )
        .await?;
    if updated > 0 {
        client
            .execute(
                "UPDATE scheduled_reports s SET last_run = now() FROM report_executions e \
                 WHERE s.organization_id = $1 AND e.organization_id = s.organization_id AND e.id = $2 \
                   AND s.id = e.report_config_id",
                &[&organization_id, &id],
            )
            .await?;
    }
    Ok(updated > 0)
}

/// Records a failed attempt: the run is tried again after `retry_after`, or
/// is `failed` when `final_attempt`.
pub async fn fail_attempt(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
    worker: &str,
    error: &str,
    final_attempt: bool,
    retry_after: Duration,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE report_executions SET error = $4, \
               status = CASE WHEN $5 THEN 'failed' ELSE 'pending' END, \
               lease_until = CASE WHEN $5 THEN NULL ELSE now() + $6 * interval '1 millisecond' END, \
               completed_at = CASE WHEN $5 THEN now() END \
             WHERE organization_id = $1 AND id = $2 AND claimed_by = $3 AND status = 'running'",
            &[
                &organization_id,
                &id,
                &worker,
                &error,
                &final_attempt,
                &(retry_after.as_millis() as f64),
            ],
        )
        .await?;
    Ok(())
}

// --- Outputs ---------------------------------------------------------------

/// Drops what an earlier attempt of the organization's run stored.
pub async fn delete_outputs(
    client: &impl GenericClient,
    organization_id: &str,
    execution_id: Uuid,
) -> Result<(), DbError> {
    client
        .execute(
            "DELETE FROM report_outputs WHERE organization_id = $1 AND execution_id = $2",
            &[&organization_id, &execution_id],
        )
        .await?;
    Ok(())
}

pub async fn insert_output_chunk(
    client: &impl GenericClient,
    execution_id: Uuid,
    seq: i32,
    organization_id: &str,
    data: &[u8],
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO report_outputs (execution_id, seq, organization_id, data) VALUES ($1, $2, $3, $4)",
            &[&execution_id, &seq, &organization_id, &data],
        )
        .await?;
    Ok(())
}

pub async fn output_chunk(
    client: &impl GenericClient,
    organization_id: &str,
    execution_id: Uuid,
    seq: i32,
) -> Result<Option<Vec<u8>>, DbError> {
    let row = client
        .query_opt(
            "SELECT data FROM report_outputs WHERE organization_id = $1 AND execution_id = $2 AND seq = $3",
            &[&organization_id, &execution_id, &seq],
        )
        .await?;
    Ok(row.map(|row| row.get("data")))
}
