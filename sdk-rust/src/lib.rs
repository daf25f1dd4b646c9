#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - [`ServiceClient`] (`service`): the typed client of the `hubcast.v1.Control` gRPC
//!   control plane, with its option types and [`ServiceError`].
//! - [`Client`] (`client`): the handle, its requests ([`SendToGroup`], [`SendEvent`],
//!   [`AckFuture`]) and their outcome ([`Ack`]).
//! - [`Builder`] (`builder`): options and their defaults; [`Builder::connect`] and
//!   [`Builder::spawn`].
//! - `connection`: the task that owns the socket (recovery, reconnection, rejoin, acks,
//!   sequence acks, keep-alive).
//! - [`Protocol`] (`protocol`): the subprotocols and their JSON and protobuf encodings.
//! - [`Event`], [`Events`] (`event`): what the application is told.
//! - [`Payload`] (`payload`), [`Error`] (`error`).
//! - [`proto`]: the generated protobuf types of Hubcast (client protocol, gRPC control plane
//!   and event stream), re-exported from `hubcast-proto`.
//!
//! Backend services use [`ServiceClient`]: it mints client access URLs locally and calls the
//! gRPC control plane with a service token it renews itself. Tokens and connection strings
//! come from the `hubcast-auth` crate, the one the server verifies them with, so the SDK
//! cannot mint a token the server reads differently, and the SDK does not link the server.
//! Anything the client does not wrap is reachable through the tonic stubs in [`proto::v1`].
//!
//! # Feature flags
//!
//! - `tls` (off by default): `wss://` URLs (Azure Web PubSub, or Hubcast behind TLS), with
//!   rustls (ring provider) and the Mozilla root certificates. Without it, a `wss://` URL
//!   fails to connect ([`Error::is_connect`]).

mod builder;
mod client;
mod connection;
mod error;
mod event;
mod payload;
mod protocol;
mod service;

pub use builder::Builder;
pub use client::{
    Ack, AckFuture, Client, GroupStreamWriter, InvokeEvent, InvokeFuture, OpenGroupStream,
    SendEvent, SendToGroup, State,
};
pub use error::{BoxError, Error, Result};
pub use event::{
    Connected, Disconnected, Event, Events, GroupMessage, RejoinGroupFailed, ServerMessage,
    StreamPosition,
};
pub use hubcast_proto as proto;
pub use payload::{DataType, Payload};
/// The protobuf `google.protobuf.Any` carried by [`Payload::Protobuf`].
pub use prost_types::Any;
pub use protocol::Protocol;
pub use service::{
    Batch, BatchResult, Bearer, ClientAccess, ClientTokenOptions, CloseOptions, ConnectionInfo,
    GroupInfo, GroupMember, HubStats, Message, Operation, Page, PageRequest, Permission,
    SendOptions, ServiceClient, ServiceError,
};

/// The TLS library of `wss://` connections, for [`Builder::with_tls_config`].
#[cfg(feature = "tls")]
pub use rustls;

#[cfg(test)]
mod tests {
    use crate::proto::v1::{Payload, SendToGroupRequest, payload};

    #[test]
    fn control_types_are_reachable_through_the_sdk() {
        let req = SendToGroupRequest {
            hub: "chat".into(),
            group: "room".into(),
            payload: Some(Payload {
                data: Some(payload::Data::Text("hi".into())),
                content_type: String::new(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(req.group, "room");
        assert!(!crate::proto::FILE_DESCRIPTOR_SET.is_empty());
    }
}
