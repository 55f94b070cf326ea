//! The delivery network policy (server-side request forgery): destinations
//! cannot reach the worker's own networks. Hosts are refused when a
//! destination is saved, whatever spelling the address takes, and again on
//! every connection, on the addresses the name resolves to then, for every
//! kind, against real receivers on loopback (which these tests do not allow).

mod common;

use actix_web::{web, App, HttpResponse, HttpServer};
use audit_worker::config::{Config, Secret};
use audit_worker::deliveries::crypto::SecretBox;
use audit_worker::deliveries::destination::DestinationConfig;
use base64::Engine;
use common::receiver::Receiver;
use common::{servers, spawn_app_with, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// The policy as shipped: loopback refused like every internal network.
fn shipped_policy(config: &mut Config) {
    config.delivery.allow_loopback = false;
}

const LOOPBACK_REFUSED: &str = "is a loopback address (delivery.allow_loopback is false)";

/// `POST /v1/destinations` of a `kind` destination; asserts nothing.
async fn create(app: &TestApp, key: &str, kind: &str, config: Value) -> (u16, Value) {
    app.try_create_destination(key, json!({"type": kind, "label": kind, "config": config}))
        .await
}

/// Asserts a 400 whose first problem is `field`.
fn assert_refused(status: u16, body: &Value, field: &str, what: &str) {
    assert_eq!(status, 400, "{what}: {body}");
    assert_eq!(
        body["error"]["details"][0]["field"], field,
        "{what}: {body}"
    );
}

fn email(host: &str) -> Value {
    json!({"host": host, "port": 25, "tls": "none", "from": "audit@worker.test", "to": ["o@clinic.test"]})
}

fn ftp(host: &str) -> Value {
    json!({"host": host, "username": "user", "password": "pass"})
}

/// Every spelling of an internal address in a webhook URL is refused when
/// the destination is created or changed, naming `config.url`: the metadata
/// address, private and shared ranges, loopback as a decimal, hexadecimal,
/// octal or short number, IPv6 and IPv4-mapped IPv6, and a name that
/// resolves to loopback.
#[actix_web::test]
async fn webhooks_to_internal_addresses_are_refused_when_saved() {
    let app = spawn_app_with(shipped_policy).await;
    let key = app.create_key("org-a", "org:admin").await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "https://localhost:8443/hook",
    ] {
        let (status, body) = create(&app, &key, "webhook", json!({"url": url})).await;
        assert_refused(status, &body, "config.url", url);
    }

    let (status, body) = create(
        &app,
        &key,
        "webhook",
        json!({"url": "https://93.184.216.34/hook"}),
    )
    .await;
    assert_eq!(status, 201, "a public address is fine: {body}");
    let id = body["id"].as_i64().unwrap();
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/destinations/{id}"),
            Some(&key),
            Some(json!({"config": {"url": "http://169.254.169.254/latest/meta-data/"}})),
        )
        .await;
    assert_refused(status, &body, "config.url", "PATCH");
    let message = body["error"]["details"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("address 169.254.169.254")
            && message.contains("delivery.denied_networks: 169.254.0.0/16"),
        "{message}"
    );
}

/// The hosts of email and FTP destinations, and the endpoint of S3 ones,
/// are held to the same rule, naming `config.host` or `config.endpoint`.
#[actix_web::test]
async fn email_ftp_and_s3_hosts_on_internal_networks_are_refused_when_saved() {
    let app = spawn_app_with(shipped_policy).await;
    let key = app.create_key("org-a", "org:admin").await;
    for host in [
        "169.254.169.254",
        "10.0.0.1",
        "192.168.0.10",
        "127.0.0.1",
        "2130706433",
        "0x7f000001",
        "::1",
        "[::ffff:127.0.0.1]",
        "localhost",
    ] {
        let (status, body) = create(&app, &key, "email", email(host)).await;
        assert_refused(status, &body, "config.host", host);
        let (status, body) = create(&app, &key, "ftp", ftp(host)).await;
        assert_refused(status, &body, "config.host", host);
    }
    for endpoint in [
        "http://169.254.169.254",
        "http://10.1.2.3:9000",
        "http://[::1]:9000",
        "http://localhost:9000",
    ] {
        let (status, body) = create(
            &app,
            &key,
            "s3",
            json!({"bucket": "audit", "endpoint": endpoint, "access_key_id": "a", "secret_access_key": "s"}),
        )
        .await;
        assert_refused(status, &body, "config.endpoint", endpoint);
    }
}

