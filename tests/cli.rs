//! The command line as an operator meets it: help for each command,
//! configuration errors that name the key, and `migrate`.

mod common;

use common::process::{run, stderr};
use std::io::Write;

/// Every command has its own `--help`.
#[test]
fn every_command_has_help() {
    for command in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["check-config", "--help"],
    ] {
        let output = run(command, &[]);
        assert!(output.status.success(), "{command:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage:"),
            "{command:?}"
        );
    }
}

/// `check-config` with the defaults succeeds and prints the documented defaults.
#[test]
fn check_config_prints_the_effective_configuration() {
    let output = run(&["check-config"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("127.0.0.1:8080"), "{stdout}");
    assert!(
        stdout.contains("postgres://postgres@127.0.0.1:5432/audit_worker"),
        "{stdout}"
    );
    assert!(stdout.contains("redis://127.0.0.1:6379/0"), "{stdout}");
}

/// An environment variable overrides its key, and a password never prints.
#[test]
fn environment_overrides_a_key_and_passwords_are_masked() {
    let output = run(
        &["check-config"],
        &[
            ("AUDIT_WORKER__HTTP__BIND", "0.0.0.0:9999"),
            (
                "AUDIT_WORKER__DATABASE__URL",
                "postgres://app:s3cret@db:5432/audit",
            ),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("0.0.0.0:9999"), "{stdout}");
    assert!(
        stdout.contains("postgres://app:***@db:5432/audit"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"), "{stdout}");
}

/// A bad value is reported with its key and the reason, with a non-zero exit,
/// before anything starts — for every command.
#[test]
fn a_bad_value_names_the_key_and_exits_non_zero() {
    let cases = [
        ("AUDIT_WORKER__HTTP__BIND", "not-an-address", "http.bind"),
        (
            "AUDIT_WORKER__DATABASE__POOL_MAX_SIZE",
            "0",
            "database.pool_max_size",
        ),
        (
            "AUDIT_WORKER__DATABASE__URL",
            "postgres://host:notaport/db",
            "database.url",
        ),
        ("AUDIT_WORKER__LOG__FORMAT", "xml", "log.format"),
        (
            "AUDIT_WORKER__REDIS__RESPONSE_TIMEOUT",
            "soon",
            "redis.response_timeout",
        ),
        (
            "AUDIT_WORKER__DELIVERY__DENIED_NETWORKS",
            "[\"10.0.0.0/33\"]",
            "delivery.denied_networks",
        ),
    ];
    for (key, value, named) in cases {
        for command in ["check-config", "serve", "migrate"] {
            let output = run(&[command], &[(key, value)]);
            assert!(
                !output.status.success(),
                "{command} with {key}={value} succeeded"
            );
            let message = stderr(&output);
            assert!(
                message.contains(named),
                "{command} with {key}={value}: {message}"
            );
        }
    }
}

/// Deliveries to loopback are refused unless allowed, which local
/// development does through the environment (see the README).
#[test]
fn allow_loopback_is_off_unless_the_environment_turns_it_on() {
    let output = run(&["check-config"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("\"allow_loopback\": false"), "{stdout}");

    let output = run(
        &["check-config"],
        &[("AUDIT_WORKER__DELIVERY__ALLOW_LOOPBACK", "true")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("\"allow_loopback\": true"), "{stdout}");
}

/// A key that does not exist (a typo) is refused rather than ignored.
#[test]
fn an_unknown_key_in_a_file_is_refused() {
    let mut file = tempfile();
    writeln!(file.1, "[http]\nbnid = \"127.0.0.1:1\"").unwrap();
    let output = run(&["--config", &file.0, "check-config"], &[]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("bnid"), "{}", stderr(&output));
}

/// `--config` reads the given file; a missing file is an error, not the defaults.
#[test]
fn config_flag_reads_the_file_and_refuses_a_missing_one() {
    let mut file = tempfile();
    writeln!(file.1, "[http]\nbind = \"127.0.0.1:7777\"").unwrap();
    let output = run(&["--config", &file.0, "check-config"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("127.0.0.1:7777"));

    let output = run(
        &["--config", "/nonexistent/audit.toml", "check-config"],
        &[],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("/nonexistent/audit.toml"),
        "{}",
        stderr(&output)
    );
}

/// `migrate` creates a missing database, applies the migrations, and a second
/// run reports that nothing was left to do.
#[test]
fn migrate_creates_and_migrates_the_database() {
    let url = common::test_config().database.url;
    let _db = common::TestDatabase::named(url.database_name());
    let url = url.to_string();
    let env = [("AUDIT_WORKER__DATABASE__URL", url.as_str())];

    let first = run(&["migrate"], &env);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(String::from_utf8_lossy(&first.stdout).contains("applied V1__initial_schema"));

    let second = run(&["migrate"], &env);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(String::from_utf8_lossy(&second.stdout).contains("up to date"));
}

fn tempfile() -> (String, std::fs::File) {
    let path = std::env::temp_dir().join(format!("audit-worker-{}.toml", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&path).unwrap();
    (path.to_string_lossy().into_owned(), file)
}

/// `api-key create` prints the key and nothing else; `list` shows it without
/// its secret; `revoke` marks it revoked; an unknown role is refused.
#[test]
fn api_key_commands_create_list_and_revoke() {
    let url = common::test_config().database.url;
    let _db = common::TestDatabase::named(url.database_name());
    let url = url.to_string();
    let env = [("AUDIT_WORKER__DATABASE__URL", url.as_str())];

    let created = run(
        &[
            "api-key", "create", "--org", "org-cli", "--role", "auditor", "--name", "ci",
        ],
        &env,
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let stdout = String::from_utf8(created.stdout).unwrap();
    let key = stdout.trim_end_matches('\n');
    assert!(!key.contains('\n') && key.starts_with("awk_"), "{stdout:?}");
    let id = key.split('_').nth(1).unwrap();

    let listed = run(&["api-key", "list", "--org", "org-cli"], &env);
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listing.contains(id) && listing.contains("auditor"),
        "{listing}"
    );
    assert!(
        !listing.contains(&key[21..]),
        "the secret must never be listed"
    );

    let revoked = run(&["api-key", "revoke", id], &env);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let listing = String::from_utf8_lossy(&run(&["api-key", "list"], &env).stdout).into_owned();
    let line = listing.lines().find(|line| line.starts_with(id)).unwrap();
    assert!(!line.ends_with('\t'), "revoked_at is filled: {line:?}");

    let refused = run(
        &["api-key", "create", "--org", "org-cli", "--role", "wizard"],
        &env,
    );
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("wizard"));
    assert!(refused.stdout.is_empty());
    let refused = run(&["api-key", "revoke", "0000000000000000"], &env);
    assert!(!refused.status.success());
}
