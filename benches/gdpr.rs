//! GDPR benchmark of the release `audit-worker` binary, started as a child
//! process against a fresh database on the local PostgreSQL (127.0.0.1 only).
//!
//! One organization holds 100,000 events of a data subject (10 % of them
//! `auth.login`, which erasure with `preserve_compliance` keeps) mixed with
//! 100,000 events of 1000 other principals (1 % of which name the subject as
//! their target), all ingested in batches of 1000 before any clock starts.
//! Then, in order:
//!
//! 1. `POST /v1/gdpr/pseudonymize` (strategy `hash`) of the subject: wall
//!    time, events changed a second, the worker's CPU;
//! 2. while it runs, a probe: 2 clients posting single events of another
//!    principal in a loop, with latency p50/p99/max against the same probe
//!    run for a few seconds just before (the baseline, same run) and the
//!    ratio of their p99s: the operation changes `gdpr.batch_size` events a
//!    transaction, so ingest should never wait long on its locks;
//! 3. `POST /v1/gdpr/export` of the subject in JSON, CSV and XML, streamed and
//!    read chunk by chunk: time, bytes, MB/s, the manifest
//!    (`GET /v1/gdpr/requests/{X-Gdpr-Request-Id}`) checked against what
//!    arrived, and the worker's resident memory (VmRSS before, the highest
//!    sampled during, at the end; VmHWM before and after) to show that an
//!    export takes constant memory whatever its size;
//! 4. `POST /v1/gdpr/erase` (`preserve_compliance` true) of the subject: wall
//!    time, `records_deleted`, `compliance_records_preserved`, with the same
//!    probe against a fresh baseline;
//! 5. `POST /v1/integrity/verify` of the whole organization afterwards:
//!    `valid`, `pseudonymized`, `erased_by_gdpr` and how long it took.
//!
//! After each step it waits for PostgreSQL's statistics to be flushed and
//! prints what the step had it do on `audit_log` (index entries read, rows
//! fetched, updated, deleted, in all partitions; the probe's inserts
//! included), so that a cost can be traced to its queries. It prints figures
//! and a summary; it never asserts on time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[path = "support/figures.rs"]
mod figures;
#[path = "support/worker.rs"]
mod worker;
use figures::{grouped, mix, ms, Claims, Percentiles, Tally};
use worker::{connect, report_log, Worker};

const ORG: &str = "bench-gdpr";
const SUBJECT: &str = "subject-ada-lovelace";
const PROBE_PRINCIPAL: &str = "probe-user";
const SUBJECT_EVENTS: u64 = 100_000;
const OTHER_EVENTS: u64 = 100_000;
const OTHER_PRINCIPALS: u64 = 1000;
/// One subject event in this many is an `auth.login` (kept by erasure).
const LOGIN_EVERY: u64 = 10;
/// One other principal's event in this many names the subject as its target.
const REFERENCE_EVERY: u64 = 100;
const INGEST_BATCH: usize = 1000;
const INGEST_CLIENTS: usize = 4;
const PROBE_CLIENTS: usize = 2;
/// How long the probe runs for its baseline, just before an operation.
const BASELINE: Duration = Duration::from_secs(5);
/// A GDPR operation, export or verification gives up (and the bench with it) past this.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the worker's VmRSS is read during an export.
const RSS_SAMPLE: Duration = Duration::from_millis(25);
const FORMATS: [&str; 3] = ["json", "csv", "xml"];
/// PostgreSQL flushes a backend's statistics at most this long after its last
/// transaction.
const STATS_FLUSH: Duration = Duration::from_secs(11);

/// Actions of the subject's events other than `auth.login`.
const ACTIONS: [&str; 7] = [
    "patient.record.read",
    "patient.record.update",
    "patient.chart.export",
    "prescription.create",
    "lab.result.view",
    "auth.logout",
    "auth.mfa.challenge",
];
const USER_AGENTS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "ehr-mobile/7.3.1 (iPad; iOS 17.4; Scale/2.00)",
];
const FACILITIES: [&str; 4] = ["north-clinic", "central-hospital", "east-lab", "telehealth"];

