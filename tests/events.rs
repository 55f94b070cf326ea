//! Ingest and queries over HTTP: formats, validation (all-or-nothing),
//! presets, idempotency under a race, pagination under concurrent inserts,
//! filters, isolation and a PostgreSQL outage.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{Datelike, TimeDelta, Utc};
use common::proxy::TcpProxy;
use common::{spawn_app, spawn_app_with, wait_until, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

fn event(principal: &str, action: &str) -> Value {
    json!({"principal_id": principal, "action": action, "status": "success"})
}

async fn post(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.call(Method::POST, "/v1/events", Some(key), Some(body))
        .await
}

async fn count_events(app: &TestApp, org: &str) -> i64 {
    app.database()
        .await
        .query_one(
            "SELECT count(*) FROM audit_log WHERE organization_id = $1",
            &[&org],
        )
        .await
        .unwrap()
        .get(0)
}

/// One event is stored with every field, answered with its id, timestamp and
/// hash, and read back identically.
#[actix_web::test]
async fn a_single_event_is_stored_and_read_back() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let sent = json!({
        "timestamp": "2026-11-02T10:00:00.123456789Z",
        "principal_id": "dr-house", "action": "patient.record.read", "status": "success",
        "target_resource_type": "Patient", "target_resource_id": "p-42",
        "outcome_description": "opened chart", "correlation_id": "c-1",
        "data_classification": "PHI", "retention_policy": "phi_extended", "ttl": "7y",
        "event_version": "1.1", "details": {"ip": "10.0.0.1", "tags": ["a", 1, 2.5]},
        "idempotency_key": "k-1", "organization_id": "org-a"
    });
    let (status, body) = post(&app, &key, sent.clone()).await;
    assert_eq!(status, 201, "{body}");
    let receipt = &body["events"][0];
    assert_eq!(
        receipt["timestamp"], "2026-11-02T10:00:00.123456Z",
        "stored at microsecond precision"
    );
    assert_eq!(receipt["hash"].as_str().unwrap().len(), 64);

    let (status, stored) = app
        .call(
            Method::GET,
            &format!("/v1/events/{}", receipt["id"]),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    for field in [
        "principal_id",
        "action",
        "status",
        "target_resource_type",
        "target_resource_id",
        "outcome_description",
        "correlation_id",
        "data_classification",
        "retention_policy",
        "ttl",
        "event_version",
        "details",
        "idempotency_key",
        "organization_id",
    ] {
        assert_eq!(stored[field], sent[field], "{field}");
    }
    assert_eq!(stored["hash"], receipt["hash"]);
    assert_eq!(stored["hash_algorithm"], "SHA-256");
    assert!(stored["processing_latency"].as_i64().unwrap() >= 0);
}

/// Defaults: timestamp now, classification INTERNAL, policy standard, version 1.0.
#[actix_web::test]
async fn defaults_are_applied() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let before = Utc::now();
    let (status, body) = post(&app, &key, event("u", "auth.login")).await;
    assert_eq!(status, 201, "{body}");
    let (_, stored) = app
        .call(
            Method::GET,
            &format!("/v1/events/{}", body["events"][0]["id"]),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(stored["data_classification"], "INTERNAL");
    assert_eq!(stored["retention_policy"], "standard");
    assert_eq!(stored["event_version"], "1.0");
    let timestamp: chrono::DateTime<Utc> = stored["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(timestamp >= before - TimeDelta::milliseconds(1) && timestamp <= Utc::now());
}

/// A JSON array and NDJSON are both accepted; receipts come in input order.
#[actix_web::test]
async fn arrays_and_ndjson_are_accepted_in_order() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let batch: Vec<Value> = (0..50)
        .map(|i| event(&format!("u{i}"), "batch.array"))
        .collect();
    let (status, body) = post(&app, &key, Value::Array(batch)).await;
    assert_eq!(status, 201);
    let ids: Vec<i64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 50);
    for (i, id) in ids.iter().enumerate() {
        let (_, stored) = app
            .call(Method::GET, &format!("/v1/events/{id}"), Some(&key), None)
            .await;
        assert_eq!(stored["principal_id"], format!("u{i}"));
    }

    let ndjson: String = (0..5)
        .map(|i| format!("{}\n", event(&format!("n{i}"), "batch.ndjson")))
        .collect::<String>()
        + "\n";
    let response = app
        .client
        .post(format!("{}/v1/events", app.address))
        .bearer_auth(&key)
        .header("content-type", "application/x-ndjson")
        .body(ndjson)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["events"].as_array().unwrap().len(), 5);

    let response = app
        .client
        .post(format!("{}/v1/events", app.address))
        .bearer_auth(&key)
        .header("content-type", "application/x-ndjson")
        .body(format!("{}\nnot json\n", event("n", "x")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["details"][0]["index"], 1);

    let response = app
        .client
        .post(format!("{}/v1/events", app.address))
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(count_events(&app, "org-a").await, 55);
}

