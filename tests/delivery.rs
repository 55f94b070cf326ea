//! Delivery to webhooks over real HTTP on loopback: signing, retries, dead
//! letters and replay, the circuit breaker, isolation of a broken destination,
//! secrets at rest, tenant isolation and several workers on one queue.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::receiver::{DroppingReceiver, Receiver};
use common::{error_fields, spawn_app, spawn_app_with, spawn_beside, wait_until, webhook, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A webhook destination signing with [`SECRET`] (201 asserted); returns its id.
async fn destination(app: &TestApp, key: &str, url: &str, settings: Value) -> i64 {
    app.create_destination(
        key,
        json!({"type": "webhook", "label": "receiver", "config": {"url": url, "secret": SECRET},
               "settings": settings}),
    )
    .await
}

/// A webhook destination for a receiver that never answers: its attempts
/// end only at `timeout_ms`, `concurrency` at a time.
async fn unanswered_destination(
    app: &TestApp,
    key: &str,
    url: &str,
    timeout_ms: u64,
    concurrency: u32,
) -> i64 {
    app.create_destination(
        key,
        json!({"type": "webhook", "label": "unanswered",
               "config": {"url": url, "timeout_ms": timeout_ms},
               "settings": {"concurrency": concurrency}}),
    )
    .await
}

/// `GET /v1/deliveries?status=…`: the deliveries listed.
async fn listed_with_status(app: &TestApp, key: &str, status: &str) -> Vec<Value> {
    let (code, body) = app
        .call(
            Method::GET,
            &format!("/v1/deliveries?status={status}"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    body["deliveries"].as_array().unwrap().clone()
}

/// The one number `sql` selects.
async fn scalar(database: &tokio_postgres::Client, sql: &str) -> i64 {
    database.query_one(sql, &[]).await.unwrap().get(0)
}

/// The calls the EnqueueActor has written, and in how many transactions.
async fn enqueue_groups(app: &TestApp) -> (f64, f64) {
    let calls = app
        .metric("audit_worker_delivery_enqueue_batch_requests_sum")
        .await
        .unwrap();
    let groups = app
        .metric("audit_worker_delivery_enqueue_batch_requests_count")
        .await
        .unwrap();
    (calls, groups)
}

/// Waits until every delivery queued is recorded as delivered: outcomes are
/// written in batches, a moment after the receiver has them.
async fn wait_all_delivered(database: &tokio_postgres::Client, within: Duration) {
    wait_until(within, "every delivery recorded as delivered", || async {
        let left = scalar(
            database,
            "SELECT count(*) FROM delivery_queue WHERE status <> 'delivered'",
        )
        .await;
        (left == 0).then_some(())
    })
    .await;
}

/// The receiver got `count` distinct `webhook-id`s, each exactly once.
fn assert_each_received_once(receiver: &Receiver, count: usize) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for received in receiver.received() {
        *seen.entry(received.id).or_default() += 1;
    }
    assert_eq!(seen.len(), count);
    assert!(seen.values().all(|count| *count == 1), "{seen:?}");
}

async fn wait_for_status(app: &TestApp, key: &str, id: &str, status: &str) -> Value {
    wait_until(
        Duration::from_secs(20),
        &format!("delivery {id} {status}"),
        || async {
            let found = app.delivery(key, id).await;
            (found["status"] == status).then_some(found)
        },
    )
    .await
}

async fn health(app: &TestApp, key: &str, target: i64) -> Value {
    app.call(
        Method::GET,
        &format!("/v1/destinations/{target}/health"),
        Some(key),
        None,
    )
    .await
    .1
}

fn fast_retries() -> Value {
    json!({"retry_schedule": ["50ms", "50ms", "50ms"], "failure_threshold": 10})
}

/// A delivery reaches the receiver once, signed per Standard Webhooks, with a
/// `webhook-id` naming the delivery; the attempt and the health are recorded.
#[actix_web::test]
async fn a_webhook_delivery_is_signed_delivered_and_recorded() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let target = destination(&app, &key, &receiver.url, Value::Null).await;
    let ids = app
        .enqueue(&key, &[target], json!({"event": "report.ready", "n": 1}))
        .await;

    let done = wait_for_status(&app, &key, &ids[0], "delivered").await;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].signed_with(SECRET), "{:?}", received[0]);
    assert_eq!(received[0].id, format!("msg_{}", ids[0].replace('-', "")));
    assert_eq!(
        serde_json::from_slice::<Value>(&received[0].body).unwrap(),
        json!({"event": "report.ready", "n": 1})
    );
    let attempts = done["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0]["cross_system_reference"]
        .as_str()
        .unwrap()
        .starts_with("rcv-"));

    let health = wait_until(Duration::from_secs(10), "health recorded", || async {
        let health = health(&app, &key, target).await;
        (health["total_deliveries"] == 1).then_some(health)
    })
    .await;
    assert_eq!(health["success_rate"], 100.0);
    assert_eq!(health["circuit_breaker_state"], "closed");
}

