//! The HTTP surface every later route relies on: liveness, readiness, the JSON
//! error shape, the body limit, metrics and the OpenAPI document; HEAD, 405,
//! compressed bodies and answers, content types and oversized heads.

mod common;

use std::io::{Read, Write};

use common::{event, spawn_app, spawn_app_with, TestApp};
use serde_json::{json, Value};

/// `/healthz` answers 200 while the process runs.
#[actix_web::test]
async fn healthz_answers_200() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "alive");
}

/// With PostgreSQL, migrations and actors all fine, `/readyz` is 200 and says so per check.
#[actix_web::test]
async fn readyz_is_200_when_everything_is_up() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    for check in ["postgres", "migrations", "actors", "redis"] {
        assert_eq!(body["checks"][check]["status"], "ok", "{check}: {body}");
    }
}

/// An unknown route gets a JSON 404 in the common error shape.
#[actix_web::test]
async fn unknown_route_is_a_json_404() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/no/such/route").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/no/such/route"));
    assert!(body["error"].get("details").is_some());
}

/// A body larger than `http.max_body` is refused with a JSON 413 before any handler runs.
#[actix_web::test]
async fn oversized_body_is_a_json_413() {
    let app = spawn_app_with(|config| config.http.max_body = 2048).await;
    let response = app
        .client
        .post(format!("{}/healthz", app.address))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(body["error"]["details"]["limit_bytes"], 2048);
}

/// `/metrics` exposes HTTP, actor and pool series under the `audit_worker_` prefix.
#[actix_web::test]
async fn metrics_expose_http_actor_and_pool_series() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let text = app.metrics().await;
    for series in [
        r#"audit_worker_http_requests_total{method="GET",route="/healthz",status="200"} 1"#,
        r#"audit_worker_http_request_duration_seconds_bucket{method="GET",route="/healthz""#,
        r#"audit_worker_actor_up{actor="heartbeat"} 1"#,
        r#"audit_worker_db_pool_connections{state="in_use"}"#,
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
}

/// `/metrics` covers what operators watch: every actor's messages (replies
/// and notices) and their time, ingest batch sizes, the delivery queue, and
/// the outcome of partition maintenance and report runs.
#[actix_web::test]
async fn metrics_cover_actors_ingest_the_queue_and_maintenance() {
    let app = spawn_app_with(|config| {
        config.delivery.health_interval = std::time::Duration::from_millis(50);
    })
    .await;
    let key = app.create_key("org-metrics", "org:admin").await;
    app.ingest(
        &key,
        vec![event("u", "auth.login"), event("u", "auth.logout")],
    )
    .await;
    let expected = [
        r#"audit_worker_actor_message_duration_seconds_count{actor="ingest"} 1"#,
        // The ingest actor's notice of stored events, counted once handled.
        r#"audit_worker_actor_messages_handled_total{actor="alert"}"#,
        "audit_worker_ingest_batch_events_sum 2",
        "audit_worker_ingest_batch_requests_count 1",
        r#"audit_worker_delivery_queue_depth{status="pending"} 0"#,
        "audit_worker_delivery_queue_oldest_due_seconds 0",
        r#"audit_worker_partition_maintenance_runs_total{outcome="ran"} 1"#,
        r#"audit_worker_report_runs_total{outcome="failed"} 0"#,
    ];
    common::wait_until(
        std::time::Duration::from_secs(10),
        "every series on /metrics",
        || async {
            let text = app.metrics().await;
            expected
                .iter()
                .all(|series| text.contains(series))
                .then_some(())
        },
    )
    .await;
}

/// `/openapi.json` is a generated OpenAPI 3 document listing the routes.
#[actix_web::test]
async fn openapi_document_lists_the_routes() {
    let app = spawn_app().await;
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
}

/// Every response carries a request id, the same one the request's log span has.
#[actix_web::test]
async fn responses_carry_a_request_id() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

/// The Grafana dashboard in `deploy/` is valid JSON and every series it
/// queries is one the worker exports.
#[test]
fn the_grafana_dashboard_queries_exported_series() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/deploy/grafana/audit-worker.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let source = std::fs::read_to_string(format!("{root}/src/metrics.rs")).unwrap();
    let name = regex::Regex::new(r"audit_worker_([a-z_]+)").unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for found in name.captures_iter(expr) {
                let series = &found[1];
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| series.strip_suffix(suffix))
                    .filter(|family| source.contains(&format!("\"{family}\"")))
                    .unwrap_or(series);
                assert!(
                    source.contains(&format!("\"{family}\"")),
                    "panel {:?} queries audit_worker_{series}, which src/metrics.rs does not define",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 30, "only {checked} series checked");
}

/// Asserts a response is a JSON error with `status` and `code`; returns its body.
async fn json_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    body
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn post_encoded(
    app: &TestApp,
    key: &str,
    path: &str,
    encoding: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    app.client
        .post(format!("{}{path}", app.address))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(body)
}

