//! `pulsebeam dev`: one command for a working PulseBeam system on a developer's machine.
//!
//! It runs the signaling server on loopback with one development project whose key is created
//! on first run and reused afterwards, and serves next to the signaling API:
//!
//! | path | what |
//! |---|---|
//! | `/grpc/pulsebeam.v1.Signaling/*` | the signaling API in gRPC-web (`Prepare`, `Send`, `Recv` a stream, `AnalyticsReport`), for `@pulsebeam/peer` 0.0.18 to 0.1.0-rc.2 |
//! | `/twirp/pulsebeam.v1.Tunnel/*` | the signaling API in Twirp (`Prepare`, `Send`, `Recv`), for 0.0.17 |
//! | `/auth?groupId=<g>&peerId=<p>` | a token for that peer, as `{"groupId","peerId","token"}`; `&allow=<group>:<peer>` narrows its policy (default `*:*`); bad or missing ids get `400` with a JSON `{"code","error"}` naming the problem |
//! | `/.well-known/jwks.json` | the project's public key as a JWK Set |
//! | `/` | a demo page: two peers chat over a data channel and see each other's camera |
//!
//! # Development only
//!
//! `/auth` hands a token to anyone who asks, so the server refuses to listen on anything but a
//! loopback address ([`DevError::NotLoopback`]). The key lives in `<state dir>/dev.env`
//! (default state dir: `.pulsebeam` in the current directory), created owner-only (0600) in an
//! owner-only directory with a `.gitignore` that keeps it out of version control, and refused if
//! other users can read it. The file is two `NAME=value` lines, so
//! `source .pulsebeam/dev.env` lets the SDK and the CLI mint tokens this server accepts.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), pulsebeam_dev::DevError> {
//! let options = pulsebeam_dev::DevOptions::default().with_port(0);
//! let server = pulsebeam_dev::DevServer::bind(options).await?;
//! println!("{}", server.banner());
//! server.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod assets;
mod auth;
mod error;
mod key;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use pulsebeam_server::{Config, IceConfig, ProjectConfig, Server, TurnConfig};
use pulsebeam_token::Jwks;
use tokio::net::TcpListener;

pub use error::DevError;
pub use key::KEY_FILE_NAME;

/// Default state directory, relative to the current directory.
pub const DEFAULT_STATE_DIR: &str = ".pulsebeam";
/// Default port.
pub const DEFAULT_PORT: u16 = 3000;
/// Default lifetime of the tokens `/auth` mints, in seconds (one hour).
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 3600;
/// The project name the dev key belongs to.
pub const DEV_PROJECT: &str = "dev";
/// Longest `/auth` token lifetime accepted in [`DevOptions`], in seconds (one day).
pub const MAX_TOKEN_TTL_SECS: u64 = 86_400;

/// TURN settings: a coturn server run with `use-auth-secret` and `static-auth-secret`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DevTurn {
    /// `turn:` / `turns:` URLs handed to browsers, e.g. `turn:127.0.0.1:3478?transport=udp`.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`.
    pub secret: String,
}

impl fmt::Debug for DevTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevTurn")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What `pulsebeam dev` runs with. Start from [`DevOptions::default`] and change what you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DevOptions {
    /// Where the dev key is kept ([`DEFAULT_STATE_DIR`] unless set).
    pub state_dir: PathBuf,
    /// The address to listen on; must be loopback. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// STUN URLs handed out by `Prepare` (none by default: on one machine none are needed).
    pub stun_urls: Vec<String>,
    /// A TURN server to hand out credentials for.
    pub turn: Option<DevTurn>,
    /// Lifetime of the tokens `/auth` mints, in seconds.
    pub token_ttl_secs: u64,
    /// The Redis coturn publishes its statistics to (`redis-statsdb`): TURN relay bytes are
    /// counted for the dev project from its traffic reports.
    pub turn_stats_url: Option<String>,
    /// A Redis for the mailboxes (the server's `[store] backend = "redis"`): dev servers sharing
    /// it and the state directory (so the key) are nodes of one deployment.
    pub store_redis_url: Option<String>,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT),
            stun_urls: Vec::new(),
            turn: None,
            token_ttl_secs: DEFAULT_TOKEN_TTL_SECS,
            turn_stats_url: None,
            store_redis_url: None,
        }
    }
}

impl DevOptions {
    /// Sets the state directory.
    #[must_use]
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    /// Sets the port, keeping the address.
    #[must_use]
    pub fn with_port(mut self, port: u16) -> Self {
        self.listen.set_port(port);
        self
    }

