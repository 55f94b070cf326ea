//! The manifest beside each Parquet archive (`<id>.manifest.json`): what the
//! archive holds and the SHA-256 of its bytes and of its events, so a reader
//! without the database can check the file it got.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::event::ArchivedEvent;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub archive_id: Uuid,
    pub organization_id: String,
    /// The Parquet file's key, from the bucket's (or directory's) root.
    pub object_key: String,
    pub format: String,
    pub compression: String,
    pub event_count: u64,
    pub first_event_id: i64,
    pub last_event_id: i64,
    pub first_event_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    /// The chain links (`audit_chain` rows) the events belong to.
    pub chain_links: Value,
    pub parquet_bytes: u64,
    /// SHA-256 (hex) of the Parquet file's bytes.
    pub parquet_sha256: String,
    /// SHA-256 (hex) of the canonical event stream: each event as
    /// [`ArchivedEvent::line`], each line ended by `\n`, in file order.
    pub events_sha256: String,
    pub retention_policy: String,
    pub data_classification: String,
    pub archived_at: DateTime<Utc>,
    /// The archive this one replaced, when a GDPR operation rewrote it.
    pub replaces: Option<Uuid>,
}

/// SHA-256 (hex) of the canonical event stream of `events`.
pub fn events_sha256(events: &[ArchivedEvent]) -> String {
    let mut hasher = Sha256::new();
    for event in events {
        hasher.update(event.line().as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
