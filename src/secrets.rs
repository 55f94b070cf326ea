//! Keys the worker needs (identifier commitments, checkpoint signing,
//! destination secrets): taken from configuration, or — when the configuration
//! leaves one empty, in development — generated once and kept in
//! `worker_secrets`, so that restarts and other instances agree on it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

use crate::db::{DbError, PgPool};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("`{0}` must be the base64 encoding of 32 bytes")]
    Malformed(&'static str),
    #[error(transparent)]
    Database(#[from] DbError),
}

/// The 32-byte key configured under `setting` (base64), or the stored one.
pub async fn key_bytes(
    setting: &'static str,
    configured: &str,
    pool: &PgPool,
) -> Result<[u8; 32], SecretError> {
    if !configured.is_empty() {
        let bytes = STANDARD
            .decode(configured)
            .map_err(|_| SecretError::Malformed(setting))?;
        return bytes
            .try_into()
            .map_err(|_| SecretError::Malformed(setting));
    }
    let mut candidate = [0u8; 32];
    rand::rng().fill_bytes(&mut candidate);
    let client = pool.get().await?;
    // The first instance to start stores its candidate; everyone reads the stored one.
    client
        .execute(
            "INSERT INTO worker_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&setting, &candidate.as_slice()],
        )
        .await
        .map_err(DbError::from)?;
    let stored: Vec<u8> = client
        .query_one(
            "SELECT value FROM worker_secrets WHERE name = $1",
            &[&setting],
        )
        .await
        .map_err(DbError::from)?
        .get(0);
    tracing::warn!(
        key = setting,
        "{setting} is not configured: using a key kept in the database (fine for development; configure it for production)"
    );
    stored
        .try_into()
        .map_err(|_| SecretError::Malformed(setting))
}
