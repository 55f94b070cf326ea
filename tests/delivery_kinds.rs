//! Email, S3, FTP and FTPS destinations against real servers on loopback
//! (aiosmtpd, moto, pyftpdlib): what arrives is checked on the server's side.

mod common;

use common::{servers, spawn_app, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// A destination of `kind` retrying quickly (201 asserted); returns its id.
async fn create(app: &TestApp, key: &str, kind: &str, config: Value) -> i64 {
    app.create_destination(
        key,
        json!({"type": kind, "label": kind, "config": config,
               "settings": {"retry_schedule": ["50ms", "50ms"]}}),
    )
    .await
}

/// The payload arrives by SMTP as the body, or as a JSON attachment; the
/// Message-ID is the delivery's reference.
#[actix_web::test]
async fn email_delivers_the_payload_as_body_or_attachment() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let smtp = servers::smtp();
    let base = json!({"host": "127.0.0.1", "port": smtp.port, "tls": "none",
                      "from": "audit@worker.test", "to": ["officer@clinic.test"], "subject": "Weekly audit"});
    let body_destination = create(&app, &key, "email", base.clone()).await;
    let mut with_attachment = base.clone();
    with_attachment["attachment_name"] = json!("audit.json");
    let attachment_destination = create(&app, &key, "email", with_attachment).await;

    let done = app
        .deliver(&key, body_destination, json!({"report": "body-marker"}))
        .await;
    assert_eq!(done["status"], "delivered", "{done}");
    let reference = done["attempts"][0]["cross_system_reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = app
        .deliver(
            &key,
            attachment_destination,
            json!({"report": "attached-marker"}),
        )
        .await;
    assert_eq!(done["status"], "delivered", "{done}");

    let messages: Vec<String> = smtp
        .files()
        .into_iter()
        .map(|(_, content)| String::from_utf8_lossy(&content).into_owned())
        .collect();
    assert_eq!(messages.len(), 2);
    let plain = messages
        .iter()
        .find(|m| m.contains("body-marker"))
        .expect("the body message");
    assert!(plain.contains("Subject: Weekly audit"));
    assert!(plain.contains("officer@clinic.test"));
    assert!(
        plain.contains(&reference),
        "Message-ID {reference} in {plain}"
    );
    let attached = messages
        .iter()
        .find(|m| m.contains("audit.json"))
        .expect("the attachment message");
    assert!(
        attached.contains("Content-Disposition: attachment"),
        "{attached}"
    );
}

/// The payload is uploaded under a temporary name and renamed: only the final
/// file remains, with the payload in it.
#[actix_web::test]
async fn ftp_uploads_then_renames_the_file() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let ftp = servers::ftp();
    std::fs::create_dir_all(ftp.dir.join("inbox")).unwrap();
    let destination = create(
        &app,
        &key,
        "ftp",
        json!({"host": "127.0.0.1", "port": ftp.port,
        "username": "user", "password": "pass", "directory": "/inbox"}),
    )
    .await;
    let done = app
        .deliver(&key, destination, json!({"report": "ftp-marker"}))
        .await;
    assert_eq!(done["status"], "delivered", "{done}");
    let files = ftp.files();
    assert_eq!(files.len(), 1, "{files:?}");
    let (path, content) = &files[0];
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("audit-") && name.ends_with(".json"),
        "{name}"
    );
    assert!(path.parent().unwrap().ends_with("inbox"));
    assert_eq!(
        serde_json::from_slice::<Value>(content).unwrap(),
        json!({"report": "ftp-marker"})
    );
    assert_eq!(
        done["attempts"][0]["cross_system_reference"],
        format!("/inbox/{name}")
    );
}

