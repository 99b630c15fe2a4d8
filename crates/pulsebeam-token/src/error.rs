//! Errors, split by phase: credentials and keys ([`KeyError`]), input values ([`ValueError`]),
//! minting ([`CreateError`]) and verification ([`VerifyError`]). [`Error`] unites them for
//! callers that do not care about the phase. No message contains secret or token bytes.

use std::fmt;

/// Which input value a [`ValueError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The peer's group id (`gid`).
    GroupId,
    /// The peer's id (`pid`).
    PeerId,
    /// The group pattern of an allow policy (`ap.group_id`).
    GroupPattern,
    /// The peer pattern of an allow policy (`ap.peer_id`).
    PeerPattern,
    /// The API key, which becomes the token's `kid`.
    ApiKey,
    /// The token id (`jti`).
    TokenId,
}

impl Field {
    /// The name used in messages and in the stable error code.
    pub const fn name(self) -> &'static str {
        match self {
            Field::GroupId => "group id",
            Field::PeerId => "peer id",
            Field::GroupPattern => "group pattern",
            Field::PeerPattern => "peer pattern",
            Field::ApiKey => "api key",
            Field::TokenId => "token id (jti)",
        }
    }

    /// The stable error code for an invalid value of this field, e.g. `invalid_group_id`.
    pub const fn code(self) -> &'static str {
        match self {
            Field::GroupId => "invalid_group_id",
            Field::PeerId => "invalid_peer_id",
            Field::GroupPattern => "invalid_group_pattern",
            Field::PeerPattern => "invalid_peer_pattern",
            Field::ApiKey => "invalid_api_key",
            Field::TokenId => "invalid_token_id",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An id, pattern or key id that breaks the rules of `tokens.md` section 4.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The value is the empty string.
    #[error("{field} is empty; give 1 to {max} characters")]
    Empty {
        /// The field.
        field: Field,
        /// The largest allowed length in characters.
        max: usize,
    },
    /// The value has more characters (Unicode scalar values) than allowed.
    #[error("{field} is {len} characters long; shorten it to at most {max}")]
    TooLong {
        /// The field.
        field: Field,
        /// The length found, in characters.
        len: usize,
        /// The largest allowed length in characters.
        max: usize,
    },
    /// The value contains a control character (U+0000..U+001F, U+007F..U+009F).
    #[error("{field} contains a control character at position {position}; remove it")]
    ControlCharacter {
        /// The field.
        field: Field,
        /// The 0-based character position of the first control character.
        position: usize,
    },
    /// An id contains `*`, which only patterns may contain.
    #[error("{field} contains `*`; ids are literal, only policy patterns take a wildcard")]
    Wildcard {
        /// The field.
        field: Field,
    },
    /// A pattern contains more than one `*`.
    #[error("{field} has {count} `*` wildcards; a pattern takes at most one (e.g. `room-*`)")]
    TooManyWildcards {
        /// The field.
        field: Field,
        /// How many `*` were found.
        count: usize,
    },
}

impl ValueError {
    /// The field the error is about.
    pub fn field(&self) -> Field {
        match self {
            ValueError::Empty { field, .. }
            | ValueError::TooLong { field, .. }
            | ValueError::ControlCharacter { field, .. }
            | ValueError::Wildcard { field }
            | ValueError::TooManyWildcards { field, .. } => *field,
        }
    }
}

