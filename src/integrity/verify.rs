//! Verification: recomputes every event hash, the identifier commitments, each
//! link's Merkle root and the links themselves, and reports what no longer
//! matches — a modified, missing, inserted or reordered event, a broken link,
//! or (against a checkpoint kept outside) a truncated chain.
//!
//! It streams: chain rows and events are read in chain order side by side, so
//! memory stays constant whatever the size of the chain.

use std::pin::pin;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{GenericClient, Row};
use utoipa::ToSchema;

use super::canonical::{self, HashedFields};
use super::chain;
use super::checkpoint::{self, CheckpointError, SignedCheckpoint};
use super::keys::IntegrityKeys;
use crate::db::{DbError, PgPool};

/// At most this many problems are listed (all are counted).
const MAX_LISTED_PROBLEMS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    Modified,
    Missing,
    Inserted,
    Reordered,
    Truncated,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The event concerned, when one can be named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<i64>,
    /// The chain link concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Report {
    /// Events whose hash was recomputed.
    pub checked: u64,
    /// Chain links whose hash was recomputed (always the whole chain).
    pub links_checked: u64,
    pub valid: bool,
    /// Number of problems; `problems` lists the first 1000.
    pub problem_count: u64,
    pub problems: Vec<Problem>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the checkpoint is for organization `{0}`, not this one")]
    CheckpointOfAnotherOrganization(String),
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<tokio_postgres::Error> for VerifyError {
    fn from(error: tokio_postgres::Error) -> Self {
        VerifyError::Database(error.into())
    }
}

impl From<bb8::RunError<tokio_postgres::Error>> for VerifyError {
    fn from(error: bb8::RunError<tokio_postgres::Error>) -> Self {
        VerifyError::Database(error.into())
    }
}

/// What to verify.
pub struct Scope<'a> {
    pub organization_id: &'a str,
    /// Events from this time (inclusive); `None` from the beginning.
    pub from: Option<DateTime<Utc>>,
    /// Events before this time; `None` to the end.
    pub to: Option<DateTime<Utc>>,
    pub checkpoint: Option<&'a SignedCheckpoint>,
}

struct Findings {
    problems: Vec<Problem>,
    count: u64,
}

impl Findings {
    fn add(&mut self, kind: ProblemKind, event_id: Option<i64>, seq: Option<i64>, message: String) {
        self.count += 1;
        if self.problems.len() < MAX_LISTED_PROBLEMS {
            self.problems.push(Problem {
                kind,
                event_id,
                seq,
                message,
            });
        }
    }
}

/// A chain row as read for verification.
struct Link {
    seq: i64,
    event_count: i64,
    first_event_id: i64,
    last_event_id: i64,
    merkle_root: String,
    prev_link: String,
    link: String,
}

impl Link {
    fn from_row(row: &Row) -> Self {
        Link {
            seq: row.get("seq"),
            event_count: i64::from(row.get::<_, i32>("event_count")),
            first_event_id: row.get("first_event_id"),
            last_event_id: row.get("last_event_id"),
            merkle_root: row.get("merkle_root"),
            prev_link: row.get("prev_link"),
            link: row.get("link"),
        }
    }
}

