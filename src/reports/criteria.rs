//! A report's criteria: the period it covers and the event filters it applies,
//! as stored in `criteria` (JSON) and validated field by field.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Map, Value};

use super::schedule::{CalendarUnit, Schedule};
use super::ReportType;
use crate::events::{CLASSIFICATIONS, STATUSES};
use crate::validation::{parse_timestamp, FieldError};

/// Longest relative period (`last`).
const MAX_LAST: Duration = Duration::from_secs(5 * 366 * 24 * 3600);
/// The event filters, as the event listing names them.
const FILTERS: [&str; 6] = [
    "action",
    "principal_id",
    "target_resource_type",
    "target_resource_id",
    "status",
    "data_classification",
];

/// The period a run covers.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeRange {
    /// From the schedule's previous slot to this run's slot (the default), so
    /// consecutive runs cover the time without gap or overlap.
    SincePreviousSlot,
    /// `{"last": "7d"}`: the duration before the run's slot.
    Last(Duration),
    /// `{"previous": "day" | "week" | "month"}`: the calendar unit before the
    /// one the slot falls in, in the schedule's time zone.
    Previous(CalendarUnit),
    /// `{"from": ..., "to": ...}`: a fixed period.
    Between {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

/// Event filters: each `None` or a value the event listing accepts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilters {
    /// Exact action, or a prefix when it ends with `*`.
    pub action: Option<String>,
    pub principal_id: Option<String>,
    pub target_resource_type: Option<String>,
    pub target_resource_id: Option<String>,
    pub status: Option<String>,
    pub data_classification: Option<String>,
}

impl EventFilters {
    /// `action` as the two SQL parameters the queries take: exact, or a
    /// `LIKE` pattern for a prefix (with `%`, `_` and `\` escaped).
    pub fn action_parameters(&self) -> (Option<String>, Option<String>) {
        match self.action.as_deref() {
            None => (None, None),
            Some(action) => match action.strip_suffix('*') {
                Some(prefix) => (
                    None,
                    Some(format!(
                        "{}%",
                        prefix
                            .replace('\\', "\\\\")
                            .replace('%', "\\%")
                            .replace('_', "\\_")
                    )),
                ),
                None => (Some(action.to_owned()), None),
            },
        }
    }

