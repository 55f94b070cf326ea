//! The trail is append-only, enforced by PostgreSQL: the database owner
//! cannot change it through psql, a forged operation does not open it, the
//! worker's recorded operations still work, and the worker runs as the
//! least-privilege runtime role the migrations create.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{free_port, serve};
use common::{event, spawn_app, spawn_beside, wait_until, TestApp};
use serde_json::json;
use uuid::Uuid;

/// Runs `sql` through psql as the database owner; psql's exit status and stderr.
fn psql(app: &TestApp, sql: &str) -> (bool, String) {
    let output = Command::new("psql")
        .arg(app.config.database.url.to_string())
        .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-c", sql])
        .output()
        .expect("psql runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every stored column of every event, in id order.
async fn trail(app: &TestApp) -> Vec<String> {
    app.database()
        .await
        .query("SELECT to_jsonb(e)::text FROM audit_log e ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[actix_web::test]
async fn the_owner_cannot_update_delete_or_truncate_the_trail() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    for _ in 0..3 {
        app.ingest(
            &key,
            vec![event("alice", "record.read"), event("bob", "record.update")],
        )
        .await;
    }
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            "/v1/integrity/checkpoints",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 201);
    app.verify(&key).await;
    let before = trail(&app).await;
    let partition: String = app
        .database()
        .await
        .query_one(
            "SELECT tableoid::regclass::text FROM audit_log LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    for sql in [
        "UPDATE audit_log SET action = 'x'".to_owned(),
        "DELETE FROM audit_log".to_owned(),
        "TRUNCATE audit_log".to_owned(),
        format!("UPDATE {partition} SET action = 'x'"),
        format!("DELETE FROM {partition}"),
        format!("TRUNCATE {partition}"),
        "UPDATE audit_chain SET merkle_root = link".to_owned(),
        "DELETE FROM audit_chain".to_owned(),
        "TRUNCATE audit_chain CASCADE".to_owned(),
        "UPDATE audit_chain_head SET seq = seq - 1".to_owned(),
        "DELETE FROM audit_chain_head".to_owned(),
        "DELETE FROM integrity_checkpoints".to_owned(),
        "UPDATE integrity_checkpoints SET signature = 'x'".to_owned(),
        "DELETE FROM audit_integrity_log".to_owned(),
        "DELETE FROM audit_tree_node".to_owned(),
        "TRUNCATE audit_integrity_log".to_owned(),
        // A forged operation name opens nothing.
        format!(
            "BEGIN; SELECT set_config('audit_worker.operation', '{}', true); \
             DELETE FROM audit_log; COMMIT;",
            Uuid::new_v4()
        ),
    ] {
        let (succeeded, stderr) = psql(&app, &sql);
        assert!(!succeeded, "`{sql}` went through");
        assert!(
            stderr.contains("refused") && stderr.contains("append-only"),
            "`{sql}`: {stderr}"
        );
    }

    assert_eq!(trail(&app).await, before, "nothing changed");
    let database = app.database().await;
    for table in [
        "audit_chain",
        "integrity_checkpoints",
        "audit_integrity_log",
    ] {
        let rows: i64 = database
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert!(rows > 0, "{table} kept its rows");
    }
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
}

/// An operation row can only be added once its record event is in the chain,
/// and it opens only its own organization's events.
#[actix_web::test]
async fn an_operation_needs_its_record_in_the_chain_and_stays_in_its_organization() {
    let app = spawn_app().await;
    let key_a = app.create_key("org-a", "org:admin").await;
    let key_b = app.create_key("org-b", "org:admin").await;
    let a = app
        .ingest(&key_a, vec![event("alice", "record.read")])
        .await;
    app.ingest(&key_b, vec![event("bob", "record.read")]).await;
    let a_event = a[0]["id"].as_i64().unwrap();
    let org_b_events = app.count_events("org-b").await;

    let (succeeded, stderr) = psql(
        &app,
        "INSERT INTO trail_operations (organization_id, kind, record_event_id) \
         VALUES ('org-a', 'retention_deletion', -1)",
    );
    assert!(!succeeded);
    assert!(stderr.contains("record event in the chain"), "{stderr}");

    // A genuine row of org-a (its record event is chained) does not open org-b.
    let operation = Uuid::new_v4();
    let (succeeded, stderr) = psql(
        &app,
        &format!(
            "INSERT INTO trail_operations (id, organization_id, kind, record_event_id) \
             VALUES ('{operation}', 'org-a', 'retention_deletion', {a_event})"
        ),
    );
    assert!(succeeded, "{stderr}");
    let (succeeded, stderr) = psql(&app, "DELETE FROM trail_operations");
    assert!(!succeeded && stderr.contains("append-only"), "{stderr}");
    let (succeeded, stderr) = psql(
        &app,
        &format!(
            "BEGIN; SELECT set_config('audit_worker.operation', '{operation}', true); \
             DELETE FROM audit_log WHERE organization_id = 'org-b'; COMMIT;"
        ),
    );
    assert!(!succeeded, "another organization's events were deleted");
    assert!(stderr.contains("append-only"), "{stderr}");
    // Nor does a deletion kind allow an update.
    let (succeeded, _) = psql(
        &app,
        &format!(
            "BEGIN; SELECT set_config('audit_worker.operation', '{operation}', true); \
             UPDATE audit_log SET action = 'x' WHERE organization_id = 'org-a'; COMMIT;"
        ),
    );
    assert!(!succeeded, "a retention deletion updated an event");
    assert_eq!(app.count_events("org-b").await, org_b_events);
}

/// The worker runs as a login role granted `audit_worker_runtime`: it ingests,
/// records administrative changes, verifies; it cannot truncate the trail or
/// run DDL.
#[actix_web::test]
async fn the_worker_runs_as_the_least_privilege_runtime_role() {
    let first = spawn_app().await;
    let role = format!("aw_runtime_{}", &Uuid::new_v4().simple().to_string()[..12]);
    first
        .database()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN BYPASSRLS IN ROLE audit_worker_runtime"
        ))
        .await
        .unwrap();
    let url = format!(
        "postgres://{role}@127.0.0.1:5432/{}",
        first.config.database.url.database_name()
    );
    let runtime = spawn_beside(&first, |config| {
        config.database.url = url.parse().unwrap();
    })
    .await;

    let key = runtime.create_key("org-a", "org:admin").await;
    runtime
        .ingest(&key, vec![event("alice", "record.read")])
        .await;
    let (status, body) = runtime
        .call(
            reqwest::Method::POST,
            "/v1/legal-holds",
            Some(&key),
            Some(json!({"reason": "litigation"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let report = runtime.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");

    let as_runtime = common::connect(&url.parse().unwrap()).await;
    for (sql, expected) in [
        ("TRUNCATE audit_log", "permission denied"),
        ("CREATE TABLE intruder (id int)", "permission denied"),
        // Allowed to the tenant role it inherits, refused by the trigger.
        ("DELETE FROM audit_chain", "append-only"),
        ("UPDATE audit_log SET action = 'x'", "append-only"),
    ] {
        let error = as_runtime.batch_execute(sql).await.unwrap_err();
        let message = error
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_else(|| error.to_string());
        assert!(message.contains(expected), "`{sql}`: {message}");
    }
    drop(as_runtime);
    drop(runtime);
    // Roles are cluster-wide: best effort, the role would outlive the database.
    let server = common::connect(&common::test_server_url().parse().unwrap()).await;
    let _ = server
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await;
}

/// `serve` says at start-up when it runs as a superuser.
#[actix_web::test]
async fn serve_warns_when_it_runs_as_a_superuser() {
    let app = spawn_app().await;
    let mut worker = serve(
        free_port(),
        &app.config.database.url.to_string(),
        &[("AUDIT_WORKER__CACHE__REDIS_PREFIX", "superuser-test:")],
        Stdio::piped(),
    );
    let stderr = worker.stderr.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    wait_until(Duration::from_secs(30), "the superuser warning", || {
        let found = receiver
            .try_iter()
            .any(|line| line.contains("superuser") && line.contains("audit_worker_runtime"));
        async move { found.then_some(()) }
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
}
