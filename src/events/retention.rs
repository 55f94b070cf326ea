//! Retention policies: how long an organization keeps its events, when they
//! are archived and when deleted. Four built-in policies live here, in code,
//! rather than as rows: every organization has them without a migration or a
//! seed step, and changing a default is a code change that is reviewed. An
//! organization overrides a built-in by saving its own policy under the same
//! name, and gets the built-in back by deleting that row.
//!
//! Pure logic, no I/O: `db::retention` feeds it the organization's rows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::CLASSIFICATIONS;
use crate::validation::FieldError;

/// The policy an event gets when it names none (see [`super::prepare`]).
pub const DEFAULT_POLICY: &str = "standard";

/// Longest policy name: the `policy_name` column is `varchar(100)`.
const MAX_NAME_CHARS: usize = 100;
/// Longest description; the column is `text`, this only bounds what a client may store.
const MAX_DESCRIPTION_CHARS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RetentionPolicy {
    /// The row's id; `None` for a built-in that the organization has not overridden.
    pub id: Option<i64>,
    /// What events name in `retention_policy`; unique within the organization.
    pub policy_name: String,
    /// Days an event is kept in all.
    pub retention_days: i32,
    /// Days after which an event moves to archive storage; never archived when absent.
    pub archive_after_days: Option<i32>,
    /// Days after which an archived event is deleted for good; kept when absent.
    pub delete_after_days: Option<i32>,
    /// PUBLIC, INTERNAL, CONFIDENTIAL or PHI: events of this classification that
    /// name no active policy fall back to this one.
    pub data_classification: String,
    pub description: Option<String>,
    /// An inactive policy applies to no event; overriding a built-in with an
    /// inactive policy is how an organization switches that built-in off.
    pub is_active: bool,
    /// Whether this is a built-in default rather than one of the organization's rows.
    pub built_in: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
}

/// The built-in policies, by name.
pub fn built_in_policies() -> Vec<RetentionPolicy> {
    let policy =
        |name: &str, classification: &str, retention, archive, delete, description: &str| {
            RetentionPolicy {
                id: None,
                policy_name: name.to_owned(),
                retention_days: retention,
                archive_after_days: Some(archive),
                delete_after_days: Some(delete),
                data_classification: classification.to_owned(),
                description: Some(description.to_owned()),
                is_active: true,
                built_in: true,
                created_at: None,
                updated_at: None,
                created_by: None,
            }
        };
    vec![
        policy(
            "confidential",
            "CONFIDENTIAL",
            1825,
            365,
            1825,
            "Confidential data: five years, archived after one",
        ),
        policy(
            "minimal",
            "PUBLIC",
            90,
            30,
            90,
            "Public data: ninety days, archived after thirty",
        ),
        policy(
            "phi_extended",
            "PHI",
            2555,
            365,
            2555,
            "Protected health information: seven years, archived after one",
        ),
        policy(
            DEFAULT_POLICY,
            "INTERNAL",
            2555,
            365,
            2555,
            "The default for events that name no policy: seven years, archived after one",
        ),
    ]
}

/// An organization's effective policies: its own, plus each built-in whose name
/// it has not taken (even by an inactive policy), sorted by name.
pub fn effective(own: Vec<RetentionPolicy>) -> Vec<RetentionPolicy> {
    let defaults: Vec<RetentionPolicy> = built_in_policies()
        .into_iter()
        .filter(|default| {
            !own.iter()
                .any(|policy| policy.policy_name == default.policy_name)
        })
        .collect();
    let mut policies = own;
    policies.extend(defaults);
    policies.sort_by(|a, b| a.policy_name.cmp(&b.policy_name));
    policies
}

