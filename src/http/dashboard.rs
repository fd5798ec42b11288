//! `GET /`: the operator dashboard (SPEC §5.4) — one HTML page, its script
//! and its style sheet, embedded in the binary (no front-end build, no
//! CDN: it works offline).
//!
//! The page holds no data, so it is served without the token; everything
//! it shows comes from the admin API (`/api/*`) with the token the
//! operator pastes, kept in the tab's `sessionStorage`. The answers carry
//! a strict Content-Security-Policy (only this origin's script and style,
//! no inline script, no framing), so a webhook payload that reaches the
//! page as text can never run as code; the script itself writes data into
//! the DOM with `textContent` only.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("../../assets/dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../../assets/dashboard/dashboard.css");
const FAVICON_SVG: &str = include_str!("../../assets/dashboard/favicon.svg");

/// Only this origin, nothing inline, no plugins, no framing, no forms
/// posted anywhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The page and its assets, unauthenticated.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/", get(index))
        .route("/assets/dashboard.js", get(script))
        .route("/assets/dashboard.css", get(style))
        .route("/assets/favicon.svg", get(favicon))
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}

async fn favicon() -> Response {
    asset("image/svg+xml", FAVICON_SVG)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new binary's page and script are picked up on the next load.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
