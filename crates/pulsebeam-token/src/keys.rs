//! Key material: the secret seed that signs, the public key that verifies, and their JWK forms.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Field, KeyError};
use crate::value::check_key_id;
use crate::wire::header_b64;

/// Length of an Ed25519 seed and of a public key, in bytes.
const KEY_LEN: usize = 32;

/// An Ed25519 signing key (the 32-byte seed of RFC 8032).
///
/// Built only by fallible, length-checked constructors. `Debug` shows the public key only, the
/// seed is zeroized on drop (by ed25519-dalek and, with the `aws-lc` feature, by AWS-LC), and
/// equality is constant-time.
#[derive(Clone)]
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
    /// The same key expanded once for AWS-LC's faster signing.
    #[cfg(feature = "aws-lc")]
    fast: std::sync::Arc<aws_lc_rs::signature::Ed25519KeyPair>,
}

impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        // ed25519-dalek compares the seeds in constant time.
        self.inner == other.inner
    }
}

impl Eq for SigningKey {}

impl SigningKey {
    /// Parses an API secret with the original SDK's rules: everything up to the first `_` is
    /// ignored, the rest must be hex (either case) for exactly 32 bytes.
    ///
    /// # Errors
    ///
    /// [`KeyError::MissingSeparator`], [`KeyError::NotHex`] or [`KeyError::WrongSecretLength`].
    pub fn from_api_secret(api_secret: &str) -> Result<Self, KeyError> {
        let (_, hex_seed) = api_secret
            .split_once('_')
            .ok_or(KeyError::MissingSeparator)?;
        let bytes = Zeroizing::new(hex::decode(hex_seed).map_err(|_| KeyError::NotHex)?);
        Self::from_seed(&bytes)
    }

    /// A key from its 32-byte seed.
    ///
    /// # Errors
    ///
    /// [`KeyError::WrongSecretLength`] when `seed` is not 32 bytes.
    pub fn from_seed(seed: &[u8]) -> Result<Self, KeyError> {
        let seed: &[u8; KEY_LEN] = seed
            .try_into()
            .map_err(|_| KeyError::WrongSecretLength { len: seed.len() })?;
        Ok(SigningKey {
            inner: ed25519_dalek::SigningKey::from_bytes(seed),
            #[cfg(feature = "aws-lc")]
            fast: std::sync::Arc::new(
                aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(seed)
                    .map_err(|_| KeyError::WrongSecretLength { len: seed.len() })?,
            ),
        })
    }

    /// A fresh key from the operating system's random source.
    ///
    /// # Errors
    ///
    /// [`KeyError::Random`] if the random source fails.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::getrandom(seed.as_mut()).map_err(|_| KeyError::Random)?;
        Self::from_seed(seed.as_ref())
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            inner: self.inner.verifying_key(),
        }
    }

    /// The secret in the `sk_<64 hex>` form of `PULSEBEAM_API_SECRET`.
    pub fn to_api_secret(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.inner.to_bytes());
        let hex_seed = Zeroizing::new(hex::encode(seed.as_ref()));
        Zeroizing::new(format!("sk_{}", hex_seed.as_str()))
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        #[cfg(feature = "aws-lc")]
        if let Ok(signature) = <[u8; 64]>::try_from(self.fast.sign(message).as_ref()) {
            return signature;
        }
        use ed25519_dalek::Signer as _;
        self.inner.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key: all a verifier needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    inner: ed25519_dalek::VerifyingKey,
}

