//! Event streams against the real worker, PostgreSQL and a real webhook
//! receiver: subscriptions created, listed, changed, paused, resumed and
//! deleted, each recorded in the organization's trail; their lag counted
//! from where they start; bad ones refused naming the field; other
//! organizations and roles without the permission kept out; batches sent as
//! signed NDJSON, every matching event once and in chain order; a destination
//! that refuses holds its stream, which then catches up in order.

mod common;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::pki::TestCa;
use common::receiver::{Received, Receiver};
use common::syslog::Collector;
use common::{
    error_fields, event, servers, spawn_app, spawn_app_with, spawn_beside, wait_until, webhook,
    TestApp,
};
use reqwest::Method;
use serde_json::{json, Value};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(20);

async fn subscribe(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, created) = try_subscribe(app, key, body).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// `POST /v1/subscriptions`; asserts nothing.
async fn try_subscribe(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.call(Method::POST, "/v1/subscriptions", Some(key), Some(body))
        .await
}

async fn subscription(app: &TestApp, key: &str, id: &Value) -> Value {
    let (status, found) = app
        .call(
            Method::GET,
            &format!("/v1/subscriptions/{id}"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{found}");
    found
}

async fn stored_subscriptions(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM stream_subscriptions", &[])
        .await
}

#[actix_web::test]
async fn a_subscription_is_created_listed_changed_paused_resumed_and_deleted() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let hook = app
        .create_destination(&key, webhook("siem", "http://127.0.0.1:9/"))
        .await;
    let other_hook = app
        .create_destination(&key, webhook("lake", "http://127.0.0.1:9/lake"))
        .await;

    let created = subscribe(&app, &key, json!({"destination_id": hook})).await;
    assert_eq!(created["destination_id"], hook);
    assert_eq!(created["format"], "native");
    assert_eq!(
        created["batch"],
        json!({"max_events": 500, "max_delay_ms": 1000})
    );
    assert_eq!(created["start"], "now");
    assert_eq!(created["filter"], json!({}));
    assert_eq!(created["state"], "running");
    assert_eq!(created["lag_events"], 0, "{created}");
    assert_eq!(created["last_delivered_event_id"], Value::Null);
    let id = &created["id"];

    let (status, listed) = app
        .call(Method::GET, "/v1/subscriptions", Some(&key), None)
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["subscriptions"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["subscriptions"][0]["id"], *id);

    let change = json!({
        "destination_id": other_hook,
        "filter": {"action": "patient.*", "status": "failure"},
        "format": "ocsf",
        "batch": {"max_events": 50}
    });
    let (status, changed) = app
        .call(
            Method::PATCH,
            &format!("/v1/subscriptions/{id}"),
            Some(&key),
            Some(change),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["destination_id"], other_hook);
    assert_eq!(
        changed["filter"],
        json!({"action": "patient.*", "status": "failure"})
    );
    assert_eq!(changed["format"], "ocsf");
    assert_eq!(
        changed["batch"],
        json!({"max_events": 50, "max_delay_ms": 1000})
    );
    assert_eq!(subscription(&app, &key, id).await["format"], "ocsf");

    for (verb, state) in [("pause", "paused"), ("resume", "running")] {
        let (status, answer) = app
            .call(
                Method::POST,
                &format!("/v1/subscriptions/{id}/{verb}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!((status, &answer["state"]), (200, &json!(state)), "{answer}");
        assert_eq!(subscription(&app, &key, id).await["state"], state);
    }

    let path = format!("/v1/subscriptions/{id}");
    assert_eq!(
        app.call(Method::DELETE, &path, Some(&key), None).await.0,
        204
    );
    assert_eq!(app.call(Method::GET, &path, Some(&key), None).await.0, 404);
    assert_eq!(
        app.call(Method::DELETE, &path, Some(&key), None).await.0,
        404
    );
    assert_eq!(stored_subscriptions(&app).await, 0);

    // Each change left its event in the organization's own trail.
    let page = app
        .list_events(&key, "action=admin.stream_subscription.*&limit=100")
        .await;
    let mut actions: Vec<&str> = page["events"]
        .as_array()
        .expect("a listing")
        .iter()
        .filter_map(|event| event["action"].as_str())
        .collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        [
            "admin.stream_subscription.create",
            "admin.stream_subscription.delete",
            "admin.stream_subscription.pause",
            "admin.stream_subscription.resume",
            "admin.stream_subscription.update",
        ]
    );
}

/// The lag counts the committed events that match the filter and come after
/// where the stream starts: `earliest` the whole trail, `now` only later
/// events, an instant only events stamped from then on.
#[actix_web::test]
async fn the_lag_counts_matching_events_after_the_start() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-b", "org:admin").await;
    let hook = app
        .create_destination(&key, webhook("siem", "http://127.0.0.1:9/"))
        .await;
    let an_hour_ago = Utc::now() - TimeDelta::hours(1);
    let earlier = Utc::now() - TimeDelta::hours(3);
    app.ingest(
        &key,
        vec![
            event("alice", "patient.record.read")
                .status("failure")
                .at(earlier),
            event("alice", "patient.record.read").status("failure"),
            event("alice", "patient.record.read"),
            event("bob", "auth.login").status("failure"),
        ],
    )
    .await;
    // Another organization's matching events are never its lag.
    app.ingest(
        &other,
        event("eve", "patient.record.read").status("failure"),
    )
    .await;

    let filter = json!({"action": "patient.*", "status": "failure"});
    let subscribe_from = |start: Value| {
        let body = json!({"destination_id": hook, "filter": filter, "start": start});
        subscribe(&app, &key, body)
    };
    let earliest = subscribe_from(json!("earliest")).await;
    assert_eq!(earliest["lag_events"], 2, "{earliest}");
    assert!(
        earliest["lag_seconds"]
            .as_f64()
            .is_some_and(|lag| lag >= 0.0),
        "{earliest}"
    );
    let since = subscribe_from(json!(an_hour_ago.to_rfc3339())).await;
    assert_eq!(since["lag_events"], 1, "{since}");
    let now = subscribe_from(json!("now")).await;
    assert_eq!(now["lag_events"], 0, "{now}");
    assert_eq!(now["lag_seconds"], 0.0, "{now}");

    app.ingest(
        &key,
        vec![
            event("carol", "patient.chart.update").status("failure"),
            event("carol", "patient.chart.update").status("success"),
        ],
    )
    .await;
    let lags = [&earliest, &since, &now].map(|created| &created["id"]);
    let mut seen = Vec::new();
    for id in lags {
        seen.push(subscription(&app, &key, id).await["lag_events"].clone());
    }
    assert_eq!(seen, [json!(3), json!(2), json!(1)]);
}

#[actix_web::test]
async fn bad_subscriptions_are_refused_naming_the_field_and_nothing_is_stored() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-b", "org:admin").await;
    let hook = app
        .create_destination(&key, webhook("siem", "http://127.0.0.1:9/"))
        .await;
    let theirs = app
        .create_destination(&other, webhook("theirs", "http://127.0.0.1:9/"))
        .await;
    let email = app
        .create_destination(
            &key,
            json!({"type": "email", "label": "mail",
                "config": {"host": "127.0.0.1", "port": 2525, "tls": "none",
                           "from": "audit@worker.test", "to": ["officer@clinic.test"]}}),
        )
        .await;

    let cases = [
        (json!({"destination_id": email}), "destination_id"),
        (json!({"destination_id": 999_999}), "destination_id"),
        (json!({"destination_id": theirs}), "destination_id"),
        (json!({"destination_id": hook, "format": "xml"}), "format"),
        (
            json!({"destination_id": hook, "batch": {"max_events": 0}}),
            "batch.max_events",
        ),
        (
            json!({"destination_id": hook, "batch": {"max_events": 10_001}}),
            "batch.max_events",
        ),
        (
            json!({"destination_id": hook, "batch": {"max_delay_ms": -1}}),
            "batch.max_delay_ms",
        ),
        (
            json!({"destination_id": hook, "start": "yesterday"}),
            "start",
        ),
        (
            json!({"destination_id": hook, "filter": {"status": "maybe"}}),
            "filter.status",
        ),
        (
            json!({"destination_id": hook, "filter": {"data_classification": "SECRET"}}),
            "filter.data_classification",
        ),
        (
            json!({"destination_id": hook, "filter": {"action": " "}}),
            "filter.action",
        ),
    ];
    for (body, field) in cases {
        let (status, refusal) = try_subscribe(&app, &key, body.clone()).await;
        assert_eq!(status, 400, "{body}: {refusal}");
        assert_eq!(error_fields(&refusal), [field], "{body}: {refusal}");
    }
    for body in [
        json!({}),
        json!({"destination_id": hook, "filter": {"colour": "red"}}),
        json!({"destination_id": hook, "batch": {"max_events": "many"}}),
    ] {
        let (status, refusal) = try_subscribe(&app, &key, body.clone()).await;
        assert_eq!(status, 400, "{body}: {refusal}");
    }
    assert_eq!(stored_subscriptions(&app).await, 0);

    // A change is checked as a creation is, and a refused one changes nothing.
    let created = subscribe(&app, &key, json!({"destination_id": hook})).await;
    let path = format!("/v1/subscriptions/{}", created["id"]);
    for (body, field) in [
        (json!({"destination_id": email}), "destination_id"),
        (json!({"format": "csv"}), "format"),
        (
            json!({"batch": {"max_delay_ms": 3_600_001}}),
            "batch.max_delay_ms",
        ),
    ] {
        let (status, refusal) = app
            .call(Method::PATCH, &path, Some(&key), Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {refusal}");
        assert_eq!(error_fields(&refusal), [field], "{body}: {refusal}");
    }
    let kept = subscription(&app, &key, &created["id"]).await;
    assert_eq!(
        (&kept["destination_id"], &kept["format"], &kept["batch"]),
        (&json!(hook), &json!("native"), &created["batch"])
    );
}

#[actix_web::test]
async fn other_organizations_and_roles_without_the_permission_are_kept_out() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let stranger = app.create_key("org-b", "org:admin").await;
    let auditor = app.create_key("org-a", "auditor").await;
    let hook = app
        .create_destination(&key, webhook("siem", "http://127.0.0.1:9/"))
        .await;
    let created = subscribe(&app, &key, json!({"destination_id": hook})).await;
    let path = format!("/v1/subscriptions/{}", created["id"]);

    let (status, listed) = app
        .call(Method::GET, "/v1/subscriptions", Some(&stranger), None)
        .await;
    assert_eq!((status, &listed["subscriptions"]), (200, &json!([])));
    for (method, path, body) in [
        (Method::GET, path.clone(), None),
        (Method::PATCH, path.clone(), Some(json!({"format": "ocsf"}))),
        (Method::POST, format!("{path}/pause"), None),
        (Method::POST, format!("{path}/resume"), None),
        (Method::DELETE, path.clone(), None),
    ] {
        let (status, answer) = app.call(method.clone(), &path, Some(&stranger), body).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
    }

    // An auditor reads streams but changes none.
    assert_eq!(
        app.call(Method::GET, &path, Some(&auditor), None).await.0,
        200
    );
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/subscriptions".to_owned(),
            Some(json!({"destination_id": hook})),
        ),
        (Method::PATCH, path.clone(), Some(json!({"format": "ocsf"}))),
        (Method::POST, format!("{path}/pause"), None),
        (Method::DELETE, path.clone(), None),
    ] {
        let (status, answer) = app.call(method.clone(), &path, Some(&auditor), body).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
    }
    let kept = subscription(&app, &key, &created["id"]).await;
    assert_eq!(
        (&kept["state"], &kept["format"]),
        (&json!("running"), &json!("native"))
    );
    assert_eq!(stored_subscriptions(&app).await, 1);
}

