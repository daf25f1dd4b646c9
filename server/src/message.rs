//! The message model: messages on their way to clients, and the frames they become.
//!
//! A [`Message`] is format-agnostic: who it is from and what it carries. The codecs
//! ([`crate::protocol`]) render it into [`Frame`]s; the router queues those frames as
//! [`Queued`] items. This module sits below both, so the fan-out path points one way:
//! router → protocol → message.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;
pub use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::telemetry::trace::TraceParent;

pub mod close;

/// The wire format a connection speaks, which decides how a message is rendered for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// A simple WebSocket client: data arrives as raw text or binary frames.
    Simple,
    /// `json(.reliable).webpubsub.azure.v1`: one JSON object per text frame.
    Json,
    /// `protobuf(.reliable).webpubsub.azure.v1`: one protobuf message per binary frame.
    Protobuf,
    /// An MQTT client (`/clients/mqtt`): a message is queued as the shared part of a PUBLISH
    /// packet ([`crate::protocol::mqtt`]); the MQTT writer adds the per-session header.
    Mqtt,
    /// A Socket.IO client (Engine.IO v4): every frame is an Engine.IO payload (packets joined
    /// by `\x1e`), written as is to a long-polling client and split into one WebSocket frame
    /// per packet for a WebSocket client. Only text messages that are valid payloads reach
    /// it (Azure's serverless mode sends `text/plain` Engine.IO payloads).
    SocketIo,
}

/// One WebSocket data frame, ready to write. Cloning shares the bytes.
///
/// Text frames hold [`Utf8Bytes`] (already validated UTF-8) so the socket writer never
/// re-validates a payload that was encoded once for many recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(Utf8Bytes),
    /// A binary frame.
    Binary(Bytes),
}

impl Frame {
    /// Payload length in bytes, which is what outbox limits count.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A message payload with its data type (Azure's `dataType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// `text`: UTF-8 text.
    Text(Utf8Bytes),
    /// `json`: a JSON value, kept as its serialized text and forwarded verbatim.
    Json(Utf8Bytes),
    /// `binary`: raw bytes (base64 in JSON).
    Binary(Bytes),
    /// `protobuf`: a serialized `google.protobuf.Any` (base64 in JSON).
    Protobuf(Bytes),
}

impl Data {
    /// The Azure `dataType` name.
    pub fn data_type(&self) -> &'static str {
        match self {
            Data::Text(_) => "text",
            Data::Json(_) => "json",
            Data::Binary(_) => "binary",
            Data::Protobuf(_) => "protobuf",
        }
    }

    /// Payload size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Data::Text(t) | Data::Json(t) => t.len(),
            Data::Binary(b) | Data::Protobuf(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a message comes from, as its recipients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Published to a group, by a client (with its user id, if any) or by the service API.
    Group {
        /// The group.
        group: Arc<str>,
        /// The sending client's user id; `None` for anonymous clients and the service API.
        from_user: Option<Arc<str>>,
    },
    /// Sent by the service API to all, a user or a connection.
    Server,
}

/// A message to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who it is from.
    pub source: Source,
    /// What it carries.
    pub data: Data,
}

impl Message {
    /// A message published to `group`.
    pub fn to_group(group: impl Into<Arc<str>>, from_user: Option<Arc<str>>, data: Data) -> Self {
        Self {
            source: Source::Group {
                group: group.into(),
                from_user,
            },
            data,
        }
    }

    /// A message from the service (send to all, user or connection).
    pub fn from_server(data: Data) -> Self {
        Self {
            source: Source::Server,
            data,
        }
    }
}

/// A frame in the queue, with the sequence id it carries on a reliable connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The shared frame.
    pub frame: Frame,
    /// `Some` for data messages to reliable connections: the writer splices it in.
    pub sequence_id: Option<u64>,
    /// For a message sent with a TTL (non-reliable connections only): when it stops being
    /// worth writing. the outbox drops it from then on.
    pub expires: Option<Instant>,
    /// For a data message: when fan-out started, for the publish-to-write latency
    /// (`hubcast_fanout_latency_seconds`). `None` for control frames and resends.
    pub published: Option<Instant>,
    /// For a traced data message: the fan-out span, parent of the writer's delivery span.
    pub trace: Option<TraceParent>,
}

/// Where a data message comes from, carried beside each recipient's copy.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// When fan-out started.
    pub published: Option<Instant>,
    /// The fan-out span, when the message is traced.
    pub trace: Option<TraceParent>,
}
