//! PostgreSQL: the connection pool, database creation, migrations and the
//! liveness probe. Queries per table family join this module as they arrive.

pub mod alert_rules;
pub mod alert_windows;
pub mod alerts;
pub mod api_keys;
pub mod archives;
pub mod checkpoints;
pub mod config_changes;
pub mod connection;
pub mod console_sessions;
pub mod deletions;
pub mod deliveries;
pub mod destinations;
pub mod error_log;
pub mod events;
pub mod gdpr;
pub mod health;
pub mod histogram;
pub mod legal_holds;
pub mod locks;
pub mod maintenance_runs;
pub mod migrations;
pub mod partitions;
pub mod performance;
pub mod presets;
pub mod proofs;
pub mod report_sections;
pub mod reports;
pub mod retention;
pub mod roles;
pub mod signing_keys;
pub mod streams;
pub mod tenant;
pub mod tls;
pub mod trail;
pub mod tree;
pub mod verification;
pub mod witnesses;

use std::sync::Arc;
use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::error::SqlState;

use crate::config::{DatabaseConfig, PostgresUrl};
use health::DbHealth;
use tls::{SslMode, TlsFailure, TlsState};

/// The shared pool: the only PostgreSQL handle actors and handlers use.
#[derive(Clone)]
pub struct PgPool {
    pool: bb8::Pool<health::Manager>,
    health: Arc<DbHealth>,
}

/// A connection taken from the pool; back to it when dropped.
pub type PooledClient<'a> = bb8::PooledConnection<'a, health::Manager>;

impl PgPool {
    /// A pooled connection; at once [`DbError::Down`] while PostgreSQL is
    /// known to be unreachable, rather than after `database.connect_timeout`.
    ///
    /// A caller already waiting gives up as soon as a connection attempt
    /// fails, rather than at the end of its wait.
    pub async fn get(&self) -> Result<PooledClient<'_>, DbError> {
        let down = || DbError::Down {
            retry_after: health::PROBE_INTERVAL,
            cause: self.health.last_failure(),
        };
        let went_down = self.health.went_down();
        tokio::pin!(went_down);
        went_down.as_mut().enable();
        if self.health.is_down() {
            return Err(down());
        }
        tokio::select! {
            connection = self.pool.get() => Ok(connection?),
            () = went_down => Err(down()),
        }
    }

    /// Connections open and idle, for the metrics and the performance report.
    pub fn state(&self) -> bb8::State {
        self.pool.state()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("PostgreSQL at {url} did not answer within {waited:?}: {source}")]
    Unreachable {
        url: String,
        waited: Duration,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("cannot create database `{name}`: {source}")]
    CreateDatabase {
        name: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("no pooled PostgreSQL connection became available in time")]
    PoolTimeout,
    /// A connection attempt failed moments ago and no probe has succeeded
    /// since; `cause` says how it failed.
    #[error("PostgreSQL is unreachable: {cause}")]
    Down {
        retry_after: Duration,
        cause: String,
    },
    /// The TLS negotiation failed: the certificate or the server's offer does
    /// not meet `sslmode` (waiting will not change that).
    #[error("TLS handshake with {host} failed: {failure} (sslmode={mode})")]
    Tls {
        host: String,
        mode: SslMode,
        failure: TlsFailure,
    },
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
    #[error("PostgreSQL error: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A value the worker stored (or cached) could not be read back.
    #[error("cannot decode a stored value: {0}")]
    Decode(String),
}

/// Why a row named uniquely within its organization (a rule, a report, a
/// template) could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("the organization already has one named {0}")]
    NameTaken(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A unique violation is the name being taken; anything else is the database's.
pub(crate) fn save_error(error: tokio_postgres::Error, name: &str) -> SaveError {
    if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        SaveError::NameTaken(name.to_owned())
    } else {
        SaveError::Db(error.into())
    }
}

impl From<bb8::RunError<tokio_postgres::Error>> for DbError {
    fn from(error: bb8::RunError<tokio_postgres::Error>) -> Self {
        match error {
            bb8::RunError::User(error) => DbError::Postgres(error),
            bb8::RunError::TimedOut => DbError::PoolTimeout,
        }
    }
}

/// The server's code and message when there is one (tokio-postgres's own
/// display says only "db error").
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

impl DbError {
    /// Whether the error means PostgreSQL could not be reached or answered in
    /// time (worth a retry), rather than a problem with the statement itself.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unreachable { .. }
            | DbError::PoolTimeout
            | DbError::Timeout(_)
            | DbError::Down { .. }
            | DbError::Tls { .. } => true,
            DbError::Postgres(error) => connection_lost(error),
            DbError::CreateDatabase { .. } | DbError::Decode(_) => false,
        }
    }
}

