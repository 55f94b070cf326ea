//! Queries on `delivery_queue` and `delivery_logs`: enqueue, claim with
//! `FOR UPDATE SKIP LOCKED` and a lease, and record each attempt's outcome.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{GenericClient, Statement};
use utoipa::ToSchema;
use uuid::Uuid;

use super::connection::{PgConnection, PipelinedTransaction, TypedParam};
use super::tenant::{ROLE, SCOPE};
use super::DbError;
use crate::config::DatabaseConfig;
use crate::deliveries::body::BodyShape;
use crate::deliveries::retry::AttemptStatus;

/// The channel `NOTIFY` wakes the queue actors on.
const CHANNEL: &str = "audit_worker_delivery";

/// Subscribes the connection to the `NOTIFY`s sent as deliveries are queued
/// (or replayed). The notifications come through the connection's messages,
/// which must be polled meanwhile for this to complete.
pub async fn listen(client: &tokio_postgres::Client) -> Result<(), DbError> {
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    pub organization_id: String,
    pub destination_id: i64,
    /// pending | processing | retrying | delivered | failed
    pub status: String,
    pub priority: i16,
    pub scheduled_at: DateTime<Utc>,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub retry_count: i32,
    pub max_retries: i32,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
    pub last_error: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A delivery's status as the API shows it, for `delivery_queue` under the
/// alias given (`""` or `"q."`): "processing" is not stored (a claim only sets
/// the lease, see [`CLAIM`]), it is a pending or retrying delivery whose lease
/// runs.
macro_rules! shown_status {
    ($alias:literal) => {
        concat!(
            "CASE WHEN ",
            $alias,
            "status IN ('pending', 'retrying') AND ",
            $alias,
            "lease_expires_at > now() THEN 'processing' ELSE ",
            $alias,
            "status END"
        )
    };
}
pub(crate) use shown_status;

/// The columns a [`Delivery`] is read from, as a literal, so that the
/// statements built with `concat!` can name them too.
macro_rules! delivery_columns {
    () => {
        concat!(
            "id, organization_id, destination_id, ",
            shown_status!(""),
            " AS status, priority, scheduled_at, next_retry_at, retry_count, max_retries, idempotency_key, \
             correlation_id, last_error, processed_at, created_at, updated_at"
        )
    };
}

const COLUMNS: &str = delivery_columns!();

fn delivery(row: &tokio_postgres::Row) -> Delivery {
    Delivery {
        id: row.get("id"),
        organization_id: row.get("organization_id"),
        destination_id: row.get("destination_id"),
        status: row.get("status"),
        priority: row.get("priority"),
        scheduled_at: row.get("scheduled_at"),
        next_retry_at: row.get("next_retry_at"),
        retry_count: row.get("retry_count"),
        max_retries: row.get("max_retries"),
        idempotency_key: row.get("idempotency_key"),
        correlation_id: row.get("correlation_id"),
        last_error: row.get("last_error"),
        processed_at: row.get("processed_at"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

pub struct NewDeliveries<'a> {
    pub organization_id: &'a str,
    pub destination_ids: &'a [i64],
    pub payload: &'a Value,
    pub priority: i16,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    /// Per destination, the number of retries its schedule allows.
    pub max_retries: &'a [i32],
}

/// Queues one delivery per destination and wakes the queue actors. A repeated
/// idempotency key returns the deliveries it created the first time.
///
/// Delivery ids are UUIDv7: they start with their creation time, so the
/// deliveries a claim takes together (queued about together) sit side by
/// side in `delivery_queue_pkey` and `delivery_logs_org_delivery_idx`, and
/// claims and outcomes touch a few index pages where random (v4) ids would
/// touch one per delivery (figures in `benches/README.md`).
pub async fn enqueue(
    client: &impl GenericClient,
    new: &NewDeliveries<'_>,
) -> Result<Vec<Delivery>, DbError> {
    enqueue_named(client, new, None).await
}

/// [`enqueue`], the deliveries stored under `object_key` rather than the
/// destination's own naming (see [`Claim::object_key`]).
pub async fn enqueue_named(
    client: &impl GenericClient,
    new: &NewDeliveries<'_>,
    object_key: Option<&str>,
) -> Result<Vec<Delivery>, DbError> {
    let ids: Vec<Uuid> = new.destination_ids.iter().map(|_| Uuid::now_v7()).collect();
    let rows = client
        .query(
            &format!(
                "INSERT INTO delivery_queue (id, organization_id, destination_id, payload, priority, scheduled_at, \
                   idempotency_key, correlation_id, max_retries, object_key) \
                 SELECT i, $1, d, $3, $4, coalesce($5, now()), $6, $7, m, $10 \
                 FROM unnest($9::uuid[], $2::int8[], $8::int4[]) AS t(i, d, m) \
                 ON CONFLICT (organization_id, idempotency_key, destination_id) WHERE idempotency_key IS NOT NULL \
                 DO NOTHING RETURNING {COLUMNS}"
            ),
            &[
                &new.organization_id,
                &new.destination_ids,
                &Json(new.payload),
                &new.priority,
                &new.scheduled_at,
                &new.idempotency_key,
                &new.correlation_id,
                &new.max_retries,
                &ids,
                &object_key,
            ],
        )
        .await?;
    let mut deliveries: Vec<Delivery> = rows.iter().map(delivery).collect();
    if deliveries.len() < new.destination_ids.len() {
        if let Some(key) = new.idempotency_key {
            let existing = client
                .query(
                    BY_IDEMPOTENCY_KEY,
                    &[&new.organization_id, &key, &new.destination_ids],
                )
                .await?;
            deliveries = existing.iter().map(delivery).collect();
        }
    }
    deliveries.sort_by_key(|d| {
        new.destination_ids
            .iter()
            .position(|id| *id == d.destination_id)
    });
    announce(client).await?;
    Ok(deliveries)
}

/// Wakes the queues when the transaction it runs in commits (`NOTIFY` is
/// sent at commit, and not at all on a rollback).
pub async fn announce(client: &impl GenericClient) -> Result<(), DbError> {
    client
        .execute("SELECT pg_notify($1, '')", &[&CHANNEL])
        .await?;
    Ok(())
}

/// One request to queue a payload for some of its organization's
/// destinations, as the EnqueueActor gathers them into groups.
#[derive(Debug, Clone)]
pub struct Request {
    pub organization_id: String,
    /// Distinct, in the order the answer lists the deliveries.
    pub destination_ids: Vec<i64>,
    pub payload: Value,
    pub priority: i16,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
}

/// What a group's transaction made of one of its requests.
#[derive(Debug)]
pub enum Queued {
    /// One delivery per destination, in the request's order (those a
    /// repeated idempotency key created the first time, if so).
    Deliveries(Vec<Delivery>),
    /// These destinations (position in the request, id) are not the
    /// organization's, or were deleted: nothing of the request was queued.
    UnknownDestinations(Vec<(usize, i64)>),
}

/// Queues the deliveries of several requests of the organization `$1`: one
/// element of `$2`..`$4` per delivery (its id, destination, and the request
/// it belongs to), one of `$6`..`$10` per request. A request naming a
/// destination the organization does not have (or deleted) is left out
/// whole. Returns a row per delivery inserted, and at least one: each row
/// also names the destinations left out (`unknown_requests`,
/// `unknown_destinations`), seen in the same snapshot as the insert, so the
/// two agree.
///
/// A delivery's retries are its destination's number of `retry_schedule`
/// entries, as [`DeliverySettings::retry_waits`] counts them (settings are
/// validated and stored whole on save, so every entry parses); `$5` for a
/// destination without settings. Counted here, not read first, so that a
/// group takes one round trip.
///
/// [`DeliverySettings::retry_waits`]: crate::deliveries::destination::DeliverySettings::retry_waits
const INSERT_GROUP: &str = concat!(
    "WITH wanted AS ( \
       SELECT w.id, w.destination_id, w.request, dd.id IS NOT NULL AS known, \
         coalesce(jsonb_array_length(dd.settings -> 'retry_schedule'), $5) AS max_retries \
       FROM unnest($2::uuid[], $3::int8[], $4::int8[]) AS w(id, destination_id, request) \
       LEFT JOIN delivery_destinations dd \
         ON dd.organization_id = $1 AND dd.id = w.destination_id AND dd.deleted_at IS NULL), \
     inserted AS ( \
       INSERT INTO delivery_queue (id, organization_id, destination_id, payload, priority, scheduled_at, \
         idempotency_key, correlation_id, max_retries) \
       SELECT w.id, $1, w.destination_id, r.payload, r.priority, coalesce(r.scheduled_at, now()), \
         r.idempotency_key, r.correlation_id, w.max_retries \
       FROM wanted w \
       JOIN unnest($6::jsonb[], $7::int2[], $8::timestamptz[], $9::text[], $10::text[]) \
         WITH ORDINALITY AS r(payload, priority, scheduled_at, idempotency_key, correlation_id, request) \
         ON r.request = w.request \
       WHERE NOT EXISTS (SELECT 1 FROM wanted m WHERE m.request = w.request AND NOT m.known) \
       ON CONFLICT (organization_id, idempotency_key, destination_id) WHERE idempotency_key IS NOT NULL \
       DO NOTHING RETURNING ",
    delivery_columns!(),
    ") \
     SELECT u.unknown_requests, u.unknown_destinations, i.* \
     FROM (SELECT array_agg(request) AS unknown_requests, array_agg(destination_id) AS unknown_destinations \
           FROM wanted WHERE NOT known) u \
     LEFT JOIN inserted i ON true"
);

/// The deliveries an idempotency key created for some destinations.
const BY_IDEMPOTENCY_KEY: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " FROM delivery_queue WHERE organization_id = $1 AND idempotency_key = $2 AND destination_id = ANY($3)"
);

/// Wakes the queue actors (of every worker) for deliveries just committed,
/// in a transaction of its own whose commit does not wait for the WAL flush.
/// `due`: when the earliest of them is due, if later than now.
///
/// Why not in the enqueueing transaction: PostgreSQL serializes notifying
/// commits (each holds the notification queue's lock until its commit is
/// flushed), so the flushes of concurrent enqueues could not be shared, and
/// a `NOTIFY` per request capped enqueueing at one WAL flush per request (884
/// deliveries/s, `benches/delivery.rs`). Here the lock is held for
/// microseconds. A crash between the two commits loses only the wake-up:
/// the queues' poll (`delivery.poll_interval`) finds the deliveries.
///
/// Why the due time: a queue woken for deliveries due later would claim at
/// once and find nothing; under a stream of such enqueues those empty claims
/// ran back to back, competing with the enqueues for PostgreSQL. A queue
/// waits until that time instead (see [`due_of`]).
pub async fn wake(
    client: &tokio_postgres::Client,
    due: Option<DateTime<Utc>>,
) -> Result<(), DbError> {
    // Rounded up: a queue woken a moment early would find nothing due yet.
    let payload = due.map_or_else(String::new, |due| {
        let partial = due.timestamp_subsec_nanos() % 1_000_000 != 0;
        (due.timestamp_millis() + i64::from(partial)).to_string()
    });
    // A statement outside a transaction block is a transaction of its own,
    // and its local setting holds for its commit.
    client
        .execute_typed(
            "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)",
            &[(&CHANNEL, Type::TEXT), (&payload, Type::TEXT)],
        )
        .await?;
    Ok(())
}

/// When the deliveries a notification announces are due: `None` for now
/// (the empty payload, as every other `NOTIFY` on the channel sends).
pub fn due_of(payload: &str) -> Option<DateTime<Utc>> {
    payload
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_millis)
}

/// Queues every request of a group in one transaction. It sends no
/// `NOTIFY`: the caller wakes the queues with [`wake`] once it committed.
/// `default_retries`: the retries of a destination without settings.
///
/// The statements are sent without waiting for one another (pipelined, each
/// prepared once per connection) and run in order: a group takes one round
/// trip (BEGIN, the inserts and COMMIT) however many requests and
/// organizations it holds. A group with an idempotency key commits in a
/// round trip of its own, after looking up what a key seen before created,
/// if any. Each organization's statements run under its own scope, so
/// row-level security holds inside a group of several organizations.
///
/// A request naming a destination its organization does not have fails
/// alone ([`Queued::UnknownDestinations`]); anything PostgreSQL refuses fails
/// the whole transaction, and the caller decides what to try again.
#[tracing::instrument(skip_all, fields(requests = requests.len()))]
pub async fn enqueue_group(
    connection: &mut PgConnection,
    requests: &[Request],
    default_retries: i32,
) -> Result<Vec<Queued>, DbError> {
    let transaction = connection.begin_pipelined().await;
    transaction
        .run(enqueue_in(&transaction, requests, default_retries))
        .await
}

/// [`enqueue_group`]'s statements, in `transaction`.
async fn enqueue_in(
    transaction: &PipelinedTransaction<'_>,
    requests: &[Request],
    default_retries: i32,
) -> Result<Vec<Queued>, DbError> {
    let organizations = by_organization(requests);
    let (client, statements) = (transaction.client(), transaction.statements());
    let inserts: Vec<GroupInsert> = organizations
        .iter()
        .map(|group| {
            let mut insert = GroupInsert::default();
            for &index in &group.requests {
                insert.add(index, &requests[index]);
            }
            insert
        })
        .collect();

    // One round trip: BEGIN, the role, each organization's deliveries under
    // its scope, and COMMIT with them unless a key seen before leaves
    // something to look up.
    let params: Vec<[Params; 2]> = organizations
        .iter()
        .zip(&inserts)
        .map(|(group, insert)| insert.params(&group.organization, &default_retries))
        .collect();
    let role: Params = Vec::new();
    let mut pipeline = Vec::with_capacity(1 + params.len() * 2);
    pipeline.push((ROLE, &role));
    for [scope, insert] in &params {
        pipeline.extend([(SCOPE, scope), (INSERT_GROUP, insert)]);
    }
    let keyed = requests.iter().any(|r| r.idempotency_key.is_some());
    let results = if keyed {
        statements.pipelined(client, &pipeline).await?
    } else {
        transaction.commit_with(&pipeline).await?
    };

    let mut outcomes: Vec<Option<Queued>> = requests.iter().map(|_| None).collect();
    let mut repeated = Vec::new();
    for (insert, rows) in inserts
        .iter()
        .zip(results[1..].chunks(2).map(|pair| &pair[1]))
    {
        // Every row names the same destinations left out.
        let unknown: Vec<(i64, i64)> = rows
            .first()
            .and_then(|row| {
                let requests: Option<Vec<i64>> = row.get("unknown_requests");
                let destinations: Option<Vec<i64>> = row.get("unknown_destinations");
                Some(requests?.into_iter().zip(destinations?).collect())
            })
            .unwrap_or_default();
        let stored: HashMap<Uuid, Delivery> = rows
            .iter()
            .filter(|row| row.get::<_, Option<Uuid>>("id").is_some())
            .map(|row| (row.get("id"), delivery(row)))
            .collect();
        for (number, (&index, ids)) in insert
            .requests
            .iter()
            .zip(&insert.ids_by_request)
            .enumerate()
        {
            // `WITH ORDINALITY` counts from 1.
            let number = number as i64 + 1;
            let request = &requests[index];
            let mut unknown: Vec<(usize, i64)> = unknown
                .iter()
                .filter(|(unknown_request, _)| *unknown_request == number)
                .filter_map(|&(_, id)| {
                    let position = request.destination_ids.iter().position(|d| *d == id)?;
                    Some((position, id))
                })
                .collect();
            // In the request's order, whatever order `array_agg` gave.
            unknown.sort_unstable();
            if !unknown.is_empty() {
                outcomes[index] = Some(Queued::UnknownDestinations(unknown));
                continue;
            }
            let deliveries: Vec<Delivery> = ids
                .iter()
                .filter_map(|id| stored.get(id).cloned())
                .collect();
            if deliveries.len() < ids.len() {
                // Only a repeated idempotency key leaves rows out.
                repeated.push(index);
            }
            outcomes[index] = Some(Queued::Deliveries(deliveries));
        }
    }

    // Only when an idempotency key was seen before: what it created then.
    if !repeated.is_empty() {
        let keys: Vec<[Params; 2]> = repeated
            .iter()
            .map(|&index| {
                let request = &requests[index];
                [
                    vec![(&request.organization_id as Param, Type::TEXT)],
                    vec![
                        (&request.organization_id as Param, Type::TEXT),
                        (&request.idempotency_key as Param, Type::TEXT),
                        (&request.destination_ids as Param, Type::INT8_ARRAY),
                    ],
                ]
            })
            .collect();
        let mut pipeline = Vec::with_capacity(keys.len() * 2);
        for [scope, find] in &keys {
            pipeline.extend([(SCOPE, scope), (BY_IDEMPOTENCY_KEY, find)]);
        }
        let existing = statements.pipelined(client, &pipeline).await?;
        for (&index, rows) in repeated.iter().zip(existing.chunks(2).map(|pair| &pair[1])) {
            let order = &requests[index].destination_ids;
            let mut deliveries: Vec<Delivery> = rows.iter().map(delivery).collect();
            deliveries.sort_by_key(|d| order.iter().position(|id| *id == d.destination_id));
            outcomes[index] = Some(Queued::Deliveries(deliveries));
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or(Queued::Deliveries(Vec::new())))
        .collect())
}

type Param<'a> = &'a (dyn ToSql + Sync);
type Params<'a> = Vec<TypedParam<'a>>;

/// The requests of a group from one organization.
struct OrganizationRequests {
    organization: String,
    requests: Vec<usize>,
}

fn by_organization(requests: &[Request]) -> Vec<OrganizationRequests> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, request) in requests.iter().enumerate() {
        groups
            .entry(&request.organization_id)
            .or_default()
            .push(index);
    }
    groups
        .into_iter()
        .map(|(organization, requests)| OrganizationRequests {
            organization: organization.to_owned(),
            requests,
        })
        .collect()
}

