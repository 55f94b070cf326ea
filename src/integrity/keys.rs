//! The integrity keys: the secret key of the identifier commitments and the
//! Ed25519 key that signs checkpoints. Taken from configuration; when the
//! configuration leaves one empty (development), it is generated once and kept
//! in `worker_secrets` so that restarts and other instances agree on it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::IntegrityConfig;
use crate::db::{DbError, PgPool};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("`integrity.{0}` must be the base64 encoding of 32 bytes")]
    Malformed(&'static str),
    #[error(transparent)]
    Database(#[from] DbError),
}

pub struct IntegrityKeys {
    commitment: [u8; 32],
    signing: SigningKey,
}

impl IntegrityKeys {
    pub async fn load(config: &IntegrityConfig, pool: &PgPool) -> Result<Self, KeyError> {
        let commitment = key_bytes("commitment_key", config.commitment_key.expose(), pool).await?;
        let signing = key_bytes("signing_key", config.signing_key.expose(), pool).await?;
        Ok(Self {
            commitment,
            signing: SigningKey::from_bytes(&signing),
        })
    }

    pub fn commitment_key(&self) -> &[u8] {
        &self.commitment
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Short name of the signing key: the first 16 hex digits of SHA-256 of the public key.
    pub fn key_id(&self) -> String {
        key_id(&self.verifying_key())
    }
}

pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

async fn key_bytes(
    name: &'static str,
    configured: &str,
    pool: &PgPool,
) -> Result<[u8; 32], KeyError> {
    if !configured.is_empty() {
        let bytes = STANDARD
            .decode(configured)
            .map_err(|_| KeyError::Malformed(name))?;
        return bytes.try_into().map_err(|_| KeyError::Malformed(name));
    }
    let mut candidate = [0u8; 32];
    rand::rng().fill_bytes(&mut candidate);
    let client = pool.get().await.map_err(DbError::from)?;
    // The first instance to start stores its candidate; everyone reads the stored one.
    client
        .execute(
            "INSERT INTO worker_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &candidate.as_slice()],
        )
        .await
        .map_err(DbError::from)?;
    let stored: Vec<u8> = client
        .query_one("SELECT value FROM worker_secrets WHERE name = $1", &[&name])
        .await
        .map_err(DbError::from)?
        .get(0);
    tracing::warn!(
        key = name,
        "integrity.{name} is not configured: using a key kept in the database (fine for development; configure it for production)"
    );
    stored.try_into().map_err(|_| KeyError::Malformed(name))
}
