//! QueueActor: claims due deliveries from `delivery_queue` (`FOR UPDATE SKIP
//! LOCKED`, with a lease), one organization at a time among those of its
//! destinations, and hands each to its destination's DeliveryActor.
//! It runs one DeliveryActor per active destination: started at start-up and
//! when a destination is created or re-enabled, retired when it is disabled or
//! deleted (at once for changes made through this worker, within
//! `RECONCILE_EVERY` for those made elsewhere), and started again if one died
//! (whose claims come back as [`Abandoned`]). What it holds, and so how much
//! it may claim, is counted in `capacity`. `LISTEN` wakes it as soon as work
//! is enqueued; a poll every `delivery.poll_interval` is the fallback (and
//! picks up retries and expired leases).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

use self::capacity::{Capacity, ClaimPlan};
use super::delivery::{DeliveryActor, Outbox};
use super::health::HealthActor;
use crate::config::{Config, DeliveryConfig};
use crate::db::deliveries::{Attempt, Bookkeeper, Claim};
use crate::db::destinations::DestinationKey;
use crate::db::{self, deliveries, destinations, DbError, PgPool};
use crate::deliveries::crypto::SecretBox;
use crate::deliveries::egress::Egress;
use crate::messages::delivery::{
    Abandoned, Deliver, DestinationsChanged, Ended, Finished, Record, Retire,
};
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::supervisor::ActorHandle;

mod capacity;

/// How often the running DeliveryActors are matched against the active
/// destinations, for changes made through other worker instances.
const RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// Wait before writing attempts again after a failed write.
const RECORD_RETRY: Duration = Duration::from_secs(1);
/// Attempts are written once this many wait, or `RECORD_DELAY` after the
/// first of them: each write has a fixed cost in PostgreSQL, which a larger
/// batch shares among more attempts (figures in `benches/README.md`).
const RECORD_BATCH: usize = 256;
const RECORD_DELAY: Duration = Duration::from_millis(10);

pub struct QueueActor {
    pool: PgPool,
    /// The connections claims and records go through, one each so that they
    /// overlap; taken by the claim or write under way, and opened again when
    /// lost.
    claimer: Option<Bookkeeper>,
    recorder: Option<Bookkeeper>,
    config: Arc<Config>,
    secrets: Arc<SecretBox>,
    /// The DeliveryActors' connections, held to the network policy.
    egress: Egress,
    metrics: Arc<Metrics>,
    /// Where the DeliveryActors report their attempts' figures.
    health: ActorHandle<HealthActor>,
    /// Names this instance's claims, so only it can finish them.
    worker_id: String,
    /// What this worker holds, and so how much it may claim.
    capacity: Capacity,
    claiming: bool,
    /// Woken while a claim was running: claim again when it ends, or the new
    /// work would wait for the next poll.
    woken_while_claiming: bool,
    /// The next [`WakeAt`], waiting for its time.
    timed_wake: Option<(DateTime<Utc>, SpawnHandle)>,
    /// The running DeliveryActors, by destination id.
    actors: HashMap<i64, Deliverer>,
    /// Where the next claim starts in the organizations' turn, so that none
    /// is always claimed for last.
    next_organization: usize,
    /// Where the DeliveryActors run: a thread of their own, so attempts
    /// (HTTP and TLS work, responses) go on while this actor decodes claims
    /// and writes records. Stopped with the actor.
    deliveries: Arbiter,
    /// How the DeliveryActors' ended attempts come back, in batches.
    outbox: Option<Outbox>,
    /// Attempts waiting to be written, and whether a write is under way: one
    /// write at a time, each taking all that wait (group commit), once a batch
    /// is full or `RECORD_DELAY` after the first.
    to_record: Vec<Attempt>,
    recording: bool,
    /// Writes `to_record` once `RECORD_DELAY` has passed, if no full batch has by then.
    record_timer: Option<SpawnHandle>,
}

impl QueueActor {
    pub fn new(
        shared: &Shared,
        secrets: Arc<SecretBox>,
        egress: Egress,
        health: ActorHandle<HealthActor>,
    ) -> Self {
        let config = shared.config.clone();
        let capacity = Capacity::new(
            config.delivery.max_in_flight,
            config.delivery.max_in_flight_per_destination,
        );
        Self {
            pool: shared.pool.clone(),
            claimer: None,
            recorder: None,
            config,
            secrets,
            egress,
            metrics: shared.metrics.clone(),
            health,
            worker_id: format!("worker-{}", uuid::Uuid::new_v4()),
            capacity,
            claiming: false,
            woken_while_claiming: false,
            timed_wake: None,
            actors: HashMap::new(),
            next_organization: 0,
            deliveries: Arbiter::new(),
            outbox: None,
            to_record: Vec::new(),
            recording: false,
            record_timer: None,
        }
    }

