//! Scheduled reports against a real worker and database: each report type's
//! figures against the rows, formats, a run delivered to a real receiver, a
//! missed schedule caught up once, two workers sharing the schedules, a run
//! whose worker died taken over, input errors and isolation.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::{
    error_fields, event, spawn_app, spawn_app_with, spawn_beside, wait_until, webhook, TestApp,
};

const ORG: &str = "org-reports";

/// Nine events with known figures (see each report's test).
async fn seed(app: &TestApp, key: &str) {
    let alice = |action: &str, classification: &str, patient: &str| {
        event("alice", action)
            .classification(classification)
            .target("patient", patient)
    };
    app.ingest(
        key,
        vec![
            alice("patient.record.read", "PHI", "p-1"),
            alice("patient.record.read", "PHI", "p-2"),
            alice("patient.record.read", "INTERNAL", "p-1"),
            alice("patient.record.update", "PHI", "p-1").status("failure"),
            event("bob", "auth.login")
                .status("failure")
                .classification("INTERNAL"),
            event("bob", "auth.login")
                .status("failure")
                .classification("INTERNAL"),
            event("bob", "auth.login").classification("INTERNAL"),
            event("carol", "data.access.denied")
                .status("attempt")
                .classification("CONFIDENTIAL")
                .target("record", "r-9"),
            event("carol", "gdpr.data.export").classification("INTERNAL"),
        ],
    )
    .await;
}

/// A worker holding the nine seeded events and a recorded GDPR rectification
/// request (itself an event); returns it with an admin key of [`ORG`].
async fn seeded_with_a_gdpr_request() -> (TestApp, String) {
    let app = spawn_app().await;
    let key = app.create_key(ORG, "org:admin").await;
    seed(&app, &key).await;
    let (status, request) = app
        .call(
            Method::POST,
            "/v1/gdpr/requests",
            Some(&key),
            Some(json!({"type": "rectification", "principal_id": "alice", "description": "typo"})),
        )
        .await;
    assert_eq!(status, 202, "{request}");
    (app, key)
}

/// How many events the organization has in all; of them, asserted, the nine
/// seeded and the one recording the GDPR request, beside the `admin.*`
/// records of the set-up (its key, its report).
async fn ten_events(app: &TestApp) -> i64 {
    let events = app.count_events(ORG).await;
    assert_eq!(events, 10, "nine seeded, one recording the GDPR request");
    all_events(app).await
}

/// Every event of the organization, the `admin.*` records included.
async fn all_events(app: &TestApp) -> i64 {
    app.count(
        "SELECT count(*) FROM audit_log WHERE organization_id = $1",
        &[&ORG],
    )
    .await
}

/// A period around now that holds every event of the test.
fn around_now() -> Value {
    let now = Utc::now();
    json!({"from": now - TimeDelta::hours(1), "to": now + TimeDelta::hours(1)})
}

async fn create_report(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, report) = app
        .call(Method::POST, "/v1/reports", Some(key), Some(body))
        .await;
    assert_eq!(status, 201, "{report}");
    report
}

/// A report of `report_type` over [`around_now`] that never runs by itself.
async fn adhoc(
    app: &TestApp,
    key: &str,
    name: &str,
    report_type: &str,
    format: &str,
    extra: Value,
) -> String {
    let mut criteria = json!({"time_range": around_now()});
    if let Value::Object(extra) = extra {
        criteria.as_object_mut().unwrap().extend(extra);
    }
    let report = create_report(
        app,
        key,
        json!({"name": name, "report_type": report_type, "format": format, "criteria": criteria,
               "schedule": {"cron": "0 0 1 1 *", "timezone": "UTC"}}),
    )
    .await;
    report["id"].as_str().unwrap().to_owned()
}

