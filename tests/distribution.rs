//! The schema can be distributed by `organization_id` (Citus), proven without
//! Citus: the catalogue of a freshly migrated database follows Citus's rules
//! for tables distributed by that column, and every SQL statement of `src/`
//! that reads or changes a tenant table filters or joins on it, as Citus
//! needs to route it to one organization's shard (`docs/scaling.md`).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use serde_json::Value;
use syn::punctuated::Punctuated;
use syn::visit::Visit;
use syn::{Expr, Lit, Token};

use common::{event, spawn_app, TestApp};

/// Tables without a tenant: on Citus they stay plain tables of the
/// coordinator, which is the node the workers connect to. None is joined
/// with a tenant table, so none needs to be a reference table.
const LOCAL_TABLES: &[(&str, &str)] = &[
    (
        "refinery_schema_history",
        "the migrations applied: DDL runs on the coordinator",
    ),
    (
        "worker_secrets",
        "the workers' own keys (cursor signing, encryption)",
    ),
    (
        "signing_keys",
        "the public keys of the checkpoint signatures, every organization's",
    ),
    (
        "maintenance_runs",
        "the operators' record of partition maintenance",
    ),
    (
        "config_change_event",
        "the operators' record of configuration changes",
    ),
    (
        "error_log",
        "the operators' error tracking: an error may belong to no organization",
    ),
    (
        "error_aggregation",
        "the operators' error tracking, aggregated",
    ),
    (
        "console_sessions",
        "looked up by the cookie's token before its organization is known",
    ),
];

/// Statements that span organizations on purpose, by file and function (or the constant that holds one),
/// with why and the form Citus runs them in (`docs/scaling.md` lists them
/// too). None takes row locks across organizations, which Citus cannot do:
/// each is a read, or a change without locks taken first, which Citus runs
/// on every shard at once. Every other statement on a tenant table names its
/// organization, or joins on it.
const CROSS_ORGANIZATION: &[(&str, &str, &str)] = &[
    (
        "src/db/api_keys.rs",
        "credentials",
        "authentication (cached for auth.key_cache_ttl) and the CLI find a key by its id \
         before its organization is known: a read on every shard",
    ),
    ("src/db/api_keys.rs", "list", "the CLI lists every organization's keys: a read on every shard"),
    ("src/db/archives.rs", "list_all", "the operators' listing of every archive: a read on every shard"),
    (
        "src/db/archives.rs",
        "organizations",
        "maintenance lists the organizations, then archives and deletes per organization",
    ),
    (
        "src/db/checkpoints.rs",
        "UNSIGNED_HEADS",
        "the CheckpointActor finds every organization's unsigned head (a read on every shard), then \
         signs each organization's on its own",
    ),
    (
        "src/db/deliveries.rs",
        "release",
        "claims given back by their ids: an update without locks taken first, on every shard",
    ),
    ("src/db/deliveries.rs", "queue_figures", "the queue's metrics: counts on every shard"),
    (
        "src/db/destinations.rs",
        "active",
        "the QueueActor runs one DeliveryActor per active destination, and claims per organization",
    ),
    (
        "src/db/archives.rs",
        "get",
        "the operators' CLI restores an archive named by its id alone: a read on every shard",
    ),
    (
        "src/db/reports.rs",
        "organizations_due",
        "the scheduler finds the organizations with due reports, then locks per organization",
    ),
    (
        "src/db/reports.rs",
        "organizations_claimable",
        "report runs: the organizations with runs to claim, then claims per organization",
    ),
    (
        "src/db/reports.rs",
        "fail_abandoned",
        "runs whose worker stopped: an update without locks taken first, on every shard",
    ),
    (
        "src/db/alerts.rs",
        "delete_closed_before",
        "alert retention: a delete without locks taken first, on every shard",
    ),
    (
        "src/db/alert_windows.rs",
        "prune",
        "expired window hits: a delete without locks taken first, on every shard",
    ),
    ("src/db/partitions.rs", "held", "a month's partition is kept while any organization holds it"),
    (
        "src/db/retention.rs",
        "longest_retention_days",
        "partitions are dropped past every organization's retention",
    ),
    ("src/db/streams.rs", "lag_seconds", "the streams' lag metric: a read on every shard"),
    ("src/db/streams.rs", "any_in_flight", "the StreamActor's pace: a read on every shard"),
    (
        "src/db/streams.rs",
        "organizations_with_idle",
        "the StreamActor finds the organizations with work, then claims per organization",
    ),
    (
        "src/secrets/rotation.rs",
        "reseal_destinations",
        "key rotation finds the organizations with rows, then reseals per organization",
    ),
    (
        "src/secrets/rotation.rs",
        "reseal_originals",
        "key rotation finds the organizations with rows, then reseals per organization",
    ),
];

