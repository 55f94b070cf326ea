//! DeliveryActor: one per destination. It performs that destination's claimed
//! deliveries with its own concurrency limit, optional rate limit and circuit
//! breaker, so a broken
//! destination only ever holds up its own deliveries. Each attempt is recorded
//! (`delivery_logs`, `destination_health`); a retryable failure is rescheduled
//! with backoff, a permanent one or the last retry is dead-lettered (`failed`).
//! While the breaker is open, or the destination is disabled, claims go back
//! to the queue without using a retry.

use std::collections::VecDeque;
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
use super::queue::QueueActor;
use crate::breaker::Breaker;
use crate::db::deliveries::{self, Attempt, Claim};
use crate::db::destinations::{self, Destination, HealthBatch};
use crate::db::{DbError, PgPool};
use crate::delivery::config::{DeliverySettings, DestinationConfig};
use crate::delivery::crypto::SecretBox;
use crate::delivery::egress::{Egress, EgressError};
use crate::delivery::email::EmailConfig;
use crate::delivery::ftp::FtpConfig;
use crate::delivery::retry::{self, Verdict};
use crate::delivery::s3::S3Config;
use crate::delivery::webhook;
use crate::delivery::{email, ftp, s3};
use crate::messages::delivery::{Deliver, Ended, Finished, HealthReport, Record, Retire};
use crate::supervisor::ActorHandle;

pub struct DeliveryActor {
    destination_id: i64,
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
    destination: Option<(Arc<Prepared>, Instant)>,
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
    in_flight: u32,
    /// Claimed and not attempted yet, best first: highest priority, then
    /// earliest due. A claim's rows come back in table order, and a later
    /// claim may bring rows that go before those already waiting.
    waiting: VecDeque<Claim>,
    /// Told to stop (the destination is disabled or deleted): claims go back
    /// to the queue, and the actor stops once its attempts have ended.
    retiring: bool,
}

/// The ended attempts of all the DeliveryActors, on their way to the
/// QueueActor (on another thread) as one [`Record`] message per turn of the
/// DeliveryActors' thread: the first attempt to end schedules the message,
/// behind whatever else is ready on the thread, so it takes every attempt
/// that ends meanwhile and waits for no timer. A message per attempt woke the
/// QueueActor's thread once per delivery, tens of thousands of times a second
/// under load; in the delivery bench a message now carries about 3 attempts
/// with 1 destination, 6 with 10 and 18 with 100. The message is sent by a
/// task of the thread, not of the actor whose attempt scheduled it, so an
/// actor that stops meanwhile loses nothing. The lock is never contended: the
/// DeliveryActors share one thread.
#[derive(Clone)]
pub struct Outbox {
    waiting: Arc<Mutex<Vec<Ended>>>,
    queue: Addr<QueueActor>,
}

impl Outbox {
    pub fn new(queue: Addr<QueueActor>) -> Self {
        Self {
            waiting: Arc::default(),
            queue,
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
                outbox.queue.do_send(Record(ended));
            });
        }
    }

    /// Tells the QueueActor at once that a claim ended without an attempt to
    /// record (it was given back, or its attempt could not be made).
    fn finished(&self, destination_id: i64) {
        self.queue.do_send(Finished { destination_id });
    }
}

/// How long a read destination (config, settings, disabled flag) is reused.
const DESTINATION_CACHE_TTL: Duration = Duration::from_secs(1);
/// How often the attempts' figures are reported to the HealthActor.
const HEALTH_REPORT_EVERY: Duration = Duration::from_millis(500);

/// A destination as read, with what every attempt needs worked out once:
/// its settings, and how to send to it.
struct Prepared {
    destination: Destination,
    settings: DeliverySettings,
    /// Or why the stored config cannot be used (every attempt fails with it).
    sender: Result<Sender, String>,
}

impl Prepared {
    fn new(destination: Destination, secrets: &SecretBox) -> Self {
        let settings = DeliverySettings::parse(Some(&destination.settings)).unwrap_or_default();
        let sender = DestinationConfig::unsealed(&destination.kind, &destination.config, secrets)
            .map_err(|error| error.to_string())
            .and_then(Sender::new);
        Self {
            destination,
            settings,
            sender,
        }
    }
}