async fn execution(app: &TestApp, key: &str, report: &str, execution: &str) -> Value {
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/v1/reports/{report}/executions/{execution}"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Asks for a run of the report now; asserts 202 and returns the queued run.
async fn queue_run(app: &TestApp, key: &str, report: &str) -> Value {
    let (status, queued) = app
        .call(
            Method::POST,
            &format!("/v1/reports/{report}/run"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    queued
}

/// Runs the report now and waits for the run to finish; returns the run.
async fn run_now(app: &TestApp, key: &str, report: &str) -> Value {
    let queued = queue_run(app, key, report).await;
    assert_eq!(queued["status"], "pending");
    let id = queued["id"].as_str().unwrap().to_owned();
    let done = wait_until(Duration::from_secs(30), "the run to finish", || async {
        let run = execution(app, key, report, &id).await;
        matches!(run["status"].as_str(), Some("completed" | "failed")).then_some(run)
    })
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    done
}

async fn download(
    app: &TestApp,
    key: &str,
    report: &str,
    execution: &str,
) -> (u16, String, Option<String>) {
    let response = app
        .client
        .get(format!(
            "{}/v1/reports/{report}/executions/{execution}/output",
            app.address
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let sha = response
        .headers()
        .get("x-content-sha256")
        .map(|value| value.to_str().unwrap().to_owned());
    (status, response.text().await.unwrap(), sha)
}

/// Runs a report and returns its parsed JSON output, after checking the run
/// against the output (hash, size, records).
async fn run_json(app: &TestApp, key: &str, report: &str) -> (Value, Value) {
    let run = run_now(app, key, report).await;
    let (status, body, header_sha) = download(app, key, report, run["id"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let sha = hex::encode(Sha256::digest(body.as_bytes()));
    assert_eq!(run["output_sha256"], sha);
    assert_eq!(header_sha.as_deref(), Some(sha.as_str()));
    assert_eq!(run["output_bytes"], body.len());
    let output: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        output["summary"]["records_processed"],
        run["records_processed"]
    );
    assert_eq!(
        output["integrity"]["valid"], true,
        "{}",
        output["integrity"]
    );
    assert_eq!(run["integrity_report"]["valid"], true);
    (run, output)
}

fn section<'a>(output: &'a Value, name: &str) -> &'a Vec<Value> {
    output["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|section| section["name"] == name)
        .unwrap_or_else(|| panic!("no section {name} in {output}"))["rows"]
        .as_array()
        .unwrap()
}

/// `(key, count)` pairs of a section.
fn counts(rows: &[Value], key: &str, count: &str) -> Vec<(String, i64)> {
    rows.iter()
        .map(|row| {
            (
                row[key].as_str().unwrap_or("").to_owned(),
                row[count].as_i64().unwrap(),
            )
        })
        .collect()
}

/// access_summary: every event by action (with its successes and failures),
/// by principal and by resource type, each count as the rows hold it.
#[actix_web::test]
async fn an_access_summary_counts_the_events_by_action_principal_and_resource() {
    let (app, key) = seeded_with_a_gdpr_request().await;
    let report = adhoc(&app, &key, "access", "access_summary", "json", json!({})).await;
    let (run, output) = run_json(&app, &key, &report).await;
    let events = ten_events(&app).await;
    assert_eq!(run["records_processed"], events);
    assert_eq!(output["summary"]["failure"], 3);
    assert_eq!(output["summary"]["attempt"], 1);
    let principals = app
        .count(
            "SELECT count(DISTINCT principal_id) FROM audit_log WHERE organization_id = $1",
            &[&ORG],
        )
        .await;
    assert_eq!(
        output["summary"]["principals"], principals,
        "alice, bob, carol, the request's API key and the set-up's admins"
    );
    assert!(principals >= 4);
    let by_action = counts(section(&output, "by_action"), "action", "events");
    assert_eq!(
        &by_action[..2],
        [("auth.login".into(), 3), ("patient.record.read".into(), 3)]
    );
    let login = &section(&output, "by_action")[0];
    assert_eq!(
        (login["success"].as_i64(), login["failure"].as_i64()),
        (Some(1), Some(2))
    );
    let by_principal = counts(section(&output, "by_principal"), "principal_id", "events");
    assert_eq!(
        &by_principal[..3],
        [("alice".into(), 4), ("bob".into(), 3), ("carol".into(), 2)]
    );
    let patients = section(&output, "by_resource_type")
        .iter()
        .find(|row| row["target_resource_type"] == "patient")
        .unwrap();
    assert_eq!(
        (patients["events"].as_i64(), patients["resources"].as_i64()),
        (Some(4), Some(2))
    );
    for (action, count) in &by_action {
        let stored = app
            .count(
                "SELECT count(*) FROM audit_log WHERE organization_id = $1 AND action = $2",
                &[&ORG, action],
            )
            .await;
        assert_eq!(stored, *count, "{action}");
    }
}

/// failed_access: the failures and the denied access, by principal.
#[actix_web::test]
async fn a_failed_access_report_holds_the_failures_and_the_denials() {
    let (app, key) = seeded_with_a_gdpr_request().await;
    let report = adhoc(&app, &key, "failed", "failed_access", "json", json!({})).await;
    let (run, output) = run_json(&app, &key, &report).await;
    let failed = app
        .count(
            "SELECT count(*) FROM audit_log WHERE organization_id = $1 \
            AND (status = 'failure' OR action LIKE '%denied%' OR action LIKE '%unauthorized%')",
            &[&ORG],
        )
        .await;
    assert_eq!(failed, 4);
    assert_eq!(run["records_processed"], failed);
    assert_eq!(section(&output, "events").len(), 4);
    let by_principal = section(&output, "by_principal");
    assert_eq!(by_principal[0]["principal_id"], "bob");
    assert_eq!(
        (
            by_principal[0]["failures"].as_i64(),
            by_principal[0]["denied"].as_i64()
        ),
        (Some(2), Some(0))
    );
    let carol = by_principal
        .iter()
        .find(|row| row["principal_id"] == "carol")
        .unwrap();
    assert_eq!(carol["denied"], 1);
}

/// phi_access: every PHI event with who, what and when.
#[actix_web::test]
async fn a_phi_access_report_shows_who_read_which_patient_and_when() {
    let (app, key) = seeded_with_a_gdpr_request().await;
    let report = adhoc(&app, &key, "phi", "phi_access", "json", json!({})).await;
    let (run, output) = run_json(&app, &key, &report).await;
    let phi = app
        .count(
            "SELECT count(*) FROM audit_log WHERE organization_id = $1 AND data_classification = 'PHI'",
            &[&ORG],
        )
        .await;
    assert_eq!(phi, 3);
    assert_eq!(run["records_processed"], phi);
    let rows = section(&output, "events");
    assert!(rows.iter().all(|row| row["principal_id"] == "alice"
        && row["timestamp"].is_string()
        && row["target_resource_type"] == "patient"));
    assert_eq!(section(&output, "by_principal")[0]["resources"], 2);
}

/// A report's filter narrows its events the same way the event listing's does.
#[actix_web::test]
async fn a_report_filter_narrows_the_events_as_the_listing_does() {
    let (app, key) = seeded_with_a_gdpr_request().await;
    let report = adhoc(
        &app,
        &key,
        "phi reads",
        "phi_access",
        "json",
        json!({"action": "patient.record.r*"}),
    )
    .await;
    let (run, _) = run_json(&app, &key, &report).await;
    assert_eq!(run["records_processed"], 2);
}

/// gdpr_activity: the GDPR operations and the `gdpr.*` events.
#[actix_web::test]
async fn a_gdpr_activity_report_holds_the_operations_and_the_gdpr_events() {
    let (app, key) = seeded_with_a_gdpr_request().await;
    let report = adhoc(&app, &key, "gdpr", "gdpr_activity", "json", json!({})).await;
    let (run, output) = run_json(&app, &key, &report).await;
    let operations = app
        .count(
            "SELECT count(*) FROM gdpr_operations WHERE organization_id = $1",
            &[&ORG],
        )
        .await;
    let gdpr_events = app
        .count(
            "SELECT count(*) FROM audit_log WHERE organization_id = $1 AND action LIKE 'gdpr.%'",
            &[&ORG],
        )
        .await;
    assert_eq!((operations, gdpr_events), (1, 2));
    assert_eq!(section(&output, "operations")[0]["kind"], "rectification");
    assert_eq!(section(&output, "events").len() as i64, gdpr_events);
    assert_eq!(run["records_processed"], operations + gdpr_events);
}

/// integrity: the verification of the period, every event checked, no problem.
#[actix_web::test]
async fn an_integrity_report_verifies_every_event_of_the_period() {
    let (app, key) = seeded_with_a_gdpr_request().await;
    let report = adhoc(&app, &key, "integrity", "integrity", "json", json!({})).await;
    let (run, output) = run_json(&app, &key, &report).await;
    assert_eq!(run["records_processed"], ten_events(&app).await);
    assert_eq!(output["summary"]["problems"], 0);
    assert!(section(&output, "problems").is_empty());
}

/// alerts_summary: the alerts the default rules raised (for the failed PHI
/// access and for GDPR activity), in all, by type and by severity.
#[actix_web::test]
async fn an_alerts_summary_counts_the_alerts_the_default_rules_raised() {
    let (app, key) = seeded_with_a_gdpr_request().await;
    // Every alert is raised once the rules have seen the ten events.
    app.wait_evaluated(10).await;
    let alerts = app
        .count(
            "SELECT count(*) FROM alerts WHERE organization_id = $1",
            &[&ORG],
        )
        .await;
    assert!(alerts >= 2, "the default rules' alerts: {alerts}");
    let report = adhoc(&app, &key, "alerts", "alerts_summary", "json", json!({})).await;
    let (run, output) = run_json(&app, &key, &report).await;
    assert_eq!(run["records_processed"], alerts);
    assert_eq!(section(&output, "alerts").len() as i64, alerts);
    let by_type: i64 = section(&output, "by_type")
        .iter()
        .map(|row| row["alerts"].as_i64().unwrap())
        .sum();
    assert_eq!(by_type, alerts);
    let high = app
        .count(
            "SELECT count(*) FROM alerts WHERE organization_id = $1 AND severity = 'HIGH'",
            &[&ORG],
        )
        .await;
    let high_row = section(&output, "by_severity")
        .iter()
        .find(|row| row["severity"] == "HIGH")
        .map(|row| row["alerts"].as_i64().unwrap())
        .unwrap_or(0);
    assert_eq!(high_row, high);
}

#[actix_web::test]
async fn csv_and_html_outputs_carry_the_same_figures() {
    let app = spawn_app().await;
    let key = app.create_key(ORG, "org:admin").await;
    seed(&app, &key).await;

    let report = adhoc(&app, &key, "csv", "access_summary", "csv", json!({})).await;
    let run = run_now(&app, &key, &report).await;
    let (status, body, sha) = download(&app, &key, &report, run["id"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(sha.unwrap(), hex::encode(Sha256::digest(body.as_bytes())));
    let records: Vec<csv::StringRecord> = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .from_reader(body.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    let login = records
        .iter()
        .find(|r| &r[0] == "by_action" && &r[1] == "auth.login")
        .expect("an auth.login row");
    assert_eq!(
        (&login[2], &login[3], &login[4]),
        ("3", "1", "2"),
        "events, success, failure"
    );
    let events = all_events(&app).await.to_string();
    assert!(records
        .iter()
        .any(|r| &r[0] == "summary" && &r[1] == "events" && r[2] == *events));
    assert!(records
        .iter()
        .any(|r| &r[0] == "integrity" && &r[1] == "valid" && &r[2] == "true"));

    let report = adhoc(&app, &key, "html", "phi_access", "html", json!({})).await;
    let run = run_now(&app, &key, &report).await;
    let (status, body, _) = download(&app, &key, &report, run["id"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    assert_eq!(body.matches("<td>patient.record.").count(), 3, "{body}");
    assert!(body.contains("<p class=\"count\">3 rows</p>"));
}

#[actix_web::test]
async fn a_run_is_delivered_to_its_destinations() {
    let app = spawn_app().await;
    let key = app.create_key(ORG, "org:admin").await;
    seed(&app, &key).await;
    let receiver = common::receiver::Receiver::start(&[], 0);
    let destination = app
        .create_destination(&key, webhook("compliance", &receiver.url))
        .await;
    let report = create_report(
        &app,
        &key,
        json!({"name": "weekly access", "report_type": "access_summary", "format": "csv",
               "criteria": {"time_range": around_now()},
               "schedule": {"cron": "0 6 * * 1", "timezone": "Europe/Paris"},
               "destination_ids": [destination]}),
    )
    .await;
    let report_id = report["id"].as_str().unwrap();
    let run = run_now(&app, &key, report_id).await;
    let received = receiver.wait_for(1, Duration::from_secs(20)).await;
    let payload: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(payload["type"], "report.execution");
    assert_eq!(payload["execution"]["id"], run["id"]);
    let content = payload["file"]["content"].as_str().unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(content.as_bytes())),
        run["output_sha256"].as_str().unwrap()
    );
    assert_eq!(payload["file"]["content_type"], "text/csv; charset=utf-8");
    assert_eq!(payload["integrity"]["valid"], true);

    // The run shows its delivery and how it went.
    let delivered = wait_until(
        Duration::from_secs(10),
        "the run to show its delivery",
        || async {
            let current = execution(&app, &key, report_id, run["id"].as_str().unwrap()).await;
            let attempt = current["delivery_attempts"][0].clone();
            (attempt["status"] == "delivered").then_some(attempt)
        },
    )
    .await;
    assert_eq!(delivered["destination_id"], destination);
    assert_eq!(receiver.received().len(), 1);
}

#[actix_web::test]
async fn a_schedule_missed_while_every_worker_was_down_runs_once() {
    // The first worker does not run reports: as if none were running.
    let first = spawn_app_with(|config| config.reports.enabled = false).await;
    let key = first.create_key(ORG, "org:admin").await;
    let report = create_report(
        &first,
        &key,
        json!({"name": "hourly", "report_type": "access_summary",
               "schedule": {"cron": "0 * * * *", "timezone": "Asia/Kolkata"}}),
    )
    .await;
    let id: uuid::Uuid = report["id"].as_str().unwrap().parse().unwrap();
    let next_run: DateTime<Utc> = report["next_run"].as_str().unwrap().parse().unwrap();
    let database = first.database().await;
    // Five slots missed: the next run was due five hours ago.
    database
        .execute(
            "UPDATE scheduled_reports SET next_run = $2 WHERE id = $1",
            &[&id, &(next_run - TimeDelta::hours(5))],
        )
        .await
        .unwrap();

    let _second = spawn_beside(&first, |config| {
        config.reports.poll_interval = Duration::from_millis(100);
    })
    .await;
    let run = wait_until(Duration::from_secs(30), "the catch-up run", || async {
        let rows = database
            .query("SELECT status, scheduled_time, export_result FROM report_executions WHERE report_config_id = $1", &[&id])
            .await
            .unwrap();
        rows.first()
            .filter(|row| row.get::<_, String>("status") == "completed")
            .map(|row| (row.get::<_, DateTime<Utc>>("scheduled_time"), row.get::<_, Value>("export_result")))
    })
    .await;
    let (slot, result) = run;
    assert!(result["missed_slots"].as_i64().unwrap() >= 4, "{result}");
    let row = database
        .query_one(
            "SELECT next_run FROM scheduled_reports WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let new_next: DateTime<Utc> = row.get(0);
    assert!(new_next > Utc::now() && new_next > slot);
    assert_eq!(
        new_next - slot,
        TimeDelta::hours(1),
        "the run stood for the latest missed slot"
    );
    let runs: i64 = database
        .query_one(
            "SELECT count(*) FROM report_executions WHERE report_config_id = $1 AND scheduled_time < $2",
            &[&id, &new_next],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 1, "one run for all the missed slots");
}

#[actix_web::test]
async fn two_workers_never_run_the_same_schedule_twice() {
    let fast = |config: &mut audit_worker::config::Config| {
        config.reports.poll_interval = Duration::from_millis(20);
        config.reports.concurrency = 4;
    };
    let first = spawn_app_with(fast).await;
    let second = spawn_beside(&first, fast).await;
    let key = first.create_key(ORG, "org:admin").await;
    seed(&first, &key).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let report = adhoc(
            &first,
            &key,
            &format!("r{i}"),
            "access_summary",
            "json",
            json!({}),
        )
        .await;
        ids.push(report.parse::<uuid::Uuid>().unwrap());
    }
    let database = first.database().await;
    for round in 1..=3i64 {
        // Every schedule due at once, for both workers to see.
        database
            .execute(
                "UPDATE scheduled_reports SET next_run = now() - interval '1 second' WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .unwrap();
        wait_until(
            Duration::from_secs(60),
            "every run of the round",
            || async {
                let done: i64 = database
                    .query_one(
                        "SELECT count(*) FROM report_executions WHERE status = 'completed'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                (done == 12 * round).then_some(())
            },
        )
        .await;
    }
    let rows = database
        .query(
            "SELECT report_config_id, count(*), max(attempts), count(DISTINCT scheduled_time) \
             FROM report_executions GROUP BY report_config_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 12);
    for row in rows {
        assert_eq!(row.get::<_, i64>(1), 3, "one run per round");
        assert_eq!(row.get::<_, i32>(2), 1, "each run attempted once");
        assert_eq!(row.get::<_, i64>(3), 3);
    }
    drop(second);
}

#[actix_web::test]
async fn a_run_whose_worker_died_is_taken_over() {
    let app =
        spawn_app_with(|config| config.reports.poll_interval = Duration::from_millis(50)).await;
    let key = app.create_key(ORG, "org:admin").await;
    seed(&app, &key).await;
    let report = adhoc(&app, &key, "orphan", "access_summary", "json", json!({})).await;
    let report_id: uuid::Uuid = report.parse().unwrap();
    let database = app.database().await;
    let row = database
        .query_one(
            "INSERT INTO report_executions (report_config_id, organization_id, scheduled_time, trigger, status, \
               lease_until, claimed_by, attempts) \
             VALUES ($1, $2, now(), 'manual', 'running', now() - interval '1 second', 'worker-dead', 1) RETURNING id",
            &[&report_id, &ORG],
        )
        .await
        .unwrap();
    let id: uuid::Uuid = row.get(0);
    let run = wait_until(
        Duration::from_secs(30),
        "the orphaned run to complete",
        || async {
            let run = execution(&app, &key, &report, &id.to_string()).await;
            (run["status"] == "completed").then_some(run)
        },
    )
    .await;
    assert_eq!(run["attempts"], 2);
    assert_eq!(run["records_processed"], all_events(&app).await);
}

/// A template for monthly PHI reports (HTML, over the previous month) and a
/// report "phi monthly" made from it, run at 07:00 New York time on the 1st;
/// returns both as created.
async fn monthly_phi_from_a_template(app: &TestApp, key: &str) -> (Value, Value) {
    let (status, template) = app
        .call(Method::POST, "/v1/report-templates", Some(key),
              Some(json!({"name": "monthly phi", "report_type": "phi_access", "default_format": "html",
                          "default_criteria": {"time_range": {"previous": "month"}}, "tags": ["hipaa"]})))
        .await;
    assert_eq!(status, 201, "{template}");
    let report = create_report(
        app,
        key,
        json!({"name": "phi monthly", "template_id": template["id"],
               "schedule": {"cron": "0 7 1 * *", "timezone": "America/New_York"}}),
    )
    .await;
    (template, report)
}

/// A template gives its type, format and criteria to the reports made from
/// it; the schedule's next run is in the schedule's time zone.
#[actix_web::test]
async fn a_template_gives_its_defaults_to_the_reports_made_from_it() {
    let app = spawn_app().await;
    let key = app.create_key(ORG, "org:admin").await;
    let (_, report) = monthly_phi_from_a_template(&app, &key).await;
    assert_eq!(
        (report["report_type"].as_str(), report["format"].as_str()),
        (Some("phi_access"), Some("html"))
    );
    assert_eq!(
        report["criteria"],
        json!({"time_range": {"previous": "month"}})
    );
    let next_run: DateTime<Utc> = report["next_run"].as_str().unwrap().parse().unwrap();
    assert!(next_run > Utc::now());
    let local = next_run.with_timezone(&chrono_tz::America::New_York);
    assert_eq!(local.format("%d %H:%M").to_string(), "01 07:00");
}

/// Each malformed part of a report is refused with a 400 naming it, and a
/// second report of a name already taken is a 409.
#[actix_web::test]
async fn an_invalid_report_is_refused_naming_its_field() {
    let app = spawn_app().await;
    let key = app.create_key(ORG, "org:admin").await;
    monthly_phi_from_a_template(&app, &key).await;
    let bad = [
        (
            json!({"name": "x", "report_type": "access_summary", "schedule": {"cron": "every day", "timezone": "UTC"}}),
            "schedule.cron",
        ),
        (
            json!({"name": "x", "report_type": "access_summary", "schedule": {"cron": "0 6 * * *", "timezone": "Moon/Base"}}),
            "schedule.timezone",
        ),
        (
            json!({"name": "x", "report_type": "access_summary", "format": "pdf", "schedule": {"cron": "0 6 * * *"}}),
            "format",
        ),
        (
            json!({"name": "x", "report_type": "weekly", "schedule": {"cron": "0 6 * * *"}}),
            "report_type",
        ),
        (
            json!({"name": "x", "report_type": "access_summary", "schedule": {"cron": "0 6 * * *"},
                "criteria": {"time_range": {"last": "forever"}}}),
            "criteria.time_range.last",
        ),
        (
            json!({"name": "x", "report_type": "integrity", "schedule": {"cron": "0 6 * * *"},
                "criteria": {"principal_id": "alice"}}),
            "criteria",
        ),
        (
            json!({"name": "x", "report_type": "access_summary", "schedule": {"cron": "0 6 * * *"},
                "destination_ids": [424242]}),
            "destination_ids[0]",
        ),
        (
            json!({"name": "x", "report_type": "access_summary"}),
            "schedule",
        ),
        (
            json!({"report_type": "access_summary", "schedule": {"cron": "0 6 * * *"}}),
            "name",
        ),
    ];
    for (body, field) in bad {
        let (status, error) = app
            .call(Method::POST, "/v1/reports", Some(&key), Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body} -> {error}");
        assert!(
            error_fields(&error).iter().any(|named| named == field),
            "{body}: expected {field} in {error}"
        );
    }
    let (status, _) = app
        .call(Method::POST, "/v1/reports", Some(&key),
              Some(json!({"name": "phi monthly", "report_type": "access_summary", "schedule": {"cron": "0 6 * * *"}})))
        .await;
    assert_eq!(status, 409);
}

/// PATCH: a new schedule moves the next run into its time zone; disabling
/// the report clears it.
#[actix_web::test]
async fn a_new_schedule_moves_the_next_run_and_disabling_clears_it() {
    let app = spawn_app().await;
    let key = app.create_key(ORG, "org:admin").await;
    let (_, report) = monthly_phi_from_a_template(&app, &key).await;
    let id = report["id"].as_str().unwrap();
    let (status, patched) = app
        .call(
            Method::PATCH,
            &format!("/v1/reports/{id}"),
            Some(&key),
            Some(json!({"schedule": {"cron": "30 2 * * *", "timezone": "Europe/Paris"}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let local = patched["next_run"]
        .as_str()
        .unwrap()
        .parse::<DateTime<Utc>>()
        .unwrap()
        .with_timezone(&chrono_tz::Europe::Paris);
    assert!(
        local.format("%H:%M").to_string() == "02:30"
            || local.format("%H:%M").to_string() == "03:00"
    );
    let (_, disabled) = app
        .call(
            Method::PATCH,
            &format!("/v1/reports/{id}"),
            Some(&key),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(disabled["next_run"], Value::Null);
}

/// Another organization finds none of the reports, templates, runs or
/// outputs: each is a 404, and its listing is empty.
#[actix_web::test]
async fn another_organization_sees_nothing_of_the_reports() {
    let app = spawn_app().await;
    let key = app.create_key(ORG, "org:admin").await;
    let other = app.create_key("org-other", "org:admin").await;
    let (template, report) = monthly_phi_from_a_template(&app, &key).await;
    let id = report["id"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/v1/reports/{id}")),
        (Method::POST, format!("/v1/reports/{id}/run")),
        (Method::GET, format!("/v1/reports/{id}/executions")),
        (
            Method::GET,
            format!("/v1/report-templates/{}", template["id"].as_str().unwrap()),
        ),
    ] {
        let (status, _) = app.call(method, &path, Some(&other), None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (_, listed) = app
        .call(Method::GET, "/v1/reports", Some(&other), None)
        .await;
    assert_eq!(listed["reports"], json!([]));
    let run = queue_run(&app, &key, id).await;
    let (status, _, _) = download(&app, &other, id, run["id"].as_str().unwrap()).await;
    assert_eq!(status, 404);
}

/// A member reads a report but can neither run it nor download a run's output.
#[actix_web::test]
async fn a_member_reads_reports_but_cannot_run_or_download_them() {
    let app = spawn_app().await;
    let key = app.create_key(ORG, "org:admin").await;
    let member = app.create_key(ORG, "org:member").await;
    let (_, report) = monthly_phi_from_a_template(&app, &key).await;
    let id = report["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/v1/reports/{id}"),
            Some(&member),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/reports/{id}/run"),
            Some(&member),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let run = queue_run(&app, &key, id).await;
    let (status, _, _) = download(&app, &member, id, run["id"].as_str().unwrap()).await;
    assert_eq!(status, 403, "downloading needs export");
}

/// Deleting a template keeps the reports made from it (no longer linked);
/// deleting a report deletes its runs.
#[actix_web::test]
async fn deleting_a_template_keeps_its_reports_and_deleting_a_report_its_runs() {
    let app = spawn_app().await;
    let key = app.create_key(ORG, "org:admin").await;
    let (template, report) = monthly_phi_from_a_template(&app, &key).await;
    let id = report["id"].as_str().unwrap();
    queue_run(&app, &key, id).await;
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/report-templates/{}", template["id"].as_str().unwrap()),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, kept) = app
        .call(Method::GET, &format!("/v1/reports/{id}"), Some(&key), None)
        .await;
    assert_eq!(kept["template_id"], Value::Null);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/reports/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let runs = app
        .count("SELECT count(*) FROM report_executions", &[])
        .await;
    assert_eq!(runs, 0);
}
