//! Pseudonyms: how each strategy derives a subject's pseudonym, and the
//! encryption of the original identifier kept in `pseudonym_mapping`.
//!
//! Both encryptions are AES-256-GCM with a synthetic nonce: the first 12 bytes
//! of an HMAC of the plaintext under a key derived from the encryption key.
//! The same identifier therefore always encrypts to the same text, which is
//! what makes a repeated request return the same pseudonym and lets the
//! database hold one mapping per subject (a unique constraint on the
//! ciphertext); distinct identifiers get distinct nonces, so GCM's nonce rule
//! holds. The organization is the associated data: a pseudonym copied to
//! another organization does not decrypt there. (Written here because the
//! RustCrypto AEADs take the nonce from the caller; this derivation is the
//! whole of the scheme.)

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use crate::config::GdprConfig;
use crate::db::PgPool;
use crate::secrets::{self, KeyRing, SecretError};

type HmacSha256 = Hmac<Sha256>;

const HASH_PREFIX: &str = "psh_";
const TOKEN_PREFIX: &str = "pst_";
const ENCRYPTED_PREFIX: &str = "pse_";
const SEALED_PREFIX: &str = "enc:v1:";
const HASH_DOMAIN: &[u8] = b"audit-worker/pseudonym/hash/v1";
const NONCE_DOMAIN: &[u8] = b"audit-worker/pseudonym/nonce/v1";
/// Identifiers (`principal_id`) are at most 255 characters, and so must an
/// encrypted pseudonym be: prefix + base64(12-byte nonce + identifier + 16-byte tag).
pub const MAX_ENCRYPTABLE_BYTES: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Keyed HMAC-SHA256 of the identifier: deterministic, not reversible.
    Hash,
    /// A random token, kept in the mapping: the same for the subject on every call.
    Token,
    /// AES-256-GCM of the identifier: deterministic, reversible with the key.
    Encryption,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Hash => "hash",
            Strategy::Token => "token",
            Strategy::Encryption => "encryption",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "hash" => Some(Strategy::Hash),
            "token" => Some(Strategy::Token),
            "encryption" => Some(Strategy::Encryption),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the value cannot be decrypted (another key or organization, or it was altered)")]
pub struct DecryptError;

/// The keys of `gdpr.pseudonym_key` and `gdpr.encryption_key` (with the
/// earlier encryption keys, which still open what they sealed).
pub struct PseudonymKeys {
    hash_key: [u8; 32],
    cipher: Aes256Gcm,
    nonce_key: [u8; 32],
    previous: Vec<Aes256Gcm>,
}

impl PseudonymKeys {
    /// The configured keys (`gdpr.pseudonym_key`, `gdpr.encryption_key`), or
    /// those generated into the database when none is configured.
    pub async fn load(settings: &GdprConfig, pool: &PgPool) -> Result<Self, SecretError> {
        let pseudonym_key =
            secrets::key_bytes("gdpr.pseudonym_key", settings.pseudonym_key.expose(), pool).await?;
        let encryption_keys = secrets::key_ring(
            "gdpr.encryption_key",
            &settings.encryption_key,
            "gdpr.previous_encryption_keys",
            &settings.previous_encryption_keys,
            pool,
        )
        .await?;
        Ok(Self::new(&pseudonym_key, &encryption_keys))
    }

    pub fn new(pseudonym_key: &[u8; 32], encryption_keys: &KeyRing) -> Self {
        let mut derive = <HmacSha256 as Mac>::new_from_slice(&encryption_keys.current)
            .expect("HMAC takes any key");
        derive.update(NONCE_DOMAIN);
        Self {
            hash_key: *pseudonym_key,
            cipher: cipher(&encryption_keys.current),
            nonce_key: derive.finalize().into_bytes().into(),
            previous: encryption_keys.previous.iter().map(cipher).collect(),
        }
    }

    /// The pseudonym a strategy gives `identifier`; `None` for `Token`, whose
    /// pseudonym is drawn once ([`Self::token`]) and then kept.
    pub fn derive(
        &self,
        strategy: Strategy,
        organization_id: &str,
        identifier: &str,
    ) -> Option<String> {
        match strategy {
            Strategy::Hash => Some(self.hashed(organization_id, identifier)),
            Strategy::Encryption => Some(format!(
                "{ENCRYPTED_PREFIX}{}",
                self.encrypt(organization_id, identifier)
            )),
            Strategy::Token => None,
        }
    }

