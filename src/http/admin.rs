//! `/api/*`: the operator API behind `SYNCBRIDGE_ADMIN_TOKEN` (bearer,
//! compared in constant time). Unset token: every route answers 503 and
//! says why.
//!
//! Every input is parsed into a typed value with its range before any
//! query runs (providers and statuses are enums, names are bounded, times
//! lie between 1970 and 9999, limits between 1 and 500): a bad value is a
//! 4xx JSON answer naming it, never a database error.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::ApiError;
use super::AppState;
use crate::apply::engine::{self, Choice};
use crate::conflict::Strategy;
use crate::db::{self, admin};
use crate::domain::ProviderName;
use crate::providers::edge::check_text;
use chrono::{DateTime, Utc};
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
        .and_then(bearer)
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

/// The credentials of an `Authorization: Bearer …` value; the scheme is
/// case-insensitive (RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad request", detail)
}

/// A table or field name as the API takes it: 1 to 63 bytes (Postgres'
/// identifier length), no control characters.
fn check_name(what: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(bad(format!("{what} is empty")));
    }
    check_text(what, value, 63).map_err(bad)
}

/// A page size: 1 to 500, 50 when absent.
fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(50),
        Some(n @ 1..=500) => Ok(n),
        Some(n) => Err(bad(format!("limit is 1 to 500, not {n}"))),
    }
}

/// A time filter Postgres can compare with: between 1970 and 9999.
pub(crate) fn check_time(what: &str, t: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    use chrono::Datelike;
    match t {
        Some(t) if !(1970..=9999).contains(&t.year()) => Err(bad(format!(
            "{what} must lie between 1970 and 9999, not {t}"
        ))),
        _ => Ok(()),
    }
}

async fn client(app: &AppState) -> Result<db::Client, ApiError> {
    Ok(app.pool.get().await.map_err(db::DbError::from)?)
}

