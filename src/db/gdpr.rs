//! Queries of the GDPR operations: `pseudonym_mapping`, `gdpr_operations`,
//! and the batched changes to a subject's events. Every statement is scoped to
//! one organization; a subject is named by the commitment of its identifier,
//! which its events carry whether pseudonymized or not.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::Json;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;
use uuid::Uuid;

use super::DbError;

/// A subject's pseudonym.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub pseudonym_id: String,
    pub strategy: String,
    /// The original identifier, sealed (see `gdpr::pseudonym`).
    pub sealed_original: String,
}

fn mapping(row: &tokio_postgres::Row) -> Mapping {
    Mapping {
        pseudonym_id: row.get("pseudonym_id"),
        strategy: row.get("strategy"),
        sealed_original: row.get("original_id"),
    }
}

/// The subject's mapping, if it has one.
pub async fn mapping_of_subject(
    client: &impl GenericClient,
    organization_id: &str,
    subject_commitment: &str,
) -> Result<Option<Mapping>, DbError> {
    let row = client
        .query_opt(
            "SELECT pseudonym_id, strategy, original_id FROM pseudonym_mapping \
             WHERE organization_id = $1 AND subject_commitment = $2",
            &[&organization_id, &subject_commitment],
        )
        .await?;
    Ok(row.as_ref().map(mapping))
}

pub async fn mapping_of_pseudonym(
    client: &impl GenericClient,
    organization_id: &str,
    pseudonym_id: &str,
) -> Result<Option<Mapping>, DbError> {
    let row = client
        .query_opt(
            "SELECT pseudonym_id, strategy, original_id FROM pseudonym_mapping \
             WHERE organization_id = $1 AND pseudonym_id = $2",
            &[&organization_id, &pseudonym_id],
        )
        .await?;
    Ok(row.as_ref().map(mapping))
}

pub struct NewMapping<'a> {
    pub organization_id: &'a str,
    pub subject_commitment: &'a str,
    pub pseudonym_id: &'a str,
    pub sealed_original: &'a str,
    pub strategy: &'a str,
    pub created_by: &'a str,
}

/// Stores the subject's mapping; when a concurrent request stored one first,
/// returns that one instead (one mapping per subject).
pub async fn insert_mapping(
    client: &impl GenericClient,
    new: &NewMapping<'_>,
) -> Result<Mapping, DbError> {
    let inserted = client
        .query_opt(
            "INSERT INTO pseudonym_mapping (organization_id, subject_commitment, pseudonym_id, original_id, \
               strategy, created_by) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT DO NOTHING RETURNING pseudonym_id, strategy, original_id",
            &[
                &new.organization_id,
                &new.subject_commitment,
                &new.pseudonym_id,
                &new.sealed_original,
                &new.strategy,
                &new.created_by,
            ],
        )
        .await?;
    match inserted {
        Some(row) => Ok(mapping(&row)),
        None => mapping_of_subject(client, new.organization_id, new.subject_commitment)
            .await?
            .ok_or_else(|| {
                DbError::Decode("a pseudonym collided with another subject's".to_owned())
            }),
    }
}

/// A GDPR operation as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Operation {
    pub id: Uuid,
    pub organization_id: String,
    /// export | pseudonymize | erase | reverse | rectification | restriction | objection
    pub kind: String,
    pub pseudonym_id: Option<String>,
    pub strategy: Option<String>,
    /// running | completed | failed
    pub status: String,
    pub requested_by: String,
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// Counts; an export's manifest.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// The audit event recording the operation.
    pub record_event_id: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

const OPERATION_COLUMNS: &str =
    "id, organization_id, kind, pseudonym_id, strategy, status, requested_by, \
    parameters, result, record_event_id, started_at, completed_at";

