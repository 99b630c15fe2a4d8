//! Why the call core refused a call, and the [`Code`] each reason is answered with.

use crate::code::{CallError, Code};
use crate::store::StoreError;

/// Longest group or peer id, in characters (`tokens.md`).
pub(crate) const MAX_ID_CHARS: usize = pulsebeam_token::MAX_ID_CHARS;

/// Why the call core refused a call. Each kind maps to its [`Code`] in [`Refusal::code`],
/// beside its definition: a request that can never succeed is `invalid_argument` or `malformed`
/// (every client gives up), a transient condition is `resource_exhausted` or `unavailable`
/// (every client retries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Refusal {
    /// A field the call needs is absent.
    #[error("{field} is missing; {fix}")]
    Missing {
        field: &'static str,
        fix: &'static str,
    },
    /// The body, or the message in it, does not decode.
    #[error("{0}")]
    Malformed(&'static str),
    /// A connection id in the reserved range.
    #[error("{field} {conn_id} is reserved; {fix}")]
    ReservedConnId {
        field: &'static str,
        conn_id: u32,
        fix: &'static str,
    },
    /// A destination id no token could carry.
    #[error("{field} must be 1 to {MAX_ID_CHARS} characters without control characters")]
    BadId { field: &'static str },
    /// A payload above `limits.max_payload_bytes`.
    #[error("msg.payload is {len} bytes, more than the {max} allowed; send smaller messages")]
    PayloadTooLarge { len: usize, max: usize },
    /// A source that is not the token's own group and peer.
    #[error("{field} must name the token's own group and peer (gid/pid); a token can only speak for itself")]
    NotOwnIdentity { field: &'static str },
    /// The sender's policy does not admit the destination; the text says which policy.
    #[error("{0}")]
    PolicyDenied(String),
    /// During a long call, the token's key moved to another project.
    #[error("the token's key now belongs to another project; reconnect with a token of this one")]
    ProjectChanged,
    /// The mailbox store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// During a long call, the caller's token stopped being accepted (a reload, a revocation).
    #[error("{}", .0.msg)]
    Unauthenticated(CallError),
}

impl Refusal {
    /// The code the refusal is answered with.
    pub(crate) fn code(&self) -> Code {
        match self {
            Refusal::Missing { .. }
            | Refusal::ReservedConnId { .. }
            | Refusal::BadId { .. }
            | Refusal::PayloadTooLarge { .. } => Code::InvalidArgument,
            Refusal::Malformed(_) => Code::Malformed,
            Refusal::NotOwnIdentity { .. } | Refusal::PolicyDenied(_) => Code::PermissionDenied,
            Refusal::ProjectChanged => Code::Unauthenticated,
            Refusal::Store(
                StoreError::MailboxFull { .. }
                | StoreError::TooManyPeerConnections { .. }
                | StoreError::TooManyProjectConnections { .. },
            ) => Code::ResourceExhausted,
            Refusal::Store(StoreError::Unavailable(_)) => Code::Unavailable,
            Refusal::Unauthenticated(err) => err.code,
        }
    }
}

impl From<Refusal> for CallError {
    fn from(err: Refusal) -> Self {
        match err {
            Refusal::Unauthenticated(err) => err,
            other => CallError::new(other.code(), other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_maps_to_its_code_with_its_message() {
        let cases = [
            (
                Refusal::PayloadTooLarge { len: 70_000, max: 65_536 },
                Code::InvalidArgument,
                "msg.payload is 70000 bytes, more than the 65536 allowed; send smaller messages",
            ),
            (
                Refusal::ReservedConnId {
                    field: "src.connId",
                    conn_id: 7,
                    fix: "draw a random conn id of 16 or more per page load",
                },
                Code::InvalidArgument,
                "src.connId 7 is reserved; draw a random conn id of 16 or more per page load",
            ),
            (
                Refusal::NotOwnIdentity { field: "src" },
                Code::PermissionDenied,
                "src must name the token's own group and peer (gid/pid); a token can only speak for itself",
            ),
            (
                Refusal::Malformed("msg is not a valid protobuf Message"),
                Code::Malformed,
                "msg is not a valid protobuf Message",
            ),
            (
                Refusal::Store(StoreError::MailboxFull { capacity: 2 }),
                Code::ResourceExhausted,
                "the receiver's mailbox is full (2 messages waiting); retry later",
            ),
            (
                Refusal::Store(StoreError::Unavailable("down".into())),
                Code::Unavailable,
                "mailbox store unavailable: down; retry shortly",
            ),
            (
                Refusal::ProjectChanged,
                Code::Unauthenticated,
                "the token's key now belongs to another project; reconnect with a token of this one",
            ),
        ];
        for (err, code, msg) in cases {
            assert_eq!(err.code(), code, "{err}");
            let coded = CallError::from(err);
            assert_eq!((coded.code, coded.msg.as_ref()), (code, msg));
        }
        let inner = CallError::new(Code::Unauthenticated, "the token is revoked");
        assert_eq!(
            CallError::from(Refusal::Unauthenticated(inner.clone())),
            inner
        );
    }
}
