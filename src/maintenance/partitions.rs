//! Keeping `audit_log`'s monthly partitions: ready ahead of time, and dropped
//! once empty and past every retention period.

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};

use crate::db::{events, partitions, DbError, PgPool};

/// The first days of the months from `now`'s to `ahead` months later.
pub fn months_from(now: DateTime<Utc>, ahead: u32) -> Vec<NaiveDate> {
    let first = events::month_of(now);
    (0..=ahead)
        .filter_map(|n| first.checked_add_months(Months::new(n)))
        .collect()
}

/// Creates the missing partitions from the current month to `ahead` months
/// later; the names of those it created.
pub async fn ensure_ahead(
    pool: &PgPool,
    now: DateTime<Utc>,
    ahead: u32,
) -> Result<Vec<String>, DbError> {
    let existing = {
        let client = pool.get().await?;
        events::partition_months(&**client).await?
    };
    let missing: Vec<NaiveDate> = months_from(now, ahead)
        .into_iter()
        .filter(|month| !existing.contains(month))
        .collect();
    if !missing.is_empty() {
        events::ensure_partitions(pool, &missing).await?;
    }
    Ok(missing.iter().map(|month| partition_name(*month)).collect())
}

/// What `drop_expired` found for one expired partition.
#[derive(Debug, Clone)]
pub struct Expired {
    pub name: String,
    /// Dropped (false in a dry run, or when it still holds rows).
    pub dropped: bool,
    /// Rows are left in it: deletion or archival has not emptied it yet.
    pub holds_rows: bool,
}

/// Partitions whose whole month lies before `now` minus `keep_days` (the
/// longest retention of any policy) and that no active legal hold touches;
/// each is dropped when empty (never in a dry run).
pub async fn drop_expired(
    pool: &PgPool,
    now: DateTime<Utc>,
    keep_days: i64,
    dry_run: bool,
) -> Result<Vec<Expired>, DbError> {
    let horizon = now - chrono::Duration::days(keep_days);
    let client = pool.get().await?;
    let mut expired = Vec::new();
    for partition in partitions::list(&**client).await? {
        let (start, end) = partitions::month_bounds(partition.month);
        if end > horizon || partitions::held(&**client, start, end).await? {
            continue;
        }
        let (dropped, holds_rows) = if dry_run {
            (
                false,
                !partitions::is_empty(&**client, &partition.name).await?,
            )
        } else {
            let dropped = partitions::drop_if_empty(&**client, &partition.name).await?;
            (dropped, !dropped)
        };
        expired.push(Expired {
            name: partition.name,
            dropped,
            holds_rows,
        });
    }
    Ok(expired)
}

/// `audit_log_YYYY_MM`
pub fn partition_name(month: NaiveDate) -> String {
    format!("audit_log_{:04}_{:02}", month.year(), month.month())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn months_ahead_cross_the_year() {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 23, 59, 59).unwrap();
        let months: Vec<String> = months_from(now, 3)
            .into_iter()
            .map(partition_name)
            .collect();
        assert_eq!(
            months,
            [
                "audit_log_2026_11",
                "audit_log_2026_12",
                "audit_log_2027_01",
                "audit_log_2027_02"
            ]
        );
    }

    #[test]
    fn bounds_span_the_month() {
        let (start, end) = partitions::month_bounds(NaiveDate::from_ymd_opt(2024, 2, 1).unwrap());
        assert_eq!(start, Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap());
    }
}
