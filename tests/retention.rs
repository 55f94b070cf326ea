//! Retention policies and legal holds over the API: the built-in policies,
//! overriding and restoring them, validation, permissions, tenant isolation,
//! and the database functions archival relies on.

mod common;

use audit_worker::db::retention;
use audit_worker::events::retention::policy_for;
use common::{error_fields, spawn_app, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

async fn policies(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, body) = app
        .call(Method::GET, "/v1/retention-policies", Some(key), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["policies"].as_array().unwrap().clone()
}

fn named<'a>(policies: &'a [Value], name: &str) -> &'a Value {
    policies
        .iter()
        .find(|p| p["policy_name"] == name)
        .unwrap_or_else(|| panic!("no policy `{name}` in {policies:?}"))
}

/// The fields a 400 names, in order; asserts the 400 and its code.
fn invalid_fields(status: u16, body: &Value) -> Vec<String> {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    error_fields(body)
}

/// A new organization has the four built-in policies, sorted by name, with no
/// id and the documented periods.
#[actix_web::test]
async fn a_new_organization_lists_the_built_in_policies() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;

    let listed = policies(&app, &key).await;

    let names: Vec<&str> = listed
        .iter()
        .map(|p| p["policy_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["confidential", "minimal", "phi_extended", "standard"]
    );
    for (name, classification, retention, archive) in [
        ("standard", "INTERNAL", 2555, 365),
        ("phi_extended", "PHI", 2555, 365),
        ("confidential", "CONFIDENTIAL", 1825, 365),
        ("minimal", "PUBLIC", 90, 30),
    ] {
        let policy = named(&listed, name);
        assert_eq!(policy["built_in"], true, "{policy}");
        assert_eq!(policy["id"], Value::Null, "{policy}");
        assert_eq!(policy["is_active"], true, "{policy}");
        assert_eq!(policy["data_classification"], classification);
        assert_eq!(policy["retention_days"], retention);
        assert_eq!(policy["archive_after_days"], archive);
        assert_eq!(policy["delete_after_days"], retention);
    }
}

