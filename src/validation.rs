//! The shape of a validation problem, shared by every layer that validates
//! client input (events, roles, queries) and rendered by the HTTP error body.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One invalid field: which (`permissions[2].action`), why, and for batch
/// requests which item.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            index: None,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Longest string any request may carry in one value, in characters; fields
/// with a column of their own have tighter limits of their own.
pub const MAX_STRING_CHARS: usize = 64 * 1024;

/// How strictly a string a client sent is read.
///
/// PostgreSQL refuses NUL in `text` and `jsonb`, so no string may hold one.
/// A field read as text (a name, an id, an action, a description, a query or
/// path parameter) reaches logs, CSV exports, SIEMs and terminals: other C0
/// control characters and DEL have no place there (log and terminal
/// injection), tab, line feed and carriage return aside. Free-form JSON
/// below such fields (`details`, `metadata`, a payload) stays JSON wherever
/// it goes, where every control character is escaped, so only NUL is refused.
#[derive(Debug, Clone, Copy)]
pub struct TextRules {
    /// Refuse control characters in the fields read as text.
    pub fields: Strictness,
    /// … and in the free-form JSON below them.
    pub nested: Strictness,
    /// Longest string, in characters, if this check bounds it.
    pub max_chars: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// NUL and control characters (tab, line feed, carriage return aside).
    Text,
    /// NUL only.
    Json,
}

impl TextRules {
    /// Request bodies, query strings and paths: text fields as text, nested
    /// JSON as JSON, every string bounded by [`MAX_STRING_CHARS`].
    pub const REQUEST: TextRules = TextRules {
        fields: Strictness::Text,
        nested: Strictness::Json,
        max_chars: Some(MAX_STRING_CHARS),
    };

    /// Why `text` cannot be kept as is, if it cannot.
    pub fn problem(&self, text: &str, strictness: Strictness) -> Option<String> {
        if text.contains('\0') {
            return Some("must not contain NUL characters".to_owned());
        }
        if strictness == Strictness::Text {
            if let Some(bad) = text.chars().find(|&c| {
                (c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{7f}'
            }) {
                return Some(format!(
                    "must not contain control characters (found U+{:04X})",
                    u32::from(bad)
                ));
            }
        }
        match self.max_chars {
            Some(max) if text.len() > max && text.chars().count() > max => {
                Some(format!("at most {max} characters"))
            }
            _ => None,
        }
    }

    /// Every string of a JSON body (object keys included) these rules
    /// refuse, named by its path (`config.headers.X`, `permissions[2].action`).
    /// The members of the top object are its text fields; what lies below
    /// them is nested JSON.
    pub fn json_problems(&self, body: &serde_json::Value) -> Vec<FieldError> {
        let mut problems = Vec::new();
        self.collect(String::new(), body, 0, &mut problems);
        problems
    }

    fn collect(
        &self,
        path: String,
        value: &serde_json::Value,
        depth: usize,
        problems: &mut Vec<FieldError>,
    ) {
        use serde_json::Value;
        let strictness = if depth <= 1 { self.fields } else { self.nested };
        match value {
            Value::String(text) => {
                if let Some(problem) = self.problem(text, strictness) {
                    problems.push(FieldError::new(path, problem));
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    // An array's items sit at its own depth: `tags[0]` is a field.
                    self.collect(format!("{path}[{index}]"), item, depth.max(1), problems);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    let key_problem = self.problem(key, strictness);
                    // A refused key is named escaped, so the answer never carries it raw.
                    let shown = match key_problem {
                        Some(_) => key.escape_default().to_string(),
                        None => key.clone(),
                    };
                    let child = if path.is_empty() {
                        shown
                    } else {
                        format!("{path}.{shown}")
                    };
                    if let Some(problem) = key_problem {
                        problems.push(FieldError::new(&child, format!("(the key) {problem}")));
                    }
                    self.collect(child, item, depth + 1, problems);
                }
            }
            _ => {}
        }
    }
}

/// Largest free-form JSON field of a request (`metadata`, `criteria`, a
/// preset's `default_values`, a destination's `config`), serialized; as an
/// event's `details`.
pub const MAX_FREE_JSON_BYTES: usize = 64 * 1024;

/// Reads a free-form JSON field of a request body, refusing one larger than
/// [`MAX_FREE_JSON_BYTES`] serialized
/// (`#[serde(deserialize_with = "…")]`).
pub fn bounded_json<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<serde_json::Value, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    let size = serde_json::to_vec(&value).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_FREE_JSON_BYTES {
        return Err(serde::de::Error::custom(format!(
            "at most {MAX_FREE_JSON_BYTES} bytes serialized ({size} given)"
        )));
    }
    Ok(value)
}

