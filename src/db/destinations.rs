//! Queries on `delivery_destinations` and `destination_health`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::Json;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::DbError;

/// A destination as stored (its config holds sealed secrets).
#[derive(Debug, Clone)]
pub struct Destination {
    pub id: i64,
    pub organization_id: String,
    pub kind: String,
    pub label: String,
    pub description: Option<String>,
    pub icon: Option<String>,
    pub instructions: Option<String>,
    pub disabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_by: Option<String>,
    pub count_usage: i64,
    pub last_used_at: Option<DateTime<Utc>>,
    pub config: Value,
    pub settings: Value,
    /// Every signed checkpoint of the organization is delivered here.
    pub witness: bool,
    /// S3 only: objects are stored under Object Lock retention this long.
    pub object_lock_days: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, organization_id, type, label, description, icon, instructions, disabled, disabled_at, \
    disabled_by, count_usage, last_used_at, config, settings, witness, object_lock_days, created_at, \
    updated_at";

fn destination(row: &tokio_postgres::Row) -> Destination {
    Destination {
        id: row.get("id"),
        organization_id: row.get("organization_id"),
        kind: row.get("type"),
        label: row.get("label"),
        description: row.get("description"),
        icon: row.get("icon"),
        instructions: row.get("instructions"),
        disabled: row.get("disabled"),
        disabled_at: row.get("disabled_at"),
        disabled_by: row.get("disabled_by"),
        count_usage: row.get("count_usage"),
        last_used_at: row.get("last_used_at"),
        config: row.get::<_, Json<Value>>("config").0,
        settings: row.get::<_, Json<Value>>("settings").0,
        witness: row.get("witness"),
        object_lock_days: row.get("object_lock_days"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

pub struct NewDestination<'a> {
    pub organization_id: &'a str,
    pub kind: &'a str,
    pub label: &'a str,
    pub description: Option<&'a str>,
    pub icon: Option<&'a str>,
    pub instructions: Option<&'a str>,
    pub config: &'a Value,
    pub settings: &'a Value,
    pub witness: bool,
    pub object_lock_days: Option<i32>,
}

pub async fn insert(
    client: &impl GenericClient,
    new: &NewDestination<'_>,
) -> Result<Destination, DbError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO delivery_destinations (organization_id, type, label, description, icon, instructions, \
                   config, settings, witness, object_lock_days) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
            ),
            &[
                &new.organization_id,
                &new.kind,
                &new.label,
                &new.description,
                &new.icon,
                &new.instructions,
                &Json(new.config),
                &Json(new.settings),
                &new.witness,
                &new.object_lock_days,
            ],
        )
        .await?;
    Ok(destination(&row))
}

/// The organization's destinations (not deleted), by id.
pub async fn list(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Vec<Destination>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM delivery_destinations \
                 WHERE organization_id = $1 AND deleted_at IS NULL ORDER BY id"
            ),
            &[&organization_id],
        )
        .await?;
    Ok(rows.iter().map(destination).collect())
}

/// One destination of the organization, unless it was deleted.
pub async fn get(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<Option<Destination>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM delivery_destinations \
                 WHERE organization_id = $1 AND id = $2 AND deleted_at IS NULL"
            ),
            &[&organization_id, &id],
        )
        .await?;
    Ok(row.as_ref().map(destination))
}

/// The organization's destinations (not deleted) among `ids`, in one query.
pub async fn get_many(
    client: &impl GenericClient,
    organization_id: &str,
    ids: &[i64],
) -> Result<Vec<Destination>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM delivery_destinations \
                 WHERE organization_id = $1 AND id = ANY($2) AND deleted_at IS NULL"
            ),
            &[&organization_id, &ids],
        )
        .await?;
    Ok(rows.iter().map(destination).collect())
}

