//! Durability: kill -9 the worker (a real child process) during sustained
//! ingest, restart it, and every event that got a 201 is stored exactly once
//! and verifies.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{free_port, issue_key, kill_9, serve, wait_ready, BINARY};
use common::{wait_until, TestDatabase};
use serde_json::{json, Value};

/// The worker's log level: warnings only.
const QUIET: &[(&str, &str)] = &[("AUDIT_WORKER__LOG__LEVEL", "warn")];

#[tokio::test]
async fn every_acknowledged_event_survives_a_kill_9_exactly_once() {
    let url = common::test_config().database.url;
    let _db = TestDatabase::named(url.database_name());
    let url_text = url.to_string();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut worker = serve(port, &url_text, QUIET, Stdio::null());
    wait_ready(&client, &base, &mut worker).await;
    let key = issue_key(&url_text, "org-crash", "ingest");

    // correlation id -> acknowledged event id
    let acknowledged: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let (client, base, key, acknowledged) = (
                client.clone(),
                base.clone(),
                key.clone(),
                acknowledged.clone(),
            );
            tokio::spawn(async move {
                for request in 0.. {
                    let events: Vec<Value> = (0..10)
                        .map(|i| {
                            json!({"principal_id": "u", "action": "crash.test", "status": "success",
                                        "correlation_id": format!("w{writer}-r{request}-e{i}")})
                        })
                        .collect();
                    let sent = client
                        .post(format!("{base}/v1/events"))
                        .bearer_auth(&key)
                        .json(&events)
                        .send()
                        .await;
                    let Ok(response) = sent else { break };
                    if response.status() != 201 {
                        break;
                    }
                    let Ok(body) = response.json::<Value>().await else {
                        break;
                    };
                    let mut acknowledged = acknowledged.lock().unwrap();
                    for (event, receipt) in events.iter().zip(body["events"].as_array().unwrap()) {
                        acknowledged.insert(
                            event["correlation_id"].as_str().unwrap().to_owned(),
                            receipt["id"].as_i64().unwrap(),
                        );
                    }
                }
            })
        })
        .collect();

    wait_until(Duration::from_secs(30), "sustained ingest", || {
        let count = acknowledged.lock().unwrap().len();
        async move { (count >= 2000).then_some(()) }
    })
    .await;
    kill_9(&mut worker);
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let mut worker = serve(port, &url_text, QUIET, Stdio::null());
    wait_ready(&client, &base, &mut worker).await;
    let db = common::connect(&url).await;
    let stored: HashMap<String, (i64, i64)> = db
        .query(
            "SELECT correlation_id, min(id), count(*) FROM audit_log WHERE action = 'crash.test' GROUP BY correlation_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();
    for (correlation, id) in &acknowledged {
        let (stored_id, copies) = stored
            .get(correlation)
            .unwrap_or_else(|| panic!("{correlation} was acknowledged but lost"));
        assert_eq!(*copies, 1, "{correlation} stored {copies} times");
        assert_eq!(stored_id, id);
    }
    assert!(
        stored.values().all(|(_, copies)| *copies == 1),
        "nothing stored twice"
    );

    let verified = Command::new(BINARY)
        .args(["verify", "--org", "org-crash"])
        .env("AUDIT_WORKER__DATABASE__URL", &url_text)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["valid"], true, "{report}");
    assert!(report["checked"].as_u64().unwrap() >= acknowledged.len() as u64);
    kill_9(&mut worker);
}
