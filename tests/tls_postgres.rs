//! TLS to PostgreSQL against real clusters of the tests' own (PostgreSQL 15,
//! a certificate from a CA made at test time, naming `localhost` only): what
//! each `sslmode` accepts and refuses, client-certificate login, and what
//! `/readyz` and `check-config` say of the negotiated state.

mod common;

use std::process::Output;
use std::time::Instant;

use audit_worker::config::Config;
use audit_worker::db::{self, DbError};
use audit_worker::Application;
use common::pki::TestCa;
use common::process::{run, stderr};
use common::{event, servers, spawn_app_with, test_config, unique_database_name, TestApp};
use serde_json::Value;

/// A worker whose database URL is `url` (the test's own cluster).
async fn worker_at(url: &str) -> TestApp {
    let url = url.parse().expect("a valid URL");
    spawn_app_with(move |config| config.database.url = url).await
}

/// Ingests one event (201 asserted) and returns `/readyz`'s
/// `checks.postgres.tls`, after asserting the worker is ready.
async fn ingest_and_read_tls(app: &TestApp) -> Value {
    let key = app.create_key("org-tls", "org:admin").await;
    let receipts = app
        .ingest(&key, event("dr-tls", "patient.record.read"))
        .await;
    assert_eq!(receipts.len(), 1);
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
    body["checks"]["postgres"]["tls"].clone()
}

/// The configuration of a worker at `url`, for a start expected to fail.
fn config_at(url: &str) -> Config {
    let mut config = test_config();
    config.database.url = url.parse().expect("a valid URL");
    config
}

/// Builds a worker at `url`, expecting the start to fail: the error, after
/// asserting it came well before `database.startup_timeout` (no retrying).
async fn start_fails(url: &str) -> String {
    let config = config_at(url);
    let patience = config.database.startup_timeout;
    let started = Instant::now();
    let error = match Application::build(config).await {
        Ok(_) => panic!("the worker started at {url}"),
        Err(error) => error.to_string(),
    };
    assert!(
        started.elapsed() < patience / 2,
        "failed after {:?}, not at once: {error}",
        started.elapsed()
    );
    error
}

/// `audit-worker check-config` with `database.url` = `url` and nothing else
/// from the environment.
fn check_config(url: &str) -> Output {
    run(
        &["check-config"],
        &[
            ("AUDIT_WORKER__DATABASE__URL", url),
            ("AUDIT_WORKER__DATABASE__CONNECT_TIMEOUT", "5s"),
        ],
    )
}

/// `verify-full` with the CA and the certificate's host name runs the worker
/// over TLS (and `/readyz` says so); with a host name the certificate does
/// not hold, or another CA, the start fails at once, saying which; `verify-ca`
/// accepts the other host name, and `require` checks the chain only when
/// given a root certificate.
#[actix_web::test]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let ca = TestCa::new("pg-ca");
    let other_ca = TestCa::new("other-ca");
    let cluster = servers::postgres(Some(&ca));
    let trust =
        |ca: &TestCa, mode: &str| format!("sslmode={mode}&sslrootcert={}", ca.cert_file.display());

    let app = worker_at(&cluster.url(
        "postgres",
        "localhost",
        &unique_database_name(),
        &trust(&ca, "verify-full"),
    ))
    .await;
    let tls = ingest_and_read_tls(&app).await;
    assert_eq!(tls["sslmode"], "verify-full", "{tls}");
    assert_eq!(tls["negotiated"], true, "{tls}");
    assert!(
        tls["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{tls}"
    );
    assert!(tls["cipher"].is_string(), "{tls}");

    let wrong_host = cluster.url(
        "postgres",
        "127.0.0.1",
        &unique_database_name(),
        &trust(&ca, "verify-full"),
    );
    let error = start_fails(&wrong_host).await;
    assert!(
        error.contains(
            "TLS handshake with 127.0.0.1 failed: the server's certificate is not valid for this host name"
        ) && error.contains("(sslmode=verify-full)"),
        "{error}"
    );

    let any_host = config_at(&cluster.url(
        "postgres",
        "127.0.0.1",
        "postgres",
        &trust(&ca, "verify-ca"),
    ));
    let state = db::connection_tls(&any_host.database)
        .await
        .expect("verify-ca accepts a certificate for another host name");
    assert!(state.negotiated);

    let error = start_fails(&cluster.url(
        "postgres",
        "localhost",
        &unique_database_name(),
        &trust(&other_ca, "verify-full"),
    ))
    .await;
    assert!(
        error.contains(
            "TLS handshake with localhost failed: the server's certificate is not signed by the CA in sslrootcert (sslmode=verify-full)"
        ),
        "{error}"
    );

    // `require` with a root certificate checks the chain (as libpq); without one, nothing.
    let checked = config_at(&cluster.url(
        "postgres",
        "localhost",
        "postgres",
        &trust(&other_ca, "require"),
    ));
    let error = db::connection_tls(&checked.database).await.unwrap_err();
    assert!(matches!(error, DbError::Tls { .. }), "{error}");
    let unchecked = config_at(&cluster.url("postgres", "127.0.0.1", "postgres", "sslmode=require"));
    let state = db::connection_tls(&unchecked.database)
        .await
        .expect("require alone encrypts without checking the certificate");
    assert!(state.negotiated);
    assert_eq!(state.sslmode, "require");
}