/// Replaces the editable fields of a destination.
pub async fn update(
    client: &impl GenericClient,
    changed: &Destination,
) -> Result<Destination, DbError> {
    let row = client
        .query_one(
            &format!(
                "UPDATE delivery_destinations SET label = $3, description = $4, icon = $5, instructions = $6, \
                   config = $7, settings = $8, disabled = $9, disabled_at = $10, disabled_by = $11, witness = $12, \
                   object_lock_days = $13, updated_at = now() \
                 WHERE id = $2 AND organization_id = $1 RETURNING {COLUMNS}"
            ),
            &[
                &changed.organization_id,
                &changed.id,
                &changed.label,
                &changed.description,
                &changed.icon,
                &changed.instructions,
                &Json(&changed.config),
                &Json(&changed.settings),
                &changed.disabled,
                &changed.disabled_at,
                &changed.disabled_by,
                &changed.witness,
                &changed.object_lock_days,
            ],
        )
        .await?;
    Ok(destination(&row))
}

/// A destination as the QueueActor knows it: whose, and which.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DestinationKey {
    pub organization_id: String,
    pub id: i64,
}

/// Every destination that takes deliveries (neither disabled nor deleted), in
/// all organizations: the QueueActor runs one DeliveryActor for each, and
/// claims for each of their organizations.
pub async fn active(client: &impl GenericClient) -> Result<Vec<DestinationKey>, DbError> {
    let rows = client
        .query(
            "SELECT organization_id, id FROM delivery_destinations \
             WHERE NOT disabled AND deleted_at IS NULL",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| DestinationKey {
            organization_id: row.get(0),
            id: row.get(1),
        })
        .collect())
}

