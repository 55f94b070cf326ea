//! Runs of scheduled reports, from the due schedule to the delivered output:
//! [`Reports::queue_due`] turns due slots into pending runs,
//! [`Reports::claim`] takes runs under a lease, [`Reports::execute`] produces,
//! stores and delivers one while keeping its lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde_json::{json, Value};
use tokio_postgres::IsolationLevel;
use tracing::Instrument;

use super::criteria::Criteria;
use super::generate;
use super::output::{self, OutputSink, StoredOutput};
use super::schedule::Schedule;
use super::writer::{Metadata, ReportWriter};
use super::{Format, ReportError, ReportType};
use crate::archive_store::ArchiveStore;
use crate::config::ReportsConfig;
use crate::db::deliveries::{self, NewDeliveries};
use crate::db::report_sections::Scope as ReadScope;
use crate::db::reports::{self, Completion, Execution, ScheduledReport};
use crate::db::{destinations, tenant, PgPool};
use crate::deliveries::destination::DeliverySettings;
use crate::integrity::keys::IntegrityKeys;
use crate::integrity::verify::{self, Report as Verification};
use crate::metrics::Metrics;

/// Due schedules handled per transaction.
const DUE_BATCH: i64 = 100;
/// A catch-up stops counting missed slots here (an every-minute schedule
/// down for months).
const MAX_MISSED_SLOTS: i64 = 100_000;
/// Wait before a failed attempt is tried again, times the attempts so far.
const RETRY_STEP: Duration = Duration::from_secs(30);

pub struct Reports {
    pub pool: PgPool,
    pub keys: Arc<IntegrityKeys>,
    pub archives: Arc<ArchiveStore>,
    pub settings: ReportsConfig,
    pub metrics: Arc<Metrics>,
    /// Names this instance's claims.
    pub worker_id: String,
}

/// What a run produced.
struct Produced {
    period: (DateTime<Utc>, DateTime<Utc>),
    format: Format,
    records: u64,
    stored: StoredOutput,
    summary: serde_json::Map<String, Value>,
    integrity: Value,
    delivery_attempts: Value,
}

