//! Glue between the `pulsebeam-token` pipeline and the JavaScript runtime's own Ed25519
//! (`node:crypto`). The crate makes the signing input of a token to mint
//! (`AccessToken::mint_unsigned_at`), and verifies with the runtime's check as its signature
//! step (`Verifier::dangerous`), keeping its rules, errors and bytes. The crate also keeps the
//! checks that make a plain Ed25519 verify as strict as its own. This file only finds the
//! runtime's key for a `kid` and carries the runtime's answer (or exception) back.

use std::collections::HashMap;

use pulsebeam_token as sdk;
use wasm_bindgen::prelude::*;

use crate::error::IntoJsError as _;

/// The trusted keys by position, as the runtime's verifier holds them (see `nativeVerifier` in
/// entries/api.js).
pub(crate) struct NativeKeys {
    keys: Vec<sdk::PublicKey>,
    /// Key ids to positions in `keys`.
    positions: HashMap<Box<str>, u32>,
}

impl NativeKeys {
    /// The keys of `set`, in a fixed order.
    pub(crate) fn new(set: &sdk::KeySet) -> NativeKeys {
        let mut keys = Vec::with_capacity(set.len());
        let mut positions = HashMap::with_capacity(set.len());
        for (kid, key) in set.iter() {
            let Ok(position) = u32::try_from(keys.len()) else {
                break;
            };
            positions.insert(Box::from(kid), position);
            keys.push(*key);
        }
        NativeKeys { keys, positions }
    }

    /// How many keys there are.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The 32 bytes of the key at `position` when the runtime checks its signatures, that is
    /// when it is canonically encoded; the crate checks the others itself.
    pub(crate) fn native_key(&self, position: usize) -> Option<Vec<u8>> {
        self.keys
            .get(position)
            .filter(|key| key.is_canonical())
            .map(|key| key.as_bytes().to_vec())
    }

    /// `verifier.verify_at(token, now)`, with `native(position, message, signature) -> boolean`
    /// as the signature check. An exception thrown by `native` is thrown on.
    pub(crate) fn verify(
        &self,
        verifier: &sdk::Verifier,
        token: &str,
        now: u64,
        native: &js_sys::Function,
    ) -> Result<sdk::VerifiedClaims, JsValue> {
        let checked =
            verifier
                .dangerous()
                .verify_at_with(token, now, |kid, _key, message, signature| {
                    // The verifier's keys are these keys, so every kid it finds has a position.
                    let Some(position) = self.positions.get(kid) else {
                        return Ok(false);
                    };
                    native
                        .call3(
                            &JsValue::NULL,
                            &JsValue::from(*position),
                            &js_sys::Uint8Array::from(message),
                            &js_sys::Uint8Array::from(&signature[..]),
                        )
                        .map(|answer| answer.is_truthy())
                        .map_err(Failure::Thrown)
                });
        checked.map_err(|failure| match failure {
            Failure::Token(e) => e.into_js(),
            Failure::Thrown(exception) => exception,
        })
    }
}

/// Why a verification with the runtime's check failed.
enum Failure {
    /// The token was refused.
    Token(sdk::VerifyError),
    /// The runtime's check threw.
    Thrown(JsValue),
}

impl From<sdk::VerifyError> for Failure {
    fn from(e: sdk::VerifyError) -> Self {
        Failure::Token(e)
    }
}
