//! Rule evaluation: which rules a batch of newly stored events fires, then one
//! transaction that records threshold hits, counts their windows, raises (or
//! updates) the alerts and queues their notifications.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::rule::{CompiledRule, RuleKind};
use crate::db::alert_windows::{self, Hit};
use crate::db::alerts::{self, Alert, Notice, Raise, Raised};
use crate::db::connection::Statements;
use crate::db::{DbError, PgPool};
use crate::messages::alert::ObservedEvent;

/// A rule firing for one group: every firing of the batch for that group folded
/// into one.
#[derive(Debug, Clone)]
pub struct Firing {
    pub organization_id: String,
    pub rule: Arc<CompiledRule>,
    pub group_key: String,
    /// The latest event that fired it.
    pub seen_at: DateTime<Utc>,
    pub event_id: i64,
    pub correlation_id: Option<String>,
    /// How many events fired it in this batch.
    pub times: i32,
    /// Threshold rules: the count in the window at the latest firing.
    pub window_count: Option<i64>,
}

/// What a batch of events asks of the database: only the matches, so that
/// events waiting for the database cost little memory.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Events observed (matching or not).
    events: u64,
    /// Matches of threshold rules, with their rule.
    hits: Vec<(Hit, Arc<CompiledRule>, Option<String>)>,
    firings: HashMap<(String, String, String), Firing>,
}

impl Evaluation {
    /// Events observed.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Matches waiting to be applied.
    pub fn matches(&self) -> usize {
        self.hits.len() + self.firings.len()
    }

    /// Folds `later` in (a batch that could not be written, and what came since).
    pub fn merge(&mut self, later: Evaluation) {
        self.events += later.events;
        self.hits.extend(later.hits);
        for firing in later.firings.into_values() {
            self.fire(firing);
        }
    }

    /// Drops the oldest threshold matches beyond `limit`; how many went.
    pub fn trim(&mut self, limit: usize) -> usize {
        let excess = self.hits.len().saturating_sub(limit);
        self.hits.drain(..excess);
        excess
    }

    /// Matches `event` against `rules` (its organization's) and counts it.
    pub fn observe(&mut self, observed: &ObservedEvent, rules: &[Arc<CompiledRule>]) {
        self.observe_with(observed, rules);
        self.count_event();
    }

    /// Counts an event matched with [`Self::observe_with`].
    pub fn count_event(&mut self) {
        self.events += 1;
    }

    /// Matches `event` against `rules` without counting it (for an event
    /// matched against several rule sets).
    pub fn observe_with(&mut self, observed: &ObservedEvent, rules: &[Arc<CompiledRule>]) {
        let event = &observed.event;
        for rule in rules {
            let Some(group_key) = rule.group_of(event) else {
                continue;
            };
            match (rule.definition.kind, rule.definition.window) {
                (RuleKind::Threshold, Some(window)) => self.hits.push((
                    Hit {
                        organization_id: event.organization_id.clone(),
                        rule_id: rule.id.clone(),
                        group_key,
                        occurred_at: event.timestamp,
                        event_id: observed.id,
                        window,
                    },
                    rule.clone(),
                    event.correlation_id.clone(),
                )),
                _ => self.fire(Firing {
                    organization_id: event.organization_id.clone(),
                    rule: rule.clone(),
                    group_key,
                    seen_at: event.timestamp,
                    event_id: observed.id,
                    correlation_id: event.correlation_id.clone(),
                    times: 1,
                    window_count: None,
                }),
            }
        }
    }

    fn fire(&mut self, firing: Firing) {
        fold(&mut self.firings, firing);
    }
}

/// Folds a firing into the one of its rule and group.
fn fold(firings: &mut HashMap<(String, String, String), Firing>, firing: Firing) {
    let key = (
        firing.organization_id.clone(),
        firing.rule.id.clone(),
        firing.group_key.clone(),
    );
    match firings.get_mut(&key) {
        Some(existing) => {
            existing.times += firing.times;
            if firing.seen_at >= existing.seen_at {
                existing.seen_at = firing.seen_at;
                existing.event_id = firing.event_id;
                existing.correlation_id = firing.correlation_id;
                existing.window_count = firing.window_count.or(existing.window_count);
            }
        }
        None => {
            firings.insert(key, firing);
        }
    }
}