/// The arrays of [`INSERT_GROUP`] for one organization's requests.
#[derive(Default)]
struct GroupInsert<'a> {
    /// Index in the group of each request, and its deliveries' ids.
    requests: Vec<usize>,
    ids_by_request: Vec<Vec<Uuid>>,
    // One per delivery.
    ids: Vec<Uuid>,
    destination_ids: Vec<i64>,
    /// Which request (1-based, as `WITH ORDINALITY` counts) it belongs to.
    request_numbers: Vec<i64>,
    // One per request.
    payloads: Vec<Json<&'a Value>>,
    priorities: Vec<i16>,
    scheduled_at: Vec<Option<DateTime<Utc>>>,
    idempotency_keys: Vec<Option<&'a str>>,
    correlation_ids: Vec<Option<&'a str>>,
}

impl<'a> GroupInsert<'a> {
    /// Delivery ids are UUIDv7, for the reason [`enqueue`] gives.
    fn add(&mut self, index: usize, request: &'a Request) {
        self.requests.push(index);
        self.payloads.push(Json(&request.payload));
        self.priorities.push(request.priority);
        self.scheduled_at.push(request.scheduled_at);
        self.idempotency_keys
            .push(request.idempotency_key.as_deref());
        self.correlation_ids.push(request.correlation_id.as_deref());
        let number = self.payloads.len() as i64;
        let mut ids = Vec::with_capacity(request.destination_ids.len());
        for destination_id in &request.destination_ids {
            let id = Uuid::now_v7();
            ids.push(id);
            self.ids.push(id);
            self.destination_ids.push(*destination_id);
            self.request_numbers.push(number);
        }
        self.ids_by_request.push(ids);
    }

