//! HTTPS on the listener, with certificates from CAs made at test time and
//! real clients that verify the chain (reqwest with only the test CA
//! trusted, curl, a raw rustls stream): the API over HTTPS, HSTS only when
//! enabled, no TLS below 1.2, and a certificate replaced on reload while an
//! open connection carries on.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use audit_worker::config::Config;
use audit_worker::reload::CertificateReload;
use common::pki::{Issued, TestCa};
use common::process::run;
use common::{spawn_app, spawn_app_from_file, spawn_app_with, TestApp};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const HSTS: &str = "strict-transport-security";

/// A server certificate for the names clients use (`localhost`, `127.0.0.1`).
fn listener_certificate(ca: &TestCa) -> Issued {
    ca.server("listener", &["localhost", "127.0.0.1"])
}

/// A reqwest client trusting `ca_file` and nothing else.
fn client_trusting(ca_file: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca_file).expect("the CA file");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM CA"))
        .build()
        .expect("a client")
}

/// A worker serving HTTPS with a certificate from `ca`, after `adjust`; its
/// `client` trusts `ca` only.
async fn https_app(ca: &TestCa, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let cert = listener_certificate(ca);
    let mut app = spawn_app_with(|config| {
        config.http.tls.cert = cert.cert_file.clone();
        config.http.tls.key = cert.key_file.clone();
        adjust(config);
    })
    .await;
    app.client = client_trusting(&ca.cert_file);
    app
}

/// The worker answers a client that trusts its CA over HTTPS: health, and
/// an ingested event stored and listed. Without `hsts`, no HSTS header.
#[actix_web::test]
async fn an_https_worker_serves_a_client_that_trusts_its_ca() {
    let ca = TestCa::new("https-ca");
    let app = https_app(&ca, |_| {}).await;
    assert!(
        app.address.starts_with("https://localhost:"),
        "{}",
        app.address
    );

    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert!(
        health.headers().get(HSTS).is_none(),
        "HSTS is off by default"
    );

    let key = app.create_key("org-a", "org:admin").await;
    let receipts = app
        .ingest(&key, common::event("dr-who", "over-https"))
        .await;
    assert_eq!(receipts.len(), 1);
    assert_eq!(app.listed_actions(&key).await, ["over-https"]);
}

/// With `hsts`, every answer carries Strict-Transport-Security with the
/// configured max-age (and includeSubDomains), refusals and unknown routes
/// included; a plain-HTTP worker never sends it.
#[actix_web::test]
async fn hsts_is_on_every_https_answer_when_enabled_and_never_over_plain_http() {
    let ca = TestCa::new("hsts-ca");
    let app = https_app(&ca, |config| {
        config.http.tls.hsts = true;
        config.http.tls.hsts_max_age = std::time::Duration::from_secs(86_400);
        config.http.tls.hsts_include_subdomains = true;
    })
    .await;
    for (path, status) in [("/healthz", 200), ("/v1/events", 401), ("/nowhere", 404)] {
        let response = app.get(path).await;
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(
            response.headers().get(HSTS).and_then(|v| v.to_str().ok()),
            Some("max-age=86400; includeSubDomains"),
            "{path}"
        );
    }

    let plain = spawn_app().await;
    assert!(plain.address.starts_with("http://"), "{}", plain.address);
    let response = plain.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get(HSTS).is_none());
}

/// A client that trusts another CA, or only the public roots, cannot
/// connect: the chain is verified, and the error says why.
#[actix_web::test]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let ca = TestCa::new("trusted-ca");
    let app = https_app(&ca, |_| {}).await;
    let url = format!("{}/healthz", app.address);

    let other = TestCa::new("untrusted-ca");
    let error = client_trusting(&other.cert_file)
        .get(&url)
        .send()
        .await
        .expect_err("another CA's client is refused");
    let chain = format!("{:?}", error_chain(&error));
    assert!(chain.contains("UnknownIssuer"), "{chain}");

    let error = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .expect_err("the public roots do not vouch for the test CA");
    assert!(error.is_connect(), "{error:?}");

    // The trusting client still gets in: the refusals were the clients'.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// Every source of `error`, as text.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut chain = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    chain
}

