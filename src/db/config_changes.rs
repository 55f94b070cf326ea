//! Queries on `config_change_event`: the history of configuration changes
//! (not tenant data: one history per deployment).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::DbError;

/// A row to record; values already masked.
pub struct NewChange<'a> {
    pub field: &'a str,
    pub previous_value: Option<&'a Value>,
    pub new_value: Option<&'a Value>,
    pub changed_by: &'a str,
    pub reason: &'a str,
    pub environment: &'a str,
    pub previous_version: &'a str,
    /// `None` for a refused reload: no new version came into force.
    pub new_version: Option<&'a str>,
}

/// A recorded change, as `audit-worker config history` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigChange {
    pub id: i64,
    pub timestamp: DateTime<Utc>,
    pub field: String,
    pub previous_value: Option<Value>,
    pub new_value: Option<Value>,
    pub changed_by: String,
    pub reason: Option<String>,
    pub environment: Option<String>,
    pub previous_version: Option<String>,
    pub new_version: Option<String>,
}

pub async fn insert(client: &impl GenericClient, change: &NewChange<'_>) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO config_change_event (field, previous_value, new_value, changed_by, reason, \
               environment, previous_version, new_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &change.field,
                &change.previous_value,
                &change.new_value,
                &change.changed_by,
                &change.reason,
                &change.environment,
                &change.previous_version,
                &change.new_version,
            ],
        )
        .await?;
    Ok(())
}

/// The latest `limit` changes, newest first.
pub async fn latest(client: &impl GenericClient, limit: i64) -> Result<Vec<ConfigChange>, DbError> {
    let rows = client
        .query(
            "SELECT id, \"timestamp\", field, previous_value, new_value, changed_by, reason, environment, \
               previous_version, new_version FROM config_change_event ORDER BY id DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ConfigChange {
            id: row.get("id"),
            timestamp: row.get("timestamp"),
            field: row.get("field"),
            previous_value: row.get("previous_value"),
            new_value: row.get("new_value"),
            changed_by: row.get("changed_by"),
            reason: row.get("reason"),
            environment: row.get("environment"),
            previous_version: row.get("previous_version"),
            new_version: row.get("new_version"),
        })
        .collect())
}
