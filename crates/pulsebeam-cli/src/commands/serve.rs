//! `pulsebeam serve`: run the signaling server from a TOML configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use pulsebeam_server::{Config, Server};

use crate::error::CliError;
use crate::{Session, Status};

/// Arguments of `pulsebeam serve`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  pulsebeam serve --config pulsebeam.toml
  pulsebeam serve --config pulsebeam.toml --listen 0.0.0.0:8080 --log-format json
  pulsebeam serve --config pulsebeam.toml --check      # validate the file and exit

The configuration keys are documented in the pulsebeam-server README and in
crates/pulsebeam-server/pulsebeam.example.toml. Logs go to standard error; set
RUST_LOG (e.g. RUST_LOG=pulsebeam_server=debug) for more or less detail. They are
coloured only when standard error is a terminal and NO_COLOR is unset or empty.
The server stops gracefully on SIGTERM or Ctrl-C: open long-polls are answered first.
SIGHUP reads the file again and applies projects, keys, limits, ICE and CORS without a
restart (a bad file keeps the running configuration and logs why); `--listen` stays.")]
pub struct ServeArgs {
    /// The server's TOML configuration file.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,

    /// Listen on this address instead of the file's `listen`, e.g. 127.0.0.1:3000.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Only check the configuration: print a summary and exit.
    #[arg(long)]
    pub check: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Runs `pulsebeam serve`.
pub(crate) fn run(args: &ServeArgs, session: &mut Session<'_, '_>) -> Result<Status, CliError> {
    let mut config = Config::from_file(&args.config).map_err(|source| CliError::Server {
        context: format!("invalid configuration in `{}`", args.config.display()),
        source: Box::new(source),
    })?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.check {
        // Every check that building the server would run, without building it.
        pulsebeam_server::check(&config).map_err(|source| CliError::Server {
            context: format!("invalid configuration in `{}`", args.config.display()),
            source: Box::new(source),
        })?;
        let projects: Vec<&str> = config.projects.iter().map(|p| p.id.as_str()).collect();
        session.out(&format!(
            "configuration ok: listen {}, {} project(s): {}\n",
            config.listen,
            projects.len(),
            projects.join(", ")
        ))?;
        return Ok(Status::Success);
    }
    super::init_logging(args.log_format, "info,hyper=warn", session);
    let runtime = super::server_runtime(config.workers)?;
    // Built inside the runtime: the server's stores start their background tasks there.
    runtime
        .block_on(async {
            let server = Server::builder(config)
                .config_file(&args.config)
                .build()
                .map_err(pulsebeam_server::RunError::from)?;
            pulsebeam_server::run_server(server, pulsebeam_server::shutdown_signal()).await
        })
        .map_err(|source| CliError::Server {
            context: "the server stopped with an error".to_owned(),
            source: Box::new(source),
        })?;
    Ok(Status::Success)
}
