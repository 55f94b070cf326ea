//! Verification: recomputes every event hash, the identifier commitments, each
//! link's Merkle root and the links themselves, and reports what no longer
//! matches — a modified, missing, inserted or reordered event, a broken link,
//! or (against a checkpoint kept outside) a truncated chain.
//!
//! It streams: chain rows and events are read in chain order side by side, so
//! memory stays constant whatever the size of the chain. Archived events of
//! the links in range are checked like live ones: their archives are opened
//! (both SHA-256 sums checked) into a temporary table read beside `audit_log`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::pin;
use std::sync::Arc;

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
use crate::alerts::system;
use crate::db::{archives, gdpr, DbError, PgPool};
use crate::maintenance::archive;

/// At most this many problems are listed (all are counted).
const MAX_LISTED_PROBLEMS: usize = 1000;
/// Events hashed per blocking task.
const CHUNK_ROWS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    Modified,
    Missing,
    Inserted,
    Reordered,
    Truncated,
    /// An archive's bytes no longer match their recorded SHA-256 (its events
    /// then also show as missing).
    CorruptedArchive,
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
    /// Events deleted by a recorded retention operation: their kept chain
    /// leaves stand in for them in their links.
    pub deleted_by_retention: u64,
    /// Events erased by a recorded GDPR erasure: their kept chain leaves
    /// stand in for them, as for retention.
    pub erased_by_gdpr: u64,
    /// Checked events whose identifier a recorded GDPR operation replaced by a
    /// pseudonym (counted in `checked` too).
    pub pseudonymized: u64,
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

/// What to verify.
pub struct Scope<'a> {
    pub organization_id: &'a str,
    /// Events from this time (inclusive); `None` from the beginning.
    pub from: Option<DateTime<Utc>>,
    /// Events before this time; `None` to the end.
    pub to: Option<DateTime<Utc>>,
    pub checkpoint: Option<&'a SignedCheckpoint>,
}

#[derive(Default)]
struct Findings {
    problems: Vec<Problem>,
    count: u64,
    /// Events whose identifiers a recorded GDPR operation replaced.
    pseudonymized: u64,
}

impl Findings {
    fn merge(&mut self, other: Findings) {
        self.count += other.count - other.problems.len() as u64;
        self.pseudonymized += other.pseudonymized;
        for problem in other.problems {
            self.add(problem.kind, problem.event_id, problem.seq, problem.message);
        }
    }

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
    link_id: i64,
    seq: i64,
    event_count: i64,
    first_event_id: i64,
    last_event_id: i64,
    min_timestamp: DateTime<Utc>,
    max_timestamp: DateTime<Utc>,
    merkle_root: String,
    prev_link: String,
    link: String,
}

