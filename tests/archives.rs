//! Archival of aged events under their retention policies (with the clock
//! moved forward), archive fetch, legal holds, verification across live and
//! archived events, restore round trip, and a corrupted archive.

mod common;

use std::sync::Arc;
use std::time::Duration;

use audit_worker::clock::ShiftedClock;
use audit_worker::db;
use audit_worker::integrity::keys::IntegrityKeys;
use audit_worker::maintenance::archive;
use chrono::Utc;
use common::{event, spawn_app, spawn_app_with_clock, wait_until, Event, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// `count` reads of `principal` under retention policy `policy`.
fn events(principal: &str, policy: &str, count: usize) -> Vec<Event> {
    (0..count)
        .map(|n| {
            event(principal, "patient.record.read")
                .target("Patient", format!("p-{n}"))
                .classification("INTERNAL")
                .policy(policy)
                .details(json!({"n": n, "note": "ä \u{1F600}"}))
        })
        .collect()
}

/// `GET /v1/archives`; asserts 200 and returns the organization's archives.
async fn archives(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, body) = app.call(Method::GET, "/v1/archives", Some(key), None).await;
    assert_eq!(status, 200, "{body}");
    body["archives"].as_array().unwrap().clone()
}

/// Every stored column of the organization's events, as JSON text, by id.
async fn snapshot(app: &TestApp, org: &str) -> Vec<String> {
    app.database()
        .await
        .query(
            "SELECT (to_jsonb(e) - 'archived_at')::text FROM audit_log e WHERE organization_id = $1 \
               AND action NOT LIKE 'audit.%' AND action NOT LIKE 'admin.%' ORDER BY id",
            &[&org],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Forty days on, events under policy `minimal` (archive after 30 days) go to
/// archives while those under `standard` (after 365) and those under a legal
/// hold stay live; the archive is fetched as JSON Lines, counted, and
/// the chain — links holding both archived and live events — still verifies.
#[actix_web::test]
async fn aged_events_move_to_archives_and_verification_spans_both() {
    let clock = Arc::new(ShiftedClock::default());
    let app = spawn_app_with_clock(clock.clone(), |config| {
        config.partitions.maintenance_interval = Duration::from_millis(200);
        config.partitions.archive_batch_events = 7;
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-b", "org:admin").await;
    let mixed = [
        events("nurse", "minimal", 10),
        events("nurse", "standard", 5),
        events("held-user", "minimal", 3),
    ]
    .concat();
    app.ingest(&key, mixed).await;
    app.ingest(&other, events("someone", "minimal", 2)).await;
    app.create_legal_hold(
        &key,
        json!({"reason": "litigation 2026-17", "principal_id": "held-user"}),
    )
    .await;
    assert!(archives(&app, &key).await.is_empty());

    clock.advance(chrono::Duration::days(40));
    let listed = wait_until(Duration::from_secs(20), "two archives of org-a", || async {
        let listed = archives(&app, &key).await;
        (listed.len() == 2).then_some(listed)
    })
    .await;
    // Ten `minimal` events in batches of at most seven.
    let counts: Vec<i64> = listed
        .iter()
        .map(|a| a["event_count"].as_i64().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<i64>(), 10, "{listed:?}");
    assert_eq!(
        app.count_events("org-a").await,
        9,
        "`standard` and held events stay, beside the record of the archival"
    );
    for archive in &listed {
        assert_eq!(archive["metadata"]["compression"], "zstd");
        assert_eq!(
            archive["metadata"]["sha256_compressed"]
                .as_str()
                .unwrap()
                .len(),
            64
        );
        assert!(!archive["metadata"]["chain_links"]
            .as_array()
            .unwrap()
            .is_empty());
    }

    let id = listed[0]["id"].as_str().unwrap();
    let response = app
        .client
        .get(format!("{}/v1/archives/{id}", app.address))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len() as i64,
        listed[0]["event_count"].as_i64().unwrap()
    );
    assert!(lines
        .iter()
        .all(|e| e["retention_policy"] == "minimal" && e["archived_at"].is_string()));
    let refetched = archives(&app, &key).await;
    let again = refetched.iter().find(|a| a["id"] == id).unwrap();
    assert_eq!(again["retrieved_count"], 1);
    assert!(again["last_retrieved_at"].is_string());

    // Another organization sees none of it.
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/v1/archives/{id}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, 404);
    // org-b's own aged events are archived too, by the same rounds: perhaps
    // after org-a's, so waited for.
    wait_until(Duration::from_secs(20), "org-b's archive", || async {
        (archives(&app, &other).await.len() == 1).then_some(())
    })
    .await;

    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(
        report["checked"], 21,
        "live and archived events are all re-hashed, with the records of the key, the hold and the archival: {report}"
    );

    // Tampering inside an archive is reported.
    app.database()
        .await
        .execute(
            "UPDATE archive_storage SET data = overlay(data placing '\\x00'::bytea from 20 for 1) WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    let (status, body) = app
        .call(Method::GET, &format!("/v1/archives/{id}"), Some(&key), None)
        .await;
    assert_eq!(status, 409, "{body}");
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], false);
    let kinds: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"corrupted_archive"), "{report}");
    assert!(kinds.contains(&"missing"), "{report}");
}

