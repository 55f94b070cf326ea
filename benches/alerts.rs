//! Alert rules benchmark: what evaluating 20 rules costs, in process and at ingest.
//!
//! The 20 rules (half threshold rules with windows grouped by `principal_id`
//! or a `details` key, half match rules with glob patterns, lists of values
//! and `details` paths) are one `[alerts]` config file, loaded with
//! `Config::load` as the worker loads it. The events are a realistic mix:
//! most match no rule, a few percent match one or more.
//!
//! 1. In process: `Evaluation::observe` over 200,000 prepared events against
//!    the 20 compiled rules, a fresh `Evaluation` per chunk of 1000 (as the
//!    AlertActor does per batch), against two baselines timed in the same
//!    passes: a loop that only reads the fields the rules test (each of them
//!    for every event, where a rule stops at its first failed condition),
//!    and 1 rule.
//! 2. Ingest: two release workers (child processes, fresh databases on the
//!    local PostgreSQL), both given the config file, one with
//!    `AUDIT_WORKER__ALERTS__ENABLED=false`. The same pre-built bodies
//!    (batches of 100, 8 concurrent clients, 100,000 events a run) go to each,
//!    four runs each in the order off, on, on, off, on, off, off, on so that
//!    drift weighs on both alike, with a `CHECKPOINT` before every run. After
//!    each run of the rules-on worker it waits (bounded) until its `/metrics`
//!    shows every event evaluated, and prints how long the rules lagged behind
//!    ingest and the alerts they raised. It also prints the CPU time of the
//!    worker and of PostgreSQL per event, the workers' resident memory (events
//!    waiting for the rules are held in memory), and what each worker had
//!    PostgreSQL do (`pg_stat_database`, `pg_stat_user_tables`), so that a
//!    cost can be traced to where it is spent.
//!
//! It prints figures, ratios against the same-process baselines, and the
//! issue's floor (ingest with rules on costs < 10 %); it never asserts on time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_worker::alerts::engine::Evaluation;
use audit_worker::alerts::rule::{configured, CompiledRule, RuleDefinition, RuleKind};
use audit_worker::events::NewEvent;
use audit_worker::messages::alert::ObservedEvent;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{json, Value};

#[path = "support/figures.rs"]
mod figures;
#[path = "support/worker.rs"]
mod worker;
use figures::{grouped, mix, verdict, Claims};
use worker::{connect, report_log, Worker, SERVER_URL};

const ORG: &str = "bench-alerts";
const RULE_COUNT: usize = 20;
/// Events evaluated in process per pass.
const POOL_EVENTS: usize = 200_000;
/// Events per `Evaluation`, as one AlertActor batch.
const CHUNK: usize = 1000;
/// In-process passes; each times the baselines and the 20 rules once.
const PASSES: usize = 5;

const CLIENTS: usize = 8;
const BATCH: usize = 100;
/// Events per ingest run: the bodies are all posted once a run.
const RUN_EVENTS: usize = 100_000;
/// Bodies posted to each worker before the measured runs.
const WARMUP_BODIES: usize = 50;
/// A run stops early (and reports what it did) past this.
const RUN_BUDGET: Duration = Duration::from_secs(120);
/// How long the rules may take to catch up after a run.
const DRAIN_DEADLINE: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(50);
/// Rules off or on, in this order (ABBA BAAB): drift weighs on both alike.
const ORDER: [bool; 8] = [false, true, true, false, true, false, false, true];
/// PostgreSQL flushes a backend's statistics at most this long after its last
/// transaction.
const STATS_FLUSH: Duration = Duration::from_secs(11);

// Floor set by the alert rules issue.
const MAX_INGEST_COST: f64 = 0.10;

const EVALUATED: &str = "audit_worker_alert_events_evaluated_total";
const SKIPPED: &str = "audit_worker_alert_events_skipped_total";
const CREATED: &str = "audit_worker_alerts_raised_total{outcome=\"created\"}";
const UPDATED: &str = "audit_worker_alerts_raised_total{outcome=\"updated\"}";

/// The worker's config file: only `[alerts]` (the defaults are compiled in;
/// `alerts.rules` here replaces the default rules).
const RULES_TOML: &str = r#"
[alerts]
enabled = true

# Threshold rules.
[[alerts.rules]]
name = "repeated-login-failures"
kind = "threshold"
when = { action = "auth.login", status = "failure" }
threshold = 5
window = "10m"
group_by = "principal_id"
severity = "HIGH"
type = "SECURITY"

[[alerts.rules]]
name = "mfa-challenge-failures"
kind = "threshold"
when = { action = "auth.mfa.*", status = ["failure", "attempt"] }
threshold = 3
window = "5m"
group_by = "principal_id"
severity = "MEDIUM"
type = "SECURITY"

[[alerts.rules]]
name = "login-failures-per-address"
kind = "threshold"
when = { action = "auth.*", status = "failure" }
threshold = 20
window = "10m"
group_by = "details.ip"
severity = "HIGH"
type = "SECURITY"

[[alerts.rules]]
name = "bulk-chart-export"
kind = "threshold"
when = { action = "patient.chart.export", data_classification = "PHI" }
threshold = 25
window = "1h"
group_by = "principal_id"
severity = "HIGH"
type = "COMPLIANCE"

[[alerts.rules]]
name = "phi-denials-per-facility"
kind = "threshold"
when = { data_classification = "PHI", status = "failure" }
threshold = 50
window = "15m"
group_by = "details.facility"
severity = "MEDIUM"
type = "COMPLIANCE"

