//! DeliveryActor: one per destination. It schedules that destination's
//! claimed deliveries with its own concurrency limit, optional rate limit and
//! circuit breaker, so a broken destination only ever holds up its own
//! deliveries. Each attempt reads the destination (or reuses it), sends
//! through [`crate::deliveries::sender`], lets [`retry::decide`] say what
//! becomes of the delivery (delivered, retried after a wait, dead-lettered),
//! and hands the record to the QueueActor through the [`Outbox`]; its
//! figures go to the HealthActor. While the breaker is open, or the
//! destination is disabled, claims go back to the queue without using a
//! retry.

use std::collections::{HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;
use chrono::Utc;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use super::health::HealthActor;
use crate::breaker::Breaker;
use crate::db::deliveries::{self, Attempt, Claim};
use crate::db::destinations::{self, DestinationKey, HealthBatch};
use crate::db::{DbError, PgPool};
use crate::deliveries::body::{BodyShape, Payload};
use crate::deliveries::crypto::SecretBox;
use crate::deliveries::destination::DeliverySettings;
use crate::deliveries::egress::Egress;
use crate::deliveries::retry::{self, Outcome, Verdict};
use crate::deliveries::sender::Prepared;
use crate::messages::delivery::{
    Abandoned, Deliver, Ended, Finished, HealthReport, Record, Retire,
};
use crate::streams::{self, BatchError};
use crate::supervisor::ActorHandle;

pub struct DeliveryActor {
    /// The destination it delivers to, and its organization.
    key: DestinationKey,
    pool: PgPool,
    /// Every connection goes through it, held to the network policy.
    egress: Egress,
    secrets: Arc<SecretBox>,
    outbox: Outbox,
    /// Where the attempts' figures go, for `destination_health`.
    health_reports: ActorHandle<HealthActor>,
    worker_id: String,
    /// The destination's settings as last read (again once `DESTINATION_CACHE_TTL` has passed).
    settings: DeliverySettings,
    breaker: Breaker,
    /// The destination as last read, and when (re-read after `DESTINATION_CACHE_TTL`).
    destination: Option<(Arc<Read>, Instant)>,
    /// When an attempt started reading the destination again. Those that
    /// start within `DESTINATION_CACHE_TTL` of it use the copy in hand, so it
    /// is read once per period, not once per concurrent attempt; the copy
    /// replaces the old one only when that attempt ends, so a slow attempt
    /// does not keep the others on the old copy for longer than the period.
    reading_destination_since: Option<Instant>,
    /// Attempts not yet reported to the HealthActor.
    health: Option<HealthBatch>,
    health_report_scheduled: bool,
    /// Built from `rate_limit_per_second` when the destination has one.
    limiter: Option<DefaultDirectRateLimiter>,
    /// A pump is scheduled for when the rate limit allows the next attempt.
    pump_scheduled: bool,
    /// Claims whose attempt (or return to the queue) is under way.
    in_flight: HashSet<Uuid>,
    /// Claimed and not attempted yet, best first: highest priority, then
    /// earliest due. A claim's rows come back in table order, and a later
    /// claim may bring rows that go before those already waiting.
    waiting: VecDeque<Claim>,
    /// Told to stop (the destination is disabled or deleted): claims go back
    /// to the queue, and the actor stops once its attempts have ended.
    retiring: bool,
}

/// How the DeliveryActors tell whoever gave them their claims (the
/// QueueActor, on another thread) what became of each.
///
/// Ended attempts go as one [`Record`] message per turn of the DeliveryActors'
/// thread: the first attempt to end schedules the message, behind whatever
/// else is ready on the thread, so it takes every attempt that ends meanwhile
/// and waits for no timer. A message per attempt would wake the QueueActor's
/// thread once per delivery, tens of thousands of times a second under load
/// (how many attempts a message carries: `benches/README.md`). The message is
/// sent by a task of the thread, not of the actor whose attempt scheduled it,
/// so an actor that stops meanwhile loses nothing. The lock is never
/// contended: the DeliveryActors share one thread.
#[derive(Clone)]
pub struct Outbox {
    waiting: Arc<Mutex<Vec<Ended>>>,
    records: Recipient<Record>,
    finished: Recipient<Finished>,
    abandoned: Recipient<Abandoned>,
}

impl Outbox {
    pub fn new(
        records: Recipient<Record>,
        finished: Recipient<Finished>,
        abandoned: Recipient<Abandoned>,
    ) -> Self {
        Self {
            waiting: Arc::default(),
            records,
            finished,
            abandoned,
        }
    }

    /// Called on the DeliveryActors' thread, where the message goes out from.
    fn send(&self, ended: Ended) {
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.push(ended);
            waiting.len() == 1
        };
        if first {
            let outbox = self.clone();
            actix::spawn(async move {
                tokio::task::yield_now().await;
                let ended = std::mem::take(
                    &mut *outbox
                        .waiting
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner),
                );
                outbox.records.do_send(Record(ended));
            });
        }
    }

    /// Tells the QueueActor at once that a claim ended without an attempt to
    /// record (it was given back, or its attempt could not be made).
    fn finished(&self, destination_id: i64) {
        self.finished.do_send(Finished { destination_id });
    }

    /// Tells the QueueActor at once of the claims an actor held as it ended.
    /// Sent straight away, not by a task of the thread: the thread may be
    /// stopping too.
    fn abandoned(&self, destination_id: i64, deliveries: Vec<Uuid>) {
        self.abandoned.do_send(Abandoned {
            destination_id,
            deliveries,
        });
    }
}

