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

/// The advisory lock class of jobs ("JOBS"); the key is the job's name
/// hashed.
const JOB_LOCK_CLASS: i32 = 0x4a4f_4253;

/// What a running job has: the database, its arguments, its stop signal,
/// and where its progress goes.
pub struct JobCtx {
    pub pool: Pool,
    /// What an on-demand run was asked for (`{}` for a scheduled one).
    pub args: serde_json::Value,
    pub stop: CancellationToken,
    run_id: i64,
}

impl JobCtx {
    /// Records the run's progress (best effort: a failed write never fails
    /// the job).
    pub async fn progress(&self, progress: serde_json::Value) {
        if let Ok(c) = self.pool.get().await {
            let _ = c
                .execute(
                    "UPDATE sync_job_runs SET progress = $2 WHERE id = $1",
                    &[&self.run_id, &progress],
                )
                .await;
        }
    }
}

/// Why a job did not run.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Another process (or task) runs it now.
    #[error("{0} is already running")]
    Busy(String),
    /// Its last run is more recent than the interval asked for.
    #[error("{0} ran less than an interval ago")]
    NotDue(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A finished run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobRun {
    pub job: String,
    pub ok: bool,
    pub summary: serde_json::Value,
    pub error: Option<String>,
}

/// Runs `job` (named `name`) under its advisory lock, held on a
/// connection of its own for the whole run: a second run anywhere is
/// refused (`Busy`); with `due_after`, a run is made only when the last
/// one started at least that long ago (checked under the lock, so several
/// processes run it once per interval). The run is recorded in
/// `sync_job_runs` with its progress, summary and error.
pub async fn run_job<F>(
    pool: &Pool,
    name: &str,
    args: serde_json::Value,
    due_after: Option<Duration>,
    stop: CancellationToken,
    job: F,
) -> Result<JobRun, JobError>
where
    F: AsyncFnOnce(&JobCtx) -> Result<serde_json::Value, String>,
{
    let client = pool.get().await.map_err(DbError::from)?;
    let locked: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[&JOB_LOCK_CLASS, &name],
        )
        .await
        .map_err(DbError::from)?
        .get(0);
    if !locked {
        return Err(JobError::Busy(name.to_owned()));
    }
    let result = locked_job(&client, pool, name, args, due_after, stop, job).await;
    let unlocked = client
        .query_one(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &[&JOB_LOCK_CLASS, &name],
        )
        .await
        .is_ok_and(|r| r.get::<_, bool>(0));
    if !unlocked {
        // Never hand a connection holding the lock back to the pool.
        drop(deadpool_postgres::Object::take(client));
    }
    result
}

async fn locked_job<F>(
    client: &deadpool_postgres::Client,
    pool: &Pool,
    name: &str,
    args: serde_json::Value,
    due_after: Option<Duration>,
    stop: CancellationToken,
    job: F,
) -> Result<JobRun, JobError>
where
    F: AsyncFnOnce(&JobCtx) -> Result<serde_json::Value, String>,
{
    if let Some(every) = due_after {
        let recent: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM sync_job_runs
                                WHERE job = $1 AND started_at > now() - make_interval(secs => $2))",
                &[&name, &every.as_secs_f64()],
            )
            .await
            .map_err(DbError::from)?
            .get(0);
        if recent {
            return Err(JobError::NotDue(name.to_owned()));
        }
    }
    // We hold the lock: an unfinished run is one whose process stopped.
    client
        .execute(
            "UPDATE sync_job_runs SET finished_at = now(), ok = false,
                 error = 'interrupted: the process running it stopped'
             WHERE job = $1 AND finished_at IS NULL",
            &[&name],
        )
        .await
        .map_err(DbError::from)?;
    let run_id: i64 = client
        .query_one(
            "INSERT INTO sync_job_runs (job, progress) VALUES ($1, $2) RETURNING id",
            &[&name, &args],
        )
        .await
        .map_err(DbError::from)?
        .get(0);
    let ctx = JobCtx {
        pool: pool.clone(),
        args,
        stop,
        run_id,
    };
    let outcome = job(&ctx).await;
    let (ok, summary, error) = match outcome {
        Ok(summary) => (true, summary, None),
        Err(e) => (false, serde_json::Value::Null, Some(e)),
    };
    metrics::counter!("syncbridge_job_runs_total", "job" => name.to_owned(),
        "result" => if ok { "ok" } else { "error" })
    .increment(1);
    client
        .execute(
            "UPDATE sync_job_runs SET finished_at = now(), ok = $2,
                 progress = CASE WHEN $3::jsonb IS NULL OR $3 = 'null' THEN progress ELSE $3 END,
                 error = $4
             WHERE id = $1",
            &[&run_id, &ok, &summary, &error],
        )
        .await
        .map_err(DbError::from)?;
    Ok(JobRun {
        job: name.to_owned(),
        ok,
        summary,
        error,
    })
}