/// A destination's config with its secrets opened; a webhook's requests are
/// worked out too (see [`webhook::Target`]), as every attempt sends one.
enum Sender {
    Webhook(webhook::Target),
    Email(EmailConfig),
    S3(S3Config),
    Ftp(FtpConfig),
}

impl Sender {
    fn new(config: DestinationConfig) -> Result<Self, String> {
        Ok(match config {
            DestinationConfig::Webhook(config) => Self::Webhook(webhook::Target::new(&config)?),
            DestinationConfig::Email(config) => Self::Email(config),
            DestinationConfig::S3(config) => Self::S3(config),
            DestinationConfig::Ftp(config) => Self::Ftp(config),
        })
    }
}

/// What an attempt's future hands back to the actor.
enum Attempted {
    /// The destination is disabled: the claim went back to the queue.
    Held {
        destination: Arc<Prepared>,
        fresh: bool,
    },
    Done(Box<Done>),
}

struct Done {
    record: Attempt,
    outcome: Outcome,
    /// `None`: the destination was deleted.
    destination: Option<Arc<Prepared>>,
    fresh: bool,
}

/// What one attempt came to.
struct Outcome {
    verdict: Verdict,
    response_code: Option<i32>,
    latency_ms: i32,
    reason: Option<String>,
    reference: Option<String>,
    /// The receiver asked for (or showed it needs) a pause at least this long.
    wait_at_least: Option<Duration>,
}

impl DeliveryActor {
    pub fn new(
        destination_id: i64,
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
            destination_id,
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
            in_flight: 0,
            waiting: VecDeque::new(),
            retiring: false,
        }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.retiring {
            while let Some(claim) = self.waiting.pop_front() {
                self.in_flight += 1;
                self.release(claim, Duration::ZERO, ctx);
            }
            if self.in_flight == 0 {
                ctx.stop();
            }
            return;
        }
        while self.in_flight < self.settings.concurrency && !self.waiting.is_empty() {
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
            self.in_flight += 1;
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
        let release = async move {
            let client = pool.get().await?;
            deliveries::release(&*client, &worker, claim.id, until).await
        };
        ctx.spawn(wrap_future::<_, Self>(release).map(|released, actor, ctx| {
            if let Err(error) = released {
                tracing::warn!(%error, "Cannot give a delivery back to the queue; its lease will");
            }
            actor.done(ctx);
        }));
    }

