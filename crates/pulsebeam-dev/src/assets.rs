//! The demo page and its scripts, compiled into the binary.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// `(file name, content type, contents)` of every file under `/demo/`.
const DEMO_FILES: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("../assets/app.js")),
    ("session.js", JS, include_str!("../assets/session.js")),
    ("tunnel.js", JS, include_str!("../assets/tunnel.js")),
    ("twirp.js", JS, include_str!("../assets/twirp.js")),
    ("grpcweb.js", JS, include_str!("../assets/grpcweb.js")),
    ("proto.js", JS, include_str!("../assets/proto.js")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../assets/style.css"),
    ),
];
const JS: &str = "text/javascript; charset=utf-8";
const INDEX_HTML: &str = include_str!("../assets/index.html");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The page loads only its own scripts and styles and talks only to this server.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'self'";

/// `GET /`: the demo page.
pub(crate) async fn index() -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

/// `GET /demo/{file}`.
pub(crate) async fn demo_file(Path(file): Path<String>) -> Response {
    match DEMO_FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => asset(content_type, body),
        None => (
            StatusCode::NOT_FOUND,
            format!("no demo file named {file:?}; the demo page is at /"),
        )
            .into_response(),
    }
}
