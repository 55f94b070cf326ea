//! The `audit-worker` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use audit_worker::config::Config;
use audit_worker::db::performance::PerformanceReport;
use audit_worker::integrity::checkpoint::SignedCheckpoint;
use audit_worker::{admin, db, telemetry, Application};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: each delivery makes dozens of
/// small allocations (rows, JSON, HTTP headers), and glibc's malloc and free
/// took about a quarter of the worker's CPU in a delivery drain (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "audit-worker",
    version,
    about = "Tamper-evident, multi-tenant audit trail worker"
)]
struct Cli {
    /// Configuration file (TOML). Default: ./config.toml when present; the
    /// compiled-in defaults otherwise. AUDIT_WORKER__SECTION__KEY variables override it.
    #[arg(long, global = true, env = "AUDIT_WORKER_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create and migrate the database if needed, then run the worker until SIGTERM/SIGINT.
    Serve,
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate,
    /// Validate the configuration and print the effective values (passwords masked).
    CheckConfig,
    /// Issue, list and revoke API keys.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Verify an organization's events and hash chain; prints the report as JSON
    /// and exits 1 when anything is wrong.
    Verify {
        #[arg(long, value_name = "ORG_ID")]
        org: String,
        /// Only events from this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        from: Option<DateTime<Utc>>,
        /// Only events before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        to: Option<DateTime<Utc>>,
        /// A checkpoint kept outside (JSON as GET /v1/integrity/checkpoints returns
        /// it); the chain must still reach it.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
    /// Inspect and maintain the monthly partitions of audit_log.
    #[command(subcommand)]
    Partitions(PartitionsCommand),
    /// Archive aged events, list archives, restore one.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// Database performance report and maintenance.
    #[command(subcommand)]
    Db(DbCommand),
    /// The history of configuration changes (reloads on SIGHUP).
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum DbCommand {
    /// Slow statements, index usage, table statistics, cache hit ratio,
    /// connections, suggested indexes and the last maintenance runs.
    Report {
        /// Print the whole report as JSON (as GET /v1/admin/performance gives it).
        #[arg(long)]
        json: bool,
    },
    /// Run database maintenance now (ANALYZE; VACUUM where dead tuples pile up),
    /// unless another instance is running it.
    Maintain,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Recorded changes, newest first, tab-separated (values as JSON, secrets
    /// masked): time, field, previous, new, changed_by, reason, environment,
    /// previous_version, new_version.
    History {
        /// How many changes at most.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        limit: i64,
        /// One JSON object per line instead.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PartitionsCommand {
    /// List partitions (name, month, bytes, estimated rows), tab-separated.
    List,
    /// Create the partitions from this month to `partitions.months_ahead` ahead.
    Ensure,
    /// Drop the empty partitions past every retention period and legal hold.
    DropExpired {
        /// Only list what would be dropped.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum ArchiveCommand {
    /// Archive every organization's events past their policy's archive_after_days.
    Run {
        /// Only count the events that would be archived.
        #[arg(long)]
        dry_run: bool,
    },
    /// List archives (never their contents), tab-separated.
    List,
    /// Put an archive's events back into the live table and delete the archive.
    Restore { id: uuid::Uuid },
}

fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| format!("not an RFC 3339 date-time: {error}"))
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Issue a key and print it, and only it, on stdout (it is shown this once).
    Create {
        /// Organization the key belongs to.
        #[arg(long, value_name = "ORG_ID")]
        org: String,
        /// Role of the key: a built-in role (org:owner, org:admin, org:member,
        /// auditor, ingest) or a custom role of the organization.
        #[arg(long)]
        role: String,
        /// A label for people.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (never their secrets), one per line, tab-separated.
    List {
        /// Only this organization's keys.
        #[arg(long, value_name = "ORG_ID")]
        org: Option<String>,
    },
    /// Revoke a key by its id (the part after `awk_`, before the next `_`).
    Revoke { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match audit_worker::load_config(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::CheckConfig => check_config(&config),
        Command::ApiKey(command) => actix_web::rt::System::new().block_on(api_key(config, command)),
        Command::Verify {
            org,
            from,
            to,
            checkpoint,
        } => {
            match actix_web::rt::System::new().block_on(verify(config, org, from, to, checkpoint)) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(error) => Err(error),
            }
        }
        Command::Partitions(command) => {
            actix_web::rt::System::new().block_on(partitions(config, command))
        }
        Command::Archive(command) => {
            actix_web::rt::System::new().block_on(archive(config, command))
        }
        Command::Db(command) => actix_web::rt::System::new().block_on(database(config, command)),
        Command::Config(command) => {
            actix_web::rt::System::new().block_on(config_command(config, command))
        }
        Command::Serve => {
            telemetry::init(&config.log);
            actix_web::rt::System::new().block_on(serve(config, cli.config))
        }
        Command::Migrate => {
            telemetry::init(&config.log);
            actix_web::rt::System::new().block_on(migrate(config))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `file` is read again on SIGHUP.
async fn serve(config: Config, file: Option<PathBuf>) -> anyhow::Result<()> {
    let app = Application::build_with_config_file(config, file)
        .await
        .context("cannot start")?;
    app.reload_on_sighup().context("cannot listen for SIGHUP")?;
    app.run_until_stopped()
        .await
        .context("stopped with an error")
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    db::ensure_database(&config.database).await?;
    let applied = db::migrations::run(&config.database).await?;
    if applied.is_empty() {
        println!("database is up to date");
    } else {
        for name in applied {
            println!("applied {name}");
        }
    }
    Ok(())
}

/// Prints the effective configuration as JSON, URLs with their passwords masked.
/// Prints the report; `Ok(valid)`.
async fn verify(
    config: Config,
    org: String,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    checkpoint: Option<PathBuf>,
) -> anyhow::Result<bool> {
    let checkpoint = match checkpoint {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(
                parse_checkpoint(&text)
                    .with_context(|| format!("{} is not a checkpoint", path.display()))?,
            )
        }
    };
    let report = admin::verify(&config, &org, from, to, checkpoint.as_ref()).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report.valid)
}

/// A checkpoint as `{payload, signature}`, or a listed one with it under `checkpoint`.
fn parse_checkpoint(text: &str) -> anyhow::Result<SignedCheckpoint> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let inner = value.get("checkpoint").cloned().unwrap_or(value);
    Ok(serde_json::from_value(inner)?)
}

async fn api_key(config: Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::Create { org, role, name } => {
            let key = admin::create_api_key(&config, &org, &role, name.as_deref()).await?;
            println!("{key}");
        }
        ApiKeyCommand::List { org } => {
            println!("id\torganization_id\trole\tname\tcreated_at\trevoked_at");
            for key in admin::list_api_keys(&config, org.as_deref()).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    key.id,
                    key.organization_id,
                    key.role,
                    key.name.unwrap_or_default(),
                    key.created_at.to_rfc3339(),
                    key.revoked_at.map(|at| at.to_rfc3339()).unwrap_or_default()
                );
            }
        }
        ApiKeyCommand::Revoke { id } => {
            let key = admin::revoke_api_key(&config, &id).await?;
            eprintln!("revoked {} ({}, {})", key.id, key.organization_id, key.role);
        }
    }
    Ok(())
}

async fn partitions(config: Config, command: PartitionsCommand) -> anyhow::Result<()> {
    match command {
        PartitionsCommand::List => {
            println!("name\tmonth\tbytes\trows_estimate");
            for partition in admin::list_partitions(&config).await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    partition.name, partition.month, partition.bytes, partition.rows_estimate
                );
            }
        }
        PartitionsCommand::Ensure => {
            let created = admin::ensure_partitions(&config).await?;
            eprintln!("created {} partitions", created.len());
            for name in created {
                println!("{name}");
            }
        }
        PartitionsCommand::DropExpired { dry_run } => {
            for expired in admin::drop_expired_partitions(&config, dry_run).await? {
                let what = match (expired.dropped, expired.holds_rows) {
                    (true, _) => "dropped",
                    (false, true) => "kept: still holds rows",
                    (false, false) => "would be dropped",
                };
                println!("{}\t{what}", expired.name);
            }
        }
    }
    Ok(())
}

