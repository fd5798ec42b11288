//! The HTTP front: one axum router. Handlers return `Result<_, ApiError>`;
//! the error type is the only place error bodies are built.

pub mod admin;
pub mod health;
pub mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::json;

use crate::app::AppState;

/// Builds the whole HTTP surface.
pub fn router(state: AppState) -> axum::Router {
    let limit = state.config.max_body_bytes;
    let api = axum::Router::new()
        .route("/api/sync/status", get(admin::status))
        .route("/api/sync/retry", post(admin::retry))
        .route("/api/sync/full", post(admin::full))
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
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_token,
        ));
    axum::Router::new()
        .merge(api)
        .route("/webhooks/openphone", post(webhooks::openphone))
        .route("/webhooks/keap/{token}", post(webhooks::keap))
        .route("/webhooks/resman", post(webhooks::resman))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found", "no such route")
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.error, "detail": self.detail})),
        )
            .into_response()
    }
}
