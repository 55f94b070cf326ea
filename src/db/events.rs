//! Queries on `audit_log` and the integrity chain: the group-commit write, and
//! the listings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::{DbError, PgPool};
use crate::events::{NewEvent, Receipt};
use crate::integrity::canonical::{format_timestamp, HASH_ALGORITHM};
use crate::integrity::chain;

/// The events of one request, and when the request arrived.
pub struct Submission {
    pub events: Vec<NewEvent>,
    pub received: Instant,
}

/// Writes the events of several requests in one transaction and returns each
/// request's receipts, in input order. Per organization, the batch becomes one
/// chain link (appends to one organization's chain are serialised by a row lock
/// on its chain head; other organizations are not held up). An idempotency key
/// already stored, or repeated within the group, yields the first event's receipt
/// and stores nothing new.
pub async fn write_group(
    pool: &PgPool,
    submissions: &[Submission],
) -> Result<Vec<Vec<Receipt>>, DbError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;

    // Each event is either a candidate to insert, or a repeat of an earlier
    // candidate's idempotency key.
    let mut candidates: Vec<(&NewEvent, Instant)> = Vec::new();
    let mut slot_of: Vec<Vec<usize>> = Vec::with_capacity(submissions.len());
    let mut by_key: HashMap<(&str, &str), usize> = HashMap::new();
    for submission in submissions {
        let mut slots = Vec::with_capacity(submission.events.len());
        for event in &submission.events {
            let key = event
                .idempotency_key
                .as_deref()
                .map(|key| (event.organization_id.as_str(), key));
            let slot = match key.and_then(|key| by_key.get(&key)) {
                Some(&earlier) => earlier,
                None => {
                    candidates.push((event, submission.received));
                    if let Some(key) = key {
                        by_key.insert(key, candidates.len() - 1);
                    }
                    candidates.len() - 1
                }
            };
            slots.push(slot);
        }
        slot_of.push(slots);
    }

    let ids: Vec<i64> = transaction
        .query(
            "SELECT nextval('audit_log_id_seq') FROM generate_series(1, $1::int)",
            &[&(candidates.len() as i32)],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();

    // Lock the chain heads of the organizations involved, in a fixed order.
    let organizations: Vec<&str> = {
        let mut names: Vec<&str> = candidates
            .iter()
            .map(|(e, _)| e.organization_id.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    transaction
        .execute(
            "INSERT INTO audit_chain_head (organization_id, seq, link) \
             SELECT unnest($1::text[]), 0, $2 ON CONFLICT (organization_id) DO NOTHING",
            &[&organizations, &hex::encode(chain::GENESIS)],
        )
        .await?;
    let mut heads: BTreeMap<String, (i64, [u8; 32], i64)> = transaction
        .query(
            "SELECT organization_id, seq, link, event_total FROM audit_chain_head \
             WHERE organization_id = ANY($1) ORDER BY organization_id FOR UPDATE",
            &[&organizations],
        )
        .await?
        .iter()
        .map(|row| {
            let link: String = row.get("link");
            (
                row.get("organization_id"),
                (
                    row.get("seq"),
                    chain::parse_hash(&link).unwrap_or(chain::GENESIS),
                    row.get("event_total"),
                ),
            )
        })
        .collect();

    // Idempotency keys already stored by earlier transactions.
    let mut stored_receipt: HashMap<usize, Receipt> = HashMap::new();
    let keyed: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].0.idempotency_key.is_some())
        .collect();
    if !keyed.is_empty() {
        let column = |f: fn(&NewEvent) -> Option<&str>| -> Vec<Option<&str>> {
            keyed.iter().map(|&i| f(candidates[i].0)).collect()
        };
        let orgs = column(|e| Some(e.organization_id.as_str()));
        let keys = column(|e| e.idempotency_key.as_deref());
        let hashes = column(|e| Some(e.hash.as_str()));
        let event_ids: Vec<i64> = keyed.iter().map(|&i| ids[i]).collect();
        let timestamps: Vec<DateTime<Utc>> =
            keyed.iter().map(|&i| candidates[i].0.timestamp).collect();
        let inserted: HashSet<(String, String)> = transaction
            .query(
                "INSERT INTO audit_idempotency (organization_id, idempotency_key, event_id, event_timestamp, hash) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::timestamptz[], $5::text[]) \
                 ON CONFLICT (organization_id, idempotency_key) DO NOTHING \
                 RETURNING organization_id, idempotency_key",
                &[&orgs, &keys, &event_ids, &timestamps, &hashes],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        // Keys another transaction stored first: answer with that event.
        let taken: Vec<usize> = keyed
            .iter()
            .copied()
            .filter(|&i| {
                let event = candidates[i].0;
                let key = event.idempotency_key.clone().unwrap_or_default();
                !inserted.contains(&(event.organization_id.clone(), key))
            })
            .collect();
        if !taken.is_empty() {
            let orgs: Vec<&str> = taken
                .iter()
                .map(|&i| candidates[i].0.organization_id.as_str())
                .collect();
            let keys: Vec<&str> = taken
                .iter()
                .map(|&i| {
                    candidates[i]
                        .0
                        .idempotency_key
                        .as_deref()
                        .unwrap_or_default()
                })
                .collect();
            let rows = transaction
                .query(
                    "SELECT i.organization_id, i.idempotency_key, i.event_id, i.event_timestamp, i.hash \
                     FROM audit_idempotency i \
                     JOIN unnest($1::text[], $2::text[]) AS wanted(organization_id, idempotency_key) \
                       USING (organization_id, idempotency_key)",
                    &[&orgs, &keys],
                )
                .await?;
            for row in rows {
                let (org, key): (String, String) = (row.get(0), row.get(1));
                if let Some(&i) = taken.iter().find(|&&i| {
                    candidates[i].0.organization_id == org
                        && candidates[i].0.idempotency_key.as_deref() == Some(&key)
                }) {
                    let timestamp: DateTime<Utc> = row.get(3);
                    stored_receipt.insert(
                        i,
                        Receipt {
                            id: row.get(2),
                            timestamp: format_timestamp(timestamp),
                            hash: row.get(4),
                        },
                    );
                }
            }
        }
    }

    // One chain link per organization over its new events, in id order.
    let new: Vec<usize> = (0..candidates.len())
        .filter(|i| !stored_receipt.contains_key(i))
        .collect();
    let mut per_org: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in &new {
        per_org
            .entry(candidates[i].0.organization_id.as_str())
            .or_default()
            .push(i);
    }
    let mut chain_seq_of: HashMap<usize, i64> = HashMap::new();
    let mut links = LinkRows::default();
    for (org, members) in &per_org {
        let head = heads
            .get_mut(*org)
            .expect("every organization's head is locked");
        let leaves: Vec<[u8; 32]> = members
            .iter()
            .map(|&i| chain::parse_hash(&candidates[i].0.hash).expect("hashes are hex"))
            .collect();
        let root = chain::merkle_root(&leaves);
        let seq = head.0 + 1;
        let link = chain::link(&head.1, seq, members.len() as u32, &root);
        links.push(org, seq, members, &ids, &candidates, &root, &head.1, &link);
        for &i in members {
            chain_seq_of.insert(i, seq);
        }
        *head = (seq, link, head.2 + members.len() as i64);
    }

    if !new.is_empty() {
        insert_events(&transaction, &new, &ids, &candidates, &chain_seq_of).await?;
        links.insert(&transaction).await?;
        let orgs: Vec<&str> = per_org.keys().copied().collect();
        let seqs: Vec<i64> = orgs.iter().map(|org| heads[*org].0).collect();
        let link_hex: Vec<String> = orgs.iter().map(|org| hex::encode(heads[*org].1)).collect();
        let totals: Vec<i64> = orgs.iter().map(|org| heads[*org].2).collect();
        transaction
            .execute(
                "UPDATE audit_chain_head h SET seq = n.seq, link = n.link, event_total = n.total, updated_at = now() \
                 FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[]) AS n(organization_id, seq, link, total) \
                 WHERE h.organization_id = n.organization_id",
                &[&orgs, &seqs, &link_hex, &totals],
            )
            .await?;
    }
    transaction.commit().await?;

    let receipt_of = |slot: usize| {
        stored_receipt.get(&slot).cloned().unwrap_or_else(|| {
            let event = candidates[slot].0;
            Receipt {
                id: ids[slot],
                timestamp: format_timestamp(event.timestamp),
                hash: event.hash.clone(),
            }
        })
    };
    Ok(slot_of
        .iter()
        .map(|slots| slots.iter().map(|&slot| receipt_of(slot)).collect())
        .collect())
}

/// The new chain rows of a group, as column arrays.
#[derive(Default)]
struct LinkRows<'a> {
    orgs: Vec<&'a str>,
    seqs: Vec<i64>,
    counts: Vec<i32>,
    first_ids: Vec<i64>,
    last_ids: Vec<i64>,
    min_timestamps: Vec<DateTime<Utc>>,
    max_timestamps: Vec<DateTime<Utc>>,
    roots: Vec<String>,
    prev_links: Vec<String>,
    links: Vec<String>,
}

