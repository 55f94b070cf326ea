//! The real binary as a child process, for the tests that kill it or signal it.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::wait_until;

/// The release binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_audit-worker");

/// Runs the binary with `args` to its end, configured by `settings` alone:
/// the test's own `AUDIT_WORKER*` variables are removed, so nothing of the
/// environment the tests run in reaches it.
pub fn run(args: &[&str], settings: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BINARY);
    for (key, _) in std::env::vars() {
        if key.starts_with("AUDIT_WORKER") {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .envs(settings.iter().copied())
        .output()
        .expect("run the binary")
}

/// What a run printed on stderr.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A loopback port free at the time of asking, chosen below the kernel's
/// ephemeral range: a port that `bind(0)` hands out could be handed again,
/// to another test's server or outgoing connection, in the seconds before
/// the worker binds it (a worker that cannot bind exits, and its test then
/// waited in vain for it to be ready). Outside that range only another
/// caller of this function could take it, by the same random draw.
pub fn free_port() -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    loop {
        let port = rand::random_range(10_000..ephemeral_start.max(10_001));
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `audit-worker serve` on `port` against `database_url`, loopback
/// destinations allowed, with extra `AUDIT_WORKER__*` settings; its log goes
/// to `log`.
pub fn serve(port: u16, database_url: &str, settings: &[(&str, &str)], log: Stdio) -> Child {
    Command::new(BINARY)
        .arg("serve")
        .env("AUDIT_WORKER__HTTP__BIND", format!("127.0.0.1:{port}"))
        .env("AUDIT_WORKER__DATABASE__URL", database_url)
        // Test receivers listen on loopback (see `test_config`).
        .env("AUDIT_WORKER__DELIVERY__ALLOW_LOOPBACK", "true")
        .envs(settings.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the worker")
}

/// Waits until `/readyz` answers 200; fails at once, with its exit status,
/// if the worker exits first.
pub async fn wait_ready(client: &reqwest::Client, base: &str, worker: &mut Child) {
    wait_until(Duration::from_secs(30), "worker ready", || {
        let exited = worker.try_wait().expect("poll the worker process");
        async move {
            if let Some(status) = exited {
                panic!("the worker at {base} exited before it was ready: {status}");
            }
            let response = client.get(format!("{base}/readyz")).send().await.ok()?;
            (response.status() == 200).then_some(())
        }
    })
    .await;
}

/// `POST {base}{path}` with `key` and a JSON `body`; returns the status and
/// the JSON body (`Null` when there is none); asserts the worker answers.
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("the worker answers");
    super::answer(response).await
}

/// A key issued with `audit-worker api-key create`.
pub fn issue_key(database_url: &str, organization: &str, role: &str) -> String {
    let output = Command::new(BINARY)
        .args(["api-key", "create", "--org", organization, "--role", role])
        .env("AUDIT_WORKER__DATABASE__URL", database_url)
        .output()
        .expect("run api-key create");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Sends `signal` to the worker process; asserts it was delivered.
pub fn signal(worker: &Child, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(worker.id() as i32);
    nix::sys::signal::kill(pid, signal).expect("signal the worker");
}

/// Kills the worker with SIGKILL, as a crash would, and reaps it.
pub fn kill_9(worker: &mut Child) {
    worker.kill().expect("SIGKILL the worker");
    worker.wait().expect("reap the worker");
}
