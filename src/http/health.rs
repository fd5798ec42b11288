//! `/healthz` (the process answers), `/readyz` (the database answers and
//! the background tasks run), `/metrics` (Prometheus text).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(app): State<AppState>) -> Response {
    let db = async {
        let client = app.pool.get().await.map_err(|e| e.to_string())?;
        client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let db = match tokio::time::timeout(Duration::from_secs(2), db).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("database did not answer within 2s".to_owned()),
    };
    let tasks = app.health.problems();
    let ready = db.is_ok() && tasks.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "database": match &db { Ok(()) => "ok".to_owned(), Err(e) => e.clone() },
        "problems": tasks,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub async fn metrics(State(app): State<AppState>) -> Response {
    let body = app.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