/// What applying a batch came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub created: usize,
    pub updated: usize,
    pub suppressed: usize,
    pub notifications: usize,
}

/// The alert a firing raises.
fn raised(firing: &Firing) -> Raised {
    let definition = &firing.rule.definition;
    Raised {
        organization_id: firing.organization_id.clone(),
        rule_id: firing.rule.id.clone(),
        group_key: firing.group_key.clone(),
        severity: definition.severity,
        alert_type: definition.alert_type,
        title: firing.rule.title(&firing.group_key),
        description: definition.description.clone(),
        source: "rules".to_owned(),
        correlation_id: firing.correlation_id.clone(),
        metadata: json!({
            "rule": definition.name,
            "kind": definition.kind,
            "group_by": definition.group_by,
            "group": firing.group_key,
            "last_event_id": firing.event_id,
            "window_count": firing.window_count,
        }),
        seen_at: firing.seen_at,
        occurrences: firing.times,
        cooldown: firing.rule.cooldown(),
    }
}

/// Records the batch's hits and raises its alerts in one transaction: all of
/// it or (on error, retried by the caller) none of it.
pub async fn apply(pool: &PgPool, evaluation: &Evaluation) -> Result<Applied, DbError> {
    let mut client = pool.get().await?;
    let (transaction, prepared) = client.begin().await?;
    let statements = Statements::Prepared(&prepared);
    let hits: Vec<Hit> = evaluation
        .hits
        .iter()
        .map(|(hit, _, _)| hit.clone())
        .collect();
    let counted = alert_windows::record_and_count(&transaction, &hits).await?;
    let crossed: Vec<Firing> = counted
        .into_iter()
        .filter_map(|counted| {
            let (hit, rule, correlation_id) = &evaluation.hits[counted.index];
            let threshold = i64::from(rule.definition.threshold.unwrap_or(1));
            (counted.count >= threshold).then(|| Firing {
                organization_id: hit.organization_id.clone(),
                rule: rule.clone(),
                group_key: hit.group_key.clone(),
                seen_at: hit.occurred_at,
                event_id: hit.event_id,
                correlation_id: correlation_id.clone(),
                times: 1,
                window_count: Some(counted.count),
            })
        })
        .collect();
    let mut folded = evaluation.firings.clone();
    for firing in crossed {
        fold(&mut folded, firing);
    }
    let mut applied = Applied::default();
    let mut firings: Vec<Firing> = folded.into_values().collect();
    // One order for every worker: concurrent batches lock alert rows alike
    // (`raise_all` locks them in the firings' order).
    firings.sort_by(|a, b| {
        (&a.organization_id, &a.rule.id, &a.group_key).cmp(&(
            &b.organization_id,
            &b.rule.id,
            &b.group_key,
        ))
    });
    let raised: Vec<Raised> = firings.iter().map(raised).collect();
    let raises = alerts::raise_all(&transaction, statements, &raised).await?;
    let notices: Vec<(&Alert, Notice)> = raises
        .iter()
        .filter_map(|raise| match raise {
            Raise::Created(alert) => Some((alert, Notice::New)),
            Raise::Updated {
                alert,
                escalated: true,
            } => Some((alert, Notice::Escalated)),
            Raise::Updated { .. } | Raise::Suppressed => None,
        })
        .collect();
    applied.notifications = alerts::notify_all(&transaction, &notices).await?;
    for raise in &raises {
        match raise {
            Raise::Created(_) => applied.created += 1,
            Raise::Updated { .. } => applied.updated += 1,
            Raise::Suppressed => applied.suppressed += 1,
        }
    }
    transaction.commit().await?;
    Ok(applied)
}
