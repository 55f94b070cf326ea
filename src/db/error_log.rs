//! `error_log` and `error_aggregation`: the error tracker's writes and the
//! operators' reads. These tables hold the worker's own errors, across
//! organizations, and are read only through the operators' API.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{GenericClient, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{DbError, PgPool};
use crate::error_tracking::{sample_json, Batch};

/// Samples kept per aggregation: the most recent ones.
const KEPT_SAMPLES: i64 = 5;

/// A rate this much above (below) the previous interval's is a rising (falling) trend.
const TREND_FACTOR: f64 = 1.2;

const UPSERT: &str = "
INSERT INTO error_aggregation AS a (aggregation_key, category, severity, count, error_rate,
    trend, first_occurrence, last_occurrence, affected_components, samples, updated_at)
VALUES ($1, $2, $3, $4, $5, 'stable', $6, $7, $8, $9, now())
ON CONFLICT (aggregation_key) DO UPDATE SET
    count = a.count + EXCLUDED.count,
    severity = EXCLUDED.severity,
    error_rate = EXCLUDED.error_rate,
    trend = CASE
        WHEN EXCLUDED.error_rate > a.error_rate * $10 THEN 'increasing'
        WHEN EXCLUDED.error_rate < a.error_rate / $10 THEN 'decreasing'
        ELSE 'stable' END,
    first_occurrence = LEAST(a.first_occurrence, EXCLUDED.first_occurrence),
    last_occurrence = GREATEST(a.last_occurrence, EXCLUDED.last_occurrence),
    affected_components = (
        SELECT coalesce(jsonb_agg(DISTINCT component), '[]')
        FROM jsonb_array_elements_text(a.affected_components || EXCLUDED.affected_components)
            AS component),
    samples = (
        SELECT coalesce(jsonb_agg(sample ORDER BY position), '[]')
        FROM (SELECT sample, position
              FROM jsonb_array_elements(a.samples || EXCLUDED.samples)
                  WITH ORDINALITY AS t(sample, position)
              ORDER BY position DESC LIMIT $11) AS kept),
    updated_at = now()";

