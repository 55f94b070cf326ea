//! AlertActor: evaluates the alert rules on every newly stored event, off the
//! ingest path. Ingest hands it each committed group ([`Observe`]) without
//! waiting. Matching runs at once (it is cheap) and only the matches wait for
//! the database: they are applied in one transaction at a time, at most every
//! `APPLY_EVERY`, and whatever matched meanwhile goes in the next, so under
//! load batches grow instead of queueing up, and waiting costs little memory. A batch that cannot be
//! written is kept and tried again. Every `alerts.system_check_interval` it
//! also runs the system rules and deletes closed alerts past their retention
//! (one instance at a time).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;

use crate::alerts::engine::{self, Evaluation};
use crate::alerts::rule::{configured, CompiledRule};
use crate::alerts::system::{self, IngestLimits, IngestSample};
use crate::cache::ALERT_RULES;
use crate::cache::{Answer, QueryCache};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::alert_rules::{self, StoredRule};
use crate::db::locks::{self, Round};
use crate::db::{alert_windows, alerts, DbError, PgPool};
use crate::messages::alert::{Observe, ObservedEvent, RulesChanged};
use crate::metrics::Metrics;
use crate::reload::LiveConfig;
use crate::shared::Shared;

/// Batches are applied at most this often.
const APPLY_EVERY: Duration = Duration::from_millis(250);
/// Wait before applying a batch again after a failed write.
const APPLY_RETRY: Duration = Duration::from_secs(1);
/// An organization's rules are looked up again (a cache hit, unless they
/// changed on some instance) when last read longer ago than this.
const RULES_REFRESH: Duration = Duration::from_secs(1);

type RuleList = Arc<Vec<Arc<CompiledRule>>>;

/// A read of an organization's rules under way, and the events waiting for it.
#[derive(Default)]
struct Loading {
    waiting: Vec<ObservedEvent>,
    /// The rules changed after the read began: read them again.
    outdated: bool,
}

/// An organization's own rules as last read.
struct OwnRules {
    /// The cached answer they were compiled from: recompiled only when it changes.
    answer: Answer,
    rules: RuleList,
    read_at: Instant,
}

/// Run the system rules and the alert retention now: the actor's own tick,
/// re-armed after each run so that two checks never overlap.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct CheckSystem;

pub struct AlertActor {
    pool: PgPool,
    cache: Arc<QueryCache>,
    /// The configuration in force: `[alerts]` changes at run time (a reload),
    /// and a restarted actor must start from the reloaded values, not those of
    /// the start, hence a receiver rather than a copy.
    config: LiveConfig,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    /// The rules of `config.toml`: every organization's; compiled again when
    /// a reload changes them.
    global: RuleList,
    own: HashMap<String, OwnRules>,
    /// Organizations whose rules are being read.
    loading: HashMap<String, Loading>,
    /// Matches not yet applied.
    evaluation: Evaluation,
    applying: bool,
    /// When the last batch began, and whether the next one is scheduled.
    last_apply: Option<Instant>,
    apply_scheduled: bool,
    /// Ingest figures at the last system check.
    last_ingest: IngestSample,
    /// Read when the actor starts: `alerts.system_check_interval` is restart-only.
    system_check_interval: Duration,
}

impl AlertActor {
    pub fn new(shared: &Shared) -> Self {
        let mut config = shared.live.clone();
        let metrics = shared.metrics.clone();
        let global = global_rules(&config.borrow_and_update());
        let system_check_interval = config.borrow().alerts.system_check_interval;
        let last_ingest = IngestSample::read(&metrics);
        Self {
            pool: shared.pool.clone(),
            cache: shared.cache.clone(),
            config,
            clock: shared.clock.clone(),
            metrics,
            global,
            own: HashMap::new(),
            loading: HashMap::new(),
            evaluation: Evaluation::default(),
            applying: false,
            last_apply: None,
            apply_scheduled: false,
            last_ingest,
            system_check_interval,
        }
    }

    /// Compiles the configuration's rules again if a reload changed the configuration.
    fn refresh_global_rules(&mut self) {
        if self.config.has_changed().unwrap_or(false) {
            let config = self.config.borrow_and_update().clone();
            self.global = global_rules(&config);
        }
    }

    /// Matches the event now if its organization's rules are known; else it
    /// waits for them.
    fn observe(&mut self, observed: ObservedEvent, ctx: &mut Context<Self>) {
        let organization_id = observed.event.organization_id.as_str();
        if let Some(loading) = self.loading.get_mut(organization_id) {
            loading.waiting.push(observed);
            return;
        }
        match self.own.get(organization_id) {
            Some(own) => {
                let stale = own.read_at.elapsed() >= RULES_REFRESH;
                let rules = own.rules.clone();
                for rule_set in [&self.global, &rules] {
                    self.evaluation.observe_with(&observed, rule_set);
                }
                self.evaluation.count_event();
                if stale {
                    self.load_rules(organization_id.to_owned(), Vec::new(), ctx);
                }
            }
            None => self.load_rules(organization_id.to_owned(), vec![observed], ctx),
        }
    }

