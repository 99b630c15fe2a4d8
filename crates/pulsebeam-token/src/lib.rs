//! PulseBeam access tokens: mint them byte-for-byte as the original `@pulsebeam/server` did,
//! verify them strictly, manage the keys behind them, and evaluate the policies inside them.
//!
//! A PulseBeam token is a compact JWS signed with Ed25519 (`alg` `EdDSA`). Its header names the
//! signing key (`kid`, the API key); its claims name a peer (`gid`, `pid`), the peers it may reach
//! (`ap`, an allow policy) and when it expires (`exp`).
//!
//! # Security model
//!
//! - **Keys.** The API secret is an Ed25519 seed. It is parsed once into a [`SigningKey`] that
//!   never prints itself, compares in constant time and is zeroized on drop. Verifiers hold only
//!   [`PublicKey`]s, selected by `kid` from a [`KeySet`]; several keys per project allow rotation.
//! - **One algorithm.** Verification accepts `alg` exactly `EdDSA`, whatever else the header
//!   says, and verifies with strict Ed25519 (canonical encodings, no small-order keys), so
//!   algorithm confusion (`none`, HMAC with a public key) is impossible by construction.
//! - **Bounded, typed, total.** Input is bounded before it is decoded
//!   ([`DEFAULT_MAX_TOKEN_LEN`]), base64url must be canonical, a member name may appear only once
//!   (in the header, the claims and the allow policy alike, so no two readers can disagree on
//!   what a token says), and every failure is a typed [`VerifyError`]; no input panics. The signature is checked before the
//!   claims are parsed. Messages never contain secret or token bytes.
//! - **Time is injected.** Minting and verification read a [`Clock`]; `exp` is required, `nbf`
//!   honoured, both with a small leeway ([`DEFAULT_LEEWAY_SECS`]).
//! - **Lifetimes can be capped.** Tokens cannot be revoked, and the original SDK minted any
//!   `exp` (up to 2^64 - 1). [`Verifier::with_max_lifetime`] refuses a token whose `exp` lies
//!   further ahead than the cap (plus the leeway) with [`VerifyError::LifetimeTooLong`]
//!   (`token_lifetime_too_long`), whatever lifetime its minter chose. There is no cap by
//!   default.
//! - **Validation at the edge.** Ids and patterns follow the rules of the token spec (1 to 16
//!   characters, no control characters, no `*` in ids, at most one in patterns) when minting and
//!   when verifying, so a verified claim is always a well-formed one.
//! - **Inspection is separate.** [`dangerous::decode_unverified`] reads a token without checking
//!   it, for tools that show tokens to people; its name says what it is.
//! - **Other Ed25519 implementations go through a door.** A binding that signs and verifies with
//!   its platform's own Ed25519 mints the signing input with [`AccessToken::mint_unsigned_at`]
//!   and verifies through [`Verifier::dangerous`], which runs the crate's pipeline with the
//!   platform's check in the signature step. The crate refuses, before that check sees them, the
//!   signatures a plain Ed25519 verify may accept and `verify_strict` does not, so the verdicts
//!   stay the crate's.
//!
//! # Crypto backends
//!
//! Signatures are Ed25519 from ed25519-dalek everywhere (it builds for wasm). On native targets
//! the default `aws-lc` feature signs with AWS-LC instead, about twice as fast; signatures are
//! identical, since Ed25519 is deterministic. Verification always uses ed25519-dalek's
//! `verify_strict`. The same golden vectors and property tests run with and without the feature.
//!
//! # Compatibility with the original SDK
//!
//! [`AccessToken::create_token`] produces exactly the original's bytes for the same inputs and
//! second (header `{"alg":"EdDSA","kid":…}`, claims `{"exp","gid","pid","ap"}` in that order).
//! Deliberate differences: an API key must be 1 to 64 characters without control characters;
//! ids and patterns are validated; a ttl of 0 and a missing policy are errors (the latter can be
//! allowed with [`TokenOptions::allow_no_policy`]). Extra claims (`iat`, `nbf`, `jti`) are
//! added only on request, through [`TokenOptions`].
//!
//! # Lifecycle
//!
//! ```
//! use pulsebeam_token::{AccessToken, FixedClock, KeyPair, KeySet, PeerClaims, PeerPolicy, Verifier, VerifyError};
//!
//! // A fresh key pair: the application backend keeps the secret, the server gets the public key.
//! let pair = KeyPair::generate()?;
//! let keys = KeySet::new().with(pair.api_key(), pair.public_key())?;
//!
//! // The backend mints a token for alice, who may reach anyone in the group `room1`.
//! let app = AccessToken::new(pair.api_key(), &pair.api_secret())?.with_clock(FixedClock(1_000_000));
//! let claims = PeerClaims::new("room1", "alice")?.with_allow_policy(PeerPolicy::new("room1", "*")?);
//! let token = app.create_token(&claims, 3600)?;
//!
//! // The server verifies it and asks the policy.
//! let verifier = Verifier::new(keys).with_clock(FixedClock(1_000_100));
//! let verified = verifier.verify(&token)?;
//! assert_eq!((verified.group_id(), verified.peer_id()), ("room1", "alice"));
//! assert!(verified.peer().allows("room1", "bob"));
//! assert!(!verified.peer().allows("room2", "bob"));
//!
//! // An hour later the token is refused.
//! let later = verifier.clone().with_clock(FixedClock(1_000_000 + 3600 + 60));
//! assert!(matches!(later.verify(&token), Err(VerifyError::Expired { exp: 1_003_600, .. })));
//! # Ok::<(), pulsebeam_token::Error>(())
//! ```

mod claims;
mod clock;
mod error;
mod keys;
mod mint;
mod policy;
mod strict;
mod value;
mod verify;
mod wire;

pub use claims::PeerClaims;
pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{Claim, CreateError, Error, Field, KeyError, TokenPart, ValueError, VerifyError};
pub use keys::{Jwk, Jwks, KeyPair, KeySet, PublicKey, SigningKey};
pub use mint::{AccessToken, MintedToken, TokenOptions, UnsignedToken, MAX_TTL_SECS};
pub use policy::{ParsePolicyError, Pattern, PeerPolicy};
pub use value::{MAX_ID_CHARS, MAX_KEY_ID_CHARS};
pub use verify::{dangerous, VerifiedClaims, Verifier, DEFAULT_LEEWAY_SECS, DEFAULT_MAX_TOKEN_LEN};
