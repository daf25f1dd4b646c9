//! The Rust SDK for Hubcast, a self-hosted, Azure Web PubSub compatible messaging service.
//!
//! This crate is at its beginning. It will hold:
//!
//! - a `ServiceClient` for backend services: a typed client of the `hubcast.v1.Control` gRPC
//!   control plane (send to all, groups, users and connections; manage groups; close
//!   connections) that also mints client access tokens locally from a connection string
//!   (`Endpoint=...;AccessKey=...;Version=1.0;`);
//! - a WebSocket `Client` for devices and apps: the `json.reliable` / `protobuf.reliable`
//!   client protocols with acks, sequence acks, reconnection, recovery and group rejoin.
//!
//! Today it re-exports the generated protocol types as [`proto`], so applications can already
//! speak the protobuf client protocol and call the gRPC services through the tonic stubs in
//! [`proto::v1`].
//!
//! # Examples
//!
//! Building the upstream message a protobuf client sends to join a group:
//!
//! ```
//! use hubcast_sdk::proto::v1::{UpstreamMessage, upstream_message};
//!
//! let join = UpstreamMessage {
//!     message: Some(upstream_message::Message::JoinGroupMessage(
//!         upstream_message::JoinGroupMessage { group: "room".into(), ack_id: Some(1) },
//!     )),
//! };
//! assert!(matches!(
//!     join.message,
//!     Some(upstream_message::Message::JoinGroupMessage(ref j)) if j.group == "room"
//! ));
//! ```

pub use hubcast_proto as proto;

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
