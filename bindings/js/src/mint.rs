//! `AccessToken`: the minting side. The JavaScript class of that name holds an
//! `AccessTokenCore`: the parsed credentials, and the token format.

use pulsebeam_token as sdk;
use wasm_bindgen::prelude::*;

use crate::args;
use crate::claims;
use crate::clock::now_unix;
use crate::error::ResultExt as _;
use crate::keys::JsPublicKey;

#[wasm_bindgen(typescript_custom_section)]
const MINT_TYPES: &'static str = r#"
/** Which Ed25519 signs and verifies: the runtime's own (`node:crypto`) or the package's (`wasm`). */
export type Backend = "node:crypto" | "wasm";

/** How `AccessToken.mint` makes a token. */
export interface MintOptions {
  /** Lifetime in whole seconds, 1 to 4294967295 (e.g. 3600). */
  ttlSeconds: number;
  /** Mint as if the time were this Unix second, instead of `Date.now()`. */
  nowUnix?: number;
  /** Add an `iat` claim with the minting time. */
  issuedAt?: boolean;
  /** Add an `nbf` claim: the token is not valid before this Unix second. */
  notBefore?: number;
  /** Add a `jti` claim with this id (1 to 64 characters, no control characters). */
  tokenId?: string;
  /** Add a random 128-bit `jti` (32 hex digits). */
  randomTokenId?: boolean;
  /** Mint claims without a policy as `"ap":null`, as the original SDK did; such a peer may reach no one. */
  allowNoPolicy?: boolean;
}

/** A minted token and the instants it was made for. */
export interface MintedToken {
  /** The compact JWS. */
  token: string;
  /** The minting time, Unix seconds. */
  issuedAt: number;
  /** The `exp` claim, Unix seconds. */
  expiresAt: number;
}
"#;

const MINT_OPTIONS: &[&str] = &[
    "ttlSeconds",
    "nowUnix",
    "issuedAt",
    "notBefore",
    "tokenId",
    "randomTokenId",
    "allowNoPolicy",
];

/// The minting side: an API key and its secret, parsed once. Keep it on the server; the
/// secret never leaves it.
///
/// Mints whole tokens (signed here), or only their signing input, for a signature made by the
/// JavaScript runtime's own Ed25519 with the same secret.
#[wasm_bindgen(js_name = AccessTokenCore)]
pub struct JsAccessToken {
    inner: sdk::AccessToken,
}

