//! A small gRPC-web client for `pulsebeam.v1.Signaling`, as the 0.0.18 to 0.1.0-rc.2 browser
//! clients speak it: binary frames over HTTP/1.1, the token on unary calls, `Recv` a stream read
//! frame by frame.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;

use crate::client::ClientError;

/// The service path prefix under the `/grpc` base URL.
pub const SIGNALING: &str = "/grpc/pulsebeam.v1.Signaling";

/// What a frame of a gRPC-web answer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message.
    Data(Bytes),
    /// The end of the call: `grpc-status` and `grpc-message`.
    Status(u8, String),
}

/// A gRPC-web request body: `message` in one data frame.
pub fn framed(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    out.freeze()
}

/// Takes the complete frames off the front of `buf`.
fn take_frames(buf: &mut BytesMut, out: &mut Vec<Frame>) {
    while let Some(&[flag, a, b, c, d]) = buf.first_chunk::<5>() {
        let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX);
        if buf.len().saturating_sub(5) < len {
            return;
        }
        buf.advance(5);
        let payload = buf.split_to(len).freeze();
        if flag & 0x80 != 0 {
            out.push(parse_trailer(&payload));
        } else {
            out.push(Frame::Data(payload));
        }
    }
}

fn parse_trailer(payload: &[u8]) -> Frame {
    let text = String::from_utf8_lossy(payload);
    let mut status = 2; // UNKNOWN, until the trailer says
    let mut message = String::new();
    for line in text.split("\r\n") {
        match line.split_once(':') {
            Some(("grpc-status", v)) => status = v.trim().parse().unwrap_or(2),
            Some(("grpc-message", v)) => v.trim().clone_into(&mut message),
            _ => {}
        }
    }
    Frame::Status(status, message)
}

/// One HTTP/1.1 keep-alive connection for gRPC-web calls, one at a time (a unary call is read
/// to its end before the next goes out, as on a browser's connection).
pub struct GrpcConnection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl std::fmt::Debug for GrpcConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcConnection")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl GrpcConnection {
    /// Connects to `addr` (with `TCP_NODELAY`).
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] or [`ClientError::Http`].
    pub async fn open(addr: SocketAddr) -> Result<Self, ClientError> {
        Ok(GrpcConnection {
            sender: crate::client::connect(addr).await?,
            host: addr.to_string(),
        })
    }

    /// Starts a call to `path` with `bearer` (the whole `Authorization` value) if given.
    ///
    /// # Errors
    ///
    /// A [`ClientError`] when the connection fails before the answer's head arrives.
    pub async fn call(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        message: &[u8],
    ) -> Result<Call, ClientError> {
        let mut request = Request::post(path)
            .header("host", &self.host)
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .header("grpc-timeout", "900000m");
        if let Some(bearer) = bearer {
            request = request.header("authorization", bearer);
        }
        self.sender.ready().await?;
        let response = self
            .sender
            .send_request(request.body(Full::new(framed(message)))?)
            .await?;
        let header_status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Call {
            body: response.into_body(),
            buf: BytesMut::new(),
            ready: std::collections::VecDeque::new(),
            header_status,
        })
    }
}

/// One gRPC-web call in progress: its answer read frame by frame.
pub struct Call {
    body: hyper::body::Incoming,
    buf: BytesMut,
    ready: std::collections::VecDeque<Frame>,
    /// `grpc-status` from the answer's headers (an error before any data).
    pub header_status: Option<u8>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").finish_non_exhaustive()
    }
}

impl Call {
    /// Opens a call to `path` on a fresh connection to `addr`, with `bearer` (the whole
    /// `Authorization` value) if given, and `message` as the request.
    ///
    /// # Errors
    ///
    /// A [`ClientError`] when the connection fails before the answer's head arrives.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        bearer: Option<&str>,
        message: &[u8],
    ) -> Result<Call, ClientError> {
        GrpcConnection::open(addr)
            .await?
            .call(path, bearer, message)
            .await
    }

    /// The next frame, or `None` when the answer ended (or nothing came within `within`).
    ///
    /// # Errors
    ///
    /// A [`ClientError`] when the connection fails mid-answer.
    pub async fn next(&mut self, within: Duration) -> Result<Option<Frame>, ClientError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Ok(Some(frame));
            }
            let Ok(frame) = tokio::time::timeout_at(deadline, self.body.frame()).await else {
                return Ok(None);
            };
            match frame {
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                        let mut frames = Vec::new();
                        take_frames(&mut self.buf, &mut frames);
                        self.ready.extend(frames);
                    }
                }
                None => return Ok(None),
            }
        }
    }

    /// Reads to the end: the data frames and the status.
    ///
    /// # Errors
    ///
    /// A [`ClientError`] when the connection fails mid-answer.
    pub async fn finish(
        mut self,
        within: Duration,
    ) -> Result<(Vec<Bytes>, Option<(u8, String)>), ClientError> {
        let mut data = Vec::new();
        while let Some(frame) = self.next(within).await? {
            match frame {
                Frame::Data(bytes) => data.push(bytes),
                Frame::Status(code, message) => return Ok((data, Some((code, message)))),
            }
        }
        Ok((data, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_and_trailers_read() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&framed(b"abc"));
        buf.extend_from_slice(&framed(b""));
        let trailer = b"grpc-status:16\r\ngrpc-message:revoked\r\n";
        buf.extend_from_slice(&[0x80, 0, 0, 0, 38]);
        assert_eq!(trailer.len(), 38);
        buf.extend_from_slice(trailer);
        buf.extend_from_slice(&[0, 0, 0]);
        let mut out = Vec::new();
        take_frames(&mut buf, &mut out);
        assert_eq!(
            out,
            [
                Frame::Data(Bytes::from_static(b"abc")),
                Frame::Data(Bytes::new()),
                Frame::Status(16, "revoked".into())
            ]
        );
        assert_eq!(buf.len(), 3, "a partial frame stays");
    }
}
