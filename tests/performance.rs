//! The operators' database performance monitor: the report names a known
//! unused index and a known sequentially scanned table, says how to enable
//! pg_stat_statements when it is not loaded, EXPLAIN takes only one read-only
//! query, tenants are refused, and maintenance runs one instance at a time
//! and records what it did.

mod common;

use std::process::Command;
use std::time::Duration;

use audit_worker::db::locks::Round;
use common::{spawn_app, spawn_app_with, spawn_beside, wait_until, TestApp, TestDatabase};
use reqwest::Method;
use serde_json::{json, Value};

async fn operator(app: &TestApp) -> String {
    app.create_key("system", "org:admin").await
}

async fn report(app: &TestApp, key: &str) -> Value {
    let (status, body) = app
        .call(Method::GET, "/v1/admin/performance", Some(key), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn preloaded(db: &tokio_postgres::Client) -> bool {
    let libraries: String = db
        .query_one("SELECT current_setting('shared_preload_libraries')", &[])
        .await
        .unwrap()
        .get(0);
    libraries.contains("pg_stat_statements")
}

/// A table of 20,000 rows scanned sequentially again and again is suggested
/// an index, and an index never scanned is listed as unused; the other
/// sections are there (audit_log's partitions among the tables).
#[actix_web::test]
async fn the_report_names_an_unused_index_and_a_sequentially_scanned_table() {
    let app = spawn_app().await;
    let key = operator(&app).await;
    let db = app.database().await;
    db.batch_execute(
        "CREATE TABLE perf_scanned (id int, payload text);
         INSERT INTO perf_scanned SELECT n, 'row ' || n FROM generate_series(1, 20000) AS n;
         CREATE TABLE perf_indexed (id int, tag text);
         INSERT INTO perf_indexed SELECT n, 'tag' FROM generate_series(1, 100) AS n;
         CREATE INDEX perf_never_used_idx ON perf_indexed (tag);
         ANALYZE perf_scanned; ANALYZE perf_indexed;",
    )
    .await
    .unwrap();
    for _ in 0..12 {
        db.query(
            "SELECT count(*) FROM perf_scanned WHERE payload = 'row 7'",
            &[],
        )
        .await
        .unwrap();
    }
    db.batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();

    let body = wait_until(Duration::from_secs(20), "scans in the report", || async {
        let body = report(&app, &key).await;
        let suggested = body["suggested_indexes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["table"] == "perf_scanned");
        suggested.then_some(body)
    })
    .await;
    let suggestion = body["suggested_indexes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["table"] == "perf_scanned")
        .unwrap();
    assert!(suggestion["seq_scans"].as_i64().unwrap() >= 12);
    assert!(suggestion["reason"]
        .as_str()
        .unwrap()
        .contains("sequential scans"));
    assert!(!body["suggested_indexes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["table"] == "perf_indexed"));

    let unused = body["indexes"]["unused"].as_array().unwrap();
    let index = unused
        .iter()
        .find(|i| i["index"] == "perf_never_used_idx")
        .expect("the unused index is listed");
    assert_eq!(index["table"], "perf_indexed");
    assert!(index["size_bytes"].as_i64().unwrap() > 0);
    assert!(
        !unused
            .iter()
            .any(|i| i["primary"] == true || i["unique"] == true),
        "primary keys and unique indexes are never 'unused'"
    );

    let tables = body["tables"].as_array().unwrap();
    assert!(tables.iter().any(|t| t["partition_of"] == "audit_log"
        && t["table"].as_str().unwrap().starts_with("audit_log_")));
    let scanned = tables
        .iter()
        .find(|t| t["table"] == "perf_scanned")
        .unwrap();
    assert_eq!(scanned["rows_estimate"], 20000);
    assert!(scanned["total_bytes"].as_i64().unwrap() > 0);
    assert!(scanned["last_analyze"].is_string());
    assert!(body["cache_hit_ratio"]["heap"].as_f64().unwrap() > 0.0);
    assert_eq!(
        body["connections"]["pool_max"],
        app.config.database.pool_max_size
    );
    assert!(!body["connections"]["server_by_state"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// Without pg_stat_statements in shared_preload_libraries (even with the
/// extension created in the database), the report says so and how to enable
/// it, and still has every other section.
#[actix_web::test]
async fn absent_pg_stat_statements_is_reported_with_how_to_enable_it() {
    let app = spawn_app().await;
    let key = operator(&app).await;
    let db = app.database().await;
    if preloaded(&db).await {
        let body = report(&app, &key).await;
        assert_eq!(body["slow_queries"]["available"], true);
        return;
    }
    for created in [false, true] {
        if created {
            db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .await
                .unwrap();
        }
        let body = report(&app, &key).await;
        let slow = &body["slow_queries"];
        assert_eq!(slow["available"], false, "{slow}");
        assert!(slow["reason"]
            .as_str()
            .unwrap()
            .contains("shared_preload_libraries"));
        let how = slow["how_to_enable"].as_str().unwrap();
        assert!(how.contains("shared_preload_libraries") && how.contains("CREATE EXTENSION"));
        assert_eq!(slow["threshold_ms"], 1000.0);
        assert!(body["tables"].as_array().is_some_and(|t| !t.is_empty()));
        assert!(body["indexes"]["indexes"].is_array());
    }
}

/// EXPLAIN of a SELECT returns the plan (ANALYZE only when asked); a DELETE,
/// two statements, a data-modifying CTE, a bad query and a timeout are 400s
/// naming `query`, and nothing was changed.
#[actix_web::test]
async fn explain_takes_one_read_only_query() {
    let app = spawn_app_with(|config| {
        config.operations.explain_timeout = Duration::from_millis(300);
    })
    .await;
    let key = operator(&app).await;
    let db = app.database().await;
    db.batch_execute(
        "CREATE TABLE perf_rows (id int); INSERT INTO perf_rows SELECT generate_series(1, 10);",
    )
    .await
    .unwrap();

    let explain = |query: &str, analyze: bool| {
        let body = json!({ "query": query, "analyze": analyze });
        let (app, key) = (&app, &key);
        async move {
            app.call(
                Method::POST,
                "/v1/admin/performance/explain",
                Some(key),
                Some(body),
            )
            .await
        }
    };
    let (status, body) = explain("SELECT count(*) FROM perf_rows WHERE id > 3;", false).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["plan"][0]["Plan"]["Node Type"].is_string());
    assert!(body["plan"][0].get("Execution Time").is_none());
    let (status, body) =
        explain("WITH r AS (SELECT id FROM perf_rows) SELECT * FROM r", true).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["plan"][0]["Execution Time"].is_number());

    for refused in [
        "DELETE FROM perf_rows",
        "SELECT 1; DELETE FROM perf_rows",
        "WITH gone AS (DELETE FROM perf_rows RETURNING *) SELECT * FROM gone",
        "SELECT * FROM no_such_table",
        "SELEC 1",
        "SELECT pg_sleep(5)",
    ] {
        let (status, body) = explain(refused, true).await;
        assert_eq!(status, 400, "{refused}: {body}");
        assert_eq!(body["error"]["details"][0]["field"], "query", "{refused}");
    }
    let rows: i64 = db
        .query_one("SELECT count(*) FROM perf_rows", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 10);
}

/// A tenant's org:admin (another organization) gets 403 on every admin
/// route; an operator role without `manage` may read but not run maintenance.
#[actix_web::test]
async fn tenants_are_refused_and_operators_need_the_right_action() {
    let app = spawn_app().await;
    let tenant = app.create_key("acme", "org:admin").await;
    let operator = operator(&app).await;
    let routes = [
        (Method::GET, "/v1/admin/performance", None),
        (
            Method::POST,
            "/v1/admin/performance/explain",
            Some(json!({"query": "SELECT 1"})),
        ),
        (Method::POST, "/v1/admin/maintenance/run", None),
        (Method::GET, "/v1/admin/errors", None),
    ];
    for (method, path, body) in routes.clone() {
        let (status, answer) = app.call(method, path, Some(&tenant), body).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert!(answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("operators"));
    }

    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/roles/ops-reader",
            Some(&operator),
            Some(json!({"permissions": [{"resource": "system.operations", "action": "read"}]})),
        )
        .await;
    assert!(status == 200 || status == 201, "{body}");
    let reader = app.create_key("system", "ops-reader").await;
    let (status, _) = app
        .call(Method::GET, "/v1/admin/performance", Some(&reader), None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/admin/maintenance/run",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("system.operations"));
}

/// Maintenance analyzes the audit tables and vacuums the one with many dead
/// tuples, records it (shown in the report); while another instance holds
/// the lock, neither worker runs; two workers triggered at once never run
/// at the same time.
#[actix_web::test]
async fn maintenance_records_its_actions_and_runs_one_instance_at_a_time() {
    let first = spawn_app().await;
    let second = spawn_beside(&first, |_| {}).await;
    let key = operator(&first).await;
    let db = first.database().await;
    db.batch_execute(
        "ALTER TABLE error_log SET (autovacuum_enabled = false);
         INSERT INTO error_log (category, severity, code, message, \"timestamp\")
         SELECT 'test', 'LOW', 'dead', 'row ' || n, now() FROM generate_series(1, 200) AS n;
         DELETE FROM error_log WHERE code = 'dead' AND message <> 'row 1';
         SELECT pg_stat_force_next_flush();",
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(20), "dead tuples counted", || async {
        let dead: i64 = db
            .query_one(
                "SELECT coalesce(max(n_dead_tup), 0) FROM pg_stat_user_tables WHERE relname = 'error_log'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (dead >= 199).then_some(())
    })
    .await;

    let (status, body) = first
        .call(Method::POST, "/v1/admin/maintenance/run", Some(&key), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ran"], true);
    let actions = body["run"]["actions"].as_array().unwrap();
    assert!(actions
        .iter()
        .any(|a| a["table"] == "audit_log" && a["action"] == "ANALYZE"));
    let vacuum = actions
        .iter()
        .find(|a| a["table"] == "error_log" && a["action"] == "VACUUM (ANALYZE)")
        .expect("error_log vacuumed");
    assert!(vacuum["dead_tuples"].as_i64().unwrap() >= 199);
    assert_eq!(body["run"]["trigger"], "operator");
    let run_id = body["run"]["id"].clone();
    let shown = report(&first, &key).await;
    assert_eq!(shown["maintenance_runs"][0]["id"], run_id);

    // Another session holds the lock: neither worker runs.
    let holder = first.database().await;
    holder
        .query(
            "SELECT pg_advisory_lock($1)",
            &[&Round::DatabaseMaintenance.key()],
        )
        .await
        .unwrap();
    for app in [&first, &second] {
        let (status, body) = app
            .call(Method::POST, "/v1/admin/maintenance/run", Some(&key), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["ran"], false);
        assert!(body["run"].is_null());
    }
    holder
        .query(
            "SELECT pg_advisory_unlock($1)",
            &[&Round::DatabaseMaintenance.key()],
        )
        .await
        .unwrap();

    // Both at once: whatever ran did not overlap.
    for _ in 0..3 {
        let (a, b) = tokio::join!(
            first.call(Method::POST, "/v1/admin/maintenance/run", Some(&key), None),
            second.call(Method::POST, "/v1/admin/maintenance/run", Some(&key), None),
        );
        assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
        assert!(a.1["ran"] == true || b.1["ran"] == true, "{a:?} {b:?}");
    }
    let runs = db
        .query(
            "SELECT started_at, finished_at FROM maintenance_runs ORDER BY started_at",
            &[],
        )
        .await
        .unwrap();
    assert!(runs.len() >= 2);
    for pair in runs.windows(2) {
        let finished: chrono::DateTime<chrono::Utc> = pair[0].get(1);
        let next_started: chrono::DateTime<chrono::Utc> = pair[1].get(0);
        assert!(finished <= next_started, "two maintenance runs overlapped");
    }
}

/// `audit-worker db report --json` prints the report as JSON with every section.
#[test]
fn cli_db_report_prints_json() {
    let name = common::unique_database_name();
    let _database = TestDatabase::named(&name);
    let server: audit_worker::config::PostgresUrl = common::test_server_url().parse().unwrap();
    let url = server.with_database(&name).to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_audit-worker"));
    for (key, _) in std::env::vars() {
        if key.starts_with("AUDIT_WORKER") {
            command.env_remove(key);
        }
    }
    let output = command
        .args(["db", "report", "--json"])
        .env("AUDIT_WORKER__DATABASE__URL", &url)
        .output()
        .expect("run the binary");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    for section in [
        "slow_queries",
        "indexes",
        "tables",
        "cache_hit_ratio",
        "connections",
        "suggested_indexes",
        "maintenance_runs",
    ] {
        assert!(report.get(section).is_some(), "missing {section}");
    }
    assert!(report["slow_queries"]["available"].is_boolean());
    assert_eq!(report["database"], name.as_str());
}
