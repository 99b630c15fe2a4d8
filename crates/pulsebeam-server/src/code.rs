//! The error codes a call can end with, and how each protocol writes them: Twirp's name and
//! HTTP status, gRPC's status number. The mapping lives here, beside the codes, so the Twirp and
//! the gRPC-web adapters cannot disagree on what a failure means to the client.

use std::borrow::Cow;
use std::fmt;

use axum::http::StatusCode;

/// An error code, named as Twirp names it.
///
/// The 0.0.17 client treats `permission_denied`, `invalid_argument`, `aborted`, `bad_route`,
/// `malformed`, `not_found` and `unauthenticated` as fatal (it closes the peer) and retries
/// everything else; the gRPC-web clients (0.0.18 on) treat `PERMISSION_DENIED`,
/// `INVALID_ARGUMENT`, `ABORTED`, `NOT_FOUND` and `UNAUTHENTICATED` as fatal. The server answers
/// permanent conditions with codes that are fatal to both and transient ones (overload,
/// shutdown) with `resource_exhausted` or `unavailable`, which both retry.
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

    /// The gRPC status code (`grpc-status`) that gRPC-web answers with.
    pub const fn grpc(self) -> u8 {
        match self {
            // A body that does not decode is a bad argument to gRPC (it has no `malformed`).
            Code::InvalidArgument | Code::Malformed => 3,
            Code::DeadlineExceeded => 4,
            Code::PermissionDenied => 7,
            Code::ResourceExhausted => 8,
            Code::BadRoute => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::Unauthenticated => 16,
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

/// A call's failure as the client sees it: a code and a message, written by each protocol
/// adapter in its own way (Twirp: HTTP status and JSON body; gRPC-web: `grpc-status` and
/// `grpc-message`).
///
/// Messages name the problem and the fix; they never contain token bytes or secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// The code.
    pub code: Code,
    /// The message.
    pub msg: Cow<'static, str>,
}

impl CallError {
    /// An error with `code` and `msg`.
    pub fn new(code: Code, msg: impl Into<Cow<'static, str>>) -> Self {
        CallError {
            code,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.msg)
    }
}

impl std::error::Error for CallError {}

/// The name this type had when Twirp was the only protocol.
pub type TwirpError = CallError;

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

    #[test]
    fn codes_map_to_grpc_statuses_that_the_clients_read_alike() {
        // Fatal to the 0.0.17 Twirp client exactly when fatal to the gRPC-web clients.
        const GRPC_FATAL: [u8; 5] = [7, 3, 10, 5, 16];
        const TWIRP_FATAL: [&str; 7] = [
            "permission_denied",
            "invalid_argument",
            "aborted",
            "bad_route",
            "malformed",
            "not_found",
            "unauthenticated",
        ];
        for code in Code::ALL {
            let twirp_fatal = TWIRP_FATAL.contains(&code.as_str());
            let grpc_fatal = GRPC_FATAL.contains(&code.grpc());
            // An unknown method is fatal in Twirp; gRPC's UNIMPLEMENTED is retried, which is
            // harmless for a client that calls a method this server lacks.
            if code != Code::BadRoute {
                assert_eq!(twirp_fatal, grpc_fatal, "{code}");
            }
        }
        assert_eq!(Code::Unauthenticated.grpc(), 16);
        assert_eq!(Code::ResourceExhausted.grpc(), 8);
        assert_eq!(Code::Unavailable.grpc(), 14);
        assert_eq!(Code::BadRoute.grpc(), 12);
    }
}
