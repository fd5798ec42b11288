//! Extractors that answer every rejection with the SPEC's JSON error
//! (`{"error", "detail"}`) instead of axum's plain text, and check what
//! they extract for what Postgres cannot store: a JSON body is checked like
//! a webhook's (nesting, UTF-8, no U+0000) before it is deserialized, a
//! query string has no NUL.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::providers::edge;

/// A JSON request body (`Content-Type: application/json` or `…+json`),
/// within the router's body limit.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported media type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                let status = e.status();
                let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "payload too large"
                } else {
                    "unreadable body"
                };
                ApiError::new(status, error, e.body_text())
            })?;
        edge::check_json(&bytes)
            .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "bad request", why))?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid body",
                format!("the body does not have the expected fields: {e}"),
            )
        })
    }
}

/// An optional JSON body: none when the request has no `Content-Type`
/// and no bytes.
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        if !req.headers().contains_key(header::CONTENT_TYPE) && empty {
            return Ok(None);
        }
        if !req.headers().contains_key(header::CONTENT_TYPE) {
            let bytes = Bytes::from_request(req, state)
                .await
                .map_err(|e| ApiError::new(e.status(), "unreadable body", e.body_text()))?;
            if bytes.is_empty() {
                return Ok(None);
            }
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported media type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        <ApiJson<T> as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A path parameter; one that does not parse is a 400.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad path parameter", e.body_text())
            })
    }
}

/// A query string; one that does not parse into `T` is a 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or_default();
        if raw.contains("%00") || raw.contains('\0') {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad query",
                "query parameters cannot hold U+0000",
            ));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad query", e.body_text())
            })
    }
}
