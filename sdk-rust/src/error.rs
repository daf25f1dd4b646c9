//! The SDK's error type: an opaque [`Error`] with predicates, so new kinds can be added
//! without breaking callers.

use std::fmt;

/// A boxed error from another library or from the application (a URL provider's failure).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A `Result` whose error is the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of the Hubcast SDK.
///
/// The kind is private: ask with the `is_*` predicates (and read details with
/// [`Error::http_status`], [`Error::close_code`], [`Error::ack_error_name`], ...). The
/// underlying error, if any, is available through [`std::error::Error::source`].
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
    source: Option<BoxError>,
}

#[derive(Debug)]
pub(crate) enum Kind {
    /// An option or argument is invalid (bad URL, ack id already in use, ...).
    InvalidArgument(String),
    /// The URL provider failed.
    UrlProvider,
    /// The TCP connection or the WebSocket handshake failed without an HTTP status.
    Connect,
    /// The service refused the WebSocket upgrade with this HTTP status.
    Http(u16),
    /// The connection was closed (by the service, or it was lost) before the operation
    /// could complete.
    Closed { code: Option<u16>, reason: String },
    /// No answer in time (a connect, or an ack after every retry).
    Timeout(&'static str),
    /// The service answered a request with an error ack.
    Ack {
        ack_id: u64,
        name: String,
        message: String,
    },
    /// The upstream refused or failed an invocation, or the service gave up on it.
    Invocation {
        invocation_id: String,
        name: String,
        message: String,
    },
    /// The service refused a group stream's chunk, or ended the stream.
    Stream {
        stream_id: String,
        name: String,
        message: String,
    },
    /// A payload could not be serialized.
    Encode,
    /// A message or payload could not be deserialized.
    Decode,
    /// The client was stopped (by [`crate::Client::stop`], by dropping every handle, or
    /// because it gave up reconnecting).
    Stopped,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Self {
            inner: Box::new(Inner { kind, source: None }),
        }
    }

