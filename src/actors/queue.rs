//! QueueActor: claims due deliveries from `delivery_queue` (`FOR UPDATE SKIP
//! LOCKED`, with a lease) and hands each to its destination's DeliveryActor,
//! starting that actor on first use and again if it died. `LISTEN` wakes it as
//! soon as work is enqueued; a poll every `delivery.poll_interval` is the
//! fallback (and picks up retries and expired leases).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;
use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

use super::delivery::DeliveryActor;
use crate::config::{Config, DeliveryConfig};
use crate::db::deliveries::Attempt;
use crate::db::{self, deliveries, PgPool};
use crate::delivery::crypto::SecretBox;
use crate::messages::delivery::{Deliver, Finished, Poll, Record, Wake};

pub struct QueueActor {
    pool: PgPool,
    config: Arc<Config>,
    secrets: Arc<SecretBox>,
    http: reqwest::Client,
    /// Names this instance's claims, so only it can finish them.
    worker_id: String,
    /// Claimed and not finished yet: at most `delivery.max_in_flight`.
    in_flight: usize,
    claiming: bool,
    /// Woken while a claim was running: claim again when it ends, or the new
    /// work would wait for the next poll.
    woken_while_claiming: bool,
    actors: HashMap<i64, Addr<DeliveryActor>>,
    /// Attempts waiting to be written, and whether a write is under way: all
    /// that arrive during one write go in the next (group commit).
    to_record: Vec<Attempt>,
    recording: bool,
}

impl QueueActor {
    pub fn new(
        pool: PgPool,
        config: Arc<Config>,
        secrets: Arc<SecretBox>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            pool,
            config,
            secrets,
            http,
            worker_id: format!("worker-{}", uuid::Uuid::new_v4()),
            in_flight: 0,
            claiming: false,
            woken_while_claiming: false,
            actors: HashMap::new(),
            to_record: Vec::new(),
            recording: false,
        }
    }

    fn settings(&self) -> &DeliveryConfig {
        &self.config.delivery
    }

    fn claim(&mut self, ctx: &mut Context<Self>) {
        let room = self.settings().max_in_flight.saturating_sub(self.in_flight);
        if self.claiming {
            self.woken_while_claiming = true;
            return;
        }
        if room == 0 {
            return;
        }
        self.claiming = true;
        let (pool, worker, lease) = (
            self.pool.clone(),
            self.worker_id.clone(),
            self.settings().lease,
        );
        let claim = async move {
            let client = pool.get().await?;
            deliveries::claim(&*client, &worker, lease, room as i64).await
        };
        ctx.spawn(
            wrap_future::<_, Self>(claim).map(move |claimed, actor, ctx| {
                actor.claiming = false;
                match claimed {
                    Ok(claims) => {
                        let full = claims.len() == room;
                        for claim in claims {
                            actor.in_flight += 1;
                            actor
                                .deliverer(claim.destination_id, ctx)
                                .do_send(Deliver(claim));
                        }
                        if full {
                            ctx.notify(Wake);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "Cannot claim deliveries"),
                }
            }),
        );
    }

    fn record(&mut self, ctx: &mut Context<Self>) {
        if self.recording || self.to_record.is_empty() {
            return;
        }
        self.recording = true;
        let batch = std::mem::take(&mut self.to_record);
        let (pool, worker) = (self.pool.clone(), self.worker_id.clone());
        let count = batch.len();
        let write = async move {
            let client = pool.get().await?;
            deliveries::finish_many(&*client, &worker, &batch).await
        };
        ctx.spawn(wrap_future::<_, Self>(write).map(move |written, actor, ctx| {
            actor.recording = false;
            if let Err(error) = written {
                tracing::warn!(%error, count, "Cannot record delivery attempts; their leases will retry them");
            }
            actor.in_flight = actor.in_flight.saturating_sub(count);
            actor.record(ctx);
            actor.claim(ctx);
        }));
    }

    /// The destination's actor, started (again) if needed.
    fn deliverer(&mut self, destination_id: i64, ctx: &mut Context<Self>) -> Addr<DeliveryActor> {
        let alive = self
            .actors
            .get(&destination_id)
            .filter(|addr| addr.connected())
            .cloned();
        alive.unwrap_or_else(|| {
            let actor = DeliveryActor::new(
                destination_id,
                self.pool.clone(),
                self.http.clone(),
                self.secrets.clone(),
                ctx.address(),
                self.worker_id.clone(),
            )
            .start();
            self.actors.insert(destination_id, actor.clone());
            actor
        })
    }
}

/// Forwards `NOTIFY`s on the delivery channel as [`Wake`]s; reconnects after a
/// lost connection. Runs inside the actor's context, so it ends with the actor.
async fn listen(config: Arc<Config>, queue: Addr<QueueActor>) {
    loop {
        match db::connect_raw(&config.database).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = async {
                    client
                        .batch_execute(&format!("LISTEN {}", deliveries::CHANNEL))
                        .await
                };
                // The connection must be polled for LISTEN to complete: drive both.
                let mut listening = std::pin::pin!(listening);
                let mut ready = false;
                loop {
                    tokio::select! {
                        done = &mut listening, if !ready => {
                            if done.is_err() { break; }
                            ready = true;
                            queue.do_send(Wake);
                        }
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(_))) => queue.do_send(Wake),
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
        ctx.spawn(wrap_future(listen(self.config.clone(), ctx.address())));
        ctx.notify(Poll);
    }
}

impl Handler<Wake> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.claim(ctx);
    }
}

impl Handler<Poll> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Poll, ctx: &mut Self::Context) {
        self.claim(ctx);
        ctx.notify_later(Poll, self.settings().poll_interval);
    }
}

impl Handler<Record> for QueueActor {
    type Result = ();

    fn handle(&mut self, Record(attempt): Record, ctx: &mut Self::Context) {
        self.to_record.push(attempt);
        self.record(ctx);
    }
}

impl Handler<Finished> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Finished, ctx: &mut Self::Context) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.claim(ctx);
    }
}
