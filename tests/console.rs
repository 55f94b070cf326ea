//! The web console over real HTTP, as a browser without script sees it:
//! sign-in with an API key (a session cookie, CSRF tokens, rate-limited and
//! recorded failures), the events pages, roles and organizations kept
//! apart, and the security headers of every answer.

mod common;

use common::{event, spawn_app, spawn_app_with, TestApp};
use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{redirect, StatusCode};

/// A browser's side of the console: its cookies, no redirects followed.
struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookies: Vec<(String, String)>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            app,
            client,
            cookies: Vec::new(),
        }
    }

    fn remember(&mut self, headers: &HeaderMap) {
        for set in headers.get_all(SET_COOKIE) {
            let text = set.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(known, _)| known != name);
            let expired = text.contains("Max-Age=0") || value.is_empty();
            if !expired {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, path: &str) -> (StatusCode, HeaderMap, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.app.address))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        self.remember(&headers);
        (status, headers, response.text().await.unwrap())
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let response = self
            .client
            .post(format!("{}{path}", self.app.address))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        self.remember(&headers);
        (status, headers, response.text().await.unwrap())
    }

    /// A browser signed in with `key` (the form answers 303).
    async fn signed_in(app: &'a TestApp, key: &str) -> Browser<'a> {
        let mut browser = Self::new(app);
        assert_eq!(browser.sign_in(key).await.0, 303, "signed in");
        browser
    }

    /// Signs in with `key` through the form; the answer to the form.
    async fn sign_in(&mut self, key: &str) -> (StatusCode, HeaderMap, String) {
        let (status, _, page) = self.get("/console/login").await;
        assert_eq!(status, 200);
        let csrf = hidden_csrf(&page);
        self.post("/console/login", &[("api_key", key), ("csrf", &csrf)])
            .await
    }
}

/// A webhook destination to a port nothing listens on, with no retry, and a
/// delivery to it that has failed: (destination id, delivery id).
async fn dead_letter(app: &TestApp, admin: &str) -> (i64, String) {
    // A port nothing listens on, and no retry: each delivery fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let destination = app
        .create_destination(
            admin,
            serde_json::json!({"type": "webhook", "label": "siem-down",
                "config": {"url": format!("http://127.0.0.1:{closed}/hook")},
                "settings": {"retry_schedule": []}}),
        )
        .await;
    let (status, queued) = app
        .call(
            reqwest::Method::POST,
            "/v1/deliveries",
            Some(admin),
            Some(serde_json::json!({"destination_ids": [destination], "payload": {"a": 1}})),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let delivery = queued["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/deliveries/{delivery}");
    common::wait_until(
        std::time::Duration::from_secs(20),
        "the delivery fails",
        || async {
            let (_, found) = app
                .call(reqwest::Method::GET, &path, Some(admin), None)
                .await;
            (found["status"] == "failed").then_some(())
        },
    )
    .await;

    (destination, delivery)
}

/// The value of a page's hidden `csrf` field.
fn hidden_csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

fn location(headers: &HeaderMap) -> &str {
    headers[LOCATION].to_str().unwrap()
}

#[actix_web::test]
async fn a_person_signs_in_finds_an_event_and_signs_out() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let receipts = app
        .ingest(
            &key,
            event("dr-house", "patient.record.read").target("Patient", "p-<b>42</b>"),
        )
        .await;
    let id = receipts[0]["id"].as_i64().unwrap();
    let mut browser = Browser::new(&app);

    // Every answer is locked down, the sign-in form too.
    let (_, headers, _) = browser.get("/console/login").await;
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"));
    assert!(!policy.contains("unsafe-inline"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");

    let (status, headers, _) = browser.sign_in(&key).await;
    assert_eq!(status, 303);
    assert_eq!(location(&headers), "/console/events");
    let session = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("audit_console_session="))
        .expect("a session cookie")
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(!session.contains(&key[4..]), "the cookie is not the key");

    let (status, _, page) = browser.get("/console/events?action=patient.*").await;
    assert_eq!(status, 200);
    assert!(page.contains("patient.record.read") && page.contains("dr-house"));
    assert!(page.contains("p-&lt;b&gt;42&lt;/b&gt;"), "text is escaped");
    assert!(!page.contains(&key), "the key is never in a page");
    assert!(page.contains(&format!("/console/events/{id}")));
    let (status, _, page) = browser.get(&format!("/console/events/{id}")).await;
    assert_eq!(status, 200);
    assert!(page.contains(receipts[0]["hash"].as_str().unwrap()));
    assert!(
        page.contains("No signed checkpoint covers this event yet"),
        "{page}"
    );
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            "/v1/integrity/checkpoints",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 201);
    let (_, _, page) = browser.get(&format!("/console/events/{id}")).await;
    assert!(
        page.contains("id=\"proof-data\" type=\"application/json\""),
        "{page}"
    );
    assert!(page.contains("src=\"/console/assets/verify.js\""));
    assert!(
        !page.contains("<b>42"),
        "the proof's text cannot end its element"
    );
    assert_eq!(browser.get("/console/events/999999999").await.0, 404);

    // The search, exported as a file.
    let (status, headers, csv) = browser
        .get("/console/events/export?action=patient.*&format=csv")
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[1].starts_with(&format!("{id},")), "{csv}");

    // Signing out takes the session's CSRF token; then the pages are closed.
    let csrf = hidden_csrf(&page);
    assert_eq!(browser.post("/console/logout", &[]).await.0, 403);
    assert_eq!(
        browser
            .post("/console/logout", &[("csrf", "forged")])
            .await
            .0,
        403
    );
    let (status, headers, _) = browser.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(
        (status, location(&headers)),
        (StatusCode::SEE_OTHER, "/console/login")
    );
    let (status, headers, _) = browser.get("/console/events").await;
    assert_eq!(
        (status, location(&headers)),
        (StatusCode::SEE_OTHER, "/console/login")
    );

    // The sign-in is in the organization's trail, without the key.
    let (_, page) = app
        .call(
            reqwest::Method::GET,
            "/v1/events?action=console.sign_in",
            Some(&key),
            None,
        )
        .await;
    let signed_in = &page["events"][0];
    assert_eq!(signed_in["status"], "success");
    assert!(!signed_in.to_string().contains(&key));
}

