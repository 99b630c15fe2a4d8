//! What a token says about its holder.

use crate::error::{Field, ValueError};
use crate::policy::PeerPolicy;
use crate::value::check_id;

/// The identity of a peer and the policy that says whom it may reach.
///
/// Ids are 1 to 16 characters, no control characters, no `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerClaims {
    group_id: String,
    peer_id: String,
    allow_policy: Option<PeerPolicy>,
}

impl PeerClaims {
    /// Claims for the peer `peer_id` in the group `group_id`, with no policy yet.
    ///
    /// # Errors
    ///
    /// A [`ValueError`] naming the id that breaks the rules.
    pub fn new(group_id: &str, peer_id: &str) -> Result<Self, ValueError> {
        check_id(group_id, Field::GroupId)?;
        check_id(peer_id, Field::PeerId)?;
        Ok(PeerClaims {
            group_id: group_id.to_owned(),
            peer_id: peer_id.to_owned(),
            allow_policy: None,
        })
    }

    /// Sets the allow policy, as the original `setAllowPolicy` did.
    pub fn set_allow_policy(&mut self, policy: PeerPolicy) {
        self.allow_policy = Some(policy);
    }

    /// Builder form of [`PeerClaims::set_allow_policy`].
    #[must_use]
    pub fn with_allow_policy(mut self, policy: PeerPolicy) -> Self {
        self.allow_policy = Some(policy);
        self
    }

    /// Removes the allow policy.
    pub fn clear_allow_policy(&mut self) {
        self.allow_policy = None;
    }

    /// The group id (`gid`).
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The peer id (`pid`).
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The allow policy (`ap`), if one is set.
    pub fn allow_policy(&self) -> Option<&PeerPolicy> {
        self.allow_policy.as_ref()
    }

    /// Whether the holder of these claims may send to `(group_id, peer_id)`; `false` without a
    /// policy.
    pub fn allows(&self, group_id: &str, peer_id: &str) -> bool {
        self.allow_policy
            .as_ref()
            .is_some_and(|p| p.allows(group_id, peer_id))
    }
}
