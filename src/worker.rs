//! The loop every background worker runs (router, dispatcher, fetcher):
//! work whenever woken and on a timer, back off while the work fails, stop
//! when cancelled — and the one retry policy their failed items share.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How a failed item (an inbox event, a push, a fetch) is retried:
/// `base` doubled each attempt, capped at an hour, with "equal jitter"
/// (50–100 % of it) so retries of many failures spread out; `failed` for
/// good after `max_attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: i32,
    pub base: Duration,
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: i32) -> Duration {
        let exp = self.base.as_millis() as f64 * 2f64.powi((attempt - 1).clamp(0, 30));
        let capped = exp.min(3_600_000.0);
        Duration::from_millis((capped * rand::rng().random_range(0.5..1.0)) as u64)
    }

    /// When attempt number `attempt` (1-based, the one that just failed)
    /// is tried again, at least `at_least` from now; `None` when it was the
    /// last.
    pub fn retry_at(&self, attempt: i32, at_least: Option<Duration>) -> Option<DateTime<Utc>> {
        if attempt >= self.max_attempts {
            return None;
        }
        let delay = self.delay(attempt).max(at_least.unwrap_or_default());
        Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default())
    }
}

/// The loop every draining worker runs: `drain` whenever `wake` fires and
/// at least every `poll` (work that came due, wake-ups that were missed);
/// a failing drain is retried with backoff (100 ms doubling to 10 s).
/// Returns when cancelled.
pub async fn drain_loop<T, E, F, Fut>(
    what: &'static str,
    wake: Arc<Notify>,
    poll: std::time::Duration,
    cancel: CancellationToken,
    mut drain: F,
) where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    use std::time::Duration;
    let mut backoff = Duration::from_millis(100);
    loop {
        match drain().await {
            Ok(_) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, "{what} pass failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_with_jitter_cap_at_an_hour_and_stop_at_the_last_attempt() {
        let p = RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(1000),
        };
        for (attempt, lo, hi) in [(1, 500, 1000), (2, 1000, 2000), (3, 2000, 4000)] {
            let d = p.delay(attempt).as_millis();
            assert!((lo..=hi).contains(&d), "attempt {attempt}: {d} ms");
        }
        let far = p.delay(40).as_millis();
        assert!((1_800_000..=3_600_000).contains(&far), "{far}");
        assert!(p.retry_at(1, None).is_some());
        assert!(
            p.retry_at(3, None).is_none(),
            "the third attempt was the last"
        );
        let later = p.retry_at(1, Some(Duration::from_secs(60))).unwrap();
        assert!(later > Utc::now() + chrono::Duration::seconds(59));
    }
}
