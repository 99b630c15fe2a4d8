//! Verifies tokens with the Rust crate directly (natively, not through wasm), so the JS tests
//! can check that what the package mints is what the Rust SDK accepts.
//!
//! Usage: `verify_token JWKS_FILE NOW_UNIX < tokens` (one token per line). Prints one JSON
//! line per token: `{"ok":true,"kid":…,"gid":…,"pid":…,"ap":"GROUP:PEER"|null,"exp":…}` or
//! `{"ok":false,"code":…,"message":…}`. Exits 2 on a usage error.

use std::io::BufRead as _;
use std::process::ExitCode;

use pulsebeam_token::{KeySet, Verifier};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(jwks_path), Some(now)) = (args.first(), args.get(1)) else {
        eprintln!("usage: verify_token JWKS_FILE NOW_UNIX < tokens");
        return ExitCode::from(2);
    };
    let Ok(now) = now.parse::<u64>() else {
        eprintln!("NOW_UNIX must be a whole number of seconds");
        return ExitCode::from(2);
    };
    let keys = match std::fs::read_to_string(jwks_path)
        .map_err(|e| e.to_string())
        .and_then(|text| KeySet::from_jwks_json(&text).map_err(|e| e.to_string()))
    {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("cannot read {jwks_path}: {e}");
            return ExitCode::from(2);
        }
    };
    let verifier = Verifier::new(keys);
    for line in std::io::stdin().lock().lines() {
        let Ok(token) = line else { break };
        let out = match verifier.verify_at(token.trim(), now) {
            Ok(claims) => serde_json::json!({
                "ok": true,
                "kid": claims.key_id(),
                "gid": claims.group_id(),
                "pid": claims.peer_id(),
                "ap": claims.allow_policy().map(|p| p.to_string()),
                "exp": claims.expires_at(),
            }),
            Err(e) => {
                serde_json::json!({ "ok": false, "code": e.code(), "message": e.to_string() })
            }
        };
        println!("{out}");
    }
    ExitCode::SUCCESS
}
