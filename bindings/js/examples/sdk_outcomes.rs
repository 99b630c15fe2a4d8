//! Runs operations of the Rust crate directly (natively, not through wasm) and prints their
//! outcome, so the JS tests can check that the package fails with the same code and message as
//! the crate for the same input.
//!
//! Reads one JSON case per line on stdin, `{"op": NAME, "args": [...]}`, and prints one line per
//! case: `{"ok": true, "value": …}` or `{"ok": false, "code": …, "message": …}`. Operations:
//! `peer_claims [gid, pid]`, `peer_policy [group, peer]`, `parse_policy [text]`,
//! `access_token [key, secret]`, `mint [key, secret, gid, pid, group|null, peer|null, ttl, now,
//! jti|null]`, `public_key_hex [hex]`, `public_key_jwk [json]`, `key_set [json]`,
//! `verify [jwks, token, now]`.

use std::io::BufRead as _;

use pulsebeam_token::{
    AccessToken, Jwk, KeySet, PeerClaims, PeerPolicy, PublicKey, TokenOptions, Verifier,
};
use serde_json::{json, Value};

/// The stable code of each of the crate's error types.
trait Coded: std::fmt::Display {
    fn code(&self) -> &'static str;
}

impl Coded for pulsebeam_token::ValueError {
    fn code(&self) -> &'static str {
        self.field().code()
    }
}

macro_rules! coded {
    ($($ty:ty),*) => {
        $(impl Coded for $ty {
            fn code(&self) -> &'static str {
                <$ty>::code(self)
            }
        })*
    };
}

coded!(
    pulsebeam_token::KeyError,
    pulsebeam_token::CreateError,
    pulsebeam_token::VerifyError,
    pulsebeam_token::ParsePolicyError
);

fn failure(code: &str, message: String) -> Value {
    json!({ "ok": false, "code": code, "message": message })
}

macro_rules! outcome {
    ($result:expr, |$v:ident| $value:expr) => {
        match $result {
            Ok($v) => json!({ "ok": true, "value": $value }),
            Err(e) => failure(Coded::code(&e), e.to_string()),
        }
    };
}

fn text(args: &[Value], i: usize) -> &str {
    args.get(i).and_then(Value::as_str).unwrap_or_default()
}

fn number(args: &[Value], i: usize) -> u64 {
    args.get(i).and_then(Value::as_u64).unwrap_or_default()
}

fn run(op: &str, args: &[Value]) -> Value {
    match op {
        "peer_claims" => outcome!(PeerClaims::new(text(args, 0), text(args, 1)), |c| c
            .peer_id()),
        "peer_policy" => outcome!(PeerPolicy::new(text(args, 0), text(args, 1)), |p| p
            .to_string()),
        "parse_policy" => outcome!(text(args, 0).parse::<PeerPolicy>(), |p| p.to_string()),
        "access_token" => outcome!(AccessToken::new(text(args, 0), text(args, 1)), |a| a
            .api_key()),
        "mint" => {
            let app = match AccessToken::new(text(args, 0), text(args, 1)) {
                Ok(app) => app,
                Err(e) => return failure(e.code(), e.to_string()),
            };
            let mut claims = match PeerClaims::new(text(args, 2), text(args, 3)) {
                Ok(claims) => claims,
                Err(e) => return failure(e.field().code(), e.to_string()),
            };
            if let (Some(group), Some(peer)) = (
                args.get(4).and_then(Value::as_str),
                args.get(5).and_then(Value::as_str),
            ) {
                match PeerPolicy::new(group, peer) {
                    Ok(policy) => claims.set_allow_policy(policy),
                    Err(e) => return failure(e.field().code(), e.to_string()),
                }
            }
            let mut options = TokenOptions::new(number(args, 6));
            if let Some(jti) = args.get(8).and_then(Value::as_str) {
                options = options.with_token_id(jti);
            }
            outcome!(app.mint_at(&claims, &options, number(args, 7)), |m| m.token)
        }
        "public_key_hex" => outcome!(PublicKey::from_hex(text(args, 0)), |k| k.to_hex()),
        "public_key_jwk" => {
            outcome!(
                Jwk::from_json(text(args, 0)).and_then(|j| j.public_key()),
                |k| k.to_hex()
            )
        }
        "key_set" => outcome!(KeySet::from_jwks_json(text(args, 0)), |s| s.len()),
        "verify" => match KeySet::from_jwks_json(text(args, 0)) {
            Ok(keys) => outcome!(
                Verifier::new(keys).verify_at(text(args, 1), number(args, 2)),
                |c| c.peer_id()
            ),
            Err(e) => failure(e.code(), e.to_string()),
        },
        other => failure("unknown_op", format!("unknown op {other}")),
    }
}

fn main() {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let case: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let op = case.get("op").and_then(Value::as_str).unwrap_or_default();
        let args = case
            .get("args")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        println!("{}", run(op, &args));
    }
}
