//! Scheduled-report benchmark of the release `audit-worker` binary, started as
//! a child process against a fresh database on the local PostgreSQL.
//!
//! One organization holds `BENCH_EVENTS` events (default 1,000,000; half of
//! them PHI, 200 principals, 40 actions), ingested through the API in batches
//! of 1000 before any clock starts. Then, for a period holding a tenth of the
//! events and for the whole period:
//!
//! - `phi_access` (every PHI event listed) in JSON, CSV and HTML, and
//!   `access_summary` in JSON, each run with `POST /v1/reports/{id}/run`
//!   and timed until its run is `completed`; the worker's VmRSS is sampled
//!   during the run, to show that a report takes the same memory over a
//!   tenth of the events as over all of them;
//! - the baseline, in this process and the same run: the verification of the
//!   same period (`POST /v1/integrity/verify`, which every run includes) plus
//!   a bare read of the same rows through a tokio-postgres portal, written as
//!   JSON into a SHA-256 hasher; the ratio is baseline time / report time;
//! - the download of the largest output: MB/s, its SHA-256 against the run's,
//!   and the worker's memory while it streams.
//!
//! It prints figures; it never asserts on time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;

#[path = "support/figures.rs"]
mod figures;
#[path = "support/worker.rs"]
mod worker;
use figures::{grouped, mix, Claims, Tally};
use worker::{connect, report_log, Worker};

const ORG: &str = "bench-reports";
const DEFAULT_EVENTS: u64 = 1_000_000;
const INGEST_BATCH: u64 = 1000;
const INGEST_CLIENTS: usize = 4;
const PRINCIPALS: u64 = 200;
const ACTIONS: u64 = 40;
/// How often the worker's VmRSS is read during a run.
const RSS_SAMPLE: Duration = Duration::from_millis(50);
const RUN_TIMEOUT: Duration = Duration::from_secs(1800);

struct Api {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the worker answers");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn post_events(&self, body: Vec<u8>) -> Result<(), String> {
        worker::post_events(&self.client, &self.base, &self.key, body).await
    }
}

fn event(n: u64) -> Value {
    let principal = mix(n, 1) % PRINCIPALS;
    let action = mix(n, 2) % ACTIONS;
    json!({
        "principal_id": format!("user-{principal}"),
        "action": format!("patient.record.op{action}"),
        "status": if mix(n, 3) % 20 == 0 { "failure" } else { "success" },
        "data_classification": if n % 2 == 0 { "PHI" } else { "INTERNAL" },
        "target_resource_type": "patient",
        "target_resource_id": format!("p-{}", mix(n, 4) % 50_000),
        "outcome_description": "chart opened from the ward list",
        "details": {"ward": mix(n, 5) % 12, "terminal": format!("t-{}", mix(n, 6) % 300)},
    })
}

