//! Delivery benchmark of the release `audit-worker` binary, started as a child
//! process against a fresh database on the local PostgreSQL (127.0.0.1 only),
//! delivering to a webhook receiver that runs inside this process.
//!
//! Measures:
//! - webhook deliveries per second with 1, 10 and 100 destinations (all on the
//!   receiver, concurrency 4 each): `DELIVERIES_PER_RUN` deliveries queued
//!   through `POST /v1/deliveries` (every call names all the run's
//!   destinations) by `ENQUEUE_CLIENTS` concurrent clients, timed from the
//!   first enqueue until the receiver has seen every one of them;
//! - `DRAIN_DELIVERIES` deliveries drained from a full queue: written into
//!   `delivery_queue` due in an hour (setup, as `POST /v1/deliveries` writes
//!   them), made due in one statement, and timed from the `NOTIFY` after it
//!   until the receiver has seen every one: the worker's delivery rate with the
//!   HTTP enqueue out of the way;
//! - against a baseline measured in the same run: a bare `reqwest` loop posting
//!   the same bodies (byte for byte, as stored), headers and signatures to the
//!   same receiver with the same total concurrency (4 per destination, at most
//!   the worker's `max_in_flight`).
//!   Drains and bare loops take `ROUNDS` turns, and their medians are compared;
//! - the enqueue rate: `ENQUEUE_CALLS` calls of `POST /v1/deliveries`, one
//!   delivery each (due in an hour, so that none is attempted meanwhile),
//!   from `ENQUEUE_CLIENTS` clients, against a baseline in the same run: the
//!   same rows inserted straight into `delivery_queue` from as many
//!   connections, one transaction each (what PostgreSQL commits here when
//!   nothing groups the commits);
//! - enqueue-to-first-attempt latency with LISTEN/NOTIFY: single deliveries
//!   queued one at a time while the queue is idle, each timed from just before
//!   its `POST /v1/deliveries` until the receiver records its `webhook-id`;
//! - a 1-destination drain beside a backlog of `BACKLOG_ROWS` deliveries
//!   queued for later (written straight into the table, as setup), against
//!   the 1-destination drain without it: a long queue must not make claims
//!   dearer;
//! - that no `webhook-id` reached the receiver twice and every signature verifies;
//! - where the server has `pg_stat_statements` loaded, the busiest statements
//!   of each drain: calls, rows per call and time per row.
//!
//! Request bodies are built before the clocks start. It prints figures and the
//! floors the delivery issue sets; it never asserts on time.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

#[path = "support/figures.rs"]
mod figures;
#[path = "support/worker.rs"]
mod worker;
use figures::{grouped, mix, ms, verdict, Busy, Claims, MachineCpu, Percentiles};
use worker::{connect, connect_as_worker, report_log, Worker};

const ORG: &str = "bench-delivery";
/// Destinations per throughput run.
const DESTINATION_COUNTS: [usize; 3] = [1, 10, 100];
/// `settings.concurrency` of every destination.
const CONCURRENCY: usize = 4;
/// The worker's `delivery.max_in_flight` (its default), which also caps the baseline's concurrency.
const MAX_IN_FLIGHT: usize = 2048;
/// Deliveries per end-to-end run (queued through the API); a multiple of every destination count.
const DELIVERIES_PER_RUN: usize = 5_000;
/// Deliveries per drain, and requests per bare loop; a multiple of every
/// destination count. Enough for the rate to be the worker's steady one: its
/// start on a burst (the first claim, about 60 ms on a slow day) and the
/// machine's hiccups weigh a quarter of what they did in drains of 5,000.
const DRAIN_DELIVERIES: usize = 20_000;
/// Drains and bare loops per destination count, taken in turns; their medians are compared.
const ROUNDS: usize = 5;
/// Clients queueing deliveries at once.
const ENQUEUE_CLIENTS: usize = 8;
/// Calls (one delivery each) of the enqueue-rate run, and rows of its baseline.
const ENQUEUE_CALLS: usize = 20_000;
/// A throughput run (worker or baseline) stops waiting past this and reports what it saw.
const RUN_BUDGET: Duration = Duration::from_secs(60);
/// Deliveries sent through a destination of its own before the measured runs.
const WARMUP_DELIVERIES: usize = 200;
const LATENCY_WARMUP: usize = 20;
const LATENCY_SAMPLES: usize = 300;
/// How long one latency sample waits for its delivery (the poll fallback is 1 s).
const LATENCY_TIMEOUT: Duration = Duration::from_secs(3);
/// The queue rests this long between latency samples, so each starts idle.
const LATENCY_PAUSE: Duration = Duration::from_millis(20);
const LATENCY_BUDGET: Duration = Duration::from_secs(90);
/// Latency samples this slow most likely waited for the poll fallback, not a NOTIFY.
const SLOW_SAMPLE: Duration = Duration::from_millis(500);
/// Pause before each measured phase: the worker finishes recording the last one.
const SETTLE: Duration = Duration::from_secs(1);
/// `timeout_ms` of every destination, and the baseline's request timeout.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Key of every destination's `whsec_` secret; the receiver verifies each signature.
const SECRET_KEY: &[u8; 32] = b"audit-worker delivery bench key!";
const RECEIVER_WORKERS: usize = 2;
/// Healthy destinations in the run beside a dead one, and the dead one's `timeout_ms`.
const DEAD_RUN_DESTINATIONS: usize = 10;
const DEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries queued for later (one every 100 ms from an hour on) beside the backlog run's drain.
const BACKLOG_ROWS: i64 = 200_000;
/// The channel the worker LISTENs on for new deliveries.
const DELIVERY_CHANNEL: &str = "audit_worker_delivery";
/// `cargo bench --bench delivery -- enqueue`: the enqueue rate alone.
const ENQUEUE_ONLY: &str = "enqueue";

// Floors set by the delivery issue, and by issue 31 (performance).
const MIN_BARE_RATIO: f64 = 0.6;
const MAX_P99_MS: f64 = 50.0;
const MIN_ENQUEUE_RATE: f64 = 5_000.0;
/// End-to-end (HTTP enqueue, then delivery) against the bare loop, at 1 destination.
const MIN_END_TO_END_RATIO: f64 = 0.3;

const ACTIONS: [&str; 6] = [
    "patient.record.read",
    "patient.record.update",
    "patient.chart.export",
    "prescription.create",
    "lab.result.view",
    "auth.login",
];
const FACILITIES: [&str; 4] = ["north-clinic", "central-hospital", "east-lab", "telehealth"];

