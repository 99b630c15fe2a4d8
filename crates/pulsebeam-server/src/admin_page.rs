//! The usage page on the admin listener: `GET /admin/usage`, with its script and style.
//!
//! The page is static and holds no secret, so serving it needs no token. It asks the operator
//! for the admin token, keeps it in the tab's `sessionStorage`, and reads every number it shows
//! from the admin API (`/admin/v1/projects`, `/admin/v1/usage/minutes`) with that token. Charts
//! are drawn by the page's own script as SVG: nothing is loaded from anywhere else, which the
//! `Content-Security-Policy` header enforces.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("../assets/usage.html");
const SCRIPT: &str = include_str!("../assets/usage.js");
const STYLE: &str = include_str!("../assets/usage.css");

/// Only this origin's own script, style and API; no frames, forms only to itself.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The page's routes; merged into the admin router outside its token check.
pub(crate) fn router() -> Router {
    Router::new()
        .route(
            "/admin/usage",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/admin/usage/usage.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/admin/usage/usage.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
