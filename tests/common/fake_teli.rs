//! A fake Teli voice API (PROVIDERS.md §4): `GET /v1/voice/calls` and
//! `GET /v1/voice/calls/{call_id}` with Teli's shapes — `X-API-Key`
//! checked, `organization_id` required (400 `{"error"}`), `is_admin=true`
//! for every call of the organisation else `user_id` required and
//! filtered on, `call_status` defaulting to `ended`, `agent_id` and
//! `direction` filters, newest first by `start_timestamp`, `limit` default
//! 50 and at most 100, the `start_date`/`end_date` filters (after, at or
//! later; before, strictly earlier), list entries without the detail's
//! fields — and injected 429 (`Retry-After`), 5xx, slow answers and
//! dropped connections. Shared by the tests and `syncbridge-bench teli`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::{json, Map, Value};

pub const API_KEY: &str = "teli_test_key_0123456789";
pub const ORG: &str = "1762896364768x389173798861431550";
pub const USER: &str = "1762896364768x100000000000000001";

/// The fields the list answers (the detail adds the rest).
const LIST_FIELDS: &[&str] = &[
    "call_id",
    "voice_agent_id",
    "agent_id",
    "organization_id",
    "user_id",
    "tenant_id",
    "start_timestamp",
    "end_timestamp",
    "call_status",
    "direction",
    "user_sentiment",
    "call_successful",
    "in_voicemail",
    "recording_url",
    "recording_s3_key",
    "recording_downloaded_at",
    "call_started_at",
    "call_ended_at",
    "call_analyzed_at",
    "created_at",
    "updated_at",
];

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and `{"success": false, "error"}`.
    Status(u16),
    /// 429 with `Retry-After: secs`.
    RateLimited(u64),
    /// Answer normally, after this long.
    Slow(Duration),
    /// Close the connection without answering.
    Drop,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub query: HashMap<String, String>,
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    calls: HashMap<String, Value>,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
    /// Fail (with this fault) every request for this call's detail.
    failing_detail: HashMap<String, u16>,
}

#[derive(Clone, Default)]
pub struct FakeTeli {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

/// Teli's `*_at` strings: ISO without an offset, microseconds.
pub fn naive(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// A whole call as the detail answers it.
#[allow(clippy::too_many_arguments)]
pub fn make_call(
    call_id: &str,
    voice_agent_id: &str,
    direction: &str,
    from: Option<&str>,
    to: Option<&str>,
    start_ms: i64,
    extracted: Value,
) -> Value {
    let start = Utc
        .timestamp_millis_opt(start_ms)
        .single()
        .unwrap_or_default();
    let end = start + chrono::Duration::seconds(95);
    json!({
        "call_id": call_id,
        "voice_agent_id": voice_agent_id,
        "agent_id": "74014854-b110-46c8-b037-18f0149baae6",
        "organization_id": ORG,
        "user_id": USER,
        "tenant_id": "acme",
        "agent_name": "Front Desk",
        "agent_version": 1,
        "call_type": "phone_call",
        "direction": direction,
        "from_number": from,
        "to_number": to,
        "call_status": "ended",
        "start_timestamp": start_ms,
        "end_timestamp": start_ms + 95_000,
        "duration_ms": 95_000,
        "disconnection_reason": "user_hangup",
        "user_sentiment": "Positive",
        "call_successful": true,
        "in_voicemail": false,
        "recording_url": format!("https://example.invalid/rec/{call_id}.wav"),
        "recording_s3_key": format!("recordings/{call_id}.wav"),
        "call_started_at": naive(start),
        "call_ended_at": naive(end),
        "call_analyzed_at": naive(end + chrono::Duration::seconds(10)),
        "created_at": naive(start),
        "updated_at": naive(end + chrono::Duration::seconds(11)),
        "transcript": "Agent: Hello.\nUser: Hi, I have a question.",
        "transcript_object": [{"role": "agent", "content": "Hello.", "words": []}],
        "extracted_fields": extracted,
        "extraction_config": [],
        "call_analysis": {"call_summary": "A question.", "in_voicemail": false,
                          "user_sentiment": "Positive", "call_successful": true,
                          "custom_analysis_data": {}},
        "metadata": {},
        "dynamic_variables": {},
    })
}

fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| Utc.from_utc_datetime(&t))
        })
}

fn error(status: u16, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(json!({"success": false, "error": message})),
    )
        .into_response()
}

