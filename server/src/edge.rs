//! The edges: one module per wire protocol a caller speaks to Hubcast.
//!
//! An edge parses its wire protocol, authenticates the caller, then calls the service layer
//! ([`crate::node`]) for every operation; it keeps no routing state of its own and never
//! talks to the backplane. Its only other job is mapping the service layer's
//! [`ErrorCode`](crate::error::ErrorCode) to its wire form, in one function.
//!
//! A new edge: its own folder here, proto changes, a config section and limits, a `protocol`
//! label on metrics and spans; bad-input tests and a fuzz target for its parser, cluster tests,
//! a load-generator scenario, a README section and a RELIABILITY.md row.

pub(crate) mod admin;
pub(crate) mod grpc;
pub(crate) mod mqtt;
pub(crate) mod rest;
pub(crate) mod socketio;
pub(crate) mod tunnel;
pub(crate) mod ws;

/// The token of an `Authorization: Bearer <token>` header value (`bearer` accepted too), the
/// one reading of it for every edge.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}
