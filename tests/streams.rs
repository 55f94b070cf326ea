//! Event streams over the API against the real worker and PostgreSQL:
//! subscriptions created, listed, changed, paused, resumed and deleted, each
//! recorded in the organization's trail; their lag counted from where they
//! start; bad ones refused naming the field; other organizations and roles
//! without the permission kept out.

mod common;

use chrono::{TimeDelta, Utc};
use common::{error_fields, event, spawn_app, webhook, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

async fn subscribe(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, created) = app
        .call(Method::POST, "/v1/subscriptions", Some(key), Some(body))
        .await;
    assert_eq!(status, 201, "{created}");
    created
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
        let (status, refusal) = app
            .call(
                Method::POST,
                "/v1/subscriptions",
                Some(&key),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 400, "{body}: {refusal}");
        assert_eq!(error_fields(&refusal), [field], "{body}: {refusal}");
    }
    for body in [
        json!({}),
        json!({"destination_id": hook, "filter": {"colour": "red"}}),
        json!({"destination_id": hook, "batch": {"max_events": "many"}}),
    ] {
        let (status, refusal) = app
            .call(
                Method::POST,
                "/v1/subscriptions",
                Some(&key),
                Some(body.clone()),
            )
            .await;
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
