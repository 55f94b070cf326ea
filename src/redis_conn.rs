//! The Redis connection: one multiplexed connection per thread, shared by
//! every caller on that thread, behind a back-off that keeps a Redis outage
//! off the request path.
//!
//! Why one per thread: a multiplexed connection is driven by a task on the
//! runtime that opened it, and the worker runs several (the actors' thread,
//! one per HTTP worker). A command sent from another thread woke the
//! connection's thread and then its own for the answer: two cross-thread
//! wake-ups per command, and an ingest request makes two commands. A
//! profile of single-event ingest put a fifth of the worker's CPU in those
//! wake-ups (`eventfd` writes).
//!
//! Redis is optional for the worker: when a call fails, its caller falls back
//! (to PostgreSQL, to generations counted in this process), slower but never
//! wrong. What a caller must not do is wait for Redis on every call while it
//! is down (a self-reconnecting connection makes each call wait for a
//! reconnection of its own, and an ingest request makes two calls). So after
//! a command fails or times out,
//! every call fails at once with [`RedisError::Backoff`] for
//! `redis.outage_backoff`; then one call probes, over a new connection, and
//! its success ends the back-off for every caller. Each failed probe doubles
//! the back-off, up to `redis.outage_backoff_max`. To its caller a skipped
//! call is a failed one, so whatever a caller does when Redis fails, it does
//! while Redis is skipped.
//!
//! A `rediss://` URL connects over TLS (rustls), verified against
//! `redis.ca_file` (or the system's roots), with `redis.client_cert` when the
//! server asks for a client certificate.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared as SharedFuture};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ClientTlsConfig, ErrorKind, ServerErrorKind, TlsCertificates};

