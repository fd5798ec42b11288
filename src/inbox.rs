//! The durable, deduplicated inbox with group commit.
//!
//! Handlers hand a verified delivery to [`Inbox::submit`] and wait. A few
//! writer tasks take whatever has queued up (up to `MAX_BATCH`), insert it
//! in one statement, commit once, and only then answer every waiter. So
//! concurrent requests share one transaction and one fsync, and nothing is
//! acknowledged before it is committed.
//!
//! Architecture invariant: `submit` returns `Accepted`/`Duplicate` only
//! after the transaction holding the row has committed; on any error the
//! caller answers 503 and the provider retries.
//! The queue is bounded: when it is full, `submit` waits (backpressure
//! reaches the HTTP clients instead of memory).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::db::{self, DbError, Pool};
use crate::providers::Delivery;

/// Deliveries committed in one transaction at most.
const MAX_BATCH: usize = 512;
/// Deliveries waiting for a writer at most.
const QUEUE_DEPTH: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// New: committed with this inbox id.
    Accepted(i64),
    /// Seen before; nothing changed.
    Duplicate,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum InboxError {
    #[error("the inbox could not store the delivery: {0}")]
    Storage(String),
    #[error("syncbridge is shutting down")]
    ShuttingDown,
}

struct Pending {
    delivery: Delivery,
    queued_at: Instant,
    reply: oneshot::Sender<Result<Stored, InboxError>>,
}

/// Where verified deliveries go.
#[derive(Clone)]
pub enum Inbox {
    /// The real inbox: Postgres, group-committed.
    Postgres(Arc<PostgresInbox>),
    /// Acknowledges without storing. Only for the ingest benchmark's
    /// baseline (`syncbridge-bench`), never wired into `serve`.
    Discard,
}

pub struct PostgresInbox {
    tx: mpsc::Sender<Pending>,
}

impl Inbox {
    /// Starts `writers` writer tasks on `pool`; `stored` is notified after
    /// every commit that stored something new (the router's wake-up).
    pub fn start(
        pool: Pool,
        writers: usize,
        stored: Arc<Notify>,
        cancel: CancellationToken,
    ) -> (Inbox, Vec<tokio::task::JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..writers.max(1))
            .map(|_| {
                tokio::spawn(writer(
                    pool.clone(),
                    rx.clone(),
                    stored.clone(),
                    cancel.clone(),
                ))
            })
            .collect();
        (Inbox::Postgres(Arc::new(PostgresInbox { tx })), handles)
    }

    pub async fn submit(&self, delivery: Delivery) -> Result<Stored, InboxError> {
        match self {
            Inbox::Discard => Ok(Stored::Accepted(0)),
            Inbox::Postgres(p) => {
                let (reply, wait) = oneshot::channel();
                let pending = Pending {
                    delivery,
                    queued_at: Instant::now(),
                    reply,
                };
                p.tx.send(pending)
                    .await
                    .map_err(|_| InboxError::ShuttingDown)?;
                wait.await.map_err(|_| InboxError::ShuttingDown)?
            }
        }
    }
}

async fn writer(
    pool: Pool,
    rx: Arc<Mutex<mpsc::Receiver<Pending>>>,
    stored: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut rx = rx.lock().await;
            // On shutdown, keep draining what was already queued: those
            // senders are waiting for an answer.
            let first = tokio::select! {
                biased;
                p = rx.recv() => p,
                _ = cancel.cancelled() => rx.try_recv().ok(),
            };
            let Some(first) = first else { return };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        let n = batch.len();
        let started = Instant::now();
        let result = commit_batch(&pool, &batch).await;
        metrics::histogram!("syncbridge_inbox_commit_seconds").record(started.elapsed());
        metrics::histogram!("syncbridge_inbox_batch_size").record(n as f64);
        match result {
            Ok(ids) => {
                let any_new = ids.iter().any(Option::is_some);
                for (p, id) in batch.drain(..).zip(ids) {
                    metrics::histogram!("syncbridge_inbox_wait_seconds")
                        .record(p.queued_at.elapsed());
                    let _ = p.reply.send(Ok(match id {
                        Some(id) => Stored::Accepted(id),
                        None => Stored::Duplicate,
                    }));
                }
                if any_new {
                    stored.notify_waiters();
                    stored.notify_one();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, deliveries = n, "inbox commit failed; senders get 503 and will retry");
                metrics::counter!("syncbridge_inbox_commit_failures_total").increment(1);
                let err = InboxError::Storage(e.to_string());
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

async fn commit_batch(pool: &Pool, batch: &[Pending]) -> Result<Vec<Option<i64>>, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let deliveries: Vec<&Delivery> = batch.iter().map(|p| &p.delivery).collect();
    let ids = db::inbox::insert_batch(&tx, &deliveries).await?;
    tx.commit().await?;
    Ok(ids)
}