/// Deletes a destination, keeping its delivery history; its queued deliveries
/// fail, and so do claimed ones (an attempt under way can no longer record).
pub async fn delete(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<bool, DbError> {
    let deleted = client
        .execute(
            "UPDATE delivery_destinations SET deleted_at = now(), disabled = true, updated_at = now() \
             WHERE organization_id = $1 AND id = $2 AND deleted_at IS NULL",
            &[&organization_id, &id],
        )
        .await?;
    client
        .execute(
            "UPDATE delivery_queue SET status = 'failed', last_error = 'the destination was deleted', \
               claimed_by = NULL, lease_expires_at = NULL, updated_at = now() \
             WHERE organization_id = $1 AND destination_id = $2 AND status IN ('pending', 'retrying')",
            &[&organization_id, &id],
        )
        .await?;
    Ok(deleted > 0)
}

/// Health of a destination: its delivery figures as `destination_health`
/// keeps them, and its state as the destination itself says it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    pub destination_id: i64,
    pub status: String,
    pub consecutive_failures: i32,
    pub total_failures: i64,
    pub total_deliveries: i64,
    /// Percentage of successful attempts.
    pub success_rate: Option<f64>,
    /// Milliseconds, over all attempts.
    pub average_response_time: Option<i32>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub circuit_breaker_state: String,
    pub circuit_breaker_opened_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// The health of a destination of the organization (`None`: no such
/// destination). Whether it is disabled is read from the destination, never
/// from the figures the HealthActor writes a moment later: the two can never
/// disagree, whatever was written in between.
pub async fn health(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<Option<Health>, DbError> {
    let row = client
        .query_opt(
            "SELECT d.id AS destination_id, \
               CASE WHEN d.disabled THEN 'disabled' \
                 WHEN h.status IS NULL OR h.status = 'disabled' THEN 'healthy' ELSE h.status END AS status, \
               coalesce(h.consecutive_failures, 0) AS consecutive_failures, \
               coalesce(h.total_failures, 0) AS total_failures, \
               coalesce(h.total_deliveries, 0) AS total_deliveries, \
               h.success_rate, h.average_response_time, h.last_failure_at, h.last_success_at, \
               coalesce(h.circuit_breaker_state, 'closed') AS circuit_breaker_state, \
               h.circuit_breaker_opened_at, \
               CASE WHEN d.disabled THEN coalesce(h.disabled_at, d.disabled_at) END AS disabled_at, \
               CASE WHEN d.disabled THEN coalesce(h.disabled_reason, \
                 'disabled by ' || coalesce(d.disabled_by, 'an operator')) END AS disabled_reason, \
               greatest(h.updated_at, d.updated_at) AS updated_at \
             FROM delivery_destinations d \
             LEFT JOIN destination_health h \
               ON h.organization_id = d.organization_id AND h.destination_id = d.id \
             WHERE d.organization_id = $1 AND d.id = $2 AND d.deleted_at IS NULL",
            &[&organization_id, &id],
        )
        .await?;
    Ok(row.map(|row| Health {
        destination_id: row.get("destination_id"),
        status: row.get("status"),
        consecutive_failures: row.get("consecutive_failures"),
        total_failures: row.get("total_failures"),
        total_deliveries: row.get("total_deliveries"),
        success_rate: row.get("success_rate"),
        average_response_time: row.get("average_response_time"),
        last_failure_at: row.get("last_failure_at"),
        last_success_at: row.get("last_success_at"),
        circuit_breaker_state: row.get("circuit_breaker_state"),
        circuit_breaker_opened_at: row.get("circuit_breaker_opened_at"),
        disabled_at: row.get("disabled_at"),
        disabled_reason: row.get("disabled_reason"),
        updated_at: row.get("updated_at"),
    }))
}

/// Attempts on one destination not yet folded into `destination_health`.
#[derive(Debug)]
pub struct HealthBatch {
    pub organization_id: String,
    pub destination_id: i64,
    pub attempts: i64,
    pub failures: i64,
    /// Milliseconds, summed over the attempts.
    pub latency_sum: i64,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Failures since the batch's last success (or all of them).
    pub trailing_failures: i64,
    pub breaker_state: &'static str,
}

impl HealthBatch {
    pub fn new(destination: &DestinationKey) -> Self {
        Self {
            organization_id: destination.organization_id.clone(),
            destination_id: destination.id,
            attempts: 0,
            failures: 0,
            latency_sum: 0,
            last_success_at: None,
            last_failure_at: None,
            trailing_failures: 0,
            breaker_state: "closed",
        }
    }

    /// Every attempt either delivered or failed.
    fn any_success(&self) -> bool {
        self.attempts > self.failures
    }

    /// Adds `later`: the same destination's attempts that ended after these.
    pub fn absorb(&mut self, later: HealthBatch) {
        self.attempts += later.attempts;
        self.failures += later.failures;
        self.latency_sum += later.latency_sum;
        self.last_success_at = later.last_success_at.or(self.last_success_at);
        self.last_failure_at = later.last_failure_at.or(self.last_failure_at);
        self.trailing_failures = if later.any_success() {
            later.trailing_failures
        } else {
            self.trailing_failures + later.trailing_failures
        };
        self.breaker_state = later.breaker_state;
    }
}

/// Folds batches of attempts, at most one per destination, into
/// `destination_health` (running totals and averages) and the destinations'
/// usage counts: one transaction of two statements however many destinations
/// there are, rather than a statement and a commit per destination. The first
/// creates the health rows that do not exist yet, so that the second can fold
/// every batch in as an update. Destinations that no longer exist are skipped.
pub async fn record_attempts(
    client: &mut tokio_postgres::Client,
    batches: &[HealthBatch],
) -> Result<(), DbError> {
    let organizations: Vec<&str> = batches.iter().map(|b| b.organization_id.as_str()).collect();
    let ids: Vec<i64> = batches.iter().map(|b| b.destination_id).collect();
    let attempts: Vec<i64> = batches.iter().map(|b| b.attempts).collect();
    let failures: Vec<i64> = batches.iter().map(|b| b.failures).collect();
    let latency_sums: Vec<i64> = batches.iter().map(|b| b.latency_sum).collect();
    let last_failures: Vec<Option<DateTime<Utc>>> =
        batches.iter().map(|b| b.last_failure_at).collect();
    let last_successes: Vec<Option<DateTime<Utc>>> =
        batches.iter().map(|b| b.last_success_at).collect();
    let trailing: Vec<i64> = batches.iter().map(|b| b.trailing_failures).collect();
    let states: Vec<&str> = batches.iter().map(|b| b.breaker_state).collect();
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "INSERT INTO destination_health (destination_id, organization_id) \
             SELECT d.id, d.organization_id FROM delivery_destinations d \
             JOIN unnest($1::text[], $2::int8[]) AS k(organization_id, id) \
               ON d.organization_id = k.organization_id AND d.id = k.id \
             ORDER BY d.organization_id, d.id ON CONFLICT (organization_id, destination_id) DO NOTHING",
            &[&organizations, &ids],
        )
        .await?;
    transaction
        .execute(
            "WITH b AS ( \
               SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::timestamptz[], \
                 $6::timestamptz[], $7::int8[], $8::text[], $9::text[]) \
                 AS b(destination_id, attempts, failures, latency_sum, last_failure_at, last_success_at, \
                   trailing_failures, breaker_state, organization_id)), \
             usage AS ( \
               UPDATE delivery_destinations d SET count_usage = d.count_usage + b.attempts, last_used_at = now() \
               FROM b WHERE d.organization_id = b.organization_id AND d.id = b.destination_id) \
             UPDATE destination_health h SET \
               last_check_at = now(), \
               consecutive_failures = CASE WHEN b.attempts > b.failures THEN b.trailing_failures \
                 ELSE h.consecutive_failures + b.trailing_failures END, \
               total_failures = h.total_failures + b.failures, \
               total_deliveries = h.total_deliveries + b.attempts, \
               success_rate = 100.0 * (h.total_deliveries + b.attempts - h.total_failures - b.failures) \
                 / (h.total_deliveries + b.attempts), \
               average_response_time = ((coalesce(h.average_response_time, 0)::bigint * h.total_deliveries \
                 + b.latency_sum) / (h.total_deliveries + b.attempts))::int, \
               last_failure_at = coalesce(b.last_failure_at, h.last_failure_at), \
               last_success_at = coalesce(b.last_success_at, h.last_success_at), \
               status = CASE WHEN h.status = 'disabled' THEN 'disabled' WHEN b.breaker_state = 'open' THEN 'unhealthy' \
                 WHEN b.trailing_failures > 0 THEN 'degraded' ELSE 'healthy' END, \
               circuit_breaker_opened_at = CASE WHEN b.breaker_state = 'open' AND h.circuit_breaker_state <> 'open' \
                 THEN now() WHEN b.breaker_state = 'open' THEN h.circuit_breaker_opened_at END, \
               circuit_breaker_state = b.breaker_state, \
               updated_at = now() \
             FROM b WHERE h.organization_id = b.organization_id AND h.destination_id = b.destination_id",
            &[
                &ids,
                &attempts,
                &failures,
                &latency_sums,
                &last_failures,
                &last_successes,
                &trailing,
                &states,
                &organizations,
            ],
        )
        .await?;
    transaction.commit().await?;
    Ok(())
}

/// A destination that is failing now: its settings, and since when it has had
/// no success (its last success, else its creation), or since it last
/// changed: a destination re-enabled (or mended) gets its whole
/// `auto_disable_after` again, instead of being disabled at its next
/// failure, or by a failure counted before the change, ahead of the
/// deliveries it held.
pub struct Failing {
    pub id: i64,
    pub organization_id: String,
    pub label: String,
    pub settings: Value,
    pub failing_since: DateTime<Utc>,
}

/// Enabled destinations whose last attempt failed.
pub async fn failing(client: &impl GenericClient) -> Result<Vec<Failing>, DbError> {
    let rows = client
        .query(
            "SELECT d.id, d.organization_id, d.label, d.settings, \
               greatest(coalesce(h.last_success_at, d.created_at), d.updated_at) AS since \
             FROM delivery_destinations d JOIN destination_health h \
               ON h.organization_id = d.organization_id AND h.destination_id = d.id \
             WHERE NOT d.disabled AND d.deleted_at IS NULL AND h.consecutive_failures > 0",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Failing {
            id: row.get("id"),
            organization_id: row.get("organization_id"),
            label: row.get("label"),
            settings: row.get::<_, Json<Value>>("settings").0,
            failing_since: row.get("since"),
        })
        .collect())
}