/// Placeholders of `format!` statements that Rust fills at run time, by
/// function and placeholder: one value each takes, so that the statement
/// can be planned.
const RENDERINGS: &[(&str, &str, &str)] = &[
    (
        "transition",
        "set",
        "status = 'dismissed', dismissed_at = now(), dismissed_by = $3",
    ),
    ("transition", "from", "('active', 'acknowledged')"),
    ("pseudonymize_batch", "walked", "principal_commitment = $2"),
    ("pseudonymize_batch", "also", ""),
    ("pseudonymize_batch", "assign", "principal_id = $3"),
    (
        "sql",
        "failed()",
        "organization_id = $1 AND status = 'failure'",
    ),
    (
        "sql",
        "phi()",
        "organization_id = $1 AND data_classification = 'PHI'",
    ),
    ("sql", "column", "severity"),
    (
        "prepare_events",
        "archived",
        "UNION ALL SELECT {columns}, NULL::text FROM verify_archived WHERE {filter}",
    ),
];

#[actix_web::test]
async fn the_catalogue_follows_citus_rules_for_tables_distributed_by_organization() {
    let app = spawn_app().await;
    let db = app.database().await;
    let catalogue = Catalogue::read(&db).await;

    let local: BTreeSet<&str> = LOCAL_TABLES.iter().map(|(name, _)| *name).collect();
    for name in &local {
        assert!(
            catalogue.tables.contains_key(*name),
            "{name} is declared local but does not exist"
        );
    }
    let mut problems = Vec::new();
    for (name, organization_not_null) in &catalogue.tables {
        if local.contains(name.as_str()) {
            continue;
        }
        match organization_not_null {
            None => problems.push(format!(
                "{name} has no organization_id: distribute it by one or declare it a local table"
            )),
            Some(false) => problems.push(format!(
                "{name}.organization_id may be NULL: a distributed row needs its organization"
            )),
            Some(true) => {}
        }
    }
    let distributed: BTreeSet<&str> = catalogue
        .tables
        .keys()
        .map(String::as_str)
        .filter(|name| !local.contains(name))
        .collect();
    assert!(distributed.len() >= 30, "{distributed:?}");

    let rows = db
        .query(
            "SELECT c.relname, i.indexrelid::regclass::text, i.indisprimary, \
               (SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(i.indkey[0:i.indnkeyatts - 1]) \
                  WITH ORDINALITY AS k(attnum, n) JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum), \
               coalesce((SELECT array_agg(a.attname::text) FROM pg_partitioned_table p, unnest(p.partattrs) AS k(attnum) \
                  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum WHERE p.partrelid = c.oid), '{}') \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
             WHERE c.relnamespace = 'public'::regnamespace AND i.indisunique",
            &[],
        )
        .await
        .unwrap();
    let mut with_primary_key = BTreeSet::<String>::new();
    for row in rows {
        let table: String = row.get(0);
        let Some(root) = catalogue.root_of(&table) else {
            continue;
        };
        if !distributed.contains(root) {
            continue;
        }
        let (index, columns, partition_key): (String, Vec<String>, Vec<String>) =
            (row.get(1), row.get(3), row.get(4));
        if !columns.iter().any(|column| column == "organization_id") {
            problems.push(format!(
                "unique index {index} of {table} lacks organization_id: {columns:?}"
            ));
        }
        for key in &partition_key {
            if !columns.contains(key) {
                problems.push(format!(
                    "unique index {index} of partitioned {table} lacks its partition key {key}"
                ));
            }
        }
        if row.get::<_, bool>(2) {
            with_primary_key.insert(root.to_owned());
            if columns.first().map(String::as_str) != Some("organization_id") {
                problems.push(format!(
                    "primary key {index} of {table} does not lead with organization_id: {columns:?}"
                ));
            }
        }
    }
    for table in distributed
        .iter()
        .filter(|table| !with_primary_key.contains(**table))
    {
        problems.push(format!("{table} has no primary key"));
    }

    let keys = db
        .query(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text, c.conname::text, c.contype::text, \
               (SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) \
                  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum), \
               coalesce((SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, n) \
                  JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum), '{}') \
             FROM pg_constraint c \
             WHERE c.connamespace = 'public'::regnamespace AND c.contype IN ('f', 'x') AND c.conparentid = 0",
            &[],
        )
        .await
        .unwrap();
    let mut foreign_keys = 0;
    for row in keys {
        let (table, referenced, name, kind): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let (columns, referenced_columns): (Vec<String>, Vec<String>) = (row.get(4), row.get(5));
        let from_distributed = distributed.contains(table.as_str());
        if kind == "x" {
            if from_distributed && !columns.iter().any(|column| column == "organization_id") {
                problems.push(format!(
                    "exclusion constraint {name} of {table} lacks organization_id"
                ));
            }
            continue;
        }
        foreign_keys += 1;
        let to_distributed = distributed.contains(referenced.as_str());
        match (from_distributed, to_distributed) {
            (true, true) => {
                let paired = columns
                    .iter()
                    .zip(&referenced_columns)
                    .any(|(from, to)| from == "organization_id" && to == "organization_id");
                if !paired {
                    problems.push(format!(
                        "foreign key {name} from {table} to {referenced} does not pair organization_id: \
                         {columns:?} -> {referenced_columns:?}"
                    ));
                }
            }
            (false, false) => {}
            _ => problems.push(format!(
                "foreign key {name} joins the distributed and the local table {table} -> {referenced}"
            )),
        }
    }
    assert!(
        foreign_keys >= 7,
        "the tenant tables' foreign keys were read: {foreign_keys}"
    );

    // docs/scaling.md gives the call that places each table: it must name them all.
    let scaling =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/scaling.md"))
            .expect("docs/scaling.md");
    for table in &distributed {
        if !scaling.contains(&format!(
            "create_distributed_table('{table}', 'organization_id'"
        )) {
            problems.push(format!("docs/scaling.md does not distribute {table}"));
        }
    }
    for table in &local {
        if !scaling.contains(&format!("`{table}`")) {
            problems.push(format!(
                "docs/scaling.md does not place the local table {table}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[actix_web::test]
async fn every_statement_on_a_tenant_table_filters_by_organization() {
    let app = spawn_app().await;
    two_organizations_of_data(&app).await;
    let db = app.database().await;
    // The performance report reads pg_stat_statements where it is installed.
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; ANALYZE")
        .await
        .unwrap();
    let catalogue = Catalogue::read(&db).await;
    let local: BTreeSet<&str> = LOCAL_TABLES.iter().map(|(name, _)| *name).collect();

    let statements = Sources::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")).statements();
    assert!(
        statements.len() >= 250,
        "the statements of src/ were found: {}",
        statements.len()
    );

    let mut unplanned = Vec::new();
    let mut unscoped = Vec::new();
    let mut excused = BTreeSet::new();
    let mut planned = 0;
    let mut spanning = 0;
    for statement in &statements {
        let sql = match statement.rendered() {
            Ok(sql) => sql,
            Err(placeholder) => {
                unplanned.push(format!(
                    "{}: no rendering of {{{placeholder}}}",
                    statement.place()
                ));
                continue;
            }
        };
        let plan = match generic_plan(&db, &sql).await {
            Ok(plan) => plan,
            Err(error) => {
                unplanned.push(format!("{}: {error}\n  {sql}", statement.place()));
                continue;
            }
        };
        planned += 1;
        let mut missing = BTreeSet::new();
        unscoped_scans(&plan, &mut Vec::new(), &mut |relation| {
            if let Some(root) = catalogue.root_of(relation) {
                if !local.contains(root) {
                    missing.insert(root.to_owned());
                }
            }
        });
        if missing.is_empty() {
            continue;
        }
        let exception = CROSS_ORGANIZATION
            .iter()
            .find(|(file, function, _)| *file == statement.file && *function == statement.function);
        if let Some((file, function, _)) = exception {
            excused.insert((*file, *function));
            spanning += 1;
            continue;
        }
        unscoped.push(format!(
            "{} reads {missing:?} without organization_id\n  {}",
            statement.place(),
            sql.chars().take(160).collect::<String>()
        ));
    }
    let stale: Vec<(&str, &str)> = CROSS_ORGANIZATION
        .iter()
        .map(|(file, function, _)| (*file, *function))
        .filter(|exception| !excused.contains(exception))
        .collect();
    assert!(
        unplanned.is_empty(),
        "statements that could not be planned:\n{}",
        unplanned.join("\n")
    );
    assert!(
        unscoped.is_empty(),
        "{} statements span organizations:\n{}",
        unscoped.len(),
        unscoped.join("\n")
    );
    assert!(
        stale.is_empty(),
        "exceptions no statement needs any more: {stale:?}"
    );
    assert!(planned >= 250, "{planned} statements planned");
    println!(
        "{planned} statements planned; {spanning} of them span organizations, in {} functions",
        excused.len()
    );
}

/// Events, a destination and a delivery for two organizations.
async fn two_organizations_of_data(app: &TestApp) {
    for organization in ["org-a", "org-b"] {
        let key = app.create_key(organization, "org:admin").await;
        let events: Vec<_> = (0..20)
            .map(|n| {
                event(&format!("user-{n}"), "patient.record.read")
                    .target("Patient", format!("p-{n}"))
            })
            .collect();
        app.ingest(&key, events).await;
        let destination = app
            .create_destination(&key, common::webhook("hook", "http://127.0.0.1:9/hook"))
            .await;
        app.enqueue(&key, &[destination], serde_json::json!({"n": 1}))
            .await;
    }
}

/// The generic plan of `sql` (as a prepared statement runs it, with its
/// parameters unknown), planned by this database.
async fn generic_plan(db: &tokio_postgres::Client, sql: &str) -> Result<Value, String> {
    let outcome = async {
        // Statements of a verification read the session's copy of archived events.
        db.batch_execute(
            "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; \
             CREATE TEMPORARY TABLE verify_archived (LIKE audit_log) ON COMMIT DROP",
        )
        .await?;
        db.batch_execute(&format!("PREPARE statement AS {sql}")).await?;
        let parameters: i64 = db
            .query_one(
                "SELECT coalesce(cardinality(parameter_types), 0)::int8 FROM pg_prepared_statements \
                 WHERE name = 'statement'",
                &[],
            )
            .await?
            .get(0);
        let arguments = match parameters {
            0 => String::new(),
            n => format!("({})", vec!["NULL"; n as usize].join(", ")),
        };
        let row = db
            .query_one(&format!("EXPLAIN (FORMAT JSON) EXECUTE statement{arguments}"), &[])
            .await?;
        Ok::<Value, tokio_postgres::Error>(row.get(0))
    }
    .await;
    db.batch_execute("ROLLBACK; DEALLOCATE ALL").await.unwrap();
    outcome
        .map(|plan| plan[0]["Plan"].clone())
        .map_err(|error| match error.as_db_error() {
            Some(db_error) => db_error.message().to_owned(),
            None => error.to_string(),
        })
}

/// Calls `unscoped` with each relation a plan scans without an
/// `organization_id` equality among its own conditions or those of a join
/// above it (below the rows' lock, if any). Inserts are routed by the row
/// they insert (whose organization is NOT NULL): only scans are checked.
fn unscoped_scans<'a>(
    node: &'a Value,
    above: &mut Vec<&'a Value>,
    unscoped: &mut impl FnMut(&str),
) {
    if let Some(relation) = node["Relation Name"].as_str() {
        if node["Node Type"] != "ModifyTable" {
            let scoped = organization_equality(node)
                || bitmap_children(node).any(organization_equality)
                || above.iter().any(|join| organization_equality(join));
            if !scoped {
                unscoped(relation);
            }
        }
    }
    // Rows locked (`FOR UPDATE`) must be found in one organization by the
    // locking query itself: Citus locks rows only in a query it routes to one
    // shard, so a join above the lock does not count.
    let mut below_lock = Vec::new();
    let above = if node["Node Type"] == "LockRows" {
        &mut below_lock
    } else {
        above
    };
    above.push(node);
    for child in node["Plans"].as_array().into_iter().flatten() {
        unscoped_scans(child, above, unscoped);
    }
    above.pop();
}

/// The index scans whose conditions all hold for the rows of a bitmap scan:
/// its own, and those under a `BitmapAnd` (not a `BitmapOr`, where each holds
/// for some rows only).
fn bitmap_children(node: &Value) -> impl Iterator<Item = &Value> {
    node["Plans"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|child| match child["Node Type"].as_str() {
            Some("Bitmap Index Scan") => vec![child],
            Some("BitmapAnd") => bitmap_children(child).collect(),
            _ => Vec::new(),
        })
}

/// Whether one of the node's conditions has, as a conjunct of its top level
/// (not under an OR), `organization_id = …` or `organization_id = ANY (…)`.
fn organization_equality(node: &Value) -> bool {
    [
        "Filter",
        "Index Cond",
        "Recheck Cond",
        "Hash Cond",
        "Merge Cond",
        "Join Filter",
        "TID Cond",
    ]
    .iter()
    .filter_map(|field| node[*field].as_str())
    .flat_map(conjuncts)
    .any(|conjunct| {
        !has_top_level(conjunct, " OR ")
            && conjunct.split(" = ").count() == 2
            && conjunct.split(" = ").any(|side| {
                let side = side.trim_matches(|c| c == '(' || c == ')');
                let side = side
                    .split("::")
                    .next()
                    .unwrap_or(side)
                    .trim_end_matches(')');
                side == "organization_id" || side.ends_with(".organization_id")
            })
    })
}

/// The top-level conjuncts of a plan's condition, outer parentheses removed.
fn conjuncts(condition: &str) -> Vec<&str> {
    let condition = unwrap_parentheses(condition);
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    let bytes = condition.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b' ' if depth == 0 && condition[i..].starts_with(" AND ") => {
                parts.push(unwrap_parentheses(&condition[start..i]));
                start = i + 5;
                i += 4;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(unwrap_parentheses(&condition[start..]));
    parts
}

fn has_top_level(condition: &str, operator: &str) -> bool {
    let mut depth = 0;
    condition.char_indices().any(|(i, c)| {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        depth == 0 && condition[i..].starts_with(operator)
    })
}

/// `(a AND b)` -> `a AND b`, but `(a) AND (b)` unchanged.
fn unwrap_parentheses(mut text: &str) -> &str {
    loop {
        text = text.trim();
        if !(text.starts_with('(') && text.ends_with(')')) {
            return text;
        }
        let mut depth = 0;
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 && i < text.len() - 1 {
                return text;
            }
        }
        text = &text[1..text.len() - 1];
    }
}

/// The tables of the public schema (partitions under their root), read from
/// the catalogue.
struct Catalogue {
    /// Each table and whether its organization_id is NOT NULL (None: no such column).
    tables: BTreeMap<String, Option<bool>>,
    /// Each partition's root table.
    partitions: HashMap<String, String>,
}

impl Catalogue {
    async fn read(db: &tokio_postgres::Client) -> Self {
        let rows = db
            .query(
                "SELECT c.relname::text, (SELECT a.attnotnull FROM pg_attribute a \
                   WHERE a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped) \
                 FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace \
                   AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
                &[],
            )
            .await
            .unwrap();
        let tables = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        let rows = db
            .query(
                "SELECT c.relname::text, (SELECT r.relname::text FROM pg_partition_ancestors(c.oid) a \
                   JOIN pg_class r ON r.oid = a.relid WHERE NOT r.relispartition) \
                 FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relispartition \
                   AND c.relkind IN ('r', 'p')",
                &[],
            )
            .await
            .unwrap();
        let partitions = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        Self { tables, partitions }
    }

    /// The table a relation of a plan belongs to (itself, or its partition's root).
    fn root_of<'a>(&'a self, relation: &'a str) -> Option<&'a str> {
        match self.partitions.get(relation) {
            Some(root) => Some(root.as_str()),
            None => self.tables.contains_key(relation).then_some(relation),
        }
    }
}

/// A string of the source that reads as an SQL statement, with the function
/// it belongs to and its `{placeholders}` still to fill.
struct Statement {
    file: String,
    line: usize,
    function: String,
    template: String,
    constants: std::rc::Rc<Constants>,
}

impl Statement {
    fn place(&self) -> String {
        format!("{}:{} ({})", self.file, self.line, self.function)
    }

    /// The statement with its placeholders filled from constants of its
    /// file (then of any file) or from [`RENDERINGS`]; the placeholder
    /// missing otherwise.
    fn rendered(&self) -> Result<String, String> {
        fill(&self.template, &|name| {
            self.constants
                .get(&self.file, &self.function, name)
                .or_else(|| {
                    RENDERINGS
                        .iter()
                        .find(|(function, placeholder, _)| {
                            *function == self.function && *placeholder == name
                        })
                        .map(|(_, _, value)| (*value).to_owned())
                })
        })
    }
}

/// `{name}` placeholders filled by `lookup`, recursively; `{{` and `}}` kept
/// as braces.
fn fill(template: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        if rest[open..].starts_with("{{") {
            out.push('{');
            rest = &rest[open + 2..];
            continue;
        }
        let close = rest[open..].find('}').ok_or_else(|| rest.to_owned())? + open;
        let name = &rest[open + 1..close];
        let value = lookup(name).ok_or_else(|| name.to_owned())?;
        out.push_str(&fill(&value, lookup)?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out.replace("}}", "}"))
}

/// String constants (`const NAME: &str = "…"`, or `concat!` of literals and
/// known macros) by file and name, strings bound by `let` in a function, and
/// the constants a file imports (`use super::events::EVENT_COLUMNS`).
#[derive(Default)]
struct Constants {
    by_file: HashMap<(String, String), String>,
    locals: HashMap<(String, String, String), String>,
    imports: HashMap<(String, String), String>,
}

impl Constants {
    /// `name` as `function` of `file` sees it: its own binding, its file's
    /// constant, the one its file imports, or the only one of that name.
    fn get(&self, file: &str, function: &str, name: &str) -> Option<String> {
        let key = |name: &str| (file.to_owned(), name.to_owned());
        if let Some(value) =
            self.locals
                .get(&(file.to_owned(), function.to_owned(), name.to_owned()))
        {
            return Some(value.clone());
        }
        if let Some(value) = self.by_file.get(&key(name)) {
            return Some(value.clone());
        }
        let path = self.imports.get(&key(name)).map_or(name, String::as_str);
        if let Some((module, constant)) = path.rsplit_once("::") {
            let module = module.rsplit("::").next().unwrap_or(module);
            return self
                .by_file
                .iter()
                .find(|((f, n), _)| n == constant && f.ends_with(&format!("/{module}.rs")))
                .map(|(_, value)| value.clone());
        }
        let mut values = self
            .by_file
            .iter()
            .filter(|((_, n), _)| n == name)
            .map(|(_, v)| v);
        match (values.next(), values.next()) {
            (Some(value), None) => Some(value.clone()),
            _ => None,
        }
    }
}

/// The Rust sources of a directory, parsed.
struct Sources {
    files: Vec<(String, syn::File)>,
}

impl Sources {
    fn read(root: &Path) -> Self {
        let mut paths = Vec::new();
        collect_rust_files(root, &mut paths);
        let files = paths
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).unwrap();
                let name = path
                    .strip_prefix(root.parent().unwrap())
                    .unwrap()
                    .display()
                    .to_string();
                (
                    name,
                    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                )
            })
            .collect();
        Self { files }
    }

    /// Every string of the sources that starts an SQL statement once its
    /// constants are filled in; tests (`#[cfg(test)]`) left out.
    fn statements(&self) -> Vec<Statement> {
        // First the macros (`macro_rules!` whose body is one `concat!`) and
        // the constants, of every file; then the statements.
        let mut macros = HashMap::new();
        for (_, file) in &self.files {
            for item in &file.items {
                if let syn::Item::Macro(definition) = item {
                    if let (Some(name), Some(body)) =
                        (&definition.ident, concat_macro(&definition.mac.tokens))
                    {
                        macros.insert(name.to_string(), body);
                    }
                }
            }
        }
        let mut constants = Constants::default();
        let mut found = Vec::new();
        for (name, file) in &self.files {
            let mut walker = Walker {
                file: name,
                macros: &macros,
                function: String::new(),
                constants: &mut constants,
                strings: Vec::new(),
            };
            walker.visit_file(file);
            found.extend(
                walker
                    .strings
                    .into_iter()
                    .map(|(line, function, text)| (name.clone(), line, function, text)),
            );
        }
        let constants = std::rc::Rc::new(constants);
        found
            .into_iter()
            .map(|(file, line, function, template)| Statement {
                file,
                line,
                function,
                template,
                constants: constants.clone(),
            })
            .filter(|statement| {
                let start = fill(&statement.template, &|name| {
                    statement
                        .constants
                        .get(&statement.file, &statement.function, name)
                })
                .unwrap_or_else(|_| statement.template.clone());
                let start = start.trim_start();
                ["SELECT ", "INSERT ", "UPDATE ", "DELETE ", "WITH "]
                    .iter()
                    .any(|keyword| start.starts_with(keyword))
            })
            .collect()
    }
}

