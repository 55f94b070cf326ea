//! The OpenAPI document against real tools: `openapi-spec-validator` checks it
//! is a valid OpenAPI 3.1 document, and schemathesis sends a worker the
//! requests it describes (and requests it calls invalid) and checks every
//! answer against it. Both come from PyPI, installed by `.ci/run`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{spawn_app, spawn_app_with};

/// schemathesis' settings: which checks accept a 400 for which operations, and why.
const SCHEMATHESIS_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");

/// The served document, written to a file of its own for the Python tools.
async fn document_file(app: &common::TestApp) -> PathBuf {
    let (status, document) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200, "{document}");
    let path = std::env::temp_dir().join(format!("aw-openapi-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, document.to_string()).expect("write the document");
    path
}

/// Runs `python3 args…` in a directory of its own (schemathesis keeps a
/// cache of past failures in its working directory, which would make one run
/// depend on the last), off the actix thread, which the worker under test
/// shares, and returns its output.
async fn python(args: Vec<String>) -> Output {
    let directory = std::env::temp_dir().join(format!("aw-openapi-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&directory).expect("create a working directory");
    let output = {
        let directory = directory.clone();
        actix_web::rt::task::spawn_blocking(move || {
            Command::new("python3")
                .args(&args)
                .current_dir(directory)
                .output()
                .expect("python3 runs (.ci/run installs the tools these tests use)")
        })
        .await
        .expect("the tool's thread finishes")
    };
    let _ = std::fs::remove_dir_all(&directory);
    output
}

fn printed(output: &Output) -> String {
    format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn text(path: &Path) -> String {
    path.to_str().expect("a UTF-8 temporary path").to_owned()
}

/// The served document is OpenAPI 3.1 (what utoipa 5 writes) and
/// `openapi-spec-validator`, which checks 3.1 documents against the 3.1
/// schema, finds nothing wrong with it (unique operation ids included).
#[actix_web::test]
async fn the_document_passes_openapi_spec_validator() {
    let app = spawn_app().await;
    let file = document_file(&app).await;
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(document["openapi"], "3.1.0");

    let output = python(vec![
        "-m".into(),
        "openapi_spec_validator".into(),
        "--schema".into(),
        "3.1".into(),
        text(&file),
    ])
    .await;
    let _ = std::fs::remove_file(&file);
    assert!(output.status.success(), "{}", printed(&output));
}

/// schemathesis, with every check, finds no server error and no answer that
/// differs from the document (status, content type, headers, body schema),
/// and every request the document calls invalid is refused. A fixed seed and
/// a bounded number of cases per operation keep the run the same each time.
#[actix_web::test]
async fn schemathesis_finds_the_worker_true_to_its_document() {
    let app = spawn_app_with(|config| {
        // Thousands of requests with one key, some on several workers: the
        // limiter is not what this test is about.
        config.auth.rate_limit_per_second = 100_000;
        config.auth.rate_limit_burst = 100_000;
    })
    .await;
    let key = app.create_key("org-schemathesis", "org:admin").await;
    let started = Instant::now();
    let output = python(vec![
        "-c".into(),
        "from schemathesis.cli import schemathesis; schemathesis()".into(),
        "--config-file".into(),
        SCHEMATHESIS_CONFIG.into(),
        "run".into(),
        format!("{}/openapi.json", app.address),
        "--checks".into(),
        "all".into(),
        "--max-examples".into(),
        "10".into(),
        "--seed".into(),
        "20261206".into(),
        "--generation-database".into(),
        "none".into(),
        "--workers".into(),
        "1".into(),
        // The document says once, for every request, that no string may hold
        // NUL (free-form JSON such as `details` has no schema to carry it).
        "--generation-allow-x00".into(),
        "false".into(),
        // It would revoke the very key the run authenticates with (GET
        // /v1/api-keys lists it): every later request would get 401.
        "--exclude-operation-id".into(),
        "revoke_api_key".into(),
        "--header".into(),
        format!("Authorization: Bearer {key}"),
        "--no-color".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .find("= SUMMARY =")
        .map_or(&stdout[..0], |at| &stdout[at..]);
    eprintln!("schemathesis took {:.0?}\n{summary}", started.elapsed());
    assert!(output.status.success(), "{}", printed(&output));
    assert!(summary.contains("Tested: 84"), "{summary}");
}
