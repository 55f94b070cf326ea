//! ReportActor: runs scheduled reports. Every `reports.poll_interval` (and at
//! once at start-up, which catches up a schedule missed while every worker
//! was down, and when the API queues a manual run) it queues the runs of due
//! schedules and claims as many runs as it has room for (`reports.concurrency`).
//! Any number of instances can do this at once: schedules and runs are taken
//! with `FOR UPDATE SKIP LOCKED`, and a slot is queued once.
//!
//! Runs read and format up to millions of rows: they execute on an arbiter
//! (thread) of their own, so they never hold up the actors on the main one.

use std::sync::Arc;

use actix::fut::wrap_future;
use actix::prelude::*;
use tokio::sync::oneshot;

use crate::db::reports::Execution;
use crate::messages::report::RunDue;
use crate::reports::run::Reports;
use crate::reports::ReportError;

pub struct ReportActor {
    reports: Arc<Reports>,
    /// Where runs execute; stopped with the actor.
    arbiter: Arbiter,
    running: usize,
    /// A round (queue due schedules, claim runs) is under way.
    claiming: bool,
    /// Asked for a round during one: do another when it ends.
    asked_again: bool,
}

impl ReportActor {
    pub fn new(reports: Arc<Reports>) -> Self {
        Self {
            reports,
            arbiter: Arbiter::new(),
            running: 0,
            claiming: false,
            asked_again: false,
        }
    }

    /// Runs `work` on the runs' arbiter and hands its result back to the actor.
    fn on_arbiter<T, F>(&self, work: F) -> oneshot::Receiver<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        self.arbiter.spawn(async move {
            let _ = sender.send(work.await);
        });
        receiver
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        if self.claiming {
            self.asked_again = true;
            return;
        }
        let room = self
            .reports
            .settings
            .concurrency
            .saturating_sub(self.running);
        self.claiming = true;
        let reports = self.reports.clone();
        let claimed = self.on_arbiter(async move {
            reports.queue_due().await?;
            if room == 0 {
                return Ok(Vec::new());
            }
            reports.claim(room).await
        });
        ctx.spawn(wrap_future::<_, Self>(claimed).map(
            |claimed: Result<Result<Vec<Execution>, ReportError>, _>, actor, ctx| {
                actor.claiming = false;
                match claimed {
                    Ok(Ok(executions)) => {
                        for execution in executions {
                            actor.start(execution, ctx);
                        }
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "Cannot queue or claim report runs; will retry")
                    }
                    Err(_) => tracing::warn!("The report runs' arbiter stopped"),
                }
                if std::mem::take(&mut actor.asked_again) {
                    actor.round(ctx);
                }
            },
        ));
    }

    fn start(&mut self, execution: Execution, ctx: &mut Context<Self>) {
        self.running += 1;
        let reports = self.reports.clone();
        let done = self.on_arbiter(async move { reports.execute(execution).await });
        ctx.spawn(wrap_future::<_, Self>(done).map(|_, actor, ctx| {
            actor.running -= 1;
            actor.round(ctx);
        }));
    }
}

impl Actor for ReportActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.reports.settings.enabled {
            tracing::info!("Scheduled reports are off on this instance (reports.enabled)");
            return;
        }
        ctx.notify(RunDue);
        ctx.run_interval(self.reports.settings.poll_interval, |_, ctx| {
            ctx.notify(RunDue)
        });
    }
}

impl Drop for ReportActor {
    /// Also after a panic, which skips `stopped`: the runs' thread ends with
    /// the actor. Runs under way stop with it; their leases run out and
    /// another instance (or this one, restarted) takes them over.
    fn drop(&mut self) {
        self.arbiter.stop();
    }
}

impl Handler<RunDue> for ReportActor {
    type Result = ();

    #[tracing::instrument(name = "report_round", skip_all)]
    fn handle(&mut self, _: RunDue, ctx: &mut Self::Context) {
        if self.reports.settings.enabled {
            self.round(ctx);
        }
    }
}