/// A policy named like a built-in replaces it (a second one of that name is a
/// 409), can be changed, and once deleted the built-in is back; the effective
/// policies archival reads say the same.
#[actix_web::test]
async fn overriding_a_built_in_lasts_until_the_override_is_deleted() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;

    let created = app
        .create_retention_policy(
            &key,
            json!({"policy_name": "standard", "retention_days": 3650, "archive_after_days": 730,
               "delete_after_days": 3650, "data_classification": "INTERNAL",
               "description": "Ten years", "organization_id": "org-a"}),
        )
        .await;
    assert_eq!(created["built_in"], false);
    assert!(created["created_by"]
        .as_str()
        .unwrap()
        .starts_with("api-key:"));
    let id = created["id"].as_i64().unwrap();
    let listed = policies(&app, &key).await;
    assert_eq!(listed.len(), 4, "the override replaces the built-in");
    assert_eq!(named(&listed, "standard")["retention_days"], 3650);

    let (status, body) = app
        .call(
            Method::POST,
            "/v1/retention-policies",
            Some(&key),
            Some(json!({"policy_name": "standard", "retention_days": 10,
                        "data_classification": "INTERNAL"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");

    let (status, changed) = app
        .call(
            Method::PATCH,
            &format!("/v1/retention-policies/{id}"),
            Some(&key),
            Some(json!({"retention_days": 4000, "archive_after_days": null, "description": null})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["retention_days"], 4000);
    assert_eq!(changed["archive_after_days"], Value::Null, "null clears");
    assert_eq!(changed["delete_after_days"], 3650, "absent keeps");
    assert_eq!(changed["description"], Value::Null);

    let database = app.database().await;
    let effective = retention::effective_policies(&database, "org-a")
        .await
        .unwrap();
    let applied = policy_for(&effective, "standard", "INTERNAL").unwrap();
    assert_eq!((applied.id, applied.retention_days), (Some(id), 4000));

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/retention-policies/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let standard = named(&policies(&app, &key).await, "standard").clone();
    assert_eq!(standard["built_in"], true);
    assert_eq!(standard["retention_days"], 2555);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/retention-policies/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 404, "deleting twice");
    let effective = retention::effective_policies(&database, "org-a")
        .await
        .unwrap();
    assert!(
        policy_for(&effective, "standard", "INTERNAL")
            .unwrap()
            .built_in
    );
}

/// An organization's own policy joins the built-ins in name order; an
/// inactive one applies to no event.
#[actix_web::test]
async fn own_policies_are_listed_with_the_built_ins() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;

    app.create_retention_policy(
        &key,
        json!({"policy_name": "billing_10y", "retention_days": 3650, "data_classification": "CONFIDENTIAL",
               "is_active": false}),
    )
    .await;

    let listed = policies(&app, &key).await;
    let names: Vec<&str> = listed
        .iter()
        .map(|p| p["policy_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "billing_10y",
            "confidential",
            "minimal",
            "phi_extended",
            "standard"
        ]
    );
    assert_eq!(named(&listed, "billing_10y")["is_active"], false);
    assert_eq!(
        named(&listed, "billing_10y")["archive_after_days"],
        Value::Null
    );
}

/// Every invalid field of a policy is named in one 400, on create and on
/// change; unknown fields and another organization's id are refused.
#[actix_web::test]
async fn invalid_policies_are_refused_naming_each_field() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;

    let (status, body) = app
        .call(
            Method::POST,
            "/v1/retention-policies",
            Some(&key),
            Some(
                json!({"policy_name": "Not Valid!", "retention_days": 0, "archive_after_days": 5,
                        "delete_after_days": 0, "data_classification": "SECRET"}),
            ),
        )
        .await;
    assert_eq!(
        invalid_fields(status, &body),
        [
            "policy_name",
            "retention_days",
            "archive_after_days",
            "delete_after_days",
            "data_classification"
        ]
    );
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/retention-policies",
            Some(&key),
            Some(
                json!({"policy_name": "p", "retention_days": 90, "archive_after_days": 60,
                        "delete_after_days": 30, "data_classification": "PUBLIC"}),
            ),
        )
        .await;
    assert_eq!(invalid_fields(status, &body), ["delete_after_days"]);
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/retention-policies",
            Some(&key),
            Some(
                json!({"policy_name": "p", "retention_days": 90, "data_classification": "PUBLIC",
                        "ttl": 3}),
            ),
        )
        .await;
    assert_eq!(status, 400, "unknown field: {body}");
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/retention-policies",
            Some(&key),
            Some(
                json!({"policy_name": "p", "retention_days": 90, "data_classification": "PUBLIC",
                        "organization_id": "org-b"}),
            ),
        )
        .await;
    assert_eq!(status, 403, "another organization: {body}");

    let created = app
        .create_retention_policy(
            &key,
            json!({"policy_name": "p", "retention_days": 90, "archive_after_days": 60,
               "data_classification": "PUBLIC"}),
        )
        .await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/retention-policies/{}", created["id"]),
            Some(&key),
            Some(json!({"retention_days": 30, "data_classification": "public"})),
        )
        .await;
    assert_eq!(
        invalid_fields(status, &body),
        ["archive_after_days", "data_classification"],
        "checked against the stored archive_after_days"
    );
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/retention-policies/{}", created["id"]),
            Some(&key),
            Some(json!({"policy_name": "q"})),
        )
        .await;
    assert_eq!(status, 400, "the name cannot change: {body}");
    let listed = policies(&app, &key).await;
    assert_eq!(named(&listed, "p")["retention_days"], 90, "nothing changed");
}