    /// The scope's and the insert's parameters.
    fn params<'p>(&'p self, organization: &'p String, default_retries: &'p i32) -> [Params<'p>; 2] {
        [
            vec![(organization as Param, Type::TEXT)],
            vec![
                (organization as Param, Type::TEXT),
                (&self.ids as Param, Type::UUID_ARRAY),
                (&self.destination_ids as Param, Type::INT8_ARRAY),
                (&self.request_numbers as Param, Type::INT8_ARRAY),
                (default_retries as Param, Type::INT4),
                (&self.payloads as Param, Type::JSONB_ARRAY),
                (&self.priorities as Param, Type::INT2_ARRAY),
                (&self.scheduled_at as Param, Type::TIMESTAMPTZ_ARRAY),
                (&self.idempotency_keys as Param, Type::TEXT_ARRAY),
                (&self.correlation_ids as Param, Type::TEXT_ARRAY),
            ],
        ]
    }
}

/// A claimed delivery: what the destination's actor needs to perform it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: Uuid,
    pub organization_id: String,
    pub destination_id: i64,
    /// The payload's JSON text as stored: a webhook posts a document
    /// unchanged, so it is neither parsed nor written again on the way.
    pub payload: String,
    pub retry_count: i32,
    pub max_retries: i32,
    /// The order attempts go in: highest priority first, then earliest due.
    pub priority: i16,
    pub due: DateTime<Utc>,
    /// Where the delivery is stored, when the worker named it as it queued
    /// it (a checkpoint's `checkpoints/<organization>/<seq>.json`); `None`:
    /// the destination's own naming.
    pub object_key: Option<String>,
    /// How the payload is stored: a document, or a stream's batch.
    pub body: BodyShape,
    /// An attempt must start by then: half the lease after the claim was
    /// sent (its lease starts later), so the attempt and its record fit in
    /// the rest, before another worker may claim the delivery again.
    pub attempt_by: Instant,
}

