//! The `audit-worker` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use audit_worker::auth::{self, GracePeriod, KeyRequest};
use audit_worker::commands::{self, CommandError};
use audit_worker::config::Config;
use audit_worker::integrity::witness::Source;
use audit_worker::telemetry;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: each delivery makes dozens of
/// small allocations (rows, JSON, HTTP headers), and glibc's malloc and free
/// took about a quarter of the worker's CPU in a delivery drain (perf).
///
/// Built without transparent huge pages (`no_thp`), and told to give freed
/// memory back at once ([`return_freed_memory_promptly`]): a heap profile
/// of a million ingested events showed 13 MB live and a 75 MB peak, while
/// the resident memory stayed at 175 MB, mimalloc keeping what the peak had
/// used, in huge pages it could not give back in part (benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 3's `mi_option_purge_delay` (its place in `mi_option_e`), which
/// the sys crate leaves unnamed as not stable across versions; the memory
/// bench shows whether it still holds.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed pages go back to the system at once rather than after mimalloc's
/// delay, so that memory falls back after a burst of large batches.
fn return_freed_memory_promptly() {
    // SAFETY: sets one integer option; mimalloc reads it at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

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
    /// Validate the configuration and print the effective values (passwords masked),
    /// then say on stderr how the database connection is secured.
    CheckConfig,
    /// Issue, list, rotate and revoke API keys.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Rotate the worker's own keys (checkpoint signing, encryption at rest).
    #[command(subcommand)]
    Keys(KeysCommand),
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
        /// it, or as a witness destination receives it); the chain must still
        /// reach it. A file, an https:// URL (http:// only to loopback), or
        /// s3://BUCKET/KEY (endpoint, region and credentials from the AWS
        /// environment: AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID...).
        #[arg(long, value_name = "FILE|URL", value_parser = Source::parse)]
        checkpoint: Option<Source>,
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
        /// The key stops working this long from now (`90d`, `12h`, `1y`).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "expires_at")]
        expires_in: Option<Duration>,
        /// The key stops working at this time (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        expires_at: Option<DateTime<Utc>>,
    },
    /// List keys (never their secrets), one per line, tab-separated.
    List {
        /// Only this organization's keys.
        #[arg(long, value_name = "ORG_ID")]
        org: Option<String>,
    },
    /// Revoke a key by its id (the part after `awk_`, before the next `_`).
    Revoke { id: String },
    /// Give a key a new secret and print the new key, and only it, on stdout:
    /// same id, role and expiry. The replaced secret works for the grace
    /// period; rotating again within it ends the older replaced secret at once.
    Rotate {
        /// The key's id (the part after `awk_`, before the next `_`).
        id: String,
        /// Refuse unless the key belongs to this organization.
        #[arg(long, value_name = "ORG_ID")]
        org: Option<String>,
        /// How long the replaced secret keeps working (at most 30 days; `0s`: not at all).
        #[arg(long, value_name = "DURATION", value_parser = GracePeriod::parse, default_value = "24h")]
        grace_period: GracePeriod,
    },
}

/// `--expires-in` as an instant.
fn expires_in_from_now(after: Duration) -> Result<DateTime<Utc>, CommandError> {
    auth::instant_after(Utc::now(), after)
        .map_err(|problem| CommandError::Usage(format!("--expires-in: {problem}")))
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Rotate a key as a recorded operation; prints what was done as JSON.
    /// signing: a new checkpoint-signing key, registered so that what the old
    /// one signed still verifies, stored where integrity.signing_key points
    /// (the database for a generated key, its file:PATH, or --out FILE).
    /// encryption: re-seals destination secrets and pseudonym originals under
    /// the current encryption keys (a generated key is replaced first).
    Rotate {
        #[arg(long, value_enum)]
        kind: KeyKind,
        /// Where to write the new signing key (base64, mode 0600) instead of
        /// where integrity.signing_key points.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KeyKind {
    Signing,
    Encryption,
}

fn main() -> ExitCode {
    return_freed_memory_promptly();
    let cli = Cli::parse();
    let config = match audit_worker::load_config(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Command::Serve | Command::Migrate) {
        telemetry::init(&config.log);
    }
    // An actix system: the worker's actors and clients need one.
    match actix_web::rt::System::new().block_on(run(config, cli.config, cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {:#}", anyhow::Error::from(error));
            ExitCode::FAILURE
        }
    }
}

/// Runs `command`; it fails (exit 1) with an error, or when verification finds a problem.
async fn run(
    config: Config,
    file: Option<PathBuf>,
    command: Command,
) -> Result<ExitCode, CommandError> {
    let config = &config;
    match command {
        Command::CheckConfig => commands::check_config(config).await,
        Command::Verify {
            org,
            from,
            to,
            checkpoint,
        } => {
            let valid = commands::verify(config, &org, from, to, checkpoint.as_ref()).await?;
            return Ok(if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Serve => commands::serve(config.clone(), file).await,
        Command::Migrate => commands::migrate(config).await,
        Command::ApiKey(ApiKeyCommand::Create {
            org,
            role,
            name,
            expires_in,
            expires_at,
        }) => {
            let expires_at = match expires_in {
                Some(after) => Some(expires_in_from_now(after)?),
                None => expires_at,
            };
            let request = KeyRequest {
                organization_id: &org,
                role: &role,
                name: name.as_deref(),
                expires_at,
            };
            commands::create_api_key(config, &request).await
        }
        Command::ApiKey(ApiKeyCommand::Rotate {
            id,
            org,
            grace_period,
        }) => commands::rotate_api_key(config, org.as_deref(), &id, grace_period).await,
        Command::ApiKey(ApiKeyCommand::List { org }) => {
            commands::list_api_keys(config, org.as_deref()).await
        }
        Command::ApiKey(ApiKeyCommand::Revoke { id }) => {
            commands::revoke_api_key(config, &id).await
        }
        Command::Keys(KeysCommand::Rotate {
            kind: KeyKind::Signing,
            out,
        }) => commands::rotate_signing_key(config, out.as_deref()).await,
        Command::Keys(KeysCommand::Rotate {
            kind: KeyKind::Encryption,
            out: Some(_),
        }) => Err(CommandError::Usage(
            "--out applies to --kind signing only: encryption keys are configured, or kept in the database"
                .to_owned(),
        )),
        Command::Keys(KeysCommand::Rotate {
            kind: KeyKind::Encryption,
            out: None,
        }) => commands::rotate_encryption_keys(config).await,
        Command::Partitions(PartitionsCommand::List) => commands::list_partitions(config).await,
        Command::Partitions(PartitionsCommand::Ensure) => commands::ensure_partitions(config).await,
        Command::Partitions(PartitionsCommand::DropExpired { dry_run }) => {
            commands::drop_expired_partitions(config, dry_run).await
        }
        Command::Archive(ArchiveCommand::Run { dry_run }) => {
            commands::run_archival(config, dry_run).await
        }
        Command::Archive(ArchiveCommand::List) => commands::list_archives(config).await,
        Command::Archive(ArchiveCommand::Restore { id }) => {
            commands::restore_archive(config, id).await
        }
        Command::Db(DbCommand::Report { json }) => commands::database_report(config, json).await,
        Command::Db(DbCommand::Maintain) => commands::maintain_database(config).await,
        Command::Config(ConfigCommand::History { limit, json }) => {
            commands::config_history(config, limit, json).await
        }
    }?;
    Ok(ExitCode::SUCCESS)
}
