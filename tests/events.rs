//! Ingest and queries over HTTP: formats, validation (all-or-nothing),
//! presets, idempotency under a race, pagination under concurrent inserts,
//! filters, isolation and a PostgreSQL outage.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{Datelike, TimeDelta, Utc};
use common::proxy::TcpProxy;
use common::{event, spawn_app, spawn_app_with, wait_until, Event};
use reqwest::Method;
use serde_json::{json, Value};

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
    let receipts = app.ingest(&key, sent.clone()).await;
    let receipt = &receipts[0];
    assert_eq!(
        receipt["timestamp"], "2026-11-02T10:00:00.123456Z",
        "stored at microsecond precision"
    );
    assert_eq!(receipt["hash"].as_str().unwrap().len(), 64);

    let stored = app.stored_event(&key, &receipt["id"]).await;
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
    let receipts = app.ingest(&key, event("u", "auth.login")).await;
    let stored = app.stored_event(&key, &receipts[0]["id"]).await;
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
    let batch: Vec<Event> = (0..50)
        .map(|i| event(&format!("u{i}"), "batch.array"))
        .collect();
    let ids: Vec<i64> = app
        .ingest(&key, batch)
        .await
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 50);
    for (i, id) in ids.iter().enumerate() {
        let stored = app.stored_event(&key, id).await;
        assert_eq!(stored["principal_id"], format!("u{i}"));
    }

    let ndjson: String = (0..5)
        .map(|i| format!("{}\n", Value::from(event(&format!("n{i}"), "batch.ndjson"))))
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
        .body(format!("{}\nnot json\n", Value::from(event("n", "x"))))
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
    assert_eq!(app.count_events("org-a").await, 55);
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
        let bad = event("u", "a").set(field, value.clone());
        let body = vec![event("ok", "a"), bad, event("ok2", "a")];
        let (status, answer) = app.try_ingest(&key, body).await;
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
        let ok = event("u", "a").timestamp(timestamp.as_str());
        assert_eq!(app.try_ingest(&key, ok).await.0, 201, "{timestamp}");
    }
    assert_eq!(
        app.count_events("org-a").await,
        2,
        "nothing of the refused requests was stored"
    );

    let too_many: Vec<Event> = (0..1001).map(|i| event(&format!("u{i}"), "a")).collect();
    assert_eq!(app.try_ingest(&key, too_many).await.0, 400);
    assert_eq!(app.try_ingest(&key, json!([])).await.0, 400);
    assert_eq!(app.try_ingest(&key, json!("text")).await.0, 400);
    let foreign = event("u", "a").organization("org-b");
    assert_eq!(app.try_ingest(&key, foreign).await.0, 403);
    assert_eq!(app.count_events("org-a").await, 2);
}

/// An event in the first microsecond of a month lands in that month's partition.
#[actix_web::test]
async fn an_event_at_the_first_instant_of_a_month_is_stored_in_that_month() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let first = event("u", "month.edge").timestamp("2025-02-01T00:00:00Z");
    let last = event("u", "month.edge").timestamp("2025-01-31T23:59:59.999999Z");
    app.ingest(&key, vec![first, last]).await;
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
    let receipts = app.ingest(&key, good).await;
    let stored = app.stored_event(&key, &receipts[0]["id"]).await;
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
        let (status, body) = app.try_ingest(&key, bad).await;
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
    let keyed = event("u", "idem").set("idempotency_key", "same-key");
    let first = app.ingest(&key, keyed.clone()).await;
    let again = app.ingest(&key, keyed.clone()).await;
    assert_eq!(again[0], first[0]);

    let racing = keyed.clone().set("idempotency_key", "race");
    let answers =
        futures_util::future::join_all((0..20).map(|_| app.try_ingest(&key, racing.clone()))).await;
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
    let pair = app.ingest(&key, vec![racing.clone(), racing]).await;
    assert_eq!(pair[0], pair[1]);
    let stored = app
        .count("SELECT count(*) FROM audit_log WHERE action = 'idem'", &[])
        .await;
    assert_eq!(stored, 2, "one event per key");
    // Another organization may use the same key.
    let other = app.create_key("org-b", "org:admin").await;
    let theirs = app.ingest(&other, keyed).await;
    assert_ne!(theirs[0]["id"], first[0]["id"]);
}