/// The role `certuser` logs in with its client certificate (`sslcert`,
/// `sslkey`) and the worker runs as it; without the certificate PostgreSQL
/// refuses it. `check-config` reports the negotiated TLS, exits non-zero for
/// a failed verification and zero for an unreachable server.
#[actix_web::test]
async fn a_client_certificate_logs_in_and_check_config_reports_the_tls_state() {
    let ca = TestCa::new("pg-ca");
    let cluster = servers::postgres(Some(&ca));
    let client = ca.client("certuser", "certuser");
    let database = unique_database_name();
    let with_certificate = |host: &str| {
        cluster.url(
            "certuser",
            host,
            &database,
            &format!(
                "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
                ca.cert_file.display(),
                client.cert_file.display(),
                client.key_file.display()
            ),
        )
    };

    let app = worker_at(&with_certificate("localhost")).await;
    let tls = ingest_and_read_tls(&app).await;
    assert_eq!(tls["negotiated"], true, "{tls}");
    let user: String = app
        .database()
        .await
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "certuser");

    let without = config_at(&cluster.url(
        "certuser",
        "localhost",
        &database,
        &format!("sslmode=verify-full&sslrootcert={}", ca.cert_file.display()),
    ));
    let error = db::connect(&without.database, &without.database.url)
        .await
        .expect_err("certuser without a certificate is refused");
    let refusal = error.as_db_error().expect("PostgreSQL's refusal");
    assert_eq!(refusal.code().code(), "28000", "{}", refusal.message());
    assert!(
        refusal.message().contains("certificate"),
        "{}",
        refusal.message()
    );

    let output = check_config(&with_certificate("localhost"));
    assert!(output.status.success(), "{}", stderr(&output));
    let line = stderr(&output);
    assert!(
        line.contains("database: TLS 1.") && line.contains("sslmode=verify-full"),
        "{line}"
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("configuration is valid\n"),
        "stdout stays the configuration"
    );

    let output = check_config(&with_certificate("127.0.0.1"));
    assert!(
        !output.status.success(),
        "a failed verification fails check-config"
    );
    assert!(
        stderr(&output).contains("not valid for this host name"),
        "{}",
        stderr(&output)
    );

    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = nobody.local_addr().unwrap().port();
    drop(nobody);
    let output = check_config(&format!(
        "postgres://postgres@127.0.0.1:{port}/x?sslmode=require"
    ));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("database: could not connect"),
        "{}",
        stderr(&output)
    );
}

/// Against a server without TLS, `require` fails the start at once, saying
/// the server does not support TLS; `prefer` connects in clear, and
/// `/readyz` and `check-config` say it is not encrypted.
#[actix_web::test]
async fn require_refuses_a_server_without_tls_and_prefer_connects_in_clear() {
    let cluster = servers::postgres(None);

    let error = start_fails(&cluster.url(
        "postgres",
        "127.0.0.1",
        &unique_database_name(),
        "sslmode=require",
    ))
    .await;
    assert!(
        error.contains(
            "TLS handshake with 127.0.0.1 failed: the server does not support TLS (sslmode=require)"
        ),
        "{error}"
    );

    let prefer = cluster.url(
        "postgres",
        "127.0.0.1",
        &unique_database_name(),
        "sslmode=prefer",
    );
    let app = worker_at(&prefer).await;
    let tls = ingest_and_read_tls(&app).await;
    assert_eq!(tls["negotiated"], false, "{tls}");
    assert_eq!(tls["sslmode"], "prefer", "{tls}");
    assert!(tls.get("version").is_none(), "{tls}");

    let output = check_config(&prefer);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output)
            .contains("database: not encrypted (sslmode=prefer: the server offers no TLS)"),
        "{}",
        stderr(&output)
    );
}
