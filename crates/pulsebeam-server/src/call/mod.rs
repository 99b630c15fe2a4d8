//! The call core: every rule of the signaling calls, written once for every protocol.
//!
//! The Twirp adapter (`pulsebeam.v1.Tunnel`, the 0.0.17 client) and the gRPC-web adapter
//! (`pulsebeam.v1.Signaling`, 0.0.18 on) only decode requests and encode answers; everything
//! else happens here: admission ([`State::admit`]: shutdown, authentication with revocations,
//! usage, the per-peer rate limit), `Prepare` ([`prepare`]: ICE servers and TURN credentials),
//! `Send` ([`send`]: identity binding, ids, payload size, policy, delivery) and the mailbox side
//! of `Recv` ([`poll`]: identity binding, the long wait with re-authentication, the receiver's
//! policy, and the acknowledgement of what was handed out).

pub(crate) mod analytics;
mod error;
pub(crate) mod in_flight;
pub(crate) mod message;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use tokio::sync::watch;

use crate::audit::Event;
use crate::auth::Identity;
use crate::code::{CallError, Code};
use crate::live::Live;
use crate::metrics::{Drop, StoreOp};
use crate::proto::{IceServer, PeerInfo, PrepareResp};
use crate::state::State;
use crate::store::{Envelope, PeerAddr, PollOptions, Polled, Receipt, StoreError};
use crate::turn::{turn_credential, turn_user};
use crate::usage::Record;

pub(crate) use error::Refusal;
use error::MAX_ID_CHARS;
pub(crate) use message::Incoming;

/// Connection ids below this are reserved; 0 is discovery.
pub(crate) const FIRST_CONN_ID: u32 = 16;

/// A caller the server admitted: who it is, under which configuration, and how to check
/// again, during a long call, that it still may call.
pub(crate) struct Caller {
    /// The configuration in force when the call began.
    pub(crate) live: Arc<Live>,
    /// The verified token.
    pub(crate) identity: Arc<Identity>,
    /// The client's address, for the audit trail.
    pub(crate) remote: Option<SocketAddr>,
    /// The credential it presented (an `Authorization` header value), checked again when keys
    /// or revocations change while its call waits. [`poll`] replaces it with a copy: the
    /// request's own value is a slice of hyper's read buffer, which a waiting call would
    /// otherwise keep alive (8 KiB), making hyper take a new one for the connection.
    credential: Option<HeaderValue>,
    /// Changes of keys or revocations, subscribed to before the token was checked, so that a
    /// change made while the request body was still arriving is not missed.
    epoch: watch::Receiver<u64>,
    /// Whether this call polled its mailbox before: a stream's later polls leave its own
    /// unconfirmed batches reserved instead of taking them back.
    polled: bool,
}

/// The connection `conn_id` of the caller `identity`, as [`in_flight`] names it.
fn connection(identity: &Identity, conn_id: u32) -> in_flight::Key {
    (
        Arc::clone(&identity.project_id),
        Arc::clone(&identity.group),
        Arc::clone(&identity.peer),
        conn_id,
    )
}

/// The mailbox address of the caller `identity`.
fn peer_addr(identity: &Identity) -> PeerAddr<'_> {
    PeerAddr {
        project: &identity.project_id,
        group: &identity.group,
        peer: &identity.peer,
    }
}

/// `value` in an allocation of its own (a request's header values share hyper's read buffer).
fn owned(value: HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(value.as_bytes()))
        .unwrap_or(value);
    copy.set_sensitive(true);
    copy
}

impl State {
    /// Admits a call: refuses it while shutting down, authenticates `credential` (a bearer
    /// `Authorization` header value) with revocations, counts it and applies the caller's rate
    /// limit. Failures are counted and audited by the authentication.
    ///
    /// # Errors
    ///
    /// `unavailable` while shutting down, `unauthenticated` for a refused token,
    /// `resource_exhausted` beyond the rate limit.
    pub(crate) fn admit(
        &self,
        credential: Option<HeaderValue>,
        remote: Option<SocketAddr>,
    ) -> Result<Caller, CallError> {
        // First, so that nothing that changes from here on goes unnoticed by a long call.
        let epoch = self.epoch.subscribe();
        if *self.shutdown.borrow() {
            return Err(CallError::new(
                Code::Unavailable,
                "the server is shutting down; retry shortly",
            ));
        }
        let live = self.live.load_full();
        let identity = self.authenticate(
            &live,
            credential.as_ref().map(HeaderValue::as_bytes),
            remote,
        )?;
        self.usage
            .record(&identity.project_id, Record::Call, self.now_unix());
        let peer = (
            Arc::clone(&identity.project_id),
            Arc::clone(&identity.group),
            Arc::clone(&identity.peer),
        );
        if !live.limiter.take(&peer) {
            return Err(CallError::new(
                Code::ResourceExhausted,
                format!(
                    "rate limit of {} calls per second for this peer exceeded; slow down and retry",
                    live.config.limits.rate_per_sec
                ),
            ));
        }
        Ok(Caller {
            live,
            identity,
            remote,
            credential,
            epoch,
            polled: false,
        })
    }
}

