//! An organization's own alert rules (`alert_rules`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::Json;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::{save_error, DbError, SaveError};
use crate::alerts::rule::RuleDefinition;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoredRule {
    pub id: i64,
    /// How alerts name the rule (`rule_id`): `org:<id>`.
    pub rule_id: String,
    pub definition: RuleDefinition,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// The `rule_id` alerts of the organization's rule `id` carry.
pub fn rule_id(id: i64) -> String {
    format!("org:{id}")
}

const COLUMNS: &str = "id, definition, created_at, created_by, updated_at";

fn stored(row: &tokio_postgres::Row) -> Result<StoredRule, DbError> {
    let id: i64 = row.get("id");
    let definition: Json<RuleDefinition> = row.try_get("definition")?;
    Ok(StoredRule {
        id,
        rule_id: rule_id(id),
        definition: definition.0,
        created_at: row.get("created_at"),
        created_by: row.get("created_by"),
        updated_at: row.get("updated_at"),
    })
}

pub async fn insert(
    client: &impl GenericClient,
    organization_id: &str,
    definition: &RuleDefinition,
    created_by: &str,
) -> Result<StoredRule, SaveError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO alert_rules (organization_id, name, definition, enabled, created_by) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
            ),
            &[
                &organization_id,
                &definition.name,
                &Json(definition),
                &definition.enabled,
                &created_by,
            ],
        )
        .await
        .map_err(|error| save_error(error, &definition.name))?;
    Ok(stored(&row)?)
}

/// Replaces a rule; `None` when the organization has no rule `id`.
pub async fn replace(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
    definition: &RuleDefinition,
) -> Result<Option<StoredRule>, SaveError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE alert_rules SET name = $3, definition = $4, enabled = $5, updated_at = now() \
                 WHERE organization_id = $1 AND id = $2 RETURNING {COLUMNS}"
            ),
            &[&organization_id, &id, &definition.name, &Json(definition), &definition.enabled],
        )
        .await
        .map_err(|error| save_error(error, &definition.name))?;
    Ok(row.as_ref().map(stored).transpose()?)
}

pub async fn delete(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<bool, DbError> {
    Ok(client
        .execute(
            "DELETE FROM alert_rules WHERE organization_id = $1 AND id = $2",
            &[&organization_id, &id],
        )
        .await?
        == 1)
}

pub async fn get(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<Option<StoredRule>, DbError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM alert_rules WHERE organization_id = $1 AND id = $2"),
            &[&organization_id, &id],
        )
        .await?;
    row.as_ref().map(stored).transpose()
}

/// The organization's rules by name.
pub async fn list(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Vec<StoredRule>, DbError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM alert_rules WHERE organization_id = $1 ORDER BY name"),
            &[&organization_id],
        )
        .await?;
    rows.iter().map(stored).collect()
}
