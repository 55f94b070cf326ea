//! Nothing queued is lost when a worker dies mid-delivery: after `kill -9`,
//! the claim's lease runs out, another start of the worker claims it again and
//! delivers it; the receiver sees its `webhook-id` at most twice.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::process::{free_port, issue_key, kill_9, post, serve, wait_ready};
use common::receiver::Receiver;
use common::{wait_until, TestDatabase};
use serde_json::{json, Value};

/// A lease short enough for the test to wait out.
const SETTINGS: &[(&str, &str)] = &[
    ("AUDIT_WORKER__DELIVERY__LEASE", "3s"),
    ("AUDIT_WORKER__LOG__LEVEL", "warn"),
];

#[actix_web::test]
async fn a_delivery_interrupted_by_kill_9_is_claimed_again_and_delivered() {
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
    let destination = json!({"type": "webhook", "label": "r",
                             "config": {"url": receiver.url, "timeout_ms": 60000}});
    let (status, created) = post(&client, &base, &key, "/v1/destinations", &destination).await;
    assert_eq!(status, 201, "{created}");
    let delivery = json!({"destination_ids": [created["id"]], "payload": {"n": 1}});
    let (status, queued) = post(&client, &base, &key, "/v1/deliveries", &delivery).await;
    assert_eq!(status, 202, "{queued}");
    let id = queued["deliveries"][0]["id"].as_str().unwrap().to_owned();

    wait_until(
        Duration::from_secs(15),
        "the first attempt reaches the receiver",
        || {
            let count = receiver.received().len();
            async move { (count == 1).then_some(()) }
        },
    )
    .await;
    kill_9(&mut worker);

    let mut worker = serve(port, &url_text, SETTINGS, Stdio::null());
    wait_ready(&client, &base, &mut worker).await;
    let delivered = wait_until(
        Duration::from_secs(30),
        "delivered after the lease ran out",
        || async {
            let found: Value = client
                .get(format!("{base}/v1/deliveries/{id}"))
                .bearer_auth(&key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (found["status"] == "delivered").then_some(found)
        },
    )
    .await;
    let received = receiver.received();
    assert_eq!(received.len(), 2, "one interrupted attempt, one delivery");
    assert_eq!(
        received[0].id, received[1].id,
        "the same webhook-id: the receiver can drop the duplicate"
    );
    assert_eq!(
        delivered["attempts"].as_array().unwrap().len(),
        1,
        "the killed attempt left no record"
    );
    kill_9(&mut worker);
}
