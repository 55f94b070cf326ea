//! Archives in object storage: Parquet files a real engine (DuckDB) reads,
//! beside their manifests and signed digests, in a real S3 server (moto) or a
//! directory; restore, verification across live and archived events,
//! tampering behind the worker's back, an unreachable bucket, and GDPR
//! requests reaching archived events in every store.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use audit_worker::config::ArchiveStoreKind;
use audit_worker::db;
use audit_worker::integrity::keys::IntegrityKeys;
use audit_worker::maintenance::archive::{self, ArchiveReport};
use audit_worker::maintenance::deletion;
use chrono::Utc;
use common::servers::{self, Server};
use common::{event, spawn_app_with, Event, TestApp};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const BUCKET: &str = "audit-archive-test";

/// A worker archiving to `bucket` on the S3 server, `batch` events per archive.
async fn s3_app(server: &Server, bucket: &str, batch: u32) -> TestApp {
    // The standard AWS chain finds these (moto takes any credentials).
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test-secret");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let endpoint = server.endpoint();
    spawn_app_with(|config| {
        config.archive.store = ArchiveStoreKind::S3;
        config.archive.bucket = bucket.to_owned();
        config.archive.endpoint = endpoint;
        config.archive.force_path_style = true;
        config.partitions.archive_batch_events = batch;
    })
    .await
}

/// An S3 server holding the test bucket, a worker archiving to it (`batch`
/// events per archive) and an admin key of `org-a`.
async fn s3_worker(batch: u32) -> (Server, TestApp, String) {
    let server = servers::s3();
    create_bucket(&server, BUCKET).await;
    let app = s3_app(&server, BUCKET, batch).await;
    let key = app.create_key("org-a", "org:admin").await;
    (server, app, key)
}

async fn create_bucket(server: &Server, bucket: &str) {
    server
        .s3_client()
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("moto creates the bucket");
}

/// `count` reads by `principal` under retention policy `policy`.
fn reads(principal: &str, policy: &str, count: usize) -> Vec<Event> {
    (0..count)
        .map(|n| {
            let read = event(principal, "patient.record.read").policy(policy);
            match n % 3 {
                0 => read.details(json!({"n": n, "note": "ä \u{1F600}", "big": 1.5e300})),
                1 => read.target("Patient", format!("p-{n}")),
                _ => read,
            }
        })
        .collect()
}

/// Archives what is due forty days from now (`minimal` events: after 30).
async fn archive_due(app: &TestApp) -> ArchiveReport {
    archive_at(app, 40).await
}

/// Archives what is due `days` from now.
async fn archive_at(app: &TestApp, days: i64) -> ArchiveReport {
    let pool = db::pool(&app.config.database);
    let keys = IntegrityKeys::load(&app.config.integrity, &pool)
        .await
        .unwrap();
    let store = app.archive_store().await;
    archive::run(
        &pool,
        &store,
        &keys,
        &app.config.partitions,
        Utc::now() + chrono::Duration::days(days),
        false,
    )
    .await
    .unwrap()
}

async fn archives(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, body) = app.call(Method::GET, "/v1/archives", Some(key), None).await;
    assert_eq!(status, 200, "{body}");
    body["archives"].as_array().unwrap().clone()
}

