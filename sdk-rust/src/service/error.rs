//! The SDK's error type.

/// Why a [`ServiceClient`](crate::ServiceClient) call failed.
///
/// Server refusals are classified by their gRPC status code, each variant carrying the
/// server's explanation; codes without a variant of their own arrive as [`ServiceError::Status`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The connection string could not be parsed (the message never contains the key).
    #[error("invalid connection string: {0}")]
    InvalidConnectionString(String),
    /// The gRPC address is not a valid `host:port` or `http(s)://host:port`.
    #[error("invalid gRPC address '{address}': {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting to the gRPC address failed.
    #[error("cannot connect to the Hubcast control plane: {0}")]
    Connect(#[source] tonic::transport::Error),
    /// The request was refused as invalid (`INVALID_ARGUMENT`): a bad hub or group name, an
    /// invalid OData filter, a TTL above 300 s, an invalid JSON payload, an option the
    /// operation does not take.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The connection addressed does not exist (`NOT_FOUND`).
    #[error("not found: {0}")]
    NotFound(String),
    /// The service refused the credentials (`UNAUTHENTICATED`): a wrong access key, or a
    /// connection string for another endpoint.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The service cannot be reached or is shutting down (`UNAVAILABLE`).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Any other gRPC status.
    #[error("gRPC status {}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
}

impl ServiceError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ServiceError::Unavailable(_) | ServiceError::Connect(_)
        )
    }
}

impl From<tonic::Status> for ServiceError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::InvalidArgument => ServiceError::InvalidArgument(message),
            tonic::Code::NotFound => ServiceError::NotFound(message),
            tonic::Code::Unauthenticated => ServiceError::Unauthenticated(message),
            tonic::Code::Unavailable => ServiceError::Unavailable(message),
            _ => ServiceError::Status(status),
        }
    }
}