#[tokio::main]
async fn main() {
    let receiver = Receiver::start();
    let mut bench = Bench::start(receiver).await;
    bench.warm_up().await;
    if std::env::args().any(|arg| arg == ENQUEUE_ONLY) {
        bench.enqueue_rate().await;
        bench.summary.print();
        bench.stop().await;
        return;
    }
    // On the idle queue it is about, before the throughput runs: their
    // 400,000 deliveries write about a gigabyte of WAL, and the two
    // checkpoints it triggers made single commits take up to 150 ms.
    bench.latency().await;
    bench.enqueue_rate().await;
    for destinations in DESTINATION_COUNTS {
        bench.throughput(destinations).await;
    }
    bench.beside_a_dead_destination().await;
    bench.beside_a_backlog().await;
    bench.check_receiver();
    bench.check_queue().await;
    bench.summary.print();
    bench.stop().await;
}

/// The worker, its API, the receiver, the payloads, and the figures so far.
struct Bench {
    worker: Worker,
    api: Arc<Api>,
    receiver: Receiver,
    /// Distinct payloads: call `k` of a run carries payload `k`.
    payloads: Arc<Vec<Value>>,
    summary: Summary,
}

impl Bench {
    async fn start(receiver: Receiver) -> Self {
        let payloads: Vec<Value> = (0..DRAIN_DELIVERIES as u64).map(payload).collect();
        let bytes: usize = payloads.iter().map(|p| p.to_string().len()).sum();
        println!(
            "{} distinct payloads, {} bytes of JSON each on average; receiver on {}",
            grouped(payloads.len() as f64),
            bytes / payloads.len(),
            receiver.url
        );
        let worker = Worker::start(&[
            (
                "AUDIT_WORKER__DELIVERY__MAX_IN_FLIGHT",
                MAX_IN_FLIGHT.to_string(),
            ),
            ("AUDIT_WORKER__DELIVERY__POLL_INTERVAL", "1s".to_owned()),
        ])
        .await;
        let api = Arc::new(Api::new(&worker));
        let summary = Summary {
            load_at_start: load_average(),
            ..Summary::default()
        };
        Self {
            worker,
            api,
            receiver,
            payloads: Arc::new(payloads),
            summary,
        }
    }