    fn attempt(&mut self, claim: Claim, ctx: &mut Context<Self>) {
        let (pool, egress, secrets, worker) = (
            self.pool.clone(),
            self.egress.clone(),
            self.secrets.clone(),
            self.worker_id.clone(),
        );
        let destination_id = self.destination_id;
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
        let span =
            tracing::info_span!("delivery", delivery = %claim.id, destination = destination_id);
        // No pooled connection is held across the attempt itself: a slow
        // receiver must not starve everyone else of connections.
        let work = async move {
            let (destination, fresh) = match cached {
                Some(destination) => (Some(destination), false),
                None => {
                    let client = pool.get().await?;
                    let read = destinations::get(&*client, None, destination_id).await?;
                    (read.map(|d| Arc::new(Prepared::new(d, &secrets))), true)
                }
            };
            let outcome = match &destination {
                None => Outcome::permanent("the destination was deleted"),
                Some(destination) if destination.destination.disabled => {
                    // Held, not failed: claims skip a disabled destination's
                    // deliveries, which resume when it is re-enabled.
                    let client = pool.get().await?;
                    deliveries::release(&*client, &worker, claim.id, Utc::now()).await?;
                    return Ok(Attempted::Held {
                        destination: destination.clone(),
                        fresh,
                    });
                }
                Some(destination) => {
                    perform(&egress, &destination.sender, claim.id, claim.payload).await
                }
            };
            let status = match outcome.verdict {
                Verdict::Delivered => "delivered",
                Verdict::Retryable if (claim.retry_count as usize) < claim.max_retries as usize => {
                    "retrying"
                }
                _ => "failed",
            };
            let next_retry_at = (status == "retrying")
                .then(|| {
                    // `Retryable` only comes from an existing destination.
                    let waits = destination.as_ref().map(|d| d.settings.retry_waits());
                    retry::next_wait(
                        &waits.unwrap_or_default(),
                        claim.retry_count as usize + 1,
                        outcome.wait_at_least,
                    )
                })
                .flatten()
                .map(|wait| Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default());
            // An exhausted schedule (shorter than max_retries) ends it too.
            let status = if status == "retrying" && next_retry_at.is_none() {
                "failed"
            } else {
                status
            };
            let record = Attempt {
                delivery_id: claim.id,
                status,
                response_code: outcome.response_code,
                latency_ms: outcome.latency_ms,
                failure_reason: outcome.reason.clone(),
                cross_system_reference: outcome.reference.clone(),
                next_retry_at,
            };
            Ok::<_, DbError>(Attempted::Done(Box::new(Done {
                record,
                outcome,
                destination,
                fresh,
            })))
        };
        ctx.spawn(wrap_future::<_, Self>(tracing::Instrument::instrument(work, span)).map(
            move |result, actor, ctx| {
                if reads {
                    actor.reading_destination_since = None;
                }
                let mut finished = None;
                match result {
                    Ok(Attempted::Held { destination, fresh }) => {
                        // Disabled since this instance last looked: nothing more to do here.
                        actor.remember(Some(destination), fresh);
                        actor.retiring = true;
                    }
                    Ok(Attempted::Done(done)) => {
                        let Done { record, outcome, destination, fresh } = *done;
                        finished = Some(record);
                        let exists = destination.is_some();
                        actor.remember(destination, fresh);
                        let opened = match outcome.verdict {
                            Verdict::Delivered => {
                                actor.breaker.succeeded();
                                false
                            }
                            _ => actor.breaker.failed(Instant::now()),
                        };
                        if opened {
                            tracing::warn!(destination = actor.destination_id, "Circuit breaker opened");
                        }
                        if exists {
                            actor.record_health(&outcome, ctx);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "A delivery attempt could not be made; the lease will retry it")
                    }
                }
                actor.in_flight -= 1;
                let destination_id = actor.destination_id;
                match finished {
                    Some(attempt) => actor.outbox.send(Ended { destination_id, attempt }),
                    None => actor.outbox.finished(destination_id),
                }
                actor.pump(ctx);
            },
        ));
    }

