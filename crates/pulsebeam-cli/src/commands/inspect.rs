//! `pulsebeam inspect`: decode a token without verifying it, and explain it in plain words.

use clap::Args;
use pulsebeam_token::dangerous::{self, UnverifiedToken};
use pulsebeam_token::{PeerPolicy, DEFAULT_LEEWAY_SECS};
use serde_json::{json, Map, Value};

use crate::commands::ClockArgs;
use crate::error::CliError;
use crate::input::token;
use crate::time::{relative, span, utc};
use crate::{explain, Session, Status};

const EXAMPLES: &str = "\
Examples:
  pulsebeam inspect \"$TOKEN\"
  pulsebeam inspect - < token.txt
  pulsebeam inspect --json \"$TOKEN\" | jq .notes

Nothing here is verified: anyone can write any claims. Use `pulsebeam verify` to trust a token.
Exit codes: 0 the token was decoded, 1 it cannot be decoded, 2 usage or I/O error.";

/// Claims a PulseBeam verifier reads; others are ignored.
const KNOWN_CLAIMS: [&str; 7] = ["exp", "gid", "pid", "ap", "iat", "nbf", "jti"];
/// Header members PulseBeam tokens carry.
const KNOWN_HEADER: [&str; 2] = ["alg", "kid"];
/// `exp` values above this (the year 5138) were almost surely written in milliseconds.
const MILLIS_THRESHOLD: u64 = 100_000_000_000;
const DAY_SECS: u64 = 24 * 60 * 60;

/// Arguments of `pulsebeam inspect`.
#[derive(Debug, Clone, Args)]
#[command(after_help = EXAMPLES)]
pub struct InspectArgs {
    /// The token, or `-` to read it from standard input.
    #[arg(value_name = "TOKEN|-")]
    pub token: String,

    /// Print JSON: header, claims, expiry and notes.
    #[arg(long)]
    pub json: bool,

    /// The clock.
    #[command(flatten)]
    pub clock: ClockArgs,
}

/// Runs `pulsebeam inspect`.
pub(crate) fn run(args: &InspectArgs, session: &mut Session<'_, '_>) -> Result<Status, CliError> {
    let token = token(&args.token, session.stdin())?;
    let now = session.now(args.clock.now);
    let decoded = match dangerous::decode_unverified(&token) {
        Ok(decoded) => decoded,
        Err(error) => {
            if args.json {
                let doc =
                    json!({"decoded": false, "code": error.code(), "reason": error.to_string()});
                session.out(&format!("{doc}\n"))?;
            } else {
                session.err_line(&format!("cannot decode the token: {error}"));
            }
            return Ok(Status::Refused);
        }
    };
    let report = Report::new(&decoded, now);
    let text = if args.json {
        format!("{}\n", report.json(&decoded, now))
    } else {
        report.text(now)
    };
    session.out(&text)?;
    Ok(Status::Success)
}

/// What a token says, read leniently so that odd tokens can still be explained.
struct Report {
    kid: Option<String>,
    alg: Option<String>,
    group: Option<String>,
    peer: Option<String>,
    policy: PolicyClaim,
    exp: Option<u64>,
    iat: Option<u64>,
    nbf: Option<u64>,
    jti: Option<String>,
    notes: Vec<String>,
}

enum PolicyClaim {
    Absent,
    Null,
    Valid(PeerPolicy),
    Invalid,
}

fn string(map: &Map<String, Value>, name: &str) -> Option<String> {
    map.get(name).and_then(Value::as_str).map(str::to_owned)
}

fn seconds(map: &Map<String, Value>, name: &str) -> Option<u64> {
    map.get(name).and_then(Value::as_u64)
}

impl Report {
    fn new(token: &UnverifiedToken, now: u64) -> Self {
        let claims = &token.payload;
        let policy = match claims.get("ap") {
            None => PolicyClaim::Absent,
            Some(Value::Null) => PolicyClaim::Null,
            Some(ap) => match (
                ap.get("group_id").and_then(Value::as_str),
                ap.get("peer_id").and_then(Value::as_str),
            ) {
                (Some(g), Some(p)) => {
                    PeerPolicy::new(g, p).map_or(PolicyClaim::Invalid, PolicyClaim::Valid)
                }
                _ => PolicyClaim::Invalid,
            },
        };
        let mut report = Report {
            kid: token.kid().map(str::to_owned),
            alg: token.alg().map(str::to_owned),
            group: string(claims, "gid"),
            peer: string(claims, "pid"),
            policy,
            exp: seconds(claims, "exp"),
            iat: seconds(claims, "iat"),
            nbf: seconds(claims, "nbf"),
            jti: string(claims, "jti"),
            notes: Vec::new(),
        };
        report.notes = report.odd_things(token, now);
        report
    }