[[alerts.rules]]
name = "telehealth-prescription-burst"
kind = "threshold"
when = { action = "prescription.*", "details.facility" = "telehealth", "details.client.app" = "ehr-mobile" }
threshold = 30
window = "10m"
group_by = "principal_id"
severity = "MEDIUM"
type = "COMPLIANCE"

[[alerts.rules]]
name = "record-deletions"
kind = "threshold"
when = { action = "patient.record.delete" }
threshold = 3
window = "1h"
group_by = "principal_id"
severity = "HIGH"
type = "COMPLIANCE"

[[alerts.rules]]
name = "api-key-write-burst"
kind = "threshold"
when = { action = ["patient.record.update", "prescription.create"], "details.session.auth_method" = "api_key", "details.request.method" = ["PUT", "POST"] }
threshold = 100
window = "5m"
group_by = "details.session.id"
severity = "MEDIUM"
type = "SECURITY"

[[alerts.rules]]
name = "admin-changes"
kind = "threshold"
when = { action = "admin.*" }
threshold = 10
window = "1h"
group_by = "principal_id"
severity = "MEDIUM"
type = "SECURITY"

[[alerts.rules]]
name = "failed-lab-views"
kind = "threshold"
when = { action = "lab.result.*", status = "failure" }
threshold = 10
window = "10m"
group_by = "principal_id"
severity = "LOW"
type = "COMPLIANCE"

# Match rules.
[[alerts.rules]]
name = "failed-phi-access"
kind = "match"
when = { data_classification = "PHI", status = "failure" }
group_by = "principal_id"
severity = "HIGH"
type = "COMPLIANCE"

[[alerts.rules]]
name = "gdpr-activity"
kind = "match"
when = { action = "gdpr.*" }
group_by = "action"
severity = "INFO"
type = "COMPLIANCE"

[[alerts.rules]]
name = "break-glass-access"
kind = "match"
when = { action = "break_glass.*", data_classification = "PHI" }
group_by = "principal_id"
severity = "CRITICAL"
type = "SECURITY"

[[alerts.rules]]
name = "role-granted"
kind = "match"
when = { action = "admin.role.grant", status = "success" }
group_by = "target_resource_id"
severity = "MEDIUM"
type = "SECURITY"

[[alerts.rules]]
name = "phi-record-deleted"
kind = "match"
when = { action = "patient.record.delete", data_classification = "PHI", status = ["success", "attempt"] }
group_by = "target_resource_id"
severity = "HIGH"
type = "COMPLIANCE"

[[alerts.rules]]
name = "export-without-mfa"
kind = "match"
when = { action = ["patient.chart.export", "gdpr.data.export"], "details.session.mfa" = "false" }
group_by = "principal_id"
severity = "HIGH"
type = "SECURITY"

[[alerts.rules]]
name = "off-network-access"
kind = "match"
when = { "details.ip" = ["203.0.113.*", "198.51.100.*"], data_classification = ["PHI", "CONFIDENTIAL"] }
group_by = "details.ip"
severity = "MEDIUM"
type = "SECURITY"

[[alerts.rules]]
name = "legacy-browser"
kind = "match"
when = { "details.user_agent" = "*MSIE*", data_classification = "PHI" }
group_by = "principal_id"
severity = "LOW"
type = "SECURITY"

[[alerts.rules]]
name = "erasure-not-completed"
kind = "match"
when = { action = "gdpr.erasure.*", status = ["failure", "attempt"] }
group_by = "correlation_id"
severity = "MEDIUM"
type = "COMPLIANCE"

[[alerts.rules]]
name = "confidential-denied"
kind = "match"
when = { data_classification = "CONFIDENTIAL", status = "failure" }
group_by = "action"
severity = "LOW"
type = "COMPLIANCE"
"#;

#[tokio::main]
async fn main() {
    let config_file =
        std::env::temp_dir().join(format!("bench_alerts_{}.toml", std::process::id()));
    std::fs::write(&config_file, RULES_TOML).expect("write the rules config file");
    let config =
        audit_worker::load_config(Some(&config_file)).expect("the rules config file is valid");
    let definitions = configured(&config.alerts.rules).expect("the configured rules are valid");
    assert_eq!(
        definitions.len(),
        RULE_COUNT,
        "the config file has 20 rules"
    );
    let rules: Vec<Arc<CompiledRule>> = definitions
        .iter()
        .map(|definition| {
            Arc::new(CompiledRule::new(
                format!("config:{}", definition.name),
                definition.clone(),
            ))
        })
        .collect();

    let evaluation = evaluation_throughput(&rules);
    let ingest = ingest_cost(&config_file, config.alerts.max_backlog_events).await;
    let _ = std::fs::remove_file(&config_file);

    println!(
        "\n== summary ({RULE_COUNT} rules: {} threshold, {} match; floor from the alert rules issue) ==",
        count_kind(&definitions, RuleKind::Threshold),
        count_kind(&definitions, RuleKind::Match)
    );
    evaluation.print();
    ingest.print(evaluation.rules);
}

fn count_kind(definitions: &[RuleDefinition], kind: RuleKind) -> usize {
    definitions.iter().filter(|d| d.kind == kind).count()
}

// ---------------------------------------------------------------------------
// Sample events: the same mix in process and over HTTP.
// ---------------------------------------------------------------------------