impl PublicKey {
    /// A key from its 32 bytes.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidPublicKey`] when the bytes are the wrong length, not a point on the
    /// curve, or a weak (small-order) key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: &[u8; KEY_LEN] = bytes.try_into().map_err(|_| KeyError::InvalidPublicKey {
            reason: "expected 32 bytes (64 hex digits)",
        })?;
        let inner = ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| {
            KeyError::InvalidPublicKey {
                reason: "not a valid Ed25519 point",
            }
        })?;
        if inner.is_weak() {
            return Err(KeyError::InvalidPublicKey {
                reason: "weak (small-order) key",
            });
        }
        Ok(PublicKey { inner })
    }

    /// A key from 64 hex digits.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidPublicKey`] when the text is not hex or not a valid key.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::InvalidPublicKey {
            reason: "not hex; expected 64 hex digits",
        })?;
        Self::from_bytes(&bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        self.inner.as_bytes()
    }

    /// Whether the 32 bytes are the canonical encoding of the key's point (y < p). Keys made
    /// from a secret always are; a key read from outside may not be, and plain Ed25519
    /// implementations may decode such a key differently, so
    /// [`DangerousVerifier::verify_at_with`](crate::dangerous::DangerousVerifier::verify_at_with)
    /// checks its signatures itself rather than with the supplied check.
    pub fn is_canonical(&self) -> bool {
        crate::strict::is_canonical_key(self.as_bytes())
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// The RFC 8037 JWK of this key under `kid`.
    pub fn to_jwk(&self, kid: &str) -> Jwk {
        Jwk {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: URL_SAFE_NO_PAD.encode(self.as_bytes()),
            kid: Some(kid.to_owned()),
            alg: Some("EdDSA".to_owned()),
            key_use: Some("sig".to_owned()),
            d: None,
        }
    }

    /// Verifies with ed25519-dalek's `verify_strict` on every backend: the cofactorless RFC 8032
    /// equation, canonical `S`, and no small-order `R` or public key. (It also measured faster
    /// here than AWS-LC's verify, which is why the `aws-lc` feature only signs.)
    pub(crate) fn verify_strict(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.inner.verify_strict(message, &signature).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

/// A JSON Web Key for an Ed25519 public key (RFC 8037): `{"kty":"OKP","crv":"Ed25519","x":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type; `OKP` for Ed25519.
    pub kty: String,
    /// Curve; `Ed25519`.
    #[serde(default)]
    pub crv: String,
    /// The public key, base64url without padding.
    #[serde(default)]
    pub x: String,
    /// The key id: the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The algorithm; `EdDSA` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use; `sig` when present.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// A private key part; refused on import so that secrets are never published by mistake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
}

impl Jwk {
    /// Parses one JWK from JSON.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidJwk`] when the text is not a JWK object.
    pub fn from_json(text: &str) -> Result<Self, KeyError> {
        serde_json::from_str(text).map_err(|_| KeyError::InvalidJwk {
            reason: "not a JWK JSON object with string members kty, crv, x",
        })
    }

    /// The JWK as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The Ed25519 public key this JWK holds.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidJwk`] when it is not an Ed25519 public key, holds a private part, or
    /// names another algorithm or use; [`KeyError::InvalidPublicKey`] for a bad key.
    pub fn public_key(&self) -> Result<PublicKey, KeyError> {
        if self.d.is_some() {
            return Err(KeyError::InvalidJwk {
                reason: "it holds a private key (`d`); publish only the public part",
            });
        }
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return Err(KeyError::InvalidJwk {
                reason: "only kty `OKP` with crv `Ed25519` is supported",
            });
        }
        if self.alg.as_deref().is_some_and(|alg| alg != "EdDSA") {
            return Err(KeyError::InvalidJwk {
                reason: "alg must be `EdDSA` when present",
            });
        }
        if self.key_use.as_deref().is_some_and(|u| u != "sig") {
            return Err(KeyError::InvalidJwk {
                reason: "use must be `sig` when present",
            });
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(&self.x)
            .map_err(|_| KeyError::InvalidJwk {
                reason: "`x` is not base64url without padding",
            })?;
        PublicKey::from_bytes(&bytes)
    }
}

/// A JWK Set document: `{"keys":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// The verifying keys of one project or more, by key id (`kid`).
///
/// Several keys side by side allow rotation: mint with the new key while tokens of the old one
/// still verify.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<Box<str>, PublicKey>,
    /// The header segment of the tokens this crate mints under each kid, to the kid: a token
    /// that carries one of these is known to name that kid without decoding its header.
    headers: HashMap<Box<str>, Box<str>>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet").field("keys", &self.keys).finish()
    }
}