/// A destination whose circuit breaker has stayed open.
pub struct OpenBreaker {
    pub id: i64,
    pub organization_id: String,
    pub label: String,
    pub opened_at: DateTime<Utc>,
}

/// Enabled destinations whose breaker has been open longer than `open_for`.
pub async fn open_breakers(
    client: &impl GenericClient,
    open_for: std::time::Duration,
) -> Result<Vec<OpenBreaker>, DbError> {
    let rows = client
        .query(
            "SELECT d.id, d.organization_id, d.label, h.circuit_breaker_opened_at AS opened_at \
             FROM delivery_destinations d JOIN destination_health h \
               ON h.organization_id = d.organization_id AND h.destination_id = d.id \
             WHERE NOT d.disabled AND d.deleted_at IS NULL AND h.circuit_breaker_state = 'open' \
               AND h.circuit_breaker_opened_at < now() - make_interval(secs => $1)",
            &[&open_for.as_secs_f64()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| OpenBreaker {
            id: row.get("id"),
            organization_id: row.get("organization_id"),
            label: row.get("label"),
            opened_at: row.get("opened_at"),
        })
        .collect())
}

/// Disables a destination that kept failing and records why (the caller raises the alert).
pub async fn disable_failing(
    client: &impl GenericClient,
    destination: &Failing,
    reason: &str,
) -> Result<(), DbError> {
    // One statement: nobody sees the destination disabled and its health not.
    client
        .execute(
            "WITH disabled AS ( \
               UPDATE delivery_destinations SET disabled = true, disabled_at = now(), \
                 disabled_by = 'audit-worker', updated_at = now() \
               WHERE organization_id = $1 AND id = $2 AND NOT disabled) \
             UPDATE destination_health SET status = 'disabled', disabled_at = now(), disabled_reason = $3, \
               updated_at = now() WHERE organization_id = $1 AND destination_id = $2",
            &[&destination.organization_id, &destination.id, &reason],
        )
        .await?;
    Ok(())
}

