//! What makes a report template or a scheduled report valid. A request gives
//! some fields; what it leaves out comes from what exists (a change) and, for
//! a report made from a template, from the template; each field is checked,
//! and either the fields to store come out or every refused field, named.
//!
//! Nothing here reads the database: what a report names (its template, its
//! destinations) is looked up by the caller and handed in as [`Found`].

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::criteria::Criteria;
use super::schedule::Schedule;
use super::{Format, ReportType};
use crate::db::reports::{ReportFields, ScheduledReport, Template, TemplateFields};
use crate::validation::FieldError;

/// Most destinations a report is delivered to.
pub const MAX_DESTINATIONS: usize = 20;
/// Most tags on a template.
pub const MAX_TAGS: usize = 50;

// --- Templates -------------------------------------------------------------

/// A template as a request gives it; `None` where it leaves a field out.
#[derive(Debug, Default)]
pub struct TemplateInput {
    pub name: Option<String>,
    pub description: Option<String>,
    pub report_type: Option<String>,
    pub default_criteria: Option<Value>,
    pub default_format: Option<String>,
    pub default_export_config: Option<Value>,
    pub tags: Option<Vec<String>>,
    pub is_active: Option<bool>,
}

/// A valid template, as it is stored.
#[derive(Debug, PartialEq)]
pub struct TemplateDefinition {
    pub name: String,
    pub description: Option<String>,
    pub report_type: String,
    /// In the stored form of [`Criteria`].
    pub default_criteria: Value,
    pub default_format: String,
    pub default_export_config: Value,
    pub tags: Vec<String>,
    pub is_active: bool,
}

impl TemplateDefinition {
    pub fn fields(&self) -> TemplateFields<'_> {
        TemplateFields {
            name: &self.name,
            description: self.description.as_deref(),
            report_type: &self.report_type,
            default_criteria: &self.default_criteria,
            default_format: &self.default_format,
            default_export_config: &self.default_export_config,
            tags: &self.tags,
            is_active: self.is_active,
        }
    }
}

/// Validates `input` over `existing` (a change) or nothing (a new template).
pub fn template(
    input: TemplateInput,
    existing: Option<&Template>,
) -> Result<TemplateDefinition, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = input.name.or_else(|| existing.map(|t| t.name.clone()));
    check_name(name.as_deref(), &mut errors);
    let description = input
        .description
        .or_else(|| existing.and_then(|t| t.description.clone()));
    check_description(description.as_deref(), &mut errors);
    let type_name = input
        .report_type
        .or_else(|| existing.map(|t| t.report_type.clone()));
    let kind = report_type("report_type", type_name.as_deref(), &mut errors);
    let raw_criteria = input
        .default_criteria
        .or_else(|| existing.map(|t| t.default_criteria.clone()))
        .unwrap_or(Value::Null);
    let mut criteria_errors = Vec::new();
    let default_criteria = criteria(&raw_criteria, kind, &mut criteria_errors);
    // The criteria's errors name `criteria.*`; here the field is default_criteria.
    errors.extend(criteria_errors.into_iter().map(|mut error| {
        error.field = error.field.replacen("criteria", "default_criteria", 1);
        error
    }));
    let default_format = input
        .default_format
        .or_else(|| existing.map(|t| t.default_format.clone()))
        .unwrap_or_else(|| "json".into());
    format("default_format", &default_format, &mut errors);
    let default_export_config = input
        .default_export_config
        .or_else(|| existing.map(|t| t.default_export_config.clone()))
        .unwrap_or_else(|| Value::Object(Default::default()));
    if !default_export_config.is_object() {
        errors.push(FieldError::new(
            "default_export_config",
            "must be an object",
        ));
    }
    let tags = match input.tags {
        Some(tags) => tags,
        None => existing
            .and_then(|t| serde_json::from_value(t.tags.clone()).ok())
            .unwrap_or_default(),
    };
    check_tags(&tags, &mut errors);
    match (name, type_name, default_criteria) {
        (Some(name), Some(report_type), Some(default_criteria)) if errors.is_empty() => {
            Ok(TemplateDefinition {
                name,
                description,
                report_type,
                default_criteria,
                default_format,
                default_export_config,
                tags,
                is_active: input
                    .is_active
                    .or(existing.map(|t| t.is_active))
                    .unwrap_or(true),
            })
        }
        _ => Err(errors),
    }
}

