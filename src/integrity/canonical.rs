//! The canonical serialization of an event and its hash, specified byte for byte
//! in `docs/integrity.md` (keep the two in step; the test vectors there are
//! checked by the tests below).

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

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

/// The bytes the event hash is computed over.
pub fn canonical_bytes(fields: &HashedFields<'_>) -> Vec<u8> {
    let details = fields
        .details
        .map(|details| serde_jcs::to_string(details).expect("a JSON value always canonicalizes"));
    let timestamp = format_timestamp(fields.timestamp);
    let values: [Option<&str>; 16] = [
        Some(fields.organization_id),
        Some(&timestamp),
        fields.ttl,
        Some(fields.principal_commitment),
        Some(fields.action),
        fields.target_resource_type,
        fields.target_resource_commitment,
        Some(fields.status),
        fields.outcome_description,
        Some(fields.hash_algorithm),
        Some(fields.event_version),
        fields.correlation_id,
        Some(fields.data_classification),
        Some(fields.retention_policy),
        fields.idempotency_key,
        details.as_deref(),
    ];
    let mut bytes = Vec::with_capacity(512);
    bytes.extend_from_slice(EVENT_DOMAIN);
    for value in values {
        match value {
            None => bytes.push(0),
            Some(value) => {
                bytes.push(1);
                bytes.extend_from_slice(&(value.len() as u32).to_be_bytes());
                bytes.extend_from_slice(value.as_bytes());
            }
        }
    }
    bytes
}

pub fn event_hash(fields: &HashedFields<'_>) -> [u8; 32] {
    Sha256::digest(canonical_bytes(fields)).into()
}

/// The keyed commitment to a personal identifier (hex): binds the identifier to
/// the event without putting it in the hashed bytes, so a recorded
/// pseudonymization or erasure can change the identifier and leave the hash valid.
pub fn commitment(key: &[u8], organization_id: &str, identifier: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(IDENTIFIER_DOMAIN);
    mac.update(&(organization_id.len() as u32).to_be_bytes());
    mac.update(organization_id.as_bytes());
    mac.update(identifier.as_bytes());
    hex::encode(mac.finalize().into_bytes())
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
