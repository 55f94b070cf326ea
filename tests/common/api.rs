//! What tests ask of the worker, one sentence each: ingest these events, list
//! them, verify the trail, create a destination and deliver to it, place a
//! legal hold. A helper named for the happy path asserts the success status
//! and returns what the test reads next; its `try_` twin returns the status
//! and body for the test to judge.

use std::fmt::Display;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;

use super::{wait_until, TestApp};

impl TestApp {
    /// `POST /v1/events`; asserts 201 and returns the receipts, in input order.
    pub async fn ingest(&self, key: &str, events: impl Into<Value>) -> Vec<Value> {
        let (status, body) = self.try_ingest(key, events).await;
        assert_eq!(status, 201, "ingest answered {status}: {body}");
        body["events"].as_array().expect("receipts").clone()
    }

    /// `POST /v1/events`; asserts nothing, returns the status and body.
    pub async fn try_ingest(&self, key: &str, events: impl Into<Value>) -> (u16, Value) {
        self.call(Method::POST, "/v1/events", Some(key), Some(events.into()))
            .await
    }

    /// Stores one event with `action` for the key's organization (201 asserted).
    pub async fn ingest_action(&self, key: &str, action: &str) {
        self.ingest(key, super::event("dr-who", action)).await;
    }

    /// `GET /v1/events?{query}`; asserts 200 and returns the page.
    pub async fn list_events(&self, key: &str, query: &str) -> Value {
        let (status, page) = self.try_list_events(key, query).await;
        assert_eq!(status, 200, "{query}: {page}");
        page
    }

    /// `GET /v1/events?{query}` (no `?` when `query` is empty); asserts nothing.
    pub async fn try_list_events(&self, key: &str, query: &str) -> (u16, Value) {
        let path = if query.is_empty() {
            "/v1/events".to_owned()
        } else {
            format!("/v1/events?{query}")
        };
        self.call(Method::GET, &path, Some(key), None).await
    }

    /// The actions of the organization's listing (its latest 100 events),
    /// newest first, leaving out the `admin.*` records of the test's own
    /// set-up (issuing its keys, say); asserts 200.
    pub async fn listed_actions(&self, key: &str) -> Vec<String> {
        self.list_events(key, "limit=100").await["events"]
            .as_array()
            .expect("a listing")
            .iter()
            .map(|event| event["action"].as_str().unwrap_or_default().to_owned())
            .filter(|action| !action.starts_with("admin."))
            .collect()
    }

    /// `GET /v1/events/{id}`; asserts 200 and returns the stored event.
    pub async fn stored_event(&self, key: &str, id: impl Display) -> Value {
        let (status, event) = self
            .call(Method::GET, &format!("/v1/events/{id}"), Some(key), None)
            .await;
        assert_eq!(status, 200, "event {id}: {event}");
        event
    }

    /// How many events the organization has live in `audit_log`, straight
    /// from the database, leaving out the `admin.*` records of the test's own
    /// set-up.
    pub async fn count_events(&self, organization_id: &str) -> i64 {
        self.count(
            "SELECT count(*) FROM audit_log WHERE organization_id = $1 AND action NOT LIKE 'admin.%'",
            &[&organization_id],
        )
        .await
    }

    /// The one number `sql` (a `SELECT count(*) …`) selects, straight from the database.
    pub async fn count(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> i64 {
        self.database()
            .await
            .query_one(sql, params)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
            .get(0)
    }

    /// `POST /v1/integrity/verify` of the whole organization, no body; asserts
    /// 200 and returns the report (valid or not).
    pub async fn verify(&self, key: &str) -> Value {
        let (status, report) = self
            .call(Method::POST, "/v1/integrity/verify", Some(key), None)
            .await;
        assert_eq!(status, 200, "{report}");
        report
    }

    /// `POST /v1/integrity/verify` with `body` (a range, say); asserts 200 and
    /// returns the report.
    pub async fn verify_with(&self, key: &str, body: Value) -> Value {
        let (status, report) = self
            .call(Method::POST, "/v1/integrity/verify", Some(key), Some(body))
            .await;
        assert_eq!(status, 200, "{report}");
        report
    }

    /// `POST /v1/destinations`; asserts 201 and returns the new destination's id.
    pub async fn create_destination(&self, key: &str, body: Value) -> i64 {
        let (status, created) = self.try_create_destination(key, body).await;
        assert_eq!(status, 201, "{created}");
        created["id"].as_i64().expect("a destination id")
    }

    /// `POST /v1/destinations`; asserts nothing, returns the status and body.
    pub async fn try_create_destination(&self, key: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, "/v1/destinations", Some(key), Some(body))
            .await
    }

