//! Signed checkpoints: an organization's chain length and last link at a moment,
//! signed with Ed25519. Kept outside the database (delivered, downloaded), a
//! checkpoint reveals a truncated chain tail, which no in-database check can see.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::keys::{IntegrityKeys, PublicKeys};

/// What a checkpoint states. Signed as its RFC 8785 canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointStatement {
    pub organization_id: String,
    /// Number of links in the chain.
    pub seq: i64,
    /// Hex hash of the last link.
    pub link: String,
    /// Events in the chain up to that link.
    pub event_total: i64,
    /// RFC 3339.
    pub signed_at: String,
    /// Which key signed it (see `GET /v1/integrity/public-key`).
    pub key_id: String,
    /// Hex RFC 9162 tree hash over the link hashes 1..=`seq` (format version
    /// 2). Absent from checkpoints signed before: their signed text lacks it,
    /// and they still verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_root: Option<String>,
    /// The number of leaves of that tree: `seq` (absent with `tree_root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_size: Option<i64>,
}

/// A checkpoint as published: the exact signed text and the signature.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// The canonical JSON of a [`CheckpointStatement`]: these bytes are signed.
    pub payload: String,
    /// Base64 Ed25519 signature of `payload`.
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint's signature is not valid for this worker's public key")]
    BadSignature,
    #[error("the checkpoint names signing key `{0}`, which this deployment never registered")]
    UnknownKey(String),
    #[error("the checkpoint is malformed: {0}")]
    Malformed(String),
}

pub fn sign(keys: &IntegrityKeys, statement: &CheckpointStatement) -> SignedCheckpoint {
    let payload = serde_jcs::to_string(statement).expect("a statement always serializes");
    let signature = keys.signing_key().sign(payload.as_bytes());
    SignedCheckpoint {
        payload,
        signature: STANDARD.encode(signature.to_bytes()),
    }
}

/// Checks the signature with the key the statement names (`key_id`), among
/// every key that has signed here, and returns the statement.
pub fn open_with_any(
    keys: &PublicKeys,
    checkpoint: &SignedCheckpoint,
) -> Result<CheckpointStatement, CheckpointError> {
    #[derive(Deserialize)]
    struct Named {
        key_id: String,
    }
    let named: Named = serde_json::from_str(&checkpoint.payload)
        .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    let key = keys
        .get(&named.key_id)
        .ok_or(CheckpointError::UnknownKey(named.key_id))?;
    open(key, checkpoint)
}

/// Checks the signature and returns the statement it covers.
pub fn open(
    key: &VerifyingKey,
    checkpoint: &SignedCheckpoint,
) -> Result<CheckpointStatement, CheckpointError> {
    let signature = STANDARD
        .decode(&checkpoint.signature)
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or_else(|| {
            CheckpointError::Malformed("signature is not a base64 Ed25519 signature".into())
        })?;
    key.verify(checkpoint.payload.as_bytes(), &signature)
        .map_err(|_| CheckpointError::BadSignature)?;
    serde_json::from_str(&checkpoint.payload).map_err(|e| CheckpointError::Malformed(e.to_string()))
}
