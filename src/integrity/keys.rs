//! The integrity keys: the secret key of the identifier commitments and the
//! Ed25519 key that signs checkpoints and archive digests (see
//! [`crate::secrets`] for where they come from), and the public keys of every
//! key that has signed, so that a rotation leaves earlier signatures verifiable.

use std::collections::HashMap;

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;

use crate::config::IntegrityConfig;
use crate::db::{signing_keys, DbError, PgPool};
use crate::secrets::{key_bytes, SecretError};

pub struct IntegrityKeys {
    commitment: [u8; 32],
    signing: SigningKey,
}

impl IntegrityKeys {
    /// The configured (or generated) keys; the signing key's public half is
    /// registered in `signing_keys` before anything is signed with it.
    pub async fn load(config: &IntegrityConfig, pool: &PgPool) -> Result<Self, SecretError> {
        let commitment = key_bytes(
            "integrity.commitment_key",
            config.commitment_key.expose(),
            pool,
        )
        .await?;
        let signing = key_bytes("integrity.signing_key", config.signing_key.expose(), pool).await?;
        let keys = Self::new(commitment, &signing);
        let client = pool.get().await?;
        signing_keys::register(&**client, &keys.key_id(), keys.verifying_key().as_bytes()).await?;
        Ok(keys)
    }

    /// The keys themselves, registered nowhere (see [`Self::load`]).
    pub fn new(commitment: [u8; 32], signing_seed: &[u8; 32]) -> Self {
        Self {
            commitment,
            signing: SigningKey::from_bytes(signing_seed),
        }
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

/// The public keys that verify what this deployment signed, by `key_id`.
#[derive(Clone, Default)]
pub struct PublicKeys(HashMap<String, VerifyingKey>);

impl PublicKeys {
    /// Every key registered in the database: read when verifying, since
    /// another worker may have started signing with a newer key.
    pub async fn load(client: &impl GenericClient) -> Result<Self, DbError> {
        let mut keys = HashMap::new();
        for row in signing_keys::list(client).await? {
            let bytes: [u8; 32] = row.public_key.as_slice().try_into().map_err(|_| {
                DbError::Decode(format!("signing key {} is not 32 bytes", row.key_id))
            })?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|_| {
                DbError::Decode(format!("signing key {} is not an Ed25519 key", row.key_id))
            })?;
            keys.insert(row.key_id, key);
        }
        Ok(Self(keys))
    }

    pub fn get(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.0.get(key_id)
    }
}
