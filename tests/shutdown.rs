//! Graceful shutdown of the real binary: SIGTERM stops it cleanly with exit 0.

mod common;

use std::time::Duration;

use common::process::{free_port, serve, signal, wait_ready};
use common::wait_until;
use nix::sys::signal::Signal;

/// SIGTERM stops the worker cleanly (exit 0, shutdown logged) and the port is released.
#[tokio::test]
async fn sigterm_shuts_down_gracefully_with_exit_0() {
    let url = common::test_config().database.url;
    let _db = common::TestDatabase::named(url.database_name());
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("{}.log", url.database_name()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut worker = serve(
        port,
        &url.to_string(),
        &[("AUDIT_WORKER__LOG__FORMAT", "json")],
        log.into(),
    );
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&client, &base, &mut worker).await;

    signal(&worker, Signal::SIGTERM);

    let status = wait_until(Duration::from_secs(20), "worker exit", || {
        let exited = worker.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(status.success(), "exit status {status:?}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(log.contains("Shut down cleanly"), "{log}");
    let readyz = format!("{base}/readyz");
    assert!(client.get(&readyz).send().await.is_err(), "port still open");
}
