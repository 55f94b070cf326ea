//! The worker's own keys: given as `file:` and `env:` references, refused
//! when production would generate them into the database, and rotated
//! (signing: old checkpoints still verify; encryption: secrets and pseudonym
//! originals re-sealed) as recorded operations.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use audit_worker::config::{Config, Secret};
use audit_worker::deliveries::crypto::SecretBox;
use audit_worker::deliveries::destination::DestinationConfig;
use audit_worker::gdpr::pseudonym::PseudonymKeys;
use audit_worker::secrets::KeyRing;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::process::run;
use common::receiver::Receiver;
use common::temp_dir::TempDir;
use common::{event, spawn_app, spawn_app_with, spawn_beside, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn key(byte: u8) -> String {
    STANDARD.encode([byte; 32])
}

fn reference(path: &Path) -> String {
    format!("file:{}", path.display())
}

/// `file:` and `env:` references are read at load, printed as references,
/// and name their key when they cannot be read.
#[actix_web::test]
async fn keys_are_read_from_files_and_the_environment() {
    let folder = TempDir::new("keys");
    let signing = folder.write("signing.key", format!("{}\n", key(3)));
    // SAFETY of the test: nextest runs each test in a process of its own.
    std::env::set_var("AW_TEST_COMMITMENT_KEY", key(4));
    let file = folder.write(
        "config.toml",
        format!(
            "[integrity]\nsigning_key = \"{}\"\ncommitment_key = \"env:AW_TEST_COMMITMENT_KEY\"\n",
            reference(&signing)
        ),
    );
    let config = Config::load(Some(&file)).expect("the references resolve");
    assert_eq!(config.integrity.signing_key.expose(), key(3));
    assert_eq!(config.integrity.commitment_key.expose(), key(4));
    let printed = serde_json::to_value(&config).unwrap();
    assert_eq!(printed["integrity"]["signing_key"], reference(&signing));
    assert_eq!(
        printed["integrity"]["commitment_key"],
        "env:AW_TEST_COMMITMENT_KEY"
    );

    let app = spawn_app_with(|c| c.integrity = config.integrity.clone()).await;
    let (status, published) = app
        .call(Method::GET, "/v1/integrity/public-key", None, None)
        .await;
    assert_eq!(status, 200, "{published}");
    let expected = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
    assert_eq!(
        published["public_key"],
        STANDARD.encode(expected.as_bytes())
    );

    for (written, missing) in [
        ("file:/nonexistent/signing.key", "/nonexistent/signing.key"),
        ("env:AW_TEST_NO_SUCH_VARIABLE", "AW_TEST_NO_SUCH_VARIABLE"),
    ] {
        let bad = folder.write(
            "bad.toml",
            format!("[integrity]\nsigning_key = \"{written}\"\n"),
        );
        let error = Config::load(Some(&bad)).unwrap_err().to_string();
        assert!(error.contains("integrity.signing_key"), "{error}");
        assert!(error.contains(missing), "{error}");
    }
    let empty = folder.write("empty.key", "\n");
    let bad = folder.write(
        "bad.toml",
        format!("[delivery]\nencryption_key = \"{}\"\n", reference(&empty)),
    );
    let error = Config::load(Some(&bad)).unwrap_err().to_string();
    assert!(
        error.contains("delivery.encryption_key") && error.contains("empty"),
        "{error}"
    );
}

/// In production, `check-config` and `serve` refuse keys that would be
/// generated into the database and a database reached in clear, one line
/// per reason; configured keys on a local database pass.
#[test]
fn production_refuses_generated_keys_and_a_database_in_clear() {
    let production = ("AUDIT_WORKER__ENVIRONMENT", "production");
    for command in ["check-config", "serve"] {
        let output = run(&[command], &[production]);
        assert!(!output.status.success(), "{command} must refuse");
        let stderr = text(&output.stderr);
        for key in [
            "integrity.commitment_key",
            "integrity.signing_key",
            "delivery.encryption_key",
            "gdpr.pseudonym_key",
            "gdpr.encryption_key",
        ] {
            let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(key)).collect();
            assert_eq!(lines.len(), 1, "{command}: one line for {key}: {stderr}");
            assert!(lines[0].contains("generated into the database"), "{stderr}");
        }
    }

    let folder = TempDir::new("keys");
    let signing = reference(&folder.write("signing.key", key(1)));
    let keys = [
        production,
        ("AUDIT_WORKER__INTEGRITY__SIGNING_KEY", signing.as_str()),
        ("AUDIT_WORKER__INTEGRITY__COMMITMENT_KEY", "env:AW_TEST_KEY"),
        ("AUDIT_WORKER__DELIVERY__ENCRYPTION_KEY", "env:AW_TEST_KEY"),
        ("AUDIT_WORKER__GDPR__PSEUDONYM_KEY", "env:AW_TEST_KEY"),
        ("AUDIT_WORKER__GDPR__ENCRYPTION_KEY", "env:AW_TEST_KEY"),
        ("AW_TEST_KEY", &key(2)),
        ("AUDIT_WORKER__DATABASE__CONNECT_TIMEOUT", "1s"),
    ];
    let output = run(&["check-config"], &keys);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&signing),
        "the reference is printed: {stdout}"
    );
    assert!(!stdout.contains(&key(2)), "never the value: {stdout}");

    let remote = [
        &keys[..],
        &[
            (
                "AUDIT_WORKER__DATABASE__URL",
                "postgres://audit@192.0.2.10:5432/audit",
            ),
            ("AUDIT_WORKER__REDIS__URL", "redis://cache.internal:6379/0"),
        ],
    ]
    .concat();
    let output = run(&["check-config"], &remote);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    let reasons: Vec<&str> = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("- "))
        .collect();
    assert_eq!(reasons.len(), 2, "{stderr}");
    assert!(
        reasons[0].contains("database.url") && reasons[0].contains("sslmode=require"),
        "{stderr}"
    );
    assert!(
        reasons[1].contains("redis.url") && reasons[1].contains("rediss://"),
        "{stderr}"
    );
}

