//! Minting: the byte-exact token of `tokens.md` section 2.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::claims::PeerClaims;
use crate::clock::{Clock, ClockDebug, DynClock, SystemClock};
use crate::error::{CreateError, Field, KeyError};
use crate::keys::{PublicKey, SigningKey};
use crate::value::check_key_id;
use crate::wire::{header_b64, write_json_str};

/// The longest ttl accepted: the original took it as a `u32` of seconds (about 136 years).
pub const MAX_TTL_SECS: u64 = u32::MAX as u64;

/// How a token is minted beyond its claims: lifetime and the optional extra claims.
///
/// The default output (only `ttl`) is byte-identical to the original SDK's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOptions {
    ttl_secs: u64,
    issued_at: bool,
    not_before: Option<u64>,
    token_id: Option<String>,
    allow_no_policy: bool,
}

impl TokenOptions {
    /// A token valid for `ttl_secs` seconds from now.
    pub fn new(ttl_secs: u64) -> Self {
        TokenOptions {
            ttl_secs,
            issued_at: false,
            not_before: None,
            token_id: None,
            allow_no_policy: false,
        }
    }

    /// Adds an `iat` claim with the minting time.
    #[must_use]
    pub fn with_issued_at(mut self) -> Self {
        self.issued_at = true;
        self
    }

    /// Adds an `nbf` claim: the token is not valid before `unix_secs`.
    #[must_use]
    pub fn with_not_before(mut self, unix_secs: u64) -> Self {
        self.not_before = Some(unix_secs);
        self
    }

    /// Adds a `jti` claim (1 to 64 characters, no control characters).
    #[must_use]
    pub fn with_token_id(mut self, jti: impl Into<String>) -> Self {
        self.token_id = Some(jti.into());
        self
    }

    /// Adds a random 128-bit `jti` (32 hex digits) from the OS random source.
    ///
    /// # Errors
    ///
    /// [`KeyError::Random`] if the random source fails.
    pub fn with_random_token_id(self) -> Result<Self, KeyError> {
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).map_err(|_| KeyError::Random)?;
        Ok(self.with_token_id(hex::encode(id)))
    }

    /// Mints claims without a policy as `"ap":null`, as the original did. Such a peer can
    /// receive, but may send to no one. Without this, a missing policy is an error.
    #[must_use]
    pub fn allow_no_policy(mut self) -> Self {
        self.allow_no_policy = true;
        self
    }

    /// The lifetime in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// Whether the token gets an `iat` claim ([`TokenOptions::with_issued_at`]).
    pub fn has_issued_at(&self) -> bool {
        self.issued_at
    }

    /// The `nbf` claim the token gets, if any ([`TokenOptions::with_not_before`]).
    pub fn not_before(&self) -> Option<u64> {
        self.not_before
    }

    /// The `jti` claim the token gets, if any ([`TokenOptions::with_token_id`]).
    pub fn token_id(&self) -> Option<&str> {
        self.token_id.as_deref()
    }

    /// Whether claims without a policy are minted ([`TokenOptions::allow_no_policy`]).
    pub fn allows_no_policy(&self) -> bool {
        self.allow_no_policy
    }
}

/// A token minted up to its signature, for an Ed25519 signature made elsewhere (a platform's own
/// crypto, a hardware module) with the key of the [`AccessToken`] that made it.
///
/// Ed25519 is deterministic, so that signature gives the same token, byte for byte, as
/// [`AccessToken::mint_at`] for the same inputs.
#[derive(Clone, PartialEq, Eq)]
pub struct UnsignedToken {
    signing_input: String,
    issued_at: u64,
    expires_at: u64,
}

impl UnsignedToken {
    /// The bytes to sign: `B64(header).B64(claims)`, ASCII.
    pub fn signing_input(&self) -> &str {
        &self.signing_input
    }

    /// The signing input, without copying it.
    pub fn into_signing_input(self) -> String {
        self.signing_input
    }

    /// The minting time, Unix seconds.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }

    /// The `exp` claim, Unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// The compact JWS with `signature` appended. It verifies only if `signature` is the
    /// Ed25519 signature of [`UnsignedToken::signing_input`] by the minting key.
    pub fn with_signature(self, signature: &[u8; 64]) -> MintedToken {
        let mut token = self.signing_input;
        token.reserve_exact(1 + SIGNATURE_B64_LEN);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        MintedToken {
            token,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
        }
    }
}