/// Every field: a bad value gets a 400 naming the event's index and the field,
/// and nothing of the request is stored.
#[actix_web::test]
async fn every_invalid_field_is_named_and_nothing_is_stored() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let long = "x".repeat(256);
    let future = (Utc::now() + TimeDelta::minutes(10)).to_rfc3339();
    let big_details = json!({"blob": "y".repeat(70 * 1024)});
    let cases: Vec<(&str, Value)> = vec![
        ("principal_id", json!(null)),
        ("principal_id", json!("")),
        ("principal_id", json!(long)),
        ("principal_id", json!(7)),
        ("action", json!(null)),
        ("action", json!(long)),
        ("status", json!(null)),
        ("status", json!("done")),
        ("timestamp", json!("yesterday")),
        ("timestamp", json!(future)),
        ("timestamp", json!("1969-12-31T23:59:59Z")),
        ("target_resource_type", json!(long)),
        ("target_resource_id", json!(long)),
        ("correlation_id", json!(long)),
        ("data_classification", json!("SECRET")),
        ("retention_policy", json!("p".repeat(51))),
        ("ttl", json!(long)),
        ("event_version", json!("v".repeat(21))),
        ("idempotency_key", json!(long)),
        ("details", json!("not an object")),
        ("details", json!([1, 2])),
        ("details", big_details),
        ("outcome_description", json!("nul\u{0}byte")),
        ("preset", json!("no-such-preset")),
        ("surprise", json!(1)),
    ];
    for (field, value) in cases {
        let mut bad = event("u", "a");
        bad[field] = value.clone();
        let body = json!([event("ok", "a"), bad, event("ok2", "a")]);
        let (status, answer) = post(&app, &key, body).await;
        assert_eq!(status, 400, "{field}={value}: {answer}");
        assert_eq!(answer["error"]["code"], "validation_failed");
        let details = answer["error"]["details"].as_array().unwrap();
        assert!(
            details
                .iter()
                .any(|d| d["index"] == 1 && d["field"] == field),
            "{field}={value}: {answer}"
        );
        assert!(
            details.iter().all(|d| d["index"] == 1),
            "only the bad event is blamed: {answer}"
        );
    }
    // Within the allowed skew is fine; so is a late event from last year.
    let near_future = (Utc::now() + TimeDelta::minutes(2)).to_rfc3339();
    let last_year = format!("{}-03-15T12:00:00Z", Utc::now().year() - 1);
    for timestamp in [near_future, last_year] {
        let mut ok = event("u", "a");
        ok["timestamp"] = json!(timestamp);
        assert_eq!(post(&app, &key, ok).await.0, 201, "{timestamp}");
    }
    assert_eq!(
        count_events(&app, "org-a").await,
        2,
        "nothing of the refused requests was stored"
    );

    let too_many: Vec<Value> = (0..1001).map(|i| event(&format!("u{i}"), "a")).collect();
    assert_eq!(post(&app, &key, Value::Array(too_many)).await.0, 400);
    assert_eq!(post(&app, &key, json!([])).await.0, 400);
    assert_eq!(post(&app, &key, json!("text")).await.0, 400);
    let mut foreign = event("u", "a");
    foreign["organization_id"] = json!("org-b");
    assert_eq!(post(&app, &key, foreign).await.0, 403);
    assert_eq!(count_events(&app, "org-a").await, 2);
}

/// An event in the first microsecond of a month lands in that month's partition.
#[actix_web::test]
async fn an_event_at_the_first_instant_of_a_month_is_stored_in_that_month() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let mut first = event("u", "month.edge");
    first["timestamp"] = json!("2025-02-01T00:00:00Z");
    let mut last = event("u", "month.edge");
    last["timestamp"] = json!("2025-01-31T23:59:59.999999Z");
    let (status, body) = post(&app, &key, json!([first, last])).await;
    assert_eq!(status, 201, "{body}");
    let rows = app
        .database()
        .await
        .query(
            "SELECT tableoid::regclass::text FROM audit_log WHERE action = 'month.edge' ORDER BY \"timestamp\" DESC",
            &[],
        )
        .await
        .unwrap();
    let partitions: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(partitions, ["audit_log_2025_02", "audit_log_2025_01"]);
}