impl Reports {
    /// Queues one run for every due schedule and moves it to its next slot.
    /// A schedule whose slots were missed (every worker down) runs once, for
    /// its latest missed slot, and the run records how many it stands for.
    pub async fn queue_due(&self) -> Result<usize, ReportError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let mut due = Vec::new();
        // Per organization: rows are locked by statements that name it (docs/scaling.md).
        for organization_id in reports::organizations_due(&transaction).await? {
            let room = DUE_BATCH - due.len() as i64;
            if room <= 0 {
                break;
            }
            due.extend(reports::lock_due(&transaction, &organization_id, room).await?);
        }
        let now = Utc::now();
        for report in &due {
            let Some(mut slot) = report.next_run else {
                continue;
            };
            let schedule = match parse_schedule(report) {
                Ok(schedule) => schedule,
                Err(error) => {
                    tracing::warn!(report = %report.id, %error, "Unreadable schedule: not run");
                    reports::queue_slot(&transaction, report, slot, 0, None).await?;
                    continue;
                }
            };
            let mut missed = 0;
            let next = loop {
                match schedule.next_after(slot) {
                    Some(next) if next <= now && missed < MAX_MISSED_SLOTS => {
                        slot = next;
                        missed += 1;
                    }
                    next => {
                        break next
                            .filter(|next| *next > now)
                            .or_else(|| schedule.next_after(now))
                    }
                }
            };
            reports::queue_slot(&transaction, report, slot, missed, next).await?;
            if missed > 0 {
                tracing::info!(report = %report.id, missed, %slot, "Catching up a schedule once");
            }
        }
        transaction.commit().await?;
        Ok(due.len())
    }

    /// Claims up to `limit` runs; first fails those whose worker stopped
    /// during their last attempt.
    pub async fn claim(&self, limit: usize) -> Result<Vec<Execution>, ReportError> {
        let client = self.pool.get().await?;
        let abandoned = reports::fail_abandoned(&**client, self.settings.max_attempts).await?;
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "Report runs failed: their worker stopped on the last attempt"
            );
            self.metrics
                .reports
                .runs
                .with_label_values(&["failed"])
                .inc_by(abandoned);
        }
        // Per organization: rows are locked by statements that name it (docs/scaling.md).
        let mut claimed = Vec::new();
        for organization_id in reports::organizations_claimable(&**client).await? {
            let room = limit.saturating_sub(claimed.len());
            if room == 0 {
                break;
            }
            let lease = self.settings.lease;
            claimed.extend(
                reports::claim(
                    &**client,
                    &organization_id,
                    &self.worker_id,
                    lease,
                    room as i64,
                )
                .await?,
            );
        }
        Ok(claimed)
    }

    /// Carries out a claimed run and records its outcome. The claim is renewed
    /// while it runs; if another worker took it over, this one stops.
    pub async fn execute(&self, execution: Execution) {
        let span = tracing::info_span!("report_run", execution = %execution.id,
            report = %execution.report_id, attempt = execution.attempts);
        async {
            let started = Instant::now();
            let outcome = tokio::select! {
                produced = self.produce(&execution) => Some(produced),
                () = self.keep_lease(&execution.organization_id, execution.id) => None,
            };
            let Some(outcome) = outcome else {
                tracing::warn!("Lost the claim of a report run: another worker has it");
                return;
            };
            if let Err(error) = self.record(&execution, outcome, started.elapsed()).await {
                // The lease runs out and the run is claimed again.
                tracing::error!(%error, "Cannot record a report run's outcome");
            }
        }
        .instrument(span)
        .await
    }

    /// Renews the lease every third of it; returns when the claim is lost.
    async fn keep_lease(&self, organization_id: &str, id: uuid::Uuid) {
        let mut ticks = tokio::time::interval(self.settings.lease / 3);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let renewed = match self.pool.get().await {
                Ok(client) => {
                    reports::renew_lease(
                        &**client,
                        organization_id,
                        id,
                        &self.worker_id,
                        self.settings.lease,
                    )
                    .await
                }
                Err(error) => Err(error),
            };
            match renewed {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => tracing::warn!(%error, "Cannot renew a report run's lease"),
            }
        }
    }

    async fn record(
        &self,
        execution: &Execution,
        outcome: Result<Produced, ReportError>,
        elapsed: Duration,
    ) -> Result<(), ReportError> {
        let client = self.pool.get().await?;
        match outcome {
            Ok(produced) => {
                let completed = reports::complete(
                    &**client,
                    &execution.organization_id,
                    execution.id,
                    &self.worker_id,
                    &Completion {
                        period: produced.period,
                        duration_ms: elapsed.as_millis().min(i32::MAX as u128) as i32,
                        records_processed: produced.records as i64,
                        format: produced.format.as_str(),
                        sha256: &produced.stored.sha256,
                        bytes: produced.stored.bytes as i64,
                        export_result: &Value::Object(produced.summary),
                        integrity_report: &produced.integrity,
                        delivery_attempts: &produced.delivery_attempts,
                    },
                )
                .await?;
                if completed {
                    self.metrics
                        .reports
                        .runs
                        .with_label_values(&["completed"])
                        .inc();
                    tracing::info!(
                        records = produced.records,
                        bytes = produced.stored.bytes,
                        ms = elapsed.as_millis() as u64,
                        "Report run completed"
                    );
                }
            }
            Err(error) => {
                let final_attempt = execution.attempts >= self.settings.max_attempts;
                tracing::warn!(%error, final_attempt, "Report run failed");
                reports::fail_attempt(
                    &**client,
                    &execution.organization_id,
                    execution.id,
                    &self.worker_id,
                    &error.to_string(),
                    final_attempt,
                    RETRY_STEP * execution.attempts.max(1) as u32,
                )
                .await?;
                let outcome = if final_attempt { "failed" } else { "retrying" };
                self.metrics
                    .reports
                    .runs
                    .with_label_values(&[outcome])
                    .inc();
            }
        }
        Ok(())
    }

    async fn produce(&self, execution: &Execution) -> Result<Produced, ReportError> {
        let organization_id = execution.organization_id.as_str();
        let report = {
            let client = self.pool.get().await?;
            reports::delete_outputs(&**client, organization_id, execution.id).await?;
            reports::get_report(&**client, organization_id, execution.report_id)
                .await?
                .ok_or_else(|| ReportError::Invalid("the report was deleted".into()))?
        };
        let report_type = ReportType::parse(&report.report_type)
            .ok_or_else(|| ReportError::Invalid(format!("unknown type {}", report.report_type)))?;
        let format = Format::parse(&report.format)
            .ok_or_else(|| ReportError::Invalid(format!("unknown format {}", report.format)))?;
        let schedule = parse_schedule(&report)?;
        let criteria = Criteria::parse(&report.criteria, report_type)
            .map_err(|errors| ReportError::Invalid(describe(&errors)))?;
        let (from, to) = criteria.period(execution.scheduled_time, &schedule);

        let verification = self.verify(organization_id, &report, from, to).await?;
        let integrity = integrity_summary(&verification, from, to);

        let mut client = self.pool.get().await?;
        let transaction = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        // Row-level security on top of every query's own organization filter.
        tenant::scope(&transaction, organization_id).await?;
        let mut sink = OutputSink::new(
            ReportWriter::new(format),
            self.pool.clone(),
            execution.id,
            organization_id,
        );
        sink.writer.begin(&Metadata {
            execution_id: execution.id,
            report_id: report.id,
            name: report.name.clone(),
            report_type,
            organization_id: organization_id.to_owned(),
            period_from: from,
            period_to: to,
            scheduled_time: execution.scheduled_time,
            generated_at: Utc::now(),
            criteria: criteria.to_json(),
        });
        let scope = ReadScope {
            organization_id,
            from,
            to,
            filters: &criteria.filters,
        };
        let (records, summary) =
            generate::sections(&transaction, &mut sink, report_type, &scope, &verification).await?;
        sink.writer.finish(&summary, &integrity);
        transaction.commit().await?;
        drop(client);
        let stored = sink.finish().await?;

        let delivery_attempts = self
            .deliver(
                &report,
                execution,
                format,
                &stored,
                &summary,
                &integrity,
                (from, to),
                records,
            )
            .await?;
        Ok(Produced {
            period: (from, to),
            format,
            records,
            stored,
            summary,
            integrity,
            delivery_attempts,
        })
    }

    /// Verifies the period's events and the chain, and records the
    /// verification (a failed one raises its alert, as any verification does).
    async fn verify(
        &self,
        organization_id: &str,
        report: &ScheduledReport,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Verification, ReportError> {
        let scope = verify::Scope {
            organization_id,
            from: Some(from),
            to: Some(to),
            checkpoint: None,
            progress: None,
        };
        let verification = verify::verify(&self.pool, &self.keys, &self.archives, &scope).await?;
        let client = self.pool.get().await?;
        verify::record(
            &**client,
            organization_id,
            &verification,
            &scope,
            &format!("report:{}", report.id),
        )
        .await?;
        Ok(verification)
    }

    /// Queues the output for the schedule's destinations (attached up to
    /// `reports.max_delivery_bytes`, announced with its download path beyond).
    /// The idempotency key is the run's: an attempt after a crash finds the
    /// deliveries the first one queued instead of queueing them again.
    #[allow(clippy::too_many_arguments)]
    async fn deliver(
        &self,
        report: &ScheduledReport,
        execution: &Execution,
        format: Format,
        stored: &StoredOutput,
        summary: &serde_json::Map<String, Value>,
        integrity: &Value,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        records: u64,
    ) -> Result<Value, ReportError> {
        if report.destination_ids.is_empty() {
            return Ok(json!([]));
        }
        let organization_id = execution.organization_id.as_str();
        let found = {
            let client = self.pool.get().await?;
            destinations::get_many(&**client, organization_id, &report.destination_ids).await?
        };
        let mut attempts = Vec::new();
        let (mut destination_ids, mut max_retries) = (Vec::new(), Vec::new());
        for id in &report.destination_ids {
            match found.iter().find(|d| d.id == *id && !d.disabled) {
                Some(destination) => {
                    destination_ids.push(*id);
                    let settings =
                        DeliverySettings::parse(Some(&destination.settings)).unwrap_or_default();
                    max_retries.push(settings.retry_waits().len() as i32);
                }
                None => attempts.push(json!({"destination_id": id,
                    "error": "the destination does not exist or is disabled"})),
            }
        }
        if destination_ids.is_empty() {
            return Ok(Value::Array(attempts));
        }
        let download = format!(
            "/v1/reports/{}/executions/{}/output",
            report.id, execution.id
        );
        let mut payload = json!({
            "type": "report.execution",
            "report": {"id": report.id, "name": report.name, "report_type": report.report_type},
            "execution": {
                "id": execution.id,
                "scheduled_time": execution.scheduled_time,
                "period_from": from,
                "period_to": to,
                "records_processed": records,
                "format": format.as_str(),
                "sha256": stored.sha256,
                "bytes": stored.bytes,
                "download": download,
            },
            "summary": summary,
            "integrity": integrity,
        });
        if stored.bytes <= self.settings.max_delivery_bytes {
            let content: Vec<u8> =
                output::read(self.pool.clone(), organization_id.to_owned(), execution.id)
                    .try_fold(Vec::new(), |mut all, chunk| async move {
                        all.extend_from_slice(&chunk);
                        Ok(all)
                    })
                    .await?;
            payload["file"] = json!({
                "name": format!("{}-{}.{}", slug(&report.name),
                    execution.scheduled_time.format("%Y%m%dT%H%MZ"), format.as_str()),
                "content_type": format.content_type(),
                "content": String::from_utf8_lossy(&content),
            });
        } else {
            payload["file_omitted"] = json!(format!(
                "the output is larger than reports.max_delivery_bytes ({}); download it",
                self.settings.max_delivery_bytes
            ));
        }
        let client = self.pool.get().await?;
        let queued = deliveries::enqueue(
            &**client,
            &NewDeliveries {
                organization_id,
                destination_ids: &destination_ids,
                payload: &payload,
                priority: 5,
                scheduled_at: None,
                idempotency_key: Some(&format!("report:{}", execution.id)),
                correlation_id: Some(&execution.id.to_string()),
                max_retries: &max_retries,
            },
        )
        .await?;
        attempts.extend(queued.iter().map(|delivery| {
            json!({"destination_id": delivery.destination_id, "delivery_id": delivery.id})
        }));
        Ok(Value::Array(attempts))
    }
}

fn parse_schedule(report: &ScheduledReport) -> Result<Schedule, ReportError> {
    Schedule::parse(
        "schedule",
        report.schedule["cron"].as_str().unwrap_or_default(),
        report.schedule["timezone"].as_str().unwrap_or_default(),
    )
    .map_err(|errors| ReportError::Invalid(describe(&errors)))
}

fn describe(errors: &[crate::validation::FieldError]) -> String {
    errors
        .iter()
        .map(|error| format!("{}: {}", error.field, error.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The verification of a run's period, as the run and its output record it.
fn integrity_summary(verification: &Verification, from: DateTime<Utc>, to: DateTime<Utc>) -> Value {
    json!({
        "valid": verification.valid,
        "events_checked": verification.checked,
        "links_checked": verification.links_checked,
        "problem_count": verification.problem_count,
        "pseudonymized": verification.pseudonymized,
        "erased_by_gdpr": verification.erased_by_gdpr,
        "deleted_by_retention": verification.deleted_by_retention,
        "from": from,
        "to": to,
        "verified_at": Utc::now(),
    })
}

/// A file-name-safe form of a report's name.
fn slug(name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        "report".to_owned()
    } else {
        slug.chars().take(60).collect()
    }
}