fn collect_rust_files(directory: &Path, into: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(directory)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// A `macro_rules!` of one arm (with no parameter or one `$name:literal`)
/// whose body is a `concat!`: that `concat!`, its parameter replaced by the
/// string `"{$}"`.
fn concat_macro(tokens: &TokenStream) -> Option<syn::Macro> {
    let body = tokens.clone().into_iter().find_map(|token| match token {
        TokenTree::Group(group) if group.delimiter() == proc_macro2::Delimiter::Brace => {
            Some(group.stream())
        }
        _ => None,
    })?;
    let mac: syn::Macro = syn::parse2(parameters_as_strings(body)).ok()?;
    mac.path.is_ident("concat").then_some(mac)
}

/// `$name` replaced by the string `"{$}"`, in groups too.
fn parameters_as_strings(tokens: TokenStream) -> TokenStream {
    let mut out = Vec::new();
    let mut dollar = false;
    for token in tokens {
        match token {
            TokenTree::Punct(p) if p.as_char() == '$' => dollar = true,
            TokenTree::Ident(_) if dollar => {
                out.push(TokenTree::Literal(proc_macro2::Literal::string("{$}")));
                dollar = false;
            }
            TokenTree::Group(group) => {
                let inner = parameters_as_strings(group.stream());
                out.push(TokenTree::Group(proc_macro2::Group::new(
                    group.delimiter(),
                    inner,
                )));
            }
            other => out.push(other),
        }
    }
    out.into_iter().collect()
}

/// Walks one file: records string constants, and every string literal (or
/// `format!` template, or `concat!`) with the function it is in.
struct Walker<'a> {
    file: &'a str,
    macros: &'a HashMap<String, syn::Macro>,
    function: String,
    constants: &'a mut Constants,
    strings: Vec<(usize, String, String)>,
}