fn operation(row: &tokio_postgres::Row) -> Operation {
    Operation {
        id: row.get("id"),
        organization_id: row.get("organization_id"),
        kind: row.get("kind"),
        pseudonym_id: row.get("pseudonym_id"),
        strategy: row.get("strategy"),
        status: row.get("status"),
        requested_by: row.get("requested_by"),
        parameters: row.get::<_, Json<Value>>("parameters").0,
        result: row.get::<_, Option<Json<Value>>>("result").map(|Json(v)| v),
        record_event_id: row.get("record_event_id"),
        started_at: row.get("started_at"),
        completed_at: row.get("completed_at"),
    }
}

pub struct NewOperation<'a> {
    pub organization_id: &'a str,
    pub kind: &'a str,
    pub subject_commitment: Option<&'a str>,
    pub pseudonym_id: Option<&'a str>,
    pub strategy: Option<&'a str>,
    pub requested_by: &'a str,
    pub parameters: &'a Value,
    /// Completed at once (a recorded request the worker only records).
    pub completed: bool,
}

pub async fn start_operation(
    client: &impl GenericClient,
    new: &NewOperation<'_>,
) -> Result<Operation, DbError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO gdpr_operations (organization_id, kind, subject_commitment, pseudonym_id, strategy, \
                   requested_by, parameters, status, completed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN 'completed' ELSE 'running' END, \
                   CASE WHEN $8 THEN now() END) RETURNING {OPERATION_COLUMNS}"
            ),
            &[
                &new.organization_id,
                &new.kind,
                &new.subject_commitment,
                &new.pseudonym_id,
                &new.strategy,
                &new.requested_by,
                &Json(new.parameters),
                &new.completed,
            ],
        )
        .await?;
    Ok(operation(&row))
}

/// The subject's unfinished operation of `kind`, if a crash interrupted one:
/// running it again completes it under the same id.
pub async fn unfinished_operation(
    client: &impl GenericClient,
    organization_id: &str,
    kind: &str,
    subject_commitment: &str,
) -> Result<Option<Operation>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {OPERATION_COLUMNS} FROM gdpr_operations WHERE organization_id = $1 AND kind = $2 \
                   AND subject_commitment = $3 AND status = 'running' ORDER BY started_at LIMIT 1"
            ),
            &[&organization_id, &kind, &subject_commitment],
        )
        .await?;
    Ok(row.as_ref().map(operation))
}

/// Links `operation` to the trail event that records it.
pub async fn set_record_event(
    client: &impl GenericClient,
    operation: &Operation,
    event_id: i64,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE gdpr_operations SET record_event_id = $3 WHERE organization_id = $1 AND id = $2",
            &[&operation.organization_id, &operation.id, &event_id],
        )
        .await?;
    Ok(())
}

/// Ends the `started` operation with `status` and its `result`; the
/// operation as stored.
pub async fn finish_operation(
    client: &impl GenericClient,
    started: &Operation,
    status: &str,
    result: &Value,
) -> Result<Operation, DbError> {
    let row = client
        .query_one(
            &format!(
                "UPDATE gdpr_operations SET status = $3, result = $4, completed_at = now() \
                 WHERE organization_id = $1 AND id = $2 RETURNING {OPERATION_COLUMNS}"
            ),
            &[
                &started.organization_id,
                &started.id,
                &status,
                &Json(result),
            ],
        )
        .await?;
    Ok(operation(&row))
}

pub async fn get_operation(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
) -> Result<Option<Operation>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {OPERATION_COLUMNS} FROM gdpr_operations WHERE organization_id = $1 AND id = $2"
            ),
            &[&organization_id, &id],
        )
        .await?;
    Ok(row.as_ref().map(operation))
}

/// The organization's latest operations, newest first.
pub async fn recent_operations(
    client: &impl GenericClient,
    organization_id: &str,
    limit: i64,
) -> Result<Vec<Operation>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {OPERATION_COLUMNS} FROM gdpr_operations WHERE organization_id = $1 \
                 ORDER BY started_at DESC LIMIT $2"
            ),
            &[&organization_id, &limit],
        )
        .await?;
    Ok(rows.iter().map(operation).collect())
}

/// Which identifier of the subject's events a batch replaces.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Principal,
    Target,
}

/// One batch of a walk through the subject's events in id order.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// The last event id the batch looked at; `None` when none was left.
    pub last_id: Option<i64>,
    /// Events it changed (or deleted).
    pub changed: u64,
}

