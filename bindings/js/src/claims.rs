//! The rules behind `PeerClaims` and `PeerPolicy`, which are plain JavaScript objects (they hold
//! no WebAssembly memory): each function checks or evaluates plain strings with the crate's
//! rules and keeps nothing.

use pulsebeam_token as sdk;
use wasm_bindgen::prelude::*;

use crate::args;
use crate::error::ResultExt as _;

/// Checks a group id and a peer id (`new PeerClaims(groupId, peerId)`).
///
/// Throws `invalid_group_id` or `invalid_peer_id` for an id that breaks the rules, and
/// `invalid_argument` for a value that is not a string.
#[wasm_bindgen(js_name = checkPeerClaims)]
pub fn check_peer_claims(
    #[wasm_bindgen(js_name = groupId)] group_id: JsValue,
    #[wasm_bindgen(js_name = peerId)] peer_id: JsValue,
) -> Result<(), JsValue> {
    let group = args::string(&group_id, "groupId")?;
    let peer = args::string(&peer_id, "peerId")?;
    sdk::PeerClaims::new(&group, &peer).js().map(drop)
}

/// Checks a group pattern and a peer pattern (`new PeerPolicy(groupPattern, peerPattern)`).
///
/// Throws `invalid_group_pattern` or `invalid_peer_pattern` for a pattern that is empty, longer
/// than 16 characters, holds a control character or more than one `*`.
#[wasm_bindgen(js_name = checkPeerPolicy)]
pub fn check_peer_policy(
    #[wasm_bindgen(js_name = groupPattern)] group_pattern: JsValue,
    #[wasm_bindgen(js_name = peerPattern)] peer_pattern: JsValue,
) -> Result<(), JsValue> {
    let group = args::string(&group_pattern, "groupPattern")?;
    let peer = args::string(&peer_pattern, "peerPattern")?;
    sdk::PeerPolicy::new(&group, &peer).js().map(drop)
}

/// Parses the `GROUP:PEER` text form into `[groupPattern, peerPattern]`.
///
/// Throws `invalid_policy` when the text is not `GROUP:PEER`, else as `checkPeerPolicy`.
#[wasm_bindgen(js_name = parsePeerPolicy)]
pub fn parse_peer_policy(text: JsValue) -> Result<Vec<String>, JsValue> {
    let text = args::string(&text, "text")?;
    let policy = text.parse::<sdk::PeerPolicy>().js()?;
    Ok(vec![
        policy.group_pattern().as_str().to_owned(),
        policy.peer_pattern().as_str().to_owned(),
    ])
}

/// The `GROUP:PEER` text form of a policy whose patterns were checked.
#[wasm_bindgen(js_name = peerPolicyText)]
pub fn peer_policy_text(group_pattern: &str, peer_pattern: &str) -> Result<String, JsValue> {
    Ok(policy(group_pattern, peer_pattern)?.to_string())
}

/// Whether the policy of two checked patterns admits the peer `peerId` of the group `groupId`.
///
/// Throws `invalid_argument` when `groupId` or `peerId` is not a string.
#[wasm_bindgen(js_name = peerPolicyAllows)]
pub fn peer_policy_allows(
    group_pattern: &str,
    peer_pattern: &str,
    #[wasm_bindgen(js_name = groupId)] group_id: JsValue,
    #[wasm_bindgen(js_name = peerId)] peer_id: JsValue,
) -> Result<bool, JsValue> {
    let group = args::string(&group_id, "groupId")?;
    let peer = args::string(&peer_id, "peerId")?;
    Ok(policy(group_pattern, peer_pattern)?.allows(&group, &peer))
}

/// The crate's policy for two patterns.
pub(crate) fn policy(group_pattern: &str, peer_pattern: &str) -> Result<sdk::PeerPolicy, JsValue> {
    sdk::PeerPolicy::new(group_pattern, peer_pattern).js()
}

/// The crate's claims for checked ids and an optional policy (`None` for either pattern: none).
pub(crate) fn claims(
    group_id: &str,
    peer_id: &str,
    group_pattern: Option<String>,
    peer_pattern: Option<String>,
) -> Result<sdk::PeerClaims, JsValue> {
    let mut claims = sdk::PeerClaims::new(group_id, peer_id).js()?;
    if let (Some(group), Some(peer)) = (group_pattern, peer_pattern) {
        claims.set_allow_policy(policy(&group, &peer)?);
    }
    Ok(claims)
}