#[actix_web::test]
async fn failed_sign_ins_are_refused_recorded_and_limited() {
    let app = spawn_app_with(|config| config.console.failed_sign_ins_per_minute = 2).await;
    let key = app.create_key("org-a", "org:admin").await;
    let mut browser = Browser::new(&app);
    let wrong = format!("{}x", &key[..key.len() - 1]);
    assert_eq!(browser.sign_in(&wrong).await.0, 401);
    assert_eq!(browser.sign_in("not a key").await.0, 401);
    // The address has spent its failures: even the right key waits now.
    assert_eq!(browser.sign_in(&key).await.0, 429);

    // A form that does not come from the sign-in page is refused.
    let mut stranger = Browser::new(&app);
    let (status, _, _) = stranger
        .post("/console/login", &[("api_key", &key), ("csrf", "guessed")])
        .await;
    assert_eq!(status, 403);

    let database = app.database().await;
    let failures: i64 = database
        .query_one(
            "SELECT count(*) FROM audit_log WHERE organization_id = 'system' \
             AND action = 'console.sign_in' AND status = 'failure'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failures, 2);
    let leaked: i64 = database
        .query_one(
            "SELECT count(*) FROM audit_log WHERE details::text LIKE $1",
            &[&format!("%{}%", &wrong[wrong.len() - 12..])],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "no secret is recorded");
}

#[actix_web::test]
async fn organizations_and_roles_see_only_what_their_key_may() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let receipts = app
        .ingest(&admin, event("dr-house", "patient.record.read"))
        .await;
    let theirs = receipts[0]["id"].as_i64().unwrap();

    let other = app.create_key("org-b", "org:admin").await;
    let mut browser = Browser::signed_in(&app, &other).await;
    let (_, _, page) = browser.get("/console/events").await;
    assert!(
        !page.contains("dr-house"),
        "another organization's events stay out"
    );
    assert_eq!(
        browser.get(&format!("/console/events/{theirs}")).await.0,
        404
    );

    // A role that may not read events sees no link to them and gets 403.
    let ingest_only = app.create_key("org-a", "ingest").await;
    let mut browser = Browser::signed_in(&app, &ingest_only).await;
    let (status, _, page) = browser.get("/console/events").await;
    assert_eq!(status, 403);
    assert!(!page.contains("href=\"/console/events\""), "{page}");
    // One that may read but not export sees no export link and gets 403.
    let member = app.create_key("org-a", "org:member").await;
    let mut browser = Browser::signed_in(&app, &member).await;
    let (status, _, page) = browser.get("/console/events").await;
    assert_eq!(status, 200);
    assert!(!page.contains("/console/events/export"), "{page}");
    let (status, _, _) = browser.get("/console/events/export?format=csv").await;
    assert_eq!(status, 403);

    // A revoked key ends its sessions at their next request.
    let mut browser = Browser::signed_in(&app, &admin).await;
    assert_eq!(browser.get("/console/events").await.0, 200);
    let key_id = admin.split('_').nth(1).unwrap();
    let revoker = app.create_key("org-a", "org:admin").await;
    let path = format!("/v1/api-keys/{key_id}");
    let (status, _) = app
        .call(reqwest::Method::DELETE, &path, Some(&revoker), None)
        .await;
    assert_eq!(status, 204);
    let (status, headers, _) = browser.get("/console/events").await;
    assert_eq!(
        (status, location(&headers)),
        (StatusCode::SEE_OTHER, "/console/login")
    );
}