impl Link {
    fn from_row(row: &Row) -> Self {
        Link {
            link_id: row.get("link_id"),
            seq: row.get("seq"),
            min_timestamp: row.get("min_timestamp"),
            max_timestamp: row.get("max_timestamp"),
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
        pseudonymized: 0,
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

    let mut client = pool.get().await?;
    // One snapshot for all reads; the temporary table of archived events
    // disappears with it.
    let client = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await?;

    // 1. The whole chain, in order: every link's own hash and its pointer to the
    //    previous one. Keep the links whose events the range touches.
    let links = client
        .query_raw(
            "SELECT link_id, seq, event_count, first_event_id, last_event_id, min_timestamp, max_timestamp, \
               merkle_root, prev_link, link \
             FROM audit_chain WHERE organization_id = $1 ORDER BY seq",
            [&org as &(dyn ToSql + Sync)],
        )
        .await?;
    let mut links = pin!(links);
    let mut in_range: HashMap<i64, Link> = HashMap::new();
    // The time span the kept links' events cover, widened to the range asked for.
    let (mut lower, mut upper) = (scope.from, scope.to);
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
        last = Some((link.seq, link.link.clone()));
        let touches = scope.from.is_none_or(|from| link.max_timestamp >= from)
            && scope.to.is_none_or(|to| link.min_timestamp < to);
        if touches {
            if scope.from.is_some() {
                lower = lower.min(Some(link.min_timestamp));
            }
            if scope.to.is_some() {
                upper = upper.max(Some(link.max_timestamp));
            }
            in_range.insert(link.link_id, link);
        }
    }

    // Pseudonyms that recorded GDPR operations gave (read before the events
    // stream: the connection answers in order).
    let pseudonyms: Arc<Pseudonyms> = Arc::new(recorded_pseudonyms(&client, org).await?);

    // 2. Archived events of those links, next to the live ones.
    let archived = load_archives(&client, org, &in_range, &mut findings).await?;

    // 3. Their events, grouped by link. Hashing runs on blocking threads, a
    //    chunk at a time, while the next rows arrive.
    let columns = "id, \"timestamp\", ttl, principal_id, organization_id, action, target_resource_type, \
        target_resource_id, status, outcome_description, hash, hash_algorithm, event_version, correlation_id, \
        data_classification, retention_policy, details, idempotency_key, principal_commitment, \
        target_resource_commitment, chain_link";
    let filter = "organization_id = $1 \
        AND ($2::timestamptz IS NULL OR \"timestamp\" >= $2) AND ($3::timestamptz IS NULL OR \"timestamp\" <= $3)";
    // The leaves of events deleted by retention, in the same row shape:
    // only the id, time, hash and link are known.
    let pruned = "SELECT event_id, event_timestamp, NULL, NULL, organization_id, NULL, NULL, NULL, NULL, NULL, \
        hash, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, chain_link, operation_kind FROM audit_pruned_leaf \
        WHERE organization_id = $1 AND ($2::timestamptz IS NULL OR event_timestamp >= $2) \
          AND ($3::timestamptz IS NULL OR event_timestamp <= $3)";
    let archived = if archived {
        format!("UNION ALL SELECT {columns}, NULL::text FROM verify_archived WHERE {filter}")
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT {columns}, NULL::text AS removed_by FROM audit_log WHERE {filter} {archived} \
         UNION ALL {pruned} ORDER BY chain_link, id"
    );
    let events = client
        .query_raw(&sql, [&org as &(dyn ToSql + Sync), &lower, &upper])
        .await?;
    let mut events = pin!(events);
    let key: [u8; 32] = keys
        .commitment_key()
        .try_into()
        .expect("a 32-byte commitment key");
    let mut checked = 0u64;
    let mut deleted_by_retention = 0u64;
    let mut erased_by_gdpr = 0u64;
    let mut chunk: Vec<(Link, Vec<Row>)> = Vec::new();
    let mut chunk_rows = 0usize;
    let mut running: VecDeque<tokio::task::JoinHandle<Findings>> = VecDeque::new();
    let mut group: Option<(i64, Vec<Row>)> = None;
    loop {
        let next = events.try_next().await?;
        let next_link = next.as_ref().map(|row| row.get::<_, i64>("chain_link"));
        if group.as_ref().map(|(link, _)| Some(*link)) != Some(next_link) {
            if let Some((link_id, rows)) = group.take() {
                let mut deleted = 0;
                for row in &rows {
                    match row.get::<_, Option<&str>>("removed_by") {
                        Some(RETENTION) => deleted_by_retention += 1,
                        Some(_) => erased_by_gdpr += 1,
                        None => continue,
                    }
                    deleted += 1;
                }
                checked += (rows.len() - deleted) as u64;
                match in_range.remove(&link_id) {
                    Some(link) => {
                        chunk_rows += rows.len();
                        chunk.push((link, rows));
                    }
                    None => report_strays(&rows, scope, &mut findings),
                }
            }
        }
        if chunk_rows >= CHUNK_ROWS || (next.is_none() && !chunk.is_empty()) {
            let work = std::mem::take(&mut chunk);
            chunk_rows = 0;
            let organization_id = org.to_owned();
            let pseudonyms = pseudonyms.clone();
            running.push_back(tokio::task::spawn_blocking(move || {
                check_chunk(work, &key, &organization_id, &pseudonyms)
            }));
            if running.len() > 2 {
                findings.merge(
                    running
                        .pop_front()
                        .expect("a running chunk")
                        .await
                        .expect("a chunk check does not panic"),
                );
            }
        }
        match next {
            None => break,
            Some(row) => group
                .get_or_insert_with(|| (row.get("chain_link"), Vec::new()))
                .1
                .push(row),
        }
    }
    for handle in running {
        findings.merge(handle.await.expect("a chunk check does not panic"));
    }
    // Links of the range none of whose events remain.
    let mut emptied: Vec<Link> = in_range.into_values().collect();
    emptied.sort_by_key(|link| link.seq);
    for link in emptied {
        check_members(&link, &[], &key, org, &pseudonyms, &mut findings);
    }

    check_tail(
        &client,
        org,
        last.as_ref(),
        statement.as_ref(),
        &mut findings,
    )
    .await?;

    Ok(Report {
        checked,
        deleted_by_retention,
        erased_by_gdpr,
        pseudonymized: findings.pseudonymized,
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

/// Events of a link that is not among the links of the range: if they lie in
/// the range, no link row backs them.
fn report_strays(rows: &[Row], scope: &Scope<'_>, findings: &mut Findings) {
    for row in rows {
        let timestamp: DateTime<Utc> = row.get("timestamp");
        let in_scope = scope.from.is_none_or(|from| timestamp >= from)
            && scope.to.is_none_or(|to| timestamp < to);
        if in_scope {
            findings.add(
                ProblemKind::Inserted,
                Some(row.get("id")),
                None,
                "the event belongs to no chain link".to_owned(),
            );
        }
    }
}

/// Opens the organization's archives holding events of the links in range
/// into the temporary table `verify_archived`; whether there were any. A
/// corrupted archive is reported and left out.
async fn load_archives(
    client: &tokio_postgres::Transaction<'_>,
    org: &str,
    in_range: &HashMap<i64, Link>,
    findings: &mut Findings,
) -> Result<bool, VerifyError> {
    let (Some(first), Some(last)) = (in_range.keys().min(), in_range.keys().max()) else {
        return Ok(false);
    };
    let found = archives::covering_links(client, org, *first, *last).await?;
    if found.is_empty() {
        return Ok(false);
    }
    client
        .batch_execute("CREATE TEMPORARY TABLE verify_archived (LIKE audit_log) ON COMMIT DROP")
        .await?;
    for id in found {
        let Some((stored, data)) = archives::get(client, Some(org), id).await? else {
            continue;
        };
        // Checking and decompressing is CPU work: off the async threads.
        let opened = tokio::task::spawn_blocking(move || archive::open(&stored, &data))
            .await
            .expect("opening an archive does not panic");
        match opened {
            Ok(lines) => {
                archives::insert_events(client, false, &lines).await?;
            }
            Err(error) => {
                findings.add(ProblemKind::CorruptedArchive, None, None, error.to_string())
            }
        }
    }
    Ok(true)
}

/// Checks a chunk of links with their events (on a blocking thread).
fn check_chunk(
    links: Vec<(Link, Vec<Row>)>,
    key: &[u8],
    org: &str,
    pseudonyms: &Pseudonyms,
) -> Findings {
    let mut findings = Findings::default();
    for (link, members) in &links {
        check_members(link, members, key, org, pseudonyms, &mut findings);
    }
    findings
}

/// Compares one link with the events that claim it.
fn check_members(
    link: &Link,
    members: &[Row],
    key: &[u8],
    org: &str,
    pseudonyms: &Pseudonyms,
    findings: &mut Findings,
) {
    let seq = Some(link.seq);
    let mut leaves = Vec::with_capacity(members.len());
    let mut modified = false;
    for event in members {
        let id: i64 = event.get("id");
        if event.get::<_, Option<&str>>("removed_by").is_some() {
            // Deleted by a recorded operation: its kept leaf is all there is.
            let stored: &str = event.get("hash");
            leaves.push(chain::parse_hash(stored).unwrap_or_default());
            continue;
        }
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
        } else {
            match identifiers(event, key, org, pseudonyms) {
                Identifiers::Intact => {}
                Identifiers::Pseudonymized => findings.pseudonymized += 1,
                Identifiers::Changed(field) => {
                    modified = true;
                    findings.add(
                        ProblemKind::Modified,
                        Some(id),
                        seq,
                        format!("`{field}` no longer matches its commitment, and no recorded operation changed it"),
                    );
                }
            }
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

/// `operation_kind` of the leaves kept by deletion past retention.
const RETENTION: &str = "retention";

/// Per subject commitment, the pseudonyms recorded GDPR operations gave it.
type Pseudonyms = HashMap<String, HashSet<String>>;

async fn recorded_pseudonyms(
    client: &impl GenericClient,
    org: &str,
) -> Result<Pseudonyms, DbError> {
    let mut pseudonyms = Pseudonyms::new();
    for (commitment, pseudonym) in gdpr::recorded_pseudonyms(client, org).await? {
        pseudonyms.entry(commitment).or_default().insert(pseudonym);
    }
    Ok(pseudonyms)
}

/// Whether an event's identifiers are the ones its commitments bind.
enum Identifiers {
    Intact,
    /// At least one is a pseudonym a recorded operation gave that identity.
    Pseudonymized,
    /// This field is neither.
    Changed(&'static str),
}

fn identifiers(event: &Row, key: &[u8], org: &str, pseudonyms: &Pseudonyms) -> Identifiers {
    // Matches its commitment, or is the pseudonym a recorded operation gave it.
    let bound = |value: &str, commitment: &str| -> Option<bool> {
        if canonical::commitment(key, org, value) == commitment {
            Some(false)
        } else if pseudonyms
            .get(commitment)
            .is_some_and(|given| given.contains(value))
        {
            Some(true)
        } else {
            None
        }
    };
    let principal: &str = event.get("principal_id");
    let Some(principal_pseudonymized) = bound(principal, event.get("principal_commitment")) else {
        return Identifiers::Changed("principal_id");
    };
    let target: Option<&str> = event.get("target_resource_id");
    let commitment: Option<&str> = event.get("target_resource_commitment");
    let target_pseudonymized = match (target, commitment) {
        (None, None) => false,
        (Some(target), Some(commitment)) => match bound(target, commitment) {
            Some(pseudonymized) => pseudonymized,
            None => return Identifiers::Changed("target_resource_id"),
        },
        _ => return Identifiers::Changed("target_resource_id"),
    };
    if principal_pseudonymized || target_pseudonymized {
        Identifiers::Pseudonymized
    } else {
        Identifiers::Intact
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

/// Records a verification run in `audit_integrity_log`; a failed one also
/// raises a CRITICAL COMPLIANCE alert (one open alert per organization).
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
    if !report.valid {
        let summary = serde_json::json!({
            "problem_count": report.problem_count,
            "problems": report.problems.iter().take(10).collect::<Vec<_>>(),
            "from": scope.from,
            "to": scope.to,
            "verified_by": verified_by,
        });
        system::integrity_failed(client, org, report.problem_count as usize, summary).await?;
    }
    Ok(())
}
