//! Proofs a client checks without trusting the worker (`docs/integrity.md`,
//! sections 10 to 12): that an event is in a signed checkpoint's tree, and that
//! a later tree extends an earlier one. The shapes the API returns, and the
//! verifiers of both, which need nothing but the proof and the public key.

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::canonical::{self, HashedFields};
use super::chain;
use super::checkpoint::{self, CheckpointError, CheckpointStatement, SignedCheckpoint};
use super::tree::{self, Hash};
use crate::db::events::StoredEvent;

/// An event as `GET /v1/events/{id}` returns it, with the two identifier
/// commitments its hash covers in place of the identifiers (section 3), so
/// that the hash can be recomputed without the commitment key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProvenEvent {
    #[serde(flatten)]
    pub event: StoredEvent,
    pub principal_commitment: String,
    pub target_resource_commitment: Option<String>,
}

/// The event's place in its chain link.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LinkProof {
    pub seq: i64,
    pub event_count: i64,
    /// Hex.
    pub prev_link: String,
    /// Hex: the RFC 6962 root over the link's event hashes, in id order.
    pub merkle_root: String,
    /// Hex: the link hash, recomputed from the four fields above.
    pub link: String,
    /// The event's position among the link's events (from 0).
    pub leaf_index: i64,
    /// Hex sibling hashes from the event's leaf up to `merkle_root`.
    pub audit_path: Vec<String>,
}

/// The link's place in the organization's link tree.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TreeProof {
    /// The checkpoint's `tree_size` (its `seq`).
    pub tree_size: i64,
    /// `link.seq - 1`.
    pub leaf_index: i64,
    /// Hex sibling hashes from SHA-256(0x00 || link) up to the checkpoint's `tree_root`.
    pub audit_path: Vec<String>,
}

/// `GET /v1/events/{id}/proof`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventProof {
    pub event: ProvenEvent,
    /// Hex SHA-256 of the event's canonical bytes.
    pub event_hash: String,
    pub link: LinkProof,
    pub tree: TreeProof,
    /// The signed checkpoint whose `tree_root` the tree path reaches.
    pub checkpoint: SignedCheckpoint,
}

/// A tree size and its root hash (hex).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TreeHead {
    pub tree_size: i64,
    pub tree_root: String,
}

/// `GET /v1/integrity/consistency`: RFC 9162 consistency proof that the tree
/// `to` extends the tree `from`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: TreeHead,
    pub to: TreeHead,
    /// Hex subtree hashes (RFC 9162 2.1.4).
    pub proof: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("the proof is malformed: {0}")]
    Malformed(String),
    #[error("the event's fields do not hash to `event_hash`")]
    EventHash,
    #[error("the event's audit path does not lead to the link's `merkle_root`")]
    LinkPath,
    #[error("the link hash does not match `prev_link`, `seq`, `event_count` and `merkle_root`")]
    Link,
    #[error("the tree audit path does not lead to the checkpoint's `tree_root`")]
    TreePath,
    #[error("the checkpoint commits to no tree (signed before format version 2)")]
    NoTree,
    #[error("the checkpoint is for another organization or tree size than the proof")]
    CheckpointMismatch,
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the consistency proof does not show that `to` extends `from`")]
    Inconsistent,
}

fn hash(field: &str, hex_hash: &str) -> Result<Hash, ProofError> {
    chain::parse_hash(hex_hash)
        .ok_or_else(|| ProofError::Malformed(format!("`{field}` is not a 64-digit hex hash")))
}

fn hashes(field: &str, hex_hashes: &[String]) -> Result<Vec<Hash>, ProofError> {
    hex_hashes.iter().map(|h| hash(field, h)).collect()
}

fn unsigned(field: &str, value: i64) -> Result<u64, ProofError> {
    u64::try_from(value).map_err(|_| ProofError::Malformed(format!("`{field}` is negative")))
}

