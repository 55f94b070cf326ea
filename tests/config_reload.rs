//! Configuration reload against the real worker and PostgreSQL: a worker
//! started from a config file in a temporary directory reloads it (by the
//! method, and as a child `audit-worker serve` process on a real SIGHUP); the
//! keys that may change at run time take effect, each change is recorded in
//! `config_change_event` with its secrets masked, restart-only keys are left
//! alone, and an invalid file is refused with the old values kept.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use audit_worker::config::Config;
use common::process::{free_port, issue_key, serve, signal, wait_ready, BINARY};
use common::{event, spawn_app_from_file, test_config, wait_until, Event, TestApp, TestDatabase};
use nix::sys::signal::Signal;
use reqwest::Method;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// A config file in a fresh temporary directory, removed with it.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("aw-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        Self { dir, path }
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).unwrap();
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the test worker needs of the file (as `common::test_config` sets it),
/// then `live`: the keys the tests change.
fn file_text(config: &Config, live: &str) -> String {
    format!(
        r#"
[http]
bind = "127.0.0.1:0"
workers = 1
shutdown_timeout = "5s"

[database]
url = "{url}"
health_timeout = "1s"
startup_timeout = "10s"

[cache]
redis_prefix = "{prefix}"

[supervisor]
restart_backoff_min = "10ms"
restart_backoff_max = "200ms"
heartbeat_interval = "200ms"

{live}
"#,
        url = config.database.url,
        prefix = config.cache.redis_prefix,
    )
}

/// The live keys: a login-failure threshold, a rule watching a token, the
/// rate limit and the log level.
fn live_keys(threshold: u32, per_second: u32, burst: u32, token: &str, level: &str) -> String {
    format!(
        r#"
[auth]
rate_limit_per_second = {per_second}
rate_limit_burst = {burst}

[log]
level = "{level}"

[[alerts.rules]]
name = "login-burst"
kind = "threshold"
when = {{ action = "auth.login", status = "failure" }}
threshold = {threshold}
window = "10m"
group_by = "principal_id"
severity = "HIGH"
type = "SECURITY"

[[alerts.rules]]
name = "token-watch"
kind = "match"
when = {{ "details.api_token" = "{token}" }}
severity = "LOW"
type = "SECURITY"
"#
    )
}

/// Sends up to `tries` requests in a row; whether one was refused with 429.
async fn refused_within(worker: &TestApp, key: &str, tries: usize) -> bool {
    for _ in 0..tries {
        let (status, _) = worker.call(Method::GET, "/v1/roles", Some(key), None).await;
        if status == 429 {
            return true;
        }
        assert_eq!(status, 200);
    }
    false
}

/// Rows of `config_change_event` as (field, previous, new, changed_by, reason,
/// environment, previous_version, new_version), by id.
async fn history(db: &tokio_postgres::Client) -> Vec<Value> {
    db.query(
        "SELECT field, previous_value, new_value, changed_by, reason, environment, previous_version, \
           new_version FROM config_change_event ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| {
        json!({
            "field": row.get::<_, String>(0),
            "previous": row.get::<_, Option<Value>>(1),
            "new": row.get::<_, Option<Value>>(2),
            "changed_by": row.get::<_, String>(3),
            "reason": row.get::<_, Option<String>>(4),
            "environment": row.get::<_, Option<String>>(5),
            "previous_version": row.get::<_, Option<String>>(6),
            "new_version": row.get::<_, Option<String>>(7),
        })
    })
    .collect()
}