async fn archive(config: Config, command: ArchiveCommand) -> anyhow::Result<()> {
    match command {
        ArchiveCommand::Run { dry_run } => {
            let report = admin::run_archival(&config, dry_run).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        ArchiveCommand::List => {
            println!("id\torganization_id\tevents\tfirst_event_at\tlast_event_at\tcompressed_bytes\tcreated_at");
            for archive in admin::list_archives(&config).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    archive.id,
                    archive.organization_id,
                    archive.event_count,
                    archive.first_event_at.to_rfc3339(),
                    archive.last_event_at.to_rfc3339(),
                    archive.metadata["compressed_bytes"],
                    archive.created_at.to_rfc3339()
                );
            }
        }
        ArchiveCommand::Restore { id } => {
            let restored = admin::restore_archive(&config, id).await?;
            eprintln!("restored {restored} events from archive {id}");
        }
    }
    Ok(())
}

async fn database(config: Config, command: DbCommand) -> anyhow::Result<()> {
    match command {
        DbCommand::Report { json: true } => {
            let report = admin::performance_report(&config).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        DbCommand::Report { json: false } => {
            print_report(&admin::performance_report(&config).await?)
        }
        DbCommand::Maintain => match admin::maintain_database(&config).await? {
            Some(run) => println!("{}", serde_json::to_string_pretty(&run)?),
            None => eprintln!("another instance is running database maintenance; nothing done"),
        },
    }
    Ok(())
}

async fn config_command(config: Config, command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::History { limit, json } => {
            let changes = admin::config_history(&config, limit).await?;
            if json {
                for change in changes {
                    println!("{}", serde_json::to_string(&change)?);
                }
                return Ok(());
            }
            println!("timestamp\tfield\tprevious_value\tnew_value\tchanged_by\treason\tenvironment\tprevious_version\tnew_version");
            let json =
                |value: Option<serde_json::Value>| value.map(|v| v.to_string()).unwrap_or_default();
            for change in changes {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    change.timestamp.to_rfc3339(),
                    change.field,
                    json(change.previous_value),
                    json(change.new_value),
                    change.changed_by,
                    change.reason.unwrap_or_default().replace(['\t', '\n'], " "),
                    change.environment.unwrap_or_default(),
                    change.previous_version.unwrap_or_default(),
                    change.new_version.unwrap_or_default()
                );
            }
        }
    }
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
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            table.table,
            table.partition_of.as_deref().unwrap_or("-"),
            table.rows_estimate,
            table.total_bytes,
            table.dead_tuples,
            table.seq_scans,
            table.index_scans
        );
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
        println!(
            "{}\t{}\t{}\t{}\t{}",
            run.id,
            run.started_at.to_rfc3339(),
            run.trigger,
            run.actions.as_array().map_or(0, Vec::len),
            run.error.as_deref().unwrap_or("-")
        );
    }
}

fn check_config(config: &Config) -> anyhow::Result<()> {
    let rendered =
        serde_json::to_string_pretty(config).context("cannot render the configuration")?;
    println!("configuration is valid\n{rendered}");
    Ok(())
}