    /// `POST /v1/deliveries` of `payload` to `destinations`; asserts 202 and
    /// returns the deliveries' ids, one per destination.
    pub async fn enqueue(&self, key: &str, destinations: &[i64], payload: Value) -> Vec<String> {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/deliveries",
                Some(key),
                Some(json!({"destination_ids": destinations, "payload": payload})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["deliveries"]
            .as_array()
            .expect("queued deliveries")
            .iter()
            .map(|delivery| delivery["id"].as_str().expect("a delivery id").to_owned())
            .collect()
    }

    /// `GET /v1/deliveries/{id}`; asserts 200 and returns the delivery with its attempts.
    pub async fn delivery(&self, key: &str, id: &str) -> Value {
        let (status, delivery) = self
            .call(
                Method::GET,
                &format!("/v1/deliveries/{id}"),
                Some(key),
                None,
            )
            .await;
        assert_eq!(status, 200, "delivery {id}: {delivery}");
        delivery
    }

    /// Queues `payload` to `destination` and waits (30 s at most) until the
    /// delivery ends, `delivered` or `failed`; returns it.
    pub async fn deliver(&self, key: &str, destination: i64, payload: Value) -> Value {
        let id = self.enqueue(key, &[destination], payload).await.remove(0);
        wait_until(Duration::from_secs(30), "the delivery ends", || async {
            let found = self.delivery(key, &id).await;
            matches!(found["status"].as_str(), Some("delivered" | "failed")).then_some(found)
        })
        .await
    }

    /// `POST /v1/legal-holds`; asserts 201 and returns the hold.
    pub async fn create_legal_hold(&self, key: &str, body: Value) -> Value {
        let (status, hold) = self
            .call(Method::POST, "/v1/legal-holds", Some(key), Some(body))
            .await;
        assert_eq!(status, 201, "{hold}");
        hold
    }

    /// `POST /v1/retention-policies`; asserts 201 and returns the policy.
    pub async fn create_retention_policy(&self, key: &str, body: Value) -> Value {
        let (status, policy) = self
            .call(
                Method::POST,
                "/v1/retention-policies",
                Some(key),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{policy}");
        policy
    }

    /// Waits (15 s at most) until the alert rules have evaluated `count`
    /// events in all, by `/metrics`: the alerts they raised are stored by then.
    pub async fn wait_evaluated(&self, count: u64) {
        wait_until(
            Duration::from_secs(15),
            &format!("the rules to evaluate {count} events"),
            || async {
                let evaluated = self
                    .metric("audit_worker_alert_events_evaluated_total")
                    .await
                    .unwrap_or(0);
                (evaluated >= count).then_some(())
            },
        )
        .await;
    }

    /// The text of `/metrics`; asserts 200.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200);
        response.text().await.expect("the metrics text")
    }

    /// The value of one series on `/metrics` (its name and labels exactly as
    /// exported), `None` while the worker does not export it.
    pub async fn metric<T: std::str::FromStr>(&self, series: &str) -> Option<T> {
        let prefix = format!("{series} ");
        self.metrics()
            .await
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
    }
}

/// A webhook destination's body: `label`, posting to `url`, default settings.
pub fn webhook(label: &str, url: &str) -> Value {
    json!({"type": "webhook", "label": label, "config": {"url": url}})
}

/// The fields a refusal's `error.details` name, in order; asserts there are
/// details and each names its field.
pub fn error_fields(body: &Value) -> Vec<String> {
    body["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no error details: {body}"))
        .iter()
        .map(|detail| {
            let field = detail["field"].as_str();
            field
                .unwrap_or_else(|| panic!("a detail naming no field: {body}"))
                .to_owned()
        })
        .collect()
}