    fn is_empty(&self) -> bool {
        *self == EventFilters::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Criteria {
    pub time_range: TimeRange,
    pub filters: EventFilters,
}

impl Criteria {
    /// Validates `value` (an object, or null for the defaults) for a report of
    /// `report_type`; errors name `criteria.<field>`.
    pub fn parse(value: &Value, report_type: ReportType) -> Result<Self, Vec<FieldError>> {
        let empty = Map::new();
        let object = match value {
            Value::Null => &empty,
            Value::Object(object) => object,
            _ => return Err(vec![FieldError::new("criteria", "must be an object")]),
        };
        let mut errors = Vec::new();
        for key in object.keys() {
            if key != "time_range" && !FILTERS.contains(&key.as_str()) {
                errors.push(FieldError::new(
                    format!("criteria.{key}"),
                    format!("unknown; use time_range, {}", FILTERS.join(", ")),
                ));
            }
        }
        let time_range = match object.get("time_range") {
            None | Some(Value::Null) => TimeRange::SincePreviousSlot,
            Some(range) => parse_time_range(range, &mut errors),
        };
        let mut text = |field: &str| -> Option<String> {
            match object.get(field) {
                None | Some(Value::Null) => None,
                Some(Value::String(value)) if !value.is_empty() && value.chars().count() <= 255 => {
                    Some(value.clone())
                }
                Some(_) => {
                    errors.push(FieldError::new(
                        format!("criteria.{field}"),
                        "must be a string of 1 to 255 characters",
                    ));
                    None
                }
            }
        };
        let filters = EventFilters {
            action: text("action"),
            principal_id: text("principal_id"),
            target_resource_type: text("target_resource_type"),
            target_resource_id: text("target_resource_id"),
            status: text("status"),
            data_classification: text("data_classification"),
        };
        if let Some(status) = &filters.status {
            if !STATUSES.contains(&status.as_str()) {
                errors.push(FieldError::new(
                    "criteria.status",
                    format!("must be one of {}", STATUSES.join(", ")),
                ));
            }
        }
        if let Some(classification) = &filters.data_classification {
            if !CLASSIFICATIONS.contains(&classification.as_str()) {
                errors.push(FieldError::new(
                    "criteria.data_classification",
                    format!("must be one of {}", CLASSIFICATIONS.join(", ")),
                ));
            }
        }
        if !report_type.reads_events() && !filters.is_empty() {
            errors.push(FieldError::new(
                "criteria",
                format!(
                    "a {} report reads no events: only time_range applies",
                    report_type.as_str()
                ),
            ));
        }
        if errors.is_empty() {
            Ok(Criteria {
                time_range,
                filters,
            })
        } else {
            Err(errors)
        }
    }

    /// The stored form (what [`parse`](Self::parse) reads back).
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        let range = match &self.time_range {
            TimeRange::SincePreviousSlot => Value::Null,
            TimeRange::Last(duration) => {
                json!({"last": humantime::format_duration(*duration).to_string()})
            }
            TimeRange::Previous(unit) => json!({"previous": unit.as_str()}),
            TimeRange::Between { from, to } => json!({"from": from, "to": to}),
        };
        if !range.is_null() {
            object.insert("time_range".into(), range);
        }
        let filters = &self.filters;
        for (field, value) in FILTERS.iter().zip([
            &filters.action,
            &filters.principal_id,
            &filters.target_resource_type,
            &filters.target_resource_id,
            &filters.status,
            &filters.data_classification,
        ]) {
            if let Some(value) = value {
                object.insert((*field).into(), Value::String(value.clone()));
            }
        }
        Value::Object(object)
    }

    /// The period `[from, to)` of a run at `at` under `schedule`.
    pub fn period(&self, at: DateTime<Utc>, schedule: &Schedule) -> (DateTime<Utc>, DateTime<Utc>) {
        match &self.time_range {
            TimeRange::SincePreviousSlot => {
                let from = schedule
                    .previous_before(at)
                    .unwrap_or(at - TimeDelta::days(1));
                (from, at)
            }
            TimeRange::Last(duration) => (
                at - TimeDelta::from_std(*duration).unwrap_or(TimeDelta::MAX),
                at,
            ),
            TimeRange::Previous(unit) => unit.previous(at, schedule.timezone),
            TimeRange::Between { from, to } => (*from, *to),
        }
    }
}

fn parse_time_range(value: &Value, errors: &mut Vec<FieldError>) -> TimeRange {
    let field = "criteria.time_range";
    let Some(object) = value.as_object() else {
        errors.push(FieldError::new(
            field,
            "must be {\"last\": \"7d\"}, {\"previous\": \"day|week|month\"} or {\"from\": ..., \"to\": ...}",
        ));
        return TimeRange::SincePreviousSlot;
    };
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    match keys.as_slice() {
        ["last"] => match object["last"].as_str().map(humantime::parse_duration) {
            Some(Ok(duration)) if !duration.is_zero() && duration <= MAX_LAST => {
                TimeRange::Last(duration)
            }
            _ => {
                errors.push(FieldError::new(
                    "criteria.time_range.last",
                    "must be a duration such as `24h` or `7d`, at most 5 years",
                ));
                TimeRange::SincePreviousSlot
            }
        },
        ["previous"] => match object["previous"].as_str().and_then(CalendarUnit::parse) {
            Some(unit) => TimeRange::Previous(unit),
            None => {
                errors.push(FieldError::new(
                    "criteria.time_range.previous",
                    "must be day, week or month",
                ));
                TimeRange::SincePreviousSlot
            }
        },
        ["from", "to"] | ["to", "from"] => {
            let mut time = |key: &str| {
                let parsed = object[key]
                    .as_str()
                    .and_then(|text| parse_timestamp(text).ok());
                if parsed.is_none() {
                    errors.push(FieldError::new(
                        format!("{field}.{key}"),
                        "must be an RFC 3339 date-time",
                    ));
                }
                parsed
            };
            match (time("from"), time("to")) {
                (Some(from), Some(to)) if from < to => TimeRange::Between { from, to },
                (Some(_), Some(_)) => {
                    errors.push(FieldError::new(
                        "criteria.time_range.from",
                        "must be before `to`",
                    ));
                    TimeRange::SincePreviousSlot
                }
                _ => TimeRange::SincePreviousSlot,
            }
        }
        _ => {
            errors.push(FieldError::new(
                field,
                "must have exactly `last`, exactly `previous`, or `from` and `to`",
            ));
            TimeRange::SincePreviousSlot
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_reads_back() {
        for value in [
            json!({}),
            json!({"time_range": {"last": "7days"}, "action": "auth.*"}),
            json!({"time_range": {"previous": "month"}, "status": "failure"}),
            json!({"time_range": {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"},
                   "data_classification": "PHI", "principal_id": "u1"}),
        ] {
            let criteria = Criteria::parse(&value, ReportType::AccessSummary).unwrap();
            let again = Criteria::parse(&criteria.to_json(), ReportType::AccessSummary).unwrap();
            assert_eq!(criteria, again, "{value}");
        }
    }

    #[test]
    fn errors_name_their_field() {
        let errors = Criteria::parse(
            &json!({"time_range": {"last": "soon"}, "status": "ok", "colour": "red"}),
            ReportType::AccessSummary,
        )
        .unwrap_err();
        let mut fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "criteria.colour",
                "criteria.status",
                "criteria.time_range.last"
            ]
        );
        let errors = Criteria::parse(&json!({"action": "x"}), ReportType::Integrity).unwrap_err();
        assert_eq!(errors[0].field, "criteria");
    }

    #[test]
    fn action_prefix_is_escaped() {
        let filters = EventFilters {
            action: Some("data_x.*".into()),
            ..Default::default()
        };
        assert_eq!(
            filters.action_parameters(),
            (None, Some("data\\_x.%".into()))
        );
    }
}
