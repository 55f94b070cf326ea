//! `archive_storage`: the list of archives (with the bytes of those kept in
//! PostgreSQL), moving events between it and the live `audit_log`, and each
//! organization's digest head.

use chrono::{DateTime, Utc};
use futures_util::{Stream, TryStreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::GenericClient;
use utoipa::ToSchema;
use uuid::Uuid;

use super::DbError;

/// An archive as listed (its bytes are fetched separately).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Archive {
    pub id: Uuid,
    pub organization_id: String,
    /// Where its bytes are: `postgres` (this table), `s3` or `directory`.
    pub store: String,
    /// The Parquet file's key in the bucket or directory (object stores).
    pub object_key: Option<String>,
    pub event_count: i32,
    pub first_event_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub first_link: i64,
    pub last_link: i64,
    /// Format, compression, SHA-256 of both forms, sizes, policy, chain links.
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub retrieved_count: i32,
    pub last_retrieved_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, organization_id, store, object_key, event_count, first_event_at, last_event_at, first_link, last_link, \
    metadata, created_at, retrieved_count, last_retrieved_at";

fn archive(row: &tokio_postgres::Row) -> Archive {
    Archive {
        id: row.get("id"),
        organization_id: row.get("organization_id"),
        store: row.get("store"),
        object_key: row.get("object_key"),
        event_count: row.get("event_count"),
        first_event_at: row.get("first_event_at"),
        last_event_at: row.get("last_event_at"),
        first_link: row.get("first_link"),
        last_link: row.get("last_link"),
        metadata: row.get::<_, Json<Value>>("metadata").0,
        created_at: row.get("created_at"),
        retrieved_count: row.get("retrieved_count"),
        last_retrieved_at: row.get("last_retrieved_at"),
    }
}

/// The organization's archives, newest first.
pub async fn list(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Vec<Archive>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM archive_storage WHERE organization_id = $1 \
                 ORDER BY first_event_at DESC, id"
            ),
            &[&organization_id],
        )
        .await?;
    Ok(rows.iter().map(archive).collect())
}

/// Every archive, of all organizations (operator listing), newest first.
pub async fn list_all(client: &impl GenericClient) -> Result<Vec<Archive>, DbError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM archive_storage ORDER BY created_at DESC, id"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(archive).collect())
}

/// An archive; `organization_id` None for the operator.
///
/// Two statements rather than one `($1 IS NULL OR organization_id = $1)`:
/// a tenant's lookup names its organization as a plain conjunct, so a
/// distributed database routes it to that organization's shard; only the
/// operator's lookup by id alone runs across organizations.
pub async fn get(
    client: &impl GenericClient,
    organization_id: Option<&str>,
    id: Uuid,
) -> Result<Option<Archive>, DbError> {
    let row = match organization_id {
        Some(organization_id) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM archive_storage WHERE organization_id = $1 AND id = $2"
            );
            client.query_opt(&sql, &[&organization_id, &id]).await?
        }
        None => {
            let sql = format!("SELECT {COLUMNS} FROM archive_storage WHERE id = $1");
            client.query_opt(&sql, &[&id]).await?
        }
    };
    Ok(row.as_ref().map(archive))
}

/// The compressed bytes of an archive of the `postgres` store.
pub async fn data(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
) -> Result<Option<Vec<u8>>, DbError> {
    let row = client
        .query_opt(
            "SELECT data FROM archive_storage WHERE organization_id = $1 AND id = $2",
            &[&organization_id, &id],
        )
        .await?;
    Ok(row.and_then(|row| row.get("data")))
}

/// The organization's archives that may hold events of the subject of
/// `commitment` (as principal or target), oldest first (by first event
/// time, then first event id).
pub async fn holding_subject(
    client: &impl GenericClient,
    organization_id: &str,
    commitment: &str,
) -> Result<Vec<Archive>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM archive_storage WHERE organization_id = $1 \
                   AND (subject_commitments IS NULL OR subject_commitments @> ARRAY[$2::text]) \
                 ORDER BY first_event_at, (metadata->>'first_event_id')::bigint, id"
            ),
            &[&organization_id, &commitment],
        )
        .await?;
    Ok(rows.iter().map(archive).collect())
}

/// Counts a retrieval of the archive.
pub async fn mark_retrieved(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE archive_storage SET retrieved_count = retrieved_count + 1, last_retrieved_at = now() \
             WHERE organization_id = $1 AND id = $2",
            &[&organization_id, &id],
        )
        .await?;
    Ok(())
}

/// The organization's archives holding events of chain links `first..=last`
/// (their bytes are read one archive at a time).
pub async fn covering_links(
    client: &impl GenericClient,
    organization_id: &str,
    first: i64,
    last: i64,
) -> Result<Vec<Archive>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM archive_storage \
                 WHERE organization_id = $1 AND first_link <= $3 AND last_link >= $2 ORDER BY first_link"
            ),
            &[&organization_id, &first, &last],
        )
        .await?;
    Ok(rows.iter().map(archive).collect())
}

