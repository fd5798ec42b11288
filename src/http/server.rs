//! The accept loop: HTTP/1.1 connections served by hyper under the limits
//! of [`HttpLimits`]. It exists (instead of `axum::serve`) because the
//! front faces the open internet and axum's server has no knobs for what
//! a slow or greedy client may hold:
//!
//! - at most `max_connections` at once: past it the loop stops accepting
//!   and new connections wait in the kernel's backlog (backpressure);
//! - a connection must send a request's headers within `header_timeout` of
//!   opening or of its previous answer, else it is closed (slowloris, and
//!   the keep-alive idle limit); header bytes are capped by hyper's read
//!   buffer (`MAX_HEADER_BYTES`);
//! - a request must be answered within `request_timeout` of its headers,
//!   body included (the router's deadline layer answers 408 past it).
//!
//! Graceful shutdown: on cancel the listener closes, idle connections are
//! closed, and in-flight requests finish (their inbox commits included).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::HttpLimits;

/// Bytes hyper buffers for a request head (and reads at once) at most.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serves `app` on `listener` until `shutdown`, then waits for in-flight
/// requests.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the connection semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of
                    // spinning; the connections being served go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(MAX_HEADER_BYTES)
            .keep_alive(true);
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A connection error (reset, timeout, malformed request) ends
            // that connection only.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
