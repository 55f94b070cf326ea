//! The integrity keys: the secret key of the identifier commitments and the
//! Ed25519 key that signs checkpoints (see [`crate::secrets`] for where they
//! come from).

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::config::IntegrityConfig;
use crate::db::PgPool;
use crate::secrets::{key_bytes, SecretError};

pub struct IntegrityKeys {
    commitment: [u8; 32],
    signing: SigningKey,
}

impl IntegrityKeys {
    pub async fn load(config: &IntegrityConfig, pool: &PgPool) -> Result<Self, SecretError> {
        let commitment = key_bytes(
            "integrity.commitment_key",
            config.commitment_key.expose(),
            pool,
        )
        .await?;
        let signing = key_bytes("integrity.signing_key", config.signing_key.expose(), pool).await?;
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
