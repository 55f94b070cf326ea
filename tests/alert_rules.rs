//! Alert rules against the real worker and PostgreSQL: threshold windows (and
//! their boundary), match rules, deduplication, cooldown, organization rules
//! over the API, window state shared by instances and kept across restarts,
//! the system rules, and the retention of closed alerts.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::{
    error_fields, event, spawn_app_with, spawn_beside, wait_until, webhook, Event, TestApp,
};
use reqwest::Method;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

fn login_failure(principal: &str, time: DateTime<Utc>) -> Event {
    event(principal, "auth.login").status("failure").at(time)
}

/// The organization's alerts of a rule: (group, status, occurrences, severity, type).
async fn alerts_of(
    app: &TestApp,
    org: &str,
    rule: &str,
) -> Vec<(String, String, i32, String, String)> {
    app.database()
        .await
        .query(
            "SELECT group_key, status, occurrences, severity, type FROM alerts \
             WHERE organization_id = $1 AND rule_id = $2 ORDER BY group_key, created_at",
            &[&org, &rule],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect()
}

const LOGIN_RULE: &str = "config:repeated-login-failures";

/// ≥ 5 login failures of one principal within 10 minutes fire; the window is
/// inclusive at both ends: a fifth failure exactly 10 minutes after the first
/// fires, one a second later does not. A burst across two requests counts.
#[actix_web::test]
async fn threshold_rule_fires_at_the_window_boundary_and_not_past_it() {
    let app = spawn_app_with(|_| {}).await;
    let key = app.create_key("org-a", "org:admin").await;
    let start = Utc::now() - TimeDelta::minutes(9);
    let minute = |n: i64| start + TimeDelta::minutes(n);
    // Four of each, then the decisive fifth in its own request.
    let mut first = Vec::new();
    for principal in ["inside", "outside"] {
        first.extend((0..4).map(|n| login_failure(principal, minute(n))));
    }
    // Other events that must not count: successes, other actions.
    first.push(event("inside", "auth.login").at(minute(5)));
    first.push(
        event("inside", "auth.logout")
            .status("failure")
            .at(minute(5)),
    );
    app.ingest(&key, first).await;
    app.wait_evaluated(10).await;
    assert!(
        alerts_of(&app, "org-a", LOGIN_RULE).await.is_empty(),
        "fired below the threshold"
    );

    app.ingest(
        &key,
        vec![
            login_failure("inside", minute(10)),
            login_failure("outside", minute(10) + TimeDelta::microseconds(1)),
        ],
    )
    .await;
    app.wait_evaluated(12).await;
    let alerts = alerts_of(&app, "org-a", LOGIN_RULE).await;
    assert_eq!(
        alerts,
        vec![(
            "inside".to_owned(),
            "active".to_owned(),
            1,
            "HIGH".to_owned(),
            "SECURITY".to_owned()
        )]
    );
}

/// A rule firing again for the same group while its alert is open updates it;
/// after resolution the cooldown keeps it silent; another organization's
/// events never touch this organization's windows or alerts.
#[actix_web::test]
async fn deduplication_cooldown_and_isolation() {
    let app = spawn_app_with(|_| {}).await;
    let key_a = app.create_key("org-a", "org:admin").await;
    let key_b = app.create_key("org-b", "org:admin").await;
    let start = Utc::now() - TimeDelta::minutes(5);
    let events = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|i| login_failure("mallory", start + TimeDelta::seconds(i as i64)))
            .collect()
    };
    app.ingest(&key_a, events(7)).await;
    // Org B's four failures of the same principal must not add to org A's count.
    app.ingest(&key_b, events(4)).await;
    app.wait_evaluated(11).await;
    let alerts = alerts_of(&app, "org-a", LOGIN_RULE).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    // Fired by the 5th, 6th and 7th failures: one alert, three occurrences.
    assert_eq!(alerts[0].2, 3);
    assert!(alerts_of(&app, "org-b", LOGIN_RULE).await.is_empty());

    app.database()
        .await
        .execute(
            "UPDATE alerts SET status = 'resolved', resolved_at = now() WHERE organization_id = 'org-a'",
            &[],
        )
        .await
        .unwrap();
    let later: Vec<Event> = (0..5)
        .map(|i| login_failure("mallory", start + TimeDelta::seconds(100 + i)))
        .collect();
    app.ingest(&key_a, later).await;
    app.wait_evaluated(16).await;
    let alerts = alerts_of(&app, "org-a", LOGIN_RULE).await;
    assert_eq!(
        alerts.len(),
        1,
        "a new alert during the cooldown: {alerts:?}"
    );
    assert_eq!(alerts[0].1, "resolved");
}