use crate::config::RedisConfig;
use crate::tls::{PemError, PemFile};

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    #[error("invalid configuration: key `{key}`: {source}")]
    File {
        key: &'static str,
        #[source]
        source: PemError,
    },
    /// The CA or client certificate files read, but not usable for TLS.
    #[error("cannot set up TLS to Redis: {0}")]
    Tls(#[source] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Any failure to open the connection, whatever Redis said: it is
    /// opened again only after a back-off.
    #[error("cannot connect to Redis: {0}")]
    Connect(#[source] redis::RedisError),
    #[error("Redis error: {0}")]
    Command(#[from] redis::RedisError),
    /// Not sent: Redis failed and has not answered a probe since. Carries
    /// the failure, so that `/readyz` and the heartbeat still name it.
    #[error("Redis is skipped after a failure ({0})")]
    Backoff(Arc<str>),
}

impl RedisError {
    /// Whether Redis could not be used at all (unreachable, too slow, not
    /// serving), as opposed to answering this one command with an error.
    fn is_outage(&self) -> bool {
        match self {
            RedisError::Url(_)
            | RedisError::File { .. }
            | RedisError::Tls(_)
            | RedisError::Timeout(_)
            | RedisError::Connect(_)
            | RedisError::Backoff(_) => true,
            RedisError::Command(error) => {
                error.is_io_error()
                    || error.is_connection_dropped()
                    || matches!(
                        error.kind(),
                        ErrorKind::AuthenticationFailed
                            | ErrorKind::Server(
                                ServerErrorKind::BusyLoading
                                    | ServerErrorKind::MasterDown
                                    // A replica after a failover: generation
                                    // bumps would fail while look-ups succeed.
                                    | ServerErrorKind::ReadOnly
                            )
                    )
            }
        }
    }
}

#[derive(Clone)]
pub struct RedisConnection {
    shared: Arc<Shared>,
}

struct Shared {
    client: redis::Client,
    /// The URL is `rediss://`: every connection is TLS or fails.
    tls: bool,
    connection_config: AsyncConnectionConfig,
    response_timeout: Duration,
    state: Mutex<State>,
}

struct State {
    /// Counts the connections given up: a thread's connection made before
    /// the last failure is replaced by a new one, not yet opened, at that
    /// thread's next call, so that each probe is one connection attempt made
    /// when it probes.
    generation: u64,
    gate: Gate,
}

thread_local! {
    /// This thread's connections, one per [`RedisConnection`] (tests run
    /// several workers in one process), with the generation each was made
    /// in; opened by the first call to await it, and every call made
    /// meanwhile on this thread waits for that one attempt. They end with
    /// the thread.
    static THREAD_CONNECTIONS: std::cell::RefCell<Vec<ThreadConnection>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

struct ThreadConnection {
    owner: std::sync::Weak<Shared>,
    generation: u64,
    connection: Connection,
}

/// A connection being opened, or opened, or that failed to open.
type Connection =
    SharedFuture<BoxFuture<'static, Result<MultiplexedConnection, redis::RedisError>>>;

impl RedisConnection {
    /// Prepares the connection without opening it: the first command connects.
    pub fn new(config: &RedisConfig) -> Result<Self, RedisError> {
        let client = client(config)?;
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout));
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                tls: config.tls(),
                connection_config,
                response_timeout: config.response_timeout,
                state: Mutex::new(State {
                    generation: 0,
                    gate: Gate::new(config.outage_backoff, config.outage_backoff_max),
                }),
            }),
        })
    }

    /// Runs one command, bounded by the response timeout whatever the
    /// connection state; fails at once while Redis is backed off.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let (generation, ticket) = self.shared.admit()?;
        let connection = self.thread_connection(generation);
        let sent = async {
            let mut connection = connection.await.map_err(RedisError::Connect)?;
            Ok(command.query_async(&mut connection).await?)
        };
        let outcome = tokio::time::timeout(self.shared.response_timeout, sent)
            .await
            .unwrap_or(Err(RedisError::Timeout(self.shared.response_timeout)));
        ticket.settle(outcome.as_ref().err());
        outcome
    }

    /// This thread's connection of `generation`, made now (not yet opened)
    /// when the thread has none or one of an earlier generation.
    fn thread_connection(&self, generation: u64) -> Connection {
        THREAD_CONNECTIONS.with_borrow_mut(|connections| {
            connections.retain(|held| held.owner.strong_count() > 0);
            let owner = Arc::downgrade(&self.shared);
            let index = match connections
                .iter()
                .position(|held| held.owner.ptr_eq(&owner))
            {
                Some(index) => index,
                None => {
                    connections.push(ThreadConnection {
                        owner,
                        generation,
                        connection: self.shared.connect(),
                    });
                    connections.len() - 1
                }
            };
            let held = &mut connections[index];
            if held.generation != generation {
                held.generation = generation;
                held.connection = self.shared.connect();
            }
            held.connection.clone()
        })
    }

    /// A PING round trip: what `/readyz` and the heartbeat call "Redis answers".
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }

    /// A number that changes whenever an outage begins and whenever it ends,
    /// so that what a caller kept during one outage (answers cached without
    /// Redis) can be told apart from what it kept during another.
    pub fn epoch(&self) -> u64 {
        self.shared.lock().gate.epoch
    }

    /// Whether the connection is TLS (a `rediss://` URL), for `/readyz`.
    pub fn tls(&self) -> bool {
        self.shared.tls
    }

    /// A client of the same server, with the same TLS settings, for callers
    /// that keep a connection of their own (the invalidation listener).
    pub fn client(&self) -> redis::Client {
        self.shared.client.clone()
    }

    /// False while Redis is backed off: for callers that keep their own
    /// connection (the invalidation listener), to wait instead of trying it.
    pub fn available(&self) -> bool {
        self.shared.lock().gate.outage.is_none()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection that opens when first awaited.
    fn connect(&self) -> Connection {
        let (client, config) = (self.client.clone(), self.connection_config.clone());
        async move {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
        }
        .boxed()
        .shared()
    }

    /// The generation of connection to send a command on, and the ticket
    /// that reports how it went; `Backoff` when the command must not be sent.
    fn admit(&self) -> Result<(u64, Ticket<'_>), RedisError> {
        let mut state = self.lock();
        let probe = match state.gate.admit(Instant::now()) {
            Admission::Go => false,
            Admission::Probe => true,
            Admission::Skip(cause) => return Err(RedisError::Backoff(cause)),
        };
        let ticket = Ticket {
            shared: self,
            probe,
            settled: false,
        };
        Ok((state.generation, ticket))
    }
}

/// The client `config` describes: for `rediss://`, with the CA and client
/// certificate files read now (a bad file fails the start, naming its key).
fn client(config: &RedisConfig) -> Result<redis::Client, RedisError> {
    if !config.tls() {
        return redis::Client::open(config.url.as_str()).map_err(RedisError::Url);
    }
    // The redis crate builds its rustls configuration without naming a provider.
    crate::tls::install_default_provider();
    let read = |key: &'static str, path: &Path| -> Result<Option<Vec<u8>>, RedisError> {
        if path.as_os_str().is_empty() {
            return Ok(None);
        }
        let file = PemFile::read(path).map_err(|source| RedisError::File { key, source })?;
        Ok(Some(file.bytes))
    };
    let root_cert = read("redis.ca_file", &config.ca_file)?;
    let client_tls = match (
        read("redis.client_cert", &config.client_cert)?,
        read("redis.client_key", &config.client_key)?,
    ) {
        (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    redis::Client::build_with_tls(
        config.url.as_str(),
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(RedisError::Tls)
}

/// One admitted call: reports its outcome to the gate, or, dropped before
/// that (its caller gave up), frees the probe it may hold, so the back-off
/// never waits for a probe that will not end.
struct Ticket<'a> {
    shared: &'a Shared,
    probe: bool,
    settled: bool,
}

impl Ticket<'_> {
    fn settle(mut self, error: Option<&RedisError>) {
        self.settled = true;
        let mut state = self.shared.lock();
        match error {
            Some(error) if error.is_outage() => {
                let began = state.gate.outage.is_none();
                if state.gate.failed(Instant::now(), self.probe, error) {
                    state.generation += 1;
                }
                if began {
                    tracing::debug!(%error, "Redis failed; skipping it for the back-off");
                }
            }
            // An answer, even an error reply: Redis is there.
            _ => state.gate.answered(self.probe),
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.shared.lock().gate.abandon_probe();
        }
    }
}

