//! Periodic jobs, safe with several `serve` processes: each run takes a
//! transaction-scoped advisory lock, so one process does it and the others
//! skip that round. Today: keep the audit log's current and next monthly
//! partitions in place (what `pg_cron` would do on Supabase), and, with
//! `SYNCBRIDGE_PUBLIC_URL` set, keep the providers' webhook subscriptions
//! (Keap's REST hooks) pointing here and verified.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::{DbError, Pool};
use crate::health::Health;

const PARTITION_LOCK: i64 = 0x5359_4e43_5041_5254; // "SYNCPART"
const PARTITION_EVERY: Duration = Duration::from_secs(3600);
const HOOKS_LOCK: i64 = 0x5359_4e43_484f_4f4b; // "SYNCHOOK"
const HOOKS_EVERY: Duration = Duration::from_secs(900);

/// Every `HOOKS_EVERY` (and at start): each enabled provider keeps its
/// webhook subscriptions at `public_url`. One process does it per round.
pub async fn maintain_subscriptions(
    pool: Pool,
    providers: Vec<Arc<dyn crate::providers::Provider>>,
    public_url: String,
    health: Arc<Health>,
    cancel: CancellationToken,
) {
    loop {
        match subscriptions_round(&pool, &providers, &public_url).await {
            Ok(()) => health.ok("subscriptions"),
            Err(e) => {
                tracing::warn!(error = %e, "could not maintain webhook subscriptions");
                health.problem("subscriptions", e);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HOOKS_EVERY) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

async fn subscriptions_round(
    pool: &Pool,
    providers: &[Arc<dyn crate::providers::Provider>],
    public_url: &str,
) -> Result<(), String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&HOOKS_LOCK])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if !locked {
        return Ok(());
    }
    let mut errors = Vec::new();
    for p in providers {
        match p.ensure_subscriptions(public_url).await {
            Ok(Some(summary)) => tracing::info!(provider = %p.name(), "{summary}"),
            Ok(None) => {}
            Err(e) => errors.push(format!("{}: {e}", p.name())),
        }
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

pub async fn run(pool: Pool, health: Arc<Health>, cancel: CancellationToken) {
    loop {
        match ensure_partitions(&pool).await {
            Ok(()) => health.ok("scheduler"),
            Err(e) => {
                tracing::warn!(error = %e, "could not ensure audit log partitions");
                health.problem("scheduler", format!("audit partitions: {e}"));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PARTITION_EVERY) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Creates this month's and next month's `sync_audit_log` partitions if
/// they are missing.
pub async fn ensure_partitions(pool: &Pool) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PARTITION_LOCK])
        .await?
        .get(0);
    if locked {
        tx.batch_execute(
            "SELECT create_monthly_partition('sync_audit_log', current_date);
             SELECT create_monthly_partition('sync_audit_log', (current_date + interval '1 month')::date);",
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
