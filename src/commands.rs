//! The command line's commands: each runs one operation and prints what came
//! of it, data on stdout (tab-separated rows with a header, or JSON) and notes
//! on stderr. `main` parses the command line and calls one of these.

use std::fmt::Display;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::admin::{self, AdminError};
use crate::auth::{GracePeriod, KeyRequest};
use crate::config::{Config, ProductionRefusals};
use crate::db::migrations::{self, MigrationError};
use crate::db::performance::PerformanceReport;
use crate::db::{self, DbError};
use crate::integrity::witness::{self, FetchError, Source};
use crate::{Application, StartupError};

/// A command's failure. Messages name only their own step: `main` prints the
/// whole chain of causes after them.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error("cannot start")]
    Start(#[source] StartupError),
    #[error("cannot listen for SIGHUP")]
    Signal(#[source] std::io::Error),
    #[error("stopped with an error")]
    Stopped(#[source] StartupError),
    #[error(transparent)]
    Checkpoint(#[from] FetchError),
    #[error("cannot write the output")]
    Output(#[from] serde_json::Error),
    /// An argument clap could read but not accept.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Unsafe(#[from] ProductionRefusals),
}

/// Serves until SIGTERM/SIGINT; `file` is read again on SIGHUP.
pub async fn serve(config: Config, file: Option<PathBuf>) -> Result<(), CommandError> {
    let app = Application::build_with_config_file(config, file)
        .await
        .map_err(CommandError::Start)?;
    app.reload_on_sighup().map_err(CommandError::Signal)?;
    app.run_until_stopped().await.map_err(CommandError::Stopped)
}

pub async fn migrate(config: &Config) -> Result<(), CommandError> {
    db::ensure_database(&config.database).await?;
    let applied = migrations::run(&config.database).await?;
    if applied.is_empty() {
        println!("database is up to date");
    }
    for name in applied {
        println!("applied {name}");
    }
    Ok(())
}

/// Prints the effective configuration as JSON, URLs with their passwords
/// masked; then, on stderr, how the database connection is secured, from one
/// connection. A database that cannot be reached leaves the configuration
/// valid; a failed TLS negotiation does not (it will not heal by waiting).
pub async fn check_config(config: &Config) -> Result<(), CommandError> {
    config.check_production()?;
    let rendered = serde_json::to_string_pretty(config)?;
    println!("configuration is valid\n{rendered}");
    match db::connection_tls(&config.database).await {
        Ok(state) => eprintln!("database: {}", state.describe()),
        Err(error @ DbError::Tls { .. }) => return Err(error.into()),
        Err(DbError::Postgres(error)) => {
            eprintln!("database: could not connect ({})", with_causes(&error))
        }
        Err(error) => eprintln!("database: could not connect ({error})"),
    }
    Ok(())
}

/// `error: cause: cause…` (tokio-postgres's own display names only its kind).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// Prints the verification report; `Ok(valid)`. `checkpoint`: a file, or a
/// URL where a witness keeps it (see [`Source::parse`]), read first.
pub async fn verify(
    config: &Config,
    organization_id: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    checkpoint: Option<&Source>,
) -> Result<bool, CommandError> {
    let checkpoint = match checkpoint {
        Some(source) => Some(witness::fetch(source).await?),
        None => None,
    };
    let report = admin::verify(config, organization_id, from, to, checkpoint.as_ref()).await?;
    print_json(&report)?;
    Ok(report.valid)
}

/// Prints what the rotation did (never a key).
pub async fn rotate_signing_key(
    config: &Config,
    out: Option<&std::path::Path>,
) -> Result<(), CommandError> {
    print_json(&admin::rotate_signing_key(config, out).await?)
}

/// Prints how many values were re-sealed, per organization.
pub async fn rotate_encryption_keys(config: &Config) -> Result<(), CommandError> {
    print_json(&admin::rotate_encryption_keys(config).await?)
}

/// Prints the key, and only it, on stdout: it is shown this once.
pub async fn create_api_key(config: &Config, request: &KeyRequest<'_>) -> Result<(), CommandError> {
    println!("{}", admin::issue_api_key(config, request).await?.key);
    Ok(())
}

/// Prints the new key, and only it, on stdout; when the old secret ends on stderr.
pub async fn rotate_api_key(
    config: &Config,
    organization_id: Option<&str>,
    id: &str,
    grace: GracePeriod,
) -> Result<(), CommandError> {
    let rotated = admin::rotate_api_key(config, organization_id, id, grace).await?;
    println!("{}", rotated.key);
    if let Some(until) = rotated.info.previous_secret_expires_at {
        eprintln!(
            "rotated {id}; the previous secret works until {}",
            until.to_rfc3339()
        );
    }
    Ok(())
}

pub async fn list_api_keys(
    config: &Config,
    organization_id: Option<&str>,
) -> Result<(), CommandError> {
    println!("id\torganization_id\trole\tname\tcreated_at\texpires_at\tlast_used_at\trevoked_at");
    let time = |at: Option<DateTime<Utc>>| at.map(|at| at.to_rfc3339()).unwrap_or_default();
    for key in admin::list_api_keys(config, organization_id).await? {
        print_row(&[
            &key.id,
            &key.organization_id,
            &key.role,
            &key.name.unwrap_or_default(),
            &key.created_at.to_rfc3339(),
            &time(key.expires_at),
            &time(key.last_used_at),
            &time(key.revoked_at),
        ]);
    }
    Ok(())
}

pub async fn revoke_api_key(config: &Config, id: &str) -> Result<(), CommandError> {
    let key = admin::revoke_api_key(config, id).await?;
    eprintln!("revoked {} ({}, {})", key.id, key.organization_id, key.role);
    Ok(())
}

pub async fn list_partitions(config: &Config) -> Result<(), CommandError> {
    println!("name\tmonth\tbytes\trows_estimate");
    for partition in admin::list_partitions(config).await? {
        print_row(&[
            &partition.name,
            &partition.month,
            &partition.bytes,
            &partition.rows_estimate,
        ]);
    }
    Ok(())
}

pub async fn ensure_partitions(config: &Config) -> Result<(), CommandError> {
    let created = admin::ensure_partitions(config).await?;
    eprintln!("created {} partitions", created.len());
    for name in created {
        println!("{name}");
    }
    Ok(())
}

pub async fn drop_expired_partitions(config: &Config, dry_run: bool) -> Result<(), CommandError> {
    for expired in admin::drop_expired_partitions(config, dry_run).await? {
        let what = match (expired.dropped, expired.holds_rows) {
            (true, _) => "dropped",
            (false, true) => "kept: still holds rows",
            (false, false) => "would be dropped",
        };
        println!("{}\t{what}", expired.name);
    }
    Ok(())
}

pub async fn run_archival(config: &Config, dry_run: bool) -> Result<(), CommandError> {
    print_json(&admin::run_archival(config, dry_run).await?)
}

pub async fn list_archives(config: &Config) -> Result<(), CommandError> {
    println!(
        "id\torganization_id\tevents\tfirst_event_at\tlast_event_at\tcompressed_bytes\tcreated_at\t\
         store\tobject_key"
    );
    for archive in admin::list_archives(config).await? {
        print_row(&[
            &archive.id,
            &archive.organization_id,
            &archive.event_count,
            &archive.first_event_at.to_rfc3339(),
            &archive.last_event_at.to_rfc3339(),
            &archive.metadata["compressed_bytes"],
            &archive.created_at.to_rfc3339(),
            &archive.store,
            &archive.object_key.as_deref().unwrap_or("-"),
        ]);
    }
    Ok(())
}

pub async fn restore_archive(config: &Config, id: uuid::Uuid) -> Result<(), CommandError> {
    let restored = admin::restore_archive(config, id).await?;
    eprintln!("restored {restored} events from archive {id}");
    Ok(())
}

/// The performance report, as JSON or for a person.
pub async fn database_report(config: &Config, json: bool) -> Result<(), CommandError> {
    let report = admin::performance_report(config).await?;
    if json {
        return print_json(&report);
    }
    print_report(&report);
    Ok(())
}

pub async fn maintain_database(config: &Config) -> Result<(), CommandError> {
    match admin::maintain_database(config).await? {
        Some(run) => print_json(&run),
        None => {
            eprintln!("another instance is running database maintenance; nothing done");
            Ok(())
        }
    }
}

/// Recorded configuration changes, newest first: tab-separated, or one JSON object a line.
pub async fn config_history(config: &Config, limit: i64, json: bool) -> Result<(), CommandError> {
    let changes = admin::config_history(config, limit).await?;
    if json {
        for change in changes {
            println!("{}", serde_json::to_string(&change)?);
        }
        return Ok(());
    }
    println!("timestamp\tfield\tprevious_value\tnew_value\tchanged_by\treason\tenvironment\tprevious_version\tnew_version");
    let json = |value: Option<serde_json::Value>| value.map(|v| v.to_string()).unwrap_or_default();
    for change in changes {
        print_row(&[
            &change.timestamp.to_rfc3339(),
            &change.field,
            &json(change.previous_value),
            &json(change.new_value),
            &change.changed_by,
            &change.reason.unwrap_or_default().replace(['\t', '\n'], " "),
            &change.environment.unwrap_or_default(),
            &change.previous_version.unwrap_or_default(),
            &change.new_version.unwrap_or_default(),
        ]);
    }
    Ok(())
}

/// One row of tab-separated output.
fn print_row(cells: &[&dyn Display]) {
    let cells: Vec<String> = cells.iter().map(|cell| cell.to_string()).collect();
    println!("{}", cells.join("\t"));
}

fn print_json(value: &impl Serialize) -> Result<(), CommandError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The report for a person: one section per heading, tab-separated rows.
fn print_report(report: &PerformanceReport) {
    println!(
        "database {} at {}",
        report.database,
        report.generated_at.to_rfc3339()
    );
    let slow = &report.slow_queries;
    println!("\n# slow queries (mean over {} ms)", slow.threshold_ms);
    if slow.available {
        for query in &slow.queries {
            println!(
                "{:.1} ms mean\t{} calls\t{}",
                query.mean_ms,
                query.calls,
                query.query.replace('\n', " ")
            );
        }
    } else {
        println!(
            "unavailable: {}; to enable: {}",
            slow.reason.as_deref().unwrap_or_default(),
            slow.how_to_enable.unwrap_or_default()
        );
    }
    println!("\n# unused indexes (table, index, bytes)");
    for index in &report.indexes.unused {
        println!("{}\t{}\t{}", index.table, index.index, index.size_bytes);
    }
    println!("\n# tables (table, partition of, rows, bytes, dead tuples, seq scans, index scans)");
    for table in &report.tables {
        print_row(&[
            &table.table,
            &table.partition_of.as_deref().unwrap_or("-"),
            &table.rows_estimate,
            &table.total_bytes,
            &table.dead_tuples,
            &table.seq_scans,
            &table.index_scans,
        ]);
    }
    let ratio = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.4}"));
    println!(
        "\n# cache hit ratio\theap {}\tindex {}",
        ratio(report.cache_hit_ratio.heap),
        ratio(report.cache_hit_ratio.index)
    );
    let connections = &report.connections;
    println!(
        "\n# connections\tpool open {} idle {} max {}",
        connections.pool_open, connections.pool_idle, connections.pool_max
    );
    for state in &connections.server_by_state {
        println!("server {}\t{}", state.state, state.count);
    }
    println!("\n# suggested indexes");
    for suggestion in &report.suggested_indexes {
        println!("{}\t{}", suggestion.table, suggestion.reason);
    }
    println!("\n# last maintenance runs (id, started, trigger, actions, error)");
    for run in &report.maintenance_runs {
        print_row(&[
            &run.id,
            &run.started_at.to_rfc3339(),
            &run.trigger,
            &run.actions.as_array().map_or(0, Vec::len),
            &run.error.as_deref().unwrap_or("-"),
        ]);
    }
}