impl FakeTeli {
    pub async fn start() -> FakeTeli {
        let mut fake = FakeTeli::default();
        let app = Router::new()
            .route("/v1/voice/calls", get(list))
            .route("/v1/voice/calls/{id}", get(detail))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        fake.url = format!("http://{}", listener.local_addr().expect("bound"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// Adds (or replaces) a call, as `make_call` builds it.
    pub fn add(&self, call: Value) {
        let id = call["call_id"].as_str().unwrap_or_default().to_owned();
        self.inner.lock().unwrap().calls.insert(id, call);
    }

    /// Changes a call as Teli would (analysis finishing later): `edit` gets
    /// it, `updated_at` moves to `at`.
    pub fn update(&self, call_id: &str, at: DateTime<Utc>, edit: impl FnOnce(&mut Value)) {
        let mut inner = self.inner.lock().unwrap();
        let c = inner.calls.get_mut(call_id).expect("the call exists");
        edit(c);
        c["updated_at"] = json!(naive(at));
    }

    /// The next requests fail as given, in order.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.lock().unwrap().faults.extend(faults);
    }

    /// Every request for this call's detail answers `status`.
    pub fn fail_detail(&self, call_id: &str, status: u16) {
        self.inner
            .lock()
            .unwrap()
            .failing_detail
            .insert(call_id.to_owned(), status);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    fn admit(&self, path: &str, query: &HashMap<String, String>, headers: &HeaderMap) -> Admit {
        let mut inner = self.inner.lock().unwrap();
        let mut record = |status: u16| {
            inner.requests.push(Recorded {
                path: path.to_owned(),
                query: query.clone(),
                status,
            })
        };
        if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(API_KEY) {
            record(401);
            return Admit::Answer(error(401, "Invalid API key"));
        }
        let fault = inner.faults.pop_front();
        let mut record = |status: u16| {
            inner.requests.push(Recorded {
                path: path.to_owned(),
                query: query.clone(),
                status,
            })
        };
        match fault {
            None => {
                record(200);
                Admit::Pass(None)
            }
            Some(Fault::Status(s)) => {
                record(s);
                Admit::Answer(error(s, "Internal server error"))
            }
            Some(Fault::RateLimited(secs)) => {
                record(429);
                let mut r = error(429, "Too many requests");
                r.headers_mut()
                    .insert("retry-after", secs.to_string().parse().expect("a number"));
                Admit::Answer(r)
            }
            Some(Fault::Slow(d)) => {
                record(200);
                Admit::Pass(Some(d))
            }
            Some(Fault::Drop) => {
                record(0);
                Admit::Drop
            }
        }
    }
}

enum Admit {
    Pass(Option<Duration>),
    Answer(Response),
    Drop,
}

async fn list(
    State(fake): State<FakeTeli>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match fake.admit("/v1/voice/calls", &q, &headers) {
        Admit::Answer(r) => return r,
        // Hyper closes the connection without a response when the
        // handler's task panics.
        Admit::Drop => panic!("fake Teli: dropping the connection as instructed"),
        Admit::Pass(Some(d)) => tokio::time::sleep(d).await,
        Admit::Pass(None) => {}
    }
    let Some(org) = q.get("organization_id") else {
        return error(400, "organization_id is required");
    };
    let admin = q.get("is_admin").is_some_and(|v| v == "true");
    let user = q.get("user_id");
    if !admin && user.is_none() {
        return error(400, "user_id is required for non-admin users");
    }
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 50,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return error(400, "limit must be between 1 and 100"),
    };
    let date = |k: &str| match q.get(k) {
        None => Ok(None),
        Some(s) => parse_date(s)
            .map(Some)
            .ok_or(format!("{k} is not an ISO-8601 date")),
    };
    let (after, before) = match (date("start_date"), date("end_date")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return error(400, &e),
    };
    let status = q.get("call_status").map_or("ended", String::as_str);
    let s = |c: &Value, k: &str| c[k].as_str().map(str::to_owned);
    let listed: Vec<Value> = {
        let inner = fake.inner.lock().unwrap();
        let mut calls: Vec<&Value> = inner
            .calls
            .values()
            .filter(|c| s(c, "organization_id").as_deref() == Some(org))
            .filter(|c| admin || s(c, "user_id").as_ref() == user)
            .filter(|c| s(c, "call_status").as_deref() == Some(status))
            .filter(|c| {
                q.get("agent_id").is_none_or(|a| {
                    s(c, "agent_id").as_ref() == Some(a)
                        || s(c, "voice_agent_id").as_ref() == Some(a)
                })
            })
            .filter(|c| {
                q.get("direction")
                    .is_none_or(|d| s(c, "direction").as_ref() == Some(d))
            })
            .filter(|c| {
                let t = c["start_timestamp"].as_i64().unwrap_or_default();
                after.is_none_or(|a| t >= a.timestamp_millis())
                    && before.is_none_or(|b| t < b.timestamp_millis())
            })
            .collect();
        calls.sort_by_key(|c| std::cmp::Reverse(c["start_timestamp"].as_i64().unwrap_or_default()));
        calls
            .into_iter()
            .take(limit)
            .map(|c| {
                let m: Map<String, Value> = LIST_FIELDS
                    .iter()
                    .filter_map(|k| Some(((*k).to_owned(), c.get(*k)?.clone())))
                    .collect();
                Value::Object(m)
            })
            .collect()
    };
    Json(json!({"success": true, "count": listed.len(), "powered_by": "Teli", "calls": listed}))
        .into_response()
}

async fn detail(
    State(fake): State<FakeTeli>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/voice/calls/{id}");
    match fake.admit(&path, &HashMap::new(), &headers) {
        Admit::Answer(r) => return r,
        Admit::Drop => panic!("fake Teli: dropping the connection as instructed"),
        Admit::Pass(Some(d)) => tokio::time::sleep(d).await,
        Admit::Pass(None) => {}
    }
    let inner = fake.inner.lock().unwrap();
    if let Some(status) = inner.failing_detail.get(&id) {
        return error(*status, "Internal server error");
    }
    match inner.calls.get(&id) {
        Some(c) => Json(json!({"success": true, "powered_by": "Teli", "call": c})).into_response(),
        None => error(404, "Call not found"),
    }
}
