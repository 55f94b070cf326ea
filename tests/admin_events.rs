//! Every administrative change is an `admin.<object>.<verb>` event of the
//! organization's own chain, written with the change: the calling key (or
//! `cli:<user>`) as principal, the object as target, secrets masked; a refused
//! change leaves none; the events list and verify like any other.

mod common;

use common::process::BINARY;
use common::{spawn_app, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The organization's `admin.*` events, oldest first, as the API lists them.
async fn admin_events(app: &TestApp, key: &str) -> Vec<Value> {
    let mut events = app.list_events(key, "action=admin.*&limit=1000").await["events"]
        .as_array()
        .expect("a listing")
        .clone();
    events.reverse();
    events
}

/// Action, principal, target type and target id of each event.
fn summary(events: &[Value]) -> Vec<(String, String, String, String)> {
    events
        .iter()
        .map(|event| {
            let text = |field: &str| event[field].as_str().unwrap_or_default().to_owned();
            (
                text("action"),
                text("principal_id"),
                text("target_resource_type"),
                text("target_resource_id"),
            )
        })
        .collect()
}

/// `method path` with `key` and `body`; asserts the status and returns the body.
async fn call(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let (got, answer) = app.call(method, path, Some(key), body).await;
    assert_eq!(got, status, "{path}: {answer}");
    answer
}

#[actix_web::test]
async fn each_administrative_change_is_an_event_of_the_organizations_chain() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let caller_id = app.list_events(&admin, "action=admin.api_key.create").await["events"][0]
        ["target_resource_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = format!("key:{caller_id}");

    let issued = call(
        &app,
        &admin,
        Method::POST,
        "/v1/api-keys",
        Some(json!({"role": "auditor", "name": "ops"})),
        201,
    )
    .await;
    let issued_id = issued["id"].as_str().unwrap().to_owned();
    call(
        &app,
        &admin,
        Method::DELETE,
        &format!("/v1/api-keys/{issued_id}"),
        None,
        204,
    )
    .await;
    call(
        &app,
        &admin,
        Method::PUT,
        "/v1/roles/reader",
        Some(json!({"permissions": [{"resource": "audit.events", "action": "read"}]})),
        201,
    )
    .await;
    call(&app, &admin, Method::DELETE, "/v1/roles/reader", None, 204).await;
    let destination = call(
        &app,
        &admin,
        Method::POST,
        "/v1/destinations",
        Some(json!({"type": "webhook", "label": "siem",
                    "config": {"url": "http://127.0.0.1:9/hook", "secret": SECRET}})),
        201,
    )
    .await;
    let destination_id = destination["id"].as_i64().unwrap();
    let path = format!("/v1/destinations/{destination_id}");
    for change in [
        json!({"label": "siem-2"}),
        json!({"disabled": true}),
        json!({"disabled": false}),
    ] {
        call(&app, &admin, Method::PATCH, &path, Some(change), 200).await;
    }
    call(&app, &admin, Method::DELETE, &path, None, 204).await;
    call(
        &app,
        &admin,
        Method::POST,
        "/v1/presets",
        Some(json!({"name": "login", "action": "auth.login"})),
        201,
    )
    .await;
    call(&app, &admin, Method::DELETE, "/v1/presets/login", None, 204).await;
    let policy = call(
        &app,
        &admin,
        Method::POST,
        "/v1/retention-policies",
        Some(json!({"policy_name": "short", "retention_days": 30, "data_classification": "INTERNAL"})),
        201,
    )
    .await;
    let policy_path = format!("/v1/retention-policies/{}", policy["id"]);
    call(
        &app,
        &admin,
        Method::PATCH,
        &policy_path,
        Some(json!({"retention_days": 40})),
        200,
    )
    .await;
    call(&app, &admin, Method::DELETE, &policy_path, None, 204).await;
    let hold = app
        .create_legal_hold(&admin, json!({"reason": "litigation"}))
        .await;
    call(
        &app,
        &admin,
        Method::POST,
        &format!("/v1/legal-holds/{}/release", hold["id"]),
        None,
        200,
    )
    .await;
    let rule = call(
        &app,
        &admin,
        Method::POST,
        "/v1/alert-rules",
        Some(
            json!({"name": "bursts", "kind": "threshold", "when": {"action": "auth.login"},
                    "threshold": 3, "window": "5m", "severity": "HIGH", "type": "SECURITY",
                    "title": "Login bursts"}),
        ),
        201,
    )
    .await;
    call(
        &app,
        &admin,
        Method::DELETE,
        &format!("/v1/alert-rules/{}", rule["id"]),
        None,
        204,
    )
    .await;
    // Refused changes leave no event.
    call(
        &app,
        &admin,
        Method::PUT,
        "/v1/roles/org:admin",
        Some(json!({"permissions": []})),
        409,
    )
    .await;
    call(
        &app,
        &admin,
        Method::DELETE,
        "/v1/presets/nothing-here",
        None,
        404,
    )
    .await;

    let events = admin_events(&app, &admin).await;
    let mine = |action: &str, object: &str, id: &str| {
        (
            action.to_owned(),
            me.clone(),
            object.to_owned(),
            id.to_owned(),
        )
    };
    let destination_id = destination_id.to_string();
    let policy_id = policy["id"].to_string();
    let hold_id = hold["id"].to_string();
    let rule_id = rule["id"].to_string();
    let expected = vec![
        mine("admin.api_key.create", "api_key", &issued_id),
        mine("admin.api_key.revoke", "api_key", &issued_id),
        mine("admin.role.create", "role", "reader"),
        mine("admin.role.delete", "role", "reader"),
        mine("admin.destination.create", "destination", &destination_id),
        mine("admin.destination.update", "destination", &destination_id),
        mine("admin.destination.disable", "destination", &destination_id),
        mine("admin.destination.enable", "destination", &destination_id),
        mine("admin.destination.delete", "destination", &destination_id),
        mine("admin.preset.create", "preset", "login"),
        mine("admin.preset.delete", "preset", "login"),
        mine(
            "admin.retention_policy.create",
            "retention_policy",
            &policy_id,
        ),
        mine(
            "admin.retention_policy.update",
            "retention_policy",
            &policy_id,
        ),
        mine(
            "admin.retention_policy.delete",
            "retention_policy",
            &policy_id,
        ),
        mine("admin.legal_hold.place", "legal_hold", &hold_id),
        mine("admin.legal_hold.release", "legal_hold", &hold_id),
        mine("admin.alert_rule.create", "alert_rule", &rule_id),
        mine("admin.alert_rule.delete", "alert_rule", &rule_id),
    ];
    let summarized = summary(&events);
    assert!(
        summarized[0].0 == "admin.api_key.create" && summarized[0].1.starts_with("cli:"),
        "the test's own key, issued through the CLI: {summarized:?}"
    );
    assert_eq!(summarized[1..], expected[..], "{summarized:#?}");

    // Secrets are masked; the changed fields are there.
    let created = &events[5]["details"];
    assert_eq!(
        created["config"]["url"], "http://127.0.0.1:9/hook",
        "{created}"
    );
    assert_eq!(created["config"]["secret"], "***", "{created}");
    assert!(!events.iter().any(|e| e.to_string().contains(SECRET)));
    assert_eq!(events[6]["details"]["label"], "siem-2");
    assert_eq!(events[13]["details"]["retention_days"], 40);

    // Another organization sees none of them; the chain holding them verifies.
    let other = app.create_key("org-b", "org:admin").await;
    assert_eq!(
        admin_events(&app, &other).await.len(),
        1,
        "only its own key's record"
    );
    let report = app.verify(&admin).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["checked"].as_u64().unwrap() as usize, events.len());
}

