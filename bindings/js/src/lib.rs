//! The `@pulsebeam/server` JavaScript package: the `pulsebeam-token` SDK compiled to
//! WebAssembly with wasm-bindgen, so that JavaScript and Rust share one implementation.
//!
//! The original package's API is kept as it was (`new AccessToken(apiKey, apiSecret)`,
//! `new PeerClaims(groupId, peerId)`, `new PeerPolicy(groupPattern, peerPattern)`,
//! `claims.setAllowPolicy(policy)`, `app.createToken(claims, ttlSeconds)`), and verification,
//! key generation and key export are added.
//!
//! Short-lived values (`PeerClaims`, `PeerPolicy`, verified claims) are plain JavaScript objects
//! (entries/api.js) that cross into WebAssembly as plain strings and numbers, so that only
//! long-lived objects (`AccessToken`, `Verifier`, keys) hold WebAssembly memory. Where the runtime
//! has a synchronous Ed25519 (`node:crypto`), tokens are signed and signatures checked by it, and
//! everything else (claims, validation, policies, the exact bytes, errors) stays here.
//!
//! JavaScript has no static types at run time, so every argument is taken as a `JsValue` and
//! checked here: a wrong type is a `TypeError` naming the argument rather than a silent
//! coercion. Every error is thrown as an `Error` whose `code` is the SDK's stable code. Time
//! comes from `Date.now()` (the SDK's `SystemClock` needs `std::time`, which has no clock on
//! `wasm32-unknown-unknown`), or is pinned per call with `nowUnix`.

mod args;
mod claims;
mod clock;
mod error;
mod jws;
mod keys;
mod mint;
mod verify;

pub use claims::{
    check_peer_claims, check_peer_policy, parse_peer_policy, peer_policy_allows, peer_policy_text,
};
pub use keys::{JsKeyPair, JsKeySet, JsPublicKey};
pub use mint::JsAccessToken;
pub use verify::JsVerifier;
