//! `pulsebeam policy …`: allow policies (GROUP:PEER patterns).

use clap::{Args, Subcommand};
use pulsebeam_token::{Pattern, PeerPolicy};
use serde_json::json;

use crate::commands::{group_id, peer_id};
use crate::error::CliError;
use crate::{explain, Session, Status};

const CHECK_EXAMPLES: &str = "\
Examples:
  pulsebeam policy check --policy 'dev*:*' --group devs --peer alice     # allowed, exit 0
  pulsebeam policy check --policy 'room1:bob' --group room1 --peer eve   # denied, exit 1

A pattern is exact text, `*` (anything), `ab*` (prefix), `*ab` (suffix) or `a*b`.
Exit codes: 0 allowed, 1 denied, 2 usage error.";

/// The `policy` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum PolicyCommand {
    /// Say whether a policy lets a token's holder reach a given peer, and why.
    Check(CheckArgs),
}

/// Arguments of `pulsebeam policy check`.
#[derive(Debug, Clone, Args)]
#[command(after_help = CHECK_EXAMPLES)]
pub struct CheckArgs {
    /// The allow policy, as in a token: GROUP:PEER patterns (e.g. `dev*:*`).
    #[arg(long, value_name = "GROUP:PEER")]
    pub policy: PeerPolicy,

    /// The group id of the peer to reach.
    #[arg(long, value_name = "ID", value_parser = group_id)]
    pub group: String,

    /// The id of the peer to reach.
    #[arg(long, value_name = "ID", value_parser = peer_id)]
    pub peer: String,

    /// Print JSON: allowed, and each side's match.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `policy` subcommand.
pub(crate) fn run(
    command: &PolicyCommand,
    session: &mut Session<'_, '_>,
) -> Result<Status, CliError> {
    match command {
        PolicyCommand::Check(args) => check(args, session),
    }
}

fn side(pattern: &Pattern, value: &str, noun: &str) -> (bool, String) {
    let matches = pattern.matches(value);
    let verb = if matches { "matches" } else { "does not match" };
    let reason = format!(
        "{noun} {value:?} {verb} `{}` ({})",
        pattern.as_str(),
        explain::pattern(pattern, noun)
    );
    (matches, reason)
}

fn check(args: &CheckArgs, session: &mut Session<'_, '_>) -> Result<Status, CliError> {
    let policy = &args.policy;
    let (group_ok, group_reason) = side(policy.group_pattern(), &args.group, "group");
    let (peer_ok, peer_reason) = side(policy.peer_pattern(), &args.peer, "peer");
    let allowed = group_ok && peer_ok;
    let text = if args.json {
        let doc = json!({
            "allowed": allowed,
            "policy": policy.to_string(),
            "admits": explain::policy(policy),
            "group": {"id": args.group, "pattern": policy.group_pattern().as_str(), "matches": group_ok},
            "peer": {"id": args.peer, "pattern": policy.peer_pattern().as_str(), "matches": peer_ok},
        });
        format!("{doc}\n")
    } else if allowed {
        format!("allowed: {group_reason}, and {peer_reason}\n")
    } else {
        let reasons: Vec<&str> = [(group_ok, &group_reason), (peer_ok, &peer_reason)]
            .into_iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, reason)| reason.as_str())
            .collect();
        format!(
            "denied: {}\n  `{policy}` admits {}\n",
            reasons.join(", and "),
            explain::policy(policy)
        )
    };
    session.out(&text)?;
    Ok(if allowed {
        Status::Success
    } else {
        Status::Refused
    })
}