/// Every job's last run (running or not), by name, for the status API.
pub async fn last_runs(
    c: &deadpool_postgres::Client,
) -> Result<serde_json::Map<String, serde_json::Value>, DbError> {
    let rows = c
        .query(
            "SELECT DISTINCT ON (job) job,
                    jsonb_build_object('started_at', started_at, 'finished_at', finished_at,
                        'running', finished_at IS NULL AND EXISTS (
                            SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                              AND classid = $1::int::oid AND objid = hashtext(job)::oid
                              AND objsubid = 2),
                        'ok', ok, 'progress', progress, 'error', error)
             FROM sync_job_runs ORDER BY job, started_at DESC, id DESC",
            &[&JOB_LOCK_CLASS],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, serde_json::Value>(1)))
        .collect())
}

/// A job the scheduler runs at an interval.
pub struct Scheduled {
    pub name: String,
    pub every: Duration,
    pub run: Box<dyn Fn(CancellationToken) -> JobFutureOwned + Send + Sync>,
}

pub type JobFutureOwned =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<JobRun, JobError>> + Send + 'static>>;

/// Every enabled provider's jobs that have an interval: each run when its
/// last run is that old, once per interval across every process. A failed
/// run is retried at its next interval; its error is in
/// `/api/sync/status` (`jobs`).
pub fn provider_jobs(pool: &Pool, registry: &crate::providers::Registry) -> Vec<Scheduled> {
    let mut out = Vec::new();
    for p in registry.enabled() {
        for job in p.jobs() {
            let Some(every) = job.every() else { continue };
            let name = format!("{}.{}", p.name(), job.name());
            let (pool, provider, job_name) = (pool.clone(), p.clone(), job.name());
            let key = name.clone();
            out.push(Scheduled {
                name,
                every,
                run: Box::new(move |stop| {
                    let (pool, provider, key) = (pool.clone(), provider.clone(), key.clone());
                    Box::pin(async move {
                        run_provider_job(
                            &pool,
                            &provider,
                            job_name,
                            &key,
                            serde_json::json!({}),
                            Some(every),
                            stop,
                        )
                        .await
                    })
                }),
            });
        }
    }
    out
}

/// Runs one of `provider`'s jobs by name.
pub async fn run_provider_job(
    pool: &Pool,
    provider: &Arc<dyn crate::providers::Provider>,
    job: &str,
    key: &str,
    args: serde_json::Value,
    due_after: Option<Duration>,
    stop: CancellationToken,
) -> Result<JobRun, JobError> {
    run_job(
        pool,
        key,
        args,
        due_after,
        stop,
        async |ctx: &JobCtx| match provider.jobs().into_iter().find(|j| j.name() == job) {
            Some(j) => j.run(ctx).await,
            None => Err(format!("{} has no job {job}", provider.name())),
        },
    )
    .await
}

/// Runs `jobs`, each at its interval, until cancelled.
pub async fn run_scheduled(jobs: Vec<Scheduled>, cancel: CancellationToken) {
    let Some(shortest) = jobs.iter().map(|j| j.every).min() else {
        return;
    };
    let tick = (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        for j in &jobs {
            match (j.run)(cancel.clone()).await {
                Ok(run) if run.ok => tracing::info!(job = %j.name, "scheduled job done"),
                Ok(run) => {
                    tracing::warn!(job = %j.name, error = ?run.error, "scheduled job failed")
                }
                Err(JobError::Busy(_) | JobError::NotDue(_)) => {}
                Err(e) => tracing::warn!(job = %j.name, error = %e, "scheduled job could not run"),
            }
            if cancel.is_cancelled() {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// The seed's archiving (ResMan's control tables: `archive_old_sync_logs`,
/// `archive_resolved_conflicts`, `cleanup_old_queue_items`), daily, what
/// `pg_cron` would run on Supabase.
pub fn archiving(pool: &Pool) -> Scheduled {
    const DAILY: Duration = Duration::from_secs(24 * 3600);
    let pool = pool.clone();
    Scheduled {
        name: "archive".into(),
        every: DAILY,
        run: Box::new(move |stop| {
            let pool = pool.clone();
            Box::pin(async move {
                run_job(
                    &pool,
                    "archive",
                    serde_json::json!({}),
                    Some(DAILY),
                    stop,
                    async |ctx: &JobCtx| {
                        let c = ctx.pool.get().await.map_err(|e| e.to_string())?;
                        c.batch_execute(
                            "SELECT archive_old_sync_logs();
                         SELECT archive_resolved_conflicts();
                         SELECT cleanup_old_queue_items();",
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                        Ok(serde_json::json!({"archived": true}))
                    },
                )
                .await
            })
        }),
    }
}