    /// Sets the listen address (must be loopback).
    #[must_use]
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Hands out credentials for a TURN server sharing `secret` (coturn's `static-auth-secret`).
    #[must_use]
    pub fn with_turn(mut self, urls: Vec<String>, secret: impl Into<String>) -> Self {
        self.turn = Some(DevTurn {
            urls,
            secret: secret.into(),
        });
        self
    }

    /// Adds a STUN URL.
    #[must_use]
    pub fn with_stun_url(mut self, url: impl Into<String>) -> Self {
        self.stun_urls.push(url.into());
        self
    }

    /// Counts TURN relay bytes from the coturn statistics published to the Redis at `url`.
    #[must_use]
    pub fn with_turn_stats_url(mut self, url: impl Into<String>) -> Self {
        self.turn_stats_url = Some(url.into());
        self
    }

    /// Keeps mailboxes in the Redis at `url`, shared with other dev servers using it.
    #[must_use]
    pub fn with_store_redis_url(mut self, url: impl Into<String>) -> Self {
        self.store_redis_url = Some(url.into());
        self
    }

    /// Sets the lifetime of minted tokens, in seconds.
    #[must_use]
    pub fn with_token_ttl_secs(mut self, ttl_secs: u64) -> Self {
        self.token_ttl_secs = ttl_secs;
        self
    }

    fn check(&self) -> Result<(), DevError> {
        if !self.listen.ip().is_loopback() {
            return Err(DevError::NotLoopback { addr: self.listen });
        }
        if self.token_ttl_secs == 0 || self.token_ttl_secs > MAX_TOKEN_TTL_SECS {
            return Err(DevError::InvalidOption {
                option: "token ttl",
                reason: format!(
                    "{} seconds; give 1 to {MAX_TOKEN_TTL_SECS}",
                    self.token_ttl_secs
                ),
            });
        }
        for url in &self.stun_urls {
            if !(url.starts_with("stun:") || url.starts_with("stuns:")) {
                return Err(DevError::InvalidOption {
                    option: "--stun-url",
                    reason: format!(
                        "{url:?} is not a stun: or stuns: URL (e.g. stun:127.0.0.1:3478)"
                    ),
                });
            }
        }
        for (option, url) in [
            ("--turn-stats-redis", &self.turn_stats_url),
            ("--store-redis", &self.store_redis_url),
        ] {
            let Some(url) = url else { continue };
            if !["redis://", "unix://", "redis+unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                return Err(DevError::InvalidOption {
                    option,
                    reason: "not a redis:// or unix:// URL, e.g. redis://127.0.0.1:6379".to_owned(),
                });
            }
        }
        if let Some(turn) = &self.turn {
            if turn.urls.is_empty() {
                return Err(DevError::InvalidOption {
                    option: "--turn-url",
                    reason:
                        "a TURN secret was given without a URL; add --turn-url turn:<host>:<port>"
                            .to_owned(),
                });
            }
            for url in &turn.urls {
                if !(url.starts_with("turn:") || url.starts_with("turns:")) {
                    return Err(DevError::InvalidOption {
                        option: "--turn-url",
                        reason: format!(
                            "{url:?} is not a turn: or turns: URL (e.g. turn:127.0.0.1:3478?transport=udp)"
                        ),
                    });
                }
            }
            if turn.secret.is_empty() {
                return Err(DevError::InvalidOption {
                    option: "--turn-secret",
                    reason: "empty; give coturn's static-auth-secret".to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// A bound, ready-to-serve dev server.
pub struct DevServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    server: Server,
    api_key: String,
    key_path: PathBuf,
    key_created: bool,
    turn_urls: Vec<String>,
}

impl fmt::Debug for DevServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevServer")
            .field("local_addr", &self.local_addr)
            .field("api_key", &self.api_key)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl DevServer {
    /// Loads (or creates) the dev key, builds the server and binds the listen address.
    ///
    /// # Errors
    ///
    /// [`DevError::NotLoopback`] for a non-loopback address, [`DevError::InvalidOption`] for a
    /// malformed option, the key-file variants when the key cannot be created or read,
    /// [`DevError::Config`] when the signaling server refuses the configuration, and
    /// [`DevError::Bind`] when the address is taken.
    pub async fn bind(options: DevOptions) -> Result<Self, DevError> {
        options.check()?;
        let key = key::load_or_create(&options.state_dir)?;
        let api_key = key.minter.api_key().to_owned();
        let public_key = key.minter.public_key();

        let mut config = Config::default();
        config.listen = options.listen;
        config
            .projects
            .push(ProjectConfig::new(DEV_PROJECT).with_key(api_key.clone(), &public_key));
        let mut ice = IceConfig::default();
        ice.stun_urls.clone_from(&options.stun_urls);
        if let Some(turn) = &options.turn {
            ice.turn
                .push(TurnConfig::new(turn.urls.clone(), turn.secret.clone()));
        }
        config.ice = ice;
        config
            .usage
            .turn_stats_url
            .clone_from(&options.turn_stats_url);
        if let Some(url) = &options.store_redis_url {
            config.store.backend = pulsebeam_server::StoreBackend::Redis;
            config.store.urls = vec![url.clone()];
        }

        let jwks = Jwks {
            keys: vec![public_key.to_jwk(&api_key)],
        };
        let tokens = Arc::new(auth::TokenState {
            minter: key.minter,
            ttl_secs: options.token_ttl_secs,
            jwks_json: serde_json::to_string(&jwks)
                .map_err(|err| DevError::Config(format!("cannot encode the JWKS: {err}")))?,
        });
        let routes = Router::new()
            .route("/auth", get(auth::auth))
            .route("/.well-known/jwks.json", get(auth::jwks))
            .with_state(tokens)
            .route("/", get(assets::index))
            .route("/demo/{file}", get(assets::demo_file));
        let server = Server::new(config)
            .map_err(|err| DevError::Config(err.to_string()))?
            .with_routes(routes);

        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| DevError::Bind {
                    addr: options.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| DevError::Bind {
            addr: options.listen,
            source,
        })?;
        Ok(DevServer {
            listener,
            local_addr,
            server,
            api_key,
            key_path: key.path,
            key_created: key.created,
            turn_urls: options.turn.map(|t| t.urls).unwrap_or_default(),
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL, e.g. `http://127.0.0.1:3000`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The dev project's API key (the tokens' `kid`).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The key file.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// Whether this run created the key (first run) rather than reusing it.
    pub fn key_created(&self) -> bool {
        self.key_created
    }

    /// What to tell the developer: the URLs, the key, and the development-only warning.
    /// The first line is `PulseBeam dev server listening on <url>/`.
    pub fn banner(&self) -> String {
        let url = self.url();
        let key_state = if self.key_created {
            "created now"
        } else {
            "reused"
        };
        let turn = if self.turn_urls.is_empty() {
            "none (pass --turn-url and --turn-secret to relay through coturn)".to_owned()
        } else {
            self.turn_urls.join(", ")
        };
        format!(
            "PulseBeam dev server listening on {url}/\n\
             \x20 demo page   {url}/  (open it in two tabs, or {url}/?split=1)\n\
             \x20 tokens      {url}/auth?groupId=default&peerId=alice\n\
             \x20 public keys {url}/.well-known/jwks.json\n\
             \x20 signaling   {url}/grpc   (baseUrl for @pulsebeam/peer 0.0.18 to 0.1.0-rc.2: gRPC-web)\n\
             \x20             {url}/twirp  (baseUrl for @pulsebeam/peer 0.0.17: Twirp)\n\
             \x20 TURN        {turn}\n\
             \x20 API key     {api_key} ({key_state}; secret in {path})\n\
             WARNING: for development only. /auth gives a token to anyone who can reach this port,\n\
             and the key in {path} must never be used in production.\n",
            api_key = self.api_key,
            path = self.key_path.display(),
        )
    }

    /// Serves until `shutdown` resolves, then lets in-flight calls finish.
    ///
    /// # Errors
    ///
    /// [`DevError::Serve`] when the listener fails.
    pub async fn serve<F>(self, shutdown: F) -> Result<(), DevError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        pulsebeam_server::serve(self.listener, self.server, shutdown)
            .await
            .map_err(DevError::Serve)
    }
}

/// Binds, prints the banner to stdout, and serves until `shutdown` resolves.
///
/// # Errors
///
/// See [`DevServer::bind`] and [`DevServer::serve`].
pub async fn run<F>(options: DevOptions, shutdown: F) -> Result<(), DevError>
where
    F: Future<Output = ()> + Send + 'static,
{
    use tokio::io::AsyncWriteExt;

    let server = DevServer::bind(options).await?;
    let mut stdout = tokio::io::stdout();
    // A closed stdout must not stop the server: the banner is informational.
    let _ = stdout.write_all(server.banner().as_bytes()).await;
    let _ = stdout.flush().await;
    server.serve(shutdown).await
}
