//! GDPR requests against the real worker and PostgreSQL: each export format
//! parsed back and compared with the stored events (and its manifest with the
//! file), each pseudonymization strategy's properties, erasure keeping exactly
//! the configured events, verification passing after every operation and
//! failing on an unrecorded edit, the reverse look-up and its permission,
//! resumption of an interrupted operation, and isolation between organizations.

mod common;

use std::collections::BTreeMap;

use common::{event, spawn_app, webhook, Event, TestApp};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// `principal`'s successful `action` on a patient record (`None`: no record named).
fn on_patient(principal: &str, action: &str, target: Option<&str>) -> Event {
    event(principal, action).target("patient", target)
}

/// A mix for subject `alice` in `org`: her own events (some preserved by the
/// default erasure rules), events naming her as target, and others'.
async fn seed(app: &TestApp, key: &str) {
    let tricky = json!({"note": "comma, \"quote\"\nnew line <tag> & amp \u{1} control", "n": 2.5});
    app.ingest(
        key,
        vec![
            on_patient("alice", "patient.record.read", Some("p-1")).details(tricky),
            on_patient("alice", "patient.record.update", Some("p-2"))
                .set("outcome_description", "updated, \"allergies\""),
            on_patient("alice", "auth.login", None),
            on_patient("alice", "auth.login.mfa", None),
            on_patient("dr-bob", "patient.record.read", Some("alice")),
            on_patient("dr-bob", "patient.record.read", Some("p-3")),
            on_patient("carol", "auth.login", None),
        ],
    )
    .await;
}

