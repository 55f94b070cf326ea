//! Queries on `api_keys`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::DbError;

/// What authentication needs to know about a key.
#[derive(Debug, Clone, Default)]
pub struct KeyCredentials {
    pub id: String,
    pub organization_id: String,
    pub role: String,
    pub secret_hash: Vec<u8>,
    pub revoked: bool,
    /// Kept with the cached credentials and checked on every use, so that no
    /// cache lets an expired key through.
    pub expires_at: Option<DateTime<Utc>>,
    /// The secret the latest rotation replaced, and when it stops working.
    pub previous_secret: Option<(Vec<u8>, DateTime<Utc>)>,
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
    /// When the key stops working; null: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the key last authenticated a request (written at most about once
    /// a minute, so up to a minute and the flush interval behind); null: never used.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When its secret was last replaced by a rotation; null: never rotated.
    pub rotated_at: Option<DateTime<Utc>>,
    /// Until when the secret the latest rotation replaced keeps working; null: none.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

const INFO_COLUMNS: &str = "id, organization_id, name, role, created_at, created_by, revoked_at, \
     revoked_by, expires_at, last_used_at, rotated_at, previous_secret_expires_at";

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
        expires_at: row.get("expires_at"),
        last_used_at: row.get("last_used_at"),
        rotated_at: row.get("rotated_at"),
        previous_secret_expires_at: row.get("previous_secret_expires_at"),
    }
}

pub struct NewApiKey<'a> {
    pub id: &'a str,
    pub organization_id: &'a str,
    pub name: Option<&'a str>,
    pub role: &'a str,
    pub secret_hash: &'a [u8],
    pub created_by: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
}

pub async fn insert(
    client: &impl GenericClient,
    key: &NewApiKey<'_>,
) -> Result<ApiKeyInfo, DbError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO api_keys \
                 (id, organization_id, name, role, secret_hash, created_by, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {INFO_COLUMNS}"
            ),
            &[
                &key.id,
                &key.organization_id,
                &key.name,
                &key.role,
                &key.secret_hash,
                &key.created_by,
                &key.expires_at,
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
            "SELECT id, organization_id, role, secret_hash, revoked_at IS NOT NULL AS revoked, \
                    expires_at, previous_secret_hash, previous_secret_expires_at \
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
        expires_at: row.get("expires_at"),
        previous_secret: row
            .get::<_, Option<Vec<u8>>>("previous_secret_hash")
            .zip(row.get("previous_secret_expires_at")),
    }))
}

/// Keys of one organization, oldest first; `None` lists every organization's (CLI only).
pub async fn list(
    client: &impl GenericClient,
    organization_id: Option<&str>,
) -> Result<Vec<ApiKeyInfo>, DbError> {
    let rows = match organization_id {
        Some(organization_id) => {
            client
                .query(
                    &format!(
                        "SELECT {INFO_COLUMNS} FROM api_keys WHERE organization_id = $1 \
                         ORDER BY created_at, id"
                    ),
                    &[&organization_id],
                )
                .await?
        }
        None => {
            client
                .query(
                    &format!(
                    "SELECT {INFO_COLUMNS} FROM api_keys ORDER BY organization_id, created_at, id"
                ),
                    &[],
                )
                .await?
        }
    };
    Ok(rows.iter().map(info).collect())
}

/// Revokes the organization's key `id` (idempotent); `None` when it has no
/// such key.
pub async fn revoke(
    client: &impl GenericClient,
    organization_id: &str,
    id: &str,
    revoked_by: &str,
) -> Result<Option<ApiKeyInfo>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()), \
                        revoked_by = coalesce(revoked_by, $3) \
                 WHERE organization_id = $1 AND id = $2 \
                 RETURNING {INFO_COLUMNS}"
            ),
            &[&organization_id, &id, &revoked_by],
        )
        .await?;
    Ok(row.as_ref().map(info))
}

/// Locks the organization's key `id` for a change in this transaction;
/// `None` when it has no such key.
pub async fn lock(
    client: &impl GenericClient,
    organization_id: &str,
    id: &str,
) -> Result<Option<ApiKeyInfo>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {INFO_COLUMNS} FROM api_keys \
                 WHERE organization_id = $1 AND id = $2 FOR UPDATE"
            ),
            &[&organization_id, &id],
        )
        .await?;
    Ok(row.as_ref().map(info))
}

/// Replaces the secret of the key `id` of `organization_id` by `secret_hash`;
/// the replaced one keeps working for `grace` (and replaces any older one).
pub async fn rotate(
    client: &impl GenericClient,
    organization_id: &str,
    id: &str,
    secret_hash: &[u8],
    grace: Duration,
) -> Result<ApiKeyInfo, DbError> {
    let row = client
        .query_one(
            &format!(
                "UPDATE api_keys SET previous_secret_hash = secret_hash, \
                        previous_secret_expires_at = now() + make_interval(secs => $4), \
                        secret_hash = $3, rotated_at = now() \
                 WHERE id = $2 AND organization_id = $1 RETURNING {INFO_COLUMNS}"
            ),
            &[&organization_id, &id, &secret_hash, &grace.as_secs_f64()],
        )
        .await?;
    Ok(info(&row))
}

/// Sets `last_used_at` to `at` on the keys `ids` of `organization_id`,
/// except on those written less than `min_interval` before `at` (by this
/// worker or another): however many workers note uses, each key's row is
/// written about once per `min_interval`. How many rows it wrote.
pub async fn record_uses(
    client: &impl GenericClient,
    organization_id: &str,
    ids: &[String],
    at: DateTime<Utc>,
    min_interval: Duration,
) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "UPDATE api_keys SET last_used_at = $3::timestamptz \
             WHERE id = ANY($2) AND organization_id = $1 \
               AND (last_used_at IS NULL \
                    OR last_used_at < $3::timestamptz - make_interval(secs => $4))",
            &[&organization_id, &ids, &at, &min_interval.as_secs_f64()],
        )
        .await?)
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