/// How long a read destination (config, settings, disabled flag) is reused.
const DESTINATION_CACHE_TTL: Duration = Duration::from_secs(1);
/// How often the attempts' figures are reported to the HealthActor.
const HEALTH_REPORT_EVERY: Duration = Duration::from_millis(500);

/// A destination as an attempt last read it.
struct Read {
    /// Its deliveries wait in the queue until it is enabled again.
    disabled: bool,
    prepared: Prepared,
}

impl Read {
    /// The destination, unless it was deleted.
    async fn get(
        pool: &PgPool,
        key: &DestinationKey,
        secrets: &SecretBox,
    ) -> Result<Option<Self>, DbError> {
        let client = pool.get().await?;
        let read = destinations::get(&**client, &key.organization_id, key.id).await?;
        Ok(read.map(|destination| Self {
            disabled: destination.disabled,
            prepared: Prepared::new(&destination, secrets),
        }))
    }
}

/// What an attempt's future hands back to the actor.
enum Attempted {
    /// The destination is disabled: the claim went back to the queue.
    Held {
        destination: Arc<Read>,
        fresh: bool,
    },
    Done(Box<Done>),
}

struct Done {
    record: Attempt,
    outcome: Outcome,
    /// `None`: the destination was deleted.
    destination: Option<Arc<Read>>,
    fresh: bool,
}

/// What a claim sends: its stored payload, or (a stream's batch, stored as
/// its range) its events, read now.
async fn payload(
    pool: &PgPool,
    (body, stored): (BodyShape, String),
    organization_id: &str,
    host: &str,
) -> Result<Payload, BatchError> {
    match body {
        BodyShape::Document => Ok(Payload::Document(stored)),
        BodyShape::Ndjson => Payload::records_of(&stored).map_err(BatchError::Unsendable),
        BodyShape::Stream => streams::batch_records(pool, organization_id, &stored, host)
            .await
            .map(Payload::Records),
    }
}

