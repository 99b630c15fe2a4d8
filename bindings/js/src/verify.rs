//! `Verifier` and `VerifiedClaims`: checking tokens (absent from the original SDK).

use pulsebeam_token as sdk;
use wasm_bindgen::prelude::*;

use crate::args;
use crate::claims::{set, JsPeerPolicy};
use crate::clock::now_unix;
use crate::error::ResultExt as _;
use crate::keys::JsKeySet;

#[wasm_bindgen(typescript_custom_section)]
const VERIFY_TYPES: &'static str = r#"
/** How a `Verifier` checks tokens. */
export interface VerifierOptions {
  /** Clock skew tolerated on `exp` and `nbf`, in seconds (default 30). */
  leewaySeconds?: number;
  /** The largest token accepted, in bytes (default 4096); longer ones are refused unread. */
  maxTokenLength?: number;
}

/** The plain-object form of `VerifiedClaims`, from `toJSON()`. */
export interface VerifiedClaimsJSON {
  keyId: string;
  groupId: string;
  peerId: string;
  allowPolicy: { groupPattern: string; peerPattern: string } | null;
  expiresAt: number;
  issuedAt?: number;
  notBefore?: number;
  tokenId?: string;
}
"#;

const VERIFIER_OPTIONS: &[&str] = &["leewaySeconds", "maxTokenLength"];

/// Verifies tokens against a key set: length bound, `alg` exactly `EdDSA`, a known `kid`, a
/// strict Ed25519 signature, then the claims (`exp` required, `nbf` honoured, ids and patterns
/// valid).
#[wasm_bindgen(js_name = Verifier)]
pub struct JsVerifier {
    inner: sdk::Verifier,
}

#[wasm_bindgen(js_class = Verifier)]
impl JsVerifier {
    /// A verifier trusting the keys of `keys` (copied: later changes to the set do not
    /// affect it).
    ///
    /// Throws `invalid_argument` for an unknown or mistyped option.
    #[wasm_bindgen(constructor)]
    pub fn new(
        keys: &JsKeySet,
        #[wasm_bindgen(unchecked_optional_param_type = "VerifierOptions")] options: Option<
            js_sys::Object,
        >,
    ) -> Result<JsVerifier, JsValue> {
        let options: JsValue = options.map_or(JsValue::UNDEFINED, Into::into);
        verifier(keys.inner.clone(), &options)
    }

    /// A verifier trusting the keys of a JWKS document (`{"keys":[…]}`) or a single JWK, as
    /// an object or JSON text.
    ///
    /// Throws as `KeySet.fromJwks`, and `invalid_argument` for a bad option.
    #[wasm_bindgen(js_name = fromJwks)]
    pub fn from_jwks(
        #[wasm_bindgen(unchecked_param_type = "Jwks | Jwk | string")] jwks: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "VerifierOptions")] options: Option<
            js_sys::Object,
        >,
    ) -> Result<JsVerifier, JsValue> {
        let keys = JsKeySet::from_jwks(jwks)?;
        let options: JsValue = options.map_or(JsValue::UNDEFINED, Into::into);
        verifier(keys.inner, &options)
    }

    /// Verifies `token` at the current time (`Date.now()`) and returns its claims.
    ///
    /// Throws, with distinct codes: `token_too_large`, `malformed_token`,
    /// `unsupported_algorithm`, `missing_key_id`, `unknown_key_id`, `invalid_signature`,
    /// `token_expired`, `token_not_yet_valid`, `missing_claim`, `invalid_claim`.
    pub fn verify(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Result<JsVerifiedClaims, JsValue> {
        let token = args::string(&token, "token")?;
        let claims = self.inner.verify_at(&token, now_unix()).js()?;
        Ok(JsVerifiedClaims { inner: claims })
    }

    /// Verifies `token` as if the time were `nowUnix` (Unix seconds).
    ///
    /// Throws as `verify`, and `invalid_argument` for a bad `nowUnix`.
    #[wasm_bindgen(js_name = verifyAt)]
    pub fn verify_at(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
        #[wasm_bindgen(js_name = nowUnix, unchecked_param_type = "number")] now_unix: JsValue,
    ) -> Result<JsVerifiedClaims, JsValue> {
        let token = args::string(&token, "token")?;
        let now = args::unix_time(&now_unix, "nowUnix")?;
        let claims = self.inner.verify_at(&token, now).js()?;
        Ok(JsVerifiedClaims { inner: claims })
    }

    /// The clock skew tolerated on `exp` and `nbf`, in seconds.
    #[wasm_bindgen(getter, js_name = leewaySeconds)]
    pub fn leeway_seconds(&self) -> f64 {
        self.inner.leeway_secs() as f64
    }

    /// The trusted keys as a JWKS document.
    #[wasm_bindgen(js_name = toJwks, unchecked_return_type = "Jwks")]
    pub fn to_jwks(&self) -> JsValue {
        JsKeySet {
            inner: self.inner.keys().clone(),
        }
        .to_jwks()
    }
}

fn verifier(keys: sdk::KeySet, options: &JsValue) -> Result<JsVerifier, JsValue> {
    let mut inner = sdk::Verifier::new(keys);
    if let Some(object) = args::options_object(options, "options", VERIFIER_OPTIONS)? {
        let get = |key: &str| args::property(&object, key);
        if let Some(leeway) =
            args::optional_count(&get("leewaySeconds"), "options.leewaySeconds", "30")?
        {
            inner = inner.with_leeway(leeway);
        }
        if let Some(max) =
            args::optional_count(&get("maxTokenLength"), "options.maxTokenLength", "4096")?
        {
            inner = inner.with_max_token_len(usize::try_from(max).unwrap_or(usize::MAX));
        }
    }
    Ok(JsVerifier { inner })
}

/// The claims of a token whose signature, algorithm, key and time checks all passed.
#[wasm_bindgen(js_name = VerifiedClaims)]
pub struct JsVerifiedClaims {
    inner: sdk::VerifiedClaims,
}

#[wasm_bindgen(js_class = VerifiedClaims)]
impl JsVerifiedClaims {
    /// The `kid` of the key that signed the token.
    #[wasm_bindgen(getter, js_name = keyId)]
    pub fn key_id(&self) -> String {
        self.inner.key_id().to_owned()
    }