fn check_tags(tags: &[String], errors: &mut Vec<FieldError>) {
    if tags.len() > MAX_TAGS || tags.iter().any(|t| t.is_empty() || t.chars().count() > 100) {
        errors.push(FieldError::new(
            "tags",
            format!("at most {MAX_TAGS} tags of 1 to 100 characters"),
        ));
    }
}

// --- Scheduled reports -----------------------------------------------------

/// When a report runs, as a request gives it.
#[derive(Debug)]
pub struct ScheduleInput {
    pub cron: String,
    /// `UTC` when left out.
    pub timezone: Option<String>,
}

/// A scheduled report as a request gives it; `None` where it leaves a field
/// out.
#[derive(Debug, Default)]
pub struct ReportInput {
    pub name: Option<String>,
    pub description: Option<String>,
    pub template_id: Option<Uuid>,
    pub report_type: Option<String>,
    pub criteria: Option<Value>,
    pub format: Option<String>,
    pub schedule: Option<ScheduleInput>,
    pub destination_ids: Option<Vec<i64>>,
    pub enabled: Option<bool>,
}

impl ReportInput {
    /// The destinations the report will list: the request's, else the
    /// existing report's.
    fn destinations(&self, existing: Option<&ScheduledReport>) -> Vec<i64> {
        self.destination_ids
            .clone()
            .or_else(|| existing.map(|r| r.destination_ids.clone()))
            .unwrap_or_default()
    }

    /// The destinations whose existence [`report`] needs to know: those the
    /// report will list, unless there are more than it may have (they are
    /// then refused unread).
    pub fn destinations_to_find(&self, existing: Option<&ScheduledReport>) -> Vec<i64> {
        let ids = self.destinations(existing);
        if ids.len() > MAX_DESTINATIONS {
            Vec::new()
        } else {
            ids
        }
    }
}

/// What the database holds of what a report names.
#[derive(Debug, Default)]
pub struct Found {
    /// The template the request's `template_id` names, if it exists.
    pub template: Option<Template>,
    /// Those of [`ReportInput::destinations_to_find`] that exist.
    pub destination_ids: Vec<i64>,
}

/// A valid scheduled report, as it is stored.
#[derive(Debug, PartialEq)]
pub struct ReportDefinition {
    pub name: String,
    pub description: Option<String>,
    pub template_id: Option<Uuid>,
    pub report_type: String,
    /// In the stored form of [`Criteria`].
    pub criteria: Value,
    pub format: String,
    /// `{"cron", "timezone"}`.
    pub schedule: Value,
    pub destination_ids: Vec<i64>,
    pub enabled: bool,
    /// The slot it runs at next; `None` while disabled.
    pub next_run: Option<DateTime<Utc>>,
}

impl ReportDefinition {
    pub fn fields(&self) -> ReportFields<'_> {
        ReportFields {
            name: &self.name,
            description: self.description.as_deref(),
            template_id: self.template_id,
            report_type: &self.report_type,
            criteria: &self.criteria,
            format: &self.format,
            schedule: &self.schedule,
            destination_ids: &self.destination_ids,
            enabled: self.enabled,
            next_run: self.next_run,
        }
    }
}

