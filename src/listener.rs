//! The change listener: a dedicated connection that LISTENs on the outbox
//! doorbell and wakes the dispatcher. NOTIFY is only a wake-up: the
//! dispatcher also drains at start, after every reconnect (this task rings
//! it then) and on its own timer, so a notification lost while disconnected
//! loses nothing. A dropped connection is re-established with backoff, and
//! `/readyz` reports the listener while it is down.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::health::Health;

pub const CHANNEL: &str = "syncbridge_outbox";
/// How the listener's session shows in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "syncbridge-listener";

pub async fn run(url: String, wake: Arc<Notify>, health: Arc<Health>, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&url, &wake, &health, &cancel).await {
            Ok(()) => return, // cancelled
            Err(e) => {
                health.problem("listener", format!("change listener disconnected: {e}"));
                tracing::warn!(error = %e, retry_in = ?backoff, "change listener disconnected; reconnecting");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn listen_once(
    url: &str,
    wake: &Notify,
    health: &Health,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
    config.application_name(APPLICATION_NAME);
    config.connect_timeout(Duration::from_secs(10));
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    // The connection must be polled for the LISTEN to complete.
    tokio::pin!(listen);
    loop {
        tokio::select! {
            r = &mut listen => { r.map_err(|e| e.to_string())?; break; }
            m = messages.next() => match m {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("connection closed".into()),
            },
        }
    }
    health.ok("listener");
    tracing::info!("change listener connected");
    // Drain whatever arrived while we were not listening.
    wake.notify_one();
    loop {
        tokio::select! {
            m = messages.next() => match m {
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("connection closed".into()),
            },
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}
