//! The router: claims pending inbox events (`FOR UPDATE SKIP LOCKED`),
//! normalises each through its provider, and applies it — upserts, audit
//! rows and the event's new status — in the claiming transaction.
//!
//! Architecture invariants:
//! - An event's effects and its `processed` mark commit together or not at
//!   all: a batch is one transaction, each event inside it a savepoint, so
//!   a failing event rolls back alone and is retried with backoff.
//! - Every write runs with `syncbridge.origin` set to the event's provider,
//!   so change capture can tell the router's writes from the application's.
//! - An event older than what was applied for the same record never
//!   overwrites it (`skipped_stale`); unknown types are `ignored`.
//! - Several routers (the workers of one `serve`, `SYNCBRIDGE_ROUTER_WORKERS`,
//!   and several processes) never apply the same event twice: claims skip
//!   locked rows. Batches that touch the same records serialise on the
//!   records' row locks, taken in id order; each reads a record's link only
//!   once the record is locked, so it decides from the state the other left.
//!   A deadlock victim's batch rolls back whole and is applied again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::apply::engine;
use crate::apply::Applied;
use crate::config::RouterConfig;
use crate::db::fetch;
use crate::db::inbox::{self, Claimed, Outcome};
use crate::db::{DbError, Pool};
use crate::events::DomainEvent;
use crate::providers::{ApplyCtx, BatchWrites, Provider, Registry, StoredEvent};

#[derive(Clone)]
pub struct Router {
    pool: Pool,
    providers: Vec<Arc<dyn Provider>>,
    config: RouterConfig,
    /// Per provider (same order), the mean body size of its last claimed
    /// batch: the next claim locks only as many events as the byte budget
    /// is likely to take.
    body_sizes: Arc<Vec<AtomicUsize>>,
}

/// What [`Router::apply_claimed`] did with a batch: each event's outcome
/// and how long it took, and whether the set-based pass failed so that
/// every event was applied again one at a time.
pub struct BatchOutcomes {
    pub events: Vec<(i64, Outcome, std::time::Duration)>,
    pub replayed: bool,
}

/// What one pass over the inbox did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassStats {
    pub processed: usize,
    pub ignored: usize,
    pub stale: usize,
    pub retried: usize,
    pub failed: usize,
    /// Events of batches whose set-based pass failed (one event could not
    /// be applied, or another process wrote a row the batch had read), so
    /// that each was applied again one at a time. Counted beside the
    /// outcomes above, not in [`total`](Self::total).
    pub replayed: usize,
}

impl std::ops::AddAssign for PassStats {
    fn add_assign(&mut self, s: PassStats) {
        self.processed += s.processed;
        self.ignored += s.ignored;
        self.stale += s.stale;
        self.retried += s.retried;
        self.failed += s.failed;
        self.replayed += s.replayed;
    }
}

impl PassStats {
    pub fn total(&self) -> usize {
        self.processed + self.ignored + self.stale + self.retried + self.failed
    }
}

impl Router {
    pub fn new(pool: Pool, registry: &Registry, config: RouterConfig) -> Router {
        let providers = registry.routed();
        Router {
            body_sizes: Arc::new(providers.iter().map(|_| AtomicUsize::new(0)).collect()),
            pool,
            providers,
            config,
        }
    }

    /// Runs until cancelled: drains the inbox whenever `wake` fires, and at
    /// least every poll interval (for retries that came due, and for events
    /// another process stored).
    pub async fn run(self, wake: Arc<Notify>, cancel: CancellationToken) {
        let poll = self.config.poll_interval;
        let stop = cancel.clone();
        crate::worker::drain_loop("router", wake, poll, cancel, async || {
            self.drain(&stop).await
        })
        .await;
    }

