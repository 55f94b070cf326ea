//! Deletion by retention as recorded operations: the deleted events' chain
//! leaves are kept (`audit_pruned_leaf`), each naming its operation
//! (`retention_operations`), so verification still checks their links.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::archives::{Archive, DUE};
use super::DbError;

/// Deletes up to `limit` of the organization's live events of one policy pair
/// older than `before` and under no active legal hold, keeping their leaves;
/// the operation's id and how many it deleted, `None` when none was due.
pub async fn delete_due_events(
    client: &impl GenericClient,
    organization_id: &str,
    (policy, classification): (&str, &str),
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Option<(Uuid, i64)>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "WITH due AS ( \
                   SELECT e.id, e.\"timestamp\", e.chain_link, e.hash FROM audit_log e WHERE {DUE} \
                   ORDER BY e.id LIMIT $5 FOR UPDATE OF e), \
                 operation AS ( \
                   INSERT INTO retention_operations (organization_id, kind, retention_policy, data_classification, \
                     older_than, event_count) \
                   SELECT $1, 'delete_events', $2, $3, $4, count(*) FROM due HAVING count(*) > 0 RETURNING id), \
                 leaves AS ( \
                   INSERT INTO audit_pruned_leaf (organization_id, chain_link, event_id, event_timestamp, hash, \
                     operation_id) \
                   SELECT $1, d.chain_link, d.id, d.\"timestamp\", d.hash, o.id FROM due d, operation o), \
                 gone AS ( \
                   DELETE FROM audit_log e USING due d \
                   WHERE e.organization_id = $1 AND e.id = d.id AND e.\"timestamp\" = d.\"timestamp\" RETURNING 1) \
                 SELECT o.id, (SELECT count(*) FROM gone) FROM operation o"
            ),
            &[&organization_id, &policy, &classification, &before, &limit],
        )
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// One archived event's leaf.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub chain_link: i64,
    pub event_id: i64,
    pub event_timestamp: DateTime<Utc>,
    pub hash: String,
}

/// The `operation_kind` of leaves kept by a GDPR erasure.
pub const ERASURE: &str = "gdpr_erasure";
/// The `operation_kind` of leaves kept by retention.
const RETENTION: &str = "retention";

/// Deletes an archive's row, keeping its events' leaves; the operation's id
/// (`None`: it was deleted already).
pub async fn delete_archive(
    client: &impl GenericClient,
    archive: &Archive,
    older_than: DateTime<Utc>,
    leaves: &[Leaf],
) -> Result<Option<Uuid>, DbError> {
    let recorded = |key: &str| {
        archive.metadata[key]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let deleted = client
        .execute(
            "DELETE FROM archive_storage WHERE organization_id = $1 AND id = $2",
            &[&archive.organization_id, &archive.id],
        )
        .await?;
    if deleted == 0 {
        return Ok(None);
    }
    let operation: Uuid = client
        .query_one(
            "INSERT INTO retention_operations (organization_id, kind, retention_policy, data_classification, \
               older_than, event_count, archive_id) VALUES ($1, 'delete_archive', $2, $3, $4, $5, $6) RETURNING id",
            &[
                &archive.organization_id,
                &recorded("retention_policy"),
                &recorded("data_classification"),
                &older_than,
                &archive.event_count,
                &archive.id,
            ],
        )
        .await?
        .get(0);
    keep_leaves(
        client,
        &archive.organization_id,
        leaves,
        operation,
        RETENTION,
    )
    .await?;
    Ok(Some(operation))
}

/// Keeps the leaves of events an operation removed from an archive.
pub async fn keep_leaves(
    client: &impl GenericClient,
    organization_id: &str,
    leaves: &[Leaf],
    operation: Uuid,
    operation_kind: &str,
) -> Result<(), DbError> {
    let links: Vec<i64> = leaves.iter().map(|leaf| leaf.chain_link).collect();
    let ids: Vec<i64> = leaves.iter().map(|leaf| leaf.event_id).collect();
    let times: Vec<DateTime<Utc>> = leaves.iter().map(|leaf| leaf.event_timestamp).collect();
    let hashes: Vec<&str> = leaves.iter().map(|leaf| leaf.hash.as_str()).collect();
    client
        .execute(
            "INSERT INTO audit_pruned_leaf (organization_id, chain_link, event_id, event_timestamp, hash, \
               operation_id, operation_kind) \
             SELECT $1, l, i, t, h, $6, $7 FROM unnest($2::int8[], $3::int8[], $4::timestamptz[], $5::text[]) \
               AS u(l, i, t, h)",
            &[&organization_id, &links, &ids, &times, &hashes, &operation, &operation_kind],
        )
        .await?;
    Ok(())
}
