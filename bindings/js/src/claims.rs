//! `PeerPolicy` and `PeerClaims`: who a token is for and whom it may reach.

use pulsebeam_token as sdk;
use wasm_bindgen::prelude::*;

use crate::args;
use crate::error::ResultExt as _;

/// Which peers a token's holder may reach: a group pattern and a peer pattern, both of which
/// must match. A pattern is `*`, an exact id, `prefix*`, `*suffix` or `prefix*suffix` (1 to 16
/// characters, at most one `*`).
#[wasm_bindgen(js_name = PeerPolicy)]
#[derive(Clone)]
pub struct JsPeerPolicy {
    pub(crate) inner: sdk::PeerPolicy,
}

#[wasm_bindgen(js_class = PeerPolicy)]
impl JsPeerPolicy {
    /// A policy from a group pattern and a peer pattern, e.g. `new PeerPolicy("room-*", "*")`.
    ///
    /// Throws `invalid_group_pattern` or `invalid_peer_pattern` for a pattern that is empty,
    /// longer than 16 characters, holds a control character or more than one `*`.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(js_name = groupPattern, unchecked_param_type = "string")]
        group_pattern: JsValue,
        #[wasm_bindgen(js_name = peerPattern, unchecked_param_type = "string")]
        peer_pattern: JsValue,
    ) -> Result<JsPeerPolicy, JsValue> {
        let group = args::string(&group_pattern, "groupPattern")?;
        let peer = args::string(&peer_pattern, "peerPattern")?;
        let inner = sdk::PeerPolicy::new(&group, &peer).js()?;
        Ok(JsPeerPolicy { inner })
    }

    /// Parses the `GROUP:PEER` text form (as `pulsebeam token --allow`), e.g. `"room1:*"`. A
    /// literal `:` or `\` inside a pattern is written `\:` or `\\`.
    ///
    /// Throws `invalid_policy` when the text is not `GROUP:PEER`, else as the constructor.
    pub fn parse(
        #[wasm_bindgen(unchecked_param_type = "string")] text: JsValue,
    ) -> Result<JsPeerPolicy, JsValue> {
        let text = args::string(&text, "text")?;
        let inner = text.parse::<sdk::PeerPolicy>().js()?;
        Ok(JsPeerPolicy { inner })
    }

    /// The policy `*:*`, which admits every peer of the project.
    #[wasm_bindgen(js_name = allowAll)]
    pub fn allow_all() -> JsPeerPolicy {
        JsPeerPolicy {
            inner: sdk::PeerPolicy::allow_all(),
        }
    }

    /// The group pattern, as written.
    #[wasm_bindgen(getter, js_name = groupPattern)]
    pub fn group_pattern(&self) -> String {
        self.inner.group_pattern().as_str().to_owned()
    }

    /// The peer pattern, as written.
    #[wasm_bindgen(getter, js_name = peerPattern)]
    pub fn peer_pattern(&self) -> String {
        self.inner.peer_pattern().as_str().to_owned()
    }

    /// Whether the policy admits the peer `peerId` of the group `groupId`.
    pub fn allows(
        &self,
        #[wasm_bindgen(js_name = groupId, unchecked_param_type = "string")] group_id: JsValue,
        #[wasm_bindgen(js_name = peerId, unchecked_param_type = "string")] peer_id: JsValue,
    ) -> Result<bool, JsValue> {
        let group = args::string(&group_id, "groupId")?;
        let peer = args::string(&peer_id, "peerId")?;
        Ok(self.inner.allows(&group, &peer))
    }

    /// Whether this is `*:*`.
    #[wasm_bindgen(getter, js_name = isAllowAll)]
    pub fn is_allow_all(&self) -> bool {
        self.inner.is_allow_all()
    }

    /// The `GROUP:PEER` text form, which `PeerPolicy.parse` reads back.
    #[wasm_bindgen(js_name = toString)]
    pub fn to_text(&self) -> String {
        self.inner.to_string()
    }

    /// `{ groupPattern, peerPattern }`, for `JSON.stringify`.
    #[wasm_bindgen(js_name = toJSON, unchecked_return_type = "{ groupPattern: string; peerPattern: string }")]
    pub fn to_json(&self) -> JsValue {
        let object = js_sys::Object::new();
        set(&object, "groupPattern", &self.group_pattern().into());
        set(&object, "peerPattern", &self.peer_pattern().into());
        object.into()
    }
}

/// Sets `object[key] = value` on a fresh plain object (which cannot fail).
pub(crate) fn set(object: &js_sys::Object, key: &str, value: &JsValue) {
    let _ = js_sys::Reflect::set(object, &JsValue::from_str(key), value);
}

/// The identity of a peer (its group id and peer id) and the policy saying whom it may reach.
/// Ids are 1 to 16 characters, without control characters or `*`.
#[wasm_bindgen(js_name = PeerClaims)]
#[derive(Clone)]
pub struct JsPeerClaims {
    pub(crate) inner: sdk::PeerClaims,
}

#[wasm_bindgen(js_class = PeerClaims)]
impl JsPeerClaims {
    /// Claims for the peer `peerId` in the group `groupId`, with no policy yet.
    ///
    /// Throws `invalid_group_id` or `invalid_peer_id` for an id that breaks the rules.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(js_name = groupId, unchecked_param_type = "string")] group_id: JsValue,
        #[wasm_bindgen(js_name = peerId, unchecked_param_type = "string")] peer_id: JsValue,
    ) -> Result<JsPeerClaims, JsValue> {
        let group = args::string(&group_id, "groupId")?;
        let peer = args::string(&peer_id, "peerId")?;
        let inner = sdk::PeerClaims::new(&group, &peer).js()?;
        Ok(JsPeerClaims { inner })
    }

    /// Sets the allow policy. The policy is copied: it stays usable, and changing it later
    /// does not change these claims.
    #[wasm_bindgen(js_name = setAllowPolicy)]
    pub fn set_allow_policy(&mut self, policy: &JsPeerPolicy) {
        self.inner.set_allow_policy(policy.inner.clone());
    }

    /// Removes the allow policy.
    #[wasm_bindgen(js_name = clearAllowPolicy)]
    pub fn clear_allow_policy(&mut self) {
        self.inner.clear_allow_policy();
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

    /// A copy of the allow policy (`ap`), or `undefined` when none is set.
    #[wasm_bindgen(getter, js_name = allowPolicy)]
    pub fn allow_policy(&self) -> Option<JsPeerPolicy> {
        self.inner
            .allow_policy()
            .map(|p| JsPeerPolicy { inner: p.clone() })
    }

    /// Whether the holder of these claims may reach the peer `peerId` of the group `groupId`;
    /// `false` without a policy.
    pub fn allows(
        &self,
        #[wasm_bindgen(js_name = groupId, unchecked_param_type = "string")] group_id: JsValue,
        #[wasm_bindgen(js_name = peerId, unchecked_param_type = "string")] peer_id: JsValue,
    ) -> Result<bool, JsValue> {
        let group = args::string(&group_id, "groupId")?;
        let peer = args::string(&peer_id, "peerId")?;
        Ok(self.inner.allows(&group, &peer))
    }
}