/// Explicit FTPS: the session and the upload are protected, the server's
/// certificate checked against the configured CA. Without that CA (the public
/// roots only) nothing is sent; an invalid CA is refused at creation.
#[actix_web::test]
async fn ftps_uploads_over_tls_checked_against_the_ca() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let ftps = servers::ftps();
    let ca = std::fs::read_to_string(ftps.dir.join("ca.pem")).unwrap();
    let config = json!({"host": "127.0.0.1", "port": ftps.port, "username": "user", "password": "pass",
                        "directory": "/inbox", "tls": true, "ca_certificate": ca});
    let destination = create(&app, &key, "ftp", config.clone()).await;
    let done = app
        .deliver(&key, destination, json!({"report": "ftps-marker"}))
        .await;
    assert_eq!(done["status"], "delivered", "{done}");
    let uploaded: Vec<Value> = ftps
        .files()
        .into_iter()
        .filter(|(path, _)| path.parent().unwrap().ends_with("inbox"))
        .map(|(_, content)| serde_json::from_slice(&content).unwrap())
        .collect();
    assert_eq!(uploaded, [json!({"report": "ftps-marker"})]);

    let mut untrusted = config.clone();
    untrusted.as_object_mut().unwrap().remove("ca_certificate");
    let destination = create(&app, &key, "ftp", untrusted).await;
    let done = app
        .deliver(&key, destination, json!({"report": "never"}))
        .await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["last_error"].as_str().unwrap().contains("certificate"),
        "{done}"
    );

    let mut invalid = config;
    invalid["ca_certificate"] = json!("not a certificate");
    let (status, body) = app
        .try_create_destination(
            &key,
            json!({"type": "ftp", "label": "ftps", "config": invalid}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["details"][0]["field"],
        "config.ca_certificate"
    );
}

/// A refused FTP login is a permanent failure: dead-lettered at once.
#[actix_web::test]
async fn a_refused_ftp_login_fails_at_once() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let ftp = servers::ftp();
    let destination = create(
        &app,
        &key,
        "ftp",
        json!({"host": "127.0.0.1", "port": ftp.port,
        "username": "user", "password": "wrong"}),
    )
    .await;
    let done = app.deliver(&key, destination, json!({"n": 1})).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["retry_count"], 0);
    assert!(done["last_error"].as_str().unwrap().contains("FTP"));
}

/// The payload is stored as an S3 object under the key template; a GET of the
/// object returns it, and the reference names the object and its ETag.
#[actix_web::test]
async fn s3_stores_one_object_per_delivery() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let s3 = servers::s3();
    let endpoint = s3.endpoint();
    let client = reqwest::Client::new();
    let created = client
        .put(format!("{endpoint}/audit-exports"))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let destination = create(&app, &key, "s3", json!({"bucket": "audit-exports", "prefix": "org-a/",
        "endpoint": endpoint, "path_style": true, "access_key_id": "test", "secret_access_key": "test-secret"}))
    .await;
    let (_, shown) = app
        .call(
            Method::GET,
            &format!("/v1/destinations/{destination}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(shown["config"]["secret_access_key"], "***");

    let done = app
        .deliver(&key, destination, json!({"report": "s3-marker"}))
        .await;
    assert_eq!(done["status"], "delivered", "{done}");
    let reference = done["attempts"][0]["cross_system_reference"]
        .as_str()
        .unwrap();
    let object = reference.split(' ').next().unwrap();
    let id = done["id"].as_str().unwrap();
    assert!(
        object.starts_with("audit-exports/org-a/") && object.ends_with(&format!("{id}.json")),
        "{object}"
    );
    let (bucket, object_key) = object.split_once('/').unwrap();
    let s3_client = s3.s3_client();
    let fetched = s3_client
        .get_object()
        .bucket(bucket)
        .key(object_key)
        .send()
        .await
        .expect("GET the object");
    let bytes = fetched.body.collect().await.unwrap().into_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap(),
        json!({"report": "s3-marker"})
    );

    // A bucket that does not exist is a permanent failure.
    let missing = create(
        &app,
        &key,
        "s3",
        json!({"bucket": "no-such-bucket", "endpoint": endpoint,
        "path_style": true, "access_key_id": "test", "secret_access_key": "test-secret"}),
    )
    .await;
    let done = app.deliver(&key, missing, json!({"n": 1})).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["retry_count"], 0);
}
