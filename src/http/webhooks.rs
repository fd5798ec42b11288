//! `POST /webhooks/*`: raw body → provider verify → inbox → answer.
//! The body is read as bytes (bounded by `SYNCBRIDGE_MAX_BODY_BYTES`) and
//! verified before any parsing; the answer is sent only after the inbox
//! has committed the delivery.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::json;

use super::ApiError;
use crate::app::AppState;
use crate::domain::ProviderName;
use crate::inbox::{InboxError, Stored};
use crate::providers::{Reject, Verified, WebhookRequest};

pub async fn openphone(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    ingest(&app, ProviderName::OpenPhone, None, &headers, body).await
}

pub async fn keap(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    ingest(&app, ProviderName::Keap, Some(&token), &headers, body).await
}

pub async fn resman(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    ingest(&app, ProviderName::ResMan, None, &headers, body).await
}

fn count(provider: ProviderName, result: &'static str, reason: &'static str) {
    metrics::counter!("syncbridge_webhook_deliveries_total",
        "provider" => provider.as_str(), "result" => result, "reason" => reason)
    .increment(1);
}

async fn ingest(
    app: &AppState,
    name: ProviderName,
    token: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = match handle(app, name, token, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    metrics::histogram!("syncbridge_ingest_seconds", "provider" => name.as_str())
        .record(started.elapsed());
    response
}

async fn handle(
    app: &AppState,
    name: ProviderName,
    token: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    count(name, "received", "");
    let provider = app.providers.webhooks(name).map_err(|why| {
        count(name, "rejected", "disabled");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "provider disabled", why)
    })?;
    let body = body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            count(name, "rejected", "too_large");
            ApiError::new(
                status,
                "payload too large",
                format!(
                    "bodies over {} bytes are refused (SYNCBRIDGE_MAX_BODY_BYTES)",
                    app.config.max_body_bytes
                ),
            )
        } else {
            count(name, "rejected", "unreadable");
            ApiError::new(status, "unreadable body", e.body_text())
        }
    })?;

    let req = WebhookRequest {
        token,
        headers,
        body: &body,
        now: Utc::now(),
    };
    let verified = provider.verify(&req).map_err(|r| match r {
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
        Err(e) => {
            count(name, "rejected", "storage");
            let status = match e {
                InboxError::ShuttingDown | InboxError::Storage(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            Err(ApiError::new(
                status,
                "not stored",
                format!("{e}; nothing was accepted, retry later"),
            ))
        }
    }
}