async fn ingest(api: &Arc<Api>, total: u64) {
    let batches = total.div_ceil(INGEST_BATCH);
    let claims = Arc::new(Claims::new(batches, Instant::now() + RUN_TIMEOUT));
    let started = Instant::now();
    let tasks: Vec<_> = (0..INGEST_CLIENTS)
        .map(|_| {
            let (api, claims) = (api.clone(), claims.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while let Some(batch) = claims.claim() {
                    let first = batch * INGEST_BATCH;
                    let events: Vec<Value> = (first..(first + INGEST_BATCH).min(total))
                        .map(event)
                        .collect();
                    let body = serde_json::to_vec(&events).expect("serialize a batch");
                    let started = Instant::now();
                    tally.record(started, api.post_events(body).await);
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.expect("an ingest client"));
    }
    tally.print_failures();
    let elapsed = started.elapsed();
    println!(
        "ingested {} events in {elapsed:.1?} ({} events/s)",
        grouped(total as f64),
        grouped(total as f64 / elapsed.as_secs_f64())
    );
}

struct Measured {
    elapsed: Duration,
    records: u64,
    bytes: u64,
    rss_before_mb: f64,
    rss_max_mb: f64,
    execution: Value,
}

/// Creates a report over `[from, to)`, runs it and waits for the run,
/// sampling the worker's memory.
async fn run_report(
    api: &Api,
    worker: &Worker,
    name: &str,
    report_type: &str,
    format: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> Measured {
    let report = api
        .call(
            reqwest::Method::POST,
            "/v1/reports",
            Some(
                json!({"name": name, "report_type": report_type, "format": format,
                "criteria": {"time_range": {"from": from, "to": to}},
                "schedule": {"cron": "0 0 1 1 *", "timezone": "UTC"}}),
            ),
        )
        .await;
    let id = report["id"].as_str().expect("a report id").to_owned();
    let rss_before = worker.rss_kib("VmRSS");
    let started = Instant::now();
    let queued = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/reports/{id}/run"),
            None,
        )
        .await;
    let path = format!(
        "/v1/reports/{id}/executions/{}",
        queued["id"].as_str().expect("a run id")
    );
    let mut rss_max = rss_before;
    let execution = loop {
        let execution = api.call(reqwest::Method::GET, &path, None).await;
        rss_max = rss_max.max(worker.rss_kib("VmRSS"));
        match execution["status"].as_str() {
            Some("completed") => break execution,
            Some("failed") => panic!("the run failed: {execution}"),
            _ => {
                assert!(started.elapsed() < RUN_TIMEOUT, "the run took too long");
                tokio::time::sleep(RSS_SAMPLE).await;
            }
        }
    };
    Measured {
        elapsed: started.elapsed(),
        records: execution["records_processed"].as_u64().unwrap_or(0),
        bytes: execution["output_bytes"].as_u64().unwrap_or(0),
        rss_before_mb: rss_before as f64 / 1024.0,
        rss_max_mb: rss_max as f64 / 1024.0,
        execution,
    }
}

/// The baseline of a `phi_access` run: the period's verification through the
/// API, then the same rows read through a portal and written as JSON into a
/// hasher.
async fn baseline(
    api: &Api,
    database_url: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> (Duration, Duration, u64) {
    let started = Instant::now();
    let report = api
        .call(
            reqwest::Method::POST,
            "/v1/integrity/verify",
            Some(json!({"from": from, "to": to})),
        )
        .await;
    assert_eq!(report["valid"], true, "{report}");
    let verify = started.elapsed();
    let mut client = connect(database_url).await;
    let started = Instant::now();
    let transaction = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .expect("a read transaction");
    let statement = transaction
        .prepare(
            "SELECT \"timestamp\", id, principal_id, action, status, target_resource_type, target_resource_id, \
               outcome_description, correlation_id FROM audit_log \
             WHERE organization_id = $1 AND \"timestamp\" >= $2 AND \"timestamp\" < $3 \
               AND data_classification = 'PHI' ORDER BY \"timestamp\", id",
        )
        .await
        .expect("prepare the baseline query");
    let parameters: [&(dyn ToSql + Sync); 3] = [&ORG, &from, &to];
    let portal = transaction
        .bind(&statement, &parameters)
        .await
        .expect("bind the baseline portal");
    let mut hasher = Sha256::new();
    let mut rows_read = 0u64;
    loop {
        let rows = transaction
            .query_portal(&portal, 1000)
            .await
            .expect("fetch rows");
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let line = json!({
                "timestamp": row.get::<_, DateTime<Utc>>(0),
                "event_id": row.get::<_, i64>(1),
                "principal_id": row.get::<_, String>(2),
                "action": row.get::<_, String>(3),
                "status": row.get::<_, String>(4),
                "target_resource_type": row.get::<_, Option<String>>(5),
                "target_resource_id": row.get::<_, Option<String>>(6),
                "outcome_description": row.get::<_, Option<String>>(7),
                "correlation_id": row.get::<_, Option<String>>(8),
            });
            hasher.update(serde_json::to_vec(&line).expect("serialize a row"));
            rows_read += 1;
        }
    }
    transaction.commit().await.expect("end the read");
    let _ = hasher.finalize();
    (verify, started.elapsed(), rows_read)
}

/// Downloads a run's output, checking its SHA-256 and sampling memory.
async fn download(api: &Api, worker: &Worker, execution: &Value) -> (Duration, u64, f64, bool) {
    let path = format!(
        "{}/v1/reports/{}/executions/{}/output",
        api.base,
        execution["report_id"].as_str().expect("a report id"),
        execution["id"].as_str().expect("a run id")
    );
    let started = Instant::now();
    let response = api
        .client
        .get(path)
        .bearer_auth(&api.key)
        .send()
        .await
        .expect("the download starts");
    assert_eq!(response.status(), 200);
    let mut response = response;
    let (mut bytes, mut hasher) = (0u64, Sha256::new());
    let mut rss_max = worker.rss_kib("VmRSS");
    let mut sampled = Instant::now();
    while let Some(chunk) = response.chunk().await.expect("a chunk") {
        bytes += chunk.len() as u64;
        hasher.update(&chunk);
        if sampled.elapsed() >= RSS_SAMPLE {
            rss_max = rss_max.max(worker.rss_kib("VmRSS"));
            sampled = Instant::now();
        }
    }
    let matches =
        hex::encode(hasher.finalize()) == execution["output_sha256"].as_str().unwrap_or("");
    (started.elapsed(), bytes, rss_max as f64 / 1024.0, matches)
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_EVENTS);
    let worker = Worker::start(&[]).await;
    let api = Arc::new(Api {
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(RUN_TIMEOUT)
            .build()
            .expect("build the HTTP client"),
        base: worker.base_url(),
        key: worker.create_key(ORG, "org:admin"),
    });
    ingest(&api, total).await;

    // A period holding the first tenth of the events, and one holding them all.
    let database = connect(&worker.database_url()).await;
    let row = database
        .query_one(
            "SELECT min(\"timestamp\"), max(\"timestamp\"), \
               (SELECT \"timestamp\" FROM audit_log WHERE organization_id = $1 ORDER BY id OFFSET $2 LIMIT 1) \
             FROM audit_log WHERE organization_id = $1",
            &[&ORG, &((total / 10) as i64)],
        )
        .await
        .expect("the events' time range");
    let (first, last, tenth): (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>) =
        (row.get(0), row.get(1), row.get(2));
    let end = last + chrono::TimeDelta::seconds(1);
    let periods = [("a tenth", (first, tenth)), ("all", (first, end))];

    println!("\nreport runs (each includes the verification of its period):");
    let mut largest: Option<Measured> = None;
    let mut rss_by_period = Vec::new();
    for (label, period) in periods {
        let mut rss_max: f64 = 0.0;
        for (report_type, format) in [
            ("phi_access", "json"),
            ("phi_access", "csv"),
            ("phi_access", "html"),
            ("access_summary", "json"),
        ] {
            let name = format!("{report_type} {format} {label}");
            let measured = run_report(&api, &worker, &name, report_type, format, period).await;
            println!(
                "  {name:<28} {:>10} records in {:>8.2?} ({:>9} records/s), output {:>7.1} MB, \
                 worker VmRSS {:.1} -> max {:.1} MB",
                grouped(measured.records as f64),
                measured.elapsed,
                grouped(measured.records as f64 / measured.elapsed.as_secs_f64()),
                measured.bytes as f64 / 1e6,
                measured.rss_before_mb,
                measured.rss_max_mb,
            );
            rss_max = rss_max.max(measured.rss_max_mb);
            if report_type == "phi_access" && format == "json" {
                let (verify, read, rows) = baseline(&api, &worker.database_url(), period).await;
                let baseline = verify + read;
                println!(
                    "  baseline ({label}): verify {verify:.2?} + bare read of {} rows as JSON {read:.2?} = {baseline:.2?}; \
                     ratio baseline/report {:.2}",
                    grouped(rows as f64),
                    baseline.as_secs_f64() / measured.elapsed.as_secs_f64()
                );
            }
            if largest.as_ref().is_none_or(|l| measured.bytes > l.bytes) {
                largest = Some(measured);
            }
        }
        rss_by_period.push((label, rss_max));
    }
    if let Some(largest) = largest {
        let (elapsed, bytes, rss, matches) = download(&api, &worker, &largest.execution).await;
        println!(
            "\ndownload of the largest output: {:.1} MB in {elapsed:.2?} ({:.1} MB/s), SHA-256 {}, \
             worker VmRSS max {rss:.1} MB during it",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / elapsed.as_secs_f64(),
            if matches { "matches the run's" } else { "DIFFERS from the run's" },
        );
    }
    println!("\nconstant memory: worker VmRSS max during the runs");
    for (label, rss) in &rss_by_period {
        println!("  over {label} of the events: {rss:.1} MB");
    }
    println!(
        "  peak (VmHWM) {:.1} MB",
        worker.rss_kib("VmHWM") as f64 / 1024.0
    );
    let log = worker.log.clone();
    let (status, _) = worker.stop().await;
    println!("worker exited: {status}");
    report_log(&log);
}
