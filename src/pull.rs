//! Pulled providers (SPEC §4.4, §4.5): the generic half of a pull. A
//! provider's [`Pull`] pages through its API; what it finds goes through
//! [`PullRun::store_and_apply`], which stores each item as an inbox
//! delivery and applies it with the router's own code in the same
//! transaction, so dedup, audit, the admin event list, replay and
//! `export-fixtures` treat pulled items exactly as webhooks.
//!
//! Architecture invariants:
//! - One run per provider at a time across every process: a run holds a
//!   session advisory lock on its own connection for its whole length; a
//!   second run is refused with the first one's progress.
//! - A dry run writes nothing: the whole run is one transaction, each step
//!   a savepoint inside it, rolled back at the end, so it reports exactly
//!   what a real run would (the same code ran) and leaves no row anywhere.
//! - A real run commits step by step: what was stored stays stored when a
//!   later page fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, Transaction};
use serde::Serialize;
use serde_json::Value;

use crate::config::RouterConfig;
use crate::db::inbox::{self, Outcome};
use crate::db::{DbError, Pool};
use crate::domain::ProviderName;
use crate::providers::{Delivery, Provider, PullOptions, PullReport, Registry};
use crate::router::{count_outcomes, Router};

/// The advisory lock class of pull runs ("PULL"); the provider's place in
/// [`ProviderName::ALL`] is the key.
const LOCK_CLASS: i32 = 0x5055_4c4c;

fn lock_key(provider: ProviderName) -> i32 {
    ProviderName::ALL
        .iter()
        .position(|p| *p == provider)
        .unwrap_or_default() as i32
}

/// A run's progress: live while it runs, its summary once done.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub provider: &'static str,
    pub running: bool,
    pub dry_run: bool,
    pub since: Option<DateTime<Utc>>,
    /// Pages fetched from the provider so far.
    pub pages: u32,
    /// Items (`unit`) the provider listed so far.
    pub seen: u64,
    pub unit: &'static str,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The provider's summary, once the run is done.
    pub summary: Option<Value>,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
}

impl Progress {
    fn idle(provider: ProviderName, unit: &'static str) -> Progress {
        Progress {
            provider: provider.as_str(),
            running: false,
            dry_run: false,
            since: None,
            pages: 0,
            seen: 0,
            unit,
            started_at: None,
            finished_at: None,
            summary: None,
            error: None,
        }
    }
}

/// The runs of this process, by provider: the current or last one.
#[derive(Clone, Default)]
pub struct Runs(Arc<Mutex<HashMap<ProviderName, Progress>>>);

impl Runs {
    fn set(&self, p: &Progress) {
        if let Ok(mut m) = self.0.lock() {
            if let Some(name) = ProviderName::parse(p.provider) {
                m.insert(name, p.clone());
            }
        }
    }

    pub fn get(&self, provider: ProviderName) -> Option<Progress> {
        self.0.lock().ok()?.get(&provider).cloned()
    }
}

/// Why a run did not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The provider is disabled or its pull is not configured.
    #[error("{0}")]
    Unavailable(String),
    /// The provider has no pull.
    #[error("{0} has no pull")]
    NotPulled(ProviderName),
    /// Another run of this provider holds the lock.
    #[error("a {} pull is already running", .0.provider)]
    Busy(Box<Progress>),
    /// `due_after` was given and the last run is more recent.
    #[error("the last run is more recent than the interval")]
    NotDue,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Where a run's steps write: the database for a real run, one
/// transaction rolled back at the end for a dry run.
enum Scope<'c> {
    Commit(&'c mut Client),
    DryRun(Transaction<'c>),
}

async fn begin<'a>(scope: &'a mut Scope<'_>) -> Result<Transaction<'a>, DbError> {
    Ok(match scope {
        Scope::Commit(c) => c.transaction().await?,
        Scope::DryRun(t) => t.transaction().await?,
    })
}

/// What a provider's [`Pull`](crate::providers::Pull) runs with.
pub struct PullRun<'c> {
    pub options: PullOptions,
    scope: Scope<'c>,
    pipeline: Pipeline,
    progress: Progress,
    runs: Runs,
    /// The `sync_pull_runs` row of a real run.
    run_id: Option<i64>,
}

/// The pipeline's side of a run: the router's apply for this provider.
struct Pipeline {
    router: Router,
    provider: Arc<dyn Provider>,
}

/// What became of one delivery handed to [`PullRun::store_and_apply`].
#[derive(Debug, Clone)]
pub struct Applied {
    pub inbox_id: i64,
    pub outcome: Outcome,
}

