//! The dispatcher: pushes local changes to the providers' APIs.
//!
//! It works in groups: one transaction claims the pending outbox rows of
//! up to [`GROUP`] records of a table (`FOR UPDATE SKIP LOCKED`, plus a
//! per-record advisory lock) and reads their current rows, in one
//! statement; each record gets one push of that latest state (several
//! quick changes coalesce into one push), [`CONCURRENCY`] at a time, or one
//! `push_batch` for a provider that writes many records per request; then
//! the results are recorded — the successes in one statement of each kind
//! for the whole group — and the transaction commits. The claim is held for
//! the push: if the process dies mid-push, the transaction rolls back, the
//! rows are pending again, and the next push finds the remote object by its
//! external id instead of creating another. A group whose bookkeeping fails
//! in the database is rolled back and its records are taken again one by
//! one, so one bad record fails alone (their pushes are repeated: a push of
//! a record's latest state is idempotent).
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
use crate::db::outbox::{self, ClaimedRecord, DueRecord, PushedRecord};
use crate::db::{DbError, Pool};
use crate::providers::{Change, Provider, PushError, PushOutcome, Pushed, Registry};

/// Pushes in flight at once in a group (the provider's pacer still spaces
/// the requests).
const CONCURRENCY: usize = 8;

/// Records claimed in one transaction (a provider's own push batch size
/// when it has one).
pub const GROUP: usize = 32;

/// Groups of one provider in flight at once.
const GROUPS: usize = 2;

/// Records a provider takes in one turn before the next provider's.
const TURN: usize = 512;

/// Takes the next group from `ready`: the first record's table and up to
/// `size` of that table's records, in order; the rest stay.
fn next_group(
    ready: &mut std::collections::VecDeque<DueRecord>,
    size: usize,
) -> Option<(String, Vec<uuid::Uuid>)> {
    let first = ready.pop_front()?;
    let mut ids = vec![first.record_id];
    let mut rest = std::collections::VecDeque::with_capacity(ready.len());
    for r in ready.drain(..) {
        if ids.len() < size && r.table == first.table {
            ids.push(r.record_id);
        } else {
            rest.push_back(r);
        }
    }
    *ready = rest;
    Some((first.table, ids))
}

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

#[derive(Debug, Clone, Copy)]
enum Done {
    Pushed,
    Retried,
    Failed,
    /// The provider does not take the change (`PushError::Skipped`).
    Declined,
}

