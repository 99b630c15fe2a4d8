//! `Recv` as a gRPC-web server stream: one `RecvResp` frame per message, pushed as messages
//! arrive, a `Ping` when the stream has been quiet for `grpc_web.keepalive_secs`, and a trailer
//! when it ends.
//!
//! The stream is the response body itself, driven by hyper: each frame is produced when hyper
//! asks for it, so a client that goes away (an aborted fetch, a reset HTTP/2 stream, a closed
//! connection) drops the body and with it the wait on the mailbox, at once.
//!
//! The response headers go out with the first frame: the first message, the first keep-alive
//! `Ping` (`grpc_web.keepalive_secs` after the stream opened) or the trailer. Until then the
//! stream waits inside the handler, as a Twirp long-poll does, and writes nothing: the headers
//! of an idle stream would make hyper touch its write buffer, a page of memory per waiting
//! connection that a waiting long-poll does not cost (BENCHMARKS.md). The clients read the
//! call's messages as they come and do not wait for its headers before anything else.
//!
//! # What a stream that breaks guarantees
//!
//! Messages are taken from the mailbox a batch at a time and acknowledged to the store only
//! once hyper has taken every frame of the batch *and* then either taken a frame of the next
//! batch or the stream has stayed open for a confirmation delay (a quarter of the store's ack
//! lease, at most [`CONFIRM_AFTER`]): a write to a connection the client has closed or reset
//! fails within that time and drops the stream. While messages flow, each batch is confirmed by
//! the next one, so no more than a batch or two wait unacknowledged whatever the rate.
//! A stream that breaks before its batch is confirmed (the client reloads, the connection
//! resets, a newer `Recv` of the connection takes over) leaves the batch unacknowledged, and the
//! store hands it out again to the connection's next `Recv` after the ack lease. A stream that
//! ends normally (deadline, shutdown) confirms what it wrote before its trailer. What can still
//! be lost is a batch whose bytes the kernel accepted on a connection that died silently (a
//! half-open connection, a proxy that drops the answer) after the confirmation delay: TCP does
//! not tell the sender, and gRPC-web has no acknowledgement from the client. Reliable messages
//! are deduplicated by the client, so a message handed out twice is harmless.
//!
//! # How a stream ends
//!
//! With status OK (the client reopens it at once): at the client's `grpc-timeout` or
//! `grpc_web.max_stream_secs`, when the token expires (the reopened stream is then refused),
//! when a newer `Recv` of the same connection opens on any node, and when the server shuts
//! down. With `UNAUTHENTICATED` (the client gives up): when the token is revoked or its key
//! removed, within a second on every node.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use tokio::time::Instant;

use super::frame;
use crate::call::message::{bytes_field_len, put_bytes_field};
use crate::call::{self, Batching, Caller, Online, PendingAck};
use crate::config::GrpcWebConfig;
use crate::state::State;
use crate::store::Envelope;

/// How long a handed-out batch waits, with its stream still open, before it is acknowledged
/// without a further frame having been taken. Well within the store's ack lease.
pub(crate) const CONFIRM_AFTER: Duration = Duration::from_millis(1_000);

/// `RecvResp{msg: Message{payload: MessagePayload{ping: Ping{}}}}`: a message without a header,
/// which the clients log and drop (0.0.18, whose schema has no `ping`, drops it unread).
const PING: &[u8] = &[0x0a, 0x04, 0x12, 0x02, 0x2a, 0x00];

/// A `Recv` stream: what it waits for, what it has to send, what it has sent unconfirmed.
pub(super) struct Stream {
    state: Arc<State>,
    caller: Caller,
    conn_id: u32,
    deadline: Instant,
    keepalive: Duration,
    confirm_after: Duration,
    /// Frames not yet handed to hyper: a batch, a ping, or the trailer.
    frames: VecDeque<Bytes>,
    /// The acknowledgement of the batch in `frames`.
    batch_ack: Option<PendingAck>,
    /// Batches hyper has taken whole, oldest first, and since when.
    unconfirmed: VecDeque<(PendingAck, Instant)>,
    /// When a frame was last handed to hyper.
    last_frame: Instant,
    ended: bool,
    _online: Online,
}