/// A request that breaks on an open connection (the receiver closed it under
/// the request) is sent again at once on a new one, as the same attempt, not
/// after the retry backoff (seconds by default).
#[actix_web::test]
async fn a_connection_closed_under_a_request_is_sent_again_at_once() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = DroppingReceiver::start().await;
    let target = destination(&app, &key, &receiver.url, Value::Null).await;
    let ids = app.enqueue(&key, &[target], json!({"n": 1})).await;
    let done = wait_for_status(&app, &key, &ids[0], "delivered").await;
    assert_eq!(done["retry_count"], 0, "{done}");
    assert_eq!(done["attempts"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(receiver.requests(), 2);
}

/// A 500 is retried after the backoff and delivered once; the receiver sees the
/// same `webhook-id` both times.
#[actix_web::test]
async fn a_server_error_is_retried_then_delivered_once() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[500], 0);
    let target = destination(&app, &key, &receiver.url, fast_retries()).await;
    let ids = app.enqueue(&key, &[target], json!({"n": 1})).await;
    let done = wait_for_status(&app, &key, &ids[0], "delivered").await;
    assert_eq!(done["retry_count"], 1);
    assert_eq!(done["attempts"].as_array().unwrap().len(), 2);
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].id, received[1].id);
}

/// A 4xx other than 408/429 fails at once (a dead letter, listed), and a replay
/// delivers it.
#[actix_web::test]
async fn a_client_error_is_dead_lettered_and_can_be_replayed() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[422], 0);
    let target = destination(&app, &key, &receiver.url, fast_retries()).await;
    let ids = app.enqueue(&key, &[target], json!({"n": 1})).await;
    let failed = wait_for_status(&app, &key, &ids[0], "failed").await;
    assert_eq!(failed["retry_count"], 0, "no retry for a 422");
    let dead = listed_with_status(&app, &key, "failed").await;
    assert_eq!(dead[0]["id"], ids[0]);

    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/deliveries/{}/retry", ids[0]),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 202);
    wait_for_status(&app, &key, &ids[0], "delivered").await;
    assert_eq!(receiver.received().len(), 2);
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/deliveries/{}/retry", ids[0]),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 409, "only dead letters are replayed");
}

/// A dead letter whose destination was deleted cannot be replayed: a 409
/// naming the destination, and the delivery stays failed rather than wait
/// forever in the queue.
#[actix_web::test]
async fn a_dead_letter_of_a_deleted_destination_is_not_replayed() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[422], 0);
    let target = destination(&app, &key, &receiver.url, fast_retries()).await;
    let ids = app.enqueue(&key, &[target], json!({"n": 1})).await;
    wait_for_status(&app, &key, &ids[0], "failed").await;
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/destinations/{target}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 204);

    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/deliveries/{}/retry", ids[0]),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("destination {target}")) && message.contains("deleted"),
        "{message}"
    );
    assert_eq!(app.delivery(&key, &ids[0]).await["status"], "failed");
}

/// A destination's health never contradicts the destination: disabled by
/// hand, its health says `disabled` at once (before any health figures were
/// written), and healthy again once it is re-enabled.
#[actix_web::test]
async fn a_disabled_destination_s_health_says_so_at_once() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let target = destination(&app, &key, &receiver.url, json!({})).await;
    assert_eq!(health(&app, &key, target).await["status"], "healthy");
    for (disabled, status) in [(true, "disabled"), (false, "healthy")] {
        let (code, shown) = app
            .call(
                Method::PATCH,
                &format!("/v1/destinations/{target}"),
                Some(&key),
                Some(json!({"disabled": disabled})),
            )
            .await;
        assert_eq!(code, 200, "{shown}");
        let health = health(&app, &key, target).await;
        assert_eq!(health["status"], status, "{health}");
        assert_eq!(health["disabled_at"].is_null(), !disabled, "{health}");
    }
    let (status, _) = app
        .call(
            Method::GET,
            "/v1/destinations/999999/health",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

/// Every destination's attempts land in its own health row, though the
/// HealthActor writes the figures of all destinations together.
#[actix_web::test]
async fn each_destination_health_counts_its_own_attempts() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let steady = Receiver::start(&[], 0);
    let refusing = Receiver::start(&[422], 0);
    let busy = destination(&app, &key, &steady.url, json!({})).await;
    let quiet = destination(&app, &key, &steady.url, json!({})).await;
    let refused = destination(&app, &key, &refusing.url, fast_retries()).await;
    for n in 0..3 {
        app.enqueue(&key, &[busy], json!({"n": n})).await;
    }
    app.enqueue(&key, &[quiet, refused], json!({"n": 3})).await;

    let [busy, quiet, refused] =
        wait_until(Duration::from_secs(10), "health of all three", || async {
            let shown = [
                health(&app, &key, busy).await,
                health(&app, &key, quiet).await,
                health(&app, &key, refused).await,
            ];
            (shown[0]["total_deliveries"] == 3
                && shown[1]["total_deliveries"] == 1
                && shown[2]["total_deliveries"] == 1)
                .then_some(shown)
        })
        .await;
    for healthy in [&busy, &quiet] {
        assert_eq!(healthy["total_failures"], 0, "{healthy}");
        assert_eq!(healthy["success_rate"], 100.0, "{healthy}");
        assert_eq!(healthy["status"], "healthy", "{healthy}");
    }
    assert_eq!(refused["total_failures"], 1, "{refused}");
    assert_eq!(refused["consecutive_failures"], 1, "{refused}");
    assert_eq!(refused["success_rate"], 0.0, "{refused}");
    assert_eq!(refused["status"], "degraded", "{refused}");
    assert!(refused["last_failure_at"].is_string(), "{refused}");
    assert!(refused["last_success_at"].is_null(), "{refused}");
}