#[wasm_bindgen(js_class = AccessTokenCore)]
impl JsAccessToken {
    /// Credentials from an API key (`kid_…`) and its secret (`sk_` + 64 hex digits).
    ///
    /// Throws `invalid_api_secret` or `invalid_api_key`, saying what is wrong.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(js_name = apiKey)] api_key: JsValue,
        #[wasm_bindgen(js_name = apiSecret)] api_secret: JsValue,
    ) -> Result<JsAccessToken, JsValue> {
        let key = args::string(&api_key, "apiKey")?;
        let secret = zeroize::Zeroizing::new(args::string(&api_secret, "apiSecret")?);
        let inner = sdk::AccessToken::new(&key, &secret).js()?;
        Ok(JsAccessToken { inner })
    }

    /// The API key, which tokens carry as `kid`.
    #[wasm_bindgen(getter, js_name = apiKey)]
    pub fn api_key(&self) -> String {
        self.inner.api_key().to_owned()
    }

    /// The public key that verifies this key's tokens.
    #[wasm_bindgen(getter, js_name = publicKey)]
    pub fn public_key(&self) -> JsPublicKey {
        JsPublicKey {
            inner: self.inner.public_key(),
        }
    }

    /// `createToken`: the token for checked claims (`groupPattern`/`peerPattern` undefined for
    /// none), valid for `ttlSeconds` from now (`Date.now()`). With `signingInputOnly`, only its
    /// signing input `header.payload`, for the caller to sign.
    ///
    /// Throws `missing_policy`, `zero_ttl`, `ttl_too_long` or `invalid_ttl`.
    #[wasm_bindgen(js_name = createToken)]
    pub fn create_token(
        &self,
        group_id: &str,
        peer_id: &str,
        group_pattern: Option<String>,
        peer_pattern: Option<String>,
        ttl_seconds: JsValue,
        signing_input_only: bool,
    ) -> Result<String, JsValue> {
        let ttl = args::ttl(&ttl_seconds, "ttlSeconds")?;
        let claims = claims::claims(group_id, peer_id, group_pattern, peer_pattern)?;
        let options = sdk::TokenOptions::new(ttl);
        let now = now_unix();
        if signing_input_only {
            return self
                .inner
                .mint_unsigned_at(&claims, &options, now)
                .map(sdk::UnsignedToken::into_signing_input)
                .js();
        }
        self.inner
            .mint_at(&claims, &options, now)
            .map(|minted| minted.token)
            .js()
    }

    /// `mint`: as `createToken` with `MintOptions`. Returns `[token or signing input, issuedAt,
    /// expiresAt]`.
    ///
    /// Throws as `createToken`, `invalid_token_id` for a bad `tokenId`, and `invalid_argument`
    /// for an unknown or mistyped option.
    pub fn mint(
        &self,
        group_id: &str,
        peer_id: &str,
        group_pattern: Option<String>,
        peer_pattern: Option<String>,
        options: JsValue,
        signing_input_only: bool,
    ) -> Result<js_sys::Array, JsValue> {
        let (options, now) = mint_options(&options)?;
        let claims = claims::claims(group_id, peer_id, group_pattern, peer_pattern)?;
        let now = now.unwrap_or_else(now_unix);
        let (text, expires_at) = if signing_input_only {
            let unsigned = self.inner.mint_unsigned_at(&claims, &options, now).js()?;
            let expires_at = unsigned.expires_at();
            (unsigned.into_signing_input(), expires_at)
        } else {
            let minted = self.inner.mint_at(&claims, &options, now).js()?;
            (minted.token, minted.expires_at)
        };
        Ok(js_sys::Array::of3(
            &text.into(),
            &(now as f64).into(),
            &(expires_at as f64).into(),
        ))
    }
}

/// Reads `MintOptions` into the crate's options and the optional pinned time.
fn mint_options(value: &JsValue) -> Result<(sdk::TokenOptions, Option<u64>), JsValue> {
    let object = args::options_object(value, "options", MINT_OPTIONS)?.ok_or_else(|| {
        crate::error::js_error(
            crate::error::Kind::Type,
            crate::error::INVALID_ARGUMENT,
            "options must be an object with at least `ttlSeconds`, e.g. { ttlSeconds: 3600 }",
        )
    })?;
    let get = |key: &str| args::property(&object, key);
    let ttl_value = get("ttlSeconds");
    if ttl_value.is_undefined() {
        return Err(crate::error::js_error(
            crate::error::Kind::Type,
            crate::error::INVALID_ARGUMENT,
            "options.ttlSeconds is required: the token's lifetime in seconds, e.g. { ttlSeconds: 3600 }",
        ));
    }
    let mut options = sdk::TokenOptions::new(args::ttl(&ttl_value, "options.ttlSeconds")?);
    if args::flag(&get("issuedAt"), "options.issuedAt")? {
        options = options.with_issued_at();
    }
    if let Some(nbf) = args::optional_unix_time(&get("notBefore"), "options.notBefore")? {
        options = options.with_not_before(nbf);
    }
    let token_id = args::optional_string(&get("tokenId"), "options.tokenId")?;
    let random_token_id = args::flag(&get("randomTokenId"), "options.randomTokenId")?;
    options = match (token_id, random_token_id) {
        (Some(_), true) => {
            return Err(crate::error::js_error(
                crate::error::Kind::Type,
                crate::error::INVALID_ARGUMENT,
                "options.tokenId and options.randomTokenId exclude each other; give one",
            ))
        }
        (Some(jti), false) => options.with_token_id(jti),
        (None, true) => options.with_random_token_id().js()?,
        (None, false) => options,
    };
    if args::flag(&get("allowNoPolicy"), "options.allowNoPolicy")? {
        options = options.allow_no_policy();
    }
    let now = args::optional_unix_time(&get("nowUnix"), "options.nowUnix")?;
    Ok((options, now))
}