impl<'a> LinkRows<'a> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        org: &'a str,
        seq: i64,
        members: &[usize],
        ids: &[i64],
        candidates: &[(&NewEvent, Instant)],
        root: &[u8; 32],
        prev: &[u8; 32],
        link: &[u8; 32],
    ) {
        let timestamps = members.iter().map(|&i| candidates[i].0.timestamp);
        self.orgs.push(org);
        self.seqs.push(seq);
        self.counts.push(members.len() as i32);
        self.first_ids.push(ids[members[0]]);
        self.last_ids.push(ids[members[members.len() - 1]]);
        self.min_timestamps
            .push(timestamps.clone().min().expect("a link has events"));
        self.max_timestamps
            .push(timestamps.max().expect("a link has events"));
        self.roots.push(hex::encode(root));
        self.prev_links.push(hex::encode(prev));
        self.links.push(hex::encode(link));
    }

    async fn insert(&self, client: &impl GenericClient) -> Result<(), DbError> {
        client
            .execute(
                "INSERT INTO audit_chain (organization_id, seq, event_count, first_event_id, last_event_id, \
                   min_timestamp, max_timestamp, merkle_root, prev_link, link) \
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int4[], $4::int8[], $5::int8[], \
                   $6::timestamptz[], $7::timestamptz[], $8::text[], $9::text[], $10::text[])",
                &[
                    &self.orgs,
                    &self.seqs,
                    &self.counts,
                    &self.first_ids,
                    &self.last_ids,
                    &self.min_timestamps,
                    &self.max_timestamps,
                    &self.roots,
                    &self.prev_links,
                    &self.links,
                ],
            )
            .await?;
        Ok(())
    }
}