/// Validates `input` over `existing` (a change) or nothing (a new report),
/// with what the database holds of what it names; `now` places the next run.
pub fn report(
    input: ReportInput,
    existing: Option<&ScheduledReport>,
    found: Found,
    now: DateTime<Utc>,
) -> Result<ReportDefinition, Vec<FieldError>> {
    let mut errors = Vec::new();
    let destination_ids = input.destinations(existing);
    let template = active_template(input.template_id, found.template, &mut errors);
    let template_id = input.template_id.or(existing.and_then(|r| r.template_id));
    let name = input.name.or_else(|| existing.map(|r| r.name.clone()));
    check_name(name.as_deref(), &mut errors);
    let description = input
        .description
        .or_else(|| existing.and_then(|r| r.description.clone()))
        .or_else(|| template.as_ref().and_then(|t| t.description.clone()));
    check_description(description.as_deref(), &mut errors);
    let type_name = input
        .report_type
        .or_else(|| existing.map(|r| r.report_type.clone()))
        .or_else(|| template.as_ref().map(|t| t.report_type.clone()));
    let kind = report_type("report_type", type_name.as_deref(), &mut errors);
    let raw_criteria = input
        .criteria
        .or_else(|| existing.map(|r| r.criteria.clone()))
        .or_else(|| template.as_ref().map(|t| t.default_criteria.clone()))
        .unwrap_or(Value::Null);
    let stored_criteria = criteria(&raw_criteria, kind, &mut errors);
    let format_name = input
        .format
        .or_else(|| existing.map(|r| r.format.clone()))
        .or_else(|| template.as_ref().map(|t| t.default_format.clone()))
        .unwrap_or_else(|| "json".into());
    format("format", &format_name, &mut errors);
    let schedule_changed = input.schedule.is_some();
    let (schedule_json, schedule) = parse_schedule(input.schedule, existing, &mut errors);
    check_destinations(&destination_ids, &found.destination_ids, &mut errors);
    let enabled = input
        .enabled
        .or(existing.map(|r| r.enabled))
        .unwrap_or(true);
    let (Some(name), Some(report_type), Some(criteria), Some(schedule), Some(schedule_json)) =
        (name, type_name, stored_criteria, schedule, schedule_json)
    else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ReportDefinition {
        name,
        description,
        template_id,
        report_type,
        criteria,
        format: format_name,
        schedule: schedule_json,
        destination_ids,
        enabled,
        next_run: next_run(existing, enabled, schedule_changed, &schedule, now),
    })
}

/// The template a report is made from, if it names one that exists and is
/// active.
fn active_template(
    id: Option<Uuid>,
    found: Option<Template>,
    errors: &mut Vec<FieldError>,
) -> Option<Template> {
    let id = id?;
    match found {
        Some(template) if template.is_active => Some(template),
        Some(_) => {
            errors.push(FieldError::new("template_id", "the template is not active"));
            None
        }
        None => {
            errors.push(FieldError::new("template_id", format!("no template {id}")));
            None
        }
    }
}

/// The schedule as stored (the request's, else the existing report's) and as
/// parsed.
fn parse_schedule(
    input: Option<ScheduleInput>,
    existing: Option<&ScheduledReport>,
    errors: &mut Vec<FieldError>,
) -> (Option<Value>, Option<Schedule>) {
    let stored = match input {
        Some(schedule) => Some(serde_json::json!({
            "cron": schedule.cron,
            "timezone": schedule.timezone.unwrap_or_else(|| "UTC".into()),
        })),
        None => existing.map(|r| r.schedule.clone()),
    };
    let parsed = match &stored {
        None => {
            errors.push(FieldError::new("schedule", "is required"));
            None
        }
        Some(json) => Schedule::parse(
            "schedule",
            json["cron"].as_str().unwrap_or_default(),
            json["timezone"].as_str().unwrap_or_default(),
        )
        .map_err(|problems| errors.extend(problems))
        .ok(),
    };
    (stored, parsed)
}

/// At most [`MAX_DESTINATIONS`], each listed once, each one that exists.
fn check_destinations(ids: &[i64], found: &[i64], errors: &mut Vec<FieldError>) {
    if ids.len() > MAX_DESTINATIONS {
        errors.push(FieldError::new(
            "destination_ids",
            format!("at most {MAX_DESTINATIONS}"),
        ));
        return;
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            errors.push(FieldError::new(
                format!("destination_ids[{i}]"),
                "listed twice",
            ));
        } else if !found.contains(id) {
            errors.push(FieldError::new(
                format!("destination_ids[{i}]"),
                format!("no destination {id}"),
            ));
        }
    }
}

/// A schedule keeps its pending slot unless it changed or was re-enabled
/// (which then does not catch up the time it was off).
fn next_run(
    existing: Option<&ScheduledReport>,
    enabled: bool,
    schedule_changed: bool,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match existing {
        _ if !enabled => None,
        Some(existing) if !schedule_changed && existing.enabled && existing.next_run.is_some() => {
            existing.next_run
        }
        _ => schedule.next_after(now),
    }
}

