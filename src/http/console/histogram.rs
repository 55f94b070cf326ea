//! The events page's histogram: the search's events per hour, day, month or
//! year (UTC) by status, as SVG. A search by time and status only is drawn
//! from the hourly counts (whole hours); one with other filters is counted
//! from its events within a time budget, and says so when it runs out.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Datelike, DurationRound, Months, NaiveTime, TimeDelta, Utc};
use maud::{html, Markup};

use super::charts::{self, Column};
use crate::db::events::EventFilter;
use crate::db::histogram::{self, Bucket, Count};
use crate::db::tenant;
use crate::events::STATUSES;
use crate::http::AppState;

/// How many events a search with other filters may count, and how long it
/// may spend: the page stays well under 100 ms.
const LIVE_LIMITS: (i64, Duration) = (10_000, Duration::from_millis(40));

/// The width the counts of a search over `span` are read in: fine enough
/// to choose the bars' width from the events' own span, few enough rows.
fn read_as(span: TimeDelta) -> Bucket {
    if span <= TimeDelta::days(120) {
        Bucket::Hour
    } else if span <= TimeDelta::days(3660) {
        Bucket::Day
    } else {
        Bucket::Month
    }
}

/// The start of the bar of `bucket` that `at` falls in.
fn truncate(bucket: Bucket, at: DateTime<Utc>) -> DateTime<Utc> {
    let day = at.date_naive();
    let start = match bucket {
        Bucket::Hour => return at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at),
        Bucket::Day => Some(day),
        Bucket::Month => day.with_day(1),
        Bucket::Year => day.with_day(1).and_then(|first| first.with_month(1)),
    };
    start.map_or(at, |start| start.and_time(NaiveTime::MIN).and_utc())
}

/// Counts read per `read` regrouped into bars as wide as the span of the
/// events calls for (never narrower than they were read).
fn regroup(read: Bucket, counts: Vec<Count>) -> (Bucket, Vec<Count>) {
    let (Some(first), Some(last)) = (
        counts.iter().map(|c| c.bucket).min(),
        counts.iter().map(|c| c.bucket).max(),
    ) else {
        return (read, counts);
    };
    let bucket = bucket_for(last - first).max(read);
    if bucket == read {
        return (read, counts);
    }
    let mut grouped: BTreeMap<(DateTime<Utc>, String), i64> = BTreeMap::new();
    for count in counts {
        *grouped
            .entry((truncate(bucket, count.bucket), count.status))
            .or_default() += count.events;
    }
    let counts = grouped
        .into_iter()
        .map(|((bucket, status), events)| Count {
            bucket,
            status,
            events,
        })
        .collect();
    (bucket, counts)
}

/// The bar width that gives a span a readable number of bars.
fn bucket_for(span: TimeDelta) -> Bucket {
    if span <= TimeDelta::days(3) {
        Bucket::Hour
    } else if span <= TimeDelta::days(120) {
        Bucket::Day
    } else if span <= TimeDelta::days(3660) {
        Bucket::Month
    } else {
        Bucket::Year
    }
}

fn next(bucket: Bucket, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match bucket {
        Bucket::Hour => at.checked_add_signed(TimeDelta::hours(1)),
        Bucket::Day => at.checked_add_signed(TimeDelta::days(1)),
        Bucket::Month => at.checked_add_months(Months::new(1)),
        Bucket::Year => at.checked_add_months(Months::new(12)),
    }
}

fn label(bucket: Bucket, at: DateTime<Utc>) -> String {
    let format = match bucket {
        Bucket::Hour => "%Y-%m-%d %H:00",
        Bucket::Day => "%Y-%m-%d",
        Bucket::Month => "%Y-%m",
        Bucket::Year => "%Y",
    };
    at.format(format).to_string()
}

/// Whether the hourly counts can answer the search: time and status only.
fn counts_answer(filter: &EventFilter) -> bool {
    [
        &filter.action,
        &filter.principal_id,
        &filter.target_resource_type,
        &filter.target_resource_id,
        &filter.correlation_id,
        &filter.data_classification,
    ]
    .iter()
    .all(|condition| condition.is_none())
}

