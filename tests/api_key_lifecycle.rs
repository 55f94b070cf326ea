//! API keys that end, show their last use and rotate: expiry through the API
//! and the command line (401 `key_expired`, whatever the key cache holds),
//! `last_used_at` written at most once a minute off the request path, and
//! rotation (new secret, same key; the old secret for a grace period, then
//! 401 `key_rotated`), on one instance and across two.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use audit_worker::db::connection::PgConnection;
use audit_worker::db::{api_keys, tenant};
use chrono::{DateTime, Utc};
use common::process::BINARY;
use common::{error_fields, spawn_app, spawn_app_with, spawn_beside, wait_until, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// The id of a full key (`awk_<id>_<secret>`).
fn id_of(key: &str) -> String {
    key.split('_').nth(1).expect("a key has an id").to_owned()
}

/// A time the API sent.
fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .parse()
        .unwrap_or_else(|error| panic!("not RFC 3339: {value}: {error}"))
}

/// Status and body of a request that needs a key with `audit.events` read.
async fn use_key(app: &TestApp, key: &str) -> (u16, Value) {
    app.call(Method::GET, "/v1/events?limit=1", Some(key), None)
        .await
}

/// Issues a key through the API; asserts 201 and returns the answer.
async fn create(app: &TestApp, admin: &str, body: Value) -> Value {
    let (status, created) = app
        .call(Method::POST, "/v1/api-keys", Some(admin), Some(body))
        .await;
    assert_eq!(status, 201, "{created}");
    created
}

/// Rotates `id` with `body`; returns status and answer.
async fn rotate(app: &TestApp, key: &str, id: &str, body: Option<Value>) -> (u16, Value) {
    let path = format!("/v1/api-keys/{id}/rotate");
    app.call(Method::POST, &path, Some(key), body).await
}

/// The key `id` as `GET /v1/api-keys` lists it.
async fn listed(app: &TestApp, admin: &str, id: &str) -> Value {
    let (status, listing) = app
        .call(Method::GET, "/v1/api-keys", Some(admin), None)
        .await;
    assert_eq!(status, 200, "{listing}");
    listing["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not listed: {listing}"))
        .clone()
}

/// Asserts a 401 with the error `code`; returns the body.
fn assert_refused(answer: (u16, Value), code: &str) -> Value {
    let (status, body) = answer;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    body
}

/// Waits until `key` is refused (any status but 200); returns the answer.
async fn refusal(app: &TestApp, key: &str, timeout: Duration) -> (u16, Value) {
    wait_until(timeout, "the key to be refused", || async {
        let answer = use_key(app, key).await;
        (answer.0 != 200).then_some(answer)
    })
    .await
}