impl Stream {
    /// A `Recv` stream for `caller`'s connection `conn_id`, open for `lifetime` at most.
    pub(super) fn open(
        state: &Arc<State>,
        caller: Caller,
        conn_id: u32,
        lifetime: Duration,
        settings: &GrpcWebConfig,
    ) -> Stream {
        let now = Instant::now();
        let token_left = caller.token_left(state.now_unix());
        let lease = Duration::from_millis(caller.live.config.store.ack_lease_ms);
        Stream {
            _online: Online::begin(state, &caller),
            state: Arc::clone(state),
            caller,
            conn_id,
            deadline: now + lifetime.min(token_left),
            keepalive: Duration::from_secs(settings.keepalive_secs),
            confirm_after: (lease / 4).min(CONFIRM_AFTER),
            frames: VecDeque::new(),
            batch_ack: None,
            unconfirmed: VecDeque::new(),
            last_frame: now,
            ended: false,
        }
    }

    /// The answer: the headers once the first frame is due (a message, the keep-alive `Ping`
    /// or the trailer), then the stream.
    ///
    /// Until then the stream waits as a long-poll does, with nothing written: the headers of
    /// an idle stream would have hyper touch its write buffer for every waiting connection,
    /// where a waiting long-poll touches none (BENCHMARKS.md).
    pub(super) fn respond(self) -> impl std::future::Future<Output = Response> + Send {
        // Moved into the future once (an `async fn` taking `mut self` would keep two copies).
        let mut stream = self;
        async move {
            while stream.frames.is_empty() && !stream.ended {
                stream.fill().await;
            }
            let mut response = Response::new(Body::from_stream(frames(stream)));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(super::CONTENT_TYPE),
            );
            // nginx buffers proxied answers unless told otherwise; a stream must go out frame
            // by frame.
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            response
        }
    }
}

/// The stream's frames, as the response body: what an open stream keeps while it waits.
fn frames(stream: Stream) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    futures_util::stream::unfold(stream, |mut stream| async move {
        let frame = stream.next().await?;
        Some((Ok::<_, Infallible>(frame), stream))
    })
}

/// `RecvResp{msg}` in a data frame, from the stored message bytes as they are.
fn message_frame(envelope: &Envelope) -> Bytes {
    let message = &envelope.message;
    frame::data_with(bytes_field_len(message), |out| {
        put_bytes_field(out, 1, message);
    })
}