/// Presets supply defaults and enforce their required fields and rules, with
/// errors naming the preset.
#[actix_web::test]
async fn presets_apply_defaults_and_rules() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    app.database()
        .await
        .execute(
            "INSERT INTO audit_preset (name, organization_id, action, data_classification, required_fields, \
               default_values, validation) VALUES ('phi-read', 'org-a', 'patient.record.read', 'PHI', \
               '[\"target_resource_id\", \"details.reason\"]', '{\"target_resource_type\": \"Patient\"}', \
               '{\"fields\": {\"status\": {\"enum\": [\"success\", \"failure\"]}, \"target_resource_id\": {\"pattern\": \"^p-[0-9]+$\"}}}')",
            &[],
        )
        .await
        .unwrap();
    let good = json!({"preset": "phi-read", "principal_id": "u", "status": "success",
        "target_resource_id": "p-1", "details": {"reason": "treatment"}});
    let (status, body) = post(&app, &key, good).await;
    assert_eq!(status, 201, "{body}");
    let (_, stored) = app
        .call(
            Method::GET,
            &format!("/v1/events/{}", body["events"][0]["id"]),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(stored["action"], "patient.record.read");
    assert_eq!(stored["data_classification"], "PHI");
    assert_eq!(stored["target_resource_type"], "Patient");

    for (bad, field) in [
        (
            json!({"preset": "phi-read", "principal_id": "u", "status": "success", "target_resource_id": "p-1"}),
            "details.reason",
        ),
        (
            json!({"preset": "phi-read", "principal_id": "u", "status": "attempt", "target_resource_id": "p-1", "details": {"reason": "r"}}),
            "status",
        ),
        (
            json!({"preset": "phi-read", "principal_id": "u", "status": "success", "target_resource_id": "x", "details": {"reason": "r"}}),
            "target_resource_id",
        ),
        (
            json!({"preset": "phi-read", "principal_id": "u", "status": "success", "target_resource_id": "p-1", "details": {"reason": "r"}, "action": "other"}),
            "action",
        ),
    ] {
        let (status, body) = post(&app, &key, bad).await;
        assert_eq!(status, 400, "{body}");
        let detail = body["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["field"] == field)
            .unwrap_or_else(|| panic!("{field} not named: {body}"))
            .clone();
        assert!(
            detail["message"]
                .as_str()
                .unwrap()
                .contains("preset `phi-read`"),
            "{detail}"
        );
    }
}

/// The same idempotency key, sent by many clients at once, stores one event and
/// answers every client with it.
#[actix_web::test]
async fn a_repeated_idempotency_key_stores_one_event_even_when_racing() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let mut keyed = event("u", "idem");
    keyed["idempotency_key"] = json!("same-key");
    let (status, first) = post(&app, &key, keyed.clone()).await;
    assert_eq!(status, 201);
    let (status, again) = post(&app, &key, keyed.clone()).await;
    assert_eq!(status, 201);
    assert_eq!(again["events"][0], first["events"][0]);

    let mut racing = keyed.clone();
    racing["idempotency_key"] = json!("race");
    let answers =
        futures_util::future::join_all((0..20).map(|_| post(&app, &key, racing.clone()))).await;
    let receipts: HashSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 201, "{body}");
            body["events"][0].to_string()
        })
        .collect();
    assert_eq!(
        receipts.len(),
        1,
        "every racer got the same event: {receipts:?}"
    );
    // Within one request too.
    let (_, pair) = post(&app, &key, json!([racing.clone(), racing])).await;
    assert_eq!(pair["events"][0], pair["events"][1]);
    let stored: i64 = app
        .database()
        .await
        .query_one("SELECT count(*) FROM audit_log WHERE action = 'idem'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 2, "one event per key");
    // Another organization may use the same key.
    let other = app.create_key("org-b", "org:admin").await;
    let (_, theirs) = post(&app, &other, keyed).await;
    assert_ne!(theirs["events"][0]["id"], first["events"][0]["id"]);
}

