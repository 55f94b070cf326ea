//! Partition and archival benchmark, against a fresh database on the local
//! PostgreSQL (127.0.0.1 only), through the library (no HTTP in the way).
//!
//! Measures:
//! - the time of a one-day query over `BENCH_EVENTS` events (default 2 million;
//!   set 10000000 for the full size) spread over twelve months, on the
//!   monthly-partitioned `audit_log` against an unpartitioned copy of the same
//!   rows with the same indexes, built in the same run: one organization's day
//!   (rows, newest first) and every organization's day (a count);
//! - archival: events/s moved into archives and the compression ratio, for the
//!   first month of events (due under the `standard` policy when the clock
//!   stands a year and a month after them).
//!
//! Rows are generated in PostgreSQL (`generate_series`) with the shape ingest
//! gives them; it prints figures and never asserts on time.

use std::time::Instant;

use audit_worker::archive_store::ArchiveStore;
use audit_worker::config::Config;
use audit_worker::db::{self, events, migrations};
use audit_worker::integrity::keys::IntegrityKeys;
use audit_worker::maintenance::{archive, partitions};
use chrono::{DateTime, TimeZone, Utc};
use tokio_postgres::NoTls;
use uuid::Uuid;

#[path = "support/figures.rs"]
mod figures;
use figures::{ms, Percentiles};

const SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432";
const ORGANIZATIONS: i64 = 20;
/// Query repetitions per shape and table (each on another day).
const QUERY_RUNS: usize = 60;

