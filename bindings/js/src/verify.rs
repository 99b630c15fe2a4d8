//! `Verifier`: checking tokens (absent from the original SDK). The JavaScript class of that
//! name holds a `VerifierCore`, and gets the claims back as plain values.

use pulsebeam_token as sdk;
use wasm_bindgen::prelude::*;

use crate::args;
use crate::clock::now_unix;
use crate::error::ResultExt as _;
use crate::jws;
use crate::keys::JsKeySet;

#[wasm_bindgen(typescript_custom_section)]
const VERIFY_TYPES: &'static str = r#"
/** How a `Verifier` checks tokens. */
export interface VerifierOptions {
  /** Clock skew tolerated on `exp` and `nbf`, in seconds (default 30). */
  leewaySeconds?: number;
  /** The largest token accepted, in bytes (default 4096); longer ones are refused unread. */
  maxTokenLength?: number;
  /**
   * Which Ed25519 checks signatures: the runtime's own `"node:crypto"` (from the first call;
   * without the option, from the process's 65th call where the runtime has it) or the package's
   * `"wasm"` (everywhere). Both accept exactly the same tokens.
   */
  backend?: Backend;
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

const VERIFIER_OPTIONS: &[&str] = &["leewaySeconds", "maxTokenLength", "backend"];

/// Separates the fields of a verified token's claims in the text `verify` returns. No field can
/// hold it: ids, patterns, key ids and token ids have no control characters.
const SEPARATOR: char = '\0';

/// Verifies tokens against a key set: length bound, `alg` exactly `EdDSA`, a known `kid`, a
/// strict Ed25519 signature, then the claims (`exp` required, `nbf` honoured, ids and patterns
/// valid).
///
/// Runs the crate's `Verifier`, whose signature step is ed25519-dalek's `verify_strict` or,
/// when the caller passes a native verifier, the JavaScript runtime's own Ed25519 (`jws`).
#[wasm_bindgen(js_name = VerifierCore)]
pub struct JsVerifier {
    inner: sdk::Verifier,
    /// The keys by position, for the native verifier.
    keys: jws::NativeKeys,
}

#[wasm_bindgen(js_class = VerifierCore)]
impl JsVerifier {
    /// A verifier trusting the keys of `keys` (copied: later changes to the set do not
    /// affect it).
    ///
    /// Throws `invalid_argument` for an unknown or mistyped option.
    #[wasm_bindgen(constructor)]
    pub fn new(keys: &JsKeySet, options: JsValue) -> Result<JsVerifier, JsValue> {
        verifier(keys.inner.clone(), &options)
    }

    /// A verifier trusting the keys of a JWKS document (`{"keys":[…]}`) or a single JWK, as
    /// an object or JSON text.
    ///
    /// Throws as `KeySet.fromJwks`, and `invalid_argument` for a bad option.
    #[wasm_bindgen(js_name = fromJwks)]
    pub fn from_jwks(jwks: JsValue, options: JsValue) -> Result<JsVerifier, JsValue> {
        let keys = JsKeySet::from_jwks(jwks)?;
        verifier(keys.inner, &options)
    }

    /// How many keys the verifier trusts.
    #[wasm_bindgen(getter, js_name = keyCount)]
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The 32 bytes of the key at `position`, when the native verifier may check its
    /// signatures; `undefined` when it may not (then this verifier checks them itself).
    #[wasm_bindgen(js_name = nativeKey)]
    pub fn native_key(&self, position: usize) -> Option<Vec<u8>> {
        self.keys.native_key(position)
    }

    /// Verifies `token` at the current time (`Date.now()`), with `native(position, message,
    /// signature) -> boolean` checking signatures when given. Returns the claims as text,
    /// fields separated by U+0000: kid, gid, pid, ap group, ap peer, exp, iat, nbf, jti (empty
    /// when absent).
    ///
    /// Throws, with distinct codes: `token_too_large`, `malformed_token`,
    /// `unsupported_algorithm`, `missing_key_id`, `unknown_key_id`, `invalid_signature`,
    /// `token_expired`, `token_not_yet_valid`, `missing_claim`, `invalid_claim`.
    pub fn verify(
        &self,
        token: JsValue,
        native: Option<js_sys::Function>,
    ) -> Result<String, JsValue> {
        let token = args::string(&token, "token")?;
        self.check(&token, now_unix(), native.as_ref())
    }

    /// As `verify`, at the time `nowUnix` (Unix seconds).
    ///
    /// Throws as `verify`, and `invalid_argument` for a bad `nowUnix`.
    #[wasm_bindgen(js_name = verifyAt)]
    pub fn verify_at(
        &self,
        token: JsValue,
        #[wasm_bindgen(js_name = nowUnix)] now_unix: JsValue,
        native: Option<js_sys::Function>,
    ) -> Result<String, JsValue> {
        let token = args::string(&token, "token")?;
        let now = args::unix_time(&now_unix, "nowUnix")?;
        self.check(&token, now, native.as_ref())
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

impl JsVerifier {
    /// The crate's verification, with the signature checked by `native` when given.
    fn check(
        &self,
        token: &str,
        now: u64,
        native: Option<&js_sys::Function>,
    ) -> Result<String, JsValue> {
        let claims = match native {
            Some(native) => self.keys.verify(&self.inner, token, now, native)?,
            None => self.inner.verify_at(token, now).js()?,
        };
        Ok(pack(&claims))
    }
}

/// The fields of verified claims in one text, separated by `SEPARATOR`.
fn pack(claims: &sdk::VerifiedClaims) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(128);
    let (group_pattern, peer_pattern) = claims.allow_policy().map_or(("", ""), |p| {
        (p.group_pattern().as_str(), p.peer_pattern().as_str())
    });
    for field in [
        claims.key_id(),
        claims.group_id(),
        claims.peer_id(),
        group_pattern,
        peer_pattern,
    ] {
        out.push_str(field);
        out.push(SEPARATOR);
    }
    // Writing to a String cannot fail.
    let _ = write!(out, "{}{SEPARATOR}", claims.expires_at());
    if let Some(iat) = claims.issued_at() {
        let _ = write!(out, "{iat}");
    }
    out.push(SEPARATOR);
    if let Some(nbf) = claims.not_before() {
        let _ = write!(out, "{nbf}");
    }
    out.push(SEPARATOR);
    out.push_str(claims.token_id().unwrap_or_default());
    out
}

fn verifier(keys: sdk::KeySet, options: &JsValue) -> Result<JsVerifier, JsValue> {
    let native_keys = jws::NativeKeys::new(&keys);
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
    Ok(JsVerifier {
        inner,
        keys: native_keys,
    })
}
