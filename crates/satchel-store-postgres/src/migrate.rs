//! The schema, as versioned migrations embedded in the binary and applied at start.
//!
//! All of it runs in one transaction under an advisory lock, so two nodes starting at once
//! apply each migration once (the second waits, then finds nothing left to do), and a failed
//! migration leaves the schema as it was. A database whose schema is newer than this binary
//! knows is refused rather than written to.

use tokio_postgres::Client;

use crate::OpenError;

/// (version, SQL), in order. Never edit one that has shipped: add the next.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_settle_order.sql")),
    (3, include_str!("migrations/0003_prefix_groups.sql")),
    // The webhook outbox.
    (4, include_str!("migrations/0004_webhooks.sql")),
    // Claims read only the rows they take (two partial indexes by batch).
    (5, include_str!("migrations/0005_unleased_index.sql")),
];

/// The advisory lock key that serialises migrations ("satchel-migrate").
const MIGRATE_LOCK: i64 = 0x5a7c_4e10_0000_0001;

pub(crate) async fn migrate(client: &mut Client) -> Result<(), OpenError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS satchel_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM satchel_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    let known = MIGRATIONS.last().map_or(0, |&(v, _)| v);
    if applied > known {
        return Err(OpenError::SchemaTooNew { applied, known });
    }
    for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO satchel_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "applied a schema migration");
    }
    tx.commit().await?;
    Ok(())
}