impl DeliveryActor {
    pub fn new(
        key: DestinationKey,
        pool: PgPool,
        egress: Egress,
        secrets: Arc<SecretBox>,
        outbox: Outbox,
        health_reports: ActorHandle<HealthActor>,
        worker_id: String,
    ) -> Self {
        // One at a time until the first attempt has read the destination's own settings.
        let settings = DeliverySettings {
            concurrency: 1,
            ..DeliverySettings::default()
        };
        Self {
            breaker: Breaker::new(settings.failure_threshold, settings.reset_timeout),
            key,
            pool,
            egress,
            secrets,
            outbox,
            health_reports,
            worker_id,
            settings,
            destination: None,
            reading_destination_since: None,
            health: None,
            health_report_scheduled: false,
            limiter: None,
            pump_scheduled: false,
            in_flight: HashSet::new(),
            waiting: VecDeque::new(),
            retiring: false,
        }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.retiring {
            while let Some(claim) = self.waiting.pop_front() {
                self.in_flight.insert(claim.id);
                self.release(claim, Duration::ZERO, ctx);
            }
            if self.in_flight.is_empty() {
                ctx.stop();
            }
            return;
        }
        while self.in_flight.len() < self.settings.concurrency as usize && !self.waiting.is_empty()
        {
            if let Some(limiter) = &self.limiter {
                if let Err(not_until) = limiter.check() {
                    if !self.pump_scheduled {
                        self.pump_scheduled = true;
                        let wait = not_until.wait_time_from(DefaultClock::default().now());
                        ctx.run_later(wait, |actor, ctx| {
                            actor.pump_scheduled = false;
                            actor.pump(ctx);
                        });
                    }
                    return;
                }
            }
            let Some(claim) = self.waiting.pop_front() else {
                return;
            };
            self.in_flight.insert(claim.id);
            let now = Instant::now();
            if now > claim.attempt_by {
                // Held too long behind this destination's earlier attempts:
                // its lease could run out mid-attempt, and another worker
                // claim it too. It goes back to the queue instead.
                self.release(claim, Duration::ZERO, ctx);
                continue;
            }
            match self.breaker.admit(now) {
                Ok(()) => self.attempt(claim, ctx),
                Err(wait) => self.release(claim, wait, ctx),
            }
        }
    }

    fn release(&mut self, claim: Claim, wait: Duration, ctx: &mut Context<Self>) {
        let (pool, worker) = (self.pool.clone(), self.worker_id.clone());
        let until = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        let delivery_id = claim.id;
        let release = async move {
            let client = pool.get().await?;
            deliveries::release(&**client, &worker, &[claim.id], until).await
        };
        ctx.spawn(wrap_future::<_, Self>(release).map(move |released, actor, ctx| {
            if let Err(error) = released {
                tracing::warn!(%error, "Cannot give a delivery back to the queue; its lease will");
            }
            actor.done(delivery_id, ctx);
        }));
    }

    fn attempt(&mut self, claim: Claim, ctx: &mut Context<Self>) {
        let (pool, egress, secrets, worker) = (
            self.pool.clone(),
            self.egress.clone(),
            self.secrets.clone(),
            self.worker_id.clone(),
        );
        let key = self.key.clone();
        let being_read = self
            .reading_destination_since
            .is_some_and(|since| since.elapsed() < DESTINATION_CACHE_TTL);
        let cached = self
            .destination
            .as_ref()
            .filter(|(_, read_at)| being_read || read_at.elapsed() < DESTINATION_CACHE_TTL)
            .map(|(destination, _)| destination.clone());
        let reads = cached.is_none();
        if reads {
            self.reading_destination_since = Some(Instant::now());
        }
        let delivery_id = claim.id;
        let span = tracing::info_span!("delivery", delivery = %claim.id, destination = key.id);
        // No pooled connection is held across the attempt itself: a slow
        // receiver must not starve everyone else of connections.
        let work = async move {
            let (destination, fresh) = match cached {
                Some(destination) => (Some(destination), false),
                None => {
                    let read = Read::get(&pool, &key, &secrets).await?;
                    (read.map(Arc::new), true)
                }
            };
            let outcome = match &destination {
                None => Outcome::permanent("the destination was deleted"),
                Some(destination) if destination.disabled => {
                    // Held, not failed: claims skip a disabled destination's
                    // deliveries, which resume when it is re-enabled.
                    let client = pool.get().await?;
                    deliveries::release(&**client, &worker, &[claim.id], Utc::now()).await?;
                    return Ok(Attempted::Held {
                        destination: destination.clone(),
                        fresh,
                    });
                }
                Some(destination) => match payload(
                    &pool,
                    (claim.body, claim.payload),
                    &claim.organization_id,
                    destination.prepared.host(),
                )
                .await
                {
                    Ok(payload) => {
                        let key = claim.object_key.as_deref();
                        destination
                            .prepared
                            .send(&egress, claim.id, payload, key)
                            .await
                    }
                    Err(BatchError::Database(error)) => return Err(error),
                    Err(unsendable) => Outcome::permanent(&unsendable.to_string()),
                },
            };
            let (status, wait) = retry::decide(
                &outcome,
                claim.retry_count,
                claim.max_retries,
                destination.as_ref().map(|d| d.prepared.retry_waits()),
                retry::jitter(),
            );
            let record = Attempt {
                delivery_id: claim.id,
                organization_id: claim.organization_id.clone(),
                status,
                response_code: outcome.response_code,
                latency_ms: outcome.latency_ms,
                failure_reason: outcome.reason.clone(),
                cross_system_reference: outcome.reference.clone(),
                next_retry_at: wait
                    .map(|wait| Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default()),
            };
            Ok::<_, DbError>(Attempted::Done(Box::new(Done {
                record,
                outcome,
                destination,
                fresh,
            })))
        };
        ctx.spawn(
            wrap_future::<_, Self>(tracing::Instrument::instrument(work, span)).map(
                move |attempted, actor, ctx| actor.attempted(delivery_id, reads, attempted, ctx),
            ),
        );
    }

