//! audit-worker: keeps the tamper-evident audit trail of a multi-tenant platform.
//!
//! Modules, outside in. Naming: an area named for things it holds is plural
//! (`events/`, `alerts/`, `reports/`, `deliveries/`, as the tables in `db/` and
//! the routes in `http/` are); a file for one actor, or for the messages of
//! one actor family, is singular (`actors/alert.rs`, `messages/alert.rs`).
//!
//! Entry points and wiring:
//! - [`commands`]: what each CLI command does and prints (`main` parses).
//! - [`shared`]: the dependencies every actor is built from.
//! - [`config`]: compiled-in defaults, an optional file, environment overrides.
//! - [`reload`]: configuration reload (SIGHUP) and its recorded history.
//! - [`http`]: the HTTP API (routes, extractors, middleware, error shape, OpenAPI).
//! - [`supervisor`]: starts every actor and restarts one that stops or panics.
//! - [`actors`]: one file per actor (scheduling, capacity, state);
//!   [`messages`]: one file per family of messages actors send each other.
//!
//! Domains:
//! - [`events`]: the event format, validation, presets and retention policies.
//! - [`integrity`]: canonical form, hashes, the chain, checkpoints, the link tree
//!   and its proofs, and verification.
//! - [`alerts`]: what an alert is, rules and the system checks.
//! - [`deliveries`]: destinations: one file per kind (config, validation,
//!   send), signing, the retry decision, the network policy.
//! - [`gdpr`]: export, pseudonymization and erasure that keep the trail verifiable.
//! - [`reports`]: report definitions, schedules, generation and output.
//! - [`streams`]: event streams: their formats (native, OCSF, Splunk HEC) and
//!   where their batches land.
//! - [`maintenance`]: partitions, archival, retention deletion, database upkeep.
//! - [`auth`]: API keys, roles and permissions, per-key rate limits.
//! - [`admin`]: operator actions the CLI runs against the database.
//!
//! Infrastructure:
//! - [`db`]: the PostgreSQL pool and its health, migrations, advisory locks,
//!   and the SQL, one file per table family.
//! - [`cache`]: query answers in memory and Redis, kept coherent across instances.
//! - [`redis_conn`]: the Redis connection, with its back-off (Redis is optional).
//! - [`breaker`]: the circuit breaker (ingest's on PostgreSQL, each destination's).
//! - [`error_tracking`]: internal errors buffered, fingerprinted and aggregated.
//! - [`metrics`]: the Prometheus registry behind `/metrics`.
//! - [`secrets`]: configured or generated keys.
//! - [`clock`]: the time maintenance reads (tests move it).
//! - [`telemetry`]: logging set-up.
//! - [`tls`]: TLS material shared by the listener and the clients (the
//!   crypto provider, PEM certificates and keys).
//! - [`validation`]: what input is accepted, and the shape of a refusal.
//!
//! [`Application::build`] wires them together; `main` only parses the command
//! line. Tests call the same `build` on port 0, so the code under test is the
//! code that ships.

pub mod actors;
pub mod admin;
pub mod alerts;
pub mod archive_store;
pub mod auth;
pub mod breaker;
pub mod cache;
pub mod clock;
pub mod commands;
pub mod config;
pub mod db;
pub mod deliveries;
pub mod error_tracking;
pub mod events;
pub mod gdpr;
pub mod http;
pub mod integrity;
pub mod maintenance;
pub mod messages;
pub mod metrics;
pub mod redis_conn;
pub mod reload;
pub mod reports;
pub mod secrets;
pub mod shared;
pub mod streams;
pub mod supervisor;
pub mod telemetry;
pub mod tls;
pub mod validation;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::Addr;
use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header::HeaderValue;
use actix_web::{web, HttpServer};