#[tokio::main]
async fn main() {
    let total: i64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let database = format!("bench_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let mut config = Config::defaults();
    config.database.url = format!("{SERVER_URL}/{database}")
        .parse()
        .expect("a valid database URL");
    db::ensure_database(&config.database)
        .await
        .expect("create the bench database");
    migrations::run(&config.database).await.expect("migrate");
    let pool = db::pool(&config.database);
    let (client, connection) = tokio_postgres::connect(&format!("{SERVER_URL}/{database}"), NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);

    let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let months: Vec<_> = partitions::months_from(start, 11);
    events::ensure_partitions(&pool, &months)
        .await
        .expect("partitions");
    println!(
        "{total} events over 12 monthly partitions, {ORGANIZATIONS} organizations; database {database}"
    );

    let generated = Instant::now();
    client
        .execute(
            "INSERT INTO audit_log (id, \"timestamp\", principal_id, organization_id, action, target_resource_type, \
               target_resource_id, status, hash, data_classification, retention_policy, details, \
               principal_commitment, target_resource_commitment, chain_link) \
             SELECT g, $1::timestamptz + ((g - 1)::float8 / $2) * interval '365 days', 'user-' || (g % 1000), \
               'org-' || (g % $3), (ARRAY['patient.record.read','patient.record.update','lab.result.view'])[1 + g % 3], \
               'Patient', 'patient-' || (g % 50000), CASE WHEN g % 20 = 0 THEN 'failure' ELSE 'success' END, \
               md5(g::text) || md5((g + 1)::text), 'INTERNAL', 'standard', \
               jsonb_build_object('ip', '10.0.' || (g % 250) || '.' || (g % 7), 'facility', 'north-clinic', 'n', g), \
               md5((g + 2)::text) || md5((g + 3)::text), md5((g + 4)::text) || md5((g + 5)::text), g / 500 \
             FROM generate_series(1, $2::int8) AS g",
            &[&start, &total, &ORGANIZATIONS],
        )
        .await
        .expect("generate events");
    client
        .batch_execute(
            "CREATE TABLE audit_log_flat (LIKE audit_log INCLUDING DEFAULTS INCLUDING INDEXES); \
             INSERT INTO audit_log_flat SELECT * FROM audit_log; \
             INSERT INTO audit_chain_head (organization_id, seq, link) \
               SELECT 'org-' || o, 1, repeat('0', 64) FROM generate_series(0, 19) AS o; \
             ANALYZE audit_log; ANALYZE audit_log_flat;",
        )
        .await
        .expect("build the unpartitioned copy");
    println!("generated both tables in {:.1?}", generated.elapsed());

    let mut summary = Vec::new();
    for (shape, sql) in [
        (
            "one organization's day, newest first",
            "SELECT * FROM {table} WHERE organization_id = $1 AND \"timestamp\" >= $2 AND \"timestamp\" < $3 \
             ORDER BY \"timestamp\" DESC, id DESC",
        ),
        (
            "every organization's day, counted",
            "SELECT count(*) FROM {table} WHERE $1::text IS NOT NULL AND \"timestamp\" >= $2 AND \"timestamp\" < $3",
        ),
    ] {
        let partitioned = time_query(&client, &sql.replace("{table}", "audit_log"), start).await;
        let flat = time_query(&client, &sql.replace("{table}", "audit_log_flat"), start).await;
        println!(
            "{shape}: partitioned p50 {:.2} ms p99 {:.2} ms ({} rows on average); unpartitioned p50 {:.2} ms p99 {:.2} ms; ratio p50 {:.2}",
            ms(partitioned.0.p50), ms(partitioned.0.p99), partitioned.1, ms(flat.0.p50), ms(flat.0.p99),
            ms(partitioned.0.p50) / ms(flat.0.p50)
        );
        summary.push(format!(
            "{shape}: partitioned {:.2} ms vs unpartitioned {:.2} ms (p50)",
            ms(partitioned.0.p50),
            ms(flat.0.p50)
        ));
    }

    let now = start + chrono::Duration::days(365 + 31);
    let due: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE \"timestamp\" < $1",
            &[&(now - chrono::Duration::days(365))],
        )
        .await
        .expect("count due events")
        .get(0);
    // Archival records its operation with an event in the chain (migration V17).
    let keys = IntegrityKeys::load(&config.integrity, &pool)
        .await
        .expect("integrity keys");
    let store =
        ArchiveStore::open(&config.archive, config.partitions.archive_compression_level).await;
    let archiving = Instant::now();
    let report = archive::run(&pool, &store, &keys, &config.partitions, now, false)
        .await
        .expect("archival");
    let took = archiving.elapsed();
    let ratio = report.uncompressed_bytes as f64 / report.compressed_bytes.max(1) as f64;
    println!(
        "archival: {} of {due} due events into {} archives in {took:.2?} ({:.0} events/s); \
         {} bytes of JSON Lines -> {} bytes zstd level {} (ratio {ratio:.1}); {} failed batches",
        report.events,
        report.archives,
        report.events as f64 / took.as_secs_f64(),
        report.uncompressed_bytes,
        report.compressed_bytes,
        config.partitions.archive_compression_level,
        report.failed_batches
    );
    summary.push(format!(
        "archival {:.0} events/s, compression ratio {ratio:.1}",
        report.events as f64 / took.as_secs_f64()
    ));

    println!("\n== summary ({total} events) ==");
    for line in summary {
        println!("{line}");
    }
    drop(client);
    drop(pool);
    let (admin, connection) = tokio_postgres::connect(&format!("{SERVER_URL}/postgres"), NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    admin
        .execute(&format!("DROP DATABASE \"{database}\" WITH (FORCE)"), &[])
        .await
        .expect("drop the bench database");
}

/// The times and the average row count of `QUERY_RUNS` runs, each on another
/// day and organization.
async fn time_query(
    client: &tokio_postgres::Client,
    sql: &str,
    start: DateTime<Utc>,
) -> (Percentiles, u64) {
    let statement = client.prepare(sql).await.expect("prepare");
    let mut samples = Vec::with_capacity(QUERY_RUNS);
    let mut rows = 0u64;
    for run in 0..QUERY_RUNS {
        let day = start + chrono::Duration::days((run as i64 * 37) % 360);
        let organization = format!("org-{}", run as i64 % ORGANIZATIONS);
        let began = Instant::now();
        let found = client
            .query(
                &statement,
                &[&organization, &day, &(day + chrono::Duration::days(1))],
            )
            .await
            .expect("query");
        samples.push(began.elapsed());
        rows += if found.len() == 1 && sql.contains("count(*)") {
            found[0].get::<_, i64>(0) as u64
        } else {
            found.len() as u64
        };
    }
    (Percentiles::of(samples), rows / QUERY_RUNS as u64)
}
