//! Alert rules: their definition (the same in `config.toml` and over
//! `/v1/alert-rules`), its validation, and the compiled form the AlertActor
//! matches events against.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use wildmatch::WildMatch;

use super::model::{AlertType, Severity};
use crate::config::ConfigError;
use crate::events::NewEvent;
use crate::validation::FieldError;

/// The event fields a rule can test and group by, besides `details.<path>`.
pub const FIELDS: [&str; 8] = [
    "action",
    "status",
    "data_classification",
    "principal_id",
    "target_resource_type",
    "target_resource_id",
    "retention_policy",
    "correlation_id",
];
const DETAILS_PREFIX: &str = "details.";
const MAX_NAME_CHARS: usize = 100;
const MAX_PATTERN_CHARS: usize = 255;
const MAX_PATTERNS: usize = 50;
const MAX_TITLE_CHARS: usize = 500;
const MAX_THRESHOLD: u32 = 1_000_000;
/// The longest window: hits are kept this long at most.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_COOLDOWN: Duration = Duration::from_secs(30 * 24 * 3600);
/// Cooldown after a resolution when the rule names none.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// At least `threshold` matching events of one group within `window`.
    Threshold,
    /// Every matching event.
    Match,
}

/// A field's accepted values: one pattern or any of several. `*` matches any
/// run of characters (`gdpr.*`), `?` any one; otherwise the comparison is exact.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Condition {
    One(String),
    Any(Vec<String>),
}

impl Condition {
    fn patterns(&self) -> &[String] {
        match self {
            Condition::One(pattern) => std::slice::from_ref(pattern),
            Condition::Any(patterns) => patterns,
        }
    }
}

/// A rule as configured: what it looks for, and the alert it raises.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleDefinition {
    /// Unique per organization: letters, digits, `-`, `_` and `.`; 1 to 100 characters.
    pub name: String,
    pub kind: RuleKind,
    /// Every condition must hold (an absent field never matches). Keys: one of
    /// [`FIELDS`] or `details.<key>[.<key>...]`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub when: BTreeMap<String, Condition>,
    /// Threshold rules: how many matching events of one group fire it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// Threshold rules: the sliding window, e.g. "10m" (inclusive at both ends).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "10m")]
    pub window: Option<Duration>,
    /// Events are counted, and alerts deduplicated, per value of this field;
    /// an event without it is ignored by the rule. Absent: one group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    pub severity: Severity,
    #[serde(rename = "type")]
    pub alert_type: AlertType,
    /// After its alert is resolved, the rule stays silent for the same group
    /// this long (default 15m).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "15m")]
    pub cooldown: Option<Duration>,
    /// The alert's title; a description of the rule when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A disabled rule is kept but not evaluated.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// The rules of `config.toml` (`alerts.rules`), read and checked. The first
/// problem is the error, naming its key as every configuration error does
/// (`alerts.rules[2].threshold`); two rules may not share a name.
pub fn configured(rules: &[Value]) -> Result<Vec<RuleDefinition>, ConfigError> {
    let mut names = HashSet::new();
    let mut definitions = Vec::with_capacity(rules.len());
    for (index, value) in rules.iter().enumerate() {
        let key = format!("alerts.rules[{index}]");
        let definition: RuleDefinition =
            serde_path_to_error::deserialize(value).map_err(|error| {
                let path = error.path().to_string();
                let key = if path == "." {
                    key.clone()
                } else {
                    format!("{key}.{path}")
                };
                ConfigError::Invalid(format!("key `{key}`: {}", error.inner()))
            })?;
        if let Some(problem) = definition.problems(&format!("{key}.")).into_iter().next() {
            return Err(ConfigError::Invalid(format!(
                "key `{}`: {}",
                problem.field, problem.message
            )));
        }
        if !names.insert(definition.name.clone()) {
            return Err(ConfigError::Invalid(format!(
                "key `{key}.name`: another rule is named {}",
                definition.name
            )));
        }
        definitions.push(definition);
    }
    Ok(definitions)
}