/// The back-off's state, apart from the connection so that it can be tested
/// with made-up instants.
#[derive(Debug)]
struct Gate {
    first: Duration,
    max: Duration,
    /// `None` while Redis answers.
    outage: Option<Outage>,
    /// See [`RedisConnection::epoch`].
    epoch: u64,
}

#[derive(Debug)]
struct Outage {
    /// Calls are skipped until then.
    until: Instant,
    /// The back-off in force; doubled at each failed probe.
    backoff: Duration,
    /// A probe is under way: calls are skipped until it ends.
    probing: bool,
    /// The last failure, shown to skipped callers.
    cause: Arc<str>,
}

/// What a call may do.
#[derive(Debug, PartialEq)]
enum Admission {
    /// Redis answers: send.
    Go,
    /// The back-off is over: send, as the one probe.
    Probe,
    /// Backed off: fail at once, with the failure behind it.
    Skip(Arc<str>),
}

impl Gate {
    fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            outage: None,
            epoch: 0,
        }
    }

    fn admit(&mut self, now: Instant) -> Admission {
        match &mut self.outage {
            None => Admission::Go,
            Some(outage) if outage.probing || now < outage.until => {
                Admission::Skip(outage.cause.clone())
            }
            Some(outage) => {
                outage.probing = true;
                Admission::Probe
            }
        }
    }

    /// Records a failed call; true when it began an outage or failed the
    /// probe, so the connection must be replaced. A call sent before the
    /// outage began and failing after it changes nothing.
    fn failed(&mut self, now: Instant, probe: bool, cause: &RedisError) -> bool {
        match &mut self.outage {
            None => {
                self.outage = Some(Outage {
                    until: now + self.first,
                    backoff: self.first,
                    probing: false,
                    cause: cause.to_string().into(),
                });
                self.epoch += 1;
                true
            }
            Some(outage) if probe => {
                outage.backoff = outage.backoff.saturating_mul(2).min(self.max);
                outage.until = now + outage.backoff;
                outage.probing = false;
                outage.cause = cause.to_string().into();
                true
            }
            Some(_) => false,
        }
    }

    /// Records an answer: a probe's ends the outage for every caller. Calls
    /// sent before the outage began do not: they prove nothing about now.
    fn answered(&mut self, probe: bool) {
        if probe && self.outage.take().is_some() {
            self.epoch += 1;
        }
    }

    /// The probe's caller gave up before its outcome: the next call probes.
    fn abandon_probe(&mut self) {
        if let Some(outage) = &mut self.outage {
            outage.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(5);

    fn failure() -> RedisError {
        RedisError::Timeout(Duration::from_millis(500))
    }

    fn skipped(admission: Admission) -> bool {
        matches!(admission, Admission::Skip(_))
    }

    /// A failure skips every call for the back-off; after it, one call
    /// probes while the others are still skipped, and its answer reopens
    /// Redis to everyone.
    #[test]
    fn a_failure_skips_calls_until_one_probe_answers() {
        let mut gate = Gate::new(FIRST, MAX);
        let start = Instant::now();
        assert_eq!(gate.admit(start), Admission::Go);
        assert!(gate.failed(start, false, &failure()));

        assert!(skipped(gate.admit(start)));
        assert!(skipped(
            gate.admit(start + FIRST - Duration::from_millis(1))
        ));
        assert_eq!(gate.admit(start + FIRST), Admission::Probe);
        assert!(
            skipped(gate.admit(start + FIRST)),
            "only one probe at a time"
        );

        gate.answered(true);
        assert_eq!(gate.admit(start + FIRST), Admission::Go);
        assert_eq!(gate.admit(start + FIRST), Admission::Go);
    }

    /// Each failed probe doubles the back-off, up to the cap; an answer
    /// starts the next outage from the first back-off again.
    #[test]
    fn the_backoff_doubles_while_probes_fail_up_to_its_cap() {
        let mut gate = Gate::new(FIRST, MAX);
        let mut now = Instant::now();
        gate.failed(now, false, &failure());
        let mut waits = Vec::new();
        for _ in 0..5 {
            let backoff = gate.outage.as_ref().unwrap().backoff;
            assert!(skipped(
                gate.admit(now + backoff - Duration::from_millis(1))
            ));
            now += backoff;
            assert_eq!(gate.admit(now), Admission::Probe);
            assert!(gate.failed(now, true, &failure()));
            waits.push(gate.outage.as_ref().unwrap().backoff);
        }
        assert_eq!(
            waits,
            [2, 4, 5, 5, 5].map(Duration::from_secs),
            "doubling, capped at {MAX:?}"
        );

        now += MAX;
        assert_eq!(gate.admit(now), Admission::Probe);
        gate.answered(true);
        gate.failed(now, false, &failure());
        assert_eq!(gate.outage.as_ref().unwrap().backoff, FIRST);
    }

    /// Calls sent before an outage began neither extend nor end it when they
    /// finish after it: only the probe speaks for Redis as it is now.
    #[test]
    fn stragglers_from_before_an_outage_change_nothing() {
        let mut gate = Gate::new(FIRST, MAX);
        let start = Instant::now();
        gate.failed(start, false, &failure());
        assert!(!gate.failed(start, false, &failure()), "no new connection");
        gate.answered(false);
        assert!(skipped(gate.admit(start)), "still backed off");
        assert_eq!(gate.outage.as_ref().unwrap().until, start + FIRST);
    }

    /// A probe whose caller gave up frees the way for the next probe.
    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let mut gate = Gate::new(FIRST, MAX);
        let start = Instant::now();
        gate.failed(start, false, &failure());
        assert_eq!(gate.admit(start + FIRST), Admission::Probe);
        gate.abandon_probe();
        assert_eq!(gate.admit(start + FIRST), Admission::Probe);
    }

    /// The epoch changes when an outage begins and when it ends, and only then.
    #[test]
    fn the_epoch_marks_each_outage_and_each_recovery() {
        let mut gate = Gate::new(FIRST, MAX);
        let start = Instant::now();
        gate.answered(false);
        assert_eq!(gate.epoch, 0);
        gate.failed(start, false, &failure());
        assert_eq!(gate.epoch, 1);
        gate.admit(start + FIRST);
        gate.failed(start + FIRST, true, &failure());
        assert_eq!(gate.epoch, 1, "a failed probe continues the outage");
        gate.admit(start + FIRST * 3);
        gate.answered(true);
        assert_eq!(gate.epoch, 2);
    }

    /// Against a port that accepts and drops every connection: the first
    /// call tries and fails, the calls after it do not connect at all.
    #[tokio::test]
    async fn calls_after_a_failure_do_not_reach_for_redis() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(socket);
            }
        });
        let mut config = crate::config::Config::defaults().redis;
        config.url = format!("redis://127.0.0.1:{port}/0").parse().unwrap();
        config.outage_backoff = Duration::from_secs(3600);
        config.outage_backoff_max = Duration::from_secs(3600);
        let redis = RedisConnection::new(&config).unwrap();

        let first = redis.ping().await.unwrap_err();
        assert!(!matches!(first, RedisError::Backoff(_)), "{first}");
        let tried = accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(tried, 1);
        for _ in 0..100 {
            let error = redis.ping().await.unwrap_err();
            assert!(matches!(error, RedisError::Backoff(_)), "{error}");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), tried);
        assert!(!redis.available());
    }

    /// Against the local Redis (the tests' own): each thread's calls share
    /// one connection (`CLIENT ID` names the connection a command ran on),
    /// another thread has its own.
    #[test]
    fn each_thread_sends_on_its_own_connection() {
        let redis = RedisConnection::new(&crate::config::Config::defaults().redis).unwrap();
        let client_ids = |redis: RedisConnection| {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let mut ids = Vec::new();
                    for _ in 0..3 {
                        ids.push(
                            redis
                                .query::<i64>(&redis::cmd("CLIENT").arg("ID").clone())
                                .await
                                .unwrap(),
                        );
                    }
                    ids
                })
            })
            .join()
            .unwrap()
        };
        let first = client_ids(redis.clone());
        let second = client_ids(redis);
        assert!(first.iter().all(|id| *id == first[0]), "{first:?}");
        assert!(second.iter().all(|id| *id == second[0]), "{second:?}");
        assert_ne!(first[0], second[0]);
    }
}
