//! Sliding-window state of threshold rules (`alert_window_hits`): one row per
//! matching event, so every worker counts the same window and a restart
//! forgets nothing.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::DbError;

/// A window's group: organization, rule, group key.
type Group<'a> = (&'a str, &'a str, &'a str);

/// One event matching a threshold rule.
#[derive(Debug, Clone)]
pub struct Hit {
    pub organization_id: String,
    pub rule_id: String,
    pub group_key: String,
    pub occurred_at: DateTime<Utc>,
    pub event_id: i64,
    pub window: Duration,
}

/// A newly recorded hit, and how many hits of its group fall in the window
/// that ends at it: `[occurred_at - window, occurred_at]`.
#[derive(Debug, Clone)]
pub struct Counted {
    /// Index of the hit in the input.
    pub index: usize,
    pub count: i64,
}

/// Records `hits` (an event already recorded for a rule counts once) and
/// counts each new one's window. Must run in a transaction: it first locks
/// each group (transaction-scoped advisory locks, in one order), so that
/// workers recording hits of one group take turns and each counts the other's
/// committed hits; without that, two workers could each see four of five.
pub async fn record_and_count(
    client: &impl GenericClient,
    hits: &[Hit],
) -> Result<Vec<Counted>, DbError> {
    if hits.is_empty() {
        return Ok(Vec::new());
    }
    let organizations: Vec<&str> = hits.iter().map(|h| h.organization_id.as_str()).collect();
    let rules: Vec<&str> = hits.iter().map(|h| h.rule_id.as_str()).collect();
    let groups: Vec<&str> = hits.iter().map(|h| h.group_key.as_str()).collect();
    let times: Vec<DateTime<Utc>> = hits.iter().map(|h| h.occurred_at).collect();
    let events: Vec<i64> = hits.iter().map(|h| h.event_id).collect();
    let windows: Vec<f64> = hits.iter().map(|h| h.window.as_secs_f64()).collect();
    client
        .execute(
            "SELECT pg_advisory_xact_lock(k) FROM ( \
               SELECT DISTINCT hashtextextended(o || chr(1) || r || chr(1) || g, 7) AS k \
               FROM unnest($1::text[], $2::text[], $3::text[]) AS t(o, r, g) ORDER BY 1) AS keys",
            &[&organizations, &rules, &groups],
        )
        .await?;
    let rows = client
        .query(
            "WITH input AS ( \
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int8[], \
                 $6::float8[]) WITH ORDINALITY AS t(o, r, g, at, event_id, window_s, n)), \
             recorded AS ( \
               INSERT INTO alert_window_hits (organization_id, rule_id, group_key, occurred_at, event_id, expires_at) \
               SELECT o, r, g, at, event_id, at + make_interval(secs => window_s) FROM input \
               ON CONFLICT DO NOTHING \
               RETURNING organization_id, rule_id, group_key, occurred_at, event_id) \
             SELECT (i.n - 1)::int8 AS index FROM input i \
             JOIN recorded c ON (c.organization_id, c.rule_id, c.group_key, c.occurred_at, c.event_id) \
               = (i.o, i.r, i.g, i.at, i.event_id)",
            &[&organizations, &rules, &groups, &times, &events, &windows],
        )
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // A second statement (the first one's rows are only visible from here on)
    // reads each touched group's hits over the span its new hits' windows
    // cover; the windows are then counted here, by binary search, instead of
    // one count per hit.
    let indexes: Vec<usize> = rows
        .iter()
        .map(|r| r.get::<_, i64>("index") as usize)
        .collect();
    let mut spans: HashMap<Group<'_>, (DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
    for &index in &indexes {
        let hit = &hits[index];
        let from = hit.occurred_at - chrono::Duration::from_std(hit.window).unwrap_or_default();
        spans
            .entry((&hit.organization_id, &hit.rule_id, &hit.group_key))
            .and_modify(|(low, high)| {
                *low = (*low).min(from);
                *high = (*high).max(hit.occurred_at);
            })
            .or_insert((from, hit.occurred_at));
    }
    let keys: Vec<&Group<'_>> = spans.keys().collect();
    let organizations: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let rules: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let groups: Vec<&str> = keys.iter().map(|k| k.2).collect();
    let lows: Vec<DateTime<Utc>> = keys.iter().map(|k| spans[*k].0).collect();
    let highs: Vec<DateTime<Utc>> = keys.iter().map(|k| spans[*k].1).collect();
    let stored = client
        .query(
            "SELECT h.organization_id, h.rule_id, h.group_key, h.occurred_at \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[]) \
               AS s(o, r, g, low, high) \
             JOIN alert_window_hits h ON h.organization_id = s.o AND h.rule_id = s.r AND h.group_key = s.g \
               AND h.occurred_at BETWEEN s.low AND s.high",
            &[&organizations, &rules, &groups, &lows, &highs],
        )
        .await?;
    let mut times: HashMap<Group<'_>, Vec<DateTime<Utc>>> = HashMap::new();
    for row in &stored {
        let key = (
            row.get::<_, &str>("organization_id"),
            row.get::<_, &str>("rule_id"),
            row.get::<_, &str>("group_key"),
        );
        times.entry(key).or_default().push(row.get("occurred_at"));
    }
    for list in times.values_mut() {
        list.sort_unstable();
    }
    Ok(indexes
        .into_iter()
        .map(|index| {
            let hit = &hits[index];
            let from = hit.occurred_at - chrono::Duration::from_std(hit.window).unwrap_or_default();
            let list = times
                .get(&(
                    hit.organization_id.as_str(),
                    hit.rule_id.as_str(),
                    hit.group_key.as_str(),
                ))
                .map_or(&[][..], Vec::as_slice);
            let count = list.partition_point(|t| *t <= hit.occurred_at)
                - list.partition_point(|t| *t < from);
            Counted {
                index,
                count: count as i64,
            }
        })
        .collect())
}

/// Deletes the hits, of every organization, no window can reach any more;
/// returns how many went. One statement across organizations, which Citus
/// runs on every shard at once (`docs/scaling.md`).
pub async fn prune(client: &impl GenericClient) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "DELETE FROM alert_window_hits WHERE expires_at < now()",
            &[],
        )
        .await?)
}