/// What this worker already holds: how many claims per destination, and the
/// most it may hold for any one destination.
pub struct Held<'a> {
    pub destination_ids: &'a [i64],
    pub counts: &'a [i64],
    pub per_destination: i64,
}

/// Claims up to `$3` due deliveries of the organization `$7`, best priority
/// first, for `$2` seconds; never more for a destination than the held counts
/// (`$4`, `$5`) leave room for under `$6`, and none for disabled destinations.
/// One organization per claim: every row it reads or locks is found through
/// the organization, so Citus runs the whole claim on that organization's
/// node (`docs/scaling.md`).
///
/// A claim is its lease: it sets `lease_expires_at` and `claimed_by` and
/// leaves the status as it is. So it changes no indexed column, and the row is
/// updated in place (HOT: no new index entries, a quarter of the WAL), on the
/// page room the table's fillfactor keeps. A due row is free while it has no
/// lease, or its lease ran out and it is not this worker's: a worker never
/// re-claims its own expired claims (it is still working on them; every start
/// of a worker has a new id, so a restarted one does pick them up).
///
/// A claim reads about as many rows as it takes, plus those in flight, so
/// that a long queue does not make claims dearer. Queued work is found by
/// skipping along `delivery_queue_due_by_destination_idx` from one
/// (destination, priority) pair to the next: the same destination's next
/// lower priority, else the next destination (two probes under one `LIMIT
/// 1`, which runs the second only when the first finds nothing). The row a
/// probe finds is its pair's earliest due, so it also tells whether the pair
/// has due work; its due rows, the front of its part of the index, are then
/// read by one more. Rows queued for later are never read. Each destination
/// with due work and room gives its best free rows: no more than it has room
/// for, nor than twice its fair share of the claim (`$3` over the
/// destinations with due work; priority still decides among those offered).
/// So a destination that is full, or hangs with a long backlog, costs a few
/// probes, however long its backlog, and with 100 destinations and room for
/// 64, each offers 2 rows, not its whole room. The rows come back in table
/// order, not best first.
///
/// Only the chosen rows are then locked, `SKIP LOCKED`, and re-checked on
/// their newest version, so no item is ever handed to two workers at once.
/// Rows are found again by their address (`ctid`), not through the primary
/// key, which saves two index probes per row. An address cannot point to
/// another row in the meantime: the version the candidate scan saw is
/// visible to this statement's snapshot, so it is not pruned before the
/// statement ends. A row another transaction changed since is locked on its
/// newest version (and re-checked there), but that version is not visible to
/// this statement, so the update does not find it: the row is left for a
/// later claim, never claimed twice.
///
/// What these choices were measured against is in `benches/README.md`.
const CLAIM: &str = "\
WITH RECURSIVE held AS ( \
  SELECT * FROM unnest($4::int8[], $5::int8[]) AS h(destination_id, count)), \
queued AS ( \
  SELECT g.destination_id, g.priority, g.first_due FROM ( \
    SELECT destination_id, priority, coalesce(next_retry_at, scheduled_at) AS first_due \
    FROM delivery_queue WHERE organization_id = $7 AND status IN ('pending', 'retrying') \
    ORDER BY destination_id, priority DESC, coalesce(next_retry_at, scheduled_at) LIMIT 1) g \
  UNION ALL \
  SELECT n.destination_id, n.priority, n.first_due FROM queued w CROSS JOIN LATERAL ( \
    SELECT * FROM ( \
      (SELECT q.destination_id, q.priority, coalesce(q.next_retry_at, q.scheduled_at) AS first_due \
       FROM delivery_queue q \
       WHERE q.organization_id = $7 AND q.status IN ('pending', 'retrying') \
         AND q.destination_id = w.destination_id AND q.priority < w.priority \
       ORDER BY q.priority DESC, coalesce(q.next_retry_at, q.scheduled_at) LIMIT 1) \
      UNION ALL \
      (SELECT q.destination_id, q.priority, coalesce(q.next_retry_at, q.scheduled_at) AS first_due \
       FROM delivery_queue q \
       WHERE q.organization_id = $7 AND q.status IN ('pending', 'retrying') \
         AND q.destination_id > w.destination_id \
       ORDER BY q.destination_id, q.priority DESC, coalesce(q.next_retry_at, q.scheduled_at) LIMIT 1)) next \
    LIMIT 1) n), \
due AS ( \
  SELECT destination_id, priority FROM queued WHERE first_due <= now()), \
busy AS ( \
  SELECT greatest(count(DISTINCT destination_id), 1) AS count FROM due), \
rooms AS ( \
  SELECT d.destination_id, \
    greatest(least($6 - coalesce(h.count, 0), 2 * (($3 + busy.count - 1) / busy.count)), 0) AS share \
  FROM (SELECT DISTINCT destination_id FROM due) d CROSS JOIN busy \
  LEFT JOIN held h ON h.destination_id = d.destination_id \
  WHERE NOT EXISTS (SELECT 1 FROM delivery_destinations x \
    WHERE x.organization_id = $7 AND x.id = d.destination_id AND x.disabled)), \
candidates AS ( \
  SELECT c.*, r.share FROM due g JOIN rooms r ON r.destination_id = g.destination_id \
  CROSS JOIN LATERAL ( \
    SELECT q.ctid AS tid, q.destination_id, q.priority, coalesce(q.next_retry_at, q.scheduled_at) AS due \
    FROM delivery_queue q \
    WHERE q.organization_id = $7 AND q.destination_id = g.destination_id AND q.priority = g.priority \
      AND q.status IN ('pending', 'retrying') AND coalesce(q.next_retry_at, q.scheduled_at) <= now() \
      AND (q.lease_expires_at IS NULL OR (q.lease_expires_at < now() AND q.claimed_by <> $1)) \
    ORDER BY coalesce(q.next_retry_at, q.scheduled_at) LIMIT r.share) c), \
chosen AS ( \
  SELECT c.tid FROM ( \
    SELECT tid, priority, due, share, \
      row_number() OVER (PARTITION BY destination_id ORDER BY priority DESC, due) AS n \
    FROM candidates) c \
  WHERE c.n <= c.share \
  ORDER BY c.priority DESC, c.due LIMIT $3), \
locked AS ( \
  SELECT q.ctid AS tid FROM delivery_queue q \
  WHERE q.organization_id = $7 AND q.ctid = ANY(ARRAY(SELECT tid FROM chosen)) \
    AND q.status IN ('pending', 'retrying') AND coalesce(q.next_retry_at, q.scheduled_at) <= now() \
    AND (q.lease_expires_at IS NULL OR (q.lease_expires_at < now() AND q.claimed_by <> $1)) \
  FOR UPDATE SKIP LOCKED) \
UPDATE delivery_queue q SET claimed_by = $1, \
  lease_expires_at = now() + make_interval(secs => $2), updated_at = now() \
WHERE q.organization_id = $7 AND q.ctid = ANY(ARRAY(SELECT tid FROM locked)) \
RETURNING q.id, q.organization_id, q.destination_id, q.payload::text AS payload, q.retry_count, q.max_retries, \
  q.priority, coalesce(q.next_retry_at, q.scheduled_at) AS due, q.object_key, q.body";