/// `(id, principal_id, action, target_resource_id)` of the organization's
/// events that concern `alice` by commitment-free columns (before any change).
async fn rows(app: &TestApp, sql: &str, org: &str) -> Vec<(i64, String, String, Option<String>)> {
    app.database()
        .await
        .query(sql, &[&org])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

async fn export(app: &TestApp, key: &str, format: &str) -> (String, String) {
    let response = app
        .client
        .post(format!("{}/v1/gdpr/export", app.address))
        .bearer_auth(key)
        .json(&json!({"principal_id": "alice", "format": format}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-gdpr-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (request_id, response.text().await.unwrap())
}

/// Each format holds exactly alice's events (as principal and as target),
/// every column as stored; the manifest's SHA-256 is the file's.
#[actix_web::test]
async fn exports_parse_back_to_the_stored_events_with_a_matching_manifest() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "auditor").await;
    let admin = app.create_key("org-a", "org:admin").await;
    seed(&app, &admin).await;
    // The same subject name in another organization must not leak in.
    let other = app.create_key("org-b", "org:admin").await;
    seed(&app, &other).await;
    let expected = rows(
        &app,
        "SELECT id, principal_id, action, target_resource_id FROM audit_log WHERE organization_id = $1 \
           AND (principal_id = 'alice' OR target_resource_id = 'alice') ORDER BY \"timestamp\", id",
        "org-a",
    )
    .await;
    assert_eq!(expected.len(), 5);
    let details: Value = app
        .database()
        .await
        .query_one(
            "SELECT details FROM audit_log WHERE organization_id = 'org-a' AND action = 'patient.record.read' \
               AND principal_id = 'alice'",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    for format in ["json", "csv", "xml"] {
        let (request_id, body) = export(&app, &key, format).await;
        let parsed: Vec<BTreeMap<String, Option<String>>> = match format {
            "json" => {
                let document: Value = serde_json::from_str(&body).unwrap();
                document["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        e.as_object()
                            .unwrap()
                            .iter()
                            .map(|(k, v)| {
                                let text = match v {
                                    Value::Null => None,
                                    Value::String(s) => Some(s.clone()),
                                    other => Some(other.to_string()),
                                };
                                (k.clone(), text)
                            })
                            .collect()
                    })
                    .collect()
            }
            "csv" => {
                let mut reader = csv::Reader::from_reader(body.as_bytes());
                let headers = reader.headers().unwrap().clone();
                reader
                    .records()
                    .map(|record| {
                        headers
                            .iter()
                            .zip(record.unwrap().iter())
                            .map(|(h, v)| (h.to_owned(), (!v.is_empty()).then(|| v.to_owned())))
                            .collect()
                    })
                    .collect()
            }
            _ => parse_xml(&body),
        };
        let got: Vec<(i64, String, String, Option<String>)> = parsed
            .iter()
            .map(|e| {
                (
                    e["id"].as_deref().unwrap().parse().unwrap(),
                    e["principal_id"].clone().unwrap(),
                    e["action"].clone().unwrap(),
                    e["target_resource_id"].clone(),
                )
            })
            .collect();
        assert_eq!(got, expected, "{format}");
        let with_details = parsed
            .iter()
            .find(|e| e["details"].is_some())
            .unwrap_or_else(|| panic!("{format}: no details"));
        let round_trip: Value =
            serde_json::from_str(with_details["details"].as_deref().unwrap()).unwrap();
        assert_eq!(round_trip, details, "{format}: details");

        let (status, request) = app
            .call(
                Method::GET,
                &format!("/v1/gdpr/requests/{request_id}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(status, 200, "{request}");
        assert_eq!(request["status"], "completed", "{request}");
        let manifest = &request["result"]["manifest"];
        assert_eq!(manifest["count"], 5);
        assert_eq!(
            manifest["sha256"],
            hex::encode(Sha256::digest(body.as_bytes()))
        );
        assert_eq!(manifest["bytes"], body.len());
    }
    let exports = app.count("SELECT count(*) FROM audit_log WHERE organization_id = 'org-a' AND action = 'gdpr.data.export'", &[]).await;
    assert_eq!(exports, 3, "every export is an audit event");
}

/// The events of an XML export, each column's text (base64 decoded where marked).
fn parse_xml(body: &str) -> Vec<BTreeMap<String, Option<String>>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    let mut events = Vec::new();
    let mut current: Option<BTreeMap<String, Option<String>>> = None;
    let mut field: Option<(String, bool)> = None;
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(element) => {
                let name = String::from_utf8(element.name().as_ref().to_vec()).unwrap();
                if name == "event" {
                    current = Some(BTreeMap::new());
                } else if current.is_some() {
                    let base64 = element
                        .attributes()
                        .any(|a| a.unwrap().key.as_ref() == b"encoding");
                    current
                        .as_mut()
                        .unwrap()
                        .insert(name.clone(), Some(String::new()));
                    field = Some((name, base64));
                }
            }
            Event::Empty(element) => {
                if let Some(event) = current.as_mut() {
                    let name = String::from_utf8(element.name().as_ref().to_vec()).unwrap();
                    event.insert(name, None);
                }
            }
            Event::Text(text) => {
                if let (Some(event), Some((name, base64))) = (current.as_mut(), field.as_ref()) {
                    let raw = text.decode().unwrap().into_owned();
                    let value = if *base64 {
                        use base64::Engine;
                        String::from_utf8(
                            base64::engine::general_purpose::STANDARD
                                .decode(raw)
                                .unwrap(),
                        )
                        .unwrap()
                    } else {
                        raw
                    };
                    event
                        .get_mut(name)
                        .unwrap()
                        .as_mut()
                        .unwrap()
                        .push_str(&value);
                }
            }
            Event::GeneralRef(reference) => {
                if let (Some(event), Some((name, _))) = (current.as_mut(), field.as_ref()) {
                    let entity: &[u8] = &reference;
                    let resolved = match entity {
                        b"amp" => "&",
                        b"lt" => "<",
                        b"gt" => ">",
                        b"quot" => "\"",
                        b"apos" => "'",
                        other => panic!("unexpected entity {other:?}"),
                    };
                    event
                        .get_mut(name)
                        .unwrap()
                        .as_mut()
                        .unwrap()
                        .push_str(resolved);
                }
            }
            Event::End(element) => {
                if element.name().as_ref() == b"event" {
                    events.push(current.take().unwrap());
                }
                field = None;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    events
}

async fn pseudonymize(app: &TestApp, key: &str, principal: &str, strategy: &str) -> (u16, Value) {
    app.call(
        Method::POST,
        "/v1/gdpr/pseudonymize",
        Some(key),
        Some(json!({"principal_id": principal, "strategy": strategy})),
    )
    .await
}

/// hash: deterministic and per organization; token: random, but the same for
/// the subject on every call; encryption: reversible, only with the
/// permission, and the look-up is audited. Verification passes after each and
/// counts the pseudonymized events; an unrecorded edit still fails it.
#[actix_web::test]
async fn pseudonymization_strategies_keep_the_trail_verifiable() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let key_b = app.create_key("org-b", "org:admin").await;
    let auditor = app.create_key("org-a", "auditor").await;
    for (principal, n) in [("alice", 3), ("bob", 2), ("carol", 2)] {
        let events: Vec<Event> = (0..n)
            .map(|_| on_patient(principal, "record.read", Some(principal)))
            .collect();
        app.ingest(&key, events).await;
    }
    app.ingest(&key_b, vec![on_patient("alice", "record.read", None)])
        .await;

    let (status, hashed) = pseudonymize(&app, &key, "alice", "hash").await;
    assert_eq!(status, 200, "{hashed}");
    assert_eq!(hashed["records_affected"], 3);
    let (_, again) = pseudonymize(&app, &key, "alice", "hash").await;
    assert_eq!(
        again["pseudonym_id"], hashed["pseudonym_id"],
        "hash is deterministic"
    );
    assert_eq!(again["records_affected"], 0);
    let (_, in_b) = pseudonymize(&app, &key_b, "alice", "hash").await;
    assert_ne!(
        in_b["pseudonym_id"], hashed["pseudonym_id"],
        "keyed per organization"
    );
    let (status, conflict) = pseudonymize(&app, &key, "alice", "token").await;
    assert_eq!(status, 409, "{conflict}");

    let (_, token) = pseudonymize(&app, &key, "bob", "token").await;
    let (_, token_again) = pseudonymize(&app, &key, "bob", "token").await;
    assert_eq!(token["pseudonym_id"], token_again["pseudonym_id"]);
    assert!(token["pseudonym_id"].as_str().unwrap().starts_with("pst_"));

    let (_, encrypted) = pseudonymize(&app, &key, "carol", "encryption").await;
    let pseudonym = encrypted["pseudonym_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/gdpr/pseudonyms/{pseudonym}");
    let (status, _) = app.call(Method::GET, &path, Some(&auditor), None).await;
    assert_eq!(status, 403, "reverse look-up without audit.gdpr:reverse");
    let (status, _) = app.call(Method::GET, &path, Some(&key_b), None).await;
    assert_eq!(status, 404, "another organization's pseudonym");
    let (status, reversed) = app.call(Method::GET, &path, Some(&key), None).await;
    assert_eq!(status, 200, "{reversed}");
    assert_eq!(reversed["original_id"], "carol");
    let (_, hashed_reversed) = app
        .call(
            Method::GET,
            &format!(
                "/v1/gdpr/pseudonyms/{}",
                hashed["pseudonym_id"].as_str().unwrap()
            ),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        hashed_reversed["original_id"], "alice",
        "the mapping keeps every strategy's original"
    );

    let db = app.database_without_triggers().await;
    let recorded: Vec<String> = db
        .query(
            "SELECT DISTINCT action FROM audit_log WHERE organization_id = 'org-a' AND action LIKE 'gdpr.%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        recorded,
        vec!["gdpr.data.pseudonymize", "gdpr.pseudonym.reverse"]
    );
    let clear: i64 = db
        .query_one(
            "SELECT count(*) FROM audit_log WHERE organization_id = 'org-a' \
               AND (principal_id IN ('alice', 'bob', 'carol') OR target_resource_id IN ('alice', 'bob', 'carol'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(clear, 0, "no clear identifier left");

    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["pseudonymized"], 7, "{report}");

    // The subject's events are still theirs to export, under the pseudonym.
    let (_, exported) = export(&app, &key, "json").await;
    let exported: Value = serde_json::from_str(&exported).unwrap();
    let events = exported["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{exported}");
    assert!(events
        .iter()
        .all(|e| e["principal_id"] == hashed["pseudonym_id"]));

    // An edit no operation recorded: one of bob's events given carol's pseudonym.
    db.execute(
        "UPDATE audit_log SET principal_id = $1 WHERE id = (SELECT min(id) FROM audit_log \
           WHERE organization_id = 'org-a' AND principal_id = $2)",
        &[&pseudonym, &token["pseudonym_id"].as_str().unwrap()],
    )
    .await
    .unwrap();
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["problem_count"], 1, "{report}");
}

/// Erasure deletes alice's own events except the configured ones
/// (`auth.login*`) and those under a legal hold, which stay under her
/// pseudonym, as do others' events naming her; verification passes and
/// counts the erased events.
#[actix_web::test]
async fn erasure_keeps_exactly_the_configured_events() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    seed(&app, &key).await;
    let held = event("alice", "billing.invoice").timestamp("2026-01-15T10:00:00Z");
    app.ingest(&key, vec![held]).await;
    app.create_legal_hold(
        &key,
        json!({"reason": "litigation", "principal_id": "alice",
               "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-02-01T00:00:00Z"}),
    )
    .await;

    let (status, erased) = app
        .call(
            Method::POST,
            "/v1/gdpr/erase",
            Some(&key),
            Some(json!({"principal_id": "alice", "preserve_compliance": true})),
        )
        .await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["records_deleted"], 2, "{erased}");
    assert_eq!(erased["compliance_records_preserved"], 3, "{erased}");
    assert_eq!(erased["references_pseudonymized"], 1, "{erased}");
    let pseudonym = erased["pseudonym_id"].as_str().unwrap();
    let kept = rows(
        &app,
        "SELECT id, principal_id, action, target_resource_id FROM audit_log WHERE organization_id = $1 \
           AND action NOT LIKE 'gdpr.%' AND action NOT LIKE 'admin.%' ORDER BY id",
        "org-a",
    )
    .await;
    let actions: Vec<(&str, &str)> = kept
        .iter()
        .map(|(_, principal, action, _)| (principal.as_str(), action.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            (pseudonym, "auth.login"),
            (pseudonym, "auth.login.mfa"),
            ("dr-bob", "patient.record.read"),
            ("dr-bob", "patient.record.read"),
            ("carol", "auth.login"),
            (pseudonym, "billing.invoice"),
        ]
    );
    assert_eq!(
        kept[2].3.as_deref(),
        Some(pseudonym),
        "a reference to her is pseudonymized"
    );

    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["erased_by_gdpr"], 2, "{report}");
    let deleted = app.count("SELECT count(*) FROM audit_log WHERE organization_id = 'org-a' AND action = 'gdpr.data.delete'", &[]).await;
    assert_eq!(deleted, 2, "the erasure's start and end are audit events");
}

