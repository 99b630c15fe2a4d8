//! The three Twirp methods of `pulsebeam.v1.Tunnel` and the rules they enforce.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;

use std::net::SocketAddr;

use axum::http::HeaderValue;

use crate::audit::Event;
use crate::auth::Identity;
use crate::live::Live;
use crate::metrics::{Drop, StoreOp};
use crate::proto::{self, IceServer, PeerInfo, PrepareResp, RecvResp, SendReq};
use crate::state::State;
use crate::store::{Envelope, PeerAddr, PollOptions, Polled, Receipt, StoreError};
use crate::turn::{turn_credential, turn_user};
use crate::twirp::{Code, TwirpError};
use crate::usage::Record;

/// Connection ids below this are reserved; 0 is discovery.
const FIRST_CONN_ID: u32 = 16;
/// Longest group or peer id, in characters (`tokens.md`).
const MAX_ID_CHARS: usize = pulsebeam_token::MAX_ID_CHARS;

/// Why a Twirp method of the tunnel refused a call. Each kind maps to its Twirp code in
/// [`TunnelError::code`], beside its definition: a request that can never succeed is
/// `invalid_argument` or `malformed` (the 0.0.17 client gives up), a transient condition is
/// `resource_exhausted` or `unavailable` (it retries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TunnelError {
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
    /// During a long-poll, the token's key moved to another project.
    #[error("the token's key now belongs to another project; reconnect with a token of this one")]
    ProjectChanged,
    /// A stored message could not be read back.
    #[error("a stored message could not be decoded")]
    Corrupt,
    /// The mailbox store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// During a long-poll, the caller's token stopped being accepted (a reload, a revocation).
    #[error("{}", .0.msg)]
    Unauthenticated(TwirpError),
}

impl TunnelError {
    /// The Twirp code the error is answered with.
    pub(crate) fn code(&self) -> Code {
        match self {
            TunnelError::Missing { .. }
            | TunnelError::ReservedConnId { .. }
            | TunnelError::BadId { .. }
            | TunnelError::PayloadTooLarge { .. } => Code::InvalidArgument,
            TunnelError::Malformed(_) => Code::Malformed,
            TunnelError::NotOwnIdentity { .. } | TunnelError::PolicyDenied(_) => {
                Code::PermissionDenied
            }
            TunnelError::ProjectChanged => Code::Unauthenticated,
            TunnelError::Corrupt => Code::Internal,
            TunnelError::Store(
                StoreError::MailboxFull { .. }
                | StoreError::TooManyPeerConnections { .. }
                | StoreError::TooManyProjectConnections { .. },
            ) => Code::ResourceExhausted,
            TunnelError::Store(StoreError::Unavailable(_)) => Code::Unavailable,
            TunnelError::Unauthenticated(err) => err.code,
        }
    }
}

impl From<TunnelError> for TwirpError {
    fn from(err: TunnelError) -> Self {
        match err {
            TunnelError::Unauthenticated(err) => err,
            other => TwirpError::new(other.code(), other.to_string()),
        }
    }
}

/// `Prepare`: the configured STUN servers and, per TURN entry, fresh TURN REST credentials
/// that expire no later than the token.
pub(crate) fn prepare(state: &State, live: &Live, identity: &Identity) -> PrepareResp {
    let ice = &live.config.ice;
    let mut ice_servers = Vec::with_capacity(ice.turn.len() + 1);
    if !ice.stun_urls.is_empty() {
        ice_servers.push(IceServer {
            urls: ice.stun_urls.clone(),
            username: None,
            credential: None,
        });
    }
    if !ice.turn.is_empty() {
        let now = state.now_unix();
        // The project is in the username, so TURN traffic can be attributed to it.
        let user = turn_user(&identity.project_id, &identity.group, &identity.peer);
        for turn in &ice.turn {
            let expires_at = now
                .saturating_add(turn.credential_ttl_secs)
                .min(identity.expires_at);
            let credential = turn_credential(&turn.secret, &user, expires_at);
            state
                .usage
                .record(&identity.project_id, Record::TurnCredential, now);
            ice_servers.push(IceServer {
                urls: turn.urls.clone(),
                username: Some(credential.username),
                credential: Some(credential.credential),
            });
        }
    }
    PrepareResp { ice_servers }
}