/// An archive put back restores byte-identical events, and verification passes.
#[actix_web::test]
async fn an_archive_restores_identical_events() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    app.ingest(&key, events("dr-who", "standard", 12)).await;
    let before = snapshot(&app, "org-a").await;
    assert_eq!(before.len(), 12);

    let pool = db::pool(&app.config.database);
    let keys = IntegrityKeys::load(&app.config.integrity, &pool)
        .await
        .unwrap();
    let store = app.archive_store().await;
    let report = archive::run(
        &pool,
        &store,
        &keys,
        &app.config.partitions,
        Utc::now() + chrono::Duration::days(400),
        true,
    )
    .await
    .unwrap();
    // The twelve, and the record of issuing the key (kept as long).
    assert_eq!(
        (report.events, report.archives),
        (13, 0),
        "a dry run only counts"
    );
    let report = archive::run(
        &pool,
        &store,
        &keys,
        &app.config.partitions,
        Utc::now() + chrono::Duration::days(400),
        false,
    )
    .await
    .unwrap();
    // With the record of the archival itself: it is as old as "now" is here.
    assert_eq!((report.events, report.archives), (14, 1));
    assert!(report.compressed_bytes < report.uncompressed_bytes);
    assert!(snapshot(&app, "org-a").await.is_empty());
    assert_eq!(
        app.count(
            "SELECT count(*) FROM trail_operations WHERE kind = 'archival'",
            &[]
        )
        .await,
        1,
        "the archival is a recorded operation"
    );
    assert_eq!(app.verify(&key).await["valid"], true);

    let listed = audit_worker::admin::list_archives(&app.config)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let restored = audit_worker::admin::restore_archive(&app.config, listed[0].id)
        .await
        .unwrap();
    assert_eq!(restored, 14);
    assert_eq!(snapshot(&app, "org-a").await, before);
    assert!(archives(&app, &key).await.is_empty());
    let principal = app
        .database()
        .await
        .query_one(
            "SELECT principal_id FROM audit_log WHERE action = 'admin.archive.restore' \
               AND target_resource_id = $1",
            &[&listed[0].id.to_string()],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert!(principal.starts_with("cli:"), "{principal}");
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(
        report["checked"], 15,
        "14 events and the record of the restore"
    );
}

/// Past `delete_after_days`, live events and whole archives are deleted as
/// recorded operations: their chain leaves stand in for them, so the chain
/// still verifies; an audit event in the organization's chain and a signed
/// checkpoint record it; held events stay; and removing a kept leaf is still
/// caught.
#[actix_web::test]
async fn expired_events_and_archives_are_deleted_as_recorded_operations() {
    let clock = Arc::new(ShiftedClock::default());
    let app = spawn_app_with_clock(clock.clone(), |config| {
        config.partitions.maintenance_interval = Duration::from_millis(200);
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    app.create_retention_policy(
        &key,
        json!({"policy_name": "shortlived", "retention_days": 10, "delete_after_days": 10,
               "data_classification": "INTERNAL"}),
    )
    .await;
    let mixed = [
        events("nurse", "shortlived", 6),
        events("nurse", "minimal", 4),
        events("held-user", "shortlived", 2),
        events("nurse", "standard", 3),
    ]
    .concat();
    app.ingest(&key, mixed).await;
    app.create_legal_hold(
        &key,
        json!({"reason": "pending lawsuit", "principal_id": "held-user"}),
    )
    .await;

    // 100 days on: `minimal` (archived after 30, deleted after 90) and
    // `shortlived` (deleted after 10) are past; `standard` is not.
    clock.advance(chrono::Duration::days(100));
    let database = app.database().await;
    // The round's last step is the checkpoint signed after its record.
    let operations = wait_until(
        Duration::from_secs(20),
        "both deletions recorded and checkpointed",
        || async {
            let rows = database
                .query(
                    "SELECT kind, event_count FROM retention_operations WHERE organization_id = 'org-a' ORDER BY kind",
                    &[],
                )
                .await
                .unwrap();
            let found: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            let checkpoints: i64 = database
                .query_one(
                    "SELECT count(*) FROM integrity_checkpoints WHERE organization_id = 'org-a'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (found.len() == 2 && checkpoints >= 1).then_some(found)
        },
    )
    .await;
    assert_eq!(
        operations,
        [
            ("delete_archive".to_owned(), 4),
            ("delete_events".to_owned(), 6)
        ]
    );
    assert!(archives(&app, &key).await.is_empty());
    let remaining: Vec<(String, String)> = database
        .query(
            "SELECT principal_id, action FROM audit_log WHERE organization_id = 'org-a' \
               AND action NOT LIKE 'admin.%' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let held = remaining.iter().filter(|(p, _)| p == "held-user").count();
    let recorded = |action: &str| remaining.iter().filter(|(_, a)| a == action).count();
    // The archival's record, and the deletion's records: before (attempt) and after.
    assert_eq!(
        (
            remaining.len(),
            held,
            recorded("audit.archive.created"),
            recorded("audit.retention.deleted")
        ),
        (8, 2, 1, 2),
        "{remaining:?}"
    );

    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["deleted_by_retention"], 10, "{report}");
    // What remains, and the three admin.* records of the set-up.
    assert_eq!(report["checked"], 11, "{report}");

    database
        .execute(
            "DELETE FROM audit_pruned_leaf WHERE event_id = (SELECT min(event_id) FROM audit_pruned_leaf)",
            &[],
        )
        .await
        .unwrap();
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], false, "{report}");
}