/// A problem with credentials or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The API secret has no `_` separating the prefix from the hex seed.
    #[error("invalid api_secret: no `_` found; expected `sk_` followed by 64 hex digits")]
    MissingSeparator,
    /// The part after the first `_` is not an even number of hex digits.
    #[error("invalid secret format, expecting hex: the part after `sk_` must be 64 hex digits (0-9, a-f)")]
    NotHex,
    /// The hex seed does not decode to exactly 32 bytes.
    #[error("invalid secret length: {len} bytes, expected 32 (64 hex digits after `sk_`)")]
    WrongSecretLength {
        /// The decoded length in bytes.
        len: usize,
    },
    /// The API key breaks the key id rules.
    #[error(transparent)]
    InvalidApiKey(ValueError),
    /// An environment variable needed for credentials is not set or not UTF-8.
    #[error("{name} is not set; export it or pass the value explicitly")]
    MissingEnv {
        /// The variable's name.
        name: &'static str,
    },
    /// A public key is not 32 bytes of a valid Ed25519 point.
    #[error("invalid public key: {reason}")]
    InvalidPublicKey {
        /// What is wrong.
        reason: &'static str,
    },
    /// A JWK or JWKS document could not be used.
    #[error("invalid jwk: {reason}")]
    InvalidJwk {
        /// What is wrong.
        reason: &'static str,
    },
    /// Two keys in one key set share a key id.
    #[error("duplicate key id in key set; every key needs its own kid")]
    DuplicateKeyId,
    /// The operating system's random source failed.
    #[error("the operating system's random number source failed")]
    Random,
}

impl KeyError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::MissingSeparator | KeyError::NotHex | KeyError::WrongSecretLength { .. } => {
                "invalid_api_secret"
            }
            KeyError::InvalidApiKey(_) => "invalid_api_key",
            KeyError::MissingEnv { .. } => "missing_credentials",
            KeyError::InvalidPublicKey { .. } => "invalid_public_key",
            KeyError::InvalidJwk { .. } => "invalid_jwk",
            KeyError::DuplicateKeyId => "duplicate_key_id",
            KeyError::Random => "random_source_failed",
        }
    }
}

/// Why a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// A ttl of zero makes a token that is expired when minted.
    #[error("ttl is 0 seconds; give the token a lifetime of at least 1 second (e.g. 3600)")]
    ZeroTtl,
    /// The ttl is longer than the largest the format supports.
    #[error("ttl of {ttl} seconds is too long; the largest is {max}")]
    TtlTooLong {
        /// The ttl asked for.
        ttl: u64,
        /// The largest ttl accepted.
        max: u64,
    },
    /// The claims carry no allow policy, so the token could reach no one.
    #[error("no allow policy set, so the token could reach no peer; set one, e.g. group pattern `*` and peer pattern `*` (`*:*`) to allow everyone")]
    MissingPolicy,
    /// An extra claim (such as `jti`) is invalid.
    #[error(transparent)]
    InvalidValue(#[from] ValueError),
}

impl CreateError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            CreateError::ZeroTtl => "zero_ttl",
            CreateError::TtlTooLong { .. } => "ttl_too_long",
            CreateError::MissingPolicy => "missing_policy",
            CreateError::InvalidValue(e) => e.field().code(),
        }
    }
}

/// The part of a compact token a [`VerifyError::Malformed`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenPart {
    /// The whole token (e.g. the wrong number of `.` separators).
    Token,
    /// The JOSE header.
    Header,
    /// The claims.
    Payload,
    /// The signature.
    Signature,
}

impl fmt::Display for TokenPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenPart::Token => "token",
            TokenPart::Header => "header",
            TokenPart::Payload => "payload",
            TokenPart::Signature => "signature",
        })
    }
}

/// A claim of a token's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// `exp`, the expiry.
    Expiry,
    /// `nbf`, not before.
    NotBefore,
    /// `iat`, issued at.
    IssuedAt,
    /// `gid`, the group id.
    GroupId,
    /// `pid`, the peer id.
    PeerId,
    /// `ap`, the allow policy.
    AllowPolicy,
    /// `jti`, the token id.
    TokenId,
}

impl Claim {
    /// The claim's JSON name.
    pub const fn json_name(self) -> &'static str {
        match self {
            Claim::Expiry => "exp",
            Claim::NotBefore => "nbf",
            Claim::IssuedAt => "iat",
            Claim::GroupId => "gid",
            Claim::PeerId => "pid",
            Claim::AllowPolicy => "ap",
            Claim::TokenId => "jti",
        }
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json_name())
    }
}

