//! `/api/*`: the operator API behind `SYNCBRIDGE_ADMIN_TOKEN` (bearer,
//! compared in constant time). Unset token: every route answers 503 and
//! says why.

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiError;
use crate::app::AppState;
use crate::conflict::Strategy;
use crate::db::engine::{self, Choice, ResolveError};
use crate::db::{self, admin};
use uuid::Uuid;

/// Rejects requests without the admin bearer token.
pub async fn require_token(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &app.config.admin_token else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin API disabled",
            "set SYNCBRIDGE_ADMIN_TOKEN to enable the admin API",
        )
        .into_response();
    };
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !token.matches(presented) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <SYNCBRIDGE_ADMIN_TOKEN>",
        )
        .into_response();
    }
    next.run(req).await
}

fn db_error(e: db::DbError) -> ApiError {
    tracing::warn!(error = %e, "admin query failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "database error",
        e.to_string(),
    )
}

async fn client(app: &AppState) -> Result<db::Client, ApiError> {
    app.pool.get().await.map_err(|e| db_error(e.into()))
}

pub async fn status(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let c = client(&app).await?;
    let mut v = admin::status(&c).await.map_err(db_error)?;
    let problems = app.health.problems();
    v["health"] = json!({
        "ok": problems.is_empty(),
        "listener": problems.get("listener").cloned().unwrap_or_else(|| "connected".into()),
        "problems": problems,
    });
    v["providers"] = json!(app
        .config
        .provider_summary()
        .into_iter()
        .map(|(p, s)| (
            p.to_owned(),
            json!({"webhooks": s.err().unwrap_or("enabled")})
        ))
        .collect::<serde_json::Map<String, Value>>());
    Ok(Json(v))
}

pub async fn retry(
    State(app): State<AppState>,
    body: Option<Json<admin::RetryFilter>>,
) -> Result<Json<Value>, ApiError> {
    let filter = body.map(|Json(f)| f).unwrap_or_default();
    if let Some(d) = &filter.direction {
        if d != "inbound" && d != "outbound" {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad request",
                "direction is inbound or outbound",
            ));
        }
    }
    let mut c = client(&app).await?;
    let (outbound, inbound) = admin::retry(&mut c, &filter).await.map_err(db_error)?;
    app.wake.dispatcher.notify_one();
    app.wake.router.notify_one();
    Ok(Json(
        json!({"requeued": outbound + inbound, "outbound": outbound, "inbound": inbound}),
    ))
}

#[derive(Debug, Deserialize)]
pub struct FullSync {
    pub entity: String,
    pub provider: String,
}

pub async fn full(
    State(app): State<AppState>,
    Json(req): Json<FullSync>,
) -> Result<Json<Value>, ApiError> {
    let provider = crate::domain::ProviderName::parse(&req.provider)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad request", "unknown provider"))?;
    let pusher = app
        .providers
        .get(provider)
        .map_err(|why| ApiError::new(StatusCode::CONFLICT, "provider disabled", why))?;
    let tables = pusher
        .pushes()
        .map_err(|why| ApiError::new(StatusCode::CONFLICT, "no outbound sync", why))?;
    if !tables.contains(&req.entity.as_str()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad request",
            format!("{} syncs {}", req.provider, tables.join(", ")),
        ));
    }
    let c = client(&app).await?;
    let queued = admin::full_resync(&c, &req.entity, provider.as_str())
        .await
        .map_err(db_error)?;
    app.wake.dispatcher.notify_one();
    Ok(Json(json!({"queued": queued})))
}

#[derive(Debug, Deserialize)]
pub struct EventQuery {
    pub provider: Option<String>,
    pub status: Option<String>,
    pub before_id: Option<i64>,
    pub limit: Option<i64>,
}

pub async fn events(
    State(app): State<AppState>,
    Query(q): Query<EventQuery>,
) -> Result<Json<Value>, ApiError> {
    let c = client(&app).await?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let rows = admin::events(
        &c,
        q.provider.as_deref(),
        q.status.as_deref(),
        q.before_id,
        limit,
    )
    .await
    .map_err(db_error)?;
    let next = if rows.len() as i64 == limit {
        rows.last().and_then(|r| r["id"].as_i64())
    } else {
        None
    };
    Ok(Json(json!({"events": rows, "next_before_id": next})))
}

pub async fn event(
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let c = client(&app).await?;
    admin::event(&c, id)
        .await
        .map_err(db_error)?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not found",
                format!("no inbox event {id}"),
            )
        })
}

pub async fn replay(
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let c = client(&app).await?;
    if !admin::replay_event(&c, id).await.map_err(db_error)? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not found",
            format!("no inbox event {id}"),
        ));
    }
    app.wake.router.notify_one();
    Ok(Json(json!({"id": id, "status": "pending"})))
}

