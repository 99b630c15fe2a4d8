//! Running a server as a process does: bind the configured addresses, serve the signaling
//! listener and the admin API, reload on SIGHUP, stop on SIGTERM or Ctrl-C.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;

use crate::config::{Config, ConfigError};
use crate::server::{serve, BuildError, Server};

/// Why [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server could not be built.
    #[error(transparent)]
    Build(BuildError),
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

impl From<BuildError> for RunError {
    fn from(err: BuildError) -> Self {
        match err {
            BuildError::Config(err) => RunError::Config(err),
            other => RunError::Build(other),
        }
    }
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
    if let Some(admin) = &config.admin {
        let listener = TcpListener::bind(admin.listen)
            .await
            .map_err(|source| RunError::Bind {
                addr: admin.listen,
                source,
            })?;
        let local = listener.local_addr().unwrap_or(admin.listen);
        tracing::info!(addr = %local, "admin API listening on http://{local}/admin/v1/");
        let mut down = server.state().shutdown.subscribe();
        let admin_server = server.clone();
        server.spawn(async move {
            let stop = async move {
                let _ = down.wait_for(|d| *d).await;
            };
            if let Err(err) = crate::admin::serve_admin(listener, admin_server, stop).await {
                tracing::error!(error = %err, "the admin API stopped");
            }
        });
    }
    reload_on_sighup(&server);
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
        workers = tokio::runtime::Handle::current().metrics().num_workers(),
        "pulsebeam signaling server listening; clients use baseUrl {scheme}://{local}/twirp (0.0.17) or {scheme}://{local}/grpc (0.0.18 on)"
    );
    serve(listener, server, shutdown)
        .await
        .map_err(RunError::Serve)?;
    tracing::info!("pulsebeam signaling server stopped");
    Ok(())
}

/// Reloads the configuration file on every SIGHUP until the server shuts down, as one of the
/// server's tasks.
fn reload_on_sighup(server: &Server) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP; reload through the admin API");
                return;
            }
        };
        let mut down = server.state().shutdown.subscribe();
        let reloader = server.clone();
        server.spawn(async move {
            loop {
                tokio::select! {
                    hangup = hangups.recv() => if hangup.is_none() { return },
                    _ = down.wait_for(|d| *d) => return,
                }
                tracing::info!("SIGHUP: reloading the configuration");
                // Outcomes and errors are logged, counted and audited by the reload itself.
                let _ = reloader.reload_from_file();
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = server;
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
