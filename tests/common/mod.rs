//! Shared test helpers: a real worker in-process on a random port against a
//! fresh, uniquely named database (`TestApp`, whose requests read as
//! sentences: see `api.rs`); the one event builder (`event`); a TCP proxy to
//! cut a dependency off; real receivers and servers; and a deadline-bounded
//! wait instead of sleeps.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

mod api;
mod event;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod receiver;
pub mod servers;
pub mod syslog;
pub mod temp_dir;

// Re-exported for `use common::{event, …}`; like every helper here, unused by some binaries.
#[allow(unused_imports)]
pub use api::{error_fields, webhook};
#[allow(unused_imports)]
pub use event::{event, Event};

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

use audit_worker::clock::{SharedClock, SystemClock};
use audit_worker::config::{Config, PostgresUrl};
use audit_worker::reload::ConfigReloader;
use audit_worker::Application;
use uuid::Uuid;

/// PostgreSQL server the tests use; each test gets its own database on it.
pub fn test_server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A unique database name, so tests running in parallel never share data.
pub fn unique_database_name() -> String {
    format!("aw_test_{}", &Uuid::new_v4().simple().to_string()[..16])
}

/// Configuration for a test worker: compiled-in defaults, port 0, one HTTP
/// worker, short timeouts, and a fresh database.
pub fn test_config() -> Config {
    let mut config = Config::defaults();
    let server: PostgresUrl = test_server_url().parse().expect("valid TEST_DATABASE_URL");
    let database = unique_database_name();
    config.database.url = server.with_database(&database);
    // Tests share one Redis: each worker (and any second worker on the same
    // database) keeps its keys apart, as separate deployments would.
    config.cache.redis_prefix = format!("{database}:");
    config.http.bind = "127.0.0.1:0".parse().unwrap();
    config.http.workers = 1;
    config.http.shutdown_timeout = Duration::from_secs(5);
    config.database.health_timeout = Duration::from_secs(1);
    config.database.startup_timeout = Duration::from_secs(10);
    config.supervisor.restart_backoff_min = Duration::from_millis(10);
    config.supervisor.restart_backoff_max = Duration::from_millis(200);
    config.supervisor.heartbeat_interval = Duration::from_millis(200);
    // Test receivers (webhooks, SMTP, FTP, S3) listen on loopback, which the
    // delivery network policy refuses by default; tests of the policy itself
    // turn this off again.
    config.delivery.allow_loopback = true;
    config
}

/// A worker running in-process for one test, on its own database.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub config: Config,
    pub server: actix_web::dev::ServerHandle,
    /// The worker's error tracker, to record errors in-process.
    pub errors: audit_worker::error_tracking::ErrorTracker,
    /// The worker's configuration reloader, to reload (and read) it in-process.
    pub reloader: Arc<ConfigReloader>,
    /// Drops the test database when the test ends.
    _database: TestDatabase,
}

/// Starts a worker with the default test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a worker after `adjust` has changed the test configuration.
/// Must run inside an actix system (`#[actix_web::test]`).
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with_clock(Arc::new(SystemClock), adjust).await
}

/// Starts a second worker instance beside `first`: its database and its Redis
/// key prefix, after `adjust`.
pub async fn spawn_beside(first: &TestApp, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let (url, prefix) = (
        first.config.database.url.clone(),
        first.config.cache.redis_prefix.clone(),
    );
    spawn_app_with(move |config| {
        config.database.url = url;
        config.cache.redis_prefix = prefix;
        adjust(config);
    })
    .await
}

/// Starts a worker whose maintenance jobs read `clock` (tests move it to age data).
pub async fn spawn_app_with_clock(clock: SharedClock, adjust: impl FnOnce(&mut Config)) -> TestApp {
    init_logging();
    let mut config = test_config();
    adjust(&mut config);
    let database = TestDatabase::named(config.database.url.database_name());
    let app = Application::build_with_clock(config.clone(), clock)
        .await
        .expect("the worker starts");
    TestApp::running(app, config, database)
}

