//! The database performance report behind `GET /v1/admin/performance` and
//! `audit-worker db report`: slow statements (pg_stat_statements, when
//! loaded), index usage, table and partition statistics, cache hit ratios,
//! connections, suggested missing indexes and the last maintenance runs; and
//! an operator's EXPLAIN. Every catalog query is parameterised and limited to
//! this database (`pg_stat_user_*` views and `current_database()`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::{maintenance_runs, DbError, PgPool};
use crate::config::Config;

/// How to turn on the slow-statement section.
pub const HOW_TO_ENABLE_STATEMENTS: &str = "add pg_stat_statements to shared_preload_libraries \
     in postgresql.conf, restart PostgreSQL, then run CREATE EXTENSION pg_stat_statements \
     in this database";

/// Slow statements listed at most.
const SLOW_LIMIT: i64 = 50;
/// Maintenance runs listed.
const RUNS_LIMIT: i64 = 10;
/// A table is suggested an index only after this many sequential scans.
pub const MIN_SEQ_SCANS: i64 = 10;

#[derive(Debug, Serialize, ToSchema)]
pub struct PerformanceReport {
    pub generated_at: DateTime<Utc>,
    pub database: String,
    pub slow_queries: SlowQueries,
    pub indexes: IndexUsage,
    pub tables: Vec<TableStats>,
    pub cache_hit_ratio: CacheHitRatio,
    pub connections: Connections,
    pub suggested_indexes: Vec<IndexSuggestion>,
    pub maintenance_runs: Vec<maintenance_runs::MaintenanceRun>,
}

