//! Destination secrets at rest: AES-256-GCM under `delivery.encryption_key`,
//! a fresh 96-bit nonce per value, stored as `enc:v1:` + base64(nonce || ciphertext).
//! Values sealed under an earlier key (`delivery.previous_encryption_keys`)
//! still open: GCM's tag tells the right key from the others, so the stored
//! form needs no key identifier.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

use crate::secrets::KeyRing;

const PREFIX: &str = "enc:v1:";

#[derive(Debug, thiserror::Error)]
#[error(
    "a stored secret cannot be decrypted (wrong delivery.encryption_key, or the value was altered)"
)]
pub struct DecryptError;

pub struct SecretBox {
    cipher: Aes256Gcm,
    previous: Vec<Aes256Gcm>,
}

/// Where a sealed value stands against the ring.
#[derive(Debug, PartialEq, Eq)]
pub enum Sealing {
    /// Under the current key: nothing to do.
    Current,
    /// Under an earlier key: the same value sealed under the current one.
    Resealed(String),
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

impl SecretBox {
    pub fn new(keys: &KeyRing) -> Self {
        Self {
            cipher: cipher(&keys.current),
            previous: keys.previous.iter().map(cipher).collect(),
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

    /// Whether `value` has the sealed form (it may still fail to open).
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }

    pub fn open(&self, sealed: &str) -> Result<String, DecryptError> {
        self.open_with_any(sealed).map(|(plain, _)| plain)
    }

    /// `sealed` re-sealed under the current key, when an earlier key sealed it.
    pub fn reseal(&self, sealed: &str) -> Result<Sealing, DecryptError> {
        match self.open_with_any(sealed)? {
            (_, true) => Ok(Sealing::Current),
            (plain, false) => Ok(Sealing::Resealed(self.seal(&plain))),
        }
    }

    /// The plain text, and whether the current key opened it.
    fn open_with_any(&self, sealed: &str) -> Result<(String, bool), DecryptError> {
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .filter(|bytes| bytes.len() > 12)
            .ok_or(DecryptError)?;
        let (nonce, ciphertext) = bytes.split_at(12);
        let nonce = Nonce::from_slice(nonce);
        let (plaintext, current) = match self.cipher.decrypt(nonce, ciphertext) {
            Ok(plaintext) => (plaintext, true),
            Err(_) => self
                .previous
                .iter()
                .find_map(|cipher| cipher.decrypt(nonce, ciphertext).ok())
                .map(|plaintext| (plaintext, false))
                .ok_or(DecryptError)?,
        };
        Ok((
            String::from_utf8(plaintext).map_err(|_| DecryptError)?,
            current,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_unaltered() {
        let secrets = SecretBox::new(&KeyRing::single([7; 32]));
        let sealed = secrets.seal("whsec_abc");
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(secrets.open(&sealed).unwrap(), "whsec_abc");
        assert_ne!(
            secrets.seal("whsec_abc"),
            sealed,
            "a fresh nonce every time"
        );
        assert!(SecretBox::new(&KeyRing::single([8; 32]))
            .open(&sealed)
            .is_err());
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

    #[test]
    fn an_earlier_key_still_opens_and_resealing_moves_to_the_current_one() {
        let old = SecretBox::new(&KeyRing::single([1; 32]));
        let sealed = old.seal("pa55");
        let ring = SecretBox::new(&KeyRing {
            current: [2; 32],
            previous: vec![[1; 32]],
        });
        assert_eq!(ring.open(&sealed).unwrap(), "pa55");
        let Sealing::Resealed(resealed) = ring.reseal(&sealed).unwrap() else {
            panic!("sealed under the earlier key");
        };
        assert!(old.open(&resealed).is_err());
        assert_eq!(ring.reseal(&resealed).unwrap(), Sealing::Current);
        assert_eq!(
            SecretBox::new(&KeyRing::single([2; 32]))
                .open(&resealed)
                .unwrap(),
            "pa55"
        );
        let stranger = SecretBox::new(&KeyRing::single([3; 32])).seal("x");
        assert!(ring.reseal(&stranger).is_err());
    }
}
