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
//! The queue is bounded in count (`QUEUE_DEPTH`) and in bytes: every
//! delivery in it belongs to a request holding a [`Reservation`] of the
//! [`ByteBudget`] for its body, taken before the body was read. When either
//! is exhausted, senders wait (backpressure reaches the HTTP clients
//! instead of memory).
//!
//! A bad row fails alone: if the group's INSERT is refused for its data,
//! the writer stores the group again one delivery per savepoint, so only
//! the offending delivery is refused (`InboxError::Refused`, a 400) and
//! every other one is committed and acknowledged as usual.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, Mutex, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::db::{self, DbError, Pool};
use crate::providers::Delivery;

/// Deliveries committed in one transaction at most.
const MAX_BATCH: usize = 512;
/// Body bytes committed in one transaction at most (the statement's
/// parameters are encoded in memory, and each connection keeps a buffer
/// the size of the largest it sent: a group of 1 MB deliveries stops at
/// four, which still shares each fsync).
const MAX_BATCH_BYTES: usize = 4 << 20;
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
    /// The database refused this delivery's own data; retrying it will not
    /// help, and no other delivery was affected.
    #[error("the database refused this delivery: {0}")]
    Refused(String),
    #[error("syncbridge is shutting down")]
    ShuttingDown,
}

/// Bytes that request bodies may hold in memory at once, from before they
/// are read until their answer (the inbox's queue included). Counted in
/// KiB so the budget can exceed 4 GiB's worth of permits.
#[derive(Clone)]
pub struct ByteBudget {
    permits: Arc<Semaphore>,
    total_kib: u32,
}

/// Bytes held under a [`ByteBudget`]; released on drop.
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl ByteBudget {
    pub fn new(bytes: usize) -> ByteBudget {
        let total_kib = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        ByteBudget {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Waits until `bytes` fit (a request larger than the whole budget
    /// takes all of it).
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1))
            .unwrap_or(u32::MAX)
            .min(self.total_kib);
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(kib)
            .await
            .expect("the budget's semaphore is never closed");
        Reservation { _permit: permit }
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits() * 1024
    }
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
            let mut bytes = first.delivery.body.len();
            batch.push(first);
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += p.delivery.body.len();
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
        }
        let n = batch.len();
        let started = Instant::now();
        let result = commit_batch(&pool, &batch).await;
        metrics::histogram!("syncbridge_inbox_commit_seconds").record(started.elapsed());
        metrics::histogram!("syncbridge_inbox_batch_size").record(n as f64);
        let result = match result {
            Err(e) if !e.is_transient() => {
                // Refused for its data (or otherwise by the server, with the
                // connection intact): find the delivery that caused it.
                tracing::warn!(error = %e, deliveries = n, "inbox group refused; storing its deliveries one by one");
                metrics::counter!("syncbridge_inbox_group_retries_total").increment(1);
                commit_each(&pool, &batch).await
            }
            Ok(ids) => Ok(ids.into_iter().map(Ok).collect()),
            Err(e) => Err(e),
        };
        match result {
            Ok(results) => {
                let any_new = results.iter().any(|r| matches!(r, Ok(Some(_))));
                for (p, r) in batch.drain(..).zip(results) {
                    metrics::histogram!("syncbridge_inbox_wait_seconds")
                        .record(p.queued_at.elapsed());
                    let _ = p.reply.send(match r {
                        Ok(Some(id)) => Ok(Stored::Accepted(id)),
                        Ok(None) => Ok(Stored::Duplicate),
                        Err(e) => Err(e),
                    });
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

/// The group again, one savepoint per delivery, one commit: a delivery the
/// database refuses gets its own error and the rest are stored.
async fn commit_each(
    pool: &Pool,
    batch: &[Pending],
) -> Result<Vec<Result<Option<i64>, InboxError>>, DbError> {
    let mut client = pool.get().await?;
    let mut tx = client.transaction().await?;
    let mut out = Vec::with_capacity(batch.len());
    for p in batch {
        let sp = tx.savepoint("delivery").await?;
        match db::inbox::insert_batch(&sp, &[&p.delivery]).await {
            Ok(ids) => {
                sp.commit().await?;
                out.push(Ok(ids.into_iter().next().flatten()));
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                sp.rollback().await?;
                tracing::warn!(error = %e, provider = %p.delivery.provider, "delivery refused by the database");
                metrics::counter!("syncbridge_inbox_refused_total",
                    "provider" => p.delivery.provider.as_str())
                .increment(1);
                out.push(Err(InboxError::Refused(e.to_string())));
            }
        }
    }
    tx.commit().await?;
    Ok(out)
}

async fn commit_batch(pool: &Pool, batch: &[Pending]) -> Result<Vec<Option<i64>>, DbError> {
    let mut client = pool.get().await?;
    let deliveries: Vec<&Delivery> = batch.iter().map(|p| &p.delivery).collect();
    if !db::inbox::needs_transaction(&deliveries) {
        // One statement, its own transaction: committed (durably) when it
        // returns, in one round trip instead of BEGIN, INSERT, COMMIT.
        return db::inbox::insert_batch(&client, &deliveries).await;
    }
    let tx = client.transaction().await?;
    let ids = db::inbox::insert_batch(&tx, &deliveries).await?;
    tx.commit().await?;
    Ok(ids)
}