async fn public_keys(app: &TestApp) -> Value {
    let (status, published) = app
        .call(Method::GET, "/v1/integrity/public-key", None, None)
        .await;
    assert_eq!(status, 200, "{published}");
    published
}

async fn checkpoint(app: &TestApp, key: &str) -> Value {
    let (status, created) = app
        .call(Method::POST, "/v1/integrity/checkpoints", Some(key), None)
        .await;
    assert_eq!(status, 201, "{created}");
    created["checkpoints"][0]["checkpoint"].clone()
}

fn signer(checkpoint: &Value) -> String {
    let payload: Value =
        serde_json::from_str(checkpoint["payload"].as_str().expect("a payload")).unwrap();
    payload["key_id"].as_str().unwrap().to_owned()
}

/// `keys rotate --kind signing`: a worker started after it signs with the new
/// key; both keys are published; checkpoints of either key verify.
#[actix_web::test]
async fn a_rotated_signing_key_signs_new_checkpoints_and_old_ones_still_verify() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let first = app
        .ingest(
            &key,
            vec![event("u1", "record.read"), event("u2", "record.read")],
        )
        .await;
    let before = checkpoint(&app, &key).await;
    let old_key_id = public_keys(&app).await["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(signer(&before), old_key_id);

    let url = app.config.database.url.to_string();
    let output = run(
        &["keys", "rotate", "--kind", "signing"],
        &[("AUDIT_WORKER__DATABASE__URL", &url)],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let rotation: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rotation["previous_key_id"], old_key_id.as_str());
    assert_eq!(rotation["stored_in"], "database");
    let new_key_id = rotation["key_id"].as_str().unwrap().to_owned();
    assert_ne!(new_key_id, old_key_id);

    let restarted = spawn_beside(&app, |_| {}).await;
    let published = public_keys(&restarted).await;
    assert_eq!(published["key_id"], new_key_id.as_str());
    let listed: Vec<(String, bool)> = published["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key_id"].as_str().unwrap().to_owned(),
                k["current"] == true,
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![(old_key_id.clone(), false), (new_key_id.clone(), true)]
    );

    restarted
        .ingest(&key, vec![event("u3", "record.read")])
        .await;
    let after = checkpoint(&restarted, &key).await;
    assert_eq!(signer(&after), new_key_id);
    for (checkpoint, which) in [(&before, "old"), (&after, "new")] {
        let report = restarted
            .verify_with(&key, json!({ "checkpoint": checkpoint }))
            .await;
        assert_eq!(report["valid"], true, "{which} key's checkpoint: {report}");
    }
    // The independent verifier picks each proof's key from the published list.
    let folder = TempDir::new("keys");
    let listing = folder.write("public-key.json", published.to_string());
    let id = first[0]["id"].as_i64().unwrap();
    let seq =
        serde_json::from_str::<Value>(before["payload"].as_str().unwrap()).unwrap()["seq"].clone();
    for (checkpoint, signed_by) in [
        (seq.to_string(), &old_key_id),
        ("latest".into(), &new_key_id),
    ] {
        let (status, proof) = restarted
            .call(
                Method::GET,
                &format!("/v1/events/{id}/proof?checkpoint={checkpoint}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(status, 200, "{proof}");
        assert_eq!(&signer(&proof["checkpoint"]), signed_by);
        let file = folder.write("proof.json", proof.to_string());
        let output = Command::new("python3")
            .args(["docs/vectors/reference.py", "verify-proof"])
            .args([&file, &listing])
            .output()
            .expect("python3 runs");
        assert_eq!(
            text(&output.stdout).trim(),
            "valid",
            "{}",
            text(&output.stderr)
        );
    }
    let operators = &app.config.operations.organization;
    assert_eq!(
        app.count(
            "SELECT count(*) FROM audit_log WHERE organization_id = $1 \
             AND action = 'admin.signing_key.rotate' AND target_resource_id = $2",
            &[operators, &new_key_id],
        )
        .await,
        1
    );
}

/// A signing key kept in a file is replaced in place (mode 0600); one given
/// in the environment needs `--out`.
#[actix_web::test]
async fn a_signing_key_file_is_rewritten_and_an_environment_key_needs_out() {
    let folder = TempDir::new("keys");
    let file = folder.write("signing.key", key(5));
    let app = spawn_app_with(|c| {
        c.integrity.signing_key = Secret::resolve(&reference(&file)).unwrap();
    })
    .await;
    let rotation = audit_worker::admin::rotate_signing_key(&app.config, None)
        .await
        .expect("rotated");
    let written = std::fs::read_to_string(&file).unwrap();
    assert_ne!(written.trim(), key(5));
    let seed: [u8; 32] = STANDARD.decode(written.trim()).unwrap().try_into().unwrap();
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    assert_eq!(
        rotation.key_id,
        audit_worker::integrity::keys::key_id(&public)
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!folder.path().join("signing.key.new").exists());

    std::env::set_var("AW_TEST_SIGNING_KEY", key(6));
    let mut from_environment = app.config.clone();
    from_environment.integrity.signing_key = Secret::resolve("env:AW_TEST_SIGNING_KEY").unwrap();
    let error = audit_worker::admin::rotate_signing_key(&from_environment, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("--out") && error.contains("env:AW_TEST_SIGNING_KEY"),
        "{error}"
    );
    let out = folder.path().join("next.key");
    audit_worker::admin::rotate_signing_key(&from_environment, Some(&out))
        .await
        .expect("written to --out");
    assert_eq!(
        STANDARD
            .decode(std::fs::read_to_string(&out).unwrap().trim())
            .unwrap()
            .len(),
        32
    );
}

/// The key a worker sealed with before the operator's switch.
const OLD_DELIVERY_KEY: [u8; 32] = [11; 32];
const OLD_GDPR_KEY: [u8; 32] = [21; 32];

/// Stores a webhook destination and a pseudonym mapping as a worker running
/// with the old keys left them; returns the destination's id.
async fn sealed_under_old_keys(app: &TestApp, url: &str) -> i64 {
    let sealed =
        DestinationConfig::validate("webhook", &json!({"url": url, "secret": SECRET}), None)
            .expect("a valid configuration")
            .sealed(&SecretBox::new(&KeyRing::single(OLD_DELIVERY_KEY)));
    let database = app.database().await;
    let original = PseudonymKeys::new(&[1; 32], &KeyRing::single(OLD_GDPR_KEY))
        .seal_original("org-a", "carol");
    database
        .execute(
            "INSERT INTO pseudonym_mapping (organization_id, pseudonym_id, original_id, strategy, subject_commitment) \
             VALUES ('org-a', 'pse_before_rotation', $1, 'encryption', repeat('a', 64))",
            &[&original],
        )
        .await
        .expect("insert a mapping");
    database
        .query_one(
            "INSERT INTO delivery_destinations (organization_id, type, label, config) \
             VALUES ('org-a', 'webhook', 'r', $1) RETURNING id",
            &[&tokio_postgres::types::Json(&sealed)],
        )
        .await
        .expect("insert a destination")
        .get(0)
}

/// `POST /v1/destinations/{id}/test` on `app`: that worker opens the
/// destination's secrets to connect (no queue, so no other worker answers).
async fn test_destination(app: &TestApp, key: &str, destination: i64) -> (u16, Value) {
    app.call(
        Method::POST,
        &format!("/v1/destinations/{destination}/test"),
        Some(key),
        None,
    )
    .await
}

async fn reversed(app: &TestApp, key: &str, pseudonym: &str) -> Value {
    let (status, reversed) = app
        .call(
            Method::GET,
            &format!("/v1/gdpr/pseudonyms/{pseudonym}"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{reversed}");
    reversed["original_id"].clone()
}

/// Configured keys, rotated without downtime: the workers run with the new
/// key current and the old one previous (values sealed under either open);
/// the command re-seals; then the new key alone opens everything.
#[actix_web::test]
async fn encryption_rotation_reseals_destination_secrets_and_pseudonym_originals() {
    let app = spawn_app_with(|c| {
        c.delivery.encryption_key = Secret::new(key(12));
        c.delivery.previous_encryption_keys = vec![Secret::new(STANDARD.encode(OLD_DELIVERY_KEY))];
        c.gdpr.encryption_key = Secret::new(key(22));
        c.gdpr.previous_encryption_keys = vec![Secret::new(STANDARD.encode(OLD_GDPR_KEY))];
    })
    .await;
    let admin = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let destination = sealed_under_old_keys(&app, &receiver.url).await;
    let delivery = app.deliver(&admin, destination, json!({"n": 1})).await;
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert!(receiver.received()[0].signed_with(SECRET));
    assert_eq!(reversed(&app, &admin, "pse_before_rotation").await, "carol");

    let mut forgotten = app.config.clone();
    forgotten.delivery.previous_encryption_keys.clear();
    let error = audit_worker::admin::rotate_encryption_keys(&forgotten)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("destination {destination}")) && error.contains("org-a"),
        "{error}"
    );

    let report = audit_worker::admin::rotate_encryption_keys(&app.config)
        .await
        .expect("re-sealed");
    assert_eq!(report.destination_secrets_resealed, 1);
    assert_eq!(report.pseudonym_originals_resealed, 1);
    assert_eq!(report.organizations.get("org-a"), Some(&2));
    assert!(report.generated.is_empty());
    let again = audit_worker::admin::rotate_encryption_keys(&app.config)
        .await
        .unwrap();
    assert_eq!(
        (
            again.destination_secrets_resealed,
            again.pseudonym_originals_resealed
        ),
        (0, 0),
        "nothing is left under the old keys"
    );

    // The new keys alone open what is stored...
    let database = app.database().await;
    let stored: Value = database
        .query_one(
            "SELECT config FROM delivery_destinations WHERE id = $1",
            &[&destination],
        )
        .await
        .unwrap()
        .get(0);
    let new_only = SecretBox::new(&KeyRing::single([12; 32]));
    assert_eq!(
        new_only.open(stored["secret"].as_str().unwrap()).unwrap(),
        SECRET
    );
    // ...and a worker given only them works with it.
    let restarted = spawn_beside(&app, |c| {
        c.delivery.encryption_key = Secret::new(key(12));
        c.gdpr.encryption_key = Secret::new(key(22));
    })
    .await;
    assert_eq!(
        reversed(&restarted, &admin, "pse_before_rotation").await,
        "carol"
    );
    let (status, tested) = test_destination(&restarted, &admin, destination).await;
    assert_eq!(status, 200, "the secret opens: {tested}");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM audit_log WHERE organization_id = 'org-a' \
             AND action = 'admin.encryption_key.rotate'",
            &[],
        )
        .await,
        1,
        "the tenant's trail records the re-seal of its secrets"
    );
}

/// Generated keys (development): the command replaces them and keeps the old
/// ones as previous keys; a worker started after it opens what was sealed.
#[actix_web::test]
async fn generated_encryption_keys_are_replaced_and_the_old_ones_kept_as_previous() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let destination = app
        .create_destination(
            &admin,
            json!({"type": "webhook", "label": "r", "config": {"url": receiver.url, "secret": SECRET}}),
        )
        .await;
    let url = app.config.database.url.to_string();
    let output = run(
        &["keys", "rotate", "--kind", "encryption"],
        &[("AUDIT_WORKER__DATABASE__URL", &url)],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["generated"],
        json!(["delivery.encryption_key", "gdpr.encryption_key"])
    );
    assert_eq!(report["destination_secrets_resealed"], 1);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM worker_secrets WHERE starts_with(name, 'delivery.encryption_key:previous:')",
            &[],
        )
        .await,
        1
    );

    let restarted = spawn_beside(&app, |_| {}).await;
    let (status, tested) = test_destination(&restarted, &admin, destination).await;
    assert_eq!(status, 200, "the re-sealed secret opens: {tested}");
}
