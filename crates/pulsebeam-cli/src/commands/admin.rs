//! `pulsebeam admin`: call a running server's admin API (revoke, list revocations, reload, who
//! is online, usage), and make admin tokens.

use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use pulsebeam_server::admin_api::{
    ErrorAnswer, OnlineAnswer, ReloadAnswer, RevocationAnswer, RevocationsAnswer, RevokeRequest,
    UsageAnswer,
};
use pulsebeam_server::RevocationTarget;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::error::CliError;
use crate::time::{parse_ttl, Ttl};
use crate::{Session, Status};

/// How long one admin call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Arguments of `pulsebeam admin`.
#[derive(Debug, Args)]
#[command(after_help = "\
The admin API listens where the server's [admin] listen says (default http://127.0.0.1:3001).
The admin token comes from --token-file, else the environment variable PULSEBEAM_ADMIN_TOKEN;
the server's configuration holds only its SHA-256 (`pulsebeam admin gen-token` prints both).

Exit codes: 0 done; 1 the server refused (wrong token, unknown project, invalid request,
reload refused: the reason is printed); 2 the call could not be made (server unreachable,
bad command line).

Examples:
  pulsebeam admin gen-token
  export PULSEBEAM_ADMIN_TOKEN=pba_…
  pulsebeam admin revoke --project prod --jti 4f1c…              # one token, until its exp
  pulsebeam admin revoke --project prod --group room1 --peer mallory --for 1h
  pulsebeam admin revocations --json
  pulsebeam admin reload
  pulsebeam admin online --project prod
  pulsebeam admin usage --project prod --hours 24")]
pub struct AdminArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,

    /// The admin API's base URL (http only: keep it on loopback or a private network).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        default_value = "http://127.0.0.1:3001"
    )]
    pub url: String,

    /// A file holding the admin token (else PULSEBEAM_ADMIN_TOKEN).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// Print the server's JSON answer instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The admin subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make a new random admin token and print it with the `[admin]` line for the server.
    GenToken,
    /// Revoke one token (--jti) or every token of one peer (--group, --peer).
    Revoke(RevokeArgs),
    /// List the revocations in force.
    Revocations,
    /// Make the server read its configuration file again (as SIGHUP does).
    Reload,
    /// List the connections of a project that are online (a Recv in flight).
    Online(ProjectArgs),
    /// Show a project's hourly usage totals.
    Usage(UsageArgs),
}

/// `pulsebeam admin revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The project, as its `id` in the server's configuration.
    #[arg(long, value_name = "ID")]
    pub project: String,
    /// The token's `jti`.
    #[arg(long, value_name = "JTI", conflicts_with_all = ["group", "peer"], required_unless_present = "peer")]
    pub jti: Option<String>,
    /// The peer's group id (with --peer).
    #[arg(long, value_name = "ID", requires = "peer")]
    pub group: Option<String>,
    /// The peer id (with --group).
    #[arg(long, value_name = "ID", requires = "group")]
    pub peer: Option<String>,
    /// Until this Unix time (for a token: its `exp`, which `pulsebeam inspect` shows).
    #[arg(long, value_name = "UNIX", conflicts_with = "for_")]
    pub until: Option<u64>,
    /// For this long from now, e.g. 1h, 30m, 86400 (default: the server's
    /// limits.max_token_lifetime_secs).
    #[arg(long = "for", value_name = "TTL", value_parser = parse_ttl)]
    pub for_: Option<Ttl>,
}

/// A project.
#[derive(Debug, Args)]
pub struct ProjectArgs {
    /// The project, as its `id` in the server's configuration.
    #[arg(long, value_name = "ID")]
    pub project: String,
}

/// `pulsebeam admin usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The project, as its `id` in the server's configuration.
    #[arg(long, value_name = "ID")]
    pub project: String,
    /// How many hours back, 1 to 168.
    #[arg(long, value_name = "N", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=168))]
    pub hours: u64,
}