/// `curl` (OpenSSL) with `args` against `url`, verifying with `ca_file`;
/// prints the HTTP version it spoke. Off the test's thread, which the
/// worker's server shares.
async fn curl(ca_file: &Path, url: &str, args: &[&str]) -> Output {
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(["--output", "/dev/null", "--write-out", "%{http_version}"])
        .arg("--cacert")
        .arg(ca_file)
        .args(args)
        .arg(url);
    tokio::task::spawn_blocking(move || command.output().expect("curl is installed"))
        .await
        .expect("curl ran")
}

/// TLS 1.0 and 1.1 are refused by the server: curl, allowed to offer them
/// (weak ciphers too), receives the server's handshake-failure alert. The
/// same curl gets in over TLS 1.2 and 1.3, speaking h2 (ALPN) when it
/// offers it.
#[actix_web::test]
async fn only_tls_1_2_and_1_3_are_accepted_and_alpn_offers_h2() {
    let ca = TestCa::new("versions-ca");
    let app = https_app(&ca, |_| {}).await;
    let url = format!("{}/healthz", app.address);
    let old = [
        "--tlsv1.0",
        "--tls-max",
        "1.1",
        "--ciphers",
        "DEFAULT@SECLEVEL=0",
    ];
    let refused = curl(&ca.cert_file, &url, &old).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "TLS 1.1 got in");
    assert!(stderr.contains("alert handshake failure"), "{stderr}");

    for (version, protocol, speaks) in [
        ("1.2", "--http1.1", "1.1"),
        ("1.2", "--http2", "2"),
        ("1.3", "--http2", "2"),
    ] {
        let version_flag = format!("--tlsv{version}");
        let args = [version_flag.as_str(), "--tls-max", version, protocol];
        let output = curl(&ca.cert_file, &url, &args).await;
        assert!(
            output.status.success(),
            "TLS {version}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), speaks, "{args:?}");
    }
}

/// An HTTP/1.1 connection over rustls, trusting `ca_file` only.
async fn open_connection(port: u16, ca_file: &Path) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("the CA file") {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("a trust anchor");
    }
    let config = rustls::ClientConfig::builder_with_provider(audit_worker::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the handshake succeeds")
}

/// `GET path` on the open `stream` (kept alive); the status, after reading
/// the whole answer.
async fn get_on(stream: &mut TlsStream<TcpStream>, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().expect("a length"));
            if received.len() >= end + 4 + length {
                return head[9..12].parse().expect("a status");
            }
        }
        let read = stream.read(&mut chunk).await.expect("read the answer");
        assert!(read > 0, "the connection closed: {text}");
        received.extend_from_slice(&chunk[..read]);
    }
}

