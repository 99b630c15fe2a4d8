//! Twirp error codes, their HTTP statuses, and the JSON error body.

use std::borrow::Cow;
use std::fmt;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A Twirp error code.
///
/// The 0.0.17 client treats `permission_denied`, `invalid_argument`, `aborted`, `bad_route`,
/// `malformed`, `not_found` and `unauthenticated` as fatal (it closes the peer) and retries
/// everything else; the server answers permanent conditions with the former and transient
/// ones (overload, shutdown) with `resource_exhausted` or `unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// The request is invalid whatever the server's state.
    InvalidArgument,
    /// The request body could not be decoded.
    Malformed,
    /// The token is missing or not valid.
    Unauthenticated,
    /// The token is valid but does not allow this.
    PermissionDenied,
    /// No such method, or the wrong HTTP method or content type.
    BadRoute,
    /// A limit was hit; retry later.
    ResourceExhausted,
    /// The server cannot take the call right now (e.g. shutting down); retry.
    Unavailable,
    /// The client took too long (e.g. to send its request body); retry.
    DeadlineExceeded,
    /// A bug or an unexpected failure.
    Internal,
}

impl Code {
    /// Every code this server answers with.
    pub const ALL: [Code; 9] = [
        Code::InvalidArgument,
        Code::Malformed,
        Code::Unauthenticated,
        Code::PermissionDenied,
        Code::BadRoute,
        Code::ResourceExhausted,
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::Internal,
    ];

    /// The code as Twirp writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::Malformed => "malformed",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission_denied",
            Code::BadRoute => "bad_route",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Unavailable => "unavailable",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::Internal => "internal",
        }
    }

    /// The HTTP status Twirp maps the code to.
    pub const fn status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::Malformed => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::BadRoute => StatusCode::NOT_FOUND,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::REQUEST_TIMEOUT,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Position in [`Code::ALL`], for metric arrays.
    pub(crate) const fn index(self) -> usize {
        match self {
            Code::InvalidArgument => 0,
            Code::Malformed => 1,
            Code::Unauthenticated => 2,
            Code::PermissionDenied => 3,
            Code::BadRoute => 4,
            Code::ResourceExhausted => 5,
            Code::Unavailable => 6,
            Code::DeadlineExceeded => 7,
            Code::Internal => 8,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Twirp error: a code and a message for the caller.
///
/// Messages name the problem and the fix; they never contain token bytes or secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwirpError {
    /// The code.
    pub code: Code,
    /// The message.
    pub msg: Cow<'static, str>,
}

impl TwirpError {
    /// An error with `code` and `msg`.
    pub fn new(code: Code, msg: impl Into<Cow<'static, str>>) -> Self {
        TwirpError {
            code,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for TwirpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.msg)
    }
}

impl std::error::Error for TwirpError {}

impl IntoResponse for TwirpError {
    fn into_response(self) -> Response {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            code: &'a str,
            msg: &'a str,
        }
        let body = serde_json::to_vec(&Body {
            code: self.code.as_str(),
            msg: &self.msg,
        })
        .unwrap_or_default();
        let mut response = (self.code.status(), body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_twirp_statuses_and_index_their_table() {
        for (i, code) in Code::ALL.iter().enumerate() {
            assert_eq!(code.index(), i);
        }
        assert_eq!(Code::Unauthenticated.status(), 401);
        assert_eq!(Code::PermissionDenied.status(), 403);
        assert_eq!(Code::ResourceExhausted.status(), 429);
        assert_eq!(Code::BadRoute.status(), 404);
        assert_eq!(Code::Malformed.status(), 400);
        assert_eq!(Code::Unavailable.status(), 503);
    }
}