/// A host with a line break would add commands of its own to an SMTP
/// session or an HTTP request (CRLF injection): hosts, URLs and header names
/// and values with control characters or spaces are refused, whatever the
/// network policy.
#[actix_web::test]
async fn hosts_and_headers_with_control_characters_are_refused() {
    let app = spawn_app_with(|_| {}).await;
    let key = app.create_key("org-a", "org:admin").await;
    for host in [
        "smtp.example.com\r\nRCPT TO:<attacker@example.com>",
        "smtp.example.com\n",
        "smtp\0.example.com",
        "smtp example.com",
    ] {
        let (status, body) = create(&app, &key, "email", email(host)).await;
        assert_refused(status, &body, "config.host", host);
        let (status, body) = create(&app, &key, "ftp", ftp(host)).await;
        assert_refused(status, &body, "config.host", host);
    }
    // URL parsing would silently drop the line break: the text itself is checked.
    let (status, body) = create(
        &app,
        &key,
        "webhook",
        json!({"url": "http://example.com/\r\nX-Injected: 1"}),
    )
    .await;
    assert_refused(status, &body, "config.url", "CRLF in the URL");
    let (status, body) = create(
        &app,
        &key,
        "webhook",
        json!({"url": "https://example.com/hook", "headers": {"X-Test": "a\r\nX-Injected: 1"}}),
    )
    .await;
    assert_refused(status, &body, "config.headers.X-Test", "CRLF in a header");
    let (status, body) = create(
        &app,
        &key,
        "s3",
        json!({"bucket": "audit", "endpoint": "http://s3.example.com\t/", "access_key_id": "a", "secret_access_key": "s"}),
    )
    .await;
    assert_refused(status, &body, "config.endpoint", "a tab in the endpoint");
}