    /// An attempt's end: the breaker and the health figures learn of it, and
    /// the QueueActor hears what to record.
    fn attempted(
        &mut self,
        delivery_id: Uuid,
        read_destination: bool,
        attempted: Result<Attempted, DbError>,
        ctx: &mut Context<Self>,
    ) {
        if read_destination {
            self.reading_destination_since = None;
        }
        let mut finished = None;
        match attempted {
            Ok(Attempted::Held { destination, fresh }) => {
                // Disabled since this instance last looked: nothing more to do here.
                self.remember(Some(destination), fresh);
                self.retiring = true;
            }
            Ok(Attempted::Done(done)) => {
                let Done {
                    record,
                    outcome,
                    destination,
                    fresh,
                } = *done;
                finished = Some(record);
                let exists = destination.is_some();
                self.remember(destination, fresh);
                let opened = match outcome.verdict {
                    Verdict::Delivered => {
                        self.breaker.succeeded();
                        false
                    }
                    _ => self.breaker.failed(Instant::now()),
                };
                if opened {
                    tracing::warn!(destination = self.key.id, "Circuit breaker opened");
                }
                if exists {
                    self.record_health(&outcome, ctx);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "A delivery attempt could not be made; the lease will retry it")
            }
        }
        self.in_flight.remove(&delivery_id);
        let destination_id = self.key.id;
        match finished {
            Some(attempt) => self.outbox.send(Ended {
                destination_id,
                attempt,
            }),
            None => self.outbox.finished(destination_id),
        }
        self.pump(ctx);
    }

    /// Keeps a freshly read destination for the next attempts, and applies
    /// its settings (the defaults once it is deleted).
    fn remember(&mut self, destination: Option<Arc<Read>>, fresh: bool) {
        if !fresh {
            return;
        }
        let settings = destination.as_ref().map(|d| d.prepared.settings.clone());
        self.apply_settings(settings.unwrap_or_default());
        self.destination = destination.map(|destination| (destination, Instant::now()));
    }

    /// Folds the attempt into the figures reported to the HealthActor at most
    /// every `HEALTH_REPORT_EVERY`: a message per attempt would cross threads
    /// tens of thousands of times a second under load.
    fn record_health(&mut self, outcome: &Outcome, ctx: &mut Context<Self>) {
        let now = Utc::now();
        let batch = self
            .health
            .get_or_insert_with(|| HealthBatch::new(&self.key));
        batch.attempts += 1;
        batch.latency_sum += i64::from(outcome.latency_ms);
        if outcome.verdict == Verdict::Delivered {
            batch.last_success_at = Some(now);
            batch.trailing_failures = 0;
        } else {
            batch.failures += 1;
            batch.last_failure_at = Some(now);
            batch.trailing_failures += 1;
        }
        batch.breaker_state = self.breaker.state().name();
        if !self.health_report_scheduled {
            self.health_report_scheduled = true;
            ctx.run_later(HEALTH_REPORT_EVERY, |actor, _| actor.report_health());
        }
    }

    fn report_health(&mut self) {
        self.health_report_scheduled = false;
        if let Some(batch) = self.health.take() {
            self.health_reports.notify(HealthReport(batch));
        }
    }