    /// Creates `count` webhook destinations on the receiver; their ids.
    async fn destinations(&self, count: usize) -> Vec<i64> {
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            ids.push(
                self.api
                    .create_destination(
                        &format!("bench receiver {n}"),
                        &self.receiver.url,
                        WEBHOOK_TIMEOUT,
                    )
                    .await,
            );
        }
        ids
    }

    /// Some deliveries through a destination of their own, so that the worker's
    /// connections (PostgreSQL pool, HTTP client) are open before the clocks start.
    async fn warm_up(&mut self) {
        let destination = self.destinations(1).await;
        let bodies = Arc::new(
            self.payloads[..WARMUP_DELIVERIES]
                .iter()
                .map(|p| enqueue_body(&destination, p))
                .collect::<Vec<_>>(),
        );
        let run = self.deliver(bodies).await;
        println!(
            "warm-up: {} of {} deliveries in {:.2?}",
            run.seen, run.expected, run.elapsed
        );
        self.summary.absorb_failures("enqueue", &run.failures);
    }

    /// The worker with `destinations` destinations, then the bare baseline.
    async fn throughput(&mut self, destinations: usize) {
        let ids = self.destinations(destinations).await;
        let calls = DELIVERIES_PER_RUN / destinations;
        let bodies = Arc::new(
            self.payloads[..calls]
                .iter()
                .map(|p| enqueue_body(&ids, p))
                .collect::<Vec<_>>(),
        );
        tokio::time::sleep(SETTLE).await;
        let cpu = self.worker.cpu_time();
        let run = self.deliver(bodies).await;
        let cores = self.worker.cores_since(cpu, run.elapsed);
        let worker_rate = run.seen as f64 / run.elapsed.as_secs_f64();
        println!(
            "worker {destinations:>3} destinations: {} of {} deliveries in {:.2?} ({} deliveries/s; \
             enqueued in {:.2?} by {} calls of {destinations}, {} delivered by then), worker CPU {cores:.2} cores",
            grouped(run.seen as f64),
            grouped(run.expected as f64),
            run.elapsed,
            grouped(worker_rate),
            run.enqueued,
            grouped(calls as f64),
            grouped(run.seen_enqueued as f64)
        );
        self.summary.absorb_failures("enqueue", &run.failures);

        let concurrency = (CONCURRENCY * destinations).min(MAX_IN_FLIGHT);
        let stored = self.as_stored(DRAIN_DELIVERIES / destinations).await;
        let bare_bodies: Vec<Vec<u8>> = (0..DRAIN_DELIVERIES)
            .map(|n| stored[n / destinations].clone())
            .collect();
        let mut drains = Vec::with_capacity(ROUNDS);
        let mut bare_rates = Vec::with_capacity(ROUNDS);
        for round in 1..=ROUNDS {
            let held = self.hold(&ids, DRAIN_DELIVERIES / destinations).await;
            let drain = self.drain(held, &[]).await;
            println!(
                "drain  {destinations:>3} destinations, round {round}: {} of {} held deliveries in {:.2?} after \
                 their release ({} deliveries/s; {}), worker CPU {:.2} cores, PostgreSQL {:.2}, machine {:.2} of {} cores",
                grouped(drain.seen as f64),
                grouped(drain.expected as f64),
                drain.elapsed,
                grouped(drain.rate()),
                drain.describe_progress(),
                drain.cores,
                drain.machine.postgres,
                drain.machine.machine,
                MachineCpu::cores()
            );
            for statement in &drain.statements {
                println!("  statement: {}", statement.describe());
            }

            tokio::time::sleep(SETTLE).await;
            let bare = bare_posts(
                &self.receiver.url,
                destinations,
                concurrency,
                bare_bodies.clone(),
            )
            .await;
            let bare_rate = bare.ok as f64 / bare.elapsed.as_secs_f64();
            println!(
                "bare   {destinations:>3} destinations, round {round}: {} requests in {:.2?} ({} requests/s, \
                 {concurrency} concurrent), machine {:.2} cores, ratio drain/bare {:.2}",
                grouped(bare.ok as f64),
                bare.elapsed,
                grouped(bare_rate),
                bare.machine_cores,
                drain.rate() / bare_rate,
            );
            self.summary.absorb_failures("bare", &bare.failures);
            drains.push(drain);
            bare_rates.push(bare_rate);
        }
        // Medians: one round disturbed by something else on the machine
        // moves neither side of the ratio.
        drains.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        bare_rates.sort_by(f64::total_cmp);
        let drain = drains.swap_remove(ROUNDS / 2);
        let bare_rate = bare_rates[ROUNDS / 2];
        self.summary.throughput.push(Throughput {
            destinations,
            concurrency,
            worker: worker_rate,
            bare: bare_rate,
            seen: run.seen,
            expected: run.expected,
            enqueued: run.enqueued,
            cores,
            drain,
        });
    }

    /// Queues every body from `ENQUEUE_CLIENTS` clients and waits until the
    /// receiver has seen every delivery the calls created (or the budget ran out).
    async fn deliver(&self, bodies: Arc<Vec<Vec<u8>>>) -> Delivered {
        let unique_before = self.receiver.state.unique.load(Ordering::Relaxed);
        let started = Instant::now();
        let deadline = started + RUN_BUDGET;
        let (ids, failures) = self.enqueue_all(bodies, deadline).await;
        let enqueued = started.elapsed();
        let seen_enqueued = self.receiver.state.unique.load(Ordering::Relaxed) - unique_before;
        let (seen, elapsed) = self.wait_seen(&ids, unique_before, started, deadline).await;
        Delivered {
            expected: ids.len() as u64,
            seen,
            enqueued,
            seen_enqueued,
            elapsed,
            failures,
        }
    }

    /// Queues payload `k`, for each `k` below `calls`, to each of
    /// `destinations`, due in an hour; the deliveries' ids. The rows are
    /// written straight into `delivery_queue`, as setup: they are those
    /// `POST /v1/deliveries` writes (UUIDv7 ids, in call order, one per
    /// destination), but 20,000 single-destination calls, each waiting for its
    /// commit to be flushed, took a minute on a slow day.
    async fn hold(&self, destinations: &[i64], calls: usize) -> Vec<Uuid> {
        let count = calls * destinations.len();
        let (mut ids, mut destination_ids, mut payloads) = (
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
        );
        for payload in &self.payloads[..calls] {
            let text = payload.to_string();
            for destination in destinations {
                ids.push(Uuid::now_v7());
                destination_ids.push(*destination);
                payloads.push(text.clone());
            }
        }
        connect(&self.worker.database_url())
            .await
            .execute(
                "INSERT INTO delivery_queue (id, organization_id, destination_id, payload, scheduled_at) \
                 SELECT i, $1, d, p::jsonb, now() + interval '1 hour' \
                 FROM unnest($2::uuid[], $3::int8[], $4::text[]) AS t(i, d, p)",
                &[&ORG, &ids, &destination_ids, &payloads],
            )
            .await
            .expect("queue the held deliveries");
        ids
    }

    /// The first `count` payloads as the worker posts them: the text
    /// PostgreSQL gives back for the stored `jsonb`, a few bytes longer than
    /// serde's (a space after each `:` and `,`).
    async fn as_stored(&self, count: usize) -> Vec<Vec<u8>> {
        let texts: Vec<String> = self.payloads[..count]
            .iter()
            .map(Value::to_string)
            .collect();
        connect(&self.worker.database_url())
            .await
            .query(
                "SELECT p::jsonb::text FROM unnest($1::text[]) WITH ORDINALITY AS t(p, n) ORDER BY n",
                &[&texts],
            )
            .await
            .expect("read payloads back as stored")
            .iter()
            .map(|row| row.get::<_, String>(0).into_bytes())
            .collect()
    }

    /// Makes the held deliveries `ids` (and `also_release`) due in one
    /// statement and times how fast the worker delivers `ids`: its delivery
    /// rate with the HTTP enqueue calls out of the way.
    async fn drain(&self, ids: Vec<Uuid>, also_release: &[Uuid]) -> Drained {
        let unique_before = self.receiver.state.unique.load(Ordering::Relaxed);
        let client = connect(&self.worker.database_url()).await;
        // What autovacuum would have done by now: this machine's PostgreSQL
        // runs without it, so each drain would find more dead rows than the
        // last, left by the earlier ones, and be slower for that alone.
        client
            .batch_execute("VACUUM (ANALYZE) delivery_queue, delivery_logs")
            .await
            .expect("vacuum the queue");
        tokio::time::sleep(SETTLE).await;
        let released: Vec<Uuid> = ids.iter().chain(also_release).copied().collect();
        // Making them due is this bench's setup, like queueing them: the
        // clocks start once it has committed, just before the NOTIFY (the
        // worker's next poll is most likely hundreds of ms away).
        client
            .execute(
                "UPDATE delivery_queue SET scheduled_at = now() WHERE id = ANY($1)",
                &[&released],
            )
            .await
            .expect("release the held deliveries");
        let counting_statements = reset_statement_figures(&client).await;
        let cpu = self.worker.cpu_time();
        let machine = MachineCpu::now();
        let started = Instant::now();
        client
            .execute("SELECT pg_notify($1, '')", &[&DELIVERY_CHANNEL])
            .await
            .expect("wake the worker");
        let (seen, elapsed) = self
            .wait_seen(&ids, unique_before, started, started + RUN_BUDGET)
            .await;
        let statements = if counting_statements {
            statement_figures(&client).await
        } else {
            Vec::new()
        };
        let arrivals = self.receiver.state.arrivals(&ids);
        let by_share = |share: f64| {
            let index = ((arrivals.len() as f64 * share).ceil() as usize).saturating_sub(1);
            arrivals
                .get(index)
                .map_or(Duration::ZERO, |at| at.saturating_duration_since(started))
        };
        Drained {
            expected: ids.len() as u64,
            seen,
            elapsed,
            progress: [by_share(0.5), by_share(0.9), by_share(0.99)],
            cores: self.worker.cores_since(cpu, elapsed),
            machine: machine.busy_since(),
            statements,
        }
    }

    /// Sends every body to `POST /v1/deliveries` from `ENQUEUE_CLIENTS` clients;
    /// the ids of the deliveries created, and the failed calls.
    async fn enqueue_all(
        &self,
        bodies: Arc<Vec<Vec<u8>>>,
        deadline: Instant,
    ) -> (Vec<Uuid>, BTreeMap<String, u64>) {
        let claims = Arc::new(Claims::new(bodies.len() as u64, deadline));
        let tasks: Vec<_> = (0..ENQUEUE_CLIENTS)
            .map(|_| {
                let (api, bodies, claims) = (self.api.clone(), bodies.clone(), claims.clone());
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    let mut failures = BTreeMap::<String, u64>::new();
                    while let Some(n) = claims.claim() {
                        match api.enqueue(bodies[n as usize].clone()).await {
                            Ok(created) => ids.extend(created),
                            Err(failure) => *failures.entry(failure).or_default() += 1,
                        }
                    }
                    (ids, failures)
                })
            })
            .collect();
        let mut ids = Vec::new();
        let mut failures = BTreeMap::new();
        for task in tasks {
            let (created, failed) = task.await.expect("an enqueue task panicked");
            ids.extend(created);
            merge_failures(&mut failures, failed);
        }
        (ids, failures)
    }

    /// Waits until the receiver has seen every one of `ids` (or the deadline);
    /// how many it saw, and the time from `started` to the last one first seen.
    async fn wait_seen(
        &self,
        ids: &[Uuid],
        unique_before: u64,
        started: Instant,
        deadline: Instant,
    ) -> (u64, Duration) {
        let expected = ids.len() as u64;
        while self.receiver.state.unique.load(Ordering::Relaxed) - unique_before < expected
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (seen, last) = self.receiver.state.first_seen_of(ids);
        let elapsed = match last {
            Some(last) if seen == expected => last.saturating_duration_since(started),
            _ => started.elapsed(),
        };
        (seen, elapsed)
    }

    /// The 10-destination drain again, with a destination that never answers
    /// sharing the queue: its deliveries (one for every call) are released
    /// with the others and time out, and must not slow the healthy ones.
    async fn beside_a_dead_destination(&mut self) {
        let black_hole = BlackHole::start().await;
        let dead = self
            .api
            .create_destination("bench black hole", &black_hole.url, DEAD_TIMEOUT)
            .await;
        let healthy = self.destinations(DEAD_RUN_DESTINATIONS).await;
        let dead_ids = self
            .hold(&[dead], DELIVERIES_PER_RUN / DEAD_RUN_DESTINATIONS)
            .await;
        let held = self
            .hold(&healthy, DRAIN_DELIVERIES / DEAD_RUN_DESTINATIONS)
            .await;
        let drain = self.drain(held, &dead_ids).await;
        let alone = self.summary.drain_rate(DEAD_RUN_DESTINATIONS);
        println!(
            "drain  {DEAD_RUN_DESTINATIONS:>3} destinations beside a dead one ({} of its deliveries released too, \
             {DEAD_TIMEOUT:?} timeout): {}; the dead one held {} connections",
            grouped(dead_ids.len() as f64),
            drain.describe_against(alone),
            black_hole.connections()
        );
        self.summary.beside_dead = Some((drain.rate(), alone));
    }

    /// One destination's drain while `BACKLOG_ROWS` deliveries of another
    /// are due later, each at its own time: they are in the due index, which
    /// claims must not walk, and in the table's statistics (the drain analyzes
    /// them), so the claim is planned for a long queue. The backlog is
    /// deleted afterwards.
    async fn beside_a_backlog(&mut self) {
        let waiting = self.destinations(1).await;
        let draining = self.destinations(1).await;
        let client = connect(&self.worker.database_url()).await;
        let started = Instant::now();
        client
            .execute(
                "INSERT INTO delivery_queue (id, organization_id, destination_id, payload, scheduled_at) \
                 SELECT gen_random_uuid(), $1, $2, jsonb_build_object('sequence', n), now() + interval '1 hour' + n * interval '100 ms' \
                 FROM generate_series(1, $3::int8) AS n",
                &[&ORG, &waiting[0], &BACKLOG_ROWS],
            )
            .await
            .expect("queue the backlog");
        println!(
            "backlog: {} deliveries queued for later in {:.2?}",
            grouped(BACKLOG_ROWS as f64),
            started.elapsed()
        );
        let held = self.hold(&draining, DRAIN_DELIVERIES).await;
        let drain = self.drain(held, &[]).await;
        let alone = self.summary.drain_rate(1);
        println!(
            "drain    1 destination beside a backlog of {}: {}",
            grouped(BACKLOG_ROWS as f64),
            drain.describe_against(alone),
        );
        self.summary.beside_backlog = Some((drain.rate(), alone));
        client
            .execute(
                "DELETE FROM delivery_queue WHERE destination_id = $1",
                &[&waiting[0]],
            )
            .await
            .expect("delete the backlog");
        client
            .batch_execute("VACUUM (ANALYZE) delivery_queue")
            .await
            .expect("vacuum the queue");
    }

    /// `ENQUEUE_CALLS` single-delivery calls from `ENQUEUE_CLIENTS` clients,
    /// due in an hour (so no attempt competes with them), against the same
    /// rows inserted by as many connections, one transaction each, straight
    /// into PostgreSQL. Both sets of rows are deleted afterwards.
    async fn enqueue_rate(&mut self) {
        let destination = self.destinations(1).await;
        let later = (Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
        let bodies = Arc::new(
            self.payloads[..ENQUEUE_CALLS]
                .iter()
                .map(|payload| {
                    serde_json::to_vec(&json!({"destination_ids": destination, "payload": payload,
                        "scheduled_at": later}))
                    .expect("serialize an enqueue body")
                })
                .collect::<Vec<_>>(),
        );
        tokio::time::sleep(SETTLE).await;
        let cpu = self.worker.cpu_time();
        let started = Instant::now();
        let (ids, failures) = self.enqueue_all(bodies, started + RUN_BUDGET).await;
        let elapsed = started.elapsed();
        let cores = self.worker.cores_since(cpu, elapsed);
        self.summary.absorb_failures("enqueue rate", &failures);
        let rate = ids.len() as f64 / elapsed.as_secs_f64();
        println!(
            "enqueue: {} of {ENQUEUE_CALLS} calls of one delivery in {elapsed:.2?} ({} deliveries/s, \
             {ENQUEUE_CLIENTS} clients), worker CPU {cores:.2} cores",
            grouped(ids.len() as f64),
            grouped(rate)
        );

        tokio::time::sleep(SETTLE).await;
        let bare = self.bare_inserts(destination[0]).await;
        println!(
            "bare   enqueue: {} single-row transactions in {:.2?} ({} rows/s, {ENQUEUE_CLIENTS} connections), \
             ratio enqueue/bare {:.2}",
            grouped(bare.rows as f64),
            bare.elapsed,
            grouped(bare.rate()),
            rate / bare.rate()
        );
        self.summary.enqueue = Some(EnqueueFigures {
            rate,
            calls: ids.len(),
            bare: bare.rate(),
        });
        let client = connect(&self.worker.database_url()).await;
        client
            .execute(
                "DELETE FROM delivery_queue WHERE destination_id = $1",
                &[&destination[0]],
            )
            .await
            .expect("delete the enqueued deliveries");
        client
            .batch_execute("VACUUM (ANALYZE) delivery_queue")
            .await
            .expect("vacuum the queue");
    }

    /// The enqueue rate's baseline: `ENQUEUE_CALLS` rows as the enqueue
    /// writes them, each inserted in a transaction of its own (autocommit,
    /// synchronous commit) by one of `ENQUEUE_CLIENTS` connections made as
    /// the worker's are (`connect_as_worker`).
    async fn bare_inserts(&self, destination: i64) -> BareInserts {
        let mut clients = Vec::with_capacity(ENQUEUE_CLIENTS);
        for _ in 0..ENQUEUE_CLIENTS {
            clients.push(connect_as_worker(&self.worker.database_url()).await);
        }
        let payloads = Arc::new(
            self.payloads[..ENQUEUE_CALLS]
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>(),
        );
        let started = Instant::now();
        let claims = Arc::new(Claims::new(ENQUEUE_CALLS as u64, started + RUN_BUDGET));
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|client| {
                let (payloads, claims) = (payloads.clone(), claims.clone());
                tokio::spawn(async move {
                    let insert = client
                        .prepare(
                            "INSERT INTO delivery_queue (id, organization_id, destination_id, payload, \
                               scheduled_at, max_retries) \
                             VALUES ($1, $2, $3, $4::text::jsonb, now() + interval '1 hour', 5)",
                        )
                        .await
                        .expect("prepare the baseline insert");
                    let mut rows = 0u64;
                    while let Some(n) = claims.claim() {
                        client
                            .execute(
                                &insert,
                                &[&Uuid::now_v7(), &ORG, &destination, &payloads[n as usize]],
                            )
                            .await
                            .expect("insert a baseline row");
                        rows += 1;
                    }
                    rows
                })
            })
            .collect();
        let mut rows = 0;
        for task in tasks {
            rows += task.await.expect("a baseline task panicked");
        }
        BareInserts {
            rows,
            elapsed: started.elapsed(),
        }
    }

    /// Single deliveries queued one at a time on an idle queue.
    async fn latency(&mut self) {
        let destination = self.destinations(1).await;
        let bodies: Vec<Vec<u8>> = self.payloads[..LATENCY_WARMUP + LATENCY_SAMPLES]
            .iter()
            .map(|p| enqueue_body(&destination, p))
            .collect();
        tokio::time::sleep(SETTLE).await;
        let deadline = Instant::now() + LATENCY_BUDGET;
        // Per delivery: until the receiver saw it, and until the POST was answered.
        let mut samples: Vec<(Duration, Duration)> = Vec::with_capacity(LATENCY_SAMPLES);
        let mut failures = BTreeMap::new();
        let mut lost = 0;
        for (n, body) in bodies.into_iter().enumerate() {
            if Instant::now() >= deadline {
                println!("latency: stopped after {n} deliveries, past {LATENCY_BUDGET:?}");
                break;
            }
            let started = Instant::now();
            let created = self.api.enqueue(body).await;
            let answered = started.elapsed();
            let measured = n >= LATENCY_WARMUP;
            match created.as_deref() {
                Ok([id]) => match self.receiver.wait_for(id, LATENCY_TIMEOUT).await {
                    Some(at) if measured => {
                        samples.push((at.saturating_duration_since(started), answered))
                    }
                    Some(_) => {}
                    None => lost += 1,
                },
                Ok(other) => {
                    *failures
                        .entry(format!("{} deliveries for one destination", other.len()))
                        .or_default() += 1
                }
                Err(failure) => *failures.entry(failure.to_owned()).or_default() += 1,
            }
            tokio::time::sleep(LATENCY_PAUSE).await;
        }
        let slow = samples.iter().filter(|(s, _)| *s >= SLOW_SAMPLE).count();
        let latency = Percentiles::of(samples.iter().map(|(s, _)| *s).collect());
        let answers = Percentiles::of(samples.iter().map(|(_, a)| *a).collect());
        samples.sort_unstable_by(|a, b| b.cmp(a));
        let slowest: Vec<String> = samples
            .iter()
            .take(5)
            .map(|(seen, answered)| {
                format!(
                    "{:.1} ms (POST answered after {:.1} ms)",
                    ms(*seen),
                    ms(*answered)
                )
            })
            .collect();
        println!(
            "latency enqueue -> first attempt: {} deliveries, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, \
             max {:.2} ms; {slow} over {SLOW_SAMPLE:?}, {lost} not seen within {LATENCY_TIMEOUT:?}; \
             POST /v1/deliveries answered in p50 {:.2} ms, p99 {:.2} ms",
            latency.count,
            ms(latency.p50),
            ms(latency.p90),
            ms(latency.p99),
            ms(latency.max),
            ms(answers.p50),
            ms(answers.p99)
        );
        println!("latency: slowest {}", slowest.join(", "));
        self.summary.absorb_failures("latency enqueue", &failures);
        self.summary.latency = latency;
        self.summary.latency_slow = slow;
        self.summary.latency_lost = lost;
    }

    fn check_receiver(&mut self) {
        let state = &self.receiver.state;
        let (ids, extra) = state.duplicates("msg_");
        self.summary.receiver = ReceiverFigures {
            requests: state.requests.load(Ordering::Relaxed),
            unique: state.unique.load(Ordering::Relaxed),
            duplicated_ids: ids,
            extra_requests: extra,
            bad_signatures: state.bad_signatures.load(Ordering::Relaxed),
        };
        let r = &self.summary.receiver;
        println!(
            "receiver: {} requests for {} webhook-ids; worker ids received more than once: {} ({} extra requests); \
             bad signatures: {}",
            grouped(r.requests as f64),
            grouped(r.unique as f64),
            r.duplicated_ids,
            r.extra_requests,
            r.bad_signatures
        );
    }

    /// What the queue and the attempt log hold after the runs (read directly from PostgreSQL).
    async fn check_queue(&mut self) {
        tokio::time::sleep(SETTLE).await;
        let client = connect(&self.worker.database_url()).await;
        let count_by = |sql: &'static str| {
            let client = &client;
            async move {
                client
                    .query(sql, &[])
                    .await
                    .expect("query the bench database")
                    .iter()
                    .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
                    .collect::<Vec<_>>()
            }
        };
        let statuses =
            count_by("SELECT status::text, count(*) FROM delivery_queue GROUP BY 1 ORDER BY 1")
                .await;
        let errors = count_by(
            "SELECT coalesce(failure_reason, status), count(*) FROM delivery_logs \
             WHERE status <> 'delivered' GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
        )
        .await;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM delivery_queue WHERE retry_count > 0), \
                   (SELECT count(*) FROM delivery_logs), \
                   (SELECT count(DISTINCT delivery_id) FROM delivery_logs), \
                   (SELECT count(*) FROM delivery_logs WHERE status <> 'delivered')",
                &[],
            )
            .await
            .expect("query the bench database");
        let queue = QueueFigures {
            statuses,
            errors,
            retried: row.get(0),
            attempts: row.get(1),
            attempted: row.get(2),
            failed_attempts: row.get(3),
        };
        println!(
            "queue: {}; {} retried; delivery_logs: {} attempts for {} deliveries, {} not delivered",
            queue.describe_statuses(),
            queue.retried,
            grouped(queue.attempts as f64),
            grouped(queue.attempted as f64),
            queue.failed_attempts
        );
        for (error, count) in &queue.errors {
            println!("  failed attempts: {count} x {error}");
        }
        self.summary.queue = Some(queue);
    }

    async fn stop(self) {
        let log = self.worker.log.clone();
        let (status, took) = self.worker.stop().await;
        println!("worker stopped on SIGTERM in {took:.1?}: {status}; database dropped");
        report_log(&log);
        self.receiver.stop().await;
    }
}