#[tokio::main]
async fn main() {
    let worker = Worker::start(&[]).await;
    let api = Arc::new(Api::new(&worker));
    let mut summary = Summary {
        rss_idle: worker.rss_kib("VmRSS"),
        ..Summary::default()
    };

    summary.ingested = ingest(&api).await;
    let mut work = TableWork::read(&worker).await;

    let pseudonymize = measured(&worker, &api, "pseudonymize", async {
        api.operation(
            "/v1/gdpr/pseudonymize",
            json!({"principal_id": SUBJECT, "strategy": "hash"}),
        )
        .await
    })
    .await;
    let affected = pseudonymize.answer["records_affected"]
        .as_u64()
        .unwrap_or_default();
    println!(
        "pseudonymize: {} events in {:.2?}, {} ev/s, worker CPU {:.2} cores; answer {}",
        grouped(affected as f64),
        pseudonymize.took,
        grouped(affected as f64 / pseudonymize.took.as_secs_f64()),
        pseudonymize.cores,
        pseudonymize.answer
    );
    pseudonymize.print_probe();
    work = work.print_since(&worker, "pseudonymize", affected).await;
    summary.pseudonymize = Some(pseudonymize);

    for format in FORMATS {
        let export = api.export(&worker, format).await;
        export.print();
        summary.exports.push(export);
    }
    work = work.print_since(&worker, "the 3 exports", 0).await;

    let erase = measured(&worker, &api, "erase", async {
        api.operation(
            "/v1/gdpr/erase",
            json!({"principal_id": SUBJECT, "preserve_compliance": true}),
        )
        .await
    })
    .await;
    println!(
        "erase: {:.2?}, {} deleted, {} preserved, worker CPU {:.2} cores; answer {}",
        erase.took,
        grouped(erase.answer["records_deleted"].as_u64().unwrap_or_default() as f64),
        grouped(
            erase.answer["compliance_records_preserved"]
                .as_u64()
                .unwrap_or_default() as f64
        ),
        erase.cores,
        erase.answer
    );
    erase.print_probe();
    let erased = erase.answer["records_deleted"].as_u64().unwrap_or_default();
    work.print_since(&worker, "erase", erased).await;
    summary.erase = Some(erase);

    let cpu = worker.cpu_time();
    let (report, took) = api.verify().await;
    let cores = worker.cores_since(cpu, took);
    println!(
        "verify: checked {}, valid {}, pseudonymized {}, erased_by_gdpr {}, problems {} in {took:.2?}, \
         worker CPU {cores:.2} cores",
        report["checked"], report["valid"], report["pseudonymized"], report["erased_by_gdpr"],
        report["problem_count"]
    );
    if report["valid"] != true {
        println!(
            "  first problems: {}",
            report["problems"]
                .as_array()
                .map(|problems| problems.iter().take(5).cloned().collect::<Vec<_>>())
                .unwrap_or_default()
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    summary.verify = Some((report, took));
    summary.rss_final = worker.rss_kib("VmRSS");
    summary.rss_peak = worker.rss_kib("VmHWM");
    summary.print();

    let log = worker.log.clone();
    let (status, took) = worker.stop().await;
    println!("worker stopped on SIGTERM in {took:.1?}: {status}; database dropped");
    report_log(&log);
}

// ---------------------------------------------------------------------------
// The data set: the subject's events mixed with other principals'.
// ---------------------------------------------------------------------------

/// Event `n` of the data set: even numbers are the subject's, odd ones another principal's.
fn event(n: u64) -> Value {
    let half = n / 2;
    let subject = n % 2 == 0;
    let (principal, action, target_type, target) = if subject {
        let action = if half % LOGIN_EVERY == 0 {
            "auth.login"
        } else {
            ACTIONS[(mix(half, 1) % ACTIONS.len() as u64) as usize]
        };
        (
            SUBJECT.to_owned(),
            action,
            "Patient",
            format!("patient-{:06}", mix(half, 2) % 50_000),
        )
    } else {
        let principal = format!("user-{:04}", mix(half, 3) % OTHER_PRINCIPALS);
        if half % REFERENCE_EVERY == 0 {
            // An administrator acting on the subject's account.
            (principal, "admin.user.update", "User", SUBJECT.to_owned())
        } else {
            let action = if half % 10 == 1 {
                "auth.login"
            } else {
                ACTIONS[(mix(half, 4) % ACTIONS.len() as u64) as usize]
            };
            (
                principal,
                action,
                "Patient",
                format!("patient-{:06}", mix(half, 5) % 50_000),
            )
        }
    };
    let (status, outcome) = match mix(n, 6) % 20 {
        0 => (
            "failure",
            "Access denied: the principal lacks a treatment relationship",
        ),
        1 => ("attempt", "Request received, awaiting authorization"),
        _ => ("success", "Completed"),
    };
    json!({
        "principal_id": principal,
        "action": action,
        "status": status,
        "target_resource_type": target_type,
        "target_resource_id": target,
        "outcome_description": outcome,
        "correlation_id": format!("corr-{:016x}", mix(n / 4, 7)),
        "data_classification": if action.starts_with("auth.") { "INTERNAL" } else { "PHI" },
        "details": {
            "ip": format!("10.{}.{}.{}", n % 8, mix(n, 8) % 256, mix(n, 9) % 254 + 1),
            "user_agent": USER_AGENTS[(n % USER_AGENTS.len() as u64) as usize],
            "session": { "id": format!("sess-{:016x}", mix(n / 8, 10)), "mfa": n % 4 != 0 },
            "request": { "method": "GET", "duration_ms": mix(n, 11) % 400 },
            "facility": FACILITIES[(n % FACILITIES.len() as u64) as usize],
        },
    })
}

/// Every event of the data set in batches of `INGEST_BATCH`, posted by
/// `INGEST_CLIENTS` clients; the events stored.
async fn ingest(api: &Arc<Api>) -> u64 {
    let total = SUBJECT_EVENTS + OTHER_EVENTS;
    let bodies: Vec<Vec<u8>> = (0..total)
        .collect::<Vec<_>>()
        .chunks(INGEST_BATCH)
        .map(|chunk| {
            let events: Vec<Value> = chunk.iter().map(|&n| event(n)).collect();
            serde_json::to_vec(&events).expect("serialize a request body")
        })
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let bodies = Arc::new(bodies);
    let claims = Arc::new(Claims::new(
        bodies.len() as u64,
        Instant::now() + OPERATION_TIMEOUT,
    ));
    let started = Instant::now();
    let tasks: Vec<_> = (0..INGEST_CLIENTS)
        .map(|_| {
            let (api, bodies, claims) = (api.clone(), bodies.clone(), claims.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while let Some(n) = claims.claim() {
                    let started = Instant::now();
                    let outcome = api.post_events(bodies[n as usize].clone()).await;
                    tally.record(started, outcome);
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.expect("an ingest client panicked"));
    }
    let events = tally.ok * INGEST_BATCH as u64;
    println!(
        "set-up: {} events ({} of {SUBJECT}, {} of {OTHER_PRINCIPALS} other principals, {} bytes of JSON an event) \
         ingested in batches of {INGEST_BATCH} in {:.2?} ({} ev/s), {} failed requests",
        grouped(events as f64),
        grouped(SUBJECT_EVENTS as f64),
        grouped(OTHER_EVENTS as f64),
        bytes as u64 / total,
        started.elapsed(),
        grouped(events as f64 / started.elapsed().as_secs_f64()),
        tally.failures.values().sum::<u64>()
    );
    tally.print_failures();
    events
}

// ---------------------------------------------------------------------------
// The probe: single-event ingest for another principal, in a loop.
// ---------------------------------------------------------------------------

/// A running probe: `PROBE_CLIENTS` tasks posting single events until stopped.
struct Probe {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
    started: Instant,
}

impl Probe {
    fn start(api: &Arc<Api>, salt: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..PROBE_CLIENTS as u64)
            .map(|client| {
                let (api, stop) = (api.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut n = 0_u64;
                    while !stop.load(Ordering::Relaxed) {
                        let body = serde_json::to_vec(&json!({
                            "principal_id": PROBE_PRINCIPAL,
                            "action": "patient.record.read",
                            "status": "success",
                            "target_resource_type": "Patient",
                            "target_resource_id": format!("patient-{:06}", mix(n, salt * 8 + client) % 50_000),
                            "data_classification": "PHI",
                            "details": {"probe": salt, "client": client, "n": n},
                        }))
                        .expect("serialize a probe event");
                        let started = Instant::now();
                        tally.record(started, api.post_events(body).await);
                        n += 1;
                    }
                    tally
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            started: Instant::now(),
        }
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut tally = Tally::default();
        for task in self.tasks {
            tally.merge(task.await.expect("a probe client panicked"));
        }
        tally.elapsed = self.started.elapsed();
        tally
    }
}

/// Probe figures: the latencies and how many requests a second went through.
struct ProbeFigures {
    latency: Percentiles,
    rate: f64,
    failures: BTreeMap<String, u64>,
}

impl ProbeFigures {
    fn of(tally: Tally) -> Self {
        Self {
            rate: tally.ok as f64 / tally.elapsed.as_secs_f64(),
            latency: Percentiles::of(tally.latencies),
            failures: tally.failures,
        }
    }

    fn describe(&self) -> String {
        let l = &self.latency;
        format!(
            "{} requests ({} req/s), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} failed",
            grouped(l.count as f64),
            grouped(self.rate),
            ms(l.p50),
            ms(l.p99),
            ms(l.max),
            self.failures.values().sum::<u64>()
        )
    }
}

/// A GDPR operation timed with the probe running, after the probe's baseline.
struct Measured {
    name: &'static str,
    answer: Value,
    took: Duration,
    cores: f64,
    baseline: ProbeFigures,
    during: ProbeFigures,
}

impl Measured {
    fn p99_ratio(&self) -> f64 {
        self.during.latency.p99.as_secs_f64() / self.baseline.latency.p99.as_secs_f64()
    }

    fn print_probe(&self) {
        println!(
            "  probe ({PROBE_CLIENTS} clients, single events of {PROBE_PRINCIPAL}) before {}: {}",
            self.name,
            self.baseline.describe()
        );
        println!(
            "  probe during {}: {}; p99 during / before = {:.2}",
            self.name,
            self.during.describe(),
            self.p99_ratio()
        );
        for (failure, count) in self.baseline.failures.iter().chain(&self.during.failures) {
            println!("  probe failure: {count} x {failure}");
        }
    }
}

/// Runs the probe for `BASELINE`, then again while `operation` runs.
async fn measured(
    worker: &Worker,
    api: &Arc<Api>,
    name: &'static str,
    operation: impl std::future::Future<Output = Value>,
) -> Measured {
    let probe = Probe::start(api, 1);
    tokio::time::sleep(BASELINE).await;
    let baseline = ProbeFigures::of(probe.finish().await);
    let probe = Probe::start(api, 2);
    let cpu = worker.cpu_time();
    let started = Instant::now();
    let answer = operation.await;
    let took = started.elapsed();
    let cores = worker.cores_since(cpu, took);
    let during = ProbeFigures::of(probe.finish().await);
    Measured {
        name,
        answer,
        took,
        cores,
        baseline,
        during,
    }
}

/// What PostgreSQL did on `audit_log` (all its partitions, their indexes) so far.
struct TableWork {
    index_entries_read: i64,
    rows_fetched: i64,
    updated: i64,
    deleted: i64,
}

impl TableWork {
    /// Waits until every backend flushed its statistics, then reads them.
    async fn read(worker: &Worker) -> Self {
        tokio::time::sleep(STATS_FLUSH).await;
        let database = connect(&worker.database_url()).await;
        let partitions = "SELECT inhrelid FROM pg_inherits WHERE inhparent = 'audit_log'::regclass";
        let tables = database
            .query_one(
                &format!(
                    "SELECT COALESCE(sum(idx_tup_fetch + seq_tup_read), 0)::int8, \
                     COALESCE(sum(n_tup_upd), 0)::int8, COALESCE(sum(n_tup_del), 0)::int8 \
                     FROM pg_stat_user_tables WHERE relid IN ({partitions})"
                ),
                &[],
            )
            .await
            .expect("read pg_stat_user_tables");
        let indexes = database
            .query_one(
                &format!(
                    "SELECT COALESCE(sum(idx_tup_read), 0)::int8 FROM pg_stat_user_indexes \
                     WHERE relid IN ({partitions})"
                ),
                &[],
            )
            .await
            .expect("read pg_stat_user_indexes");
        Self {
            index_entries_read: indexes.get(0),
            rows_fetched: tables.get(0),
            updated: tables.get(1),
            deleted: tables.get(2),
        }
    }

    /// Prints what PostgreSQL did on `audit_log` since `self` (a step that
    /// changed `changed` events, the probe's inserts included); the new reading.
    async fn print_since(self, worker: &Worker, step: &str, changed: u64) -> Self {
        let now = Self::read(worker).await;
        let per_event = |value: i64| {
            if changed == 0 {
                String::new()
            } else {
                format!(" ({:.1} an event changed)", value as f64 / changed as f64)
            }
        };
        let entries = now.index_entries_read - self.index_entries_read;
        let rows = now.rows_fetched - self.rows_fetched;
        println!(
            "  PostgreSQL on audit_log during {step}: {} index entries read{}, {} rows fetched{}, \
             {} rows updated, {} deleted",
            grouped(entries as f64),
            per_event(entries),
            grouped(rows as f64),
            per_event(rows),
            grouped((now.updated - self.updated) as f64),
            grouped((now.deleted - self.deleted) as f64)
        );
        now
    }
}

// ---------------------------------------------------------------------------
// Exports.
// ---------------------------------------------------------------------------

struct ExportFigures {
    format: &'static str,
    took: Duration,
    /// Until the response headers arrived.
    first_byte: Duration,
    bytes: u64,
    chunks: u64,
    manifest: Value,
    sha_matches: bool,
    rss_before: u64,
    rss_max: u64,
    rss_after: u64,
    hwm_before: u64,
    hwm_after: u64,
}

impl ExportFigures {
    fn rate(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.took.as_secs_f64()
    }

    fn print(&self) {
        let count = self.manifest["count"].as_u64().unwrap_or_default();
        println!(
            "export {}: {} events, {} bytes in {:.2?} ({:.1} MB/s, {} ev/s, headers after {:.0} ms, {} chunks); \
             manifest bytes {} sha256 {}",
            self.format,
            grouped(count as f64),
            grouped(self.bytes as f64),
            self.took,
            self.rate(),
            grouped(count as f64 / self.took.as_secs_f64()),
            ms(self.first_byte),
            grouped(self.chunks as f64),
            self.manifest["bytes"],
            if self.sha_matches {
                "matches the download"
            } else {
                "DIFFERS from the download"
            }
        );
        println!(
            "  worker VmRSS {:.1} MB before, {:.1} MB at most during (sampled every {} ms), {:.1} MB at the end; \
             VmHWM {:.1} MB before, {:.1} MB after",
            mb(self.rss_before),
            mb(self.rss_max),
            RSS_SAMPLE.as_millis(),
            mb(self.rss_after),
            mb(self.hwm_before),
            mb(self.hwm_after)
        );
    }
}

// ---------------------------------------------------------------------------
// The HTTP API.
// ---------------------------------------------------------------------------

/// The worker's HTTP API with the organization's admin key.
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
                .timeout(OPERATION_TIMEOUT)
                .build()
                .expect("build the HTTP client"),
            base: worker.base_url(),
            key: worker.create_key(ORG, "org:admin"),
        }
    }

    async fn post_events(&self, body: Vec<u8>) -> Result<(), String> {
        worker::post_events(&self.client, &self.base, &self.key, body).await
    }

    /// A GDPR operation's answer (200 expected).
    async fn operation(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|error| panic!("POST {path}: {error}"));
        let status = response.status();
        let text = response.text().await.expect("an operation's answer");
        assert_eq!(status, reqwest::StatusCode::OK, "POST {path}: {text}");
        serde_json::from_str(&text).expect("a JSON answer")
    }

    /// Downloads the subject's export in `format`, reading it chunk by chunk
    /// (and the worker's VmRSS meanwhile), then fetches its manifest.
    async fn export(&self, worker: &Worker, format: &'static str) -> ExportFigures {
        let rss_before = worker.rss_kib("VmRSS");
        let hwm_before = worker.rss_kib("VmHWM");
        let mut rss_max = rss_before;
        let started = Instant::now();
        let mut response = self
            .client
            .post(format!("{}/v1/gdpr/export", self.base))
            .bearer_auth(&self.key)
            .json(&json!({"principal_id": SUBJECT, "format": format}))
            .send()
            .await
            .expect("POST /v1/gdpr/export");
        let first_byte = started.elapsed();
        let status = response.status();
        let request_id = response
            .headers()
            .get("x-gdpr-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        assert_eq!(
            status,
            reqwest::StatusCode::OK,
            "export {format}: {}",
            response.text().await.unwrap_or_default()
        );
        let request_id = request_id.expect("an X-Gdpr-Request-Id header");
        let (mut bytes, mut chunks) = (0_u64, 0_u64);
        let mut sha = Sha256::new();
        let mut sampled = Instant::now();
        while let Some(chunk) = response.chunk().await.expect("read an export chunk") {
            bytes += chunk.len() as u64;
            chunks += 1;
            sha.update(&chunk);
            if sampled.elapsed() >= RSS_SAMPLE {
                rss_max = rss_max.max(worker.rss_kib("VmRSS"));
                sampled = Instant::now();
            }
        }
        let took = started.elapsed();
        let rss_after = worker.rss_kib("VmRSS");
        rss_max = rss_max.max(rss_after);
        let hwm_after = worker.rss_kib("VmHWM");
        let digest = hex::encode(sha.finalize());
        let manifest = self.manifest(&request_id).await;
        ExportFigures {
            format,
            took,
            first_byte,
            bytes,
            chunks,
            sha_matches: manifest["sha256"] == digest.as_str(),
            manifest,
            rss_before,
            rss_max,
            rss_after,
            hwm_before,
            hwm_after,
        }
    }

    /// An export's manifest: waits (bounded) until the request stores it.
    async fn manifest(&self, request_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let request: Value = self
                .client
                .get(format!("{}/v1/gdpr/requests/{request_id}", self.base))
                .bearer_auth(&self.key)
                .send()
                .await
                .expect("GET /v1/gdpr/requests/{id}")
                .json()
                .await
                .expect("a JSON GDPR request");
            let manifest = &request["result"]["manifest"];
            if !manifest.is_null() || Instant::now() > deadline {
                return manifest.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Verifies every event of the organization; the report and how long it took.
    async fn verify(&self) -> (Value, Duration) {
        let started = Instant::now();
        let response = self
            .client
            .post(format!("{}/v1/integrity/verify", self.base))
            .bearer_auth(&self.key)
            .json(&json!({}))
            .send()
            .await
            .expect("the worker answers the verification");
        let status = response.status();
        let report: Value = response.json().await.expect("a JSON verification report");
        let took = started.elapsed();
        assert_eq!(
            status,
            reqwest::StatusCode::OK,
            "verification failed: {report}"
        );
        (report, took)
    }
}

// ---------------------------------------------------------------------------
// Summary.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Summary {
    ingested: u64,
    pseudonymize: Option<Measured>,
    exports: Vec<ExportFigures>,
    erase: Option<Measured>,
    verify: Option<(Value, Duration)>,
    rss_idle: u64,
    rss_final: u64,
    rss_peak: u64,
}

impl Summary {
    fn print(&self) {
        println!(
            "\n== summary ({} events in {ORG}: {} of the subject, {} of others; gdpr.batch_size default) ==",
            grouped(self.ingested as f64),
            grouped(SUBJECT_EVENTS as f64),
            grouped(OTHER_EVENTS as f64)
        );
        if let Some(p) = &self.pseudonymize {
            let affected = p.answer["records_affected"].as_u64().unwrap_or_default();
            println!(
                "pseudonymize (hash): {} events in {:.2?}, {} ev/s; probe p99 {:.2} ms before, {:.2} ms during \
                 (x{:.2}), max during {:.2} ms",
                grouped(affected as f64),
                p.took,
                grouped(affected as f64 / p.took.as_secs_f64()),
                ms(p.baseline.latency.p99),
                ms(p.during.latency.p99),
                p.p99_ratio(),
                ms(p.during.latency.max)
            );
        }
        for e in &self.exports {
            println!(
                "export {}: {} events, {:.1} MB in {:.2?}, {:.1} MB/s; worker VmRSS {:.1} -> max {:.1} -> {:.1} MB",
                e.format,
                grouped(e.manifest["count"].as_u64().unwrap_or_default() as f64),
                e.bytes as f64 / 1e6,
                e.took,
                e.rate(),
                mb(e.rss_before),
                mb(e.rss_max),
                mb(e.rss_after)
            );
        }
        if let Some(e) = &self.erase {
            println!(
                "erase (preserve_compliance): {:.2?}, records_deleted {}, compliance_records_preserved {}, \
                 references_pseudonymized {}; probe p99 {:.2} ms before, {:.2} ms during (x{:.2}), max during {:.2} ms",
                e.took,
                grouped(e.answer["records_deleted"].as_u64().unwrap_or_default() as f64),
                grouped(
                    e.answer["compliance_records_preserved"]
                        .as_u64()
                        .unwrap_or_default() as f64
                ),
                grouped(
                    e.answer["references_pseudonymized"]
                        .as_u64()
                        .unwrap_or_default() as f64
                ),
                ms(e.baseline.latency.p99),
                ms(e.during.latency.p99),
                e.p99_ratio(),
                ms(e.during.latency.max)
            );
        }
        if let Some((report, took)) = &self.verify {
            let checked = report["checked"].as_u64().unwrap_or_default();
            println!(
                "verify (whole organization): valid {}, checked {}, pseudonymized {}, erased_by_gdpr {} in {took:.2?} \
                 ({} ev/s)",
                report["valid"],
                grouped(checked as f64),
                grouped(report["pseudonymized"].as_u64().unwrap_or_default() as f64),
                grouped(report["erased_by_gdpr"].as_u64().unwrap_or_default() as f64),
                grouped(checked as f64 / took.as_secs_f64())
            );
        }
        println!(
            "worker memory: VmRSS idle {:.1} MB, at the end {:.1} MB, peak (VmHWM) {:.1} MB",
            mb(self.rss_idle),
            mb(self.rss_final),
            mb(self.rss_peak)
        );
    }
}

/// Kibibytes (as /proc reports them) in megabytes of 10^6 bytes.
fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}
