//! Logging (tracing, text or JSON) and the process-wide Prometheus
//! recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the tracing subscriber once (later calls do nothing).
/// `RUST_LOG` overrides the default `info` level.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The process-wide metrics recorder (installed on first use) and its
/// handle for `/metrics`.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &sizes));
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // Another recorder may already be installed (a host program);
            // then /metrics shows ours, which nothing records into.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "syncbridge_webhook_deliveries_total",
        "Webhook deliveries by provider, result (received, accepted, duplicate, rejected, handshake) and reason"
    );
    describe_histogram!(
        "syncbridge_ingest_seconds",
        Unit::Seconds,
        "Webhook request handling time, verify to acknowledgement"
    );
    describe_histogram!(
        "syncbridge_inbox_commit_seconds",
        Unit::Seconds,
        "Time to commit one group of inbox inserts"
    );
    describe_histogram!(
        "syncbridge_inbox_batch_size",
        "Deliveries committed per inbox transaction"
    );
    describe_histogram!(
        "syncbridge_inbox_wait_seconds",
        Unit::Seconds,
        "Time a delivery waited from queueing to commit"
    );
    describe_counter!(
        "syncbridge_inbox_commit_failures_total",
        "Inbox transactions that failed (their senders got 503)"
    );
    describe_counter!(
        "syncbridge_events_total",
        "Inbox events by provider and result (applied, ignored, skipped_stale, retried, failed)"
    );
    describe_histogram!(
        "syncbridge_apply_seconds",
        Unit::Seconds,
        "Time to apply one inbox event"
    );
    describe_counter!(
        "syncbridge_conflicts_total",
        "Fields changed on both sides, by entity and the strategy that decided them"
    );
    describe_counter!(
        "syncbridge_pushes_total",
        "Outbound push attempts by provider and result (pushed, retried, failed, skipped)"
    );
    describe_histogram!(
        "syncbridge_push_seconds",
        Unit::Seconds,
        "Time of one push call to a provider"
    );
    describe_histogram!(
        "syncbridge_change_to_push_seconds",
        Unit::Seconds,
        "End to end: local change committed to the provider acknowledging the push"
    );
    describe_counter!(
        "syncbridge_pull_runs_total",
        "Pull runs by provider and result (ok, partial, error, dry_run)"
    );
    describe_counter!(
        "syncbridge_pull_rows_total",
        "Remote rows read by pull runs, by provider"
    );
    describe_gauge!(
        "syncbridge_queue_depth",
        "Pending items by queue (inbox, outbox, fetch) and provider, sampled every 5 s"
    );
    describe_gauge!(
        "syncbridge_queue_oldest_seconds",
        Unit::Seconds,
        "Age of the oldest pending item by queue and provider, sampled every 5 s"
    );
    describe_gauge!(
        "syncbridge_integrity_issues",
        "Findings of the last integrity run by provider and check"
    );
}