/// Records attempts (`$1`..`$7` and `$9`, one array element per attempt):
/// each delivery moves on and gets its log row, but only where the claim is
/// still this worker's (`$8`). Rows are found through their organization
/// (`$9`), which Citus routes by. The log row's detail is built here from the
/// attempt's figures, so neither side writes or parses JSON text for it.
const FINISH: &str = "\
WITH input AS ( \
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::int4[], \
    $6::int4[], $7::text[], $9::text[]) \
    AS t(id, status, next_retry_at, reason, response_code, latency_ms, reference, organization_id)), \
moved AS ( \
  UPDATE delivery_queue q SET status = i.status, \
    retry_count = q.retry_count + (i.status = 'retrying')::int4, \
    next_retry_at = i.next_retry_at, last_error = i.reason, lease_expires_at = NULL, claimed_by = NULL, \
    updated_at = now(), processed_at = CASE WHEN i.status IN ('delivered', 'failed') THEN now() END \
  FROM input i WHERE q.organization_id = i.organization_id AND q.id = i.id AND q.claimed_by = $8 \
  RETURNING q.id, q.destination_id, q.organization_id, i.status, i.reason, i.response_code, \
    i.latency_ms, i.reference) \
INSERT INTO delivery_logs (delivery_id, destination_id, organization_id, status, attempts, \
  last_attempt_at, delivered_at, failure_reason, cross_system_reference) \
SELECT id::text, destination_id, organization_id, status, \
  jsonb_build_array(jsonb_build_object('at', now(), 'status', status, \
    'response_code', response_code, 'latency_ms', latency_ms)), \
  now(), CASE WHEN status = 'delivered' THEN now() END, reason, reference FROM moved";