/// Actions by weight out of 10,000.
const ACTIONS: [(&str, u64); 15] = [
    ("patient.record.read", 4000),
    ("lab.result.view", 1500),
    ("auth.login", 1200),
    ("patient.record.update", 1000),
    ("auth.logout", 800),
    ("prescription.create", 600),
    ("auth.mfa.challenge", 400),
    ("report.generate", 300),
    ("patient.chart.export", 60),
    ("admin.user.update", 50),
    ("gdpr.data.export", 20),
    ("gdpr.erasure.request", 10),
    ("admin.role.grant", 20),
    ("break_glass.access", 20),
    ("patient.record.delete", 20),
];
const USER_AGENTS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "ehr-mobile/7.3.1 (iPad; iOS 17.4; Scale/2.00)",
];
const LEGACY_USER_AGENT: &str = "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.1; Trident/4.0)";
const FACILITIES: [&str; 4] = ["north-clinic", "central-hospital", "east-lab", "telehealth"];
const APPS: [&str; 3] = ["ehr-web", "ehr-mobile", "integration"];

/// One event as a client describes it (the worker adds the rest).
struct Sample {
    principal_id: String,
    action: &'static str,
    status: &'static str,
    target_resource_type: &'static str,
    target_resource_id: String,
    outcome_description: &'static str,
    correlation_id: String,
    data_classification: &'static str,
    details: Value,
}

/// Event number `n`: 1000 principals, weighted actions, 2 to 8 % failures.
fn sample(n: u64) -> Sample {
    let mut pick = mix(n, 1) % 10_000;
    let action = ACTIONS
        .iter()
        .find(|(_, weight)| {
            let found = pick < *weight;
            pick = pick.saturating_sub(*weight);
            found
        })
        .map_or(ACTIONS[0].0, |(action, _)| action);
    let roll = mix(n, 2) % 100;
    let (failure_below, attempt_below) = match action {
        "auth.login" => (6, 8),
        "auth.mfa.challenge" => (5, 15),
        _ => (2, 4),
    };
    let (status, outcome_description) = if roll < failure_below {
        (
            "failure",
            "Access denied: the principal lacks the permission",
        )
    } else if roll < attempt_below {
        ("attempt", "Request received, awaiting authorization")
    } else {
        ("success", "Completed")
    };
    let family = action.split('.').next().unwrap_or_default();
    let (target_resource_type, data_classification) = match family {
        "patient" | "break_glass" => ("Patient", "PHI"),
        "lab" => ("Observation", "PHI"),
        "prescription" => ("MedicationRequest", "PHI"),
        "gdpr" => ("DataSubject", "CONFIDENTIAL"),
        "admin" => ("User", "CONFIDENTIAL"),
        "report" => ("Report", "INTERNAL"),
        _ => ("Session", "INTERNAL"),
    };
    let target_resource_id = format!(
        "{}-{:06}",
        target_resource_type.to_ascii_lowercase(),
        mix(n, 3) % 50_000
    );
    // 0.5 % of requests come from outside the network, 0.25 % from a legacy browser.
    let ip = match mix(n, 4) % 400 {
        0 => format!("203.0.113.{}", mix(n, 5) % 254 + 1),
        1 => format!("198.51.100.{}", mix(n, 5) % 254 + 1),
        _ => format!("10.{}.{}.{}", n % 8, mix(n, 5) % 256, mix(n, 6) % 254 + 1),
    };
    let user_agent = if mix(n, 7) % 400 == 0 {
        LEGACY_USER_AGENT
    } else {
        USER_AGENTS[(n % USER_AGENTS.len() as u64) as usize]
    };
    let api_key = mix(n, 8) % 20 == 0;
    let method = match action {
        "patient.record.update" => "PUT",
        "prescription.create" | "gdpr.erasure.request" | "admin.role.grant" => "POST",
        "patient.record.delete" => "DELETE",
        _ => "GET",
    };
    let details = json!({
        "ip": ip,
        "user_agent": user_agent,
        "session": {
            "id": format!("sess-{:016x}", mix(n / 8, 9)),
            "mfa": n % 4 != 0,
            "auth_method": if api_key { "api_key" } else { "oidc" },
        },
        "request": {
            "method": method,
            "path": format!("/fhir/r4/{target_resource_type}/{target_resource_id}"),
            "duration_ms": mix(n, 10) % 400,
        },
        "facility": FACILITIES[(mix(n, 11) % FACILITIES.len() as u64) as usize],
        "client": { "app": APPS[(n % APPS.len() as u64) as usize] },
        "scopes": ["patient/*.read", "user/Observation.read", "launch/patient"],
    });
    Sample {
        principal_id: format!("user-{:04}", mix(n, 12) % 1000),
        action,
        status,
        target_resource_type,
        target_resource_id,
        outcome_description,
        correlation_id: format!("corr-{:016x}", mix(n / 4, 13)),
        data_classification,
        details,
    }
}

impl Sample {
    /// The event as a client sends it.
    fn to_json(&self, timestamp: DateTime<Utc>) -> Value {
        json!({
            "timestamp": timestamp.to_rfc3339_opts(SecondsFormat::Micros, true),
            "principal_id": self.principal_id,
            "action": self.action,
            "status": self.status,
            "target_resource_type": self.target_resource_type,
            "target_resource_id": self.target_resource_id,
            "outcome_description": self.outcome_description,
            "correlation_id": self.correlation_id,
            "data_classification": self.data_classification,
            "details": self.details,
        })
    }