    pub(crate) fn with_source(kind: Kind, source: impl Into<BoxError>) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                source: Some(source.into()),
            }),
        }
    }

    pub(crate) fn invalid_argument(what: impl Into<String>) -> Self {
        Self::new(Kind::InvalidArgument(what.into()))
    }

    pub(crate) fn stopped() -> Self {
        Self::new(Kind::Stopped)
    }

    pub(crate) fn kind(&self) -> &Kind {
        &self.inner.kind
    }

    /// The service refused the connection because the access token is missing, invalid or
    /// expired (HTTP 401), or does not grant access (HTTP 403).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self.inner.kind, Kind::Http(401 | 403))
    }

    /// The connection could not be established: TCP or WebSocket handshake failure, or the
    /// service refused the upgrade with an HTTP status (see [`Error::http_status`]).
    pub fn is_connect(&self) -> bool {
        matches!(self.inner.kind, Kind::Connect | Kind::Http(_))
    }

    /// The connection was closed, or lost, before the operation completed (see
    /// [`Error::close_code`]).
    pub fn is_closed(&self) -> bool {
        matches!(self.inner.kind, Kind::Closed { .. })
    }

    /// No answer in time: the connection (handshake and `connected` message) took longer than
    /// the connect timeout, or a request was not acknowledged after every retry.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, Kind::Timeout(_))
    }

    /// The service answered the request with an error ack (see [`Error::ack_error_name`]).
    pub fn is_ack(&self) -> bool {
        matches!(self.inner.kind, Kind::Ack { .. })
    }

    /// The service refused the request for lack of permission (ack error `Forbidden`).
    pub fn is_forbidden(&self) -> bool {
        self.ack_error_name() == Some("Forbidden")
    }

    /// An invocation ([`crate::Client::invoke_event`]) failed at the service: the upstream
    /// refused or failed it, or the service gave up (see [`Error::invocation_error_name`]).
    pub fn is_invocation(&self) -> bool {
        matches!(self.inner.kind, Kind::Invocation { .. })
    }

    /// The service's name for a failed invocation: `BadRequest`, `Unauthorized`, `Forbidden`,
    /// `NotFound`, `InternalServerError`, `Timeout`, `Duplicate`.
    pub fn invocation_error_name(&self) -> Option<&str> {
        match &self.inner.kind {
            Kind::Invocation { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The message of a failed invocation (the upstream's own words for a refusal).
    pub fn invocation_error_message(&self) -> Option<&str> {
        match &self.inner.kind {
            Kind::Invocation { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The service refused a group stream's chunk (`InvalidSequenceId`, `BadRequest`) or ended
    /// the stream (`IdleTimeout`, `StreamNotFound`, `Forbidden`, ...); see
    /// [`Error::stream_error_name`].
    pub fn is_stream(&self) -> bool {
        matches!(self.inner.kind, Kind::Stream { .. })
    }

    /// The service's name for a refused chunk or an ended group stream.
    pub fn stream_error_name(&self) -> Option<&str> {
        match &self.inner.kind {
            Kind::Stream { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The client was stopped before the operation completed, or is stopped already.
    pub fn is_stopped(&self) -> bool {
        matches!(self.inner.kind, Kind::Stopped)
    }

    /// An option or argument is invalid.
    pub fn is_invalid_argument(&self) -> bool {
        matches!(self.inner.kind, Kind::InvalidArgument(_))
    }

    /// The URL provider failed (its error is the [`std::error::Error::source`]).
    pub fn is_url_provider(&self) -> bool {
        matches!(self.inner.kind, Kind::UrlProvider)
    }

    /// A payload could not be serialized.
    pub fn is_encode(&self) -> bool {
        matches!(self.inner.kind, Kind::Encode)
    }

    /// A payload could not be deserialized into the requested type, or a frame from the
    /// service could not be decoded.
    pub fn is_decode(&self) -> bool {
        matches!(self.inner.kind, Kind::Decode)
    }

    /// The HTTP status with which the service refused the WebSocket upgrade.
    pub fn http_status(&self) -> Option<u16> {
        match self.inner.kind {
            Kind::Http(status) => Some(status),
            _ => None,
        }
    }

    /// The WebSocket close code, for an error caused by a close that carried one.
    pub fn close_code(&self) -> Option<u16> {
        match self.inner.kind {
            Kind::Closed { code, .. } => code,
            _ => None,
        }
    }

    /// The error name of an error ack: `Forbidden`, `BadRequest`, `InternalServerError`, or
    /// another name the service chose.
    pub fn ack_error_name(&self) -> Option<&str> {
        match &self.inner.kind {
            Kind::Ack { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The ack id of the request an error ack answered.
    pub fn ack_id(&self) -> Option<u64> {
        match self.inner.kind {
            Kind::Ack { ack_id, .. } => Some(ack_id),
            _ => None,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.kind {
            Kind::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Kind::UrlProvider => f.write_str("the URL provider failed"),
            Kind::Connect => f.write_str("cannot connect"),
            Kind::Http(status) => write!(f, "the service refused the connection: HTTP {status}"),
            Kind::Closed { code, reason } => {
                f.write_str("the connection was closed")?;
                if let Some(code) = code {
                    write!(f, " with code {code}")?;
                }
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
            Kind::Timeout(what) => write!(f, "timed out: {what}"),
            Kind::Ack {
                ack_id,
                name,
                message,
            } => write!(f, "request {ack_id} failed: {name}: {message}"),
            Kind::Invocation {
                invocation_id,
                name,
                message,
            } => write!(f, "invocation {invocation_id} failed: {name}: {message}"),
            Kind::Stream {
                stream_id,
                name,
                message,
            } => write!(f, "stream {stream_id}: {name}: {message}"),
            Kind::Encode => f.write_str("cannot encode the payload"),
            Kind::Decode => f.write_str("cannot decode"),
            Kind::Stopped => f.write_str("the client is stopped"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| &**e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_follow_the_kind() {
        let e = Error::new(Kind::Http(401));
        assert!(e.is_unauthorized() && e.is_connect());
        assert_eq!(e.http_status(), Some(401));
        let e = Error::new(Kind::Ack {
            ack_id: 3,
            name: "Forbidden".into(),
            message: "no".into(),
        });
        assert!(e.is_ack() && e.is_forbidden() && !e.is_timeout());
        assert_eq!(
            (e.ack_id(), e.ack_error_name()),
            (Some(3), Some("Forbidden"))
        );
        assert_eq!(e.to_string(), "request 3 failed: Forbidden: no");
        let e = Error::new(Kind::Closed {
            code: Some(1008),
            reason: "gone".into(),
        });
        assert_eq!(e.close_code(), Some(1008));
        assert_eq!(
            e.to_string(),
            "the connection was closed with code 1008: gone"
        );
    }

    #[test]
    fn errors_are_send_sync_and_keep_their_source() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        let io = std::io::Error::other("boom");
        let e = Error::with_source(Kind::Connect, io);
        let source = std::error::Error::source(&e).expect("source");
        assert_eq!(source.to_string(), "boom");
    }
}
