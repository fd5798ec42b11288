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
use crate::providers::{Change, Provider, PushError, PushOutcome, Registry};

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
    /// Changes the provider does not take (`skipped`).
    pub skipped: usize,
}

enum Done {
    Pushed,
    Retried,
    Failed,
    /// Claimed elsewhere, or held by a conflict.
    Skipped,
    /// The provider does not take the change (`PushError::Skipped`).
    Declined,
}

impl Done {
    fn label(&self) -> &'static str {
        match self {
            Done::Pushed => "pushed",
            Done::Retried => "retried",
            Done::Failed => "failed",
            Done::Skipped => "held",
            Done::Declined => "skipped",
        }
    }
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
                let batched = p.push_batch_size() > 1;
                let limit = if batched {
                    p.push_batch_size() as i64
                } else {
                    self.config.batch_size
                };
                let due = {
                    let client = self.pool.get().await?;
                    outbox::due_records(&client, p.name(), limit).await?
                };
                if due.is_empty() {
                    continue;
                }
                let results: Vec<Result<Done, DbError>> = if batched {
                    self.dispatch_batch(p.as_ref(), due).await?
                } else {
                    futures_util::stream::iter(due)
                        .map(|rec| self.dispatch(p.as_ref(), rec))
                        .buffer_unordered(CONCURRENCY)
                        .collect()
                        .await
                };
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
                        Done::Declined => {
                            stats.skipped += 1;
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

    /// Pushes due records many at a time (a provider with
    /// [`Provider::push_batch`]): per table, one transaction claims them
    /// all and reads their rows in one statement, one `push_batch` carries
    /// them, and the results are recorded before the claim is released —
    /// each record's failure on its own.
    async fn dispatch_batch(
        &self,
        provider: &dyn Provider,
        due: Vec<DueRecord>,
    ) -> Result<Vec<Result<Done, DbError>>, DbError> {
        let mut by_table: std::collections::BTreeMap<String, Vec<uuid::Uuid>> = Default::default();
        for rec in due {
            by_table.entry(rec.table).or_default().push(rec.record_id);
        }
        let name = provider.name();
        let mut done = Vec::new();
        for (table, ids) in by_table {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let claimed = outbox::claim_records(&tx, name, &table, &ids).await?;
            if claimed.is_empty() {
                tx.commit().await?;
                continue;
            }
            let mut to_push = Vec::with_capacity(claimed.len());
            let mut changes = Vec::with_capacity(claimed.len());
            let mut outcomes = Vec::with_capacity(claimed.len());
            for (rec, c) in claimed {
                if let Some(bytes) = c.oversized {
                    let error = format!(
                        "the record is {bytes} bytes as JSON, over the {} the dispatcher reads for a push",
                        outbox::MAX_RECORD_BYTES
                    );
                    outbox::record_failure(&tx, name, &rec, &c, &error, None).await?;
                    outcomes.push(Done::Failed);
                    continue;
                }
                let mut change = change_of(&rec, &c);
                change.context = provider.push_context(&tx, &change).await?;
                changes.push(change);
                to_push.push((rec, c));
            }
            let started = Instant::now();
            let results = if changes.is_empty() {
                Vec::new()
            } else {
                provider.push_batch(&changes).await
            };
            metrics::histogram!("syncbridge_push_seconds", "provider" => name.as_str())
                .record(started.elapsed());
            let mut closed = Vec::new();
            // One result per change; a provider answering fewer leaves the
            // rest to be retried, never unrecorded.
            let took = started.elapsed();
            let mut results = results.into_iter();
            for ((rec, c), change) in to_push.iter().zip(&changes) {
                let result = results.next().unwrap_or_else(|| {
                    Err(PushError::Transient(
                        "the provider answered no result for this record".into(),
                    ))
                });
                let outcome = match result {
                    Ok(pushed) => {
                        if outbox::leaves_state(&rec.table, &pushed) {
                            outbox::record_success(&tx, name, rec, c, &pushed, c.row.is_some())
                                .await?;
                        } else {
                            closed.extend_from_slice(&c.ids);
                        }
                        provider
                            .after_push(&tx, change, PushOutcome::Pushed(&pushed), took)
                            .await?;
                        let lag = (Utc::now() - c.first_change_at)
                            .to_std()
                            .unwrap_or_default();
                        metrics::histogram!("syncbridge_change_to_push_seconds", "provider" => name.as_str())
                            .record(lag);
                        Done::Pushed
                    }
                    Err(e) => self.failed(&tx, provider, rec, c, change, e, took).await?,
                };
                outcomes.push(outcome);
            }
            if !closed.is_empty() {
                outbox::close_pushed(&tx, name, &closed).await?;
            }
            tx.commit().await?;
            for d in &outcomes {
                metrics::counter!("syncbridge_pushes_total", "provider" => name.as_str(), "result" => d.label())
                    .increment(1);
            }
            done.extend(outcomes.into_iter().map(Ok));
        }
        Ok(done)
    }

    /// Records a failed push: a retry at the backoff's time (a 429's
    /// `Retry-After` when later), or `failed` after the last attempt or a
    /// permanent error.
    #[allow(clippy::too_many_arguments)]
    async fn failed(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        p: &dyn Provider,
        rec: &DueRecord,
        claimed: &outbox::ClaimedRecord,
        change: &Change,
        e: PushError,
        took: std::time::Duration,
    ) -> Result<Done, DbError> {
        let provider = p.name();
        if let PushError::Skipped(reason) = &e {
            outbox::record_skipped(tx, provider, claimed, reason).await?;
            p.after_push(tx, change, PushOutcome::Skipped(reason), took)
                .await?;
            return Ok(Done::Declined);
        }
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
        tracing::warn!(provider = %provider, table = %rec.table, record = %rec.record_id,
            attempt, error = %e, final = retry_at.is_none(), "push failed");
        let error = e.to_string();
        outbox::record_failure(tx, provider, rec, claimed, &error, retry_at).await?;
        p.after_push(
            tx,
            change,
            PushOutcome::Failed {
                error: &error,
                last: retry_at.is_none(),
            },
            took,
        )
        .await?;
        Ok(if retry_at.is_some() {
            Done::Retried
        } else {
            Done::Failed
        })
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
        let mut change = change_of(&rec, &claimed);
        change.context = provider.push_context(&tx, &change).await?;
        let started = Instant::now();
        let result = provider.push(&change).await;
        let took = started.elapsed();
        let name = provider.name().as_str();
        metrics::histogram!("syncbridge_push_seconds", "provider" => name).record(took);
        let done = match result {
            Ok(mut pushed) => {
                if provider.writes_in_doubt() {
                    // An earlier write whose answer was lost may be in what
                    // the remote shows now (this push's answer, or a fetch
                    // that applied it in between): its window is declared,
                    // beside this push's own. Looked up before this push's
                    // window is recorded, which settles it. (Not gated on
                    // the changes' attempts: a change that arrives while a
                    // failed one backs off is claimed alone.)
                    let state = pushed.snapshots.iter().find(|(s, _)| *s == "primary");
                    let version = pushed.versions.iter().find(|(s, _)| *s == "primary");
                    if let (Some((_, serde_json::Value::Object(fields))), Some((_, version))) =
                        (state, version)
                    {
                        let doubt =
                            outbox::in_doubt_landed(&tx, provider.name(), &rec, fields, *version)
                                .await?;
                        match (doubt, pushed.write_window.is_some()) {
                            (Some(w), true) => {
                                outbox::declare_write_window(&tx, provider.name(), &rec, &w).await?
                            }
                            (Some(w), false) => pushed.write_window = Some(w),
                            (None, _) => {}
                        }
                    }
                }
                outbox::record_success(&tx, provider.name(), &rec, &claimed, &pushed, exists)
                    .await?;
                provider
                    .after_push(&tx, &change, PushOutcome::Pushed(&pushed), took)
                    .await?;
                let lag = (Utc::now() - claimed.first_change_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::histogram!("syncbridge_change_to_push_seconds", "provider" => name)
                    .record(lag);
                Done::Pushed
            }
            Err(PushError::RemoteChanged { object, wrote }) => {
                // Read before write found a newer remote state: apply it
                // under the rules now; the changes stay pending and the
                // next round pushes what the rules decided. A write whose
                // answer was lost earlier and whose values are there now
                // landed: its window is declared too.
                let wrote = match wrote {
                    Some(w) => Some(*w),
                    None => {
                        outbox::in_doubt_landed(
                            &tx,
                            provider.name(),
                            &rec,
                            &object.fields,
                            object.version,
                        )
                        .await?
                    }
                };
                if let Some(w) = &wrote {
                    outbox::declare_write_window(&tx, provider.name(), &rec, w).await?;
                }
                outbox::reconcile_before_push(&tx, provider.name(), &rec, &claimed, &object)
                    .await?;
                Done::Retried
            }
            Err(PushError::InDoubt { why, write }) => {
                outbox::record_in_doubt(&tx, provider.name(), &rec, &write).await?;
                self.failed(
                    &tx,
                    provider,
                    &rec,
                    &claimed,
                    &change,
                    PushError::Transient(why),
                    took,
                )
                .await?
            }
            Err(e) => {
                self.failed(&tx, provider, &rec, &claimed, &change, e, took)
                    .await?
            }
        };
        tx.commit().await?;
        metrics::counter!("syncbridge_pushes_total", "provider" => name, "result" => done.label())
            .increment(1);
        Ok(done)
    }
}

/// The change a claimed record is pushed as (its context read after).
fn change_of(rec: &DueRecord, c: &outbox::ClaimedRecord) -> Change {
    Change {
        table: rec.table.clone(),
        record_id: rec.record_id,
        row: c.row.clone(),
        deleted_row: c.deleted_row.clone(),
        remote_version: c.remote_version,
        changed: c.changed.clone(),
        created: c.created,
        context: serde_json::Value::Null,
    }
}