/// Retries run out: the delivery ends `failed` after the last one.
#[actix_web::test]
async fn retries_end_in_a_dead_letter() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[503, 503, 503, 503], 0);
    let target = destination(&app, &key, &receiver.url, fast_retries()).await;
    let ids = app.enqueue(&key, &[target], json!({"n": 1})).await;
    let failed = wait_for_status(&app, &key, &ids[0], "failed").await;
    assert_eq!(failed["retry_count"], 3);
    assert_eq!(receiver.received().len(), 4);
}

/// After `failure_threshold` failures the breaker opens: deliveries wait
/// without using their retries, and the health shows it.
#[actix_web::test]
async fn an_open_breaker_holds_deliveries_without_burning_retries() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[500; 50], 0);
    let settings = json!({"retry_schedule": ["50ms", "50ms", "50ms", "50ms", "50ms", "50ms"],
                          "failure_threshold": 2, "reset_timeout": "1h"});
    let target = destination(&app, &key, &receiver.url, settings).await;
    let ids = app.enqueue(&key, &[target], json!({"n": 1})).await;
    wait_until(Duration::from_secs(20), "breaker open", || async {
        (health(&app, &key, target).await["circuit_breaker_state"] == "open").then_some(())
    })
    .await;
    // Give the queue a few polls: the item is claimed and released, never attempted.
    let attempts_then = receiver.received().len();
    wait_until(Duration::from_secs(10), "a released claim", || async {
        let found = app.delivery(&key, &ids[0]).await;
        (found["status"] == "retrying" && found["next_retry_at"].is_string()).then_some(())
    })
    .await;
    assert_eq!(attempts_then, 2);
    let found = app.delivery(&key, &ids[0]).await;
    assert_eq!(
        found["retry_count"], 2,
        "waiting for the breaker uses no retry: {found}"
    );
}

/// A receiver that never answers slows only its own destination: the other
/// destination's deliveries all arrive meanwhile.
#[actix_web::test]
async fn a_dead_destination_does_not_hold_up_the_others() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let dead = Receiver::start(&[], usize::MAX);
    let healthy = Receiver::start(&[], 0);
    let dead_id = unanswered_destination(&app, &key, &dead.url, 2000, 2).await;
    let healthy_id = destination(&app, &key, &healthy.url, Value::Null).await;
    for n in 0..10 {
        app.enqueue(&key, &[dead_id, healthy_id], json!({"n": n}))
            .await;
    }
    wait_until(
        Duration::from_secs(10),
        "all healthy deliveries",
        || async { (healthy.received().len() == 10).then_some(()) },
    )
    .await;
    assert!(
        dead.received().len() <= 2,
        "the dead destination holds at most its own concurrency"
    );
}

