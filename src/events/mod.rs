//! Audit events: the request format, validation (all-or-nothing, every problem
//! named by index and field), presets, retention policies, and the hashed form
//! that is stored.

pub mod presets;
pub mod recorded;
pub mod retention;
pub mod table;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::integrity::canonical::{self, HashedFields, HASH_ALGORITHM};
use crate::validation::{parse_timestamp, FieldError};
use presets::Preset;

pub const STATUSES: &[&str] = &["attempt", "success", "failure"];
pub const CLASSIFICATIONS: &[&str] = &["PUBLIC", "INTERNAL", "CONFIDENTIAL", "PHI"];
/// Largest `details` object, serialized.
pub const MAX_DETAILS_BYTES: usize = 64 * 1024;
const MAX_TEXT_CHARS: usize = 64 * 1024;

/// The fields a client may send, with their maximum lengths in characters (as
/// the schema's column types).
pub const STRING_FIELDS: &[(&str, usize)] = &[
    ("timestamp", 64),
    ("principal_id", 255),
    ("action", 255),
    ("status", 50),
    ("target_resource_type", 255),
    ("target_resource_id", 255),
    ("outcome_description", MAX_TEXT_CHARS),
    ("correlation_id", 255),
    ("data_classification", 20),
    ("retention_policy", 50),
    ("ttl", 255),
    ("event_version", 20),
    ("preset", 255),
    ("idempotency_key", 255),
    ("organization_id", 255),
];

/// The longest value a client may send for `field`, if it is one of the string
/// fields of an event (`details` is not).
pub fn string_field_max_chars(field: &str) -> Option<usize> {
    STRING_FIELDS
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, max)| *max)
}

/// An event ready to store: validated, defaults applied, identifiers committed, hashed.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub organization_id: String,
    pub timestamp: DateTime<Utc>,
    pub ttl: Option<String>,
    pub principal_id: String,
    pub principal_commitment: String,
    pub action: String,
    pub target_resource_type: Option<String>,
    pub target_resource_id: Option<String>,
    pub target_resource_commitment: Option<String>,
    pub status: String,
    pub outcome_description: Option<String>,
    pub event_version: String,
    pub correlation_id: Option<String>,
    pub data_classification: String,
    pub retention_policy: String,
    pub idempotency_key: Option<String>,
    pub details: Option<Value>,
    pub hash: String,
}

impl NewEvent {
    pub fn hashed_fields(&self) -> HashedFields<'_> {
        HashedFields {
            organization_id: &self.organization_id,
            timestamp: self.timestamp,
            ttl: self.ttl.as_deref(),
            principal_commitment: &self.principal_commitment,
            action: &self.action,
            target_resource_type: self.target_resource_type.as_deref(),
            target_resource_commitment: self.target_resource_commitment.as_deref(),
            status: &self.status,
            outcome_description: self.outcome_description.as_deref(),
            hash_algorithm: HASH_ALGORITHM,
            event_version: &self.event_version,
            correlation_id: self.correlation_id.as_deref(),
            data_classification: &self.data_classification,
            retention_policy: &self.retention_policy,
            idempotency_key: self.idempotency_key.as_deref(),
            details: self.details.as_ref(),
        }
    }
}

/// What the ingest response says of each event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Receipt {
    pub id: i64,
    /// As stored: UTC, microseconds.
    pub timestamp: String,
    pub hash: String,
}

/// The rules validation needs besides the event itself.
pub struct Rules<'a> {
    pub organization_id: &'a str,
    pub now: DateTime<Utc>,
    pub max_clock_skew: std::time::Duration,
    pub commitment_key: &'a [u8],
    pub presets: &'a std::collections::HashMap<String, Preset>,
}

