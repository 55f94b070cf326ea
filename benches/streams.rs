//! Streams benchmark of the release `audit-worker` binary (a child process on
//! a fresh database of the local PostgreSQL): sustained ingest, in batches of
//! `BATCH` from `CLIENTS` clients as `benches/ingest` posts them, while three
//! subscriptions send every event on, each to a real receiver:
//! - a webhook receiver in this process (NDJSON, native records);
//! - a moto S3 server (gzipped NDJSON objects, OCSF records), polled for new
//!   objects every `S3_POLL`;
//! - a syslog collector in this process (RFC 5424 over TCP, native records).
//!
//! Prints, per destination, the events forwarded per second against the
//! events ingested per second in the same run (the ratio's floor is 0.9),
//! and the lag of each event from its commit (its ingest request answered) to
//! its receipt: p50, p99 (floor < 2 s) and max. It never asserts on time.
//!
//! `BENCH_SECONDS` (default 20) sets how long ingest runs.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

#[path = "support/figures.rs"]
mod figures;
#[path = "support/moto.rs"]
mod moto;
#[path = "support/worker.rs"]
mod worker;
use figures::{grouped, mix, ms, verdict, MachineCpu, Percentiles};
use moto::Moto;
use worker::{report_log, Worker};

const ORG: &str = "bench-streams";
const BUCKET: &str = "bench-streams";
const CLIENTS: usize = 8;
const BATCH: usize = 100;
/// How long every event may take to reach every receiver after ingest ends.
const CATCH_UP: Duration = Duration::from_secs(120);
const S3_POLL: Duration = Duration::from_millis(100);
/// The subscriptions' batches: one batch per subscription is in flight at a
/// time, so a stream's rate is about this over a batch's round trip.
const BATCH_EVENTS: u32 = 5000;
const MIN_RATIO: f64 = 0.9;
const MAX_P99: Duration = Duration::from_secs(2);

/// When each event id first arrived at one receiver.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<HashMap<i64, Instant>>>);

impl Arrivals {
    fn record(&self, ids: impl IntoIterator<Item = i64>) {
        let now = Instant::now();
        let mut seen = self.0.lock().unwrap();
        for id in ids {
            seen.entry(id).or_insert(now);
        }
    }

    fn count_of(&self, wanted: &HashSet<i64>) -> usize {
        let seen = self.0.lock().unwrap();
        wanted.iter().filter(|id| seen.contains_key(id)).count()
    }

    fn get(&self, id: i64) -> Option<Instant> {
        self.0.lock().unwrap().get(&id).copied()
    }
}

/// The ids of NDJSON records (native: `id`; OCSF: `metadata.uid`).
fn record_ids(text: &str) -> Vec<i64> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|record| {
            record["id"]
                .as_i64()
                .or_else(|| record["metadata"]["uid"].as_str()?.parse().ok())
        })
        .collect()
}

/// A webhook receiver on its own thread and actix system; its URL.
fn webhook_receiver(arrivals: Arrivals) -> String {
    let (started, bound) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                let arrivals = arrivals.clone();
                App::new()
                    .app_data(web::PayloadConfig::new(64 << 20))
                    .default_service(web::to(move |body: web::Bytes| {
                        let arrivals = arrivals.clone();
                        async move {
                            arrivals.record(record_ids(&String::from_utf8_lossy(&body)));
                            HttpResponse::Ok().finish()
                        }
                    }))
            })
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .expect("bind the webhook receiver");
            started.send(server.addrs()[0].port()).unwrap();
            server.run().await.expect("run the webhook receiver");
        })
    });
    format!("http://127.0.0.1:{}/hook", bound.recv().unwrap())
}

