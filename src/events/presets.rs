//! Presets (`audit_preset`): named defaults and rules for a kind of event. An
//! event naming a preset gets the preset's default values for the fields it
//! leaves out, and must then meet the preset's required fields and rules.
//!
//! `validation` holds per-field rules:
//! `{"fields": {"<field>": {"enum": [..], "pattern": "<regex>", "min_length": n, "max_length": n}}}`.
//!
//! Presets are read from the database by every ingest request that names one
//! (no cache), so a change made through `/v1/presets` applies to the next event.
//! [`definition_problems`] checks a preset itself before it is saved.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CLASSIFICATIONS, STATUSES};
use crate::validation::FieldError;

/// One unmet rule, already phrased for the client.
pub struct Problem {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Preset {
    pub name: String,
    pub action: String,
    pub data_classification: String,
    pub required_fields: Vec<String>,
    pub default_values: Map<String, Value>,
    pub validation: Validation,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Validation {
    #[serde(default)]
    pub fields: HashMap<String, FieldRule>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct FieldRule {
    #[serde(rename = "enum", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
}

impl Preset {
    /// The values an event using this preset starts from: its action,
    /// classification and default values.
    pub fn defaults(&self) -> Map<String, Value> {
        let mut defaults = self.default_values.clone();
        defaults.insert("action".to_owned(), Value::String(self.action.clone()));
        defaults.insert(
            "data_classification".to_owned(),
            Value::String(self.data_classification.clone()),
        );
        defaults
    }

    /// What the merged event (defaults under the event's own values) fails of this preset.
    pub fn check(&self, event: &Map<String, Value>) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| {
            problems.push(Problem {
                field: field.to_owned(),
                message: format!("preset `{}`: {message}", self.name),
            })
        };
        if event.get("action").and_then(Value::as_str) != Some(self.action.as_str()) {
            problem("action", format!("the action must be `{}`", self.action));
        }
        if event.get("data_classification").and_then(Value::as_str)
            != Some(self.data_classification.as_str())
        {
            problem(
                "data_classification",
                format!(
                    "the data classification must be `{}`",
                    self.data_classification
                ),
            );
        }
        for field in &self.required_fields {
            if field_value(event, field).is_none_or(Value::is_null) {
                problem(field, "is required".to_owned());
            }
        }
        for (field, rule) in &self.validation.fields {
            let Some(value) = field_value(event, field).filter(|v| !v.is_null()) else {
                continue;
            };
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            if let Some(allowed) = &rule.one_of {
                if !allowed.contains(&text) {
                    problem(field, format!("must be one of {}", allowed.join(", ")));
                }
            }
            if let Some(min) = rule.min_length {
                if text.chars().count() < min {
                    problem(field, format!("at least {min} characters"));
                }
            }
            if let Some(max) = rule.max_length {
                if text.chars().count() > max {
                    problem(field, format!("at most {max} characters"));
                }
            }
            if let Some(pattern) = &rule.pattern {
                match regex::Regex::new(pattern) {
                    Ok(regex) if regex.is_match(&text) => {}
                    Ok(_) => problem(field, format!("must match `{pattern}`")),
                    Err(_) => problem(
                        field,
                        format!("the preset's pattern `{pattern}` is invalid"),
                    ),
                }
            }
        }
        problems
    }
}

/// A top-level field, or `details.<key>` for a key of the details object.
fn field_value<'a>(event: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    match field.strip_prefix("details.") {
        Some(key) => event.get("details")?.get(key),
        None => event.get(field),
    }
}

/// Longest preset name: the column is `varchar(255)`, as is an event's `preset`.
const MAX_NAME_CHARS: usize = 255;
/// Longest description; the column is `text`, this only bounds what a client may store.
const MAX_DESCRIPTION_CHARS: usize = 10_000;
/// Compiled size limit of a rule's pattern: every event using the preset compiles it.
const MAX_PATTERN_BYTES: usize = 1 << 20;
/// Fields an event sets itself and a preset may therefore not default, with why.
const NO_DEFAULT: &[(&str, &str)] = &[
    ("action", "the preset's own `action` sets it"),
    (
        "data_classification",
        "the preset's own `data_classification` sets it",
    ),
    ("preset", "an event names its preset itself"),
    ("organization_id", "the organization comes from the API key"),
    (
        "idempotency_key",
        "a shared default would make every event a repeat of the first",
    ),
    ("timestamp", "an event's time is its own (default: now)"),
];