    /// New settings from the database: a changed breaker configuration starts a fresh breaker.
    fn apply_settings(&mut self, settings: DeliverySettings) {
        if settings.failure_threshold != self.settings.failure_threshold
            || settings.reset_timeout != self.settings.reset_timeout
        {
            self.breaker = Breaker::new(settings.failure_threshold, settings.reset_timeout);
        }
        if settings.rate_limit_per_second != self.settings.rate_limit_per_second
            || self.limiter.is_none()
        {
            self.limiter = settings
                .rate_limit_per_second
                .and_then(NonZeroU32::new)
                .map(|rate| RateLimiter::direct(Quota::per_second(rate)));
        }
        self.settings = settings;
    }

    fn done(&mut self, delivery_id: Uuid, ctx: &mut Context<Self>) {
        self.in_flight.remove(&delivery_id);
        self.outbox.finished(self.key.id);
        self.pump(ctx);
    }
}

impl Actor for DeliveryActor {
    type Context = Context<Self>;
}

/// The actor is dropped with its context: once it stopped, holding no claim,
/// or as a panic unwinds its handler, or with its thread. In the last two, the
/// claims it held, waiting or mid-attempt, will never be attempted or
/// recorded here: the QueueActor hears of them, or it would count them in
/// flight for ever (and keep their rows, which it never claims again).
impl Drop for DeliveryActor {
    fn drop(&mut self) {
        let held: Vec<Uuid> = (self.in_flight.drain())
            .chain(self.waiting.drain(..).map(|claim| claim.id))
            .collect();
        if !held.is_empty() {
            self.outbox.abandoned(self.key.id, held);
        }
    }
}

impl Handler<Retire> for DeliveryActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        tracing::info!(
            destination = self.key.id,
            "Stopping the delivery actor of a disabled or deleted destination"
        );
        self.retiring = true;
        self.pump(ctx);
    }
}

impl Handler<Deliver> for DeliveryActor {
    type Result = ();