impl PullRun<'_> {
    /// A transaction for one step of the run (a savepoint of the run's
    /// transaction in a dry run). Commit it when the step is done.
    pub async fn begin(&mut self) -> Result<Transaction<'_>, DbError> {
        begin(&mut self.scope).await
    }

    /// Stores `new` deliveries in the inbox, and applies them and the
    /// stored ones with the dedup keys `again`, in one step's transaction,
    /// then commits it: each delivery's key, inbox row and outcome. (The
    /// provider asks only for what is missing or changed locally, so a
    /// delivery stored before is applied again: a call ignored for an
    /// unknown agent whose business now exists, a deleted message.)
    pub async fn store_and_apply(
        &mut self,
        new: &[Delivery],
        again: &[&str],
    ) -> Result<Vec<(String, Applied)>, DbError> {
        if new.is_empty() && again.is_empty() {
            return Ok(Vec::new());
        }
        let name = self.pipeline.provider.name();
        let mut tx = begin(&mut self.scope).await?;
        let refs: Vec<&Delivery> = new.iter().collect();
        inbox::insert_batch(&tx, &refs).await?;
        let mut keys: Vec<&str> = new.iter().map(|d| d.dedup_key.as_str()).collect();
        keys.extend_from_slice(again);
        // Split, not cloned: each body is held in memory once.
        let (keys, rows): (Vec<String>, Vec<_>) = inbox::claim_keys(&tx, name, &keys)
            .await?
            .into_iter()
            .unzip();
        let applied = self
            .pipeline
            .router
            .apply_claimed(&mut tx, self.pipeline.provider.as_ref(), &rows)
            .await?;
        count_outcomes(self.pipeline.provider.as_ref(), &applied.events);
        let closed: Vec<(i64, Outcome)> = applied
            .events
            .into_iter()
            .map(|(id, o, _)| (id, o))
            .collect();
        inbox::close(&tx, &closed).await?;
        tx.commit().await?;
        let mut by_id: HashMap<i64, Outcome> = closed.into_iter().collect();
        Ok(keys
            .into_iter()
            .zip(rows)
            .filter_map(|(key, c)| {
                let outcome = by_id.remove(&c.id)?;
                Some((
                    key,
                    Applied {
                        inbox_id: c.id,
                        outcome,
                    },
                ))
            })
            .collect())
    }

    /// Whether the run should stop after the page in hand.
    pub fn stopping(&self) -> bool {
        self.options.stop.is_cancelled()
    }

    /// Records a fetched page and the items it listed.
    pub async fn page_done(&mut self, seen: u64) {
        self.progress.pages += 1;
        self.progress.seen += seen;
        self.runs.set(&self.progress);
        if let (Some(id), Scope::Commit(c)) = (self.run_id, &self.scope) {
            // Progress is best effort: a failed update never fails the run.
            let _ = c
                .execute(
                    "UPDATE sync_pull_runs SET pages = $2, seen = $3 WHERE id = $1",
                    &[
                        &id,
                        &(self.progress.pages as i32),
                        &(self.progress.seen as i32),
                    ],
                )
                .await;
        }
    }
}

/// Runs `provider`'s pull: takes the lock, records the run, and hands the
/// provider a [`PullRun`]. Returns the finished run's progress (its
/// summary in `summary`) and whether it completed without errors.
pub async fn run(
    pool: &Pool,
    registry: &Registry,
    router: &RouterConfig,
    runs: &Runs,
    name: ProviderName,
    options: PullOptions,
) -> Result<(Progress, bool), RunError> {
    let provider = registry
        .get(name)
        .map_err(|why| RunError::Unavailable(why.to_owned()))?
        .clone();
    let Some(puller) = provider.puller() else {
        return Err(RunError::NotPulled(name));
    };
    puller
        .ready()
        .map_err(|why| RunError::Unavailable(why.to_owned()))?;
    let mut client = pool.get().await.map_err(DbError::from)?;
    let locked: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, $2)",
            &[&LOCK_CLASS, &lock_key(name)],
        )
        .await
        .map_err(DbError::from)?
        .get(0);
    if !locked {
        let current = match runs.get(name).filter(|p| p.running) {
            Some(p) => p,
            None => last_run(&client, name, puller.unit())
                .await?
                .unwrap_or_else(|| Progress::idle(name, puller.unit())),
        };
        return Err(RunError::Busy(Box::new(current)));
    }
    let result = locked_run(
        &mut client,
        pool,
        registry,
        router,
        runs,
        &provider,
        options,
    )
    .await;
    let unlocked = client
        .query_one(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&LOCK_CLASS, &lock_key(name)],
        )
        .await
        .is_ok_and(|r| r.get::<_, bool>(0));
    if !unlocked {
        // Never hand a connection holding the lock back to the pool.
        drop(deadpool_postgres::Object::take(client));
    }
    result
}