/// HEAD is answered wherever GET is: the same status and headers, no body.
#[actix_web::test]
async fn head_is_answered_wherever_get_is() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    for path in [
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/v1/events",
        "/v1/alerts/statistics",
    ] {
        let response = app
            .client
            .head(format!("{}{path}", app.address))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "HEAD {path}");
        assert!(
            response.bytes().await.unwrap().is_empty(),
            "HEAD {path} has no body"
        );
    }
}

/// A known path asked with a method it does not take is a JSON 405 whose
/// `Allow` names the methods it does take; an unknown path stays a 404.
#[actix_web::test]
async fn an_unsupported_method_on_a_known_route_is_a_405_with_allow() {
    let app = spawn_app().await;
    for (method, path, allowed) in [
        ("DELETE", "/v1/events", "GET, HEAD, POST"),
        ("PUT", "/healthz", "GET, HEAD"),
        ("FROB", "/v1/events/12", "GET, HEAD"),
        ("POST", "/v1/alerts/statistics", "GET, HEAD"),
        (
            "GET",
            "/v1/alerts/0e1c5a3a-4f59-4a8e-9a53-8b3c2a1d0f00/resolve",
            "POST",
        ),
    ] {
        let response = app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", app.address),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["allow"], allowed, "{method} {path}");
        let body = json_error(response, 405, "method_not_allowed").await;
        assert!(body["error"]["message"].as_str().unwrap().contains(path));
    }
    let response = app
        .client
        .delete(format!("{}/v1/nothing-here", app.address))
        .send()
        .await
        .unwrap();
    json_error(response, 404, "not_found").await;
}

/// Bodies may come gzip or zstd, on ingest and on every other JSON route;
/// what they decompress to is held to `http.max_body` (a zip bomb is a 413),
/// and an encoding the worker does not read is a 415.
#[actix_web::test]
async fn compressed_bodies_are_read_within_the_body_limit() {
    let app = spawn_app_with(|config| config.http.max_body = 64 * 1024).await;
    let key = app.create_key("org-a", "org:admin").await;
    let events = serde_json::to_vec(&json!([
        {"principal_id": "u1", "action": "gzip.sent", "status": "success"},
        {"principal_id": "u2", "action": "gzip.sent", "status": "success"}
    ]))
    .unwrap();
    let response = post_encoded(&app, &key, "/v1/events", "gzip", gzip(&events))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let zstd = zstd::encode_all(&events[..], 3).unwrap();
    let response = post_encoded(&app, &key, "/v1/events", "zstd", zstd)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let alert =
        serde_json::to_vec(&json!({"severity": "LOW", "title": "sent compressed"})).unwrap();
    let response = post_encoded(
        &app,
        &key,
        "/v1/alerts",
        "zstd",
        zstd::encode_all(&alert[..], 3).unwrap(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());

    // Eight megabytes of spaces: a few kilobytes compressed, far past the limit decoded.
    let bomb = vec![b' '; 8 * 1024 * 1024];
    for (encoding, body) in [
        ("gzip", gzip(&bomb)),
        ("zstd", zstd::encode_all(&bomb[..], 19).unwrap()),
    ] {
        assert!(body.len() < 64 * 1024, "{encoding}: {} bytes", body.len());
        for path in ["/v1/events", "/v1/alerts"] {
            let response = post_encoded(&app, &key, path, encoding, body.clone())
                .send()
                .await
                .unwrap();
            json_error(response, 413, "payload_too_large").await;
        }
    }
    let response = post_encoded(&app, &key, "/v1/events", "br", events.clone())
        .send()
        .await
        .unwrap();
    json_error(response, 415, "unsupported_media_type").await;
    let response = post_encoded(
        &app,
        &key,
        "/v1/events",
        "gzip",
        b"not gzip at all".to_vec(),
    )
    .send()
    .await
    .unwrap();
    json_error(response, 400, "bad_request").await;
}

/// Answers are compressed when the client asks (`/metrics` is large).
#[actix_web::test]
async fn answers_are_compressed_when_the_client_asks() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let compressed = response.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("audit_worker_"), "{text}");
    assert!(compressed.len() < text.len());
}

/// A body of another media type than JSON is a JSON 415, on ingest as on
/// every other route that takes a body.
#[actix_web::test]
async fn a_wrong_content_type_is_a_json_415() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    for path in [
        "/v1/events",
        "/v1/alerts",
        "/v1/presets",
        "/v1/integrity/verify",
    ] {
        let response = app
            .client
            .post(format!("{}{path}", app.address))
            .bearer_auth(&key)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        let body = json_error(response, 415, "unsupported_media_type").await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("text/plain"),
            "{path}: {body}"
        );
    }
}

/// An over-long URI or oversized headers get the usual JSON error body.
#[actix_web::test]
async fn an_over_long_uri_or_header_is_a_json_error() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!(
            "{}/healthz?pad={}",
            app.address,
            "x".repeat(20_000)
        ))
        .send()
        .await
        .unwrap();
    json_error(response, 414, "uri_too_long").await;
    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-padding", "y".repeat(40_000))
        .send()
        .await
        .unwrap();
    json_error(response, 431, "headers_too_large").await;
}