const INSERT_LOG: &str = "
INSERT INTO error_log (organization_id, category, severity, code, message, component, operation,
    correlation_id, request_id, retryable, aggregation_key, context, \"timestamp\")
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// Writes a flush batch in one transaction: one upsert per fingerprint and
/// its sampled `error_log` rows. The rate is errors a minute over the time
/// since the batch's oldest error (at least `min_window`); the trend compares
/// it with the rate of the last flush that had this error.
pub async fn write(
    pool: &PgPool,
    batch: &Batch,
    now: DateTime<Utc>,
    min_window: Duration,
) -> Result<(), DbError> {
    let window = batch
        .since
        .and_then(|since| (now - since).to_std().ok())
        .unwrap_or_default()
        .max(min_window)
        .max(Duration::from_millis(1));
    let minutes = window.as_secs_f64() / 60.0;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let upsert = tx.prepare(UPSERT).await?;
    let insert = tx.prepare(INSERT_LOG).await?;
    for group in &batch.groups {
        let first = group.first();
        let count = i64::try_from(group.count).unwrap_or(i64::MAX);
        let components = Value::from(group.components.iter().cloned().collect::<Vec<_>>());
        let samples = Value::from(group.samples.iter().map(sample_json).collect::<Vec<_>>());
        tx.execute(
            &upsert,
            &[
                &group.fingerprint,
                &clip(first.category, 50),
                &first.severity.as_str(),
                &count,
                &(group.count as f64 / minutes),
                &group.first_at,
                &group.last_at,
                &components,
                &samples,
                &TREND_FACTOR,
                &KEPT_SAMPLES,
            ],
        )
        .await?;
        for occurrence in &group.samples {
            let event = &occurrence.event;
            let context = (!event.context.is_null()).then_some(&event.context);
            tx.execute(
                &insert,
                &[
                    &event.organization_id.as_deref().map(|id| clip(id, 255)),
                    &clip(event.category, 50),
                    &event.severity.as_str(),
                    &clip(event.code, 100),
                    &event.message,
                    &clip(&event.component, 100),
                    &clip(&event.operation, 100),
                    &event.correlation_id.as_deref().map(|id| clip(id, 255)),
                    &event.request_id.as_deref().map(|id| clip(id, 255)),
                    &event.retryable,
                    &group.fingerprint,
                    &context,
                    &occurrence.at,
                ],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// At most `limit` characters (the column's width), cut on a character boundary.
fn clip(text: &str, limit: usize) -> &str {
    match text.char_indices().nth(limit) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Deletes `error_log` rows older than `before`; how many.
pub async fn delete_older_than(
    client: &impl GenericClient,
    before: DateTime<Utc>,
) -> Result<u64, DbError> {
    Ok(client
        .execute("DELETE FROM error_log WHERE \"timestamp\" < $1", &[&before])
        .await?)
}

/// One fingerprint's aggregate.
#[derive(Debug, Serialize, ToSchema)]
pub struct Aggregation {
    pub aggregation_key: String,
    pub category: String,
    pub severity: String,
    pub count: i64,
    /// Errors a minute over the last flush interval that had this error.
    pub error_rate: f64,
    /// `increasing`, `decreasing` or `stable`, against the previous such interval.
    pub trend: String,
    pub first_occurrence: DateTime<Utc>,
    pub last_occurrence: DateTime<Utc>,
    #[schema(value_type = Vec<String>)]
    pub affected_components: Value,
    /// The most recent occurrences (at most 5): code, message, component, operation, ids.
    #[schema(value_type = Vec<Object>)]
    pub samples: Value,
}

impl From<&Row> for Aggregation {
    fn from(row: &Row) -> Self {
        Self {
            aggregation_key: row.get("aggregation_key"),
            category: row.get("category"),
            severity: row.get("severity"),
            count: row.get("count"),
            error_rate: row.get("error_rate"),
            trend: row.get("trend"),
            first_occurrence: row.get("first_occurrence"),
            last_occurrence: row.get("last_occurrence"),
            affected_components: row.get("affected_components"),
            samples: row.get("samples"),
        }
    }
}

/// Filters of the aggregation listing; `None` matches everything.
#[derive(Debug, Default)]
pub struct AggregationFilter<'a> {
    pub severity: Option<&'a str>,
    pub category: Option<&'a str>,
    pub component: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub limit: i64,
    pub offset: i64,
}

const COLUMNS: &str = "aggregation_key, category, severity, count, error_rate, trend, \
    first_occurrence, last_occurrence, affected_components, samples";

/// Aggregations, most recently seen first.
pub async fn list(
    client: &impl GenericClient,
    filter: &AggregationFilter<'_>,
) -> Result<Vec<Aggregation>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM error_aggregation
                 WHERE ($1::text IS NULL OR severity = $1)
                   AND ($2::text IS NULL OR category = $2)
                   AND ($3::text IS NULL OR affected_components ? $3)
                   AND ($4::timestamptz IS NULL OR last_occurrence >= $4)
                 ORDER BY last_occurrence DESC, aggregation_key
                 LIMIT $5 OFFSET $6"
            ),
            &[
                &filter.severity,
                &filter.category,
                &filter.component,
                &filter.since,
                &filter.limit,
                &filter.offset,
            ],
        )
        .await?;
    Ok(rows.iter().map(Aggregation::from).collect())
}

pub async fn get(
    client: &impl GenericClient,
    aggregation_key: &str,
) -> Result<Option<Aggregation>, DbError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM error_aggregation WHERE aggregation_key = $1"),
            &[&aggregation_key],
        )
        .await?;
    Ok(row.as_ref().map(Aggregation::from))
}

/// One stored occurrence.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorLogEntry {
    pub id: Uuid,
    pub organization_id: Option<String>,
    pub category: String,
    pub severity: String,
    pub code: String,
    pub message: String,
    pub component: Option<String>,
    pub operation: Option<String>,
    pub correlation_id: Option<String>,
    pub request_id: Option<String>,
    pub retryable: bool,
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    pub timestamp: DateTime<Utc>,
}

/// The most recent `error_log` rows of a fingerprint.
pub async fn recent(
    client: &impl GenericClient,
    aggregation_key: &str,
    limit: i64,
) -> Result<Vec<ErrorLogEntry>, DbError> {
    let rows = client
        .query(
            "SELECT id, organization_id, category, severity, code, message, component, operation,
                    correlation_id, request_id, retryable, context, \"timestamp\"
             FROM error_log WHERE aggregation_key = $1
             ORDER BY \"timestamp\" DESC LIMIT $2",
            &[&aggregation_key, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ErrorLogEntry {
            id: row.get("id"),
            organization_id: row.get("organization_id"),
            category: row.get("category"),
            severity: row.get("severity"),
            code: row.get("code"),
            message: row.get("message"),
            component: row.get("component"),
            operation: row.get("operation"),
            correlation_id: row.get("correlation_id"),
            request_id: row.get("request_id"),
            retryable: row.get("retryable"),
            context: row.get("context"),
            timestamp: row.get("timestamp"),
        })
        .collect())
}
