//! Keys the worker needs (identifier commitments, checkpoint signing,
//! destination secrets): taken from configuration (inline, `file:` or `env:`,
//! see [`crate::config::Secret`]), or — when the configuration leaves one
//! empty, in development — generated once and kept in `worker_secrets`, so
//! that restarts and other instances agree on it. [`rotation`]: new keys.

pub mod rotation;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

use crate::config::Secret;
use crate::db::{DbError, PgPool};

/// An encryption key and the earlier ones values may still be sealed under:
/// values are sealed under `current` only, and opened with any of them.
#[derive(Clone)]
pub struct KeyRing {
    pub current: [u8; 32],
    pub previous: Vec<[u8; 32]>,
}

impl KeyRing {
    /// A ring of one key.
    pub fn single(current: [u8; 32]) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }
}

/// Name in `worker_secrets` of an earlier generated key of `setting`.
fn previous_name(setting: &str, key: &[u8; 32]) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "{setting}:previous:{}",
        hex::encode(&Sha256::digest(key)[..8])
    )
}

/// The encryption key configured under `setting` (or the stored one) with
/// its earlier keys: those configured under `previous_setting`, and, for a
/// generated key, those `keys rotate` kept in the database.
pub async fn key_ring(
    setting: &'static str,
    configured: &Secret,
    previous_setting: &'static str,
    previous: &[Secret],
    pool: &PgPool,
) -> Result<KeyRing, SecretError> {
    let current = key_bytes(setting, configured.expose(), pool).await?;
    let mut ring = KeyRing::single(current);
    for key in previous {
        ring.previous.push(decode(previous_setting, key.expose())?);
    }
    if configured.is_empty() {
        let client = pool.get().await?;
        for row in client
            .query(
                "SELECT value FROM worker_secrets WHERE starts_with(name, $1) ORDER BY created_at DESC",
                &[&format!("{setting}:previous:")],
            )
            .await
            .map_err(DbError::from)?
        {
            let value: Vec<u8> = row.get(0);
            ring.previous
                .push(value.try_into().map_err(|_| SecretError::Malformed(setting))?);
        }
    }
    Ok(ring)
}

fn decode(setting: &'static str, configured: &str) -> Result<[u8; 32], SecretError> {
    let bytes = STANDARD
        .decode(configured)
        .map_err(|_| SecretError::Malformed(setting))?;
    bytes
        .try_into()
        .map_err(|_| SecretError::Malformed(setting))
}

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
        return decode(setting, configured);
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