/// What one run of queued deliveries came to.
struct Delivered {
    /// Deliveries the enqueue calls created.
    expected: u64,
    /// Of those, how many the receiver saw.
    seen: u64,
    /// From the first enqueue until the last call was answered.
    enqueued: Duration,
    /// Deliveries the receiver had seen by then.
    seen_enqueued: u64,
    /// From the first enqueue until the receiver saw the last delivery (or gave up).
    elapsed: Duration,
    failures: BTreeMap<String, u64>,
}

/// What the enqueue rate's baseline did.
struct BareInserts {
    rows: u64,
    elapsed: Duration,
}

impl BareInserts {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64()
    }
}

/// The enqueue rate and its baseline, in deliveries (rows) per second.
struct EnqueueFigures {
    rate: f64,
    calls: usize,
    bare: f64,
}

/// What one drain of a full queue came to.
struct Drained {
    expected: u64,
    seen: u64,
    /// From the NOTIFY after the release of the held deliveries until the receiver saw the last one.
    elapsed: Duration,
    /// When half, nine tenths and 99 % of them had been received.
    progress: [Duration; 3],
    /// The worker's CPU during the drain, in cores.
    cores: f64,
    /// The whole machine's (worker, PostgreSQL, receiver) and PostgreSQL's, in cores.
    machine: Busy,
    /// The queue's busiest statements during the drain, where PostgreSQL
    /// has `pg_stat_statements` loaded.
    statements: Vec<StatementFigure>,
}