/// A delivery queued for a moment later is attempted at that moment, not
/// at the next poll (a minute away here), and not before it: its `NOTIFY`
/// says when it is due.
#[actix_web::test]
async fn a_delivery_due_shortly_is_attempted_at_its_time_without_waiting_for_the_poll() {
    let app =
        spawn_app_with(|config| config.delivery.poll_interval = Duration::from_secs(60)).await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let target = destination(&app, &key, &receiver.url, Value::Null).await;
    let wait = Duration::from_millis(1500);
    let (due, due_here) = (chrono::Utc::now() + wait, std::time::Instant::now() + wait);
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/deliveries",
            Some(&key),
            Some(json!({"destination_ids": [target], "payload": {"n": 1},
                        "scheduled_at": due.to_rfc3339()})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let received = receiver.wait_for(1, Duration::from_secs(15)).await;
    assert!(received[0].at >= due_here, "attempted before it was due");
}

/// Work due together goes out highest priority first, then earliest due:
/// the claim chooses by priority, and the destination's actor sends in that
/// order, though a claim returns its rows in table order.
#[actix_web::test]
async fn higher_priority_deliveries_go_first() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let one_at_a_time = destination(&app, &key, &receiver.url, json!({"concurrency": 1})).await;
    let priorities = [0, 3, 10, 0, 7, 3, 0, 10, 1, 0, 5, 2];
    // Queued for later, then made due together in one statement, so that one
    // claim takes them all however long queueing them took.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    for (n, priority) in priorities.iter().enumerate() {
        let (status, body) = app
            .call(
                Method::POST,
                "/v1/deliveries",
                Some(&key),
                Some(
                    json!({"destination_ids": [one_at_a_time], "priority": priority,
                            "scheduled_at": later, "payload": {"n": n, "priority": priority}}),
                ),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let database = app.database().await;
    database
        .execute(
            "UPDATE delivery_queue SET scheduled_at = now() WHERE destination_id = $1",
            &[&one_at_a_time],
        )
        .await
        .unwrap();
    let received = wait_until(
        Duration::from_secs(20),
        "every delivery received",
        || async {
            let received = receiver.received();
            (received.len() == priorities.len()).then_some(received)
        },
    )
    .await;
    let sent: Vec<i64> = received
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["priority"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let mut best_first: Vec<i64> = priorities.to_vec();
    best_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(sent, best_first);
}

/// A claim only takes a lease: the stored status stays `pending`, the API shows
/// `processing` while the lease runs, and PostgreSQL updated the claimed rows
/// in place (HOT), with no new index entries: an index on a column a claim
/// sets would make every claim dearer, and this test fail.
#[actix_web::test]
async fn a_claim_is_a_lease_updated_in_place_and_shown_as_processing() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let hung = Receiver::start(&[], usize::MAX);
    let hung_id = unanswered_destination(&app, &key, &hung.url, 30_000, 1).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.extend(app.enqueue(&key, &[hung_id], json!({"n": n})).await);
    }
    wait_for_status(&app, &key, &ids[0], "processing").await;
    let listed = wait_until(
        Duration::from_secs(10),
        "all five deliveries listed as processing",
        || async {
            let listed = listed_with_status(&app, &key, "processing").await;
            (listed.len() == 5).then_some(listed)
        },
    )
    .await;
    assert!(listed.iter().all(|d| d["status"] == "processing"));
    assert_eq!(
        listed_with_status(&app, &key, "pending").await,
        Vec::<Value>::new(),
        "claimed is not pending"
    );

    let database = app.database().await;
    let stored: Vec<(String, bool)> = database
        .query(
            "SELECT status, lease_expires_at > now() FROM delivery_queue WHERE destination_id = $1",
            &[&hung_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(stored, vec![("pending".to_owned(), true); 5]);
    // The queue's connection reports its statistics once idle for a moment.
    wait_until(
        Duration::from_secs(30),
        "the claims counted as HOT updates",
        || async {
            let hot = scalar(
                &database,
                "SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'delivery_queue'",
            )
            .await;
            (hot >= 5).then_some(())
        },
    )
    .await;
}

/// Configuration is validated field by field, secrets are stored encrypted and
/// shown as `***`, and kinds not available yet are refused.
#[actix_web::test]
async fn destinations_are_validated_and_their_secrets_hidden() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let (status, body) = app
        .try_create_destination(
            &key,
            json!({"type": "webhook", "label": "", "config": {"url": "gopher://x", "method": "GET"},
                   "settings": {"concurrency": 0}}),
        )
        .await;
    assert_eq!(status, 400);
    let fields = error_fields(&body);
    for field in [
        "label",
        "config.url",
        "config.method",
        "settings.concurrency",
    ] {
        assert!(fields.iter().any(|named| named == field), "{field}: {body}");
    }
    let (status, _) = app
        .try_create_destination(&key, json!({"type": "email", "label": "x", "config": {}}))
        .await;
    assert_eq!(status, 400);

    let target = destination(&app, &key, "http://127.0.0.1:9/hook", Value::Null).await;
    let (_, shown) = app
        .call(
            Method::GET,
            &format!("/v1/destinations/{target}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(shown["config"]["secret"], "***");
    let stored: Value = app
        .database()
        .await
        .query_one(
            "SELECT config FROM delivery_destinations WHERE id = $1",
            &[&target],
        )
        .await
        .unwrap()
        .get::<_, tokio_postgres::types::Json<Value>>(0)
        .0;
    assert!(
        !stored
            .to_string()
            .contains(SECRET.trim_start_matches("whsec_")),
        "{stored}"
    );
    assert!(stored["secret"].as_str().unwrap().starts_with("enc:v1:"));
    // Changing the URL with the secret sent masked keeps the secret.
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/v1/destinations/{target}"),
            Some(&key),
            Some(json!({"config": {"url": "http://127.0.0.1:10/hook", "secret": "***"}})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, test) = app
        .call(
            Method::POST,
            &format!("/v1/destinations/{target}/test"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(test["reachable"], false, "{test}");
}

/// Another organization can neither see nor use a destination or delivery; a
/// repeated idempotency key returns the first deliveries.
#[actix_web::test]
async fn destinations_and_deliveries_are_isolated_and_enqueue_is_idempotent() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-b", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let target = destination(&app, &key, &receiver.url, Value::Null).await;
    let body = json!({"destination_ids": [target], "payload": {"n": 1}, "idempotency_key": "once"});
    let (_, first) = app
        .call(
            Method::POST,
            "/v1/deliveries",
            Some(&key),
            Some(body.clone()),
        )
        .await;
    let (_, again) = app
        .call(
            Method::POST,
            "/v1/deliveries",
            Some(&key),
            Some(body.clone()),
        )
        .await;
    assert_eq!(first["deliveries"][0]["id"], again["deliveries"][0]["id"]);
    let id = first["deliveries"][0]["id"].as_str().unwrap().to_owned();

    assert_eq!(
        app.call(
            Method::GET,
            &format!("/v1/destinations/{target}"),
            Some(&other),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/v1/destinations/{target}"),
            Some(&other),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        app.call(Method::POST, "/v1/deliveries", Some(&other), Some(body))
            .await
            .0,
        400
    );
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/v1/deliveries/{id}"),
            Some(&other),
            None
        )
        .await
        .0,
        404
    );
    let (_, listed) = app
        .call(Method::GET, "/v1/destinations", Some(&other), None)
        .await;
    assert_eq!(listed["destinations"].as_array().unwrap().len(), 0);
    let auditor = app.create_key("org-a", "auditor").await;
    assert_eq!(
        app.call(Method::GET, "/v1/destinations", Some(&auditor), None)
            .await
            .0,
        200
    );
    assert_eq!(
        app.try_create_destination(&auditor, webhook("x", "http://127.0.0.1:9/"))
            .await
            .0,
        403
    );
    wait_for_status(&app, &key, &id, "delivered").await;
    assert_eq!(receiver.received().len(), 1);
}

/// Concurrent `POST /v1/deliveries` calls are written in groups, and each
/// call still gets its own deliveries, committed when it is answered: of
/// forty calls from two organizations sent at once, each accepted one finds
/// exactly its payload in `delivery_queue`, under its organization. A call
/// naming another organization's destination, and one whose payload
/// PostgreSQL refuses (a CHECK constraint added for the test), fail alone:
/// the group they shared is written again call by call.
#[actix_web::test]
async fn concurrent_enqueues_commit_their_own_deliveries_and_a_bad_one_fails_alone() {
    let app = spawn_app().await;
    let database = app.database().await;
    database
        .batch_execute(
            "ALTER TABLE delivery_queue ADD CONSTRAINT test_no_poison \
             CHECK (NOT payload ? 'poison')",
        )
        .await
        .unwrap();
    let keys = [
        app.create_key("org-a", "org:admin").await,
        app.create_key("org-b", "org:admin").await,
    ];
    let receiver = Receiver::start(&[], 0);
    let mut targets = Vec::new();
    for key in &keys {
        targets.push(destination(&app, key, &receiver.url, Value::Null).await);
    }
    // Due tomorrow: nothing is attempted meanwhile.
    let later = (chrono::Utc::now() + chrono::TimeDelta::days(1)).to_rfc3339();
    let call = |n: usize, organization: usize, destination: i64, payload: Value| {
        let (app, key, later) = (&app, &keys[organization], later.clone());
        async move {
            let body = json!({"destination_ids": [destination], "payload": payload,
                              "scheduled_at": later});
            let answer = app
                .call(Method::POST, "/v1/deliveries", Some(key), Some(body))
                .await;
            (n, organization, answer)
        }
    };
    let mut calls = Vec::new();
    for n in 0..38 {
        calls.push(call(n, n % 2, targets[n % 2], json!({"n": n})));
    }
    calls.push(call(38, 0, targets[1], json!({"n": 38})));
    calls.push(call(39, 1, targets[1], json!({"n": 39, "poison": true})));
    let answers = futures_util::future::join_all(calls).await;

    let mut ids = std::collections::HashSet::new();
    for (n, organization, (status, body)) in answers {
        match n {
            38 => {
                assert_eq!(status, 400, "{body}");
                assert_eq!(error_fields(&body), ["destination_ids[0]"]);
            }
            39 => assert_eq!(status, 400, "{body}"),
            _ => {
                assert_eq!(status, 202, "call {n}: {body}");
                let deliveries = body["deliveries"].as_array().unwrap();
                assert_eq!(deliveries.len(), 1, "{body}");
                let id: uuid::Uuid = deliveries[0]["id"].as_str().unwrap().parse().unwrap();
                assert!(ids.insert(id), "delivery {id} answered twice");
                let row = database
                    .query_one(
                        "SELECT organization_id, destination_id, (payload->>'n')::int8 \
                         FROM delivery_queue WHERE id = $1",
                        &[&id],
                    )
                    .await
                    .unwrap();
                let expected = (
                    ["org-a", "org-b"][organization].to_owned(),
                    targets[organization],
                    n as i64,
                );
                assert_eq!((row.get(0), row.get(1), row.get(2)), expected);
            }
        }
    }
    assert_eq!(ids.len(), 38);
    let stored = scalar(&database, "SELECT count(*) FROM delivery_queue").await;
    assert_eq!(stored, 38, "only the accepted calls' deliveries are stored");
    // All forty calls reached the actor; some shared a transaction.
    let (calls, groups) = enqueue_groups(&app).await;
    assert_eq!(calls, 40.0);
    assert!(groups < calls, "{groups} transactions for {calls} calls");
}

/// While a group is being written, calls of a few deliveries wait for it to
/// end and go together, rather than each start a transaction beside it; a
/// full request's worth (a hundred deliveries) goes beside it at once.
#[actix_web::test]
async fn small_calls_wait_for_the_group_in_flight_and_a_hundred_go_beside_it() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let target = destination(&app, &key, &receiver.url, Value::Null).await;
    // Due tomorrow: nothing is attempted meanwhile.
    let later = (chrono::Utc::now() + chrono::TimeDelta::days(1)).to_rfc3339();
    let call = |n: usize| {
        let body = json!({"destination_ids": [target], "payload": {"n": n}, "scheduled_at": later});
        app.call(Method::POST, "/v1/deliveries", Some(&key), Some(body))
    };
    // The destination's row locked: each group waits at its foreign-key check.
    let locker = app.database().await;
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM delivery_destinations WHERE id = {target} FOR UPDATE"
        ))
        .await
        .unwrap();
    let observer = app.database().await;
    let groups_waiting = |wanted: i64, what: &'static str| {
        let observer = &observer;
        wait_until(Duration::from_secs(20), what, move || async move {
            let waiting = scalar(
                observer,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE 'WITH wanted AS%'",
            )
            .await;
            (waiting == wanted).then_some(())
        })
    };

    let first = call(0);
    let the_rest = async {
        groups_waiting(1, "the first call's group held by the lock").await;
        let rest = futures_util::future::join_all((1..=100).map(call));
        let release = async {
            groups_waiting(2, "a second group once a hundred deliveries wait").await;
            locker.batch_execute("ROLLBACK").await.unwrap();
        };
        futures_util::join!(rest, release).0
    };
    let (first, rest) = futures_util::join!(first, the_rest);
    for (status, body) in std::iter::once(first).chain(rest) {
        assert_eq!(status, 202, "{body}");
    }
    let (calls, groups) = enqueue_groups(&app).await;
    assert_eq!(
        (calls, groups),
        (101.0, 2.0),
        "the first call alone, then the hundred that waited for it together"
    );
}

