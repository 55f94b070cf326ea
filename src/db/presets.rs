//! Queries on `audit_preset`.

use std::collections::HashMap;

use tokio_postgres::types::Json;
use tokio_postgres::GenericClient;

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
            let Json(required_fields): Json<Vec<String>> =
                row.try_get("required_fields").unwrap_or(Json(Vec::new()));
            let Json(default_values): Json<serde_json::Map<String, serde_json::Value>> = row
                .try_get("default_values")
                .unwrap_or(Json(Default::default()));
            let Json(validation): Json<Validation> = row
                .try_get("validation")
                .unwrap_or(Json(Default::default()));
            let preset = Preset {
                name: row.get("name"),
                action: row.get("action"),
                data_classification: row.get("data_classification"),
                required_fields,
                default_values,
                validation,
            };
            (preset.name.clone(), preset)
        })
        .collect())
}