/// The event hash of `event`, from its fields alone.
pub fn event_hash(event: &ProvenEvent) -> Result<Hash, ProofError> {
    let stored = &event.event;
    let timestamp: DateTime<Utc> = stored
        .timestamp
        .parse()
        .map_err(|_| ProofError::Malformed("`event.timestamp` is not RFC 3339".into()))?;
    // The hash covers this one spelling (section 3): any other is not the stored event.
    if canonical::format_timestamp(timestamp) != stored.timestamp {
        return Err(ProofError::EventHash);
    }
    Ok(canonical::event_hash(&HashedFields {
        organization_id: &stored.organization_id,
        timestamp,
        ttl: stored.ttl.as_deref(),
        principal_commitment: &event.principal_commitment,
        action: &stored.action,
        target_resource_type: stored.target_resource_type.as_deref(),
        target_resource_commitment: event.target_resource_commitment.as_deref(),
        status: &stored.status,
        outcome_description: stored.outcome_description.as_deref(),
        hash_algorithm: &stored.hash_algorithm,
        event_version: &stored.event_version,
        correlation_id: stored.correlation_id.as_deref(),
        data_classification: &stored.data_classification,
        retention_policy: &stored.retention_policy,
        idempotency_key: stored.idempotency_key.as_deref(),
        details: stored.details.as_ref(),
    }))
}

/// Checks a whole event proof against the worker's public `key`: event →
/// hash → link path → link → tree path → signed `tree_root`. Returns the
/// checkpoint's statement.
pub fn verify_event_proof(
    proof: &EventProof,
    key: &VerifyingKey,
) -> Result<CheckpointStatement, ProofError> {
    let statement = checkpoint::open(key, &proof.checkpoint)?;
    let (Some(tree_root), Some(tree_size)) = (&statement.tree_root, statement.tree_size) else {
        return Err(ProofError::NoTree);
    };
    let event = &proof.event;
    let claimed = hash("event_hash", &proof.event_hash)?;
    if event_hash(event)? != claimed || event.event.hash != proof.event_hash {
        return Err(ProofError::EventHash);
    }

    let link = &proof.link;
    let (count, index) = (
        unsigned("link.event_count", link.event_count)?,
        unsigned("link.leaf_index", link.leaf_index)?,
    );
    let merkle_root = hash("link.merkle_root", &link.merkle_root)?;
    let path = hashes("link.audit_path", &link.audit_path)?;
    if !tree::verify_inclusion(
        &tree::leaf_hash(&claimed),
        index,
        count,
        &path,
        &merkle_root,
    ) {
        return Err(ProofError::LinkPath);
    }
    let count = u32::try_from(count)
        .map_err(|_| ProofError::Malformed("`link.event_count` is too large".into()))?;
    let link_hash = hash("link.link", &link.link)?;
    let prev = hash("link.prev_link", &link.prev_link)?;
    if link.seq < 1 || chain::link(&prev, link.seq, count, &merkle_root) != link_hash {
        return Err(ProofError::Link);
    }

    let tree_proof = &proof.tree;
    if tree_proof.tree_size != tree_size
        || statement.seq != tree_size
        || statement.organization_id != event.event.organization_id
    {
        return Err(ProofError::CheckpointMismatch);
    }
    if tree_proof.leaf_index != link.seq - 1 {
        return Err(ProofError::TreePath);
    }
    let root = hash("checkpoint tree_root", tree_root)?;
    let path = hashes("tree.audit_path", &tree_proof.audit_path)?;
    let (index, leaves) = (
        unsigned("tree.leaf_index", tree_proof.leaf_index)?,
        unsigned("tree.tree_size", tree_size)?,
    );
    if !tree::verify_inclusion(&tree::leaf_hash(&link_hash), index, leaves, &path, &root) {
        return Err(ProofError::TreePath);
    }
    Ok(statement)
}

/// Checks that `proof.to` extends `proof.from`. A client passes the root it
/// kept (from a checkpoint it holds) as `from.tree_root`, and checks `to`
/// against a signed checkpoint: the worker's word is then taken for nothing.
pub fn verify_consistency_proof(proof: &ConsistencyProof) -> Result<(), ProofError> {
    let old = hash("from.tree_root", &proof.from.tree_root)?;
    let new = hash("to.tree_root", &proof.to.tree_root)?;
    let path = hashes("proof", &proof.proof)?;
    let (old_size, new_size) = (
        unsigned("from.tree_size", proof.from.tree_size)?,
        unsigned("to.tree_size", proof.to.tree_size)?,
    );
    if tree::verify_consistency(old_size, new_size, &old, &new, &path) {
        Ok(())
    } else {
        Err(ProofError::Inconsistent)
    }
}
