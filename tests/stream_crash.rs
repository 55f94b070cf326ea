//! A stream loses nothing when its worker dies mid-batch: after `kill -9`,
//! the batch in flight is claimed again once its lease runs out and sent
//! under the same id, then the stream goes on where it was; the receiver
//! sees only that batch twice, and every event in chain order.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::process::{free_port, issue_key, kill_9, post, serve, wait_ready};
use common::receiver::{Received, Receiver};
use common::{wait_until, TestDatabase};
use serde_json::{json, Value};

/// A lease short enough for the test to wait out; rounds often.
const SETTINGS: &[(&str, &str)] = &[
    ("AUDIT_WORKER__DELIVERY__LEASE", "3s"),
    ("AUDIT_WORKER__STREAMS__POLL_INTERVAL", "100ms"),
    ("AUDIT_WORKER__LOG__LEVEL", "warn"),
];

/// Stores `count` `patient.*` events in one request; their ids.
async fn ingest(client: &reqwest::Client, base: &str, key: &str, count: usize) -> Vec<Value> {
    let events: Vec<Value> = (0..count)
        .map(|n| json!({"principal_id": "dr-who", "action": format!("patient.read.{n}"), "status": "success"}))
        .collect();
    let (status, stored) = post(client, base, key, "/v1/events", &json!(events)).await;
    assert_eq!(status, 201, "{stored}");
    stored["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|receipt| receipt["id"].clone())
        .collect()
}

/// The event ids of a request's NDJSON body.
fn ids(request: &Received) -> Vec<Value> {
    std::str::from_utf8(&request.body)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["id"].clone())
        .collect()
}

#[actix_web::test]
async fn a_batch_interrupted_by_kill_9_is_sent_again_under_its_id_and_nothing_is_skipped() {
    let url = common::test_config().database.url;
    let _db = TestDatabase::named(url.database_name());
    let url_text = url.to_string();
    // The first request is never answered: the worker is killed while it waits.
    let receiver = Receiver::start(&[], 1);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut worker = serve(port, &url_text, SETTINGS, Stdio::null());
    wait_ready(&client, &base, &mut worker).await;
    let key = issue_key(&url_text, "org-a", "org:admin");
    let destination = json!({"type": "webhook", "label": "siem",
                             "config": {"url": receiver.url, "timeout_ms": 60000}});
    let (status, created) = post(&client, &base, &key, "/v1/destinations", &destination).await;
    assert_eq!(status, 201, "{created}");
    let subscription = json!({"destination_id": created["id"], "filter": {"action": "patient.*"},
                              "batch": {"max_events": 5, "max_delay_ms": 0}});
    let (status, subscribed) = post(&client, &base, &key, "/v1/subscriptions", &subscription).await;
    assert_eq!(status, 201, "{subscribed}");
    let mut expected = ingest(&client, &base, &key, 12).await;

    wait_until(
        Duration::from_secs(15),
        "the first batch reaches the receiver",
        || {
            let count = receiver.received().len();
            async move { (count == 1).then_some(()) }
        },
    )
    .await;
    kill_9(&mut worker);

    let mut worker = serve(port, &url_text, SETTINGS, Stdio::null());
    wait_ready(&client, &base, &mut worker).await;
    expected.extend(ingest(&client, &base, &key, 6).await);
    let last = expected.last().unwrap().clone();
    let path = format!("{base}/v1/subscriptions/{}", subscribed["id"]);
    wait_until(Duration::from_secs(30), "the stream caught up", || async {
        let found: Value = client
            .get(&path)
            .bearer_auth(&key)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (found["last_delivered_event_id"] == last && found["lag_events"] == 0).then_some(())
    })
    .await;
    worker.kill().ok();

    let received = receiver.received();
    let (interrupted, after) = received.split_first().unwrap();
    assert_eq!(
        after[0].id, interrupted.id,
        "the interrupted batch kept its id"
    );
    assert_eq!(ids(&after[0]), ids(interrupted));
    let sent: Vec<Value> = after.iter().flat_map(ids).collect();
    assert_eq!(
        sent, expected,
        "every event once after the repeat, in chain order"
    );
    let batch_ids: std::collections::HashSet<&str> = after.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        batch_ids.len(),
        after.len(),
        "no other batch was sent twice"
    );
}
