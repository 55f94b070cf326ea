//! Error tracking: internal errors are aggregated by fingerprint (one upsert
//! per fingerprint per flush, a few error_log rows), listed for operators only,
//! and never lost nor in the way while PostgreSQL is down.

mod common;

use std::time::Duration;

use audit_worker::error_tracking::{self, ErrorEvent, Severity};
use common::proxy::TcpProxy;
use common::{spawn_app_with, wait_until, TestApp};
use reqwest::Method;

/// Flushes happen only when a test asks (the scheduled one is an hour away).
async fn spawn_quiet_app() -> TestApp {
    spawn_app_with(|config| config.errors.flush_interval = Duration::from_secs(3600)).await
}

fn failure(message: String) -> ErrorEvent {
    ErrorEvent::new(
        "internal",
        Severity::High,
        "internal_error",
        "test",
        "storm",
        message,
    )
}

async fn flush(app: &TestApp) {
    let pool = audit_worker::db::pool(&app.config.database);
    error_tracking::flush(&app.errors, &pool, Duration::from_secs(5))
        .await
        .expect("the flush succeeds");
}

/// 5,000 errors that differ only by the ids in their messages share one
/// fingerprint: one error_aggregation row counting 5,000, and only the
/// documented 3 error_log rows; a different error is a second row.
#[actix_web::test]
async fn an_error_storm_is_one_aggregation_row_with_its_count() {
    let app = spawn_quiet_app().await;
    for _ in 0..5_000 {
        app.errors.record(failure(format!(
            "event {} failed after {} ms",
            uuid::Uuid::new_v4(),
            rand::random::<u16>()
        )));
    }
    app.errors.record(ErrorEvent::new(
        "maintenance",
        Severity::Medium,
        "analyze_failed",
        "maintenance",
        "analyze",
        "something else",
    ));
    flush(&app).await;

    let db = app.database().await;
    let rows = db
        .query(
            "SELECT aggregation_key, count, category, affected_components, jsonb_array_length(samples)
             FROM error_aggregation ORDER BY count DESC",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let key: String = rows[0].get(0);
    assert_eq!(rows[0].get::<_, i64>(1), 5_000);
    assert_eq!(rows[0].get::<_, String>(2), "internal");
    assert_eq!(
        rows[0].get::<_, serde_json::Value>(3),
        serde_json::json!(["test"])
    );
    assert!(rows[0].get::<_, i32>(4) <= 5);
    assert_eq!(rows[1].get::<_, i64>(1), 1);
    let logged: i64 = db
        .query_one(
            "SELECT count(*) FROM error_log WHERE aggregation_key = $1",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 3, "log_rows_per_fingerprint rows per flush");

    // A second flush adds to the same row.
    app.errors.record(failure(format!(
        "event {} failed after 1 ms",
        uuid::Uuid::new_v4()
    )));
    flush(&app).await;
    let count: i64 = db
        .query_one(
            "SELECT count FROM error_aggregation WHERE aggregation_key = $1",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 5_001);

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            r#"audit_worker_errors_recorded_total{category="internal",severity="HIGH"} 5001"#
        ),
        "{metrics}"
    );
}

/// Operators list aggregations (filtered, newest first) and read one with its
/// rows; a tenant's org:admin and an operator role without
/// `system.operations` get 403; no key gets 401.
#[actix_web::test]
async fn operators_list_errors_and_tenants_are_refused() {
    let app = spawn_quiet_app().await;
    app.errors.record(failure("first failure".to_owned()));
    app.errors.record(ErrorEvent::new(
        "actor",
        Severity::Critical,
        "actor_stopped",
        "queue",
        "run",
        "actor queue stopped",
    ));
    flush(&app).await;
    let operator = app.create_key("system", "org:admin").await;
    let tenant = app.create_key("acme", "org:admin").await;
    let operator_auditor = app.create_key("system", "auditor").await;

    let (status, body) = app
        .call(Method::GET, "/v1/admin/errors", Some(&operator), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["aggregations"].as_array().unwrap().len(), 2);

    let (status, body) = app
        .call(
            Method::GET,
            "/v1/admin/errors?severity=CRITICAL&component=queue",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let listed = body["aggregations"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["category"], "actor");
    assert_eq!(listed[0]["samples"][0]["code"], "actor_stopped");
    let key = listed[0]["aggregation_key"].as_str().unwrap().to_owned();

    let (status, body) = app
        .call(
            Method::GET,
            &format!("/v1/admin/errors/{key}"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["aggregation"]["count"], 1);
    assert_eq!(body["recent"][0]["message"], "actor queue stopped");
    assert!(body["recent"][0]["organization_id"].is_null());

    let (status, body) = app
        .call(
            Method::GET,
            "/v1/admin/errors?severity=bad",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["details"][0]["field"], "severity");

    for key in [&tenant, &operator_auditor] {
        let (status, body) = app
            .call(Method::GET, "/v1/admin/errors", Some(key), None)
            .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, _) = app.call(Method::GET, "/v1/admin/errors", None, None).await;
    assert_eq!(status, 401);
}

/// While PostgreSQL is unreachable, flushes fail and the errors stay
/// buffered; requests still get their own answer (a 503, recorded with its
/// request id); once PostgreSQL is back every count arrives.
#[actix_web::test]
async fn errors_survive_a_database_outage_and_never_fail_the_request() {
    let proxy = TcpProxy::start("127.0.0.1:5432", true).await;
    let app = spawn_app_with(|config| {
        proxy.carry_postgres(config);
        config.database.connect_timeout = Duration::from_millis(500);
        config.errors.flush_interval = Duration::from_millis(50);
    })
    .await;
    let tenant = app.create_key("acme", "org:admin").await;
    app.list_events(&tenant, "").await;

    proxy.disable();
    let response = app
        .client
        .get(format!("{}/v1/events?action=uncached", app.address))
        .bearer_auth(&tenant)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    for n in 0..1_000 {
        app.errors.record(failure(format!("failure number {n}")));
    }
    wait_until(Duration::from_secs(15), "a failed flush", || async {
        let failures = app
            .metric::<u64>("audit_worker_errors_flush_failures_total")
            .await
            .unwrap_or(0);
        (failures >= 2).then_some(())
    })
    .await;

    proxy.enable();
    // Straight to the server, not through the proxy.
    let server: audit_worker::config::PostgresUrl = common::test_server_url().parse().unwrap();
    let direct =
        common::connect(&server.with_database(app.config.database.url.database_name())).await;
    let key = failure("failure number 0".to_owned()).fingerprint();
    wait_until(Duration::from_secs(20), "every count written", || async {
        let row = direct
            .query_opt(
                "SELECT count FROM error_aggregation WHERE aggregation_key = $1",
                &[&key],
            )
            .await
            .unwrap()?;
        (row.get::<_, i64>(0) == 1_000).then_some(())
    })
    .await;
    let logged = direct
        .query_one(
            "SELECT category, code, component, operation, organization_id FROM error_log
             WHERE request_id = $1",
            &[&request_id],
        )
        .await
        .expect("the 503 is recorded with its request id");
    assert_eq!(logged.get::<_, String>(0), "dependency");
    assert_eq!(logged.get::<_, String>(2), "http");
    assert_eq!(logged.get::<_, String>(3), "/v1/events");
    assert_eq!(logged.get::<_, Option<String>>(4).as_deref(), Some("acme"));
}
