//! `POST /webhooks/*`: raw body → provider verify → edge checks → inbox →
//! answer. The work a request can cause before it is authenticated is
//! bounded: a `Content-Length` over `SYNCBRIDGE_MAX_BODY_BYTES` is refused
//! unread, the body's bytes are reserved from the in-flight budget before
//! it is read (backpressure, not memory), and a body large enough to take
//! the HMAC more than a moment is verified on the blocking pool, off the
//! async workers. The answer is sent only after the inbox has committed
//! the delivery.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::json;

use super::ApiError;
use super::AppState;
use crate::domain::ProviderName;
use crate::inbox::{InboxError, Stored};
use crate::providers::{self, Provider, Reject, Verified, Webhook, WebhookRequest};

/// Bodies at least this large are verified on the blocking pool.
const OFFLOAD_VERIFY_BYTES: usize = 64 * 1024;

/// `POST /webhooks/{provider}`: a provider whose deliveries are signed.
pub async fn signed(
    State(app): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match route(&provider, Webhook::Signed) {
        Ok(name) => ingest(&app, name, None, headers, body, false).await,
        Err(e) => e.into_response(),
    }
}

/// `POST /webhooks/{provider}/{token}`: a provider authenticated by the
/// token in its URL.
pub async fn with_token(
    State(app): State<AppState>,
    Path((provider, token)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match route(&provider, Webhook::PathToken) {
        Ok(name) => ingest(&app, name, Some(token), headers, body, false).await,
        Err(e) => e.into_response(),
    }
}

/// `POST /api/{provider}/deliveries` (behind the admin token): a recorded
/// delivery of a pulled provider, replayed; checked by its provider like a
/// pulled one.
pub async fn pulled(
    State(app): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A pulled provider's route, and that of any provider whose pull
    // stores deliveries of its own kinds while its webhooks are something
    // else (ResMan: its polled prospects). Replaying a recorded one needs
    // no API credentials; a disabled provider answers with its reason.
    let name = route(&provider, Webhook::Pulled).or_else(|e| {
        ProviderName::parse(&provider)
            .filter(|n| providers::plugin(*n).is_some_and(|p| !p.pulled_kinds.is_empty()))
            .ok_or(e)
    });
    match name {
        Ok(name) => ingest(&app, name, None, headers, body, true).await,
        Err(e) => e.into_response(),
    }
}

/// The provider a webhook path names, if its webhooks take that shape.
fn route(provider: &str, shape: Webhook) -> Result<ProviderName, ApiError> {
    ProviderName::parse(provider)
        .and_then(providers::plugin)
        .filter(|p| p.webhook == shape)
        .map(|p| p.name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not found", "no such webhook route"))
}

fn count(provider: ProviderName, result: &'static str, reason: &'static str) {
    metrics::counter!("syncbridge_webhook_deliveries_total",
        "provider" => provider.as_str(), "result" => result, "reason" => reason)
    .increment(1);
}

async fn ingest(
    app: &AppState,
    name: ProviderName,
    token: Option<String>,
    headers: HeaderMap,
    body: Body,
    pulled: bool,
) -> Response {
    let started = Instant::now();
    let response = match handle(app, name, token, headers, body, pulled).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    metrics::histogram!("syncbridge_ingest_seconds", "provider" => name.as_str())
        .record(started.elapsed());
    response
}

fn too_large(app: &AppState, name: ProviderName) -> ApiError {
    count(name, "rejected", "too_large");
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload too large",
        format!(
            "bodies over {} bytes are refused (SYNCBRIDGE_MAX_BODY_BYTES)",
            app.config.max_body_bytes
        ),
    )
}

async fn handle(
    app: &AppState,
    name: ProviderName,
    token: Option<String>,
    headers: HeaderMap,
    body: Body,
    pulled: bool,
) -> Result<Response, ApiError> {
    count(name, "received", "");
    // A pulled delivery needs the provider, not its webhooks.
    let provider = if pulled {
        app.providers.get(name)
    } else {
        app.providers.webhooks(name)
    }
    .map_err(|why| {
        count(name, "rejected", "disabled");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "provider disabled", why)
    })?;
    let limit = app.config.max_body_bytes;
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    count(name, "rejected", "malformed");
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad request",
                        "Content-Length is not a number",
                    )
                })?,
        ),
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(app, name));
    }
    // Held until the answer: the body, the verified delivery and its place
    // in the inbox's queue all count against the budget.
    let _reservation = app
        .body_budget
        .reserve(declared.map_or(limit, |n| n as usize))
        .await;
    let body: Bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            too_large(app, name)
        } else {
            count(name, "rejected", "unreadable");
            ApiError::new(StatusCode::BAD_REQUEST, "unreadable body", e.to_string())
        }
    })?;

    let verified = verify(provider, token, headers, body, pulled)
        .await
        .map_err(|r| match r {
            Reject::Unauthorized(why) => {
                count(name, "rejected", "signature");
                tracing::info!(provider = %name, reason = %why, "webhook refused");
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why)
            }
            Reject::BadRequest(why) => {
                count(name, "rejected", "malformed");
                ApiError::new(StatusCode::BAD_REQUEST, "bad request", why)
            }
        })?;

    let delivery = match verified {
        Verified::Handshake { header, value } => {
            count(name, "handshake", "");
            tracing::info!(provider = %name, "hook handshake answered");
            let mut h = HeaderMap::new();
            h.insert(header, value);
            return Ok((StatusCode::OK, h, Json(json!({"status": "verified"}))).into_response());
        }
        Verified::Delivery(d) => d,
    };
    let event_type = delivery.event_type.clone();
    match app.inbox.submit(delivery).await {
        Ok(Stored::Accepted(id)) => {
            count(name, "accepted", "");
            tracing::debug!(provider = %name, inbox_id = id, event_type = ?event_type, "delivery stored");
            Ok(Json(json!({"status": "accepted"})).into_response())
        }
        Ok(Stored::Duplicate) => {
            count(name, "duplicate", "");
            Ok(Json(json!({"status": "duplicate"})).into_response())
        }
        Err(InboxError::Refused(why)) => {
            count(name, "rejected", "refused");
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad request",
                format!("{why}; nothing was stored"),
            ))
        }
        Err(e @ (InboxError::ShuttingDown | InboxError::Storage(_))) => {
            count(name, "rejected", "storage");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not stored",
                format!("{e}; nothing was accepted, retry later"),
            ))
        }
    }
}

/// The provider's verification, then the edge checks every delivery
/// passes; on the blocking pool when the body is large.
async fn verify(
    provider: &Arc<dyn Provider>,
    token: Option<String>,
    headers: HeaderMap,
    body: Bytes,
    pulled: bool,
) -> Result<Verified, Reject> {
    let large = body.len() >= OFFLOAD_VERIFY_BYTES;
    let run = move |provider: &dyn Provider| {
        let req = WebhookRequest {
            token: token.as_deref(),
            headers: &headers,
            body: &body,
            now: Utc::now(),
            pulled,
        };
        let verified = provider.verify(&req)?;
        if let Verified::Delivery(d) = &verified {
            d.validate()?;
        }
        Ok(verified)
    };
    if !large {
        return run(provider.as_ref());
    }
    let provider = provider.clone();
    tokio::task::spawn_blocking(move || run(provider.as_ref()))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
