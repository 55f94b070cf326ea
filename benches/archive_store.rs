//! Archive store benchmark: the release `audit-worker` binary against a fresh
//! database on the local PostgreSQL and a real S3 server (moto, started from
//! the test tools' virtual environment that `scripts/test` installs), all on
//! 127.0.0.1.
//!
//! Measures, in one run:
//! 1. archival to S3 of `BENCH_EVENTS` events (default 2 million) with
//!    `audit-worker archive run` (Parquet, manifest, digest per archive of
//!    `partitions.archive_batch_events`): events/s and the process's peak
//!    resident memory (VmHWM); then the same archival of the same number of
//!    events, generated alike, to a local directory (`store = "directory"`:
//!    the same Parquet written to a file), the baseline; and the ratio of
//!    the two rates;
//! 2. `POST /v1/gdpr/export` (JSON) of a subject with 100,000 archived
//!    events (in S3), against the export of a subject with 100,000 live
//!    events: events/s of each and their ratio.
//!
//! Rows are generated in PostgreSQL (`generate_series`) with the shape ingest
//! gives them. It prints figures and never asserts on time.

use std::process::Stdio;
use std::time::{Duration, Instant};

use audit_worker::integrity::canonical;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

#[path = "support/figures.rs"]
mod figures;
#[path = "support/moto.rs"]
mod moto;
#[path = "support/worker.rs"]
mod worker;
use figures::grouped;
use moto::Moto;
use worker::{connect, worker_command, Worker};

const ORG: &str = "bench-archive";
const GDPR_ORG: &str = "bench-gdpr";
const BUCKET: &str = "bench-archive";
const SUBJECT_EVENTS: i64 = 100_000;
const COMMITMENT_KEY: [u8; 32] = [7; 32];
/// How often the archiving process's memory is read.
const RSS_SAMPLE: Duration = Duration::from_millis(20);

/// What one `archive run` did.
struct Archival {
    events: u64,
    archives: u64,
    took: Duration,
    peak_rss_kib: u64,
    stored_bytes: u64,
}

impl Archival {
    fn rate(&self) -> f64 {
        self.events as f64 / self.took.as_secs_f64()
    }

    fn print(&self, store: &str) {
        println!(
            "archival to {store}: {} events into {} archives in {:.2?} ({} events/s), {} bytes stored, \
             peak memory of the archiving process {} MiB",
            grouped(self.events as f64),
            self.archives,
            self.took,
            grouped(self.rate()),
            grouped(self.stored_bytes as f64),
            self.peak_rss_kib / 1024
        );
    }
}

