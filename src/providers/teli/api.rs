//! The Teli API client: the organisation's call list and a call's detail,
//! paced to `TELI_API_RATE`, a 429 waited out for its `Retry-After`, 5xx
//! and timeouts retried with backoff and jitter.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::config::TeliConfig;
use super::wire::{self, Listed};
use crate::config::Secret;
use crate::providers::outbound::{
    read_capped, retry_after, retrying, Pacer, PushError, MAX_RESPONSE_BYTES,
};

pub struct TeliApi {
    http: reqwest::Client,
    config: TeliConfig,
    key: Secret,
    organization_id: String,
    pacer: Pacer,
}

/// Teli's date filters take ISO-8601 UTC.
fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl TeliApi {
    /// `None` when the key or organisation is not configured.
    pub fn new(config: &TeliConfig, timeout: Duration) -> Option<TeliApi> {
        Some(TeliApi {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()
                .ok()?,
            key: config.api_key.clone()?,
            organization_id: config.organization_id.clone()?,
            pacer: Pacer::per_second(config.api_rate),
            config: config.clone(),
        })
    }

    pub fn page_size(&self) -> usize {
        self.config.page_size as usize
    }

    /// One list page, newest first: calls started after `after` and
    /// before `before`. Entries that do not parse come back as errors.
    pub async fn list(
        &self,
        after: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
    ) -> Result<Vec<Result<Listed, String>>, PushError> {
        let mut query: Vec<(&str, String)> = vec![
            ("organization_id", self.organization_id.clone()),
            ("is_admin", "true".into()),
            ("limit", self.config.page_size.to_string()),
        ];
        if let Some(user) = &self.config.user_id {
            query.push(("user_id", user.clone()));
        }
        if let Some(t) = after {
            query.push((&self.config.after_param, iso(t)));
        }
        if let Some(t) = before {
            query.push((&self.config.before_param, iso(t)));
        }
        let body = self.get("/v1/voice/calls", &query).await?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| PushError::Transient(format!("Teli's call list is not JSON: {e}")))?;
        wire::list_page(&v).map_err(PushError::Permanent)
    }

    /// A call's detail, the response's bytes as sent; checked to be the
    /// call asked for (a proxy answering another call never lands on it).
    pub async fn detail(&self, call_id: &str) -> Result<Bytes, PushError> {
        let path = format!("/v1/voice/calls/{}", url_segment(call_id));
        let body = self.get(&path, &[]).await?;
        let (call, _) = wire::call_of(&body).map_err(PushError::Permanent)?;
        if call.call_id != call_id {
            return Err(PushError::Permanent(format!(
                "asked for call {call_id}, Teli answered call {}",
                call.call_id
            )));
        }
        Ok(Bytes::from(body))
    }

    /// A GET retried per the policy ([`retrying`]).
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>, PushError> {
        retrying(&self.config.retry, &format!("GET {path}"), "teli", || {
            self.get_once(path, query)
        })
        .await
    }

    async fn get_once(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>, PushError> {
        self.pacer.wait().await;
        let resp = self
            .http
            .get(format!("{}{path}", self.config.api_url))
            .header("X-API-Key", self.key.expose())
            .query(query)
            .send()
            .await
            .map_err(|e| PushError::from_reqwest(&e))?;
        let status = resp.status();
        metrics::counter!("syncbridge_teli_requests_total", "status" => status.as_str().to_owned())
            .increment(1);
        if status.is_success() {
            return read_capped(resp, MAX_RESPONSE_BYTES).await;
        }
        let wait = retry_after(resp.headers());
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            self.pacer
                .hold_off(wait.unwrap_or(Duration::from_secs(1)))
                .await;
        }
        let text = read_capped(resp, 4096).await.unwrap_or_default();
        let detail = serde_json::from_slice::<Value>(&text)
            .map(|v| wire::error_text(&v))
            .unwrap_or_else(|_| String::from_utf8_lossy(&text).into_owned());
        Err(PushError::from_status(status, wait, &detail))
    }
}

/// The organisation's calls page by page, newest first, within `since`:
/// each page lists calls started before the oldest of the one before. The
/// bound is moved one millisecond later so calls sharing the boundary's
/// start time are listed again (and returned once) whether Teli's filter is
/// inclusive or not.
pub struct Pager<'a> {
    api: &'a TeliApi,
    since: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
    seen: HashSet<String>,
    done: bool,
}

/// One page: the calls not returned before (and started within `since`),
/// and the entries that did not parse or the reason paging stopped.
pub struct Page {
    pub calls: Vec<Listed>,
    pub errors: Vec<String>,
}

impl<'a> Pager<'a> {
    pub fn new(api: &'a TeliApi, since: Option<DateTime<Utc>>) -> Pager<'a> {
        Pager {
            api,
            since,
            before: None,
            seen: HashSet::new(),
            done: false,
        }
    }

    /// The next page; `None` after the last.
    pub async fn next(&mut self) -> Option<Result<Page, PushError>> {
        if self.done {
            return None;
        }
        let listed = match self.api.list(self.since, self.before).await {
            Ok(l) => l,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let full = listed.len() >= self.api.page_size();
        let mut page = Page {
            calls: Vec::with_capacity(listed.len()),
            errors: Vec::new(),
        };
        let mut oldest: Option<DateTime<Utc>> = None;
        for entry in listed {
            match entry {
                Ok(c) => {
                    if let Some(t) = c.started {
                        oldest = Some(oldest.map_or(t, |o| o.min(t)));
                    }
                    let within = self.since.is_none_or(|s| c.started.is_none_or(|t| t >= s));
                    if self.seen.insert(c.call_id.clone()) && within {
                        page.calls.push(c);
                    }
                }
                Err(e) => page.errors.push(format!("a listed call was skipped: {e}")),
            }
        }
        self.done = true;
        match oldest {
            _ if !full => {}
            None => page
                .errors
                .push("a full page of calls had no start times; paging stopped".into()),
            Some(o) if page.calls.is_empty() => page.errors.push(format!(
                "more than {} calls started at {o}; paging cannot pass them",
                self.api.page_size()
            )),
            Some(o) if self.since.is_some_and(|s| o < s) => {}
            Some(o) => {
                self.before = Some(o + chrono::Duration::milliseconds(1));
                self.done = false;
            }
        }
        Some(Ok(page))
    }
}

/// A path segment with everything but unreserved characters escaped.
fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_escaped_in_paths() {
        assert_eq!(super::url_segment("call_a1/../x?y"), "call_a1%2F..%2Fx%3Fy");
    }
}