/// A re-enabled destination of the organization starts healthy again.
pub async fn reset_health(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE destination_health SET status = 'healthy', consecutive_failures = 0, disabled_at = NULL, \
               disabled_reason = NULL, updated_at = now() WHERE organization_id = $1 AND destination_id = $2",
            &[&organization_id, &id],
        )
        .await?;
    Ok(())
}

/// Per destination not deleted: consecutive failures and whether its breaker
/// is open (for `/metrics`). A deleted destination keeps its health row, as its
/// history, but no series.
pub async fn health_snapshot(
    client: &impl GenericClient,
) -> Result<Vec<(i64, i32, bool)>, DbError> {
    let rows = client
        .query(
            "SELECT h.destination_id, h.consecutive_failures, h.circuit_breaker_state = 'open' \
             FROM destination_health h JOIN delivery_destinations d \
               ON d.organization_id = h.organization_id AND d.id = h.destination_id \
             WHERE d.deleted_at IS NULL",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(outcomes: &[bool]) -> HealthBatch {
        let mut batch = HealthBatch::new(&DestinationKey {
            organization_id: "org-a".to_owned(),
            id: 7,
        });
        for (n, &delivered) in outcomes.iter().enumerate() {
            let at = Some(DateTime::<Utc>::from_timestamp(n as i64, 0).unwrap());
            batch.attempts += 1;
            batch.latency_sum += 10;
            if delivered {
                batch.last_success_at = at;
                batch.trailing_failures = 0;
            } else {
                batch.failures += 1;
                batch.last_failure_at = at;
                batch.trailing_failures += 1;
            }
        }
        batch
    }

    #[test]
    fn absorbing_a_later_batch_counts_failures_since_the_last_success() {
        let mut earlier = batch(&[true, false]);
        earlier.absorb(batch(&[false, false]));
        assert_eq!(
            (earlier.attempts, earlier.failures, earlier.latency_sum),
            (4, 3, 40)
        );
        assert_eq!(earlier.trailing_failures, 3);
        assert!(earlier.any_success());

        let mut failing = batch(&[false]);
        let mut later = batch(&[false, true, false]);
        later.breaker_state = "half-open";
        failing.absorb(later);
        assert_eq!(
            failing.trailing_failures, 1,
            "a later success resets the count"
        );
        assert!(failing.any_success());
        assert_eq!(failing.breaker_state, "half-open");
        assert_eq!(
            failing.last_success_at,
            DateTime::<Utc>::from_timestamp(1, 0),
            "the later batch's times win"
        );
    }
}
