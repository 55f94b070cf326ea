//! Queries on `audit_log` and the integrity chain: the group-commit write, and
//! the listings.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::pin::pin;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::connection::{PipelinedTransaction, Statements, TypedParam};
use super::{DbError, PgPool};
use crate::events::{NewEvent, Receipt};
use crate::integrity::canonical::{format_timestamp, HASH_ALGORITHM};
use crate::integrity::chain;

/// The events of one request, and when the request arrived.
pub struct Submission {
    pub events: Vec<NewEvent>,
    pub received: Instant,
}

/// What a group write stored.
pub struct Written {
    /// Each request's receipts, in input order.
    pub receipts: Vec<Vec<Receipt>>,
    /// Ids of the events this write stored (not those answered by an earlier
    /// event with the same idempotency key).
    pub stored: HashSet<i64>,
}

/// Writes the events of several requests in one transaction and returns each
/// request's receipts, in input order.
///
/// Per organization, the group becomes one chain link. The events are written
/// first, naming their link by a global link id; only then is the
/// organization's chain head locked, by the statement that numbers and hashes
/// the link in PostgreSQL ([`APPEND_LINKS`]), so concurrent groups of one
/// organization overlap and take turns only for that statement and their
/// COMMIT (other organizations never wait). An idempotency key already
/// stored, or repeated within the group, yields the first event's receipt and
/// stores nothing new.
///
/// Statements that do not depend on each other's answers are pipelined, they
/// are prepared once per connection, BEGIN and COMMIT go out with the first
/// and the last statements, and the ids come from `reserve`: a group of a few
/// events without idempotency keys costs one round trip.
pub async fn write_group(
    pool: &PgPool,
    reserve: &IdReserve,
    submissions: &[Submission],
) -> Result<Written, DbError> {
    let plan = Plan::new(submissions);
    let mut client = pool.get().await?;
    let numbers = reserve
        .take(&**client, plan.candidates.len(), plan.organizations().len())
        .await?;
    let transaction = client.begin_pipelined().await;
    transaction
        .run(write_planned(
            transaction.client(),
            transaction.statements(),
            &plan,
            numbers,
            Some(&transaction),
        ))
        .await
}

/// [`write_group`] inside the caller's transaction: the events are durable
/// once the caller commits, and only with what else the transaction does.
pub async fn write_in(
    transaction: &tokio_postgres::Transaction<'_>,
    submissions: &[Submission],
) -> Result<Written, DbError> {
    let plan = Plan::new(submissions);
    let numbers = draw_numbers(
        transaction,
        plan.candidates.len(),
        plan.organizations().len(),
    )
    .await?;
    write_planned(transaction, Statements::Unnamed, &plan, numbers, None).await
}

/// Ids for the events and links of a group: as many as it has candidates and
/// organizations, the event ids ascending (a link's Merkle leaves are in id
/// order).
pub struct Numbers {
    events: Vec<i64>,
    links: Vec<i64>,
}

/// Draws `events` event ids and `links` link ids from their sequences, in one
/// round trip.
async fn draw_numbers(
    client: &impl GenericClient,
    events: usize,
    links: usize,
) -> Result<Numbers, DbError> {
    let row = client
        .query_typed_one(
            "SELECT ARRAY(SELECT nextval('audit_log_id_seq') FROM generate_series(1, $1)), \
                    ARRAY(SELECT nextval('audit_chain_link_id_seq') FROM generate_series(1, $2))",
            &[
                (&(events as i32), Type::INT4),
                (&(links as i32), Type::INT4),
            ],
        )
        .await?;
    let mut numbers = Numbers {
        events: row.get(0),
        links: row.get(1),
    };
    numbers.events.sort_unstable();
    Ok(numbers)
}

/// Ids drawn from the sequences ahead of need, so that most groups spend no
/// round trip on them. Sequences are not transactional: an id drawn before the
/// transaction is as good as one drawn inside, and the ids of a worker that
/// stops are gaps, as those of a rolled-back transaction are.
#[derive(Default)]
pub struct IdReserve {
    held: std::sync::Mutex<HeldIds>,
}

#[derive(Default)]
struct HeldIds {
    events: VecDeque<i64>,
    links: VecDeque<i64>,
}