    /// Reads the organization's rules (through the query cache, so a change
    /// made on any instance shows), then matches the events that waited.
    fn load_rules(
        &mut self,
        organization_id: String,
        waiting: Vec<ObservedEvent>,
        ctx: &mut Context<Self>,
    ) {
        self.loading.insert(
            organization_id.clone(),
            Loading {
                waiting,
                outdated: false,
            },
        );
        let (pool, cache) = (self.pool.clone(), self.cache.clone());
        let previous = self
            .own
            .get(&organization_id)
            .map(|own| (own.answer.clone(), own.rules.clone()));
        let read = {
            let organization_id = organization_id.clone();
            async move { organization_rules(&pool, &cache, &organization_id, previous).await }
        };
        ctx.spawn(wrap_future::<_, Self>(read).map(move |read, actor, ctx| {
            let Loading { waiting, outdated } = actor.loading.remove(&organization_id).unwrap_or_default();
            match read {
                Ok(_) if outdated => actor.load_rules(organization_id, waiting, ctx),
                Ok((answer, rules)) => {
                    actor.own.insert(
                        organization_id,
                        OwnRules {
                            answer,
                            rules,
                            read_at: Instant::now(),
                        },
                    );
                    for observed in waiting {
                        actor.observe(observed, ctx);
                    }
                    actor.apply(ctx);
                }
                Err(error) => {
                    // Keep the events; try again shortly.
                    tracing::warn!(%error, organization_id, "Cannot read the organization's alert rules");
                    let mut waiting = waiting;
                    let limit = actor.config.borrow().alerts.max_backlog_events;
                    if waiting.len() > limit {
                        let skipped = waiting.len() - limit;
                        waiting.drain(..skipped);
                        actor.metrics.alerts.events_skipped.inc_by(skipped as u64);
                    }
                    actor.loading.insert(organization_id.clone(), Loading::default());
                    ctx.run_later(APPLY_RETRY, move |actor, ctx| {
                        let arrived = actor.loading.remove(&organization_id).unwrap_or_default();
                        let mut waiting = waiting;
                        waiting.extend(arrived.waiting);
                        actor.load_rules(organization_id, waiting, ctx);
                    });
                }
            }
        }));
    }

    fn apply(&mut self, ctx: &mut Context<Self>) {
        if self.applying || self.apply_scheduled || self.evaluation.events() == 0 {
            return;
        }
        // At most one batch per APPLY_EVERY: a group firing many times
        // meanwhile is one update, its window read once.
        let since = self.last_apply.map_or(APPLY_EVERY, |at| at.elapsed());
        if since < APPLY_EVERY {
            self.apply_scheduled = true;
            ctx.run_later(APPLY_EVERY - since, |actor, ctx| {
                actor.apply_scheduled = false;
                actor.apply(ctx);
            });
            return;
        }
        self.last_apply = Some(Instant::now());
        self.applying = true;
        let batch = std::mem::take(&mut self.evaluation);
        let pool = self.pool.clone();
        let span = tracing::info_span!(
            "alert_rules",
            events = batch.events(),
            matches = batch.matches()
        );
        let events = batch.events();
        let work = async move {
            if batch.matches() == 0 {
                return (None, Ok(Default::default()));
            }
            match engine::apply(&pool, &batch).await {
                Ok(applied) => (None, Ok(applied)),
                Err(error) => (Some(batch), Err(error)),
            }
        };
        ctx.spawn(
            wrap_future::<_, Self>(tracing::Instrument::instrument(work, span)).map(
                move |(unapplied, outcome), actor, ctx| {
                    actor.applying = false;
                    match outcome {
                        Ok(applied) => {
                            actor.metrics.alerts.events_evaluated.inc_by(events);
                            actor
                                .metrics
                                .alerts.raised
                                .with_label_values(&["created"])
                                .inc_by(applied.created as u64);
                            actor
                                .metrics
                                .alerts.raised
                                .with_label_values(&["updated"])
                                .inc_by(applied.updated as u64);
                            actor.apply(ctx);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "Cannot apply alert rules; trying the batch again shortly");
                            let mut batch = unapplied.unwrap_or_default();
                            batch.merge(std::mem::take(&mut actor.evaluation));
                            let limit = actor.config.borrow().alerts.max_backlog_events;
                            let skipped = batch.trim(limit);
                            if skipped > 0 {
                                actor.metrics.alerts.events_skipped.inc_by(skipped as u64);
                                tracing::warn!(skipped, "Alert rule backlog full: skipped the oldest matches");
                            }
                            actor.evaluation = batch;
                            ctx.run_later(APPLY_RETRY, |actor, ctx| actor.apply(ctx));
                        }
                    }
                },
            ),
        );
    }
}

