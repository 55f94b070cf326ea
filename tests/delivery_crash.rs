//! Nothing queued is lost when a worker dies mid-delivery: after `kill -9`,
//! the claim's lease runs out, another start of the worker claims it again and
//! delivers it; the receiver sees its `webhook-id` at most twice.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::receiver::Receiver;
use common::{wait_until, TestDatabase};
use serde_json::{json, Value};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(port: u16, url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_audit-worker"))
        .arg("serve")
        .env("AUDIT_WORKER__HTTP__BIND", format!("127.0.0.1:{port}"))
        .env("AUDIT_WORKER__DATABASE__URL", url)
        .env("AUDIT_WORKER__DELIVERY__LEASE", "3s")
        .env("AUDIT_WORKER__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the worker")
}

async fn ready(client: &reqwest::Client, base: &str) {
    wait_until(Duration::from_secs(30), "worker ready", || async {
        let response = client.get(format!("{base}/readyz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
}

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
    let mut worker = start(port, &url_text);
    ready(&client, &base).await;
    let key = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_audit-worker"))
            .args(["api-key", "create", "--org", "org-a", "--role", "org:admin"])
            .env("AUDIT_WORKER__DATABASE__URL", &url_text)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let created: Value = client
        .post(format!("{base}/v1/destinations"))
        .bearer_auth(&key)
        .json(&json!({"type": "webhook", "label": "r", "config": {"url": receiver.url, "timeout_ms": 60000}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let queued: Value = client
        .post(format!("{base}/v1/deliveries"))
        .bearer_auth(&key)
        .json(&json!({"destination_ids": [created["id"]], "payload": {"n": 1}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    worker.kill().expect("SIGKILL the worker");
    worker.wait().unwrap();

    let mut worker = start(port, &url_text);
    ready(&client, &base).await;
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
    worker.kill().unwrap();
    worker.wait().unwrap();
}
