//! A small Twirp client over HTTP/1.1: one keep-alive connection per simulated peer, as a
//! browser tab keeps one per origin for its long-poll and one for its sends.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// The path of `pulsebeam.v1.Tunnel/Send`.
pub const SEND: &str = "/twirp/pulsebeam.v1.Tunnel/Send";
/// The path of `pulsebeam.v1.Tunnel/Recv`.
pub const RECV: &str = "/twirp/pulsebeam.v1.Tunnel/Recv";
/// The path of `pulsebeam.v1.Tunnel/Prepare`.
pub const PREPARE: &str = "/twirp/pulsebeam.v1.Tunnel/Prepare";

/// Why a call did not get an HTTP answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}; is the server running?")]
    Connect {
        /// The server address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The connection failed or closed before the answer was complete.
    #[error("the connection failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a header value with forbidden bytes).
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// An HTTP answer: status and whole body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The Twirp error code of an error answer (`{"code": "...", "msg": "..."}`), if it is one.
    pub fn twirp_code(&self) -> Option<String> {
        if self.status == 200 {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        value.get("code")?.as_str().map(str::to_owned)
    }

    /// Whether the 0.0.17 client retries this answer (`resource_exhausted`, `unavailable`).
    pub fn is_retryable(&self) -> bool {
        matches!(self.status, 429 | 503)
    }
}

/// One HTTP/1.1 keep-alive connection to the server. After a [`ClientError`] it is closed;
/// open a new one.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `addr` (with `TCP_NODELAY`, as the server sets it too).
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] when the TCP connection fails, [`ClientError::Http`] when the
    /// HTTP handshake does.
    pub async fn open(addr: SocketAddr) -> Result<Self, ClientError> {
        Ok(Connection {
            sender: connect(addr).await?,
            host: addr.to_string(),
        })
    }

    /// POSTs a protobuf `body` to `path` with `Authorization: Bearer …`, and reads the answer.
    ///
    /// # Errors
    ///
    /// A [`ClientError`] when the connection fails before the answer is complete.
    pub async fn post(
        &mut self,
        path: &str,
        bearer: &str,
        body: Bytes,
    ) -> Result<Reply, ClientError> {
        let request = Request::post(path)
            .header("host", &self.host)
            .header("content-type", "application/protobuf")
            .header("authorization", bearer)
            .body(Full::new(body))?;
        self.call(request).await
    }

    /// GETs `path` (for `/metrics` and `/healthz`).
    ///
    /// # Errors
    ///
    /// A [`ClientError`] when the connection fails before the answer is complete.
    pub async fn get(&mut self, path: &str) -> Result<Reply, ClientError> {
        let request = Request::get(path)
            .header("host", &self.host)
            .body(Full::new(Bytes::new()))?;
        self.call(request).await
    }

    async fn call(&mut self, request: Request<Full<Bytes>>) -> Result<Reply, ClientError> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply { status, body })
    }
}

/// An HTTP/1.1 connection to `addr` (with `TCP_NODELAY`, as the server sets it too), driven
/// by a task of its own until the peer closes or the sender is dropped.
///
/// # Errors
///
/// [`ClientError::Connect`] when the TCP connection fails, [`ClientError::Http`] when the
/// HTTP handshake does.
pub(crate) async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, ClientError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    stream
        .set_nodelay(true)
        .map_err(|source| ClientError::Connect { addr, source })?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the peer closes or the sender is dropped; the caller sees the error.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Reads one gauge or counter (without labels) from the server's `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}