impl KeySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` under `kid`.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidApiKey`] for a bad key id, [`KeyError::DuplicateKeyId`] when the
    /// id is already present.
    pub fn insert(&mut self, kid: &str, key: PublicKey) -> Result<(), KeyError> {
        check_key_id(kid, Field::ApiKey).map_err(KeyError::InvalidApiKey)?;
        if self.keys.contains_key(kid) {
            return Err(KeyError::DuplicateKeyId);
        }
        self.keys.insert(kid.into(), key);
        self.headers.insert(header_b64(kid).into(), kid.into());
        Ok(())
    }

    /// Builder form of [`KeySet::insert`].
    ///
    /// # Errors
    ///
    /// As [`KeySet::insert`].
    pub fn with(mut self, kid: &str, key: PublicKey) -> Result<Self, KeyError> {
        self.insert(kid, key)?;
        Ok(self)
    }

    /// The key for `kid`.
    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.get(kid)
    }

    /// The kid and key named by a header segment exactly as this crate writes it
    /// (`B64({"alg":"EdDSA","kid":…})`), which reads the same as decoding the segment would.
    pub(crate) fn by_header(&self, segment: &str) -> Option<(&str, &PublicKey)> {
        let kid = self.headers.get(segment)?;
        Some((kid, self.keys.get(kid)?))
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `(kid, key)` pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PublicKey)> {
        self.keys.iter().map(|(k, v)| (&**k, v))
    }

    /// Reads a JWKS document (or a single JWK). Every key needs a `kid`.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidJwk`] for a document that is not a JWKS or a key without `kid`, and the
    /// errors of [`Jwk::public_key`] and [`KeySet::insert`].
    pub fn from_jwks_json(text: &str) -> Result<Self, KeyError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| KeyError::InvalidJwk {
                reason: "not valid JSON",
            })?;
        let jwks: Jwks = if value.get("keys").is_some() {
            serde_json::from_value(value).map_err(|_| KeyError::InvalidJwk {
                reason: "`keys` must be an array of JWK objects",
            })?
        } else {
            Jwks {
                keys: vec![
                    serde_json::from_value(value).map_err(|_| KeyError::InvalidJwk {
                        reason: "not a JWKS (`{\"keys\":[…]}`) nor a single JWK",
                    })?,
                ],
            }
        };
        let mut set = KeySet::new();
        for jwk in &jwks.keys {
            let kid = jwk.kid.as_deref().ok_or(KeyError::InvalidJwk {
                reason: "a key has no `kid`; every key must name its API key",
            })?;
            set.insert(kid, jwk.public_key()?)?;
        }
        Ok(set)
    }

    /// The set as a JWKS document, keys sorted by `kid`.
    pub fn to_jwks(&self) -> Jwks {
        let mut keys: Vec<Jwk> = self.iter().map(|(kid, key)| key.to_jwk(kid)).collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        Jwks { keys }
    }
}

/// A fresh API key and secret: what `pulsebeam keygen` prints.
#[derive(Clone)]
pub struct KeyPair {
    api_key: String,
    signing_key: SigningKey,
}

impl KeyPair {
    /// A new pair: `kid_` + 16 hex digits, and a seed, both from the OS random source.
    ///
    /// # Errors
    ///
    /// [`KeyError::Random`] if the random source fails.
    pub fn generate() -> Result<Self, KeyError> {
        let mut id = [0u8; 8];
        getrandom::getrandom(&mut id).map_err(|_| KeyError::Random)?;
        Ok(KeyPair {
            api_key: format!("kid_{}", hex::encode(id)),
            signing_key: SigningKey::generate()?,
        })
    }

    /// The API key (`PULSEBEAM_API_KEY`), which tokens carry as `kid`.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The API secret (`PULSEBEAM_API_SECRET`), `sk_` + 64 hex digits.
    pub fn api_secret(&self) -> Zeroizing<String> {
        self.signing_key.to_api_secret()
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.signing_key.public_key()
    }

    /// The public key as a JWK under the API key.
    pub fn to_jwk(&self) -> Jwk {
        self.public_key().to_jwk(&self.api_key)
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("api_key", &self.api_key)
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "aws-lc"))]
mod backend_tests {
    use super::*;

    /// Both backends give the same deterministic signatures and the same verdicts, including on
    /// a signature whose `S` is pushed out of canonical range.
    #[test]
    fn aws_lc_and_dalek_agree() {
        use ed25519_dalek::Signer as _;
        let key = SigningKey::from_seed(&[42u8; 32]).unwrap();
        let public = key.public_key();
        for len in [0usize, 1, 63, 64, 200, 1000] {
            let message: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let fast = key.sign(&message);
            assert_eq!(fast, key.inner.sign(&message).to_bytes());
            assert!(public.verify_strict(&message, &fast));
            let mut flipped = fast;
            flipped[10] ^= 1;
            assert!(!public.verify_strict(&message, &flipped));
            // S + L: the same point equation, but a non-canonical scalar.
            let mut malleated = fast;
            let l: [u8; 32] = [
                0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
                0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
            ];
            let mut carry = 0u16;
            for i in 0..32 {
                let sum = u16::from(malleated[32 + i]) + u16::from(l[i]) + carry;
                malleated[32 + i] = sum as u8;
                carry = sum >> 8;
            }
            assert!(!public.verify_strict(&message, &malleated));
            // AWS-LC agrees with the verdicts.
            use aws_lc_rs::signature::VerificationAlgorithm as _;
            let aws = |sig: &[u8; 64]| {
                aws_lc_rs::signature::ED25519
                    .verify_sig(public.as_bytes(), &message, sig)
                    .is_ok()
            };
            assert!(aws(&fast) && !aws(&flipped) && !aws(&malleated));
        }
    }
}