async fn insert_events(
    client: &impl GenericClient,
    new: &[usize],
    ids: &[i64],
    candidates: &[(&NewEvent, Instant)],
    chain_seq_of: &HashMap<usize, i64>,
) -> Result<(), DbError> {
    let events: Vec<&NewEvent> = new.iter().map(|&i| candidates[i].0).collect();
    let text = |f: fn(&NewEvent) -> Option<&str>| -> Vec<Option<&str>> {
        events.iter().map(|e| f(e)).collect()
    };
    let id: Vec<i64> = new.iter().map(|&i| ids[i]).collect();
    let timestamp: Vec<DateTime<Utc>> = events.iter().map(|e| e.timestamp).collect();
    let latency: Vec<i32> = new
        .iter()
        .map(|&i| candidates[i].1.elapsed().as_millis().min(i32::MAX as u128) as i32)
        .collect();
    let details: Vec<Option<Json<&serde_json::Value>>> = events
        .iter()
        .map(|e| e.details.as_ref().map(Json))
        .collect();
    let chain_seq: Vec<i64> = new.iter().map(|i| chain_seq_of[i]).collect();
    let columns: [&(dyn ToSql + Sync); 22] = [
        &id,
        &timestamp,
        &text(|e| e.ttl.as_deref()),
        &text(|e| Some(&e.principal_id)),
        &text(|e| Some(&e.organization_id)),
        &text(|e| Some(&e.action)),
        &text(|e| e.target_resource_type.as_deref()),
        &text(|e| e.target_resource_id.as_deref()),
        &text(|e| Some(&e.status)),
        &text(|e| e.outcome_description.as_deref()),
        &text(|e| Some(&e.hash)),
        &text(|_| Some(HASH_ALGORITHM)),
        &text(|e| Some(&e.event_version)),
        &text(|e| e.correlation_id.as_deref()),
        &text(|e| Some(&e.data_classification)),
        &text(|e| Some(&e.retention_policy)),
        &latency,
        &details,
        &text(|e| e.idempotency_key.as_deref()),
        &text(|e| Some(&e.principal_commitment)),
        &text(|e| e.target_resource_commitment.as_deref()),
        &chain_seq,
    ];
    client
        .execute(
            "INSERT INTO audit_log (id, \"timestamp\", ttl, principal_id, organization_id, action, \
               target_resource_type, target_resource_id, status, outcome_description, hash, hash_algorithm, \
               event_version, correlation_id, data_classification, retention_policy, processing_latency, \
               details, idempotency_key, principal_commitment, target_resource_commitment, chain_seq) \
             SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], \
               $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
               $14::text[], $15::text[], $16::text[], $17::int4[], $18::jsonb[], $19::text[], $20::text[], \
               $21::text[], $22::int8[])",
            &columns,
        )
        .await?;
    Ok(())
}

