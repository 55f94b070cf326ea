//! Alerts over the real worker and PostgreSQL: listings with filters and
//! keyset pages, the lifecycle and its conflicts, statistics, tenant isolation
//! and permissions, custom alerts delivered through subscriptions to a real
//! webhook, the rules engine's `raise` (deduplication, escalation, cooldown,
//! concurrent callers) and the deletion of old closed alerts.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use audit_worker::alerts::model::{AlertStatus, AlertType, Severity, Transition};
use audit_worker::db::alerts::{self, Alert, Notice, Raise, Raised};
use audit_worker::db::connection::Statements;
use chrono::{DateTime, NaiveDate, SubsecRound, TimeDelta, Utc};
use common::receiver::Receiver;
use common::{error_fields, spawn_app, TestApp};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

/// An alert as a test writes it straight into the table (any type, status and
/// creation time, which the API does not let a client choose).
struct Seed {
    organization_id: &'static str,
    severity: &'static str,
    alert_type: &'static str,
    status: &'static str,
    source: &'static str,
    created_at: DateTime<Utc>,
}

impl Seed {
    fn new(severity: &'static str, alert_type: &'static str, status: &'static str) -> Self {
        Seed {
            organization_id: "org-a",
            severity,
            alert_type,
            status,
            source: "seed",
            created_at: Utc::now(),
        }
    }

    fn source(mut self, source: &'static str) -> Self {
        self.source = source;
        self
    }

    fn created_at(mut self, created_at: DateTime<Utc>) -> Self {
        self.created_at = created_at;
        self
    }

    fn organization(mut self, organization_id: &'static str) -> Self {
        self.organization_id = organization_id;
        self
    }
}

/// Inserts the seeds and returns each one's id, in order. Closed and
/// acknowledged alerts get the timestamps their status implies.
async fn seed(app: &TestApp, seeds: &[Seed]) -> Vec<Uuid> {
    let db = app.database().await;
    let mut ids = Vec::new();
    for seed in seeds {
        let row = db
            .query_one(
                "INSERT INTO alerts (organization_id, severity, type, status, title, source, created_at, \
                   updated_at, acknowledged_at, resolved_at, dismissed_at) \
                 VALUES ($1, $2, $3, $4::text, 'seeded', $5, $6::timestamptz, $6::timestamptz, \
                   CASE WHEN $4::text = 'acknowledged' THEN $6::timestamptz END, \
                   CASE WHEN $4::text = 'resolved' THEN $6::timestamptz END, \
                   CASE WHEN $4::text = 'dismissed' THEN $6::timestamptz END) RETURNING id",
                &[
                    &seed.organization_id,
                    &seed.severity,
                    &seed.alert_type,
                    &seed.status,
                    &seed.source,
                    &seed.created_at,
                ],
            )
            .await
            .expect("insert a seeded alert");
        ids.push(row.get(0));
    }
    ids
}

async fn create_alert(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, alert) = app
        .call(Method::POST, "/v1/alerts", Some(key), Some(body))
        .await;
    assert_eq!(status, 201, "{alert}");
    alert
}

async fn post(app: &TestApp, key: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    app.call(Method::POST, path, Some(key), body).await
}

async fn get(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    app.call(Method::GET, path, Some(key), None).await
}

/// Every id a listing returns, following `next_cursor` page by page.
async fn every_page(app: &TestApp, key: &str, query: &str) -> (Vec<Uuid>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/alerts?{query}&cursor={cursor}"),
            None => format!("/v1/alerts?{query}"),
        };
        let (status, page) = get(app, key, &path).await;
        assert_eq!(status, 200, "{path}: {page}");
        pages += 1;
        ids.extend(
            page["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|alert| alert["id"].as_str().unwrap().parse::<Uuid>().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (ids, pages),
        }
        assert!(pages < 100, "paging does not end");
    }
}

/// Which seeded alerts a filter should return.
type Keep = fn(&Seed) -> bool;

/// Listings return the organization's alerts newest first (`created_at`, then
/// `id`, so alerts created at the same instant page deterministically), each
/// filter (several values comma-separated) selects exactly the matching rows,
/// and following `next_cursor` visits every matching alert once.
#[actix_web::test]
async fn alerts_are_listed_newest_first_filtered_and_paged_by_keyset() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    // PostgreSQL keeps microseconds: so do the seeds, to compare like with like.
    let base = (Utc::now() - TimeDelta::hours(1)).trunc_subsecs(6);
    let at = |minutes: i64| base + TimeDelta::minutes(minutes);
    let seeds = vec![
        Seed::new("HIGH", "SECURITY", "active").created_at(at(1)),
        Seed::new("LOW", "SYSTEM", "resolved")
            .created_at(at(2))
            .source("system"),
        Seed::new("CRITICAL", "SECURITY", "acknowledged").created_at(at(3)),
        // Three at the same instant: the id breaks the tie.
        Seed::new("MEDIUM", "COMPLIANCE", "dismissed").created_at(at(4)),
        Seed::new("HIGH", "DELIVERY", "active")
            .created_at(at(4))
            .source("delivery"),
        Seed::new("INFO", "PERFORMANCE", "active")
            .created_at(at(4))
            .source("system"),
        Seed::new("CRITICAL", "CUSTOM", "resolved").created_at(at(5)),
        Seed::new("HIGH", "SECURITY", "active").created_at(at(6)),
        Seed::new("HIGH", "SECURITY", "active")
            .created_at(at(7))
            .organization("org-b"),
    ];
    let ids = seed(&app, &seeds).await;
    let expected = |keep: &dyn Fn(&Seed) -> bool| {
        let mut rows: Vec<(DateTime<Utc>, Uuid)> = seeds
            .iter()
            .zip(&ids)
            .filter(|(seed, _)| seed.organization_id == "org-a" && keep(seed))
            .map(|(seed, id)| (seed.created_at, *id))
            .collect();
        rows.sort_by(|a, b| b.cmp(a));
        rows.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    };

    let (all, pages) = every_page(&app, &key, "limit=2").await;
    assert_eq!(all, expected(&|_| true));
    assert_eq!(pages, 4, "8 alerts in pages of 2, no empty last page");
    let (all, pages) = every_page(&app, &key, "limit=3").await;
    assert_eq!(all, expected(&|_| true));
    assert_eq!(pages, 3);
    let (_, first) = get(&app, &key, "/v1/alerts").await;
    assert_eq!(first["alerts"].as_array().unwrap().len(), 8);
    assert!(first["next_cursor"].is_null());

    let cases: [(&str, Keep); 5] = [
        ("severity=HIGH,CRITICAL", |s| {
            ["HIGH", "CRITICAL"].contains(&s.severity)
        }),
        ("type=SECURITY", |s| s.alert_type == "SECURITY"),
        ("status=active,acknowledged", |s| {
            ["active", "acknowledged"].contains(&s.status)
        }),
        ("source=system", |s| s.source == "system"),
        ("severity=HIGH&type=SECURITY&status=active", |s| {
            s.severity == "HIGH" && s.alert_type == "SECURITY" && s.status == "active"
        }),
    ];
    for (query, keep) in &cases {
        let (found, _) = every_page(&app, &key, &format!("{query}&limit=1")).await;
        assert_eq!(found, expected(keep), "{query}");
    }
    let from = at(3);
    let to = at(5);
    let range = format!(
        "from={}&to={}&limit=2",
        urlencode(&from.to_rfc3339()),
        urlencode(&to.to_rfc3339())
    );
    let (found, _) = every_page(&app, &key, &range).await;
    assert_eq!(
        found,
        expected(&|s| s.created_at >= from && s.created_at < to),
        "from inclusive, to exclusive"
    );
}

