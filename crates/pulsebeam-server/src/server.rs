//! HTTP plumbing: routes, body codecs, CORS, shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, Method as HttpMethod, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pulsebeam_token::{Clock, SystemClock};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{failure_kind, Authenticator, Identity};
use crate::config::{Config, ConfigError};
use crate::limiter::CallLimiter;
use crate::metrics::{Method, Metrics};
use crate::proto::{PrepareReq, RecvReq, SendResp};
use crate::store::{MailboxStore, MemoryStore};
use crate::tunnel;
use crate::twirp::{Code, TwirpError};

/// The Twirp path prefix of the service; the client's `baseUrl` is the origin plus `/twirp`.
pub const TWIRP_PREFIX: &str = "/twirp/pulsebeam.v1.Tunnel/";

pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) auth: Authenticator,
    pub(crate) store: Arc<dyn MailboxStore>,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: CallLimiter,
    pub(crate) shutdown: watch::Sender<bool>,
    cors: Cors,
    /// `[tls]`: the certificate in use; `None` serves plain HTTP.
    tls: Option<crate::tls::Tls>,
}

/// A configured signaling server: build it with [`Server::new`] or [`Server::builder`], then
/// hand it to [`serve`] or take its [`Server::router`].
#[derive(Clone)]
pub struct Server {
    state: Arc<State>,
    extra: Option<Router>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.state.config.listen)
            .field("projects", &self.state.config.projects.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Server`] with a custom clock or mailbox store.
pub struct ServerBuilder {
    config: Config,
    clock: Arc<dyn Clock>,
    store: Option<Arc<dyn MailboxStore>>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder").finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Replaces the wall clock used for token expiry and TURN credentials.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Replaces the in-memory mailbox store.
    #[must_use]
    pub fn store(mut self, store: impl MailboxStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Validates the configuration and builds the server.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] of [`Config::validate`].
    pub fn build(self) -> Result<Server, ConfigError> {
        let config = self.config;
        let key_sets = config.key_sets()?;
        config.validate_without_keys()?;
        let limits = &config.limits;
        let auth = Authenticator::new(
            &key_sets,
            self.clock,
            limits.token_leeway_secs,
            limits.token_cache_capacity,
        );
        let limiter = CallLimiter::new(limits.rate_per_sec, limits.rate_burst);
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::new(limits, config.projects.len())));
        let cors = Cors::new(&config.cors.allowed_origins);
        let tls = config.tls.as_ref().map(crate::tls::Tls::new).transpose()?;
        let (shutdown, _) = watch::channel(false);
        Ok(Server {
            state: Arc::new(State {
                config,
                auth,
                store,
                metrics: Metrics::default(),
                limiter,
                shutdown,
                cors,
                tls,
            }),
            extra: None,
        })
    }
}

impl Server {
    /// A server for `config` with the system clock and the in-memory store.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] of [`Config::validate`].
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    /// A builder, to set a clock or a store before building.
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder {
            config,
            clock: Arc::new(SystemClock),
            store: None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// Adds routes (e.g. a dev token endpoint or a demo page) served beside the signaling
    /// routes by [`serve`]; they get the same CORS handling.
    #[must_use]
    pub fn with_routes(mut self, routes: Router) -> Self {
        self.extra = Some(match self.extra.take() {
            Some(existing) => existing.merge(routes),
            None => routes,
        });
        self
    }

    /// The HTTP routes: `POST /twirp/pulsebeam.v1.Tunnel/{Prepare,Send,Recv}`, `GET /_ping`,
    /// `GET /healthz`, `GET /metrics`, plus any added with [`Server::with_routes`], all
    /// behind the CORS layer.
    pub fn router(&self) -> Router {
        let state = Arc::clone(&self.state);
        let mut router = Router::new()
            .route(
                &format!("{TWIRP_PREFIX}Prepare"),
                any(|s: AxumState<Arc<State>>, r: Request| twirp(s, Method::Prepare, r)),
            )
            .route(
                &format!("{TWIRP_PREFIX}Send"),
                any(|s: AxumState<Arc<State>>, r: Request| twirp(s, Method::Send, r)),
            )
            .route(
                &format!("{TWIRP_PREFIX}Recv"),
                any(|s: AxumState<Arc<State>>, r: Request| twirp(s, Method::Recv, r)),
            )
            .route("/twirp/{*rest}", any(bad_route))
            .route("/_ping", get(|| async { "Pong" }))
            .route("/healthz", get(health))
            .route("/metrics", get(metrics))
            .with_state(Arc::clone(&state));
        if let Some(extra) = &self.extra {
            router = router.merge(extra.clone());
        }
        router.layer(middleware::from_fn_with_state(state, cors))
    }

    /// Starts shutting down: open long-polls are answered with what is queued, new calls get
    /// `unavailable` (which the client retries) and `/healthz` answers 503. [`serve`] calls this
    /// when its shutdown future completes; calling it directly makes [`serve`] drain and return
    /// the same way.
    pub fn shutdown(&self) {
        self.state.shutdown.send_replace(true);
    }

    /// Whether [`Server::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.state.shutdown.borrow()
    }

    /// Re-reads the `[tls]` certificate chain and key and serves them to new connections;
    /// connections already open keep the certificate they started with. Reads the files
    /// synchronously (they are small). Any clone of the server may call it while [`serve`] runs.
    ///
    /// # Errors
    ///
    /// [`TlsError`](crate::TlsError) saying which file is unusable and why; the certificate in
    /// use stays in use. [`TlsError::NotEnabled`](crate::TlsError::NotEnabled) when the server
    /// was built without `[tls]`.
    pub fn reload_tls(&self) -> Result<(), crate::TlsError> {
        let tls = self.state.tls.as_ref().ok_or(crate::TlsError::NotEnabled)?;
        tls.reload()?;
        tracing::info!("TLS certificate reloaded");
        Ok(())
    }

    /// As [`Server::reload_tls`], from the files `tls` names (a reloaded configuration's), which
    /// later reloads then read.
    ///
    /// # Errors
    ///
    /// As [`Server::reload_tls`]; on error the files and certificate in use stay in use.
    pub fn reload_tls_from(&self, tls: &crate::TlsConfig) -> Result<(), crate::TlsError> {
        let current = self.state.tls.as_ref().ok_or(crate::TlsError::NotEnabled)?;
        current.reload_from(tls)?;
        tracing::info!("TLS certificate reloaded");
        Ok(())
    }
}