impl Walker<'_> {
    /// The template of a string expression: a literal, a known macro, or a
    /// constant's name (as its placeholder).
    fn template(&self, expr: &Expr) -> Option<String> {
        match expr {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Str(literal),
                ..
            }) => Some(literal.value().replace('{', "{{").replace('}', "}}")),
            Expr::Macro(call) => self.macro_template(&call.mac),
            Expr::Path(path) => Some(format!(
                "{{{}}}",
                path.to_token_stream().to_string().replace(' ', "")
            )),
            _ => None,
        }
    }

    fn macro_template(&self, mac: &syn::Macro) -> Option<String> {
        let name = mac.path.segments.last()?.ident.to_string();
        let arguments = mac
            .parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated)
            .ok()?;
        match name.as_str() {
            "concat" => arguments.iter().map(|a| self.template(a)).collect(),
            "format" => {
                let Expr::Lit(syn::ExprLit {
                    lit: Lit::Str(template),
                    ..
                }) = arguments.first()?
                else {
                    return None;
                };
                Some(format_template(&template.value(), arguments.iter().skip(1)))
            }
            _ => {
                let template = self.macro_template(self.macros.get(&name)?)?;
                let argument = match arguments.first() {
                    Some(argument) => self.template(argument)?,
                    None => String::new(),
                };
                Some(template.replace("{{$}}", &argument))
            }
        }
    }
}