/// The events of an archive, as `GET /v1/archives/{id}` gives them.
async fn archived_events(app: &TestApp, key: &str, id: &str) -> Vec<Value> {
    let response = app
        .client
        .get(format!("{}/v1/archives/{id}", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Every object of the bucket, by key.
async fn objects(server: &Server, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    let client = server.s3_client();
    let listed = client
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let mut found = BTreeMap::new();
    for object in listed.contents() {
        let key = object.key().unwrap().to_owned();
        let body = client
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec();
        found.insert(key, body);
    }
    found
}

/// The bucket copied into a fresh directory (as `aws s3 sync` would), for
/// DuckDB to read with a glob.
async fn mirror(server: &Server, bucket: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("audit-mirror-{}", uuid::Uuid::new_v4()));
    for (key, body) in objects(server, bucket).await {
        let path = dir.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    dir
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn kinds(report: &Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Events archived to S3 are Parquet files under
/// `<prefix>/<org>/<yyyy>/<mm>/`, each beside a manifest whose SHA-256 is
/// the file's, with one signed digest per archive; DuckDB reads them with a
/// glob, typed, and finds exactly the events the API returns; verification
/// spans live and archived events; a restore brings the events back from S3
/// byte for byte and removes the archive's files, with a digest saying so.
#[actix_web::test]
async fn archives_in_s3_are_parquet_that_duckdb_reads_and_restore_round_trips() {
    let (server, app, key) = s3_worker(10).await;
    app.ingest(&key, reads("nurse", "minimal", 25)).await;
    app.ingest(&key, reads("nurse", "standard", 3)).await;
    let before = live_snapshot(&app).await;

    let report = archive_due(&app).await;
    assert_eq!(
        (report.archives, report.events, report.failed_batches),
        (3, 25, 0)
    );
    let listed = archives(&app, &key).await;
    assert_eq!(listed.len(), 3);
    let stored = objects(&server, BUCKET).await;
    for archive in &listed {
        let id = archive["id"].as_str().unwrap();
        assert_eq!(archive["store"], "s3");
        let object_key = archive["object_key"].as_str().unwrap();
        let month = Utc::now().format("%Y/%m").to_string();
        assert_eq!(
            object_key,
            format!("audit-archive/org-a/{month}/{id}.parquet")
        );
        let file = &stored[object_key];
        assert_eq!(&file[..4], b"PAR1");
        let manifest: Value =
            serde_json::from_slice(&stored[&object_key.replace(".parquet", ".manifest.json")])
                .unwrap();
        assert_eq!(manifest["parquet_sha256"], sha256(file));
        assert_eq!(manifest["event_count"], archive["event_count"]);
        assert_eq!(manifest["archive_id"], id);
    }
    let digests: Vec<&String> = stored
        .keys()
        .filter(|k| k.starts_with("audit-archive/digests/org-a/"))
        .collect();
    assert_eq!(digests.len(), 3, "{digests:?}");
    let first: Value =
        serde_json::from_slice(&stored["audit-archive/digests/org-a/1.json"]).unwrap();
    let second: Value =
        serde_json::from_slice(&stored["audit-archive/digests/org-a/2.json"]).unwrap();
    assert_eq!(first["change"], "written");
    assert!(first["previous_digest_sha256"].is_null());
    assert_eq!(
        second["previous_digest_sha256"],
        sha256(&stored["audit-archive/digests/org-a/1.json"])
    );

    // What the API returns, and what DuckDB reads from the files.
    let mut from_api = Vec::new();
    for archive in &listed {
        from_api.extend(archived_events(&app, &key, archive["id"].as_str().unwrap()).await);
    }
    from_api.sort_by_key(|e| e["id"].as_i64().unwrap());
    let dir = mirror(&server, BUCKET).await;
    let glob = format!("{}/audit-archive/org-a/**/*.parquet", dir.display());
    let rows = servers::duckdb(&format!(
        "SELECT id, epoch_us(\"timestamp\"), principal_id, target_resource_id, details, hash, chain_link \
         FROM read_parquet('{glob}') ORDER BY id"
    ));
    assert_eq!(rows.len(), 25);
    for (row, event) in rows.iter().zip(&from_api) {
        let micros = chrono::DateTime::parse_from_rfc3339(event["timestamp"].as_str().unwrap())
            .unwrap()
            .timestamp_micros();
        let details: Value = row[4]
            .as_str()
            .map_or(Value::Null, |text| serde_json::from_str(text).unwrap());
        assert_eq!(
            (
                &row[0],
                row[1].as_i64(),
                &row[2],
                &row[3],
                details,
                &row[5],
                &row[6]
            ),
            (
                &event["id"],
                Some(micros),
                &event["principal_id"],
                &event["target_resource_id"],
                event["details"].clone(),
                &event["hash"],
                &event["chain_link"]
            )
        );
    }
    let types: BTreeMap<String, String> = servers::duckdb(&format!(
        "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet('{glob}'))"
    ))
    .into_iter()
    .map(|row| {
        (
            row[0].as_str().unwrap().into(),
            row[1].as_str().unwrap().into(),
        )
    })
    .collect();
    assert_eq!(types["id"], "BIGINT");
    assert_eq!(types["timestamp"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(types["processing_latency"], "INTEGER");
    assert_eq!(types["details"], "VARCHAR");
    std::fs::remove_dir_all(&dir).unwrap();

    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");

    // Restore one archive from S3.
    let id = listed[0]["id"].as_str().unwrap();
    let object_key = listed[0]["object_key"].as_str().unwrap().to_owned();
    let restored = audit_worker::admin::restore_archive(&app.config, id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(restored as i64, listed[0]["event_count"].as_i64().unwrap());
    let stored = objects(&server, BUCKET).await;
    assert!(!stored.contains_key(&object_key), "its files are removed");
    let deleted: Value =
        serde_json::from_slice(&stored["audit-archive/digests/org-a/4.json"]).unwrap();
    assert_eq!(
        (deleted["change"].as_str(), deleted["archive_id"].as_str()),
        (Some("deleted"), Some(id))
    );
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
    assert!(reference_accepts(&app, &server).await);
    // Every archive back: the live events are as they were.
    for archive in &listed[1..] {
        audit_worker::admin::restore_archive(
            &app.config,
            archive["id"].as_str().unwrap().parse().unwrap(),
        )
        .await
        .unwrap();
    }
    assert_eq!(live_snapshot(&app).await, before);
}

/// Every stored column of the organization's reads, as JSON text, by id.
async fn live_snapshot(app: &TestApp) -> Vec<String> {
    app.database()
        .await
        .query(
            "SELECT (to_jsonb(e) - 'archived_at')::text FROM audit_log e WHERE organization_id = 'org-a' \
               AND action = 'patient.record.read' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Runs the independent `reference.py verify-archive-digests` on a copy of
/// the bucket; whether it says valid.
async fn reference_accepts(app: &TestApp, server: &Server) -> bool {
    let (status, key) = app.get_json("/v1/integrity/public-key").await;
    assert_eq!(status, 200, "{key}");
    let dir = mirror(server, BUCKET).await;
    let output = std::process::Command::new("python3")
        .arg("docs/vectors/reference.py")
        .arg("verify-archive-digests")
        .arg(&dir)
        .arg("org-a")
        .arg(key["public_key"].as_str().unwrap())
        .output()
        .expect("python3 runs");
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() || String::from_utf8_lossy(&output.stderr).starts_with("invalid"),
        "reference.py failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.status.success()
}

/// The digests catch what was done to the bucket behind the worker's back —
/// for the worker's verification and for the independent reference
/// implementation, which reads only a copy of the bucket: a replaced
/// manifest, a deleted archive file (its events then show as missing too), a
/// deleted digest.
#[actix_web::test]
async fn tampering_with_archive_objects_is_reported_by_verification() {
    let (server, app, key) = s3_worker(100).await;
    app.ingest(&key, reads("nurse", "minimal", 5)).await;
    assert_eq!(archive_due(&app).await.archives, 1);
    assert_eq!(app.verify(&key).await["valid"], true);
    assert!(reference_accepts(&app, &server).await);
    let listed = archives(&app, &key).await;
    let object_key = listed[0]["object_key"].as_str().unwrap().to_owned();
    let manifest_key = object_key.replace(".parquet", ".manifest.json");
    let client = server.s3_client();

    client
        .put_object()
        .bucket(BUCKET)
        .key(&manifest_key)
        .body(b"{\"event_count\": 0}".to_vec().into())
        .send()
        .await
        .unwrap();
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], false);
    assert_eq!(kinds(&report), ["archive_digest"], "{report}");
    assert!(!reference_accepts(&app, &server).await);

    client
        .delete_object()
        .bucket(BUCKET)
        .key(&object_key)
        .send()
        .await
        .unwrap();
    let report = app.verify(&key).await;
    let found = kinds(&report);
    assert!(found.contains(&"corrupted_archive".to_owned()), "{report}");
    assert!(found.contains(&"missing".to_owned()), "{report}");
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/v1/archives/{}", listed[0]["id"].as_str().unwrap()),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");

    client
        .delete_object()
        .bucket(BUCKET)
        .key("audit-archive/digests/org-a/1.json")
        .send()
        .await
        .unwrap();
    let report = app.verify(&key).await;
    let digest_problems: Vec<&Value> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "archive_digest")
        .collect();
    assert!(
        digest_problems
            .iter()
            .any(|p| p["message"].as_str().unwrap().contains("missing")),
        "{report}"
    );
}

/// Past `delete_after_days`, retention deletes whole archives from S3 as
/// recorded operations (files removed, a digest saying so, leaves kept), and
/// an archive holding an event under a legal hold stays whole.
#[actix_web::test]
async fn retention_deletes_archives_from_s3_unless_a_hold_covers_them() {
    let (server, app, key) = s3_worker(3).await;
    app.ingest(&key, reads("nurse", "minimal", 3)).await;
    app.ingest(&key, reads("held-user", "minimal", 2)).await;
    assert_eq!(archive_due(&app).await.archives, 2);
    app.create_legal_hold(
        &key,
        json!({"reason": "pending lawsuit", "principal_id": "held-user"}),
    )
    .await;
    let listed = archives(&app, &key).await;

    let pool = db::pool(&app.config.database);
    let keys = IntegrityKeys::load(&app.config.integrity, &pool)
        .await
        .unwrap();
    let store = app.archive_store().await;
    // `minimal` is deleted after 90 days.
    let report = deletion::run(
        &pool,
        &store,
        &keys,
        100,
        Utc::now() + chrono::Duration::days(100),
    )
    .await
    .unwrap();
    assert_eq!((report.archives, report.failed_archives), (1, 0));
    let left = archives(&app, &key).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["event_count"], 2, "the held user's archive stays");
    let gone = listed.iter().find(|a| a["id"] != left[0]["id"]).unwrap();
    let stored = objects(&server, BUCKET).await;
    assert!(!stored.contains_key(gone["object_key"].as_str().unwrap()));
    assert!(stored.contains_key(left[0]["object_key"].as_str().unwrap()));
    let digest: Value =
        serde_json::from_slice(&stored["audit-archive/digests/org-a/3.json"]).unwrap();
    assert_eq!(
        (&digest["change"], &digest["archive_id"]),
        (&json!("deleted"), &gone["id"])
    );
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["deleted_by_retention"], 3, "{report}");
}

/// A bucket the worker cannot use makes `/readyz` say so (the worker stays
/// ready for ingest), and archival waits: nothing leaves `audit_log`. Once
/// the bucket exists, the same run archives.
#[actix_web::test]
async fn an_unusable_bucket_is_reported_and_archival_waits_for_it() {
    let server = servers::s3();
    let app = s3_app(&server, "not-yet-created", 100).await;
    let key = app.create_key("org-a", "org:admin").await;
    app.ingest(&key, reads("nurse", "minimal", 4)).await;
    let (status, ready) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        ready["checks"]["archive_store"]["status"], "degraded",
        "{ready}"
    );
    assert!(ready["checks"]["archive_store"]["message"]
        .as_str()
        .unwrap()
        .contains("not-yet-created"));

    let report = archive_due(&app).await;
    assert_eq!((report.archives, report.failed_batches), (0, 1));
    assert!(archives(&app, &key).await.is_empty());
    assert_eq!(
        app.count(
            "SELECT count(*) FROM audit_log WHERE retention_policy = 'minimal'",
            &[]
        )
        .await,
        4
    );
    assert_eq!(
        app.count("SELECT count(*) FROM archive_dlq_event", &[])
            .await,
        1
    );

    create_bucket(&server, "not-yet-created").await;
    let (_, ready) = app.get_json("/readyz").await;
    assert_eq!(ready["checks"]["archive_store"]["status"], "ok", "{ready}");
    let report = archive_due(&app).await;
    assert_eq!((report.archives, report.events), (1, 4));
    assert_eq!(
        app.count("SELECT count(*) FROM archive_dlq_event", &[])
            .await,
        0
    );
    assert_eq!(app.verify(&key).await["valid"], true);
}

/// Where the subject's archived events can be read in clear: every archived
/// event of the organization, from the API.
async fn archived_in_clear(app: &TestApp, key: &str, subject: &str) -> usize {
    let mut found = 0;
    for archive in archives(app, key).await {
        found += archived_events(app, key, archive["id"].as_str().unwrap())
            .await
            .iter()
            .filter(|e| e["principal_id"] == subject || e["target_resource_id"] == subject)
            .count();
    }
    found
}

async fn live_in_clear(app: &TestApp, subject: &str) -> i64 {
    app.count(
        "SELECT count(*) FROM audit_log WHERE principal_id = $1 OR target_resource_id = $1",
        &[&subject],
    )
    .await
}

/// Alice and Dave have events both archived (`minimal`, after 30 days) and
/// live (`standard`). Exports in every format hold all of Alice's, the
/// archived ones marked; pseudonymization and erasure rewrite the archives
/// too, so neither is left in clear anywhere, the preserved event stays,
/// and verification passes throughout.
async fn gdpr_reaches_half_archived_subjects(app: &TestApp, s3: Option<&Server>) {
    let key = app.create_key("org-a", "org:admin").await;
    let archived = vec![
        event("alice", "patient.record.read")
            .policy("minimal")
            .target("Patient", "p-1"),
        event("alice", "patient.record.update")
            .policy("minimal")
            .details(json!({"a": 1})),
        event("alice", "auth.login").policy("minimal"),
        event("dr-bob", "patient.record.read")
            .policy("minimal")
            .target("Patient", "alice"),
        event("dave", "patient.record.read").policy("minimal"),
        event("dave", "auth.login").policy("minimal"),
        event("carol", "patient.record.read").policy("minimal"),
    ];
    let live = vec![
        event("alice", "patient.record.read").policy("standard"),
        event("dr-bob", "patient.record.read")
            .policy("standard")
            .target("Patient", "alice"),
        event("dave", "patient.record.read").policy("standard"),
    ];
    app.ingest(&key, archived).await;
    app.ingest(&key, live).await;
    assert_eq!(archive_due(app).await.events, 7);

    let export = |format: &'static str| {
        let request = app
            .client
            .post(format!("{}/v1/gdpr/export", app.address))
            .bearer_auth(&key)
            .json(&json!({"principal_id": "alice", "format": format}));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    let json_export: Value = serde_json::from_str(&export("json").await).unwrap();
    let flags: Vec<(bool, &str)> = json_export["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["archived"].as_bool().unwrap(),
                e["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            (true, "patient.record.read"),
            (true, "patient.record.update"),
            (true, "auth.login"),
            (true, "patient.record.read"),
            (false, "patient.record.read"),
            (false, "patient.record.read"),
        ]
    );
    let csv = export("csv").await;
    assert!(csv.lines().next().unwrap().ends_with(",archived"), "{csv}");
    assert_eq!(csv.lines().filter(|l| l.ends_with(",true")).count(), 4);
    let xml = export("xml").await;
    assert_eq!(xml.matches("<archived>true</archived>").count(), 4);

    let (status, done) = app
        .call(
            Method::POST,
            "/v1/gdpr/pseudonymize",
            Some(&key),
            Some(json!({"principal_id": "alice", "strategy": "hash"})),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["records_affected"], 6, "{done}");
    assert_eq!(archived_in_clear(app, &key, "alice").await, 0);
    assert_eq!(live_in_clear(app, "alice").await, 0);
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["pseudonymized"], 6, "{report}");

    let (status, erased) = app
        .call(
            Method::POST,
            "/v1/gdpr/erase",
            Some(&key),
            Some(json!({"principal_id": "dave", "preserve_compliance": true})),
        )
        .await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["records_deleted"], 2, "{erased}");
    assert_eq!(erased["compliance_records_preserved"], 1, "{erased}");
    assert_eq!(archived_in_clear(app, &key, "dave").await, 0);
    assert_eq!(live_in_clear(app, "dave").await, 0);
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["erased_by_gdpr"], 2, "{report}");
    let total: i64 = archives(app, &key)
        .await
        .iter()
        .map(|a| a["event_count"].as_i64().unwrap())
        .sum();
    assert_eq!(
        total, 6,
        "the archived read of dave's is gone, his login kept"
    );

    // A year and more on, everything is archived but the records of the
    // GDPR operations, from which verification learns the pseudonyms it
    // accepts: the trail still verifies.
    archive_at(app, 400).await;
    let records = app
        .count(
            "SELECT count(*) FROM audit_log WHERE action LIKE 'gdpr.data.%' AND status = 'attempt'",
            &[],
        )
        .await;
    assert_eq!(records, 2, "the records of both operations stay live");
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["pseudonymized"], 7, "{report}");

    if let Some(server) = s3 {
        // The files themselves: only the listed archives' remain, and no
        // engine reading them finds either subject.
        let listed = archives(app, &key).await;
        let stored = objects(server, BUCKET).await;
        let parquet: Vec<&String> = stored.keys().filter(|k| k.ends_with(".parquet")).collect();
        assert_eq!(parquet.len(), listed.len(), "{parquet:?}");
        let dir = mirror(server, BUCKET).await;
        let rows = servers::duckdb(&format!(
            "SELECT count(*) FROM read_parquet('{}/audit-archive/**/*.parquet') \
             WHERE principal_id IN ('alice', 'dave') OR target_resource_id IN ('alice', 'dave')",
            dir.display()
        ));
        assert_eq!(rows, [[json!(0)]]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            reference_accepts(app, server).await,
            "the rewritten archives' digests check"
        );
    }
}

