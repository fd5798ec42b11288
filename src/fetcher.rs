//! The fetcher: turns queued hints (`sync_fetch_queue`) into reads of each
//! object from the provider's API and applies what it reads through the
//! conflict engine.
//!
//! Architecture invariants:
//! - One fetch per object per debounce window, however many hints named
//!   it; a hint arriving during a fetch causes one more fetch after it.
//! - Requests go through the provider's pacer (Keap: 240/min, which also
//!   keeps under its 5/s spike limit); a 429 holds every request back by
//!   its `Retry-After` and requeues the object without counting an attempt.
//! - A claim is a lease: a fetcher that dies mid-fetch loses it when the
//!   lease runs out, and the object is fetched again.
//! - An object the provider no longer has (404) is marked deleted locally,
//!   never dropped.
//! - Every write runs with `syncbridge.origin` set to the provider, so it
//!   is never pushed back to it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::apply::engine::{self, RemoteRecord};
use crate::apply::Applied;
use crate::config::FetcherConfig;
use crate::conflict::Rules;
use crate::db::fetch::{self, Due};
use crate::db::{DbError, Pool};
use crate::providers::{Fetched, Provider, PushError, Registry};

/// Objects claimed at once.
const BATCH: i64 = 32;
/// Requests in flight per provider (the pacer still spaces them).
const CONCURRENCY: usize = 4;
/// How long a claim holds before another fetcher may take the object.
const LEASE: Duration = Duration::from_secs(120);
/// Retry delay after an error retrying cannot fix (bad id, refused key).
const PERMANENT_RETRY: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct Fetcher {
    pool: Pool,
    providers: Vec<Arc<dyn Provider>>,
    config: FetcherConfig,
}

/// What one drain did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FetchStats {
    pub applied: usize,
    pub deleted: usize,
    pub retried: usize,
}

impl Fetcher {
    pub fn new(pool: Pool, registry: &Registry, config: FetcherConfig) -> Fetcher {
        Fetcher {
            pool,
            providers: registry.fetchers(),
            config,
        }
    }

    /// Runs until cancelled, sleeping until the next object is due (at most
    /// a poll interval, for hints another process queued).
    pub async fn run(self, cancel: CancellationToken) {
        if self.providers.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let pause = match self.drain(&cancel).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    self.until_next_due().await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fetch pass failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    backoff
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    async fn until_next_due(&self) -> Duration {
        let poll = self.config.poll_interval;
        let Ok(client) = self.pool.get().await else {
            return poll;
        };
        let mut pause = poll;
        for p in &self.providers {
            if let Ok(Some(at)) = fetch::next_due(&client, p.name()).await {
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                pause = pause.min(wait);
            }
        }
        pause.max(Duration::from_millis(5))
    }

    /// Fetches everything due (or until cancelled).
    pub async fn drain(&self, cancel: &CancellationToken) -> Result<(), DbError> {
        for p in &self.providers {
            loop {
                let (due, rules) = {
                    let client = self.pool.get().await?;
                    let due = fetch::claim(&client, p.name(), BATCH, LEASE).await?;
                    if due.is_empty() {
                        break;
                    }
                    (due, engine::load_rules(&client).await?)
                };
                let results: Vec<Result<(), DbError>> = futures_util::stream::iter(due)
                    .map(|d| self.fetch_one(p.as_ref(), &rules, d))
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
                for r in results {
                    r?;
                }
                if cancel.is_cancelled() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn fetch_one(
        &self,
        provider: &dyn Provider,
        rules: &Rules,
        due: Due,
    ) -> Result<(), DbError> {
        let name = provider.name();
        let started = std::time::Instant::now();
        let result = provider.fetch(&due.object_type, &due.object_id).await;
        metrics::histogram!("syncbridge_fetch_seconds", "provider" => name.as_str())
            .record(started.elapsed());
        let (label, retry) = match result {
            Ok(fetched) => match self.apply(provider, rules, &due, &fetched).await {
                Ok(applied) => {
                    tracing::debug!(provider = %name, object = %due.object_id,
                        kind = %due.object_type, hints = due.hints, ?applied, "fetched");
                    ("applied", None)
                }
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => (
                    "failed",
                    Some((
                        self.config.retry.delay(due.attempts + 1),
                        true,
                        e.to_string(),
                    )),
                ),
            },
            Err(PushError::RateLimited(after)) => (
                "rate_limited",
                Some((
                    after.unwrap_or(Duration::from_secs(1)),
                    false,
                    "rate limited by the provider".to_owned(),
                )),
            ),
            Err(e @ PushError::Transient(_)) => (
                "retried",
                Some((
                    self.config.retry.delay(due.attempts + 1),
                    true,
                    e.to_string(),
                )),
            ),
            Err(e) => ("failed", Some((PERMANENT_RETRY, true, e.to_string()))),
        };
        metrics::counter!("syncbridge_fetches_total", "provider" => name.as_str(), "result" => label)
            .increment(1);
        if let Some((delay, count, error)) = retry {
            tracing::warn!(provider = %name, object = %due.object_id, kind = %due.object_type,
                attempt = due.attempts + 1, error, "fetch failed");
            let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            let client = self.pool.get().await?;
            fetch::retry(&client, name, &due, at, count, &error).await?;
        }
        Ok(())
    }

    /// Applies one fetched object and closes its queue row, in one
    /// transaction.
    async fn apply(
        &self,
        provider: &dyn Provider,
        rules: &Rules,
        due: &Due,
        fetched: &Fetched,
    ) -> Result<Applied, DbError> {
        let name = provider.name();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT set_config('syncbridge.origin', $1, true)",
            &[&name.as_str()],
        )
        .await?;
        let applied = match fetched {
            Fetched::Found(obj) => {
                let entity = crate::providers::entity(obj.table).ok_or_else(|| {
                    DbError::NotSynced(format!("{} is not a synced table", obj.table))
                })?;
                let remote = RemoteRecord {
                    provider: name,
                    slot: "primary",
                    remote_id: &obj.remote_id,
                    fields: obj.fields.clone(),
                    version: obj.version,
                };
                engine::apply_keyed(&tx, rules, entity, &remote, due.event_id).await?
            }
            Fetched::Gone { table } => {
                let entity = crate::providers::entity(table)
                    .ok_or_else(|| DbError::NotSynced(format!("{table} is not a synced table")))?;
                engine::mark_deleted(&tx, entity, name, &due.object_id, due.event_id).await?
            }
        };
        fetch::done(&tx, name, due, self.config.debounce).await?;
        tx.commit().await?;
        Ok(applied)
    }
}