/// Serves `server` on `listener` until `shutdown` completes, then drains: long-polls are
/// answered at once, other calls get up to `limits.shutdown_grace_secs` to finish.
///
/// With `[tls]` the listener speaks HTTPS only, HTTP/1.1 or HTTP/2 by ALPN, under the bounds
/// below (the TLS handshake too must finish within `limits.header_timeout_secs`).
///
/// Every connection is bounded: request headers must arrive within
/// `limits.header_timeout_secs` (also between requests on a kept-alive connection), a body within
/// `limits.body_timeout_secs`, and at most `limits.max_open_connections` TCP connections are
/// served at once (further clients wait in the listen backlog). Also runs the store's periodic
/// sweep of expired messages and idle connections.
///
/// # Errors
///
/// An I/O error from the listener that is not about one connection (such as running out of file
/// descriptors, which is retried).
pub async fn serve(
    listener: TcpListener,
    server: Server,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let state = Arc::clone(&server.state);
    let router = server.router();
    // Aborted when `serve` returns or its future is dropped.
    let _sweeper = AbortOnDrop({
        let store = Arc::clone(&state.store);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                store.sweep().await;
            }
        })
    });
    let limits = &state.config.limits;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_timeout_secs))
        // Bounds the request head (431 beyond); validated to be at least hyper's minimum.
        .max_buf_size(limits.max_header_bytes.max(crate::config::MIN_HEADER_BYTES))
        .keep_alive(true);
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_open_connections));
    let tls = state
        .tls
        .as_ref()
        .map(|tls| crate::http::TlsServing::new(tls, limits));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();

    let mut down = state.shutdown.subscribe();
    let stop = async move {
        // Either the caller's signal or a direct `Server::shutdown()` starts the drain.
        let flagged = async move {
            let _ = down.wait_for(|d| *d).await;
        };
        tokio::select! {
            () = shutdown => {}
            () = flagged => {}
        }
    };
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            () = &mut stop => break,
            permit = Arc::clone(&open).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, _peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Per-connection failures (reset before accept) and resource exhaustion
                    // (EMFILE) are transient: pause briefly instead of ending the server.
                    tracing::warn!(error = %err, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small request/response pairs: do not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        // HTTPS: the TLS connection, HTTP/1.1 or HTTP/2, holds the permit until it ends.
        if let Some(tls) = &tls {
            let serving = Arc::clone(tls).serve(tcp, router.clone(), state.shutdown.subscribe());
            tokio::spawn(async move {
                serving.await;
                drop(permit);
            });
            continue;
        }
        let connection =
            http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are one client's broken or timed-out connection.
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: answering long-polls and refusing new calls");
    server.shutdown();
    let grace = Duration::from_secs(limits.shutdown_grace_secs);
    let drained = async {
        graceful.shutdown().await;
        // HTTPS connections watch `state.shutdown` instead of `graceful`; each holds a permit.
        let all = u32::try_from(limits.max_open_connections).unwrap_or(u32::MAX);
        let _ = open.acquire_many(all).await;
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "shutdown grace period over; closing remaining connections"
        );
    }
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; check config key `listen` (is the port taken?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Validates `config`, binds `config.listen`, logs the address and serves until `shutdown`.
///
/// # Errors
///
/// [`RunError`] when the config is invalid, the address cannot be bound or serving fails.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let server = Server::new(config)?;
    let addr = server.config().listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let config = server.config();
    let projects: Vec<&str> = config.projects.iter().map(|p| p.id.as_str()).collect();
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        addr = %local,
        projects = ?projects,
        stun = config.ice.stun_urls.len(),
        turn = config.ice.turn.len(),
        mutual_policy = config.mutual_policy,
        "pulsebeam signaling server listening; clients use baseUrl {scheme}://{local}/twirp"
    );
    serve(listener, server, shutdown)
        .await
        .map_err(RunError::Serve)?;
    tracing::info!("pulsebeam signaling server stopped");
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Self, TwirpError> {
        let value = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = value.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/protobuf")
            || essence.eq_ignore_ascii_case("application/x-protobuf")
        {
            Ok(Encoding::Protobuf)
        } else if essence.eq_ignore_ascii_case("application/json") {
            Ok(Encoding::Json)
        } else {
            Err(TwirpError::new(
                Code::BadRoute,
                "unsupported Content-Type; send application/protobuf or application/json",
            ))
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Encoding::Protobuf => "application/protobuf",
            Encoding::Json => "application/json",
        })
    }

    fn decode<T: prost::Message + Default + DeserializeOwned>(
        self,
        body: &[u8],
    ) -> Result<T, TwirpError> {
        match self {
            Encoding::Protobuf => T::decode(body).map_err(|_| {
                TwirpError::new(
                    Code::Malformed,
                    "the body is not a valid protobuf message of the request type",
                )
            }),
            Encoding::Json => {
                // proto3 JSON: an empty body is not JSON, but treat it as an empty message.
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(T::default());
                }
                serde_json::from_slice(body).map_err(|e| {
                    TwirpError::new(
                        Code::Malformed,
                        format!("the body is not valid JSON for the request type: {e}"),
                    )
                })
            }
        }
    }

    fn respond(self, body: Bytes) -> Response {
        let mut response = Response::new(Body::from(body));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, self.content_type());
        response
    }

    fn encode<T: prost::Message + Serialize>(self, message: &T) -> Response {
        let body = match self {
            Encoding::Protobuf => Bytes::from(message.encode_to_vec()),
            Encoding::Json => Bytes::from(serde_json::to_vec(message).unwrap_or_default()),
        };
        self.respond(body)
    }
}