/// Another organization sees neither policies nor holds, and cannot change,
/// delete or release them: to it they do not exist.
#[actix_web::test]
async fn another_organization_can_neither_see_nor_change_policies_or_holds() {
    let app = spawn_app().await;
    let owner = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-b", "org:admin").await;
    let policy = app.create_retention_policy(
        &owner,
        json!({"policy_name": "standard", "retention_days": 30, "data_classification": "INTERNAL"}),
    )
    .await;
    let hold = app
        .create_legal_hold(&owner, json!({"reason": "litigation"}))
        .await;

    let theirs = policies(&app, &other).await;
    assert!(theirs.iter().all(|p| p["built_in"] == true), "{theirs:?}");
    let policy_path = format!("/v1/retention-policies/{}", policy["id"]);
    let (status, _) = app
        .call(
            Method::PATCH,
            &policy_path,
            Some(&other),
            Some(json!({"retention_days": 1})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(Method::DELETE, &policy_path, Some(&other), None)
        .await;
    assert_eq!(status, 404);

    let (_, holds) = app
        .call(Method::GET, "/v1/legal-holds", Some(&other), None)
        .await;
    assert_eq!(holds["holds"], json!([]));
    let (status, body) = app
        .call(
            Method::GET,
            "/v1/legal-holds?organization_id=org-a",
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, 403, "naming another organization: {body}");
    let hold_path = format!("/v1/legal-holds/{}", hold["id"]);
    let (status, _) = app.call(Method::GET, &hold_path, Some(&other), None).await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(
            Method::POST,
            &format!("{hold_path}/release"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, 404);

    let mine = policies(&app, &owner).await;
    assert_eq!(named(&mine, "standard")["retention_days"], 30, "untouched");
    let (_, still) = app.call(Method::GET, &hold_path, Some(&owner), None).await;
    assert_eq!(still["released_at"], Value::Null, "still in force");
}

/// `audit.retention` is not a member's: creating is refused, and so is
/// reading; an auditor reads but changes nothing.
#[actix_web::test]
async fn only_roles_granting_audit_retention_manage_it() {
    let app = spawn_app().await;
    let member = app.create_key("org-a", "org:member").await;
    let auditor = app.create_key("org-a", "auditor").await;
    let policy = json!({"policy_name": "p", "retention_days": 90, "data_classification": "PUBLIC"});
    let hold = json!({"reason": "litigation"});

    for key in [&member, &auditor] {
        let (status, body) = app
            .call(
                Method::POST,
                "/v1/retention-policies",
                Some(key),
                Some(policy.clone()),
            )
            .await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = app
            .call(
                Method::POST,
                "/v1/legal-holds",
                Some(key),
                Some(hold.clone()),
            )
            .await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, _) = app
        .call(Method::GET, "/v1/retention-policies", Some(&member), None)
        .await;
    assert_eq!(status, 403);
    assert_eq!(policies(&app, &auditor).await.len(), 4);
    let (status, _) = app
        .call(Method::GET, "/v1/legal-holds", Some(&auditor), None)
        .await;
    assert_eq!(status, 200);
}

/// A hold is placed, listed (in force), released once with who and when, and
/// then listed as released; a second release is a 409.
#[actix_web::test]
async fn a_legal_hold_is_placed_listed_and_released_once() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let everything = app
        .create_legal_hold(&key, json!({"reason": "regulator inquiry"}))
        .await;
    let narrow = app.create_legal_hold(
        &key,
        json!({"reason": "case 42", "principal_id": "alice", "starts_at": "2024-01-01T00:00:00Z",
               "ends_at": "2024-02-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(narrow["principal_id"], "alice");
    assert_eq!(narrow["starts_at"], "2024-01-01T00:00:00Z");
    assert!(narrow["created_by"]
        .as_str()
        .unwrap()
        .starts_with("api-key:"));
    assert_eq!(narrow["released_at"], Value::Null);

    let (status, listed) = app
        .call(Method::GET, "/v1/legal-holds?active=true", Some(&key), None)
        .await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&Value> = listed["holds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["id"])
        .collect();
    assert_eq!(ids, [&narrow["id"], &everything["id"]], "newest first");

    let release = format!("/v1/legal-holds/{}/release", everything["id"]);
    let (status, released) = app.call(Method::POST, &release, Some(&key), None).await;
    assert_eq!(status, 200, "{released}");
    assert!(released["released_at"].is_string());
    assert_eq!(released["released_by"], narrow["created_by"]);
    let (status, body) = app.call(Method::POST, &release, Some(&key), None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");

    let (_, active) = app
        .call(Method::GET, "/v1/legal-holds?active=true", Some(&key), None)
        .await;
    assert_eq!(active["holds"].as_array().unwrap().len(), 1);
    assert_eq!(active["holds"][0]["id"], narrow["id"]);
    let (_, inactive) = app
        .call(
            Method::GET,
            "/v1/legal-holds?active=false",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(inactive["holds"][0]["id"], everything["id"]);
    let (_, all) = app
        .call(Method::GET, "/v1/legal-holds", Some(&key), None)
        .await;
    assert_eq!(all["holds"].as_array().unwrap().len(), 2);
    let (status, got) = app
        .call(
            Method::GET,
            &format!("/v1/legal-holds/{}", everything["id"]),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(got, released);
}

/// Every invalid field of a hold is named in one 400.
#[actix_web::test]
async fn invalid_legal_holds_are_refused_naming_each_field() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;

    let (status, body) = app
        .call(
            Method::POST,
            "/v1/legal-holds",
            Some(&key),
            Some(
                json!({"reason": "  ", "principal_id": "", "starts_at": "2024-02-01T00:00:00Z",
                        "ends_at": "2024-01-01T00:00:00Z"}),
            ),
        )
        .await;
    assert_eq!(
        invalid_fields(status, &body),
        ["reason", "principal_id", "ends_at"]
    );
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/legal-holds",
            Some(&key),
            Some(
                json!({"reason": "x".repeat(2001), "starts_at": "2024-01-01T00:00:00Z",
                        "ends_at": "2024-01-01T00:00:00Z"}),
            ),
        )
        .await;
    assert_eq!(invalid_fields(status, &body), ["reason", "ends_at"]);
    let (status, body) = app
        .call(Method::POST, "/v1/legal-holds", Some(&key), Some(json!({})))
        .await;
    assert_eq!(status, 400, "reason is required: {body}");
    let (status, body) = app
        .call(
            Method::GET,
            "/v1/legal-holds?active=maybe",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
}