impl fmt::Debug for UnsignedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsignedToken")
            .field("signing_input", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Length of an Ed25519 signature in base64url without padding.
const SIGNATURE_B64_LEN: usize = 86;

/// A minted token with the instants it was made for.
#[derive(Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// The compact JWS.
    pub token: String,
    /// The minting time, Unix seconds.
    pub issued_at: u64,
    /// The `exp` claim, Unix seconds.
    pub expires_at: u64,
}

impl fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedToken")
            .field("token", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The minting side: an API key and its secret, parsed once.
///
/// ```
/// use pulsebeam_token::{AccessToken, PeerClaims, PeerPolicy};
///
/// let app = AccessToken::new(
///     "kid_73d8caa6c387d46c",
///     "sk_7edea599046490dfd271b863b03398d2b613812b1f23efd023ca3b08026d3e67",
/// )?;
/// let claims = PeerClaims::new("default", "alice")?.with_allow_policy(PeerPolicy::new("default", "*")?);
/// let token = app.create_token(&claims, 3600)?;
/// assert_eq!(token.split('.').count(), 3);
/// # Ok::<(), pulsebeam_token::Error>(())
/// ```
#[derive(Clone)]
pub struct AccessToken {
    api_key: Box<str>,
    /// `B64({"alg":"EdDSA","kid":…})`, the same for every token of this key.
    header_b64: Box<str>,
    signing_key: SigningKey,
    clock: DynClock,
}

impl AccessToken {
    /// Parses the credentials once.
    ///
    /// The secret follows the original's rules (prefix up to the first `_` ignored, 64 hex digits
    /// after it). Unlike the original, the API key must be 1 to 64 characters without control
    /// characters, since verifiers select the key by it.
    ///
    /// # Errors
    ///
    /// A [`KeyError`] that says what is wrong with the key or the secret.
    pub fn new(api_key: &str, api_secret: &str) -> Result<Self, KeyError> {
        let signing_key = SigningKey::from_api_secret(api_secret)?;
        Self::from_signing_key(api_key, signing_key)
    }

    /// Credentials from an API key and an already parsed signing key.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidApiKey`] for a bad API key.
    pub fn from_signing_key(api_key: &str, signing_key: SigningKey) -> Result<Self, KeyError> {
        check_key_id(api_key, Field::ApiKey).map_err(KeyError::InvalidApiKey)?;
        Ok(AccessToken {
            api_key: api_key.into(),
            header_b64: header_b64(api_key).into(),
            signing_key,
            clock: Arc::new(SystemClock),
        })
    }

    /// Credentials from `PULSEBEAM_API_KEY` and `PULSEBEAM_API_SECRET`.
    ///
    /// # Errors
    ///
    /// [`KeyError::MissingEnv`] when a variable is unset, else as [`AccessToken::new`].
    pub fn from_env() -> Result<Self, KeyError> {
        let read = |name: &'static str| {
            std::env::var(name)
                .map(zeroize::Zeroizing::new)
                .map_err(|_| KeyError::MissingEnv { name })
        };
        let key = read("PULSEBEAM_API_KEY")?;
        let secret = read("PULSEBEAM_API_SECRET")?;
        Self::new(&key, &secret)
    }

    /// Replaces the clock (the system clock by default).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The API key, which tokens carry as `kid`.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The public key that verifies this key's tokens.
    pub fn public_key(&self) -> PublicKey {
        self.signing_key.public_key()
    }

    /// Mints a token for `claims` valid for `ttl_secs` seconds, byte-identical to the original
    /// SDK's for the same inputs and second.
    ///
    /// # Errors
    ///
    /// [`CreateError::ZeroTtl`], [`CreateError::TtlTooLong`], or [`CreateError::MissingPolicy`]
    /// when the claims have no allow policy (see [`TokenOptions::allow_no_policy`]).
    pub fn create_token(&self, claims: &PeerClaims, ttl_secs: u64) -> Result<String, CreateError> {
        self.mint(claims, &TokenOptions::new(ttl_secs))
            .map(|minted| minted.token)
    }

    /// Mints a token with options, reading the clock once.
    ///
    /// # Errors
    ///
    /// As [`AccessToken::create_token`], and [`CreateError::InvalidValue`] for a bad `jti`.
    pub fn mint(
        &self,
        claims: &PeerClaims,
        options: &TokenOptions,
    ) -> Result<MintedToken, CreateError> {
        self.mint_at(claims, options, self.clock.now_unix())
    }

    /// Mints a token as if the time were `now_unix`.
    ///
    /// # Errors
    ///
    /// As [`AccessToken::mint`].
    pub fn mint_at(
        &self,
        claims: &PeerClaims,
        options: &TokenOptions,
        now_unix: u64,
    ) -> Result<MintedToken, CreateError> {
        let unsigned = self.mint_unsigned_at(claims, options, now_unix)?;
        let signature = self.signing_key.sign(unsigned.signing_input.as_bytes());
        Ok(unsigned.with_signature(&signature))
    }

    /// The token [`AccessToken::mint`] would make, up to its signature, reading the clock once:
    /// for a signature made elsewhere with this key.
    ///
    /// # Errors
    ///
    /// As [`AccessToken::mint`].
    pub fn mint_unsigned(
        &self,
        claims: &PeerClaims,
        options: &TokenOptions,
    ) -> Result<UnsignedToken, CreateError> {
        self.mint_unsigned_at(claims, options, self.clock.now_unix())
    }

    /// The token [`AccessToken::mint_at`] would make, up to its signature, with the same checks
    /// in the same order.
    ///
    /// # Errors
    ///
    /// As [`AccessToken::mint`].
    pub fn mint_unsigned_at(
        &self,
        claims: &PeerClaims,
        options: &TokenOptions,
        now_unix: u64,
    ) -> Result<UnsignedToken, CreateError> {
        let ttl = options.ttl_secs;
        if ttl == 0 {
            return Err(CreateError::ZeroTtl);
        }
        if ttl > MAX_TTL_SECS {
            return Err(CreateError::TtlTooLong {
                ttl,
                max: MAX_TTL_SECS,
            });
        }
        if claims.allow_policy().is_none() && !options.allow_no_policy {
            return Err(CreateError::MissingPolicy);
        }
        if let Some(jti) = &options.token_id {
            check_key_id(jti, Field::TokenId)?;
        }
        let exp = now_unix.saturating_add(ttl);
        let payload = payload_json(claims, exp, now_unix, options);

        let payload_b64_len = payload.len().div_ceil(3) * 4;
        // Room for the signature too, so that signing does not reallocate.
        let mut signing_input =
            String::with_capacity(self.header_b64.len() + payload_b64_len + 2 + SIGNATURE_B64_LEN);
        signing_input.push_str(&self.header_b64);
        signing_input.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut signing_input);
        Ok(UnsignedToken {
            signing_input,
            issued_at: now_unix,
            expires_at: exp,
        })
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("api_key", &self.api_key)
            .field("public_key", &self.public_key())
            .field("clock", &ClockDebug)
            .finish_non_exhaustive()
    }
}

