//! `/metrics` stays bounded whatever clients send, shows the counters
//! dashboards rate from the first scrape, forgets deleted destinations, and
//! the README and the dashboard name the labels the code exports.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::receiver::Receiver;
use common::{spawn_app, spawn_app_with, spawn_beside, wait_until, webhook};
use reqwest::Method;
use serde_json::json;

const KNOWN_METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

/// The value of `label` in a series line such as `name{a="x",b="y"} 1`.
fn label<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    let start = line.find(&format!("{label}=\""))? + label.len() + 2;
    let length = line[start..].find('"')?;
    Some(&line[start..start + length])
}

/// 3,000 requests with made-up methods, to known and unknown paths, without
/// a key: `http_requests_total` keeps a handful of series, every `method` in
/// the known set and every `route` a pattern, and `/metrics` stays about the
/// size it was.
#[actix_web::test]
async fn made_up_methods_and_paths_add_no_series() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let before = app.metrics().await.len();

    for chunk in 0..60 {
        let requests = (0..50).map(|n| {
            let n = chunk * 50 + n;
            let method = Method::from_bytes(format!("MADEUP{n}").as_bytes()).unwrap();
            let path = match n % 3 {
                0 => "/healthz".to_owned(),
                1 => "/v1/events".to_owned(),
                _ => format!("/nowhere-{n}"),
            };
            app.client
                .request(method, format!("{}{path}", app.address))
                .send()
        });
        for response in futures_util::future::join_all(requests).await {
            response.expect("the worker answers");
        }
    }

    let text = app.metrics().await;
    let series: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("audit_worker_http_requests_total{"))
        .collect();
    for line in &series {
        let method = label(line, "method").unwrap();
        assert!(KNOWN_METHODS.contains(&method), "{line}");
        let route = label(line, "route").unwrap();
        assert!(route == "unmatched" || !route.contains("nowhere"), "{line}");
        let status = label(line, "status").unwrap();
        assert!(status.len() == 3 && status.parse::<u16>().is_ok(), "{line}");
    }
    assert!(
        series.len() <= 12,
        "{} series:\n{}",
        series.len(),
        series.join("\n")
    );
    assert!(
        text.len() < before + 20_000,
        "/metrics grew from {before} to {} bytes",
        text.len()
    );
}

/// Right after start, before anything happened, the counters dashboards
/// take a `rate()` or `increase()` of show at 0: per actor, per error
/// category and severity, per alert and report outcome, per cache kind.
#[actix_web::test]
async fn counters_dashboards_rate_are_at_zero_from_the_start() {
    let app = spawn_app().await;
    let text = app.metrics().await;
    let actors: BTreeSet<&str> = text
        .lines()
        .filter(|line| line.starts_with("audit_worker_actor_up{"))
        .filter_map(|line| label(line, "actor"))
        .collect();
    assert!(actors.len() >= 10, "{actors:?}");
    let mut expected: Vec<String> = actors
        .iter()
        .flat_map(|actor| {
            [
                format!("audit_worker_actor_restarts_total{{actor=\"{actor}\"}} 0"),
                format!("audit_worker_actor_errors_total{{actor=\"{actor}\"}}"),
                format!("audit_worker_actor_messages_handled_total{{actor=\"{actor}\"}}"),
            ]
        })
        .collect();
    expected.extend(
        [
            r#"audit_worker_errors_recorded_total{category="internal",severity="HIGH"} 0"#,
            r#"audit_worker_errors_recorded_total{category="actor",severity="HIGH"} 0"#,
            r#"audit_worker_errors_recorded_total{category="dependency",severity="MEDIUM"} 0"#,
            r#"audit_worker_errors_recorded_total{category="ingest",severity="HIGH"} 0"#,
            r#"audit_worker_errors_recorded_total{category="maintenance",severity="MEDIUM"} 0"#,
            "audit_worker_errors_dropped_total 0",
            r#"audit_worker_alerts_raised_total{outcome="created"} 0"#,
            r#"audit_worker_alerts_raised_total{outcome="updated"} 0"#,
            r#"audit_worker_report_runs_total{outcome="failed"} 0"#,
            r#"audit_worker_config_reloads_total{outcome="rejected"} 0"#,
            r#"audit_worker_cache_lookups_total{kind="permissions",level="l1",outcome="bypass"} 0"#,
            r#"audit_worker_cache_lookups_total{kind="alert_rules",level="l2",outcome="hit"} 0"#,
            r#"audit_worker_cache_evictions_total{level="l1"} 0"#,
        ]
        .map(str::to_owned),
    );
    let missing: Vec<&String> = expected
        .iter()
        .filter(|series| !text.contains(series.as_str()))
        .collect();
    assert!(missing.is_empty(), "missing {missing:#?} in:\n{text}");
}