/// Replaces the subject's identifier (as principal, or as target) by
/// `pseudonym` in the next `limit` of the subject's events after `after_id`.
/// Events already carrying it are left as they are, so a re-run after a crash
/// completes what the last committed batch did not.
pub async fn pseudonymize_batch(
    client: &impl GenericClient,
    organization_id: &str,
    subject_commitment: &str,
    pseudonym: &str,
    role: Role,
    after_id: i64,
    limit: i64,
) -> Result<Batch, DbError> {
    // The principal walk also replaces the target where it names the subject
    // too; the target walk takes only other principals' events. An event is
    // counted once.
    let (walked, also, assign) = match role {
        Role::Principal => (
            "principal_commitment = $2",
            "",
            "principal_id = $3, target_resource_id = CASE WHEN e.target_resource_commitment = $2 THEN $3 \
               ELSE e.target_resource_id END",
        ),
        Role::Target => (
            "target_resource_commitment = $2",
            "AND principal_commitment <> $2",
            "target_resource_id = $3",
        ),
    };
    let row = client
        .query_one(
            &format!(
                "WITH batch AS ( \
                   SELECT id, \"timestamp\" FROM audit_log \
                   WHERE organization_id = $1 AND {walked} AND id > $4 {also} \
                   ORDER BY id LIMIT $5), \
                 changed AS ( \
                   UPDATE audit_log e SET {assign} FROM batch b \
                   WHERE e.organization_id = $1 AND e.id = b.id AND e.\"timestamp\" = b.\"timestamp\" \
                     AND (e.principal_id IS DISTINCT FROM (CASE WHEN e.principal_commitment = $2 THEN $3 \
                            ELSE e.principal_id END) \
                       OR e.target_resource_id IS DISTINCT FROM (CASE WHEN e.target_resource_commitment = $2 \
                            THEN $3 ELSE e.target_resource_id END)) \
                   RETURNING 1) \
                 SELECT (SELECT max(id) FROM batch), (SELECT count(*) FROM changed)"
            ),
            &[&organization_id, &subject_commitment, &pseudonym, &after_id, &limit],
        )
        .await?;
    Ok(Batch {
        last_id: row.get(0),
        changed: row.get::<_, i64>(1) as u64,
    })
}

/// What erasure keeps: events whose action matches one of `actions` (SQL
/// `LIKE` patterns) or whose classification is in `classifications`, and
/// events inside a legal hold's time range (`hold_starts`/`hold_ends`, NULL
/// for an open end).
pub struct Preserved<'a> {
    pub actions: &'a [String],
    pub classifications: &'a [String],
    pub hold_starts: &'a [Option<DateTime<Utc>>],
    pub hold_ends: &'a [Option<DateTime<Utc>>],
}

const PRESERVED: &str =
    "(e.action LIKE ANY($3::text[]) OR e.data_classification = ANY($4::text[]) \
    OR EXISTS (SELECT 1 FROM unnest($5::timestamptz[], $6::timestamptz[]) AS h(s, t) \
      WHERE (h.s IS NULL OR e.\"timestamp\" >= h.s) AND (h.t IS NULL OR e.\"timestamp\" <= h.t)))";

