//! Database maintenance: `ANALYZE` on the audit tables (audit_log's
//! partitions through their parent), and `VACUUM (ANALYZE)` on each table or
//! partition whose dead tuples exceed `operations.vacuum_dead_ratio` of its
//! live ones. One worker instance at a time: a session-level advisory lock on
//! a dedicated connection, which also runs the statements (VACUUM cannot run
//! inside a transaction, and a pooled connection would be held for minutes).
//! Every run is recorded in `maintenance_runs`.

use std::time::Instant;

use serde_json::{json, Value};

use crate::config::Config;
use crate::db::locks::{self, Round};
use crate::db::maintenance_runs::{self, MaintenanceRun};
use crate::db::{self, DbError};

/// The tables maintenance looks after (those that grow with the audit trail).
pub const AUDIT_TABLES: &[&str] = &[
    "audit_log",
    "audit_integrity_log",
    "alerts",
    "delivery_queue",
    "delivery_logs",
    "error_log",
    "error_aggregation",
];

/// What started a run.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Schedule,
    Operator,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Operator => "operator",
        }
    }
}

/// A run's outcome: `None` when another instance held the lock.
pub type Outcome = Option<MaintenanceRun>;

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error(transparent)]
    Database(#[from] DbError),
    /// The run was recorded with its error (run id, the error).
    #[error("maintenance run {0} failed: {1}")]
    Failed(i64, String),
}

/// This process, as `maintenance_runs.instance` names it.
fn instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "worker".to_owned());
    format!("{host}:{}", std::process::id())
}

/// Runs maintenance now unless another instance is; records what it did.
pub async fn run(config: &Config, trigger: Trigger) -> Result<Outcome, MaintenanceError> {
    let session = db::connect(&config.database, &config.database.url)
        .await
        .map_err(DbError::from)?;
    if !locks::try_lock(&session, Round::DatabaseMaintenance).await? {
        return Ok(None);
    }
    let id = maintenance_runs::start(&session, &instance(), trigger.as_str()).await?;
    let mut actions = Vec::new();
    let outcome = maintain(&session, config.operations.vacuum_dead_ratio, &mut actions).await;
    let error = outcome.err().map(|error| error.to_string());
    let recorded =
        maintenance_runs::finish(&session, id, &Value::from(actions), error.as_deref()).await?;
    // Closing the session releases the lock.
    drop(session);
    match error {
        Some(error) => Err(MaintenanceError::Failed(id, error)),
        None => Ok(Some(recorded)),
    }
}

async fn maintain(
    session: &tokio_postgres::Client,
    dead_ratio: f64,
    actions: &mut Vec<Value>,
) -> Result<(), DbError> {
    let tables: Vec<String> = AUDIT_TABLES.iter().map(|name| (*name).to_owned()).collect();
    // Quoted by PostgreSQL itself (format %I), from the catalog, for the tables that exist.
    let existing = session
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), c.relname::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = ANY($1) AND n.nspname = current_schema()
             ORDER BY c.relname",
            &[&tables],
        )
        .await?;
    for row in &existing {
        let (quoted, name): (String, String) = (row.get(0), row.get(1));
        let started = Instant::now();
        session.batch_execute(&format!("ANALYZE {quoted}")).await?;
        actions.push(json!({
            "table": name,
            "action": "ANALYZE",
            "ms": started.elapsed().as_millis() as u64,
        }));
    }
    // Leaf tables (audit_log's partitions, not the partitioned parent) with too many dead tuples.
    let bloated = session
        .query(
            "SELECT format('%I.%I', s.schemaname, s.relname), s.relname::text,
                    s.n_dead_tup, s.n_live_tup
             FROM pg_stat_user_tables s
             WHERE (s.relname = ANY($1) AND s.schemaname = current_schema()
                    OR s.relid IN (SELECT inhrelid FROM pg_inherits
                                   WHERE inhparent = to_regclass('audit_log')))
               AND s.n_dead_tup > 0
               AND s.n_dead_tup > $2::float8 * s.n_live_tup
             ORDER BY s.relname",
            &[&tables, &dead_ratio],
        )
        .await?;
    for row in &bloated {
        let (quoted, name, dead, live): (String, String, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let started = Instant::now();
        session
            .batch_execute(&format!("VACUUM (ANALYZE) {quoted}"))
            .await?;
        actions.push(json!({
            "table": name,
            "action": "VACUUM (ANALYZE)",
            "dead_tuples": dead,
            "live_tuples": live,
            "ms": started.elapsed().as_millis() as u64,
        }));
    }
    Ok(())
}
