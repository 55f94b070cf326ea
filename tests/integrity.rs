//! Tamper evidence: verification passes on untouched data and catches each kind
//! of tampering made directly in SQL — a modified, deleted, inserted or
//! reordered event, a changed identifier, a truncated chain — over HTTP and
//! from the CLI; checkpoints are signed with the published key.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::{event, spawn_app, spawn_beside, wait_until, Event, TestApp};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use reqwest::Method;
use serde_json::{json, Value};

/// Ingests three requests of four events for `org` and returns the event ids.
async fn seed(app: &TestApp, key: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    for batch in 0..3 {
        let events: Vec<Event> = (0..4)
            .map(|i| {
                event(&format!("user-{batch}-{i}"), "record.read")
                    .set("target_resource_id", format!("p-{i}"))
                    .details(json!({"n": i}))
            })
            .collect();
        let receipts = app.ingest(key, events).await;
        ids.extend(receipts.iter().map(|r| r["id"].as_i64().unwrap()));
    }
    ids
}

fn kinds(report: &Value) -> Vec<(String, Option<i64>)> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["event_id"].as_i64(),
            )
        })
        .collect()
}

/// Sets up an organization with seeded events; returns its admin key and ids.
async fn organization(app: &TestApp, org: &str) -> (String, Vec<i64>) {
    let key = app.create_key(org, "org:admin").await;
    let ids = seed(app, &key).await;
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(
        report["checked"], 13,
        "the seeded events and the key's admin.api_key.create"
    );
    (key, ids)
}

#[actix_web::test]
async fn verification_catches_each_kind_of_tampering() {
    let app = spawn_app().await;
    let db = app.database_without_triggers().await;

    // Modified: any hashed field.
    let (key, ids) = organization(&app, "org-modified").await;
    db.execute(
        "UPDATE audit_log SET status = 'failure' WHERE id = $1",
        &[&ids[5]],
    )
    .await
    .unwrap();
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], false);
    assert_eq!(
        kinds(&report),
        [("modified".to_owned(), Some(ids[5]))],
        "{report}"
    );

    // Modified: an identifier (kept out of the hash, bound by its commitment).
    let (key, ids) = organization(&app, "org-identifier").await;
    db.execute(
        "UPDATE audit_log SET principal_id = 'someone-else' WHERE id = $1",
        &[&ids[2]],
    )
    .await
    .unwrap();
    let report = app.verify(&key).await;
    assert_eq!(
        kinds(&report),
        [("modified".to_owned(), Some(ids[2]))],
        "{report}"
    );
    assert!(report["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains("principal_id"));

    // Missing: a deleted event.
    let (key, ids) = organization(&app, "org-deleted").await;
    db.execute("DELETE FROM audit_log WHERE id = $1", &[&ids[6]])
        .await
        .unwrap();
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], false);
    assert!(
        kinds(&report).iter().any(|(kind, _)| kind == "missing"),
        "{report}"
    );

    // Inserted: a forged copy of an event joining an existing link.
    let (key, ids) = organization(&app, "org-inserted").await;
    let forged: i64 = db
        .query_one(
            "INSERT INTO audit_log (id, \"timestamp\", principal_id, organization_id, action, status, hash, \
               principal_commitment, chain_link, details, target_resource_id, target_resource_commitment) \
             SELECT nextval('audit_log_id_seq'), \"timestamp\", principal_id, organization_id, action, status, hash, \
               principal_commitment, chain_link, details, target_resource_id, target_resource_commitment \
             FROM audit_log WHERE id = $1 RETURNING id",
            &[&ids[1]],
        )
        .await
        .unwrap()
        .get(0);
    let report = app.verify(&key).await;
    assert!(
        kinds(&report).contains(&("inserted".to_owned(), Some(forged))),
        "{report}"
    );

    // Inserted: an event claiming a link that does not exist.
    let (key, ids) = organization(&app, "org-stray").await;
    let stray: i64 = db
        .query_one(
            "INSERT INTO audit_log (id, \"timestamp\", principal_id, organization_id, action, status, hash, \
               principal_commitment, chain_link) \
             SELECT nextval('audit_log_id_seq'), \"timestamp\", principal_id, organization_id, action, status, hash, \
               principal_commitment, 999999 FROM audit_log WHERE id = $1 RETURNING id",
            &[&ids[0]],
        )
        .await
        .unwrap()
        .get(0);
    let report = app.verify(&key).await;
    assert!(
        kinds(&report).contains(&("inserted".to_owned(), Some(stray))),
        "{report}"
    );

    // Reordered: two events of one link swap places (ids).
    let (key, ids) = organization(&app, "org-reordered").await;
    db.batch_execute(&format!(
        "UPDATE audit_log SET id = -1 WHERE id = {a}; UPDATE audit_log SET id = {a} WHERE id = {b}; \
         UPDATE audit_log SET id = {b} WHERE id = -1;",
        a = ids[4],
        b = ids[5]
    ))
    .await
    .unwrap();
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], false);
    assert_eq!(
        kinds(&report)
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["reordered"],
        "{report}"
    );

    // A broken link: the chain row itself edited.
    let (key, _) = organization(&app, "org-link").await;
    db.execute(
        "UPDATE audit_chain SET event_count = event_count + 1 WHERE organization_id = 'org-link' AND seq = 2",
        &[],
    )
    .await
    .unwrap();
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], false, "{report}");

    // Untouched organizations still verify.
    let (key, _) = organization(&app, "org-clean").await;
    assert_eq!(app.verify(&key).await["valid"], true);
}

