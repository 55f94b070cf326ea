//! Authentication, roles and tenant isolation over HTTP: who may call which
//! route, what a bad key gets, and that nothing crosses between organizations.

mod common;

use std::time::Duration;

use common::proxy::TcpProxy;
use common::{spawn_app, spawn_app_with, spawn_beside, wait_until, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

const BUILT_IN: [&str; 5] = ["org:owner", "org:admin", "org:member", "auditor", "ingest"];

/// One request of the permission matrix; `prepare` runs as org A's admin first
/// (it creates what the request acts on) and returns the path.
struct Case {
    method: Method,
    what: &'static str,
    allowed: &'static [&'static str],
    body: Option<Value>,
}

async fn path_for(app: &TestApp, admin: &str, what: &str, attempt: usize) -> String {
    match what {
        "list keys" | "create key" => "/v1/api-keys".to_owned(),
        "revoke key" => {
            let (_, created) = app
                .call(
                    Method::POST,
                    "/v1/api-keys",
                    Some(admin),
                    Some(json!({"role": "ingest"})),
                )
                .await;
            format!("/v1/api-keys/{}", created["id"].as_str().unwrap())
        }
        "rotate key" => {
            let (_, created) = app
                .call(
                    Method::POST,
                    "/v1/api-keys",
                    Some(admin),
                    Some(json!({"role": "ingest"})),
                )
                .await;
            format!("/v1/api-keys/{}/rotate", created["id"].as_str().unwrap())
        }
        "list roles" => "/v1/roles".to_owned(),
        "get role" => "/v1/roles/auditor".to_owned(),
        "put role" => format!("/v1/roles/matrix-{attempt}"),
        "delete role" => {
            let path = format!("/v1/roles/doomed-{attempt}");
            let (status, _) = app
                .call(
                    Method::PUT,
                    &path,
                    Some(admin),
                    Some(json!({"permissions": []})),
                )
                .await;
            assert_eq!(status, 201);
            path
        }
        other => unreachable!("{other}"),
    }
}

/// For every `/v1` route, exactly the roles holding its permission succeed;
/// every other built-in role gets a JSON 403 and changes nothing.
#[actix_web::test]
async fn every_route_admits_exactly_the_roles_that_hold_its_permission() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let mut keys = Vec::new();
    for role in BUILT_IN {
        keys.push((role, app.create_key("org-a", role).await));
    }
    let admins: &[&str] = &["org:owner", "org:admin"];
    let cases = [
        Case {
            method: Method::GET,
            what: "list keys",
            allowed: admins,
            body: None,
        },
        Case {
            method: Method::POST,
            what: "create key",
            allowed: admins,
            body: Some(json!({"role": "ingest"})),
        },
        Case {
            method: Method::DELETE,
            what: "revoke key",
            allowed: admins,
            body: None,
        },
        Case {
            method: Method::POST,
            what: "rotate key",
            allowed: admins,
            body: None,
        },
        Case {
            method: Method::GET,
            what: "list roles",
            allowed: admins,
            body: None,
        },
        Case {
            method: Method::GET,
            what: "get role",
            allowed: admins,
            body: None,
        },
        Case {
            method: Method::PUT,
            what: "put role",
            allowed: admins,
            body: Some(json!({"permissions": [{"resource": "audit.events", "action": "read"}]})),
        },
        Case {
            method: Method::DELETE,
            what: "delete role",
            allowed: admins,
            body: None,
        },
    ];
    let mut attempt = 0;
    for case in &cases {
        for (role, key) in &keys {
            attempt += 1;
            let path = path_for(&app, &admin, case.what, attempt).await;
            let (status, body) = app
                .call(case.method.clone(), &path, Some(key), case.body.clone())
                .await;
            if case.allowed.contains(role) {
                assert!(
                    (200..300).contains(&status),
                    "{role} {}: {status} {body}",
                    case.what
                );
            } else {
                assert_eq!(status, 403, "{role} {}: {body}", case.what);
                assert_eq!(body["error"]["code"], "forbidden");
            }
        }
    }
    // Refused attempts left nothing behind: no role `matrix-N` for a refused role.
    let (_, roles) = app.call(Method::GET, "/v1/roles", Some(&admin), None).await;
    let created = roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|role| role["name"].as_str().unwrap().starts_with("matrix-"))
        .count();
    assert_eq!(created, admins.len());
}