/// In a real browser (headless Chromium through WebDriver): sign in, search
/// and find the event, open it and see its proof verified in the browser
/// (and an event altered since fail), acknowledge an alert, verify the trail
/// (which finds the alteration),
/// replay a dead letter, sign out and be refused; axe-core finds no
/// serious or critical accessibility violation in any page visited, and each
/// page's screenshot is saved under the test's output folder.
#[actix_web::test]
async fn in_a_real_browser_a_person_finds_an_event_and_the_pages_are_accessible() {
    let app = spawn_app_with(|config| config.delivery.allow_loopback = true).await;
    let key = app.create_key("org-a", "org:admin").await;
    dead_letter(&app, &key).await;
    let receipts = app
        .ingest(
            &key,
            event("dr-house", "patient.record.read").target("Patient", "p-42"),
        )
        .await;
    let id = receipts[0]["id"].to_string();
    let tampered = app
        .ingest(&key, event("dr-house", "patient.record.update"))
        .await[0]["id"]
        .as_i64()
        .unwrap();
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            "/v1/integrity/checkpoints",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 201);
    app.database_without_triggers()
        .await
        .execute(
            "UPDATE audit_log SET action = 'patient.record.delete' WHERE id = $1",
            &[&tampered],
        )
        .await
        .unwrap();
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            "/v1/alerts",
            Some(&key),
            Some(serde_json::json!({"severity": "CRITICAL", "title": "Break-glass access"})),
        )
        .await;
    assert_eq!(status, 201);
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let axe = std::env::var("AUDIT_WORKER_AXE_JS").expect("scripts/test installs axe-core");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/common/console_browser.py"
    );
    let operator = app
        .create_key(&app.config.operations.organization, "org:admin")
        .await;
    // Once the person's verification is recorded, another worker's run
    // appears, and ends when the browser has seen it.
    let _ = std::fs::remove_file(out.join("seen-running"));
    let another_run = {
        let database = app.database().await;
        let seen = out.join("seen-running");
        tokio::spawn(async move {
            let wait = std::time::Duration::from_secs(90);
            // Recorded, and its progress cleared.
            common::wait_until(wait, "the person's run to be recorded", || async {
                let row = database
                    .query_one(
                        "SELECT (SELECT count(*) FROM audit_integrity_log WHERE organization_id = 'org-a' \
                           AND audit_log_id IS NULL) \
                         - (SELECT count(*) FROM verification_progress)",
                        &[],
                    )
                    .await
                    .unwrap();
                (row.get::<_, i64>(0) == 1).then_some(())
            })
            .await;
            database
                .execute(
                    "INSERT INTO verification_progress (organization_id, started_by, events_total, events_checked) \
                     VALUES ('org-a', 'api-key:elsewhere', 1000, 250)",
                    &[],
                )
                .await
                .unwrap();
            common::wait_until(wait, "the browser to see the run", || async {
                seen.exists().then_some(())
            })
            .await;
            database
                .execute("DELETE FROM verification_progress", &[])
                .await
                .unwrap();
        })
    };
    let run = tokio::process::Command::new("python3")
        .args([script, &app.address, &key, &id, &tampered.to_string()])
        .arg(&out)
        .arg(&axe)
        .arg(&operator)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the browser run ends within 2 minutes")
        .expect("python3 runs (selenium comes from scripts/test)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for (step, outcome) in result["steps"].as_object().unwrap() {
        assert_eq!(outcome, true, "step {step}: {outcome}");
    }
    assert_eq!(result["steps"].as_object().unwrap().len(), 11, "{result}");
    another_run.await.unwrap();
    for (page, errors) in result["errors"].as_object().unwrap() {
        assert_eq!(
            errors,
            &serde_json::json!([]),
            "the browser's console in {page}"
        );
    }
    for (page, violations) in result["pages"].as_object().unwrap() {
        assert_eq!(violations, &serde_json::json!([]), "axe-core in {page}");
        assert!(
            out.join(format!("{page}.png")).is_file(),
            "{page}'s screenshot"
        );
    }
    assert_eq!(result["pages"].as_object().unwrap().len(), 10, "{result}");
}