/// A connection of the queue's own for its bookkeeping (claims, outcomes),
/// with both statements prepared once, so each claim or batch of outcomes is
/// one round trip. Its commits do not wait for the WAL flush:
/// a PostgreSQL crash can lose the last few of them, which only makes the
/// deliveries concerned run again (at least once; receivers drop repeats by
/// `webhook-id`), never loses one. Enqueueing keeps the synchronous commit:
/// an accepted delivery is durable.
pub struct Bookkeeper {
    client: tokio_postgres::Client,
    claim: Statement,
    finish: Statement,
}

impl Bookkeeper {
    async fn connect(config: &DatabaseConfig) -> Result<Self, DbError> {
        let client = super::connect_asynchronous_commit(config).await?;
        let (claim, finish) = tokio::try_join!(client.prepare(CLAIM), client.prepare(FINISH))?;
        Ok(Self {
            client,
            claim,
            finish,
        })
    }

    /// `previous` if it is still open, else a new connection.
    pub async fn reuse_or_connect(
        previous: Option<Self>,
        config: &DatabaseConfig,
    ) -> Result<Self, DbError> {
        match previous {
            Some(bookkeeper) if !bookkeeper.client.is_closed() => Ok(bookkeeper),
            _ => Self::connect(config).await,
        }
    }