/// `SendReq` as the server reads it: the message's bytes exactly as sent. Every occurrence of
/// field 1 is kept; protobuf merges repeated occurrences of a message field, which is the same
/// as reading their concatenation, so relaying the concatenation changes nothing.
#[derive(Clone, PartialEq, prost::Message)]
struct RawSendReq {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    msg: Vec<Bytes>,
}

/// What the server checks of a `Message`: the routing header, and the payload's size. Every
/// other field, known or not, is skipped here and relayed untouched.
#[derive(Clone, PartialEq, prost::Message)]
struct MessageHead {
    #[prost(message, optional, tag = "1")]
    header: Option<proto::MessageHeader>,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    payload: Vec<Bytes>,
}

fn missing_msg() -> TunnelError {
    TunnelError::Missing {
        field: "SendReq.msg",
        fix: "send a Message",
    }
}

/// The `Message` of a protobuf `SendReq` body, as the bytes the client sent.
pub(crate) fn message_of_protobuf(body: Bytes) -> Result<Bytes, TunnelError> {
    let request = RawSendReq::decode(body)
        .map_err(|_| TunnelError::Malformed("the body is not a valid protobuf SendReq"))?;
    match request.msg.len() {
        0 => Err(missing_msg()),
        1 => Ok(request.msg.into_iter().next().unwrap_or_default()),
        _ => Ok(Bytes::from(request.msg.concat())),
    }
}

/// The `Message` of a JSON `SendReq`, encoded as protobuf for storage. JSON carries only the
/// fields the server knows, so this is the one place a message is re-encoded.
pub(crate) fn message_of_json(request: SendReq) -> Result<Bytes, TunnelError> {
    request
        .msg
        .map(|msg| Bytes::from(msg.encode_to_vec()))
        .ok_or_else(missing_msg)
}

/// `Send`: checks identity, ids, payload size and policy, then queues `message` (a protobuf
/// `Message`) byte for byte as it came.
pub(crate) async fn send(
    state: &State,
    live: &Live,
    identity: &Identity,
    message: Bytes,
    remote: Option<SocketAddr>,
) -> Result<(), TunnelError> {
    let head = MessageHead::decode(message.clone())
        .map_err(|_| TunnelError::Malformed("msg is not a valid protobuf Message"))?;
    let header = head.header.as_ref().ok_or(TunnelError::Missing {
        field: "msg.header",
        fix: "set header.src and header.dst",
    })?;
    let src = header.src.as_ref().ok_or(TunnelError::Missing {
        field: "msg.header.src",
        fix: "set it to your own group, peer and conn id",
    })?;
    check_own_identity(identity, src, "msg.header.src", "msg.header.src.connId")?;
    let dst = header.dst.as_ref().ok_or(TunnelError::Missing {
        field: "msg.header.dst",
        fix: "set the destination group and peer (conn id 0 to discover)",
    })?;
    check_id(&dst.group_id, "msg.header.dst.groupId")?;
    check_id(&dst.peer_id, "msg.header.dst.peerId")?;
    if dst.conn_id != 0 && dst.conn_id < FIRST_CONN_ID {
        return Err(TunnelError::ReservedConnId {
            field: "msg.header.dst.connId",
            conn_id: dst.conn_id,
            fix: "use 0 to discover the peer or a conn id of 16 or more",
        });
    }
    let payload_len: usize = head.payload.iter().map(Bytes::len).sum();
    let max_payload = live.config.limits.max_payload_bytes;
    if payload_len > max_payload {
        return Err(TunnelError::PayloadTooLarge {
            len: payload_len,
            max: max_payload,
        });
    }
    if !identity.allows(&dst.group_id, &dst.peer_id) {
        let msg = match &identity.policy {
            None => "the token has no allow policy (`ap` is null), so it may send to no one; mint it with a policy".to_owned(),
            Some(policy) => format!(
                "the token's allow policy `{policy}` does not admit group {:?} peer {:?}; mint a token whose policy does",
                dst.group_id, dst.peer_id
            ),
        };
        state.audit.record(
            Event::new("policy_refusal")
                .with("project", &*identity.project_id)
                .with("group", &*identity.group)
                .with("peer", &*identity.peer)
                .with("dst_group", dst.group_id.as_str())
                .with("dst_peer", dst.peer_id.as_str())
                .remote(remote),
        );
        return Err(TunnelError::PolicyDenied(msg));
    }
    let bytes = message.len() as u64;
    let envelope = Envelope {
        src_group: Arc::clone(&identity.group),
        src_peer: Arc::clone(&identity.peer),
        message,
    };
    let dst_addr = PeerAddr {
        project: &identity.project_id,
        group: &dst.group_id,
        peer: &dst.peer_id,
    };
    match state.store.deliver(dst_addr, dst.conn_id, envelope).await {
        Ok(()) => {
            state.metrics.relayed();
            state.usage.record(
                &identity.project_id,
                Record::Message { bytes },
                state.now_unix(),
            );
            Ok(())
        }
        Err(err) => {
            match err {
                StoreError::MailboxFull { .. } => state.metrics.dropped(Drop::MailboxFull, 1),
                StoreError::Unavailable(_) => state.metrics.store_error(StoreOp::Deliver),
                _ => {}
            }
            Err(err.into())
        }
    }
}

