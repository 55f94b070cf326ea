//! The query cache: repeated listings served from L1, then L2 on another
//! instance; every write visible to the next query on any instance; no answer
//! crossing organizations; Redis cut mid-run and back without a client error.

mod common;

use std::time::Duration;

use std::process::Stdio;

use common::process::{free_port, issue_key, kill_9, post, serve, wait_ready};
use common::proxy::TcpProxy;
use common::{event, spawn_app, spawn_app_with, spawn_beside, wait_until, TestApp, TestDatabase};
use serde_json::Value;

/// `audit_worker_cache_lookups_total` of event listings at `level` with
/// `outcome`, on the app's /metrics.
async fn lookups(app: &TestApp, level: &str, outcome: &str) -> u64 {
    let series = format!(
        "audit_worker_cache_lookups_total{{kind=\"events\",level=\"{level}\",outcome=\"{outcome}\"}}"
    );
    app.metric(&series).await.unwrap_or(0)
}

/// A repeated listing is an L1 hit; an event ingested afterwards is in the
/// very next listing.
#[actix_web::test]
async fn repeated_listings_hit_l1_and_writes_show_at_once() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    app.ingest_action(&key, "first").await;
    assert_eq!(app.listed_actions(&key).await, ["first"]);
    let hits = lookups(&app, "l1", "hit").await;
    assert_eq!(app.listed_actions(&key).await, ["first"]);
    assert_eq!(lookups(&app, "l1", "hit").await, hits + 1);
    for n in 0..5 {
        let action = format!("write-{n}");
        app.ingest_action(&key, &action).await;
        assert_eq!(
            app.listed_actions(&key).await[0],
            action,
            "a write is seen at once"
        );
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("audit_worker_cache_l1_bytes "),
        "{metrics}"
    );
}

/// Two instances on one database and one Redis: an answer one filled is an
/// L2 hit on the other, and a write on either is seen at once by both.
#[actix_web::test]
async fn two_instances_stay_coherent() {
    let first = spawn_app().await;
    let second = spawn_beside(&first, |_| {}).await;
    let key = first.create_key("org-a", "org:admin").await;
    first.ingest_action(&key, "one").await;
    assert_eq!(first.listed_actions(&key).await, ["one"]);
    let l2_hits = lookups(&second, "l2", "hit").await;
    assert_eq!(second.listed_actions(&key).await, ["one"]);
    assert_eq!(lookups(&second, "l2", "hit").await, l2_hits + 1);

    for n in 0..5 {
        let (writer, reader) = if n % 2 == 0 {
            (&second, &first)
        } else {
            (&first, &second)
        };
        let action = format!("write-{n}");
        writer.ingest_action(&key, &action).await;
        assert_eq!(reader.listed_actions(&key).await[0], action);
    }
}

/// Two worker processes (the release binary) on one database and one Redis:
/// each write on one is in the very next listing on the other, with both
/// caching.
#[tokio::test]
async fn two_worker_processes_stay_coherent() {
    let config = common::test_config();
    let _database = TestDatabase::named(config.database.url.database_name());
    let url = config.database.url.to_string();
    let settings = [
        ("AUDIT_WORKER__LOG__LEVEL", "warn"),
        (
            "AUDIT_WORKER__CACHE__REDIS_PREFIX",
            config.cache.redis_prefix.as_str(),
        ),
    ];
    let client = reqwest::Client::new();
    let ports = [free_port(), free_port()];
    let mut workers: Vec<_> = ports
        .iter()
        .map(|port| serve(*port, &url, &settings, Stdio::null()))
        .collect();
    let bases: Vec<String> = ports
        .iter()
        .map(|port| format!("http://127.0.0.1:{port}"))
        .collect();
    for (base, worker) in bases.iter().zip(&mut workers) {
        wait_ready(&client, base, worker).await;
    }
    let key = issue_key(&url, "org-a", "org:admin");
    let listing = |base: &str| {
        let (client, key, url) = (client.clone(), key.clone(), format!("{base}/v1/events"));
        async move {
            let body: serde_json::Value = client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["events"][0]["action"].as_str().map(str::to_owned)
        }
    };
    for n in 0..6 {
        let (writer, reader) = (&bases[n % 2], &bases[(n + 1) % 2]);
        // Both have the current answer cached before the write.
        listing(writer).await;
        listing(reader).await;
        let action = format!("write-{n}");
        let written = Value::from(event("u", &action));
        let (status, body) = post(&client, writer, &key, "/v1/events", &written).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(listing(reader).await.as_deref(), Some(action.as_str()));
        assert_eq!(listing(writer).await.as_deref(), Some(action.as_str()));
    }
    for worker in &mut workers {
        kill_9(worker);
    }
}