/// First days of the months that have an `audit_log` partition.
pub async fn partition_months(client: &impl GenericClient) -> Result<Vec<NaiveDate>, DbError> {
    let rows = client
        .query(
            "SELECT to_date(substring(c.relname from 'audit_log_(\\d{4}_\\d{2})$'), 'YYYY_MM') \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
             WHERE p.relname = 'audit_log' AND c.relname ~ '^audit_log_\\d{4}_\\d{2}$'",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Creates the monthly partitions for `months` that are missing (in a short
/// transaction of their own, ahead of the ingest transaction).
pub async fn ensure_partitions(pool: &PgPool, months: &[NaiveDate]) -> Result<(), DbError> {
    let client = pool.get().await?;
    client
        .execute(
            "SELECT audit_log_ensure_partition(m) FROM unnest($1::date[]) AS m",
            &[&months],
        )
        .await?;
    Ok(())
}

/// The first day of `timestamp`'s month (UTC).
pub fn month_of(timestamp: DateTime<Utc>) -> NaiveDate {
    NaiveDate::from_ymd_opt(timestamp.year(), timestamp.month(), 1)
        .expect("the first of a month exists")
}

/// An event as the API returns it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredEvent {
    pub id: i64,
    pub timestamp: String,
    pub organization_id: String,
    pub principal_id: String,
    pub action: String,
    pub status: String,
    pub target_resource_type: Option<String>,
    pub target_resource_id: Option<String>,
    pub outcome_description: Option<String>,
    pub correlation_id: Option<String>,
    pub data_classification: String,
    pub retention_policy: String,
    pub ttl: Option<String>,
    pub event_version: String,
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
    pub idempotency_key: Option<String>,
    pub hash: String,
    pub hash_algorithm: String,
    /// Milliseconds from receipt to the write of the event's transaction.
    pub processing_latency: Option<i32>,
}

const EVENT_COLUMNS: &str = "id, \"timestamp\", organization_id, principal_id, action, status, \
    target_resource_type, target_resource_id, outcome_description, correlation_id, data_classification, \
    retention_policy, ttl, event_version, details, idempotency_key, hash, hash_algorithm, processing_latency";

fn stored(row: &tokio_postgres::Row) -> StoredEvent {
    let timestamp: DateTime<Utc> = row.get("timestamp");
    StoredEvent {
        id: row.get("id"),
        timestamp: format_timestamp(timestamp),
        organization_id: row.get("organization_id"),
        principal_id: row.get("principal_id"),
        action: row.get("action"),
        status: row.get("status"),
        target_resource_type: row.get("target_resource_type"),
        target_resource_id: row.get("target_resource_id"),
        outcome_description: row.get("outcome_description"),
        correlation_id: row.get("correlation_id"),
        data_classification: row.get("data_classification"),
        retention_policy: row.get("retention_policy"),
        ttl: row.get("ttl"),
        event_version: row.get("event_version"),
        details: row
            .get::<_, Option<Json<serde_json::Value>>>("details")
            .map(|Json(v)| v),
        idempotency_key: row.get("idempotency_key"),
        hash: row.get("hash"),
        hash_algorithm: row.get("hash_algorithm"),
        processing_latency: row.get("processing_latency"),
    }
}

/// Filters of an event listing; `from`/`to` are always set (they bound the
/// partitions read).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Exact action, or a prefix when it ends with `*`.
    pub action: Option<String>,
    pub principal_id: Option<String>,
    pub target_resource_type: Option<String>,
    pub target_resource_id: Option<String>,
    pub status: Option<String>,
    pub correlation_id: Option<String>,
    pub data_classification: Option<String>,
    /// Continue after this (timestamp, id), newest first.
    pub after: Option<(DateTime<Utc>, i64)>,
    pub limit: i64,
}

