//! One accepted TCP connection served over TLS, in HTTP/1.1 or HTTP/2 as the client chose.
//!
//! The bounds of plain HTTP hold for both protocols: the handshake must finish within
//! `limits.header_timeout_secs`, a connection with no request in progress for that long is
//! closed (HTTP/2 with a GOAWAY), request heads are capped at `limits.max_header_bytes`, and the
//! connection ends gracefully (GOAWAY, in-flight calls finish) when the server shuts down.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::{Limits, MIN_HEADER_BYTES};
use crate::tls::Tls;

/// Calls one HTTP/2 connection carries at once: a browser's tabs on one origin share a
/// connection, each with a long-poll open; their buffered request data is bounded together by
/// the connection's flow-control window.
const MAX_STREAMS_PER_CONNECTION: u32 = 200;

/// HTTPS serving, shared by every connection of one listener.
pub(crate) struct TlsServing {
    acceptor: tokio_rustls::TlsAcceptor,
    http: auto::Builder<TokioExecutor>,
    /// For the handshake, and for a connection without a request in progress.
    idle_timeout: Duration,
}

impl TlsServing {
    pub(crate) fn new(tls: &Tls, limits: &Limits) -> Arc<Self> {
        let header_timeout = Duration::from_secs(limits.header_timeout_secs);
        let max_header_bytes = limits.max_header_bytes.max(MIN_HEADER_BYTES);
        // An HTTP/2 connection buffers at most this much request data before the handlers
        // read it (flow control), like an HTTP/1.1 body that is read as it comes.
        let window = u32::try_from(limits.max_body_bytes)
            .unwrap_or(u32::MAX)
            .max(65_535);
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(max_header_bytes)
            .keep_alive(true);
        http.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
            .initial_stream_window_size(window)
            .initial_connection_window_size(window)
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
        Arc::new(TlsServing {
            acceptor: tls.acceptor(),
            http,
            idle_timeout: header_timeout,
        })
    }

    /// Serves `tcp` until the client leaves, stays idle too long, or `shutdown` turns true.
    pub(crate) async fn serve(
        self: Arc<Self>,
        tcp: TcpStream,
        inner: super::WithRemote,
        after: Arc<super::AfterWrite>,
        shutdown: watch::Receiver<bool>,
    ) {
        let handshake = tokio::time::timeout(self.idle_timeout, self.handshake(tcp));
        let stream = tokio::select! {
            done = handshake => match done {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    // Plain HTTP to the HTTPS port, a client that distrusts the certificate, …
                    tracing::debug!(error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(
                        timeout_secs = self.idle_timeout.as_secs(),
                        "TLS handshake not completed in time; closing"
                    );
                    return;
                }
            },
            () = stopping(shutdown.clone()) => return,
        };

        let (busy, in_progress) = watch::channel(0_usize);
        let busy = Arc::new(busy);
        let service = hyper::service::service_fn(move |request| {
            let guard = Busy::enter(&busy);
            let response = inner.call(request);
            async move {
                let response = response.await;
                drop(guard);
                response
            }
        });
        let connection = self
            .http
            .serve_connection(TokioIo::new(super::WrittenIo::new(stream, after)), service);
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => Some(ended),
            () = idle(in_progress.clone(), self.idle_timeout) => None,
            () = stopping(shutdown) => None,
        };
        let ended = match ended {
            Some(ended) => ended,
            None => {
                // HTTP/2: GOAWAY, open streams finish; HTTP/1.1: the current call finishes.
                connection.as_mut().graceful_shutdown();
                // HTTP/2 sends its final GOAWAY only once the client answers a PING: a client
                // that never does is dropped once no call has been in progress for the timeout.
                tokio::select! {
                    ended = connection.as_mut() => ended,
                    () = idle(in_progress, self.idle_timeout) => {
                        tracing::debug!("closing a connection that did not finish shutting down");
                        return;
                    }
                }
            }
        };
        if let Err(err) = ended {
            tracing::debug!(error = %err, "connection ended with an error");
        }
    }

    /// The TLS handshake; a client speaking plain HTTP instead is told to use `https://`, as a
    /// browser pointed at `http://` would otherwise show only a reset connection.
    async fn handshake(
        &self,
        mut tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let mut first = [0_u8; 1];
        let [first] = match tcp.peek(&mut first).await? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => first,
        };
        if first != TLS_HANDSHAKE_RECORD && first.is_ascii_uppercase() {
            answer_plain_http(&mut tcp).await;
            return Err(std::io::Error::other(
                "plain HTTP on the HTTPS port; answered 400",
            ));
        }
        self.acceptor.accept(tcp).await
    }
}

/// The first byte a TLS client sends: the content type of a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Answers a plain-HTTP request with a 400 that says to use HTTPS, then closes gently: the
/// unread request is drained so that the close does not reset the connection (and lose the
/// answer) on the client's side. The caller's handshake timeout bounds all of it.
async fn answer_plain_http(tcp: &mut TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = "this port speaks HTTPS: use an https:// URL\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if tcp.write_all(answer.as_bytes()).await.is_err() || tcp.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0_u8; 1024];
    while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// Completes once the server shuts down (never, if the signal is gone).
async fn stopping(mut shutdown: watch::Receiver<bool>) {
    if shutdown.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Completes once no request has been in progress for `limit`.
async fn idle(mut in_progress: watch::Receiver<usize>, limit: Duration) {
    loop {
        if *in_progress.borrow_and_update() > 0 {
            if in_progress.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        }
        // Any request starting (or ending) restarts the wait.
        match tokio::time::timeout(limit, in_progress.changed()).await {
            Err(_elapsed) => return,
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => return std::future::pending().await,
        }
    }
}

/// Counts one request in progress on its connection while alive.
struct Busy(Arc<watch::Sender<usize>>);

impl Busy {
    fn enter(count: &Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Busy(Arc::clone(count))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}
