//! TLS to Redis: the worker against a real `redis-server` that speaks only
//! TLS, with certificates from a CA made at test time. With `rediss://` and
//! that CA it uses Redis (its cache keys land there); with another CA, or
//! without the client certificate the server asks for, Redis is reported
//! degraded in `/readyz` with the reason, and the worker still serves.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pki::{Issued, TestCa};
use common::process::run;
use common::servers::{redis_tls, Server};
use common::{spawn_app_with, wait_until, TestApp};
use serde_json::Value;

/// A TLS-only Redis with a certificate (names `localhost`, `127.0.0.1`)
/// from a new CA; `require_client_cert` as `--tls-auth-clients`.
fn tls_redis(require_client_cert: bool) -> (TestCa, Server) {
    let ca = TestCa::new("redis-ca");
    let cert = ca.server("redis", &["localhost", "127.0.0.1"]);
    let server = redis_tls(&ca.cert_file, &cert, require_client_cert);
    (ca, server)
}

fn url(server: &Server) -> String {
    format!("rediss://127.0.0.1:{}/0", server.port)
}

/// A worker using `server` over TLS, trusting `ca_file`, with `client`'s
/// certificate when given.
async fn worker(server: &Server, ca_file: &Path, client: Option<&Issued>) -> TestApp {
    let url = url(server);
    spawn_app_with(|config| {
        config.redis.url = url.parse().expect("a rediss:// URL");
        config.redis.ca_file = ca_file.to_path_buf();
        if let Some(client) = client {
            config.redis.client_cert = client.cert_file.clone();
            config.redis.client_key = client.key_file.clone();
        }
    })
    .await
}

/// `checks.redis` of `/readyz` once its status is `status`; asserts the
/// worker stays ready meanwhile (Redis is optional).
async fn redis_check(app: &TestApp, status: &str) -> Value {
    wait_until(Duration::from_secs(10), "the Redis check", || async {
        let (code, body) = app.get_json("/readyz").await;
        assert_eq!(code, 200, "the worker stays ready: {body}");
        let check = body["checks"]["redis"].clone();
        (check["status"] == status).then_some(check)
    })
    .await
}

/// The test's own TLS client of `server`, trusting `ca`.
fn direct_client(server: &Server, ca: &TestCa, client: Option<&Issued>) -> redis::Client {
    audit_worker::tls::install_default_provider();
    redis::Client::build_with_tls(
        url(server),
        redis::TlsCertificates {
            client_tls: client.map(|client| redis::ClientTlsConfig {
                client_cert: client.cert_pem.clone().into_bytes(),
                client_key: client.key_pem.clone().into_bytes(),
            }),
            root_cert: Some(std::fs::read(&ca.cert_file).unwrap()),
        },
    )
    .expect("a TLS client")
}

/// The keys under `prefix` in the Redis `client` reaches.
async fn keys(client: &redis::Client, prefix: &str) -> Vec<String> {
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("the test reaches Redis over TLS");
    redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .expect("KEYS")
}

/// With `rediss://` and the CA of the server's certificate, Redis is
/// reported up over TLS, and the query cache stores its answers there.
#[actix_web::test]
async fn a_worker_with_the_ca_uses_redis_over_tls() {
    let (ca, server) = tls_redis(false);
    let app = worker(&server, &ca.cert_file, None).await;

    let check = redis_check(&app, "ok").await;
    assert_eq!(check["tls"], true, "{check}");

    let key = app.create_key("org-a", "org:admin").await;
    app.ingest_action(&key, "over-tls").await;
    assert_eq!(app.listed_actions(&key).await, ["over-tls"]);
    let direct = direct_client(&server, &ca, None);
    let prefix = &app.config.cache.redis_prefix;
    let stored = wait_until(Duration::from_secs(10), "cache keys in Redis", || async {
        let stored = keys(&direct, prefix).await;
        (!stored.is_empty()).then_some(stored)
    })
    .await;
    assert!(
        stored
            .iter()
            .any(|key| key.starts_with(&format!("{prefix}q:"))),
        "a cached answer: {stored:?}"
    );
}

/// A worker trusting another CA refuses the server's certificate: Redis is
/// degraded with a message that says so, and the worker still ingests and
/// answers queries (from PostgreSQL).
#[actix_web::test]
async fn a_server_certificate_from_another_ca_is_refused_and_the_worker_still_serves() {
    let (_ca, server) = tls_redis(false);
    let other = TestCa::new("other-ca");
    let app = worker(&server, &other.cert_file, None).await;

    let check = redis_check(&app, "degraded").await;
    assert_eq!(check["tls"], true, "{check}");
    let message = check["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("certificate") && message.contains("UnknownIssuer"),
        "{check}"
    );

    let key = app.create_key("org-a", "org:admin").await;
    app.ingest_action(&key, "without-redis").await;
    assert_eq!(app.listed_actions(&key).await, ["without-redis"]);
}

/// A server that asks for client certificates (`--tls-auth-clients yes`)
/// accepts the worker that presents one from its CA, and not the worker
/// configured alike but without it.
#[actix_web::test]
async fn a_server_asking_for_a_client_certificate_accepts_only_the_worker_with_one() {
    let (ca, server) = tls_redis(true);
    let client = ca.client("worker", "audit-worker");

    let with = worker(&server, &ca.cert_file, Some(&client)).await;
    let check = redis_check(&with, "ok").await;
    assert_eq!(check["tls"], true, "{check}");

    let without = worker(&server, &ca.cert_file, None).await;
    let check = redis_check(&without, "degraded").await;
    assert!(check["message"].as_str().is_some(), "{check}");
    // The one with a certificate is still served: the refusal was this worker's.
    redis_check(&with, "ok").await;
}

/// `check-config` reads the TLS files the Redis keys name (set here through
/// the environment) and names the key and the file it cannot use; TLS files
/// with a clear-text URL are refused rather than ignored.
#[test]
fn check_config_names_the_redis_tls_key_at_fault() {
    let ca = TestCa::new("redis-config");
    let missing = ca.directory().join("absent.pem");
    let run = |settings: &[(&str, &str)]| {
        let output = run(&["check-config"], settings);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let ca_file = ca.cert_file.to_str().unwrap();

    let (ok, stderr) = run(&[
        ("AUDIT_WORKER__REDIS__URL", "rediss://127.0.0.1:6380/0"),
        ("AUDIT_WORKER__REDIS__CA_FILE", missing.to_str().unwrap()),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("`redis.ca_file`") && stderr.contains("absent.pem"),
        "{stderr}"
    );

    let (ok, stderr) = run(&[
        ("AUDIT_WORKER__REDIS__URL", "rediss://127.0.0.1:6380/0"),
        ("AUDIT_WORKER__REDIS__CA_FILE", ca_file),
        ("AUDIT_WORKER__REDIS__CLIENT_CERT", ca_file),
        ("AUDIT_WORKER__REDIS__CLIENT_KEY", ca_file),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("`redis.client_key`") && stderr.contains("no private key"),
        "{stderr}"
    );

    let (ok, stderr) = run(&[("AUDIT_WORKER__REDIS__CA_FILE", ca_file)]);
    assert!(!ok);
    assert!(
        stderr.contains("`redis.ca_file`") && stderr.contains("rediss://"),
        "{stderr}"
    );

    let (ok, stderr) = run(&[
        ("AUDIT_WORKER__REDIS__URL", "rediss://127.0.0.1:6380/0"),
        ("AUDIT_WORKER__REDIS__CA_FILE", ca_file),
    ]);
    assert!(ok, "{stderr}");
}