/// Two workers append to one organization's chain at once, with single
/// events, groups of several organizations and batches large enough to be
/// copied: the chain stays whole and gap-free, and its head counts every link
/// and event.
#[actix_web::test]
async fn two_workers_appending_to_one_chain_at_once_keep_it_whole() {
    let first = spawn_app().await;
    let second = spawn_beside(&first, |_| {}).await;
    let key = first.create_key("org-a", "org:admin").await;
    let other = first.create_key("org-b", "org:admin").await;
    let batch = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|i| event(&format!("user-{i}"), "record.read"))
            .collect()
    };
    let mut calls = Vec::new();
    for i in 0..400 {
        let (app, key) = match i % 4 {
            0 | 1 => (&first, &key),
            2 => (&second, &key),
            _ => (&second, &other),
        };
        let events = if i % 20 == 0 { batch(100) } else { batch(1) };
        calls.push(app.try_ingest(key, events));
    }
    for (status, body) in futures_util::future::join_all(calls).await {
        assert_eq!(status, 201, "{body}");
    }

    for (org, key) in [("org-a", &key), ("org-b", &other)] {
        let report = first.verify(key).await;
        assert_eq!(report["valid"], true, "{org}: {report}");
        let events = first
            .count(
                "SELECT count(*) FROM audit_log WHERE organization_id = $1",
                &[&org],
            )
            .await;
        assert_eq!(report["checked"], events, "{org}: {report}");
        let head = first
            .database()
            .await
            .query_one(
                "SELECT h.seq, h.event_total, h.link, \
                   (SELECT count(*) FROM audit_chain c WHERE c.organization_id = h.organization_id), \
                   (SELECT link FROM audit_chain c WHERE c.organization_id = h.organization_id \
                      ORDER BY seq DESC LIMIT 1) \
                 FROM audit_chain_head h WHERE h.organization_id = $1",
                &[&org],
            )
            .await
            .unwrap();
        assert_eq!(
            head.get::<_, i64>(0),
            head.get::<_, i64>(3),
            "{org}: seq counts the links"
        );
        assert_eq!(
            head.get::<_, i64>(1),
            events,
            "{org}: the head counts every event"
        );
        assert_eq!(
            head.get::<_, String>(2),
            head.get::<_, String>(4),
            "{org}: the head is the last link"
        );
    }
}

/// A group of an organization whose head another transaction is moving writes
/// its events and waits only at the statement that appends its link, not
/// from its first statement on.
#[actix_web::test]
async fn a_group_waits_for_the_chain_head_only_to_append_its_link() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let mover = app.database().await;
    mover
        .batch_execute(
            "BEGIN; UPDATE audit_chain_head SET seq = seq + 1 WHERE organization_id = 'org-a'",
        )
        .await
        .unwrap();

    let ingest = app.try_ingest(&key, event("u", "record.read"));
    let watch = async {
        let observer = app.database().await;
        let waiting: String = wait_until(
            Duration::from_secs(10),
            "an ingest statement waiting for a lock",
            || async {
                observer
                    .query_opt(
                        "SELECT query FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock' \
                       AND query LIKE '%audit_chain_head%'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .map(|row| row.get(0))
            },
        )
        .await;
        assert!(
            waiting.starts_with("WITH new AS"),
            "the group waits at the link's append, not at: {waiting}"
        );
        mover.batch_execute("ROLLBACK").await.unwrap();
    };
    let ((status, body), ()) = futures_util::join!(ingest, watch);
    assert_eq!(status, 201, "{body}");
    assert_eq!(app.verify(&key).await["valid"], true);
}