    /// Keeps a freshly read destination for the next attempts, and applies
    /// its settings (the defaults once it is deleted).
    fn remember(&mut self, destination: Option<Arc<Prepared>>, fresh: bool) {
        if !fresh {
            return;
        }
        let settings = destination.as_ref().map(|d| d.settings.clone());
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
            .get_or_insert_with(|| HealthBatch::new(self.destination_id));
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

    fn done(&mut self, ctx: &mut Context<Self>) {
        self.in_flight -= 1;
        self.outbox.finished(self.destination_id);
        self.pump(ctx);
    }
}

impl Outcome {
    fn permanent(reason: &str) -> Self {
        Outcome {
            verdict: Verdict::Permanent,
            response_code: None,
            latency_ms: 0,
            reason: Some(reason.to_owned()),
            reference: None,
            wait_at_least: None,
        }
    }
}

/// Time limit of one SMTP, S3 or FTP attempt.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// One attempt against the destination, whatever its kind. `payload` is
/// the stored JSON text: a webhook posts it as it is; the other kinds write
/// it out indented, for people to read.
async fn perform(
    egress: &Egress,
    sender: &Result<Sender, String>,
    id: Uuid,
    payload: String,
) -> Outcome {
    let sender = match sender {
        Ok(sender) => sender,
        Err(error) => return Outcome::permanent(error),
    };
    let started = Instant::now();
    let sent = match sender {
        Sender::Webhook(target) => {
            return send_webhook(egress, target, id, payload.into_bytes()).await
        }
        Sender::Email(config) => email::send(config, egress, id, &payload, TRANSFER_TIMEOUT).await,
        Sender::S3(config) => s3::send(config, egress, id, &payload, TRANSFER_TIMEOUT).await,
        Sender::Ftp(config) => ftp::send(config, egress, id, &payload, TRANSFER_TIMEOUT).await,
    };
    Outcome {
        verdict: sent.verdict,
        response_code: sent.code,
        latency_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
        reason: sent.reason,
        reference: sent.reference,
        wait_at_least: None,
    }
}

/// Posts the payload, signed; the `webhook-id` is the delivery's id, the same
/// on every retry, so the receiver can drop duplicates. A host the network
/// policy refuses fails the attempt for good, before or while connecting.
async fn send_webhook(
    egress: &Egress,
    target: &webhook::Target,
    id: Uuid,
    body: Vec<u8>,
) -> Outcome {
    // reqwest connects to a literal address without asking the resolver.
    if let Err(refused) = egress.check_url(&target.url) {
        return Outcome::permanent(&refused.to_string());
    }
    let http = egress.http();
    let message_id = format!("msg_{}", id.simple());
    let timestamp = Utc::now().timestamp();
    let signature = target.signer.header(&message_id, timestamp, &body);
    let body = bytes::Bytes::from(body);
    // Built again only for a second try.
    let request = || {
        http.request(target.method.clone(), target.url.clone())
            .timeout(target.timeout)
            .headers(target.headers.clone())
            .header("webhook-id", &message_id)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", &signature)
            .body(body.clone())
    };
    let started = Instant::now();
    let mut response = request().send().await;
    if let Err(error) = &response {
        // From the resolver (the name now points inside) or a redirect.
        if let Some(refused) = EgressError::refusal_in(error) {
            return Outcome {
                latency_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
                ..Outcome::permanent(&refused.to_string())
            };
        }
        if broke_on_open_connection(error) {
            response = request().send().await;
        }
    }
    let latency_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
    match response {
        Ok(response) => {
            let code = response.status().as_u16();
            let verdict = retry::verdict_for_status(code);
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let wait_at_least = match code {
                429 => Some(
                    retry_after
                        .unwrap_or(retry::MIN_WAIT_AFTER_OVERLOAD)
                        .max(retry::MIN_WAIT_AFTER_OVERLOAD),
                ),
                _ => retry_after,
            };
            let reference = response
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Outcome {
                verdict,
                response_code: Some(i32::from(code)),
                latency_ms,
                reason: (verdict != Verdict::Delivered)
                    .then(|| format!("the receiver answered {code}")),
                reference,
                wait_at_least,
            }
        }
        Err(error) => Outcome {
            verdict: Verdict::Retryable,
            response_code: None,
            latency_ms,
            reason: Some(if error.is_timeout() {
                format!("no answer within {} ms", target.timeout.as_millis())
            } else {
                format!("cannot reach the receiver: {error}")
            }),
            reference: None,
            wait_at_least: error.is_timeout().then_some(retry::MIN_WAIT_AFTER_OVERLOAD),
        },
    }
}

/// The request failed on a connection that was open, rather than timing out
/// or failing to connect: most often a keep-alive connection the receiver
/// closed as it was taken from the pool (its idle timeout racing ours: Node,
/// actix-web and Apache close idle connections after 5 s, gunicorn after 2 s).
/// Such a request gets one more try at once, on another connection, where a
/// retry would wait out the backoff (seconds). Its `webhook-id` is the same,
/// so a receiver that did get the first one drops the repeat.
fn broke_on_open_connection(error: &reqwest::Error) -> bool {
    !(error.is_timeout() || error.is_connect() || error.is_builder())
}

impl Actor for DeliveryActor {
    type Context = Context<Self>;
}

impl Handler<Retire> for DeliveryActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        tracing::info!(
            destination = self.destination_id,
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