/// A syslog collector (octet-counted RFC 5424 over TCP); its port. The event
/// id is read from the structured data (`id="…"`).
async fn syslog_collector(arrivals: Arrivals) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                let mut buffered: Vec<u8> = Vec::new();
                let mut chunk = vec![0; 64 * 1024];
                while let Ok(read) = tcp.read(&mut chunk).await {
                    if read == 0 {
                        break;
                    }
                    buffered.extend_from_slice(&chunk[..read]);
                    let mut ids = Vec::new();
                    while let Some(space) = buffered.iter().position(|b| *b == b' ') {
                        let length: usize = std::str::from_utf8(&buffered[..space])
                            .ok()
                            .and_then(|text| text.parse().ok())
                            .expect("an octet count");
                        if buffered.len() < space + 1 + length {
                            break;
                        }
                        let message =
                            String::from_utf8_lossy(&buffered[space + 1..space + 1 + length]);
                        if let Some(id) = message
                            .split_once(" id=\"")
                            .and_then(|(_, rest)| rest.split('"').next())
                            .and_then(|id| id.parse().ok())
                        {
                            ids.push(id);
                        }
                        buffered.drain(..space + 1 + length);
                    }
                    arrivals.record(ids);
                }
            });
        }
    });
    port
}

/// Polls the bucket for new objects and records the events in each.
fn watch_bucket(moto: &Moto, arrivals: Arrivals) -> tokio::task::JoinHandle<()> {
    let client = moto.client();
    tokio::spawn(async move {
        let mut read: HashSet<String> = HashSet::new();
        loop {
            let mut token = None;
            loop {
                let listed = client
                    .list_objects_v2()
                    .bucket(BUCKET)
                    .set_continuation_token(token.take())
                    .send()
                    .await;
                let Ok(listed) = listed else { break };
                for object in listed.contents() {
                    let Some(key) = object.key() else { continue };
                    if !read.insert(key.to_owned()) {
                        continue;
                    }
                    let Ok(got) = client.get_object().bucket(BUCKET).key(key).send().await else {
                        read.remove(key);
                        continue;
                    };
                    let bytes = got.body.collect().await.unwrap().into_bytes();
                    let mut text = String::new();
                    flate2::read::GzDecoder::new(&bytes[..])
                        .read_to_string(&mut text)
                        .expect("a gzipped batch");
                    arrivals.record(record_ids(&text));
                }
                match listed.next_continuation_token() {
                    Some(next) => token = Some(next.to_owned()),
                    None => break,
                }
            }
            tokio::time::sleep(S3_POLL).await;
        }
    })
}

/// One ingest request's body of `BATCH` events, numbered from `first`.
fn batch_body(first: u64) -> Vec<u8> {
    const ACTIONS: [&str; 3] = ["patient.record.read", "patient.record.update", "auth.login"];
    let events: Vec<Value> = (first..first + BATCH as u64)
        .map(|n| {
            let action = ACTIONS[(n % 3) as usize];
            json!({
                "principal_id": format!("user-{}", mix(n, 1) % 1000),
                "action": action,
                "status": if n % 20 == 0 { "failure" } else { "success" },
                "target_resource_type": "Patient",
                "target_resource_id": format!("p-{}", mix(n, 2) % 100_000),
                "data_classification": "PHI",
                "details": {"ip": format!("10.0.{}.{}", n % 250, mix(n, 3) % 250), "n": n},
            })
        })
        .collect();
    serde_json::to_vec(&events).unwrap()
}

/// What the ingest clients did: each event's id and when it was acknowledged.
struct Ingested {
    acks: HashMap<i64, Instant>,
    took: Duration,
}

async fn ingest(base: &str, key: &str, duration: Duration) -> Ingested {
    let started = Instant::now();
    let deadline = started + duration;
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|task| {
            let (client, base, key) = (client.clone(), base.to_owned(), key.to_owned());
            tokio::spawn(async move {
                let mut acks = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let first = (task as u64) << 40 | n;
                    n += BATCH as u64;
                    let answer = client
                        .post(format!("{base}/v1/events"))
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(batch_body(first))
                        .send()
                        .await;
                    let Ok(answer) = answer else { continue };
                    if answer.status() != 201 {
                        continue;
                    }
                    let at = Instant::now();
                    let body: Value = answer.json().await.unwrap_or_default();
                    for receipt in body["events"].as_array().into_iter().flatten() {
                        if let Some(id) = receipt["id"].as_i64() {
                            acks.push((id, at));
                        }
                    }
                }
                acks
            })
        })
        .collect();
    let mut acks = HashMap::new();
    for task in tasks {
        acks.extend(task.await.unwrap());
    }
    Ingested {
        acks,
        took: started.elapsed(),
    }
}