    fn settings(&self) -> &DeliveryConfig {
        &self.config.delivery
    }

    /// Claims because work may have come (a `NOTIFY` or the poll): if a claim
    /// is under way, another follows it, as it may have missed the new work.
    fn claim(&mut self, ctx: &mut Context<Self>) {
        if self.claiming {
            self.woken_while_claiming = true;
            return;
        }
        let Some(plan) = self.capacity.plan() else {
            return;
        };
        let organizations = self.organizations_in_turn();
        if organizations.is_empty() {
            return;
        }
        self.claiming = true;
        let (connection, config, worker, lease) = (
            self.claimer.take(),
            self.config.clone(),
            self.worker_id.clone(),
            self.settings().lease,
        );
        let claim = async move {
            let connection = Bookkeeper::reuse_or_connect(connection, &config.database).await?;
            let mut claims = Vec::new();
            let mut failure = None;
            for organization_id in &organizations {
                let room = plan.limit.saturating_sub(claims.len());
                if room == 0 {
                    break;
                }
                let held = plan.held();
                match connection
                    .claim(organization_id, &worker, lease, room as i64, &held)
                    .await
                {
                    Ok(claimed) => claims.extend(claimed),
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            Ok::<_, DbError>((connection, claims, failure, plan))
        };
        ctx.spawn(
            wrap_future::<_, Self>(claim).map(move |claimed, actor, ctx| {
                actor.claiming = false;
                match claimed {
                    Ok((connection, claims, failure, plan)) => {
                        actor.claimer = Some(connection);
                        if let Some(error) = failure {
                            tracing::warn!(%error, "Cannot claim deliveries");
                        }
                        // What was claimed before a failure is leased to this worker: deliver it.
                        actor.hand_out(claims, &plan, ctx);
                    }
                    Err(error) => tracing::warn!(%error, "Cannot claim deliveries"),
                }
            }),
        );
    }

    /// The organizations of the running DeliveryActors, each once, starting
    /// one further on than the claim before. A claim names one organization
    /// (see [`deliveries::CLAIM`]): with Citus, each runs on that
    /// organization's node.
    fn organizations_in_turn(&mut self) -> Vec<String> {
        let mut organizations: Vec<String> = self
            .actors
            .values()
            .map(|deliverer| deliverer.organization_id.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !organizations.is_empty() {
            let start = self.next_organization % organizations.len();
            organizations.rotate_left(start);
            self.next_organization = start + 1;
        }
        organizations
    }

    /// Gives each destination's actor its claimed deliveries, then claims
    /// again if the claim may have left some behind.
    fn hand_out(&mut self, claims: Vec<Claim>, plan: &ClaimPlan, ctx: &mut Context<Self>) {
        let mut by_destination: HashMap<i64, Vec<Claim>> = HashMap::new();
        for claim in claims {
            by_destination
                .entry(claim.destination_id)
                .or_default()
                .push(claim);
        }
        let again = self.capacity.claimed(
            plan,
            by_destination
                .iter()
                .map(|(destination_id, claims)| (*destination_id, claims.len())),
        );
        for (destination_id, claims) in by_destination {
            let key = DestinationKey {
                organization_id: claims[0].organization_id.clone(),
                id: destination_id,
            };
            self.deliverer(&key).do_send(Deliver(claims));
        }
        if std::mem::take(&mut self.woken_while_claiming) {
            ctx.notify(Wake);
        } else if again {
            self.claim(ctx);
        }
    }

    /// Claims because room freed up, unless a claim is under way (its end
    /// looks at the room again).
    fn top_up(&mut self, ctx: &mut Context<Self>) {
        if !self.claiming {
            self.claim(ctx);
        }
    }

    /// Writes the waiting attempts if a batch is full, else makes sure they
    /// are written within `RECORD_DELAY`.
    fn record(&mut self, ctx: &mut Context<Self>) {
        if self.to_record.len() < RECORD_BATCH {
            if self.record_timer.is_none() && !self.to_record.is_empty() {
                self.record_timer = Some(ctx.run_later(RECORD_DELAY, |actor, ctx| {
                    actor.record_timer = None;
                    actor.write_records(ctx);
                }));
            }
            return;
        }
        self.write_records(ctx);
    }

    /// Writes every waiting attempt in one statement, unless a write is under
    /// way (its end calls [`QueueActor::record`] again).
    fn write_records(&mut self, ctx: &mut Context<Self>) {
        if self.recording || self.to_record.is_empty() {
            return;
        }
        if let Some(timer) = self.record_timer.take() {
            ctx.cancel_future(timer);
        }
        self.recording = true;
        let batch: Vec<Attempt> = std::mem::take(&mut self.to_record);
        let (connection, config, worker) = (
            self.recorder.take(),
            self.config.clone(),
            self.worker_id.clone(),
        );
        let write = async move {
            let written = match Bookkeeper::reuse_or_connect(connection, &config.database).await {
                Ok(connection) => {
                    let written = connection.finish_many(&worker, &batch).await;
                    (Some(connection), written)
                }
                Err(error) => (None, Err(error)),
            };
            (batch, written)
        };
        ctx.spawn(wrap_future::<_, Self>(write).map(move |(batch, (connection, written)), actor, ctx| {
            actor.recording = false;
            actor.recorder = connection;
            match written {
                Ok(()) => {
                    let freed = actor.capacity.recorded(batch.len());
                    actor.record(ctx);
                    if freed {
                        actor.top_up(ctx);
                    }
                }
                Err(error) => {
                    // The attempts were made: keep them and write them once
                    // PostgreSQL answers again (their claims stay in flight).
                    tracing::warn!(%error, "Cannot record delivery attempts; trying again shortly");
                    actor.to_record.splice(0..0, batch);
                    ctx.run_later(RECORD_RETRY, |actor, ctx| actor.write_records(ctx));
                }
            }
        }));
    }

    /// Matches the running DeliveryActors to the active destinations: starts
    /// the missing ones, retires those of destinations no longer active.
    fn reconcile(&self) -> impl ActorFuture<Self, Output = ()> {
        let pool = self.pool.clone();
        let active = async move {
            let client = pool.get().await?;
            destinations::active(&**client).await
        };
        wrap_future::<_, Self>(active).map(|active, actor, ctx| {
            let active = match active {
                Ok(active) => active,
                Err(error) => {
                    tracing::warn!(%error, "Cannot read the active destinations");
                    return;
                }
            };
            let ids: HashSet<i64> = active.iter().map(|key| key.id).collect();
            actor.actors.retain(|id, deliverer| {
                let keep = ids.contains(id) && deliverer.address.connected();
                if !keep {
                    deliverer.address.do_send(Retire);
                }
                keep
            });
            let running = actor.actors.len();
            for key in &active {
                actor.deliverer(key);
            }
            if actor.actors.len() > running {
                // Claims are made for the organizations of running actors:
                // new ones may have work waiting already.
                ctx.notify(Wake);
            }
            actor
                .metrics
                .deliveries
                .actors
                .set(actor.actors.len() as i64);
        })
    }

    /// Reconciles now, then `RECONCILE_EVERY` after each round ends, so that
    /// a slow round is never overlapped by the next.
    fn reconcile_regularly(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(self.reconcile().map(|(), _, ctx| {
            ctx.run_later(RECONCILE_EVERY, |actor, ctx| actor.reconcile_regularly(ctx));
        }));
    }

    /// The destination's actor, started (again) if needed.
    fn deliverer(&mut self, key: &DestinationKey) -> Addr<DeliveryActor> {
        let alive = self
            .actors
            .get(&key.id)
            .map(|deliverer| &deliverer.address)
            .filter(|address| address.connected())
            .cloned();
        alive.unwrap_or_else(|| {
            let actor = DeliveryActor::new(
                key.clone(),
                self.pool.clone(),
                self.egress.clone(),
                self.secrets.clone(),
                self.outbox
                    .clone()
                    .expect("the outbox is made as the actor starts"),
                self.health.clone(),
                self.worker_id.clone(),
            );
            let actor = DeliveryActor::start_in_arbiter(&self.deliveries.handle(), |_| actor);
            let deliverer = Deliverer {
                organization_id: key.organization_id.clone(),
                address: actor.clone(),
            };
            self.actors.insert(key.id, deliverer);
            self.metrics.deliveries.actors.set(self.actors.len() as i64);
            actor
        })
    }
}

/// A running DeliveryActor, and the organization of its destination.
struct Deliverer {
    organization_id: String,
    address: Addr<DeliveryActor>,
}

/// Look for due deliveries now: sent by the LISTEN task on each `NOTIFY`
/// (and once it listens), and after a claim that was woken meanwhile.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Wake;

/// Look for due deliveries at this time: sent for a `NOTIFY` of deliveries
/// due later. Only the earliest such time waits; the poll covers the rest.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct WakeAt(DateTime<Utc>);

/// The fallback poll: claims whatever is due (retries, expired leases, work
/// whose `NOTIFY` was missed). The handler re-arms it; it never overlaps a
/// claim, as [`QueueActor::claim`] lets one run at a time.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Poll;

/// Forwards `NOTIFY`s on the delivery channel as [`Wake`]s; reconnects after a
/// lost connection. Runs inside the actor's context, so it ends with the actor.
async fn listen(config: Arc<Config>, queue: Addr<QueueActor>) {
    loop {
        match db::connect_raw(&config.database).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                // The connection must be polled for LISTEN to complete: drive both.
                let mut listening = std::pin::pin!(deliveries::listen(&client));
                let mut ready = false;
                loop {
                    tokio::select! {
                        done = &mut listening, if !ready => {
                            if done.is_err() { break; }
                            ready = true;
                            queue.do_send(Wake);
                        }
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(notification))) => {
                                match deliveries::due_of(notification.payload()) {
                                    Some(due) => queue.do_send(WakeAt(due)),
                                    None => queue.do_send(Wake),
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break,
                        },
                    }
                }
                tracing::warn!("Lost the delivery LISTEN connection; polling until it is back");
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot LISTEN for deliveries; polling until it is back")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let queue = ctx.address();
        self.outbox = Some(Outbox::new(
            queue.clone().recipient(),
            queue.clone().recipient(),
            queue.recipient(),
        ));
        ctx.spawn(wrap_future(listen(self.config.clone(), ctx.address())));
        self.reconcile_regularly(ctx);
        ctx.notify(Poll);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.deliveries.stop();
    }
}

impl Handler<DestinationsChanged> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: DestinationsChanged, ctx: &mut Self::Context) {
        ctx.spawn(self.reconcile());
    }
}

