//! The release worker as a child process on its own port and fresh database,
//! shared by the benchmarks (included with `#[path]`, so each bench uses only
//! part of it).
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use audit_worker::db::tls::{PgTls, TlsParams};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// The local PostgreSQL server; each run creates (through the worker) and drops its own database.
pub const SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432";
const READY_DEADLINE: Duration = Duration::from_secs(60);
const EXIT_DEADLINE: Duration = Duration::from_secs(40);
const POLL: Duration = Duration::from_millis(50);

/// The release worker running as a child on its own port and database.
pub struct Worker {
    child: Child,
    pub port: u16,
    pub database: String,
    pub log: PathBuf,
    /// Dropped when this worker stops (false for a worker started beside another).
    owns_database: bool,
}

impl Worker {
    /// Starts `audit-worker serve` with the bench's configuration plus
    /// `settings` (`AUDIT_WORKER__*` overrides) and waits until `/readyz` answers 200.
    pub async fn start(settings: &[(&str, String)]) -> Self {
        Self::start_with_url_query("", settings).await
    }

    /// [`start`](Self::start), with `query` (`sslmode=require`, say) on the
    /// worker's database URL.
    pub async fn start_with_url_query(query: &str, settings: &[(&str, String)]) -> Self {
        let database = format!("bench_{}", &Uuid::new_v4().simple().to_string()[..12]);
        Self::spawn(database, query, settings, true).await
    }

    /// A second worker process on this worker's database (and Redis prefix),
    /// with the same configuration plus `settings`.
    pub async fn beside(&self, settings: &[(&str, String)]) -> Self {
        Self::spawn(self.database.clone(), "", settings, false).await
    }

    async fn spawn(
        database: String,
        query: &str,
        settings: &[(&str, String)],
        owns_database: bool,
    ) -> Self {
        let log = PathBuf::from(format!("/tmp/{database}-{}.log", Uuid::new_v4().simple()));
        let port = free_port();
        let log_file = File::create(&log).expect("create the worker log in /tmp");
        let stderr = log_file.try_clone().expect("duplicate the log file handle");
        let mut command = worker_command(port, &database);
        if !query.is_empty() {
            command.env(
                "AUDIT_WORKER__DATABASE__URL",
                format!("{}?{query}", database_url(&database)),
            );
        }
        let child = command
            .envs(settings.iter().map(|(key, value)| (*key, value.as_str())))
            .arg("serve")
            .stdout(log_file)
            .stderr(stderr)
            .spawn()
            .expect("start the audit-worker binary");
        let mut worker = Self {
            child,
            port,
            database,
            log,
            owns_database,
        };
        println!(
            "worker pid {} on 127.0.0.1:{port}, database {}, log {}",
            worker.child.id(),
            worker.database,
            worker.log.display()
        );
        worker.wait_ready().await;
        worker
    }

    pub fn database_url(&self) -> String {
        database_url(&self.database)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn wait_ready(&mut self) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()
            .expect("build the readiness client");
        let url = format!("{}/readyz", self.base_url());
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the worker") {
                panic!(
                    "the worker exited ({status}) before it was ready; see {}",
                    self.log.display()
                );
            }
            let ready = client.get(&url).send().await;
            if ready.is_ok_and(|response| response.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the worker was not ready within {READY_DEADLINE:?}; see {}",
                self.log.display()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Issues a key with `audit-worker api-key create` and returns it.
    pub fn create_key(&self, organization: &str, role: &str) -> String {
        let output = worker_command(self.port, &self.database)
            .args(["api-key", "create", "--org", organization, "--role", role])
            .output()
            .expect("run audit-worker api-key create");
        assert!(
            output.status.success(),
            "api-key create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("the key is UTF-8")
            .trim()
            .to_owned()
    }

    /// A `/proc/<pid>/status` figure in kB (`VmRSS`, `VmHWM`).
    pub fn rss_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the worker's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"))
    }

    /// CPU time the worker has used so far (user and system, all threads).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read the worker's /proc stat");
        // After the command name: the state, ..., utime and stime (the 12th and 13th).
        let after_name = &stat[stat.rfind(')').expect("a command name in /proc stat") + 1..];
        let ticks: u64 = after_name
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|field| field.parse::<u64>().expect("CPU ticks are numbers"))
            .sum();
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// Average cores the worker kept busy since `before` (a `cpu_time`) over `elapsed`.
    pub fn cores_since(&self, before: Duration, elapsed: Duration) -> f64 {
        (self.cpu_time() - before).as_secs_f64() / elapsed.as_secs_f64()
    }

