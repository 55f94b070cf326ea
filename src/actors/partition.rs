//! PartitionActor: at start-up and every `partitions.maintenance_interval`,
//! keeps `audit_log`'s monthly partitions ready ahead, archives aged events,
//! deletes expired ones and drops empty expired partitions ([`maintenance::run`]), then refreshes
//! the partition gauges on `/metrics`. One worker instance maintains at a
//! time; the others skip the round. Time comes from the injected clock, so
//! tests can age data.

use std::sync::Arc;

use actix::fut::wrap_future;
use actix::prelude::*;

use crate::archive_store::ArchiveStore;
use crate::cache::{QueryCache, EVENTS};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::{partitions, DbError, PgPool};
use crate::integrity::keys::IntegrityKeys;
use crate::maintenance::{self, Report};
use crate::metrics::Metrics;
use crate::shared::Shared;

/// Run partition maintenance now: the actor's own tick, re-armed after each
/// run so that two runs never overlap.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Maintain;

pub struct PartitionActor {
    pool: PgPool,
    keys: Arc<IntegrityKeys>,
    archives: Arc<ArchiveStore>,
    cache: Arc<QueryCache>,
    config: Arc<Config>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
}

impl PartitionActor {
    pub fn new(shared: &Shared) -> Self {
        Self {
            pool: shared.pool.clone(),
            keys: shared.keys.clone(),
            archives: shared.archives.clone(),
            cache: shared.cache.clone(),
            config: shared.config.clone(),
            clock: shared.clock.clone(),
            metrics: shared.metrics.clone(),
        }
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(Maintain);
    }
}

/// One round, then the gauges (refreshed by every instance, leader or not).
async fn round(
    config: Arc<Config>,
    pool: PgPool,
    keys: Arc<IntegrityKeys>,
    archives: Arc<ArchiveStore>,
    cache: Arc<QueryCache>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
) -> Result<Report, DbError> {
    let report = maintenance::run(&config, &pool, &archives, &keys, clock.now()).await?;
    for organization in report
        .archived
        .organizations
        .iter()
        .chain(&report.deleted.organizations)
    {
        cache.invalidate(organization, EVENTS).await;
    }
    let listed = partitions::list(&**pool.get().await?).await?;
    metrics.partitions.bytes.reset();
    metrics.partitions.rows_estimate.reset();
    for partition in listed {
        metrics
            .partitions
            .bytes
            .with_label_values(&[&partition.name])
            .set(partition.bytes);
        metrics
            .partitions
            .rows_estimate
            .with_label_values(&[&partition.name])
            .set(partition.rows_estimate);
    }
    if report.ran {
        metrics
            .partitions
            .maintenance_last_run
            .set(clock.now().timestamp());
        metrics
            .partitions
            .archived_events
            .inc_by(report.archived.events);
    }
    Ok(report)
}

impl Handler<Maintain> for PartitionActor {
    type Result = ResponseActFuture<Self, ()>;

    #[tracing::instrument(name = "partition_maintenance", skip_all)]
    fn handle(&mut self, _: Maintain, _: &mut Self::Context) -> Self::Result {
        let work = round(
            self.config.clone(),
            self.pool.clone(),
            self.keys.clone(),
            self.archives.clone(),
            self.cache.clone(),
            self.clock.clone(),
            self.metrics.clone(),
        );
        Box::pin(wrap_future::<_, Self>(work).map(|outcome, actor, ctx| {
            let label = match &outcome {
                Ok(report) if report.ran => "ran",
                Ok(_) => "skipped",
                Err(_) => "failed",
            };
            actor
                .metrics
                .partitions
                .maintenance_runs
                .with_label_values(&[label])
                .inc();
            match outcome {
                Ok(report) if report.ran => tracing::info!(
                    created = ?report.partitions_created,
                    archived_events = report.archived.events,
                    archives = report.archived.archives,
                    deleted_events = report.deleted.events,
                    deleted_archives = report.deleted.archives,
                    failed_batches = report.archived.failed_batches,
                    dropped = ?report.partitions_dropped,
                    took = ?report.took,
                    "Partition maintenance done"
                ),
                Ok(_) => tracing::debug!("Another worker is maintaining partitions"),
                Err(error) => {
                    tracing::warn!(%error, "Partition maintenance failed; next round retries")
                }
            }
            ctx.notify_later(Maintain, actor.config.partitions.maintenance_interval);
        }))
    }
}
