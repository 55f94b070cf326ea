//! Real SMTP, S3 and FTP servers for destination tests, from PyPI (aiosmtpd,
//! moto in server mode, pyftpdlib; `.ci/run` installs them), a TLS-only
//! `redis-server`, each a child process on a free loopback port, stopped
//! when dropped; and PostgreSQL clusters of a test's own ([`postgres`]),
//! with or without TLS.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pki::Issued;
use super::process::free_port;

/// A server child process on a free loopback port, killed (and its directory removed) when dropped.
pub struct Server {
    pub port: u16,
    /// Where the server keeps what it received (a Maildir, or the FTP root).
    pub dir: PathBuf,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "audit-worker-{kind}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spawn(args: &[&str], port: u16, dir: PathBuf) -> Server {
    let child = Command::new("python3")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs (aiosmtpd and pyftpdlib come from .ci/run)");
    listening(child, port, dir, &format!("the {args:?} server"))
}

/// `child` once it accepts connections on `port` (killed with a panic when
/// it has not within 15 s).
fn listening(child: Child, port: u16, dir: PathBuf, what: &str) -> Server {
    // Built first, so that a panic below kills the child.
    let server = Server { port, dir, child };
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// A `redis-server` (7.0, built with TLS) that speaks only TLS, on a free
/// loopback port, presenting `cert`; clients are checked against the CA in
/// `ca_file`, and with `require_client_cert` must present a certificate it
/// issued (`--tls-auth-clients yes`).
pub fn redis_tls(ca_file: &Path, cert: &Issued, require_client_cert: bool) -> Server {
    let (port, dir) = (free_port(), scratch_dir("redis"));
    let path = |path: &Path| path.to_str().unwrap().to_owned();
    let child = Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1", "--tls-port"])
        .arg(port.to_string())
        .args(["--tls-cert-file", &path(&cert.cert_file)])
        .args(["--tls-key-file", &path(&cert.key_file)])
        .args(["--tls-ca-cert-file", &path(ca_file)])
        .args([
            "--tls-auth-clients",
            if require_client_cert { "yes" } else { "no" },
        ])
        .args(["--save", "", "--appendonly", "no", "--dir", &path(&dir)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs (scripts/test needs it installed)");
    listening(child, port, dir, "redis-server with TLS")
}

/// An SMTP server storing every message in the Maildir `dir/box`.
pub fn smtp() -> Server {
    let (port, dir) = (free_port(), scratch_dir("smtp"));
    let mailbox = dir.join("box").to_str().unwrap().to_owned();
    let listen = format!("127.0.0.1:{port}");
    spawn(
        &[
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &listen,
            "-c",
            "aiosmtpd.handlers.Mailbox",
            &mailbox,
        ],
        port,
        dir,
    )
}

/// An FTP server with user `user` / `pass`, writable root `dir`.
pub fn ftp() -> Server {
    let (port, dir) = (free_port(), scratch_dir("ftp"));
    let (port_text, root) = (port.to_string(), dir.to_str().unwrap().to_owned());
    spawn(
        &[
            "-m",
            "pyftpdlib",
            "-i",
            "127.0.0.1",
            "-p",
            &port_text,
            "-w",
            "-d",
            &root,
            "-u",
            "user",
            "-P",
            "pass",
        ],
        port,
        dir,
    )
}

/// An explicit-FTPS server (pyftpdlib's TLS handler, `ftps_server.py`) with
/// user `user` / `pass`, writable root `dir/root`; `dir/ca.pem` is the CA its
/// certificate chains to.
pub fn ftps() -> Server {
    let (port, dir) = (free_port(), scratch_dir("ftps"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/ftps_server.py");
    let (port_text, base) = (port.to_string(), dir.to_str().unwrap().to_owned());
    spawn(&[script, &port_text, &base], port, dir)
}

/// An S3-protocol server (moto), any credentials accepted.
pub fn s3() -> Server {
    let (port, dir) = (free_port(), scratch_dir("s3"));
    let port_text = port.to_string();
    spawn(
        &["-m", "moto.server", "-H", "127.0.0.1", "-p", &port_text],
        port,
        dir,
    )
}

impl Server {
    /// The S3 server's address (`s3()` only).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An SDK client of the S3 server (`s3()` only), path-style, as the
    /// tests' destinations address it.
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("test", "test-secret", None, None, "test"))
                .endpoint_url(self.endpoint())
                .force_path_style(true)
                .build(),
        )
    }

    /// Every file under the server's directory, recursively, with its content.
    pub fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Ok(content) = std::fs::read(&path) {
                    out.push((path, content));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir, &mut out);
        out
    }
}

/// Rows of `sql` as DuckDB answers them (`duckdb_query.py`).
pub fn duckdb(sql: &str) -> Vec<Vec<serde_json::Value>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/duckdb_query.py");
    let output = Command::new("python3")
        .args([script, sql])
        .output()
        .expect("python3 runs (duckdb comes from scripts/test)");
    assert!(
        output.status.success(),
        "DuckDB refused {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// Checks `events` (OCSF) against the OCSF 1.3.0 schema with pydantic-ocsf's
/// models; the validator's verdict, one line per event, when any fails.
pub fn ocsf_problems(events: &[serde_json::Value]) -> Option<String> {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/ocsf_validate.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (pydantic-ocsf comes from scripts/test)");
    let input = serde_json::to_vec(events).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    (!output.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// PostgreSQL 15's programs (Debian's layout).
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL 15 cluster of one test's own, on a free loopback port:
/// stopped, and its folder removed, when dropped.
pub struct PgCluster {
    pub port: u16,
    dir: PathBuf,
    data: PathBuf,
}

/// Starts a cluster listening on 127.0.0.1 only. With `tls`, `ssl = on` with a
/// server certificate from that CA naming `localhost` only (so `127.0.0.1`
/// is a wrong host name), the CA also trusted for client certificates;
/// `postgres` logs in over TLS only, and the superuser role `certuser` with
/// its client certificate only (`cert`). Without, `ssl = off` and `postgres`
/// logs in in clear. Nobody needs a password.
pub fn postgres(tls: Option<&super::pki::TestCa>) -> PgCluster {
    let (port, dir) = (free_port(), scratch_dir("pg"));
    let data = dir.join("data");
    let cluster = PgCluster {
        port,
        dir: dir.clone(),
        data: data.clone(),
    };
    give_to_postgres(&dir);
    pg_run(
        pg_command("initdb")
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data),
        &cluster,
    );
    let mut conf = format!(
        "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
         fsync = off\nmax_connections = 60\n",
        dir.display()
    );
    let mut hba = String::from("local all all trust\n");
    match tls {
        Some(ca) => {
            let server = ca.server("pg-server", &["localhost"]);
            for (from, to) in [
                (&server.cert_file, "server.crt"),
                (&server.key_file, "server.key"),
                (&ca.cert_file, "ca.crt"),
            ] {
                std::fs::copy(from, data.join(to)).expect("copy the TLS files into the cluster");
            }
            conf.push_str(
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'ca.crt'\n",
            );
            hba.push_str(
                "hostssl all postgres 127.0.0.1/32 trust\nhostssl all certuser 127.0.0.1/32 cert\n",
            );
        }
        None => {
            conf.push_str("ssl = off\n");
            hba.push_str("host all postgres 127.0.0.1/32 trust\n");
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .expect("open postgresql.conf");
    std::io::Write::write_all(&mut file, conf.as_bytes()).expect("write postgresql.conf");
    std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
    // The copies keep their mode 0600 (PostgreSQL refuses a key others may read).
    give_to_postgres(&dir);
    // `-w`: returns once the server accepts connections, or fails after `-t` seconds.
    pg_run(
        pg_command("pg_ctl")
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log")),
        &cluster,
    );
    pg_run(
        Command::new(format!("{PG_BIN}/psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-h",
            ])
            .arg(&dir)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "CREATE ROLE certuser LOGIN SUPERUSER",
            ]),
        &cluster,
    );
    cluster
}

impl PgCluster {
    /// `postgres://user@host:port/database?query`.
    pub fn url(&self, user: &str, host: &str, database: &str, query: &str) -> String {
        format!("postgres://{user}@{host}:{}/{database}?{query}", self.port)
    }

    /// What the server logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let _ = pg_command("pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-D"])
                .arg(&self.data)
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// `initdb` and `postgres` refuse to run as root: as root, they run as the
/// `postgres` user, who owns the cluster's folder.
fn pg_command(program: &str) -> Command {
    let path = format!("{PG_BIN}/{program}");
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", &path]);
        command
    } else {
        Command::new(path)
    }
}

fn give_to_postgres(dir: &std::path::Path) {
    if running_as_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .expect("run chown");
        assert!(status.success(), "chown {} to postgres", dir.display());
    }
}

/// Runs `command` (from the cluster's folder, which `postgres` may enter);
/// panics with its output and the server's log when it fails.
fn pg_run(command: &mut Command, cluster: &PgCluster) {
    let output = command
        .current_dir(&cluster.dir)
        .output()
        .unwrap_or_else(|error| panic!("run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        cluster.log()
    );
}
