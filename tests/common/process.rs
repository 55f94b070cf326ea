//! The real binary as a child process, for the tests that kill it or signal it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// The release binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_audit-worker");

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// Waits until `/readyz` answers 200.
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    wait_until(Duration::from_secs(30), "worker ready", || async {
        let response = client.get(format!("{base}/readyz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
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
