//! Checks on values coming from JavaScript, which has no static types at run time: a wrong
//! type or range is a clear `TypeError`/`RangeError` naming the argument, never a silent
//! coercion (`42` into `"42"`, `-1` into `4294967295`) as a plain wasm-bindgen signature would do.

use wasm_bindgen::prelude::*;

use crate::error::{js_error, Kind, INVALID_ARGUMENT, INVALID_TTL};

/// The largest integer a JavaScript number holds exactly (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// What `value` is, for messages: `typeof`, with `null` and arrays told apart.
pub(crate) fn describe(value: &JsValue) -> String {
    if value.is_null() {
        return "null".to_owned();
    }
    if js_sys::Array::is_array(value) {
        return "an array".to_owned();
    }
    value
        .js_typeof()
        .as_string()
        .unwrap_or_else(|| "an unknown value".to_owned())
}

fn wrong_type(name: &str, expected: &str, value: &JsValue) -> JsValue {
    js_error(
        Kind::Type,
        INVALID_ARGUMENT,
        &format!("{name} must be {expected}, got {}", describe(value)),
    )
}

/// Strings up to this many UTF-16 units are checked for lone surrogates. Longer ones (tokens,
/// JWKS documents) are not: a surrogate there becomes U+FFFD, which no token or key accepts.
const CHECKED_STRING_UNITS: u32 = 256;

/// A required string argument.
///
/// A JavaScript string may hold a lone surrogate, which is not Unicode text; converting it would
/// silently replace it with U+FFFD and mint a token for an id nobody asked for, so it is refused.
pub(crate) fn string(value: &JsValue, name: &str) -> Result<String, JsValue> {
    let Some(js_string) = value.dyn_ref::<js_sys::JsString>() else {
        return Err(wrong_type(name, "a string", value));
    };
    if js_string.length() <= CHECKED_STRING_UNITS && !js_string.is_valid_utf16() {
        return Err(js_error(
            Kind::Type,
            INVALID_ARGUMENT,
            &format!("{name} is not well-formed Unicode: it holds a lone surrogate (U+D800 to U+DFFF); pass valid text"),
        ));
    }
    value
        .as_string()
        .ok_or_else(|| wrong_type(name, "a string", value))
}

/// An optional string: `undefined` and `null` mean absent.
pub(crate) fn optional_string(value: &JsValue, name: &str) -> Result<Option<String>, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    string(value, name).map(Some)
}

/// An optional boolean: `undefined` and `null` mean `false`.
pub(crate) fn flag(value: &JsValue, name: &str) -> Result<bool, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(false);
    }
    value
        .as_bool()
        .ok_or_else(|| wrong_type(name, "a boolean", value))
}

/// A whole, non-negative number of seconds no larger than `Number.MAX_SAFE_INTEGER`.
fn seconds(value: &JsValue, name: &str, code: &str, example: &str) -> Result<u64, JsValue> {
    let n = value
        .as_f64()
        .ok_or_else(|| wrong_type(name, "a number of seconds", value))?;
    if !n.is_finite() || n.fract() != 0.0 || !(0.0..=MAX_SAFE_INTEGER).contains(&n) {
        return Err(js_error(
            Kind::Range,
            code,
            &format!(
                "{name} must be a whole, non-negative number of seconds (e.g. {example}); got {n}"
            ),
        ));
    }
    // In range and integral, so the conversion is exact.
    Ok(n as u64)
}

/// A token lifetime. Zero and values above the SDK's maximum pass through, so that the SDK's
/// own errors (`zero_ttl`, `ttl_too_long`) report them.
pub(crate) fn ttl(value: &JsValue, name: &str) -> Result<u64, JsValue> {
    seconds(value, name, INVALID_TTL, "3600")
}

/// A Unix time in seconds (`nowUnix`, `notBefore`).
pub(crate) fn unix_time(value: &JsValue, name: &str) -> Result<u64, JsValue> {
    seconds(value, name, INVALID_ARGUMENT, "1735689600")
}

/// An optional Unix time: `undefined` and `null` mean absent.
pub(crate) fn optional_unix_time(value: &JsValue, name: &str) -> Result<Option<u64>, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    unix_time(value, name).map(Some)
}

/// An optional whole number (seconds or bytes): `undefined` and `null` mean absent.
pub(crate) fn optional_count(
    value: &JsValue,
    name: &str,
    example: &str,
) -> Result<Option<u64>, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    seconds(value, name, INVALID_ARGUMENT, example).map(Some)
}

/// The own property `key` of an options object.
pub(crate) fn property(object: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// Checks that `options` is a plain object (or absent) whose keys are all in `known`, so that a
/// misspelt option (`ttl` for `ttlSeconds`) is an error rather than silently ignored.
pub(crate) fn options_object(
    options: &JsValue,
    name: &str,
    known: &[&str],
) -> Result<Option<js_sys::Object>, JsValue> {
    if options.is_undefined() || options.is_null() {
        return Ok(None);
    }
    if !options.is_object() || js_sys::Array::is_array(options) || options.is_function() {
        return Err(wrong_type(name, "an object", options));
    }
    let object = js_sys::Object::from(options.clone());
    for key in js_sys::Object::keys(&object).iter() {
        let key = key.as_string().unwrap_or_default();
        if !known.contains(&key.as_str()) {
            return Err(js_error(
                Kind::Type,
                INVALID_ARGUMENT,
                &format!(
                    "{name} has an unknown option `{key}`; the options are {}",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(Some(object))
}

/// A JSON document given either as text or as a plain object, as text.
pub(crate) fn json_text(value: &JsValue, name: &str, what: &str) -> Result<String, JsValue> {
    if let Some(text) = value.as_string() {
        return Ok(text);
    }
    if value.is_object() && !js_sys::Array::is_array(value) && !value.is_function() {
        return js_sys::JSON::stringify(value)
            .ok()
            .and_then(|s| s.as_string())
            .ok_or_else(|| {
                js_error(
                    Kind::Type,
                    INVALID_ARGUMENT,
                    &format!("{name} could not be turned into JSON; pass {what} as an object or a JSON string"),
                )
            });
    }
    Err(wrong_type(
        name,
        &format!("{what} (an object or a JSON string)"),
        value,
    ))
}

/// Parses JSON produced by this crate into a JavaScript value.
pub(crate) fn parse_json(text: &str) -> JsValue {
    js_sys::JSON::parse(text).unwrap_or(JsValue::NULL)
}

/// Sets `object[key] = value` on a fresh plain object (which cannot fail).
pub(crate) fn set(object: &js_sys::Object, key: &str, value: &JsValue) {
    let _ = js_sys::Reflect::set(object, &JsValue::from_str(key), value);
}
