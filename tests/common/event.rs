//! The one event builder: `event("alice", "auth.login")` is a successful
//! event, and each option reads as the rest of the sentence:
//! `event("alice", "patient.record.read").target("Patient", "p-1").classification("PHI")`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

/// An event for `POST /v1/events`; becomes its JSON with `Value::from`
/// (`TestApp::ingest` takes one event, a `Vec` of them or any JSON).
#[derive(Clone, Debug)]
pub struct Event(Map<String, Value>);

/// A successful event of `principal` doing `action`, with nothing else set.
pub fn event(principal: &str, action: &str) -> Event {
    let Value::Object(fields) =
        json!({"principal_id": principal, "action": action, "status": "success"})
    else {
        unreachable!("an object literal")
    };
    Event(fields)
}

impl Event {
    /// `status`: `success` (the default), `failure` or `attempt`.
    pub fn status(self, status: &str) -> Self {
        self.set("status", status)
    }

    /// `target_resource_type` and `target_resource_id` (an id of `None` is sent as null).
    pub fn target(self, resource_type: &str, resource_id: impl Into<Value>) -> Self {
        self.set("target_resource_type", resource_type)
            .set("target_resource_id", resource_id)
    }

    /// `timestamp`, to the microsecond the worker keeps.
    pub fn at(self, time: DateTime<Utc>) -> Self {
        self.timestamp(time.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    /// `timestamp` exactly as written (any text, valid or not).
    pub fn timestamp(self, timestamp: impl Into<Value>) -> Self {
        self.set("timestamp", timestamp)
    }

    /// `details`, a JSON object.
    pub fn details(self, details: Value) -> Self {
        self.set("details", details)
    }

    /// `organization_id`: the organization the body names.
    pub fn organization(self, organization_id: &str) -> Self {
        self.set("organization_id", organization_id)
    }

    /// `data_classification`: PUBLIC, INTERNAL, CONFIDENTIAL or PHI.
    pub fn classification(self, classification: &str) -> Self {
        self.set("data_classification", classification)
    }

    /// `retention_policy`, by name.
    pub fn policy(self, policy: &str) -> Self {
        self.set("retention_policy", policy)
    }

    /// Any other field, or any value for a field (to send what the worker must refuse).
    pub fn set(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.0.insert(field.to_owned(), value.into());
        self
    }
}

impl From<Event> for Value {
    fn from(event: Event) -> Self {
        Value::Object(event.0)
    }
}