fn urlencode(value: &str) -> String {
    value.replace('+', "%2B").replace(':', "%3A")
}

/// A listing with a bad parameter is refused with a 400 naming the field.
#[actix_web::test]
async fn bad_listing_parameters_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    for (query, field) in [
        ("severity=SEVERE", "severity"),
        ("severity=HIGH,high", "severity"),
        ("type=ATTACK", "type"),
        ("status=open", "status"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=many", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("from=yesterday", "from"),
        ("to=2024-13-01T00:00:00Z", "to"),
        ("from=2024-02-01T00:00:00Z&to=2024-01-01T00:00:00Z", "from"),
    ] {
        let (status, body) = get(&app, &key, &format!("/v1/alerts?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(error_fields(&body), [field], "{query}: {body}");
    }
    let (status, body) = get(&app, &key, "/v1/alerts?colour=red").await;
    assert_eq!(status, 400, "unknown parameters are refused: {body}");
}

/// The lifecycle moves forward only: active → acknowledged → resolved or
/// dismissed, or straight from active to either. Every other step is a 409
/// naming the current status; who took each step is the caller's key.
#[actix_web::test]
async fn the_lifecycle_moves_forward_only_and_refuses_the_rest_with_409() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let key_id = key.split('_').nth(1).unwrap().to_owned();
    let actor = format!("api-key:{key_id}");
    let new = || json!({"severity": "HIGH", "title": "Disk almost full"});
    let path = |id: &Value, step: &str| format!("/v1/alerts/{}/{step}", id.as_str().unwrap());

    // active → acknowledged → resolved
    let first = create_alert(&app, &key, new()).await["id"].clone();
    let (status, acknowledged) = post(&app, &key, &path(&first, "acknowledge"), None).await;
    assert_eq!(status, 200, "{acknowledged}");
    assert_eq!(acknowledged["status"], "acknowledged");
    assert_eq!(acknowledged["acknowledged"], true);
    assert_eq!(acknowledged["acknowledged_by"], actor.as_str());
    let (status, body) = post(&app, &key, &path(&first, "acknowledge"), None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is acknowledged"),
        "{body}"
    );
    let (status, resolved) = post(
        &app,
        &key,
        &path(&first, "resolve"),
        Some(json!({"notes": "Rotated the logs"})),
    )
    .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolved"], true);
    assert_eq!(resolved["resolved_by"], actor.as_str());
    assert_eq!(resolved["resolution_notes"], "Rotated the logs");
    for step in ["acknowledge", "resolve", "dismiss"] {
        let (status, body) = post(&app, &key, &path(&first, step), None).await;
        assert_eq!(status, 409, "{step} a resolved alert: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("is resolved"),
            "{body}"
        );
    }

    // active → dismissed; nothing after.
    let second = create_alert(&app, &key, new()).await["id"].clone();
    let (status, dismissed) = post(&app, &key, &path(&second, "dismiss"), None).await;
    assert_eq!(status, 200, "{dismissed}");
    assert_eq!(dismissed["status"], "dismissed");
    assert_eq!(dismissed["dismissed_by"], actor.as_str());
    assert_eq!(dismissed["resolved"], false);
    for step in ["acknowledge", "resolve", "dismiss"] {
        let (status, body) = post(&app, &key, &path(&second, step), None).await;
        assert_eq!(status, 409, "{step} a dismissed alert: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("is dismissed"),
            "{body}"
        );
    }

    // active → resolved without a body; acknowledged → dismissed.
    let third = create_alert(&app, &key, new()).await["id"].clone();
    let (status, resolved) = post(&app, &key, &path(&third, "resolve"), None).await;
    assert_eq!(status, 200, "{resolved}");
    assert!(resolved["resolution_notes"].is_null());
    let fourth = create_alert(&app, &key, new()).await["id"].clone();
    assert_eq!(
        post(&app, &key, &path(&fourth, "acknowledge"), None)
            .await
            .0,
        200
    );
    let (status, dismissed) = post(&app, &key, &path(&fourth, "dismiss"), None).await;
    assert_eq!(status, 200);
    assert_eq!(dismissed["status"], "dismissed");
    assert_eq!(dismissed["acknowledged_by"], actor.as_str());
    let (_, stored) = get(
        &app,
        &key,
        &format!("/v1/alerts/{}", fourth.as_str().unwrap()),
    )
    .await;
    assert_eq!(stored, dismissed);

    // Unknown, malformed, oversized notes.
    let unknown = json!(Uuid::new_v4().to_string());
    for step in ["acknowledge", "resolve", "dismiss"] {
        let (status, body) = post(&app, &key, &path(&unknown, step), None).await;
        assert_eq!(status, 404, "{body}");
    }
    let (status, body) = get(&app, &key, "/v1/alerts/not-a-uuid").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let fifth = create_alert(&app, &key, new()).await["id"].clone();
    let (status, body) = post(
        &app,
        &key,
        &path(&fifth, "resolve"),
        Some(json!({"notes": "x".repeat(10_001)})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error_fields(&body), ["notes"]);
    let (status, _) = post(
        &app,
        &key,
        &path(&fifth, "resolve"),
        Some(json!({"note": "typo"})),
    )
    .await;
    assert_eq!(status, 400, "unknown fields are refused");
}

/// A custom alert is always CUSTOM, defaults its source to `custom`, and its
/// body is validated field by field.
#[actix_web::test]
async fn custom_alerts_are_validated_and_always_custom() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let alert = create_alert(
        &app,
        &key,
        json!({"severity": "MEDIUM", "title": "Backup late", "type": "CUSTOM",
               "description": "The nightly backup has not finished", "correlation_id": "job-42",
               "metadata": {"job": 42}}),
    )
    .await;
    assert_eq!(alert["type"], "CUSTOM");
    assert_eq!(alert["source"], "custom");
    assert_eq!(alert["status"], "active");
    assert_eq!(alert["organization_id"], "org-a");
    assert_eq!(alert["occurrences"], 1);
    assert_eq!(alert["metadata"], json!({"job": 42}));
    assert_eq!(alert["correlation_id"], "job-42");
    assert!(alert["rule_id"].is_null());
    let alert = create_alert(
        &app,
        &key,
        json!({"severity": "INFO", "title": "x", "source": "nightly-backup"}),
    )
    .await;
    assert_eq!(alert["source"], "nightly-backup");
    assert_eq!(alert["metadata"], json!({}));

    for (body, field) in [
        (
            json!({"severity": "HIGH", "title": "x", "type": "SECURITY"}),
            "type",
        ),
        (json!({"severity": "SEVERE", "title": "x"}), "severity"),
        (json!({"severity": "HIGH", "title": "  "}), "title"),
        (
            json!({"severity": "HIGH", "title": "x".repeat(501)}),
            "title",
        ),
        (
            json!({"severity": "HIGH", "title": "x", "source": "s".repeat(101)}),
            "source",
        ),
        (
            json!({"severity": "HIGH", "title": "x", "correlation_id": "c".repeat(256)}),
            "correlation_id",
        ),
        (
            json!({"severity": "HIGH", "title": "x", "metadata": [1]}),
            "metadata",
        ),
    ] {
        let (status, answer) = post(&app, &key, "/v1/alerts", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(error_fields(&answer), [field], "{body}: {answer}");
    }
    let (status, _) = post(
        &app,
        &key,
        "/v1/alerts",
        Some(json!({"severity": "HIGH", "title": "x", "organization_id": "org-b"})),
    )
    .await;
    assert_eq!(status, 403, "another organization named in the body");
    let (_, listed) = get(&app, &key, "/v1/alerts").await;
    assert_eq!(
        listed["alerts"].as_array().unwrap().len(),
        2,
        "nothing refused was stored"
    );
}

/// Statistics count exactly the organization's alerts by status, severity,
/// type and source, and per UTC day over the last 30 days (zeros included,
/// older alerts outside the trend but in the totals).
#[actix_web::test]
async fn statistics_count_the_organizations_alerts() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let now = Utc::now();
    let days_ago = |days: i64| now - TimeDelta::days(days);
    let seeds = vec![
        Seed::new("HIGH", "SECURITY", "active"),
        Seed::new("HIGH", "SECURITY", "acknowledged").created_at(days_ago(1)),
        Seed::new("CRITICAL", "COMPLIANCE", "resolved").created_at(days_ago(1)),
        Seed::new("LOW", "SYSTEM", "dismissed")
            .created_at(days_ago(5))
            .source("system"),
        Seed::new("INFO", "PERFORMANCE", "active")
            .created_at(days_ago(12))
            .source("system"),
        Seed::new("MEDIUM", "DELIVERY", "resolved")
            .created_at(days_ago(29))
            .source("delivery"),
        Seed::new("MEDIUM", "SECURITY", "active").created_at(days_ago(31)),
        Seed::new("HIGH", "SYSTEM", "active").created_at(days_ago(45)),
        Seed::new("CRITICAL", "SECURITY", "active").organization("org-b"),
    ];
    seed(&app, &seeds).await;
    create_alert(&app, &key, json!({"severity": "LOW", "title": "by hand"})).await;
    let today: NaiveDate = app
        .database()
        .await
        .query_one("SELECT (now() AT TIME ZONE 'UTC')::date", &[])
        .await
        .unwrap()
        .get(0);

    let (status, statistics) = get(&app, &key, "/v1/alerts/statistics").await;
    assert_eq!(status, 200, "{statistics}");

    // What the rows say, counted here.
    type Counted = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        DateTime<Utc>,
    );
    let mut mine: Vec<Counted> = seeds
        .iter()
        .filter(|seed| seed.organization_id == "org-a")
        .map(|s| (s.status, s.severity, s.alert_type, s.source, s.created_at))
        .collect();
    mine.push(("active", "LOW", "CUSTOM", "custom", Utc::now()));
    let count_by = |pick: &dyn Fn(&Counted) -> &'static str, all: &[&str]| {
        let mut counts: BTreeMap<String, i64> =
            all.iter().map(|name| ((*name).to_owned(), 0)).collect();
        for row in &mine {
            *counts.entry(pick(row).to_owned()).or_default() += 1;
        }
        serde_json::to_value(counts).unwrap()
    };
    assert_eq!(statistics["total"], mine.len() as i64);
    assert_eq!(
        statistics["by_status"],
        count_by(
            &|r| r.0,
            &["active", "acknowledged", "resolved", "dismissed"]
        )
    );
    assert_eq!(
        statistics["by_severity"],
        count_by(&|r| r.1, &["INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"])
    );
    assert_eq!(
        statistics["by_type"],
        count_by(
            &|r| r.2,
            &[
                "SECURITY",
                "COMPLIANCE",
                "PERFORMANCE",
                "SYSTEM",
                "DELIVERY",
                "CUSTOM"
            ]
        )
    );
    assert_eq!(statistics["by_source"], count_by(&|r| r.3, &[]));

    let trend = statistics["daily_trend"].as_array().unwrap();
    assert_eq!(trend.len(), 30);
    for (i, day) in trend.iter().enumerate() {
        let date = today - TimeDelta::days(29 - i as i64);
        let expected = mine.iter().filter(|r| r.4.date_naive() == date).count();
        assert_eq!(day["date"], date.to_string(), "{day}");
        assert_eq!(day["count"], expected as i64, "{date}: {day}");
    }
    let in_trend: i64 = trend.iter().map(|day| day["count"].as_i64().unwrap()).sum();
    assert_eq!(
        in_trend, 7,
        "the alerts of 31 and 45 days ago are outside the trend"
    );

    let other = app.create_key("org-c", "org:admin").await;
    let (_, empty) = get(&app, &other, "/v1/alerts/statistics").await;
    assert_eq!(empty["total"], 0);
    assert_eq!(empty["by_status"]["active"], 0);
    assert_eq!(empty["daily_trend"].as_array().unwrap().len(), 30);
}