/// One statement's work during a drain, from `pg_stat_statements`.
struct StatementFigure {
    calls: i64,
    rows: i64,
    /// Time spent executing it, in ms (wall time in the server, so it also
    /// counts waits for a core).
    exec_ms: f64,
    /// Its first words.
    query: String,
}

/// Creates and resets `pg_stat_statements` in the bench database, so that
/// the figures read after a drain are the drain's own. False when the server
/// has not loaded it (`shared_preload_libraries`): the bench then prints none.
async fn reset_statement_figures(client: &tokio_postgres::Client) -> bool {
    client
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()",
        )
        .await
        .is_ok()
}

/// The statements that took the most execution time since the last reset.
async fn statement_figures(client: &tokio_postgres::Client) -> Vec<StatementFigure> {
    let rows = client
        .query(
            "SELECT calls, rows, total_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 60) \
             FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' \
             ORDER BY total_exec_time DESC LIMIT 4",
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|row| StatementFigure {
            calls: row.get(0),
            rows: row.get(1),
            exec_ms: row.get(2),
            query: row.get(3),
        })
        .collect()
}

impl StatementFigure {
    fn describe(&self) -> String {
        format!(
            "{} calls, {:.1} rows per call, {:.0} ms ({:.0} us per row): {}",
            grouped(self.calls as f64),
            self.rows as f64 / self.calls.max(1) as f64,
            self.exec_ms,
            self.exec_ms * 1000.0 / self.rows.max(1) as f64,
            self.query
        )
    }
}