/// Keyset pagination while new events keep arriving: every event that existed
/// when the listing began appears exactly once.
#[actix_web::test]
async fn pagination_is_stable_under_concurrent_inserts() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let start = Utc::now() - TimeDelta::hours(2);
    let seeded: Vec<Value> = (0..250)
        .map(|i| {
            let mut e = event(&format!("s{i}"), "seeded");
            // Several events share each timestamp, so ties are broken by id.
            e["timestamp"] = json!((start + TimeDelta::seconds(i / 3)).to_rfc3339());
            e
        })
        .collect();
    let (status, body) = post(&app, &key, Value::Array(seeded)).await;
    assert_eq!(status, 201);
    let seeded_ids: HashSet<i64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();

    let writer = async {
        for i in 0..30 {
            post(&app, &key, event(&format!("live{i}"), "live")).await;
        }
    };
    let reader = async {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/v1/events?limit=40&cursor={cursor}"),
                None => "/v1/events?limit=40".to_owned(),
            };
            let (status, page) = app.call(Method::GET, &path, Some(&key), None).await;
            assert_eq!(status, 200, "{page}");
            seen.extend(
                page["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["id"].as_i64().unwrap()),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break seen,
            }
        }
    };
    let ((), seen) = futures_util::join!(writer, reader);
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no event twice");
    assert!(seeded_ids.is_subset(&unique), "every seeded event once");
}

/// Filters: exact and prefix action, principal, target, status, correlation,
/// classification, time range; bad parameters are named.
#[actix_web::test]
async fn listings_filter_by_every_parameter() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let events = json!([
        {"principal_id": "alice", "action": "auth.login", "status": "success", "correlation_id": "c1"},
        {"principal_id": "alice", "action": "auth.logout", "status": "success"},
        {"principal_id": "bob", "action": "auth.login", "status": "failure", "data_classification": "PHI",
         "target_resource_type": "Patient", "target_resource_id": "p1"},
        {"principal_id": "bob", "action": "authz_x", "status": "attempt", "timestamp": "2025-06-01T00:00:00Z"}
    ]);
    assert_eq!(post(&app, &key, events).await.0, 201);
    let count = |query: &'static str| {
        let (app, key) = (&app, key.clone());
        async move {
            let (status, page) = app
                .call(
                    Method::GET,
                    &format!("/v1/events?{query}"),
                    Some(&key),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{query}: {page}");
            page["events"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("action=auth.login").await, 2);
    assert_eq!(count("action=auth.*").await, 3);
    assert_eq!(
        count("action=auth_*").await,
        0,
        "`_` is literal in a prefix"
    );
    assert_eq!(count("principal_id=alice").await, 2);
    assert_eq!(count("status=failure").await, 1);
    assert_eq!(count("correlation_id=c1").await, 1);
    assert_eq!(count("data_classification=PHI").await, 1);
    assert_eq!(
        count("target_resource_type=Patient&target_resource_id=p1").await,
        1
    );
    assert_eq!(
        count("principal_id=bob").await,
        1,
        "the 2025 event is outside the default window"
    );
    assert_eq!(count("principal_id=bob&from=2025-01-01T00:00:00Z").await, 2);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("from=yesterday", "from"),
        ("status=maybe", "status"),
        ("cursor=nonsense", "cursor"),
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ] {
        let (status, body) = app
            .call(
                Method::GET,
                &format!("/v1/events?{query}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(
            body["error"]["details"][0]["field"], field,
            "{query}: {body}"
        );
    }
    assert_eq!(
        app.call(Method::GET, "/v1/events?bogus=1", Some(&key), None)
            .await
            .0,
        400
    );
}

/// Roles and organizations: `ingest` writes but cannot read, `auditor` reads
/// but cannot write, and nobody sees another organization's events.
#[actix_web::test]
async fn events_are_scoped_to_roles_and_organizations() {
    let app = spawn_app().await;
    let writer = app.create_key("org-a", "ingest").await;
    let auditor = app.create_key("org-a", "auditor").await;
    let other = app.create_key("org-b", "org:admin").await;
    let (status, body) = post(&app, &writer, event("u", "scoped")).await;
    assert_eq!(status, 201);
    let id = body["events"][0]["id"].as_i64().unwrap();
    assert_eq!(
        app.call(Method::GET, "/v1/events", Some(&writer), None)
            .await
            .0,
        403
    );
    assert_eq!(post(&app, &auditor, event("u", "x")).await.0, 403);
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/v1/events/{id}"),
            Some(&auditor),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        app.call(Method::GET, &format!("/v1/events/{id}"), Some(&other), None)
            .await
            .0,
        404
    );
    let (_, page) = app
        .call(Method::GET, "/v1/events", Some(&other), None)
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 0);
    assert_eq!(
        app.call(Method::GET, "/v1/events/not-a-number", Some(&auditor), None)
            .await
            .0,
        404
    );
}