pub async fn verify(
    pool: &PgPool,
    keys: &IntegrityKeys,
    scope: &Scope<'_>,
) -> Result<Report, VerifyError> {
    let org = scope.organization_id;
    let mut findings = Findings {
        problems: Vec::new(),
        count: 0,
    };
    let statement = match scope.checkpoint {
        Some(signed) => {
            let statement = checkpoint::open(&keys.verifying_key(), signed)?;
            if statement.organization_id != org {
                return Err(VerifyError::CheckpointOfAnotherOrganization(
                    statement.organization_id,
                ));
            }
            Some(statement)
        }
        None => None,
    };

    let links_client = pool.get().await?;
    let events_client = pool.get().await?;

    // The links whose events fall in the requested time range, and where those
    // events lie in time (to read only the partitions they need).
    let bounds = links_client
        .query_one(
            "SELECT min(seq), max(seq), min(min_timestamp), max(max_timestamp) FROM audit_chain \
             WHERE organization_id = $1 AND ($2::timestamptz IS NULL OR max_timestamp >= $2) \
               AND ($3::timestamptz IS NULL OR min_timestamp < $3)",
            &[&org, &scope.from, &scope.to],
        )
        .await?;
    let range: Option<(i64, i64, DateTime<Utc>, DateTime<Utc>)> =
        match (bounds.get(0), bounds.get(1), bounds.get(2), bounds.get(3)) {
            (Some(lo), Some(hi), Some(t0), Some(t1)) => Some((lo, hi, t0, t1)),
            _ => None,
        };

    let links = links_client
        .query_raw(
            "SELECT seq, event_count, first_event_id, last_event_id, merkle_root, prev_link, link \
             FROM audit_chain WHERE organization_id = $1 ORDER BY seq",
            [&org as &(dyn ToSql + Sync)],
        )
        .await?;
    let mut links = pin!(links);
    let (lo, hi, t0, t1) = range.unwrap_or((1, 0, DateTime::UNIX_EPOCH, DateTime::UNIX_EPOCH));
    let events = events_client
        .query_raw(
            "SELECT id, \"timestamp\", ttl, principal_id, organization_id, action, target_resource_type, \
               target_resource_id, status, outcome_description, hash, hash_algorithm, event_version, correlation_id, \
               data_classification, retention_policy, details, idempotency_key, principal_commitment, \
               target_resource_commitment, chain_seq \
             FROM audit_log WHERE organization_id = $1 AND chain_seq BETWEEN $2 AND $3 \
               AND \"timestamp\" >= $4 AND \"timestamp\" <= $5 \
             ORDER BY chain_seq, id",
            [&org as &(dyn ToSql + Sync), &lo, &hi, &t0, &t1],
        )
        .await?;
    let mut events = pin!(events);
    let mut next_event: Option<Row> = events.try_next().await?;

    let mut checked = 0u64;
    let mut links_checked = 0u64;
    let mut previous = chain::GENESIS;
    let mut expected_seq = 1i64;
    let mut last: Option<(i64, String)> = None;
    while let Some(row) = links.try_next().await? {
        let link = Link::from_row(&row);
        links_checked += 1;
        if link.seq != expected_seq {
            findings.add(
                ProblemKind::Missing,
                None,
                Some(expected_seq),
                format!("chain links {expected_seq} to {} are missing", link.seq - 1),
            );
        }
        check_link(&link, &previous, &mut findings);
        previous = chain::parse_hash(&link.link).unwrap_or(chain::GENESIS);
        expected_seq = link.seq + 1;

        if (lo..=hi).contains(&link.seq) {
            // Events whose link precedes this one but which no link row claimed.
            while let Some(event) = next_event
                .as_ref()
                .filter(|e| e.get::<_, i64>("chain_seq") < link.seq)
            {
                findings.add(
                    ProblemKind::Inserted,
                    Some(event.get("id")),
                    Some(event.get("chain_seq")),
                    "the event belongs to no chain link".to_owned(),
                );
                checked += 1;
                next_event = events.try_next().await?;
            }
            let mut members = Vec::new();
            while let Some(event) = next_event.take_if(|e| e.get::<_, i64>("chain_seq") == link.seq)
            {
                members.push(event);
                next_event = events.try_next().await?;
            }
            checked += members.len() as u64;
            check_members(&link, &members, keys, org, &mut findings);
        }
        last = Some((link.seq, link.link));
    }
    while let Some(event) = next_event {
        findings.add(
            ProblemKind::Inserted,
            Some(event.get("id")),
            Some(event.get("chain_seq")),
            "the event belongs to no chain link".to_owned(),
        );
        checked += 1;
        next_event = events.try_next().await?;
    }
    // Events in the range that claim a link outside the links just walked, and
    // that no link row backs.
    let strays = events_client
        .query(
            "SELECT id, chain_seq FROM audit_log e WHERE organization_id = $1 \
               AND ($2::timestamptz IS NULL OR \"timestamp\" >= $2) AND ($3::timestamptz IS NULL OR \"timestamp\" < $3) \
               AND (chain_seq < $4 OR chain_seq > $5) \
               AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.organization_id = $1 AND c.seq = e.chain_seq) \
             ORDER BY id",
            &[&org, &scope.from, &scope.to, &lo, &hi],
        )
        .await?;
    for row in strays {
        findings.add(
            ProblemKind::Inserted,
            Some(row.get(0)),
            Some(row.get(1)),
            "the event belongs to no chain link".to_owned(),
        );
        checked += 1;
    }

    check_tail(
        &*links_client,
        org,
        last.as_ref(),
        statement.as_ref(),
        &mut findings,
    )
    .await?;

    Ok(Report {
        checked,
        links_checked,
        valid: findings.count == 0,
        problem_count: findings.count,
        problems: findings.problems,
    })
}

