//! `pulsebeam health`: asks a node's `/healthz` whether it serves, for container health checks
//! (the image has no shell or curl) and scripts.

use std::time::Duration;

use bytes::Bytes;
use clap::Args;

use crate::error::CliError;
use crate::{Session, Status};

/// `pulsebeam health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The node's signaling listener, plain HTTP (`listen` in its configuration).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Seconds to wait for the answer (1 to 60).
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub timeout: u64,
}

/// Runs `pulsebeam health`: exit 0 when `/healthz` answers 200, 1 when it answers anything
/// else (shutting down, the store unreachable: the reason is printed), 2 when there is no
/// answer.
pub(crate) fn run(args: &HealthArgs, session: &mut Session<'_, '_>) -> Result<Status, CliError> {
    let target = crate::http::target(&args.url).map_err(|why| {
        CliError::Usage(format!(
            "--url {why}; give the node's plain-HTTP listener, e.g. http://127.0.0.1:3000 (a node serving only HTTPS is checked by its proxy or orchestrator)"
        ))
    })?;
    let (status, body) = crate::http::call(
        &target,
        "GET",
        "/healthz",
        &[],
        Bytes::new(),
        Duration::from_secs(args.timeout),
    )
    .map_err(|why| CliError::Server {
        context: format!("cannot reach {}", args.url),
        source: Box::new(std::io::Error::other(format!(
            "{why}; is the server running and listening there?"
        ))),
    })?;
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if status == 200 {
        session.out(&format!("healthy: {text}\n"))?;
        return Ok(Status::Success);
    }
    session.err_line(&format!("unhealthy ({status}): {text}"));
    Ok(Status::Refused)
}
