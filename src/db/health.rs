//! What this worker knows of PostgreSQL's reachability, shared by every user
//! of the pool. While PostgreSQL is known to be unreachable, asking the pool
//! for a connection fails at once (a 503 with `Retry-After` for a request)
//! instead of waiting out `database.connect_timeout` on every call, and one
//! probe in the background finds out when it is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bb8::ManageConnection;
use bb8_postgres::PostgresConnectionManager;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use super::connection::PgConnection;
use super::tls::{Connector, SslMode};
use super::{connection_lost, tls_error};
use crate::config::PostgresUrl;

/// How often the probe tries to connect while PostgreSQL is unreachable; also
/// the `Retry-After` a request gets meanwhile.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct DbHealth {
    /// Set by a failed connection attempt, cleared by a successful one.
    down: AtomicBool,
    /// A probe task is running (at most one).
    probing: AtomicBool,
    /// Wakes the callers waiting for a connection when PostgreSQL is found unreachable.
    went_down: Notify,
    /// How the probe connects: as the pool does.
    connect: tokio_postgres::Config,
    /// The URL the pool connects to: its TLS connector, and the words of a
    /// failed TLS negotiation.
    url: PostgresUrl,
    /// How the last connection attempt failed, for [`DbError::Down`](super::DbError::Down)
    /// (what `/readyz` shows).
    last_failure: Mutex<String>,
}

impl DbHealth {
    pub fn new(connect: tokio_postgres::Config, url: PostgresUrl) -> Arc<Self> {
        Arc::new(Self {
            down: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            went_down: Notify::new(),
            connect,
            url,
            last_failure: Mutex::new(String::new()),
        })
    }

    /// The `sslmode` the pool's connections use.
    pub fn ssl_mode(&self) -> SslMode {
        self.url.ssl_mode()
    }

    /// How the last connection attempt failed.
    pub fn last_failure(&self) -> String {
        let failure = self.last_failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_empty() {
            "a connection attempt failed".to_owned()
        } else {
            failure.clone()
        }
    }

    fn connector(&self) -> Connector {
        self.url.tls().connector()
    }

    /// Whether PostgreSQL is known to be unreachable now.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Resolves when PostgreSQL is next found unreachable. Made before
    /// looking at [`is_down`](Self::is_down), so that no change is missed.
    pub fn went_down(&self) -> Notified<'_> {
        self.went_down.notified()
    }

    /// Records a failed connection and starts the probe, unless one runs.
    fn mark_down(self: &Arc<Self>, error: &tokio_postgres::Error) {
        // A failed TLS negotiation in the operator's words; otherwise the
        // driver's, with its cause.
        let failure = match tls_error(&self.url, error) {
            Some(tls) => tls.to_string(),
            None => match std::error::Error::source(error) {
                Some(cause) => format!("{error}: {cause}"),
                None => error.to_string(),
            },
        };
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %failure, "PostgreSQL is unreachable: requests that need it get 503 until it is back");
        }
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = failure;
        self.went_down.notify_waiters();
        self.start_probe();
    }

    fn start_probe(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.probing.store(false, Ordering::Release);
            return;
        };
        let health = Arc::clone(self);
        runtime.spawn(async move {
            while health.is_down() {
                if health.probe().await.is_ok() {
                    health.mark_up();
                    break;
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
            health.probing.store(false, Ordering::Release);
            // A failure recorded after the last probe found this one still
            // running and started none: probe again.
            if health.is_down() {
                health.start_probe();
            }
        });
    }

    fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("PostgreSQL is reachable again");
        }
    }

    async fn probe(&self) -> Result<(), tokio_postgres::Error> {
        let (client, connection) = self.connect.connect(self.connector()).await?;
        let driver = tokio::spawn(connection);
        let outcome = client.simple_query("SELECT 1").await.map(drop);
        drop(client);
        let _ = driver.await;
        outcome
    }
}

/// The pool's connection manager: PostgreSQL's, telling [`DbHealth`] how
/// each new connection went. Only a failure to connect anew marks PostgreSQL
/// unreachable: a pooled connection found closed on checkout says nothing of
/// the server (it may have restarted a moment ago).
pub struct Manager {
    pub inner: PostgresConnectionManager<Connector>,
    pub health: Arc<DbHealth>,
}

impl ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<PgConnection, tokio_postgres::Error> {
        let connected = self.inner.connect().await;
        match &connected {
            Ok(_) => self.health.mark_up(),
            // A failed TLS negotiation, too: no request gets through until it is fixed.
            Err(error)
                if connection_lost(error) || self.health.url.tls().failure(error).is_some() =>
            {
                self.health.mark_down(error)
            }
            Err(_) => {}
        }
        connected.map(PgConnection::new)
    }

    /// Only whether the connection is closed, without the round trip of
    /// bb8-postgres's empty query: at checkout that round trip delayed every
    /// transaction (one in five of a one-event ingest group's). A connection
    /// PostgreSQL closed is seen closed as soon as its socket is; one that
    /// fails on first use anyway fails as an outage (`connection_lost`), which
    /// callers already answer with 503 and `Retry-After`.
    async fn is_valid(&self, connection: &mut PgConnection) -> Result<(), tokio_postgres::Error> {
        if connection.is_closed() {
            // The error tokio-postgres gives for any use of a closed client.
            connection.simple_query("").await.map(drop)
        } else {
            Ok(())
        }
    }

    /// Closed, or left inside a transaction that nothing will end.
    fn has_broken(&self, connection: &mut PgConnection) -> bool {
        connection.is_closed() || connection.is_in_transaction()
    }
}