#[actix_web::test]
async fn alerts_are_acknowledged_resolved_and_dismissed_as_the_role_allows() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let mut raised = Vec::new();
    for title in ["Unusual export volume", "Break-glass access", "Noisy rule"] {
        let (status, alert) = app
            .call(
                reqwest::Method::POST,
                "/v1/alerts",
                Some(&admin),
                Some(serde_json::json!({"severity": "HIGH", "title": title})),
            )
            .await;
        assert_eq!(status, 201, "{alert}");
        raised.push(alert["id"].as_str().unwrap().to_owned());
    }
    let status_of = |id: &str| {
        let path = format!("/v1/alerts/{id}");
        let app = &app;
        let admin = admin.clone();
        async move {
            app.call(reqwest::Method::GET, &path, Some(&admin), None)
                .await
                .1
        }
    };

    // A member may acknowledge, not resolve nor dismiss: no such buttons, 403.
    let member = app.create_key("org-a", "org:member").await;
    let mut browser = Browser::signed_in(&app, &member).await;
    let (status, _, page) = browser.get("/console/alerts").await;
    assert_eq!(status, 200);
    assert!(page.contains("Unusual export volume") && page.contains(">Acknowledge<"));
    // The statistics, drawn: three HIGH alerts, all raised today.
    assert!(
        page.contains(r#"aria-label="Alerts by severity, 3 in all""#)
            && page.contains("<title>HIGH: 3</title>")
            && page.contains(": 3 alerts</title>"),
        "{page}"
    );
    assert!(
        !page.contains(">Resolve<") && !page.contains(">Dismiss<"),
        "{page}"
    );
    let csrf = hidden_csrf(&page);
    let resolve = format!("/console/alerts/{}/resolve", raised[0]);
    assert_eq!(browser.post(&resolve, &[("csrf", &csrf)]).await.0, 403);
    let acknowledge = format!("/console/alerts/{}/acknowledge", raised[0]);
    assert_eq!(
        browser.post(&acknowledge, &[]).await.0,
        403,
        "no CSRF token"
    );
    let (status, headers, _) = browser.post(&acknowledge, &[("csrf", &csrf)]).await;
    assert_eq!(
        (status, location(&headers)),
        (StatusCode::SEE_OTHER, "/console/alerts")
    );
    let alert = status_of(&raised[0]).await;
    assert_eq!(alert["status"], "acknowledged");
    assert_eq!(
        alert["acknowledged_by"],
        format!("api-key:{}", member.split('_').nth(1).unwrap())
    );
    assert_eq!(browser.post(&acknowledge, &[("csrf", &csrf)]).await.0, 409);

    // An administrator resolves with notes and dismisses.
    let mut browser = Browser::signed_in(&app, &admin).await;
    let (_, _, page) = browser.get("/console/alerts").await;
    let csrf = hidden_csrf(&page);
    let notes = "Export was the quarterly report <b>run</b>";
    assert_eq!(
        browser
            .post(&resolve, &[("csrf", &csrf), ("notes", notes)])
            .await
            .0,
        303
    );
    let alert = status_of(&raised[0]).await;
    assert_eq!(
        (alert["status"].as_str(), alert["resolution_notes"].as_str()),
        (Some("resolved"), Some(notes))
    );
    let dismiss = format!("/console/alerts/{}/dismiss", raised[2]);
    assert_eq!(browser.post(&dismiss, &[("csrf", &csrf)]).await.0, 303);
    assert_eq!(status_of(&raised[2]).await["status"], "dismissed");
    // Open alerts by default; the closed ones on asking, notes escaped.
    let (_, _, page) = browser.get("/console/alerts").await;
    assert!(page.contains("Break-glass access") && !page.contains("Noisy rule"));
    let (_, _, page) = browser.get("/console/alerts?status=resolved").await;
    assert!(page.contains("&lt;b&gt;run&lt;/b&gt;") && !page.contains("Break-glass access"));

    // Another organization's alert is not there to act on.
    let other = app.create_key("org-b", "org:admin").await;
    let mut browser = Browser::signed_in(&app, &other).await;
    let (_, _, page) = browser.get("/console/alerts?status=all").await;
    assert!(!page.contains("Break-glass access"));
    let csrf = hidden_csrf(&page);
    let theirs = format!("/console/alerts/{}/dismiss", raised[1]);
    assert_eq!(browser.post(&theirs, &[("csrf", &csrf)]).await.0, 404);
}

/// Waits until the organization has `runs` verification runs recorded and
/// none in progress.
async fn wait_for_runs(app: &TestApp, organization_id: &str, runs: i64) {
    common::wait_until(
        std::time::Duration::from_secs(30),
        "the verification run to be recorded",
        || async {
            let recorded = app
                .count(
                    "SELECT count(*) FROM audit_integrity_log WHERE organization_id = $1 \
                       AND audit_log_id IS NULL",
                    &[&organization_id],
                )
                .await;
            let running = app
                .count(
                    "SELECT count(*) FROM verification_progress WHERE organization_id = $1",
                    &[&organization_id],
                )
                .await;
            (recorded == runs && running == 0).then_some(())
        },
    )
    .await;
}

