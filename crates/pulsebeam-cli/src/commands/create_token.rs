//! `pulsebeam create-token`: mint a token for one peer.

use clap::Args;
use pulsebeam_token::{dangerous, PeerClaims, PeerPolicy, TokenOptions};
use serde_json::json;

use crate::commands::{group_id, peer_id, ClockArgs};
use crate::credentials::CredentialArgs;
use crate::error::CliError;
use crate::time::{parse_ttl, span, utc, Ttl};
use crate::{explain, Session, Status};

const EXAMPLES: &str = "\
Examples:
  pulsebeam create-token --env-file .env --group-id room1 --peer-id alice --allow-policy 'room1:*'
  PULSEBEAM_API_KEY=kid_… PULSEBEAM_API_SECRET=sk_… \\
    pulsebeam create-token --group-id room1 --peer-id bob --duration 15m --json
  pulsebeam create-token --env-file .env --group-id lobby --peer-id screen --no-policy

Credentials: --api-key/--api-secret, else --env-file, else $PULSEBEAM_API_KEY/$PULSEBEAM_API_SECRET.
The credential flags may also come before the subcommand, as in the original pulsebeam-cli:
  pulsebeam-cli --api-key kid_… --api-secret sk_… create-token --peer-id bob --group-id room1";

/// The number of seconds above which a lifetime deserves a warning.
const DAY_SECS: u64 = 24 * 60 * 60;

/// Arguments of `pulsebeam create-token`.
#[derive(Debug, Clone, Args)]
#[command(after_help = EXAMPLES)]
pub struct CreateTokenArgs {
    /// The peer's id (1 to 16 characters, no `*`).
    #[arg(long, value_name = "ID", value_parser = peer_id)]
    pub peer_id: String,

    /// The peer's group id (1 to 16 characters, no `*`).
    #[arg(long, value_name = "ID", value_parser = group_id)]
    pub group_id: String,

    /// The token's lifetime: seconds, or a number with s, m, h or d (e.g. 90m, 1h).
    #[arg(long, value_name = "TTL", default_value = "3600", value_parser = parse_ttl)]
    pub duration: Ttl,

    /// Whom the peer may reach, as GROUP:PEER patterns; each pattern is exact text or has one
    /// `*` (e.g. `room1:*`, `dev*:bob`). Write a literal `:` or `\` as `\:` or `\\`.
    /// [default: *:*, everyone, with a warning]
    #[arg(long, value_name = "GROUP:PEER")]
    pub allow_policy: Option<PeerPolicy>,

    /// Mint without an allow policy ("ap": null): other peers may reach this one, it may reach
    /// no one.
    #[arg(long, conflicts_with = "allow_policy")]
    pub no_policy: bool,

    /// Add an `iat` (issued at) claim.
    #[arg(long)]
    pub iat: bool,

    /// Add an `nbf` claim: the token is not valid before this Unix time.
    #[arg(long, value_name = "UNIX")]
    pub nbf: Option<u64>,

    /// Add a `jti` (token id) claim: 1 to 64 characters.
    #[arg(long, value_name = "ID", conflicts_with = "random_jti")]
    pub jti: Option<String>,

    /// Add a random `jti` (32 hex digits).
    #[arg(long)]
    pub random_jti: bool,

    /// Print JSON: token, kid, exp and the claims.
    #[arg(long)]
    pub json: bool,

    /// Where the API key and secret come from.
    #[command(flatten)]
    pub credentials: CredentialArgs,

    /// The clock.
    #[command(flatten)]
    pub clock: ClockArgs,
}

impl CreateTokenArgs {
    /// These arguments with the credential flags given before the subcommand
    /// (`pulsebeam --api-key K create-token …`, the original CLI's order) added.
    ///
    /// # Errors
    ///
    /// A usage error when a flag is given both before and after the subcommand.
    pub(crate) fn with_credentials_before(
        &self,
        before: &CredentialArgs,
    ) -> Result<CreateTokenArgs, CliError> {
        Ok(CreateTokenArgs {
            credentials: self.credentials.merged_with(before)?,
            ..self.clone()
        })
    }
}

/// Runs `pulsebeam create-token`.
pub(crate) fn run(
    args: &CreateTokenArgs,
    session: &mut Session<'_, '_>,
) -> Result<Status, CliError> {
    let app = args.credentials.access_token(session)?;
    let now = session.now(args.clock.now);

    // Warnings are printed only once a token has been minted; a refusal is reason enough.
    let mut warnings: Vec<String> = Vec::new();
    let ttl = args.duration.secs;
    if args.duration.bare && ttl > DAY_SECS && ttl % 1000 == 0 {
        warnings.push(format!(
            "--duration is in seconds: {ttl} seconds is {}; if you meant milliseconds, use --duration {}",
            span(ttl),
            ttl / 1000
        ));
    } else if ttl > DAY_SECS {
        warnings.push(format!(
            "the token lives {} (more than a day) and cannot be revoked before it expires; prefer short-lived tokens",
            span(ttl)
        ));
    }

    let mut claims =
        PeerClaims::new(&args.group_id, &args.peer_id).map_err(|source| CliError::Value {
            flag: "--group-id/--peer-id",
            source,
        })?;
    let mut options = TokenOptions::new(ttl);
    if args.no_policy {
        options = options.allow_no_policy();
    } else {
        let policy = match &args.allow_policy {
            Some(policy) => {
                if policy.is_allow_all() {
                    warnings.push(
                        "the allow policy `*:*` lets this peer reach every peer of the project; narrow it, e.g. --allow-policy 'room1:*'".to_owned(),
                    );
                }
                policy.clone()
            }
            None => {
                warnings.push(
                    "no --allow-policy given, so the token gets `*:*`: this peer may reach every peer of the project; narrow it, e.g. --allow-policy 'room1:*'".to_owned(),
                );
                PeerPolicy::allow_all()
            }
        };
        claims.set_allow_policy(policy);
    }
    if args.iat {
        options = options.with_issued_at();
    }
    if let Some(nbf) = args.nbf {
        if nbf >= now.saturating_add(ttl) {
            warnings.push(format!(
                "--nbf {nbf} is not before the expiry {}: the token will never be valid",
                now.saturating_add(ttl)
            ));
        }
        options = options.with_not_before(nbf);
    }
    if let Some(jti) = &args.jti {
        options = options.with_token_id(jti.clone());
    }
    if args.random_jti {
        options = options
            .with_random_token_id()
            .map_err(|source| CliError::Key {
                context: "cannot make a random jti".to_owned(),
                source,
            })?;
    }

    let minted = app
        .mint_at(&claims, &options, now)
        .map_err(CliError::Create)?;
    for warning in &warnings {
        session.warn(warning);
    }
    if !args.json {
        return session
            .out(&format!("{}\n", minted.token))
            .map(|()| Status::Success);
    }
    let payload = dangerous::decode_unverified(&minted.token)
        .map(|decoded| decoded.payload)
        .unwrap_or_default();
    let doc = json!({
        "token": minted.token,
        "kid": app.api_key(),
        "exp": minted.expires_at,
        "expires_at": utc(minted.expires_at),
        "claims": payload,
        "policy": claims.allow_policy().map(|p| json!({
            "text": p.to_string(),
            "admits": explain::policy(p),
        })),
    });
    session.out(&format!("{doc}\n")).map(|()| Status::Success)
}
