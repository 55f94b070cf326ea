//! Partition maintenance: partitions kept ahead by the PartitionActor (with
//! the clock moved), created on demand for a late event, created once when
//! workers race, and dropped once empty and past every retention period
//! unless a legal hold covers them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use audit_worker::clock::{Clock, ShiftedClock};
use audit_worker::db::{self, events, partitions};
use audit_worker::integrity::keys::IntegrityKeys;
use audit_worker::maintenance::{self, partitions as maintain};
use chrono::{Datelike, Months, Utc};
use common::{event, spawn_app, spawn_app_with_clock, wait_until, TestApp};
use serde_json::json;

async fn partition_names(app: &TestApp) -> Vec<String> {
    partitions::list(&app.database().await)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// The PartitionActor keeps `months_ahead` months ready from the (moved)
/// current month, and reports partitions on /metrics.
#[actix_web::test]
async fn partitions_are_kept_ready_ahead() {
    let clock = Arc::new(ShiftedClock::default());
    let app = spawn_app_with_clock(clock.clone(), |config| {
        config.partitions.maintenance_interval = Duration::from_millis(100);
        config.partitions.months_ahead = 2;
    })
    .await;
    clock.advance(chrono::Duration::days(800));
    let far = events::month_of(clock.now())
        .checked_add_months(Months::new(2))
        .unwrap();
    let expected = maintain::partition_name(far);
    wait_until(Duration::from_secs(20), &expected, || async {
        partition_names(&app)
            .await
            .contains(&expected)
            .then_some(())
    })
    .await;
    let gauge = format!("audit_worker_partition_bytes{{partition=\"{expected}\"}}");
    let metrics = wait_until(Duration::from_secs(10), "the partition's gauge", || async {
        let metrics = app.metrics().await;
        metrics.contains(&gauge).then_some(metrics)
    })
    .await;
    assert!(metrics.contains("audit_worker_partition_maintenance_last_run_timestamp_seconds "));
}

/// A late event from last year gets its partition on demand.
#[actix_web::test]
async fn a_late_event_from_last_year_is_stored() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let last_year = Utc::now() - chrono::Duration::days(400);
    app.ingest(
        &key,
        event("u", "late.event").timestamp(last_year.to_rfc3339()),
    )
    .await;
    let partition: String = app
        .database()
        .await
        .query_one(
            "SELECT tableoid::regclass::text FROM audit_log WHERE action = 'late.event'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        partition,
        format!("audit_log_{:04}_{:02}", last_year.year(), last_year.month())
    );
}

/// Workers racing to create the same months each succeed, and every month
/// exists once; only one runs a maintenance round at a time.
#[actix_web::test]
async fn racing_workers_create_each_partition_once() {
    let app = spawn_app().await;
    let pool = db::pool(&app.config.database);
    let far = Utc::now() + chrono::Duration::days(3650);
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { maintain::ensure_ahead(&pool, far, 3).await })
        })
        .collect();
    let mut created = Vec::new();
    for racer in racers {
        created.extend(racer.await.unwrap().expect("every racer succeeds"));
    }
    let names = partition_names(&app).await;
    for month in maintain::months_from(far, 3) {
        let name = maintain::partition_name(month);
        assert_eq!(names.iter().filter(|n| **n == name).count(), 1, "{name}");
    }

    let keys = Arc::new(
        IntegrityKeys::load(&app.config.integrity, &pool)
            .await
            .unwrap(),
    );
    let store = Arc::new(app.archive_store().await);
    let rounds: Vec<_> = (0..3)
        .map(|_| {
            let (config, pool, keys) = (app.config.clone(), pool.clone(), keys.clone());
            let store = store.clone();
            tokio::spawn(async move { maintenance::run(&config, &pool, &store, &keys, far).await })
        })
        .collect();
    let mut ran = 0;
    for round in rounds {
        let report = round.await.unwrap().expect("a round succeeds or skips");
        ran += usize::from(report.ran);
    }
    assert!(ran >= 1);
}

/// Past every retention period, empty partitions are dropped; one holding
/// rows, and one a legal hold covers, are kept. A dry run drops nothing.
#[actix_web::test]
async fn expired_partitions_are_dropped_unless_held_or_not_empty() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let pool = db::pool(&app.config.database);
    let old = |months: u32| {
        events::month_of(Utc::now())
            .checked_sub_months(Months::new(months))
            .unwrap()
    };
    let (empty, with_rows, held) = (old(30), old(29), old(28));
    events::ensure_partitions(&pool, &[empty, with_rows, held])
        .await
        .unwrap();
    app.ingest(
        &key,
        event("u", "old.event").timestamp(format!("{with_rows}T12:00:00Z")),
    )
    .await;
    app.create_legal_hold(
        &key,
        json!({"reason": "audit by the regulator",
               "starts_at": format!("{held}T00:00:00Z"), "ends_at": format!("{held}T05:00:00Z")}),
    )
    .await;
    // Two years of retention at most, as if every policy kept data that long.
    let keep_days = 700;
    let dry = maintain::drop_expired(&pool, Utc::now(), keep_days, true)
        .await
        .unwrap();
    assert!(dry.iter().all(|e| !e.dropped));
    let names = partition_names(&app).await;
    assert!(names.contains(&maintain::partition_name(empty)));

    let done = maintain::drop_expired(&pool, Utc::now(), keep_days, false)
        .await
        .unwrap();
    let dropped: Vec<&str> = done
        .iter()
        .filter(|e| e.dropped)
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        dropped.contains(&maintain::partition_name(empty).as_str()),
        "{done:?}"
    );
    let names = partition_names(&app).await;
    assert!(!names.contains(&maintain::partition_name(empty)));
    assert!(names.contains(&maintain::partition_name(with_rows)));
    assert!(names.contains(&maintain::partition_name(held)));
}
