//! Hubcast server: a self-hosted, Azure Web PubSub compatible real-time messaging service.
//!
//! # Layout
//! The data flows one way: edge → service layer (`node`) → [`router`] (and, in a
//! cluster, the backplane). `tests/layout.rs` checks the import rules below.
//! - [`router`]: the core. Hubs, connections, users, groups, permissions and fan-out. It
//!   knows nothing of HTTP, warp, tonic, Redis or the configuration layer; in a cluster it
//!   knows only this node's id (the prefix of the connection ids it hands out). Hub names
//!   reach it as [`router::HubKey`]s, validated and lower-cased once where they enter.
//! - [`message`]: the message model (messages, payloads, frames, wire formats, queued items)
//!   below both the router and the codecs: router → protocol → message, never back. Its
//!   [`message::close`] holds every WebSocket close code the server sends.
//! - [`protocol`]: the client subprotocols (simple WebSocket, `json.webpubsub.azure.v1`):
//!   parsing client frames and encoding server messages once per wire format; it imports
//!   the model, never the router.
//! - `node`: the service layer. One implementation of every operation (sends, groups, users,
//!   permissions, closes, listings, a client's group send), called by every edge;
//!   `node/routing.rs` runs each where it must: here, on the owner of a connection, or on
//!   every node of a cluster.
//! - `edge`: one module per wire protocol, each parsing its protocol, authenticating and
//!   calling the service layer: `edge/ws` (the WebSocket edge at `/client/hubs/{hub}`),
//!   `edge/mqtt` (MQTT 3.1.1/5.0 over WebSocket at `/clients/mqtt/hubs/{hub}`),
//!   `edge/socketio` (Engine.IO v4 / Socket.IO v5 at `/clients/socketio/hubs/{hub}`),
//!   `edge/tunnel` (Azure's tunnel at `/server/tunnel`, through which backends dial in),
//!   `edge/rest` (Azure's REST API, on the HTTP listener) and `edge/grpc`
//!   (`hubcast.v1.Control` with health and reflection, on `grpc_listen`). An edge never
//!   imports the backplane, the composition root or the router itself: client edges admit,
//!   register, join, leave and send through the service layer (`node/client.rs`).
//! - [`cluster`]: the Redis backplane, beside the router: started and owned by [`Server`],
//!   handed to the service layer and the upstream; the requests of other nodes come out of
//!   it as a queue the service layer consumes, and the events they relay to this node's
//!   event-stream listeners as a queue the upstream consumes. Its tasks end before
//!   [`Server`] returns.
//! - `upstream`: upstream events (spec §6): CloudEvents webhooks, `tunnel:///` handlers
//!   and the gRPC event stream (`hubcast.v1.Events/Listen`), behind one API the client
//!   edges call.
//! - [`hubcast_auth`] (the `auth/` crate, beside this one): access keys, client access and
//!   service tokens (HS256 JWT) and connection strings. The edges verify tokens with its
//!   `verify` feature; the SDK and the load generator mint with it without linking this crate.
//! - [`config`]: the configuration tree (TOML file, environment, flags), plain data only.
//! - `demo`: the demo page at `/`, the compiled TypeScript client at `/sdk/*.js`, and the
//!   development-only token endpoint `/dev/token`.
//! - [`limits`]: per-hub and listener limits, rate limiting, counts of refusals.
//! - [`filter`]: OData filters over connections (parse, type-check, evaluate).
//! - [`error`]: the [`error::ErrorCode`] classification each edge maps to its wire form.
//! - [`telemetry`]: the metric registry (`/metrics`), OTLP export and W3C trace context.
//! - `sockets`: the accept loops' shared bounds (pending-socket cap, handshake deadline,
//!   backoff) and the peer address (`ClientAddr`) the HTTP listener hands to the edges.
//! - [`Server`]: the composition root. Binds the listeners, starts the backplane and hands it
//!   to the service layer and the upstream, and runs everything until a shutdown signal.

pub mod cluster;
pub mod config;
mod demo;
mod edge;
pub mod error;
pub mod filter;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod message;
mod node;
pub mod protocol;
mod redact;
pub mod router;
mod server;
mod sockets;
pub mod telemetry;
pub mod timestamp;
pub mod tls;
mod upstream;

pub use config::Config;
pub use server::{Error, Server};
