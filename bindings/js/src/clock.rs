//! The wall clock of a JavaScript host. `std::time` has no clock on `wasm32-unknown-unknown`,
//! so the binding reads `Date.now()` and passes the time to the SDK explicitly.

/// Seconds since the Unix epoch by `Date.now()`, rounded down; `0` for a clock before 1970,
/// which makes every token minted then already expired (the safe direction).
pub(crate) fn now_unix() -> u64 {
    let millis = js_sys::Date::now();
    if millis.is_finite() && millis > 0.0 {
        // `as` saturates, and the value is positive and finite.
        (millis / 1000.0).floor() as u64
    } else {
        0
    }
}