fn check_link(link: &Link, previous: &[u8; 32], findings: &mut Findings) {
    let seq = Some(link.seq);
    let parsed = (
        chain::parse_hash(&link.prev_link),
        chain::parse_hash(&link.merkle_root),
        chain::parse_hash(&link.link),
    );
    let (Some(prev), Some(root), Some(stored)) = parsed else {
        findings.add(
            ProblemKind::Modified,
            None,
            seq,
            "the chain link holds a malformed hash".to_owned(),
        );
        return;
    };
    if prev != *previous {
        findings.add(
            ProblemKind::Modified,
            None,
            seq,
            "the link does not point to the previous link".to_owned(),
        );
    }
    let count = u32::try_from(link.event_count).unwrap_or(0);
    if chain::link(&prev, link.seq, count, &root) != stored {
        findings.add(
            ProblemKind::Modified,
            None,
            seq,
            "the link's hash does not match its content".to_owned(),
        );
    }
}

/// Compares one link with the events that claim it.
fn check_members(
    link: &Link,
    members: &[Row],
    keys: &IntegrityKeys,
    org: &str,
    findings: &mut Findings,
) {
    let seq = Some(link.seq);
    let mut leaves = Vec::with_capacity(members.len());
    let mut modified = false;
    for event in members {
        let id: i64 = event.get("id");
        let recomputed = recompute_hash(event);
        let stored: String = event.get("hash");
        if hex::encode(recomputed) != stored {
            modified = true;
            findings.add(
                ProblemKind::Modified,
                Some(id),
                seq,
                "the event's content no longer matches its hash".to_owned(),
            );
        } else if let Some(field) = identifier_mismatch(event, keys, org) {
            modified = true;
            findings.add(
                ProblemKind::Modified,
                Some(id),
                seq,
                format!("`{field}` no longer matches its commitment, and no recorded operation changed it"),
            );
        }
        if id < link.first_event_id || id > link.last_event_id {
            findings.add(
                ProblemKind::Inserted,
                Some(id),
                seq,
                format!(
                    "the event's id lies outside its link ({} to {})",
                    link.first_event_id, link.last_event_id
                ),
            );
        }
        leaves.push(recomputed);
    }
    let found = members.len() as i64;
    if found < link.event_count {
        findings.add(
            ProblemKind::Missing,
            None,
            seq,
            format!(
                "{} of the link's {} events are missing (ids {} to {})",
                link.event_count - found,
                link.event_count,
                link.first_event_id,
                link.last_event_id
            ),
        );
    } else if found > link.event_count {
        findings.add(
            ProblemKind::Inserted,
            None,
            seq,
            format!(
                "the link holds {} events but {found} claim it",
                link.event_count
            ),
        );
    } else if !modified && Some(chain::merkle_root(&leaves)) != chain::parse_hash(&link.merkle_root)
    {
        // Every event is intact and the count is right: their order (ids) changed.
        findings.add(
            ProblemKind::Reordered,
            members.first().map(|e| e.get("id")),
            seq,
            "the link's events are intact but no longer in their recorded order".to_owned(),
        );
    }
}

