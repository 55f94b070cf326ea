//! `/v1/presets` against the real worker and PostgreSQL: the CRUD round trip
//! (409 and 404 included), validation of a preset naming each bad field,
//! isolation between organizations, permissions, and the effect of every change
//! on the next ingested event.

mod common;

use common::{spawn_app, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// A preset for reading a patient's record: PHI, the resource type defaulted,
/// a reason required, the status restricted.
fn phi_read() -> Value {
    json!({
        "name": "phi-read",
        "description": "A clinician reads a patient record",
        "action": "patient.record.read",
        "data_classification": "PHI",
        "required_fields": ["target_resource_id", "details.reason"],
        "default_values": {"target_resource_type": "Patient", "status": "success"},
        "validation": {"fields": {
            "status": {"enum": ["success", "failure"]},
            "target_resource_id": {"pattern": "^p-[0-9]+$", "min_length": 3, "max_length": 20}
        }}
    })
}

/// The `details` entry naming `field`, or a panic showing the body.
fn problem<'a>(body: &'a Value, field: &str) -> &'a Value {
    body["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details: {body}"))
        .iter()
        .find(|d| d["field"] == field)
        .unwrap_or_else(|| panic!("{field} not named: {body}"))
}

/// `POST /v1/presets`; asserts 201 and returns the preset as stored.
async fn create_preset(app: &TestApp, key: &str, preset: Value) -> Value {
    let (status, created) = app
        .call(Method::POST, "/v1/presets", Some(key), Some(preset))
        .await;
    assert_eq!(status, 201, "{created}");
    created
}

/// Create, read, list, replace and delete, with the conflicts and absences in
/// between answered 409 and 404.
#[actix_web::test]
async fn presets_round_trip_through_create_read_replace_and_delete() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;

    let created = create_preset(&app, &key, phi_read()).await;
    assert_eq!(created["name"], "phi-read");
    assert_eq!(created["data_classification"], "PHI");
    assert_eq!(
        created["required_fields"],
        json!(["target_resource_id", "details.reason"])
    );
    assert_eq!(created["default_values"]["target_resource_type"], "Patient");
    assert_eq!(
        created["validation"]["fields"]["target_resource_id"]["pattern"],
        "^p-[0-9]+$"
    );
    assert!(created["created_by"]
        .as_str()
        .unwrap()
        .starts_with("api-key:"));

    let (status, again) = app
        .call(Method::POST, "/v1/presets", Some(&key), Some(phi_read()))
        .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["code"], "conflict");

    let (status, one) = app
        .call(Method::GET, "/v1/presets/phi-read", Some(&key), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(one, created);

    let mut second = phi_read();
    second["name"] = json!("login");
    second["action"] = json!("auth.login");
    second["data_classification"] = json!("INTERNAL");
    let (status, _) = app
        .call(Method::POST, "/v1/presets", Some(&key), Some(second))
        .await;
    assert_eq!(status, 201);
    let (status, list) = app.call(Method::GET, "/v1/presets", Some(&key), None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["login", "phi-read"]);

    // PUT replaces the whole preset: what the body leaves out takes its default.
    let (status, replaced) = app
        .call(
            Method::PUT,
            "/v1/presets/phi-read",
            Some(&key),
            Some(json!({"action": "patient.record.view", "required_fields": ["correlation_id"]})),
        )
        .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["action"], "patient.record.view");
    assert_eq!(replaced["data_classification"], "INTERNAL");
    assert_eq!(replaced["default_values"], json!({}));
    assert_eq!(replaced["description"], Value::Null);
    assert_eq!(replaced["created_at"], created["created_at"]);
    // PUT on a new name creates it.
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/presets/fresh",
            Some(&key),
            Some(json!({"action": "x.y"})),
        )
        .await;
    assert_eq!(status, 201);
    // A PUT cannot rename.
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/presets/fresh",
            Some(&key),
            Some(json!({"name": "other", "action": "x.y"})),
        )
        .await;
    assert_eq!(status, 400);
    problem(&body, "name");

    let (status, body) = app
        .call(Method::DELETE, "/v1/presets/phi-read", Some(&key), None)
        .await;
    assert_eq!(status, 204, "{body}");
    for method in [Method::GET, Method::DELETE] {
        let (status, body) = app
            .call(method, "/v1/presets/phi-read", Some(&key), None)
            .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
}