/// Runs the command line on the worker's database.
fn cli(app: &TestApp, args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env(
            "AUDIT_WORKER__DATABASE__URL",
            app.config.database.url.to_string(),
        )
        .output()
        .expect("run audit-worker")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn failure(output: &Output) -> String {
    assert!(!output.status.success(), "the command should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A key whose `expires_at` is two seconds ahead works, then gets 401
/// `key_expired` saying when — although the worker caches keys for an hour:
/// the expiry travels with the cached credentials and is checked on every use.
#[actix_web::test]
async fn a_key_works_until_its_expiry_then_gets_key_expired() {
    let app = spawn_app_with(|config| config.auth.key_cache_ttl = Duration::from_secs(3600)).await;
    let admin = app.create_key("org-a", "org:admin").await;
    let at = Utc::now() + chrono::Duration::seconds(2);
    let created = create(
        &app,
        &admin,
        json!({"role": "org:member", "expires_at": at.to_rfc3339()}),
    )
    .await;
    let expires_at = time(&created["expires_at"]);
    assert!((expires_at - at).abs() < chrono::Duration::milliseconds(1));
    let key = created["key"].as_str().unwrap();
    assert_eq!(use_key(&app, key).await.0, 200, "works before its expiry");

    let refused = refusal(&app, key, Duration::from_secs(15)).await;
    assert!(Utc::now() >= expires_at, "refused only once expired");
    let body = assert_refused(refused, "key_expired");
    assert_eq!(time(&body["error"]["details"]["expired_at"]), expires_at);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&expires_at.to_rfc3339()), "{message}");

    let id = created["id"].as_str().unwrap();
    assert_eq!(
        time(&listed(&app, &admin, id).await["expires_at"]),
        expires_at
    );
    // A wrong secret keeps its own code.
    let wrong = format!("awk_{id}_{}", "A".repeat(43));
    assert_refused(use_key(&app, &wrong).await, "unauthorized");
}

/// `expires_in` sets the expiry from now; an expiry that is not in the
/// future, both fields at once, or a duration that does not parse is a 400
/// naming the field.
#[actix_web::test]
async fn expiry_is_asked_for_by_time_or_duration_and_bad_ones_are_refused() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let before = Utc::now();
    let created = create(
        &app,
        &admin,
        json!({"role": "auditor", "expires_in": "90d"}),
    )
    .await;
    let ninety_days = chrono::Duration::days(90);
    let expires_at = time(&created["expires_at"]);
    assert!(expires_at >= before + ninety_days && expires_at <= Utc::now() + ninety_days);
    let never = create(&app, &admin, json!({"role": "auditor"})).await;
    assert!(never["expires_at"].is_null(), "{never}");

    let past = (Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    let soon = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    for (body, field) in [
        (json!({"role": "auditor", "expires_at": past}), "expires_at"),
        (
            json!({"role": "auditor", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            json!({"role": "auditor", "expires_in": "soon"}),
            "expires_in",
        ),
        (json!({"role": "auditor", "expires_in": "0s"}), "expires_in"),
        (
            json!({"role": "auditor", "expires_in": "100000000years"}),
            "expires_in",
        ),
        (
            json!({"role": "auditor", "expires_at": soon, "expires_in": "1h"}),
            "expires_in",
        ),
    ] {
        let (status, refused) = app
            .call(
                Method::POST,
                "/v1/api-keys",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 400, "{body}: {refused}");
        assert_eq!(error_fields(&refused), [field], "{body}: {refused}");
    }
}

/// `last_used_at` appears after a use (written by the background flush, not
/// the request), and a second use within the minute does not write it again:
/// a use of another key noted after it is written while the first key's
/// `last_used_at` stays as it was.
#[actix_web::test]
async fn last_use_is_written_once_a_minute_off_the_request_path() {
    let app = spawn_app_with(|config| {
        config.auth.last_used_flush_interval = Duration::from_millis(50);
    })
    .await;
    let admin = app.create_key("org-a", "org:admin").await;
    let first = app.create_key("org-a", "org:member").await;
    let second = app.create_key("org-a", "org:member").await;
    let (first_id, second_id) = (id_of(&first), id_of(&second));
    assert!(listed(&app, &admin, &first_id).await["last_used_at"].is_null());

    let before = Utc::now();
    assert_eq!(use_key(&app, &first).await.0, 200);
    let last_use = |id: String| {
        let (app, admin) = (&app, &admin);
        async move {
            let key = listed(app, admin, &id).await;
            (!key["last_used_at"].is_null()).then(|| time(&key["last_used_at"]))
        }
    };
    let written = wait_until(Duration::from_secs(10), "the first key's last use", || {
        last_use(first_id.clone())
    })
    .await;
    assert!(written >= before - chrono::Duration::seconds(1) && written <= Utc::now());

    assert_eq!(use_key(&app, &first).await.0, 200);
    assert_eq!(use_key(&app, &second).await.0, 200);
    wait_until(Duration::from_secs(10), "the second key's last use", || {
        last_use(second_id.clone())
    })
    .await;
    assert_eq!(
        last_use(first_id.clone()).await,
        Some(written),
        "a second use within the minute is not written"
    );

    let listing = stdout(&cli(&app, &["api-key", "list", "--org", "org-a"]));
    let header = listing.lines().next().unwrap();
    assert!(header.contains("\texpires_at\tlast_used_at\t"), "{header}");
    let row = listing
        .lines()
        .find(|line| line.starts_with(&first_id))
        .unwrap();
    assert!(row.contains(&written.to_rfc3339()), "{row}");
}

/// The statement that writes last uses skips a row written within the
/// minute before, whichever worker wrote it, and reaches only the rows of the
/// organization its transaction is scoped to (row-level security).
#[actix_web::test]
async fn last_use_writes_are_guarded_in_sql_and_scoped_to_the_organization() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:member").await;
    let ids = [id_of(&key)];
    let minute = Duration::from_secs(60);
    let start = Utc::now();
    let mut client = PgConnection::new(app.database().await);
    let mut write = async |scope: &str, at: DateTime<Utc>| {
        let transaction = tenant::begin(&mut client, scope).await.unwrap();
        let written = api_keys::record_uses(&transaction, "org-a", &ids, at, minute)
            .await
            .unwrap();
        transaction.commit().await.unwrap();
        written
    };
    assert_eq!(write("org-a", start).await, 1);
    assert_eq!(
        write("org-a", start + chrono::Duration::seconds(30)).await,
        0
    );
    assert_eq!(
        write("org-b", start + chrono::Duration::minutes(5)).await,
        0,
        "another organization's scope sees no row to write"
    );
    assert_eq!(
        write("org-a", start + chrono::Duration::seconds(61)).await,
        1
    );
}

/// Rotation gives the key a new secret (same id, role and expiry) shown
/// once; the old secret works through its grace period, then gets 401
/// `key_rotated`; a second rotation ends the secret the first replaced at
/// once; each rotation is an `admin.api_key.rotate` event holding no secret.
#[actix_web::test]
async fn a_rotated_key_takes_a_new_secret_and_the_old_one_ends_after_its_grace() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let expiry = (Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let created = create(
        &app,
        &admin,
        json!({"role": "org:member", "name": "ci", "expires_at": expiry}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let original = created["key"].as_str().unwrap();

    let before = Utc::now();
    let (status, first) = rotate(&app, &admin, id, None).await;
    assert_eq!(status, 200, "{first}");
    for field in [
        "id",
        "role",
        "name",
        "organization_id",
        "expires_at",
        "created_at",
    ] {
        assert_eq!(first[field], created[field], "{field}");
    }
    let first_key = first["key"].as_str().unwrap();
    assert_ne!(first_key, original);
    assert_eq!(id_of(first_key), id);
    let grace_end = time(&first["previous_secret_expires_at"]);
    let day = chrono::Duration::hours(24);
    assert!(grace_end >= before + day && grace_end <= Utc::now() + day);
    assert!(time(&first["rotated_at"]) >= before - chrono::Duration::seconds(1));
    assert_eq!(
        use_key(&app, first_key).await.0,
        200,
        "the new secret works"
    );
    assert_eq!(
        use_key(&app, original).await.0,
        200,
        "the old one, in its grace"
    );

    let (status, second) = rotate(&app, &admin, id, Some(json!({"grace_period": "0s"}))).await;
    assert_eq!(status, 200, "{second}");
    let second_key = second["key"].as_str().unwrap();
    assert_eq!(use_key(&app, second_key).await.0, 200);
    let ended = assert_refused(use_key(&app, first_key).await, "key_rotated");
    let ended_at = time(&ended["error"]["details"]["expired_at"]);
    assert_eq!(ended_at, time(&second["previous_secret_expires_at"]));
    assert_refused(use_key(&app, original).await, "unauthorized");

    let (status, third) = rotate(&app, &admin, id, Some(json!({"grace_period": "3s"}))).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(
        use_key(&app, second_key).await.0,
        200,
        "within its 3 s grace"
    );
    let refused = refusal(&app, second_key, Duration::from_secs(15)).await;
    assert_refused(refused, "key_rotated");
    assert_eq!(use_key(&app, third["key"].as_str().unwrap()).await.0, 200);

    let events = app
        .list_events(&admin, "action=admin.api_key.rotate&limit=100")
        .await;
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    let text = serde_json::to_string(events).unwrap();
    for key in [
        original,
        first_key,
        second_key,
        third["key"].as_str().unwrap(),
    ] {
        let secret = &key[21..];
        assert!(!text.contains(secret), "an event holds a secret: {text}");
    }
    assert!(events.iter().all(|event| event["target_resource_id"] == id));
}

/// Rotation is refused for another organization's key (404), a revoked key
/// (409), a grace period over 30 days or not a duration (400 naming it), and
/// a caller whose role grants less than the key's (403).
#[actix_web::test]
async fn rotation_is_refused_where_it_must_be() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let other_admin = app.create_key("org-b", "org:admin").await;
    let member = app.create_key("org-a", "org:member").await;
    let id = id_of(&member);

    let (status, body) = rotate(&app, &other_admin, &id, None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(use_key(&app, &member).await.0, 200, "untouched");
    for grace in ["31d", "soon", "-1s"] {
        let (status, body) = rotate(&app, &admin, &id, Some(json!({"grace_period": grace}))).await;
        assert_eq!(status, 400, "{grace}: {body}");
        assert_eq!(error_fields(&body), ["grace_period"], "{body}");
    }

    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/roles/key-keeper",
            Some(&admin),
            Some(json!({"permissions": [
                {"resource": "organization.api_keys", "action": "create"},
                {"resource": "audit.events", "action": "read"},
            ]})),
        )
        .await;
    assert!((200..300).contains(&status), "{body}");
    let keeper = create(&app, &admin, json!({"role": "key-keeper"})).await;
    let keeper = keeper["key"].as_str().unwrap();
    let (status, body) = rotate(&app, keeper, &id, None).await;
    assert_eq!(status, 403, "an org:member key grants more: {body}");
    let peer = create(&app, &admin, json!({"role": "key-keeper"})).await;
    let (status, body) = rotate(&app, keeper, peer["id"].as_str().unwrap(), None).await;
    assert_eq!(status, 200, "a key of its own role: {body}");

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = rotate(&app, &admin, &id, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
}

/// A second instance, which cached the key before the rotation, accepts the
/// new secret at once (a secret it does not know makes it read the key again)
/// and refuses the old one within `auth.key_cache_ttl`.
#[actix_web::test]
async fn another_instance_sees_a_rotation_within_the_key_cache_ttl() {
    let ttl = Duration::from_secs(2);
    let app = spawn_app_with(|config| config.auth.key_cache_ttl = ttl).await;
    let other = spawn_beside(&app, |config| config.auth.key_cache_ttl = ttl).await;
    let admin = app.create_key("org-a", "org:admin").await;
    let member = app.create_key("org-a", "org:member").await;
    assert_eq!(
        use_key(&other, &member).await.0,
        200,
        "cached on the other instance"
    );

    let (status, rotated) = rotate(
        &app,
        &admin,
        &id_of(&member),
        Some(json!({"grace_period": "0s"})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let rotated_at = std::time::Instant::now();
    let new = rotated["key"].as_str().unwrap();
    wait_until(
        Duration::from_secs(5),
        "the new secret on the other instance",
        || async { (use_key(&other, new).await.0 == 200).then_some(()) },
    )
    .await;
    let refused = refusal(&other, &member, Duration::from_secs(10)).await;
    assert!(rotated_at.elapsed() <= ttl + Duration::from_secs(2));
    assert_refused(refused, "key_rotated");
}

/// The command line issues keys that expire (`--expires-in`, `--expires-at`,
/// refusing a past time or both), lists their expiry, and rotates a key
/// (`api-key rotate ID [--org ORG] [--grace-period D]`), refusing another
/// organization's key and a revoked one.
#[actix_web::test]
async fn the_command_line_issues_expiring_keys_and_rotates_them() {
    let app = spawn_app().await;
    let key = stdout(&cli(
        &app,
        &[
            "api-key",
            "create",
            "--org",
            "org-a",
            "--role",
            "org:member",
            "--expires-in",
            "2s",
        ],
    ));
    let key = key.trim();
    assert!(key.starts_with("awk_") && !key.contains('\n'), "{key:?}");
    let listing = stdout(&cli(&app, &["api-key", "list", "--org", "org-a"]));
    let row = listing
        .lines()
        .find(|line| line.contains(&id_of(key)))
        .unwrap();
    let expires_at: DateTime<Utc> = row.split('\t').nth(5).unwrap().parse().unwrap();
    assert!(expires_at > Utc::now() - chrono::Duration::seconds(2));
    let refused = refusal(&app, key, Duration::from_secs(15)).await;
    assert_refused(refused, "key_expired");

    let past = failure(&cli(
        &app,
        &[
            "api-key",
            "create",
            "--org",
            "org-a",
            "--role",
            "auditor",
            "--expires-at",
            "2020-01-01T00:00:00Z",
        ],
    ));
    assert!(past.contains("not in the future"), "{past}");
    let both = failure(&cli(
        &app,
        &[
            "api-key",
            "create",
            "--org",
            "org-a",
            "--role",
            "auditor",
            "--expires-in",
            "1d",
            "--expires-at",
            "2999-01-01T00:00:00Z",
        ],
    ));
    assert!(both.contains("--expires-at"), "{both}");

    let old = app.create_key("org-a", "org:member").await;
    let id = id_of(&old);
    let elsewhere = failure(&cli(&app, &["api-key", "rotate", &id, "--org", "org-b"]));
    assert!(elsewhere.contains(&id), "{elsewhere}");
    let too_long = failure(&cli(
        &app,
        &["api-key", "rotate", &id, "--grace-period", "31d"],
    ));
    assert!(too_long.contains("30 days"), "{too_long}");
    let new = stdout(&cli(
        &app,
        &[
            "api-key",
            "rotate",
            &id,
            "--org",
            "org-a",
            "--grace-period",
            "0s",
        ],
    ));
    let new = new.trim();
    assert_eq!(id_of(new), id);
    assert_eq!(use_key(&app, new).await.0, 200);
    assert_refused(use_key(&app, &old).await, "key_rotated");
    let recorded = app
        .count(
            "SELECT count(*) FROM audit_log WHERE organization_id = 'org-a' \
             AND action = 'admin.api_key.rotate' AND principal_id LIKE 'cli:%'",
            &[],
        )
        .await;
    assert_eq!(recorded, 1);

    stdout(&cli(&app, &["api-key", "revoke", &id]));
    let revoked = failure(&cli(&app, &["api-key", "rotate", &id]));
    assert!(revoked.contains("revoked"), "{revoked}");
}
