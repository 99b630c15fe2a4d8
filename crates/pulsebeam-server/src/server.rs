//! HTTP plumbing: routes, body codecs, CORS, shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
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

use arc_swap::ArcSwap;

use crate::audit::{Audit, Event};

use crate::config::{Config, ConfigError, StoreBackend};
use crate::live::{keep_fixed, Live};
use crate::metrics::{Method, Metrics, StoreOp};
use crate::proto::{PrepareReq, RecvReq, SendResp};
use crate::revoke::{Revocation, RevocationError, Revocations};
use crate::state::{remote_of, RemoteAddr, State};
use crate::store::{
    LocalRevocations, MailboxStore, MemoryStore, MemoryUsage, OwnRuntime, RedisConnection,
    RedisRevocations, RedisStore, RedisUsage, RevocationStore, StartError, UsageStore,
};
use crate::tunnel;
use crate::twirp::{Code, TwirpError};
use crate::usage::{Record, Usage};

/// The Twirp path prefix of the service; the client's `baseUrl` is the origin plus `/twirp`.
pub const TWIRP_PREFIX: &str = "/twirp/pulsebeam.v1.Tunnel/";

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
            .field("listen", &self.state.live.load().config.listen)
            .field("projects", &self.state.live.load().config.projects.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Server`] with a custom clock or mailbox store.
pub struct ServerBuilder {
    config: Config,
    clock: Arc<dyn Clock>,
    store: Option<Arc<dyn MailboxStore>>,
    config_file: Option<PathBuf>,
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

    /// Replaces the mailbox store that `[store]` configures.
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
        let live = Live::build(self.config, Arc::clone(&self.clock), None)?;
        let config = Arc::clone(&live.config);
        // Outside tokio (checking a configuration, as `serve --check` does, or in a test) the
        // stores run their tasks on a runtime of the server's own.
        let own_runtime = match tokio::runtime::Handle::try_current() {
            Ok(_) => None,
            Err(_) => Some(OwnRuntime::new().map_err(|e| {
                ConfigError::invalid(
                    "store",
                    e.to_string(),
                    "build the server inside a tokio runtime",
                )
            })?),
        };
        let stores = {
            let _inside = own_runtime.as_ref().map(OwnRuntime::enter);
            build_stores(&config, self.store, self.clock.now_unix())?
        };
        let audit = Audit::new(&config.audit).map_err(|e| {
            ConfigError::invalid(
                "audit.file",
                format!("cannot open it for appending: {e}"),
                "give a file in a writable directory, or remove the key to audit to the log",
            )
        })?;
        let revocations = Revocations::new();
        revocations.replace(stores.in_force, self.clock.now_unix());
        let usage = Usage::default();
        usage.set_projects(&project_ids(&config));
        let tls = config.tls.as_ref().map(crate::tls::Tls::new).transpose()?;
        let (shutdown, _) = watch::channel(false);
        let (epoch, _) = watch::channel(0);
        let server = Server {
            state: Arc::new(State {
                live: ArcSwap::from_pointee(live),
                clock: self.clock,
                store: stores.mailboxes,
                metrics: Metrics::default(),
                shutdown,
                epoch,
                revocations,
                revocation_store: stores.revocations,
                audit,
                usage,
                usage_store: stores.usage,
                turn_stats: Default::default(),
                config_file: self.config_file,
                reloading: std::sync::Mutex::new(()),
                sync_started: std::sync::atomic::AtomicBool::new(false),
                tls,
                _own_runtime: own_runtime,
            }),
            extra: None,
        };
        server.start_sync();
        Ok(server)
    }

    /// The file the configuration was read from: [`Server::reload_from_file`] (and SIGHUP,
    /// under [`run_file`]) read it again.
    #[must_use]
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }
}

/// What `[store]` configures: mailboxes (unless the builder was given a store), revocations
/// and usage totals, and the revocations in force at `now`.
struct Stores {
    mailboxes: Arc<dyn MailboxStore>,
    revocations: Arc<dyn RevocationStore>,
    usage: Arc<dyn UsageStore>,
    in_force: Vec<Revocation>,
}

/// Builds the stores. On Redis the three share one connection, which connects in the
/// background, so a node starts (answering `unavailable` and a failing `/healthz`) while Redis
/// is still down, and reads the revocations at its first sync.
fn build_stores(
    config: &Config,
    mailboxes: Option<Arc<dyn MailboxStore>>,
    now: u64,
) -> Result<Stores, ConfigError> {
    let unusable = |err: StartError| ConfigError::Invalid {
        key: "store.urls".into(),
        problem: err.to_string(),
        fix: "check the Redis URLs (redis://HOST:PORT or unix:///PATH)".into(),
    };
    if config.store.backend == StoreBackend::Redis {
        let connection = RedisConnection::new(&config.store).map_err(unusable)?;
        let mailboxes = match mailboxes {
            Some(mailboxes) => mailboxes,
            None => Arc::new(
                RedisStore::with_connection(connection.clone(), &config.store, &config.limits)
                    .map_err(unusable)?,
            ),
        };
        let prefix = &config.store.key_prefix;
        return Ok(Stores {
            mailboxes,
            revocations: Arc::new(RedisRevocations::new(connection.clone(), prefix)),
            usage: Arc::new(RedisUsage::new(connection, prefix)),
            in_force: Vec::new(),
        });
    }
    let mailboxes = match mailboxes {
        Some(mailboxes) => mailboxes,
        None => {
            let ack_lease = Duration::from_millis(config.store.ack_lease_ms);
            let store = MemoryStore::new(&config.limits, ack_lease).map_err(|err| {
                ConfigError::invalid(
                    "store",
                    err.to_string(),
                    "build the server inside a tokio runtime",
                )
            })?;
            Arc::new(store)
        }
    };
    let revocations = match config.admin.as_ref().and_then(|a| a.state_file.as_ref()) {
        Some(path) => LocalRevocations::with_state_file(path, now).map_err(|e| {
            ConfigError::invalid("admin.state_file", e.to_string(), "fix or move the file")
        })?,
        None => LocalRevocations::in_memory(),
    };
    Ok(Stores {
        mailboxes,
        in_force: revocations.in_force(now),
        revocations: Arc::new(revocations),
        usage: Arc::new(MemoryUsage::new()),
    })
}

/// How often a node looks for revocation changes in the shared store: a revocation made on
/// one node holds on every node within a second.
const REVOCATION_SYNC: Duration = Duration::from_millis(500);

/// How often a node adds its usage counts to the shared store.
const USAGE_FLUSH_EVERY: u32 = 20;

impl Server {
    /// Keeps the revocations in step with the revocation store and adds usage totals to the
    /// usage store, from a task that ends when the server is dropped. Without a runtime (a
    /// server built outside tokio) nothing is started; [`serve`] starts it then.
    fn start_sync(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self
            .state
            .sync_started
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let weak = Arc::downgrade(&self.state);
        runtime.spawn(async move {
            let mut seen = None;
            let mut tick = tokio::time::interval(REVOCATION_SYNC);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks = 0u32;
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { return };
                seen = state.sync_revocations(seen).await;
                ticks = ticks.wrapping_add(1);
                if ticks % USAGE_FLUSH_EVERY == 0 {
                    if let Err(err) = state.flush_usage().await {
                        tracing::debug!(error = %err, "usage totals not added to the shared store yet");
                    }
                }
            }
        });
    }

    pub(crate) fn state(&self) -> &Arc<State> {
        &self.state
    }

    pub(crate) fn from_state(state: Arc<State>) -> Self {
        Server { state, extra: None }
    }

    /// A server for `config` with the system clock and the store `[store]` configures.
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
            config_file: None,
        }
    }

    /// The configuration in force (a reload replaces it).
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.state.live.load().config)
    }

    /// Applies `config` without a restart: projects, keys, limits, ICE, CORS and the audit
    /// target's policy take effect for the next call; tokens of removed keys stop working at
    /// once, cached and on open long-polls (which end with `unauthenticated`). Keys that need a
    /// restart (`listen`, the connection and store limits, `[admin]`) keep their running values
    /// and are named in the outcome. With `[tls]` its files are read again and new connections
    /// get the certificate (open ones keep theirs); adding or removing `[tls]` needs a restart.
    /// An invalid `config`, or an unusable certificate or key, changes nothing.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] that makes `config` unusable (for the `[tls]` files, naming
    /// `tls.cert_file` or `tls.key_file`); the running configuration and certificate stay.
    pub fn reload(&self, mut config: Config) -> Result<ReloadOutcome, ConfigError> {
        let state = &self.state;
        let _one = state
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let running = state.live.load_full();
        let kept = keep_fixed(&running.config, &mut config);
        let live = Live::build(config, Arc::clone(&state.clock), Some(&running))
            .and_then(|live| self.reload_tls_with(&live.config).map(|()| live));
        let live = match live {
            Ok(live) => live,
            Err(err) => {
                state.metrics.reload(false);
                state.audit.record(
                    Event::new("reload")
                        .with("ok", false)
                        .with("error", err.to_string()),
                );
                tracing::error!(error = %err, "configuration reload refused; the running configuration stays");
                return Err(err);
            }
        };
        let outcome = ReloadOutcome {
            generation: live.generation,
            projects: live.config.projects.iter().map(|p| p.id.clone()).collect(),
            restart_needed: kept.iter().map(|k| (*k).to_owned()).collect(),
        };
        state.usage.set_projects(&project_ids(&live.config));
        state.live.store(Arc::new(live));
        state.epoch.send_modify(|e| *e += 1);
        state.metrics.reload(true);
        state.audit.record(
            Event::new("reload")
                .with("ok", true)
                .with("generation", outcome.generation)
                .with("restart_needed", outcome.restart_needed.clone()),
        );
        if outcome.restart_needed.is_empty() {
            tracing::info!(generation = outcome.generation, projects = ?outcome.projects, "configuration reloaded");
        } else {
            tracing::warn!(generation = outcome.generation, restart_needed = ?outcome.restart_needed, "configuration reloaded; these keys changed but keep their running values until a restart");
        }
        Ok(outcome)
    }

    /// Reads the configuration file again (see [`ServerBuilder::config_file`]) and
    /// [reloads](Server::reload) it.
    ///
    /// # Errors
    ///
    /// [`ReloadError::NoFile`] when the server was not built from a file, else the file's
    /// [`ConfigError`]; the running configuration stays.
    pub fn reload_from_file(&self) -> Result<ReloadOutcome, ReloadError> {
        let path = self.state.config_file.as_ref().ok_or(ReloadError::NoFile)?;
        let config = Config::from_file(path).map_err(|err| {
            self.state.metrics.reload(false);
            self.state.audit.record(
                Event::new("reload")
                    .with("ok", false)
                    .with("error", err.to_string()),
            );
            tracing::error!(error = %err, "configuration reload refused; the running configuration stays");
            ReloadError::Config(err)
        })?;
        Ok(self.reload(config)?)
    }

    /// Revokes tokens (see [`Revocation`]) on this server, and on every node sharing its
    /// store; open long-polls of the tokens it covers end with `unauthenticated`.
    ///
    /// # Errors
    ///
    /// When the revocation cannot be kept (state file or shared store).
    pub async fn revoke(&self, revocation: Revocation) -> Result<Revocation, RevocationError> {
        self.state.revoke(revocation, None).await
    }

    /// The revocations in force.
    pub fn revocations(&self) -> Vec<Revocation> {
        self.state.revocations.list(self.state.now_unix())
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

    /// A reload's `[tls]`: the files it names are read again (a renewal replaces them in place,
    /// or the paths changed). Adding or removing `[tls]` waits for a restart (`keep_fixed`).
    fn reload_tls_with(&self, config: &Config) -> Result<(), ConfigError> {
        match (&self.state.tls, &config.tls) {
            (Some(tls), Some(files)) => Ok(tls.reload_from(files)?),
            _ => Ok(()),
        }
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
/// served at once (further clients wait in the listen backlog). The store expires messages and
/// forgets idle connections by itself.
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

    server.start_sync();
    let state = Arc::clone(&server.state);
    let router = server.router();
    // Read once: changing these needs a restart (a reload keeps them, see `keep_fixed`).
    let config = Arc::clone(&state.live.load().config);
    let limits = &config.limits;
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
    let turn_stats = crate::turnstats::TurnStats::start(Arc::clone(&state) as _, &config.usage);

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
        let (tcp, remote) = tokio::select! {
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
        // Every request of the connection carries the client's address (for the audit trail).
        let service = router.clone().layer(axum::Extension(RemoteAddr(remote)));
        // HTTPS: the TLS connection, HTTP/1.1 or HTTP/2, holds the permit until it ends.
        if let Some(tls) = &tls {
            let serving = Arc::clone(tls).serve(tcp, service, state.shutdown.subscribe());
            tokio::spawn(async move {
                serving.await;
                drop(permit);
            });
            continue;
        }
        let connection =
            http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
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
    if let Some(turn_stats) = turn_stats {
        turn_stats.stop().await;
    }
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

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ReloadOutcome {
    /// Counts configurations loaded: 1 is the one the server started with.
    pub generation: u64,
    /// The projects now configured.
    pub projects: Vec<String>,
    /// Keys that changed in the file but keep their running values until a restart.
    pub restart_needed: Vec<String>,
}

/// Why a reload from the configuration file did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The server was not built from a file.
    #[error("the server was not started from a configuration file, so there is nothing to reload; start it with `pulsebeam serve --config FILE`")]
    NoFile,
    /// The file is not a usable configuration; the running one stays.
    #[error("{0}; the running configuration stays")]
    Config(#[from] ConfigError),
}

fn project_ids(config: &Config) -> Vec<Arc<str>> {
    config
        .projects
        .iter()
        .map(|p| Arc::from(p.id.as_str()))
        .collect()
}

/// Why [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; check config key `listen` or `admin.listen` (is the port taken?)")]
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

/// Validates `config`, binds `config.listen` (and `admin.listen` when `[admin]` is set), logs
/// the address and serves until `shutdown`.
///
/// # Errors
///
/// [`RunError`] when the config is invalid, an address cannot be bound or serving fails.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    run_server(Server::new(config)?, shutdown).await
}

/// As [`run`], with the configuration read from `path`; SIGHUP reads it again and applies it
/// without a restart (see [`Server::reload`]), as the admin API's reload does.
///
/// # Errors
///
/// [`RunError`] when the file is not a valid configuration, an address cannot be bound or
/// serving fails.
pub async fn run_file(
    path: impl Into<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let path = path.into();
    let config = Config::from_file(&path)?;
    let server = Server::builder(config).config_file(&path).build()?;
    run_server(server, shutdown).await
}

/// Binds and serves a built `server` as [`run`] does: the signaling listener, the admin
/// listener when `[admin]` is set, and (under a configuration file) reloads on SIGHUP.
///
/// # Errors
///
/// [`RunError`] when an address cannot be bound or serving fails.
pub async fn run_server(
    server: Server,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let config = server.config();
    let addr = config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let admin = match &config.admin {
        Some(admin) => {
            let listener =
                TcpListener::bind(admin.listen)
                    .await
                    .map_err(|source| RunError::Bind {
                        addr: admin.listen,
                        source,
                    })?;
            let local = listener.local_addr().unwrap_or(admin.listen);
            tracing::info!(addr = %local, "admin API listening on http://{local}/admin/v1/");
            let mut down = server.state.shutdown.subscribe();
            Some(AbortOnDrop(tokio::spawn({
                let server = server.clone();
                async move {
                    let stop = async move {
                        let _ = down.wait_for(|d| *d).await;
                    };
                    if let Err(err) = crate::admin::serve_admin(listener, server, stop).await {
                        tracing::error!(error = %err, "the admin API stopped");
                    }
                }
            })))
        }
        None => None,
    };
    let _reloader = reload_on_sighup(&server);
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
    drop(admin);
    tracing::info!("pulsebeam signaling server stopped");
    Ok(())
}

/// Reloads the configuration file on every SIGHUP, for as long as the returned guard lives.
fn reload_on_sighup(server: &Server) -> Option<AbortOnDrop> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP; reload through the admin API");
                return None;
            }
        };
        let server = server.clone();
        Some(AbortOnDrop(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                // Outcomes and errors are logged, counted and audited by the reload itself.
                let _ = server.reload_from_file();
            }
        })))
    }
    #[cfg(not(unix))]
    {
        let _ = server;
        None
    }
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
                    // A field pulsebeam.v1 does not define is refused in JSON, not dropped.
                    let hint = if e.to_string().starts_with("unknown field") {
                        "; fix the field's name, or send application/protobuf: a JSON body may use only the fields of pulsebeam.v1"
                    } else {
                        ""
                    };
                    TwirpError::new(
                        Code::Malformed,
                        format!("the body is not valid JSON for the request type: {e}{hint}"),
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

    fn encode<T: prost::Message + Serialize>(self, message: &T) -> Result<Response, TwirpError> {
        let body = match self {
            Encoding::Protobuf => Bytes::from(message.encode_to_vec()),
            // Never an empty 200: a receiver would take it for "no messages" and lose a batch.
            Encoding::Json => Bytes::from(serde_json::to_vec(message).map_err(|e| {
                TwirpError::new(
                    Code::Internal,
                    format!(
                        "the answer could not be written as JSON ({e}); use application/protobuf"
                    ),
                )
            })?),
        };
        Ok(self.respond(body))
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

async fn handle(
    state: &Arc<State>,
    method: Method,
    request: Request,
) -> Result<Response, TwirpError> {
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
    let live = state.live.load_full();
    let remote = remote_of(request.extensions());
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let identity = state.authenticate(
        &live,
        authorization.as_ref().map(HeaderValue::as_bytes),
        remote,
    )?;
    state
        .usage
        .record(&identity.project_id, Record::Call, state.now_unix());
    let limits = &live.config.limits;
    let peer = (
        Arc::clone(&identity.project_id),
        Arc::clone(&identity.group),
        Arc::clone(&identity.peer),
    );
    if !live.limiter.take(&peer) {
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
            encoding.encode(&tunnel::prepare(state, &live, &identity))
        }
        Method::Send => {
            let message = match encoding {
                Encoding::Protobuf => tunnel::message_of_protobuf(body)?,
                Encoding::Json => tunnel::message_of_json(encoding.decode(&body)?)?,
            };
            tunnel::send(state, &live, &identity, message, remote).await?;
            encoding.encode(&SendResp {})
        }
        Method::Recv => {
            let request: RecvReq = encoding.decode(&body)?;
            let (envelopes, ack) =
                tunnel::recv(state, &live, identity, authorization, request.src.as_ref()).await?;
            let response = match encoding {
                Encoding::Protobuf => encoding.respond(tunnel::recv_resp_protobuf(&envelopes)),
                Encoding::Json => encoding.encode(&tunnel::recv_resp_message(&envelopes)?)?,
            };
            Ok(match ack {
                Some(ack) => ack_when_sent(response, Arc::clone(state), ack),
                None => response,
            })
        }
    }
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

/// Acknowledges the messages of a `Recv` response to the store once hyper has taken the whole
/// body for writing; a response that is dropped before that is not acknowledged, so its
/// messages are handed out again after the ack lease.
fn ack_when_sent(response: Response, state: Arc<State>, ack: tunnel::PendingAck) -> Response {
    let (parts, body) = response.into_parts();
    let body = AckOnEnd {
        body,
        ack: Some((state, ack)),
    };
    Response::from_parts(parts, Body::new(body))
}

struct AckOnEnd {
    body: Body,
    ack: Option<(Arc<State>, tunnel::PendingAck)>,
}

impl http_body::Body for AckOnEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let frame = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        // hyper takes the last frame for writing (and may not poll again once the content
        // length is reached): the whole answer is then on its way.
        let last = match &frame {
            std::task::Poll::Ready(None) => true,
            std::task::Poll::Ready(Some(Ok(_))) => self.body.is_end_stream(),
            _ => false,
        };
        if last {
            if let Some((state, ack)) = self.ack.take() {
                tokio::spawn(async move { ack.send(&state).await });
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
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