/// Every malformed part of a preset is refused with a 400 naming it, and
/// nothing is stored.
#[actix_web::test]
async fn an_invalid_preset_is_refused_naming_its_field() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let with = |field: &str, value: Value| {
        let mut preset = phi_read();
        preset[field] = value;
        preset
    };
    let cases = [
        (with("name", json!("")), "name"),
        (with("name", json!("has space")), "name"),
        (with("name", json!("x".repeat(256))), "name"),
        (with("action", json!("  ")), "action"),
        (
            with("data_classification", json!("SECRET")),
            "data_classification",
        ),
        (
            with("required_fields", json!("principal_id")),
            "required_fields",
        ),
        (
            with("required_fields", json!(["nope"])),
            "required_fields[0]",
        ),
        (
            with("required_fields", json!(["details.reason", 3])),
            "required_fields[1]",
        ),
        (with("default_values", json!([])), "default_values"),
        (
            with("default_values", json!({"colour": "red"})),
            "default_values.colour",
        ),
        (
            with("default_values", json!({"status": "maybe"})),
            "default_values.status",
        ),
        (
            with("default_values", json!({"principal_id": 7})),
            "default_values.principal_id",
        ),
        (
            with("default_values", json!({"details": "text"})),
            "default_values.details",
        ),
        (
            with("default_values", json!({"action": "a.b"})),
            "default_values.action",
        ),
        (
            with("default_values", json!({"idempotency_key": "k"})),
            "default_values.idempotency_key",
        ),
        (with("validation", json!({"rules": {}})), "validation.rules"),
        (
            with("validation", json!({"fields": {"nope": {"enum": ["a"]}}})),
            "validation.fields.nope",
        ),
        (
            with(
                "validation",
                json!({"fields": {"status": {"pattern": "(unclosed"}}}),
            ),
            "validation.fields.status.pattern",
        ),
        (
            with("validation", json!({"fields": {"status": {"enum": []}}})),
            "validation.fields.status.enum",
        ),
        (
            with(
                "validation",
                json!({"fields": {"status": {"min_length": 5, "max_length": 2}}}),
            ),
            "validation.fields.status.min_length",
        ),
        (
            with(
                "validation",
                json!({"fields": {"status": {"max_length": -1}}}),
            ),
            "validation.fields.status.max_length",
        ),
        (
            with("validation", json!({"fields": {"status": {"regex": "x"}}})),
            "validation.fields.status.regex",
        ),
        // The default `status: success` breaks the preset's own rule.
        (
            with(
                "validation",
                json!({"fields": {"status": {"enum": ["failure"]}}}),
            ),
            "default_values.status",
        ),
    ];
    for (preset, field) in cases {
        let (status, body) = app
            .call(
                Method::POST,
                "/v1/presets",
                Some(&key),
                Some(preset.clone()),
            )
            .await;
        assert_eq!(status, 400, "{preset} → {body}");
        assert_eq!(body["error"]["code"], "validation_failed");
        assert!(
            !problem(&body, field)["message"]
                .as_str()
                .unwrap()
                .is_empty(),
            "{body}"
        );
    }
    // A body without a name, and one that is not a preset at all.
    let mut nameless = phi_read();
    nameless.as_object_mut().unwrap().remove("name");
    let (status, body) = app
        .call(Method::POST, "/v1/presets", Some(&key), Some(nameless))
        .await;
    assert_eq!(status, 400);
    problem(&body, "name");
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/presets",
            Some(&key),
            Some(json!({"name": "x", "action": "a", "extra": 1})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("extra"));

    let (_, list) = app.call(Method::GET, "/v1/presets", Some(&key), None).await;
    assert_eq!(list["presets"], json!([]), "nothing was stored");
}

