//! Hubcast server: a self-hosted, Azure Web PubSub compatible real-time messaging service.
//!
//! # Layout
//! - [`router`]: the core. Hubs, connections, users, groups, permissions and fan-out. It
//!   knows nothing of HTTP, warp or tonic; every edge calls the same [`router::Router`] API.
//! - [`protocol`]: the client subprotocols (simple WebSocket, `json.webpubsub.azure.v1`):
//!   parsing client frames and encoding server messages once per wire format.
//! - [`auth`]: access keys, client access tokens (HS256 JWT) and connection strings.
//! - [`config`]: the configuration tree (TOML file, environment, flags).
//! - `ws`: the WebSocket edge at `/client/hubs/{hub}` (warp for the upgrade request,
//!   tokio-tungstenite for the socket).
//! - [`Server`]: binds the listeners and runs everything until a shutdown signal.

pub mod auth;
pub mod config;
pub mod error;
pub mod filter;
pub mod protocol;
pub mod router;
mod server;
mod ws;

pub use config::Config;
pub use server::{Error, Server};