/// Another organization can neither see nor change an alert: every route
/// answers 404 for it, and listings and statistics leave it out.
#[actix_web::test]
async fn another_organization_cannot_see_or_touch_an_alert() {
    let app = spawn_app().await;
    let owner = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-b", "org:admin").await;
    let alert = create_alert(&app, &owner, json!({"severity": "HIGH", "title": "Mine"})).await;
    let id = alert["id"].as_str().unwrap();

    assert_eq!(get(&app, &other, &format!("/v1/alerts/{id}")).await.0, 404);
    for step in ["acknowledge", "resolve", "dismiss"] {
        let (status, body) = post(&app, &other, &format!("/v1/alerts/{id}/{step}"), None).await;
        assert_eq!(status, 404, "{step}: {body}");
    }
    let (_, listed) = get(&app, &other, "/v1/alerts").await;
    assert_eq!(listed["alerts"], json!([]));
    let (_, statistics) = get(&app, &other, "/v1/alerts/statistics").await;
    assert_eq!(statistics["total"], 0);
    let (status, _) = get(&app, &other, "/v1/alerts?organization_id=org-a").await;
    assert_eq!(status, 403);

    let (_, unchanged) = get(&app, &owner, &format!("/v1/alerts/{id}")).await;
    assert_eq!(unchanged, alert);
}

