//! Keys: `KeyPair` (new credentials), `PublicKey` (hex and JWK forms) and `KeySet` (what a
//! verifier trusts, by `kid`).

use pulsebeam_token as sdk;
use wasm_bindgen::prelude::*;

use crate::args;
use crate::error::ResultExt as _;

#[wasm_bindgen(typescript_custom_section)]
const KEY_TYPES: &'static str = r#"
/** An Ed25519 public key as a JSON Web Key (RFC 8037). */
export interface Jwk {
  kty: "OKP";
  crv: "Ed25519";
  /** The public key, base64url without padding. */
  x: string;
  /** The key id: the API key. */
  kid?: string;
  alg?: "EdDSA";
  use?: "sig";
}

/** A JWK Set document. */
export interface Jwks {
  keys: Jwk[];
}
"#;

/// A fresh API key (`kid_` + 16 hex digits) and secret (`sk_` + 64 hex digits) from the
/// platform's secure random source (`crypto.getRandomValues`).
#[wasm_bindgen(js_name = KeyPair)]
pub struct JsKeyPair {
    inner: sdk::KeyPair,
}

#[wasm_bindgen(js_class = KeyPair)]
impl JsKeyPair {
    /// Generates a new pair.
    ///
    /// Throws `random_source_failed` if the random source fails.
    pub fn generate() -> Result<JsKeyPair, JsValue> {
        Ok(JsKeyPair {
            inner: sdk::KeyPair::generate().js()?,
        })
    }

    /// The API key (`PULSEBEAM_API_KEY`), which tokens carry as `kid`.
    #[wasm_bindgen(getter, js_name = apiKey)]
    pub fn api_key(&self) -> String {
        self.inner.api_key().to_owned()
    }

    /// The API secret (`PULSEBEAM_API_SECRET`): keep it secret.
    #[wasm_bindgen(getter, js_name = apiSecret)]
    pub fn api_secret(&self) -> String {
        self.inner.api_secret().as_str().to_owned()
    }

    /// The public key, for verifiers.
    #[wasm_bindgen(getter, js_name = publicKey)]
    pub fn public_key(&self) -> JsPublicKey {
        JsPublicKey {
            inner: self.inner.public_key(),
        }
    }

    /// The public key as a JWK under the API key.
    #[wasm_bindgen(js_name = toJwk, unchecked_return_type = "Jwk")]
    pub fn to_jwk(&self) -> JsValue {
        args::parse_json(&self.inner.to_jwk().to_json())
    }
}

/// An Ed25519 public key: all a verifier needs.
#[wasm_bindgen(js_name = PublicKey)]
#[derive(Clone, Copy)]
pub struct JsPublicKey {
    pub(crate) inner: sdk::PublicKey,
}

#[wasm_bindgen(js_class = PublicKey)]
impl JsPublicKey {
    /// A key from 64 hex digits.
    ///
    /// Throws `invalid_public_key` when the text is not hex or not a valid key.
    #[wasm_bindgen(js_name = fromHex)]
    pub fn from_hex(
        #[wasm_bindgen(unchecked_param_type = "string")] hex: JsValue,
    ) -> Result<JsPublicKey, JsValue> {
        let hex = args::string(&hex, "hex")?;
        Ok(JsPublicKey {
            inner: sdk::PublicKey::from_hex(&hex).js()?,
        })
    }

    /// A key from a JWK (an object or its JSON text).
    ///
    /// Throws `invalid_jwk` for a JWK that is not an Ed25519 public key (or that holds a
    /// private part), `invalid_public_key` for a bad key.
    #[wasm_bindgen(js_name = fromJwk)]
    pub fn from_jwk(
        #[wasm_bindgen(unchecked_param_type = "Jwk | string")] jwk: JsValue,
    ) -> Result<JsPublicKey, JsValue> {
        let text = args::json_text(&jwk, "jwk", "a JWK")?;
        let jwk = sdk::Jwk::from_json(&text).js()?;
        Ok(JsPublicKey {
            inner: jwk.public_key().js()?,
        })
    }

    /// The key as 64 lowercase hex digits.
    #[wasm_bindgen(js_name = toHex)]
    pub fn to_hex(&self) -> String {
        self.inner.to_hex()
    }

    /// The RFC 8037 JWK of this key under `kid` (the API key).
    ///
    /// Throws `invalid_api_key` for a bad key id.
    #[wasm_bindgen(js_name = toJwk, unchecked_return_type = "Jwk")]
    pub fn to_jwk(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] kid: JsValue,
    ) -> Result<JsValue, JsValue> {
        let kid = args::string(&kid, "kid")?;
        // Checked by the same rules as a key set's ids, so every exported JWK imports again.
        sdk::KeySet::new().with(&kid, self.inner).js()?;
        Ok(args::parse_json(&self.inner.to_jwk(&kid).to_json()))
    }

    /// The key as 64 lowercase hex digits.
    #[wasm_bindgen(js_name = toString)]
    pub fn to_text(&self) -> String {
        self.inner.to_hex()
    }
}

/// The public keys a verifier trusts, by key id (`kid`, the API key). Several keys side by
/// side allow rotation.
#[wasm_bindgen(js_name = KeySet)]
#[derive(Clone, Default)]
pub struct JsKeySet {
    pub(crate) inner: sdk::KeySet,
}

#[wasm_bindgen(js_class = KeySet)]
impl JsKeySet {
    /// An empty set.
    #[wasm_bindgen(constructor)]
    pub fn new() -> JsKeySet {
        JsKeySet::default()
    }

    /// Reads a JWKS document (`{"keys":[…]}`) or a single JWK, as an object or JSON text.
    /// Every key needs a `kid`.
    ///
    /// Throws `invalid_jwk`, `invalid_public_key`, `invalid_api_key` or `duplicate_key_id`.
    #[wasm_bindgen(js_name = fromJwks)]
    pub fn from_jwks(
        #[wasm_bindgen(unchecked_param_type = "Jwks | Jwk | string")] jwks: JsValue,
    ) -> Result<JsKeySet, JsValue> {
        let text = args::json_text(&jwks, "jwks", "a JWKS")?;
        Ok(JsKeySet {
            inner: sdk::KeySet::from_jwks_json(&text).js()?,
        })
    }

    /// Adds `key` under `kid`.
    ///
    /// Throws `invalid_api_key` for a bad key id, `duplicate_key_id` when it is already there.
    pub fn add(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "string")] kid: JsValue,
        key: &JsPublicKey,
    ) -> Result<(), JsValue> {
        let kid = args::string(&kid, "kid")?;
        self.inner.insert(&kid, key.inner).js()
    }

    /// Whether a key with this id is in the set.
    pub fn has(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] kid: JsValue,
    ) -> Result<bool, JsValue> {
        let kid = args::string(&kid, "kid")?;
        Ok(self.inner.get(&kid).is_some())
    }

    /// How many keys the set holds.
    #[wasm_bindgen(getter)]
    pub fn size(&self) -> usize {
        self.inner.len()
    }

    /// The set as a JWKS document, keys sorted by `kid`.
    #[wasm_bindgen(js_name = toJwks, unchecked_return_type = "Jwks")]
    pub fn to_jwks(&self) -> JsValue {
        let jwks = self.inner.to_jwks();
        let keys = js_sys::Array::new();
        for jwk in &jwks.keys {
            keys.push(&args::parse_json(&jwk.to_json()));
        }
        let out = js_sys::Object::new();
        args::set(&out, "keys", &keys);
        out.into()
    }
}
