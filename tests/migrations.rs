//! Migrations: applied once each, idempotent, checksum-protected, and the
//! schema they build (tables, partitions).

mod common;

use audit_worker::config::DatabaseConfig;
use audit_worker::db::migrations::{self, MigrationError};
use common::{connect, test_config, TestDatabase};

fn fresh_database() -> (DatabaseConfig, TestDatabase) {
    let config = test_config().database;
    let guard = TestDatabase::named(config.url.database_name());
    (config, guard)
}

/// The first run creates the database and applies everything; a second run
/// applies nothing and changes nothing.
#[tokio::test]
async fn migrations_are_applied_once() {
    let (config, _db) = fresh_database();
    audit_worker::db::ensure_database(&config).await.unwrap();
    let first = migrations::run(&config).await.unwrap();
    assert!(!first.is_empty());
    assert_eq!(
        migrations::run(&config).await.unwrap(),
        Vec::<String>::new()
    );

    let client = connect(&config.url).await;
    let recorded: i64 = client
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded as usize, first.len());
}

/// A migration whose recorded checksum no longer matches the file (as if the file
/// had been edited after it was applied) is refused with a clear error.
#[tokio::test]
async fn an_edited_migration_is_refused() {
    let (config, _db) = fresh_database();
    audit_worker::db::ensure_database(&config).await.unwrap();
    migrations::run(&config).await.unwrap();
    let client = connect(&config.url).await;
    client
        .execute(
            "UPDATE refinery_schema_history SET checksum = '1' WHERE version = 1",
            &[],
        )
        .await
        .unwrap();

    let error = migrations::run(&config).await.unwrap_err();
    assert!(matches!(error, MigrationError::Edited(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("V1__initial_schema"), "{message}");
    assert!(message.contains("edited after it was applied"), "{message}");
}

/// Two workers migrating the same fresh database at once both succeed, and
/// each migration is applied exactly once.
#[tokio::test]
async fn concurrent_migrations_apply_each_file_once() {
    let (config, _db) = fresh_database();
    audit_worker::db::ensure_database(&config).await.unwrap();
    let (a, b) = tokio::join!(migrations::run(&config), migrations::run(&config));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        a.is_empty() || b.is_empty(),
        "both applied something: {a:?} {b:?}"
    );
    assert!(!(a.is_empty() && b.is_empty()), "neither applied anything");
}

/// The schema holds every table of the data model, `audit_log` partitioned by
/// month with the current month and the next six.
#[tokio::test]
async fn schema_has_every_table_and_monthly_partitions() {
    let (config, _db) = fresh_database();
    audit_worker::db::ensure_database(&config).await.unwrap();
    migrations::run(&config).await.unwrap();
    let client = connect(&config.url).await;

    for table in [
        "audit_log",
        "audit_preset",
        "audit_integrity_log",
        "audit_retention_policy",
        "error_log",
        "error_aggregation",
        "archive_storage",
        "alerts",
        "scheduled_reports",
        "report_templates",
        "report_executions",
        "archive_dlq_event",
        "config_change_event",
        "pseudonym_mapping",
        "organization_role",
        "delivery_destinations",
        "delivery_logs",
        "delivery_queue",
        "destination_health",
    ] {
        let found: Option<String> = client
            .query_one("SELECT to_regclass($1)::text", &[&table])
            .await
            .unwrap()
            .get(0);
        assert_eq!(found.as_deref(), Some(table), "table {table} is missing");
    }

    let partitions = strings(
        &client,
        "SELECT child.relname::text FROM pg_inherits \
             JOIN pg_class child ON child.oid = pg_inherits.inhrelid \
             JOIN pg_class parent ON parent.oid = pg_inherits.inhparent \
             WHERE parent.relname = 'audit_log' ORDER BY 1",
    )
    .await;
    let expected = strings(
        &client,
        "SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC') \
                    + make_interval(months => n), '\"audit_log_\"YYYY_MM') \
             FROM generate_series(0, 6) n ORDER BY 1",
    )
    .await;
    assert_eq!(partitions, expected);

    // Booleans are booleans, not strings.
    let kind: String = client
        .query_one(
            "SELECT data_type FROM information_schema.columns \
             WHERE table_name = 'delivery_destinations' AND column_name = 'disabled'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind, "boolean");
}

/// The first column of every row of `sql`, as text.
async fn strings(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}
