//! The monthly partitions of `audit_log`: what exists, how big, and dropping
//! an empty one. Creating them is `events::ensure_partitions`.

use chrono::{DateTime, Months, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::DbError;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Partition {
    /// `audit_log_YYYY_MM`
    pub name: String,
    /// The first day of its month (UTC).
    pub month: NaiveDate,
    /// Table, indexes and TOAST, in bytes.
    pub bytes: i64,
    /// PostgreSQL's estimate of its rows (from the last ANALYZE; 0 before one).
    pub rows_estimate: i64,
}

/// Every partition of `audit_log`, oldest first.
pub async fn list(client: &impl GenericClient) -> Result<Vec<Partition>, DbError> {
    let rows = client
        .query(
            "SELECT c.relname::text, pg_total_relation_size(c.oid), greatest(c.reltuples, 0)::int8 \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'audit_log'::regclass ORDER BY c.relname",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let name: String = row.get(0);
            let month = month_of_name(&name)?;
            Some(Partition {
                name,
                month,
                bytes: row.get(1),
                rows_estimate: row.get(2),
            })
        })
        .collect())
}

/// Whether an active legal hold of any organization touches [from, to).
pub async fn held(
    client: &impl GenericClient,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<bool, DbError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM legal_holds WHERE released_at IS NULL \
               AND (starts_at IS NULL OR starts_at < $2) AND (ends_at IS NULL OR ends_at >= $1))",
            &[&from, &to],
        )
        .await?
        .get(0))
}

/// Whether the partition holds no row.
pub async fn is_empty(client: &impl GenericClient, name: &str) -> Result<bool, DbError> {
    let (start, end) = match month_of_name(name) {
        Some(month) => month_bounds(month),
        None => return Ok(true),
    };
    // Through the parent, with the partition's bounds: no table name in SQL.
    Ok(client
        .query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM audit_log WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2)",
            &[&start, &end],
        )
        .await?
        .get(0))
}

/// Detaches and drops the partition if it holds no row; whether it did.
pub async fn drop_if_empty(client: &impl GenericClient, name: &str) -> Result<bool, DbError> {
    Ok(client
        .query_one("SELECT audit_log_drop_empty_partition($1)", &[&name])
        .await?
        .get(0))
}

/// The UTC instants a month's partition spans: [start, end).
pub fn month_bounds(month: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let midnight = |day: NaiveDate| day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let next = month
        .checked_add_months(Months::new(1))
        .expect("a month after exists");
    (midnight(month), midnight(next))
}

/// The month `audit_log_YYYY_MM` holds.
fn month_of_name(name: &str) -> Option<NaiveDate> {
    let rest = name.strip_prefix("audit_log_")?;
    let (year, month) = rest.split_once('_')?;
    NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_give_their_month() {
        assert_eq!(
            month_of_name("audit_log_2026_03"),
            NaiveDate::from_ymd_opt(2026, 3, 1)
        );
        assert_eq!(month_of_name("audit_log_default"), None);
        assert_eq!(month_of_name("audit_log_2026_13"), None);
    }
}