/// Starts a worker from the configuration `file`, as `serve --config file`
/// does: a reload reads the file again.
pub async fn spawn_app_from_file(file: &Path) -> TestApp {
    init_logging();
    let config = Config::load(Some(file)).expect("the test file is valid");
    let database = TestDatabase::named(config.database.url.database_name());
    let app = Application::build_with_config_file(config.clone(), Some(file.to_path_buf()))
        .await
        .expect("the worker starts");
    TestApp::running(app, config, database)
}

impl TestApp {
    /// Runs the built worker in the background, for the test to call.
    fn running(app: Application, config: Config, database: TestDatabase) -> Self {
        // Over HTTPS, by the name the test certificates carry (clients of
        // such a worker are the test's own, trusting the test CA).
        let address = match app.serves_https() {
            true => format!("https://localhost:{}", app.port()),
            false => format!("http://127.0.0.1:{}", app.port()),
        };
        let test_app = TestApp {
            address,
            client: reqwest::Client::new(),
            config,
            server: app.server_handle(),
            errors: app.errors(),
            reloader: app.config_reloader(),
            _database: database,
        };
        actix_web::rt::spawn(app.run_until_stopped());
        test_app
    }

    /// Issues a key through the same code path as `audit-worker api-key create`.
    pub async fn create_key(&self, organization_id: &str, role: &str) -> String {
        audit_worker::admin::create_api_key(&self.config, organization_id, role, None)
            .await
            .expect("issue a key")
    }

    /// Sends a request with an optional bearer key and JSON body; returns the
    /// status and the JSON body (`Null` when the body is empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("the worker answers")).await
    }

    /// The worker's archive store, as configured.
    pub async fn archive_store(&self) -> audit_worker::archive_store::ArchiveStore {
        audit_worker::archive_store::ArchiveStore::open(
            &self.config.archive,
            self.config.partitions.archive_compression_level,
        )
        .await
    }

    /// A direct connection to the worker's database, as its owner.
    pub async fn database(&self) -> tokio_postgres::Client {
        connect(&self.config.database.url).await
    }

    /// A connection of a superuser who has switched the append-only triggers
    /// off (`session_replication_role = replica`): the attacker verification
    /// must still catch, outside what PostgreSQL can refuse.
    pub async fn database_without_triggers(&self) -> tokio_postgres::Client {
        let client = self.database().await;
        client
            .batch_execute("SET session_replication_role = replica")
            .await
            .expect("a superuser may switch triggers off");
        client
    }

    /// `GET path` without a key; asserts only that the worker answers.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the worker answers")
    }

    /// `GET path` without a key, and its JSON body; asserts the body is JSON.
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }
}

/// A database that is dropped (with its connections) when the test ends.
pub struct TestDatabase(String);

impl TestDatabase {
    /// Takes charge of dropping the database `name` (which need not exist yet).
    pub fn named(name: &str) -> Self {
        Self(name.to_owned())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.0.clone();
        // Straight to the server: the worker may have reached it through a test proxy
        // that runs on the very thread this drop blocks.
        let admin: PostgresUrl = test_server_url().parse().expect("valid TEST_DATABASE_URL");
        // Drop runs outside any async context we could borrow: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                if let Ok((client, connection)) =
                    admin.config().connect(tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// The status and JSON body of an answer (`Null` when the body is empty);
/// asserts a non-empty body is JSON.
pub async fn answer(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("a body");
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    (status, json)
}

/// A direct connection to the database at `url`, with its TLS settings;
/// asserts it connects.
pub async fn connect(url: &PostgresUrl) -> tokio_postgres::Client {
    let (client, connection) = url
        .config()
        .connect(url.tls().connector())
        .await
        .unwrap_or_else(|error| panic!("connect to {}: {error:?}", url.database_name()));
    tokio::spawn(connection);
    client
}

/// Polls `condition` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Logs to stderr when `TEST_LOG` is set; silent otherwise.
fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let mut config = Config::defaults().log;
            config.level = "debug".to_owned();
            audit_worker::telemetry::init(&config);
        }
    });
}
