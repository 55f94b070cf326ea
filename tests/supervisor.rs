//! Supervision: an actor that stops and an actor whose handler panics both come
//! back, fresh, and handle the messages sent after the restart.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use audit_worker::messages::supervisor::GetStatus;
use audit_worker::metrics::Metrics;
use audit_worker::supervisor::{ActorHandle, SupervisorBuilder};
use common::{test_config, wait_until};

/// A counter whose state shows whether the instance is fresh.
struct Counter {
    count: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "Result<u64, Infallible>")]
struct Increment;

#[derive(Message)]
#[rtype(result = "Result<(), Infallible>")]
struct StopNow;

#[derive(Message)]
#[rtype(result = "Result<(), Infallible>")]
struct PanicNow;

impl Handler<Increment> for Counter {
    type Result = Result<u64, Infallible>;
    fn handle(&mut self, _: Increment, _: &mut Context<Self>) -> Self::Result {
        self.count += 1;
        Ok(self.count)
    }
}

impl Handler<StopNow> for Counter {
    type Result = Result<(), Infallible>;
    fn handle(&mut self, _: StopNow, ctx: &mut Context<Self>) -> Self::Result {
        ctx.stop();
        Ok(())
    }
}

impl Handler<PanicNow> for Counter {
    type Result = Result<(), Infallible>;
    fn handle(&mut self, _: PanicNow, _: &mut Context<Self>) -> Self::Result {
        panic!("deliberate panic in a handler");
    }
}

fn start_supervised() -> (
    Addr<audit_worker::supervisor::Supervisor>,
    ActorHandle<Counter>,
    Arc<Metrics>,
) {
    let metrics = Arc::new(Metrics::new());
    let mut builder = SupervisorBuilder::new(test_config().supervisor, metrics.clone());
    let counter = builder.supervise("counter", || Counter { count: 0 });
    (builder.start(), counter, metrics)
}

/// Waits until the counter answers again, and returns its first answer.
async fn first_answer_after_restart(counter: &ActorHandle<Counter>) -> u64 {
    wait_until(
        Duration::from_secs(5),
        "the counter answers again",
        || async {
            counter
                .send(Increment)
                .await
                .ok()
                .map(|reply| reply.unwrap())
        },
    )
    .await
}

/// An actor that stops itself is restarted as a fresh instance and handles
/// messages sent afterwards; the restart is counted.
#[actix::test]
async fn an_actor_that_stops_is_restarted() {
    let (supervisor, counter, metrics) = start_supervised();
    assert_eq!(first_answer_after_restart(&counter).await, 1);
    assert_eq!(counter.send(Increment).await.unwrap().unwrap(), 2);

    counter.send(StopNow).await.unwrap().unwrap();

    assert_eq!(
        first_answer_after_restart(&counter).await,
        1,
        "a fresh instance"
    );
    let status = supervisor.send(GetStatus).await.unwrap();
    assert_eq!(status[0].name, "counter");
    assert!(status[0].running);
    assert_eq!(status[0].restarts, 1);
    assert_eq!(
        metrics
            .actors
            .restarts
            .with_label_values(&["counter"])
            .get(),
        1
    );
}

/// A handler panic kills the instance (its caller gets an error, not a hang);
/// the supervisor notices and restarts it, and later messages are handled.
#[actix::test]
async fn an_actor_whose_handler_panics_is_restarted() {
    let (supervisor, counter, metrics) = start_supervised();
    assert_eq!(first_answer_after_restart(&counter).await, 1);

    assert!(
        counter.send(PanicNow).await.is_err(),
        "the panicking call fails"
    );

    assert_eq!(
        first_answer_after_restart(&counter).await,
        1,
        "a fresh instance"
    );
    assert_eq!(counter.send(Increment).await.unwrap().unwrap(), 2);
    let status = supervisor.send(GetStatus).await.unwrap();
    assert_eq!(status[0].restarts, 1);
    assert!(metrics.actors.errors.with_label_values(&["counter"]).get() >= 1);
}

/// Repeated failures are all recovered from, each counted once.
#[actix::test]
async fn repeated_panics_are_each_restarted() {
    let (supervisor, counter, _) = start_supervised();
    for _ in 0..3 {
        first_answer_after_restart(&counter).await;
        let _ = counter.send(PanicNow).await;
    }
    first_answer_after_restart(&counter).await;
    let status = supervisor.send(GetStatus).await.unwrap();
    assert_eq!(status[0].restarts, 3);
}