    /// The event as ingest hands it to the rules (commitments and hash are
    /// stand-ins: the rules never read them).
    fn into_observed(self, id: i64, timestamp: DateTime<Utc>) -> ObservedEvent {
        let stand_in = format!("{:016x}", mix(id as u64, 14)).repeat(4);
        ObservedEvent {
            id,
            event: NewEvent {
                organization_id: ORG.to_owned(),
                timestamp,
                ttl: None,
                principal_id: self.principal_id,
                principal_commitment: stand_in.clone(),
                action: self.action.to_owned(),
                target_resource_type: Some(self.target_resource_type.to_owned()),
                target_resource_id: Some(self.target_resource_id),
                target_resource_commitment: Some(stand_in.clone()),
                status: self.status.to_owned(),
                outcome_description: Some(self.outcome_description.to_owned()),
                event_version: "1.0".to_owned(),
                correlation_id: Some(self.correlation_id),
                data_classification: self.data_classification.to_owned(),
                retention_policy: "standard".to_owned(),
                idempotency_key: None,
                details: Some(self.details),
                hash: stand_in,
            },
        }
    }
}

/// Event `n`'s time: one event a millisecond, the last `count` milliseconds before `now`.
fn timestamp_of(now: DateTime<Utc>, n: usize, count: usize) -> DateTime<Utc> {
    now - TimeDelta::milliseconds((count - n) as i64)
}

// ---------------------------------------------------------------------------
// Part 1: evaluation in process.
// ---------------------------------------------------------------------------

struct EvaluationFigures {
    rules: f64,
    one_rule: f64,
    fields_only: f64,
    fields: usize,
    one_rule_name: String,
}

impl EvaluationFigures {
    fn print(&self) {
        println!(
            "rule evaluation in process: {} ev/s through {RULE_COUNT} rules ({:.0} ns an event, {:.1} ns a rule); \
             baseline reading the {} fields they test {} ev/s (ratio {:.3}); 1 rule ({}) {} ev/s (ratio {:.3})",
            grouped(self.rules),
            1e9 / self.rules,
            1e9 / self.rules / RULE_COUNT as f64,
            self.fields,
            grouped(self.fields_only),
            self.rules / self.fields_only,
            self.one_rule_name,
            grouped(self.one_rule),
            self.rules / self.one_rule
        );
    }
}

fn evaluation_throughput(rules: &[Arc<CompiledRule>]) -> EvaluationFigures {
    let now = Utc::now();
    let pool: Vec<ObservedEvent> = (0..POOL_EVENTS)
        .map(|n| sample(n as u64).into_observed(n as i64 + 1, timestamp_of(now, n, POOL_EVENTS)))
        .collect();
    describe_mix(&pool, rules);

    let fields = tested_fields(rules);
    let one_rule = &rules[..1];
    let (mut all, mut one, mut read) = (vec![], vec![], vec![]);
    for _ in 0..PASSES {
        read.push(time(|| read_fields(&pool, &fields)));
        one.push(time(|| evaluate(&pool, one_rule)));
        all.push(time(|| evaluate(&pool, rules)));
    }
    println!(
        "\n== rule evaluation in process: {} events, a fresh Evaluation per {CHUNK}, median of {PASSES} passes ==",
        grouped(POOL_EVENTS as f64)
    );
    let rate = |name: &str, mut times: Vec<Duration>| {
        times.sort_unstable();
        let median = times[times.len() / 2];
        let per_second = POOL_EVENTS as f64 / median.as_secs_f64();
        println!(
            "{name:<44} {:>12} ev/s  (median {median:.1?}, passes {:.1?} to {:.1?})",
            grouped(per_second),
            times[0],
            times[times.len() - 1]
        );
        per_second
    };
    let fields_only = rate(
        &format!("read all {} fields the rules test", fields.len()),
        read,
    );
    let one_rule_rate = rate(&format!("1 rule ({})", rules[0].definition.name), one);
    let rules_rate = rate(&format!("{} rules", rules.len()), all);
    EvaluationFigures {
        rules: rules_rate,
        one_rule: one_rule_rate,
        fields_only,
        fields: fields.len(),
        one_rule_name: rules[0].definition.name.clone(),
    }
}

fn time(work: impl FnOnce()) -> Duration {
    let started = Instant::now();
    work();
    started.elapsed()
}

/// What the actor does with a batch before it goes to the database.
fn evaluate(pool: &[ObservedEvent], rules: &[Arc<CompiledRule>]) {
    for chunk in pool.chunks(CHUNK) {
        let mut evaluation = Evaluation::default();
        for observed in chunk {
            evaluation.observe(std::hint::black_box(observed), rules);
        }
        std::hint::black_box(&evaluation);
    }
}

/// The baseline: read every field the rules test (as the rules read them:
/// strings borrowed, numbers and booleans as text) and match nothing.
fn read_fields(pool: &[ObservedEvent], fields: &[String]) {
    for observed in pool {
        let event = &std::hint::black_box(observed).event;
        let mut length = 0;
        for field in fields {
            if let Some(value) = field_value(event, field) {
                length += value.len();
            }
        }
        std::hint::black_box(length);
    }
}

/// Every field a rule tests or groups by, once.
fn tested_fields(rules: &[Arc<CompiledRule>]) -> Vec<String> {
    let fields: BTreeSet<String> = rules
        .iter()
        .flat_map(|rule| {
            let definition = &rule.definition;
            definition.when.keys().chain(&definition.group_by).cloned()
        })
        .collect();
    fields.into_iter().collect()
}

