//! Queries on `organization_role` (custom roles; the built-ins live in code).

use tokio_postgres::types::Json;
use tokio_postgres::GenericClient;

use super::DbError;
use crate::auth::permissions::{Permission, RoleDefinition};

fn definition(row: &tokio_postgres::Row) -> RoleDefinition {
    let Json(permissions): Json<Vec<Permission>> = row.get("permissions");
    let Json(inherits): Json<Vec<String>> = row.get("inherits");
    RoleDefinition {
        name: row.get("name"),
        description: row.get("description"),
        permissions,
        inherits,
    }
}

pub async fn list(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Vec<RoleDefinition>, DbError> {
    let rows = client
        .query(
            "SELECT name, description, permissions, inherits FROM organization_role \
             WHERE organization_id = $1 ORDER BY name",
            &[&organization_id],
        )
        .await?;
    Ok(rows.iter().map(definition).collect())
}

/// Creates or replaces a custom role; returns whether it was created.
pub async fn upsert(
    client: &impl GenericClient,
    organization_id: &str,
    role: &RoleDefinition,
) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "INSERT INTO organization_role (organization_id, name, description, permissions, inherits) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (organization_id, name) DO UPDATE \
               SET description = EXCLUDED.description, permissions = EXCLUDED.permissions, \
                   inherits = EXCLUDED.inherits \
             RETURNING xmax = 0 AS created",
            &[
                &organization_id,
                &role.name,
                &role.description,
                &Json(&role.permissions),
                &Json(&role.inherits),
            ],
        )
        .await?;
    Ok(row.get("created"))
}

/// Deletes a custom role; returns whether it existed.
pub async fn delete(
    client: &impl GenericClient,
    organization_id: &str,
    name: &str,
) -> Result<bool, DbError> {
    let deleted = client
        .execute(
            "DELETE FROM organization_role WHERE organization_id = $1 AND name = $2",
            &[&organization_id, &name],
        )
        .await?;
    Ok(deleted > 0)
}

/// Serialises role changes within one organization for the rest of the
/// transaction, so that two concurrent saves cannot together create a cycle.
pub async fn lock_organization(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<(), DbError> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('organization_role:' || $1, 0))",
            &[&organization_id],
        )
        .await?;
    Ok(())
}