impl RuleDefinition {
    /// Every problem, each naming its field (under `prefix`, e.g. `alerts.rules[2].`).
    pub fn problems(&self, prefix: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut problem = |field: &str, message: String| {
            errors.push(FieldError::new(format!("{prefix}{field}"), message))
        };
        let name_ok = (1..=MAX_NAME_CHARS).contains(&self.name.chars().count())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            problem(
                "name",
                format!("1 to {MAX_NAME_CHARS} letters, digits, '-', '_' or '.'"),
            );
        }
        for (field, condition) in &self.when {
            if !known_field(field) {
                problem(
                    &format!("when.{field}"),
                    format!(
                        "not a field a rule can test: one of {} or details.<key>",
                        FIELDS.join(", ")
                    ),
                );
            }
            let patterns = condition.patterns();
            if patterns.is_empty()
                || patterns.len() > MAX_PATTERNS
                || patterns
                    .iter()
                    .any(|p| p.is_empty() || p.chars().count() > MAX_PATTERN_CHARS)
            {
                problem(
                    &format!("when.{field}"),
                    format!("1 to {MAX_PATTERNS} patterns of 1 to {MAX_PATTERN_CHARS} characters"),
                );
            }
        }
        if let Some(group_by) = &self.group_by {
            if !known_field(group_by) {
                problem(
                    "group_by",
                    format!("one of {} or details.<key>", FIELDS.join(", ")),
                );
            }
        }
        match self.kind {
            RuleKind::Threshold => {
                if !self
                    .threshold
                    .is_some_and(|t| (1..=MAX_THRESHOLD).contains(&t))
                {
                    problem(
                        "threshold",
                        format!("required for a threshold rule: 1 to {MAX_THRESHOLD}"),
                    );
                }
                if !self
                    .window
                    .is_some_and(|w| w >= Duration::from_secs(1) && w <= MAX_WINDOW)
                {
                    problem(
                        "window",
                        "required for a threshold rule: from 1s to 7days".to_owned(),
                    );
                }
            }
            RuleKind::Match => {
                if self.threshold.is_some() {
                    problem("threshold", "only threshold rules have one".to_owned());
                }
                if self.window.is_some() {
                    problem("window", "only threshold rules have one".to_owned());
                }
            }
        }
        if self.cooldown.is_some_and(|c| c > MAX_COOLDOWN) {
            problem("cooldown", "at most 30days".to_owned());
        }
        if self
            .title
            .as_ref()
            .is_some_and(|t| t.trim().is_empty() || t.chars().count() > MAX_TITLE_CHARS)
        {
            problem(
                "title",
                format!("1 to {MAX_TITLE_CHARS} characters, not only blanks"),
            );
        }
        errors
    }
}

fn known_field(name: &str) -> bool {
    FIELDS.contains(&name)
        || name
            .strip_prefix(DETAILS_PREFIX)
            .is_some_and(|path| !path.is_empty() && path.split('.').all(|key| !key.is_empty()))
}

/// Where a rule reads a value from an event.
#[derive(Debug, Clone)]
enum Field {
    Action,
    Status,
    DataClassification,
    PrincipalId,
    TargetResourceType,
    TargetResourceId,
    RetentionPolicy,
    CorrelationId,
    Details(Vec<String>),
}

impl Field {
    /// `name` has passed validation.
    fn parse(name: &str) -> Self {
        match name {
            "action" => Field::Action,
            "status" => Field::Status,
            "data_classification" => Field::DataClassification,
            "principal_id" => Field::PrincipalId,
            "target_resource_type" => Field::TargetResourceType,
            "target_resource_id" => Field::TargetResourceId,
            "retention_policy" => Field::RetentionPolicy,
            "correlation_id" => Field::CorrelationId,
            other => Field::Details(
                other
                    .strip_prefix(DETAILS_PREFIX)
                    .unwrap_or(other)
                    .split('.')
                    .map(str::to_owned)
                    .collect(),
            ),
        }
    }

    fn value<'a>(&self, event: &'a NewEvent) -> Option<Cow<'a, str>> {
        let text = |s: &'a str| Some(Cow::Borrowed(s));
        match self {
            Field::Action => text(&event.action),
            Field::Status => text(&event.status),
            Field::DataClassification => text(&event.data_classification),
            Field::PrincipalId => text(&event.principal_id),
            Field::TargetResourceType => event.target_resource_type.as_deref().and_then(text),
            Field::TargetResourceId => event.target_resource_id.as_deref().and_then(text),
            Field::RetentionPolicy => text(&event.retention_policy),
            Field::CorrelationId => event.correlation_id.as_deref().and_then(text),
            Field::Details(path) => {
                let value = path
                    .iter()
                    .try_fold(event.details.as_ref()?, |value, key| value.get(key))?;
                match value {
                    Value::String(s) => Some(Cow::Borrowed(s.as_str())),
                    Value::Number(n) => Some(Cow::Owned(n.to_string())),
                    Value::Bool(b) => Some(Cow::Owned(b.to_string())),
                    _ => None,
                }
            }
        }
    }
}

