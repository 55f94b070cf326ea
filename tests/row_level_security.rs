//! Row-level security on its own: even a raw query with no organization filter,
//! run in a transaction scoped to one tenant, sees none of another's rows and
//! cannot write them.

mod common;

use audit_worker::db::connection::PgConnection;
use audit_worker::db::tenant;
use common::spawn_app;

#[actix_web::test]
async fn an_unfiltered_query_sees_only_the_scoped_tenant() {
    let app = spawn_app().await;
    let mut db = PgConnection::new(app.database().await);
    db.batch_execute(
        "INSERT INTO organization_role (organization_id, name) VALUES ('org-a', 'ra'), ('org-b', 'rb');
         INSERT INTO alerts (organization_id, severity, type, title, source)
           VALUES ('org-a', 'LOW', 'CUSTOM', 'a', 'test'), ('org-b', 'LOW', 'CUSTOM', 'b', 'test');
         INSERT INTO audit_log (organization_id, \"timestamp\", principal_id, action, status, hash,
             principal_commitment, chain_link)
           VALUES ('org-a', now(), 'u', 'x', 'success', repeat('a', 64), repeat('c', 64), 0),
                  ('org-b', now(), 'u', 'x', 'success', repeat('b', 64), repeat('c', 64), 0);",
    )
    .await
    .unwrap();

    let transaction = tenant::begin(&mut db, "org-a").await.unwrap();
    for table in ["organization_role", "alerts", "audit_log"] {
        let organizations: Vec<String> = transaction
            .query(
                &format!("SELECT DISTINCT organization_id FROM {table}"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(organizations, ["org-a"], "{table}");
    }
    // Partitions are not reachable directly from the tenant role.
    let partition: String = transaction
        .query_one(
            "SELECT format('audit_log_%s', to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(transaction
        .query(&format!("SELECT * FROM {partition}"), &[])
        .await
        .is_err());
    transaction.rollback().await.unwrap();

    // Writing another tenant's row is refused.
    let transaction = tenant::begin(&mut db, "org-a").await.unwrap();
    let error = transaction
        .execute(
            "INSERT INTO organization_role (organization_id, name) VALUES ('org-b', 'sneaky')",
            &[],
        )
        .await
        .unwrap_err();
    let message = error
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("row-level security"), "{error:?}");
    transaction.rollback().await.unwrap();

    // A tenant transaction without an organization sees nothing at all.
    let transaction = tenant::begin(&mut db, "").await.unwrap();
    let count: i64 = transaction
        .query_one("SELECT count(*) FROM alerts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

/// A scoped transaction's statements are prepared on the connection after
/// their first use and reused from then on (the scope above held in both
/// forms: its first transaction went unnamed, the later ones prepared).
#[actix_web::test]
async fn the_scope_s_statements_are_prepared_once_per_connection() {
    let app = spawn_app().await;
    let mut db = PgConnection::new(app.database().await);
    for _ in 0..3 {
        let transaction = tenant::begin(&mut db, "org-a").await.unwrap();
        transaction.rollback().await.unwrap();
    }
    // Unnamed itself, so that it is not listed.
    let prepared: Vec<String> = db
        .query_typed(
            "SELECT statement FROM pg_prepared_statements ORDER BY statement",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        prepared,
        [
            "SELECT set_config('app.organization_id', $1, true)",
            "SET LOCAL ROLE audit_worker_tenant"
        ]
    );
}