async fn locked_run(
    client: &mut Client,
    pool: &Pool,
    registry: &Registry,
    router: &RouterConfig,
    runs: &Runs,
    provider: &Arc<dyn Provider>,
    options: PullOptions,
) -> Result<(Progress, bool), RunError> {
    let name = provider.name();
    let Some(puller) = provider.puller() else {
        return Err(RunError::NotPulled(name));
    };
    if let Some(every) = options.due_after {
        let recent: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM sync_pull_runs
                                WHERE provider = $1 AND started_at > now() - make_interval(secs => $2))",
                &[&name.as_str(), &every.as_secs_f64()],
            )
            .await
            .map_err(DbError::from)?
            .get(0);
        if recent {
            return Err(RunError::NotDue);
        }
    }
    let mut progress = Progress::idle(name, puller.unit());
    progress.running = true;
    progress.dry_run = options.dry_run;
    progress.since = options.since;
    progress.started_at = Some(Utc::now());
    runs.set(&progress);
    let mut run_id = None;
    if !options.dry_run {
        // We hold the lock: an unfinished run of this provider is one whose
        // process stopped.
        client
            .execute(
                "UPDATE sync_pull_runs SET finished_at = now(),
                     error = 'interrupted: the process running it stopped'
                 WHERE provider = $1 AND finished_at IS NULL",
                &[&name.as_str()],
            )
            .await
            .map_err(DbError::from)?;
        run_id = Some(
            client
                .query_one(
                    "INSERT INTO sync_pull_runs (provider, since) VALUES ($1, $2) RETURNING id",
                    &[&name.as_str(), &options.since],
                )
                .await
                .map_err(DbError::from)?
                .get::<_, i64>(0),
        );
    }
    let pipeline = Pipeline {
        router: Router::new(pool.clone(), registry, router.clone()),
        provider: provider.clone(),
    };
    let dry_run = options.dry_run;
    let outcome = {
        let scope = if dry_run {
            Scope::DryRun(client.transaction().await.map_err(DbError::from)?)
        } else {
            Scope::Commit(&mut *client)
        };
        let mut pull_run = PullRun {
            options,
            scope,
            pipeline,
            progress,
            runs: runs.clone(),
            run_id,
        };
        let outcome = puller.pull(&mut pull_run).await;
        progress = pull_run.progress;
        if let Scope::DryRun(t) = pull_run.scope {
            t.rollback().await.map_err(DbError::from)?;
        }
        outcome
    };
    progress.running = false;
    progress.finished_at = Some(Utc::now());
    let ok = match outcome {
        Ok(PullReport { summary, ok }) => {
            progress.summary = Some(summary);
            ok
        }
        Err(e) => {
            progress.error = Some(e.to_string());
            false
        }
    };
    runs.set(&progress);
    let result = match (&progress.error, ok, dry_run) {
        (Some(_), _, _) => "error",
        (None, false, _) => "partial",
        (None, true, true) => "dry_run",
        (None, true, false) => "ok",
    };
    metrics::counter!("syncbridge_pull_runs_total", "provider" => name.as_str(), "result" => result)
        .increment(1);
    metrics::counter!("syncbridge_pull_rows_total", "provider" => name.as_str())
        .increment(progress.seen);
    if let Some(id) = run_id {
        client
            .execute(
                "UPDATE sync_pull_runs SET finished_at = now(), pages = $2, seen = $3,
                     summary = $4, error = $5 WHERE id = $1",
                &[
                    &id,
                    &(progress.pages as i32),
                    &(progress.seen as i32),
                    &progress.summary,
                    &progress.error,
                ],
            )
            .await
            .map_err(DbError::from)?;
    }
    Ok((progress, ok))
}