/// With PostgreSQL unreachable, ingest answers 503 with Retry-After at once
/// (the breaker opens), stores nothing half-written, and recovers by itself.
#[actix_web::test]
async fn ingest_fails_fast_without_postgres_and_recovers() {
    let proxy = TcpProxy::start("127.0.0.1:5432", true).await;
    let app = spawn_app_with(|config| {
        let name = config.database.url.database_name().to_owned();
        config.database.url = format!("postgres://postgres@{}/{name}", proxy.address())
            .parse()
            .unwrap();
        config.database.connect_timeout = Duration::from_millis(500);
        config.ingest.breaker_reset_timeout = Duration::from_millis(500);
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    assert_eq!(post(&app, &key, event("u", "before")).await.0, 201);

    proxy.disable();
    for _ in 0..4 {
        let response = app
            .client
            .post(format!("{}/v1/events", app.address))
            .bearer_auth(&key)
            .json(&event("u", "during"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
    }
    let started = std::time::Instant::now();
    assert_eq!(post(&app, &key, event("u", "during")).await.0, 503);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "the open breaker answers at once"
    );

    proxy.enable();
    wait_until(Duration::from_secs(15), "ingest recovers", || async {
        (post(&app, &key, event("u", "after")).await.0 == 201).then_some(())
    })
    .await;
    let rows = app
        .database()
        .await
        .query("SELECT action FROM audit_log ORDER BY id", &[])
        .await
        .unwrap();
    let actions: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(actions, ["before", "after"]);
    let (_, report) = app
        .call(
            Method::POST,
            "/v1/integrity/verify",
            Some(&key),
            Some(json!({})),
        )
        .await;
    assert_eq!(report["valid"], true, "{report}");
}

/// A leap second is stored as PostgreSQL reads it (the next second) and
/// hashed as stored: the receipt shows that instant, and verification finds
/// the event intact, with no alert.
#[actix_web::test]
async fn a_leap_second_is_stored_and_hashed_as_the_next_second() {
    let app = spawn_app().await;
    let key = app.create_key("org-leap", "org:admin").await;
    let mut leap = event("u1", "leap.test");
    leap["timestamp"] = json!("2025-06-30T23:59:60Z");
    let (status, body) = post(&app, &key, json!([leap, event("u2", "after.leap")])).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["events"][0]["timestamp"],
        "2025-07-01T00:00:00.000000Z"
    );
    let (status, report) = app
        .call(Method::POST, "/v1/integrity/verify", Some(&key), None)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["valid"], true, "{report}");
    let stored: chrono::DateTime<Utc> = app
        .database()
        .await
        .query_one(
            "SELECT timestamp FROM audit_log WHERE action = 'leap.test'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.to_rfc3339(), "2025-07-01T00:00:00+00:00");
}

/// A request whose events PostgreSQL refuses fails alone: the requests of
/// other organizations that shared its group commit are written and
/// acknowledged. (The month's partition name is taken by a plain table, so
/// PostgreSQL finds no partition for that request's event.)
#[actix_web::test]
async fn a_request_that_fails_in_the_database_fails_no_other_request() {
    // A long window: the two requests of each round share one transaction.
    let app = spawn_app_with(|config| {
        config.ingest.group_commit_window = Duration::from_millis(100);
    })
    .await;
    app.database()
        .await
        .batch_execute("CREATE TABLE audit_log_2001_01 (unrelated integer)")
        .await
        .unwrap();
    let bad = app.create_key("org-bad", "org:admin").await;
    let good = app.create_key("org-good", "org:admin").await;
    let mut doomed = event("u1", "doomed");
    doomed["timestamp"] = json!("2001-01-15T00:00:00Z");
    for round in 0..5 {
        let ((bad_status, _), (good_status, good_body)) = tokio::join!(
            post(&app, &bad, doomed.clone()),
            post(&app, &good, event("u2", "innocent")),
        );
        assert_eq!(good_status, 201, "round {round}: {good_body}");
        assert!(bad_status >= 500, "round {round}: {bad_status}");
    }
    assert_eq!(count_events(&app, "org-good").await, 5);
    assert_eq!(count_events(&app, "org-bad").await, 0);
}
