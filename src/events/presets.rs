//! Presets (`audit_preset`): named defaults and rules for a kind of event. An
//! event naming a preset gets the preset's default values for the fields it
//! leaves out, and must then meet the preset's required fields and rules.
//!
//! `validation` holds per-field rules:
//! `{"fields": {"<field>": {"enum": [..], "pattern": "<regex>", "min_length": n, "max_length": n}}}`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

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

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Validation {
    #[serde(default)]
    pub fields: HashMap<String, FieldRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FieldRule {
    #[serde(rename = "enum")]
    pub one_of: Option<Vec<String>>,
    pub pattern: Option<String>,
    pub min_length: Option<usize>,
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