/// A preset as a client defines it, before [`definition_problems`] has checked it.
pub struct Definition<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub action: &'a str,
    pub data_classification: &'a str,
    pub required_fields: &'a Value,
    pub default_values: &'a Value,
    pub validation: &'a Value,
}

/// Whether `field` is something a preset can require or check: an event's
/// string field, `details`, or `details.<key>` (one key of the details object,
/// a dot in it taken literally, as ingest looks it up).
fn is_checkable_field(field: &str) -> bool {
    match field.strip_prefix("details.") {
        Some(key) => !key.is_empty(),
        None => {
            field == "details"
                || (field != "preset"
                    && field != "organization_id"
                    && super::string_field_max_chars(field).is_some())
        }
    }
}

/// The checked preset, or every problem of the definition named by its field
/// (`required_fields[1]`, `default_values.status`,
/// `validation.fields.target_resource_id.pattern`).
pub fn check_definition(definition: &Definition<'_>) -> Result<Preset, Vec<FieldError>> {
    let mut problems = Vec::new();
    let mut problem =
        |field: String, message: String| problems.push(FieldError::new(field, message));

    let name = definition.name;
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        problem("name".into(), format!("1 to {MAX_NAME_CHARS} characters"));
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        problem(
            "name".into(),
            "letters, digits, `.`, `_` and `-`, starting with a letter or digit".into(),
        );
    }
    if let Some(description) = definition.description {
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            problem(
                "description".into(),
                format!("at most {MAX_DESCRIPTION_CHARS} characters"),
            );
        }
    }
    let action_max = super::string_field_max_chars("action").unwrap_or(255);
    if definition.action.trim().is_empty() {
        problem("action".into(), "must not be empty".into());
    } else if definition.action.chars().count() > action_max || definition.action.contains('\0') {
        problem(
            "action".into(),
            format!("at most {action_max} characters, no NUL"),
        );
    }
    if !CLASSIFICATIONS.contains(&definition.data_classification) {
        problem(
            "data_classification".into(),
            format!("must be one of {}", CLASSIFICATIONS.join(", ")),
        );
    }

    let mut required_fields = Vec::new();
    match definition.required_fields {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let field = format!("required_fields[{i}]");
                match item.as_str() {
                    None => problem(field, "must be a string".into()),
                    Some(name) if !is_checkable_field(name) => problem(
                        field,
                        format!("`{name}` is not an event field (nor `details.<key>`)"),
                    ),
                    Some(name) if required_fields.iter().any(|known| known == name) => {
                        problem(field, format!("`{name}` is listed twice"))
                    }
                    Some(name) => required_fields.push(name.to_owned()),
                }
            }
        }
        _ => problem(
            "required_fields".into(),
            "must be an array of field names".into(),
        ),
    }

    let mut default_values = Map::new();
    match definition.default_values {
        Value::Object(values) => {
            for (key, value) in values {
                let field = format!("default_values.{key}");
                if let Some((_, why)) = NO_DEFAULT.iter().find(|(name, _)| name == key) {
                    problem(field, format!("cannot have a default: {why}"));
                    continue;
                }
                if key == "details" {
                    let size = serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len());
                    if !value.is_object() {
                        problem(field, "must be a JSON object".into());
                    } else if size > super::MAX_DETAILS_BYTES {
                        problem(
                            field,
                            format!("at most {} bytes serialized", super::MAX_DETAILS_BYTES),
                        );
                    } else {
                        default_values.insert(key.clone(), value.clone());
                    }
                    continue;
                }
                let Some(max) = super::string_field_max_chars(key) else {
                    problem(
                        field,
                        "unknown field: a default names an event field (`details` takes a whole object)"
                            .into(),
                    );
                    continue;
                };
                match value.as_str() {
                    None => problem(field, "must be a string".into()),
                    Some(text) if text.contains('\0') || text.chars().count() > max => {
                        problem(field, format!("at most {max} characters, no NUL"))
                    }
                    Some(text) if key == "status" && !STATUSES.contains(&text) => {
                        problem(field, format!("must be one of {}", STATUSES.join(", ")))
                    }
                    Some(_) => {
                        default_values.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        _ => problem(
            "default_values".into(),
            "must be an object of field → value".into(),
        ),
    }

    let validation = check_validation(definition.validation, &mut problem);
    let preset = Preset {
        name: name.to_owned(),
        action: definition.action.to_owned(),
        data_classification: definition.data_classification.to_owned(),
        required_fields,
        default_values,
        validation,
    };
    // A default that breaks the preset's own rule would refuse every event relying on it.
    if problems.is_empty() {
        for unmet in preset.check(&preset.defaults()) {
            if preset.default_values.contains_key(&unmet.field) {
                problems.push(FieldError::new(
                    format!("default_values.{}", unmet.field),
                    format!("the default breaks the preset's rule: {}", unmet.message),
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(preset)
    } else {
        Err(problems)
    }
}

/// `{"fields": {"<field>": {"enum", "pattern", "min_length", "max_length"}}}`,
/// each part checked; what is well formed is kept.
fn check_validation(raw: &Value, problem: &mut impl FnMut(String, String)) -> Validation {
    let mut validation = Validation::default();
    let Value::Object(top) = raw else {
        problem(
            "validation".into(),
            "must be an object: {\"fields\": {\"<field>\": {rules}}}".into(),
        );
        return validation;
    };
    for key in top.keys().filter(|key| *key != "fields") {
        problem(
            format!("validation.{key}"),
            "unknown key: rules go under `fields`".into(),
        );
    }
    let fields = match top.get("fields") {
        None => return validation,
        Some(Value::Object(fields)) => fields,
        Some(_) => {
            problem(
                "validation.fields".into(),
                "must be an object of field → rules".into(),
            );
            return validation;
        }
    };
    for (field, rules) in fields {
        let at = |part: &str| format!("validation.fields.{field}{part}");
        if !is_checkable_field(field) {
            problem(
                at(""),
                format!("`{field}` is not an event field (nor `details.<key>`)"),
            );
            continue;
        }
        let Value::Object(rules) = rules else {
            problem(
                at(""),
                "must be an object of rules (enum, pattern, min_length, max_length)".into(),
            );
            continue;
        };
        let mut rule = FieldRule::default();
        for (name, value) in rules {
            match name.as_str() {
                "enum" => match value.as_array().map(|items| {
                    items
                        .iter()
                        .map(|item| item.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                }) {
                    Some(Some(allowed)) if !allowed.is_empty() => rule.one_of = Some(allowed),
                    _ => problem(at(".enum"), "must be a non-empty array of strings".into()),
                },
                "pattern" => match value.as_str() {
                    None => problem(
                        at(".pattern"),
                        "must be a string (a regular expression)".into(),
                    ),
                    Some(pattern) => match regex::RegexBuilder::new(pattern)
                        .size_limit(MAX_PATTERN_BYTES)
                        .build()
                    {
                        Ok(_) => rule.pattern = Some(pattern.to_owned()),
                        Err(error) => problem(
                            at(".pattern"),
                            format!("not a valid regular expression: {error}"),
                        ),
                    },
                },
                "min_length" | "max_length" => {
                    match value.as_u64().and_then(|n| usize::try_from(n).ok()) {
                        None => problem(
                            at(&format!(".{name}")),
                            "must be a non-negative integer".into(),
                        ),
                        Some(n) if name == "min_length" => rule.min_length = Some(n),
                        Some(n) => rule.max_length = Some(n),
                    }
                }
                other => problem(
                    at(&format!(".{other}")),
                    "unknown rule: use enum, pattern, min_length or max_length".into(),
                ),
            }
        }
        if let (Some(min), Some(max)) = (rule.min_length, rule.max_length) {
            if min > max {
                problem(
                    at(".min_length"),
                    format!("must not exceed max_length ({max})"),
                );
            }
        }
        validation.fields.insert(field.clone(), rule);
    }
    validation
}