/// Calls naming a hundred destinations each, several at once and in
/// rounds, are queued whole: on a worker's fresh connections (statements
/// still unprepared) and on the same connections once they are prepared.
#[actix_web::test]
async fn calls_naming_a_hundred_destinations_are_queued_whole() {
    let app = spawn_app().await;
    let database = app.database().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let mut targets = Vec::new();
    for _ in 0..100 {
        targets.push(destination(&app, &key, &receiver.url, Value::Null).await);
    }
    // Due tomorrow: nothing is attempted meanwhile.
    let later = (chrono::Utc::now() + chrono::TimeDelta::days(1)).to_rfc3339();
    let body = json!({"destination_ids": targets, "payload": {"n": 1}, "scheduled_at": later});
    for round in 0..3 {
        let calls = (0..4).map(|_| {
            app.call(
                Method::POST,
                "/v1/deliveries",
                Some(&key),
                Some(body.clone()),
            )
        });
        for (status, answer) in futures_util::future::join_all(calls).await {
            assert_eq!(status, 202, "round {round}: {answer}");
            assert_eq!(answer["deliveries"].as_array().unwrap().len(), 100);
        }
    }
    let stored = scalar(&database, "SELECT count(*) FROM delivery_queue").await;
    assert_eq!(stored, 1200);
}