    fn handle(&mut self, Deliver(claims): Deliver, ctx: &mut Self::Context) {
        self.waiting.extend(claims);
        // Stable; close to linear on what it mostly gets: rows in order, then
        // a claim's rows in table order (about the order they were queued).
        self.waiting
            .make_contiguous()
            .sort_by(|a, b| b.priority.cmp(&a.priority).then(a.due.cmp(&b.due)));
        self.pump(ctx);
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::cache::QueryCache;
    use crate::clock::SystemClock;
    use crate::config::Config;
    use crate::deliveries::body::BodyShape;
    use crate::error_tracking::ErrorTracker;
    use crate::integrity::keys::IntegrityKeys;
    use crate::metrics::Metrics;
    use crate::redis_conn::RedisConnection;
    use crate::shared::Shared;
    use crate::supervisor::SupervisorBuilder;

    /// What the fake queue heard back about its claims.
    #[derive(Default)]
    struct Heard {
        recorded: Vec<Uuid>,
        finished: usize,
        abandoned: Vec<Uuid>,
    }

    /// Stands in for the QueueActor: keeps what the outbox reports.
    struct Queue(Arc<Mutex<Heard>>);

    impl Actor for Queue {
        type Context = Context<Self>;
    }

    impl Handler<Record> for Queue {
        type Result = ();

        fn handle(&mut self, Record(ended): Record, _: &mut Self::Context) {
            let mut heard = self.0.lock().unwrap();
            heard
                .recorded
                .extend(ended.iter().map(|ended| ended.attempt.delivery_id));
        }
    }

    impl Handler<Finished> for Queue {
        type Result = ();

        fn handle(&mut self, _: Finished, _: &mut Self::Context) {
            self.0.lock().unwrap().finished += 1;
        }
    }

    impl Handler<Abandoned> for Queue {
        type Result = ();

        fn handle(&mut self, abandoned: Abandoned, _: &mut Self::Context) {
            assert_eq!(abandoned.destination_id, 7);
            self.0
                .lock()
                .unwrap()
                .abandoned
                .extend(abandoned.deliveries);
        }
    }

    /// Makes the actor's handler panic, as a bug would.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Panic;

    impl Handler<Panic> for DeliveryActor {
        type Result = ();

        fn handle(&mut self, _: Panic, _: &mut Self::Context) {
            panic!("a DeliveryActor's handler panicked (on purpose, in a test)");
        }
    }

    fn claim(destination_id: i64) -> Claim {
        Claim {
            id: Uuid::now_v7(),
            destination_id,
            organization_id: "org".to_owned(),
            payload: "{}".to_owned(),
            retry_count: 0,
            max_retries: 3,
            priority: 0,
            due: Utc::now(),
            object_key: None,
            body: BodyShape::Document,
            attempt_by: Instant::now() + Duration::from_secs(60),
        }
    }

    /// What the actors share, over a pool that has not connected yet: the
    /// keys are given, so nothing reads them from the database.
    async fn shared_without_database(config: Config) -> Shared {
        let pool = crate::db::pool(&config.database);
        let metrics = Arc::new(Metrics::new());
        let redis = RedisConnection::new(&config.redis).unwrap();
        let keys = IntegrityKeys::new([1; 32], &[2; 32]);
        let config = Arc::new(config);
        Shared {
            live: tokio::sync::watch::channel(config.clone()).1,
            cache: Arc::new(QueryCache::new(&config, redis.clone(), metrics.clone())),
            errors: ErrorTracker::new(10, 1, metrics.clone()),
            clock: Arc::new(SystemClock),
            keys: Arc::new(keys),
            archives: Arc::new(crate::archive_store::ArchiveStore::open(&config.archive, 3).await),
            key_uses: Arc::default(),
            config,
            pool,
            redis,
            metrics,
        }
    }

    /// A DeliveryActor that dies while it holds claims (one attempt under
    /// way, one waiting its turn) leaves no claim counted for ever: whoever
    /// gave them out hears of every one. Its attempt hangs on a database that
    /// accepts connections and never answers, so the actor is sure to hold
    /// both claims when it panics.
    #[actix::test]
    async fn a_delivery_actor_that_dies_holding_claims_hands_them_all_back() {
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config = Config::defaults();
        config.database.url = format!(
            "postgres://postgres@{}/silent",
            silent.local_addr().unwrap()
        )
        .parse()
        .unwrap();
        config.database.connect_timeout = Duration::from_secs(60);
        let shared = shared_without_database(config.clone()).await;
        let health = SupervisorBuilder::new(config.supervisor.clone(), shared.metrics.clone())
            .supervise("health", move || HealthActor::new(&shared));
        let heard = Arc::new(Mutex::new(Heard::default()));
        let queue = Queue(heard.clone()).start();
        let outbox = Outbox::new(
            queue.clone().recipient(),
            queue.clone().recipient(),
            queue.recipient(),
        );
        let egress = Egress::new(config.delivery.network_policy(), "test").unwrap();
        let pool = crate::db::pool(&config.database);
        let deliveries = Arbiter::new();
        let actor = DeliveryActor::start_in_arbiter(&deliveries.handle(), move |_| {
            DeliveryActor::new(
                DestinationKey {
                    organization_id: "org".to_owned(),
                    id: 7,
                },
                pool,
                egress,
                Arc::new(SecretBox::new(&crate::secrets::KeyRing::single([1; 32]))),
                outbox,
                health,
                "worker-test".to_owned(),
            )
        });

        let claims = vec![claim(7), claim(7)];
        let mut held: Vec<Uuid> = claims.iter().map(|claim| claim.id).collect();
        actor.send(Deliver(claims)).await.unwrap();
        assert!(
            actor.send(Panic).await.is_err(),
            "the actor died in its handler"
        );

        let waited = Instant::now();
        loop {
            let (back, mut abandoned) = {
                let heard = heard.lock().unwrap();
                let back = heard.recorded.len() + heard.finished + heard.abandoned.len();
                (back, heard.abandoned.clone())
            };
            if back == 2 {
                abandoned.sort();
                held.sort();
                assert_eq!(
                    abandoned, held,
                    "both come back as abandoned, to go back to the queue"
                );
                break;
            }
            assert!(
                waited.elapsed() < Duration::from_secs(5),
                "{back} of the 2 claims the dead actor held came back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        deliveries.stop();
    }
}
