//! Queries on `api_keys`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::DbError;

/// What authentication needs to know about a key.
#[derive(Debug, Clone)]
pub struct KeyCredentials {
    pub id: String,
    pub organization_id: String,
    pub role: String,
    pub secret_hash: Vec<u8>,
    pub revoked: bool,
}

/// A key as listed: everything but the secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    pub id: String,
    pub organization_id: String,
    pub name: Option<String>,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

const INFO_COLUMNS: &str =
    "id, organization_id, name, role, created_at, created_by, revoked_at, revoked_by";

fn info(row: &tokio_postgres::Row) -> ApiKeyInfo {
    ApiKeyInfo {
        id: row.get("id"),
        organization_id: row.get("organization_id"),
        name: row.get("name"),
        role: row.get("role"),
        created_at: row.get("created_at"),
        created_by: row.get("created_by"),
        revoked_at: row.get("revoked_at"),
        revoked_by: row.get("revoked_by"),
    }
}

pub struct NewApiKey<'a> {
    pub id: &'a str,
    pub organization_id: &'a str,
    pub name: Option<&'a str>,
    pub role: &'a str,
    pub secret_hash: &'a [u8],
    pub created_by: &'a str,
}

pub async fn insert(
    client: &impl GenericClient,
    key: &NewApiKey<'_>,
) -> Result<ApiKeyInfo, DbError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO api_keys (id, organization_id, name, role, secret_hash, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {INFO_COLUMNS}"
            ),
            &[
                &key.id,
                &key.organization_id,
                &key.name,
                &key.role,
                &key.secret_hash,
                &key.created_by,
            ],
        )
        .await?;
    Ok(info(&row))
}

/// Looks a key up by id for authentication, before its organization is known.
pub async fn credentials(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<KeyCredentials>, DbError> {
    let row = client
        .query_opt(
            "SELECT id, organization_id, role, secret_hash, revoked_at IS NOT NULL AS revoked \
             FROM api_keys WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.map(|row| KeyCredentials {
        id: row.get("id"),
        organization_id: row.get("organization_id"),
        role: row.get("role"),
        secret_hash: row.get("secret_hash"),
        revoked: row.get("revoked"),
    }))
}

/// Keys of one organization, oldest first; `None` lists every organization's (CLI only).
pub async fn list(
    client: &impl GenericClient,
    organization_id: Option<&str>,
) -> Result<Vec<ApiKeyInfo>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {INFO_COLUMNS} FROM api_keys \
                 WHERE ($1::text IS NULL OR organization_id = $1) \
                 ORDER BY organization_id, created_at, id"
            ),
            &[&organization_id],
        )
        .await?;
    Ok(rows.iter().map(info).collect())
}

/// Revokes a key (idempotent); `None` when no such key exists in the scope.
/// `organization_id = None` reaches any organization (CLI only).
pub async fn revoke(
    client: &impl GenericClient,
    organization_id: Option<&str>,
    id: &str,
    revoked_by: &str,
) -> Result<Option<ApiKeyInfo>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()), \
                        revoked_by = coalesce(revoked_by, $3) \
                 WHERE id = $2 AND ($1::text IS NULL OR organization_id = $1) \
                 RETURNING {INFO_COLUMNS}"
            ),
            &[&organization_id, &id, &revoked_by],
        )
        .await?;
    Ok(row.as_ref().map(info))
}

/// How many live keys of the organization carry `role`.
pub async fn count_active_with_role(
    client: &impl GenericClient,
    organization_id: &str,
    role: &str,
) -> Result<i64, DbError> {
    let row = client
        .query_one(
            "SELECT count(*) FROM api_keys \
             WHERE organization_id = $1 AND role = $2 AND revoked_at IS NULL",
            &[&organization_id, &role],
        )
        .await?;
    Ok(row.get(0))
}
