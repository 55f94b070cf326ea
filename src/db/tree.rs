//! The link tree's stored subtrees (`audit_tree_node`, migration V18): grown
//! from the chain before a checkpoint is signed, read to answer proofs. The
//! math is [`crate::integrity::tree`].

use std::collections::{BTreeSet, HashMap};

use tokio_postgres::GenericClient;

use super::DbError;
use crate::integrity::chain;
use crate::integrity::tree::{self, Hash, NodeId, Range};

/// Links read (and their subtrees written) per statement while growing: a
/// chain written before the tree existed is back-filled in steps of this many.
const GROW_STEP: i64 = 8192;

/// How many leaves the organization's stored tree has.
pub async fn stored_size(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<i64, DbError> {
    let row = client
        .query_one(
            "SELECT coalesce(max(node_index) + 1, 0) FROM audit_tree_node \
             WHERE organization_id = $1 AND level = 0",
            &[&organization_id],
        )
        .await?;
    Ok(row.get(0))
}

/// The stored subtrees `ids`, in one query; absent ones are left out.
pub async fn nodes(
    client: &impl GenericClient,
    organization_id: &str,
    ids: &BTreeSet<NodeId>,
) -> Result<HashMap<NodeId, Hash>, DbError> {
    let levels: Vec<i16> = ids.iter().map(|id| id.level as i16).collect();
    let indexes: Vec<i64> = ids.iter().map(|id| id.index as i64).collect();
    let rows = client
        .query(
            "SELECT n.level, n.node_index, n.hash FROM audit_tree_node n \
             JOIN unnest($2::smallint[], $3::bigint[]) AS w(level, node_index) \
               ON n.level = w.level AND n.node_index = w.node_index \
             WHERE n.organization_id = $1",
            &[&organization_id, &levels, &indexes],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let id = NodeId {
                level: row.get::<_, i16>(0) as u32,
                index: row.get::<_, i64>(1) as u64,
            };
            let hash: &[u8] = row.get(2);
            let hash = Hash::try_from(hash)
                .map_err(|_| DbError::Decode(format!("tree node {id:?} is not 32 bytes")))?;
            Ok((id, hash))
        })
        .collect()
}

/// The tree hashes of `ranges`, from their stored subtrees read in one query.
pub async fn range_hashes(
    client: &impl GenericClient,
    organization_id: &str,
    ranges: &[Range],
) -> Result<Vec<Hash>, DbError> {
    let stored = nodes(client, organization_id, &tree::needed(ranges)).await?;
    ranges
        .iter()
        .map(|range| {
            tree::range_hash(*range, &stored).ok_or_else(|| {
                DbError::Decode(format!(
                    "the link tree of `{organization_id}` lacks subtrees of leaves {range:?}"
                ))
            })
        })
        .collect()
}

/// Grows the organization's stored tree to `size` leaves (links 1..=`size`)
/// if it is smaller. Idempotent and safe to race: subtrees are a function of
/// the chain, so a row another writer stored first is the same row.
pub async fn grow(
    client: &impl GenericClient,
    organization_id: &str,
    size: i64,
) -> Result<(), DbError> {
    let mut stored = stored_size(client, organization_id).await?;
    while stored < size {
        let upto = size.min(stored + GROW_STEP);
        let rows = client
            .query(
                "SELECT seq, link FROM audit_chain \
                 WHERE organization_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
                &[&organization_id, &stored, &upto],
            )
            .await?;
        let mut leaves = Vec::with_capacity(rows.len());
        for (offset, row) in rows.iter().enumerate() {
            let (seq, link): (i64, &str) = (row.get(0), row.get(1));
            let link = chain::parse_hash(link).filter(|_| seq == stored + 1 + offset as i64);
            let Some(link) = link else {
                return Err(DbError::Decode(format!(
                    "chain link {} of `{organization_id}` is missing or malformed",
                    stored + 1 + offset as i64
                )));
            };
            leaves.push(tree::leaf_hash(&link));
        }
        if leaves.len() as i64 != upto - stored {
            return Err(DbError::Decode(format!(
                "the chain of `{organization_id}` ends before link {upto}"
            )));
        }
        let old = stored as u64;
        let frontier = nodes(
            client,
            organization_id,
            &tree::frontier(old).into_iter().collect(),
        )
        .await?;
        let grown = tree::grow(old, &frontier, &leaves).ok_or_else(|| {
            DbError::Decode(format!(
                "the link tree of `{organization_id}` lacks subtrees below leaf {old}"
            ))
        })?;
        let levels: Vec<i16> = grown.iter().map(|(id, _)| id.level as i16).collect();
        let indexes: Vec<i64> = grown.iter().map(|(id, _)| id.index as i64).collect();
        let hashes: Vec<&[u8]> = grown.iter().map(|(_, hash)| hash.as_slice()).collect();
        client
            .execute(
                "INSERT INTO audit_tree_node (organization_id, level, node_index, hash) \
                 SELECT $1, * FROM unnest($2::smallint[], $3::bigint[], $4::bytea[]) \
                 ON CONFLICT DO NOTHING",
                &[&organization_id, &levels, &indexes, &hashes],
            )
            .await?;
        stored = upto;
    }
    Ok(())
}

/// The tree hash of the organization's links 1..=`size` (stored already).
pub async fn root(
    client: &impl GenericClient,
    organization_id: &str,
    size: i64,
) -> Result<Hash, DbError> {
    let hashes = range_hashes(client, organization_id, &[(0, size as u64)]).await?;
    Ok(hashes[0])
}
