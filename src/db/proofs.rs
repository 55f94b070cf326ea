//! Builds the proofs of [`crate::integrity::proof`] from the store: an
//! event's path in its link and its link's path in a checkpoint's tree, and
//! consistency between two tree sizes. Each costs a bounded number of
//! queries: the tree part reads O(log n) stored subtrees in one query, the
//! link part the hashes of the event's one link.

use std::collections::BTreeMap;

use tokio_postgres::GenericClient;

use super::events::{self, EVENT_COLUMNS};
use super::{archives, tree, DbError};
use crate::archive_store::ArchiveStore;
use crate::integrity::chain;
use crate::integrity::checkpoint::SignedCheckpoint;
use crate::integrity::proof::{
    ConsistencyProof, EventProof, LinkProof, ProvenEvent, TreeHead, TreeProof,
};
use crate::integrity::tree::{consistency_ranges, inclusion_ranges};

#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("event {0}")]
    EventNotFound(i64),
    #[error("checkpoint {0}")]
    CheckpointNotFound(i64),
    #[error("a checkpoint of this organization (none is signed yet)")]
    NoCheckpoint,
    #[error("a checkpoint of tree size {0}")]
    SizeNotFound(i64),
    #[error("checkpoint {0} was signed before format version 2 and commits to no tree; ask for a later one")]
    NoTree(i64),
    #[error("event {event} is in chain link {seq}, newer than the checkpoint's tree of {tree_size} links; ask for a later checkpoint")]
    NewerThanCheckpoint {
        event: i64,
        seq: i64,
        tree_size: i64,
    },
    #[error("chain link {seq} holds {count} events but {found} of their hashes are at hand")]
    LeavesUnavailable { seq: i64, count: i64, found: usize },
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<tokio_postgres::Error> for ProveError {
    fn from(error: tokio_postgres::Error) -> Self {
        ProveError::Database(error.into())
    }
}

/// A stored checkpoint as a proof needs it.
struct Checkpoint {
    seq: i64,
    tree_root: Option<String>,
    signed: SignedCheckpoint,
}

/// The checkpoint of tree size `seq`, or the latest when `None`.
async fn checkpoint(
    client: &impl GenericClient,
    organization_id: &str,
    seq: Option<i64>,
) -> Result<Option<Checkpoint>, DbError> {
    let row = client
        .query_opt(
            "SELECT seq, tree_root, payload, signature FROM integrity_checkpoints \
             WHERE organization_id = $1 AND ($2::bigint IS NULL OR seq = $2) \
             ORDER BY seq DESC LIMIT 1",
            &[&organization_id, &seq],
        )
        .await?;
    Ok(row.map(|row| Checkpoint {
        seq: row.get("seq"),
        tree_root: row.get("tree_root"),
        signed: SignedCheckpoint {
            payload: row.get("payload"),
            signature: row.get("signature"),
        },
    }))
}

/// A live event with its chain link.
struct LinkedEvent {
    event: ProvenEvent,
    link_id: i64,
    link: LinkProof,
}

async fn linked_event(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<Option<LinkedEvent>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT e.*, c.link_id, c.seq, c.event_count, c.prev_link, c.merkle_root, c.link \
                 FROM (SELECT {EVENT_COLUMNS}, principal_commitment, target_resource_commitment, chain_link \
                       FROM audit_log WHERE organization_id = $1 AND id = $2) e \
                 JOIN audit_chain c ON c.organization_id = $1 AND c.link_id = e.chain_link"
            ),
            &[&organization_id, &id],
        )
        .await?;
    Ok(row.map(|row| LinkedEvent {
        event: ProvenEvent {
            event: events::stored(&row),
            principal_commitment: row.get("principal_commitment"),
            target_resource_commitment: row.get("target_resource_commitment"),
        },
        link_id: row.get("link_id"),
        link: LinkProof {
            seq: row.get("seq"),
            event_count: i64::from(row.get::<_, i32>("event_count")),
            prev_link: row.get("prev_link"),
            merkle_root: row.get("merkle_root"),
            link: row.get("link"),
            leaf_index: 0,
            audit_path: Vec::new(),
        },
    }))
}