/// Why a token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token is longer than the verifier accepts; it was not decoded.
    #[error("token is {len} bytes, more than the {max} accepted")]
    TooLarge {
        /// The token's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not a well-formed compact JWS.
    #[error("malformed token: {part}: {detail}")]
    Malformed {
        /// Which part is broken.
        part: TokenPart,
        /// What is broken.
        detail: &'static str,
    },
    /// The header's `alg` is missing or not exactly `EdDSA`.
    #[error("unsupported algorithm: only `EdDSA` tokens are accepted")]
    UnsupportedAlgorithm,
    /// The header has no `kid`.
    #[error("token header has no `kid`; tokens must name their signing key")]
    MissingKeyId,
    /// No key with the token's `kid` is known.
    #[error("unknown key id: no key with this token's `kid` is configured")]
    UnknownKeyId,
    /// The signature does not verify.
    #[error("invalid signature")]
    InvalidSignature,
    /// The token has expired (beyond the leeway).
    #[error("token expired at {exp} (now {now}); mint a new one")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The verifier's current time.
        now: u64,
    },
    /// The token's `nbf` lies in the future (beyond the leeway).
    #[error("token not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The verifier's current time.
        now: u64,
    },
    /// The token's `exp` lies further ahead than the verifier's maximum lifetime allows (see
    /// [`Verifier::with_max_lifetime`](crate::Verifier::with_max_lifetime)).
    #[error(
        "token lifetime too long: it expires at {exp}, after the latest expiry accepted now \
         ({max_exp}); mint shorter-lived tokens"
    )]
    LifetimeTooLong {
        /// The token's `exp`.
        exp: u64,
        /// The latest `exp` accepted at the verifier's current time: now plus the maximum
        /// lifetime plus the leeway.
        max_exp: u64,
    },
    /// A required claim is absent.
    #[error("token has no `{claim}` claim")]
    MissingClaim {
        /// The claim.
        claim: Claim,
    },
    /// A claim has the wrong type or breaks the value rules.
    #[error("token claim `{claim}` is invalid: {detail}")]
    InvalidClaim {
        /// The claim.
        claim: Claim,
        /// What is wrong.
        detail: String,
    },
}

impl VerifyError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::TooLarge { .. } => "token_too_large",
            VerifyError::Malformed { .. } => "malformed_token",
            VerifyError::UnsupportedAlgorithm => "unsupported_algorithm",
            VerifyError::MissingKeyId => "missing_key_id",
            VerifyError::UnknownKeyId => "unknown_key_id",
            VerifyError::InvalidSignature => "invalid_signature",
            VerifyError::Expired { .. } => "token_expired",
            VerifyError::NotYetValid { .. } => "token_not_yet_valid",
            VerifyError::LifetimeTooLong { .. } => "token_lifetime_too_long",
            VerifyError::MissingClaim { .. } => "missing_claim",
            VerifyError::InvalidClaim { .. } => "invalid_claim",
        }
    }

    pub(crate) fn malformed(part: TokenPart, detail: &'static str) -> Self {
        VerifyError::Malformed { part, detail }
    }

    pub(crate) fn invalid(claim: Claim, detail: impl Into<String>) -> Self {
        VerifyError::InvalidClaim {
            claim,
            detail: detail.into(),
        }
    }
}

/// Any error of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Credentials or key material.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An id or pattern.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// Minting.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Verification.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

impl Error {
    /// A stable, machine-readable code, shared by the CLI's `--json` output, the JS package's
    /// `Error.code` and the server's logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Key(e) => e.code(),
            Error::Value(e) => e.field().code(),
            Error::Create(e) => e.code(),
            Error::Verify(e) => e.code(),
        }
    }
}
