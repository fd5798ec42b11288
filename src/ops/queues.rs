//! The depth and oldest-pending age of each queue (inbox, outbox, fetch)
//! per provider: sampled every few seconds into the
//! `syncbridge_queue_depth` and `syncbridge_queue_oldest_seconds` gauges,
//! so a scrape of `/metrics` (which anyone reaching the port can make)
//! never costs a query.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::db::{DbError, Pool};

/// How often the gauges are refreshed.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One queue of one provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Depth {
    pub queue: &'static str,
    pub provider: String,
    pub pending: i64,
    /// Seconds since the oldest pending item arrived (received, changed,
    /// first hinted).
    pub oldest_seconds: f64,
}

/// The pending items of every queue, per provider (held changes waiting
/// for a conflict count as pending: they are not pushed).
pub async fn depths(c: &deadpool_postgres::Client) -> Result<Vec<Depth>, DbError> {
    let rows = c
        .query(
            "SELECT 'inbox', q.provider, count(*), extract(epoch FROM now() - min(e.received_at))::float8
               FROM webhook_queue q JOIN webhook_events e ON e.id = q.event_id
               WHERE q.status = 'pending' GROUP BY q.provider
             UNION ALL
             SELECT 'outbox', provider, count(*), extract(epoch FROM now() - min(created_at))::float8
               FROM sync_outbox WHERE status = 'pending' GROUP BY provider
             UNION ALL
             SELECT 'fetch', provider, count(*), extract(epoch FROM now() - min(first_hint_at))::float8
               FROM sync_fetch_queue GROUP BY provider
             ORDER BY 1, 2",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Depth {
            queue: match r.get::<_, &str>(0) {
                "inbox" => "inbox",
                "outbox" => "outbox",
                _ => "fetch",
            },
            provider: r.get(1),
            pending: r.get(2),
            oldest_seconds: r.get(3),
        })
        .collect())
}

/// Samples the gauges until cancelled. A queue that drained reads 0.
pub async fn sample(pool: Pool, cancel: CancellationToken) {
    let mut seen: BTreeSet<(&'static str, String)> = BTreeSet::new();
    loop {
        match pool.get().await.map_err(DbError::from) {
            Ok(c) => match depths(&c).await {
                Ok(now) => {
                    for (queue, provider) in &seen {
                        if !now
                            .iter()
                            .any(|d| d.queue == *queue && d.provider == *provider)
                        {
                            set(queue, provider.clone(), 0, 0.0);
                        }
                    }
                    for d in now {
                        set(d.queue, d.provider.clone(), d.pending, d.oldest_seconds);
                        seen.insert((d.queue, d.provider));
                    }
                }
                Err(e) => tracing::debug!(error = %e, "queue depths not sampled"),
            },
            Err(e) => tracing::debug!(error = %e, "queue depths not sampled"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

fn set(queue: &'static str, provider: String, pending: i64, oldest: f64) {
    metrics::gauge!("syncbridge_queue_depth", "queue" => queue, "provider" => provider.clone())
        .set(pending as f64);
    metrics::gauge!("syncbridge_queue_oldest_seconds", "queue" => queue, "provider" => provider)
        .set(oldest);
}