use crate::actors::alert::AlertActor;
use crate::actors::cache::CacheActor;
use crate::actors::checkpoint::CheckpointActor;
use crate::actors::enqueue::EnqueueActor;
use crate::actors::error_log::ErrorLogActor;
use crate::actors::gdpr::GdprActor;
use crate::actors::health::HealthActor;
use crate::actors::heartbeat::HeartbeatActor;
use crate::actors::histogram::HistogramActor;
use crate::actors::ingest::IngestActor;
use crate::actors::key_use::KeyUseActor;
use crate::actors::maintenance::MaintenanceActor;
use crate::actors::partition::PartitionActor;
use crate::actors::queue::QueueActor;
use crate::actors::report::ReportActor;
use crate::actors::stream::StreamActor;
use crate::auth::Authenticator;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConfigError, ProductionRefusals};
use crate::db::migrations::MigrationError;
use crate::db::{DbError, PgPool};
use crate::deliveries::crypto::SecretBox;
use crate::deliveries::egress::Egress;
use crate::error_tracking::ErrorTracker;
use crate::gdpr::operations::Gdpr;
use crate::gdpr::pseudonym::PseudonymKeys;
use crate::http::tls::{CertificateError, ServerCertificate};
use crate::messages::supervisor::Shutdown;
use crate::redis_conn::RedisError;
use crate::reload::{ConfigReloader, ReloadError, ReloadReport};
use crate::reports::run::Reports;
use crate::secrets::SecretError;
use crate::shared::Shared;
use crate::supervisor::{ActorHandle, Supervisor, SupervisorBuilder};

/// Reads the configuration ([`Config::load`]), checks the keys other
/// areas own ([`check_config`]) and reads the TLS files it names
/// ([`Config::check_tls_files`]).
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    let config = Config::load(path)?;
    check_config(&config)?;
    config.check_tls_files()?;
    Ok(config)
}