impl Handler<Wake> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.capacity.woken();
        self.claim(ctx);
    }
}

impl Handler<WakeAt> for QueueActor {
    type Result = ();

    fn handle(&mut self, WakeAt(due): WakeAt, ctx: &mut Self::Context) {
        let Ok(wait) = (due - Utc::now()).to_std() else {
            // Due already.
            self.capacity.woken();
            self.claim(ctx);
            return;
        };
        if self.timed_wake.as_ref().is_some_and(|(at, _)| *at <= due) {
            return;
        }
        if let Some((_, earlier)) = self.timed_wake.take() {
            ctx.cancel_future(earlier);
        }
        let wake = ctx.run_later(wait, |actor, ctx| {
            actor.timed_wake = None;
            actor.capacity.woken();
            actor.claim(ctx);
        });
        self.timed_wake = Some((due, wake));
    }
}

impl Handler<Poll> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Poll, ctx: &mut Self::Context) {
        self.capacity.woken();
        self.claim(ctx);
        ctx.notify_later(Poll, self.settings().poll_interval);
    }
}

impl Handler<Record> for QueueActor {
    type Result = ();

    fn handle(&mut self, Record(ended): Record, ctx: &mut Self::Context) {
        let mut freed = false;
        for Ended {
            destination_id,
            attempt,
        } in ended
        {
            freed |= self.capacity.attempt_ended(destination_id);
            self.to_record.push(attempt);
        }
        self.record(ctx);
        if freed {
            self.top_up(ctx);
        }
    }
}