    /// Claims up to `limit` due deliveries of the organization for `lease`
    /// (see [`CLAIM`]), in one statement: one round trip and one commit.
    pub async fn claim(
        &self,
        organization_id: &str,
        worker: &str,
        lease: Duration,
        limit: i64,
        held: &Held<'_>,
    ) -> Result<Vec<Claim>, DbError> {
        let attempt_by = Instant::now() + lease / 2;
        let rows = self
            .client
            .query(
                &self.claim,
                &[
                    &worker,
                    &lease.as_secs_f64(),
                    &limit,
                    &held.destination_ids,
                    &held.counts,
                    &held.per_destination,
                    &organization_id,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Claim {
                id: row.get("id"),
                organization_id: row.get("organization_id"),
                destination_id: row.get("destination_id"),
                payload: row.get("payload"),
                retry_count: row.get("retry_count"),
                max_retries: row.get("max_retries"),
                priority: row.get("priority"),
                due: row.get("due"),
                object_key: row.get("object_key"),
                body: BodyShape::from_column(row.get("body")),
                attempt_by,
            })
            .collect())
    }

    /// Records many attempts in one statement (one round trip, one commit).
    pub async fn finish_many(&self, worker: &str, attempts: &[Attempt]) -> Result<(), DbError> {
        let ids: Vec<Uuid> = attempts.iter().map(|a| a.delivery_id).collect();
        let organizations: Vec<&str> = attempts
            .iter()
            .map(|a| a.organization_id.as_str())
            .collect();
        let statuses: Vec<&str> = attempts.iter().map(|a| stored(a.status)).collect();
        let next: Vec<Option<DateTime<Utc>>> = attempts.iter().map(|a| a.next_retry_at).collect();
        let reasons: Vec<Option<&str>> = attempts
            .iter()
            .map(|a| a.failure_reason.as_deref())
            .collect();
        let codes: Vec<Option<i32>> = attempts.iter().map(|a| a.response_code).collect();
        let latencies: Vec<i32> = attempts.iter().map(|a| a.latency_ms).collect();
        let references: Vec<Option<&str>> = attempts
            .iter()
            .map(|a| a.cross_system_reference.as_deref())
            .collect();
        self.client
            .execute(
                &self.finish,
                &[
                    &ids,
                    &statuses,
                    &next,
                    &reasons,
                    &codes,
                    &latencies,
                    &references,
                    &worker,
                    &organizations,
                ],
            )
            .await?;
        Ok(())
    }
}

/// What became of one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivery_id: Uuid,
    pub organization_id: String,
    pub status: AttemptStatus,
    pub response_code: Option<i32>,
    pub latency_ms: i32,
    pub failure_reason: Option<String>,
    pub cross_system_reference: Option<String>,
    /// For `retrying`: when to try again.
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// The status as `delivery_queue` and `delivery_logs` store it.
fn stored(status: AttemptStatus) -> &'static str {
    match status {
        AttemptStatus::Delivered => "delivered",
        AttemptStatus::Retrying => "retrying",
        AttemptStatus::Failed => "failed",
    }
}

/// Gives claims of `worker` back without an attempt (the breaker is open, the
/// destination disabled, their actor gone), in one statement: they wait until
/// `until` and keep all their retries.
pub async fn release(
    client: &impl GenericClient,
    worker: &str,
    ids: &[Uuid],
    until: DateTime<Utc>,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE delivery_queue SET next_retry_at = $3, lease_expires_at = NULL, claimed_by = NULL, \
               updated_at = now() \
             WHERE id = ANY($1) AND claimed_by = $2",
            &[&ids, &worker, &until],
        )
        .await?;
    Ok(())
}

