//! Builds and supervises what `serve` runs: the HTTP front, the inbox
//! writers, the router and the scheduler. Every task gets a cancellation
//! token and is awaited at shutdown, in pipeline order: first stop
//! accepting requests and finish the in-flight ones (which wait for their
//! inbox commits), then stop the workers, which finish their current batch
//! and release their claims by committing or rolling back.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::Pool;
use crate::dispatcher::Dispatcher;
use crate::fetcher::Fetcher;
use crate::health::Health;
pub use crate::http::{AppState, Wakers};
use crate::inbox::{ByteBudget, Inbox};
use crate::providers::Registry;
use crate::router::Router;
use crate::{listener, scheduler, telemetry};

/// Makes the allocator give large buffers back to the system when they
/// are freed. A webhook body, a claimed batch or a statement's parameters
/// can be megabytes; glibc's malloc raises its mmap threshold after the
/// first such buffer is freed and from then on keeps them in its heaps,
/// so a burst of large events left the process hundreds of MB larger for
/// good. A fixed threshold keeps every buffer over 256 KiB mmapped (and
/// unmapped on free); small allocations are untouched. Call once, before
/// the runtime starts threads.
pub fn release_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 * 1024 * 1024);
    }
}

/// Where the inbox puts verified deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxMode {
    /// Postgres, group-committed: what `serve` runs.
    Postgres,
    /// Acknowledge without storing: the ingest benchmark's baseline only.
    Discard,
}

/// A running service.
pub struct App {
    pub state: AppState,
    addr: SocketAddr,
    http_cancel: CancellationToken,
    work_cancel: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    workers: Vec<JoinHandle<()>>,
}

/// Connections the service keeps at most (inbox writers, router,
/// handlers' readiness checks, scheduler).
pub const POOL_SIZE: usize = 16;

impl App {
    /// Starts every component on an already-bound listener against an
    /// already-migrated database.
    pub async fn start(config: Config, pool: Pool, listener: TcpListener) -> std::io::Result<App> {
        App::start_with(config, pool, listener, InboxMode::Postgres).await
    }

    /// As [`App::start`], choosing where verified deliveries go.
    pub async fn start_with(
        config: Config,
        pool: Pool,
        listener: TcpListener,
        mode: InboxMode,
    ) -> std::io::Result<App> {
        let config = Arc::new(config);
        let work_cancel = CancellationToken::new();
        let http_cancel = CancellationToken::new();
        let providers = Registry::from_config(&config);
        let health = Arc::new(Health::default());
        let wake = Wakers::default();
        let stored = wake.router.clone();

        let (inbox, mut workers) = match mode {
            InboxMode::Postgres => Inbox::start(
                pool.clone(),
                config.inbox_writers,
                stored.clone(),
                work_cancel.clone(),
            ),
            InboxMode::Discard => (Inbox::Discard, Vec::new()),
        };
        let router = Router::new(pool.clone(), &providers, config.router.clone());
        for _ in 0..config.router.workers {
            workers.push(tokio::spawn(
                router.clone().run(stored.clone(), work_cancel.clone()),
            ));
        }
        let doorbell = wake.dispatcher.clone();
        let dispatcher = Dispatcher::new(pool.clone(), &providers, config.dispatcher.clone());
        workers.push(tokio::spawn(
            dispatcher.run(doorbell.clone(), work_cancel.clone()),
        ));
        let fetcher = Fetcher::new(pool.clone(), &providers, config.fetcher.clone());
        workers.push(tokio::spawn(fetcher.run(work_cancel.clone())));
        if let Some(url) = &config.database_url {
            health.problem("listener", "change listener connecting");
            workers.push(tokio::spawn(listener::run(
                url.expose().to_owned(),
                doorbell,
                health.clone(),
                work_cancel.clone(),
            )));
        } else {
            tracing::warn!(
                "no database URL in the configuration: the change listener is not running"
            );
            health.problem("listener", "no database URL: change listener not running");
        }
        workers.push(tokio::spawn(scheduler::run(
            pool.clone(),
            health.clone(),
            work_cancel.clone(),
        )));
        workers.push(tokio::spawn(crate::ops::queues::sample(
            pool.clone(),
            work_cancel.clone(),
        )));
        if let Some(url) = &config.public_url {
            workers.push(tokio::spawn(scheduler::maintain_subscriptions(
                pool.clone(),
                providers.enabled(),
                url.clone(),
                health.clone(),
                work_cancel.clone(),
            )));
        }

        let pulls = crate::pull::Runs::default();
        workers.push(tokio::spawn(crate::pull::scheduled(
            pool.clone(),
            providers.clone(),
            config.router.clone(),
            pulls.clone(),
            work_cancel.clone(),
        )));

        // The providers' scheduled jobs, and integrity with its safe
        // repairs, each once per interval across every process.
        let mut jobs = scheduler::provider_jobs(&pool, &providers);
        if let Some(every) = config.integrity_every {
            let (pool, registry, config) = (
                pool.clone(),
                providers.clone(),
                std::sync::Arc::new(config.clone()),
            );
            jobs.push(scheduler::Scheduled {
                name: "integrity".into(),
                every,
                run: Box::new(move |stop| {
                    let (pool, registry, config) = (pool.clone(), registry.clone(), config.clone());
                    Box::pin(async move {
                        scheduler::run_job(&pool, "integrity", serde_json::json!({}), Some(every), stop,
                            async |ctx: &scheduler::JobCtx| {
                                let r = crate::ops::integrity::run(&ctx.pool, &registry, &config, true)
                                    .await
                                    .map_err(|e| e.to_string())?;
                                Ok(serde_json::json!({"found": r.findings.len(), "fixed": r.fixed(),
                                                      "remaining": r.remaining(), "errors": r.errors}))
                            })
                        .await
                    })
                }),
            });
        }
        jobs.push(scheduler::archiving(&pool));
        workers.push(tokio::spawn(scheduler::run_scheduled(
            jobs,
            work_cancel.clone(),
        )));

        let body_budget = ByteBudget::new(config.http.max_inflight_bytes);
        let state = AppState {
            config,
            pool,
            inbox,
            body_budget,
            providers,
            metrics: telemetry::metrics(),
            health,
            wake,
            pulls,
        };
        let addr = listener.local_addr()?;
        let app = crate::http::router(state.clone());
        let limits = state.config.http.clone();
        let shutdown = http_cancel.clone();
        let server = tokio::spawn(crate::http::server::serve(listener, app, limits, shutdown));
        Ok(App {
            state,
            addr,
            http_cancel,
            work_cancel,
            server,
            workers,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Graceful stop: no new requests, in-flight ones answered, workers
    /// finish their batch.
    pub async fn shutdown(self) {
        self.http_cancel.cancel();
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
        }
        self.work_cancel.cancel();
        for w in self.workers {
            let _ = w.await;
        }
    }
}