/// The policy that governs an event naming policy `name` with
/// `classification`, among an organization's effective `policies`: the active
/// policy of that name, else an active policy for the classification. Among
/// several for one classification the longest retention wins (then the name,
/// so the choice is stable): an event deleted too early cannot be brought
/// back, one kept too long can still be deleted. `None`: no active policy
/// applies, and the event is to be kept.
pub fn policy_for<'a>(
    policies: &'a [RetentionPolicy],
    name: &str,
    classification: &str,
) -> Option<&'a RetentionPolicy> {
    let active = || policies.iter().filter(|policy| policy.is_active);
    active()
        .find(|policy| policy.policy_name == name)
        .or_else(|| {
            active()
                .filter(|policy| policy.data_classification == classification)
                .max_by(|a, b| {
                    a.retention_days
                        .cmp(&b.retention_days)
                        .then_with(|| b.policy_name.cmp(&a.policy_name))
                })
        })
}

impl RetentionPolicy {
    /// Every field a client got wrong, each named; empty when the policy can be saved.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let name_ok = (1..=MAX_NAME_CHARS).contains(&self.policy_name.chars().count())
            && self
                .policy_name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !name_ok {
            errors.push(FieldError::new(
                "policy_name",
                format!("1 to {MAX_NAME_CHARS} lower-case letters, digits or `_`"),
            ));
        }
        if self.retention_days < 1 {
            errors.push(FieldError::new("retention_days", "at least 1"));
        }
        // The schema allows 0 here: archive as soon as possible.
        match self.archive_after_days {
            Some(days) if days < 0 => {
                errors.push(FieldError::new("archive_after_days", "at least 0"));
            }
            Some(days) if days > self.retention_days => errors.push(FieldError::new(
                "archive_after_days",
                format!(
                    "at most retention_days ({}): an event is archived before its retention ends",
                    self.retention_days
                ),
            )),
            _ => {}
        }
        match (self.delete_after_days, self.archive_after_days) {
            (Some(days), _) if days < 1 => {
                errors.push(FieldError::new("delete_after_days", "at least 1"));
            }
            (Some(delete), Some(archive)) if delete < archive => {
                errors.push(FieldError::new(
                    "delete_after_days",
                    format!(
                        "at least archive_after_days ({archive}): an event is deleted after it is archived"
                    ),
                ));
            }
            _ => {}
        }
        if !CLASSIFICATIONS.contains(&self.data_classification.as_str()) {
            errors.push(FieldError::new(
                "data_classification",
                format!("one of {}", CLASSIFICATIONS.join(", ")),
            ));
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
        {
            errors.push(FieldError::new(
                "description",
                format!("at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(name: &str, classification: &str, retention_days: i32) -> RetentionPolicy {
        RetentionPolicy {
            id: Some(1),
            policy_name: name.to_owned(),
            retention_days,
            archive_after_days: None,
            delete_after_days: None,
            data_classification: classification.to_owned(),
            description: None,
            is_active: true,
            built_in: false,
            created_at: None,
            updated_at: None,
            created_by: None,
        }
    }

    fn names(policies: &[RetentionPolicy]) -> Vec<&str> {
        policies.iter().map(|p| p.policy_name.as_str()).collect()
    }

    fn fields(policy: &RetentionPolicy) -> Vec<String> {
        policy.problems().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn an_organization_without_rows_has_the_four_built_ins() {
        let policies = effective(Vec::new());
        assert_eq!(
            names(&policies),
            ["confidential", "minimal", "phi_extended", "standard"]
        );
        assert!(policies.iter().all(|p| p.built_in && p.id.is_none()));
        let standard = &policies[3];
        assert_eq!(standard.data_classification, "INTERNAL");
        assert_eq!(
            (
                standard.retention_days,
                standard.archive_after_days,
                standard.delete_after_days
            ),
            (2555, Some(365), Some(2555))
        );
    }

    #[test]
    fn an_own_policy_hides_the_built_in_of_that_name_even_when_inactive() {
        let mut switched_off = own("minimal", "PUBLIC", 30);
        switched_off.is_active = false;
        let policies = effective(vec![own("standard", "INTERNAL", 3650), switched_off]);
        assert_eq!(
            names(&policies),
            ["confidential", "minimal", "phi_extended", "standard"]
        );
        assert!(!policies[1].built_in && !policies[1].is_active);
        assert!(!policies[3].built_in);
        assert_eq!(policies[3].retention_days, 3650);
    }

    #[test]
    fn own_policies_join_the_built_ins_in_name_order() {
        let policies = effective(vec![own("zz_logs", "PUBLIC", 7), own("audit_7y", "PHI", 9)]);
        assert_eq!(
            names(&policies),
            [
                "audit_7y",
                "confidential",
                "minimal",
                "phi_extended",
                "standard",
                "zz_logs"
            ]
        );
    }

    #[test]
    fn an_event_gets_the_active_policy_it_names() {
        let policies = effective(vec![own("short", "PHI", 30)]);
        let found = policy_for(&policies, "short", "INTERNAL").unwrap();
        assert_eq!(found.policy_name, "short");
        let found = policy_for(&policies, DEFAULT_POLICY, "PHI").unwrap();
        assert_eq!(found.policy_name, "standard");
    }

    #[test]
    fn an_unknown_or_inactive_name_falls_back_to_the_classification() {
        let mut inactive = own("paused", "INTERNAL", 10);
        inactive.is_active = false;
        let policies = effective(vec![inactive]);
        assert_eq!(
            policy_for(&policies, "paused", "PHI").unwrap().policy_name,
            "phi_extended"
        );
        assert_eq!(
            policy_for(&policies, "no_such_policy", "PUBLIC")
                .unwrap()
                .policy_name,
            "minimal"
        );
    }

    #[test]
    fn among_several_for_a_classification_the_longest_retention_wins() {
        let policies = effective(vec![
            own("phi_short", "PHI", 30),
            own("phi_long", "PHI", 3650),
            own("phi_long_too", "PHI", 3650),
        ]);
        assert_eq!(
            policy_for(&policies, "unknown", "PHI").unwrap().policy_name,
            "phi_long",
            "ties go to the first name"
        );
    }

    #[test]
    fn no_policy_applies_when_nothing_active_matches() {
        let mut off = own("standard", "INTERNAL", 1);
        off.is_active = false;
        let policies = effective(vec![off]);
        assert!(policy_for(&policies, "standard", "INTERNAL").is_none());
        assert!(policy_for(&policies, "standard", "SECRET").is_none());
    }

    #[test]
    fn the_built_ins_are_valid() {
        for policy in built_in_policies() {
            assert!(policy.problems().is_empty(), "{}", policy.policy_name);
        }
    }

    #[test]
    fn each_invalid_field_is_named() {
        let mut policy = own("Bad-Name", "SECRET", 0);
        policy.archive_after_days = Some(-1);
        policy.delete_after_days = Some(0);
        policy.description = Some("x".repeat(10_001));
        assert_eq!(
            fields(&policy),
            [
                "policy_name",
                "retention_days",
                "archive_after_days",
                "delete_after_days",
                "data_classification",
                "description"
            ]
        );
        policy.policy_name = "x".repeat(101);
        assert!(fields(&policy).contains(&"policy_name".to_owned()));
        policy.policy_name = String::new();
        assert!(fields(&policy).contains(&"policy_name".to_owned()));
    }

    #[test]
    fn archiving_falls_within_retention_and_deletion_follows_archiving() {
        let mut policy = own("p_1", "PUBLIC", 90);
        policy.archive_after_days = Some(91);
        assert_eq!(fields(&policy), ["archive_after_days"]);
        policy.archive_after_days = Some(60);
        policy.delete_after_days = Some(59);
        assert_eq!(fields(&policy), ["delete_after_days"]);
        policy.delete_after_days = Some(60);
        assert!(fields(&policy).is_empty());
        policy.archive_after_days = Some(0);
        policy.delete_after_days = None;
        assert!(fields(&policy).is_empty(), "0 archives at once");
    }
}
