//! The HTTP front: one axum router. Handlers return `Result<_, ApiError>`;
//! the error type is the only place error bodies are built, and every
//! answer that is an error is JSON `{"error", "detail"}` — the extractors
//! in `extract` answer their rejections so, the fallbacks (404, 405) and
//! the request deadline (408) too, and a last layer turns any other error
//! body into that shape.

pub mod admin;
pub mod dashboard;
pub mod extract;
pub mod health;
pub mod pull;
pub mod server;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::json;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;

use crate::apply::engine::ResolveError;
use crate::config::Config;
use crate::db::DbError;
use crate::db::Pool;
use crate::health::Health;
use crate::inbox::{ByteBudget, Inbox};
use crate::providers::Registry;

/// Shared, cheap to clone: what every handler sees.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: Pool,
    pub inbox: Inbox,
    /// Request bodies' bytes in memory (`SYNCBRIDGE_MAX_INFLIGHT_BYTES`).
    pub body_budget: ByteBudget,
    pub providers: Registry,
    pub metrics: PrometheusHandle,
    pub health: Arc<Health>,
    pub wake: Wakers,
    /// This process's pull runs (current or last, per provider).
    pub pulls: crate::pull::Runs,
}

/// Wake-ups for the background workers (e.g. after an operator re-queues).
#[derive(Clone, Default)]
pub struct Wakers {
    pub router: Arc<Notify>,
    pub dispatcher: Arc<Notify>,
}

/// Builds the whole HTTP surface.
pub fn router(state: AppState) -> axum::Router {
    let limit = state.config.max_body_bytes;
    let api = axum::Router::new()
        .route("/api/sync/status", get(admin::status))
        .route("/api/sync/retry", post(admin::retry))
        .route("/api/sync/full", post(admin::full))
        .route("/api/sync/outbox", get(admin::outbox))
        .route("/api/sync/events", get(admin::events))
        .route("/api/sync/events/{id}", get(admin::event))
        .route("/api/sync/events/{id}/replay", post(admin::replay))
        .route("/api/sync/conflicts", get(admin::conflicts))
        .route("/api/sync/conflicts/{id}", get(admin::conflict))
        .route(
            "/api/sync/conflicts/{id}/resolve",
            post(admin::resolve_conflict),
        )
        .route(
            "/api/sync/conflict-rules",
            get(admin::conflict_rules).put(admin::set_conflict_rule),
        )
        .route("/api/{provider}/sync-all", get(pull::progress))
        .route("/api/{provider}/deliveries", post(webhooks::pulled))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_token,
        ));
    // Authenticated runs that take as long as the provider's API does: no
    // request deadline (the token is checked before any work).
    let long = axum::Router::new()
        .route("/api/{provider}/sync-all", post(pull::sync_all))
        .route("/api/{provider}/audit", get(pull::audit))
        .route("/api/sync/integrity", get(admin::integrity))
        .route("/api/sync/integrity/fix", post(admin::integrity_fix))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_token,
        ));
    axum::Router::new()
        .merge(api)
        .merge(dashboard::routes())
        .route("/webhooks/{provider}", post(webhooks::signed))
        .route("/webhooks/{provider}/{token}", post(webhooks::with_token))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.config.http.request_timeout,
            deadline,
        ))
        .merge(long)
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        "this route does not take that method (see the Allow header)",
    )
}

/// Answers 408 and closes the connection when a request (its body read,
/// its inbox commit, its handler) takes longer than
/// `SYNCBRIDGE_REQUEST_TIMEOUT_S`: a client that sends slowly holds
/// nothing past it.
async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            metrics::counter!("syncbridge_http_timeouts_total").increment(1);
            let mut r = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request timeout",
                format!(
                    "the request was not complete within {}s (SYNCBRIDGE_REQUEST_TIMEOUT_S)",
                    limit.as_secs()
                ),
            )
            .into_response();
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

/// The last word on error bodies: an error answer that is not JSON (from
/// a layer or an extractor this crate did not wrap) is rewritten as
/// `{"error", "detail"}` with its status and headers kept.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let reason = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let detail = match String::from_utf8_lossy(&text).trim() {
        "" => reason.clone(),
        t => t.to_owned(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let body = Json(json!({"error": reason, "detail": detail}));
    (parts, body).into_response()
}

/// `{"error": "...", "detail": "..."}` with a fitting status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            detail: detail.into(),
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        if let DbError::NotSynced(why) = e {
            return ApiError::new(StatusCode::BAD_REQUEST, "not synced", why);
        }
        tracing::warn!(error = %e, "query failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database error",
            e.to_string(),
        )
    }
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> ApiError {
        match e {
            ResolveError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not found", e.to_string())
            }
            ResolveError::NotOpen(..) => {
                ApiError::new(StatusCode::CONFLICT, "not open", e.to_string())
            }
            ResolveError::Invalid(why) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad request", why)
            }
            ResolveError::Db(db) => db.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.error, "detail": self.detail})),
        )
            .into_response()
    }
}