/// Truncating the chain's tail (events, links and head alike) passes every
/// in-database check but not a checkpoint kept outside; the checkpoint's
/// signature verifies with the published public key.
#[actix_web::test]
async fn a_checkpoint_reveals_a_truncated_chain() {
    let app = spawn_app().await;
    let (key, _) = organization(&app, "org-a").await;
    let (status, created) = app
        .call(Method::POST, "/v1/integrity/checkpoints", Some(&key), None)
        .await;
    assert_eq!(status, 201, "{created}");
    let (_, listed) = app
        .call(Method::GET, "/v1/integrity/checkpoints", Some(&key), None)
        .await;
    let stored = listed["checkpoints"][0].clone();
    assert_eq!(
        stored["seq"], 4,
        "the key's record, then three links of seeded events"
    );
    let checkpoint = stored["checkpoint"].clone();

    let (status, public) = app
        .call(Method::GET, "/v1/integrity/public-key", None, None)
        .await;
    assert_eq!(status, 200);
    let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(public["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let signature = base64::engine::general_purpose::STANDARD
        .decode(checkpoint["signature"].as_str().unwrap())
        .unwrap();
    VerifyingKey::from_bytes(&bytes)
        .unwrap()
        .verify(
            checkpoint["payload"].as_str().unwrap().as_bytes(),
            &Signature::from_slice(&signature).unwrap(),
        )
        .expect("the checkpoint verifies with the published key");

    let report = app
        .verify_with(&key, json!({"checkpoint": checkpoint}))
        .await;
    assert_eq!(report["valid"], true, "{report}");

    // Remove the last link as a careful attacker would: events, link and head.
    app.database_without_triggers()
        .await
        .batch_execute(
            "DELETE FROM audit_log WHERE organization_id = 'org-a' AND chain_link =
               (SELECT link_id FROM audit_chain WHERE organization_id = 'org-a' AND seq = 4);
             DELETE FROM audit_chain WHERE organization_id = 'org-a' AND seq = 4;
             UPDATE audit_chain_head SET seq = 3, link = (SELECT link FROM audit_chain
               WHERE organization_id = 'org-a' AND seq = 3) WHERE organization_id = 'org-a';",
        )
        .await
        .unwrap();
    assert_eq!(
        app.verify(&key).await["valid"],
        true,
        "invisible without a checkpoint"
    );
    let report = app
        .verify_with(&key, json!({"checkpoint": checkpoint}))
        .await;
    assert_eq!(kinds(&report), [("truncated".to_owned(), None)], "{report}");

    // A forged checkpoint is refused.
    let mut forged = checkpoint.clone();
    forged["payload"] = json!(checkpoint["payload"]
        .as_str()
        .unwrap()
        .replace("\"seq\":4", "\"seq\":9"));
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/integrity/verify",
            Some(&key),
            Some(json!({"checkpoint": forged})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

/// A time range verifies only the links it touches; each run is recorded.
#[actix_web::test]
async fn verification_of_a_range_is_recorded() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    for timestamp in ["2025-03-10T00:00:00Z", "2025-05-10T00:00:00Z"] {
        app.ingest(&key, event("u", "a").timestamp(timestamp)).await;
    }
    let report = app
        .verify_with(
            &key,
            json!({"from": "2025-04-01T00:00:00Z", "to": "2025-06-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(report["checked"], 1);
    assert_eq!(
        report["links_checked"], 3,
        "links are always checked whole (the key's record is one)"
    );
    let runs = app.count("SELECT count(*) FROM audit_integrity_log WHERE organization_id = 'org-a' AND verification_status = 'success'", &[]).await;
    assert_eq!(runs, 1);
    let auditor = app.create_key("org-a", "auditor").await;
    assert_eq!(app.verify(&auditor).await["valid"], true);
    let writer = app.create_key("org-a", "ingest").await;
    assert_eq!(
        app.call(Method::POST, "/v1/integrity/verify", Some(&writer), None)
            .await
            .0,
        403
    );
}

/// `audit-worker verify` prints the report and exits 0 when valid, 1 when not.
#[actix_web::test]
async fn the_cli_verifies_and_exits_non_zero_on_tampering() {
    let app = spawn_app().await;
    let (_, ids) = organization(&app, "org-cli").await;
    let url = app.config.database.url.to_string();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_audit-worker"))
            .args(["verify", "--org", "org-cli"])
            .env("AUDIT_WORKER__DATABASE__URL", &url)
            .output()
            .unwrap()
    };
    let clean = run();
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    let report: Value = serde_json::from_slice(&clean.stdout).unwrap();
    assert_eq!(report["checked"], 13);

    app.database_without_triggers()
        .await
        .execute(
            "UPDATE audit_log SET action = 'x' WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap();
    let tampered = run();
    assert_eq!(tampered.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&tampered.stdout).unwrap();
    assert_eq!(report["problems"][0]["kind"], "modified");
}