/// Deletes, of the next `limit` of the subject's own events (as principal)
/// after `after_id`, those not preserved, keeping each one's chain leaf under
/// the operation.
pub async fn erase_batch(
    client: &impl GenericClient,
    organization_id: &str,
    subject_commitment: &str,
    preserved: &Preserved<'_>,
    operation_id: Uuid,
    after_id: i64,
    limit: i64,
) -> Result<Batch, DbError> {
    let row = client
        .query_one(
            &format!(
                "WITH batch AS ( \
                   SELECT e.id, e.\"timestamp\", e.chain_link, e.hash, {PRESERVED} AS kept FROM audit_log e \
                   WHERE e.organization_id = $1 AND e.principal_commitment = $2 AND e.id > $9 \
                   ORDER BY e.id LIMIT $7 FOR UPDATE OF e), \
                 doomed AS (SELECT * FROM batch WHERE NOT kept), \
                 leaves AS ( \
                   INSERT INTO audit_pruned_leaf (organization_id, chain_link, event_id, event_timestamp, hash, \
                     operation_id, operation_kind) \
                   SELECT $1, chain_link, id, \"timestamp\", hash, $8, 'gdpr_erasure' FROM doomed), \
                 gone AS ( \
                   DELETE FROM audit_log e USING doomed d \
                   WHERE e.organization_id = $1 AND e.id = d.id AND e.\"timestamp\" = d.\"timestamp\" RETURNING 1) \
                 SELECT (SELECT max(id) FROM batch), (SELECT count(*) FROM gone)"
            ),
            &[
                &organization_id,
                &subject_commitment,
                &preserved.actions,
                &preserved.classifications,
                &preserved.hold_starts,
                &preserved.hold_ends,
                &limit,
                &operation_id,
                &after_id,
            ],
        )
        .await?;
    Ok(Batch {
        last_id: row.get(0),
        changed: row.get::<_, i64>(1) as u64,
    })
}

/// Which of these events (action, classification, time), read from an
/// archive, erasure keeps: the same test as for live events, by PostgreSQL.
pub async fn preserved_among(
    client: &impl GenericClient,
    events: &[(&str, &str, DateTime<Utc>)],
    preserved: &Preserved<'_>,
) -> Result<Vec<bool>, DbError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let actions: Vec<&str> = events.iter().map(|event| event.0).collect();
    let classifications: Vec<&str> = events.iter().map(|event| event.1).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|event| event.2).collect();
    let rows = client
        .query(
            &format!(
                "SELECT {PRESERVED} FROM unnest($1::text[], $2::text[], $7::timestamptz[]) \
                   WITH ORDINALITY AS e(action, data_classification, \"timestamp\", n) ORDER BY n"
            ),
            &[
                &actions,
                &classifications,
                &preserved.actions,
                &preserved.classifications,
                &preserved.hold_starts,
                &preserved.hold_ends,
                &times,
            ],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The subject's own events erasure keeps.
pub async fn count_preserved(
    client: &impl GenericClient,
    organization_id: &str,
    subject_commitment: &str,
    preserved: &Preserved<'_>,
) -> Result<u64, DbError> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FROM audit_log e WHERE e.organization_id = $1 AND e.principal_commitment = $2 \
                   AND {PRESERVED}"
            ),
            &[
                &organization_id,
                &subject_commitment,
                &preserved.actions,
                &preserved.classifications,
                &preserved.hold_starts,
                &preserved.hold_ends,
            ],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Events erased by the operation so far (its kept leaves).
pub async fn count_erased(
    client: &impl GenericClient,
    organization_id: &str,
    operation_id: Uuid,
) -> Result<u64, DbError> {
    let row = client
        .query_one(
            "SELECT count(*) FROM audit_pruned_leaf WHERE organization_id = $1 AND operation_id = $2",
            &[&organization_id, &operation_id],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// For verification: per subject commitment, the pseudonyms recorded
/// operations gave it. An operation counts only when the audit event it names
/// says so (in the chain, its details naming the operation, the subject's
/// commitment and the pseudonym): a row added to `gdpr_operations` by hand
/// covers nothing.
pub async fn recorded_pseudonyms(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Vec<(String, String)>, DbError> {
    let rows = client
        .query(
            "SELECT o.subject_commitment, o.pseudonym_id FROM gdpr_operations o \
             JOIN audit_log e ON e.organization_id = o.organization_id AND e.id = o.record_event_id \
             WHERE o.organization_id = $1 AND o.kind IN ('pseudonymize', 'erase') \
               AND e.action IN ('gdpr.data.pseudonymize', 'gdpr.data.delete') \
               AND e.details->>'operation_id' = o.id::text \
               AND e.details->>'subject_commitment' = o.subject_commitment \
               AND e.details->>'pseudonym_id' = o.pseudonym_id",
            &[&organization_id],
        )
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}
