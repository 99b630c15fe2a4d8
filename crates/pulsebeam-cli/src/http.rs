//! One plain-HTTP/1.1 call to a server of ours, for `pulsebeam admin` (the admin listener) and
//! `pulsebeam health` (a node's `/healthz`): both talk to an address on a private network or
//! loopback, so `http://` only.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

/// An `http://` URL taken apart: `host:port` and the path prefix (without slashes at its ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) authority: String,
    pub(crate) prefix: String,
}

/// Reads `url` (`http://host[:port][/prefix]`, port 80 by default).
///
/// # Errors
///
/// A message naming the problem, for a URL that is not `http://` or has no host.
pub(crate) fn target(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        authority,
        prefix: prefix.trim_end_matches('/').to_owned(),
    })
}

impl Target {
    /// `path` under the prefix.
    pub(crate) fn path(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_owned()
        } else {
            format!("/{}{path}", self.prefix)
        }
    }
}

/// Makes one call and returns the status and body, all within `timeout`.
///
/// # Errors
///
/// The connection's or the HTTP layer's error as text, or that no answer came in time.
pub(crate) fn call(
    target: &Target,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Bytes,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(target.path(path))
        .header("host", &target.authority);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, async {
            let stream = tokio::net::TcpStream::connect(&target.authority)
                .await
                .map_err(|e| e.to_string())?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, bytes))
        })
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        let t = target("http://127.0.0.1:3001").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path("/x").as_str()),
            ("127.0.0.1:3001", "/x")
        );
        let t = target("http://admin.internal/base/").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path("/x").as_str()),
            ("admin.internal:80", "/base/x")
        );
        assert!(target("https://x").is_err());
        assert!(target("http://").is_err());
    }
}