async fn twirp(
    AxumState(state): AxumState<Arc<State>>,
    method: Method,
    request: Request,
) -> Response {
    match handle(&state, method, request).await {
        Ok(response) => {
            state.metrics.call(method, None);
            response
        }
        Err(err) => {
            state.metrics.call(method, Some(err.code));
            tracing::debug!(method = method.name(), code = err.code.as_str(), msg = %err.msg, "call refused");
            err.into_response()
        }
    }
}

async fn handle(state: &State, method: Method, request: Request) -> Result<Response, TwirpError> {
    if request.method() != HttpMethod::POST {
        return Err(TwirpError::new(
            Code::BadRoute,
            format!(
                "{} is not allowed; Twirp methods take POST",
                request.method()
            ),
        ));
    }
    let encoding = Encoding::of(request.headers())?;
    if *state.shutdown.borrow() {
        return Err(TwirpError::new(
            Code::Unavailable,
            "the server is shutting down; retry shortly",
        ));
    }
    let identity = authenticate(state, request.headers())?;
    let limits = &state.config.limits;
    let peer = (
        identity.project,
        Arc::clone(&identity.group),
        Arc::clone(&identity.peer),
    );
    if !state.limiter.take(&peer) {
        return Err(TwirpError::new(
            Code::ResourceExhausted,
            format!(
                "rate limit of {} calls per second for this peer exceeded; slow down and retry",
                limits.rate_per_sec
            ),
        ));
    }
    refuse_declared_oversize(request.headers(), limits.max_body_bytes)?;
    let body = read_body(
        request.into_body(),
        limits.max_body_bytes,
        Duration::from_secs(limits.body_timeout_secs),
    )
    .await?;
    match method {
        Method::Prepare => {
            let _: PrepareReq = encoding.decode(&body)?;
            Ok(encoding.encode(&tunnel::prepare(state, &identity)))
        }
        Method::Send => {
            let message = match encoding {
                Encoding::Protobuf => tunnel::message_of_protobuf(body)?,
                Encoding::Json => tunnel::message_of_json(encoding.decode(&body)?)?,
            };
            tunnel::send(state, &identity, message).await?;
            Ok(encoding.encode(&SendResp {}))
        }
        Method::Recv => {
            let request: RecvReq = encoding.decode(&body)?;
            let envelopes = tunnel::recv(state, &identity, request.src.as_ref()).await?;
            Ok(match encoding {
                Encoding::Protobuf => encoding.respond(tunnel::recv_resp_protobuf(&envelopes)),
                Encoding::Json => encoding.encode(&tunnel::recv_resp_message(&envelopes)?),
            })
        }
    }
}