/// Runs `pulsebeam admin`.
pub(crate) fn run(args: &AdminArgs, session: &mut Session<'_, '_>) -> Result<Status, CliError> {
    let (method, path, body) = match &args.command {
        AdminCommand::GenToken => return gen_token(args.json, session),
        AdminCommand::Revoke(r) => {
            let mut request = RevokeRequest {
                project: r.project.clone(),
                until: r.until,
                for_secs: r.for_.as_ref().map(|ttl| ttl.secs),
                ..RevokeRequest::default()
            };
            match (&r.jti, &r.group, &r.peer) {
                (Some(jti), _, _) => request.jti = Some(jti.clone()),
                (None, Some(group), Some(peer)) => {
                    request.group = Some(group.clone());
                    request.peer = Some(peer.clone());
                }
                _ => {
                    return Err(CliError::Usage(
                        "name a token with --jti, or a peer with --group and --peer".into(),
                    ))
                }
            }
            let body = serde_json::to_value(&request).map_err(|e| CliError::Server {
                context: "cannot write the revocation request".into(),
                source: Box::new(e),
            })?;
            ("POST", "/admin/v1/revocations".to_owned(), Some(body))
        }
        AdminCommand::Revocations => ("GET", "/admin/v1/revocations".to_owned(), None),
        AdminCommand::Reload => ("POST", "/admin/v1/reload".to_owned(), None),
        AdminCommand::Online(p) => (
            "GET",
            format!("/admin/v1/online?project={}", query_value(&p.project)),
            None,
        ),
        AdminCommand::Usage(u) => (
            "GET",
            format!(
                "/admin/v1/usage?project={}&hours={}",
                query_value(&u.project),
                u.hours
            ),
            None,
        ),
    };
    let token = admin_token(args, session)?;
    let (status, answer) = call(&args.url, method, &path, &token, body.as_ref())?;
    if !(200..300).contains(&status) {
        let reason = serde_json::from_value::<ErrorAnswer>(answer.clone())
            .map_or_else(|_| answer.to_string(), |e| e.error);
        if args.json {
            session.out(&format!("{answer:#}\n"))?;
        }
        session.err_line(&format!("refused ({status}): {reason}"));
        return Ok(if status >= 500 {
            Status::Failure
        } else {
            Status::Refused
        });
    }
    if args.json {
        session.out(&format!("{answer:#}\n"))?;
    } else {
        let text = describe(&args.command, answer).map_err(|e| CliError::Server {
            context: format!(
                "the server at {} answered in a form this CLI does not read (is it another version?)",
                args.url
            ),
            source: Box::new(e),
        })?;
        session.out(&text)?;
    }
    Ok(Status::Success)
}

fn gen_token(json_out: bool, session: &mut Session<'_, '_>) -> Result<Status, CliError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| CliError::Server {
        context: "cannot read the system random source".into(),
        source: Box::new(std::io::Error::other(e.to_string())),
    })?;
    let token = zeroize::Zeroizing::new(format!("pba_{}", hex::encode(bytes)));
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    if json_out {
        session.out(&format!(
            "{:#}\n",
            json!({ "token": token.as_str(), "token_sha256": hash })
        ))?;
    } else {
        session.out(&format!(
            "# The admin token: keep it secret, give it to `pulsebeam admin` as PULSEBEAM_ADMIN_TOKEN.\n{}\n\n# For the server's configuration (only the hash is stored there):\n[admin]\nlisten = \"127.0.0.1:3001\"\ntoken_sha256 = \"{hash}\"\n",
            token.as_str()
        ))?;
    }
    Ok(Status::Success)
}

fn admin_token(args: &AdminArgs, session: &Session<'_, '_>) -> Result<String, CliError> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| CliError::Read {
                what: format!("--token-file `{}`", path.display()),
                source,
            })?
            .trim()
            .to_owned(),
        None => session.env("PULSEBEAM_ADMIN_TOKEN")?.unwrap_or_default(),
    };
    if token.is_empty() {
        return Err(CliError::Usage(
            "no admin token: set PULSEBEAM_ADMIN_TOKEN or give --token-file (`pulsebeam admin gen-token` makes one)".into(),
        ));
    }
    Ok(token)
}