/// A `format!` template with positional `{}` and `{n}` named after their
/// argument's source text (an identifier names a constant).
fn format_template<'a>(template: &str, arguments: impl Iterator<Item = &'a Expr>) -> String {
    let arguments: Vec<String> = arguments
        .map(|argument| argument.to_token_stream().to_string().replace(' ', ""))
        .collect();
    let mut out = String::new();
    let mut next = 0;
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        if rest[open..].starts_with("{{") {
            out.push_str("{{");
            rest = &rest[open + 2..];
            continue;
        }
        let close = rest[open..].find('}').map_or(rest.len(), |c| c + open);
        let inside = &rest[open + 1..close];
        let name = if inside.is_empty() {
            next += 1;
            arguments.get(next - 1).cloned().unwrap_or_default()
        } else if let Ok(index) = inside.parse::<usize>() {
            arguments.get(index).cloned().unwrap_or_default()
        } else {
            inside.to_owned()
        };
        out.push_str(&format!("{{{name}}}"));
        rest = rest.get(close + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

impl<'ast> Visit<'ast> for Walker<'_> {
    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {
        // Doc comments are prose, not statements.
    }

    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        let is_test = module
            .attrs
            .iter()
            .any(|a| a.path().is_ident("cfg") && a.to_token_stream().to_string().contains("test"));
        if !is_test {
            syn::visit::visit_item_mod(self, module);
        }
    }

    fn visit_item_fn(&mut self, function: &'ast syn::ItemFn) {
        let outer = std::mem::replace(&mut self.function, function.sig.ident.to_string());
        syn::visit::visit_item_fn(self, function);
        self.function = outer;
    }

    fn visit_impl_item_fn(&mut self, function: &'ast syn::ImplItemFn) {
        let outer = std::mem::replace(&mut self.function, function.sig.ident.to_string());
        syn::visit::visit_impl_item_fn(self, function);
        self.function = outer;
    }

    fn visit_item_const(&mut self, constant: &'ast syn::ItemConst) {
        if let Some(template) = self.template(&constant.expr) {
            self.constants.by_file.insert(
                (self.file.to_owned(), constant.ident.to_string()),
                template.clone(),
            );
            let line = constant.ident.span().start().line;
            self.strings
                .push((line, constant.ident.to_string(), template));
        }
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        if let (syn::Pat::Ident(binding), Some(init)) = (&local.pat, &local.init) {
            if let Some(template) = self.template(&init.expr) {
                let key = (
                    self.file.to_owned(),
                    self.function.clone(),
                    binding.ident.to_string(),
                );
                self.constants.locals.insert(key, template);
            }
        }
        syn::visit::visit_local(self, local);
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        fn imports(tree: &syn::UseTree, path: &mut Vec<String>, into: &mut Vec<(String, String)>) {
            match tree {
                syn::UseTree::Path(p) => {
                    path.push(p.ident.to_string());
                    imports(&p.tree, path, into);
                    path.pop();
                }
                syn::UseTree::Name(n) if n.ident != "self" => {
                    into.push((
                        n.ident.to_string(),
                        format!("{}::{}", path.join("::"), n.ident),
                    ));
                }
                syn::UseTree::Group(g) => g.items.iter().for_each(|t| imports(t, path, into)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        imports(&item.tree, &mut Vec::new(), &mut found);
        for (name, path) in found {
            self.constants
                .imports
                .insert((self.file.to_owned(), name), path);
        }
    }

    fn visit_expr(&mut self, expr: &'ast Expr) {
        match expr {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Str(literal),
                ..
            }) => {
                let template = literal.value().replace('{', "{{").replace('}', "}}");
                self.strings
                    .push((literal.span().start().line, self.function.clone(), template));
            }
            Expr::Macro(call) => self.visit_macro(&call.mac),
            _ => syn::visit::visit_expr(self, expr),
        }
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let line = mac
            .path
            .segments
            .first()
            .map_or(0, |s| s.ident.span().start().line);
        if let Some(template) = self.macro_template(mac) {
            self.strings.push((line, self.function.clone(), template));
            return;
        }
        // Any other macro (`vec!`, `matches!`…): its arguments, where they are expressions.
        if let Ok(arguments) = mac.parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated)
        {
            for argument in &arguments {
                self.visit_expr(argument);
            }
        }
    }
}