fn field_value<'a>(event: &'a NewEvent, field: &str) -> Option<std::borrow::Cow<'a, str>> {
    use std::borrow::Cow;
    let text = |s: &'a str| Some(Cow::Borrowed(s));
    match field {
        "action" => text(&event.action),
        "status" => text(&event.status),
        "data_classification" => text(&event.data_classification),
        "principal_id" => text(&event.principal_id),
        "target_resource_type" => event.target_resource_type.as_deref().and_then(text),
        "target_resource_id" => event.target_resource_id.as_deref().and_then(text),
        "retention_policy" => text(&event.retention_policy),
        "correlation_id" => event.correlation_id.as_deref().and_then(text),
        other => {
            let path = other.strip_prefix("details.")?;
            let value = path
                .split('.')
                .try_fold(event.details.as_ref()?, |value, key| value.get(key))?;
            match value {
                Value::String(s) => text(s),
                Value::Number(n) => Some(Cow::Owned(n.to_string())),
                Value::Bool(b) => Some(Cow::Owned(b.to_string())),
                _ => None,
            }
        }
    }
}

/// How many events each rule matches (untimed), so the reader sees the mix.
fn describe_mix(pool: &[ObservedEvent], rules: &[Arc<CompiledRule>]) {
    let mut per_rule = vec![0_u64; rules.len()];
    let mut any = 0_u64;
    let (mut threshold_hits, mut match_firings) = (0_u64, 0_u64);
    for observed in pool {
        let mut matched = false;
        for (count, rule) in per_rule.iter_mut().zip(rules) {
            if rule.group_of(&observed.event).is_some() {
                *count += 1;
                matched = true;
                match rule.definition.kind {
                    RuleKind::Threshold => threshold_hits += 1,
                    RuleKind::Match => match_firings += 1,
                }
            }
        }
        any += u64::from(matched);
    }
    let percent = |count: u64| count as f64 * 100.0 / pool.len() as f64;
    println!(
        "{} sample events: {:.2} % match at least one rule ({:.2} % threshold hits, {:.2} % match firings, per event)",
        grouped(pool.len() as f64),
        percent(any),
        percent(threshold_hits),
        percent(match_firings)
    );
    for (rule, count) in rules.iter().zip(per_rule) {
        println!(
            "  {:<9} {:<30} {:>6.3} %",
            format!("{:?}", rule.definition.kind).to_ascii_lowercase(),
            rule.definition.name,
            percent(count)
        );
    }
}

// ---------------------------------------------------------------------------
// Part 2: ingest with rules off and on.
// ---------------------------------------------------------------------------

/// A worker, its HTTP API and what was sent to it.
struct Target {
    worker: Worker,
    rules_on: bool,
    client: reqwest::Client,
    base: String,
    key: String,
    /// Events the worker stored so far.
    stored: u64,
}

/// One ingest run.
#[derive(Default)]
struct Run {
    events: u64,
    elapsed: Duration,
    /// CPU time the worker and PostgreSQL used meanwhile.
    usage: Usage,
    /// The worker's resident memory when the run ended, in kB.
    rss_kib: u64,
    failures: BTreeMap<String, u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// CPU time of the worker, of the PostgreSQL server (its processes alive at
/// the second reading; during a run it serves that run alone), of this bench
/// process, and of the whole machine.
#[derive(Default, Clone, Copy)]
struct Usage {
    worker: Duration,
    postgres: Duration,
    bench: Duration,
    machine: Duration,
}

impl Usage {
    fn read(worker: &Worker) -> Self {
        Self {
            worker: worker.cpu_time(),
            postgres: postgres_cpu(),
            bench: std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|stat| stat_cpu(&stat))
                .unwrap_or_default(),
            machine: machine_cpu(),
        }
    }

    fn since(worker: &Worker, before: Usage) -> Self {
        let now = Self::read(worker);
        Self {
            worker: now.worker.saturating_sub(before.worker),
            postgres: now.postgres.saturating_sub(before.postgres),
            bench: now.bench.saturating_sub(before.bench),
            machine: now.machine.saturating_sub(before.machine),
        }
    }

    /// What the worker and PostgreSQL used: the cost of ingest (and rules).
    fn total(&self) -> Duration {
        self.worker + self.postgres
    }

    /// Everything else the machine ran meanwhile (the idle other worker included).
    fn others(&self) -> Duration {
        self.machine
            .saturating_sub(self.worker + self.postgres + self.bench)
    }

    /// "worker 0.65, PostgreSQL 1.10, bench client 0.15, other processes 0.02 cores" over `elapsed`.
    fn cores(&self, elapsed: Duration) -> String {
        let cores = |cpu: Duration| cpu.as_secs_f64() / elapsed.as_secs_f64();
        format!(
            "CPU: worker {:.2}, PostgreSQL {:.2}, bench client {:.2}, other processes {:.2} cores",
            cores(self.worker),
            cores(self.postgres),
            cores(self.bench),
            cores(self.others())
        )
    }
}

/// USER_HZ is 100 on Linux.
fn ticks(count: u64) -> Duration {
    Duration::from_millis(count * 10)
}

/// User and system CPU time from a `/proc/<pid>/stat` line.
fn stat_cpu(stat: &str) -> Option<Duration> {
    // After the command name: the state, ..., utime and stime (the 12th and 13th).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(ticks(
        fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
    ))
}

