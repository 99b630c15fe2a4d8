//! The signaling listener's routes: the protocol adapters, `/_ping`, `/healthz`, `/metrics`,
//! and the CORS layer in front of all of them.

use std::sync::Arc;

use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, Method as HttpMethod, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::StoreOp;
use crate::state::State;

/// The signaling routes over `state`, plus `extra`, all behind the CORS layer.
pub(crate) fn router(state: &Arc<State>, extra: Option<&Router>) -> Router {
    let mut router = crate::twirp::routes()
        .route("/_ping", get(|| async { "Pong" }))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(state));
    if let Some(extra) = extra {
        router = router.merge(extra.clone());
    }
    router.layer(middleware::from_fn_with_state(Arc::clone(state), cors))
}

async fn health(AxumState(state): AxumState<Arc<State>>) -> Response {
    if *state.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match state.store.health().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(err) => {
            state.metrics.store_error(StoreOp::Health);
            (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response()
        }
    }
}

async fn metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    let stats = state.store.stats().await.unwrap_or_else(|err| {
        state.metrics.store_error(StoreOp::Stats);
        tracing::debug!(error = %err, "store counters unavailable");
        Default::default()
    });
    let live = state.live.load();
    let (audit_written, audit_dropped) = state.audit.counts();
    let mut text = state.metrics.render(
        &stats,
        &crate::metrics::Extras {
            cached_tokens: live.auth.cached(),
            generation: live.generation,
            revocations: state.revocations.list(state.now_unix()).len(),
            audit_written,
            audit_dropped,
        },
    );
    state.usage.render(&mut text);
    state.turn_stats.render(&mut text);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Request headers a browser may send cross-origin: what the 0.0.17 client sends, plus Twirp's.
const ALLOWED_HEADERS: &str = "content-type, authorization, accept-encoding, accept, twirp-version";

/// [`ALLOWED_HEADERS`] plus whatever else the preflight asks for: access is decided by the
/// bearer token, not by header names, so a client library that adds a header of its own is not
/// refused by the browser.
fn allowed_headers(request: &HeaderMap) -> HeaderValue {
    request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|asked| asked.to_str().ok())
        .filter(|asked| !asked.trim().is_empty())
        .and_then(|asked| HeaderValue::from_str(&format!("{ALLOWED_HEADERS}, {asked}")).ok())
        .unwrap_or(HeaderValue::from_static(ALLOWED_HEADERS))
}

async fn cors(AxumState(state): AxumState<Arc<State>>, request: Request, next: Next) -> Response {
    let allowed = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|origin| state.live.load().cors.allow(origin));
    let preflight = request.method() == HttpMethod::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let allow_headers = preflight.then(|| allowed_headers(request.headers()));
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if let Some(allow_headers) = allow_headers {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, GET, OPTIONS"),
            );
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
        }
    }
    response
}
