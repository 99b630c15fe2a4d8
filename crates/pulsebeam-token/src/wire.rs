//! Bytes as the original SDK wrote them: JSON strings with serde_json's escaping, and the header
//! segment `B64({"alg":"EdDSA","kid":…})`, shared by minting and by the verifier's key lookup.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::value::MAX_KEY_ID_CHARS;

/// `B64({"alg":"EdDSA","kid":…})`: the header segment of every token minted under `kid`.
pub(crate) fn header_b64(kid: &str) -> String {
    let mut header = Vec::with_capacity(32 + MAX_KEY_ID_CHARS * 4);
    header.extend_from_slice(br#"{"alg":"EdDSA","kid":"#);
    write_json_str(&mut header, kid);
    header.push(b'}');
    URL_SAFE_NO_PAD.encode(&header)
}

/// A JSON string with serde_json's escaping: `"`, `\` and control characters escaped, everything
/// else (including `/` and non-ASCII) raw.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}
