//! Destination secrets at rest: AES-256-GCM under `delivery.encryption_key`,
//! a fresh 96-bit nonce per value, stored as `enc:v1:` + base64(nonce || ciphertext).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

const PREFIX: &str = "enc:v1:";

#[derive(Debug, thiserror::Error)]
#[error(
    "a stored secret cannot be decrypted (wrong delivery.encryption_key, or the value was altered)"
)]
pub struct DecryptError;

pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl SecretBox {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
        }
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("AES-GCM encryption of a short value cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend(ciphertext);
        format!("{PREFIX}{}", STANDARD.encode(sealed))
    }

    pub fn open(&self, sealed: &str) -> Result<String, DecryptError> {
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .filter(|bytes| bytes.len() > 12)
            .ok_or(DecryptError)?;
        let (nonce, ciphertext) = bytes.split_at(12);
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| DecryptError)?;
        String::from_utf8(plaintext).map_err(|_| DecryptError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_unaltered() {
        let secrets = SecretBox::new(&[7; 32]);
        let sealed = secrets.seal("whsec_abc");
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(secrets.open(&sealed).unwrap(), "whsec_abc");
        assert_ne!(
            secrets.seal("whsec_abc"),
            sealed,
            "a fresh nonce every time"
        );
        assert!(SecretBox::new(&[8; 32]).open(&sealed).is_err());
        let mut altered = sealed.clone();
        altered.replace_range(
            PREFIX.len()..PREFIX.len() + 1,
            if sealed.as_bytes()[PREFIX.len()] == b'A' {
                "B"
            } else {
                "A"
            },
        );
        assert!(secrets.open(&altered).is_err());
    }
}