// --- Fields shared by templates and reports -----------------------------------

fn check_name(name: Option<&str>, errors: &mut Vec<FieldError>) {
    match name {
        None => errors.push(FieldError::new("name", "is required")),
        Some(name) if name.trim().is_empty() || name.chars().count() > 255 => {
            errors.push(FieldError::new("name", "must be 1 to 255 characters"))
        }
        Some(_) => {}
    }
}

fn check_description(description: Option<&str>, errors: &mut Vec<FieldError>) {
    if description.is_some_and(|d| d.chars().count() > 4000) {
        errors.push(FieldError::new("description", "at most 4000 characters"));
    }
}

fn report_type(
    field: &str,
    value: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<ReportType> {
    match value {
        None => {
            errors.push(FieldError::new(field, "is required"));
            None
        }
        Some(value) => ReportType::parse(value).or_else(|| {
            errors.push(FieldError::new(
                field,
                format!("must be one of {}", ReportType::names()),
            ));
            None
        }),
    }
}

fn format(field: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<Format> {
    Format::parse(value).or_else(|| {
        let hint = if value == "pdf" {
            "pdf is not produced: use html, the human-readable format"
        } else {
            "must be json, csv or html"
        };
        errors.push(FieldError::new(field, hint));
        None
    })
}

/// Validates criteria for `report_type` and returns their stored form.
fn criteria(
    value: &Value,
    report_type: Option<ReportType>,
    errors: &mut Vec<FieldError>,
) -> Option<Value> {
    let report_type = report_type?;
    match Criteria::parse(value, report_type) {
        Ok(criteria) => Some(criteria.to_json()),
        Err(problems) => {
            errors.extend(problems);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 4, 12, 0, 0).unwrap()
    }

    fn stored_template(is_active: bool) -> Template {
        Template {
            id: Uuid::nil(),
            name: "weekly phi".into(),
            description: Some("from the template".into()),
            report_type: "phi_access".into(),
            default_criteria: json!({"time_range": {"last": "7days"}}),
            default_format: "csv".into(),
            default_export_config: json!({"compress": true}),
            tags: json!(["hipaa"]),
            is_active,
            created_at: now(),
            created_by: None,
            updated_at: now(),
            updated_by: None,
        }
    }

    fn stored_report(enabled: bool, next_run: Option<DateTime<Utc>>) -> ScheduledReport {
        ScheduledReport {
            id: Uuid::nil(),
            organization_id: "org".into(),
            name: "daily".into(),
            description: None,
            template_id: None,
            report_type: "access_summary".into(),
            criteria: json!({}),
            format: "json".into(),
            schedule: json!({"cron": "0 6 * * *", "timezone": "UTC"}),
            destination_ids: vec![7],
            enabled,
            last_run: None,
            next_run,
            created_at: now(),
            created_by: None,
            updated_at: now(),
            updated_by: None,
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|error| error.field.as_str()).collect()
    }

    fn message<'a>(errors: &'a [FieldError], field: &str) -> &'a str {
        let error = errors.iter().find(|error| error.field == field);
        &error
            .unwrap_or_else(|| panic!("no error on {field}"))
            .message
    }

    fn schedule(cron: &str) -> Option<ScheduleInput> {
        Some(ScheduleInput {
            cron: cron.into(),
            timezone: None,
        })
    }

    #[test]
    fn a_template_is_stored_with_its_defaults() {
        let input = TemplateInput {
            name: Some("access".into()),
            report_type: Some("access_summary".into()),
            default_criteria: Some(json!({"time_range": {"last": "7d"}, "action": "auth.*"})),
            tags: Some(vec!["soc2".into()]),
            ..Default::default()
        };
        let template = template(input, None).unwrap();
        let criteria = Criteria::parse(
            &json!({"time_range": {"last": "7d"}, "action": "auth.*"}),
            ReportType::AccessSummary,
        )
        .unwrap();
        assert_eq!(
            template,
            TemplateDefinition {
                name: "access".into(),
                description: None,
                report_type: "access_summary".into(),
                default_criteria: criteria.to_json(),
                default_format: "json".into(),
                default_export_config: json!({}),
                tags: vec!["soc2".into()],
                is_active: true,
            }
        );
    }

    #[test]
    fn a_template_change_keeps_what_it_leaves_out() {
        let existing = stored_template(false);
        let input = TemplateInput {
            name: Some("renamed".into()),
            ..Default::default()
        };
        let template = template(input, Some(&existing)).unwrap();
        assert_eq!(template.name, "renamed");
        assert_eq!(template.description, existing.description);
        assert_eq!(template.report_type, "phi_access");
        assert_eq!(template.default_format, "csv");
        assert_eq!(template.default_export_config, json!({"compress": true}));
        assert_eq!(template.tags, ["hipaa"]);
        assert!(!template.is_active);
    }

    #[test]
    fn each_refused_template_field_is_named() {
        let errors = template(TemplateInput::default(), None).unwrap_err();
        assert_eq!(fields(&errors), ["name", "report_type"]);
        assert_eq!(message(&errors, "name"), "is required");
        assert_eq!(message(&errors, "report_type"), "is required");

        let input = TemplateInput {
            name: Some(" ".into()),
            description: Some("d".repeat(4001)),
            report_type: Some("weekly".into()),
            default_format: Some("pdf".into()),
            default_export_config: Some(json!([])),
            tags: Some(vec!["t".into(); MAX_TAGS + 1]),
            ..Default::default()
        };
        let errors = template(input, None).unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "name",
                "description",
                "report_type",
                "default_format",
                "default_export_config",
                "tags"
            ]
        );
        assert_eq!(message(&errors, "name"), "must be 1 to 255 characters");
        assert!(message(&errors, "report_type").starts_with("must be one of access_summary"));
        assert_eq!(
            message(&errors, "default_format"),
            "pdf is not produced: use html, the human-readable format"
        );
        assert_eq!(
            message(&errors, "tags"),
            "at most 50 tags of 1 to 100 characters"
        );

        // The criteria's own errors, under the template's name for them.
        let input = TemplateInput {
            name: Some("x".into()),
            report_type: Some("access_summary".into()),
            default_criteria: Some(json!({"colour": "red"})),
            tags: Some(vec![String::new()]),
            ..Default::default()
        };
        let errors = template(input, None).unwrap_err();
        assert_eq!(fields(&errors), ["default_criteria.colour", "tags"]);
    }

    #[test]
    fn a_report_is_stored_with_its_next_slot() {
        let input = ReportInput {
            name: Some("daily".into()),
            report_type: Some("failed_access".into()),
            criteria: Some(json!({"status": "failure"})),
            schedule: schedule("0 6 * * *"),
            destination_ids: Some(vec![3, 1]),
            ..Default::default()
        };
        assert_eq!(input.destinations_to_find(None), [3, 1]);
        let found = Found {
            template: None,
            destination_ids: vec![1, 3],
        };
        let report = report(input, None, found, now()).unwrap();
        assert_eq!(
            report,
            ReportDefinition {
                name: "daily".into(),
                description: None,
                template_id: None,
                report_type: "failed_access".into(),
                criteria: json!({"status": "failure"}),
                format: "json".into(),
                schedule: json!({"cron": "0 6 * * *", "timezone": "UTC"}),
                destination_ids: vec![3, 1],
                enabled: true,
                next_run: Some(Utc.with_ymd_and_hms(2026, 3, 5, 6, 0, 0).unwrap()),
            }
        );
    }

    #[test]
    fn a_report_takes_what_it_leaves_out_from_its_template() {
        let id = Uuid::from_u128(9);
        let input = ReportInput {
            name: Some("from template".into()),
            template_id: Some(id),
            schedule: schedule("0 6 * * 1"),
            ..Default::default()
        };
        let found = Found {
            template: Some(stored_template(true)),
            destination_ids: Vec::new(),
        };
        let report = report(input, None, found, now()).unwrap();
        assert_eq!(report.template_id, Some(id));
        assert_eq!(report.description.as_deref(), Some("from the template"));
        assert_eq!(report.report_type, "phi_access");
        assert_eq!(report.format, "csv");
        assert_eq!(report.criteria, json!({"time_range": {"last": "7days"}}));
    }

    #[test]
    fn each_refused_report_field_is_named() {
        let missing = Uuid::from_u128(5);
        let input = ReportInput {
            template_id: Some(missing),
            description: Some("d".repeat(4001)),
            report_type: Some("weekly".into()),
            format: Some("xml".into()),
            destination_ids: Some(vec![1, 1, 3]),
            ..Default::default()
        };
        assert_eq!(input.destinations_to_find(None), [1, 1, 3]);
        let found = Found {
            template: None,
            destination_ids: vec![1],
        };
        let errors = report(input, None, found, now()).unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "template_id",
                "name",
                "description",
                "report_type",
                "format",
                "schedule",
                "destination_ids[1]",
                "destination_ids[2]"
            ]
        );
        assert_eq!(
            message(&errors, "template_id"),
            format!("no template {missing}")
        );
        assert_eq!(message(&errors, "format"), "must be json, csv or html");
        assert_eq!(message(&errors, "schedule"), "is required");
        assert_eq!(message(&errors, "destination_ids[1]"), "listed twice");
        assert_eq!(message(&errors, "destination_ids[2]"), "no destination 3");

        let input = ReportInput {
            name: Some("x".into()),
            template_id: Some(missing),
            report_type: Some("access_summary".into()),
            criteria: Some(json!({"colour": "red"})),
            schedule: Some(ScheduleInput {
                cron: "every day".into(),
                timezone: Some("Mars/Olympus".into()),
            }),
            ..Default::default()
        };
        let found = Found {
            template: Some(stored_template(false)),
            destination_ids: Vec::new(),
        };
        let errors = report(input, None, found, now()).unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "template_id",
                "criteria.colour",
                "schedule.cron",
                "schedule.timezone"
            ]
        );
        assert_eq!(
            message(&errors, "template_id"),
            "the template is not active"
        );
    }

    #[test]
    fn too_many_destinations_are_refused_unread() {
        let input = ReportInput {
            name: Some("x".into()),
            report_type: Some("access_summary".into()),
            schedule: schedule("0 6 * * *"),
            destination_ids: Some((1..=MAX_DESTINATIONS as i64 + 1).collect()),
            ..Default::default()
        };
        assert!(input.destinations_to_find(None).is_empty());
        let errors = report(input, None, Found::default(), now()).unwrap_err();
        assert_eq!(fields(&errors), ["destination_ids"]);
        assert_eq!(message(&errors, "destination_ids"), "at most 20");
    }

    #[test]
    fn a_change_keeps_the_pending_slot_unless_the_schedule_changed_or_was_re_enabled() {
        let pending = Some(Utc.with_ymd_and_hms(2026, 3, 4, 6, 0, 0).unwrap());
        let next = Some(Utc.with_ymd_and_hms(2026, 3, 5, 6, 0, 0).unwrap());
        let rename = || ReportInput {
            name: Some("renamed".into()),
            ..Default::default()
        };
        let enabled = stored_report(true, pending);
        assert_eq!(rename().destinations_to_find(Some(&enabled)), [7]);
        let found = || Found {
            template: None,
            destination_ids: vec![7],
        };
        let kept = report(rename(), Some(&enabled), found(), now()).unwrap();
        assert_eq!((kept.next_run, kept.destination_ids), (pending, vec![7]));

        let rescheduled = ReportInput {
            schedule: schedule("0 6 * * *"),
            ..rename()
        };
        let changed = report(rescheduled, Some(&enabled), found(), now()).unwrap();
        assert_eq!(changed.next_run, next);

        let disabled = stored_report(false, None);
        let re_enabled = ReportInput {
            enabled: Some(true),
            ..rename()
        };
        let resumed = report(re_enabled, Some(&disabled), found(), now()).unwrap();
        assert_eq!(resumed.next_run, next);

        let off = ReportInput {
            enabled: Some(false),
            ..rename()
        };
        let stopped = report(off, Some(&enabled), found(), now()).unwrap();
        assert_eq!((stopped.enabled, stopped.next_run), (false, None));
    }
}
