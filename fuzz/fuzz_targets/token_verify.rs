//! Any text as a token: verifying never panics, and nothing verifies but a token the golden keys
//! really signed. `decode_unverified` and its typed claims never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulsebeam_token::dangerous;

mod common;

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let golden = &*common::GOLDEN;
    match golden.verifier.verify(&token) {
        Ok(claims) => {
            // Canonical base64url and strict Ed25519 leave no room for a second spelling.
            assert!(
                golden.signed.contains(token.trim()),
                "a token the golden keys never signed verified: {token:?}"
            );
            let unverified =
                dangerous::decode_unverified(&token).expect("a verified token decodes");
            assert_eq!(unverified.kid(), Some(claims.key_id()));
            assert_eq!(unverified.alg(), Some("EdDSA"));
            let typed = unverified
                .claims()
                .expect("a verified token's claims parse");
            assert_eq!(typed.peer(), claims.peer());
            assert_eq!(typed.expires_at(), claims.expires_at());
        }
        Err(err) => common::check_error(&err, &token),
    }
    match dangerous::decode_unverified(&token) {
        Ok(unverified) => {
            let _ = (unverified.alg(), unverified.kid());
            if let Err(err) = unverified.claims() {
                common::check_error(&err, &token);
            }
        }
        Err(err) => common::check_error(&err, &token),
    }
});