/// The (retention_policy, data_classification) pairs among the organization's
/// live events older than `before`.
pub async fn policy_pairs(
    client: &impl GenericClient,
    organization_id: &str,
    before: DateTime<Utc>,
) -> Result<Vec<(String, String)>, DbError> {
    let rows = client
        .query(
            "SELECT DISTINCT retention_policy, data_classification FROM audit_log \
             WHERE organization_id = $1 AND \"timestamp\" < $2",
            &[&organization_id, &before],
        )
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Which of the organization's live events an archival (or a deletion) of
/// one policy pair takes: `$1` organization, `$2` policy, `$3`
/// classification, `$4` older than this; none under an active legal hold
/// (both its bounds inclusive: at the edge, a hold errs on the side of
/// keeping), and none that records a GDPR operation: verification reads the
/// pseudonyms it accepts from those events, live.
pub(crate) const DUE: &str =
    "e.organization_id = $1 AND e.retention_policy = $2 AND e.data_classification = $3 \
    AND e.\"timestamp\" < $4 \
    AND NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.organization_id = e.organization_id \
      AND h.released_at IS NULL AND (h.principal_id IS NULL OR h.principal_id = e.principal_id) \
      AND (h.starts_at IS NULL OR e.\"timestamp\" >= h.starts_at) \
      AND (h.ends_at IS NULL OR e.\"timestamp\" <= h.ends_at)) \
    AND NOT EXISTS (SELECT 1 FROM gdpr_operations o WHERE o.organization_id = e.organization_id \
      AND o.record_event_id = e.id)";

/// How many events an archival of this policy pair would take now.
pub async fn count_due(
    client: &impl GenericClient,
    organization_id: &str,
    (policy, classification): (&str, &str),
    before: DateTime<Utc>,
) -> Result<i64, DbError> {
    Ok(client
        .query_one(
            &format!("SELECT count(*) FROM audit_log e WHERE {DUE}"),
            &[&organization_id, &policy, &classification, &before],
        )
        .await?
        .get(0))
}

/// Whether any event of this policy pair is due (for archival or deletion).
pub async fn any_due(
    client: &impl GenericClient,
    organization_id: &str,
    (policy, classification): (&str, &str),
    before: DateTime<Utc>,
) -> Result<bool, DbError> {
    Ok(client
        .query_one(
            &format!("SELECT EXISTS (SELECT 1 FROM audit_log e WHERE {DUE})"),
            &[&organization_id, &policy, &classification, &before],
        )
        .await?
        .get(0))
}

/// Up to `limit` of the events an archival of this policy pair takes, oldest
/// id first, locked until the transaction ends: each as JSON (every column,
/// `archived_at` set) and its id, streamed as PostgreSQL sends them.
pub async fn select_batch(
    client: &impl GenericClient,
    organization_id: &str,
    (policy, classification): (&str, &str),
    before: DateTime<Utc>,
    archived_at: DateTime<Utc>,
    limit: i64,
) -> Result<impl Stream<Item = Result<(String, i64), DbError>>, DbError> {
    let parameters: [&(dyn ToSql + Sync); 6] = [
        &organization_id,
        &policy,
        &classification,
        &before,
        &archived_at,
        &limit,
    ];
    let rows = client
        .query_raw(
            &format!(
                "SELECT (to_jsonb(e) || jsonb_build_object('archived_at', $5::timestamptz))::text, e.id \
                 FROM audit_log e WHERE {DUE} ORDER BY e.id LIMIT $6 FOR UPDATE OF e"
            ),
            parameters,
        )
        .await?;
    Ok(rows
        .map_ok(|row| (row.get(0), row.get(1)))
        .map_err(DbError::from))
}

/// The chain links `ids` of the organization, as archive metadata keeps them.
pub async fn links(
    client: &impl GenericClient,
    organization_id: &str,
    ids: &[i64],
) -> Result<Value, DbError> {
    let row = client
        .query_one(
            "SELECT coalesce(jsonb_agg(jsonb_build_object('link_id', link_id, 'seq', seq, \
               'event_count', event_count, 'first_event_id', first_event_id, 'last_event_id', last_event_id, \
               'merkle_root', merkle_root, 'prev_link', prev_link, 'link', link) ORDER BY seq), '[]') \
             FROM audit_chain WHERE organization_id = $1 AND link_id = ANY($2)",
            &[&organization_id, &ids],
        )
        .await?;
    Ok(row.get::<_, Json<Value>>(0).0)
}

/// An archive's row: its bytes (`postgres` store) or its file's key.
pub struct NewArchive<'a> {
    pub id: Uuid,
    pub organization_id: &'a str,
    pub store: &'a str,
    pub metadata: &'a Value,
    pub data: Option<&'a [u8]>,
    pub object_key: Option<&'a str>,
    pub event_count: i32,
    pub first_event_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub first_link: i64,
    pub last_link: i64,
    pub subject_commitments: &'a [String],
}