fn recompute_hash(event: &Row) -> [u8; 32] {
    let details: Option<Json<serde_json::Value>> = event.get("details");
    let fields = HashedFields {
        organization_id: event.get("organization_id"),
        timestamp: event.get("timestamp"),
        ttl: event.get("ttl"),
        principal_commitment: event.get("principal_commitment"),
        action: event.get("action"),
        target_resource_type: event.get("target_resource_type"),
        target_resource_commitment: event.get("target_resource_commitment"),
        status: event.get("status"),
        outcome_description: event.get("outcome_description"),
        hash_algorithm: event.get("hash_algorithm"),
        event_version: event.get("event_version"),
        correlation_id: event.get("correlation_id"),
        data_classification: event.get("data_classification"),
        retention_policy: event.get("retention_policy"),
        idempotency_key: event.get("idempotency_key"),
        details: details.as_ref().map(|Json(value)| value),
    };
    canonical::event_hash(&fields)
}

/// The identifier field whose value no longer matches its commitment, if any.
fn identifier_mismatch(event: &Row, keys: &IntegrityKeys, org: &str) -> Option<&'static str> {
    let key = keys.commitment_key();
    let principal: &str = event.get("principal_id");
    if canonical::commitment(key, org, principal) != event.get::<_, &str>("principal_commitment") {
        return Some("principal_id");
    }
    let target: Option<&str> = event.get("target_resource_id");
    let commitment: Option<&str> = event.get("target_resource_commitment");
    match (target, commitment) {
        (None, None) => None,
        (Some(target), Some(commitment))
            if canonical::commitment(key, org, target) == commitment =>
        {
            None
        }
        _ => Some("target_resource_id"),
    }
}

/// The tail: the chain head must agree with the last link, and a checkpoint
/// kept outside must still be reached by the chain.
async fn check_tail(
    client: &impl GenericClient,
    org: &str,
    last: Option<&(i64, String)>,
    statement: Option<&checkpoint::CheckpointStatement>,
    findings: &mut Findings,
) -> Result<(), VerifyError> {
    let head = client
        .query_opt(
            "SELECT seq, link FROM audit_chain_head WHERE organization_id = $1",
            &[&org],
        )
        .await?;
    let last_seq = last.map_or(0, |(seq, _)| *seq);
    if let Some(head) = head {
        let head_seq: i64 = head.get("seq");
        if head_seq > last_seq {
            findings.add(
                ProblemKind::Truncated,
                None,
                Some(head_seq),
                format!("the chain head records {head_seq} links but the chain ends at {last_seq}"),
            );
        }
    }
    if let Some(statement) = statement {
        if last_seq < statement.seq {
            findings.add(
                ProblemKind::Truncated,
                None,
                Some(statement.seq),
                format!(
                    "the checkpoint signed at {} attests {} links, but the chain ends at {last_seq}",
                    statement.signed_at, statement.seq
                ),
            );
        } else {
            let row = client
                .query_opt(
                    "SELECT link FROM audit_chain WHERE organization_id = $1 AND seq = $2",
                    &[&org, &statement.seq],
                )
                .await?;
            let link: Option<String> = row.map(|row| row.get(0));
            if link.as_deref() != Some(statement.link.as_str()) {
                findings.add(
                    ProblemKind::Modified,
                    None,
                    Some(statement.seq),
                    "the chain no longer holds the link the checkpoint attests".to_owned(),
                );
            }
        }
    }
    Ok(())
}

/// Records a verification run in `audit_integrity_log`.
pub async fn record(
    client: &impl GenericClient,
    org: &str,
    report: &Report,
    scope: &Scope<'_>,
    verified_by: &str,
) -> Result<(), DbError> {
    let details = serde_json::json!({
        "checked": report.checked,
        "links_checked": report.links_checked,
        "problem_count": report.problem_count,
        "problems": report.problems.iter().take(100).collect::<Vec<_>>(),
        "from": scope.from,
        "to": scope.to,
        "checkpoint": scope.checkpoint.is_some(),
    });
    let status = if report.valid { "success" } else { "failure" };
    client
        .execute(
            "INSERT INTO audit_integrity_log (organization_id, verification_status, verification_details, verified_by) \
             VALUES ($1, $2, $3, $4)",
            &[&org, &status, &Json(details), &verified_by],
        )
        .await?;
    Ok(())
}