#[derive(Debug, Deserialize)]
pub struct ConflictQuery {
    /// `open` (default), `resolved`, `superseded` or `all`.
    pub status: Option<String>,
    pub entity: Option<String>,
    pub provider: Option<String>,
    /// Page: conflicts detected before this time.
    pub before: Option<chrono::DateTime<chrono::Utc>>,
    pub limit: Option<i64>,
}

pub async fn conflicts(
    State(app): State<AppState>,
    Query(q): Query<ConflictQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref().unwrap_or("open") {
        "all" => None,
        s @ ("open" | "resolved" | "superseded") => Some(s),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad request",
                "status is open, resolved, superseded or all",
            ))
        }
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let c = client(&app).await?;
    let rows = engine::list_conflicts(
        &c,
        status,
        q.entity.as_deref(),
        q.provider.as_deref(),
        q.before,
        limit,
    )
    .await
    .map_err(db_error)?;
    let next = if rows.len() as i64 == limit {
        rows.last().map(|r| r["detected_at"].clone())
    } else {
        None
    };
    Ok(Json(json!({"conflicts": rows, "next_before": next})))
}

pub async fn conflict(
    State(app): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let c = client(&app).await?;
    engine::get_conflict(&c, id)
        .await
        .map_err(db_error)?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not found",
                format!("no conflict {id}"),
            )
        })
}

/// `POST /api/sync/conflicts/{id}/resolve` body.
#[derive(Debug, Deserialize)]
pub struct ResolveBody {
    /// `local`, `remote` or `merged`.
    pub resolution: String,
    /// For `merged`: the values both sides get (synced fields only; the
    /// ones left out keep their local value).
    pub data: Option<serde_json::Map<String, Value>>,
    pub resolved_by: Option<Uuid>,
    pub notes: Option<String>,
}

pub async fn resolve_conflict(
    State(app): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<ResolveBody>,
) -> Result<Json<Value>, ApiError> {
    let bad = |d: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad request", d);
    let choice = match (body.resolution.as_str(), body.data) {
        ("local", None) => Choice::Local,
        ("remote", None) => Choice::Remote,
        ("merged", Some(data)) => Choice::Merged(data),
        ("merged", None) => return Err(bad("resolution merged needs data: {field: value}")),
        ("local" | "remote", Some(_)) => return Err(bad("data goes with resolution merged only")),
        _ => return Err(bad("resolution is local, remote or merged")),
    };
    let mut c = client(&app).await?;
    let resolved =
        engine::resolve_conflict(&mut c, id, choice, body.resolved_by, body.notes.as_deref())
            .await
            .map_err(|e| match e {
                ResolveError::NotFound(_) => {
                    ApiError::new(StatusCode::NOT_FOUND, "not found", e.to_string())
                }
                ResolveError::NotOpen(..) => {
                    ApiError::new(StatusCode::CONFLICT, "not open", e.to_string())
                }
                ResolveError::Invalid(why) => bad(&why),
                ResolveError::Db(db) => db_error(db),
            })?;
    app.wake.dispatcher.notify_one();
    Ok(Json(resolved))
}

pub async fn conflict_rules(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let c = client(&app).await?;
    let rules = engine::list_rules(&c).await.map_err(db_error)?;
    Ok(Json(json!({"rules": rules})))
}

/// `PUT /api/sync/conflict-rules` body: `strategy: null` removes the rule.
#[derive(Debug, Deserialize)]
pub struct RuleBody {
    pub entity_type: String,
    pub field: Option<String>,
    pub strategy: Option<String>,
}

pub async fn set_conflict_rule(
    State(app): State<AppState>,
    Json(body): Json<RuleBody>,
) -> Result<Json<Value>, ApiError> {
    let bad = |d: String| ApiError::new(StatusCode::BAD_REQUEST, "bad request", d);
    if body.entity_type.trim().is_empty() {
        return Err(bad("entity_type is a table name or *".into()));
    }
    let field = body.field.as_deref().unwrap_or("*");
    let strategy = match body.strategy.as_deref() {
        None => None,
        Some(s) => Some(Strategy::parse(s).ok_or_else(|| {
            bad(format!(
                "unknown strategy {s:?}: last_write_wins, prefer_local, prefer_remote, merge or manual"
            ))
        })?),
    };
    let c = client(&app).await?;
    let n = engine::set_rule(&c, &body.entity_type, field, strategy)
        .await
        .map_err(db_error)?;
    let rules = engine::list_rules(&c).await.map_err(db_error)?;
    Ok(Json(json!({"changed": n, "rules": rules})))
}