/// Match rules fire on every matching event and only on those: a failed PHI
/// access, any `gdpr.*` action.
#[actix_web::test]
async fn match_rules_fire_exactly_on_matching_events() {
    let app = spawn_app_with(|_| {}).await;
    let key = app.create_key("org-a", "org:admin").await;
    let now = Utc::now();
    let read = |principal: &str, status: &str, classification: &str| {
        event(principal, "patient.read")
            .status(status)
            .classification(classification)
            .at(now)
    };
    app.ingest(
        &key,
        vec![
            read("nurse", "failure", "PHI"),
            read("doctor", "success", "PHI"),
            read("clerk", "failure", "INTERNAL"),
            event("dpo", "gdpr.data.export").at(now),
            event("dpo", "gdprx.other").at(now),
        ],
    )
    .await;
    app.wait_evaluated(5).await;
    let phi = alerts_of(&app, "org-a", "config:failed-phi-access").await;
    assert_eq!(
        phi,
        vec![(
            "nurse".to_owned(),
            "active".to_owned(),
            1,
            "HIGH".to_owned(),
            "COMPLIANCE".to_owned()
        )]
    );
    let gdpr = alerts_of(&app, "org-a", "config:gdpr-activity").await;
    assert_eq!(gdpr.len(), 1, "{gdpr:?}");
    assert_eq!(gdpr[0].0, "gdpr.data.export");
    assert_eq!(gdpr[0].3, "INFO");
}

/// An organization's own rule over the API: validated (400 naming the field,
/// 409 on a duplicate name), applied to its events only, and gone once deleted.
#[actix_web::test]
async fn organization_rules_over_the_api() {
    let app = spawn_app_with(|_| {}).await;
    let key = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-b", "org:admin").await;
    let member = app.create_key("org-a", "org:member").await;
    let rule = json!({
        "name": "bulk-export", "kind": "threshold", "when": {"action": "records.export"},
        "threshold": 3, "window": "1h", "group_by": "details.client", "severity": "MEDIUM",
        "type": "CUSTOM", "title": "Bulk export"
    });
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/alert-rules",
            Some(&member),
            Some(rule.clone()),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let mut bad = rule.clone();
    bad["window"] = json!(null);
    bad["group_by"] = json!("colour");
    let (status, body) = app
        .call(Method::POST, "/v1/alert-rules", Some(&key), Some(bad))
        .await;
    assert_eq!(status, 400, "{body}");
    let fields = error_fields(&body);
    assert!(
        fields.iter().any(|field| field == "window")
            && fields.iter().any(|field| field == "group_by"),
        "{body}"
    );

    let (status, created) = app
        .call(
            Method::POST,
            "/v1/alert-rules",
            Some(&key),
            Some(rule.clone()),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/alert-rules",
            Some(&key),
            Some(rule.clone()),
        )
        .await;
    assert_eq!(status, 409);
    let rule_id = created["rule_id"].as_str().unwrap().to_owned();
    let id = created["id"].as_i64().unwrap();
    let (status, listed) = app
        .call(Method::GET, "/v1/alert-rules", Some(&key), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["rules"][0]["rule_id"], rule_id.as_str());
    assert!(listed["configured"].as_array().unwrap().len() >= 3);
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/v1/alert-rules/{id}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, 404, "another organization's rule is invisible");

    let export = |client: &str| event("u", "records.export").details(json!({"client": client}));
    app.ingest(
        &key,
        vec![export("etl"), export("etl"), export("etl"), export("bi")],
    )
    .await;
    app.ingest(&other, vec![export("etl"), export("etl"), export("etl")])
        .await;
    app.wait_evaluated(7).await;
    let fired = alerts_of(&app, "org-a", &rule_id).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(
        (
            fired[0].0.as_str(),
            fired[0].3.as_str(),
            fired[0].4.as_str()
        ),
        ("etl", "MEDIUM", "CUSTOM")
    );
    assert!(alerts_of(&app, "org-b", &rule_id).await.is_empty());

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/alert-rules/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 204);
    app.ingest(&key, vec![export("bi"), export("bi"), export("bi")])
        .await;
    app.wait_evaluated(10).await;
    assert_eq!(
        alerts_of(&app, "org-a", &rule_id).await.len(),
        1,
        "a deleted rule fired"
    );
}