impl Handler<Finished> for QueueActor {
    type Result = ();

    fn handle(&mut self, done: Finished, ctx: &mut Self::Context) {
        if self.capacity.given_back(done.destination_id, 1) {
            self.top_up(ctx);
        }
    }
}

impl Handler<Abandoned> for QueueActor {
    type Result = ();

    /// The rows are still leased to this worker, which never claims its own
    /// again: they go back to the queue first, so that the claim their freed
    /// room makes can take them.
    fn handle(&mut self, abandoned: Abandoned, ctx: &mut Self::Context) {
        let Abandoned {
            destination_id,
            deliveries: ids,
        } = abandoned;
        let count = ids.len();
        tracing::warn!(
            destination = destination_id,
            deliveries = count,
            "A delivery actor ended holding claims; giving them back to the queue"
        );
        let (pool, worker) = (self.pool.clone(), self.worker_id.clone());
        let release = async move {
            let client = pool.get().await?;
            deliveries::release(&**client, &worker, &ids, Utc::now()).await
        };
        ctx.spawn(
            wrap_future::<_, Self>(release).map(move |released, actor, ctx| {
                if let Err(error) = released {
                    tracing::warn!(
                        %error,
                        destination = destination_id,
                        "Cannot give back the deliveries a delivery actor held as it ended; \
                         other workers take them once their leases run out"
                    );
                }
                if actor.capacity.given_back(destination_id, count) {
                    actor.top_up(ctx);
                }
            }),
        );
    }
}