/// CPU time (user and system) of every `postgres` process: the local server.
fn postgres_cpu() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| stat.contains("(postgres)"))
        .filter_map(|stat| stat_cpu(&stat))
        .sum()
}

/// Busy CPU time of the whole machine (`/proc/stat`: all but idle and iowait).
fn machine_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let busy = stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))
        .map_or(0, |fields| {
            fields
                .split_whitespace()
                .filter_map(|field| field.parse::<u64>().ok())
                .enumerate()
                // user nice system idle iowait irq softirq steal (guests are in user).
                .filter(|(index, _)| !matches!(index, 3 | 4) && *index < 8)
                .map(|(_, ticks)| ticks)
                .sum()
        });
    ticks(busy)
}

/// How the rules caught up after a run.
struct Drain {
    /// Evaluated while the run went on.
    evaluated_during_run: u64,
    /// Evaluated when the last request of the run was answered.
    evaluated_at_end: u64,
    /// Neither evaluated nor skipped then: the rules' backlog.
    waiting_at_end: u64,
    /// From the last answer until every event was evaluated (or skipped).
    lag: Duration,
    caught_up: bool,
    usage: Usage,
    /// The worker's resident memory once caught up, in kB.
    rss_kib: u64,
}

impl Target {
    async fn start(config_file: &std::path::Path, rules_on: bool) -> Self {
        let mut settings = vec![(
            "AUDIT_WORKER_CONFIG",
            config_file.to_string_lossy().into_owned(),
        )];
        if !rules_on {
            settings.push(("AUDIT_WORKER__ALERTS__ENABLED", "false".to_owned()));
        }
        let worker = Worker::start(&settings).await;
        let key = worker.create_key(ORG, "org:admin");
        Self {
            rules_on,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("build the HTTP client"),
            base: worker.base_url(),
            key,
            worker,
            stored: 0,
        }
    }

    fn name(&self) -> &'static str {
        if self.rules_on {
            "rules on "
        } else {
            "rules off"
        }
    }

    /// Posts `bodies` once, from `CLIENTS` tasks.
    async fn post_all(&mut self, bodies: &Arc<Vec<Vec<u8>>>) -> Run {
        let claims = Arc::new(Claims::new(
            bodies.len() as u64,
            Instant::now() + RUN_BUDGET,
        ));
        let url = format!("{}/v1/events", self.base);
        let before = Usage::read(&self.worker);
        let started = Instant::now();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (claims, bodies) = (claims.clone(), bodies.clone());
                let (client, url, key) = (self.client.clone(), url.clone(), self.key.clone());
                tokio::spawn(async move {
                    let mut run = Run::default();
                    while let Some(n) = claims.claim() {
                        match post(&client, &url, &key, bodies[n as usize].clone()).await {
                            Ok(()) => run.events += BATCH as u64,
                            Err(failure) => *run.failures.entry(failure).or_default() += 1,
                        }
                    }
                    run
                })
            })
            .collect();
        let mut run = Run::default();
        for task in tasks {
            let done = task.await.expect("a client task panicked");
            run.events += done.events;
            for (failure, count) in done.failures {
                *run.failures.entry(failure).or_default() += count;
            }
        }
        run.elapsed = started.elapsed();
        run.usage = Usage::since(&self.worker, before);
        run.rss_kib = self.worker.rss_kib("VmRSS");
        self.stored += run.events;
        run
    }

    /// Waits until the rules evaluated (or skipped) every stored event;
    /// `evaluated_before` is what they had evaluated when the run started.
    async fn drain(&self, evaluated_before: u64) -> Drain {
        let started = Instant::now();
        let before = Usage::read(&self.worker);
        let at_end = self.metrics().await;
        let evaluated_at_end = at_end.get(EVALUATED);
        let waiting_at_end = self
            .stored
            .saturating_sub(evaluated_at_end + at_end.get(SKIPPED));
        let caught_up = loop {
            let metrics = self.metrics().await;
            if metrics.get(EVALUATED) + metrics.get(SKIPPED) >= self.stored {
                break true;
            }
            if started.elapsed() > DRAIN_DEADLINE {
                break false;
            }
            tokio::time::sleep(POLL).await;
        };
        let lag = started.elapsed();
        Drain {
            evaluated_during_run: evaluated_at_end.saturating_sub(evaluated_before),
            evaluated_at_end,
            waiting_at_end,
            lag,
            caught_up,
            usage: Usage::since(&self.worker, before),
            rss_kib: self.worker.rss_kib("VmRSS"),
        }
    }

    async fn metrics(&self) -> Metrics {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("the worker answers /metrics")
            .text()
            .await
            .expect("a /metrics body");
        Metrics(text)
    }
}