/// [`bounded_json`] for an optional field (`#[serde(default, deserialize_with = "…")]`).
pub fn optional_bounded_json<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    bounded_json(deserializer).map(|value| Some(value).filter(|value| !value.is_null()))
}

/// A field of a PATCH body that is present, even as `null` (which plain
/// `Option` would take for absent): `Some(None)` clears, `None` (via
/// `default`) keeps (`#[serde(default, deserialize_with = "…")]`).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Parses an RFC 3339 date-time into the instant PostgreSQL will store: UTC,
/// whole microseconds (finer digits dropped), and a leap second
/// (`23:59:60`) as the second after it, as PostgreSQL reads one. Everything
/// that is hashed, compared or stored goes through here first, so that what
/// is hashed is exactly what is stored.
pub fn parse_timestamp(raw: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{DateTime, DurationRound, TimeDelta, Utc};
    let parsed = DateTime::parse_from_rfc3339(raw.trim())
        .map_err(|_| "must be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z".to_owned())?;
    // chrono keeps a leap second as nanoseconds past 10^9 of second 59; plain
    // arithmetic from the whole second carries it into the next one.
    let whole = DateTime::<Utc>::from_timestamp(parsed.timestamp(), 0)
        .ok_or_else(|| "is out of the supported range".to_owned())?;
    let instant = whole
        .checked_add_signed(TimeDelta::nanoseconds(i64::from(
            parsed.timestamp_subsec_nanos(),
        )))
        .ok_or_else(|| "is out of the supported range".to_owned())?;
    Ok(instant
        .duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(instant))
}

/// An optional date-time parameter read with [`parse_timestamp`]; a value
/// that does not parse is recorded in `errors` under `field`.
pub fn timestamp_field(
    field: &str,
    raw: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    match parse_timestamp(raw?) {
        Ok(time) => Some(time),
        Err(problem) => {
            errors.push(FieldError::new(field, problem));
            None
        }
    }
}

/// Reads an optional date-time of a request body with [`parse_timestamp`]
/// (`#[serde(default, deserialize_with = "…")]`), so that no handler ever sees
/// a leap second or nanoseconds.
pub fn optional_timestamp<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error> {
    let raw = <Option<std::borrow::Cow<'de, str>>>::deserialize(deserializer)?;
    raw.map(|raw| parse_timestamp(&raw).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leap_second_is_the_next_second_as_postgresql_stores_it() {
        let parsed = parse_timestamp("2025-06-30T23:59:60Z").unwrap();
        assert_eq!(parsed.to_rfc3339(), "2025-07-01T00:00:00+00:00");
        let fraction = parse_timestamp("2016-12-31T23:59:60.25+00:00").unwrap();
        assert_eq!(fraction.to_rfc3339(), "2017-01-01T00:00:00.250+00:00");
    }

    #[test]
    fn timestamps_keep_whole_microseconds_in_utc() {
        let parsed = parse_timestamp("2026-01-31T13:00:00.123456789+01:00").unwrap();
        assert_eq!(parsed.to_rfc3339(), "2026-01-31T12:00:00.123456+00:00");
        assert!(parse_timestamp("2026-02-30T00:00:00Z").is_err());
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn nul_and_control_characters_are_named_by_their_path() {
        let value = serde_json::json!({"title": "a\u{0}", "tags": ["ok", "b\u{1b}[31m"],
            "notes": "line\nline\ttab", "k\u{0}": 1,
            "metadata": {"note": "bell\u{7}", "deep": ["nul\u{0}"]}});
        let mut fields: Vec<String> = TextRules::REQUEST
            .json_problems(&value)
            .into_iter()
            .map(|problem| problem.field)
            .collect();
        fields.sort();
        // The bell below `metadata` is free-form JSON: kept; its NUL is not.
        assert_eq!(fields, ["k\\u{0}", "metadata.deep[0]", "tags[1]", "title"]);
    }

    #[test]
    fn every_string_of_a_request_is_bounded() {
        let long = "x".repeat(MAX_STRING_CHARS + 1);
        let value = serde_json::json!({"metadata": {"blob": long}});
        let problems = TextRules::REQUEST.json_problems(&value);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "metadata.blob");
    }
}