/// pg_stat_statements' view of statements slower than
/// `operations.slow_query_threshold` on average, or why it is unavailable.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlowQueries {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how_to_enable: Option<&'static str>,
    pub threshold_ms: f64,
    pub queries: Vec<SlowQuery>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlowQuery {
    pub query: String,
    pub calls: i64,
    pub mean_ms: f64,
    pub total_ms: f64,
    pub rows: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IndexUsage {
    pub indexes: Vec<IndexStats>,
    /// Never scanned since statistics were reset, and neither unique nor a
    /// primary key (those enforce something even unread).
    pub unused: Vec<IndexStats>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IndexStats {
    pub schema: String,
    pub table: String,
    pub index: String,
    pub scans: i64,
    pub size_bytes: i64,
    pub unique: bool,
    pub primary: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TableStats {
    pub schema: String,
    pub table: String,
    /// The partitioned table this one is a partition of (audit_log's months).
    pub partition_of: Option<String>,
    pub rows_estimate: i64,
    pub live_tuples: i64,
    pub dead_tuples: i64,
    pub total_bytes: i64,
    pub seq_scans: i64,
    pub seq_rows_read: i64,
    pub index_scans: i64,
    pub last_vacuum: Option<DateTime<Utc>>,
    pub last_autovacuum: Option<DateTime<Utc>>,
    pub last_analyze: Option<DateTime<Utc>>,
    pub last_autoanalyze: Option<DateTime<Utc>>,
}

/// Blocks found in shared buffers over blocks read, since statistics were
/// reset; `null` before anything was read.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheHitRatio {
    pub heap: Option<f64>,
    pub index: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Connections {
    /// This worker's pool: open connections, idle ones, the configured maximum.
    pub pool_open: u32,
    pub pool_idle: u32,
    pub pool_max: u32,
    /// The server's connections to this database by state (pg_stat_activity).
    pub server_by_state: Vec<ConnectionState>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionState {
    pub state: String,
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IndexSuggestion {
    pub schema: String,
    pub table: String,
    pub reason: String,
    pub rows_estimate: i64,
    pub seq_scans: i64,
    pub index_scans: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The statement is not one read-only query.
    #[error("{0}")]
    Refused(String),
    /// PostgreSQL refused it (syntax, unknown table, timeout, read-only violation).
    #[error("PostgreSQL refused the query: {0}")]
    Rejected(String),
    #[error(transparent)]
    Database(#[from] DbError),
}

/// Builds the whole report; a section PostgreSQL cannot give (slow
/// statements without the extension) says why instead of failing the rest.
pub async fn report(pool: &PgPool, config: &Config) -> Result<PerformanceReport, DbError> {
    let client = pool.get().await?;
    let client = &**client;
    let database: String = client
        .query_one("SELECT current_database()", &[])
        .await?
        .get(0);
    let slow_queries = slow_queries(client, config.operations.slow_query_threshold).await?;
    let indexes = index_usage(client).await?;
    let tables = table_stats(client).await?;
    let suggested_indexes = suggestions(&tables, config.operations.seq_scan_min_rows);
    let cache_hit_ratio = cache_hit_ratio(client).await?;
    let state = pool.state();
    let server_by_state = client
        .query(
            "SELECT coalesce(state, 'unknown') AS state, count(*) AS count
             FROM pg_stat_activity WHERE datname = current_database()
             GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|row| ConnectionState {
            state: row.get("state"),
            count: row.get("count"),
        })
        .collect();
    let maintenance_runs = maintenance_runs::recent(client, RUNS_LIMIT).await?;
    Ok(PerformanceReport {
        generated_at: Utc::now(),
        database,
        slow_queries,
        indexes,
        tables,
        cache_hit_ratio,
        connections: Connections {
            pool_open: state.connections,
            pool_idle: state.idle_connections,
            pool_max: config.database.pool_max_size,
            server_by_state,
        },
        suggested_indexes,
        maintenance_runs,
    })
}

async fn slow_queries(
    client: &impl GenericClient,
    threshold: Duration,
) -> Result<SlowQueries, DbError> {
    let threshold_ms = threshold.as_secs_f64() * 1000.0;
    let unavailable = |reason: String| SlowQueries {
        available: false,
        reason: Some(reason),
        how_to_enable: Some(HOW_TO_ENABLE_STATEMENTS),
        threshold_ms,
        queries: Vec::new(),
    };
    let row = client
        .query_one(
            "SELECT 'pg_stat_statements' = ANY(string_to_array(
                        replace(current_setting('shared_preload_libraries'), ' ', ''), ',')),
                    EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')",
            &[],
        )
        .await?;
    let (preloaded, created): (bool, bool) = (row.get(0), row.get(1));
    if !preloaded {
        return Ok(unavailable(
            "pg_stat_statements is not in shared_preload_libraries".to_owned(),
        ));
    }
    if !created {
        return Ok(unavailable(
            "the pg_stat_statements extension is not created in this database".to_owned(),
        ));
    }
    let rows = client
        .query(
            "SELECT query, calls, mean_exec_time, total_exec_time, rows
             FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND mean_exec_time > $1
             ORDER BY mean_exec_time DESC LIMIT $2",
            &[&threshold_ms, &SLOW_LIMIT],
        )
        .await;
    match rows {
        Ok(rows) => Ok(SlowQueries {
            available: true,
            reason: None,
            how_to_enable: None,
            threshold_ms,
            queries: rows
                .iter()
                .map(|row| SlowQuery {
                    query: row.get(0),
                    calls: row.get(1),
                    mean_ms: row.get(2),
                    total_ms: row.get(3),
                    rows: row.get(4),
                })
                .collect(),
        }),
        // E.g. the extension's version does not match the library loaded.
        Err(error) if error.as_db_error().is_some() => Ok(unavailable(format!(
            "pg_stat_statements cannot be read: {}",
            error.as_db_error().map_or("", |db| db.message())
        ))),
        Err(error) => Err(error.into()),
    }
}

async fn index_usage(client: &impl GenericClient) -> Result<IndexUsage, DbError> {
    let rows = client
        .query(
            "SELECT s.schemaname::text, s.relname::text, s.indexrelname::text, s.idx_scan,
                    pg_relation_size(s.indexrelid), i.indisunique, i.indisprimary
             FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
             ORDER BY s.schemaname, s.relname, s.indexrelname",
            &[],
        )
        .await?;
    let indexes: Vec<IndexStats> = rows
        .iter()
        .map(|row| IndexStats {
            schema: row.get(0),
            table: row.get(1),
            index: row.get(2),
            scans: row.get(3),
            size_bytes: row.get(4),
            unique: row.get(5),
            primary: row.get(6),
        })
        .collect();
    let unused = indexes
        .iter()
        .filter(|index| index.scans == 0 && !index.unique && !index.primary)
        .cloned()
        .collect();
    Ok(IndexUsage { indexes, unused })
}

async fn table_stats(client: &impl GenericClient) -> Result<Vec<TableStats>, DbError> {
    let rows = client
        .query(
            "SELECT s.schemaname::text, s.relname::text, parent.relname::text,
                    greatest(c.reltuples, 0)::bigint, s.n_live_tup, s.n_dead_tup,
                    pg_total_relation_size(s.relid), s.seq_scan, s.seq_tup_read,
                    coalesce(s.idx_scan, 0), s.last_vacuum, s.last_autovacuum,
                    s.last_analyze, s.last_autoanalyze
             FROM pg_stat_user_tables s
             JOIN pg_class c ON c.oid = s.relid
             LEFT JOIN pg_inherits h ON h.inhrelid = s.relid
             LEFT JOIN pg_class parent ON parent.oid = h.inhparent
             ORDER BY s.schemaname, s.relname",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| TableStats {
            schema: row.get(0),
            table: row.get(1),
            partition_of: row.get(2),
            rows_estimate: row.get(3),
            live_tuples: row.get(4),
            dead_tuples: row.get(5),
            total_bytes: row.get(6),
            seq_scans: row.get(7),
            seq_rows_read: row.get(8),
            index_scans: row.get(9),
            last_vacuum: row.get(10),
            last_autovacuum: row.get(11),
            last_analyze: row.get(12),
            last_autoanalyze: row.get(13),
        })
        .collect())
}

/// The rule: a table with at least `min_rows` live rows, at least
/// [`MIN_SEQ_SCANS`] sequential scans, and more sequential scans than index
/// scans is read whole again and again: some filter on it lacks an index.
fn suggestions(tables: &[TableStats], min_rows: i64) -> Vec<IndexSuggestion> {
    tables
        .iter()
        .filter(|table| {
            table.live_tuples.max(table.rows_estimate) >= min_rows
                && table.seq_scans >= MIN_SEQ_SCANS
                && table.seq_scans > table.index_scans
        })
        .map(|table| {
            let rows = table.live_tuples.max(table.rows_estimate);
            IndexSuggestion {
                schema: table.schema.clone(),
                table: table.table.clone(),
                reason: format!(
                    "{} sequential scans (reading {} rows in all) against {} index scans on \
                     about {rows} rows: a frequent filter on this table has no index",
                    table.seq_scans, table.seq_rows_read, table.index_scans
                ),
                rows_estimate: rows,
                seq_scans: table.seq_scans,
                index_scans: table.index_scans,
            }
        })
        .collect()
}

async fn cache_hit_ratio(client: &impl GenericClient) -> Result<CacheHitRatio, DbError> {
    let row = client
        .query_one(
            "SELECT sum(heap_blks_hit)::float8 / nullif(sum(heap_blks_hit + heap_blks_read), 0),
                    sum(idx_blks_hit)::float8 / nullif(sum(idx_blks_hit + idx_blks_read), 0)
             FROM pg_statio_user_tables",
            &[],
        )
        .await?;
    Ok(CacheHitRatio {
        heap: row.get(0),
        index: row.get(1),
    })
}

/// Keywords that change data or state: refused anywhere in an explained
/// statement (outside literals and comments), so a data-modifying CTE never
/// reaches PostgreSQL (where the read-only transaction would refuse it too).
const WRITE_KEYWORDS: &[&str] = &[
    "insert", "update", "delete", "merge", "truncate", "copy", "alter", "create", "drop", "grant",
    "revoke", "call", "do", "lock", "vacuum", "analyze", "refresh", "set", "reset",
];

/// Checks that `query` is exactly one read-only SELECT (or WITH … SELECT):
/// first word SELECT or WITH, no `;` but trailing ones, no data-changing
/// keyword. The statement then runs in a READ ONLY transaction anyway.
pub fn check_read_only(query: &str) -> Result<(), String> {
    let words = words_outside_literals(query)?;
    let Some(first) = words.first() else {
        return Err("is empty".to_owned());
    };
    if first != "select" && first != "with" {
        return Err("must be a single SELECT or WITH … SELECT statement".to_owned());
    }
    if let Some(word) = words
        .iter()
        .find(|word| WRITE_KEYWORDS.contains(&word.as_str()))
    {
        return Err(format!(
            "must be read-only: `{}` is not allowed (data-modifying statements and CTEs are refused)",
            word.to_uppercase()
        ));
    }
    Ok(())
}

/// The lower-cased words of `query` outside string literals, quoted
/// identifiers and comments; refuses a `;` followed by anything.
fn words_outside_literals(query: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = query.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut i = 0;
    let mut ended = false;
    let flush = |word: &mut String, words: &mut Vec<String>| {
        if !word.is_empty() {
            words.push(std::mem::take(word).to_lowercase());
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if ended && !c.is_whitespace() && c != ';' {
            return Err("must be a single statement: nothing may follow `;`".to_owned());
        }
        match c {
            '\'' | '"' => {
                flush(&mut word, &mut words);
                let quote = c;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("has an unterminated quote".to_owned()),
                        Some(&q) if q == quote && chars.get(i + 1) == Some(&quote) => i += 2,
                        Some(&q) if q == quote => break,
                        Some(_) => i += 1,
                    }
                }
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                flush(&mut word, &mut words);
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                flush(&mut word, &mut words);
                let mut depth = 0;
                loop {
                    match (chars.get(i), chars.get(i + 1)) {
                        (None, _) => return Err("has an unterminated comment".to_owned()),
                        (Some('/'), Some('*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some('*'), Some('/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => i += 1,
                    }
                }
                continue;
            }
            '$' if word.is_empty() => {
                // A dollar-quoted string: $tag$ … $tag$.
                let close = chars[i + 1..].iter().position(|&c| c == '$');
                let tag: Option<String> = close
                    .map(|end| chars[i + 1..i + 1 + end].iter().collect())
                    .filter(|tag: &String| tag.chars().all(|c| c.is_alphanumeric() || c == '_'));
                match tag {
                    Some(tag) if !tag.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                        let delimiter: Vec<char> = format!("${tag}$").chars().collect();
                        let body_start = i + delimiter.len();
                        let end = (body_start..chars.len())
                            .find(|&at| chars[at..].starts_with(&delimiter))
                            .ok_or("has an unterminated dollar-quoted string")?;
                        i = end + delimiter.len();
                        continue;
                    }
                    _ => word.push(c),
                }
            }
            ';' => {
                flush(&mut word, &mut words);
                ended = true;
            }
            c if c.is_alphanumeric() || c == '_' => word.push(c),
            _ => flush(&mut word, &mut words),
        }
        i += 1;
    }
    flush(&mut word, &mut words);
    Ok(words)
}

/// EXPLAIN (FORMAT JSON) of one read-only query, ANALYZE only when asked, in
/// a READ ONLY transaction bounded by `timeout` and rolled back.
pub async fn explain(
    pool: &PgPool,
    query: &str,
    analyze: bool,
    timeout: Duration,
) -> Result<Value, ExplainError> {
    check_read_only(query)
        .map_err(|problem| ExplainError::Refused(format!("the query {problem}")))?;
    let statement = query
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    let mut client = pool.get().await?;
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(DbError::from)?;
    let timeout_ms = format!("{}ms", timeout.as_millis().max(1));
    tx.execute(
        "SELECT set_config('statement_timeout', $1, true)",
        &[&timeout_ms],
    )
    .await
    .map_err(DbError::from)?;
    let options = if analyze {
        "FORMAT JSON, ANALYZE"
    } else {
        "FORMAT JSON"
    };
    // The statement text cannot be a parameter; it was checked above, runs
    // as a single prepared statement (no second statement can ride along)
    // and in a read-only transaction that is rolled back.
    let outcome = tx
        .query_one(&format!("EXPLAIN ({options}) {statement}"), &[])
        .await;
    let _ = tx.rollback().await;
    match outcome {
        Ok(row) => Ok(row.get::<_, Value>(0)),
        Err(error) => match error.as_db_error() {
            Some(db) => Err(ExplainError::Rejected(format!(
                "{} ({})",
                db.message(),
                db.code().code()
            ))),
            None => Err(ExplainError::Database(error.into())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::check_read_only;

    #[test]
    fn only_single_read_only_statements_pass() {
        for good in [
            "SELECT 1",
            "select * from audit_log where action = 'delete; drop table x' ;",
            "WITH recent AS (SELECT * FROM alerts) SELECT count(*) FROM recent",
            "SELECT $$update$$, \"delete\" -- insert\n FROM t /* drop */",
        ] {
            assert!(check_read_only(good).is_ok(), "{good}");
        }
        for bad in [
            "DELETE FROM audit_log",
            "SELECT 1; DELETE FROM audit_log",
            "SELECT 1;; SELECT 2",
            "WITH gone AS (DELETE FROM alerts RETURNING *) SELECT * FROM gone",
            "SELECT * FROM t FOR UPDATE",
            "SELECT 'unterminated",
            "   ",
        ] {
            assert!(check_read_only(bad).is_err(), "{bad}");
        }
    }
}
