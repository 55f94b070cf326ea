//! Signed archive digests, after CloudTrail's digest files: each archive
//! written, rewritten or deleted in object storage appends one
//! (`<prefix>/digests/<organization>/<n>.json`), naming the archive's
//! manifest by SHA-256 and the previous digest by SHA-256, signed with the
//! checkpoint key. Walking them needs no database: an archive object that
//! went missing or was replaced shows.

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use base64::Engine;

pub const DIGEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Written,
    /// A GDPR operation replaced the archive `replaces` by this one.
    Rewritten,
    /// Retention, or a restore into the live table, removed the archive.
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    pub version: u32,
    pub organization_id: String,
    /// 1, 2, 3… per organization: the `<n>` of the digest's name.
    pub sequence: i64,
    pub change: Change,
    pub archive_id: Uuid,
    pub replaces: Option<Uuid>,
    pub object_key: String,
    pub manifest_key: String,
    /// SHA-256 (hex) of the manifest's bytes.
    pub manifest_sha256: String,
    /// SHA-256 (hex) of the previous digest's bytes; `None` for the first.
    pub previous_digest_sha256: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Which key signed (as checkpoints name it).
    pub key_id: String,
    /// Ed25519 over the RFC 8785 (JCS) form of the digest without this
    /// field, base64.
    #[serde(default)]
    pub signature: String,
}

impl Digest {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).expect("a digest serializes");
        if let Some(object) = value.as_object_mut() {
            object.remove("signature");
        }
        serde_jcs::to_vec(&value).expect("a digest serializes")
    }

    pub fn sign(mut self, key: &SigningKey) -> Self {
        let signature = key.sign(&self.signed_bytes());
        self.signature = base64::engine::general_purpose::STANDARD.encode(signature.to_bytes());
        self
    }

    pub fn signed_by(&self, key: &VerifyingKey) -> bool {
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&self.signature) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&bytes) else {
            return false;
        };
        key.verify(&self.signed_bytes(), &signature).is_ok()
    }

    /// The digest's file, as stored (its SHA-256 is what the next one links).
    pub fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a digest serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_changed_after_signing_no_longer_verifies() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let digest = Digest {
            version: DIGEST_VERSION,
            organization_id: "org-a".into(),
            sequence: 1,
            change: Change::Written,
            archive_id: Uuid::nil(),
            replaces: None,
            object_key: "a/org-a/2026/01/x.parquet".into(),
            manifest_key: "a/org-a/2026/01/x.manifest.json".into(),
            manifest_sha256: "00".repeat(32),
            previous_digest_sha256: None,
            created_at: Utc::now(),
            key_id: "k".into(),
            signature: String::new(),
        }
        .sign(&key);
        assert!(digest.signed_by(&key.verifying_key()));
        let parsed: Digest = serde_json::from_slice(&digest.bytes()).unwrap();
        assert!(parsed.signed_by(&key.verifying_key()), "survives its file");
        let mut changed = digest.clone();
        changed.manifest_sha256 = "11".repeat(32);
        assert!(!changed.signed_by(&key.verifying_key()));
    }
}
