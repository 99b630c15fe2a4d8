//! Errors as JavaScript sees them: real `Error` objects with a stable `code` and the SDK's
//! message, so `catch (e) { if (e.code === "token_expired") … }` works in every runtime.

use js_sys::Reflect;
use wasm_bindgen::prelude::*;

/// The `name` of every error this package throws.
const ERROR_NAME: &str = "PulseBeamError";

/// Code for an argument of the wrong JavaScript type or out of range.
pub(crate) const INVALID_ARGUMENT: &str = "invalid_argument";
/// Code for a ttl that is not a whole, non-negative number of seconds.
pub(crate) const INVALID_TTL: &str = "invalid_ttl";

#[wasm_bindgen(typescript_custom_section)]
const ERROR_TYPES: &'static str = r#"
/**
 * Every `code` a `PulseBeamError` can carry. The codes are stable: match on them, not on
 * messages. They are the codes of the Rust crate `pulsebeam-token` (and of the `pulsebeam`
 * CLI's `--json` output), plus `invalid_argument` and `invalid_ttl` for JavaScript values of
 * the wrong type or range.
 */
export type ErrorCode =
  | "invalid_argument"
  | "invalid_ttl"
  | "invalid_api_secret"
  | "invalid_api_key"
  | "missing_credentials"
  | "invalid_public_key"
  | "invalid_jwk"
  | "duplicate_key_id"
  | "random_source_failed"
  | "zero_ttl"
  | "ttl_too_long"
  | "missing_policy"
  | "invalid_group_id"
  | "invalid_peer_id"
  | "invalid_group_pattern"
  | "invalid_peer_pattern"
  | "invalid_token_id"
  | "invalid_policy"
  | "token_too_large"
  | "malformed_token"
  | "unsupported_algorithm"
  | "missing_key_id"
  | "unknown_key_id"
  | "invalid_signature"
  | "token_expired"
  | "token_not_yet_valid"
  | "missing_claim"
  | "invalid_claim";

/**
 * What this package throws: an `Error` (a `TypeError` or `RangeError` for JavaScript values of
 * the wrong type or range) whose `name` is `"PulseBeamError"` and whose `code` says what went
 * wrong. Messages name the problem and the fix; they never contain secrets or token bytes.
 */
export interface PulseBeamError extends Error {
  readonly name: "PulseBeamError";
  readonly code: ErrorCode;
}
"#;

/// Which JavaScript error constructor to use.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// `Error`: invalid values, failed verification.
    Plain,
    /// `TypeError`: a value of the wrong JavaScript type.
    Type,
    /// `RangeError`: a number out of range.
    Range,
}

/// A JavaScript error with `name` `PulseBeamError` and the given `code`.
pub(crate) fn js_error(kind: Kind, code: &str, message: &str) -> JsValue {
    let error: js_sys::Error = match kind {
        Kind::Plain => js_sys::Error::new(message),
        Kind::Type => js_sys::TypeError::new(message).into(),
        Kind::Range => js_sys::RangeError::new(message).into(),
    };
    error.set_name(ERROR_NAME);
    // Setting an own property on a fresh Error object cannot fail.
    let _ = Reflect::set(&error, &JsValue::from_str("code"), &JsValue::from_str(code));
    error.into()
}

/// Converts the SDK's errors (each with a stable `code()`) into thrown JavaScript errors.
pub(crate) trait IntoJsError {
    /// The JavaScript error for `self`.
    fn into_js(self) -> JsValue;
}

macro_rules! sdk_error {
    ($($ty:ty),* $(,)?) => {
        $(impl IntoJsError for $ty {
            fn into_js(self) -> JsValue {
                js_error(Kind::Plain, self.code(), &self.to_string())
            }
        })*
    };
}

sdk_error!(
    pulsebeam_token::Error,
    pulsebeam_token::KeyError,
    pulsebeam_token::CreateError,
    pulsebeam_token::VerifyError,
    pulsebeam_token::ParsePolicyError,
);

impl IntoJsError for pulsebeam_token::ValueError {
    fn into_js(self) -> JsValue {
        js_error(Kind::Plain, self.field().code(), &self.to_string())
    }
}

/// `result.map_err(IntoJsError::into_js)`, shorter.
pub(crate) trait ResultExt<T> {
    /// Maps the error into a thrown JavaScript error.
    fn js(self) -> Result<T, JsValue>;
}

impl<T, E: IntoJsError> ResultExt<T> for Result<T, E> {
    fn js(self) -> Result<T, JsValue> {
        self.map_err(IntoJsError::into_js)
    }
}