/// An operation cut off half-way (its status still running, some events
/// still under the clear identifier) completes under the same request id when
/// asked again, and the trail verifies.
#[actix_web::test]
async fn an_interrupted_operation_resumes_and_completes() {
    let app = spawn_app_with_small_batches().await;
    let key = app.create_key("org-a", "org:admin").await;
    let events: Vec<Event> = (0..25)
        .map(|_| on_patient("dave", "record.read", None))
        .collect();
    app.ingest(&key, events).await;
    let (_, first) = pseudonymize(&app, &key, "dave", "hash").await;
    assert_eq!(first["records_affected"], 25);
    // As if the worker died after the first batches: the operation unfinished,
    // ten events never changed.
    let db = app.database_without_triggers().await;
    db.execute(
        "UPDATE gdpr_operations SET status = 'running', completed_at = NULL WHERE id = $1",
        &[&first["request_id"]
            .as_str()
            .unwrap()
            .parse::<uuid::Uuid>()
            .unwrap()],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE audit_log SET principal_id = 'dave' WHERE id IN (SELECT id FROM audit_log \
           WHERE organization_id = 'org-a' AND action = 'record.read' ORDER BY id LIMIT 10)",
        &[],
    )
    .await
    .unwrap();
    let (status, resumed) = pseudonymize(&app, &key, "dave", "hash").await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(
        resumed["request_id"], first["request_id"],
        "the same operation"
    );
    assert_eq!(resumed["records_affected"], 10);
    let report = app.verify(&key).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["pseudonymized"], 25, "{report}");
}