/// Messages a `Recv` hands out, to acknowledge to the store once the response reached the client.
#[derive(Debug)]
pub(crate) struct PendingAck {
    pub(crate) project: Box<str>,
    pub(crate) group: Arc<str>,
    pub(crate) peer: Arc<str>,
    pub(crate) conn_id: u32,
    pub(crate) receipt: Receipt,
}

impl PendingAck {
    /// Acknowledges to the store; failures only mean the messages come again after the lease.
    pub(crate) async fn send(self, state: &State) {
        let me = PeerAddr {
            project: &self.project,
            group: &self.group,
            peer: &self.peer,
        };
        if let Err(err) = state.store.ack(me, self.conn_id, self.receipt).await {
            state.metrics.store_error(StoreOp::Ack);
            tracing::debug!(error = %err, "acknowledging delivered messages failed; they will be handed out again");
        }
    }
}

/// `Recv`: long-polls the caller's own mailbox; on shutdown answers with what is queued.
///
/// While it waits, a change of keys or revocations (a reload, a revocation) makes it check the
/// caller's token again: a token no longer accepted ends the poll with `unauthenticated`, its
/// messages staying queued.
pub(crate) async fn recv(
    state: &State,
    live: &Live,
    identity: Arc<Identity>,
    authorization: Option<HeaderValue>,
    src: Option<&PeerInfo>,
) -> Result<(Vec<Envelope>, Option<PendingAck>), TunnelError> {
    let src = src.ok_or(TunnelError::Missing {
        field: "RecvReq.src",
        fix: "set it to your own group, peer and conn id",
    })?;
    check_own_identity(&identity, src, "src", "src.connId")?;
    let me = PeerAddr {
        project: &identity.project_id,
        group: &identity.group,
        peer: &identity.peer,
    };
    let limits = &live.config.limits;
    // A poll never outlasts the token: its expiry ends the session, as it did on the hosted service.
    let token_left = identity.valid_until.saturating_sub(state.now_unix());
    let options = PollOptions {
        wait: Duration::from_millis(limits.poll_timeout_ms).min(Duration::from_secs(token_left)),
        batch_window: Duration::from_millis(limits.batch_window_ms),
        max_messages: limits.max_batch_messages,
    };
    let _online = Online::begin(state, &identity.project_id);
    let mut shutdown = state.shutdown.subscribe();
    let shutting_down = async move {
        // The `Ref` that `wait_for` returns must not live across an await.
        let _ = shutdown.wait_for(|down| *down).await;
    };
    tokio::pin!(shutting_down);
    let mut epoch = state.epoch.subscribe();
    let poll = state.store.poll(me, src.conn_id, options);
    tokio::pin!(poll);
    let polled = loop {
        tokio::select! {
            result = &mut poll => break result,
            () = &mut shutting_down => {
                let now = PollOptions { wait: Duration::ZERO, ..options };
                break state.store.poll(me, src.conn_id, now).await;
            }
            changed = epoch.changed() => {
                if changed.is_err() {
                    continue;
                }
                // Keys or revocations changed: the caller must still be who it was.
                let live = state.live.load_full();
                let again = state
                    .authenticate(
                        &live,
                        authorization.as_ref().map(HeaderValue::as_bytes),
                        None,
                    )
                    .map_err(TunnelError::Unauthenticated)?;
                if again.project_id != identity.project_id {
                    return Err(TunnelError::ProjectChanged);
                }
            }
        }
    };
    let Polled {
        messages: envelopes,
        receipt,
    } = polled.inspect_err(|err| {
        if matches!(err, StoreError::Unavailable(_)) {
            state.metrics.store_error(StoreOp::Poll);
        }
    })?;
    let ack = receipt.map(|receipt| PendingAck {
        project: identity.project_id.as_ref().into(),
        group: Arc::clone(&identity.group),
        peer: Arc::clone(&identity.peer),
        conn_id: src.conn_id,
        receipt,
    });
    if !live.config.mutual_policy {
        return Ok((envelopes, ack));
    }
    let before = envelopes.len();
    let admitted: Vec<Envelope> = envelopes
        .into_iter()
        .filter(|e| identity.allows(&e.src_group, &e.src_peer))
        .collect();
    let refused = before - admitted.len();
    if refused > 0 {
        state.metrics.dropped(Drop::ReceiverPolicy, refused as u64);
        tracing::debug!(
            refused,
            "dropped messages the receiver's policy does not admit"
        );
    }
    Ok((admitted, ack))
}