    /// As [`drain`](Self::drain) with the configured number of workers side
    /// by side, as `serve` runs them; their stats summed.
    pub async fn drain_all(&self, cancel: &CancellationToken) -> Result<PassStats, DbError> {
        let mut runs = tokio::task::JoinSet::new();
        for _ in 0..self.config.workers.max(1) {
            let (router, cancel) = (self.clone(), cancel.clone());
            runs.spawn(async move { router.drain(&cancel).await });
        }
        let mut total = PassStats::default();
        while let Some(run) = runs.join_next().await {
            match run {
                Ok(stats) => total += stats?,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        Ok(total)
    }

    /// Applies batches until nothing is due (or cancelled between batches).
    pub async fn drain(&self, cancel: &CancellationToken) -> Result<PassStats, DbError> {
        let mut total = PassStats::default();
        loop {
            let mut pass = PassStats::default();
            for p in &self.providers {
                pass += self.apply_batch(p.as_ref()).await?;
            }
            total += pass;
            if pass.total() == 0 || cancel.is_cancelled() {
                return Ok(total);
            }
        }
    }

    /// Claims and applies one batch of `provider`'s events in one
    /// transaction.
    pub async fn apply_batch(&self, provider: &dyn Provider) -> Result<PassStats, DbError> {
        let mut client = self.pool.get().await?;
        let mut tx = client.transaction().await?;
        let size = self
            .providers
            .iter()
            .position(|p| p.name() == provider.name())
            .and_then(|i| self.body_sizes.get(i));
        let mean = size.map_or(0, |s| s.load(Ordering::Relaxed));
        let budget = self.config.batch_bytes;
        let limit = match mean {
            0 => self.config.batch_size,
            m => ((budget / m) as i64 + 1).clamp(1, self.config.batch_size.max(1)),
        };
        let claimed = inbox::claim(&tx, provider.name(), limit, budget as i64).await?;
        if claimed.is_empty() {
            return Ok(PassStats::default());
        }
        if let Some(size) = size {
            let bytes: usize = claimed.iter().map(|c| c.body.len()).sum();
            size.store((bytes / claimed.len()).max(1), Ordering::Relaxed);
        }
        let applied = self.apply_claimed(&mut tx, provider, &claimed).await?;
        let mut stats = count_outcomes(provider, &applied.events);
        if applied.replayed {
            stats.replayed = claimed.len();
        }
        let outcomes: Vec<(i64, Outcome)> = applied
            .events
            .into_iter()
            .map(|(id, o, _)| (id, o))
            .collect();
        inbox::close(&tx, &outcomes).await?;
        tx.commit().await?;
        Ok(stats)
    }

    /// Applies claimed (locked) events of `provider` inside `tx`, the
    /// caller's transaction: each event's outcome and how long it took. The
    /// caller closes them ([`inbox::close`]) and commits. `syncbridge.origin`
    /// is set to the provider for the rest of `tx`.
    pub async fn apply_claimed(
        &self,
        tx: &mut deadpool_postgres::Transaction<'_>,
        provider: &dyn Provider,
        claimed: &[Claimed],
    ) -> Result<BatchOutcomes, DbError> {
        tx.execute(
            "SELECT set_config('syncbridge.origin', $1, true)",
            &[&provider.name().as_str()],
        )
        .await?;
        // The rules as of this batch: an edit applies from the next one.
        let rules = engine::load_rules(tx).await?;

        // Optimistic pass: every event under one savepoint, none of its
        // own. If any event fails, roll back to the savepoint (the claim's
        // row locks were taken before it and stay) and apply the events
        // again with a savepoint each, so the failure stays its own.
        let mut outcomes = Vec::with_capacity(claimed.len());
        let mut failed = false;
        // Normalised up front, so the provider can prepare set-based writes
        // for the whole batch (OpenPhone's contact events).
        let normalised: Vec<_> = claimed
            .iter()
            .map(|ev| provider.normalise(&stored(ev)))
            .collect();
        {
            let all: Vec<&DomainEvent> = normalised
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .flatten()
                .collect();
            let optimistic = tx.savepoint("batch").await?;
            let mut batch = match provider.prepare_batch(&optimistic, &all).await {
                Ok(b) => b,
                Err(e) if e.is_transient() => return Err(e),
                Err(_) => {
                    failed = true;
                    None
                }
            };
            for (ev, events) in claimed.iter().zip(&normalised) {
                if failed {
                    break;
                }
                let started = Instant::now();
                let ctx = ApplyCtx {
                    tx: &optimistic,
                    rules: &rules,
                    inbox_id: ev.id,
                };
                match self.apply_event(provider, &ctx, events, &mut batch).await {
                    Ok(o) => outcomes.push((ev.id, o, started.elapsed())),
                    Err(ApplyError::Db(db)) if db.is_transient() => return Err(db),
                    Err(_) => failed = true,
                }
            }
            if let (false, Some(b)) = (failed, batch.as_mut()) {
                match b.flush(&optimistic).await {
                    Ok(()) => {}
                    Err(e) if e.is_transient() => return Err(e),
                    Err(_) => failed = true,
                }
            }
            drop(batch);
            if failed {
                optimistic.rollback().await?;
            } else {
                optimistic.commit().await?;
                return Ok(BatchOutcomes {
                    events: outcomes,
                    replayed: false,
                });
            }
        }
        metrics::counter!("syncbridge_batch_replays_total",
            "provider" => provider.name().as_str())
        .increment(1);
        outcomes.clear();
        for (ev, events) in claimed.iter().zip(&normalised) {
            let started = Instant::now();
            let sp = tx.savepoint("event").await?;
            let ctx = ApplyCtx {
                tx: &sp,
                rules: &rules,
                inbox_id: ev.id,
            };
            let outcome = match self.apply_event(provider, &ctx, events, &mut None).await {
                Ok(o) => {
                    sp.commit().await?;
                    o
                }
                Err(ApplyError::Db(db)) if db.is_transient() => {
                    sp.rollback().await?;
                    return Err(db);
                }
                Err(e) => {
                    sp.rollback().await?;
                    self.failure(ev, &e.to_string())
                }
            };
            outcomes.push((ev.id, outcome, started.elapsed()));
        }
        Ok(BatchOutcomes {
            events: outcomes,
            replayed: true,
        })
    }

    /// Applies one event's domain events: fetch hints and ignored events
    /// here, everything else by its provider — offered to the batch's
    /// set-based writes first, when the provider prepared some.
    async fn apply_event(
        &self,
        provider: &dyn Provider,
        ctx: &ApplyCtx<'_, '_>,
        events: &Result<Vec<DomainEvent>, crate::providers::NormaliseError>,
        batch: &mut Option<Box<dyn BatchWrites>>,
    ) -> Result<Outcome, ApplyError> {
        let events = match events {
            Ok(e) => e,
            Err(e) => return Err(ApplyError::Normalise(e.to_string())),
        };
        let mut applied_any = false;
        let mut skipped = Vec::new();
        for de in events {
            let result = match de {
                DomainEvent::FetchHint { object_type, ids } => {
                    fetch::enqueue(
                        ctx.tx,
                        provider.name(),
                        object_type,
                        ids,
                        self.config.fetch_debounce,
                        ctx.inbox_id,
                    )
                    .await?;
                    Applied::Queued
                }
                DomainEvent::Ignored(why) => Applied::Ignored(why.clone()),
                other => {
                    let batched = match batch.as_mut() {
                        Some(b) => b.apply(ctx, other).await?,
                        None => None,
                    };
                    match batched {
                        Some(a) => a,
                        None => provider.apply_event(ctx, other).await?,
                    }
                }
            };
            match result {
                Applied::Inserted(_)
                | Applied::Updated(_)
                | Applied::Conflict(_)
                | Applied::Queued => applied_any = true,
                Applied::Stale(why) => skipped.push((true, why)),
                Applied::Ignored(why) => skipped.push((false, why)),
            }
        }
        if applied_any || events.is_empty() && skipped.is_empty() {
            return Ok(Outcome::Processed);
        }
        let stale = skipped.iter().any(|(s, _)| *s);
        let why = skipped
            .into_iter()
            .map(|(_, w)| w)
            .collect::<Vec<_>>()
            .join("; ");
        Ok(if stale {
            Outcome::SkippedStale(why)
        } else {
            Outcome::Ignored(why)
        })
    }

    /// A failed attempt: retry with exponential backoff and jitter, or give
    /// up after the policy's last attempt.
    fn failure(&self, ev: &Claimed, error: &str) -> Outcome {
        let attempt = ev.attempts + 1;
        tracing::warn!(event = ev.id, provider = %ev.provider, attempt, error, "event failed to apply");
        Outcome::Failed {
            error: error.to_owned(),
            retry_at: self.config.retry.retry_at(attempt, None),
        }
    }
}

/// Counts a batch's outcomes (and records them as metrics).
pub fn count_outcomes(
    provider: &dyn Provider,
    outcomes: &[(i64, Outcome, std::time::Duration)],
) -> PassStats {
    let mut stats = PassStats::default();
    for (_, outcome, took) in outcomes {
        let label = match outcome {
            Outcome::Processed => {
                stats.processed += 1;
                "applied"
            }
            Outcome::Ignored(_) => {
                stats.ignored += 1;
                "ignored"
            }
            Outcome::SkippedStale(_) => {
                stats.stale += 1;
                "skipped_stale"
            }
            Outcome::Failed {
                retry_at: Some(_), ..
            } => {
                stats.retried += 1;
                "retried"
            }
            Outcome::Failed { retry_at: None, .. } => {
                stats.failed += 1;
                "failed"
            }
        };
        metrics::counter!("syncbridge_events_total",
            "provider" => provider.name().as_str(), "result" => label)
        .increment(1);
        metrics::histogram!("syncbridge_apply_seconds",
            "provider" => provider.name().as_str())
        .record(*took);
    }
    stats
}

#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error("{0}")]
    Normalise(String),
    #[error("{0}")]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApplyError::Db(DbError::Postgres(e))
    }
}

fn stored(ev: &Claimed) -> StoredEvent<'_> {
    StoredEvent {
        id: ev.id,
        provider: ev.provider,
        event_type: ev.event_type.as_deref(),
        occurred_at: ev.occurred_at,
        body: &ev.body,
    }
}
