//! `maintenance_runs`: what each database maintenance run did (V13).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::DbError;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MaintenanceRun {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub instance: String,
    /// `schedule` or `operator`.
    pub trigger: String,
    /// One object per statement: table, action, dead and live tuples, milliseconds.
    #[schema(value_type = Vec<Object>)]
    pub actions: Value,
    pub error: Option<String>,
}

const COLUMNS: &str = "id, started_at, finished_at, instance, trigger, actions, error";

fn from_row(row: &tokio_postgres::Row) -> MaintenanceRun {
    MaintenanceRun {
        id: row.get("id"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        instance: row.get("instance"),
        trigger: row.get("trigger"),
        actions: row.get("actions"),
        error: row.get("error"),
    }
}

/// Records the start of a run; its id.
pub async fn start(
    client: &impl GenericClient,
    instance: &str,
    trigger: &str,
) -> Result<i64, DbError> {
    Ok(client
        .query_one(
            "INSERT INTO maintenance_runs (instance, trigger) VALUES ($1, $2) RETURNING id",
            &[&instance, &trigger],
        )
        .await?
        .get(0))
}

/// Records what a run did (and its error, if it stopped on one).
pub async fn finish(
    client: &impl GenericClient,
    id: i64,
    actions: &Value,
    error: Option<&str>,
) -> Result<MaintenanceRun, DbError> {
    let row = client
        .query_one(
            &format!(
                "UPDATE maintenance_runs SET finished_at = now(), actions = $2, error = $3
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&id, actions, &error],
        )
        .await?;
    Ok(from_row(&row))
}

/// The most recent runs, newest first.
pub async fn recent(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Vec<MaintenanceRun>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM maintenance_runs ORDER BY started_at DESC, id DESC LIMIT $1"
            ),
            &[&limit],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}