pub async fn status(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let c = client(&app).await?;
    let mut v = admin::status(&c).await?;
    let problems = app.health.problems();
    v["health"] = json!({
        "ok": problems.is_empty(),
        "listener": problems.get("listener").cloned().unwrap_or_else(|| "connected".into()),
        "problems": problems,
    });
    v["providers"] = json!(app
        .providers
        .webhook_routes()
        .into_iter()
        .map(|(p, s)| (
            p.as_str().to_owned(),
            json!({"webhooks": s.err().unwrap_or("enabled")})
        ))
        .collect::<serde_json::Map<String, Value>>());
    // Each pulled provider's current or last run.
    let mut pulls = serde_json::Map::new();
    for p in app.providers.enabled() {
        if p.puller().is_some() {
            let progress = crate::pull::status(&app.pool, &app.providers, &app.pulls, p.name())
                .await
                .map_err(ApiError::from)?;
            pulls.insert(p.name().as_str().to_owned(), json!(progress));
        }
    }
    v["pulls"] = Value::Object(pulls);
    // What each provider shows of itself (ResMan: its properties).
    let mut own = serde_json::Map::new();
    for p in app.providers.enabled() {
        match p.status(&c).await {
            Ok(Value::Null) => {}
            Ok(s) => {
                own.insert(p.name().as_str().to_owned(), s);
            }
            Err(e) => {
                own.insert(
                    p.name().as_str().to_owned(),
                    json!({"error": e.to_string()}),
                );
            }
        }
    }
    v["provider_status"] = Value::Object(own);
    // Every job's last run (reconciliation, full resync, integrity) and
    // the last integrity results.
    v["jobs"] = Value::Object(crate::scheduler::last_runs(&c).await?);
    v["integrity"] = crate::ops::integrity::last(&c)
        .await?
        .unwrap_or(Value::Null);
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
pub struct IntegrityQuery {
    /// Run the checks now (without repairs) instead of showing the last
    /// results.
    #[serde(default)]
    pub run: bool,
}

/// `GET /api/sync/integrity`: the last results, or (`?run=true`) a run now.
pub async fn integrity(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<IntegrityQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.run {
        return integrity_run(&app, false).await;
    }
    let c = client(&app).await?;
    Ok(Json(crate::ops::integrity::last(&c).await?.unwrap_or_else(
        || json!({"findings": [], "note": "integrity has not run yet"}),
    )))
}

/// `POST /api/sync/integrity/fix`: a run now, repairing what is safe.
pub async fn integrity_fix(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    integrity_run(&app, true).await
}

async fn integrity_run(app: &AppState, fix: bool) -> Result<Json<Value>, ApiError> {
    let report = crate::ops::integrity::run(&app.pool, &app.providers, &app.config, fix).await?;
    app.wake.dispatcher.notify_one();
    Ok(Json(json!({
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "fix": report.fix,
        "found": report.findings.len(),
        "fixed": report.fixed(),
        "remaining": report.remaining(),
        "findings": report.findings,
        "errors": report.errors,
    })))
}

/// Ids one retry may name at most.
const MAX_RETRY_IDS: usize = 10_000;

pub async fn retry(
    State(app): State<AppState>,
    body: Option<ApiJson<admin::RetryFilter>>,
) -> Result<Json<Value>, ApiError> {
    let filter = body.map(|ApiJson(f)| f).unwrap_or_default();
    if let Some(e) = &filter.entity {
        check_name("entity", e)?;
    }
    if filter.ids.len() + filter.event_ids.len() > MAX_RETRY_IDS {
        return Err(bad(format!("at most {MAX_RETRY_IDS} ids per retry")));
    }
    if filter.event_ids.iter().any(|&id| id < 1) {
        return Err(bad("event_ids are inbox ids, 1 or more"));
    }
    let mut c = client(&app).await?;
    let (outbound, inbound) = admin::retry(&mut c, &filter).await?;
    app.wake.dispatcher.notify_one();
    app.wake.router.notify_one();
    Ok(Json(
        json!({"requeued": outbound + inbound, "outbound": outbound, "inbound": inbound}),
    ))
}

#[derive(Debug, Deserialize)]
pub struct FullSync {
    pub entity: String,
    pub provider: ProviderName,
}

pub async fn full(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<FullSync>,
) -> Result<Json<Value>, ApiError> {
    check_name("entity", &req.entity)?;
    let provider = req.provider;
    let target =
        crate::ops::resync::target(&app.providers, provider, &req.entity).map_err(|refused| {
            match refused {
                crate::ops::resync::Refused::Disabled(why) => {
                    ApiError::new(StatusCode::CONFLICT, "provider disabled", why)
                }
                crate::ops::resync::Refused::NoOutbound(why) => {
                    ApiError::new(StatusCode::CONFLICT, "no outbound sync", why)
                }
                e @ crate::ops::resync::Refused::NotSynced { .. } => {
                    ApiError::new(StatusCode::BAD_REQUEST, "bad request", e.to_string())
                }
            }
        })?;
    if let crate::ops::resync::Target::Job {
        provider: pusher,
        key,
    } = target
    {
        // The provider rebuilds the table itself (in the background; its
        // progress is in /api/sync/status under jobs).
        let (pool, p, args, k) = (
            app.pool.clone(),
            pusher.clone(),
            json!({"entity": req.entity}),
            key.clone(),
        );
        let running = {
            let c = client(&app).await?;
            crate::scheduler::last_runs(&c)
                .await?
                .get(&key)
                .is_some_and(|r| r["running"] == json!(true))
        };
        if running {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already running",
                format!(
                    "a full resync of {} is running; see jobs.{key} in /api/sync/status",
                    req.entity
                ),
            ));
        }
        tokio::spawn(async move {
            let stop = tokio_util::sync::CancellationToken::new();
            match crate::scheduler::run_provider_job(&pool, &p, "resync", &k, args, None, stop)
                .await
            {
                Ok(run) => {
                    tracing::info!(job = %k, ok = run.ok, error = ?run.error, "full resync done")
                }
                Err(e) => tracing::warn!(job = %k, error = %e, "full resync did not run"),
            }
        });
        return Ok(Json(json!({"started": key})));
    }
    let c = client(&app).await?;
    let queued = admin::full_resync(&c, &req.entity, provider.as_str()).await?;
    app.wake.dispatcher.notify_one();
    Ok(Json(json!({"queued": queued})))
}

#[derive(Debug, Deserialize)]
pub struct EventQuery {
    pub provider: Option<ProviderName>,
    pub status: Option<InboxStatus>,
    pub before_id: Option<i64>,
    pub limit: Option<i64>,
}

/// An inbox row's status, as the events filter takes it.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxStatus {
    Pending,
    Processed,
    Ignored,
    SkippedStale,
    Failed,
}

impl InboxStatus {
    fn as_str(self) -> &'static str {
        match self {
            InboxStatus::Pending => "pending",
            InboxStatus::Processed => "processed",
            InboxStatus::Ignored => "ignored",
            InboxStatus::SkippedStale => "skipped_stale",
            InboxStatus::Failed => "failed",
        }
    }
}

pub async fn events(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = page_limit(q.limit)?;
    if q.before_id.is_some_and(|id| id < 1) {
        return Err(bad("before_id is an inbox id, 1 or more"));
    }
    let c = client(&app).await?;
    let rows = admin::events(
        &c,
        q.provider.map(ProviderName::as_str),
        q.status.map(InboxStatus::as_str),
        q.before_id,
        limit,
    )
    .await?;
    let next = if rows.len() as i64 == limit {
        rows.last().and_then(|r| r["id"].as_i64())
    } else {
        None
    };
    Ok(Json(json!({"events": rows, "next_before_id": next})))
}

pub async fn event(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Value>, ApiError> {
    let c = client(&app).await?;
    admin::event(&c, id).await?.map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not found",
            format!("no inbox event {id}"),
        )
    })
}