/// A change and its event commit together: when the event cannot be written,
/// the change is not made either.
#[actix_web::test]
async fn no_change_is_made_without_its_event() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    // Make every write to the organization's chain fail, as a full disk or a
    // lost partition would: the head cannot move.
    app.database()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse_org_a() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'chain unavailable'; END $$; \
             CREATE TRIGGER refuse_org_a BEFORE UPDATE ON audit_chain_head FOR EACH ROW \
               WHEN (NEW.organization_id = 'org-a') EXECUTE FUNCTION refuse_org_a();",
        )
        .await
        .unwrap();
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/legal-holds",
            Some(&admin),
            Some(json!({"reason": "litigation"})),
        )
        .await;
    assert!(status >= 500, "{status}: {body}");
    assert_eq!(
        app.count("SELECT count(*) FROM legal_holds", &[]).await,
        0,
        "the hold was rolled back with its event"
    );
}

/// `audit-worker api-key revoke` is recorded as `cli:<user>` in the key's organization.
#[actix_web::test]
async fn the_command_line_records_its_changes_as_cli_user() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let listed = audit_worker::admin::list_api_keys(&app.config, Some("org-a"))
        .await
        .unwrap();
    let id = listed[0].id.clone();
    let revoked = std::process::Command::new(BINARY)
        .args(["api-key", "revoke", &id])
        .env(
            "AUDIT_WORKER__DATABASE__URL",
            app.config.database.url.to_string(),
        )
        .env("USER", "night-operator")
        .output()
        .unwrap();
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let recorded = app
        .database()
        .await
        .query_one(
            "SELECT principal_id, target_resource_id FROM audit_log \
             WHERE organization_id = 'org-a' AND action = 'admin.api_key.revoke'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(recorded.get::<_, String>(0), "cli:night-operator");
    assert_eq!(recorded.get::<_, String>(1), id);
    drop(admin);
}
