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

/// Runs schemathesis with every check against `app`, authenticated with
/// `key`, and returns its summary; fails the test on anything it finds. A
/// fixed seed and a bounded number of cases per operation keep each run the
/// same and short.
async fn schemathesis(app: &common::TestApp, key: &str, selection: &[&str]) -> String {
    let mut args: Vec<String> = [
        "-c",
        "from schemathesis.cli import schemathesis; schemathesis()",
        "--config-file",
        SCHEMATHESIS_CONFIG,
        "run",
        "--checks",
        "all",
        "--max-examples",
        "10",
        "--seed",
        "20261206",
        "--generation-database",
        "none",
        "--workers",
        "1",
        // The document says once, for every request, that no string may hold
        // NUL (free-form JSON such as `details` has no schema to carry it).
        "--generation-allow-x00",
        "false",
        "--no-color",
    ]
    .map(str::to_owned)
    .into();
    args.extend(selection.iter().map(|arg| (*arg).to_owned()));
    args.push(format!("--header=Authorization: Bearer {key}"));
    args.push(format!("{}/openapi.json", app.address));
    let started = Instant::now();
    let output = python(args).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .find("= SUMMARY =")
        .map_or("", |at| &stdout[at..])
        .to_owned();
    eprintln!("schemathesis took {:.0?}\n{summary}", started.elapsed());
    assert!(output.status.success(), "{}", printed(&output));
    summary
}

/// Spawns a worker whose rate limiter lets schemathesis' thousands of
/// requests with one key through: the limiter is not what these tests are about.
async fn spawn_unlimited_app() -> common::TestApp {
    spawn_app_with(|config| {
        config.auth.rate_limit_per_second = 100_000;
        config.auth.rate_limit_burst = 100_000;
    })
    .await
}

/// With a tenant's administrator key, schemathesis finds no server error and
/// no answer that differs from the document (status, content type, headers,
/// body schema), and every request the document calls invalid is refused.
#[actix_web::test]
async fn schemathesis_finds_the_worker_true_to_its_document() {
    let app = spawn_unlimited_app().await;
    let key = app.create_key("org-schemathesis", "org:admin").await;
    // `revoke_api_key` would revoke the very key the run authenticates with
    // (GET /v1/api-keys lists it), and `rotate_api_key` could end its secret:
    // every later request would get 401. The next test covers rotation.
    let summary = schemathesis(
        &app,
        &key,
        &[
            "--exclude-operation-id",
            "revoke_api_key",
            "--exclude-operation-id",
            "rotate_api_key",
        ],
    )
    .await;
    assert!(summary.contains("Tested: 95"), "{summary}");
}

/// Key rotation, which the run above leaves out, run where the only key ids
/// schemathesis can learn are those of the keys it creates itself.
#[actix_web::test]
async fn schemathesis_finds_key_rotation_true_to_the_document() {
    let app = spawn_unlimited_app().await;
    let key = app.create_key("org-schemathesis", "org:admin").await;
    let summary = schemathesis(
        &app,
        &key,
        &[
            "--include-operation-id",
            "create_api_key",
            "--include-operation-id",
            "rotate_api_key",
        ],
    )
    .await;
    assert!(summary.contains("Tested: 2"), "{summary}");
}

/// The operators' tools answer a tenant with 403 only, so the run above never
/// sees their answers: with an operator's key, they are as documented too.
#[actix_web::test]
async fn schemathesis_finds_the_operators_tools_true_to_the_document() {
    let app = spawn_unlimited_app().await;
    let operators = app.config.operations.organization.clone();
    let key = app.create_key(&operators, "org:admin").await;
    let summary = schemathesis(&app, &key, &["--include-tag", "admin"]).await;
    assert!(summary.contains("Tested: 5"), "{summary}");
}
