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
//! Messages are taken from the mailbox a batch at a time and acknowledged to the store once
//! every frame of the batch is written to the connection (in the kernel's send buffer; see
//! [`AfterWrite`]), as a long-poll's answer is, without waiting for a later frame: the stream's
//! next poll, which begins once the batch is written, carries the acknowledgement in its own
//! store call (one call to the store per batch instead of two); a stream that ends or goes
//! away before that acknowledges on its own. A
//! batch that is not written (the client stopped reading and the buffers are full, the
//! connection resets, the node is killed) stays unacknowledged, and the store hands it out
//! again: first to the connection's next `Recv`, or, while this stream stays open, to this
//! stream after the ack lease. What can still be lost is a batch whose bytes the kernel
//! accepted on a connection that then died silently (a half-open connection, a proxy that drops
//! the answer): TCP does not tell the sender, and gRPC-web has no acknowledgement from the
//! client. Reliable messages are deduplicated by the client, so a message handed out twice is
//! harmless.
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
use crate::serve::{start_now, AfterWrite};
use crate::state::State;
use crate::store::Envelope;

/// `RecvResp{msg: Message{payload: MessagePayload{ping: Ping{}}}}`: a message without a header,
/// which the clients log and drop (0.0.18, whose schema has no `ping`, drops it unread).
const PING: &[u8] = &[0x0a, 0x04, 0x12, 0x02, 0x2a, 0x00];

/// A `Recv` stream: what it waits for and what it has to send.
pub(super) struct Stream {
    state: Arc<State>,
    caller: Caller,
    conn_id: u32,
    deadline: Instant,
    keepalive: Duration,
    /// The connection's work to run once written; `None` when served without the serving loop
    /// (then a batch is acknowledged once hyper takes it).
    after: Option<Arc<AfterWrite>>,
    /// Frames not yet handed to hyper: a batch, a ping, or the trailer.
    frames: VecDeque<Bytes>,
    /// The acknowledgement of the batch in `frames`, or the one the poll under way carries.
    held: Held,
    /// The acknowledgement of the batch hyper took last, handed over once it is written.
    written: Option<tokio::sync::oneshot::Receiver<PendingAck>>,
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
        after: Option<Arc<AfterWrite>>,
    ) -> Stream {
        let now = Instant::now();
        let token_left = caller.token_left(state.now_unix());
        Stream {
            _online: Online::begin(state, &caller),
            state: Arc::clone(state),
            caller,
            conn_id,
            deadline: now + lifetime.min(token_left),
            keepalive: Duration::from_secs(settings.keepalive_secs),
            after,
            frames: VecDeque::new(),
            held: Held::Nothing,
            written: None,
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

impl Drop for Stream {
    fn drop(&mut self) {
        // Gone while its poll carried the acknowledgement: the store may not have it. (Not
        // when the runtime itself is gone: nothing could send it then.)
        if let Some(ack) = self.held.take_carried() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let state = Arc::clone(&self.state);
                start_now(async move { ack.send(&state).await });
            }
        }
    }
}

/// The one acknowledgement a stream holds at a time: its batch's while the batch's frames wait
/// for hyper (no poll runs then), or the one its poll carries (its frames are all taken).
enum Held {
    Nothing,
    /// Of the batch in `frames`.
    Batch(PendingAck),
    /// Carried by the poll under way, until the store has it.
    Carried(PendingAck),
}

impl Held {
    fn take_batch(&mut self) -> Option<PendingAck> {
        self.take(false)
    }

    fn take_carried(&mut self) -> Option<PendingAck> {
        self.take(true)
    }

    /// The carried acknowledgement (`carried`) or the batch's, if that is the one held.
    fn take(&mut self, carried: bool) -> Option<PendingAck> {
        match (std::mem::replace(self, Held::Nothing), carried) {
            (Held::Carried(ack), true) | (Held::Batch(ack), false) => Some(ack),
            (other, _) => {
                *self = other;
                None
            }
        }
    }

