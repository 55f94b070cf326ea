//! Readiness tells the truth about PostgreSQL and Redis, and the worker
//! survives either going away; without Redis, requests do not wait for it.

mod common;

use std::time::Duration;

use common::proxy::TcpProxy;
use common::{spawn_app_with, wait_until};

/// With PostgreSQL cut off, `/readyz` turns 503 naming postgres; once it is
/// reachable again, `/readyz` is 200 again without a restart.
#[actix_web::test]
async fn readyz_turns_503_without_postgres_and_recovers() {
    let proxy = TcpProxy::start("127.0.0.1:5432", true).await;
    let app = spawn_app_with(|config| {
        proxy.carry_postgres(config);
    })
    .await;
    assert_eq!(app.get_json("/readyz").await.0, 200);

    proxy.disable();
    let body = wait_until(Duration::from_secs(15), "readyz 503", || async {
        let (status, body) = app.get_json("/readyz").await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["error"]["code"], "not_ready");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("postgres"));
    assert_eq!(
        body["error"]["details"]["checks"]["postgres"]["status"],
        "failing"
    );
    // The process itself stays alive.
    assert_eq!(app.get("/healthz").await.status(), 200);

    proxy.enable();
    wait_until(Duration::from_secs(15), "readyz 200 again", || async {
        (app.get_json("/readyz").await.0 == 200).then_some(())
    })
    .await;
}

/// Redis down at start does not stop `serve`: the worker is ready, reports Redis
/// as degraded, and picks Redis up by itself when it appears.
#[actix_web::test]
async fn worker_starts_without_redis_and_connects_later() {
    let proxy = TcpProxy::start("127.0.0.1:6379", false).await;
    let app = spawn_app_with(|config| {
        proxy.carry_redis(config);
    })
    .await;

    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["redis"]["status"], "degraded");
    assert!(body["checks"]["redis"]["message"].is_string());

    proxy.enable();
    wait_until(Duration::from_secs(15), "redis ok", || async {
        let (_, body) = app.get_json("/readyz").await;
        (body["checks"]["redis"]["status"] == "ok").then_some(())
    })
    .await;
    wait_until(Duration::from_secs(5), "redis gauge up", || async {
        let text = app.metrics().await;
        text.contains(r#"audit_worker_dependency_up{dependency="redis"} 1"#)
            .then_some(())
    })
    .await;
}

/// While PostgreSQL is unreachable, a request that needs it gets its 503 with
/// `Retry-After` at once (not after `database.connect_timeout`, here far
/// longer than the client waits), a key verified before the outage is still
/// accepted, so an answer cached in Redis is still served; and everything
/// works again once PostgreSQL is back.
#[actix_web::test]
async fn requests_fail_fast_while_postgres_is_down_and_cached_answers_are_served() {
    let proxy = TcpProxy::start("127.0.0.1:5432", true).await;
    let app = spawn_app_with(|config| {
        proxy.carry_postgres(config);
        config.database.connect_timeout = Duration::from_secs(60);
        // Every request finds its key stale and asks PostgreSQL first.
        config.auth.key_cache_ttl = Duration::from_millis(1);
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    let alert = serde_json::json!({"severity": "LOW", "title": "needs the database"});
    // A client that gives up long before the pool's connect timeout.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let events = |client: &reqwest::Client| {
        client
            .get(format!("{}/v1/events?limit=5", app.address))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(events(&client).await.unwrap().status(), 200);

    proxy.disable();
    wait_until(Duration::from_secs(15), "a 503 for a write", || async {
        let response = client
            .post(format!("{}/v1/alerts", app.address))
            .bearer_auth(&key)
            .json(&alert)
            .send()
            .await
            .ok()?;
        (response.status() == 503).then_some(())
    })
    .await;
    for _ in 0..20 {
        let response = client
            .post(format!("{}/v1/alerts", app.address))
            .bearer_auth(&key)
            .json(&alert)
            .send()
            .await
            .expect("answered before the client's timeout");
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable");
    }
    // The key and the listing (cached in Redis) need no database.
    let response = events(&client).await.expect("answered");
    assert_eq!(response.status(), 200);

    proxy.enable();
    wait_until(Duration::from_secs(15), "writes work again", || async {
        let response = client
            .post(format!("{}/v1/alerts", app.address))
            .bearer_auth(&key)
            .json(&alert)
            .send()
            .await
            .ok()?;
        (response.status() == 201).then_some(())
    })
    .await;
}

/// With Redis cut off, requests do not each pay a Redis attempt: once a call
/// has failed, the worker skips Redis for its back-off (here longer than the
/// test), so fifty ingests and fifty listings open no connection to it, and
/// still answer right. `/readyz` and the heartbeat count a skipped Redis as
/// a failed one.
#[actix_web::test]
async fn with_redis_down_requests_skip_it_instead_of_trying_it_each() {
    let proxy = TcpProxy::start("127.0.0.1:6379", true).await;
    let app = spawn_app_with(|config| {
        proxy.carry_redis(config);
        config.redis.outage_backoff = Duration::from_secs(3600);
        config.redis.outage_backoff_max = Duration::from_secs(3600);
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    app.ingest_action(&key, "before").await;

    proxy.disable();
    // The first call after the cut (a request's or the heartbeat's) fails and
    // starts the back-off; the calls after it are skipped.
    let body = wait_until(
        Duration::from_secs(15),
        "readyz says Redis is skipped",
        || async {
            let (status, body) = app.get_json("/readyz").await;
            assert_eq!(status, 200, "{body}");
            let message = body["checks"]["redis"]["message"]
                .as_str()
                .unwrap_or_default();
            message.contains("skipped").then_some(body)
        },
    )
    .await;
    assert_eq!(body["checks"]["redis"]["status"], "degraded");
    wait_until(Duration::from_secs(5), "redis gauge down", || async {
        let text = app.metrics().await;
        text.contains(r#"audit_worker_dependency_up{dependency="redis"} 0"#)
            .then_some(())
    })
    .await;

    let opened = proxy.connections();
    for n in 0..50 {
        let action = format!("during-{n}");
        app.ingest_action(&key, &action).await;
        let listed = app.listed_actions(&key).await;
        assert_eq!(listed[0], action);
        assert_eq!(listed.len(), n + 2);
    }
    // At most one connection from the invalidation listener, if it checked
    // for the back-off just before it began.
    assert!(
        proxy.connections() <= opened + 1,
        "{} connections to Redis during 100 requests",
        proxy.connections() - opened
    );
}