/// A webhook destination for `receiver`, signing with [`SECRET`].
async fn signed_hook(app: &TestApp, key: &str, receiver: &Receiver, settings: Value) -> i64 {
    app.create_destination(
        key,
        json!({"type": "webhook", "label": "siem",
               "config": {"url": receiver.url, "secret": SECRET}, "settings": settings}),
    )
    .await
}

/// The records of every accepted request (2xx answered, so a refused
/// request's records are left out), one list per request.
fn batches(received: &[Received]) -> Vec<Vec<Value>> {
    received
        .iter()
        .map(|request| {
            let text = std::str::from_utf8(&request.body).expect("UTF-8 NDJSON");
            assert!(text.ends_with('\n'), "{text}");
            text.lines()
                .map(|line| serde_json::from_str(line).expect("a JSON line"))
                .collect()
        })
        .collect()
}

/// Waits until the subscription shows no lag and `last` as its last
/// delivered event; returns it.
async fn caught_up(app: &TestApp, key: &str, id: &Value, last: &Value) -> Value {
    caught_up_within(WAIT, app, key, id, last).await
}

/// [`caught_up`], for a stream that may first have to wait `within` less
/// [`WAIT`] (for its destination, its breaker, its retries).
async fn caught_up_within(
    within: Duration,
    app: &TestApp,
    key: &str,
    id: &Value,
    last: &Value,
) -> Value {
    wait_until(within, "the subscription caught up", || async {
        let found = subscription(app, key, id).await;
        (found["last_delivered_event_id"] == *last && found["lag_events"] == 0).then_some(found)
    })
    .await
}