/// The enabled rules of `config.toml`. A configuration is checked before it
/// is put in force (start-up, reload), so reading its rules again succeeds.
fn global_rules(config: &Config) -> RuleList {
    let definitions = configured(&config.alerts.rules).unwrap_or_default();
    Arc::new(
        definitions
            .into_iter()
            .filter(|definition| definition.enabled)
            .map(|definition| {
                Arc::new(CompiledRule::new(
                    format!("config:{}", definition.name),
                    definition,
                ))
            })
            .collect(),
    )
}

/// The organization's enabled rules, through the query cache; `previous` is
/// reused when the cached answer has not changed.
async fn organization_rules(
    pool: &PgPool,
    cache: &QueryCache,
    organization_id: &str,
    previous: Option<(Answer, RuleList)>,
) -> Result<(Answer, RuleList), DbError> {
    let answer = cache
        .get_or_load(
            organization_id,
            ALERT_RULES,
            "",
            cache.default_lifetime(),
            || async {
                let client = pool.get().await?;
                let rules: Vec<StoredRule> = alert_rules::list(&**client, organization_id)
                    .await?
                    .into_iter()
                    .filter(|rule| rule.definition.enabled)
                    .collect();
                serde_json::to_vec(&rules).map_err(|error| DbError::Decode(error.to_string()))
            },
        )
        .await?;
    if let Some((previous_answer, rules)) = previous {
        if Arc::ptr_eq(&previous_answer, &answer) || previous_answer == answer {
            return Ok((answer, rules));
        }
    }
    let stored: Vec<StoredRule> =
        serde_json::from_slice(&answer).map_err(|error| DbError::Decode(error.to_string()))?;
    let compiled: RuleList = Arc::new(
        stored
            .into_iter()
            .map(|rule| Arc::new(CompiledRule::new(rule.rule_id, rule.definition)))
            .collect(),
    );
    Ok((answer, compiled))
}

/// One system check: the system rules, then (one instance at a time) the
/// retention of closed alerts and the pruning of expired window hits.
async fn check_system(
    pool: PgPool,
    config: Arc<Config>,
    clock: SharedClock,
    before: IngestSample,
    now: IngestSample,
) -> Result<(), DbError> {
    let settings = &config.alerts;
    let mut client = pool.get().await?;
    system::open_breakers(&**client, settings.breaker_open_after).await?;
    let limits = IngestLimits {
        error_rate: settings.ingest_error_rate,
        min_requests: settings.ingest_min_requests,
        latency: settings.ingest_latency,
    };
    system::ingest_performance(
        &**client,
        &settings.system_organization,
        before,
        now,
        &limits,
    )
    .await?;

    let transaction = client.transaction().await?;
    if !locks::try_lock_for_transaction(&transaction, Round::AlertRetention).await? {
        return Ok(());
    }
    let cutoff = clock.now() - chrono::Duration::days(i64::from(settings.retention_days));
    let deleted = alerts::delete_closed_before(&transaction, cutoff).await?;
    alert_windows::prune(&transaction).await?;
    transaction.commit().await?;
    if deleted > 0 {
        tracing::info!(deleted, %cutoff, "Deleted closed alerts past their retention");
    }
    Ok(())
}

impl Actor for AlertActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify_later(CheckSystem, self.system_check_interval);
    }
}

impl Handler<Observe> for AlertActor {
    type Result = ();

    fn handle(&mut self, Observe(events): Observe, ctx: &mut Self::Context) {
        if !self.config.borrow().alerts.enabled {
            return;
        }
        self.refresh_global_rules();
        for observed in events {
            self.observe(observed, ctx);
        }
        // Matches wait in memory while the database lags; they never take
        // more than `alerts.max_backlog_events` entries.
        let limit = self.config.borrow().alerts.max_backlog_events;
        let skipped = self.evaluation.trim(limit);
        if skipped > 0 {
            self.metrics.alerts.events_skipped.inc_by(skipped as u64);
            tracing::warn!(
                skipped,
                "Alert rule backlog full: skipped the oldest matches"
            );
        }
        self.apply(ctx);
    }
}

impl Handler<RulesChanged> for AlertActor {
    type Result = ();

    fn handle(&mut self, changed: RulesChanged, _: &mut Self::Context) {
        self.own.remove(&changed.organization_id);
        if let Some(loading) = self.loading.get_mut(&changed.organization_id) {
            loading.outdated = true;
        }
    }
}

impl Handler<CheckSystem> for AlertActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: CheckSystem, _: &mut Self::Context) -> Self::Result {
        let now = IngestSample::read(&self.metrics);
        let before = std::mem::replace(&mut self.last_ingest, now);
        let check = check_system(
            self.pool.clone(),
            self.config.borrow().clone(),
            self.clock.clone(),
            before,
            now,
        );
        Box::pin(
            wrap_future::<_, Self>(async move {
                if let Err(error) = check.await {
                    tracing::warn!(%error, "System alert check failed");
                }
            })
            .map(|(), actor, ctx| {
                ctx.notify_later(CheckSystem, actor.system_check_interval);
            }),
        )
    }
}