/// The event hashes (hex) of chain link `link_id` by event id: live events,
/// the kept leaves of removed ones and, when those do not make the count,
/// the archived ones (as verification reads them, `docs/integrity.md` 7, 8).
async fn link_leaves(
    client: &impl GenericClient,
    store: &ArchiveStore,
    organization_id: &str,
    link_id: i64,
    event_count: i64,
) -> Result<BTreeMap<i64, String>, DbError> {
    let rows = client
        .query(
            "SELECT id, hash FROM audit_log WHERE organization_id = $1 AND chain_link = $2 \
             UNION ALL \
             SELECT event_id, hash FROM audit_pruned_leaf WHERE organization_id = $1 AND chain_link = $2",
            &[&organization_id, &link_id],
        )
        .await?;
    let mut leaves: BTreeMap<i64, String> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    if leaves.len() as i64 >= event_count {
        return Ok(leaves);
    }
    for archive in archives::covering_links(client, organization_id, link_id, link_id).await? {
        // A corrupted or unreachable archive adds nothing (the count then tells).
        let Ok(events) = store.read(client, &archive).await else {
            continue;
        };
        for event in events
            .into_iter()
            .filter(|event| event.chain_link == link_id)
        {
            leaves.insert(event.id, event.hash);
        }
    }
    Ok(leaves)
}

/// The proof that live event `id` is in the organization's checkpoint of
/// tree size `at` (the latest when `None`).
pub async fn event_proof(
    client: &impl GenericClient,
    store: &ArchiveStore,
    organization_id: &str,
    id: i64,
    at: Option<i64>,
) -> Result<EventProof, ProveError> {
    let (found, signed) = tokio::try_join!(
        linked_event(client, organization_id, id),
        checkpoint(client, organization_id, at)
    )?;
    let LinkedEvent {
        event,
        link_id,
        mut link,
    } = found.ok_or(ProveError::EventNotFound(id))?;
    let signed = signed.ok_or(match at {
        Some(seq) => ProveError::CheckpointNotFound(seq),
        None => ProveError::NoCheckpoint,
    })?;
    if signed.tree_root.is_none() {
        return Err(ProveError::NoTree(signed.seq));
    }
    if link.seq > signed.seq {
        return Err(ProveError::NewerThanCheckpoint {
            event: id,
            seq: link.seq,
            tree_size: signed.seq,
        });
    }

    let leaves = link_leaves(client, store, organization_id, link_id, link.event_count).await?;
    let unavailable = ProveError::LeavesUnavailable {
        seq: link.seq,
        count: link.event_count,
        found: leaves.len(),
    };
    let hashes: Option<Vec<[u8; 32]>> = leaves.values().map(|h| chain::parse_hash(h)).collect();
    let (Some(hashes), Some(index)) = (hashes, leaves.keys().position(|leaf| *leaf == id)) else {
        return Err(unavailable);
    };
    if hashes.len() as i64 != link.event_count {
        return Err(unavailable);
    }
    link.leaf_index = index as i64;
    link.audit_path = inclusion_ranges(index as u64, hashes.len() as u64)
        .into_iter()
        .map(|(start, end)| hex::encode(chain::merkle_root(&hashes[start as usize..end as usize])))
        .collect();

    let tree_path = tree::range_hashes(
        client,
        organization_id,
        &inclusion_ranges((link.seq - 1) as u64, signed.seq as u64),
    )
    .await?;
    Ok(EventProof {
        event_hash: event.event.hash.clone(),
        event,
        tree: TreeProof {
            tree_size: signed.seq,
            leaf_index: link.seq - 1,
            audit_path: tree_path.iter().map(hex::encode).collect(),
        },
        link,
        checkpoint: signed.signed,
    })
}

/// The consistency proof from the tree of `from` links to the tree of a
/// checkpoint of the organization of `to` links (`1 <= from <= to`).
pub async fn consistency_proof(
    client: &impl GenericClient,
    organization_id: &str,
    from: i64,
    to: i64,
) -> Result<ConsistencyProof, ProveError> {
    let signed = checkpoint(client, organization_id, Some(to)).await?;
    if signed.and_then(|signed| signed.tree_root).is_none() {
        return Err(ProveError::SizeNotFound(to));
    }
    let (old, new) = (from as u64, to as u64);
    let mut ranges = vec![(0, old), (0, new)];
    ranges.extend(consistency_ranges(old, new));
    let hashes = tree::range_hashes(client, organization_id, &ranges).await?;
    let head = |tree_size, hash: &[u8; 32]| TreeHead {
        tree_size,
        tree_root: hex::encode(hash),
    };
    Ok(ConsistencyProof {
        from: head(from, &hashes[0]),
        to: head(to, &hashes[1]),
        proof: hashes[2..].iter().map(hex::encode).collect(),
    })
}
