//! Request bodies, read under the configured bounds: a size checked against the declared
//! `Content-Length` before reading and while reading, and a time limit for the whole body.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::code::{CallError, Code};
use crate::config::Limits;

fn too_large(limit: usize) -> CallError {
    CallError::new(
        Code::InvalidArgument,
        format!("the request body is larger than the {limit} bytes allowed; send smaller messages"),
    )
}

/// Refuses at once a body whose declared `Content-Length` exceeds `limit`, instead of waiting
/// for a body that will be refused anyway (a retryable timeout would make the client send it
/// again). An unparsable length is the HTTP stack's to refuse.
///
/// # Errors
///
/// `invalid_argument` naming the limit.
pub(crate) fn refuse_declared_oversize(headers: &HeaderMap, limit: usize) -> Result<(), CallError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => Err(too_large(limit)),
        _ => Ok(()),
    }
}

/// Reads a whole request body of at most `limits.max_body_bytes` within
/// `limits.body_timeout_secs`.
///
/// # Errors
///
/// `invalid_argument` for a body over the limit, `deadline_exceeded` for one that does not
/// arrive in time, `malformed` for one that breaks off.
pub(crate) async fn read(body: Body, limits: &Limits) -> Result<Bytes, CallError> {
    let limit = limits.max_body_bytes;
    let timeout = Duration::from_secs(limits.body_timeout_secs);
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| {
            CallError::new(
                Code::DeadlineExceeded,
                format!(
                    "the request body did not arrive within {} s; send it at once",
                    timeout.as_secs()
                ),
            )
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit)),
        Err(_) => Err(CallError::new(
            Code::Malformed,
            "the request body could not be read",
        )),
    }
}