impl Drained {
    fn rate(&self) -> f64 {
        self.seen as f64 / self.elapsed.as_secs_f64()
    }

    fn describe_progress(&self) -> String {
        let [half, most, nearly] = self.progress;
        format!("50 % after {half:.2?}, 90 % after {most:.2?}, 99 % after {nearly:.2?}")
    }

    /// This drain beside something, against the rate `alone` without it.
    fn describe_against(&self, alone: f64) -> String {
        format!(
            "{} of {} in {:.2?} ({} deliveries/s, {:.2} of the rate without it; {})",
            grouped(self.seen as f64),
            grouped(self.expected as f64),
            self.elapsed,
            grouped(self.rate()),
            self.rate() / alone,
            self.describe_progress()
        )
    }
}

/// A `POST /v1/deliveries` body: `payload` for each of `destinations`.
fn enqueue_body(destinations: &[i64], payload: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"destination_ids": destinations, "payload": payload}))
        .expect("serialize an enqueue body")
}

/// Payload number `n`: an audit event notification, a few hundred bytes.
fn payload(n: u64) -> Value {
    let action = ACTIONS[(n % ACTIONS.len() as u64) as usize];
    json!({
        "type": "audit.event.recorded",
        "sequence": n,
        "organization_id": ORG,
        "event": {
            "principal_id": format!("user-{:04}", mix(n, 1) % 1000),
            "action": action,
            "status": if n % 20 == 0 { "failure" } else { "success" },
            "target_resource_type": "Patient",
            "target_resource_id": format!("patient-{:06}", mix(n, 2) % 50_000),
            "correlation_id": format!("corr-{:016x}", mix(n / 4, 3)),
            "data_classification": if action.starts_with("auth.") { "INTERNAL" } else { "PHI" },
            "details": {
                "ip": format!("10.{}.{}.{}", n % 8, mix(n, 4) % 256, mix(n, 5) % 254 + 1),
                "facility": FACILITIES[(n % FACILITIES.len() as u64) as usize],
                "session": { "id": format!("sess-{:016x}", mix(n / 8, 6)), "mfa": n % 4 != 0 },
            },
        },
    })
}

// ---------------------------------------------------------------------------
// The webhook receiver, inside this process.
// ---------------------------------------------------------------------------

/// An actix-web server on its own thread (and actix system) answering 200 at
/// once and recording, per `webhook-id`, when it was first received and how often.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

struct Seen {
    first: Instant,
    count: u32,
}

#[derive(Default)]
struct ReceiverState {
    seen: Mutex<HashMap<String, Seen>>,
    requests: AtomicU64,
    /// Distinct `webhook-id`s received.
    unique: AtomicU64,
    bad_signatures: AtomicU64,
}