/// Each route needs its own permission on `audit.alerts`: a member reads and
/// acknowledges but may not resolve, dismiss, create or manage subscriptions;
/// an auditor only reads; the ingest role not even that.
#[actix_web::test]
async fn each_alert_route_needs_its_permission() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let member = app.create_key("org-a", "org:member").await;
    let auditor = app.create_key("org-a", "auditor").await;
    let ingest = app.create_key("org-a", "ingest").await;
    let alert = create_alert(&app, &admin, json!({"severity": "HIGH", "title": "x"})).await;
    let id = alert["id"].as_str().unwrap();

    assert_eq!(get(&app, &member, "/v1/alerts").await.0, 200);
    assert_eq!(get(&app, &member, "/v1/alerts/statistics").await.0, 200);
    assert_eq!(get(&app, &member, &format!("/v1/alerts/{id}")).await.0, 200);
    let (status, body) = post(&app, &member, &format!("/v1/alerts/{id}/resolve"), None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resolve"),
        "{body}"
    );
    assert_eq!(
        post(&app, &member, &format!("/v1/alerts/{id}/dismiss"), None)
            .await
            .0,
        403
    );
    assert_eq!(
        post(
            &app,
            &member,
            "/v1/alerts",
            Some(json!({"severity": "HIGH", "title": "x"}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        post(
            &app,
            &member,
            "/v1/alert-subscriptions",
            Some(json!({"destination_id": 1}))
        )
        .await
        .0,
        403
    );
    assert_eq!(get(&app, &member, "/v1/alert-subscriptions").await.0, 200);
    let (status, acknowledged) =
        post(&app, &member, &format!("/v1/alerts/{id}/acknowledge"), None).await;
    assert_eq!(status, 200, "{acknowledged}");

    assert_eq!(get(&app, &auditor, "/v1/alerts").await.0, 200);
    assert_eq!(
        post(&app, &auditor, &format!("/v1/alerts/{id}/resolve"), None)
            .await
            .0,
        403
    );
    assert_eq!(get(&app, &ingest, "/v1/alerts").await.0, 403);
    assert_eq!(get(&app, &ingest, &format!("/v1/alerts/{id}")).await.0, 403);
    let (_, unchanged) = get(&app, &admin, &format!("/v1/alerts/{id}")).await;
    assert_eq!(
        unchanged["status"], "acknowledged",
        "refused steps changed nothing"
    );
}

/// A webhook destination with a retry budget of three (201 asserted); returns its id.
async fn webhook(app: &TestApp, key: &str, url: &str) -> i64 {
    app.create_destination(
        key,
        json!({"type": "webhook", "label": "alerts", "config": {"url": url},
               "settings": {"retry_schedule": ["1s", "2s", "3s"]}}),
    )
    .await
}

async fn subscribe(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, subscription) = post(app, key, "/v1/alert-subscriptions", Some(body)).await;
    assert_eq!(status, 201, "{subscription}");
    subscription
}

/// The deliveries queued for an alert: (destination, idempotency key, max retries).
async fn queued_for(app: &TestApp, alert_id: &str) -> Vec<(i64, String, i32)> {
    app.database()
        .await
        .query(
            "SELECT destination_id, idempotency_key, max_retries FROM delivery_queue \
             WHERE correlation_id = $1 ORDER BY destination_id, idempotency_key",
            &[&alert_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// A custom alert reaches a subscribed webhook over real HTTP as
/// `{"event": "alert.created", "alert"}`, queued in the alert's own
/// transaction with the destination's retry budget. Subscriptions whose
/// minimum severity or types exclude the alert, disabled ones, and those of
/// disabled destinations queue nothing.
#[actix_web::test]
async fn a_custom_alert_is_delivered_to_subscribed_webhooks_only() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let everything = webhook(&app, &key, &receiver.url).await;
    subscribe(
        &app,
        &key,
        json!({"destination_id": everything, "min_severity": "LOW"}),
    )
    .await;
    let too_high = webhook(&app, &key, &receiver.url).await;
    subscribe(
        &app,
        &key,
        json!({"destination_id": too_high, "min_severity": "CRITICAL"}),
    )
    .await;
    let security_only = webhook(&app, &key, &receiver.url).await;
    subscribe(
        &app,
        &key,
        json!({"destination_id": security_only, "types": ["SECURITY"]}),
    )
    .await;
    let switched_off = webhook(&app, &key, &receiver.url).await;
    subscribe(
        &app,
        &key,
        json!({"destination_id": switched_off, "enabled": false}),
    )
    .await;
    let disabled = webhook(&app, &key, &receiver.url).await;
    subscribe(&app, &key, json!({"destination_id": disabled})).await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/destinations/{disabled}"),
            Some(&key),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let alert = create_alert(
        &app,
        &key,
        json!({"severity": "HIGH", "title": "Unusual export volume", "metadata": {"rows": 120000}}),
    )
    .await;
    let id = alert["id"].as_str().unwrap();
    assert_eq!(
        queued_for(&app, id).await,
        [(everything, format!("alert:{id}:alert.created:HIGH"), 3)],
        "one delivery, for the only matching subscription"
    );

    let received = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 1);
    let delivered: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(delivered, json!({"event": "alert.created", "alert": alert}));

    let quiet = create_alert(
        &app,
        &key,
        json!({"severity": "INFO", "title": "Below every minimum"}),
    )
    .await;
    assert_eq!(queued_for(&app, quiet["id"].as_str().unwrap()).await, []);
}

/// Subscriptions: one per destination (409 for a second), only the
/// organization's own destinations (400), values checked field by field,
/// changed with PATCH, removed with DELETE, invisible to other organizations.
#[actix_web::test]
async fn subscriptions_are_validated_unique_editable_and_isolated() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-b", "org:admin").await;
    let mine = webhook(&app, &key, "http://127.0.0.1:9/hook").await;
    let theirs = webhook(&app, &other, "http://127.0.0.1:9/hook").await;

    let subscription = subscribe(&app, &key, json!({"destination_id": mine})).await;
    assert_eq!(subscription["min_severity"], "HIGH", "the default minimum");
    assert_eq!(subscription["types"], json!([]));
    assert_eq!(subscription["enabled"], true);
    let id = subscription["id"].as_i64().unwrap();
    let (status, body) = post(
        &app,
        &key,
        "/v1/alert-subscriptions",
        Some(json!({"destination_id": mine})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    for (body, field) in [
        (json!({"destination_id": theirs}), "destination_id"),
        (json!({"destination_id": 999_999}), "destination_id"),
        (
            json!({"destination_id": mine, "min_severity": "URGENT"}),
            "min_severity",
        ),
        (
            json!({"destination_id": mine, "types": ["SECURITY", "ATTACK"]}),
            "types[1]",
        ),
    ] {
        let (status, answer) =
            post(&app, &key, "/v1/alert-subscriptions", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(error_fields(&answer), [field], "{body}: {answer}");
    }

    let path = format!("/v1/alert-subscriptions/{id}");
    let (status, changed) = app
        .call(
            Method::PATCH,
            &path,
            Some(&key),
            Some(
                json!({"min_severity": "MEDIUM", "types": ["SECURITY", "COMPLIANCE", "SECURITY"]}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["min_severity"], "MEDIUM");
    assert_eq!(changed["types"], json!(["SECURITY", "COMPLIANCE"]));
    assert_eq!(changed["enabled"], true, "absent fields are kept");
    let (status, answer) = app
        .call(
            Method::PATCH,
            &path,
            Some(&key),
            Some(json!({"types": ["NOPE"]})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(error_fields(&answer), ["types[0]"]);
    let (_, shown) = get(&app, &key, &path).await;
    assert_eq!(shown, changed);
    let (_, listed) = get(&app, &key, "/v1/alert-subscriptions").await;
    assert_eq!(listed["subscriptions"], json!([changed]));

    assert_eq!(get(&app, &other, &path).await.0, 404);
    assert_eq!(
        app.call(
            Method::PATCH,
            &path,
            Some(&other),
            Some(json!({"enabled": false}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        app.call(Method::DELETE, &path, Some(&other), None).await.0,
        404
    );
    let (_, theirs_listed) = get(&app, &other, "/v1/alert-subscriptions").await;
    assert_eq!(theirs_listed["subscriptions"], json!([]));

    assert_eq!(
        app.call(Method::DELETE, &path, Some(&key), None).await.0,
        204
    );
    assert_eq!(
        app.call(Method::DELETE, &path, Some(&key), None).await.0,
        404
    );
    assert_eq!(get(&app, &key, &path).await.0, 404);
}

fn raised(group_key: &str, severity: Severity, cooldown: Duration) -> Raised {
    Raised {
        organization_id: "org-a".to_owned(),
        rule_id: "repeated-login-failures".to_owned(),
        group_key: group_key.to_owned(),
        severity,
        alert_type: AlertType::Security,
        title: format!("Repeated login failures for {group_key}"),
        description: None,
        source: "rules".to_owned(),
        correlation_id: None,
        metadata: json!({"group": group_key}),
        seen_at: Utc::now(),
        occurrences: 1,
        cooldown,
    }
}

async fn open_alerts(db: &tokio_postgres::Client, group_key: &str) -> i64 {
    db.query_one(
        "SELECT count(*) FROM alerts WHERE group_key = $1 AND status IN ('active', 'acknowledged')",
        &[&group_key],
    )
    .await
    .unwrap()
    .get(0)
}

/// `raise` keeps one open alert per rule and group: later firings count on it
/// (acknowledged or not), keep the highest severity and report an escalation
/// only when it rises; after a resolution the group stays silent for the
/// cooldown (nothing written), while a dismissal starts no cooldown.
#[actix_web::test]
async fn raise_deduplicates_escalates_and_cools_down() {
    let app = spawn_app().await;
    let db = app.database().await;
    let hour = Duration::from_secs(3600);

    let Raise::Created(created) = alerts::raise(
        &db,
        Statements::Unnamed,
        &raised("alice", Severity::Low, hour),
    )
    .await
    .unwrap() else {
        panic!("the first firing creates the alert");
    };
    assert_eq!(created.status, AlertStatus::Active);
    assert_eq!(created.occurrences, 1);
    assert_eq!(created.rule_id.as_deref(), Some("repeated-login-failures"));
    assert_eq!(created.group_key.as_deref(), Some("alice"));
    assert_eq!(created.first_seen_at, created.last_seen_at);

    let mut again = raised("alice", Severity::Low, hour);
    again.occurrences = 3;
    let Raise::Updated { alert, escalated } = alerts::raise(&db, Statements::Unnamed, &again)
        .await
        .unwrap()
    else {
        panic!("a firing while open updates");
    };
    assert_eq!(
        (alert.id, alert.occurrences, escalated),
        (created.id, 4, false)
    );
    assert!(alert.last_seen_at >= created.last_seen_at);

    let Raise::Updated { alert, escalated } = alerts::raise(
        &db,
        Statements::Unnamed,
        &raised("alice", Severity::High, hour),
    )
    .await
    .unwrap() else {
        panic!("a firing while open updates");
    };
    assert_eq!((alert.severity, escalated), (Severity::High, true));
    let mut late = raised("alice", Severity::Medium, hour);
    late.seen_at = created.first_seen_at - TimeDelta::minutes(5);
    let Raise::Updated { alert, escalated } = alerts::raise(&db, Statements::Unnamed, &late)
        .await
        .unwrap()
    else {
        panic!("a firing while open updates");
    };
    assert_eq!(
        (alert.severity, escalated),
        (Severity::High, false),
        "never lowered"
    );
    assert_eq!(
        alert.first_seen_at, late.seen_at,
        "an older event moves first_seen_at back"
    );
    let last_seen = alert.last_seen_at;
    assert!(
        last_seen > late.seen_at,
        "and never moves last_seen_at back"
    );

    // Another group is another alert.
    assert!(matches!(
        alerts::raise(
            &db,
            Statements::Unnamed,
            &raised("bob", Severity::Low, hour)
        )
        .await
        .unwrap(),
        Raise::Created(_)
    ));

    // Acknowledged is still open.
    alerts::transition(
        &db,
        "org-a",
        created.id,
        Transition::Acknowledge { by: "test" },
    )
    .await
    .unwrap();
    let Raise::Updated { alert, .. } = alerts::raise(
        &db,
        Statements::Unnamed,
        &raised("alice", Severity::Low, hour),
    )
    .await
    .unwrap() else {
        panic!("an acknowledged alert still counts firings");
    };
    assert_eq!((alert.id, alert.occurrences), (created.id, 7));

    // Resolved: silent for the cooldown, then a new alert.
    alerts::transition(
        &db,
        "org-a",
        created.id,
        Transition::Resolve {
            by: "test",
            notes: None,
        },
    )
    .await
    .unwrap();
    let rows_before: i64 = db
        .query_one("SELECT count(*) FROM alerts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        alerts::raise(
            &db,
            Statements::Unnamed,
            &raised("alice", Severity::Critical, hour)
        )
        .await
        .unwrap(),
        Raise::Suppressed
    );
    let rows_after: i64 = db
        .query_one("SELECT count(*) FROM alerts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rows_before, rows_after,
        "a suppressed firing writes nothing"
    );
    let Raise::Created(second) = alerts::raise(
        &db,
        Statements::Unnamed,
        &raised("alice", Severity::Low, Duration::ZERO),
    )
    .await
    .unwrap() else {
        panic!("past the cooldown, a new alert");
    };
    assert_ne!(second.id, created.id);
    assert_eq!(second.occurrences, 1);

    // Dismissed: no cooldown, the rule may raise it again at once.
    let Raise::Created(dismissed) = alerts::raise(
        &db,
        Statements::Unnamed,
        &raised("erin", Severity::Low, hour),
    )
    .await
    .unwrap() else {
        panic!("created");
    };
    alerts::transition(
        &db,
        "org-a",
        dismissed.id,
        Transition::Dismiss { by: "test" },
    )
    .await
    .unwrap();
    let Raise::Created(again) = alerts::raise(
        &db,
        Statements::Unnamed,
        &raised("erin", Severity::Low, hour),
    )
    .await
    .unwrap() else {
        panic!("a dismissal starts no cooldown");
    };
    assert_ne!(again.id, dismissed.id);
    assert_eq!(open_alerts(&db, "erin").await, 1);
}

/// Concurrent firings for one rule and group, each on its own connection,
/// create exactly one alert and count every firing on it.
#[actix_web::test]
async fn concurrent_raises_create_one_alert_and_count_every_firing() {
    let app = spawn_app().await;
    const FIRINGS: usize = 12;
    let mut connections = Vec::new();
    for _ in 0..FIRINGS {
        connections.push(app.database().await);
    }
    let severities = [Severity::Low, Severity::Medium, Severity::High];
    let outcomes =
        futures_util::future::join_all(connections.iter().enumerate().map(|(i, db)| async move {
            alerts::raise(
                db,
                Statements::Unnamed,
                &raised("carol", severities[i % 3], Duration::from_secs(60)),
            )
            .await
            .unwrap()
        }))
        .await;
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, Raise::Created(_)))
        .count();
    let updated = outcomes
        .iter()
        .filter(|o| matches!(o, Raise::Updated { .. }))
        .count();
    assert_eq!((created, updated), (1, FIRINGS - 1));
    let db = app.database().await;
    assert_eq!(open_alerts(&db, "carol").await, 1);
    let row = db
        .query_one(
            "SELECT occurrences, severity FROM alerts WHERE group_key = 'carol'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), FIRINGS as i32);
    assert_eq!(row.get::<_, String>(1), "HIGH");
}

/// One `raise_all` records a batch's firings each by its own rule: a new
/// group, an escalation, a firing in its group's cooldown and another new
/// group, answered in the order given (not the order of the rows).
#[actix_web::test]
async fn raise_all_answers_each_firing_of_a_batch_in_order() {
    let app = spawn_app().await;
    let db = app.database().await;
    let hour = Duration::from_secs(3600);
    let Raise::Created(dave) = alerts::raise(
        &db,
        Statements::Unnamed,
        &raised("dave", Severity::Low, hour),
    )
    .await
    .unwrap() else {
        panic!("the first firing creates the alert");
    };
    let Raise::Created(erin) = alerts::raise(
        &db,
        Statements::Unnamed,
        &raised("erin", Severity::Low, hour),
    )
    .await
    .unwrap() else {
        panic!("the first firing creates the alert");
    };
    alerts::transition(
        &db,
        "org-a",
        erin.id,
        Transition::Resolve {
            by: "test",
            notes: None,
        },
    )
    .await
    .unwrap();

    let mut escalation = raised("dave", Severity::High, hour);
    escalation.occurrences = 2;
    let batch = [
        raised("zoe", Severity::Low, hour),
        escalation,
        raised("erin", Severity::Critical, hour),
        raised("adam", Severity::Medium, hour),
    ];
    let outcomes = alerts::raise_all(&db, Statements::Unnamed, &batch)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 4);
    let Raise::Created(zoe) = &outcomes[0] else {
        panic!("a new group creates its alert: {:?}", outcomes[0]);
    };
    assert_eq!(
        (zoe.group_key.as_deref(), zoe.severity),
        (Some("zoe"), Severity::Low)
    );
    let Raise::Updated { alert, escalated } = &outcomes[1] else {
        panic!("an open group's firing updates: {:?}", outcomes[1]);
    };
    assert_eq!(
        (alert.id, alert.occurrences, alert.severity, *escalated),
        (dave.id, 3, Severity::High, true)
    );
    assert_eq!(outcomes[2], Raise::Suppressed, "erin is cooling down");
    let Raise::Created(adam) = &outcomes[3] else {
        panic!("a new group creates its alert: {:?}", outcomes[3]);
    };
    assert_eq!(
        (adam.group_key.as_deref(), adam.severity),
        (Some("adam"), Severity::Medium)
    );
    assert_eq!(open_alerts(&db, "erin").await, 0);
    assert!(alerts::raise_all(&db, Statements::Unnamed, &[])
        .await
        .unwrap()
        .is_empty());
}

/// Batches racing on the same groups from several connections create one
/// open alert per group and count every firing of every batch.
#[actix_web::test]
async fn concurrent_batches_create_one_alert_per_group() {
    let app = spawn_app().await;
    const BATCHES: usize = 6;
    let mut connections = Vec::new();
    for _ in 0..BATCHES {
        connections.push(app.database().await);
    }
    let groups = ["race-1", "race-2", "race-3"];
    let outcomes = futures_util::future::join_all(connections.iter().map(|db| async move {
        let batch: Vec<Raised> = groups
            .iter()
            .map(|group| raised(group, Severity::Low, Duration::from_secs(60)))
            .collect();
        alerts::raise_all(db, Statements::Unnamed, &batch)
            .await
            .unwrap()
    }))
    .await;
    let db = app.database().await;
    for (index, group) in groups.iter().enumerate() {
        let created = outcomes
            .iter()
            .filter(|batch| matches!(batch[index], Raise::Created(_)))
            .count();
        assert_eq!(created, 1, "{group}: one batch creates its alert");
        assert_eq!(open_alerts(&db, group).await, 1);
        let occurrences: i32 = db
            .query_one(
                "SELECT occurrences FROM alerts WHERE group_key = $1",
                &[group],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(occurrences, BATCHES as i32, "{group}: every firing counted");
    }
}

/// Notifying twice of the same event at the same severity (a retried batch,
/// two workers) queues one delivery; an escalation is a new event.
#[actix_web::test]
async fn notifications_are_queued_once_per_event_and_severity() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let destination = webhook(&app, &key, "http://127.0.0.1:9/hook").await;
    subscribe(
        &app,
        &key,
        json!({"destination_id": destination, "min_severity": "MEDIUM"}),
    )
    .await;
    let db = app.database().await;
    let hour = Duration::from_secs(3600);

    let Raise::Created(alert) = alerts::raise(
        &db,
        Statements::Unnamed,
        &raised("dave", Severity::Low, hour),
    )
    .await
    .unwrap() else {
        panic!("created");
    };
    assert_eq!(
        alerts::notify_subscribers(&db, &alert, Notice::New)
            .await
            .unwrap(),
        0,
        "LOW < MEDIUM"
    );
    let Raise::Updated {
        alert,
        escalated: true,
    } = alerts::raise(
        &db,
        Statements::Unnamed,
        &raised("dave", Severity::High, hour),
    )
    .await
    .unwrap()
    else {
        panic!("escalated");
    };
    for _ in 0..2 {
        assert_eq!(
            alerts::notify_subscribers(&db, &alert, Notice::Escalated)
                .await
                .unwrap(),
            1
        );
    }
    let id = alert.id.to_string();
    assert_eq!(
        queued_for(&app, &id).await,
        [(destination, format!("alert:{id}:alert.escalated:HIGH"), 3)]
    );
    let Raise::Updated {
        alert,
        escalated: true,
    } = alerts::raise(
        &db,
        Statements::Unnamed,
        &raised("dave", Severity::Critical, hour),
    )
    .await
    .unwrap()
    else {
        panic!("escalated again");
    };
    alerts::notify_subscribers(&db, &alert, Notice::Escalated)
        .await
        .unwrap();
    assert_eq!(queued_for(&app, &id).await.len(), 2);
}

/// One `notify_all` for a batch's notices: each alert reaches exactly the
/// destinations subscribed to it (its own organization's, at or above the
/// subscription's severity, of a subscribed type), however the notices mix.
#[actix_web::test]
async fn notify_all_sends_each_alert_to_its_own_subscribers() {
    let app = spawn_app().await;
    let key_a = app.create_key("org-a", "org:admin").await;
    let key_b = app.create_key("org-b", "org:admin").await;
    let a_all = webhook(&app, &key_a, "http://127.0.0.1:9/a-all").await;
    let a_compliance = webhook(&app, &key_a, "http://127.0.0.1:9/a-compliance").await;
    let b_high = webhook(&app, &key_b, "http://127.0.0.1:9/b-high").await;
    subscribe(
        &app,
        &key_a,
        json!({"destination_id": a_all, "min_severity": "LOW"}),
    )
    .await;
    subscribe(
        &app,
        &key_a,
        json!({"destination_id": a_compliance, "min_severity": "LOW", "types": ["COMPLIANCE"]}),
    )
    .await;
    subscribe(
        &app,
        &key_b,
        json!({"destination_id": b_high, "min_severity": "HIGH"}),
    )
    .await;
    let db = app.database().await;
    let hour = Duration::from_secs(3600);
    let of_org_b = |mut raised: Raised| {
        raised.organization_id = "org-b".to_owned();
        raised
    };
    let batch = [
        raised("dave", Severity::Medium, hour),
        of_org_b(raised("erin", Severity::Low, hour)),
        of_org_b(raised("frank", Severity::Critical, hour)),
    ];
    let created: Vec<Alert> = alerts::raise_all(&db, Statements::Unnamed, &batch)
        .await
        .unwrap()
        .into_iter()
        .map(|raise| match raise {
            Raise::Created(alert) => alert,
            other => panic!("a new group creates its alert: {other:?}"),
        })
        .collect();
    let notices: Vec<(&Alert, Notice)> = created.iter().map(|alert| (alert, Notice::New)).collect();
    assert_eq!(alerts::notify_all(&db, &notices).await.unwrap(), 2);
    let destinations = |alert: &Alert| {
        let id = alert.id.to_string();
        let app = &app;
        async move {
            queued_for(app, &id)
                .await
                .into_iter()
                .map(|(destination, _, _)| destination)
                .collect::<Vec<i64>>()
        }
    };
    assert_eq!(
        destinations(&created[0]).await,
        [a_all],
        "a SECURITY alert: not the COMPLIANCE subscription"
    );
    assert_eq!(
        destinations(&created[1]).await,
        Vec::<i64>::new(),
        "LOW is below org-b's HIGH, and org-a's subscriptions never hear org-b"
    );
    assert_eq!(destinations(&created[2]).await, [b_high]);
    assert_eq!(alerts::notify_all(&db, &[]).await.unwrap(), 0);
}

/// Maintenance deletes resolved and dismissed alerts closed before the
/// cutoff, of every organization, in one statement; open alerts and recently
/// closed ones stay, however old.
#[actix_web::test]
async fn closed_alerts_before_the_cutoff_are_deleted() {
    let app = spawn_app().await;
    let db = app.database().await;
    let long_ago = Utc::now() - TimeDelta::days(40);
    let seeds = vec![
        Seed::new("HIGH", "SECURITY", "resolved").created_at(long_ago),
        Seed::new("HIGH", "SECURITY", "resolved")
            .created_at(long_ago)
            .organization("org-b"),
        Seed::new("LOW", "SYSTEM", "dismissed").created_at(long_ago),
        Seed::new("LOW", "SYSTEM", "dismissed")
            .created_at(long_ago)
            .organization("org-c"),
        Seed::new("LOW", "SYSTEM", "resolved").created_at(long_ago),
        Seed::new("LOW", "SYSTEM", "active").created_at(long_ago),
        Seed::new("LOW", "SYSTEM", "acknowledged").created_at(long_ago),
        Seed::new("LOW", "SYSTEM", "resolved"),
        Seed::new("LOW", "SYSTEM", "dismissed"),
    ];
    let ids = seed(&app, &seeds).await;
    let cutoff = Utc::now() - TimeDelta::days(30);

    assert_eq!(alerts::delete_closed_before(&db, cutoff).await.unwrap(), 5);
    assert_eq!(alerts::delete_closed_before(&db, cutoff).await.unwrap(), 0);
    let left: Vec<Uuid> = db
        .query("SELECT id FROM alerts ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut expected = ids[5..].to_vec();
    expected.sort();
    assert_eq!(left, expected);
}

/// An alert's `metadata`, like every free-form JSON field, is bounded:
/// past 64 KiB serialized it is a 400 naming the field, and nothing is stored.
#[actix_web::test]
async fn alert_metadata_is_bounded() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let many: serde_json::Map<String, Value> = (0..5000)
        .map(|n| (format!("key-{n}"), json!("sixteen chars..")))
        .collect();
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/alerts",
            Some(&key),
            Some(json!({"severity": "LOW", "title": "big", "metadata": many})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "metadata", "{body}");
    let stored = app.count("SELECT count(*) FROM alerts", &[]).await;
    assert_eq!(stored, 0);
}
