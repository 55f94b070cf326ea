//! When a schedule runs: a standard five-field cron expression read in an IANA
//! time zone (croner, which follows Vixie cron across DST changes: a fixed
//! time that falls in the spring-forward gap runs right after it, one in the
//! repeated autumn hour runs once).

use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::validation::FieldError;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    pub timezone: Tz,
}

impl Schedule {
    /// Parses `cron` (minute granularity) and `timezone`; errors name
    /// `{field}.cron` and `{field}.timezone`.
    pub fn parse(field: &str, cron: &str, timezone: &str) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let parsed = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|error| {
                errors.push(FieldError::new(
                    format!("{field}.cron"),
                    format!(
                        "not a five-field cron expression (minute hour day month weekday): {error}"
                    ),
                ))
            })
            .ok();
        let zone = Tz::from_str(timezone)
            .map_err(|_| {
                errors.push(FieldError::new(
                    format!("{field}.timezone"),
                    "not an IANA time zone name such as `Europe/Paris` or `UTC`",
                ))
            })
            .ok();
        match (parsed, zone) {
            (Some(cron), Some(timezone)) => {
                let schedule = Schedule { cron, timezone };
                if schedule.next_after(Utc::now()).is_none() {
                    return Err(vec![FieldError::new(
                        format!("{field}.cron"),
                        "never matches a date",
                    )]);
                }
                Ok(schedule)
            }
            _ => Err(errors),
        }
    }

    /// The first slot strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.timezone), false)
            .ok()
            .map(|slot| slot.with_timezone(&Utc))
    }

    /// The last slot strictly before `before`.
    pub fn previous_before(&self, before: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&before.with_timezone(&self.timezone), false)
            .ok()
            .map(|slot| slot.with_timezone(&Utc))
    }
}

/// Calendar units a report period can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarUnit {
    Day,
    Week,
    Month,
}

impl CalendarUnit {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "day" => Some(CalendarUnit::Day),
            "week" => Some(CalendarUnit::Week),
            "month" => Some(CalendarUnit::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CalendarUnit::Day => "day",
            CalendarUnit::Week => "week",
            CalendarUnit::Month => "month",
        }
    }

    /// The whole unit (day, ISO week from Monday, month) before the one
    /// containing `at`, in `zone`'s local time.
    pub fn previous(self, at: DateTime<Utc>, zone: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        let today = at.with_timezone(&zone).date_naive();
        let current_start = match self {
            CalendarUnit::Day => today,
            CalendarUnit::Week => {
                today - Days::new(u64::from(today.weekday().num_days_from_monday()))
            }
            CalendarUnit::Month => today.with_day(1).expect("every month has a first day"),
        };
        let previous_start = match self {
            CalendarUnit::Day => current_start - Days::new(1),
            CalendarUnit::Week => current_start - Days::new(7),
            CalendarUnit::Month => current_start - Months::new(1),
        };
        (
            local_midnight(zone, previous_start),
            local_midnight(zone, current_start),
        )
    }
}

/// The first instant of `date` in `zone`: midnight, or the end of a DST gap
/// that swallowed midnight.
fn local_midnight(zone: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    (0..=3)
        .find_map(|hours| {
            zone.from_local_datetime(&(midnight + chrono::TimeDelta::hours(hours)))
                .earliest()
        })
        .map(|local| local.with_timezone(&Utc))
        .unwrap_or_else(|| midnight.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn daily_slot_keeps_its_local_time_across_the_spring_change() {
        // Europe/Paris moves from UTC+1 to UTC+2 on 2026-03-29.
        let schedule = Schedule::parse("schedule", "30 6 * * *", "Europe/Paris").unwrap();
        let before = schedule.next_after(utc("2026-03-28T00:00:00Z")).unwrap();
        let after = schedule.next_after(before).unwrap();
        assert_eq!(before, utc("2026-03-28T05:30:00Z"));
        assert_eq!(after, utc("2026-03-29T04:30:00Z"));
    }

    #[test]
    fn a_slot_in_the_spring_gap_runs_once_right_after_it() {
        // 02:30 does not exist in Paris on 2026-03-29 (02:00 -> 03:00).
        let schedule = Schedule::parse("schedule", "30 2 * * *", "Europe/Paris").unwrap();
        let slot = schedule.next_after(utc("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(
            slot,
            utc("2026-03-29T01:00:00Z"),
            "03:00 local, after the gap"
        );
        let next = schedule.next_after(slot).unwrap();
        assert_eq!(next, utc("2026-03-30T00:30:00Z"));
    }

    #[test]
    fn a_slot_in_the_repeated_autumn_hour_runs_once() {
        // 02:00-03:00 happens twice in Paris on 2026-10-25.
        let schedule = Schedule::parse("schedule", "30 2 * * *", "Europe/Paris").unwrap();
        let slot = schedule.next_after(utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(slot, utc("2026-10-25T00:30:00Z"), "the first 02:30, UTC+2");
        let next = schedule.next_after(slot).unwrap();
        assert_eq!(next, utc("2026-10-26T01:30:00Z"), "not the second 02:30");
    }

    #[test]
    fn invalid_expressions_and_zones_name_their_field() {
        let errors = Schedule::parse("schedule", "61 * * * *", "Mars/Olympus").unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["schedule.cron", "schedule.timezone"]);
        let seconds = Schedule::parse("schedule", "0 0 6 * * *", "UTC").unwrap_err();
        assert_eq!(seconds[0].field, "schedule.cron");
        let never = Schedule::parse("schedule", "0 0 30 2 *", "UTC").unwrap_err();
        assert_eq!(never[0].message, "never matches a date");
    }

    #[test]
    fn previous_calendar_units_are_local() {
        let zone: Tz = "America/New_York".parse().unwrap();
        let at = utc("2026-11-02T12:00:00Z"); // Monday; US DST ended 2026-11-01
        let (from, to) = CalendarUnit::Day.previous(at, zone);
        assert_eq!(from, utc("2026-11-01T04:00:00Z"));
        assert_eq!(to, utc("2026-11-02T05:00:00Z"), "a 25-hour day");
        let (from, to) = CalendarUnit::Week.previous(at, zone);
        assert_eq!(
            (from, to),
            (utc("2026-10-26T04:00:00Z"), utc("2026-11-02T05:00:00Z"))
        );
        let (from, to) = CalendarUnit::Month.previous(at, zone);
        assert_eq!(
            (from, to),
            (utc("2026-10-01T04:00:00Z"), utc("2026-11-01T04:00:00Z"))
        );
    }
}