/// A pseudonymization cut off half-way by an archive it cannot read (its
/// file gone from the bucket) leaves every archive either as it was or
/// rewritten, answers 409, and the same request, once the file is back,
/// resumes under the same id and completes: nothing left in clear, and the
/// trail verifies.
#[actix_web::test]
async fn a_gdpr_request_cut_off_by_an_unreadable_archive_resumes() {
    let (server, app, key) = s3_worker(3).await;
    app.ingest(&key, reads("alice", "minimal", 4)).await;
    app.ingest(&key, reads("bob", "minimal", 2)).await;
    assert_eq!(archive_due(&app).await.archives, 2);
    let listed = archives(&app, &key).await;
    let newest = listed
        .iter()
        .max_by_key(|a| a["metadata"]["first_event_id"].as_i64().unwrap())
        .unwrap();
    let object_key = newest["object_key"].as_str().unwrap().to_owned();
    let saved = objects(&server, BUCKET).await[&object_key].clone();
    let client = server.s3_client();
    client
        .delete_object()
        .bucket(BUCKET)
        .key(&object_key)
        .send()
        .await
        .unwrap();

    let pseudonymize = || {
        app.call(
            Method::POST,
            "/v1/gdpr/pseudonymize",
            Some(&key),
            Some(json!({"principal_id": "alice", "strategy": "token"})),
        )
    };
    let (status, body) = pseudonymize().await;
    assert_eq!(status, 409, "{body}");
    let now_listed = archives(&app, &key).await;
    assert_eq!(now_listed.len(), 2);
    assert!(
        now_listed.iter().any(|a| a["id"] == newest["id"]),
        "the unreadable archive stays as it was"
    );
    assert!(
        now_listed
            .iter()
            .any(|a| !listed.iter().any(|old| old["id"] == a["id"])),
        "the readable one was rewritten"
    );
    let running = app
        .count(
            "SELECT count(*) FROM gdpr_operations WHERE kind = 'pseudonymize' AND status = 'running'",
            &[],
        )
        .await;
    assert_eq!(running, 1);

    client
        .put_object()
        .bucket(BUCKET)
        .key(&object_key)
        .body(saved.into())
        .send()
        .await
        .unwrap();
    let (status, done) = pseudonymize().await;
    assert_eq!(status, 200, "{done}");
    let first_id = app
        .count(
            "SELECT count(DISTINCT id) FROM gdpr_operations WHERE kind = 'pseudonymize'",
            &[],
        )
        .await;
    assert_eq!(first_id, 1, "the same operation resumed");
    assert_eq!(archived_in_clear(&app, &key, "alice").await, 0);
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["pseudonymized"], 4, "{report}");
}