/// A reload applies the new alert threshold, rate limit, rules and log level
/// at once, records one row per changed key with the token rule's pattern
/// masked, and leaves restart-only keys (even a changed password or key) as
/// they were, reporting them with their secrets masked. A reload that finds
/// nothing new changes and records nothing.
#[actix_web::test]
async fn a_reload_applies_the_live_keys_and_records_each_change() {
    let file = ConfigFile::new();
    let base = test_config();
    file.write(&file_text(
        &base,
        &live_keys(5, 1000, 2000, "tok-*", "info"),
    ));
    let worker = spawn_app_from_file(&file.path).await;
    let reader = worker.create_key("org-a", "org:admin").await;
    let writer = worker.create_key("org-a", "org:admin").await;
    assert!(
        !refused_within(&worker, &reader, 5).await,
        "the initial limit is generous"
    );

    let secret_url = worker
        .config
        .database
        .url
        .to_string()
        .replace("postgres@", "postgres:hunter2@");
    let changed = file_text(&base, &live_keys(2, 1, 1, "tok2-*", "debug"))
        .replace(&worker.config.database.url.to_string(), &secret_url)
        .replace("[http]\n", "[http]\nmax_body = 2048\n")
        + "\n[gdpr]\npseudonym_key = \"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\"\n";
    file.write(&changed);
    let report = worker.reloader.reload("test").await.expect("a valid file");

    let applied: Vec<&str> = report.applied.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        applied,
        [
            "alerts.rules",
            "auth.rate_limit_burst",
            "auth.rate_limit_per_second",
            "log.level"
        ]
    );
    let restart: Vec<&str> = report
        .needs_restart
        .iter()
        .map(|c| c.field.as_str())
        .collect();
    for field in ["database.url", "gdpr.pseudonym_key", "http.max_body"] {
        assert!(
            restart.contains(&field),
            "{field} needs a restart: {restart:?}"
        );
    }
    // The reload is an event of the operators' organization, secrets masked.
    let recorded = worker
        .database()
        .await
        .query_one(
            "SELECT status, details::text FROM audit_log \
             WHERE organization_id = $1 AND action = 'admin.config.reload'",
            &[&worker.config.operations.organization],
        )
        .await
        .unwrap();
    assert_eq!(recorded.get::<_, String>(0), "success");
    let details: String = recorded.get(1);
    for field in &applied {
        assert!(details.contains(field), "{field}: {details}");
    }
    assert!(!details.contains("hunter2"), "{details}");
    let shown = format!("{:?}", report.needs_restart);
    assert!(
        !shown.contains("hunter2") && !shown.contains("MDEyMz"),
        "{shown}"
    );
    assert!(shown.contains("postgres:***@"), "{shown}");
    let current = worker.reloader.current();
    assert_eq!(
        current.http.max_body, base.http.max_body,
        "restart-only: kept"
    );
    assert_eq!(
        current.gdpr.pseudonym_key.expose(),
        "",
        "restart-only: kept"
    );
    assert_eq!(current.auth.rate_limit_per_second, 1);

    // The rate limit is in effect: a few requests in a row and one is refused.
    assert!(refused_within(&worker, &reader, 5).await, "1/s, burst 1");
    // The new threshold is in effect: two failures fire the rule (five before).
    let failures: Vec<Event> = (0..2)
        .map(|_| event("mallory", "auth.login").status("failure"))
        .collect();
    worker.ingest(&writer, failures).await;
    let db = worker.database().await;
    wait_until(WAIT, "the rule fires at the new threshold", || async {
        let fired: i64 = db
            .query_one(
                "SELECT count(*) FROM alerts WHERE organization_id = 'org-a' AND rule_id = 'config:login-burst'",
                &[],
            )
            .await
            .ok()?
            .get(0);
        (fired == 1).then_some(())
    })
    .await;

    let rows = history(&db).await;
    let fields: Vec<&str> = rows.iter().map(|r| r["field"].as_str().unwrap()).collect();
    assert_eq!(fields.len(), 4, "one row per applied key: {rows:?}");
    for field in &applied {
        assert!(fields.contains(field), "{field} recorded");
    }
    let author = format!("test:{}", file.path.display());
    for row in &rows {
        assert_eq!(row["changed_by"], author.as_str());
        assert_eq!(row["reason"], "applied at run time");
        assert!(!row["environment"].as_str().unwrap().is_empty());
        assert_eq!(row["previous_version"], report.previous_version.as_str());
        assert_eq!(row["new_version"], report.new_version.as_str());
    }
    assert_ne!(report.previous_version, report.new_version);
    let rate = rows
        .iter()
        .find(|r| r["field"] == "auth.rate_limit_per_second")
        .unwrap();
    assert_eq!(
        (rate["previous"].clone(), rate["new"].clone()),
        (json!(1000), json!(1))
    );
    let rules = rows.iter().find(|r| r["field"] == "alerts.rules").unwrap();
    assert_eq!(rules["new"][0]["threshold"], 2);
    assert_eq!(rules["previous"][0]["threshold"], 5);
    assert_eq!(rules["new"][1]["when"]["details.api_token"], "***");
    let text = serde_json::to_string(&rows).unwrap();
    assert!(
        !text.contains("tok2-") && !text.contains("tok-*") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(!fields.contains(&"database.url") && !fields.contains(&"http.max_body"));

    // Nothing new: nothing applied, nothing recorded.
    let again = worker.reloader.reload("test").await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(history(&db).await.len(), 4);
    let metrics = worker.metrics().await;
    assert!(
        metrics.contains("audit_worker_config_reloads_total{outcome=\"applied\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("audit_worker_config_reloads_total{outcome=\"unchanged\"} 1"));
}

/// A file that does not parse, and one with a value that fails validation,
/// are refused: the old values stay in force and nothing is recorded as
/// applied (each refusal is one `rejected: …` row naming the key it can).
#[actix_web::test]
async fn an_invalid_file_is_refused_and_the_old_values_kept() {
    let file = ConfigFile::new();
    let base = test_config();
    file.write(&file_text(
        &base,
        &live_keys(5, 1000, 2000, "tok-*", "info"),
    ));
    let worker = spawn_app_from_file(&file.path).await;
    let key = worker.create_key("org-a", "org:admin").await;

    file.write("[auth\nrate_limit_per_second = 1\n");
    let error = worker.reloader.reload("test").await.unwrap_err();
    assert!(error.to_string().contains("refused"), "{error}");
    let refused = worker
        .count(
            "SELECT count(*) FROM audit_log WHERE action = 'admin.config.reload' AND status = 'failure'",
            &[],
        )
        .await;
    assert_eq!(refused, 1, "a refused reload is recorded too");

    file.write(&file_text(&base, &live_keys(5, 0, 1, "tok-*", "info")));
    let error = worker.reloader.reload("test").await.unwrap_err();
    assert!(
        error.to_string().contains("auth.rate_limit_per_second"),
        "{error}"
    );
    // A log level the filter syntax refuses.
    file.write(&file_text(&base, &live_keys(5, 1, 1, "tok-*", "[[[")));
    let error = worker.reloader.reload("test").await.unwrap_err();
    assert!(error.to_string().contains("log.level"), "{error}");

    let current = worker.reloader.current();
    assert_eq!(current.auth.rate_limit_per_second, 1000);
    assert_eq!(current.log.level, "info");
    assert!(
        !refused_within(&worker, &key, 5).await,
        "the old, generous limit is still in force"
    );
    let rows = history(&worker.database().await).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        assert!(
            row["reason"].as_str().unwrap().starts_with("rejected: "),
            "{row}"
        );
        assert_eq!(row["new_version"], Value::Null);
        assert_eq!(row["new"], Value::Null);
    }
    assert_eq!(rows[0]["field"], "*");
    assert_eq!(rows[1]["field"], "auth.rate_limit_per_second");
    assert_eq!(rows[2]["field"], "log.level");
    let metrics = worker.metrics().await;
    assert!(
        metrics.contains("audit_worker_config_reloads_total{outcome=\"rejected\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("audit_worker_config_reloads_total{outcome=\"applied\"} 0"));
}

/// The real thing: `audit-worker serve --config FILE` as a child process,
/// the file changed, a SIGHUP sent; the new rate limit refuses a request, the
/// change is recorded as made by `sighup`, and `audit-worker config history`
/// prints it.
#[tokio::test]
async fn a_sighup_makes_a_running_worker_reload_its_file() {
    let file = ConfigFile::new();
    let base = test_config();
    let _database = TestDatabase::named(base.database.url.database_name());
    let url = base.database.url.to_string();
    let port = free_port();
    let address = format!("http://127.0.0.1:{port}");
    file.write(&file_text(
        &base,
        &live_keys(5, 1000, 2000, "tok-*", "warn"),
    ));
    let path = file.path.display().to_string();
    let mut worker = serve(
        port,
        &url,
        &[("AUDIT_WORKER_CONFIG", path.as_str())],
        Stdio::null(),
    );
    let client = reqwest::Client::new();
    wait_ready(&client, &address, &mut worker).await;
    let key = issue_key(&url, "org-a", "org:admin");
    let status = |client: reqwest::Client, key: String, address: String| async move {
        client
            .get(format!("{address}/v1/roles"))
            .bearer_auth(key)
            .send()
            .await
            .expect("the worker answers")
            .status()
            .as_u16()
    };
    for _ in 0..5 {
        assert_eq!(
            status(client.clone(), key.clone(), address.clone()).await,
            200
        );
    }

    file.write(&file_text(&base, &live_keys(5, 1, 1, "tok-*", "warn")));
    signal(&worker, Signal::SIGHUP);
    wait_until(WAIT, "the new rate limit refuses a request", || {
        let (client, key, address) = (client.clone(), key.clone(), address.clone());
        async move { (status(client, key, address).await == 429).then_some(()) }
    })
    .await;

    let output = Command::new(BINARY)
        .args(["config", "history", "--limit", "10"])
        .env("AUDIT_WORKER__DATABASE__URL", &url)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows: {printed}");
    let per_second = lines
        .iter()
        .find(|line| line.split('\t').nth(1) == Some("auth.rate_limit_per_second"))
        .unwrap_or_else(|| panic!("{printed}"));
    let columns: Vec<&str> = per_second.split('\t').collect();
    assert_eq!(
        &columns[2..6],
        [
            "1000",
            "1",
            &format!("sighup:{path}"),
            "applied at run time"
        ]
    );

    let output = Command::new(BINARY)
        .args(["config", "history", "--json", "--limit", "1"])
        .env("AUDIT_WORKER__DATABASE__URL", &url)
        .output()
        .unwrap();
    let row: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert!(row["field"]
        .as_str()
        .unwrap()
        .starts_with("auth.rate_limit_"));

    signal(&worker, Signal::SIGTERM);
    worker.wait().unwrap();
}