    /// Everything a reader should notice, most serious first.
    fn odd_things(&self, token: &UnverifiedToken, now: u64) -> Vec<String> {
        let mut notes = Vec::new();
        match self.alg.as_deref() {
            Some("EdDSA") => {}
            Some(alg) => notes.push(format!(
                "the algorithm is {alg:?}, not \"EdDSA\": PulseBeam verifiers reject this token"
            )),
            None => notes.push(
                "the header names no algorithm: PulseBeam verifiers reject this token".to_owned(),
            ),
        }
        if self.kid.is_none() {
            notes.push(
                "the header has no kid: verifiers cannot tell which key signed the token"
                    .to_owned(),
            );
        }
        if token.signature_len != 64 {
            notes.push(format!(
                "the signature is {} bytes, not the 64 of Ed25519",
                token.signature_len
            ));
        }
        if let Err(error) = token.claims() {
            notes.push(format!("verifiers reject the claims: {error}"));
        }
        match &self.policy {
            PolicyClaim::Null => notes.push(
                "no allow policy (\"ap\": null): this peer can be reached but may reach no one"
                    .to_owned(),
            ),
            PolicyClaim::Valid(policy) if policy.is_allow_all() => notes
                .push("the policy `*:*` lets this peer reach every peer of the project".to_owned()),
            _ => {}
        }
        if let Some(exp) = self.exp {
            if exp > MILLIS_THRESHOLD {
                notes.push(format!(
                    "exp {exp} looks like milliseconds: as seconds it is the year {}",
                    utc(exp).split('-').next().unwrap_or_default()
                ));
            } else if let Some(iat) = self.iat.filter(|iat| exp.saturating_sub(*iat) > DAY_SECS) {
                notes.push(format!(
                    "the token was made to live {} (more than a day); it cannot be revoked before it expires",
                    span(exp - iat)
                ));
            } else if exp.saturating_sub(now) > DAY_SECS {
                notes.push(format!(
                    "the token stays valid for {} more (more than a day); it cannot be revoked before it expires",
                    span(exp - now)
                ));
            }
            if let Some(nbf) = self.nbf.filter(|nbf| *nbf >= exp) {
                notes.push(format!(
                    "nbf {nbf} is not before exp {exp}: the token is never valid"
                ));
            }
        }
        if let Some(nbf) = self
            .nbf
            .filter(|nbf| *nbf > now.saturating_add(DEFAULT_LEEWAY_SECS))
        {
            notes.push(format!(
                "not valid yet: nbf is {} ({})",
                relative(nbf, now),
                utc(nbf)
            ));
        }
        if let Some(iat) = self
            .iat
            .filter(|iat| *iat > now.saturating_add(DEFAULT_LEEWAY_SECS))
        {
            notes.push(format!(
                "issued in the future ({}): is the minting machine's clock right?",
                relative(iat, now)
            ));
        }
        let unknown = |map: &Map<String, Value>, known: &[&str]| {
            map.keys()
                .filter(|k| !known.contains(&k.as_str()))
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let extra_claims = unknown(&token.payload, &KNOWN_CLAIMS);
        if !extra_claims.is_empty() {
            notes.push(format!("claims PulseBeam ignores: {extra_claims}"));
        }
        let extra_header = unknown(&token.header, &KNOWN_HEADER);
        if !extra_header.is_empty() {
            notes.push(format!(
                "header members the original SDK never wrote: {extra_header}"
            ));
        }
        notes
    }

    fn text(&self, now: u64) -> String {
        let or_missing = |value: &Option<String>, claim: &str| match value {
            Some(v) => format!("{v:?}"),
            None => format!("(no valid {claim})"),
        };
        let mut text = String::from(
            "NOT VERIFIED: decoded without checking the signature; use `pulsebeam verify` before trusting it\n",
        );
        text.push_str(&format!(
            "peer:       {} in group {}\n",
            or_missing(&self.peer, "pid"),
            or_missing(&self.group, "gid")
        ));
        let reach = match &self.policy {
            PolicyClaim::Valid(policy) => format!("{} ({policy})", explain::policy(policy)),
            PolicyClaim::Null => "no one (\"ap\": null)".to_owned(),
            PolicyClaim::Absent => "no one (no \"ap\" claim)".to_owned(),
            PolicyClaim::Invalid => "unknown: the \"ap\" claim is malformed".to_owned(),
        };
        text.push_str(&format!("may reach:  {reach}\n"));
        let expiry = match self.exp {
            Some(exp) if exp > now => format!("{} (expires {})", utc(exp), relative(exp, now)),
            Some(exp) => format!("{} (expired {})", utc(exp), relative(exp, now)),
            None => "(no valid exp claim; verifiers reject the token)".to_owned(),
        };
        text.push_str(&format!("expires:    {expiry}\n"));
        if let Some(iat) = self.iat {
            text.push_str(&format!(
                "issued:     {} ({})\n",
                utc(iat),
                relative(iat, now)
            ));
        }
        if let Some(nbf) = self.nbf {
            text.push_str(&format!(
                "not before: {} ({})\n",
                utc(nbf),
                relative(nbf, now)
            ));
        }
        if let Some(jti) = &self.jti {
            text.push_str(&format!("token id:   {jti:?}\n"));
        }
        text.push_str(&format!("key id:     {}\n", or_missing(&self.kid, "kid")));
        text.push_str(&format!("algorithm:  {}\n", or_missing(&self.alg, "alg")));
        if !self.notes.is_empty() {
            text.push_str("notes:\n");
            for note in &self.notes {
                text.push_str(&format!("  - {note}\n"));
            }
        }
        text
    }

    fn json(&self, token: &UnverifiedToken, now: u64) -> Value {
        json!({
            "verified": false,
            "header": token.header,
            "claims": token.payload,
            "admits": match &self.policy {
                PolicyClaim::Valid(policy) => Some(explain::policy(policy)),
                _ => None,
            },
            "expired": self.exp.map(|exp| exp <= now),
            "expires_in_secs": self.exp.map(|exp| i128::from(exp) - i128::from(now)),
            "notes": self.notes,
        })
    }
}