/// A destination's series show once it has been attempted, on both
/// instances; once it is deleted through one, they go from both.
#[actix_web::test]
async fn a_deleted_destination_loses_its_series_on_every_instance() {
    let fast_health = |config: &mut audit_worker::config::Config| {
        config.delivery.health_interval = Duration::from_millis(100);
    };
    let first = spawn_app_with(fast_health).await;
    let second = spawn_beside(&first, fast_health).await;
    let key = first.create_key("org-a", "org:admin").await;
    let receiver = Receiver::start(&[], 0);
    let id = first
        .create_destination(&key, webhook("receiver", &receiver.url))
        .await;
    first.enqueue(&key, &[id], json!({"n": 1})).await;

    let series = [
        format!("audit_worker_destination_consecutive_failures{{destination_id=\"{id}\"}}"),
        format!("audit_worker_destination_breaker_open{{destination_id=\"{id}\"}}"),
    ];
    for app in [&first, &second] {
        wait_until(
            Duration::from_secs(15),
            "the destination's series",
            || async {
                let text = app.metrics().await;
                series
                    .iter()
                    .all(|series| text.contains(series.as_str()))
                    .then_some(())
            },
        )
        .await;
    }

    let (status, body) = first
        .call(
            Method::DELETE,
            &format!("/v1/destinations/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    for app in [&first, &second] {
        wait_until(
            Duration::from_secs(15),
            "no series of the deleted destination",
            || async {
                let text = app.metrics().await;
                series
                    .iter()
                    .all(|series| !text.contains(series.as_str()))
                    .then_some(())
            },
        )
        .await;
    }
}

/// Every label the README's metrics and the Grafana dashboard name
/// (`name{label,…}`, `by (label)`, `{{label}}`) is one `src/metrics.rs`
/// declares.
#[test]
fn the_readme_and_the_dashboard_name_the_labels_the_code_exports() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |path: &str| std::fs::read_to_string(format!("{root}/{path}")).unwrap();
    let source = read("src/metrics.rs");
    let (readme, dashboard) = (read("README.md"), read("deploy/grafana/audit-worker.json"));
    let series = regex::Regex::new(r"audit_worker_[a-z_]+\{([^}]*)\}").unwrap();
    let quoted = regex::Regex::new(r#""[^"]*"|\|"#).unwrap();
    let name = regex::Regex::new(r"[a-z_]+").unwrap();
    let grouping = regex::Regex::new(r"by \(([a-z_, ]+)\)").unwrap();
    let legend = regex::Regex::new(r"\{\{([a-z_]+)\}\}").unwrap();
    let mut named = BTreeSet::new();
    for found in series.captures_iter(&readme) {
        // Label names, not their values (`outcome="ran"|"failed"`).
        let names = quoted.replace_all(&found[1], "");
        for label in name.find_iter(&names) {
            named.insert(("README.md", label.as_str().to_owned()));
        }
    }
    for found in grouping.captures_iter(&dashboard) {
        for label in found[1].split(',') {
            named.insert(("the dashboard", label.trim().to_owned()));
        }
    }
    for found in legend.captures_iter(&dashboard) {
        named.insert(("the dashboard", found[1].to_owned()));
    }
    assert!(named.len() > 10, "{named:?}");
    for (place, label) in &named {
        if ["le", "job", "instance"].contains(&label.as_str()) {
            continue;
        }
        assert!(
            source.contains(&format!("\"{label}\"")),
            "{place} names the label `{label}`, which src/metrics.rs does not declare"
        );
    }
}