/// Keyset pagination while new events keep arriving: every event that existed
/// when the listing began appears exactly once.
#[actix_web::test]
async fn pagination_is_stable_under_concurrent_inserts() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let start = Utc::now() - TimeDelta::hours(2);
    let seeded: Vec<Event> = (0..250)
        .map(|i| {
            // Several events share each timestamp, so ties are broken by id.
            event(&format!("s{i}"), "seeded")
                .timestamp((start + TimeDelta::seconds(i / 3)).to_rfc3339())
        })
        .collect();
    let seeded_ids: HashSet<i64> = app
        .ingest(&key, seeded)
        .await
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();

    let writer = async {
        for i in 0..30 {
            app.try_ingest(&key, event(&format!("live{i}"), "live"))
                .await;
        }
    };
    let reader = async {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = match &cursor {
                Some(cursor) => format!("limit=40&cursor={cursor}"),
                None => "limit=40".to_owned(),
            };
            let page = app.list_events(&key, &query).await;
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
    app.ingest(&key, events).await;
    let count = |query: &'static str| {
        let (app, key) = (&app, &key);
        async move {
            let page = app.list_events(key, query).await;
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
        let (status, body) = app.try_list_events(&key, query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(
            body["error"]["details"][0]["field"], field,
            "{query}: {body}"
        );
    }
    assert_eq!(app.try_list_events(&key, "bogus=1").await.0, 400);
}

/// Roles and organizations: `ingest` writes but cannot read, `auditor` reads
/// but cannot write, and nobody sees another organization's events.
#[actix_web::test]
async fn events_are_scoped_to_roles_and_organizations() {
    let app = spawn_app().await;
    let writer = app.create_key("org-a", "ingest").await;
    let auditor = app.create_key("org-a", "auditor").await;
    let other = app.create_key("org-b", "org:admin").await;
    let receipts = app.ingest(&writer, event("u", "scoped")).await;
    let id = receipts[0]["id"].as_i64().unwrap();
    assert_eq!(app.try_list_events(&writer, "").await.0, 403);
    assert_eq!(app.try_ingest(&auditor, event("u", "x")).await.0, 403);
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
    assert!(app.listed_actions(&other).await.is_empty());
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
        proxy.carry_postgres(config);
        config.database.connect_timeout = Duration::from_millis(500);
        config.ingest.breaker_reset_timeout = Duration::from_millis(500);
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    app.ingest(&key, event("u", "before")).await;

    proxy.disable();
    for _ in 0..4 {
        let response = app
            .client
            .post(format!("{}/v1/events", app.address))
            .bearer_auth(&key)
            .json(&Value::from(event("u", "during")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
    }
    let started = std::time::Instant::now();
    assert_eq!(app.try_ingest(&key, event("u", "during")).await.0, 503);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "the open breaker answers at once"
    );

    proxy.enable();
    wait_until(Duration::from_secs(15), "ingest recovers", || async {
        (app.try_ingest(&key, event("u", "after")).await.0 == 201).then_some(())
    })
    .await;
    let rows = app
        .database()
        .await
        .query(
            "SELECT action FROM audit_log WHERE action NOT LIKE 'admin.%' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let actions: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(actions, ["before", "after"]);
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
}

/// A leap second is stored as PostgreSQL reads it (the next second) and
/// hashed as stored: the receipt shows that instant, and verification finds
/// the event intact, with no alert.
#[actix_web::test]
async fn a_leap_second_is_stored_and_hashed_as_the_next_second() {
    let app = spawn_app().await;
    let key = app.create_key("org-leap", "org:admin").await;
    let leap = event("u1", "leap.test").timestamp("2025-06-30T23:59:60Z");
    let receipts = app
        .ingest(&key, vec![leap, event("u2", "after.leap")])
        .await;
    assert_eq!(receipts[0]["timestamp"], "2025-07-01T00:00:00.000000Z");
    let report = app.verify(&key).await;
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
    // Requests gather only while a group is being written: a third
    // organization's write is held on its chain head (locked here) so that the
    // two requests of each round gather, and the long window puts them in one
    // transaction beside it.
    let app = spawn_app_with(|config| {
        config.ingest.group_commit_window = Duration::from_millis(100);
    })
    .await;
    let database = app.database().await;
    database
        .batch_execute("CREATE TABLE audit_log_2001_01 (unrelated integer)")
        .await
        .unwrap();
    let bad = app.create_key("org-bad", "org:admin").await;
    let good = app.create_key("org-good", "org:admin").await;
    let holder = app.create_key("org-holder", "org:admin").await;
    app.ingest(&holder, event("u0", "first")).await;
    let doomed = event("u1", "doomed").timestamp("2001-01-15T00:00:00Z");
    for round in 0..5 {
        let mut lock = app.database().await;
        let held = lock.transaction().await.unwrap();
        held.execute(
            "SELECT 1 FROM audit_chain_head WHERE organization_id = 'org-holder' FOR UPDATE",
            &[],
        )
        .await
        .unwrap();
        let holding = app.try_ingest(&holder, event("u0", "held"));
        let pair = async {
            wait_until(
                Duration::from_secs(10),
                "the holder's write waits on its lock",
                || async {
                    let waiting: i64 = database
                        .query_one(
                            "SELECT count(*) FROM pg_stat_activity \
                         WHERE datname = current_database() AND wait_event_type = 'Lock'",
                            &[],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    (waiting > 0).then_some(())
                },
            )
            .await;
            let pair = tokio::join!(
                app.try_ingest(&bad, doomed.clone()),
                app.try_ingest(&good, event("u2", "innocent")),
            );
            held.commit().await.unwrap();
            pair
        };
        let ((held_status, _), ((bad_status, _), (good_status, good_body))) =
            tokio::join!(holding, pair);
        assert_eq!(held_status, 201, "round {round}");
        assert_eq!(good_status, 201, "round {round}: {good_body}");
        assert!(bad_status >= 500, "round {round}: {bad_status}");
    }
    assert_eq!(app.count_events("org-good").await, 5);
    assert_eq!(app.count_events("org-bad").await, 0);
}

/// `GET /v1/events/export`: every event of the search, newest first, across
/// pages, as NDJSON (each line as `GET /v1/events/{id}` shows it) or CSV
/// (RFC 4180, a header line); only the caller's organization; a role that may
/// read but not export is refused; a bad format is named.
#[actix_web::test]
async fn an_export_streams_every_matching_event_as_ndjson_or_csv() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-b", "org:admin").await;
    // Two export pages and a half, of which every fifth is a failure.
    let mut failures = Vec::new();
    for chunk in 0..5 {
        let events: Vec<Value> = (0..500)
            .map(|n| {
                let status = if n % 5 == 0 { "failure" } else { "success" };
                event("dr-who", "patient.record.read")
                    .status(status)
                    .details(json!({"n": chunk * 500 + n, "note": "a, \"quoted\"\nline"}))
                    .into()
            })
            .collect();
        let receipts = app.ingest(&key, events).await;
        failures.extend(
            receipts
                .iter()
                .enumerate()
                .filter(|(n, _)| n % 5 == 0)
                .map(|(_, receipt)| receipt["id"].as_i64().unwrap()),
        );
    }
    app.ingest(&other, event("someone", "patient.record.read"))
        .await;

    let export = |query: &str, key: &str| {
        let request = app
            .client
            .get(format!("{}/v1/events/export?{query}", app.address))
            .bearer_auth(key);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, content_type, response.text().await.unwrap())
        }
    };

    // The organization's trail also holds its admin events (the key's creation).
    let (status, content_type, text) = export("action=patient.*", &key).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-ndjson")
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2500);
    assert!(lines
        .iter()
        .all(|event| event["organization_id"] == "org-a"));
    let ids: Vec<i64> = lines.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let mut newest_first = ids.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, newest_first, "newest first, each once");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 2500);
    let shown = app.stored_event(&key, &lines[7]["id"]).await;
    assert_eq!(lines[7], shown);

    let (status, content_type, text) = export("format=csv&status=failure", &key).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/csv; charset=utf-8")
    );
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(&header[..3], ["id", "timestamp", "organization_id"]);
    let column = |name: &str| header.iter().position(|c| c == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let mut exported: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    exported.sort();
    failures.sort();
    assert_eq!(exported, failures, "the filter applies");
    let details: Value = serde_json::from_str(&rows[0][column("details")]).unwrap();
    assert_eq!(details["note"], "a, \"quoted\"\nline");
    assert!(rows.iter().all(|r| &r[column("status")] == "failure"));

    let member = app.create_key("org-a", "org:member").await;
    assert_eq!(export("", &member).await.0, 403);
    let auditor = app.create_key("org-a", "auditor").await;
    assert_eq!(export("format=csv", &auditor).await.0, 200);
    let (status, _, body) = export("format=xlsx", &key).await;
    assert_eq!(status, 400);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(common::error_fields(&body), ["format"]);
    assert_eq!(export("organization_id=org-b", &key).await.0, 403);
}
