//! `pulsebeam verify`: check a token's signature, key and times.

use std::path::PathBuf;

use clap::Args;
use pulsebeam_token::{
    dangerous, KeySet, PublicKey, VerifiedClaims, Verifier, VerifyError, DEFAULT_LEEWAY_SECS,
};
use serde_json::{json, Value};

use crate::commands::ClockArgs;
use crate::error::CliError;
use crate::input::{read_file, token};
use crate::time::{parse_ttl, relative, utc, Ttl};
use crate::{explain, Session, Status};

const EXAMPLES: &str = "\
Examples:
  pulsebeam verify --jwks jwks.json \"$TOKEN\"
  pulsebeam verify --public-key 2794bcd1…fbc8 \"$TOKEN\"
  pulsebeam verify --jwks jwks.json --max-lifetime 1h \"$TOKEN\"   # refuse longer-lived tokens
  pulsebeam create-token --env-file .env --group-id g --peer-id p | pulsebeam verify --jwks jwks.json -

Exit codes: 0 the token is valid, 1 it is rejected (the reason is printed), 2 usage or I/O error.";

/// Arguments of `pulsebeam verify`.
#[derive(Debug, Clone, Args)]
#[command(after_help = EXAMPLES)]
pub struct VerifyArgs {
    /// The token, or `-` to read it from standard input.
    #[arg(value_name = "TOKEN|-")]
    pub token: String,

    /// The keys to verify against.
    #[command(flatten)]
    pub keys: KeyArgs,

    /// With --public-key: the key id (kid) it belongs to; tokens naming another kid are
    /// rejected. Without it, the key is tried for whatever kid the token names.
    #[arg(long, value_name = "KID", conflicts_with = "jwks")]
    pub kid: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_LEEWAY_SECS)]
    pub leeway: u64,

    /// Reject tokens that expire more than this far ahead (plus the leeway): seconds, or a
    /// number with s, m, h or d (e.g. 1h, 7d). No limit by default.
    #[arg(long, value_name = "TTL", value_parser = parse_ttl)]
    pub max_lifetime: Option<Ttl>,

    /// Print JSON on standard output, for valid and rejected tokens alike.
    #[arg(long)]
    pub json: bool,

    /// The clock.
    #[command(flatten)]
    pub clock: ClockArgs,
}

/// The verifying keys: exactly one source.
#[derive(Debug, Clone, Default, Args)]
#[group(required = true, multiple = false)]
pub struct KeyArgs {
    /// The Ed25519 public key as 64 hex digits (as `pulsebeam keygen` prints it).
    #[arg(long, value_name = "HEX")]
    pub public_key: Option<String>,

    /// A file holding a JWK Set (`{"keys":[…]}`) or a single JWK; every key needs a `kid`.
    #[arg(long, value_name = "PATH")]
    pub jwks: Option<PathBuf>,
}

/// Runs `pulsebeam verify`.
pub(crate) fn run(args: &VerifyArgs, session: &mut Session<'_, '_>) -> Result<Status, CliError> {
    let token = token(&args.token, session.stdin())?;
    let keys = key_set(args, &token)?;
    let now = session.now(args.clock.now);
    let known: Vec<String> = keys.iter().map(|(kid, _)| kid.to_owned()).collect();
    let mut verifier = Verifier::new(keys).with_leeway(args.leeway);
    if let Some(max) = args.max_lifetime {
        verifier = verifier.with_max_lifetime(max.secs);
    }
    match verifier.verify_at(&token, now) {
        Ok(claims) => {
            let text = if args.json {
                format!("{}\n", valid_json(&claims, now))
            } else {
                valid_text(&claims, now)
            };
            session.out(&text)?;
            Ok(Status::Success)
        }
        Err(error) => {
            if args.json {
                let doc = json!({
                    "valid": false,
                    "code": error.code(),
                    "reason": error.to_string(),
                });
                session.out(&format!("{doc}\n"))?;
            } else {
                let detail = rejection(&error, &token, &known, now);
                session.err_line(&format!("rejected: {detail}"));
            }
            Ok(Status::Refused)
        }
    }
}