async fn call(client: &reqwest::Client, base: &str, key: &str, path: &str, body: Value) -> Value {
    let answer = client
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or_default();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let moto = Moto::start();
    moto.create_bucket(BUCKET).await;
    let (webhook, s3, syslog) = (
        Arrivals::default(),
        Arrivals::default(),
        Arrivals::default(),
    );
    let webhook_url = webhook_receiver(webhook.clone());
    let syslog_port = syslog_collector(syslog.clone()).await;
    let watcher = watch_bucket(&moto, s3.clone());

    let worker =
        Worker::start(&[("AUDIT_WORKER__DELIVERY__ALLOW_LOOPBACK", "true".to_owned())]).await;
    let base = worker.base_url();
    let key = worker.create_key(ORG, "org:admin");
    let client = reqwest::Client::new();
    let destinations = [
        json!({"type": "webhook", "label": "siem", "config": {"url": webhook_url}}),
        json!({"type": "s3", "label": "lake", "config": {"bucket": BUCKET, "endpoint": moto.endpoint,
            "path_style": true, "access_key_id": "bench", "secret_access_key": "bench-secret"}}),
        json!({"type": "syslog", "label": "collector", "config": {"host": "127.0.0.1", "port": syslog_port}}),
    ];
    for (destination, format) in destinations.into_iter().zip(["native", "ocsf", "native"]) {
        let created = call(&client, &base, &key, "/v1/destinations", destination).await;
        let subscription = json!({"destination_id": created["id"], "format": format,
                                  "batch": {"max_events": BATCH_EVENTS, "max_delay_ms": 200}});
        call(&client, &base, &key, "/v1/subscriptions", subscription).await;
    }

    let machine = MachineCpu::now();
    let cpu = worker.cpu_time();
    let started = Instant::now();
    let ingested = ingest(&base, &key, Duration::from_secs(seconds)).await;
    let ingest_rate = ingested.acks.len() as f64 / ingested.took.as_secs_f64();
    let wanted: HashSet<i64> = ingested.acks.keys().copied().collect();
    let deadline = Instant::now() + CATCH_UP;
    for arrivals in [&webhook, &s3, &syslog] {
        while arrivals.count_of(&wanted) < wanted.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let elapsed = started.elapsed();
    let busy = machine.busy_since();
    let cores = worker.cores_since(cpu, elapsed);
    watcher.abort();

    println!(
        "ingest: {} events in {:.1?} ({} events/s, {CLIENTS} clients, batches of {BATCH}) while three \
         subscriptions streamed them; worker {cores:.2} cores, PostgreSQL {:.2}, machine {:.2} of {} cores",
        grouped(ingested.acks.len() as f64),
        ingested.took,
        grouped(ingest_rate),
        busy.postgres,
        busy.machine,
        MachineCpu::cores()
    );
    println!("\n== summary (floors from the streams issue: forwarded/ingested >= {MIN_RATIO}, lag p99 < {MAX_P99:?}) ==");
    for (name, arrivals) in [("webhook", &webhook), ("s3", &s3), ("syslog", &syslog)] {
        let mut lags = Vec::with_capacity(wanted.len());
        let mut last = started;
        for (id, acked) in &ingested.acks {
            if let Some(at) = arrivals.get(*id) {
                lags.push(at.saturating_duration_since(*acked));
                last = last.max(at);
            }
        }
        let received = lags.len();
        let forwarded = received as f64
            / (last - started)
                .as_secs_f64()
                .max(ingested.took.as_secs_f64());
        let ratio = forwarded / ingest_rate;
        let lag = Percentiles::of(lags);
        println!(
            "{name:>8}: {} of {} events, {} events/s forwarded against {} ingested = {ratio:.2} ({}); \
             lag from commit to receipt p50 {:.0} ms, p99 {:.0} ms ({}), max {:.0} ms",
            grouped(received as f64),
            grouped(wanted.len() as f64),
            grouped(forwarded),
            grouped(ingest_rate),
            verdict(ratio >= MIN_RATIO && received == wanted.len()),
            ms(lag.p50),
            ms(lag.p99),
            verdict(lag.p99 < MAX_P99),
            ms(lag.max),
        );
    }
    let log = worker.log.clone();
    let (status, took) = worker.stop().await;
    println!("worker stopped on SIGTERM in {took:.1?}: {status}");
    report_log(&log);
}
