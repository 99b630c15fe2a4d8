//! The server: built once from a configuration, owner of the shared state and of every
//! background task, served by [`serve`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use pulsebeam_token::{Clock, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::audit::Audit;
use crate::config::{Config, ConfigError, StoreBackend};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::revoke::{Revocation, RevocationError, Revocations};
use crate::state::State;
use crate::store::{
    BindingStore, LocalRevocations, MailboxStore, MemoryBindings, MemoryStore, MemoryUsage,
    MirroredRevocations, RedisBindings, RedisConnection, RedisRevocations, RedisStore, RedisUsage,
    RevocationStore, StartError, UsageStore,
};
use crate::tasks::Tasks;
use crate::usage::Usage;

/// A configured signaling server: build it with [`Server::new`] or [`Server::builder`] inside a
/// tokio runtime, then hand it to [`serve`] or take its [`Server::router`].
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

/// Why a [`Server`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Built outside a tokio runtime.
    #[error("the server must be built inside a tokio runtime, since it starts its background tasks at once; build it within `Runtime::block_on` or an async main (to only validate a configuration, use `pulsebeam_server::check`)")]
    NoRuntime,
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

/// Checks everything about `config` that building a server would, without building one or
/// touching the network: the rules of [`Config::validate`], the `[tls]` certificate and key,
/// the admin state file, the audit file's directory. `pulsebeam serve --check` runs this.
///
/// # Errors
///
/// The first [`ConfigError`] found, naming the key and the fix.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    config.validate()?;
    if let Some(files) = &config.tls {
        crate::tls::Tls::new(files)?;
    }
    if let Some(path) = config.admin.as_ref().and_then(|a| a.state_file.as_ref()) {
        LocalRevocations::with_state_file(path, SystemClock.now_unix()).map_err(|e| {
            ConfigError::invalid("admin.state_file", e.to_string(), "fix or move the file")
        })?;
    }
    if let Some(files) = &config.store.tls {
        crate::store::tls_connector(files).map_err(|err| match err {
            StartError::Tls { key, problem } => ConfigError::invalid(
                key,
                problem,
                "give a readable PEM file (CA certificates, the client's chain, its private key)",
            ),
            other => ConfigError::invalid("store.tls", other.to_string(), "fix [store.tls]"),
        })?;
    }
    if let Some(path) = &config.audit.file {
        // Opened for appending as the server would; a file that was not there is not left
        // behind by a check.
        let existed = path.exists();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| audit_file_error(&e))?;
        if !existed {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

fn audit_file_error(err: &std::io::Error) -> ConfigError {
    ConfigError::invalid(
        "audit.file",
        format!("cannot open it for appending: {err}"),
        "give a file in a writable directory, or remove the key to audit to the log",
    )
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

    /// The file the configuration was read from: [`Server::reload_from_file`] (and SIGHUP,
    /// under [`run_file`](crate::run_file)) read it again.
    #[must_use]
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// Validates the configuration, builds the server and its stores and starts its background
    /// tasks (keeping revocations in step with the revocation store, adding usage totals to the
    /// usage store).
    ///
    /// # Errors
    ///
    /// [`BuildError::Config`] for the first problem of the configuration,
    /// [`BuildError::NoRuntime`] outside a tokio runtime.
    pub fn build(self) -> Result<Server, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let live = Live::build(self.config, Arc::clone(&self.clock), None)?;
        let config = Arc::clone(&live.config);
        let stores = build_stores(&config, self.store, self.clock.now_unix())?;
        let audit = Audit::new(&config.audit).map_err(|e| audit_file_error(&e))?;
        let revocations = Revocations::new();
        revocations.replace(stores.in_force, self.clock.now_unix());
        let usage = Usage::default();
        usage.set_projects(&crate::reload::project_ids(&config));
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::Tls::new)
            .transpose()
            .map_err(ConfigError::from)?;
        let (shutdown, _) = watch::channel(false);
        let (epoch, _) = watch::channel(0);
        let state = Arc::new(State {
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
            tls,
            tasks: Tasks::new(runtime),
            bindings: crate::binding::Bindings::new(stores.bindings),
            analytics: Default::default(),
            acks_in_flight: Default::default(),
        });
        crate::sync::start(&state);
        Ok(Server { state, extra: None })
    }
}

/// What `[store]` configures: mailboxes (unless the builder was given a store), revocations
/// and usage totals, and the revocations in force at `now`.
struct Stores {
    mailboxes: Arc<dyn MailboxStore>,
    revocations: Arc<dyn RevocationStore>,
    usage: Arc<dyn UsageStore>,
    bindings: Arc<dyn BindingStore>,
    in_force: Vec<Revocation>,
}