/// Lists a new archive.
pub async fn insert(client: &impl GenericClient, new: &NewArchive<'_>) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO archive_storage (id, organization_id, store, metadata, data, object_key, event_count, \
               first_event_at, last_event_at, first_link, last_link, subject_commitments) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &new.id,
                &new.organization_id,
                &new.store,
                &Json(new.metadata),
                &new.data,
                &new.object_key,
                &new.event_count,
                &new.first_event_at,
                &new.last_event_at,
                &new.first_link,
                &new.last_link,
                &new.subject_commitments,
            ],
        )
        .await?;
    Ok(())
}

/// Removes archived events from the live table (`first`/`last`: their time
/// span, which spares the other partitions).
pub async fn remove_live(
    client: &impl GenericClient,
    organization_id: &str,
    ids: &[i64],
    (first, last): (DateTime<Utc>, DateTime<Utc>),
) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "DELETE FROM audit_log WHERE organization_id = $1 AND id = ANY($2) \
               AND \"timestamp\" >= $3 AND \"timestamp\" <= $4",
            &[&organization_id, &ids, &first, &last],
        )
        .await?)
}

/// Takes the organization's digest head in `store` until the transaction
/// ends: the last digest's sequence (0 for none) and SHA-256.
pub async fn lock_digest_head(
    client: &impl GenericClient,
    organization_id: &str,
    store: &str,
) -> Result<(i64, Option<String>), DbError> {
    client
        .execute(
            "INSERT INTO archive_digest_head (organization_id, store, sequence) VALUES ($1, $2, 0) \
             ON CONFLICT (organization_id, store) DO NOTHING",
            &[&organization_id, &store],
        )
        .await?;
    let row = client
        .query_one(
            "SELECT sequence, sha256 FROM archive_digest_head WHERE organization_id = $1 AND store = $2 \
             FOR UPDATE",
            &[&organization_id, &store],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

pub async fn set_digest_head(
    client: &impl GenericClient,
    organization_id: &str,
    store: &str,
    (sequence, sha256): (i64, &str),
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE archive_digest_head SET sequence = $3, sha256 = $4, updated_at = now() \
             WHERE organization_id = $1 AND store = $2",
            &[&organization_id, &store, &sequence, &sha256],
        )
        .await?;
    Ok(())
}

/// The organization's last digest in `store`: its sequence (0: none).
pub async fn digest_head(
    client: &impl GenericClient,
    organization_id: &str,
    store: &str,
) -> Result<i64, DbError> {
    let row = client
        .query_opt(
            "SELECT sequence FROM archive_digest_head WHERE organization_id = $1 AND store = $2",
            &[&organization_id, &store],
        )
        .await?;
    Ok(row.map_or(0, |row| row.get(0)))
}

/// Puts archived events (JSON objects of every column) back into `audit_log`
/// with `archived_at` cleared.
pub async fn insert_events(client: &impl GenericClient, lines: &[String]) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "INSERT INTO audit_log SELECT (jsonb_populate_record(NULL::audit_log, \
               line::jsonb || '{\"archived_at\": null}')).* FROM unnest($1::text[]) AS line",
            &[&lines],
        )
        .await?)
}

/// Unlists an archive (restored, replaced or deleted); whether it was listed.
pub async fn delete(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
) -> Result<bool, DbError> {
    Ok(client
        .execute(
            "DELETE FROM archive_storage WHERE organization_id = $1 AND id = $2",
            &[&organization_id, &id],
        )
        .await?
        == 1)
}

/// Records a failed archival batch for the operator (and counts repeats).
pub async fn dead_letter(
    client: &impl GenericClient,
    organization_id: &str,
    job: &str,
    reason: &str,
    metadata: &Value,
) -> Result<(), DbError> {
    let updated = client
        .execute(
            "UPDATE archive_dlq_event SET failure_count = failure_count + 1, last_failure_time = now(), \
               failure_reason = $3, metadata = $4 \
             WHERE organization_id = $1 AND original_job_id = $2 AND action = 'archive'",
            &[&organization_id, &job, &reason, &Json(metadata)],
        )
        .await?;
    if updated == 0 {
        client
            .execute(
                "INSERT INTO archive_dlq_event (organization_id, action, failure_reason, first_failure_time, \
                   last_failure_time, original_job_id, original_queue_name, metadata) \
                 VALUES ($1, 'archive', $3, now(), now(), $2, 'partition-maintenance', $4)",
                &[&organization_id, &job, &reason, &Json(metadata)],
            )
            .await?;
    }
    Ok(())
}

/// Clears the dead letter of a job that now succeeded.
pub async fn clear_dead_letter(
    client: &impl GenericClient,
    organization_id: &str,
    job: &str,
) -> Result<(), DbError> {
    client
        .execute(
            "DELETE FROM archive_dlq_event WHERE organization_id = $1 AND original_job_id = $2 AND action = 'archive'",
            &[&organization_id, &job],
        )
        .await?;
    Ok(())
}

/// Organizations with a chain (every organization that ever stored an event).
pub async fn organizations(client: &impl GenericClient) -> Result<Vec<String>, DbError> {
    let rows = client
        .query(
            "SELECT organization_id FROM audit_chain_head ORDER BY organization_id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
