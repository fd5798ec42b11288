//! The dispatcher: pushes local changes to the providers' APIs.
//!
//! It claims a record's pending outbox rows (`FOR UPDATE SKIP LOCKED`,
//! plus a per-record advisory lock), reads the record's current row, and
//! makes one push of that latest state — several quick changes coalesce into
//! one push. The claim is held for the push: if the process dies mid-push,
//! the transaction rolls back, the rows are pending again, and the next push
//! finds the remote object by its external id instead of creating another.
//!
//! Architecture invariants:
//! - A change is never pushed to the provider it came from: capture skips
//!   it (`syncbridge.origin`), and the dispatcher's own bookkeeping writes
//!   run with the origin set too.
//! - Several dispatchers (several `serve` processes) never push the same
//!   record at the same time, and never close the same change twice.
//! - Failures retry with exponential backoff and jitter (a 429's
//!   `Retry-After` wins when it is later); after the last attempt the
//!   changes are `failed` and the record shows the error.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::DispatcherConfig;
use crate::db::outbox::{self, DueRecord};
use crate::db::{DbError, Pool};
use crate::providers::{Change, Provider, PushError, Registry};

/// Records pushed at once per provider (the provider's pacer still spaces
/// the requests).
const CONCURRENCY: usize = 8;

#[derive(Clone)]
pub struct Dispatcher {
    pool: Pool,
    providers: Vec<Arc<dyn Provider>>,
    config: DispatcherConfig,
}

/// What one drain did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrainStats {
    pub pushed: usize,
    pub retried: usize,
    pub failed: usize,
}

enum Done {
    Pushed,
    Retried,
    Failed,
    Skipped,
}

impl Dispatcher {
    pub fn new(pool: Pool, registry: &Registry, config: DispatcherConfig) -> Dispatcher {
        Dispatcher {
            pool,
            providers: registry.pushers(),
            config,
        }
    }

    /// Runs until cancelled: drains whenever `wake` fires (the listener's
    /// doorbell) and on a timer (retries that came due, lost notifications).
    pub async fn run(self, wake: Arc<Notify>, cancel: CancellationToken) {
        if self.providers.is_empty() {
            return;
        }
        let poll = self.config.poll_interval;
        let stop = cancel.clone();
        crate::worker::drain_loop("dispatcher", wake, poll, cancel, async || {
            self.drain(&stop).await
        })
        .await;
    }

    /// Pushes until nothing is due (or cancelled between rounds).
    pub async fn drain(&self, cancel: &CancellationToken) -> Result<DrainStats, DbError> {
        let mut stats = DrainStats::default();
        loop {
            let mut progressed = false;
            for p in &self.providers {
                let due = {
                    let client = self.pool.get().await?;
                    outbox::due_records(&client, p.name(), self.config.batch_size).await?
                };
                if due.is_empty() {
                    continue;
                }
                let results: Vec<Result<Done, DbError>> = futures_util::stream::iter(due)
                    .map(|rec| self.dispatch(p.as_ref(), rec))
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
                for r in results {
                    match r? {
                        Done::Pushed => {
                            stats.pushed += 1;
                            progressed = true;
                        }
                        Done::Retried => {
                            stats.retried += 1;
                            progressed = true;
                        }
                        Done::Failed => {
                            stats.failed += 1;
                            progressed = true;
                        }
                        Done::Skipped => {}
                    }
                }
            }
            if !progressed || cancel.is_cancelled() {
                return Ok(stats);
            }
        }
    }

    async fn dispatch(&self, provider: &dyn Provider, rec: DueRecord) -> Result<Done, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(claimed) = outbox::claim_record(&tx, provider.name(), &rec).await? else {
            // Held by a conflict (the hold is written) or claimed elsewhere.
            tx.commit().await?;
            return Ok(Done::Skipped);
        };
        if let Some(bytes) = claimed.oversized {
            let error = format!(
                "the record is {bytes} bytes as JSON, over the {} the dispatcher reads for a push",
                outbox::MAX_RECORD_BYTES
            );
            tracing::warn!(provider = %provider.name(), table = %rec.table, record = %rec.record_id, %error, "push refused");
            outbox::record_failure(&tx, provider.name(), &rec, &claimed, &error, None).await?;
            tx.commit().await?;
            metrics::counter!("syncbridge_pushes_total", "provider" => provider.name().as_str(), "result" => "failed")
                .increment(1);
            return Ok(Done::Failed);
        }
        let exists = claimed.row.is_some();
        let change = Change {
            table: rec.table.clone(),
            record_id: rec.record_id,
            row: claimed.row.clone(),
            deleted_row: claimed.deleted_row.clone(),
            remote_version: claimed.remote_version,
        };
        let started = Instant::now();
        let result = provider.push(&change).await;
        let name = provider.name().as_str();
        metrics::histogram!("syncbridge_push_seconds", "provider" => name)
            .record(started.elapsed());
        let done = match result {
            Ok(pushed) => {
                outbox::record_success(&tx, provider.name(), &rec, &claimed, &pushed, exists)
                    .await?;
                let lag = (Utc::now() - claimed.first_change_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::histogram!("syncbridge_change_to_push_seconds", "provider" => name)
                    .record(lag);
                Done::Pushed
            }
            Err(PushError::RemoteChanged(obj)) => {
                // Read before write found a newer remote state: apply it
                // under the rules now; the changes stay pending and the
                // next round pushes what the rules decided.
                outbox::reconcile_before_push(&tx, provider.name(), &rec, &claimed, &obj).await?;
                Done::Retried
            }
            Err(e) => {
                let attempt = claimed.attempts + 1;
                let permanent = matches!(e, PushError::Permanent(_));
                let after = match &e {
                    PushError::RateLimited(after) => *after,
                    _ => None,
                };
                let retry_at = if permanent {
                    None
                } else {
                    self.config.retry.retry_at(attempt, after)
                };
                tracing::warn!(provider = name, table = %rec.table, record = %rec.record_id,
                    attempt, error = %e, final = retry_at.is_none(), "push failed");
                outbox::record_failure(
                    &tx,
                    provider.name(),
                    &rec,
                    &claimed,
                    &e.to_string(),
                    retry_at,
                )
                .await?;
                if retry_at.is_some() {
                    Done::Retried
                } else {
                    Done::Failed
                }
            }
        };
        tx.commit().await?;
        let label = match done {
            Done::Pushed => "pushed",
            Done::Retried => "retried",
            Done::Failed => "failed",
            Done::Skipped => "skipped",
        };
        metrics::counter!("syncbridge_pushes_total", "provider" => name, "result" => label)
            .increment(1);
        Ok(done)
    }
}