#[actix_web::test]
async fn the_integrity_page_verifies_the_trail_and_offers_its_checkpoints() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let receipts = app
        .ingest(
            &admin,
            vec![
                serde_json::Value::from(event("dr-house", "patient.record.read")),
                serde_json::Value::from(event("dr-cuddy", "patient.record.update")),
            ],
        )
        .await;
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            "/v1/integrity/checkpoints",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 201);
    let (_, listed) = app
        .call(
            reqwest::Method::GET,
            "/v1/integrity/checkpoints",
            Some(&admin),
            None,
        )
        .await;
    let checkpoint = &listed["checkpoints"][0];

    let mut browser = Browser::signed_in(&app, &admin).await;
    let (status, _, page) = browser.get("/console/integrity").await;
    assert_eq!(status, 200);
    assert!(page.contains("No verification has run yet"), "{page}");
    let (_, key) = app
        .call(reqwest::Method::GET, "/v1/integrity/public-key", None, None)
        .await;
    assert!(page.contains(key["public_key"].as_str().unwrap()));
    // The checkpoint, to download as the API lists it.
    let path = format!("/console/integrity/checkpoints/{}", checkpoint["seq"]);
    assert!(page.contains(&path));
    let (status, _, file) = browser.get(&path).await;
    assert_eq!(status, 200);
    let file: serde_json::Value = serde_json::from_str(&file).unwrap();
    assert_eq!(file, checkpoint["checkpoint"]);

    // A run, in the background: verified, in the history; a tampered event
    // fails the next.
    let csrf = hidden_csrf(&page);
    assert_eq!(browser.post("/console/integrity/verify", &[]).await.0, 403);
    let (status, headers, _) = browser
        .post("/console/integrity/verify", &[("csrf", &csrf)])
        .await;
    assert_eq!(
        (status, location(&headers)),
        (StatusCode::SEE_OTHER, "/console/integrity")
    );
    wait_for_runs(&app, "org-a", 1).await;
    let (_, _, page) = browser.get("/console/integrity").await;
    assert!(
        page.contains(">verified<") && !page.contains("Verification running"),
        "{page}"
    );
    app.database_without_triggers()
        .await
        .execute(
            "UPDATE audit_log SET action = 'patient.record.delete' WHERE id = $1",
            &[&receipts[1]["id"].as_i64().unwrap()],
        )
        .await
        .unwrap();
    browser
        .post("/console/integrity/verify", &[("csrf", &csrf)])
        .await;
    wait_for_runs(&app, "org-a", 2).await;
    let (_, _, page) = browser.get("/console/integrity").await;
    assert!(
        page.contains(">verified<") && page.contains(">failed<"),
        "{page}"
    );

    // A run another worker is making: its progress, followed by reloading,
    // and no second run beside it; once it stalls, a new run may start.
    let database = app.database().await;
    database
        .execute(
            "INSERT INTO verification_progress (organization_id, started_by, events_total, events_checked) \
             VALUES ('org-a', 'api-key:elsewhere', 1000, 250)",
            &[],
        )
        .await
        .unwrap();
    let (_, _, page) = browser.get("/console/integrity").await;
    assert!(
        page.contains("Verification running")
            && page.contains("250 of 1000 events checked")
            && !page.contains("action=\"/console/integrity/verify\""),
        "{page}"
    );
    // htmx reads its live part again; without script, the page reloads.
    assert!(
        page.contains(r#"<div id="live" hx-get="/console/integrity" hx-trigger="every 2s""#)
            && page.contains(r#"<script src="/console/assets/htmx.min.js" defer></script>"#)
            && page.contains(r#"<noscript><meta http-equiv="refresh" content="2"></noscript>"#),
        "{page}"
    );
    let (status, headers, script) = browser.get("/console/assets/htmx.min.js").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let vendored = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/vendor/htmx-2.0.11.min.js"
    );
    assert_eq!(script, std::fs::read_to_string(vendored).unwrap());
    browser
        .post("/console/integrity/verify", &[("csrf", &csrf)])
        .await;
    let started_by =
        "SELECT count(*) FROM verification_progress WHERE started_by = 'api-key:elsewhere'";
    assert_eq!(app.count(started_by, &[]).await, 1, "the running one stays");
    database
        .execute(
            "UPDATE verification_progress SET updated_at = now() - interval '1 minute'",
            &[],
        )
        .await
        .unwrap();
    let (_, _, page) = browser.get("/console/integrity").await;
    assert!(!page.contains("Verification running") && page.contains("/console/integrity/verify"));
    assert!(!page.contains("htmx"), "no script where nothing runs");
    browser
        .post("/console/integrity/verify", &[("csrf", &csrf)])
        .await;
    wait_for_runs(&app, "org-a", 3).await;

    // A member reads the page but may not run a verification.
    let member = app.create_key("org-a", "org:member").await;
    let mut browser = Browser::signed_in(&app, &member).await;
    let (status, _, page) = browser.get("/console/integrity").await;
    assert_eq!(status, 200);
    assert!(!page.contains("/console/integrity/verify"));
    let csrf = hidden_csrf(&page);
    let (status, _, _) = browser
        .post("/console/integrity/verify", &[("csrf", &csrf)])
        .await;
    assert_eq!(status, 403);
    // Another organization has no such checkpoint.
    let other = app.create_key("org-b", "org:admin").await;
    let mut browser = Browser::signed_in(&app, &other).await;
    assert_eq!(browser.get(&path).await.0, 404);
}

#[actix_web::test]
async fn destinations_show_their_health_and_dead_letters_are_replayed() {
    let app = spawn_app_with(|config| config.delivery.allow_loopback = true).await;
    let admin = app.create_key("org-a", "org:admin").await;
    let (destination, delivery) = dead_letter(&app, &admin).await;

    let mut browser = Browser::signed_in(&app, &admin).await;
    let (status, _, page) = browser.get("/console/destinations").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("siem-down") && page.contains(&delivery),
        "{page}"
    );
    assert!(page.contains(">Replay<") && page.contains(">Disable<"));
    let csrf = hidden_csrf(&page);
    let replay = format!("/console/deliveries/{delivery}/replay");
    assert_eq!(browser.post(&replay, &[]).await.0, 403, "no CSRF token");
    let (status, headers, _) = browser.post(&replay, &[("csrf", &csrf)]).await;
    assert_eq!(
        (status, location(&headers)),
        (StatusCode::SEE_OTHER, "/console/destinations")
    );
    // A connection test: nothing listens on the dead letter's port; a
    // listener's port accepts.
    let test = format!("/console/destinations/{destination}/test");
    assert_eq!(browser.post(&test, &[]).await.0, 403, "no CSRF token");
    let (status, _, page) = browser.post(&test, &[("csrf", &csrf)]).await;
    assert_eq!(status, 200);
    assert!(page.contains(">Unreachable<"), "{page}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listening = app
        .create_destination(
            &admin,
            serde_json::json!({"type": "webhook", "label": "siem-up",
                "config": {"url": format!("http://{}/hook", listener.local_addr().unwrap())}}),
        )
        .await;
    let (status, _, page) = browser
        .post(
            &format!("/console/destinations/{listening}/test"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        page.contains(">Reachable<") && page.contains("accepts connections"),
        "{page}"
    );
    let disable = format!("/console/destinations/{destination}/disable");
    assert_eq!(browser.post(&disable, &[("csrf", &csrf)]).await.0, 303);
    let (_, shown) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/destinations/{destination}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(shown["disabled"], true);
    // Both are in the trail as the API records them.
    let (_, trail) = app
        .call(
            reqwest::Method::GET,
            "/v1/events?action=admin.*",
            Some(&admin),
            None,
        )
        .await;
    let actions: Vec<&str> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"admin.delivery.replay"), "{actions:?}");
    assert!(
        actions.contains(&"admin.destination.disable"),
        "{actions:?}"
    );
    let (_, _, page) = browser.get("/console/destinations").await;
    assert!(page.contains(">Enable<") && page.contains("disabled"));

    // An auditor reads the page without a button, and may not post.
    let auditor = app.create_key("org-a", "auditor").await;
    let mut browser = Browser::signed_in(&app, &auditor).await;
    let (status, _, page) = browser.get("/console/destinations").await;
    assert_eq!(status, 200);
    assert!(
        !page.contains(">Enable<") && !page.contains(">Replay<"),
        "{page}"
    );
    let csrf = hidden_csrf(&page);
    let enable = format!("/console/destinations/{destination}/enable");
    assert_eq!(browser.post(&enable, &[("csrf", &csrf)]).await.0, 403);
    assert_eq!(browser.post(&test, &[("csrf", &csrf)]).await.0, 403);
    // A member may not read deliveries at all; another organization finds none.
    let member = app.create_key("org-a", "org:member").await;
    let mut browser = Browser::signed_in(&app, &member).await;
    assert_eq!(browser.get("/console/destinations").await.0, 403);
    let other = app.create_key("org-b", "org:admin").await;
    let mut browser = Browser::signed_in(&app, &other).await;
    let (_, _, page) = browser.get("/console/destinations").await;
    assert!(!page.contains("siem-down"));
    let csrf = hidden_csrf(&page);
    assert_eq!(browser.post(&replay, &[("csrf", &csrf)]).await.0, 404);
}