impl Caller {
    /// Checks the caller again if keys or revocations changed since admission (or since the
    /// last check): its token must still be accepted, for the same project.
    ///
    /// # Errors
    ///
    /// [`Refusal::Unauthenticated`] or [`Refusal::ProjectChanged`].
    pub(crate) fn recheck(&mut self, state: &State) -> Result<(), Refusal> {
        if !self.epoch.has_changed().unwrap_or(false) {
            return Ok(());
        }
        self.epoch.mark_unchanged();
        self.check_again(state)
    }

    /// Checks the caller again: its token must still be accepted, for the same project.
    ///
    /// # Errors
    ///
    /// As [`Caller::recheck`].
    pub(crate) fn check_again(&self, state: &State) -> Result<(), Refusal> {
        let live = state.live.load_full();
        let again = state
            .authenticate(
                &live,
                self.credential.as_ref().map(HeaderValue::as_bytes),
                None,
            )
            .map_err(Refusal::Unauthenticated)?;
        if again.project_id != self.identity.project_id {
            return Err(Refusal::ProjectChanged);
        }
        Ok(())
    }

    /// Completes when keys or revocations change or the server begins to shut down (never,
    /// once the server is gone); [`Caller::check_again`] tells whether the caller is still
    /// accepted.
    pub(crate) async fn epoch_changed(&mut self) {
        if self.epoch.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The credential the caller presented.
    pub(crate) fn credential(&self) -> Option<&HeaderValue> {
        self.credential.as_ref()
    }

    /// How long the caller's token is still accepted, from `now` (Unix seconds).
    pub(crate) fn token_left(&self, now: u64) -> Duration {
        Duration::from_secs(self.identity.valid_until.saturating_sub(now))
    }
}

/// `Prepare`: the configured STUN servers and, per TURN entry, fresh TURN REST credentials
/// that expire no later than the token.
pub(crate) fn prepare(state: &State, caller: &Caller) -> PrepareResp {
    let identity = &caller.identity;
    let ice = &caller.live.config.ice;
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

/// `Send`: checks identity, ids, payload size and policy, then queues the message byte for
/// byte as it came.
///
/// # Errors
///
/// The [`Refusal`] naming the first rule the message breaks, or the store's.
pub(crate) async fn send(state: &State, caller: &Caller, message: Incoming) -> Result<(), Refusal> {
    let identity = &caller.identity;
    let header = message.header.as_ref().ok_or(Refusal::Missing {
        field: "msg.header",
        fix: "set header.src and header.dst",
    })?;
    let src = header.src.as_ref().ok_or(Refusal::Missing {
        field: "msg.header.src",
        fix: "set it to your own group, peer and conn id",
    })?;
    check_own_identity(identity, src, "msg.header.src", "msg.header.src.connId")?;
    let dst = header.dst.as_ref().ok_or(Refusal::Missing {
        field: "msg.header.dst",
        fix: "set the destination group and peer (conn id 0 to discover)",
    })?;
    check_id(&dst.group_id, "msg.header.dst.groupId")?;
    check_id(&dst.peer_id, "msg.header.dst.peerId")?;
    if dst.conn_id != 0 && dst.conn_id < FIRST_CONN_ID {
        return Err(Refusal::ReservedConnId {
            field: "msg.header.dst.connId",
            conn_id: dst.conn_id,
            fix: "use 0 to discover the peer or a conn id of 16 or more",
        });
    }
    let max_payload = caller.live.config.limits.max_payload_bytes;
    if message.payload_len > max_payload {
        return Err(Refusal::PayloadTooLarge {
            len: message.payload_len,
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
                .remote(caller.remote),
        );
        return Err(Refusal::PolicyDenied(msg));
    }
    let bytes = message.bytes.len() as u64;
    let dst_addr = PeerAddr {
        project: &identity.project_id,
        group: &dst.group_id,
        peer: &dst.peer_id,
    };
    let envelope = Envelope {
        src_group: Arc::clone(&identity.group),
        src_peer: Arc::clone(&identity.peer),
        message: message.bytes,
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

/// Messages handed out, to acknowledge to the store once the answer carrying them is on its
/// way to the client.
#[derive(Debug)]
pub(crate) struct PendingAck {
    receipt: Receipt,
    /// Names the connection, and holds a new `Recv` of it on this node until this is stored or
    /// dropped.
    in_flight: in_flight::InFlight,
}

impl PendingAck {
    /// The receipt this acknowledges.
    pub(crate) fn receipt(&self) -> Receipt {
        self.receipt
    }

    /// Acknowledges to the store; failures only mean the messages come again after the lease.
    pub(crate) async fn send(self, state: &State) {
        let (project, group, peer, conn_id) = self.in_flight.key();
        let me = PeerAddr {
            project,
            group,
            peer,
        };
        if let Err(err) = state.store.ack(me, *conn_id, self.receipt).await {
            state.metrics.store_error(StoreOp::Ack);
            tracing::debug!(error = %err, "acknowledging delivered messages failed; they will be handed out again");
        }
    }
}

/// What one [`poll`] handed out.
#[derive(Debug, Default)]
pub(crate) struct Handout {
    /// The messages the receiver's policy admits, in order.
    pub(crate) envelopes: Vec<Envelope>,
    /// To acknowledge once they are on their way; `None` when nothing was handed out.
    pub(crate) ack: Option<PendingAck>,
    /// A newer `Recv` of the connection took over: this one should end.
    pub(crate) superseded: bool,
}

/// Whether a [`poll`] that found a message waits `limits.batch_window_ms` for more to join it:
/// a long-poll answers once per batch, so it does; a stream writes each message as it comes,
/// so it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Batching {
    /// Wait the batch window.
    Window,
    /// Hand out what is there at once.
    None,
}

/// Checks that `src` is the caller's own connection, as `Recv` must name it.
///
/// # Errors
///
/// [`Refusal::Missing`], [`Refusal::NotOwnIdentity`] or [`Refusal::ReservedConnId`].
pub(crate) fn own_connection<'a>(
    caller: &Caller,
    src: Option<&'a PeerInfo>,
) -> Result<&'a PeerInfo, Refusal> {
    let src = src.ok_or(Refusal::Missing {
        field: "RecvReq.src",
        fix: "set it to your own group, peer and conn id",
    })?;
    check_own_identity(&caller.identity, src, "src", "src.connId")?;
    Ok(src)
}

/// The mailbox side of `Recv`: waits up to `wait` (never beyond the token's validity) for the
/// caller's connection `conn_id` (checked with [`own_connection`]) to have mail and takes it.
///
/// While it waits, a change of keys or revocations makes it check the caller again: a token
/// no longer accepted ends the wait with `unauthenticated`, its messages staying queued. On
/// shutdown it answers at once with what is queued. With `mutual_policy`, messages the
/// receiver's own policy does not admit are dropped and counted.
///
/// # Errors
///
/// [`Refusal::Unauthenticated`] or [`Refusal::ProjectChanged`] as said, or the store's.
pub(crate) fn poll<'a>(
    state: &'a State,
    caller: &'a mut Caller,
    conn_id: u32,
    wait: Duration,
    batching: Batching,
) -> impl std::future::Future<Output = Result<Handout, Refusal>> + Send + 'a {
    // Its future is [`poll_acknowledging`]'s, not one more around it.
    poll_acknowledging(state, caller, conn_id, wait, batching, None)
}

