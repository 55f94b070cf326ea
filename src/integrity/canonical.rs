//! The canonical serialization of an event and its hash, specified byte for byte
//! in `docs/integrity.md` (keep the two in step; the test vectors there are
//! checked by the tests below).

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::jcs;

pub const HASH_ALGORITHM: &str = "SHA-256";
const EVENT_DOMAIN: &[u8] = b"audit-worker/event/v1\0";
const IDENTIFIER_DOMAIN: &[u8] = b"audit-worker/identifier/v1\0";

/// Every field an event hash covers, in canonical order. Personal identifiers
/// appear only as their keyed commitments.
#[derive(Debug, Clone, Copy)]
pub struct HashedFields<'a> {
    pub organization_id: &'a str,
    pub timestamp: DateTime<Utc>,
    pub ttl: Option<&'a str>,
    pub principal_commitment: &'a str,
    pub action: &'a str,
    pub target_resource_type: Option<&'a str>,
    pub target_resource_commitment: Option<&'a str>,
    pub status: &'a str,
    pub outcome_description: Option<&'a str>,
    pub hash_algorithm: &'a str,
    pub event_version: &'a str,
    pub correlation_id: Option<&'a str>,
    pub data_classification: &'a str,
    pub retention_policy: &'a str,
    pub idempotency_key: Option<&'a str>,
    /// Serialized per RFC 8785 (JSON Canonicalization Scheme).
    pub details: Option<&'a serde_json::Value>,
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`: UTC, always six fractional digits (the
/// precision PostgreSQL stores).
pub fn format_timestamp(timestamp: DateTime<Utc>) -> String {
    timestamp.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Appends [`format_timestamp`]'s text to `out` without formatting
/// machinery: it is written once per event hashed.
fn write_timestamp(timestamp: DateTime<Utc>, out: &mut Vec<u8>) {
    let year = timestamp.year();
    if !(0..=9999).contains(&year) {
        // Signed or five-digit years, as chrono spells them.
        out.extend_from_slice(format_timestamp(timestamp).as_bytes());
        return;
    }
    let digits = |out: &mut Vec<u8>, value: u32, width: u32| {
        for place in (0..width).rev() {
            out.push(b'0' + (value / 10u32.pow(place) % 10) as u8);
        }
    };
    digits(out, year as u32, 4);
    out.push(b'-');
    digits(out, timestamp.month(), 2);
    out.push(b'-');
    digits(out, timestamp.day(), 2);
    out.push(b'T');
    digits(out, timestamp.hour(), 2);
    out.push(b':');
    digits(out, timestamp.minute(), 2);
    out.push(b':');
    // A leap second is carried in the nanoseconds (60 seconds as chrono spells it).
    let nanos = timestamp.nanosecond();
    digits(out, timestamp.second() + nanos / 1_000_000_000, 2);
    out.push(b'.');
    digits(out, nanos % 1_000_000_000 / 1000, 6);
    out.push(b'Z');
}

/// The bytes the event hash is computed over.
pub fn canonical_bytes(fields: &HashedFields<'_>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(512);
    write_canonical(fields, &mut bytes);
    bytes
}

/// Appends [`canonical_bytes`] to `out` (a buffer reused from event to event).
pub fn write_canonical(fields: &HashedFields<'_>, out: &mut Vec<u8>) {
    write_fields(fields, out);
    match fields.details {
        None => out.push(0),
        Some(details) => present(out, |out| jcs::write(details, out)),
    }
}

/// [`write_canonical`] of `fields` with `details` as the JSON text the
/// database gives (`fields.details` is not read): verification canonicalizes
/// that text without parsing it into a [`serde_json::Value`] first
/// ([`jcs::write_text`]). Fails only when the text is not JSON.
pub fn write_canonical_details_text(
    fields: &HashedFields<'_>,
    details: Option<&str>,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    write_fields(fields, out);
    match details {
        None => out.push(0),
        Some(details) => {
            let mut written = Ok(());
            present(out, |out| written = jcs::write_text(details, out));
            written?;
        }
    }
    Ok(())
}

/// Field `0x01 || u32be(len) || value`, with `write` appending the value.
fn present(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    out.push(1);
    let length_at = out.len();
    out.extend_from_slice(&[0; 4]);
    write(out);
    let length = (out.len() - length_at - 4) as u32;
    out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
}

/// The domain and fields 1 to 15 (all but `details`).
fn write_fields(fields: &HashedFields<'_>, out: &mut Vec<u8>) {
    fn text(out: &mut Vec<u8>, value: Option<&str>) {
        match value {
            None => out.push(0),
            Some(value) => present(out, |out| out.extend_from_slice(value.as_bytes())),
        }
    }
    out.extend_from_slice(EVENT_DOMAIN);
    text(out, Some(fields.organization_id));
    present(out, |out| write_timestamp(fields.timestamp, out));
    text(out, fields.ttl);
    text(out, Some(fields.principal_commitment));
    text(out, Some(fields.action));
    text(out, fields.target_resource_type);
    text(out, fields.target_resource_commitment);
    text(out, Some(fields.status));
    text(out, fields.outcome_description);
    text(out, Some(fields.hash_algorithm));
    text(out, Some(fields.event_version));
    text(out, fields.correlation_id);
    text(out, Some(fields.data_classification));
    text(out, Some(fields.retention_policy));
    text(out, fields.idempotency_key);
}

pub fn event_hash(fields: &HashedFields<'_>) -> [u8; 32] {
    Sha256::digest(canonical_bytes(fields)).into()
}

/// The keyed commitment to a personal identifier (hex): binds the identifier to
/// the event without putting it in the hashed bytes, so a recorded
/// pseudonymization or erasure can change the identifier and leave the hash valid.
pub fn commitment(key: &[u8], organization_id: &str, identifier: &str) -> String {
    hex::encode(Committer::new(key, organization_id).commit(identifier))
}

/// [`commitment`] for many identifiers of one organization: the HMAC is
/// keyed, and the domain and organization fed to it, once. Verification
/// checks two commitments per event; keying the HMAC alone costs two
/// SHA-256 blocks each time.
#[derive(Clone)]
pub struct Committer {
    /// Keyed, with everything before the identifier already in.
    prefix: Hmac<Sha256>,
}

impl Committer {
    pub fn new(key: &[u8], organization_id: &str) -> Self {
        let mut prefix = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        prefix.update(IDENTIFIER_DOMAIN);
        prefix.update(&(organization_id.len() as u32).to_be_bytes());
        prefix.update(organization_id.as_bytes());
        Committer { prefix }
    }

    /// The commitment's bytes (before hex).
    pub fn commit(&self, identifier: &str) -> [u8; 32] {
        let mut mac = self.prefix.clone();
        mac.update(identifier.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `commitment` (as stored: lower-case hex) is `identifier`'s.
    pub fn matches(&self, identifier: &str, commitment: &str) -> bool {
        hex_equals(&self.commit(identifier), commitment)
    }
}

/// Whether `text` is `bytes` in lower-case hex, as hashes and commitments
/// are stored (spelled on the stack, not in a new string).
pub fn hex_equals(bytes: &[u8; 32], text: &str) -> bool {
    let mut spelled = [0u8; 64];
    hex::encode_to_slice(bytes, &mut spelled).expect("64 digits for 32 bytes");
    spelled == text.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vectors published in docs/integrity.md.
    pub(crate) fn vector_fields<'a>(
        details: &'a serde_json::Value,
        commitment: &'a str,
    ) -> HashedFields<'a> {
        HashedFields {
            organization_id: "org-1",
            timestamp: "2026-01-02T03:04:05.123456Z".parse().unwrap(),
            ttl: None,
            principal_commitment: commitment,
            action: "auth.login",
            target_resource_type: None,
            target_resource_commitment: None,
            status: "success",
            outcome_description: None,
            hash_algorithm: HASH_ALGORITHM,
            event_version: "1.0",
            correlation_id: None,
            data_classification: "INTERNAL",
            retention_policy: "standard",
            idempotency_key: None,
            details: Some(details),
        }
    }

    #[test]
    fn published_test_vectors_hold() {
        let key = [0x42u8; 32];
        let commitment = commitment(&key, "org-1", "user-7");
        assert_eq!(
            commitment,
            include_str!("../../docs/vectors/commitment.txt").trim()
        );
        let details = serde_json::json!({"b": [1, 2.50, "x"], "a": {"z": null, "é": true}});
        let fields = vector_fields(&details, &commitment);
        assert_eq!(
            hex::encode(canonical_bytes(&fields)),
            include_str!("../../docs/vectors/canonical.hex").trim()
        );
        assert_eq!(
            hex::encode(event_hash(&fields)),
            include_str!("../../docs/vectors/event_hash.txt").trim()
        );
    }

    #[test]
    fn every_field_changes_the_hash() {
        let details = serde_json::json!({"k": 1});
        let commitment = "0".repeat(64);
        let base = vector_fields(&details, &commitment);
        let other_details = serde_json::json!({"k": 2});
        let reference = event_hash(&base);
        let variants: Vec<HashedFields> = vec![
            HashedFields {
                organization_id: "org-2",
                ..base
            },
            HashedFields {
                timestamp: base.timestamp + chrono::Duration::microseconds(1),
                ..base
            },
            HashedFields {
                ttl: Some("1d"),
                ..base
            },
            HashedFields {
                principal_commitment: "1",
                ..base
            },
            HashedFields {
                action: "auth.logout",
                ..base
            },
            HashedFields {
                target_resource_type: Some("Patient"),
                ..base
            },
            HashedFields {
                target_resource_commitment: Some("1"),
                ..base
            },
            HashedFields {
                status: "failure",
                ..base
            },
            HashedFields {
                outcome_description: Some(""),
                ..base
            },
            HashedFields {
                hash_algorithm: "x",
                ..base
            },
            HashedFields {
                event_version: "2.0",
                ..base
            },
            HashedFields {
                correlation_id: Some("c"),
                ..base
            },
            HashedFields {
                data_classification: "PHI",
                ..base
            },
            HashedFields {
                retention_policy: "minimal",
                ..base
            },
            HashedFields {
                idempotency_key: Some("k"),
                ..base
            },
            HashedFields {
                details: Some(&other_details),
                ..base
            },
            HashedFields {
                details: None,
                ..base
            },
        ];
        for (i, variant) in variants.iter().enumerate() {
            assert_ne!(event_hash(variant), reference, "field {i} is not covered");
        }
    }

    #[test]
    fn equal_json_in_another_spelling_hashes_the_same() {
        let commitment = "0".repeat(64);
        let a = serde_json::from_str::<serde_json::Value>(r#"{"b":1.50,"a":[1e2]}"#).unwrap();
        let b = serde_json::from_str::<serde_json::Value>(r#"{ "a": [100], "b": 1.5 }"#).unwrap();
        assert_eq!(
            event_hash(&vector_fields(&a, &commitment)),
            event_hash(&vector_fields(&b, &commitment))
        );
    }

    /// The hand-written timestamp agrees with chrono's RFC 3339 spelling,
    /// across years of four digits and beyond them.
    #[test]
    fn timestamps_are_written_as_chrono_spells_them() {
        let micros = [
            0_i64,
            1,
            999_999,
            1_767_323_045_123_456,
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            -62_135_596_800_000_001,
            9_000_000_000_000_000,
        ];
        for micros in micros {
            let timestamp = DateTime::from_timestamp_micros(micros).unwrap();
            let mut written = Vec::new();
            write_timestamp(timestamp, &mut written);
            assert_eq!(
                String::from_utf8(written).unwrap(),
                format_timestamp(timestamp),
                "{micros}"
            );
        }
    }

    /// RFC 8785 numbers as docs/vectors/numbers.json (made by reference.py) spells them.
    #[test]
    fn numbers_canonicalize_as_the_reference_does() {
        let vectors: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(include_str!("../../docs/vectors/numbers.json")).unwrap();
        for (input, expected) in vectors {
            let value: serde_json::Value = serde_json::from_str(&input).unwrap();
            assert_eq!(
                serde_jcs::to_string(&value).unwrap(),
                expected.as_str().unwrap(),
                "{input}"
            );
        }
    }
}
