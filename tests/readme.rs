//! The README's quick start, run as a newcomer would paste it: its shell block,
//! with the worker's address and binary those of a test worker.

mod common;

use std::process::Command;

use common::spawn_app;

/// The commands of the README's `## Quick start` section (its first `sh` block).
fn quick_start() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let section = readme
        .split("\n## Quick start\n")
        .nth(1)
        .expect("the README has a Quick start section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the Quick start has a sh block");
    block.to_owned()
}

#[actix_web::test]
async fn the_quick_start_creates_a_key_stores_lists_and_verifies_an_event() {
    let app = spawn_app().await;
    let script = quick_start();
    assert!(
        script.contains("cargo run --release -q --") && script.contains("http://127.0.0.1:8080"),
        "the quick start runs the worker's binary and talks to the first command's address:\n{script}"
    );
    let script = script
        .replace(
            "cargo run --release -q --",
            env!("CARGO_BIN_EXE_audit-worker"),
        )
        .replace("http://127.0.0.1:8080", &app.address);
    let database_url = app.config.database.url.to_string();
    // The worker's actors run on this thread: wait for the shell elsewhere.
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new("bash");
        for (key, _) in std::env::vars() {
            if key.starts_with("AUDIT_WORKER") {
                command.env_remove(key);
            }
        }
        command
            .args(["-euo", "pipefail", "-c", &script])
            .env("AUDIT_WORKER__DATABASE__URL", database_url)
            .output()
            .expect("run bash")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the quick start fails:\n{stdout}\n{stderr}"
    );
    // Ingest answer, listing, API verification, CLI verification: one JSON
    // document each, in order.
    let documents: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| panic!("JSON answers ({error}):\n{stdout}"));
    assert_eq!(documents.len(), 4, "{stdout}");
    let stored = &documents[0]["events"][0];
    assert!(
        stored["id"].is_i64() && stored["hash"].is_string(),
        "{stdout}"
    );
    let listed = documents[1]["events"].as_array().expect("a listing");
    assert_eq!(listed.len(), 1, "{stdout}");
    assert_eq!(listed[0]["action"], "patient.record.read");
    assert_eq!(listed[0]["id"], stored["id"]);
    assert_eq!(documents[2]["valid"], true, "{stdout}");
    assert_eq!(documents[3]["valid"], true, "{stdout}");
}