/// A page of events, newest first: `(timestamp, id)` descending, strictly after
/// the cursor, so paging never repeats or skips an event that existed when the
/// listing began.
pub async fn list(
    client: &impl GenericClient,
    organization_id: &str,
    filter: &EventFilter,
) -> Result<Vec<StoredEvent>, DbError> {
    let action_prefix = filter
        .action
        .as_deref()
        .and_then(|action| action.strip_suffix('*'))
        .map(|prefix| {
            format!(
                "{}%",
                prefix
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            )
        });
    let action_exact = filter
        .action
        .as_deref()
        .filter(|action| !action.ends_with('*'));
    let (after_timestamp, after_id) = filter.after.unzip();
    let rows = client
        .query(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM audit_log \
                 WHERE organization_id = $1 AND \"timestamp\" >= $2 AND \"timestamp\" < $3 \
                   AND ($4::text IS NULL OR action = $4) \
                   AND ($5::text IS NULL OR action LIKE $5) \
                   AND ($6::text IS NULL OR principal_id = $6) \
                   AND ($7::text IS NULL OR target_resource_type = $7) \
                   AND ($8::text IS NULL OR target_resource_id = $8) \
                   AND ($9::text IS NULL OR status = $9) \
                   AND ($10::text IS NULL OR correlation_id = $10) \
                   AND ($11::text IS NULL OR data_classification = $11) \
                   AND ($12::timestamptz IS NULL OR (\"timestamp\", id) < ($12, $13)) \
                 ORDER BY \"timestamp\" DESC, id DESC LIMIT $14"
            ),
            &[
                &organization_id,
                &filter.from,
                &filter.to,
                &action_exact,
                &action_prefix,
                &filter.principal_id,
                &filter.target_resource_type,
                &filter.target_resource_id,
                &filter.status,
                &filter.correlation_id,
                &filter.data_classification,
                &after_timestamp,
                &after_id,
                &filter.limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(stored).collect())
}

pub async fn get(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<Option<StoredEvent>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM audit_log WHERE organization_id = $1 AND id = $2"
            ),
            &[&organization_id, &id],
        )
        .await?;
    Ok(row.as_ref().map(stored))
}