/// A reload re-reads the certificate files at the same paths: new clients
/// get the new certificate (a client trusting only the old CA is refused),
/// a connection opened before carries on with the old one, and the change
/// is recorded. A broken file keeps the certificate in force and is recorded
/// as refused; changing the paths in the file needs a restart.
#[actix_web::test]
async fn a_reload_replaces_the_certificate_without_dropping_connections() {
    let (first_ca, second_ca) = (TestCa::new("first-ca"), TestCa::new("second-ca"));
    let first = listener_certificate(&first_ca);
    let config = common::test_config();
    let file = first_ca.directory().join("config.toml");
    let write_config = |cert: &Path| {
        let text = format!(
            "[http]\nbind = \"127.0.0.1:0\"\nworkers = 1\nshutdown_timeout = \"5s\"\n\
             [http.tls]\ncert = {cert:?}\nkey = {key:?}\n\
             [database]\nurl = \"{url}\"\n[cache]\nredis_prefix = \"{prefix}\"\n",
            cert = cert.to_str().unwrap(),
            key = first.key_file.to_str().unwrap(),
            url = config.database.url,
            prefix = config.cache.redis_prefix,
        );
        std::fs::write(&file, text).unwrap();
    };
    write_config(&first.cert_file);
    let app = spawn_app_from_file(&file).await;
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();

    let mut open = open_connection(port, &first_ca.cert_file).await;
    assert_eq!(get_on(&mut open, "/healthz").await, 200);

    let second = listener_certificate(&second_ca);
    std::fs::write(&first.cert_file, &second.cert_pem).unwrap();
    std::fs::write(&first.key_file, &second.key_pem).unwrap();
    let report = app.reloader.reload("test").await.expect("a valid file");
    assert!(
        matches!(report.certificate, Some(CertificateReload::Replaced { .. })),
        "{:?}",
        report.certificate
    );

    let url = format!("{}/healthz", app.address);
    let status = client_trusting(&second_ca.cert_file)
        .get(&url)
        .send()
        .await
        .expect("the new CA's client gets in")
        .status();
    assert_eq!(status, 200);
    client_trusting(&first_ca.cert_file)
        .get(&url)
        .send()
        .await
        .expect_err("the old certificate is no longer presented");

    assert_eq!(get_on(&mut open, "/healthz").await, 200, "kept alive");
    let presented = open.get_ref().1.peer_certificates().unwrap()[0].clone();
    let first_leaf = CertificateDer::from_pem_slice(first.cert_pem.as_bytes()).unwrap();
    assert_eq!(
        presented, first_leaf,
        "the open connection is the one opened before"
    );

    std::fs::write(&first.cert_file, "not a certificate\n").unwrap();
    let report = app.reloader.reload("test").await.expect("a valid file");
    match &report.certificate {
        Some(CertificateReload::Kept { reason }) => {
            assert!(
                reason.contains("http.tls.cert") && reason.contains("listener.crt"),
                "{reason}"
            )
        }
        other => panic!("the broken file is refused: {other:?}"),
    }
    let status = client_trusting(&second_ca.cert_file)
        .get(&url)
        .send()
        .await
        .expect("the certificate in force stays")
        .status();
    assert_eq!(status, 200);

    let history = app
        .database()
        .await
        .query(
            "SELECT reason FROM config_change_event WHERE field = 'http.tls.cert' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let reasons: Vec<String> = history.iter().map(|row| row.get(0)).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("certificate replaced"),
        "{reasons:?}"
    );
    assert!(reasons[1].starts_with("rejected: "), "{reasons:?}");

    std::fs::write(&first.cert_file, &second.cert_pem).unwrap();
    write_config(&second.cert_file);
    let report = app.reloader.reload("test").await.expect("a valid file");
    assert!(
        report
            .needs_restart
            .iter()
            .any(|change| change.field == "http.tls.cert"),
        "{:?}",
        report.needs_restart
    );
}

/// `check-config` refuses a certificate without its key and a key that is
/// not the certificate's, naming the key; the environment reaches the
/// nested `[http.tls]` table (`AUDIT_WORKER__HTTP__TLS__CERT`).
#[test]
fn check_config_names_the_listener_tls_key_at_fault() {
    let ca = TestCa::new("listener-config");
    let (cert, other) = (
        listener_certificate(&ca),
        ca.server("other", &["localhost"]),
    );
    let run = |settings: &[(&str, &str)]| {
        let output = run(&["check-config"], settings);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let path = |issued: &Path| issued.to_str().unwrap().to_owned();
    let (cert_file, cert_key, other_key) = (
        path(&cert.cert_file),
        path(&cert.key_file),
        path(&other.key_file),
    );
    let (ok, _, stderr) = run(&[("AUDIT_WORKER__HTTP__TLS__CERT", &cert_file)]);
    assert!(!ok);
    assert!(stderr.contains("`http.tls.key`"), "{stderr}");

    let (ok, _, stderr) = run(&[
        ("AUDIT_WORKER__HTTP__TLS__CERT", &cert_file),
        ("AUDIT_WORKER__HTTP__TLS__KEY", &other_key),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("`http.tls.key`") && stderr.contains("does not fit"),
        "{stderr}"
    );

    let (ok, stdout, stderr) = run(&[
        ("AUDIT_WORKER__HTTP__TLS__CERT", &cert_file),
        ("AUDIT_WORKER__HTTP__TLS__KEY", &cert_key),
        ("AUDIT_WORKER__HTTP__TLS__HSTS", "true"),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&cert_file), "{stdout}");
    assert!(stdout.contains("\"hsts\": true"), "{stdout}");
}
