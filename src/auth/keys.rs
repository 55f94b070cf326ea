//! API key format: `awk_<id>_<secret>`. The id (16 hex digits) is public and
//! names the key in listings and logs; the secret is 256 random bits, stored
//! only as its SHA-256. A fast hash is right here: the secret is uniformly
//! random and long, so there is nothing for a slow password hash to protect
//! against, and verification stays cheap on every request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "awk_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
const _: () = assert!(
    SECRET_BYTES * 8 >= 128,
    "keys carry at least 128 random bits"
);
/// Length of the base64url (unpadded) form of the secret.
const SECRET_CHARS: usize = 43;

/// A freshly minted key: the full key goes to the caller once, the rest is stored.
pub struct NewKey {
    pub id: String,
    pub secret_hash: [u8; 32],
    pub key: String,
}

pub fn generate() -> NewKey {
    let mut id = [0u8; ID_BYTES];
    rand::rng().fill_bytes(&mut id);
    new_secret(&hex::encode(id))
}

/// A new secret for the key `id` (a rotation keeps the id).
pub fn new_secret(id: &str) -> NewKey {
    let mut secret = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    NewKey {
        secret_hash: hash_secret(&secret),
        key: format!("{PREFIX}{id}_{secret}"),
        id: id.to_owned(),
    }
}

/// A key split into its parts; says nothing yet about whether it is valid.
#[derive(Debug, PartialEq, Eq)]
pub struct PresentedKey<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

/// Splits a presented key, or `None` when it does not have the key format.
pub fn parse(key: &str) -> Option<PresentedKey<'_>> {
    let rest = key.strip_prefix(PREFIX)?;
    // The id is hex, so the first `_` ends it; the secret may contain `_` itself.
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == ID_BYTES * 2 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok = secret.len() == SECRET_CHARS
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(PresentedKey { id, secret })
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares in constant time, so response timing reveals nothing about how much
/// of a guessed secret was right.
pub fn secret_matches(secret: &str, stored_hash: &[u8]) -> bool {
    hash_matches(&hash_secret(secret), stored_hash)
}

/// [`secret_matches`] for a secret already hashed (a key with a rotated
/// secret is compared with two stored hashes).
pub fn hash_matches(hash: &[u8; 32], stored_hash: &[u8]) -> bool {
    hash.ct_eq(stored_hash).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        for _ in 0..100 {
            let new = generate();
            let presented = parse(&new.key).expect("a generated key parses");
            assert_eq!(presented.id, new.id);
            assert!(secret_matches(presented.secret, &new.secret_hash));
        }
    }

    #[test]
    fn keys_are_unique() {
        let (a, b) = (generate(), generate());
        assert_ne!(a.key, b.key);
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn a_new_secret_keeps_the_id_and_replaces_the_secret() {
        let first = generate();
        let second = new_secret(&first.id);
        assert_eq!(parse(&second.key).unwrap().id, first.id);
        assert_ne!(second.key, first.key);
        assert!(!secret_matches(
            parse(&second.key).unwrap().secret,
            &first.secret_hash
        ));
    }

    #[test]
    fn a_wrong_secret_does_not_verify() {
        let new = generate();
        let other = generate();
        let presented = parse(&other.key).unwrap();
        assert!(!secret_matches(presented.secret, &new.secret_hash));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        let good = generate().key;
        for bad in [
            "",
            "awk_",
            "Bearer x",
            &good[1..],
            &good[..good.len() - 1],
            &good.replace("awk_", "xyz_"),
            &format!("{good}x"),
            "awk_0123456789abcdeg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} parsed");
        }
    }
}
