//! Outbound HTTP shared by the providers' API clients: a per-credential
//! pacer (requests spaced to stay under the provider's rate limit), the
//! `Retry-After` parser, and the error classes the dispatcher retries on.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::Secret;

/// Why a push failed, and whether trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PushError {
    /// 429: try again after the provider's `Retry-After` (or our backoff).
    #[error("rate limited by the provider (retry after {0:?})")]
    RateLimited(Option<Duration>),
    /// Timeouts, dropped connections, 5xx: retried with backoff.
    #[error("{0}")]
    Transient(String),
    /// 4xx other than 429, bad data: retrying the same request will not
    /// help; the change ends `failed` with this text.
    #[error("{0}")]
    Permanent(String),
    /// The provider has no credentials for outbound calls.
    #[error("{0}")]
    Disabled(&'static str),
    /// Not pushed, on purpose (the provider does not take this change: a
    /// paused integration, a record that is not for it yet): the change is
    /// `skipped` with this reason, never retried.
    #[error("{0}")]
    Skipped(String),
    /// The remote object changed since syncbridge last saw it: the caller
    /// applies this state under the conflict rules and pushes what they
    /// decide. `wrote` is set when a write went out all the same (over a
    /// read that someone else's edit overtook, seen only in the write's
    /// answer): its window is declared like a successful push's.
    /// A write was sent but its answer was lost, and whether it landed
    /// could not be told (the read after it failed, or showed it not there
    /// yet: it may land late). Retried like `Transient`; the dispatcher
    /// records the write, so a later attempt that finds these values in
    /// place declares the window it wrote over.
    #[error("{why}")]
    InDoubt {
        why: String,
        write: Box<super::InDoubtWrite>,
    },
    #[error("the remote object changed since it was last synced")]
    RemoteChanged {
        object: Box<super::RemoteObject>,
        wrote: Option<Box<super::WriteWindow>>,
    },
}

impl PushError {
    pub fn from_reqwest(e: &reqwest::Error) -> PushError {
        if e.is_timeout() {
            PushError::Transient("the provider did not answer in time".into())
        } else if e.is_connect() {
            PushError::Transient(format!("cannot reach the provider: {e}"))
        } else {
            PushError::Transient(format!("request failed: {e}"))
        }
    }

    /// Classifies an unsuccessful response.
    pub fn from_status(
        status: reqwest::StatusCode,
        retry_after: Option<Duration>,
        body: &str,
    ) -> PushError {
        let body: String = body.chars().take(300).collect();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            PushError::RateLimited(retry_after)
        } else if status.is_server_error() || status == reqwest::StatusCode::REQUEST_TIMEOUT {
            PushError::Transient(format!("provider answered {status}: {body}"))
        } else {
            PushError::Permanent(format!("provider answered {status}: {body}"))
        }
    }
}

/// `Retry-After` as seconds (the HTTP-date form is rare from APIs and is
/// treated as absent).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// Sends one JSON API request through `pacer`: `Ok(None)` for a 404,
/// `Ok(Some(Null))` for a 204, the body otherwise; an unsuccessful answer
/// is classified, and a 429 holds every request on the pacer back by its
/// `Retry-After` (one second without one).
pub async fn send_json(
    pacer: &Pacer,
    req: reqwest::RequestBuilder,
) -> Result<Option<serde_json::Value>, PushError> {
    pacer.wait().await;
    let resp = req.send().await.map_err(|e| PushError::from_reqwest(&e))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if status.is_success() {
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(Some(serde_json::Value::Null));
        }
        let body = read_capped(resp, MAX_RESPONSE_BYTES).await?;
        let v = serde_json::from_slice(&body)
            .map_err(|e| PushError::Transient(format!("the provider's answer is not JSON: {e}")))?;
        return Ok(Some(v));
    }
    let wait = retry_after(resp.headers());
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        pacer.hold_off(wait.unwrap_or(Duration::from_secs(1))).await;
    }
    let text = read_capped(resp, 4096).await.unwrap_or_default();
    Err(PushError::from_status(
        status,
        wait,
        &String::from_utf8_lossy(&text),
    ))
}