/// A worker, an administrator's key of `org-a`, and its stream of
/// `patient.*` events, cut by `batch`, to a receiver.
async fn patient_stream(batch: Value) -> (TestApp, String, Receiver, Value) {
    let app = spawn_app_with(|config| config.delivery.allow_loopback = true).await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let hook = signed_hook(&app, &key, &receiver, json!({})).await;
    let body = json!({"destination_id": hook, "filter": {"action": "patient.*"}, "batch": batch});
    let created = subscribe(&app, &key, body).await;
    (app, key, receiver, created)
}

#[actix_web::test]
async fn a_stream_sends_each_matching_event_once_in_chain_order_as_signed_ndjson() {
    let (app, key, receiver, created) =
        patient_stream(json!({"max_events": 3, "max_delay_ms": 50})).await;

    let mut expected = Vec::new();
    for round in 0..4 {
        let sent = vec![
            event("alice", &format!("patient.record.read.{round}")),
            event("bob", "auth.login"),
            event("carol", &format!("patient.chart.update.{round}")).status("failure"),
        ];
        for receipt in app.ingest(&key, sent).await {
            expected.push(receipt["id"].clone());
        }
    }
    // The receipts of the other actions are not the stream's.
    let page = app.list_events(&key, "action=patient.*&limit=100").await;
    let mut matching: Vec<Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["id"].clone())
        .collect();
    matching.sort_by_key(|id| id.as_i64());
    expected.retain(|id| matching.contains(id));
    assert_eq!(expected.len(), 8);

    let last = expected.last().unwrap().clone();
    let shown = caught_up(&app, &key, &created["id"], &last).await;
    assert_eq!(shown["state"], "running", "{shown}");
    let received = receiver.received();
    let batches = batches(&received);
    let sent: Vec<Value> = batches
        .iter()
        .flatten()
        .map(|record| record["id"].clone())
        .collect();
    assert_eq!(sent, expected, "every matching event once, in chain order");
    assert!(
        batches.iter().all(|batch| (1..=3).contains(&batch.len())),
        "{batches:?}"
    );
    for (request, batch) in received.iter().zip(&batches) {
        assert_eq!(request.content_type, "application/x-ndjson");
        assert!(request.signed_with(SECRET), "{request:?}");
        assert!(request.id.starts_with("msg_"), "{request:?}");
        // The native format: the event as GET /v1/events/{id} shows it.
        for record in batch {
            let stored = app.stored_event(&key, &record["id"]).await;
            assert_eq!(*record, stored);
        }
    }
    let ids: std::collections::HashSet<&str> = received.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), received.len(), "a batch id per batch");
}