/// The window lives in PostgreSQL: failures counted by one instance and the
/// rest by another (as after a restart) add up.
#[actix_web::test]
async fn window_state_is_shared_by_instances_and_survives_a_restart() {
    let first = spawn_app_with(|_| {}).await;
    let key = first.create_key("org-a", "org:admin").await;
    let start = Utc::now() - TimeDelta::minutes(3);
    let failure = |i: i64| login_failure("eve", start + TimeDelta::seconds(i));
    first
        .ingest(&key, (0..3).map(failure).collect::<Vec<_>>())
        .await;
    first.wait_evaluated(3).await;
    first.server.stop(true).await;

    let second = spawn_beside(&first, |_| {}).await;
    second
        .ingest(&key, (3..5).map(failure).collect::<Vec<_>>())
        .await;
    second.wait_evaluated(2).await;
    let alerts = alerts_of(&second, "org-a", LOGIN_RULE).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].0, "eve");
}

/// System rules: a failed verification raises a CRITICAL COMPLIANCE alert; a
/// breaker open too long a DELIVERY alert; slow ingest a PERFORMANCE alert in
/// the operators' organization.
#[actix_web::test]
async fn system_rules_raise_their_alerts() {
    let app = spawn_app_with(|config| {
        config.alerts.system_check_interval = Duration::from_millis(100);
        config.alerts.breaker_open_after = Duration::from_secs(60);
        // Any ingest is "slow": the latency rule must fire.
        config.alerts.ingest_latency = Duration::from_nanos(1);
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    app.ingest(&key, vec![event("u", "record.read")]).await;
    let db = app.database_without_triggers().await;
    db.execute(
        "UPDATE audit_log SET action = 'record.delete' WHERE organization_id = 'org-a'",
        &[],
    )
    .await
    .unwrap();
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], false);
    let integrity = alerts_of(&app, "org-a", "system:integrity-verification").await;
    assert_eq!(integrity.len(), 1, "{integrity:?}");
    assert_eq!(
        (integrity[0].3.as_str(), integrity[0].4.as_str()),
        ("CRITICAL", "COMPLIANCE")
    );

    let id = app
        .create_destination(&key, webhook("siem", "http://127.0.0.1:9/"))
        .await;
    db.execute(
        "INSERT INTO destination_health (destination_id, organization_id, circuit_breaker_state, circuit_breaker_opened_at) \
         VALUES ($1, 'org-a', 'open', now() - interval '2 minutes') \
         ON CONFLICT (organization_id, destination_id) DO UPDATE SET circuit_breaker_state = 'open', \
           circuit_breaker_opened_at = now() - interval '2 minutes'",
        &[&id],
    )
    .await
    .unwrap();
    wait_until(WAIT, "a breaker alert", || async {
        let alerts = alerts_of(&app, "org-a", "system:breaker-open").await;
        (alerts.len() == 1).then_some(())
    })
    .await;
    let breaker = alerts_of(&app, "org-a", "system:breaker-open").await;
    assert_eq!(
        (breaker[0].0.as_str(), breaker[0].4.as_str()),
        (id.to_string().as_str(), "DELIVERY")
    );

    wait_until(WAIT, "an ingest latency alert", || async {
        let alerts = alerts_of(&app, "system", "system:ingest-latency").await;
        (alerts.len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        alerts_of(&app, "system", "system:ingest-latency").await[0].4,
        "PERFORMANCE"
    );
}

/// Resolved and dismissed alerts past `alerts.retention_days` are deleted;
/// recent ones and open ones are kept.
#[actix_web::test]
async fn closed_alerts_past_their_retention_are_deleted() {
    let app = spawn_app_with(|config| {
        config.alerts.system_check_interval = Duration::from_millis(100);
        config.alerts.retention_days = 90;
    })
    .await;
    let db = app.database().await;
    db.batch_execute(
        "INSERT INTO alerts (organization_id, severity, type, status, title, source, resolved_at, dismissed_at, created_at) VALUES \
           ('org-a', 'LOW', 'CUSTOM', 'resolved',  'old resolved',  't', now() - interval '91 days', NULL, now() - interval '100 days'), \
           ('org-a', 'LOW', 'CUSTOM', 'dismissed', 'old dismissed', 't', NULL, now() - interval '95 days', now() - interval '100 days'), \
           ('org-a', 'LOW', 'CUSTOM', 'resolved',  'recent',        't', now() - interval '89 days', NULL, now() - interval '100 days'), \
           ('org-a', 'LOW', 'CUSTOM', 'active',    'open',          't', NULL, NULL, now() - interval '100 days')",
    )
    .await
    .unwrap();
    let titles = wait_until(WAIT, "the old closed alerts to go", || async {
        let rows = db
            .query("SELECT title FROM alerts ORDER BY title", &[])
            .await
            .unwrap();
        let titles: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        (titles.len() == 2).then_some(titles)
    })
    .await;
    assert_eq!(titles, vec!["open".to_owned(), "recent".to_owned()]);
}