/// How many ids a refill of the reserve draws beyond the group's need.
const RESERVE_EVENT_IDS: usize = 1024;
const RESERVE_LINK_IDS: usize = 128;

impl IdReserve {
    /// `events` event ids (ascending) and `links` link ids, drawn through
    /// `client` when the reserve holds too few.
    pub async fn take(
        &self,
        client: &impl GenericClient,
        events: usize,
        links: usize,
    ) -> Result<Numbers, DbError> {
        let enough = |held: &HeldIds| held.events.len() >= events && held.links.len() >= links;
        if !enough(&self.held.lock().expect("the id reserve is not poisoned")) {
            let drawn =
                draw_numbers(client, events + RESERVE_EVENT_IDS, links + RESERVE_LINK_IDS).await?;
            let mut held = self.held.lock().expect("the id reserve is not poisoned");
            held.events.extend(drawn.events);
            held.links.extend(drawn.links);
        }
        let taken = {
            let mut held = self.held.lock().expect("the id reserve is not poisoned");
            // Concurrent groups may have taken from a refill meant for this one.
            enough(&held).then(|| Numbers {
                events: held.events.drain(..events).collect(),
                links: held.links.drain(..links).collect(),
            })
        };
        match taken {
            Some(mut numbers) => {
                // Refills that raced may have arrived out of order.
                numbers.events.sort_unstable();
                Ok(numbers)
            }
            None => draw_numbers(client, events, links).await,
        }
    }
}