/// A webhook pointed at a Splunk HTTP Event Collector works as is: HEC's
/// envelope a line, with its `Authorization: Splunk <token>` header, which
/// the API never shows.
#[actix_web::test]
async fn a_splunk_hec_stream_sends_envelopes_with_its_token_which_is_never_shown() {
    let app = spawn_app_with(|config| config.delivery.allow_loopback = true).await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let token = "Splunk 8d2c1e1a-hec-token";
    let hook = app
        .create_destination(
            &key,
            json!({"type": "webhook", "label": "hec",
                   "config": {"url": receiver.url, "headers": {"Authorization": token}}}),
        )
        .await;
    let (status, shown) = app
        .call(
            Method::GET,
            &format!("/v1/destinations/{hook}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        shown["config"]["headers"]["Authorization"], "***",
        "{shown}"
    );
    assert!(!shown.to_string().contains("hec-token"), "{shown}");
    let body = json!({"destination_id": hook, "format": "splunk_hec",
                      "filter": {"action": "patient.*"}, "batch": {"max_delay_ms": 0}});
    let created = subscribe(&app, &key, body).await;
    let receipts = app
        .ingest(&key, event("alice", "patient.record.read"))
        .await;
    caught_up(&app, &key, &created["id"], &receipts[0]["id"]).await;

    let received = receiver.received();
    assert_eq!(received[0].authorization, token);
    let records = batches(&received).concat();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record["sourcetype"], "audit-worker:event");
    assert_eq!(record["source"], "audit-worker:org-a");
    assert!(
        record["time"].is_f64() && record["host"].is_string(),
        "{record}"
    );
    let (_, stored) = app
        .call(
            Method::GET,
            &format!("/v1/events/{}", receipts[0]["id"]),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(record["event"], stored);
}

/// A destination down for a minute: its stream holds its place (failing,
/// the breaker open, its batch given up and sent again), ingest goes on, and
/// once the destination is back every event arrives once, in order.
#[actix_web::test]
async fn a_destination_down_for_a_minute_then_catches_up_in_order() {
    const OUTAGE: Duration = Duration::from_secs(60);
    let app = spawn_app_with(|config| {
        config.delivery.allow_loopback = true;
        config.delivery.health_interval = Duration::from_millis(200);
        config.streams.failed_batch_retry_after = Duration::from_secs(2);
        config.alerts.system_check_interval = Duration::from_millis(500);
        config.alerts.breaker_open_after = Duration::from_secs(5);
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    let down_since = std::time::Instant::now();
    let receiver = Receiver::down_for(OUTAGE);
    let settings = json!({"retry_schedule": ["1s", "2s", "4s"], "failure_threshold": 3,
                          "reset_timeout": "10s"});
    let hook = signed_hook(&app, &key, &receiver, settings).await;
    let batch = json!({"max_events": 10, "max_delay_ms": 0});
    let filter = json!({"action": "patient.*"});
    let held = subscribe(
        &app,
        &key,
        json!({"destination_id": hook, "batch": batch, "filter": filter}),
    )
    .await;

    // Ingest goes on through the outage, a few events every 5 s, until 10 s
    // before its end.
    let mut expected = Vec::new();
    let mut seen_failing = None;
    let lag_series = format!(
        "audit_worker_stream_lag_seconds{{subscription_id=\"{}\"}}",
        held["id"]
    );
    let mut seen_lag = 0.0_f64;
    let mut pace = tokio::time::interval(Duration::from_secs(5));
    loop {
        pace.tick().await;
        if down_since.elapsed() >= OUTAGE - Duration::from_secs(10) {
            break;
        }
        let events: Vec<Value> = (0..3)
            .map(|n| event("alice", &format!("patient.record.read.{n}")).into())
            .collect();
        let receipts = app.ingest(&key, events).await;
        expected.extend(receipts.iter().map(|receipt| receipt["id"].clone()));
        let found = subscription(&app, &key, &held["id"]).await;
        if found["state"] == "failing" {
            seen_failing = Some(found);
        }
        let lag = app.metric::<f64>(&lag_series).await;
        seen_lag = seen_lag.max(lag.unwrap_or_default());
    }
    let failing = seen_failing.expect("the stream shows it is failing during the outage");
    assert!(seen_lag > 0.0, "the lag metric grew during the outage");
    assert!(failing["last_error"].is_string(), "{failing}");
    assert!(
        receiver.received().is_empty(),
        "nothing reached the destination while it was down"
    );

    // The destination is back at the outage's end; a failure just before it
    // may have opened the breaker for its reset timeout (10 s), then come
    // the retry schedule's delays (up to 4 s): only then can it catch up.
    let last = expected.last().unwrap().clone();
    let back_in = OUTAGE.saturating_sub(down_since.elapsed());
    let within = back_in + Duration::from_secs(10 + 4) + WAIT;
    caught_up_within(within, &app, &key, &held["id"], &last).await;
    let received = receiver.received();
    let sent: Vec<Value> = batches(&received)
        .iter()
        .flatten()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(sent, expected, "every event once, in chain order");
    let ids: std::collections::HashSet<&str> = received.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), received.len(), "each batch accepted once");
    // The destination's breaker stayed open long enough for the DELIVERY alert.
    let alerts = app
        .database()
        .await
        .query(
            "SELECT type FROM alerts WHERE organization_id = 'org-a' \
             AND rule_id = 'system:breaker-open' AND group_key = $1",
            &[&hook.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(
        alerts.len(),
        1,
        "one breaker alert for the stream's destination"
    );
    assert_eq!(alerts[0].get::<_, String>(0), "DELIVERY");
    // The metrics saw a batch given up and sent again, and the lag go.
    let restarted = "audit_worker_stream_batches_total{outcome=\"restarted\"}";
    assert!(app.metric::<u64>(restarted).await.unwrap() >= 1);
    wait_until(WAIT, "the lag metric drops to 0", || async {
        (app.metric::<f64>(&lag_series).await == Some(0.0)).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_destination_that_refuses_holds_its_stream_which_then_catches_up_in_order() {
    let app = spawn_app_with(|config| {
        config.delivery.allow_loopback = true;
        config.streams.failed_batch_retry_after = Duration::from_millis(300);
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    // Five refusals, then 200 to every request.
    let receiver = Receiver::start(&[503; 5], 0);
    let settings = json!({"retry_schedule": ["100ms"], "failure_threshold": 100});
    let hook = signed_hook(&app, &key, &receiver, settings).await;
    let healthy = Receiver::start(&[], 0);
    let other = signed_hook(&app, &key, &healthy, json!({})).await;
    let filter = json!({"action": "patient.*"});
    let batch = json!({"max_events": 2, "max_delay_ms": 0});
    let held = subscribe(
        &app,
        &key,
        json!({"destination_id": hook, "filter": filter, "batch": batch}),
    )
    .await;
    let free = subscribe(
        &app,
        &key,
        json!({"destination_id": other, "filter": filter, "batch": batch}),
    )
    .await;

    let first = app
        .ingest(&key, event("alice", "patient.record.read"))
        .await;
    // The refused batch holds its stream, which shows why.
    let failing = wait_until(WAIT, "the stream fails", || async {
        let found = subscription(&app, &key, &held["id"]).await;
        (found["state"] == "failing").then_some(found)
    })
    .await;
    assert!(
        failing["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{failing}"
    );
    assert!(
        failing["consecutive_failures"]
            .as_i64()
            .is_some_and(|n| n >= 1),
        "{failing}"
    );
    // The other destination's stream does not wait for it.
    caught_up(&app, &key, &free["id"], &first[0]["id"]).await;

    let mut expected = vec![first[0]["id"].clone()];
    for n in 0..5 {
        let receipts = app
            .ingest(&key, event("alice", &format!("patient.record.read.{n}")))
            .await;
        expected.push(receipts[0]["id"].clone());
    }
    let last = expected.last().unwrap().clone();
    caught_up(&app, &key, &held["id"], &last).await;
    let received = receiver.received();
    // The refused requests carried the first batch each time, under one id.
    let refused = &received[..5];
    assert!(refused.iter().all(|r| r.id == refused[0].id), "{refused:?}");
    assert_eq!(batches(refused)[0][0]["id"], expected[0]);
    let accepted = batches(&received[5..]);
    let sent: Vec<Value> = accepted.iter().flatten().map(|r| r["id"].clone()).collect();
    assert_eq!(
        sent, expected,
        "nothing skipped, nothing repeated, in order"
    );
    assert_eq!(received[5].id, refused[0].id, "the first batch kept its id");
    caught_up(&app, &key, &free["id"], &last).await;
}

/// A paused stream sends nothing and keeps its place; resumed, it sends
/// what committed meanwhile.
#[actix_web::test]
async fn a_paused_stream_keeps_its_place() {
    let (app, key, receiver, created) =
        patient_stream(json!({"max_events": 100, "max_delay_ms": 0})).await;
    let id = &created["id"];
    let path = format!("/v1/subscriptions/{id}/pause");
    assert_eq!(app.call(Method::POST, &path, Some(&key), None).await.0, 200);
    let receipts = app
        .ingest(&key, vec![event("a", "patient.x"), event("b", "patient.y")])
        .await;
    let paused = wait_until(WAIT, "the lag shows", || async {
        let found = subscription(&app, &key, id).await;
        (found["lag_events"] == 2).then_some(found)
    })
    .await;
    assert_eq!(paused["state"], "paused");
    assert!(receiver.received().is_empty());

    let path = format!("/v1/subscriptions/{id}/resume");
    assert_eq!(app.call(Method::POST, &path, Some(&key), None).await.0, 200);
    caught_up(&app, &key, id, &receipts[1]["id"]).await;
    let sent: Vec<Value> = batches(&receiver.received())
        .iter()
        .flatten()
        .map(|record| record["id"].clone())
        .collect();
    assert_eq!(sent, [receipts[0]["id"].clone(), receipts[1]["id"].clone()]);
}

/// On S3 each batch is one gzipped NDJSON object under the organization, the
/// subscription and the day, named after its first and last event; the
/// Splunk HEC format wraps each event in HEC's envelope.
#[actix_web::test]
async fn an_s3_stream_stores_each_batch_as_gzipped_ndjson_by_day() {
    use std::io::Read;

    let app = spawn_app_with(|config| config.delivery.allow_loopback = true).await;
    let key = app.create_key("org-a", "org:admin").await;
    let s3 = servers::s3();
    let endpoint = s3.endpoint();
    let bucket = reqwest::Client::new()
        .put(format!("{endpoint}/audit-streams"))
        .send()
        .await
        .unwrap();
    assert!(bucket.status().is_success());
    let destination = app
        .create_destination(
            &key,
            json!({"type": "s3", "label": "lake", "config": {"bucket": "audit-streams",
                "prefix": "trail/", "endpoint": endpoint, "path_style": true,
                "access_key_id": "test", "secret_access_key": "test-secret"}}),
        )
        .await;
    let body = json!({"destination_id": destination, "format": "splunk_hec",
        "filter": {"action": "patient.*"}, "batch": {"max_events": 2, "max_delay_ms": 0}});
    let created = subscribe(&app, &key, body).await;
    let receipts = app
        .ingest(
            &key,
            vec![
                event("a", "patient.one"),
                event("b", "patient.two"),
                event("c", "patient.three"),
            ],
        )
        .await;
    let ids: Vec<i64> = receipts.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    caught_up(&app, &key, &created["id"], &json!(ids[2])).await;

    let client = s3.s3_client();
    let day = Utc::now().format("%Y/%m/%d");
    let prefix = format!("trail/org-a/{}/{day}/", created["id"]);
    let listed = client
        .list_objects_v2()
        .bucket("audit-streams")
        .prefix(&prefix)
        .send()
        .await
        .expect("list the objects");
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|object| object.key().map(str::to_owned))
        .collect();
    keys.sort();
    let mut expected = vec![
        format!("{prefix}{}-{}.ndjson.gz", ids[0], ids[1]),
        format!("{prefix}{}-{}.ndjson.gz", ids[2], ids[2]),
    ];
    expected.sort();
    assert_eq!(keys, expected);

    let mut sent = Vec::new();
    for key_name in [&expected[0], &expected[1]] {
        let object = client
            .get_object()
            .bucket("audit-streams")
            .key(key_name)
            .send()
            .await
            .expect("GET the object");
        assert_eq!(object.content_type(), Some("application/x-ndjson"));
        assert_eq!(object.content_encoding(), Some("gzip"));
        let bytes = object.body.collect().await.unwrap().into_bytes();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .expect("gzip");
        for line in text.lines() {
            let record: Value = serde_json::from_str(line).unwrap();
            assert_eq!(record["sourcetype"], "audit-worker:event", "{record}");
            assert!(record["time"].as_f64().is_some_and(|t| t > 0.0), "{record}");
            assert!(
                record["host"].as_str().is_some_and(|h| !h.is_empty()),
                "{record}"
            );
            sent.push(record["event"]["id"].as_i64().unwrap());
        }
    }
    sent.sort_unstable();
    assert_eq!(sent, ids);
}

/// A syslog collector gets one RFC 5424 message per event, over TLS, in
/// chain order: facility and severity in the priority, the action as MSGID,
/// the event's id and hash as structured data, the record (here OCSF) as
/// the message.
#[actix_web::test]
async fn a_syslog_stream_sends_one_rfc_5424_message_per_event_over_tls() {
    let app = spawn_app_with(|config| config.delivery.allow_loopback = true).await;
    let key = app.create_key("org-a", "org:admin").await;
    let ca = TestCa::new("syslog-ca");
    let certificate = ca.server("collector", &["localhost"]);
    let collector = Collector::start(Some(&certificate)).await;
    let ca_pem = std::fs::read_to_string(&ca.cert_file).unwrap();
    let destination = app
        .create_destination(
            &key,
            json!({"type": "syslog", "label": "siem", "config": {"host": "localhost",
                "port": collector.port, "tls": true, "ca": ca_pem, "app_name": "audit-test",
                "facility": 10}}),
        )
        .await;
    let body = json!({"destination_id": destination, "format": "ocsf",
        "filter": {"action": "patient.*"}, "batch": {"max_events": 10, "max_delay_ms": 0}});
    subscribe(&app, &key, body).await;
    let receipts = app
        .ingest(
            &key,
            vec![
                event("alice", "patient.record.read"),
                event("bob", "patient.record.update").status("failure"),
                event("carol", "patient.record.delete"),
            ],
        )
        .await;

    let messages = collector.wait_for(3, WAIT).await;
    assert_eq!(messages.len(), 3, "{messages:?}");
    for ((message, receipt), severity) in messages.iter().zip(&receipts).zip([6, 4, 6]) {
        let stored = app.stored_event(&key, &receipt["id"]).await;
        let header = format!(
            "<{}>1 {} ",
            10 * 8 + severity,
            stored["timestamp"].as_str().unwrap()
        );
        assert!(message.starts_with(&header), "{message}");
        let structured = format!(
            " audit-test - {} [audit@32473 id=\"{}\" hash=\"{}\" organization_id=\"org-a\"] ",
            stored["action"].as_str().unwrap(),
            receipt["id"],
            stored["hash"].as_str().unwrap()
        );
        let (_, record) = message.split_once(&structured).expect(message);
        let record: Value = serde_json::from_str(record).unwrap();
        assert_eq!(record["class_uid"], 6003, "{record}");
        assert_eq!(record["metadata"]["uid"], receipt["id"].to_string());
        assert_eq!(record["unmapped"], stored);
    }
}

/// A live tail (`GET /v1/events/stream`) read as an `EventSource` reads it.
struct Tail {
    response: reqwest::Response,
    buffered: String,
}

impl Tail {
    /// Opens a live tail of `query`, after `last_event_id` when given; asserts 200.
    async fn open(app: &TestApp, key: &str, query: &str, last_event_id: Option<&Value>) -> Self {
        let (status, response) = open_tail(app, key, query, last_event_id, true).await;
        assert_eq!(status, 200);
        let response = response.unwrap();
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert_eq!(content_type, "text/event-stream");
        Self {
            response,
            buffered: String::new(),
        }
    }

    /// The next `count` messages that carry an event: (`id:`, `data:` parsed).
    async fn events(&mut self, count: usize) -> Vec<(String, Value)> {
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while events.len() < count {
            while let Some(end) = self.buffered.find("\n\n") {
                let message: String = self.buffered.drain(..end + 2).collect();
                if let Some(event) = sse_event(&message) {
                    events.push(event);
                }
            }
            if events.len() >= count {
                break;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("the events arrive in time")
                .expect("the stream reads")
                .expect("the stream stays open");
            self.buffered.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        events
    }
}

/// `GET /v1/events/stream?{query}`, live or not; the status, and the
/// response when it is 200 (else its body is printed).
async fn open_tail(
    app: &TestApp,
    key: &str,
    query: &str,
    last_event_id: Option<&Value>,
    live: bool,
) -> (u16, Option<reqwest::Response>) {
    let mut request = app
        .client
        .get(format!("{}/v1/events/stream?{query}", app.address))
        .bearer_auth(key)
        .header("accept", if live { "text/event-stream" } else { "*/*" });
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = request.send().await.expect("the worker answers");
    let status = response.status().as_u16();
    if status == 200 {
        (status, Some(response))
    } else {
        let body = response.text().await.unwrap_or_default();
        eprintln!("GET /v1/events/stream?{query}: {status} {body}");
        (status, None)
    }
}

/// An SSE message's `id:` and parsed `data:`, if it has both.
fn sse_event(message: &str) -> Option<(String, Value)> {
    let mut id = None;
    let mut data = None;
    for line in message.lines() {
        if let Some(value) = line.strip_prefix("id: ") {
            id = Some(value.to_owned());
        } else if let Some(value) = line.strip_prefix("data: ") {
            data = Some(serde_json::from_str(value).expect("JSON data"));
        }
    }
    id.zip(data)
}

#[actix_web::test]
async fn the_live_tail_sends_events_as_they_commit_and_resumes_after_the_last_event_id() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-b", "org:admin").await;
    let mut tail = Tail::open(&app, &key, "action=patient.*", None).await;
    let receipts = app
        .ingest(
            &key,
            vec![
                event("a", "patient.one"),
                event("b", "auth.login"),
                event("c", "patient.two"),
            ],
        )
        .await;
    app.ingest(&other, event("eve", "patient.three")).await;
    let first = tail.events(2).await;
    let ids: Vec<String> = first.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        ids,
        [receipts[0]["id"].to_string(), receipts[2]["id"].to_string()]
    );
    for (id, data) in &first {
        assert_eq!(*data, app.stored_event(&key, id).await);
    }
    drop(tail);

    // What committed while the client was away, from where it left off.
    let later = app
        .ingest(
            &key,
            vec![event("d", "patient.four"), event("e", "patient.five")],
        )
        .await;
    let mut resumed = Tail::open(&app, &key, "action=patient.*", Some(&receipts[2]["id"])).await;
    let ids: Vec<String> = resumed
        .events(2)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ids,
        [later[0]["id"].to_string(), later[1]["id"].to_string()]
    );

    // A client that does not ask for a live stream gets what committed after
    // its place, and the response ends.
    let (status, response) = open_tail(
        &app,
        &key,
        "action=patient.*",
        Some(&receipts[0]["id"]),
        false,
    )
    .await;
    assert_eq!(status, 200);
    let text = response.unwrap().text().await.unwrap();
    let ids: Vec<String> = text
        .split("\n\n")
        .filter_map(sse_event)
        .map(|(id, _)| id)
        .collect();
    let expected: Vec<String> = [&receipts[2], &later[0], &later[1]]
        .iter()
        .map(|receipt| receipt["id"].to_string())
        .collect();
    assert_eq!(ids, expected);

    // Its place must be one of its organization's events.
    let foreign = app.ingest(&other, event("eve", "patient.six")).await;
    for bad in [json!("soon"), foreign[0]["id"].clone()] {
        let mut request = app
            .client
            .get(format!("{}/v1/events/stream", app.address))
            .bearer_auth(&key)
            .header(
                "last-event-id",
                bad.as_str().map_or_else(|| bad.to_string(), str::to_owned),
            );
        request = request.header("accept", "*/*");
        let refusal = common::answer(request.send().await.unwrap()).await;
        assert_eq!(refusal.0, 400, "{bad}: {}", refusal.1);
        assert_eq!(error_fields(&refusal.1), ["Last-Event-ID"]);
    }
    let (status, _) = open_tail(&app, &key, "status=maybe", None, false).await;
    assert_eq!(status, 400);
}

#[actix_web::test]
async fn live_tails_are_bounded_per_key() {
    // A client that left is noticed when a write to it fails: heartbeats
    // make those writes often.
    let app = spawn_app_with(|config| {
        config.streams.tail_max_per_key = 2;
        config.streams.tail_heartbeat = Duration::from_millis(100);
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-a", "org:admin").await;
    let first = Tail::open(&app, &key, "", None).await;
    let _second = Tail::open(&app, &key, "", None).await;
    assert_eq!(open_tail(&app, &key, "", None, true).await.0, 429);
    // Another key has its own places.
    let _theirs = Tail::open(&app, &other, "", None).await;
    // A client that leaves frees its place.
    drop(first);
    wait_until(WAIT, "a place frees up", || async {
        let (status, response) = open_tail(&app, &key, "", None, true).await;
        (status == 200).then_some(response)
    })
    .await;
}

/// A client that stops reading is disconnected once `tail_buffer_events`
/// events wait for it, and its place is freed: the worker never buffers for
/// it without limit.
#[actix_web::test]
async fn a_live_tail_that_stops_reading_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app_with(|config| {
        config.streams.tail_max_per_key = 1;
        config.streams.tail_buffer_events = 4;
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    // A connection with a small receive window, not read until the end, so
    // that what the worker writes backs up into its own buffer soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = app.address.trim_start_matches("http://").parse().unwrap();
    let mut slow = socket.connect(address).await.unwrap();
    let request = format!(
        "GET /v1/events/stream HTTP/1.1\r\nHost: worker\r\nAuthorization: Bearer {key}\r\n\
         Accept: text/event-stream\r\n\r\n"
    );
    slow.write_all(request.as_bytes()).await.unwrap();
    // Its response's head, read so that the tail is open before anything
    // else asks for the key's one place.
    let mut received = Vec::new();
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0; 1024];
        let read = tokio::time::timeout(WAIT, slow.read(&mut chunk))
            .await
            .expect("the tail's head arrives")
            .unwrap();
        assert!(read > 0, "the worker closed the tail at once");
        received.extend_from_slice(&chunk[..read]);
    }
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(open_tail(&app, &key, "", None, true).await.0, 429);

    // Events of 32 kB, 20 a request, until the worker lets the client go
    // (its place frees up): socket buffers hold megabytes, so it takes some.
    let padding = "x".repeat(32 * 1024);
    let mut ingested = 0;
    loop {
        let events: Vec<Value> = (0..20)
            .map(|_| {
                event("a", "patient.read")
                    .details(json!({"padding": padding}))
                    .into()
            })
            .collect();
        app.ingest(&key, events).await;
        ingested += 20;
        if open_tail(&app, &key, "", None, true).await.0 == 200 {
            break;
        }
        assert!(
            ingested < 4000,
            "a client that reads nothing still holds its tail after {ingested} events of 32 kB"
        );
    }
    // The worker ended the response: what it had written, then the end.
    tokio::time::timeout(WAIT, slow.read_to_end(&mut received))
        .await
        .expect("the worker closes the slow client's connection")
        .unwrap();
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    let sent = text.matches("\nid: ").count() + usize::from(text.contains("\r\n\r\nid: "));
    assert!(
        sent < ingested,
        "the slow client got {sent} of {ingested} events, so it was not cut off"
    );
}

/// Two workers on one database cut and send one stream's batches between
/// them: each batch once, every event once, in chain order.
#[actix_web::test]
async fn two_workers_share_a_stream_without_sending_a_batch_twice() {
    let settings = |config: &mut audit_worker::config::Config| {
        config.delivery.allow_loopback = true;
        config.streams.poll_interval = Duration::from_millis(20);
    };
    let app = spawn_app_with(settings).await;
    let beside = spawn_beside(&app, settings).await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let hook = signed_hook(&app, &key, &receiver, json!({})).await;
    let body = json!({"destination_id": hook, "batch": {"max_events": 2, "max_delay_ms": 0},
                      "filter": {"action": "patient.*"}});
    let created = subscribe(&app, &key, body).await;
    let mut expected = Vec::new();
    for n in 0..12 {
        let worker = if n % 2 == 0 { &app } else { &beside };
        let receipts = worker
            .ingest(&key, vec![event("a", "patient.x"), event("b", "patient.y")])
            .await;
        expected.extend(receipts.iter().map(|receipt| receipt["id"].clone()));
    }
    let last = expected.last().unwrap().clone();
    caught_up(&app, &key, &created["id"], &last).await;
    let received = receiver.received();
    let sent: Vec<Value> = batches(&received)
        .iter()
        .flatten()
        .map(|record| record["id"].clone())
        .collect();
    assert_eq!(sent, expected);
    let ids: std::collections::HashSet<&str> = received.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), received.len(), "no batch sent twice");
}

/// The OCSF format validates against the OCSF 1.3.0 schema (pydantic-ocsf's
/// models): API Activity, Authentication and Account Change events alike.
#[actix_web::test]
async fn ocsf_records_are_valid_ocsf_events() {
    let app = spawn_app_with(|config| config.delivery.allow_loopback = true).await;
    let key = app.create_key("org-a", "org:admin").await;
    // An API key made over the API leaves its admin.api_key.* event.
    let (status, issued) = app
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(&key),
            Some(json!({"role": "auditor"})),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let receiver = Receiver::start(&[], 0);
    let hook = signed_hook(&app, &key, &receiver, json!({})).await;
    app.ingest(
        &key,
        vec![
            event("alice", "auth.login"),
            event("alice", "auth.login").status("failure"),
            event("alice", "auth.logout"),
            event("alice", "patient.record.read").target("Patient", "p-1"),
            event("alice", "patient.record.update").status("attempt"),
            event("alice", "report.export"),
        ],
    )
    .await;
    let body = json!({"destination_id": hook, "format": "ocsf", "start": "earliest",
                      "batch": {"max_events": 1000, "max_delay_ms": 0}});
    let created = subscribe(&app, &key, body).await;
    let found = wait_until(WAIT, "the trail is sent", || async {
        let found = subscription(&app, &key, &created["id"]).await;
        (found["lag_events"] == 0 && !found["last_delivered_event_id"].is_null()).then_some(found)
    })
    .await;
    let records: Vec<Value> = batches(&receiver.received())
        .into_iter()
        .flatten()
        .collect();
    let classes: std::collections::BTreeSet<i64> = records
        .iter()
        .map(|record| record["class_uid"].as_i64().unwrap())
        .collect();
    assert_eq!(
        classes.into_iter().collect::<Vec<_>>(),
        [3001, 3002, 6003],
        "{found}"
    );
    if let Some(problems) = servers::ocsf_problems(&records) {
        panic!("invalid OCSF events:\n{problems}");
    }
}

/// A stream whose filter takes few events moves past the stretches it takes
/// nothing from, a window of the chain at a time, and sends what it takes.
#[actix_web::test]
async fn a_sparse_stream_moves_past_events_it_does_not_take() {
    let (app, key, receiver, created) =
        patient_stream(json!({"max_events": 2, "max_delay_ms": 0})).await;
    for n in 0..15 {
        app.ingest(&key, event("a", &format!("billing.invoice.{n}")))
            .await;
    }
    let wanted = app.ingest(&key, event("a", "patient.record.read")).await;
    caught_up(&app, &key, &created["id"], &wanted[0]["id"]).await;
    let sent: Vec<Value> = batches(&receiver.received())
        .iter()
        .flatten()
        .map(|record| record["id"].clone())
        .collect();
    assert_eq!(sent, [wanted[0]["id"].clone()]);
}
