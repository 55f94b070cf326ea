//! Queries on `signing_keys`: the public half of every key that has signed.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::DbError;

/// A key as listed.
pub struct SigningKeyRow {
    pub key_id: String,
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

/// Registers a key (once: registering it again changes nothing).
pub async fn register(
    client: &impl GenericClient,
    key_id: &str,
    public_key: &[u8],
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO signing_keys (key_id, public_key) VALUES ($1, $2) \
             ON CONFLICT (key_id) DO NOTHING",
            &[&key_id, &public_key],
        )
        .await?;
    Ok(())
}

/// Every registered key, oldest first.
pub async fn list(client: &impl GenericClient) -> Result<Vec<SigningKeyRow>, DbError> {
    let rows = client
        .query(
            "SELECT key_id, public_key, created_at FROM signing_keys ORDER BY created_at, key_id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| SigningKeyRow {
            key_id: row.get(0),
            public_key: row.get(1),
            created_at: row.get(2),
        })
        .collect())
}