/// Writes the planned group with the ids of `numbers`; with `committing`,
/// its COMMIT goes out with the last statements.
async fn write_planned(
    client: &impl GenericClient,
    statements: Statements<'_>,
    plan: &Plan<'_>,
    numbers: Numbers,
    committing: Option<&PipelinedTransaction<'_>>,
) -> Result<Written, DbError> {
    let organizations: Vec<&str> = plan.organizations();
    let ids = numbers.events;
    let link_ids: HashMap<&str, i64> = organizations.iter().copied().zip(numbers.links).collect();

    let stored = claim_idempotency_keys(client, statements, plan, &ids).await?;
    let new: Vec<usize> = (0..plan.candidates.len())
        .filter(|i| !stored.contains_key(i))
        .collect();
    let mut per_org: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in &new {
        per_org
            .entry(plan.candidates[i].0.organization_id.as_str())
            .or_default()
            .push(i);
    }
    if !new.is_empty() {
        let orgs: Vec<&str> = per_org.keys().copied().collect();
        let genesis = hex::encode(chain::GENESIS);
        let heads: [TypedParam<'_>; 2] = [(&orgs, Type::TEXT_ARRAY), (&genesis, Type::TEXT)];
        let link_columns = NewLinks::new(plan, &per_org, &ids, &link_ids);
        let links = link_columns.params();
        if new.len() <= SMALL_GROUP_EVENTS {
            let event_columns = EventColumns::new(plan, &new, &ids, &link_ids);
            let events = event_columns.params();
            // One round trip: the heads, the events, the links and COMMIT.
            send_last(
                client,
                statements,
                committing,
                &[
                    (CREATE_HEADS, &heads[..]),
                    (INSERT_EVENTS, &events[..]),
                    (APPEND_LINKS, &links[..]),
                ],
            )
            .await?;
        } else {
            let copy = statements.prepare(client, COPY_EVENTS).await?;
            let sink = client.client().copy_in(&copy).await?;
            // The heads, the links and COMMIT queue behind the COPY's end, in
            // the same round trip.
            let last = [(CREATE_HEADS, &heads[..]), (APPEND_LINKS, &links[..])];
            futures_util::try_join!(
                copy_events(sink, plan, &new, &ids, &link_ids),
                send_last(client, statements, committing, &last)
            )?;
        }
    }

    let receipt_of = |slot: usize| {
        stored.get(&slot).cloned().unwrap_or_else(|| {
            let event = plan.candidates[slot].0;
            Receipt {
                id: ids[slot],
                timestamp: format_timestamp(event.timestamp),
                hash: event.hash.clone(),
            }
        })
    };
    Ok(Written {
        receipts: plan
            .slots
            .iter()
            .map(|slots| slots.iter().map(|&slot| receipt_of(slot)).collect())
            .collect(),
        stored: new.iter().map(|&slot| ids[slot]).collect(),
    })
}

/// The events of a group to insert (`candidates`), and for each request's event
/// which candidate answers it: a repeated idempotency key points to the first.
struct Plan<'a> {
    candidates: Vec<(&'a NewEvent, Instant)>,
    slots: Vec<Vec<usize>>,
    by_key: HashMap<(&'a str, &'a str), usize>,
}

impl<'a> Plan<'a> {
    fn new(submissions: &'a [Submission]) -> Self {
        let mut plan = Plan {
            candidates: Vec::new(),
            slots: Vec::with_capacity(submissions.len()),
            by_key: HashMap::new(),
        };
        for submission in submissions {
            let mut slots = Vec::with_capacity(submission.events.len());
            for event in &submission.events {
                let key = event
                    .idempotency_key
                    .as_deref()
                    .map(|key| (event.organization_id.as_str(), key));
                let slot = match key.and_then(|key| plan.by_key.get(&key)) {
                    Some(&earlier) => earlier,
                    None => {
                        plan.candidates.push((event, submission.received));
                        if let Some(key) = key {
                            plan.by_key.insert(key, plan.candidates.len() - 1);
                        }
                        plan.candidates.len() - 1
                    }
                };
                slots.push(slot);
            }
            plan.slots.push(slots);
        }
        plan
    }

    /// The organizations of the group, sorted: the order their heads are locked in.
    fn organizations(&self) -> Vec<&'a str> {
        let mut names: Vec<&str> = self
            .candidates
            .iter()
            .map(|(e, _)| e.organization_id.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// Records the group's idempotency keys; returns, by candidate, the receipts of
/// keys that earlier transactions had already stored. Keys are claimed in sorted
/// order so that concurrent groups wait for each other without deadlocking.
async fn claim_idempotency_keys(
    client: &impl GenericClient,
    statements: Statements<'_>,
    plan: &Plan<'_>,
    ids: &[i64],
) -> Result<HashMap<usize, Receipt>, DbError> {
    let mut keyed: Vec<(&(&str, &str), &usize)> = plan.by_key.iter().collect();
    if keyed.is_empty() {
        return Ok(HashMap::new());
    }
    keyed.sort_unstable();
    let orgs: Vec<&str> = keyed.iter().map(|((org, _), _)| *org).collect();
    let keys: Vec<&str> = keyed.iter().map(|((_, key), _)| *key).collect();
    let event_ids: Vec<i64> = keyed.iter().map(|(_, &i)| ids[i]).collect();
    let timestamps: Vec<DateTime<Utc>> = keyed
        .iter()
        .map(|(_, &i)| plan.candidates[i].0.timestamp)
        .collect();
    let hashes: Vec<&str> = keyed
        .iter()
        .map(|(_, &i)| plan.candidates[i].0.hash.as_str())
        .collect();
    let inserted: HashSet<(String, String)> = statements
        .query(
            client,
            "INSERT INTO audit_idempotency (organization_id, idempotency_key, event_id, event_timestamp, hash) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::timestamptz[], $5::text[]) \
             ON CONFLICT (organization_id, idempotency_key) DO NOTHING \
             RETURNING organization_id, idempotency_key",
            &[
                (&orgs, Type::TEXT_ARRAY),
                (&keys, Type::TEXT_ARRAY),
                (&event_ids, Type::INT8_ARRAY),
                (&timestamps, Type::TIMESTAMPTZ_ARRAY),
                (&hashes, Type::TEXT_ARRAY),
            ],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    // Keys another transaction stored first: answer with that event.
    let (taken_orgs, taken_keys): (Vec<&str>, Vec<&str>) = keyed
        .iter()
        .map(|((org, key), _)| (*org, *key))
        .filter(|(org, key)| !inserted.contains(&((*org).to_owned(), (*key).to_owned())))
        .unzip();
    let mut stored = HashMap::new();
    if taken_orgs.is_empty() {
        return Ok(stored);
    }
    let rows = statements
        .query(
            client,
            "SELECT i.organization_id, i.idempotency_key, i.event_id, i.event_timestamp, i.hash \
             FROM audit_idempotency i \
             JOIN unnest($1::text[], $2::text[]) AS wanted(organization_id, idempotency_key) \
               USING (organization_id, idempotency_key)",
            &[
                (&taken_orgs, Type::TEXT_ARRAY),
                (&taken_keys, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    for row in rows {
        if let Some(&i) = plan.by_key.get(&(row.get(0), row.get(1))) {
            let timestamp: DateTime<Utc> = row.get(3);
            stored.insert(
                i,
                Receipt {
                    id: row.get(2),
                    timestamp: format_timestamp(timestamp),
                    hash: row.get(4),
                },
            );
        }
    }
    Ok(stored)
}

/// Groups of at most this many new events are written with one INSERT
/// rather than COPY: PostgreSQL spends about 0.9 ms setting up a COPY into the
/// partitioned `audit_log`, more than an INSERT of a few rows costs, and the
/// INSERT, prepared once per connection, shares the round trip of the
/// statements around it (see benches/README.md, Ingest).
const SMALL_GROUP_EVENTS: usize = 32;

/// The new events of a small group, as the column arrays of [`INSERT_EVENTS`].
struct EventColumns<'a> {
    ids: Vec<i64>,
    timestamps: Vec<DateTime<Utc>>,
    texts: [Vec<Option<&'a str>>; 17],
    latencies: Vec<i32>,
    details: Vec<Option<Json<&'a serde_json::Value>>>,
    links: Vec<i64>,
}

impl<'a> EventColumns<'a> {
    fn new(plan: &Plan<'a>, new: &[usize], ids: &[i64], link_ids: &HashMap<&str, i64>) -> Self {
        let events: Vec<&'a NewEvent> = new.iter().map(|&i| plan.candidates[i].0).collect();
        let column = |field: fn(&'a NewEvent) -> Option<&'a str>| -> Vec<Option<&'a str>> {
            events.iter().map(|event| field(event)).collect()
        };
        EventColumns {
            ids: new.iter().map(|&i| ids[i]).collect(),
            timestamps: events.iter().map(|event| event.timestamp).collect(),
            texts: [
                column(|e| e.ttl.as_deref()),
                column(|e| Some(e.principal_id.as_str())),
                column(|e| Some(e.organization_id.as_str())),
                column(|e| Some(e.action.as_str())),
                column(|e| e.target_resource_type.as_deref()),
                column(|e| e.target_resource_id.as_deref()),
                column(|e| Some(e.status.as_str())),
                column(|e| e.outcome_description.as_deref()),
                column(|e| Some(e.hash.as_str())),
                column(|_| Some(HASH_ALGORITHM)),
                column(|e| Some(e.event_version.as_str())),
                column(|e| e.correlation_id.as_deref()),
                column(|e| Some(e.data_classification.as_str())),
                column(|e| Some(e.retention_policy.as_str())),
                column(|e| e.idempotency_key.as_deref()),
                column(|e| Some(e.principal_commitment.as_str())),
                column(|e| e.target_resource_commitment.as_deref()),
            ],
            latencies: new
                .iter()
                .map(|&i| {
                    let received = plan.candidates[i].1;
                    received.elapsed().as_millis().min(i32::MAX as u128) as i32
                })
                .collect(),
            details: events
                .iter()
                .map(|event| event.details.as_ref().map(Json))
                .collect(),
            links: events
                .iter()
                .map(|event| link_ids[event.organization_id.as_str()])
                .collect(),
        }
    }

    fn params(&self) -> Vec<TypedParam<'_>> {
        let mut params: Vec<TypedParam<'_>> = vec![
            (&self.ids, Type::INT8_ARRAY),
            (&self.timestamps, Type::TIMESTAMPTZ_ARRAY),
        ];
        params.extend(
            self.texts
                .iter()
                .map(|texts| (texts as &(dyn ToSql + Sync), Type::TEXT_ARRAY)),
        );
        params.extend([
            (&self.latencies as &(dyn ToSql + Sync), Type::INT4_ARRAY),
            (&self.details, Type::JSONB_ARRAY),
            (&self.links, Type::INT8_ARRAY),
        ]);
        params
    }
}

/// Writes the new events of a small group with one INSERT of column arrays.
const INSERT_EVENTS: &str = "INSERT INTO audit_log (id, \"timestamp\", ttl, principal_id, organization_id, action, \
       target_resource_type, target_resource_id, status, outcome_description, hash, hash_algorithm, \
       event_version, correlation_id, data_classification, retention_policy, idempotency_key, \
       principal_commitment, target_resource_commitment, processing_latency, details, chain_link) \
     SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
       $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
       $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], \
       $20::int4[], $21::jsonb[], $22::int8[])";

/// The events of a large group, by binary COPY; prepared once per connection,
/// as a COPY cannot go through the unnamed statement of `query_typed`.
const COPY_EVENTS: &str = "COPY audit_log (id, \"timestamp\", ttl, principal_id, organization_id, action, \
       target_resource_type, target_resource_id, status, outcome_description, hash, hash_algorithm, \
       event_version, correlation_id, data_classification, retention_policy, processing_latency, \
       details, idempotency_key, principal_commitment, target_resource_commitment, chain_link) \
     FROM STDIN BINARY";
/// Writes the new events with binary COPY into `sink`: faster than a
/// multi-row INSERT, and streamed, so no connection keeps a buffer the size of
/// the whole group.
async fn copy_events(
    sink: tokio_postgres::CopyInSink<bytes::Bytes>,
    plan: &Plan<'_>,
    new: &[usize],
    ids: &[i64],
    link_ids: &HashMap<&str, i64>,
) -> Result<(), DbError> {
    let text = Type::VARCHAR;
    let types = [
        Type::INT8,
        Type::TIMESTAMPTZ,
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        Type::TEXT,
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        Type::INT4,
        Type::JSONB,
        text.clone(),
        text.clone(),
        text,
        Type::INT8,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = pin!(writer);
    for &i in new {
        let (event, received) = &plan.candidates[i];
        let latency = received.elapsed().as_millis().min(i32::MAX as u128) as i32;
        let details = event.details.as_ref().map(Json);
        let link = link_ids[event.organization_id.as_str()];
        writer
            .as_mut()
            .write(&[
                &ids[i],
                &event.timestamp,
                &event.ttl,
                &event.principal_id,
                &event.organization_id,
                &event.action,
                &event.target_resource_type,
                &event.target_resource_id,
                &event.status,
                &event.outcome_description,
                &event.hash,
                &HASH_ALGORITHM,
                &event.event_version,
                &event.correlation_id,
                &event.data_classification,
                &event.retention_policy,
                &latency,
                &details,
                &event.idempotency_key,
                &event.principal_commitment,
                &event.target_resource_commitment,
                &link,
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

/// Gives each organization of the group a chain head, if it has none yet. No
/// lock is taken on an existing head: that waits for [`APPEND_LINKS`].
///
/// Why `NOT EXISTS` before `ON CONFLICT`: an insert that meets an existing
/// head in the index waits for any transaction moving that head to end, so
/// each group would queue behind the previous group's COMMIT from its first
/// statement, its events included. Heads are never deleted, so a head seen
/// in the statement's snapshot is there to stay; `ON CONFLICT` is left only
/// for two groups creating a new organization's head at once.
const CREATE_HEADS: &str = "INSERT INTO audit_chain_head (organization_id, seq, link) \
     SELECT new.organization_id, 0, $2 FROM unnest($1::text[]) AS new(organization_id) \
     WHERE NOT EXISTS (SELECT 1 FROM audit_chain_head h WHERE h.organization_id = new.organization_id) \
     ON CONFLICT (organization_id) DO NOTHING";

/// The group's new links, one per organization, as the column arrays of
/// [`APPEND_LINKS`]: all but their number and hashes, which depend on the head.
#[derive(Default)]
struct NewLinks<'a> {
    orgs: Vec<&'a str>,
    link_ids: Vec<i64>,
    counts: Vec<i32>,
    first_ids: Vec<i64>,
    last_ids: Vec<i64>,
    min_timestamps: Vec<DateTime<Utc>>,
    max_timestamps: Vec<DateTime<Utc>>,
    /// The Merkle root of each link's events, hex.
    roots: Vec<String>,
}

impl<'a> NewLinks<'a> {
    fn new(
        plan: &Plan<'a>,
        per_org: &BTreeMap<&'a str, Vec<usize>>,
        ids: &[i64],
        link_ids: &HashMap<&str, i64>,
    ) -> Self {
        let mut links = NewLinks::default();
        for (org, members) in per_org {
            let events = members.iter().map(|&i| plan.candidates[i].0);
            let leaves: Vec<[u8; 32]> = events
                .clone()
                .map(|event| chain::parse_hash(&event.hash).expect("hashes are hex"))
                .collect();
            links.orgs.push(org);
            links.link_ids.push(link_ids[org]);
            links.counts.push(members.len() as i32);
            links.first_ids.push(ids[members[0]]);
            links.last_ids.push(ids[members[members.len() - 1]]);
            let timestamps = events.map(|event| event.timestamp);
            links
                .min_timestamps
                .push(timestamps.clone().min().expect("a link has events"));
            links
                .max_timestamps
                .push(timestamps.max().expect("a link has events"));
            links.roots.push(hex::encode(chain::merkle_root(&leaves)));
        }
        links
    }

    fn params(&self) -> [TypedParam<'_>; 9] {
        [
            (&self.orgs, Type::TEXT_ARRAY),
            (&self.link_ids, Type::INT8_ARRAY),
            (&self.counts, Type::INT4_ARRAY),
            (&self.first_ids, Type::INT8_ARRAY),
            (&self.last_ids, Type::INT8_ARRAY),
            (&self.min_timestamps, Type::TIMESTAMPTZ_ARRAY),
            (&self.max_timestamps, Type::TIMESTAMPTZ_ARRAY),
            (&self.roots, Type::TEXT_ARRAY),
            (&chain::LINK_DOMAIN, Type::BYTEA),
        ]
    }
}

/// Appends the group's links and moves the heads, in one statement under the
/// heads' locks, taken in sorted order so that concurrent groups cannot
/// deadlock. PostgreSQL numbers and hashes each link from its head
/// (`chain::link`, docs/integrity.md section 3), so the group needs no round
/// trip to read the heads, and a head stays locked only while this statement
/// and the COMMIT behind it run, not across a round trip to the worker: other
/// groups of the organization, from this worker or another, wait that long.
///
/// Under READ COMMITTED, `FOR UPDATE` returns a head's newest version once a
/// concurrent group has committed, and the UPDATE moves that version. A head
/// missing (never: [`CREATE_HEADS`] runs first in the transaction) leaves the
/// link's `seq` NULL, and the statement fails rather than skip the link.
const APPEND_LINKS: &str = "WITH new AS ( \
         SELECT * FROM unnest($1::text[], $2::int8[], $3::int4[], $4::int8[], $5::int8[], \
           $6::timestamptz[], $7::timestamptz[], $8::text[]) \
           AS n(organization_id, link_id, event_count, first_event_id, last_event_id, \
             min_timestamp, max_timestamp, merkle_root) \
     ), head AS MATERIALIZED ( \
         SELECT organization_id, seq, link, event_total FROM audit_chain_head \
         WHERE organization_id = ANY ($1) ORDER BY organization_id FOR UPDATE \
     ), linked AS ( \
         SELECT new.*, head.seq + 1 AS seq, head.link AS prev_link, \
           head.event_total + new.event_count AS event_total, \
           encode(sha256($9::bytea || decode(head.link, 'hex') || int8send(head.seq + 1) \
             || int4send(new.event_count) || decode(new.merkle_root, 'hex')), 'hex') AS link \
         FROM new LEFT JOIN head USING (organization_id) \
     ), appended AS ( \
         INSERT INTO audit_chain (organization_id, link_id, seq, event_count, first_event_id, \
           last_event_id, min_timestamp, max_timestamp, merkle_root, prev_link, link) \
         SELECT organization_id, link_id, seq, event_count, first_event_id, last_event_id, \
           min_timestamp, max_timestamp, merkle_root, prev_link, link FROM linked \
     ) \
     UPDATE audit_chain_head h \
     SET seq = l.seq, link = l.link, event_total = l.event_total, updated_at = now() \
     FROM linked l WHERE h.organization_id = l.organization_id";

/// Sends the last statements of a group in one round trip, with the COMMIT
/// when `committing`.
async fn send_last(
    client: &impl GenericClient,
    statements: Statements<'_>,
    committing: Option<&PipelinedTransaction<'_>>,
    pipeline: &[(&'static str, &[TypedParam<'_>])],
) -> Result<(), DbError> {
    match committing {
        Some(transaction) => transaction.commit_with(pipeline).await?,
        None => statements.pipelined(client, pipeline).await?,
    };
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

pub const EVENT_COLUMNS: &str = "id, \"timestamp\", organization_id, principal_id, action, status, \
    target_resource_type, target_resource_id, outcome_description, correlation_id, data_classification, \
    retention_policy, ttl, event_version, details, idempotency_key, hash, hash_algorithm, processing_latency";

pub fn stored(row: &tokio_postgres::Row) -> StoredEvent {
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

/// An `action` filter as SQL parameters: the exact action, or (for a prefix
/// ending in `*`) a `LIKE` pattern with the prefix's own `%`, `_` and `\`
/// escaped.
pub fn action_condition(action: Option<&str>) -> (Option<&str>, Option<String>) {
    match action {
        Some(action) => match action.strip_suffix('*') {
            Some(prefix) => (
                None,
                Some(format!(
                    "{}%",
                    prefix
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_")
                )),
            ),
            None => (Some(action), None),
        },
        None => (None, None),
    }
}

/// The conditions of an [`EventFilter`] but its cursor, on parameters $1
/// (the organization) to $11, whose values [`FilterValues`] gives.
pub const FILTERED_EVENTS: &str =
    "organization_id = $1 AND \"timestamp\" >= $2 AND \"timestamp\" < $3 \
     AND ($4::text IS NULL OR action = $4) \
     AND ($5::text IS NULL OR action LIKE $5) \
     AND ($6::text IS NULL OR principal_id = $6) \
     AND ($7::text IS NULL OR target_resource_type = $7) \
     AND ($8::text IS NULL OR target_resource_id = $8) \
     AND ($9::text IS NULL OR status = $9) \
     AND ($10::text IS NULL OR correlation_id = $10) \
     AND ($11::text IS NULL OR data_classification = $11)";

/// The values of [`FILTERED_EVENTS`]' parameters, for a statement that
/// adds its own after them.
pub struct FilterValues<'a> {
    organization_id: &'a str,
    filter: &'a EventFilter,
    action_exact: Option<&'a str>,
    action_prefix: Option<String>,
}

impl<'a> FilterValues<'a> {
    pub fn new(organization_id: &'a str, filter: &'a EventFilter) -> Self {
        let (action_exact, action_prefix) = action_condition(filter.action.as_deref());
        Self {
            organization_id,
            filter,
            action_exact,
            action_prefix,
        }
    }

    /// $1 to $11, then `more` from $12 on.
    pub fn then<'b>(&'b self, more: &[&'b (dyn ToSql + Sync)]) -> Vec<&'b (dyn ToSql + Sync)> {
        let filter = self.filter;
        let mut values: Vec<&'b (dyn ToSql + Sync)> = vec![
            &self.organization_id,
            &filter.from,
            &filter.to,
            &self.action_exact,
            &self.action_prefix,
            &filter.principal_id,
            &filter.target_resource_type,
            &filter.target_resource_id,
            &filter.status,
            &filter.correlation_id,
            &filter.data_classification,
        ];
        values.extend_from_slice(more);
        values
    }
}

/// A page of events, newest first: `(timestamp, id)` descending, strictly after
/// the cursor, so paging never repeats or skips an event that existed when the
/// listing began.
pub async fn list(
    client: &impl GenericClient,
    organization_id: &str,
    filter: &EventFilter,
) -> Result<Vec<StoredEvent>, DbError> {
    let (after_timestamp, after_id) = filter.after.unzip();
    let filtered = FilterValues::new(organization_id, filter);
    let rows = client
        .query(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM audit_log WHERE {FILTERED_EVENTS} \
                   AND ($12::timestamptz IS NULL OR (\"timestamp\", id) < ($12, $13)) \
                 ORDER BY \"timestamp\" DESC, id DESC LIMIT $14"
            ),
            &filtered.then(&[&after_timestamp, &after_id, &filter.limit]),
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