#[actix_web::test]
async fn gdpr_requests_reach_events_archived_in_s3() {
    let server = servers::s3();
    create_bucket(&server, BUCKET).await;
    let app = s3_app(&server, BUCKET, 3).await;
    gdpr_reaches_half_archived_subjects(&app, Some(&server)).await;
}

#[actix_web::test]
async fn gdpr_requests_reach_events_archived_in_postgres() {
    let app = spawn_app_with(|config| config.partitions.archive_batch_events = 3).await;
    gdpr_reaches_half_archived_subjects(&app, None).await;
}

/// The `directory` store keeps the same files on a disk: DuckDB reads them
/// where they are, and verification and restore work as with S3.
#[actix_web::test]
async fn a_directory_store_keeps_the_same_files_on_disk() {
    let root = std::env::temp_dir().join(format!("audit-archives-{}", uuid::Uuid::new_v4()));
    let directory = root.clone();
    let app = spawn_app_with(move |config| {
        config.archive.store = ArchiveStoreKind::Directory;
        config.archive.directory = directory;
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    app.ingest(&key, reads("nurse", "minimal", 6)).await;
    assert_eq!(archive_due(&app).await.events, 6);
    let listed = archives(&app, &key).await;
    assert_eq!(listed[0]["store"], "directory");
    let file: &Path = &root.join(listed[0]["object_key"].as_str().unwrap());
    assert!(file.is_file(), "{}", file.display());
    assert!(root.join("audit-archive/digests/org-a/1.json").is_file());
    let rows = servers::duckdb(&format!(
        "SELECT count(*), count(DISTINCT principal_id) FROM read_parquet('{}')",
        file.display()
    ));
    assert_eq!(rows, [[json!(6), json!(1)]]);
    assert_eq!(app.verify(&key).await["valid"], true);
    audit_worker::admin::restore_archive(
        &app.config,
        listed[0]["id"].as_str().unwrap().parse().unwrap(),
    )
    .await
    .unwrap();
    assert!(!file.exists());
    assert_eq!(app.verify(&key).await["valid"], true);
    std::fs::remove_dir_all(&root).unwrap();
}
