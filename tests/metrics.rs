//! `/metrics` forgets deleted destinations.

mod common;

use std::time::Duration;

use common::receiver::Receiver;
use common::{spawn_app_with, spawn_beside, wait_until, TestApp};
use reqwest::Method;
use serde_json::json;

async fn metrics(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.unwrap()
}

/// A destination's series show once it has been attempted, on both
/// instances; once it is deleted (through either), they go from both.
#[actix_web::test]
async fn a_deleted_destination_loses_its_series_on_every_instance() {
    let fast_health = |config: &mut audit_worker::config::Config| {
        config.delivery.health_interval = Duration::from_millis(100);
    };
    let first = spawn_app_with(fast_health).await;
    let second = spawn_beside(&first, fast_health).await;
    let key = first.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let (status, body) = first
        .call(
            Method::POST,
            "/v1/destinations",
            Some(&key),
            Some(json!({"type": "webhook", "label": "receiver", "config": {"url": receiver.url}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_i64().unwrap();
    let (status, body) = first
        .call(
            Method::POST,
            "/v1/deliveries",
            Some(&key),
            Some(json!({"destination_ids": [id], "payload": {"n": 1}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    let series = [
        format!("audit_worker_destination_consecutive_failures{{destination_id=\"{id}\"}}"),
        format!("audit_worker_destination_breaker_open{{destination_id=\"{id}\"}}"),
    ];
    for app in [&first, &second] {
        wait_until(
            Duration::from_secs(15),
            "the destination's series",
            || async {
                let text = metrics(app).await;
                series
                    .iter()
                    .all(|series| text.contains(series.as_str()))
                    .then_some(())
            },
        )
        .await;
    }

    let (status, body) = first
        .call(
            Method::DELETE,
            &format!("/v1/destinations/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    for app in [&first, &second] {
        wait_until(
            Duration::from_secs(15),
            "no series of the deleted destination",
            || async {
                let text = metrics(app).await;
                series
                    .iter()
                    .all(|series| !text.contains(series.as_str()))
                    .then_some(())
            },
        )
        .await;
    }
}