async fn post(client: &reqwest::Client, url: &str, key: &str, body: Vec<u8>) -> Result<(), String> {
    let response = client
        .post(url)
        .bearer_auth(key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|error| format!("transport: {error}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|error| format!("body: {error}"))?;
    if status == reqwest::StatusCode::CREATED {
        Ok(())
    } else {
        Err(format!(
            "{status}: {}",
            text.chars().take(160).collect::<String>()
        ))
    }
}

/// Writes every dirty page now, so that no run pays for another's.
async fn checkpoint() {
    connect(&format!("{SERVER_URL}/postgres"))
        .await
        .batch_execute("CHECKPOINT")
        .await
        .expect("CHECKPOINT");
}

impl Target {
    /// What the worker had PostgreSQL do, all runs and the set-up included.
    async fn database_work(&self) -> String {
        let server = connect(&format!("{SERVER_URL}/postgres")).await;
        let row = server
            .query_one(
                "SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_fetched \
                 FROM pg_stat_database WHERE datname = $1",
                &[&self.worker.database],
            )
            .await
            .expect("read pg_stat_database");
        let per_thousand = |column: usize| {
            let value: i64 = row.get(column);
            format!("{:.0}", value as f64 * 1000.0 / self.stored as f64)
        };
        let database = connect(&self.worker.database_url()).await;
        let tables = database
            .query(
                "SELECT relname::text, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables \
                 WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY 2 DESC LIMIT 5",
                &[],
            )
            .await
            .expect("read pg_stat_user_tables");
        let tables: Vec<String> = tables
            .iter()
            .map(|row| {
                let (table, rows): (String, i64) = (row.get(0), row.get(1));
                format!("{table} {}", grouped(rows as f64))
            })
            .collect();
        format!(
            "PostgreSQL work of the worker with {} a 1000 events stored: {} transactions, rows {} inserted, \
             {} updated, {} deleted, {} fetched; rows written by table: {}",
            self.name(),
            per_thousand(0),
            per_thousand(1),
            per_thousand(2),
            per_thousand(3),
            per_thousand(4),
            tables.join(", ")
        )
    }
}

/// The Prometheus text of `/metrics`.
struct Metrics(String);

impl Metrics {
    /// The value of one series (`name` or `name{labels}`); 0 when absent.
    fn get(&self, series: &str) -> u64 {
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map_or(0, |value| value as u64)
    }
}

struct IngestFigures {
    off: Vec<Run>,
    on: Vec<(Run, Drain)>,
    created: u64,
    updated: u64,
    skipped: u64,
    evaluated: u64,
    stored_on: u64,
    /// Peak resident memory (VmHWM) of the rules-off and rules-on workers, in kB.
    peak_kib: (u64, u64),
    /// Every run in order: rules on, and its ingest rate.
    sequence: Vec<(bool, f64)>,
    /// `alerts.max_backlog_events` of the worker.
    max_backlog: usize,
}

async fn ingest_cost(config_file: &std::path::Path, max_backlog: usize) -> IngestFigures {
    let now = Utc::now();
    let bodies: Vec<Vec<u8>> = (0..RUN_EVENTS)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|chunk| {
            let events: Vec<Value> = chunk
                .iter()
                .map(|&n| sample(n as u64).to_json(timestamp_of(now, n, RUN_EVENTS)))
                .collect();
            serde_json::to_vec(&events).expect("serialize a request body")
        })
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let bodies = Arc::new(bodies);
    println!(
        "\n== ingest, rules off and on: {} bodies of {BATCH} events ({} bytes of JSON an event), {CLIENTS} clients ==",
        grouped(bodies.len() as f64),
        bytes / RUN_EVENTS
    );

    let mut off = Target::start(config_file, false).await;
    let mut on = Target::start(config_file, true).await;
    let warmup = Arc::new(bodies[..WARMUP_BODIES].to_vec());
    for target in [&mut off, &mut on] {
        let run = target.post_all(&warmup).await;
        println!(
            "warm-up {}: {} events, {} failed requests",
            target.name(),
            grouped(run.events as f64),
            run.failures.values().sum::<u64>()
        );
    }
    on.drain(0).await;

    let mut figures = IngestFigures {
        off: vec![],
        on: vec![],
        created: 0,
        updated: 0,
        skipped: 0,
        evaluated: 0,
        stored_on: 0,
        peak_kib: (0, 0),
        sequence: vec![],
        max_backlog,
    };
    for rules_on in ORDER {
        let target = if rules_on { &mut on } else { &mut off };
        checkpoint().await;
        let evaluated_before = target.metrics().await.get(EVALUATED);
        let run = target.post_all(&bodies).await;
        figures.sequence.push((rules_on, run.rate()));
        let failed: u64 = run.failures.values().sum();
        println!(
            "{}: {} events in {:.2?}, {} ev/s ({}), worker RSS {:.0} MB at the end, {failed} failed requests",
            target.name(),
            grouped(run.events as f64),
            run.elapsed,
            grouped(run.rate()),
            run.usage.cores(run.elapsed),
            mb(run.rss_kib)
        );
        for (failure, count) in &run.failures {
            println!("  {count} x {failure}");
        }
        if rules_on {
            let drain = target.drain(evaluated_before).await;
            let caught_up = if drain.caught_up {
                format!("every event evaluated {:.2?} after the run", drain.lag)
            } else {
                format!("NOT every event evaluated {DRAIN_DEADLINE:?} after the run")
            };
            let pace = drain.evaluated_during_run as f64 / run.elapsed.as_secs_f64();
            println!(
                "  rules: {} ev/s evaluated during the run ({:.0} % of its ingest rate), {} of {} events \
                 evaluated when it ended; {caught_up} ({} meanwhile); worker RSS then {:.0} MB",
                grouped(pace),
                pace * 100.0 / run.rate(),
                grouped(drain.evaluated_at_end as f64),
                grouped(target.stored as f64),
                drain.usage.cores(drain.lag),
                mb(drain.rss_kib)
            );
            figures.on.push((run, drain));
        } else {
            figures.off.push(run);
        }
    }

    let metrics = on.metrics().await;
    figures.created = metrics.get(CREATED);
    figures.updated = metrics.get(UPDATED);
    figures.skipped = metrics.get(SKIPPED);
    figures.evaluated = metrics.get(EVALUATED);
    figures.stored_on = on.stored;
    figures.peak_kib = (off.worker.rss_kib("VmHWM"), on.worker.rss_kib("VmHWM"));
    tokio::time::sleep(STATS_FLUSH).await;
    for target in [&off, &on] {
        println!("{}", target.database_work().await);
    }
    for target in [off, on] {
        let log = target.worker.log.clone();
        let name = target.name();
        let (status, took) = target.worker.stop().await;
        println!("worker with {name} stopped on SIGTERM in {took:.1?}: {status}; database dropped");
        report_log(&log);
    }
    figures
}

impl IngestFigures {
    fn print(&self, evaluation_rate: f64) {
        let total = |runs: &mut dyn Iterator<Item = &Run>| {
            runs.fold((0_u64, Duration::ZERO), |(events, elapsed), run| {
                (events + run.events, elapsed + run.elapsed)
            })
        };
        let (off_events, off_elapsed) = total(&mut self.off.iter());
        let (on_events, on_elapsed) = total(&mut self.on.iter().map(|(run, _)| run));
        let off_rate = off_events as f64 / off_elapsed.as_secs_f64();
        let on_rate = on_events as f64 / on_elapsed.as_secs_f64();
        let cost = 1.0 - on_rate / off_rate;
        let per_run = |runs: Vec<f64>| {
            runs.iter()
                .map(|rate| grouped(*rate))
                .collect::<Vec<_>>()
                .join(" and ")
        };
        println!(
            "ingest ({} runs each, order off/on/on/off/on/off/off/on): rules off {} ev/s ({}), rules on {} ev/s ({}); \
             cost of the rules 1 - on/off = {:.1} % (floor < {:.0} %: {})",
            self.off.len(),
            grouped(off_rate),
            per_run(self.off.iter().map(Run::rate).collect()),
            grouped(on_rate),
            per_run(self.on.iter().map(|(run, _)| run.rate()).collect()),
            cost * 100.0,
            MAX_INGEST_COST * 100.0,
            verdict(cost < MAX_INGEST_COST)
        );
        // Each run against the neighbour it was paired with in `ORDER`.
        let paired: Vec<String> = self
            .sequence
            .chunks(2)
            .filter_map(|pair| {
                let off = pair.iter().find(|(on, _)| !on)?.1;
                let on = pair.iter().find(|(on, _)| *on)?.1;
                Some(format!("{:.1} %", (1.0 - on / off) * 100.0))
            })
            .collect();
        println!(
            "cost of the rules run against run (pairs in order): {}",
            paired.join(", ")
        );
        let off_cpu: Duration = self.off.iter().map(|run| run.usage.total()).sum();
        let on_cpu: Duration = self
            .on
            .iter()
            .map(|(run, drain)| run.usage.total() + drain.usage.total())
            .sum();
        let micros = |cpu: Duration, events: u64| cpu.as_secs_f64() * 1e6 / events as f64;
        let (off_micros, on_micros) = (micros(off_cpu, off_events), micros(on_cpu, on_events));
        println!(
            "CPU an event, worker and PostgreSQL (rules on: their catch-up included): rules off {off_micros:.0} µs, \
             rules on {on_micros:.0} µs (+{:.0} %) on {} cores",
            (on_micros / off_micros - 1.0) * 100.0,
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        let lag: Duration = self.on.iter().map(|(_, drain)| drain.lag).sum();
        let caught_up = self.on.iter().all(|(_, drain)| drain.caught_up);
        let until_evaluated = on_events as f64 / (on_elapsed + lag).as_secs_f64();
        let evaluated_during: u64 = self
            .on
            .iter()
            .map(|(_, drain)| drain.evaluated_during_run)
            .sum();
        let pace = evaluated_during as f64 / on_elapsed.as_secs_f64();
        let waiting = self
            .on
            .iter()
            .map(|(_, drain)| drain.waiting_at_end)
            .max()
            .unwrap_or_default();
        println!(
            "rules behind ingest: during the runs they evaluated {} ev/s ({:.0} % of the rules-on ingest rate; \
             in process the matching alone runs at {:.0}x that rate), up to {} events waiting at a run's end \
             (alerts.max_backlog_events = {}); {:.2?} after the runs in all until {}; \
             ingest until every event was evaluated {} ev/s",
            grouped(pace),
            pace * 100.0 / on_rate,
            evaluation_rate / on_rate,
            grouped(waiting as f64),
            grouped(self.max_backlog as f64),
            lag,
            if caught_up {
                "every event was evaluated"
            } else {
                "the deadline: NOT every event evaluated"
            },
            grouped(until_evaluated)
        );
        println!(
            "rules-on worker: {} of {} stored events evaluated, {} skipped (backlog full); \
             alerts created {}, updated {}",
            grouped(self.evaluated as f64),
            grouped(self.stored_on as f64),
            grouped(self.skipped as f64),
            grouped(self.created as f64),
            grouped(self.updated as f64)
        );
        let (peak_off, peak_on) = self.peak_kib;
        println!(
            "worker peak memory (VmHWM): rules off {:.0} MB, rules on {:.0} MB (events waiting for the rules are held in memory)",
            mb(peak_off),
            mb(peak_on)
        );
    }
}

/// Kibibytes (as /proc reports them) in megabytes of 10^6 bytes.
fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}