    fn carried(&self) -> Option<&PendingAck> {
        match self {
            Held::Carried(ack) => Some(ack),
            _ => None,
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
            if let Some(frame) = self.frames.pop_front() {
                if self.frames.is_empty() {
                    if let Some(ack) = self.held.take_batch() {
                        self.written = Some(self.hand_over_once_written(ack));
                    }
                }
                self.last_frame = Instant::now();
                return Some(frame);
            }
            if self.ended {
                return None;
            }
            self.fill().await;
        }
    }

    /// hyper took the batch's last frame: once the connection has written it, its
    /// acknowledgement goes to the stream's next poll, or, when the stream is gone by then, to
    /// the store on its own.
    fn hand_over_once_written(
        &self,
        ack: PendingAck,
    ) -> tokio::sync::oneshot::Receiver<PendingAck> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let state = Arc::clone(&self.state);
        let work = move || {
            if let Err(ack) = tx.send(ack) {
                start_now(async move { ack.send(&state).await });
            }
        };
        match &self.after {
            Some(after) => after.push(work),
            None => work(),
        }
        rx
    }

    /// Stores the acknowledgement this stream carries, if any, on its own.
    async fn ack_alone(&mut self) {
        if let Some(ack) = self.held.take_carried() {
            ack.send(&self.state).await;
        }
    }

    /// Waits for mail and queues it, or a ping once the stream has been quiet for the
    /// keep-alive, or the trailer.
    async fn fill(&mut self) {
        if let Some(written) = self.written.take() {
            // Not written by the stream's end: the work acknowledges it if it ever is.
            if let Ok(Ok(ack)) = tokio::time::timeout_at(self.deadline, written).await {
                // (Its batch's frames are all taken: the stream holds no other.)
                self.held = Held::Carried(ack);
            }
        }
        // What a waiting stream's future keeps is only what the poll needs: every await below
        // has its own locals (one live across two awaits would be kept by all of them).
        let Some(wait) = self.next_wait() else {
            self.ack_alone().await;
            return;
        };
        let (alone, idle) = {
            let polled = call::poll_acknowledging(
                &self.state,
                &mut self.caller,
                self.conn_id,
                wait,
                Batching::None,
                self.held.carried().map(PendingAck::receipt),
            )
            .await;
            // The poll's store call stored the acknowledgement it carried; when it failed, the
            // store may not have it, and it goes on its own.
            let carried = self.held.take_carried();
            let failed = polled.is_err();
            let (idle, done) = self.take_in(polled);
            // One acknowledgement at most goes out on its own: that one, or that of a batch
            // with nothing the receiver may see.
            (if failed { carried } else { done }, idle)
        };
        if let Some(ack) = alone {
            ack.send(&self.state).await;
        }
        if idle && *self.state.shutdown.borrow() {
            self.end(0, "");
        }
    }

    /// How long the next poll may wait, or `None` when the stream's trailer or a ping is queued
    /// instead: at its deadline, or once it has been quiet for the keep-alive.
    fn next_wait(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if now >= self.deadline {
            self.end(0, "");
            return None;
        }
        let ping_at = self.last_frame + self.keepalive;
        if now >= ping_at {
            self.frames.push_back(frame::data(PING));
            return None;
        }
        Some(ping_at.min(self.deadline) - now)
    }

    /// Queues what a poll answered: its messages, or the trailer when it refused or the stream
    /// was taken over. Says whether it answered nothing the receiver may see, with the
    /// acknowledgement of such a batch, to send at once.
    fn take_in(
        &mut self,
        polled: Result<call::Handout, call::Refusal>,
    ) -> (bool, Option<PendingAck>) {
        match polled {
            Err(refusal) => {
                let message = refusal.to_string();
                self.end(refusal.code().grpc(), &message);
                (false, None)
            }
            // The connection's newer stream takes over what this one has not written.
            Ok(handout) if handout.superseded => {
                self.end(0, "");
                (false, None)
            }
            // Nothing the receiver may see: what was handed out is done with.
            Ok(handout) if handout.envelopes.is_empty() => (true, handout.ack),
            Ok(handout) => {
                self.frames
                    .extend(handout.envelopes.iter().map(message_frame));
                if let Some(ack) = handout.ack {
                    self.held = Held::Batch(ack);
                }
                (false, None)
            }
        }
    }

    /// Queues the trailer that ends the stream with `code`.
    fn end(&mut self, code: u8, message: &str) {
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
            after: None,
            frames: VecDeque::new(),
            held: Held::Nothing,
            written: None,
            last_frame: Instant::now(),
            ended: false,
        };
        let stream_size = std::mem::size_of_val(&stream);
        let frames = frames(stream);
        let size = std::mem::size_of_val(&frames);
        println!("gRPC-web Recv stream state: {stream_size} bytes, with its next frame's future: {size} bytes");
        assert!(size <= 768, "an open stream's body takes {size} bytes");
    }

    /// A stream waiting for its first frame is the handler's future (boxed by the router),
    /// as a waiting long-poll is: it must cost no more than Twirp's
    /// (`a_waiting_long_poll_keeps_a_small_future`).
    #[tokio::test]
    async fn a_stream_waiting_for_its_first_frame_keeps_a_small_future() {
        let (state, bearer) = crate::twirp::tests::state_and_bearer();
        let caller = state.admit(Some(bearer), None).unwrap();
        let settings = GrpcWebConfig::default();
        let waiting =
            Stream::open(&state, caller, 20, Duration::from_secs(1), &settings, None).respond();
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
        // The router boxes it with its own 264 bytes: 1,024 bytes is one of jemalloc's size
        // classes, and a byte more takes the next one, 1,280.
        assert!(
            size <= 760,
            "the gRPC-web handler's future takes {size} bytes"
        );
    }

    use crate::proto::{PeerInfo, RecvReq};
    use crate::store::PeerAddr;
    use prost::Message as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

    /// One connection to the signaling routes, in memory, `capacity` bytes each way, served as
    /// the serving loop serves a TCP connection (its answers' work runs once written).
    fn connect(state: &Arc<State>, capacity: usize) -> DuplexStream {
        let (client, server) = tokio::io::duplex(capacity);
        let after = Arc::new(crate::serve::AfterWrite::default());
        let router = crate::routes::router(state, None);
        let remote = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        let service = crate::serve::WithRemote::new(&router, remote, Arc::clone(&after));
        let io = hyper_util::rt::TokioIo::new(crate::serve::WrittenIo::new(server, after));
        let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
        tokio::spawn(connection);
        client
    }

    /// Opens the `Recv` stream of `g`/`p`'s connection 20 on `client`.
    async fn open_recv(client: &mut DuplexStream, bearer: &HeaderValue) {
        let src = PeerInfo {
            group_id: "g".into(),
            peer_id: "p".into(),
            conn_id: 20,
        };
        let body = frame::data(&RecvReq { src: Some(src) }.encode_to_vec());
        let head = format!(
            "POST /grpc/pulsebeam.v1.Signaling/Recv HTTP/1.1\r\nhost: test\r\ncontent-type: application/grpc-web+proto\r\nauthorization: {}\r\ncontent-length: {}\r\n\r\n",
            bearer.to_str().unwrap(),
            body.len()
        );
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(&body).await.unwrap();
    }

    /// Stores a message of `len` bytes ending in `marker` for `g`/`p`'s connection 20.
    async fn deliver(state: &State, marker: &[u8], len: usize) {
        let mut message = vec![b'.'; len];
        message.extend_from_slice(marker);
        let dst = PeerAddr {
            project: "p",
            group: "g",
            peer: "p",
        };
        let envelope = Envelope {
            src_group: "g".into(),
            src_peer: "q".into(),
            message: message.into(),
        };
        state.store.deliver(dst, 20, envelope).await.unwrap();
    }

    fn holds(bytes: &[u8], marker: &[u8]) -> bool {
        bytes.windows(marker.len()).any(|w| w == marker)
    }

    /// Reads from `client` until `marker` has arrived; what was read.
    async fn read_until(client: &mut DuplexStream, marker: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        while !holds(&got, marker) {
            let read = tokio::time::timeout(Duration::from_secs(3), client.read_buf(&mut got))
                .await
                .unwrap_or_else(|_| panic!("{} never arrived", String::from_utf8_lossy(marker)))
                .unwrap();
            assert!(read > 0, "the connection closed");
        }
        got
    }

    /// A batch whose frame the client never read (its connection's buffers are full) is not
    /// acknowledged, however long the stream stays open: once the client gives up on the
    /// connection, its next `Recv` gets the batch again.
    #[tokio::test]
    async fn a_batch_the_client_never_read_is_handed_out_again() {
        let (state, bearer) = crate::twirp::tests::state_and_bearer();
        let mut stuck = connect(&state, 1024);
        open_recv(&mut stuck, &bearer).await;
        deliver(&state, b"<first>", 64 * 1024).await;
        // Two seconds with the stream open and its frame taken by hyper but not written.
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(stuck);
        let mut next = connect(&state, 1 << 20);
        open_recv(&mut next, &bearer).await;
        read_until(&mut next, b"<first>").await;
    }

    /// The memory store, counting the acknowledgements sent on their own and recording those
    /// polls carried.
    struct Counting {
        inner: crate::store::MemoryStore,
        alone: Receipts,
        carried: Receipts,
    }

    impl crate::store::MailboxStore for Counting {
        fn deliver<'a>(
            &'a self,
            dst: PeerAddr<'a>,
            conn_id: u32,
            envelope: Envelope,
        ) -> crate::store::BoxFuture<'a, Result<(), crate::store::StoreError>> {
            self.inner.deliver(dst, conn_id, envelope)
        }

        fn poll<'a>(
            &'a self,
            me: PeerAddr<'a>,
            conn_id: u32,
            options: crate::store::PollOptions,
        ) -> crate::store::BoxFuture<'a, Result<crate::store::Polled, crate::store::StoreError>>
        {
            self.carried
                .lock()
                .unwrap()
                .extend(options.ack.map(|r| r.0));
            self.inner.poll(me, conn_id, options)
        }

        fn ack<'a>(
            &'a self,
            me: PeerAddr<'a>,
            conn_id: u32,
            receipt: crate::store::Receipt,
        ) -> crate::store::BoxFuture<'a, Result<(), crate::store::StoreError>> {
            self.alone.lock().unwrap().push(receipt.0);
            self.inner.ack(me, conn_id, receipt)
        }

        fn online<'a>(
            &'a self,
            project: &'a str,
        ) -> crate::store::BoxFuture<
            'a,
            Result<Vec<crate::store::OnlineConnection>, crate::store::StoreError>,
        > {
            self.inner.online(project)
        }

        fn stats(
            &self,
        ) -> crate::store::BoxFuture<'_, Result<crate::store::StoreStats, crate::store::StoreError>>
        {
            self.inner.stats()
        }

        fn health(&self) -> crate::store::BoxFuture<'_, Result<(), crate::store::StoreError>> {
            self.inner.health()
        }
    }

    /// Receipts a [`Counting`] store saw.
    type Receipts = Arc<std::sync::Mutex<Vec<u64>>>;

    /// A server on a [`Counting`] memory store, a token for it, and the receipts acknowledged
    /// on their own and carried by polls.
    fn counting_server() -> (crate::Server, HeaderValue, Receipts, Receipts) {
        let (template, bearer) = crate::twirp::tests::state_and_bearer();
        let config = (*template.live.load().config).clone();
        let alone = Receipts::default();
        let carried = Receipts::default();
        let store = Counting {
            inner: crate::store::MemoryStore::new(&config.limits, Duration::from_secs(5)).unwrap(),
            alone: Arc::clone(&alone),
            carried: Arc::clone(&carried),
        };
        let server = crate::Server::builder(config).store(store).build().unwrap();
        (server, bearer, alone, carried)
    }

    /// Waits up to 3 s for `receipts` to hold more than `n`; `what` says what did not happen.
    async fn wait_for_more_than(receipts: &Receipts, n: usize, what: &str) {
        let start = Instant::now();
        while receipts.lock().unwrap().len() <= n {
            assert!(start.elapsed() < Duration::from_secs(3), "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A stream's next poll carries the acknowledgement of the batch the stream has just
    /// written, in its own store call: no acknowledgement goes to the store on its own, and
    /// each batch's receipt rides on the poll after it.
    #[tokio::test]
    async fn a_streams_next_poll_carries_the_acknowledgement_of_its_written_batch() {
        let (server, bearer, alone, carried) = counting_server();
        let state = Arc::clone(server.state());
        let mut reader = connect(&state, 1 << 20);
        open_recv(&mut reader, &bearer).await;
        for (i, marker) in [&b"<first>"[..], b"<second>", b"<third>"]
            .iter()
            .enumerate()
        {
            deliver(&state, marker, 16).await;
            read_until(&mut reader, marker).await;
            // The poll after this batch carries its receipt.
            wait_for_more_than(&carried, i, &format!("no poll carried batch {i}")).await;
        }
        let carried = carried.lock().unwrap().clone();
        assert_eq!(carried.len(), 3, "{carried:?}");
        assert!(carried.windows(2).all(|w| w[0] < w[1]), "{carried:?}");
        assert_eq!(*alone.lock().unwrap(), Vec::<u64>::new());
        // And they took effect: a new `Recv` of the connection gets none of the batches again.
        drop(reader);
        let mut next = connect(&state, 1 << 20);
        open_recv(&mut next, &bearer).await;
        deliver(&state, b"<fourth>", 16).await;
        let got = read_until(&mut next, b"<fourth>").await;
        for marker in [&b"<first>"[..], b"<second>", b"<third>"] {
            assert!(!holds(&got, marker), "a written batch was handed out again");
        }
    }

    /// A stream that goes away while its poll carries an acknowledgement sends it on its own
    /// (the store may not have stored it yet; twice does nothing).
    #[tokio::test]
    async fn a_stream_gone_while_its_poll_carries_an_acknowledgement_sends_it_alone() {
        let (server, bearer, alone, carried) = counting_server();
        let state = Arc::clone(server.state());
        let mut reader = connect(&state, 1 << 20);
        open_recv(&mut reader, &bearer).await;
        deliver(&state, b"<first>", 16).await;
        read_until(&mut reader, b"<first>").await;
        wait_for_more_than(&carried, 0, "no poll carried the batch").await;
        assert!(alone.lock().unwrap().is_empty());
        drop(reader);
        wait_for_more_than(&alone, 0, "the carried acknowledgement was not sent").await;
        assert_eq!(*alone.lock().unwrap(), *carried.lock().unwrap());
    }

    /// A batch is acknowledged once its frame is written, without waiting for a later frame or
    /// a delay: a new `Recv` of the connection right after does not get it again.
    #[tokio::test]
    async fn a_batch_is_acknowledged_once_written() {
        let (state, bearer) = crate::twirp::tests::state_and_bearer();
        let mut reader = connect(&state, 1 << 20);
        open_recv(&mut reader, &bearer).await;
        deliver(&state, b"<first>", 16).await;
        read_until(&mut reader, b"<first>").await;
        drop(reader);
        let mut next = connect(&state, 1 << 20);
        open_recv(&mut next, &bearer).await;
        deliver(&state, b"<second>", 16).await;
        let got = read_until(&mut next, b"<second>").await;
        assert!(
            !holds(&got, b"<first>"),
            "a batch written to the connection was handed out again"
        );
    }
}