pub async fn get(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
) -> Result<Option<Delivery>, DbError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM delivery_queue WHERE organization_id = $1 AND id = $2"),
            &[&organization_id, &id],
        )
        .await?;
    Ok(row.as_ref().map(delivery))
}

/// One attempt as `GET /v1/deliveries/{id}` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptLog {
    pub status: String,
    /// The attempts the row records, each `{at, status, response_code, latency_ms}`.
    #[schema(value_type = Vec<Object>)]
    pub detail: Value,
    pub failure_reason: Option<String>,
    pub cross_system_reference: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn attempts(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
) -> Result<Vec<AttemptLog>, DbError> {
    let rows = client
        .query(
            "SELECT status, attempts, failure_reason, cross_system_reference, created_at FROM delivery_logs \
             WHERE organization_id = $1 AND delivery_id = $2 ORDER BY id",
            &[&organization_id, &id.to_string()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| AttemptLog {
            status: row.get("status"),
            detail: row.get::<_, Json<Value>>("attempts").0,
            failure_reason: row.get("failure_reason"),
            cross_system_reference: row.get("cross_system_reference"),
            created_at: row.get("created_at"),
        })
        .collect())
}

/// The organization's deliveries, newest first, those with the status shown
/// as `status` if given (see [`shown_status`]; finished deliveries hold no
/// lease). The filter names the stored status, so that, for dead letters say,
/// `delivery_queue_org_status_idx` can serve it.
pub async fn list(
    client: &impl GenericClient,
    organization_id: &str,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<Delivery>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM delivery_queue WHERE organization_id = $1 AND ($2::text IS NULL \
                   OR (status = $2 AND (lease_expires_at IS NULL OR lease_expires_at <= now())) \
                   OR ($2 = 'processing' AND status IN ('pending', 'retrying') AND lease_expires_at > now())) \
                 ORDER BY created_at DESC, id LIMIT $3"
            ),
            &[&organization_id, &status, &limit],
        )
        .await?;
    Ok(rows.iter().map(delivery).collect())
}

/// What became of a request to replay a delivery.
#[derive(Debug)]
pub enum Replay {
    /// Queued again, with its retries restored.
    Replayed(Box<Delivery>),
    NotFound,
    /// Only dead letters (`failed`) are replayed.
    NotFailed,
    /// Its destination was deleted: nothing would ever deliver it.
    DestinationDeleted(i64),
}

/// Queues a dead letter again with its retries restored, unless its
/// destination was deleted. The delivery's row stays locked until the
/// transaction ends, so a deletion of the destination meanwhile fails it
/// again after this commits.
pub async fn replay(
    client: &impl GenericClient,
    organization_id: &str,
    id: Uuid,
) -> Result<Replay, DbError> {
    let Some(found) = client
        .query_opt(
            "SELECT q.status, q.destination_id, d.deleted_at IS NOT NULL \
             FROM delivery_queue q JOIN delivery_destinations d \
               ON d.organization_id = q.organization_id AND d.id = q.destination_id \
             WHERE q.organization_id = $1 AND q.id = $2 FOR UPDATE OF q",
            &[&organization_id, &id],
        )
        .await?
    else {
        return Ok(Replay::NotFound);
    };
    let (status, destination, deleted): (String, i64, bool) =
        (found.get(0), found.get(1), found.get(2));
    if deleted {
        return Ok(Replay::DestinationDeleted(destination));
    }
    if status != "failed" {
        return Ok(Replay::NotFailed);
    }
    let row = client
        .query_one(
            &format!(
                "UPDATE delivery_queue SET status = 'pending', retry_count = 0, next_retry_at = NULL, \
                   scheduled_at = now(), processed_at = NULL, updated_at = now() \
                 WHERE organization_id = $1 AND id = $2 RETURNING {COLUMNS}"
            ),
            &[&organization_id, &id],
        )
        .await?;
    client
        .execute("SELECT pg_notify($1, '')", &[&CHANNEL])
        .await?;
    Ok(Replay::Replayed(Box::new(delivery(&row))))
}

/// The queue as the metrics show it: deliveries by unfinished status, and how
/// long the oldest due, unclaimed one has waited (seconds; 0 when none).
pub async fn queue_figures(
    client: &impl GenericClient,
) -> Result<(Vec<(String, i64)>, f64), DbError> {
    let rows = client
        .query(
            concat!(
                "SELECT s.status, count(q.id) FROM unnest(ARRAY['pending', 'retrying', 'processing']) AS s(status) \
                 LEFT JOIN (SELECT id, ",
                shown_status!(""),
                " AS status FROM delivery_queue WHERE status IN ('pending', 'retrying')) q \
                 ON q.status = s.status GROUP BY s.status"
            ),
            &[],
        )
        .await?;
    let depth = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let oldest: f64 = client
        .query_one(
            "SELECT coalesce(extract(epoch FROM now() - min(coalesce(next_retry_at, scheduled_at))), 0)::float8 \
             FROM delivery_queue WHERE status IN ('pending', 'retrying') \
               AND coalesce(next_retry_at, scheduled_at) <= now() \
               AND (lease_expires_at IS NULL OR lease_expires_at < now())",
            &[],
        )
        .await?
        .get(0);
    Ok((depth, oldest))
}
