//! One archived event: every column of `audit_log`, typed. Archives of every
//! store read into it, and Parquet archives are written from it, so a column
//! added to `audit_log` without a place here fails archival loudly (unknown
//! fields are refused) instead of being dropped.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::db::deletions::Leaf;
use crate::db::events::StoredEvent;
use crate::integrity::canonical::format_timestamp;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArchivedEvent {
    pub id: i64,
    pub timestamp: DateTime<Utc>,
    pub ttl: Option<String>,
    pub principal_id: String,
    pub organization_id: String,
    pub action: String,
    pub target_resource_type: Option<String>,
    pub target_resource_id: Option<String>,
    pub status: String,
    pub outcome_description: Option<String>,
    pub hash: String,
    pub hash_algorithm: String,
    pub event_version: String,
    pub correlation_id: Option<String>,
    pub data_classification: String,
    pub retention_policy: String,
    pub processing_latency: Option<i32>,
    pub archived_at: Option<DateTime<Utc>>,
    /// As the JSON text it was read as: archival neither parses nor
    /// rewrites it (and holds one string per event, not a tree).
    pub details: Option<Box<RawValue>>,
    pub idempotency_key: Option<String>,
    pub principal_commitment: String,
    pub target_resource_commitment: Option<String>,
    pub chain_link: i64,
}

impl ArchivedEvent {
    /// An event as archives of the `postgres` store keep it (a JSON object of
    /// every column, as PostgreSQL's `to_jsonb` writes it).
    pub fn parse(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// The event as one JSON object of every column: the line `GET
    /// /v1/archives/{id}` answers, and what the manifest's `events_sha256`
    /// covers (timestamps in RFC 3339 UTC with `Z`, keys in column order).
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("an archived event serializes")
    }

    /// Whether the event names the subject of `commitment` (as its principal
    /// or as its target).
    pub fn concerns(&self, commitment: &str) -> bool {
        self.principal_commitment == commitment
            || self.target_resource_commitment.as_deref() == Some(commitment)
    }

    /// Puts `pseudonym` where the event names the subject of `commitment`;
    /// whether anything changed. The commitments stay, so the event's hash
    /// still verifies.
    pub fn pseudonymize(&mut self, commitment: &str, pseudonym: &str) -> bool {
        let mut changed = false;
        if self.principal_commitment == commitment && self.principal_id != pseudonym {
            self.principal_id = pseudonym.to_owned();
            changed = true;
        }
        if self.target_resource_commitment.as_deref() == Some(commitment)
            && self.target_resource_id.as_deref() != Some(pseudonym)
        {
            self.target_resource_id = Some(pseudonym.to_owned());
            changed = true;
        }
        changed
    }

    /// The event's chain leaf, kept when an operation removes it.
    pub fn leaf(&self) -> Leaf {
        Leaf {
            chain_link: self.chain_link,
            event_id: self.id,
            event_timestamp: self.timestamp,
            hash: self.hash.clone(),
        }
    }

    /// The event as the API and GDPR exports show events.
    pub fn stored(&self) -> StoredEvent {
        StoredEvent {
            id: self.id,
            timestamp: format_timestamp(self.timestamp),
            organization_id: self.organization_id.clone(),
            principal_id: self.principal_id.clone(),
            action: self.action.clone(),
            status: self.status.clone(),
            target_resource_type: self.target_resource_type.clone(),
            target_resource_id: self.target_resource_id.clone(),
            outcome_description: self.outcome_description.clone(),
            correlation_id: self.correlation_id.clone(),
            data_classification: self.data_classification.clone(),
            retention_policy: self.retention_policy.clone(),
            ttl: self.ttl.clone(),
            event_version: self.event_version.clone(),
            // Valid JSON by construction; a number serde_json cannot hold
            // (past f64) is the only way this fails.
            details: self
                .details
                .as_ref()
                .and_then(|details| serde_json::from_str(details.get()).ok()),
            idempotency_key: self.idempotency_key.clone(),
            hash: self.hash.clone(),
            hash_algorithm: self.hash_algorithm.clone(),
            processing_latency: self.processing_latency,
        }
    }
}