/// The same query from two organizations gets each its own answer.
#[actix_web::test]
async fn answers_never_cross_organizations() {
    let app = spawn_app().await;
    let a = app.create_key("org-a", "org:admin").await;
    let b = app.create_key("org-b", "org:admin").await;
    app.ingest_action(&a, "a-only").await;
    assert_eq!(app.listed_actions(&a).await, ["a-only"]);
    assert!(app.listed_actions(&b).await.is_empty());
    app.ingest_action(&b, "b-only").await;
    assert_eq!(app.listed_actions(&b).await, ["b-only"]);
    assert_eq!(app.listed_actions(&a).await, ["a-only"]);
}

/// Redis cut mid-run: listings and writes still succeed, writes still show
/// at once; when Redis is back, L2 serves again.
#[actix_web::test]
async fn redis_down_and_back_costs_the_client_nothing() {
    let proxy = TcpProxy::start("127.0.0.1:6379", true).await;
    let app = spawn_app_with(|config| {
        proxy.carry_redis(config);
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    app.ingest_action(&key, "before").await;
    assert_eq!(app.listed_actions(&key).await, ["before"]);

    proxy.disable();
    app.ingest_action(&key, "during").await;
    assert_eq!(app.listed_actions(&key).await, ["during", "before"]);
    let hits = lookups(&app, "l1", "hit").await;
    assert_eq!(app.listed_actions(&key).await, ["during", "before"]);
    assert_eq!(
        lookups(&app, "l1", "hit").await,
        hits + 1,
        "L1 serves alone"
    );

    proxy.enable();
    // Redis answers again: a write's generation lands there, and the listing
    // (keyed on Redis's generation again, never on the outage's) shows it.
    let generation_key = format!("{}generation:org-a:events", app.config.cache.redis_prefix);
    let redis = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
    let connection = redis.get_multiplexed_async_connection().await.unwrap();
    let before: i64 = redis::cmd("GET")
        .arg(&generation_key)
        .query_async(&mut connection.clone())
        .await
        .unwrap();
    let mut n = 0;
    wait_until(Duration::from_secs(15), "writes reach Redis again", || {
        n += 1;
        let (app, key, mut connection, generation_key) =
            (&app, &key, connection.clone(), &generation_key);
        async move {
            let action = format!("after-{n}");
            app.ingest_action(key, &action).await;
            assert_eq!(app.listed_actions(key).await[0], action);
            let now: i64 = redis::cmd("GET")
                .arg(generation_key)
                .query_async(&mut connection)
                .await
                .ok()?;
            (now > before).then_some(())
        }
    })
    .await;
}

/// A worker whose Redis goes through `proxy`, skipping Redis for a short
/// back-off after a failure.
async fn spawn_through(proxy: &TcpProxy, beside: Option<&TestApp>) -> TestApp {
    let adjust = move |config: &mut audit_worker::config::Config| {
        proxy.carry_redis(config);
        config.redis.outage_backoff = Duration::from_millis(50);
        config.redis.outage_backoff_max = Duration::from_millis(200);
    };
    match beside {
        Some(first) => spawn_beside(first, adjust).await,
        None => spawn_app_with(adjust).await,
    }
}

/// Waits until the worker's `/readyz` says Redis is `ok` (`true`) or
/// skipped after a failure (`false`).
async fn wait_redis(app: &TestApp, up: bool) {
    let what = if up {
        "Redis used again"
    } else {
        "Redis skipped"
    };
    wait_until(Duration::from_secs(15), what, || async {
        let (_, body) = app.get_json("/readyz").await;
        let check = &body["checks"]["redis"];
        let skipped = check["message"]
            .as_str()
            .is_some_and(|message| message.contains("skipped"));
        let ok = check["status"] == "ok";
        (if up { ok } else { skipped }).then_some(())
    })
    .await;
}

/// The generation of the organization's event listings in Redis.
async fn events_generation(app: &TestApp, organization_id: &str) -> i64 {
    let key = format!(
        "{}generation:{organization_id}:events",
        app.config.cache.redis_prefix
    );
    let redis = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async::<Option<i64>>(&mut connection)
        .await
        .unwrap()
        .unwrap_or(0)
}

/// An answer an instance cached while Redis was skipped is never served in a
/// later outage, though another instance's write came in between without
/// its announcement reaching it (that write's bump was retried, and retries
/// announce nothing); once Redis is back, the instance reads L2 again.
#[actix_web::test]
async fn an_answer_cached_in_one_outage_is_not_served_in_the_next() {
    let (to_a, to_b) = (
        TcpProxy::start("127.0.0.1:6379", true).await,
        TcpProxy::start("127.0.0.1:6379", true).await,
    );
    let a = spawn_through(&to_a, None).await;
    let b = spawn_through(&to_b, Some(&a)).await;
    let key = a.create_key("org-a", "org:admin").await;
    a.ingest_action(&key, "first").await;

    // First outage of A: it caches the listing without Redis.
    to_a.disable();
    wait_redis(&a, false).await;
    assert_eq!(a.listed_actions(&key).await, ["first"]);
    to_a.enable();
    wait_redis(&a, true).await;

    // B writes while Redis is skipped there; its bump lands later, unannounced.
    let generation = events_generation(&a, "org-a").await;
    to_b.disable();
    wait_redis(&b, false).await;
    b.ingest_action(&key, "second").await;
    to_b.enable();
    wait_until(Duration::from_secs(15), "B's bump lands", || async {
        (events_generation(&a, "org-a").await > generation).then_some(())
    })
    .await;

    // Second outage of A: the first outage's answer is not taken.
    to_a.disable();
    wait_redis(&a, false).await;
    assert_eq!(a.listed_actions(&key).await, ["second", "first"]);

    // Redis back: B's answer is an L2 hit on A.
    to_a.enable();
    wait_redis(&a, true).await;
    assert_eq!(b.listed_actions(&key).await, ["second", "first"]);
    let l2_hits = lookups(&a, "l2", "hit").await;
    wait_until(Duration::from_secs(5), "an L2 hit on A", || async {
        assert_eq!(a.listed_actions(&key).await, ["second", "first"]);
        (lookups(&a, "l2", "hit").await > l2_hits).then_some(())
    })
    .await;
}

/// Events an instance acknowledged while Redis was skipped are in its next
/// listing once Redis is back, though Redis then still holds the answer from
/// before them (L2): the instance makes the bump it missed before it trusts
/// Redis's generation again.
#[actix_web::test]
async fn writes_made_while_redis_was_skipped_show_once_it_is_back() {
    let proxy = TcpProxy::start("127.0.0.1:6379", true).await;
    let app = spawn_through(&proxy, None).await;
    let key = app.create_key("org-a", "org:admin").await;
    app.ingest_action(&key, "before").await;
    assert_eq!(app.listed_actions(&key).await, ["before"]);
    // That answer is in L2 (stored off the request's path).
    let pattern = format!("{}q:org-a:events:*", app.config.cache.redis_prefix);
    let redis = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
    let connection = redis.get_multiplexed_async_connection().await.unwrap();
    wait_until(Duration::from_secs(5), "the answer in L2", || {
        let (mut connection, pattern) = (connection.clone(), pattern.clone());
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut connection)
                .await
                .unwrap();
            (!keys.is_empty()).then_some(())
        }
    })
    .await;

    proxy.disable();
    wait_redis(&app, false).await;
    app.ingest_action(&key, "during").await;
    assert_eq!(app.listed_actions(&key).await, ["during", "before"]);

    proxy.enable();
    wait_redis(&app, true).await;
    assert_eq!(app.listed_actions(&key).await, ["during", "before"]);
    assert_eq!(app.listed_actions(&key).await, ["during", "before"]);
}
