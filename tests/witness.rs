//! Witness destinations (checkpoints leave the building): every signed
//! checkpoint of an organization goes, through the delivery queue, to each of
//! its destinations marked `witness`: a webhook receives it signed, an S3
//! store keeps it under Object Lock; `verify --checkpoint` reads it back from
//! a file, an HTTP URL or S3; a witness that is down raises the delivery
//! alert. Against the real database, receivers, moto and the real binary.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::ObjectLockMode;
use common::receiver::Receiver;
use common::{
    error_fields, event, servers, spawn_app, spawn_app_with, wait_until, webhook, TestApp,
};
use reqwest::Method;
use serde_json::{json, Value};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(30);

/// Signs a checkpoint of the organization's chain now; returns it as listed
/// (`{seq, checkpoint: {payload, signature}, ...}`; 201 asserted).
async fn sign_checkpoint(app: &TestApp, key: &str) -> Value {
    let (status, body) = app
        .call(Method::POST, "/v1/integrity/checkpoints", Some(key), None)
        .await;
    assert_eq!(status, 201, "{body}");
    body["checkpoints"][0].clone()
}

/// An S3 destination of the moto server `s3`, writing to `bucket`, with `extra` fields.
fn s3_destination(s3: &servers::Server, bucket: &str, extra: Value) -> Value {
    let mut body = json!({"type": "s3", "label": "s3 witness",
        "config": {"bucket": bucket, "endpoint": s3.endpoint(), "path_style": true,
                   "access_key_id": "test", "secret_access_key": "test-secret"}});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// Deliveries queued for the organization (all statuses).
async fn queued(app: &TestApp, organization_id: &str) -> i64 {
    app.count(
        "SELECT count(*) FROM delivery_queue WHERE organization_id = $1",
        &[&organization_id],
    )
    .await
}

async fn patch(app: &TestApp, key: &str, id: i64, body: Value) -> (u16, Value) {
    app.call(
        Method::PATCH,
        &format!("/v1/destinations/{id}"),
        Some(key),
        Some(body),
    )
    .await
}

/// `witness` and `object_lock_days` are stored, shown and changed; each is
/// refused, naming it, where the kind cannot honour it or the value is out
/// of range.
#[actix_web::test]
async fn witness_and_object_lock_days_are_kept_and_checked_by_kind() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let mut body = webhook("hook", "http://127.0.0.1:9/hook");
    body["witness"] = json!(true);
    let (status, created) = app.try_create_destination(&key, body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (&created["witness"], &created["object_lock_days"]),
        (&json!(true), &Value::Null)
    );
    let hook = created["id"].as_i64().unwrap();
    let (_, listed) = app
        .call(Method::GET, "/v1/destinations", Some(&key), None)
        .await;
    assert_eq!(listed["destinations"][0]["witness"], true, "{listed}");
    let (status, changed) = patch(&app, &key, hook, json!({"witness": false})).await;
    assert_eq!((status, &changed["witness"]), (200, &json!(false)));
    let (status, refused) = patch(&app, &key, hook, json!({"object_lock_days": 7})).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(error_fields(&refused), ["object_lock_days"]);

    let s3 = servers::s3();
    let (status, created) = app
        .try_create_destination(
            &key,
            s3_destination(
                &s3,
                "locked",
                json!({"witness": true, "object_lock_days": 30}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["object_lock_days"], 30);
    let bucket = created["id"].as_i64().unwrap();
    let (status, refused) = patch(&app, &key, bucket, json!({"object_lock_days": 0})).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(error_fields(&refused), ["object_lock_days"]);
    let (status, cleared) = patch(&app, &key, bucket, json!({"object_lock_days": null})).await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(
        (&cleared["object_lock_days"], &cleared["witness"]),
        (&Value::Null, &json!(true))
    );

    let email = json!({"type": "email", "label": "mail", "witness": true,
        "config": {"host": "127.0.0.1", "port": 2525, "tls": "none",
                   "from": "audit@worker.test", "to": ["officer@clinic.test"]}});
    let ftp = json!({"type": "ftp", "label": "ftp", "witness": true,
        "config": {"host": "127.0.0.1", "username": "u", "password": "p"}});
    let mut locked_hook = webhook("hook", "http://127.0.0.1:9/hook");
    locked_hook["object_lock_days"] = json!(30);
    let too_long = s3_destination(&s3, "locked", json!({"object_lock_days": 36501}));
    for (body, field) in [
        (email, "witness"),
        (ftp, "witness"),
        (locked_hook, "object_lock_days"),
        (too_long, "object_lock_days"),
    ] {
        let (status, refused) = app.try_create_destination(&key, body.clone()).await;
        assert_eq!(status, 400, "{body}: {refused}");
        assert_eq!(error_fields(&refused), [field], "{body}");
    }
}

/// A signed checkpoint is queued once to each enabled witness, and to no
/// other destination, in the same call that stores it; a webhook witness
/// receives it, signed, as `{payload, signature}`, and it verifies the
/// chain. Queueing it again queues nothing; the next checkpoint goes too.
#[actix_web::test]
async fn every_checkpoint_goes_once_to_each_enabled_witness() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let witness_receiver = Receiver::start(&[], 0);
    let other_receiver = Receiver::start(&[], 0);
    let witness = app
        .create_destination(
            &key,
            json!({"type": "webhook", "label": "witness", "witness": true,
                   "config": {"url": witness_receiver.url, "secret": SECRET}}),
        )
        .await;
    app.create_destination(&key, webhook("siem", &other_receiver.url))
        .await;
    let mut disabled = webhook("disabled witness", &other_receiver.url);
    disabled["witness"] = json!(true);
    let disabled = app.create_destination(&key, disabled).await;
    assert_eq!(
        patch(&app, &key, disabled, json!({"disabled": true}))
            .await
            .0,
        200
    );
    // Another organization's witness gets none of org-a's checkpoints.
    let other_key = app.create_key("org-b", "org:admin").await;
    let mut foreign = webhook("org-b witness", &other_receiver.url);
    foreign["witness"] = json!(true);
    app.create_destination(&other_key, foreign).await;

    app.ingest(&key, vec![event("dr.grey", "patient.record.read")])
        .await;
    let stored = sign_checkpoint(&app, &key).await;
    let seq = stored["seq"].as_i64().unwrap();
    assert_eq!(
        app.count(
            "SELECT count(*) FROM delivery_queue WHERE organization_id = 'org-a' \
             AND destination_id = $1 AND idempotency_key = $2",
            &[&witness, &format!("checkpoint:{seq}")],
        )
        .await,
        1
    );
    assert_eq!(
        queued(&app, "org-a").await,
        1,
        "the witness's delivery only"
    );
    assert_eq!(queued(&app, "org-b").await, 0);

    let received = witness_receiver.wait_for(1, WAIT).await;
    assert!(received[0].signed_with(SECRET), "{:?}", received[0]);
    let delivered: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(delivered, stored["checkpoint"]);
    let report = app
        .verify_with(&key, json!({"checkpoint": delivered}))
        .await;
    assert_eq!(report["valid"], true, "{report}");

    // The same checkpoint queued again (another instance signing the same
    // head, say) finds the delivery it has.
    let database = app.database().await;
    let found = audit_worker::db::witnesses::enqueue_checkpoint(&database, "org-a", seq)
        .await
        .unwrap();
    assert_eq!(found, 1);
    assert_eq!(queued(&app, "org-a").await, 1);

    app.ingest(&key, vec![event("dr.grey", "patient.record.update")])
        .await;
    let next = sign_checkpoint(&app, &key).await;
    assert_eq!(next["seq"], seq + 1);
    let received = witness_receiver.wait_for(2, WAIT).await;
    let delivered: Value = serde_json::from_slice(&received[1].body).unwrap();
    assert_eq!(delivered, next["checkpoint"]);
    assert!(other_receiver.received().is_empty());
}

/// An S3 witness keeps each checkpoint as `<prefix>checkpoints/<org>/<seq>.json`
/// under Object Lock retention (compliance mode, `object_lock_days` ahead):
/// the object is the checkpoint, which verifies, and its version cannot be deleted.
#[actix_web::test]
async fn an_s3_witness_keeps_each_checkpoint_under_object_lock() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let s3 = servers::s3();
    let client = s3.s3_client();
    client
        .create_bucket()
        .bucket("witness")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .expect("create a bucket with Object Lock");
    let mut body = s3_destination(
        &s3,
        "witness",
        json!({"witness": true, "object_lock_days": 30}),
    );
    body["config"]["prefix"] = json!("audit/");
    app.create_destination(&key, body).await;

    app.ingest(&key, vec![event("dr.grey", "patient.record.read")])
        .await;
    let stored = sign_checkpoint(&app, &key).await;
    let object_key = format!("audit/checkpoints/org-a/{}.json", stored["seq"]);
    let object = wait_until(WAIT, "the checkpoint's object", || async {
        let object = client
            .get_object()
            .bucket("witness")
            .key(&object_key)
            .send()
            .await
            .ok()?;
        Some(object)
    })
    .await;
    assert_eq!(object.content_type(), Some("application/json"));
    let version = object.version_id().expect("a versioned object").to_owned();
    let bytes = object.body.collect().await.unwrap().into_bytes();
    let kept: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(kept, stored["checkpoint"]);
    let report = app.verify_with(&key, json!({"checkpoint": kept})).await;
    assert_eq!(report["valid"], true, "{report}");

    // The retention as the store reports it with the object (moto has no
    // GetObjectRetention; S3 answers both alike).
    let head = client
        .head_object()
        .bucket("witness")
        .key(&object_key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    let until = head
        .object_lock_retain_until_date()
        .expect("a retention date")
        .secs();
    let expected = (chrono::Utc::now() + chrono::Duration::days(30)).timestamp();
    assert!(
        (until - expected).abs() < 3600,
        "retained until {until}, expected about {expected}"
    );
    let deleted = client
        .delete_object()
        .bucket("witness")
        .key(&object_key)
        .version_id(&version)
        .send()
        .await;
    let refused = deleted.expect_err("a locked version cannot be deleted");
    assert_eq!(refused.code(), Some("AccessDenied"), "{refused:?}");
}

/// A witness that is down fails its checkpoint deliveries, which opens its
/// breaker and raises the existing DELIVERY alert for it.
#[actix_web::test]
async fn a_witness_that_is_down_raises_the_delivery_alert() {
    let app = spawn_app_with(|config| {
        config.alerts.system_check_interval = Duration::from_millis(100);
        config.alerts.breaker_open_after = Duration::from_millis(100);
        config.delivery.health_interval = Duration::from_millis(100);
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    // A port nothing listens on: every connection is refused.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let witness = app
        .create_destination(
            &key,
            json!({"type": "webhook", "label": "down witness", "witness": true,
                   "config": {"url": format!("http://127.0.0.1:{closed}/hook")},
                   "settings": {"failure_threshold": 1, "reset_timeout": "1h",
                                "retry_schedule": ["50ms", "50ms"]}}),
        )
        .await;
    app.ingest(&key, vec![event("dr.grey", "patient.record.read")])
        .await;
    let stored = sign_checkpoint(&app, &key).await;

    let database = app.database().await;
    let (kind, severity) = wait_until(WAIT, "a breaker alert for the witness", || async {
        let row = database
            .query_opt(
                "SELECT type, severity FROM alerts WHERE organization_id = 'org-a' \
                 AND rule_id = 'system:breaker-open' AND group_key = $1",
                &[&witness.to_string()],
            )
            .await
            .unwrap()?;
        Some((row.get::<_, String>(0), row.get::<_, String>(1)))
    })
    .await;
    assert_eq!((kind.as_str(), severity.as_str()), ("DELIVERY", "HIGH"));
    let row = database
        .query_one(
            "SELECT last_error FROM delivery_queue WHERE organization_id = 'org-a' \
             AND destination_id = $1 AND idempotency_key = $2",
            &[&witness, &format!("checkpoint:{}", stored["seq"])],
        )
        .await
        .unwrap();
    let last_error: Option<String> = row.get(0);
    assert!(last_error.is_some(), "the checkpoint's delivery failed");
}

/// Serves `routes` (path, status, body) on a free loopback port; returns its address.
fn serve(routes: Vec<(&'static str, u16, Vec<u8>)>) -> String {
    let routes = web::Data::new(routes);
    let server = HttpServer::new(move || {
        App::new().app_data(routes.clone()).default_service(web::to(
            |request: actix_web::HttpRequest,
             routes: web::Data<Vec<(&'static str, u16, Vec<u8>)>>| async move {
                match routes.iter().find(|(path, ..)| *path == request.path()) {
                    Some((_, status, body)) => {
                        HttpResponse::build(actix_web::http::StatusCode::from_u16(*status).unwrap())
                            .content_type("application/json")
                            .body(body.clone())
                    }
                    None => HttpResponse::NotFound().finish(),
                }
            },
        ))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind the server");
    let port = server.addrs()[0].port();
    actix_web::rt::spawn(server.run());
    format!("http://127.0.0.1:{port}")
}

/// Runs `audit-worker verify --org ORG --checkpoint SOURCE` against the
/// app's database, off the test's thread (its servers keep answering).
async fn verify_cli(app: &TestApp, org: &str, source: &str, env: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_audit-worker"));
    for (key, _) in std::env::vars() {
        if key.starts_with("AUDIT_WORKER") || key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command
        .args(["verify", "--org", org, "--checkpoint", source])
        .env(
            "AUDIT_WORKER__DATABASE__URL",
            app.config.database.url.to_string(),
        )
        .envs(env.iter().map(|(key, value)| (key, value)));
    actix_web::rt::task::spawn_blocking(move || command.output().expect("run the binary"))
        .await
        .unwrap()
}

fn report(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `verify --checkpoint` takes the checkpoint a witness keeps: a file (as a
/// webhook received it), an http URL on loopback, or an `s3://` URL (the S3
/// witness's object, the store found through the AWS environment). Each is
/// checked against the chain (another organization's is refused); a missing
/// one, something else than a checkpoint, and plain http off this machine
/// end with a message and a non-zero exit.
#[actix_web::test]
async fn verify_reads_a_witness_checkpoint_from_a_file_a_url_or_s3() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let mut hook = webhook("witness", &receiver.url);
    hook["witness"] = json!(true);
    app.create_destination(&key, hook).await;
    let s3 = servers::s3();
    let client = s3.s3_client();
    client
        .create_bucket()
        .bucket("witness")
        .send()
        .await
        .unwrap();
    app.create_destination(
        &key,
        s3_destination(&s3, "witness", json!({"witness": true})),
    )
    .await;
    app.ingest(&key, vec![event("dr.grey", "patient.record.read")])
        .await;
    let seq = sign_checkpoint(&app, &key).await["seq"].as_i64().unwrap();
    let received = receiver.wait_for(1, WAIT).await.remove(0).body;
    let object_url = format!("s3://witness/checkpoints/org-a/{seq}.json");
    wait_until(WAIT, "the S3 witness's object", || async {
        client
            .head_object()
            .bucket("witness")
            .key(format!("checkpoints/org-a/{seq}.json"))
            .send()
            .await
            .ok()
    })
    .await;

    let file = std::env::temp_dir().join(format!("checkpoint-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, &received).unwrap();
    let from_file = verify_cli(&app, "org-a", file.to_str().unwrap(), &[]).await;
    std::fs::remove_file(&file).unwrap();
    assert_eq!(report(&from_file)["valid"], true);

    let site = serve(vec![
        ("/checkpoints/org-a/latest.json", 200, received.clone()),
        (
            "/not-a-checkpoint.json",
            200,
            br#"{"hello": "world"}"#.to_vec(),
        ),
    ]);
    let url = format!("{site}/checkpoints/org-a/latest.json");
    assert_eq!(
        report(&verify_cli(&app, "org-a", &url, &[]).await)["valid"],
        true
    );
    let foreign = verify_cli(&app, "org-b", &url, &[]).await;
    assert_eq!(foreign.status.code(), Some(1));
    assert!(
        stderr(&foreign).contains("organization `org-a`"),
        "{}",
        stderr(&foreign)
    );
    for (path, message) in [
        ("/missing.json", "404"),
        ("/not-a-checkpoint.json", "is not a checkpoint"),
    ] {
        let failed = verify_cli(&app, "org-a", &format!("{site}{path}"), &[]).await;
        assert_eq!(failed.status.code(), Some(1), "{path}");
        assert!(
            stderr(&failed).contains(message),
            "{path}: {}",
            stderr(&failed)
        );
    }
    let refused = verify_cli(&app, "org-a", "http://witness.example/cp.json", &[]).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("use https"),
        "{}",
        stderr(&refused)
    );

    let aws = [
        ("AWS_ENDPOINT_URL_S3", s3.endpoint()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test-secret".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ];
    let from_s3 = verify_cli(&app, "org-a", &object_url, &aws).await;
    assert_eq!(report(&from_s3)["valid"], true);
    let missing = format!("s3://witness/checkpoints/org-a/{}.json", seq + 100);
    let failed = verify_cli(&app, "org-a", &missing, &aws).await;
    assert_eq!(failed.status.code(), Some(1));
    assert!(stderr(&failed).contains(&missing), "{}", stderr(&failed));
}