/// Whether PostgreSQL could not be reached, or dropped the connection, rather
/// than refused a statement.
pub(crate) fn connection_lost(error: &tokio_postgres::Error) -> bool {
    let io = std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>());
    // Class 08: connection exception; 57P0x: server shutting down; 53: out of resources.
    let state = error.code().map_or("", |code| code.code());
    error.is_closed()
        || io
        || state.starts_with("08")
        || state.starts_with("57P0")
        || state.starts_with("53")
}

/// The connection settings every connection of ours uses.
fn connection_config(config: &DatabaseConfig, url: &PostgresUrl) -> tokio_postgres::Config {
    let mut pg = url.config().clone();
    pg.connect_timeout(config.connect_timeout);
    pg.application_name("audit-worker");
    pg
}

/// Builds the pool without connecting: connections open on first use, so a
/// PostgreSQL outage later on degrades requests instead of failing start-up.
pub fn pool(config: &DatabaseConfig) -> PgPool {
    let connect = connection_config(config, &config.url);
    let health = DbHealth::new(connect.clone(), config.url.clone());
    let manager = health::Manager {
        inner: PostgresConnectionManager::new(connect, config.url.tls().connector()),
        health: Arc::clone(&health),
    };
    let pool = bb8::Pool::builder()
        .max_size(config.pool_max_size)
        .connection_timeout(config.connect_timeout)
        .build_unchecked(manager);
    PgPool { pool, health }
}

const BOOKKEEPING_OPTIONS: &str =
    "-c synchronous_commit=off -c plan_cache_mode=force_generic_plan \
     -c enable_seqscan=off -c enable_bitmapscan=off -c jit=off";