impl Receiver {
    fn start() -> Self {
        let state = Arc::new(ReceiverState::default());
        let shared = state.clone();
        let (started, bound) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("webhook-receiver".to_owned())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(web::Data::from(shared.clone()))
                            .default_service(web::to(receive))
                    })
                    .workers(RECEIVER_WORKERS)
                    .disable_signals()
                    .bind(("127.0.0.1", 0))
                    .expect("bind the webhook receiver");
                    let port = server.addrs()[0].port();
                    let server = server.run();
                    started
                        .send((port, server.handle()))
                        .expect("hand the receiver over");
                    server.await.expect("run the webhook receiver");
                })
            })
            .expect("start the receiver thread");
        let (port, handle) = bound.recv().expect("the receiver starts");
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            state,
            handle,
            thread,
        }
    }

    /// When the delivery `id` was first received, waiting up to `timeout` for it.
    async fn wait_for(&self, id: &Uuid, timeout: Duration) -> Option<Instant> {
        let key = webhook_id(id);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(seen) = self.state.seen.lock().expect("receiver lock").get(&key) {
                return Some(seen.first);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn stop(self) {
        self.handle.stop(true).await;
        self.thread.join().expect("the receiver thread ends");
    }
}

impl ReceiverState {
    fn record(&self, id: &str, at: Instant) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut seen = self.seen.lock().expect("receiver lock");
        match seen.get_mut(id) {
            Some(seen) => seen.count += 1,
            None => {
                seen.insert(
                    id.to_owned(),
                    Seen {
                        first: at,
                        count: 1,
                    },
                );
                self.unique.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// How many of the deliveries `ids` were received, and the last first receipt.
    fn first_seen_of(&self, ids: &[Uuid]) -> (u64, Option<Instant>) {
        let keys: Vec<String> = ids.iter().map(webhook_id).collect();
        let seen = self.seen.lock().expect("receiver lock");
        let firsts: Vec<Instant> = keys
            .iter()
            .filter_map(|key| seen.get(key).map(|s| s.first))
            .collect();
        (firsts.len() as u64, firsts.into_iter().max())
    }

    /// When each of the deliveries `ids` that was received was first received, in order.
    fn arrivals(&self, ids: &[Uuid]) -> Vec<Instant> {
        let seen = self.seen.lock().expect("receiver lock");
        let mut firsts: Vec<Instant> = ids
            .iter()
            .filter_map(|id| seen.get(&webhook_id(id)).map(|s| s.first))
            .collect();
        firsts.sort_unstable();
        firsts
    }

    /// Ids starting with `prefix` received more than once, and the extra requests.
    fn duplicates(&self, prefix: &str) -> (u64, u64) {
        let seen = self.seen.lock().expect("receiver lock");
        seen.iter()
            .filter(|(id, s)| id.starts_with(prefix) && s.count > 1)
            .fold((0, 0), |(ids, extra), (_, s)| {
                (ids + 1, extra + u64::from(s.count - 1))
            })
    }
}

async fn receive(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let at = Instant::now();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let id = header("webhook-id");
    let expected = signature(id, header("webhook-timestamp"), &body);
    if !header("webhook-signature")
        .split(' ')
        .any(|signature| signature == expected)
    {
        state.bad_signatures.fetch_add(1, Ordering::Relaxed);
    }
    state.record(id, at);
    HttpResponse::Ok().finish()
}

/// The `webhook-id` of delivery `id`: `msg_` and the uuid without dashes.
fn webhook_id(id: &Uuid) -> String {
    format!("msg_{}", id.simple())
}

fn secret() -> String {
    format!("whsec_{}", STANDARD.encode(SECRET_KEY))
}

/// A Standard Webhooks signature, `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
fn signature(id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET_KEY).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

// ---------------------------------------------------------------------------
// The baseline: bare HTTP posts to the receiver.
// ---------------------------------------------------------------------------

/// What the baseline's clients did.
#[derive(Default)]
struct Bare {
    ok: u64,
    failures: BTreeMap<String, u64>,
    elapsed: Duration,
    /// Cores the whole machine kept busy (this process: clients and receiver).
    machine_cores: f64,
}

/// Posts every body to the receiver, signed as the worker signs, from `concurrency` tasks.
async fn bare_posts(
    url: &str,
    destinations: usize,
    concurrency: usize,
    bodies: Vec<Vec<u8>>,
) -> Bare {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(WEBHOOK_TIMEOUT)
        .build()
        .expect("build the baseline client");
    let bodies = Arc::new(bodies);
    let machine = MachineCpu::now();
    let started = Instant::now();
    let claims = Arc::new(Claims::new(bodies.len() as u64, started + RUN_BUDGET));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, bodies, claims) = (
                client.clone(),
                url.to_owned(),
                bodies.clone(),
                claims.clone(),
            );
            tokio::spawn(async move {
                let mut bare = Bare::default();
                while let Some(n) = claims.claim() {
                    let body = bodies[n as usize].clone();
                    let id = format!("bare_{destinations}_{n}");
                    let timestamp = Utc::now().timestamp().to_string();
                    let signed = signature(&id, &timestamp, &body);
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("webhook-id", &id)
                        .header("webhook-timestamp", &timestamp)
                        .header("webhook-signature", signed)
                        .body(body)
                        .send()
                        .await;
                    match response {
                        Ok(response) if response.status() == reqwest::StatusCode::OK => {
                            bare.ok += 1
                        }
                        Ok(response) => {
                            *bare
                                .failures
                                .entry(response.status().to_string())
                                .or_default() += 1
                        }
                        Err(error) => {
                            *bare
                                .failures
                                .entry(format!("transport: {error}"))
                                .or_default() += 1
                        }
                    }
                }
                bare
            })
        })
        .collect();
    let mut bare = Bare::default();
    for task in tasks {
        let done = task.await.expect("a baseline task panicked");
        bare.ok += done.ok;
        merge_failures(&mut bare.failures, done.failures);
    }
    bare.elapsed = started.elapsed();
    bare.machine_cores = machine.busy_since().machine;
    bare
}

fn merge_failures(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (failure, count) in from {
        *into.entry(failure).or_default() += count;
    }
}

/// A TCP listener that accepts connections and never answers on them.
struct BlackHole {
    url: String,
    held: Arc<Mutex<Vec<tokio::net::TcpStream>>>,
}

impl BlackHole {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the black hole");
        let url = format!(
            "http://{}/hook",
            listener.local_addr().expect("the black hole's address")
        );
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                keep.lock().expect("black hole lock").push(stream);
            }
        });
        Self { url, held }
    }

    fn connections(&self) -> usize {
        self.held.lock().expect("black hole lock").len()
    }
}

// ---------------------------------------------------------------------------
// The worker's HTTP API.
// ---------------------------------------------------------------------------

/// The worker's HTTP API with the bench organization's admin key.
struct Api {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    fn new(worker: &Worker) -> Self {
        Self {
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("build the HTTP client"),
            base: worker.base_url(),
            key: worker.create_key(ORG, "org:admin"),
        }
    }

    /// A webhook destination on `url`, signed with the bench's secret; its id.
    async fn create_destination(&self, label: &str, url: &str, timeout: Duration) -> i64 {
        let response = self
            .client
            .post(format!("{}/v1/destinations", self.base))
            .bearer_auth(&self.key)
            .json(&json!({
                "type": "webhook",
                "label": label,
                "config": {
                    "url": url,
                    "timeout_ms": timeout.as_millis() as u64,
                    "secret": secret(),
                },
                "settings": {"concurrency": CONCURRENCY},
            }))
            .send()
            .await
            .expect("the worker answers POST /v1/destinations");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON destination");
        assert_eq!(
            status,
            reqwest::StatusCode::CREATED,
            "creating a destination failed: {body}"
        );
        body["id"].as_i64().expect("a destination id")
    }

