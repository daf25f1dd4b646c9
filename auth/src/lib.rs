//! Hubcast's access keys, access tokens and connection strings (spec §4.1, §4.2, §4.4, §4.6).
//!
//! The service, the Rust SDK and the load generator all use this crate, so a token minted by
//! any of them is read by the service exactly as it was meant: there is one implementation of
//! the token format, not one per side.
//!
//! Tokens are HS256 JWTs signed with one of the service's access keys, used as raw UTF-8 bytes
//! (never base64-decoded), exactly as Azure's server SDKs sign them. Either key verifies a
//! token, which is how key rotation works.
//!
//! # Layout
//! - [`KeyRing`] (`keys`): the access keys, primary first, and what a key must look like.
//! - [`ConnectionString`] (`connection_string`): Azure-style connection strings.
//! - `mint`: client access tokens ([`mint_client_token`], [`TokenRequest`]) and service
//!   tokens ([`mint_service_token`]).
//! - `verify` (feature `verify`): `verify_client_token` and `verify_service_token`.
//! - `reconnect` (feature `verify`): the reconnection tokens of reliable connections, which
//!   only the service mints and reads.
//! - `url`: the small URL parser audiences and connection strings need, the client URL
//!   ([`client_url`]), and [`path_segments`], the one way a request path splits into
//!   segments: the REST edge routes with it and service-token audiences are compared with
//!   it, so the two cannot disagree on what a path names.
//!
//! # Feature flags
//! - `verify` (off by default): what only the service does: verification, reconnection
//!   tokens and `KeyRing::random_dev`. It adds `jsonwebtoken`, whose `rust_crypto` backend
//!   brings the RSA and elliptic-curve crates along (only HS256 is accepted), and `rand`;
//!   minting needs HMAC-SHA256 alone.

use std::time::Duration;

mod connection_string;
mod keys;
mod mint;
#[cfg(feature = "verify")]
mod reconnect;
mod url;
#[cfg(feature = "verify")]
mod verify;

pub use connection_string::ConnectionString;
pub use keys::{KeyRing, MIN_KEY_LEN};
pub use mint::{
    ClientProtocol, TokenRequest, mint_client_token, mint_client_token_for, mint_service_token,
    sign_hs256,
};
#[cfg(feature = "verify")]
pub use reconnect::{RECONNECTION_TOKEN_TTL, mint_reconnection_token, verify_reconnection_token};
pub use url::{client_url, client_url_for, path_segments, percent_decode};
#[cfg(feature = "verify")]
pub use verify::{
    ClientClaims, verify_client_token, verify_client_token_for, verify_service_token,
    verify_tunnel_token,
};

/// Leeway applied to `exp` and `nbf` so that clocks a few minutes apart still agree.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Token lifetime the Azure SDKs use when the caller does not choose one.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);

/// The path a gRPC control-plane token's audience names after the endpoint: the full name
/// of the service, so `aud` is e.g. `http://127.0.0.1:8080/hubcast.v1.Control`.
pub const GRPC_AUDIENCE_PATH: &str = "/hubcast.v1.Control";

/// The audience path of the gRPC event stream (`hubcast.v1.Events`): a backend that listens
/// to events needs a token for it; a control-plane token or a client's access token does not
/// open the stream.
pub const EVENTS_AUDIENCE_PATH: &str = "/hubcast.v1.Events";

/// What a service token's audience names after the endpoint for operator tooling: the
/// `hubcast.v1.Admin` gRPC service (the live trace) and its HTTP form, `GET /api/trace`. A
/// token of its own, so that a backend's control-plane token does not open the live trace.
pub const ADMIN_AUDIENCE_PATH: &str = "/hubcast.v1.Admin";

/// Why a key, token or connection string was refused.
///
/// The `Display` text of the token variants is what the client sees in the 401 body: precise
/// enough to fix the token, and never containing a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// An access key is unusable (empty key list, too short, or not fit for a connection
    /// string). The message names the key by position, never by value.
    #[error("invalid access key: {0}")]
    InvalidKey(String),
    /// A connection string could not be parsed. The message never contains the key.
    #[error("invalid connection string: {0}")]
    InvalidConnectionString(String),
    /// No token was presented where one is required (for edges that check this).
    #[error(
        "no access token: pass `access_token` in the query string or an `Authorization: Bearer` header"
    )]
    MissingToken,
    /// The token is not a JWT: not three base64url segments, or a header/payload that is not
    /// a JSON object.
    #[error(
        "malformed access token: expected a JWT (three base64url segments with a JSON header and claims)"
    )]
    Malformed,
    /// The token header names an algorithm other than HS256 (including `none`).
    #[error("unsupported access token algorithm: only HS256 is accepted")]
    UnsupportedAlgorithm,
    /// The signature does not verify with any access key of this service.
    #[error("invalid access token signature: not signed with an access key of this service")]
    BadSignature,
    /// `exp` is in the past by more than [`CLOCK_SKEW`].
    #[error("access token has expired")]
    Expired,
    /// `nbf` is in the future by more than [`CLOCK_SKEW`].
    #[error("access token is not valid yet (`nbf` is in the future)")]
    NotYetValid,
    /// A required claim (`exp`, `aud`) is absent.
    #[error("access token has no `{0}` claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type (e.g. a number where a string is expected).
    #[error("access token claim `{0}` has an invalid value")]
    InvalidClaim(&'static str),
    /// The `aud` claim names another endpoint or hub.
    #[error("access token audience `{found}` does not match `{expected}`")]
    WrongAudience {
        /// The audience this endpoint and hub expect.
        expected: String,
        /// The audience found in the token.
        found: String,
    },
}
