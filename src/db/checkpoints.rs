//! Queries on `integrity_checkpoints`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::locks::{self, Round};
use super::{tree, witnesses, DbError};
use crate::integrity::checkpoint::{self, CheckpointStatement, SignedCheckpoint};
use crate::integrity::keys::IntegrityKeys;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredCheckpoint {
    pub id: i64,
    pub organization_id: String,
    pub seq: i64,
    pub link: String,
    pub event_total: i64,
    pub signed_at: DateTime<Utc>,
    pub key_id: String,
    /// Hex root of the link tree over links 1..=`seq`; null for checkpoints
    /// signed before format version 2.
    pub tree_root: Option<String>,
    /// What to keep outside, and pass back to `verify`.
    pub checkpoint: SignedCheckpoint,
}

/// [`create`] for every organization, unless another instance is signing
/// (`None`): checkpoints are signed by one instance at a time.
pub async fn create_unless_signing(
    client: &impl GenericClient,
    keys: &IntegrityKeys,
) -> Result<Option<usize>, DbError> {
    if !locks::try_lock(client, Round::Checkpoints).await? {
        return Ok(None);
    }
    let signed = create(client, keys, None).await;
    locks::unlock(client, Round::Checkpoints).await?;
    Ok(Some(signed?))
}

/// The chain heads with links no checkpoint has signed yet.
const UNSIGNED_HEADS: &str = "SELECT h.organization_id, h.seq, h.link, h.event_total \
    FROM audit_chain_head h \
    WHERE h.seq > coalesce((SELECT max(seq) FROM integrity_checkpoints c \
                            WHERE c.organization_id = h.organization_id), 0)";

/// Signs and stores a checkpoint of each organization's chain that grew since
/// its last checkpoint (`organization_id`: only that one). Returns how many.
/// First grows the organization's link tree to the head, which also builds
/// it for chains written before the tree existed, and signs its root.
pub async fn create(
    client: &impl GenericClient,
    keys: &IntegrityKeys,
    organization_id: Option<&str>,
) -> Result<usize, DbError> {
    // One organization's head names it, so that a distributed database reads
    // it on that organization's node; every organization's is read everywhere.
    let heads = match organization_id {
        Some(organization_id) => {
            let sql = format!("{UNSIGNED_HEADS} AND h.organization_id = $1");
            client.query(&sql, &[&organization_id]).await?
        }
        None => client.query(UNSIGNED_HEADS, &[]).await?,
    };
    let now = Utc::now();
    for head in &heads {
        let (organization_id, seq): (String, i64) = (head.get("organization_id"), head.get("seq"));
        tree::grow(client, &organization_id, seq).await?;
        let tree_root = hex::encode(tree::root(client, &organization_id, seq).await?);
        let statement = CheckpointStatement {
            organization_id,
            seq,
            link: head.get("link"),
            event_total: head.get("event_total"),
            signed_at: now.to_rfc3339(),
            key_id: keys.key_id(),
            tree_root: Some(tree_root),
            tree_size: Some(seq),
        };
        let signed = checkpoint::sign(keys, &statement);
        client
            .execute(
                "INSERT INTO integrity_checkpoints \
                   (organization_id, seq, link, event_total, signed_at, payload, signature, key_id, tree_root) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (organization_id, seq) DO NOTHING",
                &[
                    &statement.organization_id,
                    &statement.seq,
                    &statement.link,
                    &statement.event_total,
                    &now,
                    &signed.payload,
                    &signed.signature,
                    &statement.key_id,
                    &statement.tree_root,
                ],
            )
            .await?;
        witnesses::enqueue_checkpoint(client, &statement.organization_id, statement.seq).await?;
    }
    Ok(heads.len())
}

const CHECKPOINT_COLUMNS: &str =
    "id, organization_id, seq, link, event_total, signed_at, key_id, tree_root, payload, signature";

fn stored(row: &tokio_postgres::Row) -> StoredCheckpoint {
    StoredCheckpoint {
        id: row.get("id"),
        organization_id: row.get("organization_id"),
        seq: row.get("seq"),
        link: row.get("link"),
        event_total: row.get("event_total"),
        signed_at: row.get("signed_at"),
        key_id: row.get("key_id"),
        tree_root: row.get("tree_root"),
        checkpoint: SignedCheckpoint {
            payload: row.get("payload"),
            signature: row.get("signature"),
        },
    }
}

/// The organization's checkpoints, newest first.
pub async fn list(
    client: &impl GenericClient,
    organization_id: &str,
    limit: i64,
) -> Result<Vec<StoredCheckpoint>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM integrity_checkpoints WHERE organization_id = $1 \
                 ORDER BY id DESC LIMIT $2"
            ),
            &[&organization_id, &limit],
        )
        .await?;
    Ok(rows.iter().map(stored).collect())
}

/// The organization's checkpoint of link `seq`, the last signed if several are.
pub async fn get(
    client: &impl GenericClient,
    organization_id: &str,
    seq: i64,
) -> Result<Option<StoredCheckpoint>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM integrity_checkpoints \
                 WHERE organization_id = $1 AND seq = $2 ORDER BY id DESC LIMIT 1"
            ),
            &[&organization_id, &seq],
        )
        .await?;
    Ok(row.as_ref().map(stored))
}
