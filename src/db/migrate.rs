//! Schema migrations: numbered up/down SQL pairs in `migrations/`, embedded
//! in the binary. Each runs in its own transaction under an advisory lock,
//! so several `serve` processes starting at once apply each exactly once.
//! (refinery and friends have no down migrations for tokio-postgres, which
//! the spec requires; this runner is the ~100 lines that needs.)

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::DbError;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

macro_rules! migration {
    ($version:literal, $file:literal) => {
        Migration {
            version: $version,
            name: $file,
            up: include_str!(concat!("../../migrations/", $file, ".up.sql")),
            down: include_str!(concat!("../../migrations/", $file, ".down.sql")),
        }
    };
}

/// Every migration, in order. A unit test checks this list against the
/// files in `migrations/`.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_supabase_compat"),
    migration!(2, "0002_inbox"),
    migration!(3, "0003_openphone_schema"),
    migration!(4, "0004_engine"),
    migration!(5, "0005_capture"),
    migration!(6, "0006_conflicts"),
    migration!(7, "0007_keap_schema"),
    migration!(8, "0008_fetch_queue"),
    migration!(9, "0009_engine_tuning"),
    migration!(10, "0010_capture_when"),
    migration!(11, "0011_e164_plpgsql"),
    migration!(12, "0012_partial_contact_indexes"),
    migration!(13, "0013_pull_runs"),
    migration!(14, "0014_teli_schema"),
    migration!(15, "0015_d1_schema"),
    migration!(16, "0016_d1_replica"),
    migration!(17, "0017_resman_schema"),
    migration!(18, "0018_integrity"),
    migration!(19, "0019_inbox_queue"),
    migration!(20, "0020_collate_c_links"),
];

/// Arbitrary, fixed: the advisory lock all migration runs share.
const LOCK_KEY: i64 = 0x5359_4e43_4d49_4752; // "SYNCMIGR"

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS syncbridge_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A migration and when it was applied, if it was.
pub struct MigrationStatus {
    pub version: i32,
    pub name: &'static str,
    pub applied_at: Option<DateTime<Utc>>,
    /// Applied, but the embedded script has changed since.
    pub modified: bool,
}

async fn applied(client: &Client) -> Result<Vec<(i32, String, DateTime<Utc>)>, DbError> {
    client.batch_execute(LEDGER).await?;
    let rows = client
        .query(
            "SELECT version, checksum, applied_at FROM syncbridge_migrations ORDER BY version",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

pub async fn status(client: &Client) -> Result<Vec<MigrationStatus>, DbError> {
    let done = applied(client).await?;
    Ok(MIGRATIONS
        .iter()
        .map(|m| {
            let row = done.iter().find(|(v, _, _)| *v == m.version);
            MigrationStatus {
                version: m.version,
                name: m.name,
                applied_at: row.map(|(_, _, at)| *at),
                modified: row.is_some_and(|(_, sum, _)| *sum != checksum(m.up)),
            }
        })
        .collect())
}

async fn with_lock<T>(
    client: &mut Client,
    f: impl AsyncFnOnce(&mut Client) -> Result<T, DbError>,
) -> Result<T, DbError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let out = f(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let out = out?;
    unlock?;
    Ok(out)
}

/// Applies every pending migration; returns the names applied.
pub async fn up(client: &mut Client) -> Result<Vec<&'static str>, DbError> {
    with_lock(client, async |client: &mut Client| {
        let done = applied(client).await?;
        let mut ran = Vec::new();
        for m in MIGRATIONS {
            if done.iter().any(|(v, _, _)| *v == m.version) {
                continue;
            }
            let tx = client.transaction().await?;
            tx.batch_execute(m.up).await.map_err(|e| {
                DbError::Migration(format!("migration {} failed: {}", m.name, describe(&e)))
            })?;
            tx.execute(
                "INSERT INTO syncbridge_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                &[&m.version, &m.name, &checksum(m.up)],
            )
            .await?;
            tx.commit().await?;
            tracing::info!(migration = m.name, "applied migration");
            ran.push(m.name);
        }
        Ok(ran)
    })
    .await
}

/// Reverts the `n` most recently applied migrations; returns their names.
pub async fn down(client: &mut Client, n: usize) -> Result<Vec<&'static str>, DbError> {
    with_lock(client, async |client: &mut Client| {
        let done = applied(client).await?;
        let mut ran = Vec::new();
        for (version, _, _) in done.iter().rev().take(n) {
            let m = MIGRATIONS
                .iter()
                .find(|m| m.version == *version)
                .ok_or_else(|| {
                    DbError::Migration(format!(
                        "migration {version} is applied but unknown to this binary: \
                         revert it with the binary that applied it"
                    ))
                })?;
            let tx = client.transaction().await?;
            tx.batch_execute(m.down).await.map_err(|e| {
                DbError::Migration(format!("reverting {} failed: {}", m.name, describe(&e)))
            })?;
            tx.execute(
                "DELETE FROM syncbridge_migrations WHERE version = $1",
                &[&m.version],
            )
            .await?;
            tx.commit().await?;
            tracing::info!(migration = m.name, "reverted migration");
            ran.push(m.name);
        }
        if applied(client).await?.is_empty() {
            client
                .batch_execute("DROP TABLE IF EXISTS syncbridge_migrations")
                .await?;
        }
        Ok(ran)
    })
    .await
}

/// The server's message, with detail and position when it has them.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_owned();
            if let Some(d) = db.detail() {
                s.push_str(": ");
                s.push_str(d);
            }
            if let Some(w) = db.where_() {
                s.push_str(" (");
                s.push_str(w);
                s.push(')');
            }
            s
        }
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_listed_in_order_with_its_pair() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut ups = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if let Some(stem) = name.strip_suffix(".up.sql") {
                assert!(
                    std::path::Path::new(dir)
                        .join(format!("{stem}.down.sql"))
                        .exists(),
                    "{stem} has no down script"
                );
                ups.push(stem.to_owned());
            }
        }
        ups.sort();
        let listed: Vec<_> = MIGRATIONS.iter().map(|m| m.name.to_owned()).collect();
        assert_eq!(ups, listed);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
        }
    }
}