impl Done {
    fn label(&self) -> &'static str {
        match self {
            Done::Pushed => "pushed",
            Done::Retried => "retried",
            Done::Failed => "failed",
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

    /// Pushes until nothing is due (or cancelled between turns). The
    /// providers take turns, each of at most [`TURN`] records, so a backlog
    /// for one does not hold up the others.
    pub async fn drain(&self, cancel: &CancellationToken) -> Result<DrainStats, DbError> {
        let mut stats = DrainStats::default();
        loop {
            let mut progressed = false;
            for p in &self.providers {
                progressed |= self.turn(p.as_ref(), &mut stats).await?;
            }
            if !progressed || cancel.is_cancelled() {
                return Ok(stats);
            }
        }
    }

    /// One provider's turn: [`GROUPS`] groups in flight, the next one
    /// started as soon as one finishes, from the records due (fetched a few
    /// groups at a time, oldest change first). Each record is taken once in
    /// a turn; a change to it committed meanwhile waits for the next turn.
    /// Ends when nothing more is due or [`TURN`] records were taken; returns
    /// whether any change was done with.
    async fn turn(&self, provider: &dyn Provider, stats: &mut DrainStats) -> Result<bool, DbError> {
        let group = if provider.push_batch_size() > 1 {
            provider.push_batch_size()
        } else {
            GROUP
        };
        let fetch = (group * GROUPS * 4).max(self.config.batch_size as usize);
        let mut ready: std::collections::VecDeque<DueRecord> = Default::default();
        let mut taken: std::collections::HashSet<uuid::Uuid> = Default::default();
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        let mut progressed = false;
        loop {
            while in_flight.len() < GROUPS && taken.len() < TURN {
                if ready.is_empty() {
                    let limit = (fetch + taken.len()) as i64;
                    let due = {
                        let client = self.pool.get().await?;
                        outbox::due_records(&client, provider.name(), limit).await?
                    };
                    ready.extend(
                        due.into_iter()
                            .filter(|r| !taken.contains(&r.record_id))
                            .take(fetch),
                    );
                }
                let Some((table, ids)) = next_group(&mut ready, group) else {
                    break;
                };
                taken.extend(ids.iter().copied());
                in_flight.push(self.dispatch_group(provider, table, ids));
            }
            let Some(results) = in_flight.next().await else {
                return Ok(progressed);
            };
            for r in results {
                match r? {
                    Done::Pushed => stats.pushed += 1,
                    Done::Retried => stats.retried += 1,
                    Done::Failed => stats.failed += 1,
                    Done::Declined => stats.skipped += 1,
                }
                progressed = true;
            }
        }
    }

    /// Pushes one group of records of `table`; when its bookkeeping fails
    /// in the database, each record is taken again on its own, so the
    /// error stays with the record that causes it.
    async fn dispatch_group(
        &self,
        provider: &dyn Provider,
        table: String,
        ids: Vec<uuid::Uuid>,
    ) -> Vec<Result<Done, DbError>> {
        match self.push_group(provider, &table, &ids).await {
            Ok(done) => done.into_iter().map(Ok).collect(),
            Err(e) if ids.len() > 1 => {
                tracing::warn!(provider = %provider.name(), table = %table, records = ids.len(),
                    error = %e, "a push group's bookkeeping failed; taking its records one by one");
                let mut done = Vec::with_capacity(ids.len());
                for id in &ids {
                    match self
                        .push_group(provider, &table, std::slice::from_ref(id))
                        .await
                    {
                        Ok(d) => done.extend(d.into_iter().map(Ok)),
                        Err(e) => done.push(Err(e)),
                    }
                }
                done
            }
            Err(e) => vec![Err(e)],
        }
    }

    /// One transaction: claims the records (those held elsewhere or by a
    /// conflict are left out), pushes each (or the lot, with
    /// [`Provider::push_batch`]), records every result and commits.
    async fn push_group(
        &self,
        provider: &dyn Provider,
        table: &str,
        ids: &[uuid::Uuid],
    ) -> Result<Vec<Done>, DbError> {
        let name = provider.name();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let claimed = outbox::claim_records(&tx, name, table, ids).await?;
        let mut outcomes = Vec::with_capacity(claimed.len());
        let mut work = Vec::with_capacity(claimed.len());
        let mut changes = Vec::with_capacity(claimed.len());
        for (rec, c) in claimed {
            if let Some(bytes) = c.oversized {
                let error = format!(
                    "the record is {bytes} bytes as JSON, over the {} the dispatcher reads for a push",
                    outbox::MAX_RECORD_BYTES
                );
                tracing::warn!(provider = %name, table = %rec.table, record = %rec.record_id, %error, "push refused");
                outbox::record_failure(&tx, name, &rec, &c, &error, None).await?;
                outcomes.push(Done::Failed);
                continue;
            }
            let mut change = change_of(&rec, &c);
            change.context = provider.push_context(&tx, &change).await?;
            work.push((rec, c));
            changes.push(change);
        }
        let results: Vec<(Result<Pushed, PushError>, std::time::Duration)> = if work.is_empty() {
            Vec::new()
        } else if provider.push_batch_size() > 1 {
            let started = Instant::now();
            let results = provider.push_batch(&changes).await;
            let took = started.elapsed();
            metrics::histogram!("syncbridge_push_seconds", "provider" => name.as_str())
                .record(took);
            // One result per change; a provider answering fewer leaves the
            // rest to be retried, never unrecorded.
            let mut results = results.into_iter();
            (0..work.len())
                .map(|_| {
                    let r = results.next().unwrap_or_else(|| {
                        Err(PushError::Transient(
                            "the provider answered no result for this record".into(),
                        ))
                    });
                    (r, took)
                })
                .collect()
        } else {
            let pushes: Vec<_> = changes.iter().map(|c| push_one(provider, c)).collect();
            futures_util::stream::iter(pushes)
                .buffered(CONCURRENCY)
                .collect()
                .await
        };
        let mut pushed_ok: Vec<(usize, Pushed)> = Vec::new();
        let items = work.iter().zip(&changes).zip(results).enumerate();
        for (i, (((rec, c), change), (result, took))) in items {
            let outcome = match result {
                Ok(mut pushed) => {
                    if provider.writes_in_doubt() {
                        self.in_doubt_window(&tx, name, rec, &mut pushed).await?;
                    }
                    provider
                        .after_push(&tx, change, PushOutcome::Pushed(&pushed), took)
                        .await?;
                    let lag = (Utc::now() - c.first_change_at)
                        .to_std()
                        .unwrap_or_default();
                    metrics::histogram!("syncbridge_change_to_push_seconds", "provider" => name.as_str())
                        .record(lag);
                    pushed_ok.push((i, pushed));
                    Done::Pushed
                }
                Err(PushError::RemoteChanged { object, wrote }) => {
                    // Read before write found a newer remote state: apply
                    // it under the rules now; the changes stay pending and
                    // the next round pushes what the rules decided. A write
                    // whose answer was lost earlier and whose values are
                    // there now landed: its window is declared too.
                    let wrote = match wrote {
                        Some(w) => Some(*w),
                        None => {
                            outbox::in_doubt_landed(&tx, name, rec, &object.fields, object.version)
                                .await?
                        }
                    };
                    if let Some(w) = &wrote {
                        outbox::declare_write_window(&tx, name, rec, w).await?;
                    }
                    outbox::reconcile_before_push(&tx, name, rec, c, &object).await?;
                    Done::Retried
                }
                Err(PushError::InDoubt { why, write }) => {
                    outbox::record_in_doubt(&tx, name, rec, &write).await?;
                    self.failed(
                        &tx,
                        provider,
                        rec,
                        c,
                        change,
                        PushError::Transient(why),
                        took,
                    )
                    .await?
                }
                Err(e) => self.failed(&tx, provider, rec, c, change, e, took).await?,
            };
            outcomes.push(outcome);
        }
        let done: Vec<PushedRecord<'_>> = pushed_ok
            .iter()
            .map(|(i, pushed)| PushedRecord {
                rec: &work[*i].0,
                claimed: &work[*i].1,
                pushed,
            })
            .collect();
        outbox::record_successes(&tx, name, &done).await?;
        tx.commit().await?;
        for d in &outcomes {
            metrics::counter!("syncbridge_pushes_total", "provider" => name.as_str(), "result" => d.label())
                .increment(1);
        }
        Ok(outcomes)
    }

    /// For a provider whose writes may end in doubt: an earlier write whose
    /// answer was lost may be in what the remote shows now (this push's
    /// answer, or a fetch that applied it in between), so its window is
    /// declared, beside this push's own. Looked up before this push's
    /// window is recorded, which settles it. (Not gated on the changes'
    /// attempts: a change that arrives while a failed one backs off is
    /// claimed alone.)
    async fn in_doubt_window(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        provider: crate::domain::ProviderName,
        rec: &DueRecord,
        pushed: &mut Pushed,
    ) -> Result<(), DbError> {
        let state = pushed.snapshots.iter().find(|(s, _)| *s == "primary");
        let version = pushed.versions.iter().find(|(s, _)| *s == "primary");
        if let (Some((_, serde_json::Value::Object(fields))), Some((_, version))) = (state, version)
        {
            let doubt = outbox::in_doubt_landed(tx, provider, rec, fields, *version).await?;
            match (doubt, pushed.write_window.is_some()) {
                (Some(w), true) => outbox::declare_write_window(tx, provider, rec, &w).await?,
                (Some(w), false) => pushed.write_window = Some(w),
                (None, _) => {}
            }
        }
        Ok(())
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
        claimed: &ClaimedRecord,
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
}

/// One record's push, timed.
async fn push_one(
    provider: &dyn Provider,
    change: &Change,
) -> (Result<Pushed, PushError>, std::time::Duration) {
    let started = Instant::now();
    let r = provider.push(change).await;
    let took = started.elapsed();
    metrics::histogram!("syncbridge_push_seconds", "provider" => provider.name().as_str())
        .record(took);
    (r, took)
}

/// The change a claimed record is pushed as (its context read after).
fn change_of(rec: &DueRecord, c: &ClaimedRecord) -> Change {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn due(table: &str, n: u128) -> DueRecord {
        DueRecord {
            table: table.into(),
            record_id: uuid::Uuid::from_u128(n),
        }
    }

    #[test]
    fn a_group_is_one_table_in_order_and_the_rest_keep_theirs() {
        let mut ready: std::collections::VecDeque<DueRecord> = [
            due("a", 1),
            due("b", 2),
            due("a", 3),
            due("a", 4),
            due("b", 5),
        ]
        .into();
        let (table, ids) = next_group(&mut ready, 2).expect("a group");
        assert_eq!(table, "a");
        assert_eq!(ids, [uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(3)]);
        assert_eq!(
            ready.iter().cloned().collect::<Vec<_>>(),
            [due("b", 2), due("a", 4), due("b", 5)]
        );
        let (table, ids) = next_group(&mut ready, 32).expect("a group");
        assert_eq!(table, "b");
        assert_eq!(ids.len(), 2);
        assert_eq!(ready.len(), 1);
        next_group(&mut ready, 32).expect("the last");
        assert!(next_group(&mut ready, 32).is_none());
    }
}