/// A provider's answer is read into memory up to this many bytes; a larger
/// one is an error, not an allocation (no API syncbridge calls answers one
/// object in more).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// The body of `resp`, refused past `max` bytes (an error answer's text is
/// cut there instead).
pub async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, PushError> {
    if resp.content_length().is_some_and(|n| n > max as u64) && resp.status().is_success() {
        return Err(PushError::Transient(format!(
            "the provider's answer is over {max} bytes"
        )));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| PushError::from_reqwest(&e))?
    {
        if out.len() + chunk.len() > max {
            if !resp.status().is_success() {
                out.extend_from_slice(&chunk[..max - out.len()]);
                return Ok(out);
            }
            return Err(PushError::Transient(format!(
                "the provider's answer is over {max} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Runs `attempt` until it succeeds, fails for good (`Permanent`,
/// `Disabled`, `RemoteChanged`), or `policy.max_attempts` attempts failed:
/// a 429 is tried again after its `Retry-After` (the pacer holds every
/// other request back as well), 5xx, timeouts and dropped connections after
/// the policy's backoff with jitter. The last error names `what` and the
/// attempts made. For callers that wait in-line (a pull, a replica job);
/// the dispatcher and fetcher retry through their queues instead.
pub async fn retrying<T, F, Fut>(
    policy: &crate::worker::RetryPolicy,
    what: &str,
    provider: &'static str,
    mut attempt: F,
) -> Result<T, PushError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PushError>>,
{
    let mut n = 0;
    loop {
        n += 1;
        let error = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e @ (PushError::Transient(_) | PushError::RateLimited(_))) => e,
            Err(e) => return Err(e),
        };
        if n >= policy.max_attempts {
            return Err(match error {
                PushError::RateLimited(_) => {
                    PushError::Transient(format!("{what}: still rate limited after {n} attempts"))
                }
                PushError::Transient(why) => {
                    PushError::Transient(format!("{what}: {why} (after {n} attempts)"))
                }
                other => other,
            });
        }
        let wait = match &error {
            PushError::RateLimited(Some(after)) => *after,
            _ => policy.delay(n),
        };
        tracing::info!(what, attempt = n, wait_ms = wait.as_millis() as u64, error = %error, "request retried");
        metrics::counter!("syncbridge_api_retries_total", "provider" => provider).increment(1);
        tokio::time::sleep(wait).await;
    }
}

/// A provider's JSON API: its base URL, the credential in the header the
/// provider reads it from, and the pacer every request to it waits on.
pub struct JsonApi {
    http: reqwest::Client,
    base: String,
    auth_header: &'static str,
    key: Secret,
    pacer: Pacer,
}

impl JsonApi {
    /// `timeout` bounds each request and its connection.
    pub fn new(
        timeout: Duration,
        base: String,
        auth_header: &'static str,
        key: Secret,
        pacer: Pacer,
    ) -> JsonApi {
        JsonApi {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()
                .unwrap_or_default(),
            base,
            auth_header,
            key,
            pacer,
        }
    }

    /// Sends one request ([`send_json`]): `Ok(None)` for a 404.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<Option<serde_json::Value>, PushError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(self.auth_header, self.key.expose())
            .query(query);
        if let Some(b) = body {
            req = req.json(b);
        }
        send_json(&self.pacer, req).await
    }
}

/// Spaces requests at least `1/rate` apart, across every task that shares
/// it; a 429 pushes the next slot back by the provider's `Retry-After`.
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    pub fn per_second(rate: u32) -> Pacer {
        Pacer {
            interval: Duration::from_secs(1) / rate.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// At most `per_minute` requests a minute, evenly spaced.
    pub fn per_minute(per_minute: u32) -> Pacer {
        Pacer {
            interval: Duration::from_secs(60) / per_minute.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this request's slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// Nobody sends before `after` from now.
    pub async fn hold_off(&self, after: Duration) {
        let mut next = self.next.lock().await;
        *next = (*next).max(Instant::now() + after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn statuses_classify() {
        use reqwest::StatusCode as S;
        assert!(matches!(
            PushError::from_status(S::TOO_MANY_REQUESTS, None, ""),
            PushError::RateLimited(None)
        ));
        assert!(matches!(
            PushError::from_status(S::BAD_GATEWAY, None, ""),
            PushError::Transient(_)
        ));
        assert!(matches!(
            PushError::from_status(S::BAD_REQUEST, None, ""),
            PushError::Permanent(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_requests() {
        let p = Pacer::per_second(10);
        let t0 = Instant::now();
        for _ in 0..5 {
            p.wait().await;
        }
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(500),
            "{took:?}"
        );
    }
}