/// Opens one connection whose commits do not wait for the WAL flush
/// (`synchronous_commit = off`), for the delivery queue's bookkeeping (see
/// [`deliveries::Bookkeeper`]): a lost commit only means a lease runs out and
/// the delivery is claimed again.
/// - Its statements are prepared once and keep their generic plans
///   (`plan_cache_mode = force_generic_plan`): a claim is planned once, not
///   on each call.
/// - Those plans may be made while the queue is empty or its statistics old,
///   so the scans that read every due row are ruled out (`enable_seqscan`,
///   `enable_bitmapscan` off): the primary key finds the chosen rows directly.
/// - No JIT (`jit = off`): a claim's estimated cost grows with the queued
///   rows, and past `jit_above_cost` each claim would compile its expressions
///   again, taking far longer than the claim itself.
pub async fn connect_asynchronous_commit(
    config: &DatabaseConfig,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut pg = connection_config(config, &config.url);
    let options = match pg.get_options() {
        Some(options) => format!("{options} {BOOKKEEPING_OPTIONS}"),
        None => BOOKKEEPING_OPTIONS.to_owned(),
    };
    pg.options(&options);
    let (client, connection) = pg.connect(config.url.tls().connector()).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Opens one connection outside the pool (migrations hold it for a session-level lock).
pub async fn connect(
    config: &DatabaseConfig,
    url: &PostgresUrl,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = connection_config(config, url)
        .connect(url.tls().connector())
        .await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Opens one connection and hands its connection half to the caller, who must
/// poll it (to receive `NOTIFY` messages, say).
pub async fn connect_raw(
    config: &DatabaseConfig,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tls::Stream>,
    ),
    tokio_postgres::Error,
> {
    connection_config(config, &config.url)
        .connect(config.url.tls().connector())
        .await
}

/// Creates the configured database when it does not exist yet, waiting up to
/// `database.startup_timeout` for PostgreSQL to come up. A failed TLS
/// negotiation ends the wait at once: it will not heal by waiting.
#[tracing::instrument(skip_all, fields(database = config.url.database_name()))]
pub async fn ensure_database(config: &DatabaseConfig) -> Result<(), DbError> {
    let started = tokio::time::Instant::now();
    let mut hinted = false;
    loop {
        let error = match connect(config, &config.url).await {
            Ok(_) => return Ok(()),
            Err(error) if error.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
                return create_database(config).await
            }
            Err(error) => error,
        };
        if let Some(tls) = tls_error(&config.url, &error) {
            return Err(tls);
        }
        if started.elapsed() >= config.startup_timeout {
            return Err(DbError::Unreachable {
                url: config.url.to_string(),
                waited: config.startup_timeout,
                source: error,
            });
        }
        if !hinted && refused(&error) {
            hinted = true;
            // Printed, not logged: every command waits here, and only
            // `serve` and `migrate` set logging up.
            eprintln!("{}", start_hint(&config.url));
        }
        tracing::warn!(%error, "PostgreSQL is not reachable yet; retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// [`DbError::Tls`] when `error` is a failed TLS negotiation with `url`'s server.
pub(crate) fn tls_error(url: &PostgresUrl, error: &tokio_postgres::Error) -> Option<DbError> {
    url.tls().failure(error).map(|failure| DbError::Tls {
        host: url.hosts(),
        mode: url.ssl_mode(),
        failure,
    })
}

/// Nothing listens at the address: PostgreSQL is not started (or elsewhere).
fn refused(error: &tokio_postgres::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// One line for a newcomer whose PostgreSQL is not running: how to start it,
/// or where to point the worker instead.
fn start_hint(url: &PostgresUrl) -> String {
    let hosts = url.config().get_hosts();
    let ports = url.config().get_ports();
    let host = match hosts.first() {
        Some(tokio_postgres::config::Host::Tcp(name)) => name.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = ports.first().copied().unwrap_or(5432);
    format!(
        "nothing listens at {host}:{port}: start PostgreSQL (Debian: `pg_ctlcluster <version> main start`, \
         systemd: `systemctl start postgresql`), or set database.url (AUDIT_WORKER__DATABASE__URL) to yours"
    )
}

/// Whether the pool's role is a superuser: such a role can disable the
/// triggers that keep the trail append-only (migration V17), so `serve` says
/// so at start-up; production runs as a role granted `audit_worker_runtime`.
pub async fn runs_as_superuser(pool: &PgPool) -> Result<bool, DbError> {
    Ok(pool
        .get()
        .await?
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0))
}

async fn create_database(config: &DatabaseConfig) -> Result<(), DbError> {
    let name = config.url.database_name();
    let create_error = |source| DbError::CreateDatabase {
        name: name.to_owned(),
        source,
    };
    let admin = connect(config, &config.url.with_database("postgres"))
        .await
        .map_err(create_error)?;
    // Identifiers cannot be bound as parameters; quote it as PostgreSQL's quote_ident does.
    let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match admin.batch_execute(&statement).await {
        Ok(()) => {
            tracing::info!(database = name, "Created database");
            Ok(())
        }
        // Another worker created it first (a creation still in flight
        // surfaces as a unique violation on the catalog instead).
        Err(error)
            if error.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || error.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(())
        }
        Err(error) => Err(create_error(error)),
    }
}

/// One round trip through the pool, bounded by `timeout`: what `/readyz` and the
/// heartbeat call "PostgreSQL answers".
pub async fn ping(pool: &PgPool, timeout: Duration) -> Result<(), DbError> {
    let round_trip = async {
        let client = pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok::<_, DbError>(())
    };
    tokio::time::timeout(timeout, round_trip)
        .await
        .map_err(|_| DbError::Timeout(timeout))?
}

/// How a new connection to the configured server is secured, bounded by
/// `database.connect_timeout` (`check-config`). When the database does not
/// exist yet, the server's `postgres` database answers instead.
pub async fn connection_tls(config: &DatabaseConfig) -> Result<TlsState, DbError> {
    let attempt = async {
        let client = match connect(config, &config.url).await {
            Err(error) if error.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
                connect(config, &config.url.with_database("postgres")).await
            }
            connected => connected,
        }
        .map_err(|error| tls_error(&config.url, &error).unwrap_or(DbError::Postgres(error)))?;
        tls_state(&client, config.url.ssl_mode()).await
    };
    tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .map_err(|_| DbError::Timeout(config.connect_timeout))?
}

/// [`ping`], reading how the connection is secured on the way: `/readyz`'s
/// probe (the same single round trip).
pub async fn ping_tls(pool: &PgPool, timeout: Duration) -> Result<TlsState, DbError> {
    let mode = pool.health.ssl_mode();
    let round_trip = async {
        let client = pool.get().await?;
        tls_state(&client, mode).await
    };
    tokio::time::timeout(timeout, round_trip)
        .await
        .map_err(|_| DbError::Timeout(timeout))?
}

/// How `client`'s connection is secured, as the server sees it.
pub async fn tls_state(
    client: &tokio_postgres::Client,
    mode: SslMode,
) -> Result<TlsState, DbError> {
    let messages = client.simple_query(TlsState::QUERY).await?;
    messages
        .iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(TlsState::from_text(mode, row)),
            _ => None,
        })
        .ok_or_else(|| DbError::Decode("pg_stat_ssl has no row for this connection".to_owned()))
}