/// A connection online (a `Recv` in flight) for usage: counted while it lives, its time added
/// to the project's peer-seconds when it ends, however the poll ends.
struct Online<'a> {
    state: &'a State,
    project: &'a str,
    since: std::time::Instant,
}

impl<'a> Online<'a> {
    fn begin(state: &'a State, project: &'a str) -> Self {
        state.usage.online(project, 1);
        Online {
            state,
            project,
            since: std::time::Instant::now(),
        }
    }
}

impl std::ops::Drop for Online<'_> {
    fn drop(&mut self) {
        self.state.usage.online(self.project, -1);
        let millis = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.state.usage.record(
            self.project,
            Record::Online { millis },
            self.state.now_unix(),
        );
    }
}

/// `RecvResp` in protobuf, built from the stored message bytes without re-encoding them.
pub(crate) fn recv_resp_protobuf(envelopes: &[Envelope]) -> Bytes {
    let len: usize = envelopes
        .iter()
        .map(|e| 1 + prost::encoding::encoded_len_varint(e.message.len() as u64) + e.message.len())
        .sum();
    let mut out = BytesMut::with_capacity(len);
    for e in envelopes {
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(e.message.len() as u64, &mut out);
        out.put_slice(&e.message);
    }
    out.freeze()
}

/// `RecvResp` as a message, for the JSON encoding.
pub(crate) fn recv_resp_message(envelopes: &[Envelope]) -> Result<RecvResp, TunnelError> {
    let msgs = envelopes
        .iter()
        .map(|e| proto::Message::decode(e.message.as_ref()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TunnelError::Corrupt)?;
    Ok(RecvResp { msgs })
}

fn check_own_identity(
    identity: &Identity,
    info: &PeerInfo,
    field: &'static str,
    conn_field: &'static str,
) -> Result<(), TunnelError> {
    if info.group_id != *identity.group || info.peer_id != *identity.peer {
        return Err(TunnelError::NotOwnIdentity { field });
    }
    if info.conn_id < FIRST_CONN_ID {
        return Err(TunnelError::ReservedConnId {
            field: conn_field,
            conn_id: info.conn_id,
            fix: "draw a random conn id of 16 or more per page load",
        });
    }
    Ok(())
}

fn check_id(id: &str, field: &'static str) -> Result<(), TunnelError> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_ID_CHARS || id.chars().any(char::is_control) {
        return Err(TunnelError::BadId { field });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field(number: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(value.len() as u64, &mut out);
        out.extend_from_slice(value);
        out
    }

    proptest! {
        /// Whatever the body, reading a `SendReq` answers a message or a Twirp error, and a
        /// message read is one whose head the relay can check or refuse, never a panic.
        #[test]
        fn arbitrary_send_bodies_are_read_or_refused(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            match message_of_protobuf(Bytes::from(body)) {
                Ok(message) => {
                    let _ = MessageHead::decode(message);
                }
                Err(err) => prop_assert!(matches!(err.code(), Code::Malformed | Code::InvalidArgument), "{err}"),
            }
        }

        /// A message's bytes, unknown fields and all, come out of the request exactly as they
        /// went in, also when split over several occurrences of the field.
        #[test]
        fn the_message_is_taken_byte_for_byte(
            header in proptest::collection::vec(any::<u8>(), 0..16),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            unknown_number in 3u32..1000,
            unknown in proptest::collection::vec(any::<u8>(), 0..32),
            split in any::<bool>(),
        ) {
            let message: Vec<u8> = [field(1, &header), field(2, &payload), field(unknown_number, &unknown)].concat();
            let body = if split {
                let (a, b) = message.split_at(message.len() / 2);
                // Arbitrary halves are not whole fields, but their concatenation is the message.
                [field(1, a), field(1, b)].concat()
            } else {
                field(1, &message)
            };
            let taken = message_of_protobuf(Bytes::from(body)).unwrap();
            prop_assert_eq!(taken.as_ref(), message.as_slice());
            let head = MessageHead::decode(taken);
            if let Ok(head) = head {
                prop_assert_eq!(head.payload.iter().map(Bytes::len).sum::<usize>(), payload.len());
            }
        }
    }

    #[test]
    fn a_send_request_without_a_message_says_so() {
        let err = message_of_protobuf(Bytes::new()).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.to_string().contains("msg is missing"));
    }

    #[test]
    fn every_tunnel_error_maps_to_its_twirp_code_with_its_message() {
        let cases = [
            (
                TunnelError::PayloadTooLarge { len: 70_000, max: 65_536 },
                Code::InvalidArgument,
                "msg.payload is 70000 bytes, more than the 65536 allowed; send smaller messages",
            ),
            (
                TunnelError::ReservedConnId {
                    field: "src.connId",
                    conn_id: 7,
                    fix: "draw a random conn id of 16 or more per page load",
                },
                Code::InvalidArgument,
                "src.connId 7 is reserved; draw a random conn id of 16 or more per page load",
            ),
            (
                TunnelError::NotOwnIdentity { field: "src" },
                Code::PermissionDenied,
                "src must name the token's own group and peer (gid/pid); a token can only speak for itself",
            ),
            (
                TunnelError::Malformed("msg is not a valid protobuf Message"),
                Code::Malformed,
                "msg is not a valid protobuf Message",
            ),
            (
                TunnelError::Store(StoreError::MailboxFull { capacity: 2 }),
                Code::ResourceExhausted,
                "the receiver's mailbox is full (2 messages waiting); retry later",
            ),
            (
                TunnelError::Store(StoreError::Unavailable("down".into())),
                Code::Unavailable,
                "mailbox store unavailable: down; retry shortly",
            ),
            (TunnelError::ProjectChanged, Code::Unauthenticated, "the token's key now belongs to another project; reconnect with a token of this one"),
            (TunnelError::Corrupt, Code::Internal, "a stored message could not be decoded"),
        ];
        for (err, code, msg) in cases {
            assert_eq!(err.code(), code, "{err}");
            let twirp = TwirpError::from(err);
            assert_eq!((twirp.code, twirp.msg.as_ref()), (code, msg));
        }
        let inner = TwirpError::new(Code::Unauthenticated, "the token is revoked");
        assert_eq!(
            TwirpError::from(TunnelError::Unauthenticated(inner.clone())),
            inner
        );
    }
}