pub async fn replay(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Value>, ApiError> {
    let c = client(&app).await?;
    if !admin::replay_event(&c, id).await? {
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
    pub provider: Option<ProviderName>,
    /// Page: conflicts detected before this time.
    pub before: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
}

pub async fn conflicts(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<ConflictQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(e) = &q.entity {
        check_name("entity", e)?;
    }
    check_time("before", q.before)?;
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
    let limit = page_limit(q.limit)?;
    let c = client(&app).await?;
    let rows = engine::list_conflicts(
        &c,
        status,
        q.entity.as_deref(),
        q.provider.map(ProviderName::as_str),
        q.before,
        limit,
    )
    .await?;
    let next = if rows.len() as i64 == limit {
        rows.last().map(|r| r["detected_at"].clone())
    } else {
        None
    };
    Ok(Json(json!({"conflicts": rows, "next_before": next})))
}

pub async fn conflict(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let c = client(&app).await?;
    engine::get_conflict(&c, id)
        .await?
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

/// Longest resolution note kept.
const MAX_NOTES_BYTES: usize = 10_000;

pub async fn resolve_conflict(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Json<Value>, ApiError> {
    if body
        .notes
        .as_ref()
        .is_some_and(|n| n.len() > MAX_NOTES_BYTES)
    {
        return Err(bad(format!("notes are at most {MAX_NOTES_BYTES} bytes")));
    }
    let choice = match (body.resolution.as_str(), body.data) {
        ("local", None) => Choice::Local,
        ("remote", None) => Choice::Remote,
        ("merged", Some(data)) => Choice::Merged(data),
        ("merged", None) => return Err(bad("resolution merged needs data: {field: value}")),
        ("local" | "remote", Some(_)) => return Err(bad("data goes with resolution merged only")),
        _ => return Err(bad("resolution is local, remote or merged")),
    };
    let mut c = client(&app).await?;
    // A conflict on a table a provider writes itself (not an engine
    // entity) is that provider's to resolve.
    let owner = c
        .query_opt(
            "SELECT provider, entity_type FROM sync_conflicts WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(db::DbError::from)?
        .and_then(|r| {
            let table: String = r.get(1);
            if crate::providers::entity(&table).is_some() {
                return None;
            }
            let p = ProviderName::parse(&r.get::<_, String>(0))?;
            app.providers
                .get(p)
                .ok()
                .filter(|p| p.resolves_conflicts())
                .cloned()
        });
    let resolved = match owner {
        Some(p) => {
            p.resolve_conflict(&mut c, id, choice, body.resolved_by, body.notes.as_deref())
                .await?
        }
        None => {
            engine::resolve_conflict(
                &mut c,
                crate::providers::entity,
                id,
                choice,
                body.resolved_by,
                body.notes.as_deref(),
            )
            .await?
        }
    };
    app.wake.dispatcher.notify_one();
    Ok(Json(resolved))
}

pub async fn conflict_rules(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let c = client(&app).await?;
    let rules = engine::list_rules(&c).await?;
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
    ApiJson(body): ApiJson<RuleBody>,
) -> Result<Json<Value>, ApiError> {
    if body.entity_type.trim().is_empty() {
        return Err(bad("entity_type is a table name or *"));
    }
    check_name("entity_type", &body.entity_type)?;
    let field = body.field.as_deref().unwrap_or("*");
    check_name("field", field)?;
    let strategy = match body.strategy.as_deref() {
        None => None,
        Some(s) => Some(Strategy::parse(s).ok_or_else(|| {
            bad(format!(
                "unknown strategy {s:?}: last_write_wins, prefer_local, prefer_remote, merge or manual"
            ))
        })?),
    };
    let c = client(&app).await?;
    let n = engine::set_rule(&c, &body.entity_type, field, strategy).await?;
    let rules = engine::list_rules(&c).await?;
    Ok(Json(json!({"changed": n, "rules": rules})))
}

#[derive(Debug, Deserialize)]
pub struct OutboxQuery {
    /// `failed` when absent.
    pub status: Option<OutboxStatus>,
    pub provider: Option<ProviderName>,
    pub before_id: Option<i64>,
    pub limit: Option<i64>,
}

/// An outbox change's status, as the outbox filter takes it.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    Pending,
    Done,
    Failed,
    Skipped,
}

impl OutboxStatus {
    fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Done => "done",
            OutboxStatus::Failed => "failed",
            OutboxStatus::Skipped => "skipped",
        }
    }
}

/// `GET /api/sync/outbox`: outbound changes by status (failed by default),
/// newest first; `POST /api/sync/retry` with their `ids` re-queues them.
pub async fn outbox(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<OutboxQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = page_limit(q.limit)?;
    if q.before_id.is_some_and(|id| id < 1) {
        return Err(bad("before_id is an outbox id, 1 or more"));
    }
    let status = q.status.unwrap_or(OutboxStatus::Failed);
    let c = client(&app).await?;
    let rows = admin::outbox_changes(
        &c,
        status.as_str(),
        q.provider.map(ProviderName::as_str),
        q.before_id,
        limit,
    )
    .await?;
    let next = if rows.len() as i64 == limit {
        rows.last().and_then(|r| r["id"].as_i64())
    } else {
        None
    };
    Ok(Json(json!({"changes": rows, "next_before_id": next})))
}
