//! Hardened HTTP serving, one loop for every listener (the signaling listener and the admin
//! API's): a cap on open connections, timeouts for request heads and idle connections, a bound
//! on head size, TLS with HTTP/1.1 or HTTP/2 where configured, the client's address on every
//! request, and a graceful drain on shutdown.

mod tls;
mod written;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Limits, MIN_HEADER_BYTES};
use crate::state::RemoteAddr;

pub(crate) use tls::TlsServing;
pub(crate) use written::{start_now, AfterWrite, WrittenIo};

/// Serves `router` on `listener` until `stop` completes, then calls `on_stop`, stops accepting
/// and drains: open calls get up to `limits.shutdown_grace_secs` to finish.
///
/// Every connection is bounded: request heads must arrive within `limits.header_timeout_secs`
/// (also between requests on a kept-alive connection) and hold at most
/// `limits.max_header_bytes`, and at most `limits.max_open_connections` TCP connections are
/// served at once (further clients wait in the listen backlog). With `tls` the listener speaks
/// HTTPS only, HTTP/1.1 or HTTP/2 by ALPN, under the same bounds (the handshake too must finish
/// within the header timeout).
///
/// # Errors
///
/// None today: accept errors (a reset before accept, running out of file descriptors) are
/// logged and retried; the result is kept for listeners that can fail for good.
pub(crate) async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    tls: Option<Arc<TlsServing>>,
    stop: impl Future<Output = ()>,
    on_stop: impl FnOnce(),
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_timeout_secs))
        // Bounds the request head (431 beyond); validated to be at least hyper's minimum.
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .keep_alive(true);
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_open_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // HTTPS connections watch this instead of `graceful`.
    let (draining, _) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            () = &mut stop => break,
            permit = Arc::clone(&open).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, remote) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Per-connection failures (reset before accept) and resource exhaustion
                    // (EMFILE) are transient: pause briefly instead of ending the server.
                    tracing::warn!(error = %err, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small request/response pairs: do not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        // Every request of the connection carries the client's address (for the audit trail)
        // and the connection's work to run once its answers are written.
        let after = Arc::new(AfterWrite::default());
        let service = WithRemote::new(&router, remote, Arc::clone(&after));
        // HTTPS: the TLS connection, HTTP/1.1 or HTTP/2, holds the permit until it ends.
        if let Some(tls) = &tls {
            let serving = Arc::clone(tls).serve(tcp, service, after, draining.subscribe());
            tokio::spawn(async move {
                serving.await;
                drop(permit);
            });
            continue;
        }
        let connection = http.serve_connection(TokioIo::new(WrittenIo::new(tcp, after)), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are one client's broken or timed-out connection.
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    on_stop();
    draining.send_replace(true);
    let grace = Duration::from_secs(limits.shutdown_grace_secs);
    let drained = async {
        graceful.shutdown().await;
        // Every connection holds a permit until it ends.
        let all = u32::try_from(limits.max_open_connections).unwrap_or(u32::MAX);
        let _ = open.acquire_many(all).await;
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "shutdown grace period over; closing remaining connections"
        );
    }
    Ok(())
}

/// The router as one connection's service: every request gets the client's address as a
/// [`RemoteAddr`] extension on its way in, and the connection's [`AfterWrite`].
///
/// A connection holds only a clone of the shared router (a reference count) and the address;
/// layering the router per connection (`router.layer(Extension(..))`) would instead rebuild
/// every route of the table for each connection and keep that copy for as long as it stays open,
/// which is most of an idle long-poll's memory.
#[derive(Clone)]
pub(crate) struct WithRemote {
    router: TowerToHyperService<Router>,
    remote: SocketAddr,
    after: Arc<AfterWrite>,
}

impl WithRemote {
    pub(crate) fn new(router: &Router, remote: SocketAddr, after: Arc<AfterWrite>) -> Self {
        WithRemote {
            router: TowerToHyperService::new(router.clone()),
            remote,
            after,
        }
    }
}

impl<B> hyper::service::Service<Request<B>> for WithRemote
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = TowerToHyperServiceFuture<Router, Request<B>>;

    fn call(&self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(RemoteAddr(self.remote));
        request.extensions_mut().insert(Arc::clone(&self.after));
        self.router.call(request)
    }
}