impl Stream {
    /// The next frame for hyper, or `None` once the trailer went out.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let now = Instant::now();
            self.confirm(now).await;
            if let Some(frame) = self.frames.pop_front() {
                if self.batch_ack.is_some() {
                    // A frame of a newer batch went out: the batches before it are through.
                    while let Some((ack, _)) = self.unconfirmed.pop_front() {
                        ack.send(&self.state).await;
                    }
                }
                if self.frames.is_empty() {
                    if let Some(ack) = self.batch_ack.take() {
                        self.unconfirmed.push_back((ack, now));
                    }
                }
                self.last_frame = now;
                return Some(frame);
            }
            if self.ended {
                return None;
            }
            self.fill().await;
        }
    }

    /// Acknowledges the batches that hyper took whole at least the confirmation delay ago.
    async fn confirm(&mut self, now: Instant) {
        while self
            .unconfirmed
            .front()
            .is_some_and(|(_, since)| now >= *since + self.confirm_after)
        {
            if let Some((ack, _)) = self.unconfirmed.pop_front() {
                ack.send(&self.state).await;
            }
        }
    }

    /// Waits for mail and queues it, or a ping once the stream has been quiet for the
    /// keep-alive, or the trailer.
    async fn fill(&mut self) {
        let now = Instant::now();
        if now >= self.deadline {
            return self.end(0, "", true).await;
        }
        let ping_at = self.last_frame + self.keepalive;
        if now >= ping_at {
            self.frames.push_back(frame::data(PING));
            return;
        }
        let mut until = ping_at.min(self.deadline);
        if let Some((_, since)) = self.unconfirmed.front() {
            until = until.min(*since + self.confirm_after);
        }
        let wait = until - now;
        match call::poll(
            &self.state,
            &mut self.caller,
            self.conn_id,
            wait,
            Batching::None,
        )
        .await
        {
            Err(refusal) => {
                let message = refusal.to_string();
                self.end(refusal.code().grpc(), &message, false).await;
            }
            // The connection's newer stream gets what this one has not confirmed.
            Ok(handout) if handout.superseded => self.end(0, "", false).await,
            Ok(handout) if handout.envelopes.is_empty() => {
                // Nothing the receiver may see: what was handed out is done with.
                if let Some(ack) = handout.ack {
                    ack.send(&self.state).await;
                }
                if *self.state.shutdown.borrow() {
                    self.end(0, "", true).await;
                }
            }
            Ok(handout) => {
                self.frames
                    .extend(handout.envelopes.iter().map(message_frame));
                self.batch_ack = handout.ack;
            }
        }
    }

    /// Queues the trailer that ends the stream with `code`, confirming first what was written
    /// when the stream ends in good order.
    async fn end(&mut self, code: u8, message: &str, confirm: bool) {
        if confirm {
            while let Some((ack, _)) = self.unconfirmed.pop_front() {
                ack.send(&self.state).await;
            }
        }
        self.ended = true;
        self.frames.push_back(frame::trailer(code, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open stream keeps its body (the stream's state and the future of its next frame)
    /// for as long as it stays open: with the connection it is what an idle stream costs
    /// (BENCHMARKS.md), so it must not grow unnoticed.
    #[tokio::test]
    async fn an_open_stream_keeps_a_small_body() {
        let (state, bearer) = crate::twirp::tests::state_and_bearer();
        let caller = state.admit(Some(bearer), None).unwrap();
        let stream = Stream {
            _online: Online::begin(&state, &caller),
            state: Arc::clone(&state),
            caller,
            conn_id: 20,
            deadline: Instant::now(),
            keepalive: Duration::from_secs(1),
            confirm_after: CONFIRM_AFTER,
            frames: VecDeque::new(),
            batch_ack: None,
            unconfirmed: VecDeque::new(),
            last_frame: Instant::now(),
            ended: false,
        };
        let stream_size = std::mem::size_of_val(&stream);
        let frames = frames(stream);
        let size = std::mem::size_of_val(&frames);
        println!("gRPC-web Recv stream state: {stream_size} bytes, with its next frame's future: {size} bytes");
        assert!(size <= 1536, "an open stream's body takes {size} bytes");
    }

    /// A stream waiting for its first frame is the handler's future (boxed by the router),
    /// as a waiting long-poll is: it must cost no more than Twirp's
    /// (`a_waiting_long_poll_keeps_a_small_future`).
    #[tokio::test]
    async fn a_stream_waiting_for_its_first_frame_keeps_a_small_future() {
        let (state, bearer) = crate::twirp::tests::state_and_bearer();
        let caller = state.admit(Some(bearer), None).unwrap();
        let settings = GrpcWebConfig::default();
        let waiting = Stream::open(&state, caller, 20, Duration::from_secs(1), &settings).respond();
        println!(
            "gRPC-web Recv stream waiting for its first frame: {} bytes",
            std::mem::size_of_val(&waiting)
        );
        drop(waiting);
        let request = axum::extract::Request::new(Body::empty());
        let handler = super::super::grpc(
            axum::extract::State(state),
            "Recv".to_owned(),
            None,
            request,
        );
        let size = std::mem::size_of_val(&handler);
        println!("gRPC-web Recv handler future: {size} bytes");
        assert!(
            size <= 1536,
            "the gRPC-web handler's future takes {size} bytes"
        );
    }
}