/// A validated rule ready to match: its patterns parsed once.
#[derive(Debug)]
pub struct CompiledRule {
    /// `config:<name>` for rules from `config.toml`, `org:<id>` for an organization's own.
    pub id: String,
    pub definition: RuleDefinition,
    conditions: Vec<(Field, Vec<WildMatch>)>,
    group_by: Option<Field>,
}

impl CompiledRule {
    /// `definition` must have passed [`RuleDefinition::problems`].
    pub fn new(id: String, definition: RuleDefinition) -> Self {
        let conditions = definition
            .when
            .iter()
            .map(|(field, condition)| {
                (
                    Field::parse(field),
                    condition
                        .patterns()
                        .iter()
                        .map(|p| WildMatch::new(p))
                        .collect(),
                )
            })
            .collect();
        let group_by = definition.group_by.as_deref().map(Field::parse);
        Self {
            id,
            definition,
            conditions,
            group_by,
        }
    }

    /// The group the event counts in, if the rule matches it.
    pub fn group_of(&self, event: &NewEvent) -> Option<String> {
        let matches = self.conditions.iter().all(|(field, patterns)| {
            field
                .value(event)
                .is_some_and(|value| patterns.iter().any(|p| p.matches(&value)))
        });
        if !matches {
            return None;
        }
        match &self.group_by {
            None => Some(String::new()),
            Some(field) => field.value(event).map(Cow::into_owned),
        }
    }

    pub fn cooldown(&self) -> Duration {
        self.definition.cooldown.unwrap_or(DEFAULT_COOLDOWN)
    }

    /// The alert's title for `group`.
    pub fn title(&self, group: &str) -> String {
        if let Some(title) = &self.definition.title {
            return title.clone();
        }
        let definition = &self.definition;
        let subject = match (&definition.group_by, group) {
            (Some(field), group) => format!(" for {field} {group}"),
            (None, _) => String::new(),
        };
        let text = match (definition.kind, definition.threshold, definition.window) {
            (RuleKind::Threshold, Some(threshold), Some(window)) => format!(
                "{}: {threshold} or more matching events{subject} within {}",
                definition.name,
                humantime::format_duration(window)
            ),
            _ => format!("{}: matching event{subject}", definition.name),
        };
        text.chars().take(MAX_TITLE_CHARS).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, status: &str, details: Option<Value>) -> NewEvent {
        NewEvent {
            organization_id: "org".into(),
            timestamp: chrono::Utc::now(),
            ttl: None,
            principal_id: "user-1".into(),
            principal_commitment: String::new(),
            action: action.into(),
            target_resource_type: None,
            target_resource_id: None,
            target_resource_commitment: None,
            status: status.into(),
            outcome_description: None,
            event_version: "1.0".into(),
            correlation_id: None,
            data_classification: "PHI".into(),
            retention_policy: "standard".into(),
            idempotency_key: None,
            details,
            hash: String::new(),
        }
    }

    fn rule(json: Value) -> RuleDefinition {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn patterns_any_of_and_details_paths_match() {
        let definition = rule(serde_json::json!({
            "name": "gdpr", "kind": "match", "severity": "LOW", "type": "COMPLIANCE",
            "when": {"action": "gdpr.*", "status": ["failure", "denied"], "details.client.app": "portal"},
            "group_by": "details.client.app"
        }));
        assert!(definition.problems("").is_empty());
        let compiled = CompiledRule::new("config:gdpr".into(), definition);
        let details = Some(serde_json::json!({"client": {"app": "portal"}}));
        assert_eq!(
            compiled.group_of(&event("gdpr.data.export", "denied", details.clone())),
            Some("portal".into())
        );
        assert_eq!(
            compiled.group_of(&event("gdpr.data.export", "success", details.clone())),
            None
        );
        assert_eq!(
            compiled.group_of(&event("auth.login", "failure", details)),
            None
        );
        assert_eq!(
            compiled.group_of(&event("gdpr.data.export", "failure", None)),
            None
        );
    }

    #[test]
    fn every_problem_names_its_field() {
        let definition = rule(serde_json::json!({
            "name": "bad name", "kind": "threshold", "severity": "HIGH", "type": "SECURITY",
            "when": {"colour": "red", "action": []}, "group_by": "nope", "cooldown": "60days"
        }));
        let fields: Vec<String> = definition
            .problems("rule.")
            .into_iter()
            .map(|e| e.field)
            .collect();
        for expected in [
            "rule.name",
            "rule.when.colour",
            "rule.when.action",
            "rule.group_by",
            "rule.threshold",
            "rule.window",
            "rule.cooldown",
        ] {
            assert!(
                fields.iter().any(|f| f == expected),
                "{expected} missing from {fields:?}"
            );
        }
    }
}
