//! Prints, as JSON, a fresh key's JWKS and a token minted with it, for independent JOSE
//! implementations to verify (see `tests/interop/`).
#![allow(missing_docs)]

use pulsebeam_token::{AccessToken, KeyPair, KeySet, PeerClaims, PeerPolicy, TokenOptions};

fn main() -> Result<(), pulsebeam_token::Error> {
    let pair = KeyPair::generate()?;
    let app = AccessToken::new(pair.api_key(), &pair.api_secret())?;
    let claims =
        PeerClaims::new("群组", "ピア🙂")?.with_allow_policy(PeerPolicy::new("room-*", "*")?);
    let plain = app.mint(&claims, &TokenOptions::new(600))?;
    let extra = app.mint(
        &claims,
        &TokenOptions::new(600)
            .with_issued_at()
            .with_not_before(plain.issued_at)
            .with_random_token_id()?,
    )?;
    let jwks = KeySet::new()
        .with(pair.api_key(), pair.public_key())?
        .to_jwks();
    let out = serde_json::json!({
        "kid": pair.api_key(),
        "jwks": jwks,
        "tokens": [plain.token, extra.token],
        "exp": plain.expires_at,
    });
    println!("{out}");
    Ok(())
}
