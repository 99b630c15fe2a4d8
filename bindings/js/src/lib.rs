//! The `@pulsebeam/server` JavaScript package: the `pulsebeam-token` SDK compiled to
//! WebAssembly with wasm-bindgen, so that JavaScript and Rust share one implementation.
//!
//! The original package's API is kept as it was (`new AccessToken(apiKey, apiSecret)`,
//! `new PeerClaims(groupId, peerId)`, `new PeerPolicy(groupPattern, peerPattern)`,
//! `claims.setAllowPolicy(policy)`, `app.createToken(claims, ttlSeconds)`), and verification,
//! key generation and key export are added.
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
mod keys;
mod mint;
mod verify;

pub use claims::{JsPeerClaims, JsPeerPolicy};
pub use keys::{JsKeyPair, JsKeySet, JsPublicKey};
pub use mint::JsAccessToken;
pub use verify::{JsVerifiedClaims, JsVerifier};