    /// `POST /v1/deliveries`; the ids of the deliveries it created.
    async fn enqueue(&self, body: Vec<u8>) -> Result<Vec<Uuid>, String> {
        let response = self
            .client
            .post(format!("{}/v1/deliveries", self.base))
            .bearer_auth(&self.key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| format!("transport: {error}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|error| format!("body: {error}"))?;
        if status != reqwest::StatusCode::ACCEPTED {
            return Err(format!(
                "{status}: {}",
                text.chars().take(160).collect::<String>()
            ));
        }
        let list: Value =
            serde_json::from_str(&text).map_err(|error| format!("not JSON: {error}"))?;
        list["deliveries"]
            .as_array()
            .map(|deliveries| {
                deliveries
                    .iter()
                    .filter_map(|d| d["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()))
                    .collect()
            })
            .ok_or_else(|| format!("{status} without deliveries: {text}"))
    }
}

// ---------------------------------------------------------------------------
// Figures.
// ---------------------------------------------------------------------------

struct Throughput {
    destinations: usize,
    /// The baseline's concurrency.
    concurrency: usize,
    /// Deliveries per second through the worker.
    worker: f64,
    /// Requests per second of the baseline.
    bare: f64,
    seen: u64,
    expected: u64,
    enqueued: Duration,
    cores: f64,
    /// The same deliveries from a full queue.
    drain: Drained,
}

#[derive(Default)]
struct ReceiverFigures {
    requests: u64,
    unique: u64,
    duplicated_ids: u64,
    extra_requests: u64,
    bad_signatures: u64,
}

struct QueueFigures {
    /// Deliveries by status.
    statuses: Vec<(String, i64)>,
    /// The most frequent reasons of failed attempts (`delivery_logs`).
    errors: Vec<(String, i64)>,
    retried: i64,
    attempts: i64,
    attempted: i64,
    failed_attempts: i64,
}

impl QueueFigures {
    fn describe_statuses(&self) -> String {
        self.statuses
            .iter()
            .map(|(status, count)| format!("{} {status}", grouped(*count as f64)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Default)]
struct Summary {
    throughput: Vec<Throughput>,
    enqueue: Option<EnqueueFigures>,
    /// Drain rate of the healthy destinations beside a dead one, and without it.
    beside_dead: Option<(f64, f64)>,
    /// Drain rate of one destination beside a backlog, and without it.
    beside_backlog: Option<(f64, f64)>,
    latency: Percentiles,
    latency_slow: usize,
    latency_lost: usize,
    receiver: ReceiverFigures,
    queue: Option<QueueFigures>,
    /// Failed requests by phase, status (or error) and message.
    failures: BTreeMap<String, u64>,
    /// `/proc/loadavg` when the worker was ready: other work on the machine skews the figures.
    load_at_start: String,
}

impl Summary {
    /// The median drain rate measured with `destinations` destinations.
    fn drain_rate(&self, destinations: usize) -> f64 {
        self.throughput
            .iter()
            .find(|t| t.destinations == destinations)
            .map_or(f64::NAN, |t| t.drain.rate())
    }

    fn absorb_failures(&mut self, phase: &str, failures: &BTreeMap<String, u64>) {
        for (failure, count) in failures {
            *self
                .failures
                .entry(format!("{phase}: {failure}"))
                .or_default() += count;
        }
    }

    fn print(&self) {
        println!(
            "\n== summary ({} deliveries per drain and bare loop, {} per end-to-end run, concurrency \
             {CONCURRENCY} per destination, max_in_flight {MAX_IN_FLIGHT}; floors from the delivery issue) ==",
            grouped(DRAIN_DELIVERIES as f64),
            grouped(DELIVERIES_PER_RUN as f64)
        );
        if let Some(e) = &self.enqueue {
            println!(
                "enqueue {ENQUEUE_CLIENTS} clients, one delivery per call: {:>6} deliveries/s ({} of {ENQUEUE_CALLS}) \
                 (floor {}: {}); bare single-row transactions as the worker connects {:>6} rows/s, ratio {:.2}",
                grouped(e.rate),
                grouped(e.calls as f64),
                grouped(MIN_ENQUEUE_RATE),
                verdict(e.rate >= MIN_ENQUEUE_RATE && e.calls == ENQUEUE_CALLS),
                grouped(e.bare),
                e.rate / e.bare
            );
        }
        for t in &self.throughput {
            let ratio = t.drain.rate() / t.bare;
            let end_to_end = if t.destinations == 1 {
                format!(
                    " (floor {MIN_END_TO_END_RATIO}: {})",
                    verdict(t.worker / t.bare >= MIN_END_TO_END_RATIO && t.seen == t.expected)
                )
            } else {
                String::new()
            };
            println!(
                "deliveries {:>3} destinations: drain {:>6} deliveries/s ({} of {}, {:.2} cores), \
                 bare {:>6} requests/s ({:>3} concurrent), ratio {ratio:.3} (floor {MIN_BARE_RATIO}: {}); \
                 end-to-end with HTTP enqueue {:>6} deliveries/s ({} of {}, enqueued in {:.2?}, {:.2} cores), \
                 ratio {:.2}{end_to_end}",
                t.destinations,
                grouped(t.drain.rate()),
                grouped(t.drain.seen as f64),
                grouped(t.drain.expected as f64),
                t.drain.cores,
                grouped(t.bare),
                t.concurrency,
                verdict(ratio >= MIN_BARE_RATIO && t.drain.seen == t.drain.expected),
                grouped(t.worker),
                grouped(t.seen as f64),
                grouped(t.expected as f64),
                t.enqueued,
                t.cores,
                t.worker / t.bare
            );
        }
        if let Some((beside, alone)) = self.beside_dead {
            println!(
                "deliveries {DEAD_RUN_DESTINATIONS:>3} destinations beside one that never answers: {} deliveries/s, \
                 {} without it ({:.2} of it)",
                grouped(beside),
                grouped(alone),
                beside / alone
            );
        }
        if let Some((beside, alone)) = self.beside_backlog {
            println!(
                "deliveries   1 destination beside a backlog of {} queued for later: {} deliveries/s, \
                 {} without it ({:.2} of it)",
                grouped(BACKLOG_ROWS as f64),
                grouped(beside),
                grouped(alone),
                beside / alone
            );
        }
        let l = &self.latency;
        // Not measured in an `enqueue` run.
        if l.count > 0 || self.latency_lost > 0 {
            println!(
                "latency enqueue -> first attempt ({} deliveries, one at a time): p50 {:.2} ms, p90 {:.2} ms, \
                 p99 {:.2} ms, max {:.2} ms (floor p99 < {MAX_P99_MS} ms: {}); {} over {SLOW_SAMPLE:?}, {} lost",
                l.count,
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.max),
                verdict(ms(l.p99) < MAX_P99_MS && l.count == LATENCY_SAMPLES && self.latency_lost == 0),
                self.latency_slow,
                self.latency_lost
            );
        }
        let r = &self.receiver;
        println!(
            "duplicates: {} webhook-ids received more than once ({} extra requests) ({}); \
             bad signatures: {}; receiver: {} requests for {} ids",
            r.duplicated_ids,
            r.extra_requests,
            verdict(r.duplicated_ids == 0),
            r.bad_signatures,
            grouped(r.requests as f64),
            grouped(r.unique as f64)
        );
        if let Some(q) = &self.queue {
            println!(
                "queue after the runs: {}; {} retried; {} attempts logged for {} deliveries ({} not delivered)",
                q.describe_statuses(),
                q.retried,
                grouped(q.attempts as f64),
                grouped(q.attempted as f64),
                q.failed_attempts
            );
        }
        if self.failures.is_empty() {
            println!("failed requests: none");
        }
        for (failure, count) in &self.failures {
            println!("failed requests: {count} x {failure}");
        }
        println!(
            "machine: {} cores, load average (1, 5, 15 min) {} at start, {} at the end",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            self.load_at_start,
            load_average()
        );
    }
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