    /// SIGTERM, wait for the exit (SIGKILL after a deadline), then drop the database.
    pub async fn stop(mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let pid = Pid::from_raw(self.child.id() as i32);
        kill(pid, Signal::SIGTERM).expect("send SIGTERM to the worker");
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the worker") {
                break status;
            }
            if started.elapsed() > EXIT_DEADLINE {
                println!("the worker ignored SIGTERM for {EXIT_DEADLINE:?}: killing it");
                self.child.kill().expect("kill the worker");
                break self.child.wait().expect("reap the worker");
            }
            tokio::time::sleep(POLL).await;
        };
        let took = started.elapsed();
        if self.owns_database {
            drop_database(&self.database).await;
        }
        (status, took)
    }
}

impl Drop for Worker {
    /// On a panic, never leave the worker running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The worker binary with the bench's configuration in its environment.
pub fn worker_command(port: u16, database: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_audit-worker"));
    command
        .env("AUDIT_WORKER__HTTP__BIND", format!("127.0.0.1:{port}"))
        .env("AUDIT_WORKER__DATABASE__URL", database_url(database))
        .env("AUDIT_WORKER__LOG__LEVEL", "warn")
        .env("AUDIT_WORKER__AUTH__RATE_LIMIT_PER_SECOND", "1000000")
        .env("AUDIT_WORKER__AUTH__RATE_LIMIT_BURST", "1000000")
        .env("AUDIT_WORKER__CACHE__REDIS_PREFIX", format!("{database}:"))
        // The benches' receivers listen on loopback, which deliveries may
        // not reach by default.
        .env("AUDIT_WORKER__DELIVERY__ALLOW_LOOPBACK", "true")
        .env_remove("RUST_LOG");
    command
}

pub fn database_url(database: &str) -> String {
    format!("{SERVER_URL}/{database}")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free local port")
        .port()
}

pub async fn drop_database(name: &str) {
    let client = connect(&format!("{SERVER_URL}/postgres")).await;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .expect("drop the bench database");
}

/// A connection made as the worker makes its own: `sslmode` at its default,
/// `prefer`, so TLS wherever PostgreSQL offers it (this machine's does). A
/// baseline the worker is compared with pays the same transport as the
/// worker; [`connect`] is for setup and checks.
pub async fn connect_as_worker(url: &str) -> tokio_postgres::Client {
    let tls = PgTls::load(&TlsParams::default()).expect("the default TLS settings load");
    let mut config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    config.ssl_mode(tls.driver_mode());
    let (client, connection) = config
        .connect(tls.connector())
        .await
        .expect("connect to the local PostgreSQL");
    tokio::spawn(connection);
    client
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the local PostgreSQL");
    tokio::spawn(connection);
    client
}

/// Prints how much the worker logged (at level warn) and its first lines.
pub fn report_log(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    println!(
        "worker log: {} lines at warn level or above ({})",
        lines.len(),
        path.display()
    );
    for line in lines.iter().take(5) {
        println!("  {line}");
    }
}

/// `POST /v1/events` with a JSON body already serialized; `Err` names what
/// went wrong (transport, or the status and the start of the answer).
pub async fn post_events(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    let response = client
        .post(format!("{base}/v1/events"))
        .bearer_auth(key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|error| format!("transport: {error}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|error| format!("body: {error}"))?;
    if status == reqwest::StatusCode::CREATED {
        Ok(())
    } else {
        Err(format!(
            "{status}: {}",
            text.chars().take(160).collect::<String>()
        ))
    }
}