/// Builds the stores. On Redis the three share one connection, which connects in the
/// background, so a node starts (answering `unavailable` and a failing `/healthz`) while Redis
/// is still down, and reads the revocations at its first sync.
fn build_stores(
    config: &Config,
    mailboxes: Option<Arc<dyn MailboxStore>>,
    now: u64,
) -> Result<Stores, BuildError> {
    let unusable = |err: StartError| match err {
        StartError::NoRuntime => BuildError::NoRuntime,
        StartError::Tls { key, problem } => BuildError::Config(ConfigError::Invalid {
            key: key.into(),
            problem,
            fix: "give a readable PEM file (CA certificates, the client's chain, its private key)"
                .into(),
        }),
        err => BuildError::Config(ConfigError::Invalid {
            key: "store.urls".into(),
            problem: err.to_string(),
            fix: "check the Redis URLs (redis://HOST:PORT or unix:///PATH)".into(),
        }),
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
        // Each node mirrors the shared revocations (in its state file if it has one), so an
        // acknowledged revocation outlives Redis losing its data.
        let mirror = local_revocations(config, now)?;
        let revocations = MirroredRevocations::new(
            Arc::new(RedisRevocations::new(connection.clone(), prefix)),
            mirror,
        );
        return Ok(Stores {
            mailboxes,
            in_force: revocations.in_force(now),
            revocations: Arc::new(revocations),
            usage: Arc::new(RedisUsage::new(connection.clone(), prefix)),
            bindings: Arc::new(RedisBindings::new(connection, prefix)),
        });
    }
    let mailboxes = match mailboxes {
        Some(mailboxes) => mailboxes,
        None => {
            let ack_lease = Duration::from_millis(config.store.ack_lease_ms);
            Arc::new(MemoryStore::new(&config.limits, ack_lease).map_err(unusable)?)
        }
    };
    let revocations = local_revocations(config, now)?;
    Ok(Stores {
        mailboxes,
        in_force: revocations.in_force(now),
        revocations: Arc::new(revocations),
        usage: Arc::new(MemoryUsage::new()),
        bindings: Arc::new(MemoryBindings::new()),
    })
}

/// The revocations `admin.state_file` holds at `now`, or an empty set in memory.
fn local_revocations(config: &Config, now: u64) -> Result<LocalRevocations, BuildError> {
    Ok(
        match config.admin.as_ref().and_then(|a| a.state_file.as_ref()) {
            Some(path) => LocalRevocations::with_state_file(path, now).map_err(|e| {
                ConfigError::invalid("admin.state_file", e.to_string(), "fix or move the file")
            })?,
            None => LocalRevocations::in_memory(),
        },
    )
}

impl Server {
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
    /// As [`ServerBuilder::build`].
    pub fn new(config: Config) -> Result<Self, BuildError> {
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

    /// Revokes tokens (see [`Revocation`]) on this server, and on every node sharing its
    /// store; open long-polls of the tokens it covers end with `unauthenticated`.
    ///
    /// # Errors
    ///
    /// When the revocation cannot be kept (state file or Redis).
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

    /// The HTTP routes: Twirp `POST /twirp/pulsebeam.v1.Tunnel/{Prepare,Send,Recv}`, gRPC-web
    /// `POST {/grpc,}[/t/TOKEN]/pulsebeam.v1.Signaling/{Prepare,Send,Recv,AnalyticsReport}`,
    /// `GET /_ping`, `GET /healthz`, `GET /metrics`, plus any added with
    /// [`Server::with_routes`], all behind the CORS layer.
    pub fn router(&self) -> Router {
        crate::routes::router(&self.state, self.extra.as_ref())
    }

    /// Starts shutting down: open long-polls are answered with what is queued, new calls get
    /// `unavailable` (which the client retries) and `/healthz` answers 503. [`serve`] calls this
    /// when its shutdown future completes; calling it directly makes [`serve`] drain and return
    /// the same way.
    pub fn shutdown(&self) {
        self.state.shutdown.send_replace(true);
        // Waiting calls watch the epoch: it tells them to answer now.
        self.state.epoch.send_modify(|e| *e += 1);
    }

    /// Whether [`Server::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.state.shutdown.borrow()
    }

    /// Runs `task` until it ends or the server has shut down and drained; [`serve`] waits for
    /// it (within the shutdown grace) before it returns, and ends it then if it has not ended.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.state.tasks.spawn(task);
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
}

/// Serves `server` on `listener` until `shutdown` completes (or [`Server::shutdown`] is
/// called), then drains: long-polls are answered at once, other calls get up to
/// `limits.shutdown_grace_secs` to finish, and the server's background tasks end.
///
/// Every connection is bounded: request headers must arrive within
/// `limits.header_timeout_secs` (also between requests on a kept-alive connection), a body within
/// `limits.body_timeout_secs`, and at most `limits.max_open_connections` TCP connections are
/// served at once (further clients wait in the listen backlog). With `[tls]` the listener speaks
/// HTTPS only, HTTP/1.1 or HTTP/2 by ALPN, under the same bounds. The store expires messages and
/// forgets idle connections by itself.
///
/// # Errors
///
/// An I/O error from the listener that is not about one connection.
pub async fn serve(
    listener: TcpListener,
    server: Server,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::clone(&server.state);
    let router = server.router();
    // Read once: changing these needs a restart (a reload keeps them, see `keep_fixed`).
    let config = Arc::clone(&state.live.load().config);
    let limits = &config.limits;
    let tls = state
        .tls
        .as_ref()
        .map(|tls| crate::serve::TlsServing::new(tls, limits));
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
    let served = crate::serve::serve_router(listener, router, limits, tls, stop, || {
        tracing::info!("shutting down: answering long-polls and refusing new calls");
        server.shutdown();
    })
    .await;
    if let Some(turn_stats) = turn_stats {
        turn_stats.stop().await;
    }
    state
        .tasks
        .end(Duration::from_secs(limits.shutdown_grace_secs))
        .await;
    served
}
