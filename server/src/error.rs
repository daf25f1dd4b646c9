//! Error classification shared by every edge.
//!
//! Modules keep their own precise error enums; each implements [`Classify`] to say which
//! [`ErrorCode`] it is. The edges map an `ErrorCode` to their wire form exactly once: the gRPC
//! edge to a `tonic::Code`, the REST edge to an HTTP status and Azure's error body. The core
//! never depends on `tonic::Status` or `warp::Rejection`.

use std::fmt;

/// What kind of failure an error is, independent of any wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or invalid (bad name, filter, payload, limit).
    BadRequest,
    /// No valid credentials were presented.
    Unauthenticated,
    /// Valid credentials, but not for this operation.
    PermissionDenied,
    /// The thing addressed does not exist (a connection, usually).
    NotFound,
    /// The request body is too large.
    PayloadTooLarge,
    /// The request body has a media type the operation does not take.
    UnsupportedMediaType,
    /// The service cannot take the request now (shutting down).
    Unavailable,
    /// The caller did not send its request in time (a REST body that trickles).
    Timeout,
    /// A bug or an unexpected failure; the details are logged, never sent.
    Internal,
}

impl ErrorCode {
    /// A stable name for logs and Azure's `code` field (`Error.<Name>`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BadRequest",
            ErrorCode::Unauthenticated => "Unauthorized",
            ErrorCode::PermissionDenied => "Forbidden",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::PayloadTooLarge => "PayloadTooLarge",
            ErrorCode::UnsupportedMediaType => "UnsupportedMediaType",
            ErrorCode::Unavailable => "ServiceUnavailable",
            ErrorCode::Timeout => "RequestTimeout",
            ErrorCode::Internal => "InternalServerError",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Implemented by every error that can reach an edge.
pub trait Classify {
    /// The kind of failure.
    fn code(&self) -> ErrorCode;
}
