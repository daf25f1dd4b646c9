//! Hubcast server: a self-hosted, Azure Web PubSub compatible real-time messaging service.
//!
//! # Layout
//! - [`router`]: the core. Hubs, connections, users, groups, permissions and fan-out. It
//!   knows nothing of HTTP, warp or tonic; every edge calls the same [`router::Router`] API.
//!   With `--redis` its backplane ([`cluster`]) joins the node to a cluster.
//! - [`protocol`]: the client subprotocols (simple WebSocket, `json.webpubsub.azure.v1`):
//!   parsing client frames and encoding server messages once per wire format.
//! - [`auth`]: access keys, client access tokens (HS256 JWT) and connection strings.
//! - [`config`]: the configuration tree (TOML file, environment, flags).
//! - `demo`: the demo page at `/`, the compiled TypeScript client at `/sdk/*.js`, and the
//!   development-only token endpoint `/dev/token`.
//! - `ws`: the WebSocket edge at `/client/hubs/{hub}` (warp for the upgrade request,
//!   tokio-tungstenite for the socket).
//! - `upstream`: upstream events (spec §6): CloudEvents webhooks and the gRPC event stream
//!   (`hubcast.v1.Events/Listen`), behind one API the WebSocket edge calls.
//! - `control`: the control plane. One implementation of every data-plane operation
//!   (sends, groups, users, permissions, closes, listings), served over gRPC
//!   (`hubcast.v1.Control` with health and reflection, on `grpc_listen`) and over Azure's REST
//!   API (`rest`, on the HTTP listener).
//! - [`limits`]: per-hub and listener limits, rate limiting, counts of refusals.
//! - [`filter`]: OData filters over connections (parse, type-check, evaluate).
//! - [`error`]: the [`error::ErrorCode`] classification each edge maps to its wire form.
//! - [`telemetry`]: the metric registry (`/metrics`), OTLP export and W3C trace context.
//! - [`Server`]: binds the listeners and runs everything until a shutdown signal.

pub mod auth;
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
mod node;
pub mod protocol;
mod redact;
pub mod router;
mod server;
mod sockets;
pub mod telemetry;
pub mod tls;
mod upstream;

pub use config::Config;
pub use server::{Error, Server};