/// A session ends `console.session_ttl` after its sign-in, however active.
#[actix_web::test]
async fn a_session_ends_at_its_absolute_expiry_even_when_active() {
    let app = spawn_app_with(|config| {
        config.console.session_ttl = std::time::Duration::from_secs(1);
        config.console.idle_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    let mut browser = Browser::signed_in(&app, &key).await;
    assert_eq!(browser.get("/console/events").await.0, 200);
    // Each request keeps it from idling out; the absolute end comes anyway.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, headers, _) = browser.get("/console/events").await;
        if status == 303 {
            assert_eq!(location(&headers), "/console/login");
            break;
        }
        assert_eq!(status, 200);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session outlived its absolute end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The `aria-label` of the events page's histogram: what it counts.
fn histogram_label(page: &str) -> &str {
    let figure = page
        .find("<figure class=\"histogram\">")
        .expect("a histogram");
    let at = figure + page[figure..].find("aria-label=\"").unwrap() + 12;
    page[at..].split('"').next().unwrap()
}

/// The organization's events by status, as the histogram's label says them.
async fn counted_by_status(
    app: &TestApp,
    organization_id: &str,
    principal: Option<&str>,
) -> String {
    let rows = app
        .database()
        .await
        .query(
            "SELECT s.status, (SELECT count(*) FROM audit_log e WHERE e.organization_id = $1 \
               AND e.status = s.status AND ($2::text IS NULL OR e.principal_id = $2)) \
             FROM unnest(ARRAY['attempt', 'success', 'failure']) AS s(status)",
            &[&organization_id, &principal],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|row| format!("{} {}", row.get::<_, i64>(1), row.get::<_, String>(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until the HistogramActor has counted every link of the organization.
async fn wait_for_the_counts(app: &TestApp, organization_id: &str) {
    let database = app.database().await;
    common::wait_until(
        std::time::Duration::from_secs(20),
        "the histogram's counts to reach the chain's head",
        || async {
            let behind = database
                .query_one(
                    "SELECT h.seq - coalesce((SELECT through_seq FROM event_histogram_progress p \
                       WHERE p.organization_id = h.organization_id), 0) \
                     FROM audit_chain_head h WHERE h.organization_id = $1",
                    &[&organization_id],
                )
                .await
                .unwrap()
                .get::<_, i64>(0);
            (behind == 0).then_some(())
        },
    )
    .await;
}

/// The histogram counts exactly the organization's events by status: from
/// the links not counted yet, from the hourly counts once the HistogramActor
/// has them, after a deletion (GDPR erasure) of counted events, and for a
/// filter the counts do not keep (from the events themselves).
#[actix_web::test]
async fn the_events_histogram_counts_every_event_by_status() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-b", "org:admin").await;
    app.ingest(&other, vec![serde_json::Value::from(event("x", "y")); 3])
        .await;
    let mut mine = Vec::new();
    for (principal, status) in [
        ("dr-house", "success"),
        ("dr-house", "failure"),
        ("dr-house", "failure"),
        ("dr-cuddy", "success"),
        ("dr-cuddy", "attempt"),
    ] {
        mine.push(serde_json::Value::from(
            event(principal, "patient.record.read").status(status),
        ));
    }
    app.ingest(&admin, mine).await;

    let mut browser = Browser::signed_in(&app, &admin).await;
    let (status, _, page) = browser.get("/console/events").await;
    assert_eq!(status, 200);
    let label = histogram_label(&page).to_owned();
    assert!(
        label.starts_with("Events per hour (UTC) by status"),
        "{label}"
    );
    assert!(
        label.ends_with(&counted_by_status(&app, "org-a", None).await),
        "{label}"
    );

    wait_for_the_counts(&app, "org-a").await;
    let (_, _, page) = browser.get("/console/events").await;
    let all = counted_by_status(&app, "org-a", None).await;
    assert!(histogram_label(&page).ends_with(&all), "{page}");
    assert!(all.contains("2 failure"), "{all}");
    // By status, the counts answer too.
    let (_, _, page) = browser.get("/console/events?status=failure").await;
    assert!(
        histogram_label(&page).ends_with("0 attempt, 0 success, 2 failure"),
        "{page}"
    );
    // A filter they do not keep: counted from the events.
    let (_, _, page) = browser.get("/console/events?principal_id=dr-house").await;
    assert!(
        histogram_label(&page).ends_with("0 attempt, 1 success, 2 failure"),
        "{page}"
    );

    // dr-house's events, counted, are erased: the counts lose them.
    let (status, erased) = app
        .call(
            reqwest::Method::POST,
            "/v1/gdpr/erase",
            Some(&admin),
            Some(serde_json::json!({"principal_id": "dr-house", "preserve_compliance": false})),
        )
        .await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["records_deleted"], 3, "{erased}");
    let (_, _, page) = browser.get("/console/events").await;
    let left = counted_by_status(&app, "org-a", None).await;
    assert!(histogram_label(&page).ends_with(&left), "{left}: {page}");
    wait_for_the_counts(&app, "org-a").await;
    let (_, _, page) = browser.get("/console/events").await;
    assert!(histogram_label(&page).ends_with(&left), "{left}: {page}");
    assert!(left.ends_with(", 0 failure"), "{left}");
    // The other organization's events are its own.
    let mut browser = Browser::signed_in(&app, &other).await;
    let (_, _, page) = browser.get("/console/events").await;
    assert!(
        histogram_label(&page).ends_with(&counted_by_status(&app, "org-b", None).await),
        "{page}"
    );
}

/// GDPR requests with their state and an export to download; report
/// schedules with their runs and outputs; each as the role allows.
#[actix_web::test]
async fn gdpr_requests_and_report_runs_are_listed_with_their_files() {
    let app = spawn_app().await;
    let admin = app.create_key("org-a", "org:admin").await;
    app.ingest(&admin, event("dr-house", "patient.record.read"))
        .await;

    let mut browser = Browser::signed_in(&app, &admin).await;
    let (status, _, page) = browser.get("/console/gdpr").await;
    assert_eq!(status, 200);
    assert!(page.contains("No request yet"), "{page}");
    let csrf = hidden_csrf(&page);
    let export = [("principal_id", "dr-house"), ("format", "csv")];
    assert_eq!(browser.post("/console/gdpr/export", &export).await.0, 403);
    let with_token = [export[0], export[1], ("csrf", csrf.as_str())];
    let (status, headers, file) = browser.post("/console/gdpr/export", &with_token).await;
    assert_eq!(status, 200, "{file}");
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert!(file.contains("dr-house") && file.contains("patient.record.read"));
    let (_, _, page) = browser.get("/console/gdpr").await;
    assert!(
        page.contains(">export<") && page.contains(">completed<") && page.contains("SHA-256"),
        "{page}"
    );
    let blank = [
        ("principal_id", " "),
        ("format", "csv"),
        ("csrf", csrf.as_str()),
    ];
    let (status, _, page) = browser.post("/console/gdpr/export", &blank).await;
    assert_eq!(status, 400);
    assert!(page.contains("principal_id"), "{page}");

    // A report, run now: its run and output on the page.
    let now = chrono::Utc::now();
    let (status, report) = app
        .call(
            reqwest::Method::POST,
            "/v1/reports",
            Some(&admin),
            Some(
                serde_json::json!({"name": "PHI access", "report_type": "access_summary",
                "format": "csv", "schedule": {"cron": "0 0 1 1 *", "timezone": "UTC"},
                "criteria": {"time_range": {"from": now - chrono::TimeDelta::hours(1),
                                            "to": now + chrono::TimeDelta::hours(1)}}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{report}");
    let report = report["id"].as_str().unwrap().to_owned();
    let run_path = format!("/v1/reports/{report}/run");
    let (status, queued) = app
        .call(reqwest::Method::POST, &run_path, Some(&admin), None)
        .await;
    assert_eq!(status, 202, "{queued}");
    let run = queued["id"].as_str().unwrap().to_owned();
    let run_state = format!("/v1/reports/{report}/executions/{run}");
    let done = common::wait_until(
        std::time::Duration::from_secs(30),
        "the report's run to complete",
        || async {
            let (_, state) = app
                .call(reqwest::Method::GET, &run_state, Some(&admin), None)
                .await;
            (state["status"] == "completed").then_some(state)
        },
    )
    .await;
    let (status, _, page) = browser.get("/console/reports").await;
    assert_eq!(status, 200);
    let output = format!("/console/reports/{report}/runs/{run}/output");
    assert!(
        page.contains("PHI access") && page.contains(">completed<") && page.contains(&output),
        "{page}"
    );
    let response = browser
        .client
        .get(format!("{}{output}", app.address))
        .header(COOKIE, browser.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-content-sha256"].to_str().unwrap(),
        done["output_sha256"].as_str().unwrap()
    );

    // A member reads the reports without their files, and no GDPR request.
    let member = app.create_key("org-a", "org:member").await;
    let mut browser = Browser::signed_in(&app, &member).await;
    let (_, _, page) = browser.get("/console/reports").await;
    assert!(
        page.contains("PHI access") && !page.contains(&output),
        "{page}"
    );
    assert!(!page.contains("/console/gdpr"));
    assert_eq!(browser.get(&output).await.0, 403);
    assert_eq!(browser.get("/console/gdpr").await.0, 403);
    // Another organization has neither.
    let other = app.create_key("org-b", "org:admin").await;
    let mut browser = Browser::signed_in(&app, &other).await;
    let (_, _, page) = browser.get("/console/reports").await;
    assert!(!page.contains("PHI access"));
    assert_eq!(browser.get(&output).await.0, 404);
    let (_, _, page) = browser.get("/console/gdpr").await;
    assert!(page.contains("No request yet"), "{page}");
}

/// The operators' page, for the operators' organization only.
#[actix_web::test]
async fn only_operators_see_the_operators_page() {
    let app = spawn_app().await;
    let operator = app
        .create_key(&app.config.operations.organization, "org:admin")
        .await;
    let mut browser = Browser::signed_in(&app, &operator).await;
    let (_, _, page) = browser.get("/console/events").await;
    assert!(page.contains("href=\"/console/operators\""), "{page}");
    let (status, _, page) = browser.get("/console/operators").await;
    assert_eq!(status, 200);
    for section in [
        "Slow statements",
        "Largest tables",
        "Internal errors",
        "audit_log",
    ] {
        assert!(page.contains(section), "{section}: {page}");
    }

    let tenant = app.create_key("org-a", "org:admin").await;
    let mut browser = Browser::signed_in(&app, &tenant).await;
    let (_, _, page) = browser.get("/console/events").await;
    assert!(!page.contains("/console/operators"), "{page}");
    assert_eq!(browser.get("/console/operators").await.0, 403);
}
