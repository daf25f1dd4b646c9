//! The Rust SDK for Hubcast, a self-hosted, Azure Web PubSub compatible messaging service.
//!
//! [`ServiceClient`] is for backend services: a typed client of the `hubcast.v1.Control`
//! gRPC control plane. It is built from the connection string the server prints
//! (`Endpoint=...;AccessKey=...;Version=1.0;`) and the address of the server's gRPC listener,
//! signs its calls itself, and mints client access URLs locally. Everything Azure Web
//! PubSub's REST API can do is a method here (sends to all, groups, users and connections
//! with exclusions, OData filters and TTLs; group and user membership; closes; permissions;
//! existence checks; client tokens), plus what REST cannot do: listings of connections and
//! groups, connection details, hub statistics and batches.
//!
//! # Layout
//! - [`ServiceClient`] and its option types ([`SendOptions`], [`CloseOptions`],
//!   [`ClientTokenOptions`], [`PageRequest`], [`Batch`]), in `service`.
//! - [`Error`]: a typed error enum; server refusals map from their gRPC status codes.
//! - [`proto`]: the generated protocol types and tonic stubs, for anything not wrapped.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use hubcast_sdk::{ClientTokenOptions, CloseOptions, Message, SendOptions, ServiceClient};
//!
//! # async fn run() -> Result<(), hubcast_sdk::Error> {
//! let client = ServiceClient::connect(
//!     "Endpoint=http://127.0.0.1:8080;AccessKey=<key>;Version=1.0;",
//!     "127.0.0.1:50051",
//! )
//! .await?;
//!
//! // A URL a browser can connect to, as user alice, allowed to join any group.
//! let access = client.client_access(
//!     "chat",
//!     &ClientTokenOptions::user("alice").role("webpubsub.joinLeaveGroup"),
//! );
//! println!("{}", access.url);
//!
//! // JSON to everyone in `room1` except one connection, dropped if not delivered in 30 s.
//! client
//!     .send_to_group(
//!         "chat",
//!         "room1",
//!         Message::json(r#"{"text":"hello"}"#),
//!         SendOptions::new().exclude("some-connection-id").ttl(Duration::from_secs(30)),
//!     )
//!     .await?;
//!
//! // Only to alice's and bob's connections that are in `vip`.
//! client
//!     .send_to_all(
//!         "chat",
//!         "psst",
//!         SendOptions::new().filter("userId in ('alice', 'bob') and 'vip' in groups"),
//!     )
//!     .await?;
//!
//! client
//!     .close_user_connections("chat", "mallory", CloseOptions::new().reason("banned"))
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod error;
mod service;

pub use error::Error;
pub use hubcast_proto as proto;
pub use service::{
    Batch, BatchResult, Bearer, ClientAccess, ClientTokenOptions, CloseOptions, ConnectionInfo,
    GroupInfo, GroupMember, HubStats, Message, Operation, Page, PageRequest, Permission,
    SendOptions, ServiceClient,
};

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
            }),
            ..Default::default()
        };
        assert_eq!(req.group, "room");
        assert!(!crate::proto::FILE_DESCRIPTOR_SET.is_empty());
    }
}