/// [`poll`], acknowledging `ack` (a receipt of the same connection, its batch written) in the
/// poll's own store call: a stream's next poll. The store may not have stored it when this
/// fails or is dropped; the caller then acknowledges it on its own (twice does nothing).
///
/// # Errors
///
/// As [`poll`].
pub(crate) async fn poll_acknowledging(
    state: &State,
    caller: &mut Caller,
    conn_id: u32,
    wait: Duration,
    batching: Batching,
    ack: Option<Receipt>,
) -> Result<Handout, Refusal> {
    caller.recheck(state)?;
    let identity = Arc::clone(&caller.identity);
    // A new call takes over what the connection's earlier calls handed out unacknowledged.
    let takeover = !std::mem::replace(&mut caller.polled, true);
    let limits = &caller.live.config.limits;
    // A wait never outlasts the token: its expiry ends the session, as on the hosted service.
    let options = PollOptions {
        wait: wait.min(caller.token_left(state.now_unix())),
        batch_window: match batching {
            Batching::Window => Duration::from_millis(limits.batch_window_ms),
            Batching::None => Duration::ZERO,
        },
        max_messages: limits.max_batch_messages,
        takeover,
        ack,
    };
    if takeover {
        // The first poll of a call that may wait: its credential must not keep the request's
        // buffer alive (see `Caller::credential`).
        caller.credential = caller.credential.take().map(owned);
        // What this node has handed out to the connection and is about to acknowledge is not
        // taken over (and so handed out twice) by a client that read the answer first.
        let key = connection(&identity, conn_id);
        if state.acks_in_flight.is_under_way(&key) {
            Box::pin(state.acks_in_flight.settled(&key)).await;
        }
    }
    // While it waits, one watch tells it both that keys or revocations changed and that the
    // server is shutting down (`Server::shutdown` bumps the epoch too): a waiting call keeps
    // one future for both.
    let mut poll = state.store.poll(peer_addr(&identity), conn_id, options);
    let polled = loop {
        if *state.shutdown.borrow() {
            let now = PollOptions {
                wait: Duration::ZERO,
                ..options
            };
            break state.store.poll(peer_addr(&identity), conn_id, now).await;
        }
        tokio::select! {
            biased;
            () = caller.epoch_changed() => {
                if !*state.shutdown.borrow() {
                    // Keys or revocations changed: the caller must still be who it was.
                    caller.check_again(state)?;
                }
            }
            result = &mut poll => break result,
        }
    };
    let Polled {
        messages: envelopes,
        receipt,
        superseded,
    } = polled.inspect_err(|err| {
        if matches!(err, StoreError::Unavailable(_)) {
            state.metrics.store_error(StoreOp::Poll);
        }
    })?;
    let ack = receipt.map(|receipt| PendingAck {
        receipt,
        in_flight: state.acks_in_flight.begin(connection(&identity, conn_id)),
    });
    if !caller.live.config.mutual_policy {
        return Ok(Handout {
            envelopes,
            ack,
            superseded,
        });
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
    Ok(Handout {
        envelopes: admitted,
        ack,
        superseded,
    })
}

/// A connection online (a `Recv` in flight) for usage: counted while it lives, its time added
/// to the project's peer-seconds when it ends, however the call ends.
pub(crate) struct Online {
    state: Arc<State>,
    project: Arc<str>,
    since: std::time::Instant,
}

impl Online {
    /// Counts `caller`'s connection online from now until the guard drops.
    pub(crate) fn begin(state: &Arc<State>, caller: &Caller) -> Self {
        let project = Arc::clone(&caller.identity.project_id);
        state.usage.online(&project, 1);
        Online {
            state: Arc::clone(state),
            project,
            since: std::time::Instant::now(),
        }
    }
}

impl std::ops::Drop for Online {
    fn drop(&mut self) {
        self.state.usage.online(&self.project, -1);
        let millis = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.state.usage.record(
            &self.project,
            Record::Online { millis },
            self.state.now_unix(),
        );
    }
}

fn check_own_identity(
    identity: &Identity,
    info: &PeerInfo,
    field: &'static str,
    conn_field: &'static str,
) -> Result<(), Refusal> {
    if info.group_id != *identity.group || info.peer_id != *identity.peer {
        return Err(Refusal::NotOwnIdentity { field });
    }
    if info.conn_id < FIRST_CONN_ID {
        return Err(Refusal::ReservedConnId {
            field: conn_field,
            conn_id: info.conn_id,
            fix: "draw a random conn id of 16 or more per page load",
        });
    }
    Ok(())
}

fn check_id(id: &str, field: &'static str) -> Result<(), Refusal> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_ID_CHARS || id.chars().any(char::is_control) {
        return Err(Refusal::BadId { field });
    }
    Ok(())
}