#[tokio::main]
async fn main() {
    let total: i64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let moto = Moto::start();
    let directory = std::env::temp_dir().join(format!("bench-archives-{}", uuid::Uuid::new_v4()));
    let key = base64::engine::general_purpose::STANDARD.encode(COMMITMENT_KEY);
    let common: Vec<(&str, String)> = vec![
        ("AUDIT_WORKER__INTEGRITY__COMMITMENT_KEY", key),
        (
            "AUDIT_WORKER__PARTITIONS__MAINTENANCE_INTERVAL",
            "24h".into(),
        ),
        ("AUDIT_WORKER__ARCHIVE__BUCKET", BUCKET.into()),
        ("AUDIT_WORKER__ARCHIVE__ENDPOINT", moto.endpoint.clone()),
        ("AUDIT_WORKER__ARCHIVE__FORCE_PATH_STYLE", "true".into()),
        (
            "AUDIT_WORKER__ARCHIVE__DIRECTORY",
            directory.display().to_string(),
        ),
        ("AWS_ACCESS_KEY_ID", "bench".into()),
        ("AWS_SECRET_ACCESS_KEY", "bench-secret".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ];
    let with_store = |store: &str| {
        let mut settings = common.clone();
        settings.push(("AUDIT_WORKER__ARCHIVE__STORE", store.to_owned()));
        settings
    };
    moto.create_bucket(BUCKET).await;
    let worker = Worker::start(&with_store("s3")).await;
    let client = connect(&worker.database_url()).await;
    let old = Utc::now() - chrono::Duration::days(400);
    client
        .execute(
            "SELECT audit_log_ensure_partition($1::timestamptz::date)",
            &[&old],
        )
        .await
        .expect("the old month's partition");
    client
        .execute(
            "INSERT INTO audit_chain_head (organization_id, seq, link) \
             SELECT o, 1, repeat('0', 64) FROM unnest($1::text[]) AS o ON CONFLICT DO NOTHING",
            &[&vec![ORG, GDPR_ORG]],
        )
        .await
        .expect("chain heads");

    // 1. Archival: S3, then the same to a directory.
    let mut runs = Vec::new();
    for store in ["s3", "directory"] {
        generate(&client, ORG, None, total, old).await;
        client
            .batch_execute("VACUUM ANALYZE audit_log")
            .await
            .expect("vacuum");
        let run = archive(&worker, &with_store(store));
        run.print(store);
        runs.push(run);
    }
    let ratio = runs[0].rate() / runs[1].rate();
    println!("archival rate, S3 / directory: {ratio:.2} (floor 0.5)");

    // 2. GDPR export of a subject with 100,000 archived events, and of one
    // with 100,000 live events.
    let (archived_subject, live_subject) = ("subject-archived", "subject-live");
    generate(
        &client,
        GDPR_ORG,
        Some(archived_subject),
        SUBJECT_EVENTS,
        old,
    )
    .await;
    let run = archive(&worker, &with_store("s3"));
    println!(
        "archived the subject's {} events into {} archives in {:.2?}",
        grouped(run.events as f64),
        run.archives,
        run.took
    );
    generate(
        &client,
        GDPR_ORG,
        Some(live_subject),
        SUBJECT_EVENTS,
        Utc::now() - chrono::Duration::hours(1),
    )
    .await;
    let key = worker.create_key(GDPR_ORG, "org:admin");
    let archived = export(&worker, &key, archived_subject).await;
    let live = export(&worker, &key, live_subject).await;
    for (what, (events, took, bytes)) in [("archived", archived), ("live", live)] {
        println!(
            "GDPR export of a subject with {} {what} events: {} events, {} bytes in {:.2?} ({} events/s)",
            grouped(SUBJECT_EVENTS as f64),
            grouped(events as f64),
            grouped(bytes as f64),
            took,
            grouped(events as f64 / took.as_secs_f64())
        );
    }
    let export_ratio =
        (archived.0 as f64 / archived.1.as_secs_f64()) / (live.0 as f64 / live.1.as_secs_f64());

    println!("\n== summary ==");
    println!(
        "archival of {} events: S3 {} events/s, directory {} events/s, ratio {ratio:.2} (floor 0.5)",
        grouped(total as f64),
        grouped(runs[0].rate()),
        grouped(runs[1].rate())
    );
    println!(
        "peak memory archiving {} events: S3 run {} MiB, directory run {} MiB (floor < 200 MiB)",
        grouped(total as f64),
        runs[0].peak_rss_kib / 1024,
        runs[1].peak_rss_kib / 1024
    );
    println!(
        "GDPR export, archived / live subject: {export_ratio:.2} ({} vs {} events/s)",
        grouped(archived.0 as f64 / archived.1.as_secs_f64()),
        grouped(live.0 as f64 / live.1.as_secs_f64())
    );
    drop(client);
    worker.stop().await;
    let _ = std::fs::remove_dir_all(&directory);
}

/// `count` events of `organization` within an hour from `from`: all of
/// `subject` (by commitment, so GDPR requests find them) when given, else of
/// a thousand principals.
async fn generate(
    client: &tokio_postgres::Client,
    organization: &str,
    subject: Option<&str>,
    count: i64,
    from: DateTime<Utc>,
) {
    let started = Instant::now();
    let commitment =
        subject.map(|subject| canonical::commitment(&COMMITMENT_KEY, organization, subject));
    client
        .execute(
            "INSERT INTO audit_log (\"timestamp\", principal_id, organization_id, action, target_resource_type, \
               target_resource_id, status, hash, data_classification, retention_policy, details, \
               principal_commitment, target_resource_commitment, chain_link, processing_latency) \
             SELECT $1::timestamptz + (g % 3600) * interval '1 second', coalesce($4, 'user-' || (g % 1000)), $2, \
               (ARRAY['patient.record.read','patient.record.update','lab.result.view'])[1 + g % 3], \
               'Patient', 'patient-' || (g % 50000), CASE WHEN g % 20 = 0 THEN 'failure' ELSE 'success' END, \
               md5(g::text) || md5((g + 1)::text), 'INTERNAL', 'standard', \
               jsonb_build_object('ip', '10.0.' || (g % 250) || '.' || (g % 7), 'facility', 'north-clinic', \
                 'user_agent', 'Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0', 'n', g), \
               coalesce($5, md5((g + 2)::text) || md5((g + 3)::text)), md5((g + 4)::text) || md5((g + 5)::text), \
               g / 500, g % 40 \
             FROM generate_series(1, $3::int8) AS g",
            &[&from, &organization, &count, &subject, &commitment],
        )
        .await
        .expect("generate events");
    println!(
        "generated {} events of {organization} in {:.1?}",
        grouped(count as f64),
        started.elapsed()
    );
}

/// Runs `audit-worker archive run` with `settings`, reading its peak
/// memory while it runs.
fn archive(worker: &Worker, settings: &[(&str, String)]) -> Archival {
    let started = Instant::now();
    let mut child = worker_command(worker.port, &worker.database)
        .envs(settings.iter().map(|(key, value)| (*key, value.as_str())))
        .args(["archive", "run"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run audit-worker archive run");
    let status = format!("/proc/{}/status", child.id());
    let mut peak_rss_kib = 0;
    while child.try_wait().expect("poll archive run").is_none() {
        let read = std::fs::read_to_string(&status).unwrap_or_default();
        if let Some(hwm) = read
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        {
            peak_rss_kib = peak_rss_kib.max(hwm);
        }
        std::thread::sleep(RSS_SAMPLE);
    }
    let took = started.elapsed();
    let output = child.wait_with_output().expect("archive run's report");
    assert!(output.status.success(), "archive run failed");
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(report["failed_batches"], 0, "{report}");
    Archival {
        events: report["events"].as_u64().unwrap_or_default(),
        archives: report["archives"].as_u64().unwrap_or_default(),
        took,
        peak_rss_kib,
        stored_bytes: report["compressed_bytes"].as_u64().unwrap_or_default(),
    }
}

/// Exports `subject` as JSON, reading the whole stream: events, time, bytes.
async fn export(worker: &Worker, key: &str, subject: &str) -> (u64, Duration, u64) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client");
    let started = Instant::now();
    let response = client
        .post(format!("{}/v1/gdpr/export", worker.base_url()))
        .bearer_auth(key)
        .json(&json!({"principal_id": subject, "format": "json"}))
        .send()
        .await
        .expect("POST /v1/gdpr/export");
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("the export");
    let took = started.elapsed();
    let exported: Value = serde_json::from_slice(&body).expect("a JSON export");
    let events = exported["events"].as_array().map_or(0, Vec::len) as u64;
    (events, took, body.len() as u64)
}
