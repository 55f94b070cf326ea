//! Starts the actors, watches them, and restarts any that stops or panics.
//!
//! actix's own `Supervisor` restarts an actor that *stops*, but a handler that
//! *panics* unwinds through the actor's task: the context is dropped, the actor
//! is gone, and later sends fail with a closed mailbox. Here every child's
//! context holds an [`ExitSignal`]. Dropping the context drops the signal —
//! after a normal stop and during a panic's unwind alike — and the signal tells
//! the supervisor, which builds a fresh actor from the child's factory after an
//! exponential backoff and points the child's [`ActorHandle`] at it.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::fut::wrap_future;
use actix::prelude::*;
use tokio::sync::oneshot;

use crate::config::SupervisorConfig;
use crate::error_tracking::{ErrorEvent, ErrorTracker, Severity};
use crate::messages::supervisor::{ChildExited, ChildStatus, GetStatus, Shutdown};
use crate::metrics::Metrics;

/// Collects the children, then starts the supervisor.
pub struct SupervisorBuilder {
    children: Vec<Child>,
    config: SupervisorConfig,
    metrics: Arc<Metrics>,
    errors: Option<ErrorTracker>,
}

pub struct Supervisor {
    children: Vec<Child>,
    config: SupervisorConfig,
    metrics: Arc<Metrics>,
    /// Set by [`Shutdown`]: exits are then expected and no longer restarted.
    shutting_down: bool,
    /// Callers of [`Shutdown`] waiting for the last child to exit.
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    /// Hears of every unexpected exit.
    errors: Option<ErrorTracker>,
}

struct Child {
    name: &'static str,
    spec: Box<dyn ChildSpec>,
    /// Incremented at each start; exit signals carry it to tell instances apart.
    generation: u64,
    running: bool,
    restarts: u64,
    /// Restarts since the child last stayed up for `restart_reset_after`; drives the backoff.
    recent_failures: u32,
    started_at: Instant,
    /// Asks the running instance to stop (used at shutdown).
    stop: Option<oneshot::Sender<()>>,
}

/// Starts one instance of a child; object-safe so children of different actor
/// types share one list.
trait ChildSpec {
    fn start(&self, exit: ExitSignal) -> oneshot::Sender<()>;
}

struct ActorSpec<A: Actor> {
    factory: Box<dyn Fn() -> A>,
    slot: Slot<A>,
}

type Slot<A> = Arc<RwLock<Option<Addr<A>>>>;

impl<A> ChildSpec for ActorSpec<A>
where
    A: Actor<Context = Context<A>>,
{
    fn start(&self, exit: ExitSignal) -> oneshot::Sender<()> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let actor = (self.factory)();
        let addr = A::create(move |ctx| {
            // Lives exactly as long as the context: its drop is the exit notice.
            ctx.spawn(wrap_future(async move {
                let _exit = exit;
                std::future::pending::<()>().await
            }));
            ctx.spawn(wrap_future::<_, A>(stop_rx).map(|stop, _actor, ctx| {
                if stop.is_ok() {
                    ctx.stop();
                }
            }));
            actor
        });
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = Some(addr);
        stop_tx
    }
}

/// Held by a child's context; tells the supervisor when the context is dropped.
struct ExitSignal {
    supervisor: Addr<Supervisor>,
    index: usize,
    generation: u64,
}

impl Drop for ExitSignal {
    fn drop(&mut self) {
        self.supervisor.do_send(ChildExited {
            index: self.index,
            generation: self.generation,
        });
    }
}

impl SupervisorBuilder {
    pub fn new(config: SupervisorConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            children: Vec::new(),
            config,
            metrics,
            errors: None,
        }
    }

    /// Records every unexpected exit of a child as an internal error.
    pub fn report_errors_to(&mut self, tracker: ErrorTracker) {
        self.errors = Some(tracker);
    }

    /// Registers an actor built by `factory` (called again for every restart) and
    /// returns the handle through which everyone reaches its current instance.
    pub fn supervise<A, F>(&mut self, name: &'static str, factory: F) -> ActorHandle<A>
    where
        A: Actor<Context = Context<A>>,
        F: Fn() -> A + 'static,
    {
        self.metrics.register_actor(name);
        let slot: Slot<A> = Arc::new(RwLock::new(None));
        self.children.push(Child {
            name,
            spec: Box::new(ActorSpec {
                factory: Box::new(factory),
                slot: slot.clone(),
            }),
            generation: 0,
            running: false,
            restarts: 0,
            recent_failures: 0,
            started_at: Instant::now(),
            stop: None,
        });
        ActorHandle {
            name,
            slot,
            metrics: self.metrics.clone(),
        }
    }

    pub fn start(self) -> Addr<Supervisor> {
        Supervisor {
            children: self.children,
            config: self.config,
            metrics: self.metrics,
            shutting_down: false,
            shutdown_waiters: Vec::new(),
            errors: self.errors,
        }
        .start()
    }
}

impl Supervisor {
    fn start_child(&mut self, index: usize, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        let child = &mut self.children[index];
        child.generation += 1;
        if child.generation > 1 {
            child.restarts += 1;
            self.metrics
                .actors
                .restarts
                .with_label_values(&[child.name])
                .inc();
            tracing::info!(
                actor = child.name,
                restarts = child.restarts,
                "Restarted actor"
            );
        }
        let exit = ExitSignal {
            supervisor: ctx.address(),
            index,
            generation: child.generation,
        };
        child.stop = Some(child.spec.start(exit));
        child.running = true;
        child.started_at = Instant::now();
        self.metrics
            .actors
            .up
            .with_label_values(&[child.name])
            .set(1);
    }

