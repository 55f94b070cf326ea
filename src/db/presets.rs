//! Queries on `audit_preset`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;
use tokio_postgres::{GenericClient, Row};

use super::DbError;
use crate::events::presets::{Preset, Validation};

/// The named presets of an organization (names that do not exist are absent).
pub async fn load(
    client: &impl GenericClient,
    organization_id: &str,
    names: &[String],
) -> Result<HashMap<String, Preset>, DbError> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = client
        .query(
            "SELECT name, action, data_classification, required_fields, default_values, validation \
             FROM audit_preset WHERE organization_id = $1 AND name = ANY($2)",
            &[&organization_id, &names],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let preset = preset(row);
            (preset.name.clone(), preset)
        })
        .collect())
}

/// What ingest applies, from a row (a malformed JSON column counts as empty).
fn preset(row: &Row) -> Preset {
    let Json(required_fields): Json<Vec<String>> =
        row.try_get("required_fields").unwrap_or(Json(Vec::new()));
    let Json(default_values): Json<serde_json::Map<String, serde_json::Value>> = row
        .try_get("default_values")
        .unwrap_or(Json(Default::default()));
    let Json(validation): Json<Validation> = row
        .try_get("validation")
        .unwrap_or(Json(Default::default()));
    Preset {
        name: row.get("name"),
        action: row.get("action"),
        data_classification: row.get("data_classification"),
        required_fields,
        default_values,
        validation,
    }
}

/// A saved preset: what ingest applies plus its bookkeeping.
#[derive(Debug, Clone)]
pub struct StoredPreset {
    pub preset: Preset,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<String>,
}

const COLUMNS: &str = "name, description, action, data_classification, required_fields, \
    default_values, validation, created_at, created_by, updated_at, updated_by";

fn stored(row: &Row) -> StoredPreset {
    StoredPreset {
        preset: preset(row),
        description: row.get("description"),
        created_at: row.get("created_at"),
        created_by: row.get("created_by"),
        updated_at: row.get("updated_at"),
        updated_by: row.get("updated_by"),
    }
}

/// Every preset of the organization, by name.
pub async fn list(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Vec<StoredPreset>, DbError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM audit_preset WHERE organization_id = $1 ORDER BY name"),
            &[&organization_id],
        )
        .await?;
    Ok(rows.iter().map(stored).collect())
}

/// One preset of the organization.
pub async fn get(
    client: &impl GenericClient,
    organization_id: &str,
    name: &str,
) -> Result<Option<StoredPreset>, DbError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM audit_preset WHERE organization_id = $1 AND name = $2"),
            &[&organization_id, &name],
        )
        .await?;
    Ok(row.as_ref().map(stored))
}

/// Saves a new preset; `None` when the organization has one of that name.
pub async fn insert(
    client: &impl GenericClient,
    organization_id: &str,
    preset: &Preset,
    description: Option<&str>,
    actor: &str,
) -> Result<Option<StoredPreset>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "INSERT INTO audit_preset (organization_id, name, description, action, data_classification, \
                   required_fields, default_values, validation, created_by, updated_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                 ON CONFLICT (organization_id, name) DO NOTHING RETURNING {COLUMNS}"
            ),
            &[
                &organization_id,
                &preset.name,
                &description,
                &preset.action,
                &preset.data_classification,
                &Json(&preset.required_fields),
                &Json(&preset.default_values),
                &Json(&preset.validation),
                &actor,
            ],
        )
        .await?;
    Ok(row.as_ref().map(stored))
}

/// Creates the preset or replaces every field of the existing one (its
/// creation stamp stays); `true` in the answer when it was created.
pub async fn upsert(
    client: &impl GenericClient,
    organization_id: &str,
    preset: &Preset,
    description: Option<&str>,
    actor: &str,
) -> Result<(StoredPreset, bool), DbError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO audit_preset (organization_id, name, description, action, data_classification, \
                   required_fields, default_values, validation, created_by, updated_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                 ON CONFLICT (organization_id, name) DO UPDATE SET description = EXCLUDED.description, \
                   action = EXCLUDED.action, data_classification = EXCLUDED.data_classification, \
                   required_fields = EXCLUDED.required_fields, default_values = EXCLUDED.default_values, \
                   validation = EXCLUDED.validation, updated_at = now(), updated_by = EXCLUDED.updated_by \
                 RETURNING {COLUMNS}, (xmax = 0) AS created"
            ),
            &[
                &organization_id,
                &preset.name,
                &description,
                &preset.action,
                &preset.data_classification,
                &Json(&preset.required_fields),
                &Json(&preset.default_values),
                &Json(&preset.validation),
                &actor,
            ],
        )
        .await?;
    Ok((stored(&row), row.get("created")))
}

/// Deletes one preset; `false` when the organization has none of that name.
pub async fn delete(
    client: &impl GenericClient,
    organization_id: &str,
    name: &str,
) -> Result<bool, DbError> {
    let deleted = client
        .execute(
            "DELETE FROM audit_preset WHERE organization_id = $1 AND name = $2",
            &[&organization_id, &name],
        )
        .await?;
    Ok(deleted > 0)
}