    /// The group id (`gid`).
    #[wasm_bindgen(getter, js_name = groupId)]
    pub fn group_id(&self) -> String {
        self.inner.group_id().to_owned()
    }

    /// The peer id (`pid`).
    #[wasm_bindgen(getter, js_name = peerId)]
    pub fn peer_id(&self) -> String {
        self.inner.peer_id().to_owned()
    }

    /// The allow policy (`ap`), or `undefined` when the token's `ap` is `null`.
    #[wasm_bindgen(getter, js_name = allowPolicy)]
    pub fn allow_policy(&self) -> Option<JsPeerPolicy> {
        self.inner
            .allow_policy()
            .map(|p| JsPeerPolicy { inner: p.clone() })
    }

    /// `exp`, Unix seconds.
    #[wasm_bindgen(getter, js_name = expiresAt)]
    pub fn expires_at(&self) -> f64 {
        self.inner.expires_at() as f64
    }

    /// `iat`, Unix seconds, when present.
    #[wasm_bindgen(getter, js_name = issuedAt)]
    pub fn issued_at(&self) -> Option<f64> {
        self.inner.issued_at().map(|t| t as f64)
    }

    /// `nbf`, Unix seconds, when present.
    #[wasm_bindgen(getter, js_name = notBefore)]
    pub fn not_before(&self) -> Option<f64> {
        self.inner.not_before().map(|t| t as f64)
    }

    /// `jti`, when present.
    #[wasm_bindgen(getter, js_name = tokenId)]
    pub fn token_id(&self) -> Option<String> {
        self.inner.token_id().map(str::to_owned)
    }

    /// Whether the token's holder may reach the peer `peerId` of the group `groupId`; `false`
    /// when the token has no policy.
    pub fn allows(
        &self,
        #[wasm_bindgen(js_name = groupId, unchecked_param_type = "string")] group_id: JsValue,
        #[wasm_bindgen(js_name = peerId, unchecked_param_type = "string")] peer_id: JsValue,
    ) -> Result<bool, JsValue> {
        let group = args::string(&group_id, "groupId")?;
        let peer = args::string(&peer_id, "peerId")?;
        Ok(self.inner.peer().allows(&group, &peer))
    }

    /// The claims as a plain object, for `JSON.stringify` and logs.
    #[wasm_bindgen(js_name = toJSON, unchecked_return_type = "VerifiedClaimsJSON")]
    pub fn to_json(&self) -> JsValue {
        let out = js_sys::Object::new();
        set(&out, "keyId", &self.key_id().into());
        set(&out, "groupId", &self.group_id().into());
        set(&out, "peerId", &self.peer_id().into());
        let policy = self.allow_policy().map_or(JsValue::NULL, |p| p.to_json());
        set(&out, "allowPolicy", &policy);
        set(&out, "expiresAt", &self.expires_at().into());
        if let Some(iat) = self.issued_at() {
            set(&out, "issuedAt", &iat.into());
        }
        if let Some(nbf) = self.not_before() {
            set(&out, "notBefore", &nbf.into());
        }
        if let Some(jti) = self.token_id() {
            set(&out, "tokenId", &jti.into());
        }
        out.into()
    }
}
