//! Proof benchmark of the release `audit-worker` binary, started as a child
//! process against a fresh database on the local PostgreSQL (127.0.0.1 only).
//!
//! One organization gets `EVENTS` events over HTTP (`CLIENTS` concurrent
//! requests of `BATCH`, so the chain has thousands of links), then one
//! checkpoint is signed, which builds the link tree over the whole chain.
//! The tables are analyzed first, as autovacuum would after such a load.
//! It measures, from one client, the latency of
//! `GET /v1/events/{id}/proof` for `SAMPLES` events picked at random, and as
//! the baseline, in the same run and taking turns with it,
//! `GET /v1/events/{id}` of the same events; it prints p50/p99 of both, their
//! ratio, and the floor (proof p99 < 20 ms). Every proof is checked
//! with the Rust verifier. It never asserts on time.

use std::time::{Duration, Instant};

use audit_worker::integrity::proof::{self, EventProof};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::VerifyingKey;
use serde_json::{json, Value};

#[path = "support/figures.rs"]
mod figures;
#[path = "support/worker.rs"]
mod worker;
use figures::{grouped, mix, ms, verdict, Percentiles};
use worker::{connect, post_events, report_log, Worker};

const ORG: &str = "bench-proof";
const EVENTS: usize = 1_000_000;
const BATCH: usize = 250;
const CLIENTS: usize = 8;
const WARMUP: usize = 200;
const SAMPLES: usize = 1000;

// Floor set by the proofs issue.
const MAX_P99_MS: f64 = 20.0;

#[tokio::main]
async fn main() {
    let worker = Worker::start(&[]).await;
    let key = worker.create_key(ORG, "org:admin");
    let base = worker.base_url();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client");

    let started = Instant::now();
    ingest(&client, &base, &key).await;
    let ingest_time = started.elapsed();
    let db = connect(&worker.database_url()).await;
    let links: i64 = db
        .query_one(
            "SELECT seq FROM audit_chain_head WHERE organization_id = $1",
            &[&ORG],
        )
        .await
        .expect("the chain head")
        .get(0);
    println!(
        "ingested {} events in {:.1} s: {} links",
        grouped(EVENTS as f64),
        ingest_time.as_secs_f64(),
        grouped(links as f64)
    );

    // What autovacuum (or `audit-worker db maintain`) does after such a load,
    // in its own time: without statistics PostgreSQL reads every partition
    // whole to find one event, the baseline as much as the proof.
    db.batch_execute("ANALYZE")
        .await
        .expect("analyze the fresh tables");

    let started = Instant::now();
    let response = client
        .post(format!("{base}/v1/integrity/checkpoints"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("the worker answers");
    assert_eq!(response.status(), 201, "signing a checkpoint");
    println!(
        "first checkpoint (builds the tree over {} links): {:.0} ms",
        grouped(links as f64),
        ms(started.elapsed())
    );

    let ids: Vec<i64> = db
        .query(
            "SELECT id FROM audit_log WHERE organization_id = $1 ORDER BY id",
            &[&ORG],
        )
        .await
        .expect("the event ids")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let public = public_key(&client, &base).await;
    let pick = |n: usize| ids[(mix(n as u64, 28) % ids.len() as u64) as usize];

    for n in 0..WARMUP {
        fetch(&client, &base, &key, pick(n), true).await;
        fetch(&client, &base, &key, pick(n), false).await;
    }
    let (mut proofs, mut baseline) = (Vec::new(), Vec::new());
    let mut largest = 0usize;
    for n in WARMUP..WARMUP + SAMPLES {
        let id = pick(n);
        // Taking turns, each first half of the time: neither warms the other.
        let order = if n % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_proof in order {
            let (took, body) = fetch(&client, &base, &key, id, is_proof).await;
            if is_proof {
                proofs.push(took);
                largest = largest.max(body.to_string().len());
                let parsed: EventProof = serde_json::from_value(body).expect("a proof");
                proof::verify_event_proof(&parsed, &public).expect("the proof verifies");
            } else {
                baseline.push(took);
            }
        }
    }
    let (proofs, baseline) = (Percentiles::of(proofs), Percentiles::of(baseline));
    println!("{SAMPLES} random events, one client, each proof checked by the Rust verifier:");
    for (name, figures) in [
        ("GET /v1/events/{id}/proof", &proofs),
        ("GET /v1/events/{id} (baseline)", &baseline),
    ] {
        println!(
            "  {name:32} p50 {:6.2} ms  p90 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms",
            ms(figures.p50),
            ms(figures.p90),
            ms(figures.p99),
            ms(figures.max)
        );
    }
    println!(
        "  proof / baseline: p50 x{:.2}, p99 x{:.2}; largest proof {} bytes",
        ms(proofs.p50) / ms(baseline.p50),
        ms(proofs.p99) / ms(baseline.p99),
        grouped(largest as f64)
    );
    println!(
        "floor: proof p99 < {MAX_P99_MS} ms: {}",
        verdict(ms(proofs.p99) < MAX_P99_MS)
    );

    report_log(&worker.log);
    worker.stop().await;
}

/// Sends the events, `CLIENTS` requests at a time.
async fn ingest(client: &reqwest::Client, base: &str, key: &str) {
    let batches = EVENTS / BATCH;
    let mut tasks = Vec::new();
    for worker in 0..CLIENTS {
        let (client, base, key) = (client.clone(), base.to_owned(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            for batch in (worker..batches).step_by(CLIENTS) {
                let events: Vec<Value> = (0..BATCH)
                    .map(|i| {
                        json!({
                            "principal_id": format!("dr-{}", (batch * BATCH + i) % 997),
                            "action": "patient.record.read",
                            "status": "success",
                            "target_resource_type": "patient",
                            "target_resource_id": format!("p-{}", batch * BATCH + i),
                            "data_classification": "PHI",
                            "details": {"batch": batch, "i": i},
                        })
                    })
                    .collect();
                let body = serde_json::to_vec(&events).expect("a body");
                post_events(&client, &base, &key, body)
                    .await
                    .unwrap_or_else(|error| panic!("ingest: {error}"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("an ingest client");
    }
}

/// `GET /v1/events/{id}/proof` (or `GET /v1/events/{id}`): the time to the
/// whole answer, and the answer.
async fn fetch(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    id: i64,
    is_proof: bool,
) -> (Duration, Value) {
    let suffix = if is_proof { "/proof" } else { "" };
    let started = Instant::now();
    let response = client
        .get(format!("{base}/v1/events/{id}{suffix}"))
        .bearer_auth(key)
        .send()
        .await
        .expect("the worker answers");
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON answer");
    let took = started.elapsed();
    assert_eq!(status, 200, "event {id}{suffix}: {body}");
    (took, body)
}

async fn public_key(client: &reqwest::Client, base: &str) -> VerifyingKey {
    let body: Value = client
        .get(format!("{base}/v1/integrity/public-key"))
        .send()
        .await
        .expect("the worker answers")
        .json()
        .await
        .expect("a JSON answer");
    let bytes: [u8; 32] = STANDARD
        .decode(body["public_key"].as_str().expect("a key"))
        .expect("base64")
        .try_into()
        .expect("32 bytes");
    VerifyingKey::from_bytes(&bytes).expect("an Ed25519 key")
}