/// Percent-encodes a query value.
fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One call to the admin API; the status and the JSON answer.
fn call(
    url: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), CliError> {
    let target = crate::http::target(url).map_err(|why| {
        CliError::Usage(format!(
            "--url {why}; the admin API is plain HTTP on a private address, e.g. http://127.0.0.1:3001"
        ))
    })?;
    let headers = [
        ("authorization", format!("Bearer {token}")),
        ("content-type", "application/json".to_owned()),
    ];
    let body = Bytes::from(body.map(Value::to_string).unwrap_or_default());
    let (status, bytes) = crate::http::call(&target, method, path, &headers, body, CALL_TIMEOUT)
        .map_err(|why| CliError::Server {
            context: format!("cannot call the admin API at {url}"),
            source: Box::new(std::io::Error::other(format!(
                "{why}; is the server running with an [admin] section, and is --url its admin.listen?"
            ))),
        })?;
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        json!({ "error": String::from_utf8_lossy(&bytes).chars().take(500).collect::<String>() })
    });
    Ok((status, value))
}

/// The answer in words.
///
/// # Errors
///
/// When the answer is not the type the command's route answers with.
fn describe(command: &AdminCommand, answer: Value) -> Result<String, serde_json::Error> {
    Ok(match command {
        AdminCommand::Revoke(_) => {
            let RevocationAnswer { revocation } = serde_json::from_value(answer)?;
            format!(
                "revoked {} until {}\n",
                target(&revocation.target),
                revocation.until
            )
        }
        AdminCommand::Revocations => {
            let RevocationsAnswer { revocations } = serde_json::from_value(answer)?;
            if revocations.is_empty() {
                return Ok("no revocations in force\n".into());
            }
            revocations
                .iter()
                .map(|r| format!("{} until {}\n", target(&r.target), r.until))
                .collect()
        }
        AdminCommand::Reload => {
            let ReloadAnswer { reloaded } = serde_json::from_value(answer)?;
            let mut text = format!("reloaded: configuration {}", reloaded.generation);
            if !reloaded.restart_needed.is_empty() {
                text.push_str(&format!(
                    "; changed but kept until a restart: {}",
                    reloaded.restart_needed.join(", ")
                ));
            }
            text.push('\n');
            text
        }
        AdminCommand::Online(_) => {
            let OnlineAnswer { connections, .. } = serde_json::from_value(answer)?;
            let mut text = format!("{} connection(s) online\n", connections.len());
            for c in &connections {
                text.push_str(&format!("{}:{} conn {}\n", c.group, c.peer, c.conn_id));
            }
            text
        }
        AdminCommand::Usage(_) => {
            let UsageAnswer { hours, .. } = serde_json::from_value(answer)?;
            let mut text = String::from(
                "hour (UTC)         calls  messages  message_bytes  peer_seconds  turn_credentials  turn_relay_bytes  analytics_events\n",
            );
            for h in &hours {
                let t = &h.totals;
                text.push_str(&format!(
                    "{:<17}  {:>5}  {:>8}  {:>13}  {:>12}  {:>16}  {:>16}  {:>16}\n",
                    crate::time::utc(h.hour),
                    t.calls,
                    t.messages,
                    t.message_bytes,
                    t.peer_seconds,
                    t.turn_credentials,
                    t.turn_relay_bytes,
                    t.analytics_events
                ));
            }
            if hours.is_empty() {
                text.push_str("(no usage recorded in that time)\n");
            }
            text
        }
        AdminCommand::GenToken => String::new(),
    })
}

/// A revocation's target, briefly.
fn target(target: &RevocationTarget) -> String {
    match target {
        RevocationTarget::Token { project, jti } => {
            format!("token jti {jti} of project {project}")
        }
        RevocationTarget::Peer {
            project,
            group,
            peer,
        } => format!("every token of {group}:{peer} in project {project}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(query_value("a b/ü"), "a%20b%2F%C3%BC");
    }
}