/// `delivery.allowed_networks` is the operator's exception: a listed private
/// range is accepted while its neighbours stay refused, and a listed
/// loopback address receives deliveries although `allow_loopback` is false.
#[actix_web::test]
async fn allowed_networks_let_a_listed_range_through() {
    let app = spawn_app_with(|config| {
        config.delivery.allow_loopback = false;
        config.delivery.allowed_networks = vec![
            "10.20.0.0/16".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ];
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    let (status, body) = create(
        &app,
        &key,
        "webhook",
        json!({"url": "http://10.20.0.5/hook"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = create(&app, &key, "ftp", ftp("10.20.1.1")).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = create(
        &app,
        &key,
        "webhook",
        json!({"url": "http://10.21.0.5/hook"}),
    )
    .await;
    assert_refused(status, &body, "config.url", "outside the allowed range");
    let (status, body) = create(
        &app,
        &key,
        "webhook",
        json!({"url": "http://127.0.0.2/hook"}),
    )
    .await;
    assert_refused(
        status,
        &body,
        "config.url",
        "loopback outside the allowed address",
    );

    let receiver = Receiver::start(&[], 0);
    let (status, body) = create(&app, &key, "webhook", json!({"url": receiver.url})).await;
    assert_eq!(status, 201, "{body}");
    let done = app
        .deliver(&key, body["id"].as_i64().unwrap(), json!({"n": 1}))
        .await;
    assert_eq!(done["status"], "delivered", "{done}");
    assert_eq!(receiver.received().len(), 1);
}

/// The key that seals the secrets of the destinations stored directly.
const ENCRYPTION_KEY: [u8; 32] = [42; 32];

/// Stores a destination the way an older version, or a name that resolved
/// elsewhere when it was saved, would have left it: past the API's check.
async fn store_directly(app: &TestApp, kind: &str, config: Value) -> i64 {
    let stored = DestinationConfig::validate(kind, &config, None)
        .expect("a valid configuration")
        .sealed(&SecretBox::new(&audit_worker::secrets::KeyRing::single(
            ENCRYPTION_KEY,
        )));
    let settings = json!({"retry_schedule": ["50ms"]});
    app.database()
        .await
        .query_one(
            "INSERT INTO delivery_destinations (organization_id, type, label, config, settings) \
             VALUES ('org-a', $1, $1, $2, $3) RETURNING id",
            &[
                &kind,
                &tokio_postgres::types::Json(&stored),
                &tokio_postgres::types::Json(&settings),
            ],
        )
        .await
        .expect("insert a destination")
        .get(0)
}

/// A destination that reaches loopback although the API would refuse it (a
/// name re-pointed after it was saved: DNS rebinding; or one stored before
/// the policy) is refused on every connection, for every kind: a name that
/// resolves to loopback (the resolvers' check) and a literal address
/// (checked before connecting) alike. Each attempt fails for good with the
/// rule in its message; no receiver sees anything; the connection test
/// refuses it too.
#[actix_web::test]
async fn a_stored_destination_reaching_loopback_is_refused_when_connecting() {
    let app = spawn_app_with(|config| {
        shipped_policy(config);
        config.delivery.encryption_key =
            Secret::new(base64::engine::general_purpose::STANDARD.encode(ENCRYPTION_KEY));
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let port = reqwest::Url::parse(&receiver.url).unwrap().port().unwrap();
    let (smtp, ftp_server, s3) = (servers::smtp(), servers::ftp(), servers::s3());
    let s3_endpoint = format!("http://127.0.0.1:{}", s3.port);
    let bucket = reqwest::Client::new()
        .put(format!("{s3_endpoint}/audit-exports"))
        .send()
        .await
        .unwrap();
    assert!(bucket.status().is_success());

    let mut stored = Vec::new();
    for host in ["localhost", "127.0.0.1"] {
        let webhook = json!({"url": format!("http://{host}:{port}/hook")});
        stored.push((host, store_directly(&app, "webhook", webhook).await));
        let mut mail = email(host);
        mail["port"] = json!(smtp.port);
        stored.push((host, store_directly(&app, "email", mail).await));
        let mut upload = ftp(host);
        upload["port"] = json!(ftp_server.port);
        stored.push((host, store_directly(&app, "ftp", upload).await));
        let object_store = json!({"bucket": "audit-exports", "path_style": true,
            "endpoint": format!("http://{host}:{}", s3.port), "access_key_id": "test", "secret_access_key": "test"});
        stored.push((host, store_directly(&app, "s3", object_store).await));
    }

    for (host, destination) in stored {
        let done = app.deliver(&key, destination, json!({"n": 1})).await;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(done["retry_count"], 0, "refused for good: {done}");
        let error = done["last_error"].as_str().unwrap();
        assert!(
            error.contains(&format!("of host {host} {LOOPBACK_REFUSED}")),
            "{error}"
        );

        let (status, test) = app
            .call(
                Method::POST,
                &format!("/v1/destinations/{destination}/test"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(status, 200, "{test}");
        assert_eq!(test["reachable"], false, "{test}");
        assert!(
            test["message"].as_str().unwrap().contains(LOOPBACK_REFUSED),
            "{test}"
        );
    }

    assert!(receiver.received().is_empty());
    assert!(smtp.files().is_empty(), "{:?}", smtp.files());
    assert!(ftp_server.files().is_empty(), "{:?}", ftp_server.files());
    let listing = reqwest::Client::new()
        .get(format!("{s3_endpoint}/audit-exports"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listing.contains("<Key>"), "{listing}");
}

/// A receiver on an allowed address that redirects to a refused one: the
/// redirect is not followed, the attempt fails naming the rule, and the
/// refused address never sees the request.
#[actix_web::test]
async fn a_redirect_to_a_refused_address_is_not_followed() {
    let app = spawn_app_with(|config| {
        shipped_policy(config);
        config.delivery.allowed_networks = vec!["127.0.0.2".parse().unwrap()];
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let target = receiver.url.clone();
    let redirector = HttpServer::new(move || {
        let target = target.clone();
        App::new().default_service(web::to(move || {
            let target = target.clone();
            async move {
                HttpResponse::TemporaryRedirect()
                    .insert_header(("location", target))
                    .finish()
            }
        }))
    })
    .workers(1)
    .bind("127.0.0.2:0")
    .expect("bind 127.0.0.2");
    let redirector_port = redirector.addrs()[0].port();
    actix_web::rt::spawn(redirector.run());

    let (status, body) = create(
        &app,
        &key,
        "webhook",
        json!({"url": format!("http://127.0.0.2:{redirector_port}/hook")}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let done = app
        .deliver(&key, body["id"].as_i64().unwrap(), json!({"n": 1}))
        .await;
    assert_eq!(done["status"], "failed", "{done}");
    let error = done["last_error"].as_str().unwrap();
    assert!(
        error.contains(&format!("of host 127.0.0.1 {LOOPBACK_REFUSED}")),
        "{error}"
    );
    assert!(receiver.received().is_empty());
}