/// Each delivery takes its destination's number of retries; a call naming
/// one destination its organization lacks queues nothing and names just that one.
#[actix_web::test]
async fn retries_follow_each_destination_and_an_unknown_one_fails_the_call_alone() {
    let app = spawn_app().await;
    let database = app.database().await;
    let key = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-b", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let three = destination(&app, &key, &receiver.url, fast_retries()).await;
    let default = destination(&app, &key, &receiver.url, Value::Null).await;
    let foreign = destination(&app, &other, &receiver.url, Value::Null).await;
    let later = (chrono::Utc::now() + chrono::TimeDelta::days(1)).to_rfc3339();

    let body =
        json!({"destination_ids": [three, default], "payload": {"n": 1}, "scheduled_at": later});
    let (status, answer) = app
        .call(Method::POST, "/v1/deliveries", Some(&key), Some(body))
        .await;
    assert_eq!(status, 202, "{answer}");
    let retries: Vec<(i64, i64)> = answer["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["destination_id"].as_i64().unwrap(),
                d["max_retries"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(retries, [(three, 3), (default, 7)]);

    let body = json!({"destination_ids": [three, foreign, default], "payload": {"n": 2},
                      "scheduled_at": later});
    let (status, answer) = app
        .call(Method::POST, "/v1/deliveries", Some(&key), Some(body))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(error_fields(&answer), ["destination_ids[1]"]);
    let body = json!({"destination_ids": [999_999, three, foreign], "payload": {"n": 3},
                      "scheduled_at": later});
    let (status, answer) = app
        .call(Method::POST, "/v1/deliveries", Some(&key), Some(body))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        error_fields(&answer),
        ["destination_ids[0]", "destination_ids[2]"]
    );
    let stored = scalar(&database, "SELECT count(*) FROM delivery_queue").await;
    assert_eq!(stored, 2, "the refused call queued nothing");
}

/// Two workers on one queue: every delivery arrives exactly once.
#[actix_web::test]
async fn two_workers_never_deliver_the_same_item() {
    let first = spawn_app().await;
    let second = spawn_beside(&first, |_| {}).await;
    let key = first.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let target = destination(&first, &key, &receiver.url, Value::Null).await;
    let mut ids = Vec::new();
    for n in 0..40 {
        let app = if n % 2 == 0 { &first } else { &second };
        ids.extend(app.enqueue(&key, &[target], json!({"n": n})).await);
    }
    receiver.wait_for(40, Duration::from_secs(20)).await;
    assert_each_received_once(&receiver, 40);
    wait_all_delivered(&first.database().await, Duration::from_secs(10)).await;
}

/// A claim waiting behind its destination's earlier attempts for more than
/// half its lease goes back to the queue rather than be attempted: its lease
/// could run out mid-attempt, and another worker claim it too. One worker
/// claims twelve deliveries to a receiver answering after 500 ms, one at a
/// time, under a 3 s lease; a second worker starts beside it, and would
/// claim the last ones once their leases ran out, while the first still held
/// them.
#[actix_web::test]
async fn a_claim_held_too_long_goes_back_rather_than_be_delivered_twice() {
    let lease =
        |config: &mut audit_worker::config::Config| config.delivery.lease = Duration::from_secs(3);
    let first = spawn_app_with(lease).await;
    let key = first.create_key("org-a", "org:admin").await;
    let receiver = Receiver::slow(Duration::from_millis(500));
    let target = destination(&first, &key, &receiver.url, json!({"concurrency": 1})).await;
    for n in 0..12 {
        first.enqueue(&key, &[target], json!({"n": n})).await;
    }
    let second = spawn_beside(&first, lease).await;
    wait_all_delivered(&second.database().await, Duration::from_secs(30)).await;
    assert_each_received_once(&receiver, 12);
}

/// A destination failing without a success for its `auto_disable_after` is
/// disabled with a reason and a DELIVERY alert; its deliveries wait rather than
/// fail; the API re-enables it; the gauges show it on `/metrics`.
#[actix_web::test]
async fn a_destination_failing_too_long_is_disabled_and_can_be_re_enabled() {
    let app =
        spawn_app_with(|config| config.delivery.health_interval = Duration::from_millis(100)).await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[500; 1000], 0);
    let settings = json!({"retry_schedule": ["50ms", "50ms", "50ms", "50ms", "50ms", "50ms", "50ms", "50ms"],
                          "failure_threshold": 100, "auto_disable_after": "1s"});
    let target = destination(&app, &key, &receiver.url, settings).await;
    app.enqueue(&key, &[target], json!({"n": 1})).await;
    let shown = wait_until(Duration::from_secs(20), "auto-disabled", || async {
        let (_, shown) = app
            .call(
                Method::GET,
                &format!("/v1/destinations/{target}"),
                Some(&key),
                None,
            )
            .await;
        (shown["disabled"] == true).then_some(shown)
    })
    .await;
    assert_eq!(shown["disabled_by"], "audit-worker");
    let health = health(&app, &key, target).await;
    assert_eq!(health["status"], "disabled");
    assert!(
        health["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("no successful delivery"),
        "{health}"
    );
    let alerts = app.count("SELECT count(*) FROM alerts WHERE organization_id = 'org-a' AND type = 'DELIVERY' AND source = 'system' AND rule_id = 'system:destination-disabled'", &[]).await;
    assert_eq!(alerts, 1);

    // Held, not failed, while disabled: a delivery queued with it to a healthy
    // destination goes out, and it stays pending without an attempt.
    let attempts_before = receiver.received().len();
    let healthy = Receiver::start(&[], 0);
    let other = destination(&app, &key, &healthy.url, json!({})).await;
    let held = app.enqueue(&key, &[target, other], json!({"n": 2})).await;
    wait_for_status(&app, &key, &held[1], "delivered").await;
    assert_eq!(app.delivery(&key, &held[0]).await["status"], "pending");
    assert_eq!(receiver.received().len(), attempts_before);

    let (status, shown) = app
        .call(
            Method::PATCH,
            &format!("/v1/destinations/{target}"),
            Some(&key),
            Some(json!({"disabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(shown["disabled"], false);
    wait_until(
        Duration::from_secs(10),
        "the held delivery is attempted once re-enabled",
        || async { (receiver.received().len() > attempts_before).then_some(()) },
    )
    .await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!(
            "audit_worker_destination_consecutive_failures{{destination_id=\"{target}\"}}"
        )),
        "{metrics}"
    );
}

/// A destination's rate limit spaces its attempts out: six deliveries at two
/// per second (burst two) take at least a second and a half.
#[actix_web::test]
async fn a_destination_rate_limit_spaces_attempts() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let target = destination(
        &app,
        &key,
        &receiver.url,
        json!({"rate_limit_per_second": 2, "concurrency": 8}),
    )
    .await;
    for n in 0..6 {
        app.enqueue(&key, &[target], json!({"n": n})).await;
    }
    wait_until(Duration::from_secs(20), "six deliveries", || async {
        (receiver.received().len() == 6).then_some(())
    })
    .await;
    let received = receiver.received();
    let spread = received[5].at - received[0].at;
    assert!(
        spread >= Duration::from_millis(1400),
        "six attempts within {spread:?} at 2/s"
    );
}

/// Waits until `/metrics` says the worker runs `expected` DeliveryActors.
async fn wait_for_delivery_actors(app: &TestApp, expected: i64) {
    wait_until(
        Duration::from_secs(10),
        &format!("{expected} delivery actors"),
        || async {
            let actors = app.metric::<i64>("audit_worker_delivery_actors").await;
            (actors == Some(expected)).then_some(())
        },
    )
    .await;
}

/// One DeliveryActor per active destination: started when a destination is
/// created (or found at start-up) or re-enabled, stopped when it is disabled
/// or deleted; a deleted destination's queued deliveries fail.
#[actix_web::test]
async fn delivery_actors_follow_the_destinations() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    wait_for_delivery_actors(&app, 0).await;
    let first = destination(&app, &key, &receiver.url, json!({})).await;
    let second = destination(&app, &key, &receiver.url, json!({})).await;
    wait_for_delivery_actors(&app, 2).await;

    let patch = |id: i64, body: Value| {
        let (app, key) = (&app, &key);
        async move {
            let (status, shown) = app
                .call(
                    Method::PATCH,
                    &format!("/v1/destinations/{id}"),
                    Some(key),
                    Some(body),
                )
                .await;
            assert_eq!(status, 200, "{shown}");
        }
    };
    patch(first, json!({"disabled": true})).await;
    wait_for_delivery_actors(&app, 1).await;

    let queued = app.enqueue(&key, &[second], json!({"n": 1})).await;
    wait_for_status(&app, &key, &queued[0], "delivered").await;
    // Scheduled later, then orphaned by the deletion.
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/deliveries",
            Some(&key),
            Some(json!({"destination_ids": [second], "payload": {"n": 2},
                        "scheduled_at": "2100-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let later = body["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/destinations/{second}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 204);
    wait_for_delivery_actors(&app, 0).await;
    let orphan = app.delivery(&key, &later).await;
    assert_eq!(orphan["status"], "failed");
    assert_eq!(orphan["last_error"], "the destination was deleted");

    patch(first, json!({"disabled": false})).await;
    wait_for_delivery_actors(&app, 1).await;
}