/// `{"exp":…,"gid":…,"pid":…,"ap":…}` exactly as serde_json wrote it for the original, with the
/// optional claims after `ap`.
fn payload_json(claims: &PeerClaims, exp: u64, now: u64, options: &TokenOptions) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"{\"exp\":");
    write_u64(&mut out, exp);
    out.extend_from_slice(b",\"gid\":");
    write_json_str(&mut out, claims.group_id());
    out.extend_from_slice(b",\"pid\":");
    write_json_str(&mut out, claims.peer_id());
    out.extend_from_slice(b",\"ap\":");
    match claims.allow_policy() {
        Some(policy) => {
            out.extend_from_slice(b"{\"group_id\":");
            write_json_str(&mut out, policy.group_pattern().as_str());
            out.extend_from_slice(b",\"peer_id\":");
            write_json_str(&mut out, policy.peer_pattern().as_str());
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    if options.issued_at {
        out.extend_from_slice(b",\"iat\":");
        write_u64(&mut out, now);
    }
    if let Some(nbf) = options.not_before {
        out.extend_from_slice(b",\"nbf\":");
        write_u64(&mut out, nbf);
    }
    if let Some(jti) = &options.token_id {
        out.extend_from_slice(b",\"jti\":");
        write_json_str(&mut out, jti);
    }
    out.push(b'}');
    out
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
}
