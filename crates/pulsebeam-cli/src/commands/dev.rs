//! `pulsebeam dev`: the signaling server on loopback with a development key, a token endpoint
//! (`/auth`), the project's public keys and a demo page. See the `pulsebeam-dev` crate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Args;
use pulsebeam_dev::{DevOptions, DevServer};

use crate::error::CliError;
use crate::{Session, Status};

const EXAMPLES: &str = "\
Examples:
  pulsebeam dev                                  # http://127.0.0.1:3000/, key in .pulsebeam/
  pulsebeam dev --port 0                         # a free port; the first line prints the URL
  PULSEBEAM_TURN_SECRET=… pulsebeam dev --turn-url 'turn:127.0.0.1:3478?transport=udp'

Development only: /auth gives a token to anyone who can reach the port, so only loopback
addresses are accepted. Stop with Ctrl-C.";

/// Arguments of `pulsebeam dev`.
#[derive(Debug, Clone, Args)]
#[command(after_help = EXAMPLES)]
pub struct DevArgs {
    /// The port to listen on; 0 picks a free one (the first line of output names it).
    #[arg(short, long, default_value_t = pulsebeam_dev::DEFAULT_PORT)]
    pub port: u16,

    /// The loopback address to listen on (127.0.0.1 or ::1).
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,

    /// Where the development key is created on first run and reused after.
    #[arg(long, value_name = "DIR", default_value = pulsebeam_dev::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// A STUN URL handed to browsers (repeatable), e.g. stun:127.0.0.1:3478.
    #[arg(long = "stun-url", value_name = "URL")]
    pub stun_urls: Vec<String>,

    /// A TURN URL handed to browsers with time-limited credentials (repeatable), e.g.
    /// 'turn:127.0.0.1:3478?transport=udp'. Needs --turn-secret.
    #[arg(long = "turn-url", value_name = "URL", requires = "turn_secret")]
    pub turn_urls: Vec<String>,

    /// The TURN server's shared secret (coturn's static-auth-secret). Needs --turn-url. Prefer
    /// the environment variable, which other users cannot see in the process list.
    #[arg(
        long,
        value_name = "SECRET",
        requires = "turn_urls",
        env = "PULSEBEAM_TURN_SECRET",
        hide_env_values = true
    )]
    pub turn_secret: Option<String>,

    /// The Redis that coturn publishes its statistics to (its redis-statsdb), e.g.
    /// redis://127.0.0.1:6379: TURN relay bytes are counted for the dev project
    /// (pulsebeam_project_turn_relay_bytes_total on /metrics).
    #[arg(long = "turn-stats-redis", value_name = "URL")]
    pub turn_stats_redis: Option<String>,

    /// Keep mailboxes in this Redis, e.g. redis://127.0.0.1:6379: dev servers on other ports
    /// with the same Redis and --state-dir are nodes of one deployment.
    #[arg(long = "store-redis", value_name = "URL")]
    pub store_redis: Option<String>,
}

/// Runs `pulsebeam dev` until Ctrl-C or SIGTERM.
pub(crate) fn run(args: &DevArgs, session: &mut Session<'_, '_>) -> Result<Status, CliError> {
    let mut options = DevOptions::default()
        .with_listen(SocketAddr::new(args.host, args.port))
        .with_state_dir(&args.state_dir);
    for url in &args.stun_urls {
        options = options.with_stun_url(url);
    }
    if let Some(secret) = &args.turn_secret {
        options = options.with_turn(args.turn_urls.clone(), secret);
    }
    if let Some(url) = &args.turn_stats_redis {
        options = options.with_turn_stats_url(url);
    }
    if let Some(url) = &args.store_redis {
        options = options.with_store_redis_url(url);
    }
    let failed = |context: &str| {
        let context = context.to_owned();
        move |source: pulsebeam_dev::DevError| CliError::Server {
            context,
            source: Box::new(source),
        }
    };
    // Warnings and errors only (RUST_LOG=info shows every call): the banner says the rest.
    super::init_logging(super::serve::LogFormat::Text, "warn", session);
    let runtime = super::server_runtime(None)?;
    runtime.block_on(async {
        let server = DevServer::bind(options)
            .await
            .map_err(failed("cannot start pulsebeam dev"))?;
        // The banner is informational: a closed stdout must not stop the server.
        let _ = session.out(&server.banner());
        let _ = session.ctx.stdout.flush();
        server
            .serve(pulsebeam_server::shutdown_signal())
            .await
            .map_err(failed("pulsebeam dev stopped with an error"))
    })?;
    Ok(Status::Success)
}