fn authenticate(state: &State, headers: &HeaderMap) -> Result<Arc<Identity>, TwirpError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    state.auth.authenticate(header).map_err(|err| {
        state.metrics.auth_failure(failure_kind(&err));
        err.into()
    })
}

fn body_too_large(limit: usize) -> TwirpError {
    TwirpError::new(
        Code::InvalidArgument,
        format!("the request body is larger than the {limit} bytes allowed; send smaller messages"),
    )
}

/// Refuses at once a body whose declared `Content-Length` exceeds `limit`, instead of waiting
/// for a body that will be refused anyway (a retryable timeout would make the client send it
/// again). An unparsable length is the HTTP stack's to refuse.
fn refuse_declared_oversize(headers: &HeaderMap, limit: usize) -> Result<(), TwirpError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => Err(body_too_large(limit)),
        _ => Ok(()),
    }
}

async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, TwirpError> {
    let too_large = || body_too_large(limit);
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| {
            TwirpError::new(
                Code::DeadlineExceeded,
                format!(
                    "the request body did not arrive within {} s; send it at once",
                    timeout.as_secs()
                ),
            )
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(_) => Err(TwirpError::new(
            Code::Malformed,
            "the request body could not be read",
        )),
    }
}

async fn bad_route(request: Request) -> Response {
    TwirpError::new(
        Code::BadRoute,
        format!(
            "no such method {}; the service pulsebeam.v1.Tunnel has Prepare, Send and Recv",
            request.uri().path()
        ),
    )
    .into_response()
}

async fn health(AxumState(state): AxumState<Arc<State>>) -> Response {
    if *state.shutdown.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    let text = state
        .metrics
        .render(&state.store.stats(), state.auth.cached());
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

/// Allowed origins, decided once at startup.
struct Cors {
    any: bool,
    origins: Vec<HeaderValue>,
}

impl Cors {
    fn new(origins: &[String]) -> Self {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.any {
            Some(HeaderValue::from_static("*"))
        } else {
            self.origins.iter().find(|o| *o == origin).cloned()
        }
    }
}

async fn cors(AxumState(state): AxumState<Arc<State>>, request: Request, next: Next) -> Response {
    let allowed = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|origin| state.cors.allow(origin));
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