/// Missing, malformed, unknown, wrongly signed and revoked keys all get a JSON
/// 401 with `WWW-Authenticate`.
#[actix_web::test]
async fn bad_credentials_get_a_json_401() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-a", "org:admin").await;
    // `awk_<16 hex id>_<secret>`: the id of `key` with the secret of `other`.
    let forged = format!("awk_{}_{}", &key[4..20], &other[21..]);
    let well_formed_unknown = "awk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    for (header, why) in [
        (None, "missing"),
        (Some(format!("Basic {key}")), "not bearer"),
        (Some("Bearer nonsense".to_owned()), "malformed"),
        (Some(format!("Bearer {well_formed_unknown}")), "unknown"),
        (Some(format!("Bearer {forged}")), "wrong secret"),
    ] {
        let mut request = app.client.get(format!("{}/v1/roles", app.address));
        if let Some(header) = header {
            request = request.header("Authorization", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{why}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{why}");
    }

    // Revoked: at once on the instance that revoked it.
    let id = key.split('_').nth(1).unwrap();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = app.call(Method::GET, "/v1/roles", Some(&key), None).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
}

/// A revocation reaches another worker instance within `auth.key_cache_ttl`.
#[actix_web::test]
async fn revocation_reaches_every_instance_within_the_cache_ttl() {
    let first =
        spawn_app_with(|config| config.auth.key_cache_ttl = Duration::from_millis(500)).await;
    let second = spawn_beside(&first, |config| {
        config.auth.key_cache_ttl = Duration::from_millis(500);
    })
    .await;
    let admin = first.create_key("org-a", "org:admin").await;
    let victim = first.create_key("org-a", "org:admin").await;
    // The second instance has the victim cached as valid.
    assert_eq!(
        second
            .call(Method::GET, "/v1/roles", Some(&victim), None)
            .await
            .0,
        200
    );

    let id = victim.split('_').nth(1).unwrap();
    let path = format!("/v1/api-keys/{id}");
    assert_eq!(
        first
            .call(Method::DELETE, &path, Some(&admin), None)
            .await
            .0,
        204
    );

    wait_until(
        Duration::from_secs(3),
        "revocation seen by the second instance",
        || async {
            (second
                .call(Method::GET, "/v1/roles", Some(&victim), None)
                .await
                .0
                == 401)
                .then_some(())
        },
    )
    .await;
}

/// Organization A's administrator can neither see nor touch organization B's
/// keys and roles, whether by id, by filter or by naming B in the body.
#[actix_web::test]
async fn nothing_crosses_between_organizations() {
    let app = spawn_app().await;
    let admin_a = app.create_key("org-a", "org:admin").await;
    let admin_b = app.create_key("org-b", "org:admin").await;
    let (status, b_role) = app
        .call(
            Method::PUT,
            "/v1/roles/b-only",
            Some(&admin_b),
            Some(json!({"permissions": [{"resource": "audit.alerts", "action": "read"}]})),
        )
        .await;
    assert_eq!(status, 201);
    let (_, b_key) = app
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(&admin_b),
            Some(json!({"role": "b-only"})),
        )
        .await;
    let b_key_id = b_key["id"].as_str().unwrap();

    // By id.
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{b_key_id}"),
            Some(&admin_a),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        app.call(Method::GET, "/v1/roles/b-only", Some(&admin_a), None)
            .await
            .0,
        404
    );
    assert_eq!(
        app.call(Method::DELETE, "/v1/roles/b-only", Some(&admin_a), None)
            .await
            .0,
        404
    );
    // A key of A cannot be given B's custom role.
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(&admin_a),
            Some(json!({"role": "b-only"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // By filter.
    let (status, listed) = app
        .call(Method::GET, "/v1/api-keys", Some(&admin_a), None)
        .await;
    assert_eq!(status, 200);
    let listed = listed["api_keys"].as_array().unwrap();
    assert!(
        listed.iter().all(|key| key["organization_id"] == "org-a"),
        "{listed:?}"
    );
    let (status, _) = app
        .call(
            Method::GET,
            "/v1/api-keys?organization_id=org-b",
            Some(&admin_a),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (_, roles) = app
        .call(Method::GET, "/v1/roles", Some(&admin_a), None)
        .await;
    assert!(!roles.to_string().contains("b-only"));

    // By body field.
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(&admin_a),
            Some(json!({"role": "ingest", "organization_id": "org-b"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/roles/b-only",
            Some(&admin_a),
            Some(json!({"permissions": [], "organization_id": "org-b"})),
        )
        .await;
    assert_eq!(status, 403);

    // Nothing of B changed.
    let db = app.database().await;
    let row = db
        .query_one(
            "SELECT revoked_at IS NULL AS live, (SELECT permissions::text FROM organization_role \
             WHERE organization_id = 'org-b' AND name = 'b-only') AS permissions \
             FROM api_keys WHERE id = $1",
            &[&b_key_id],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>("live"));
    assert_eq!(
        serde_json::from_str::<Value>(&row.get::<_, String>("permissions")).unwrap(),
        b_role["permissions"]
    );
    let a_rows: i64 = db
        .query_one(
            "SELECT count(*) FROM organization_role WHERE organization_id = 'org-a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(a_rows, 0, "A's refused requests created nothing");
}

/// Custom roles: inheritance is transitive, cycles and unknown permissions are
/// refused with the field named, built-ins cannot change, and a role in use
/// cannot be deleted.
#[actix_web::test]
async fn custom_roles_are_validated() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let put = |name: &'static str, body: Value| {
        let (app, admin) = (&app, admin.clone());
        async move {
            app.call(
                Method::PUT,
                &format!("/v1/roles/{name}"),
                Some(&admin),
                Some(body),
            )
            .await
        }
    };

    assert_eq!(put("base", json!({"inherits": ["auditor"]})).await.0, 201);
    let (status, middle) = put(
        "middle",
        json!({"inherits": ["base"], "permissions": [
        {"resource": "audit.alerts", "action": "resolve"}]}),
    )
    .await;
    assert_eq!(status, 201);
    let effective = middle["effective_permissions"].to_string();
    assert!(
        effective.contains(r#"{"action":"verify","resource":"audit.*"}"#),
        "{effective}"
    );
    assert!(effective.contains("resolve"));

    let (status, body) = put("base", json!({"inherits": ["middle"]})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "inherits");
    assert!(body["error"]["details"][0]["message"]
        .as_str()
        .unwrap()
        .contains("cycle"));
    let (status, _) = put("selfish", json!({"inherits": ["selfish"]})).await;
    assert_eq!(status, 400);

    let (status, body) = put(
        "typo",
        json!({"permissions": [
        {"resource": "audit.events", "action": "read"},
        {"resource": "audit.event", "action": "read"}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(body["error"]["details"][0]["field"], "permissions[1]");
    let (status, _) = put("orphan", json!({"inherits": ["no-such-role"]})).await;
    assert_eq!(status, 400);
    let (status, _) = put("Bad Name", json!({})).await;
    assert_eq!(status, 400);

    assert_eq!(put("auditor", json!({})).await.0, 409);
    assert_eq!(
        app.call(Method::DELETE, "/v1/roles/auditor", Some(&admin), None)
            .await
            .0,
        409
    );
    // Inherited by `middle`.
    assert_eq!(
        app.call(Method::DELETE, "/v1/roles/base", Some(&admin), None)
            .await
            .0,
        409
    );
    // Held by a live key.
    app.create_key("org-a", "middle").await;
    assert_eq!(
        app.call(Method::DELETE, "/v1/roles/middle", Some(&admin), None)
            .await
            .0,
        409
    );
}

/// No caller can hand out more than it holds, neither through a key nor by
/// widening a role.
#[actix_web::test]
async fn callers_cannot_grant_more_than_they_hold() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let keymaster_role = json!({"permissions": [
        {"resource": "organization.api_keys", "action": "*"},
        {"resource": "organization.roles", "action": "*"},
        {"resource": "audit.events", "action": "read"}]});
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/roles/keymaster",
            Some(&admin),
            Some(keymaster_role),
        )
        .await;
    assert_eq!(status, 201);
    let keymaster = app.create_key("org-a", "keymaster").await;

    for role in ["org:admin", "ingest", "auditor"] {
        let (status, _) = app
            .call(
                Method::POST,
                "/v1/api-keys",
                Some(&keymaster),
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(status, 403, "{role}");
    }
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(&keymaster),
            Some(json!({"role": "keymaster"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/roles/keymaster",
            Some(&keymaster),
            Some(json!({"permissions": [{"resource": "*", "action": "*"}]})),
        )
        .await;
    assert_eq!(status, 403);
}

/// A role change takes effect at once, on every instance: permissions cached
/// in Redis are invalidated by the change.
#[actix_web::test]
async fn role_changes_apply_at_once_on_every_instance() {
    let first = spawn_app().await;
    let second = spawn_beside(&first, |_| {}).await;
    let admin = first.create_key("org-a", "org:admin").await;
    let reader = json!({"permissions": [{"resource": "organization.roles", "action": "read"}]});
    assert_eq!(
        first
            .call(Method::PUT, "/v1/roles/viewer", Some(&admin), Some(reader))
            .await
            .0,
        201
    );
    let viewer = first.create_key("org-a", "viewer").await;
    // Cached (in Redis) through the second instance.
    assert_eq!(
        second
            .call(Method::GET, "/v1/roles", Some(&viewer), None)
            .await
            .0,
        200
    );
    assert_eq!(
        second
            .call(Method::GET, "/v1/roles", Some(&viewer), None)
            .await
            .0,
        200
    );

    let nothing = json!({"permissions": []});
    assert_eq!(
        first
            .call(Method::PUT, "/v1/roles/viewer", Some(&admin), Some(nothing))
            .await
            .0,
        200
    );

    assert_eq!(
        second
            .call(Method::GET, "/v1/roles", Some(&viewer), None)
            .await
            .0,
        403
    );
    assert_eq!(
        first
            .call(Method::GET, "/v1/roles", Some(&viewer), None)
            .await
            .0,
        403
    );
}

/// With Redis unreachable, authentication and permission checks still work,
/// straight from PostgreSQL, role changes included.
#[actix_web::test]
async fn permission_checks_work_without_redis() {
    let proxy = TcpProxy::start("127.0.0.1:6379", false).await;
    let app = spawn_app_with(|config| {
        proxy.carry_redis(config);
    })
    .await;
    let admin = app.create_key("org-a", "org:admin").await;
    let reader = json!({"permissions": [{"resource": "organization.roles", "action": "read"}]});
    assert_eq!(
        app.call(Method::PUT, "/v1/roles/viewer", Some(&admin), Some(reader))
            .await
            .0,
        201
    );
    let viewer = app.create_key("org-a", "viewer").await;
    assert_eq!(
        app.call(Method::GET, "/v1/roles", Some(&viewer), None)
            .await
            .0,
        200
    );
    let nothing = json!({"permissions": []});
    assert_eq!(
        app.call(Method::PUT, "/v1/roles/viewer", Some(&admin), Some(nothing))
            .await
            .0,
        200
    );
    assert_eq!(
        app.call(Method::GET, "/v1/roles", Some(&viewer), None)
            .await
            .0,
        403
    );
}

/// Past its burst, a key gets a JSON 429 with `Retry-After`; other keys are unaffected.
#[actix_web::test]
async fn each_key_is_rate_limited_on_its_own() {
    let app = spawn_app_with(|config| {
        config.auth.rate_limit_per_second = 1;
        config.auth.rate_limit_burst = 2;
    })
    .await;
    let busy = app.create_key("org-a", "org:admin").await;
    let quiet = app.create_key("org-a", "org:admin").await;
    for _ in 0..2 {
        assert_eq!(
            app.call(Method::GET, "/v1/roles", Some(&busy), None)
                .await
                .0,
            200
        );
    }
    let response = app
        .client
        .get(format!("{}/v1/roles", app.address))
        .bearer_auth(&busy)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(
        app.call(Method::GET, "/v1/roles", Some(&quiet), None)
            .await
            .0,
        200
    );
}

/// A body naming another organization is refused with 403 on every route
/// that takes one, whatever else the body holds (the body is checked before
/// its fields are read); naming the caller's own organization is allowed.
#[actix_web::test]
async fn a_body_naming_another_organization_is_refused_on_every_route() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    for (method, path) in [
        (Method::POST, "/v1/reports"),
        (Method::POST, "/v1/report-templates"),
        (Method::POST, "/v1/alert-rules"),
        (Method::POST, "/v1/gdpr/export"),
        (Method::POST, "/v1/gdpr/erase"),
        (Method::POST, "/v1/gdpr/pseudonymize"),
        (Method::POST, "/v1/alerts"),
        (Method::POST, "/v1/presets"),
        (Method::POST, "/v1/destinations"),
        (Method::POST, "/v1/integrity/verify"),
        (Method::PUT, "/v1/roles/custom"),
    ] {
        let (status, body) = app
            .call(
                method.clone(),
                path,
                Some(&admin),
                Some(json!({"organization_id": "org-b", "name": "x"})),
            )
            .await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
        let (status, body) = app
            .call(
                method.clone(),
                path,
                Some(&admin),
                Some(json!({"organization_id": "org-a", "name": "x"})),
            )
            .await;
        assert_ne!(status, 403, "{method} {path}: {body}");
        assert!(status < 500, "{method} {path}: {body}");
    }
}