fn key_set(args: &VerifyArgs, token: &str) -> Result<KeySet, CliError> {
    if let Some(path) = &args.keys.jwks {
        let text = read_file(path, "--jwks")?;
        let keys = KeySet::from_jwks_json(&text).map_err(|source| CliError::Key {
            context: format!("cannot use --jwks `{}`", path.display()),
            source,
        })?;
        if keys.is_empty() {
            return Err(CliError::Usage(format!(
                "--jwks `{}` holds no keys; add the JWK that `pulsebeam keygen --jwks-out` writes",
                path.display()
            )));
        }
        return Ok(keys);
    }
    let hex = args.keys.public_key.as_deref().unwrap_or_default().trim();
    if hex.starts_with("sk_") {
        return Err(CliError::Usage(
            "--public-key was given an API secret (sk_…); pass the public key instead: the hex line `pulsebeam keygen` prints. Keep the secret private".to_owned(),
        ));
    }
    let key = PublicKey::from_hex(hex).map_err(|source| CliError::Key {
        context: "cannot use --public-key".to_owned(),
        source,
    })?;
    // Without --kid the key is pinned, not the label: register it under the token's own kid,
    // read by the verifier's own header parse. A header it refuses, the verifier then refuses
    // for the same reason, so the verdict is the one `--kid <that kid>` gives.
    let kid = match &args.kid {
        Some(kid) => Some(kid.clone()),
        None => dangerous::header_key_id(token).ok().flatten(),
    };
    let mut keys = KeySet::new();
    if let Some(kid) = kid {
        match keys.insert(&kid, key) {
            Ok(()) => {}
            // A --kid the user typed must be valid; a token's odd kid just makes it unknown.
            Err(source) if args.kid.is_some() => {
                return Err(CliError::Key {
                    context: "cannot use --kid".to_owned(),
                    source,
                })
            }
            Err(_) => {}
        }
    }
    Ok(keys)
}

/// The rejection with what helps to act on it: when, or which keys.
fn rejection(error: &VerifyError, token: &str, known: &[String], now: u64) -> String {
    match error {
        VerifyError::UnknownKeyId => {
            let named = dangerous::header_key_id(token)
                .ok()
                .flatten()
                .map(|kid| format!("{kid:?}"))
                .unwrap_or_else(|| "an invalid kid".to_owned());
            let mut sorted = known.to_vec();
            sorted.sort();
            if sorted.is_empty() {
                return format!("{error}\n  the token names {named}, which no given key can have");
            }
            let given = sorted
                .iter()
                .map(|kid| format!("{kid:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{error}\n  the token names {named}; the keys given are {given}")
        }
        VerifyError::Expired { exp, .. } => {
            format!(
                "{error}\n  it expired {} ({})",
                relative(*exp, now),
                utc(*exp)
            )
        }
        VerifyError::LifetimeTooLong { exp, max_exp } => {
            format!(
                "{error}\n  it expires {} ({}); --max-lifetime accepts expiry up to {} ({})",
                relative(*exp, now),
                utc(*exp),
                relative(*max_exp, now),
                utc(*max_exp)
            )
        }
        VerifyError::NotYetValid { nbf, .. } => {
            format!(
                "{error}\n  it becomes valid {} ({})",
                relative(*nbf, now),
                utc(*nbf)
            )
        }
        _ => error.to_string(),
    }
}

fn valid_text(claims: &VerifiedClaims, now: u64) -> String {
    let mut text = format!(
        "valid: peer {:?} in group {:?}\n  key id:     {}\n",
        claims.peer_id(),
        claims.group_id(),
        claims.key_id()
    );
    match claims.allow_policy() {
        Some(policy) => text.push_str(&format!(
            "  may reach:  {} ({policy})\n",
            explain::policy(policy)
        )),
        None => text.push_str("  may reach:  no one (no allow policy)\n"),
    }
    text.push_str(&format!(
        "  expires:    {} ({})\n",
        utc(claims.expires_at()),
        relative(claims.expires_at(), now)
    ));
    if let Some(iat) = claims.issued_at() {
        text.push_str(&format!(
            "  issued:     {} ({})\n",
            utc(iat),
            relative(iat, now)
        ));
    }
    if let Some(nbf) = claims.not_before() {
        text.push_str(&format!(
            "  not before: {} ({})\n",
            utc(nbf),
            relative(nbf, now)
        ));
    }
    if let Some(jti) = claims.token_id() {
        text.push_str(&format!("  token id:   {jti}\n"));
    }
    text
}

fn valid_json(claims: &VerifiedClaims, now: u64) -> Value {
    json!({
        "valid": true,
        "kid": claims.key_id(),
        "claims": claims_json(claims),
        "expires_in_secs": claims.expires_at().saturating_sub(now),
    })
}

/// The typed claims as JSON, in the token's own member names.
pub(crate) fn claims_json(claims: &VerifiedClaims) -> Value {
    json!({
        "exp": claims.expires_at(),
        "gid": claims.group_id(),
        "pid": claims.peer_id(),
        "ap": claims.allow_policy().map(|p| json!({
            "group_id": p.group_pattern().as_str(),
            "peer_id": p.peer_pattern().as_str(),
        })),
        "iat": claims.issued_at(),
        "nbf": claims.not_before(),
        "jti": claims.token_id(),
    })
}
