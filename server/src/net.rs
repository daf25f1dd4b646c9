//! What the listeners learn about a peer and hand to the edges.
//!
//! The composition root ([`crate::Server`]) accepts sockets and the edges read what it
//! learned from each request; this module sits below both so neither imports the other.

use std::net::SocketAddr;

/// The address of the peer of an HTTP connection, put in each request's extensions by the
/// HTTP accept loop and read by the edges (shown in connection details).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);