/// Checks the keys whose meaning belongs to another area than `config`: the
/// alert rules (`alerts`) and the operations organization (`auth`). Every
/// configuration passes here before it is put in force: at start-up and on reload.
pub fn check_config(config: &Config) -> Result<(), ConfigError> {
    if let Err(error) = auth::validate_organization_id(&config.operations.organization) {
        return Err(ConfigError::Value {
            key: "operations.organization",
            reason: error.to_string(),
        });
    }
    alerts::rule::configured(&config.alerts.rules)?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Keys(#[from] SecretError),
    #[error(transparent)]
    Unsafe(#[from] ProductionRefusals),
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client for deliveries: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("the HTTP server failed: {0}")]
    Server(#[source] std::io::Error),
}

/// A built worker: database migrated, actors started, HTTP socket bound.
pub struct Application {
    port: u16,
    /// The listener serves HTTPS (`[http.tls]`).
    https: bool,
    server: Server,
    supervisor: Addr<Supervisor>,
    pool: PgPool,
    config: Arc<Config>,
    errors: ErrorTracker,
    reloader: Arc<ConfigReloader>,
}

impl Application {
    /// Creates and migrates the database, starts the supervised actors and binds
    /// the HTTP socket. Must run inside an actix system (`actix_web::rt::System`).
    /// A reload reads `./config.toml` (when present) and the environment.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        Self::build_from(config, None, Arc::new(SystemClock)).await
    }

    /// [`build`](Self::build) for a configuration read from `file` (`--config`),
    /// which a reload reads again.
    pub async fn build_with_config_file(
        config: Config,
        file: Option<PathBuf>,
    ) -> Result<Self, StartupError> {
        Self::build_from(config, file, Arc::new(SystemClock)).await
    }

    /// [`build`](Self::build) with the clock the maintenance jobs read (tests
    /// move it forward to age data).
    pub async fn build_with_clock(
        config: Config,
        clock: SharedClock,
    ) -> Result<Self, StartupError> {
        Self::build_from(config, None, clock).await
    }

    async fn build_from(
        config: Config,
        file: Option<PathBuf>,
        clock: SharedClock,
    ) -> Result<Self, StartupError> {
        check_config(&config)?;
        config.check_production()?;
        // First, so that a taken port fails the start before anything runs.
        let addr = config.http.bind;
        let bind_error = |source| StartupError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind_error)?;
        let port = listener.local_addr().map_err(bind_error)?.port();
        let certificate = match config.http.tls.enabled() {
            true => Some(Arc::new(ServerCertificate::load(&config.http.tls)?)),
            false => None,
        };
        let (shared, live_sender) = Shared::open(config, clock).await?;
        let config = shared.config.clone();
        let secrets = Arc::new(SecretBox::new(
            &secrets::key_ring(
                "delivery.encryption_key",
                &config.delivery.encryption_key,
                "delivery.previous_encryption_keys",
                &config.delivery.previous_encryption_keys,
                &shared.pool,
            )
            .await?,
        ));
        let egress = Egress::new(
            config.delivery.network_policy(),
            concat!("audit-worker/", env!("CARGO_PKG_VERSION")),
        )
        .map_err(StartupError::HttpClient)?;
        let pseudonyms = Arc::new(PseudonymKeys::load(&config.gdpr, &shared.pool).await?);

        let mut supervisor =
            SupervisorBuilder::new(config.supervisor.clone(), shared.metrics.clone());
        supervisor.report_errors_to(shared.errors.clone());
        let actors = start_actors(
            &mut supervisor,
            &shared,
            pseudonyms,
            secrets.clone(),
            egress.clone(),
        );
        let supervisor = supervisor.start();

        let auth = Arc::new(Authenticator::new(
            &config,
            shared.pool.clone(),
            shared.cache.clone(),
            shared.key_uses.clone(),
        ));
        let reloader = Arc::new(ConfigReloader::new(
            file,
            live_sender,
            auth.clone(),
            shared.pool.clone(),
            shared.keys.clone(),
            shared.metrics.clone(),
            certificate.clone(),
        ));
        let state = web::Data::new(http::AppState {
            config: config.clone(),
            live: shared.live.clone(),
            pool: shared.pool.clone(),
            redis: shared.redis.clone(),
            supervisor: supervisor.clone(),
            metrics: shared.metrics.clone(),
            auth,
            keys: shared.keys.clone(),
            archives: shared.archives.clone(),
            ingest: actors.ingest,
            enqueue: actors.enqueue,
            queue: actors.queue,
            secrets,
            egress,
            cache: shared.cache.clone(),
            gdpr: actors.gdpr,
            alerts: actors.alerts,
            reports: actors.reports,
            errors: shared.errors.clone(),
            tails: Arc::default(),
            failed_sign_ins: Arc::default(),
            hsts: config.http.tls.hsts_header().map(|value| {
                HeaderValue::try_from(value).expect("max-age=<digits> is a valid header value")
            }),
        });
        let server = HttpServer::new(move || http::app(state.clone()))
            .shutdown_timeout(config.http.shutdown_timeout.as_secs().max(1));
        let mut server = match &certificate {
            Some(certificate) => {
                server.listen_rustls_0_23(listener, http::tls::server_config(certificate.clone()))
            }
            None => server.listen(listener),
        }
        .map_err(bind_error)?;
        if config.http.workers > 0 {
            server = server.workers(config.http.workers);
        }
        let https = certificate.is_some();
        tracing::info!(port, https, "Listening");
        Ok(Self {
            port,
            https,
            server: server.run(),
            supervisor,
            pool: shared.pool,
            config,
            errors: shared.errors,
            reloader,
        })
    }

    /// The error tracker every part of this worker reports to (tests record through it).
    pub fn errors(&self) -> ErrorTracker {
        self.errors.clone()
    }

    /// Reads the configuration file again and applies the keys that can
    /// change at run time (see [`reload`]); `trigger` is recorded as who changed it.
    pub async fn reload_config(&self, trigger: &str) -> Result<ReloadReport, ReloadError> {
        self.reloader.reload(trigger).await
    }

    /// What reloads the configuration, for callers that keep it after
    /// [`run_until_stopped`](Self::run_until_stopped) took the application.
    pub fn config_reloader(&self) -> Arc<ConfigReloader> {
        self.reloader.clone()
    }

    /// Reloads the configuration on every SIGHUP, for as long as the actix
    /// system runs (`serve`). Each reload logs and records its own outcome.
    pub fn reload_on_sighup(&self) -> std::io::Result<()> {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reloader = self.reloader.clone();
        actix_web::rt::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = reloader.reload("sighup").await;
            }
        });
        Ok(())
    }

    /// Whether the listener serves HTTPS rather than plain HTTP.
    pub fn serves_https(&self) -> bool {
        self.https
    }

    /// The bound port (useful with `http.bind` port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from elsewhere (tests); SIGTERM and SIGINT do the same.
    pub fn server_handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT or [`ServerHandle::stop`]: stops accepting,
    /// lets in-flight requests finish, then stops the actors and closes the pool.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        self.server.await.map_err(StartupError::Server)?;
        tracing::info!("HTTP server stopped; stopping actors");
        let _ = self
            .supervisor
            .send(Shutdown {
                timeout: self.config.http.shutdown_timeout,
            })
            .await;
        // The ErrorLogActor is gone: write what it had not written yet.
        if let Err(error) =
            error_tracking::flush(&self.errors, &self.pool, self.config.errors.flush_interval).await
        {
            tracing::warn!(%error, "Could not write the buffered errors at shutdown");
        }
        drop(self.pool);
        tracing::info!("Shut down cleanly");
        Ok(())
    }
}