/// The current or last run of `provider`: this process's, or else the
/// last one recorded by any process (running if its lock is held).
pub async fn status(
    pool: &Pool,
    registry: &Registry,
    runs: &Runs,
    name: ProviderName,
) -> Result<Progress, RunError> {
    let provider = registry
        .get(name)
        .map_err(|why| RunError::Unavailable(why.to_owned()))?;
    let Some(puller) = provider.puller() else {
        return Err(RunError::NotPulled(name));
    };
    if let Some(p) = runs.get(name).filter(|p| p.running) {
        return Ok(p);
    }
    let client = pool.get().await.map_err(DbError::from)?;
    let recorded = last_run(&client, name, puller.unit()).await?;
    let local = runs.get(name);
    // This process's last run, unless a later one was recorded (a dry run
    // has no row).
    Ok(match (local, recorded) {
        (Some(l), Some(r)) if r.started_at > l.started_at => r,
        (Some(l), _) => l,
        (None, Some(r)) => r,
        (None, None) => Progress::idle(name, puller.unit()),
    })
}

async fn last_run(
    client: &Client,
    name: ProviderName,
    unit: &'static str,
) -> Result<Option<Progress>, DbError> {
    let row = client
        .query_opt(
            "SELECT since, pages, seen, started_at, finished_at, summary, error,
                    EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                            AND classid = $2::int::oid AND objid = $3::int::oid AND objsubid = 2)
             FROM sync_pull_runs WHERE provider = $1 ORDER BY started_at DESC, id DESC LIMIT 1",
            &[&name.as_str(), &LOCK_CLASS, &lock_key(name)],
        )
        .await?;
    Ok(row.map(|r| {
        let finished: Option<DateTime<Utc>> = r.get(4);
        let locked: bool = r.get(7);
        Progress {
            provider: name.as_str(),
            running: finished.is_none() && locked,
            dry_run: false,
            since: r.get(0),
            pages: r.get::<_, i32>(1).max(0) as u32,
            seen: r.get::<_, i32>(2).max(0) as u64,
            unit,
            started_at: r.get(3),
            finished_at: finished,
            summary: r.get(5),
            error: r.get(6),
        }
    }))
}

/// The scheduler's side: every enabled provider whose pull has an interval
/// ([`Pull::every`](crate::providers::Pull::every)) is run when its last
/// real run is that old, once per interval across every process (the
/// check is made under the run's lock). A run's errors are in its summary
/// and in `/api/sync/status` (`pulls`); they never stop the loop.
pub async fn scheduled(
    pool: Pool,
    registry: Registry,
    router: RouterConfig,
    runs: Runs,
    cancel: tokio_util::sync::CancellationToken,
) {
    let jobs: Vec<(ProviderName, std::time::Duration)> = registry
        .enabled()
        .iter()
        .filter_map(|p| Some((p.name(), p.puller()?.every()?)))
        .collect();
    let wakes: Vec<(ProviderName, Arc<tokio::sync::Notify>)> = registry
        .enabled()
        .iter()
        .filter_map(|p| Some((p.name(), p.puller()?.wake()?)))
        .collect();
    let Some(shortest) = jobs.iter().map(|(_, every)| *every).min() else {
        return;
    };
    let tick = (shortest / 4).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(30),
    );
    loop {
        for (name, every) in &jobs {
            let options = PullOptions {
                due_after: Some(*every),
                stop: cancel.clone(),
                ..Default::default()
            };
            match run(&pool, &registry, &router, &runs, *name, options).await {
                Ok((p, true)) => {
                    tracing::info!(provider = %name, pages = p.pages, seen = p.seen, "scheduled pull done")
                }
                Ok((p, false)) => {
                    tracing::warn!(provider = %name, summary = ?p.summary, error = ?p.error, "scheduled pull ended with errors")
                }
                Err(RunError::Busy(_) | RunError::NotDue) => {}
                Err(e) => {
                    tracing::warn!(provider = %name, error = %e, "scheduled pull could not run")
                }
            }
            if cancel.is_cancelled() {
                return;
            }
        }
        let woken = async {
            if wakes.is_empty() {
                return std::future::pending().await;
            }
            let waits = wakes.iter().map(|(name, w)| {
                Box::pin(async move {
                    w.notified().await;
                    *name
                })
            });
            futures_util::future::select_all(waits).await.0
        };
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            name = woken => {
                // Asked for now: run it whatever the interval (one run at a
                // time still, under its lock).
                let options = PullOptions { stop: cancel.clone(), ..Default::default() };
                if let Err(e) = run(&pool, &registry, &router, &runs, name, options).await {
                    if !matches!(e, RunError::Busy(_)) {
                        tracing::warn!(provider = %name, error = %e, "pull on demand could not run");
                    }
                }
            }
            _ = cancel.cancelled() => return,
        }
    }
}