    /// Exponential backoff from `restart_backoff_min`, capped at `restart_backoff_max`.
    fn restart_delay(&self, recent_failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(recent_failures.min(20));
        self.config
            .restart_backoff_min
            .saturating_mul(factor)
            .min(self.config.restart_backoff_max)
    }

    fn release_shutdown_waiters_when_done(&mut self) {
        if self.children.iter().all(|child| !child.running) {
            for waiter in self.shutdown_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        for index in 0..self.children.len() {
            self.start_child(index, ctx);
        }
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, exit: ChildExited, ctx: &mut Self::Context) {
        let child = &mut self.children[exit.index];
        if exit.generation != child.generation || !child.running {
            return;
        }
        child.running = false;
        child.stop = None;
        self.metrics
            .actors
            .up
            .with_label_values(&[child.name])
            .set(0);
        if self.shutting_down {
            tracing::debug!(actor = child.name, "Actor stopped for shutdown");
            self.release_shutdown_waiters_when_done();
            return;
        }
        if child.started_at.elapsed() >= self.config.restart_reset_after {
            child.recent_failures = 0;
        }
        let (name, recent_failures) = (child.name, child.recent_failures);
        child.recent_failures = recent_failures.saturating_add(1);
        let delay = self.restart_delay(recent_failures);
        tracing::warn!(
            actor = name,
            ?delay,
            "Actor stopped unexpectedly; restarting"
        );
        if let Some(errors) = &self.errors {
            let mut event = ErrorEvent::new(
                "actor",
                Severity::High,
                "actor_stopped",
                name,
                "run",
                format!("actor {name} stopped unexpectedly (stopped or panicked); restarting"),
            );
            event.retryable = true;
            event.context = serde_json::json!({ "recent_failures": recent_failures + 1 });
            errors.record(event);
        }
        let index = exit.index;
        ctx.run_later(delay, move |supervisor, ctx| {
            supervisor.start_child(index, ctx)
        });
    }
}

impl Handler<GetStatus> for Supervisor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.children
                .iter()
                .map(|child| ChildStatus {
                    name: child.name,
                    running: child.running,
                    restarts: child.restarts,
                })
                .collect(),
        )
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, shutdown: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        for child in &mut self.children {
            if let Some(stop) = child.stop.take() {
                let _ = stop.send(());
            }
        }
        let (done_tx, done_rx) = oneshot::channel();
        self.shutdown_waiters.push(done_tx);
        self.release_shutdown_waiters_when_done();
        Box::pin(async move {
            if tokio::time::timeout(shutdown.timeout, done_rx)
                .await
                .is_err()
            {
                tracing::warn!("Some actors did not stop in time");
            }
        })
    }
}

/// The way to reach a supervised actor: always its current instance, with the
/// per-actor message metrics recorded on the way.
pub struct ActorHandle<A: Actor> {
    name: &'static str,
    slot: Slot<A>,
    metrics: Arc<Metrics>,
}

impl<A: Actor> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            slot: self.slot.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActorUnavailable {
    #[error("actor {0} is not running (it may be restarting)")]
    NotRunning(&'static str),
}

/// Lets the handle count error replies without knowing each message's types.
pub trait Outcome {
    fn is_failure(&self) -> bool;
}

impl<T, E> Outcome for Result<T, E> {
    fn is_failure(&self) -> bool {
        self.is_err()
    }
}

impl<A: Actor> ActorHandle<A> {
    fn current(&self) -> Option<Addr<A>> {
        self.slot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends `message` to the current instance without waiting for its reply;
    /// dropped while the actor is down (for news a restarted actor reads anew).
    /// A task waits for the reply in its place, so that notices count in the
    /// actor's mailbox depth, handled messages and processing time too.
    pub fn notify<M>(&self, message: M)
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        match self.current() {
            Some(addr) => {
                let handle = self.clone();
                tokio::spawn(async move {
                    if handle.deliver(addr, message).await.is_err() {
                        handle.count_error();
                    }
                });
            }
            None => tracing::debug!(
                actor = self.name,
                "Dropped a notice to an actor that is down"
            ),
        }
    }

    /// Sends `message` to the current instance and waits for its reply. Fails at
    /// once, instead of queueing, while the actor is down.
    pub async fn send<M>(&self, message: M) -> Result<M::Result, ActorUnavailable>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send + Outcome,
    {
        let addr = self
            .current()
            .ok_or(ActorUnavailable::NotRunning(self.name))?;
        match self.deliver(addr, message).await {
            Ok(reply) => {
                if reply.is_failure() {
                    self.count_error();
                }
                Ok(reply)
            }
            Err(_) => {
                self.count_error();
                Err(ActorUnavailable::NotRunning(self.name))
            }
        }
    }

    /// Sends and awaits the reply, with the message in the mailbox-depth
    /// gauge meanwhile, then counts it as handled and times it.
    async fn deliver<M>(&self, addr: Addr<A>, message: M) -> Result<M::Result, MailboxError>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let in_flight = InFlight::enter(
            self.metrics
                .actors
                .mailbox_depth
                .with_label_values(&[self.name]),
        );
        let started = Instant::now();
        let reply = addr.send(message).await;
        drop(in_flight);
        if reply.is_ok() {
            self.metrics
                .actors
                .messages_handled
                .with_label_values(&[self.name])
                .inc();
            self.metrics
                .actors
                .message_duration
                .with_label_values(&[self.name])
                .observe(started.elapsed().as_secs_f64());
        }
        reply
    }

    fn count_error(&self) {
        self.metrics
            .actors
            .errors
            .with_label_values(&[self.name])
            .inc();
    }
}

/// Counts a message in the mailbox-depth gauge until its reply arrives or the
/// caller gives up (the guard is dropped with the caller's future).
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn enter(gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