/// The actors the HTTP API talks to.
struct Actors {
    alerts: ActorHandle<AlertActor>,
    ingest: ActorHandle<IngestActor>,
    enqueue: ActorHandle<EnqueueActor>,
    gdpr: ActorHandle<GdprActor>,
    queue: ActorHandle<QueueActor>,
    reports: ActorHandle<ReportActor>,
}

/// Puts every actor under `supervisor`: each is built again from `shared` when restarted.
fn start_actors(
    supervisor: &mut SupervisorBuilder,
    shared: &Shared,
    pseudonyms: Arc<PseudonymKeys>,
    secrets: Arc<SecretBox>,
    egress: Egress,
) -> Actors {
    let config = &shared.config;
    supervise(supervisor, "errors", shared, ErrorLogActor::new);
    let alerts = supervise(supervisor, "alert", shared, AlertActor::new);
    let to_alerts = alerts.clone();
    supervise(supervisor, "cache", shared, move |shared| {
        CacheActor::new(shared, to_alerts.clone())
    });
    supervise(supervisor, "heartbeat", shared, HeartbeatActor::new);
    supervise(supervisor, "key_use", shared, KeyUseActor::new);
    let to_alerts = alerts.clone();
    let ingest = supervise(supervisor, "ingest", shared, move |shared| {
        IngestActor::new(shared, to_alerts.clone())
    });
    let enqueue = supervise(supervisor, "enqueue", shared, EnqueueActor::new);
    let gdpr = Arc::new(Gdpr {
        pool: shared.pool.clone(),
        keys: shared.keys.clone(),
        archives: shared.archives.clone(),
        pseudonyms,
        ingest: ingest.clone(),
        cache: shared.cache.clone(),
        settings: config.gdpr.clone(),
        database: config.database.clone(),
    });
    let gdpr = supervisor.supervise("gdpr", move || GdprActor::new(gdpr.clone()));
    supervise(supervisor, "checkpoint", shared, CheckpointActor::new);
    supervise(supervisor, "histogram", shared, HistogramActor::new);
    let health = supervise(supervisor, "health", shared, HealthActor::new);
    let queue = supervise(supervisor, "queue", shared, move |shared| {
        QueueActor::new(shared, secrets.clone(), egress.clone(), health.clone())
    });
    let reports = Arc::new(Reports {
        pool: shared.pool.clone(),
        keys: shared.keys.clone(),
        archives: shared.archives.clone(),
        settings: config.reports.clone(),
        metrics: shared.metrics.clone(),
        worker_id: format!("worker-{}", uuid::Uuid::new_v4()),
    });
    let reports = supervisor.supervise("report", move || ReportActor::new(reports.clone()));
    supervise(supervisor, "stream", shared, StreamActor::new);
    supervise(supervisor, "partition", shared, PartitionActor::new);
    supervise(supervisor, "maintenance", shared, MaintenanceActor::new);
    Actors {
        alerts,
        ingest,
        enqueue,
        gdpr,
        queue,
        reports,
    }
}

/// Supervises the actor `make` builds from `shared` (and what it captures),
/// at its first start and at every restart.
fn supervise<A>(
    supervisor: &mut SupervisorBuilder,
    name: &'static str,
    shared: &Shared,
    make: impl Fn(&Shared) -> A + 'static,
) -> ActorHandle<A>
where
    A: actix::Actor<Context = actix::Context<A>>,
{
    let shared = shared.clone();
    supervisor.supervise(name, move || make(&shared))
}
