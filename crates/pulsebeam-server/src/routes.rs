//! The signaling listener's routes: the protocol adapters, `/_ping`, `/healthz`, `/metrics`,
//! and the CORS layer in front of all of them.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::StoreOp;
use crate::state::State;

/// The signaling routes over `state`, plus `extra`, all behind the CORS layer.
pub(crate) fn router(state: &Arc<State>, extra: Option<&Router>) -> Router {
    let mut router = crate::twirp::routes()
        .merge(crate::grpcweb::routes())
        .route("/_ping", get(|| async { "Pong" }))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(state));
    if let Some(extra) = extra {
        router = router.merge(extra.clone());
    }
    router.fallback(not_found).layer(Cors {
        state: Arc::clone(state),
    })
}

/// Any other path: gRPC's `UNIMPLEMENTED` to a gRPC-web client (which reads nothing else),
/// else a plain 404.
async fn not_found(request: Request) -> Response {
    if crate::grpcweb::is_grpc_web(request.headers()) {
        return crate::grpcweb::unimplemented(request.uri().path());
    }
    (StatusCode::NOT_FOUND, "no such route\n").into_response()
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
    state.analytics.render(&mut text);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Request headers a browser may send cross-origin: what the 0.0.17 client sends, Twirp's, and
/// gRPC-web's (the 0.0.18 on clients send `x-grpc-web` and `grpc-timeout`; other gRPC-web
/// clients add `x-user-agent`).
const ALLOWED_HEADERS: &str = "content-type, authorization, accept-encoding, accept, twirp-version, x-grpc-web, grpc-timeout, x-user-agent";

/// Response headers a cross-origin page may read: gRPC-web's status, which an answer that
/// fails before any data carries in its headers.
const EXPOSED_HEADERS: &str = "grpc-status, grpc-message";

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

/// The CORS layer: answers preflights and adds the `Access-Control-*` headers for allowed
/// origins to every answer.
///
/// Written as a service rather than with `middleware::from_fn`, which boxes an async block
/// (about 1 KiB) per request: a waiting long-poll keeps its call's futures for as long as it
/// waits, and this one is only the route's future and the headers to add.
#[derive(Clone)]
struct Cors {
    state: Arc<State>,
}

impl<S> tower::Layer<S> for Cors {
    type Service = CorsService<S>;

    fn layer(&self, inner: S) -> CorsService<S> {
        CorsService {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

#[derive(Clone)]
struct CorsService<S> {
    inner: S,
    state: Arc<State>,
}

impl<S> tower::Service<Request> for CorsService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let allowed = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|origin| self.state.live.load().cors.allow(origin));
        let preflight = request.method() == HttpMethod::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let allow_headers = preflight.then(|| allowed_headers(request.headers()));
        CorsFuture {
            inner: (!preflight).then(|| self.inner.call(request)),
            allowed,
            allow_headers,
        }
    }
}

/// The answer of the wrapped route (none for a preflight), then the CORS headers.
struct CorsFuture<F> {
    inner: Option<F>,
    allowed: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
}

impl<F> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = match self.inner.as_mut() {
            Some(inner) => match Pin::new(inner).poll(cx) {
                Poll::Ready(Ok(response)) => response,
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => return Poll::Pending,
            },
            None => StatusCode::NO_CONTENT.into_response(),
        };
        let allowed = self.allowed.take();
        let allow_headers = self.allow_headers.take();
        add_cors_headers(response.headers_mut(), allowed, allow_headers);
        Poll::Ready(Ok(response))
    }
}

fn add_cors_headers(
    headers: &mut HeaderMap,
    allowed: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
) {
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
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
}