/// Validates one event (the `index`-th of its request) and builds its stored form.
pub fn prepare(index: usize, input: Value, rules: &Rules<'_>) -> Result<NewEvent, Vec<FieldError>> {
    let error = |field: &str, message: String| FieldError {
        index: Some(index),
        field: field.to_owned(),
        message,
    };
    // Taken by value: the event's strings and details move into the stored
    // form instead of being copied (ingest's hot path).
    let Value::Object(object) = input else {
        return Err(vec![error("", "an event must be a JSON object".to_owned())]);
    };
    let mut errors = Vec::new();
    for key in object.keys() {
        if key != "details" && !STRING_FIELDS.iter().any(|(name, _)| name == key) {
            errors.push(error(key, "unknown field".to_owned()));
        }
    }

    // Preset defaults go under the event's own values.
    let preset = match object.get("preset") {
        Some(Value::String(name)) => match rules.presets.get(name) {
            Some(preset) => Some(preset),
            None => {
                errors.push(error("preset", format!("no preset named `{name}`")));
                None
            }
        },
        _ => None,
    };
    let mut merged: Map<String, Value> = match preset {
        Some(preset) => preset.defaults().into_iter().chain(object).collect(),
        None => object,
    };

    for (field, max) in STRING_FIELDS {
        match merged.get(*field) {
            None | Some(Value::Null) => {}
            Some(Value::String(value)) if value.contains('\0') => {
                errors.push(error(field, "must not contain NUL characters".to_owned()));
            }
            Some(Value::String(value)) if value.chars().count() > *max => {
                errors.push(error(field, format!("at most {max} characters")));
            }
            Some(Value::String(_)) => {}
            Some(_) => errors.push(error(field, "must be a string".to_owned())),
        }
    }
    // The fields refused so far are not checked further.
    let refused: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
    let text = |field: &str| match merged.get(field) {
        Some(Value::String(value)) if !refused.iter().any(|f| f == field) => Some(value.as_str()),
        _ => None,
    };
    for field in ["principal_id", "action", "status"] {
        if text(field).is_none_or(|value| value.trim().is_empty())
            && !refused.iter().any(|f| f == field)
        {
            errors.push(error(field, "is required".to_owned()));
        }
    }
    if let Some(status) = text("status") {
        if !STATUSES.contains(&status) {
            errors.push(error(
                "status",
                format!("must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let classification = text("data_classification").unwrap_or("INTERNAL");
    if !CLASSIFICATIONS.contains(&classification) {
        errors.push(error(
            "data_classification",
            format!("must be one of {}", CLASSIFICATIONS.join(", ")),
        ));
    }
    let timestamp = checked_timestamp(text("timestamp"), rules).unwrap_or_else(|problem| {
        errors.push(error("timestamp", problem));
        rules.now
    });
    if let Err(problem) = checked_details(merged.get("details")) {
        errors.push(error("details", problem));
    }
    if let Some(preset) = preset {
        for problem in preset.check(&merged) {
            errors.push(error(&problem.field, problem.message));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // Valid: every string field is a string or absent.
    let mut take = |field: &str| match merged.remove(field) {
        Some(Value::String(value)) => Some(value),
        _ => None,
    };
    let organization_id = rules.organization_id.to_owned();
    let principal_id = take("principal_id").unwrap_or_default();
    let target_resource_id = take("target_resource_id");
    let mut event = NewEvent {
        principal_commitment: canonical::commitment(
            rules.commitment_key,
            &organization_id,
            &principal_id,
        ),
        target_resource_commitment: target_resource_id
            .as_deref()
            .map(|id| canonical::commitment(rules.commitment_key, &organization_id, id)),
        organization_id,
        timestamp,
        ttl: take("ttl"),
        principal_id,
        action: take("action").unwrap_or_default(),
        target_resource_type: take("target_resource_type"),
        target_resource_id,
        status: take("status").unwrap_or_default(),
        outcome_description: take("outcome_description"),
        event_version: take("event_version").unwrap_or_else(|| "1.0".to_owned()),
        correlation_id: take("correlation_id"),
        data_classification: take("data_classification").unwrap_or_else(|| "INTERNAL".to_owned()),
        retention_policy: take("retention_policy")
            .unwrap_or_else(|| retention::DEFAULT_POLICY.to_owned()),
        idempotency_key: take("idempotency_key"),
        details: merged
            .remove("details")
            .filter(|details| !details.is_null()),
        hash: String::new(),
    };
    event.hash = hex::encode(canonical::event_hash(&event.hashed_fields()));
    Ok(event)
}

/// The event's time, normalized to the instant PostgreSQL stores
/// (`parse_timestamp`) so that the hash covers exactly what is stored; now
/// when the event gives none.
fn checked_timestamp(raw: Option<&str>, rules: &Rules<'_>) -> Result<DateTime<Utc>, String> {
    let timestamp = match raw {
        None => return Ok(normalized_now(rules.now)),
        Some(raw) => parse_timestamp(raw)?,
    };
    let skew = TimeDelta::from_std(rules.max_clock_skew).unwrap_or(TimeDelta::MAX);
    if timestamp > rules.now + skew {
        return Err(format!(
            "is more than {} in the future",
            humantime::format_duration(rules.max_clock_skew)
        ));
    }
    if timestamp < DateTime::UNIX_EPOCH {
        return Err("must not be before 1970".to_owned());
    }
    Ok(timestamp)
}

/// `details`: absent, or a JSON object of at most [`MAX_DETAILS_BYTES`] without NUL.
fn checked_details(details: Option<&Value>) -> Result<(), String> {
    match details {
        None | Some(Value::Null) => Ok(()),
        Some(details @ Value::Object(_)) => {
            let size = serialized_size(details);
            if size > MAX_DETAILS_BYTES {
                Err(format!(
                    "at most {MAX_DETAILS_BYTES} bytes serialized ({size} given)"
                ))
            } else if contains_nul(details) {
                Err("must not contain NUL characters".to_owned())
            } else {
                Ok(())
            }
        }
        Some(_) => Err("must be a JSON object".to_owned()),
    }
}

/// The length of `value` as compact JSON, counted without building the text.
fn serialized_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).map_or(usize::MAX, |()| count.0)
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// The clock's time as PostgreSQL stores it (whole microseconds).
fn normalized_now(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(now)
}