    fn hashed(&self, organization_id: &str, identifier: &str) -> String {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.hash_key).expect("HMAC takes any key");
        mac.update(HASH_DOMAIN);
        mac.update(&[0]);
        mac.update(&(organization_id.len() as u32).to_be_bytes());
        mac.update(organization_id.as_bytes());
        mac.update(identifier.as_bytes());
        format!("{HASH_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// A fresh random token.
    pub fn token() -> String {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
    }

    /// The identifier behind an `encryption` pseudonym.
    pub fn reverse(&self, organization_id: &str, pseudonym: &str) -> Result<String, DecryptError> {
        let encoded = pseudonym
            .strip_prefix(ENCRYPTED_PREFIX)
            .ok_or(DecryptError)?;
        self.decrypt(organization_id, encoded)
            .or_else(|_| self.decrypt_with_previous(organization_id, encoded))
    }

    /// The mapping's stored form of the original identifier.
    pub fn seal_original(&self, organization_id: &str, identifier: &str) -> String {
        format!(
            "{SEALED_PREFIX}{}",
            self.encrypt(organization_id, identifier)
        )
    }

    pub fn open_original(
        &self,
        organization_id: &str,
        sealed: &str,
    ) -> Result<String, DecryptError> {
        let encoded = sealed.strip_prefix(SEALED_PREFIX).ok_or(DecryptError)?;
        self.decrypt(organization_id, encoded)
            .or_else(|_| self.decrypt_with_previous(organization_id, encoded))
    }

    /// The original sealed under the current key (`keys rotate --kind
    /// encryption`), or `None` when it already is.
    pub fn reseal_original(
        &self,
        organization_id: &str,
        sealed: &str,
    ) -> Result<Option<String>, DecryptError> {
        let encoded = sealed.strip_prefix(SEALED_PREFIX).ok_or(DecryptError)?;
        if self.decrypt(organization_id, encoded).is_ok() {
            return Ok(None);
        }
        let original = self.decrypt_with_previous(organization_id, encoded)?;
        Ok(Some(self.seal_original(organization_id, &original)))
    }

    fn decrypt_with_previous(
        &self,
        organization_id: &str,
        encoded: &str,
    ) -> Result<String, DecryptError> {
        self.previous
            .iter()
            .find_map(|cipher| open(cipher, organization_id, encoded).ok())
            .ok_or(DecryptError)
    }

    fn encrypt(&self, organization_id: &str, plaintext: &str) -> String {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.nonce_key).expect("HMAC takes any key");
        mac.update(&(organization_id.len() as u32).to_be_bytes());
        mac.update(organization_id.as_bytes());
        mac.update(plaintext.as_bytes());
        let digest = mac.finalize().into_bytes();
        let nonce = &digest[..12];
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: organization_id.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a short value cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend(ciphertext);
        URL_SAFE_NO_PAD.encode(sealed)
    }

    fn decrypt(&self, organization_id: &str, encoded: &str) -> Result<String, DecryptError> {
        open(&self.cipher, organization_id, encoded)
    }
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

fn open(cipher: &Aes256Gcm, organization_id: &str, encoded: &str) -> Result<String, DecryptError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .filter(|bytes| bytes.len() > 12)
        .ok_or(DecryptError)?;
    let (nonce, ciphertext) = bytes.split_at(12);
    let plaintext = cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: organization_id.as_bytes(),
            },
        )
        .map_err(|_| DecryptError)?;
    String::from_utf8(plaintext).map_err(|_| DecryptError)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> PseudonymKeys {
        PseudonymKeys::new(&[7; 32], &KeyRing::single([9; 32]))
    }

    #[test]
    fn hash_is_deterministic_keyed_and_per_organization() {
        let keys = keys();
        let a = keys.derive(Strategy::Hash, "org-a", "alice").unwrap();
        assert_eq!(a, keys.derive(Strategy::Hash, "org-a", "alice").unwrap());
        assert_ne!(a, keys.derive(Strategy::Hash, "org-b", "alice").unwrap());
        assert_ne!(
            a,
            PseudonymKeys::new(&[8; 32], &KeyRing::single([9; 32]))
                .derive(Strategy::Hash, "org-a", "alice")
                .unwrap()
        );
        assert!(a.starts_with(HASH_PREFIX) && a.len() == 4 + 64);
    }

    #[test]
    fn encryption_is_deterministic_and_reversible_only_in_its_organization() {
        let keys = keys();
        let pseudonym = keys.derive(Strategy::Encryption, "org-a", "alice").unwrap();
        assert_eq!(
            pseudonym,
            keys.derive(Strategy::Encryption, "org-a", "alice").unwrap()
        );
        assert_ne!(
            pseudonym,
            keys.derive(Strategy::Encryption, "org-a", "bob").unwrap()
        );
        assert_eq!(keys.reverse("org-a", &pseudonym).unwrap(), "alice");
        assert!(keys.reverse("org-b", &pseudonym).is_err());
        let longest = "x".repeat(MAX_ENCRYPTABLE_BYTES);
        assert!(
            keys.derive(Strategy::Encryption, "o", &longest)
                .unwrap()
                .len()
                <= 255
        );
    }

    #[test]
    fn tokens_are_random_and_originals_sealed_deterministically() {
        assert_ne!(PseudonymKeys::token(), PseudonymKeys::token());
        let keys = keys();
        let sealed = keys.seal_original("org-a", "alice");
        assert_eq!(sealed, keys.seal_original("org-a", "alice"));
        assert_eq!(keys.open_original("org-a", &sealed).unwrap(), "alice");
        assert!(keys.open_original("org-a", "enc:v1:tampered").is_err());
    }

    #[test]
    fn originals_sealed_under_an_earlier_key_open_and_reseal_under_the_current_one() {
        let old = keys();
        let sealed = old.seal_original("org-a", "alice");
        let rotated = PseudonymKeys::new(
            &[7; 32],
            &KeyRing {
                current: [10; 32],
                previous: vec![[9; 32]],
            },
        );
        assert_eq!(rotated.open_original("org-a", &sealed).unwrap(), "alice");
        let resealed = rotated.reseal_original("org-a", &sealed).unwrap().unwrap();
        assert_eq!(resealed, rotated.seal_original("org-a", "alice"));
        assert!(old.open_original("org-a", &resealed).is_err());
        assert_eq!(rotated.reseal_original("org-a", &resealed).unwrap(), None);
        assert!(rotated.reseal_original("org-b", &sealed).is_err());
    }
}
