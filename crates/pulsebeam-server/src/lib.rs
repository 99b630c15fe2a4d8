//! A self-hostable PulseBeam signaling server: the Twirp service `pulsebeam.v1.Tunnel` that
//! the browser SDK `@pulsebeam/peer` 0.0.17 talks to, with the token auth, policies, projects
//! and TURN credentials of the hosted service.
//!
//! # Security posture
//!
//! - **Every call is authenticated.** `Authorization: Bearer <token>` is verified against the
//!   configured project keys (the `kid` selects the project). Missing, malformed, badly signed,
//!   unknown-kid, expired or not-yet-valid tokens get `unauthenticated`. A verified token is
//!   cached until it expires, so a busy peer does not pay a signature check per call.
//! - **A token speaks only for itself.** `Recv.src` and `Send.msg.header.src` must carry the
//!   token's `gid`/`pid` (else `permission_denied`); conn ids 0..15 are refused as a source.
//! - **Policy on every Send.** The sender's allow policy must admit the destination; a token
//!   with `ap: null` may send to no one. With `mutual_policy` (the default) the receiver's own
//!   policy must also admit the sender, checked when the receiver collects its mail, since only
//!   then is its token known; refused messages are dropped and counted.
//! - **Projects are apart.** Mailboxes are keyed by project, so equal group and peer ids in two
//!   projects never meet.
//! - **Tokens never cross a network in clear text when `[tls]` is set.** The listener then
//!   speaks only HTTPS (TLS 1.3 and 1.2, rustls on aws-lc-rs); without it, put the server behind
//!   a proxy that terminates TLS. A bad certificate or key stops startup; a bad one on reload
//!   leaves the certificate in use untouched.
//! - **Everything is bounded.** Body and payload size, mailbox depth, message age, connections
//!   per peer and per project, calls per peer, long-poll wait, token cache: each configurable,
//!   each overflow answered with `resource_exhausted` (transient, retried by the client) or
//!   `invalid_argument` (a request that can never succeed).
//!
//! # Use
//!
//! ```no_run
//! use pulsebeam_server::{serve, shutdown_signal, Config, Server};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_file("pulsebeam.toml")?;
//! let server = Server::new(config)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! serve(listener, server, shutdown_signal()).await?;
//! # Ok(()) }
//! ```
//!
//! Or, binding `listen` from the config: `pulsebeam_server::run(config, shutdown_signal())`.
//!
//! The crate README documents every configuration key, route, error code and metric.

mod admin;
pub mod admin_api;
mod admin_page;
mod audit;
mod auth;
mod binding;
mod body;
mod call;
mod code;
mod config;
mod grpcweb;
mod limiter;
mod live;
mod metrics;
pub mod proto;
mod random_id;
mod reload;
mod revoke;
mod routes;
mod run;
mod serve;
mod server;
mod state;
pub mod store;
mod sync;
mod tasks;
mod tls;
mod turn;
mod turnstats;
mod twirp;
mod usage;

pub use admin::serve_admin;
pub use code::{CallError, Code, TwirpError};
pub use config::{
    AdminConfig, AuditConfig, Config, ConfigError, CorsConfig, GrpcWebConfig, IceConfig, KeyConfig,
    Limits, ProjectConfig, SentinelConfig, StoreBackend, StoreConfig, StoreTls, TokenlessRecv,
    TurnConfig, UsageConfig, MAX_WORKERS,
};
pub use grpcweb::SIGNALING_SERVICE;
pub use reload::{ReloadError, ReloadOutcome};
pub use revoke::{Revocation, RevocationError, RevocationTarget};
pub use run::{run, run_file, run_server, shutdown_signal, RunError};
pub use server::{check, serve, BuildError, Server, ServerBuilder};
pub use store::{MailboxStore, MemoryStore, OnlineConnection, RedisStore};
pub use turn::{turn_credential, TurnCredential};
pub use twirp::TWIRP_PREFIX;
pub use usage::UsageTotals;

pub use config::TlsConfig;
pub use tls::TlsError;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