/// Organization B neither sees nor changes organization A's presets, and may
/// use the same name for its own.
#[actix_web::test]
async fn one_organization_cannot_see_or_change_another_organizations_presets() {
    let app = spawn_app().await;
    let a = app.create_key("org-a", "org:admin").await;
    let b = app.create_key("org-b", "org:admin").await;
    create_preset(&app, &a, phi_read()).await;

    let (_, list) = app.call(Method::GET, "/v1/presets", Some(&b), None).await;
    assert_eq!(list["presets"], json!([]));
    let (status, _) = app
        .call(Method::GET, "/v1/presets/phi-read", Some(&b), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(Method::DELETE, "/v1/presets/phi-read", Some(&b), None)
        .await;
    assert_eq!(status, 404);
    let mut theirs = phi_read();
    theirs["organization_id"] = json!("org-a");
    let (status, _) = app
        .call(Method::POST, "/v1/presets", Some(&b), Some(theirs))
        .await;
    assert_eq!(status, 403, "naming another organization is refused");
    // B's PUT of the same name makes B's own preset; A's stays as it was.
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/presets/phi-read",
            Some(&b),
            Some(json!({"action": "b.action"})),
        )
        .await;
    assert_eq!(status, 201, "a new preset of B's, not A's replaced");
    let (_, a_view) = app
        .call(Method::GET, "/v1/presets/phi-read", Some(&a), None)
        .await;
    assert_eq!(a_view["action"], "patient.record.read");
    // And B's events cannot use A's preset: B's own applies.
    let receipts = app
        .ingest(
            &b,
            json!({"preset": "phi-read", "principal_id": "u", "status": "success"}),
        )
        .await;
    let stored = app.stored_event(&b, &receipts[0]["id"]).await;
    assert_eq!(stored["action"], "b.action");
}

/// Reading needs `audit.presets:read`, changing needs create/update/delete:
/// a member reads but cannot change, an ingest key can do neither.
#[actix_web::test]
async fn presets_need_their_permissions() {
    let app = spawn_app().await;
    let member = app.create_key("org-a", "org:member").await;
    let ingest_only = app.create_key("org-a", "ingest").await;

    let (status, _) = app
        .call(Method::GET, "/v1/presets", Some(&member), None)
        .await;
    assert_eq!(status, 200);
    for key in [&member, &ingest_only] {
        let (status, body) = app
            .call(Method::POST, "/v1/presets", Some(key), Some(phi_read()))
            .await;
        assert_eq!(status, 403, "{body}");
        let (status, _) = app
            .call(
                Method::PUT,
                "/v1/presets/phi-read",
                Some(key),
                Some(json!({"action": "a"})),
            )
            .await;
        assert_eq!(status, 403);
        let (status, _) = app
            .call(Method::DELETE, "/v1/presets/phi-read", Some(key), None)
            .await;
        assert_eq!(status, 403);
    }
    let (status, _) = app
        .call(Method::GET, "/v1/presets", Some(&ingest_only), None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = app.call(Method::GET, "/v1/presets", None, None).await;
    assert_eq!(status, 401);
}

/// Each change made over the API applies to the very next event: a created
/// preset's defaults and required fields, an update's new rule, and after
/// deletion the preset is unknown (the event refused, as for any unknown name).
#[actix_web::test]
async fn preset_changes_apply_to_the_next_ingested_event() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    create_preset(&app, &key, phi_read()).await;

    let receipts = app
        .ingest(
            &key,
            json!({"preset": "phi-read", "principal_id": "dr-who", "target_resource_id": "p-42",
                "details": {"reason": "treatment"}}),
        )
        .await;
    let event = app.stored_event(&key, &receipts[0]["id"]).await;
    assert_eq!(event["action"], "patient.record.read");
    assert_eq!(event["data_classification"], "PHI");
    assert_eq!(event["target_resource_type"], "Patient");
    assert_eq!(event["status"], "success");

    let (status, body) = app
        .try_ingest(
            &key,
            json!({"preset": "phi-read", "principal_id": "dr-who", "target_resource_id": "p-42"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(problem(&body, "details.reason")["message"]
        .as_str()
        .unwrap()
        .contains("preset `phi-read`"));

    // The update requires a correlation id and drops the reason.
    let mut updated = phi_read();
    updated["required_fields"] = json!(["correlation_id"]);
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/presets/phi-read",
            Some(&key),
            Some(updated),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = app
        .try_ingest(
            &key,
            json!({"preset": "phi-read", "principal_id": "dr-who", "target_resource_id": "p-42"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    problem(&body, "correlation_id");
    let (status, body) = app
        .try_ingest(
            &key,
            json!({"preset": "phi-read", "principal_id": "dr-who", "target_resource_id": "p-42",
            "correlation_id": "c-1"}),
        )
        .await;
    assert_eq!(status, 201, "the reason is no longer required: {body}");

    let (status, _) = app
        .call(Method::DELETE, "/v1/presets/phi-read", Some(&key), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = app
        .try_ingest(
            &key,
            json!({"preset": "phi-read", "principal_id": "dr-who", "action": "patient.record.read",
            "status": "success", "correlation_id": "c-1"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(problem(&body, "preset")["message"]
        .as_str()
        .unwrap()
        .contains("no preset named `phi-read`"));
}