async fn spawn_app_with_small_batches() -> TestApp {
    common::spawn_app_with(|config| config.gdpr.batch_size = 4).await
}

/// Requests the worker only records get 202 and a statement; bad input gets
/// 400 naming the field; a role without `audit.gdpr` gets 403.
#[actix_web::test]
async fn other_requests_are_recorded_and_input_is_checked() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let member = app.create_key("org-a", "org:member").await;
    let (status, recorded) = app
        .call(
            Method::POST,
            "/v1/gdpr/requests",
            Some(&key),
            Some(json!({"type": "rectification", "principal_id": "alice", "description": "wrong address"})),
        )
        .await;
    assert_eq!(status, 202, "{recorded}");
    assert!(recorded["statement"]
        .as_str()
        .unwrap()
        .contains("never rewritten"));
    let stored = app.count("SELECT count(*) FROM audit_log WHERE organization_id = 'org-a' AND action = 'gdpr.request.rectification'", &[]).await;
    assert_eq!(stored, 1);

    for (path, body, field) in [
        (
            "/v1/gdpr/requests",
            json!({"type": "erasure-please", "principal_id": "a"}),
            "type",
        ),
        (
            "/v1/gdpr/pseudonymize",
            json!({"principal_id": " ", "strategy": "hash"}),
            "principal_id",
        ),
        (
            "/v1/gdpr/erase",
            json!({"principal_id": ""}),
            "principal_id",
        ),
        (
            "/v1/gdpr/export",
            json!({"principal_id": "a", "format": "json", "from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
            "from",
        ),
        (
            "/v1/gdpr/export",
            json!({"principal_id": "a", "format": "json", "destination_id": 999}),
            "destination_id",
        ),
    ] {
        let (status, body) = app.call(Method::POST, path, Some(&key), Some(body)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(
            body["error"]["details"][0]["field"], field,
            "{path}: {body}"
        );
    }
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/gdpr/export",
            Some(&key),
            Some(json!({"principal_id": "a", "format": "pdf"})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/gdpr/erase",
            Some(&member),
            Some(json!({"principal_id": "alice"})),
        )
        .await;
    assert_eq!(status, 403);
}

/// With `destination_id`, the export goes through the delivery queue to a
/// real receiver, with its manifest.
#[actix_web::test]
async fn an_export_is_delivered_to_a_destination() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    seed(&app, &key).await;
    let receiver = common::receiver::Receiver::start(&[], 0);
    let destination = app
        .create_destination(&key, webhook("dpo", &receiver.url))
        .await;
    let (status, delivered) = app
        .call(
            Method::POST,
            "/v1/gdpr/export",
            Some(&key),
            Some(json!({"principal_id": "alice", "format": "csv",
                        "destination_id": destination})),
        )
        .await;
    assert_eq!(status, 202, "{delivered}");
    assert_eq!(delivered["manifest"]["count"], 5);
    let received = receiver
        .wait_for(1, std::time::Duration::from_secs(15))
        .await;
    let payload: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(payload["type"], "gdpr.export");
    let content = payload["file"]["content"].as_str().unwrap();
    assert_eq!(
        payload["manifest"]["sha256"],
        hex::encode(Sha256::digest(content.as_bytes()))
    );
    let records = csv::Reader::from_reader(content.as_bytes())
        .records()
        .count();
    assert_eq!(records, 5, "{content}");
}