/// The histogram of the search `filter`, or a line saying why there is none.
pub async fn section(state: &AppState, organization_id: &str, filter: &EventFilter) -> Markup {
    let read = read_as(filter.to - filter.from);
    let whole_hours = counts_answer(filter);
    let counted = tenant::scoped(&state.pool, organization_id, async |tx| {
        if whole_hours {
            let status = filter.status.as_deref();
            histogram::counted(tx, organization_id, filter.from, filter.to, status, read)
                .await
                .map(Some)
        } else {
            histogram::matching(tx, organization_id, filter, read, LIVE_LIMITS).await
        }
    })
    .await;
    let Ok(Some(counts)) = counted else {
        return html! {
            p.hint { "No histogram: this search matches too many events to count at once. Narrow it by time, or search by time and status only, to see one." }
        };
    };
    let (bucket, counts) = regroup(read, counts);
    let columns = columns(bucket, &counts);
    if columns.is_empty() {
        return html! {};
    }
    let totals: Vec<(&str, i64)> = STATUSES
        .iter()
        .map(|status| {
            let total = counts
                .iter()
                .filter(|c| c.status == *status)
                .map(|c| c.events)
                .sum();
            (*status, total)
        })
        .collect();
    let unit = bucket.unit();
    let summary = format!(
        "Events per {unit} (UTC) by status, {} to {}: {}",
        columns[0].label,
        columns[columns.len() - 1].label,
        totals
            .iter()
            .map(|(status, total)| format!("{total} {status}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    html! {
        figure.histogram {
            (charts::columns(&summary, &columns))
            figcaption {
                "Events per " (unit) " (UTC): "
                @for (status, total) in &totals {
                    span class=(format!("swatch {status}")) {} " " (status) " " (total) " "
                }
                @if whole_hours { "· whole hours the search overlaps." }
            }
        }
    }
}

/// One column per bucket from the first with events to the last, empty
/// ones included, so that a bar's place is its time.
fn columns(bucket: Bucket, counts: &[Count]) -> Vec<Column> {
    let (Some(first), Some(last)) = (
        counts.iter().map(|c| c.bucket).min(),
        counts.iter().map(|c| c.bucket).max(),
    ) else {
        return Vec::new();
    };
    let mut columns = Vec::new();
    let mut at = Some(first);
    while let Some(start) = at.filter(|start| *start <= last) {
        let parts: Vec<(&'static str, i64)> = STATUSES
            .iter()
            .map(|status| {
                let events = counts
                    .iter()
                    .filter(|c| c.bucket == start && c.status == *status)
                    .map(|c| c.events)
                    .sum();
                (*status, events)
            })
            .collect();
        let label = label(bucket, start);
        let figures = parts
            .iter()
            .map(|(status, events)| format!("{events} {status}"))
            .collect::<Vec<_>>()
            .join(", ");
        columns.push(Column {
            title: format!("{label} UTC: {figures}"),
            label,
            parts,
        });
        at = next(bucket, start);
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn bars_widen_with_the_range() {
        assert_eq!(bucket_for(TimeDelta::hours(24)), Bucket::Hour);
        assert_eq!(bucket_for(TimeDelta::days(31)), Bucket::Day);
        assert_eq!(bucket_for(TimeDelta::days(400)), Bucket::Month);
        assert_eq!(bucket_for(TimeDelta::days(20_000)), Bucket::Year);
    }

    #[test]
    fn counts_read_by_the_hour_become_days_when_they_span_weeks() {
        let counts = vec![
            Count {
                bucket: at("2026-01-01T10:00:00Z"),
                status: "success".into(),
                events: 3,
            },
            Count {
                bucket: at("2026-01-01T17:00:00Z"),
                status: "success".into(),
                events: 4,
            },
            Count {
                bucket: at("2026-01-20T03:00:00Z"),
                status: "failure".into(),
                events: 1,
            },
        ];
        let (bucket, regrouped) = regroup(Bucket::Hour, counts);
        assert_eq!(bucket, Bucket::Day);
        assert_eq!(regrouped.len(), 2);
        assert_eq!(regrouped[0].bucket, at("2026-01-01T00:00:00Z"));
        assert_eq!(regrouped[0].events, 7);
        // Within a day, hours stay hours.
        let (bucket, _) = regroup(
            Bucket::Hour,
            vec![Count {
                bucket: at("2026-01-01T10:00:00Z"),
                status: "success".into(),
                events: 1,
            }],
        );
        assert_eq!(bucket, Bucket::Hour);
    }

    #[test]
    fn a_year_starts_on_the_first_of_january() {
        assert_eq!(
            truncate(Bucket::Year, at("2026-07-14T12:30:00Z")),
            at("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            truncate(Bucket::Month, at("2026-07-14T12:30:00Z")),
            at("2026-07-01T00:00:00Z")
        );
    }

    #[test]
    fn empty_buckets_between_the_first_and_last_are_drawn() {
        let counts = vec![
            Count {
                bucket: at("2026-01-30T00:00:00Z"),
                status: "success".into(),
                events: 3,
            },
            Count {
                bucket: at("2026-02-01T00:00:00Z"),
                status: "failure".into(),
                events: 2,
            },
        ];
        let drawn = columns(Bucket::Day, &counts);
        let labels: Vec<_> = drawn.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["2026-01-30", "2026-01-31", "2026-02-01"]);
        assert_eq!(drawn[1].parts.iter().map(|(_, n)| n).sum::<i64>(), 0);
        assert!(drawn[2].title.contains("2 failure"));
    }

    #[test]
    fn months_step_by_calendar_month() {
        let counts = vec![
            Count {
                bucket: at("2026-01-01T00:00:00Z"),
                status: "success".into(),
                events: 1,
            },
            Count {
                bucket: at("2026-03-01T00:00:00Z"),
                status: "success".into(),
                events: 1,
            },
        ];
        let labels: Vec<_> = columns(Bucket::Month, &counts)
            .into_iter()
            .map(|c| c.label)
            .collect();
        assert_eq!(labels, ["2026-01", "2026-02", "2026-03"]);
    }
}
