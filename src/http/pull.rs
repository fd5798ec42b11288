//! `/api/{provider}/sync-all` and `/api/{provider}/audit`: the pulled
//! providers' runs (SPEC §4.4), behind the admin token, for any provider
//! whose registry line has a pull. A run is spawned, so a client that hangs
//! up does not cut it short; the request waits for its summary.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{ApiPath, ApiQuery};
use super::{ApiError, AppState};
use crate::domain::ProviderName;
use crate::providers::{PullError, PullOptions};
use crate::pull::{self, RunError};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncQuery {
    pub since: Option<DateTime<Utc>>,
    pub dry_run: Option<bool>,
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> ApiError {
        match e {
            RunError::Unavailable(why) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "provider disabled", why)
            }
            RunError::NotPulled(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not found", e.to_string())
            }
            RunError::NotDue => ApiError::new(StatusCode::CONFLICT, "not due", e.to_string()),
            RunError::Busy(_) => {
                ApiError::new(StatusCode::CONFLICT, "already running", e.to_string())
            }
            RunError::Db(db) => db.into(),
        }
    }
}

fn busy(progress: &pull::Progress) -> Response {
    (
        StatusCode::CONFLICT,
        Json(json!({
            "error": "already running",
            "detail": format!("a {} pull is running; its progress is attached", progress.provider),
            "progress": progress,
        })),
    )
        .into_response()
}

/// `POST /api/{provider}/sync-all?since=&dryRun=`: runs the pull and
/// answers its summary; 409 with the running run's progress when one runs.
pub async fn sync_all(
    State(app): State<AppState>,
    ApiPath(provider): ApiPath<ProviderName>,
    ApiQuery(q): ApiQuery<SyncQuery>,
) -> Result<Response, ApiError> {
    super::admin::check_time("since", q.since)?;
    let options = PullOptions {
        since: q.since,
        dry_run: q.dry_run.unwrap_or(false),
        ..Default::default()
    };
    let run = tokio::spawn(async move {
        pull::run(
            &app.pool,
            &app.providers,
            &app.config.router,
            &app.pulls,
            provider,
            options,
        )
        .await
    });
    let result = run
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    match result {
        Ok((progress, _)) => match (progress.summary, progress.error) {
            (Some(summary), _) => Ok(Json(summary).into_response()),
            (None, error) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "pull failed",
                error.unwrap_or_else(|| "the run ended without a summary".into()),
            )),
        },
        Err(RunError::Busy(p)) => Ok(busy(&p)),
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/{provider}/sync-all`: the current or last run's progress.
pub async fn progress(
    State(app): State<AppState>,
    ApiPath(provider): ApiPath<ProviderName>,
) -> Result<Json<pull::Progress>, ApiError> {
    Ok(Json(
        pull::status(&app.pool, &app.providers, &app.pulls, provider).await?,
    ))
}

/// `GET /api/{provider}/audit`: what the provider holds against what is
/// stored.
pub async fn audit(
    State(app): State<AppState>,
    ApiPath(provider): ApiPath<ProviderName>,
) -> Result<Json<Value>, ApiError> {
    let p = app
        .providers
        .get(provider)
        .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "provider disabled", why))?;
    let puller = p.puller().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not found",
            format!("{provider} has no pull"),
        )
    })?;
    puller
        .ready()
        .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "provider disabled", why))?;
    let client = app.pool.get().await.map_err(crate::db::DbError::from)?;
    match puller.audit(&client).await {
        Ok(v) => Ok(Json(v)),
        Err(PullError::Db(db)) => Err(db.into()),
        Err(PullError::Api(e)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "provider error",
            e.to_string(),
        )),
    }
}
