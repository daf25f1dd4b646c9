//! Messages on their way to clients, and the frames they become.
//!
//! A [`Message`] is format-agnostic: who it is from and what it carries. Fan-out wraps it in
//! an `Encoded` that renders it at most once per [`WireFormat`], so a message to ten thousand
//! JSON clients is serialized once and every outbox holds a reference-counted slice of the
//! same bytes.

use std::cell::{Cell, OnceCell};
use std::sync::Arc;

use bytes::Bytes;
pub use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::protocol::{json, protobuf};
use crate::router::outbox::Origin;
use crate::telemetry::{HubMetrics, trace};
use tokio::time::Instant;

/// The wire format a connection speaks, which decides how a message is rendered for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// A simple WebSocket client: data arrives as raw text or binary frames.
    Simple,
    /// `json(.reliable).webpubsub.azure.v1`: one JSON object per text frame.
    Json,
    /// `protobuf(.reliable).webpubsub.azure.v1`: one protobuf message per binary frame.
    Protobuf,
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

/// A message rendered lazily, at most once per wire format, for one fan-out.
#[derive(Debug)]
pub(crate) struct Encoded<'m> {
    message: &'m Message,
    json: OnceCell<Frame>,
    protobuf: OnceCell<Frame>,
    simple: OnceCell<Frame>,
    json_numbered: OnceCell<Frame>,
    protobuf_numbered: OnceCell<Frame>,
    /// The hub's series, counted into once per fan-out.
    metrics: &'m HubMetrics,
    /// When fan-out started and its trace, carried with each recipient's copy.
    origin: Origin,
    /// Bytes queued so far, over every recipient.
    bytes: Cell<usize>,
}

impl<'m> Encoded<'m> {
    pub(crate) fn new(message: &'m Message, metrics: &'m HubMetrics) -> Self {
        Self {
            message,
            json: OnceCell::new(),
            protobuf: OnceCell::new(),
            simple: OnceCell::new(),
            json_numbered: OnceCell::new(),
            protobuf_numbered: OnceCell::new(),
            metrics,
            origin: Origin {
                published: Some(Instant::now()),
                trace: trace::current_parent(),
            },
            bytes: Cell::new(0),
        }
    }

    pub(crate) fn metrics(&self) -> &HubMetrics {
        self.metrics
    }

    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    pub(crate) fn add_bytes(&self, n: usize) {
        self.bytes.set(self.bytes.get() + n);
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.get()
    }

    /// What a reliable connection speaking `format` queues: the encoding without the part
    /// that carries the sequence id, which the writer puts in front of it
    /// ([`crate::protocol::render`]). Simple clients are never reliable.
    pub(crate) fn numbered(&self, format: WireFormat) -> &Frame {
        match format {
            WireFormat::Json => self
                .json_numbered
                .get_or_init(|| Frame::Text(json::encode_numbered_body(self.message))),
            WireFormat::Protobuf => self
                .protobuf_numbered
                .get_or_init(|| Frame::Binary(protobuf::encode_data_message(self.message))),
            WireFormat::Simple => self.frame(format),
        }
    }

    /// The frame for a connection speaking `format`.
    pub(crate) fn frame(&self, format: WireFormat) -> &Frame {
        match format {
            WireFormat::Json => self
                .json
                .get_or_init(|| Frame::Text(json::encode_message(self.message))),
            WireFormat::Protobuf => self
                .protobuf
                .get_or_init(|| Frame::Binary(protobuf::encode_message(self.message))),
            WireFormat::Simple => self.simple.get_or_init(|| raw_frame(&self.message.data)),
        }
    }
}

/// What a simple client receives: the payload itself, as text or binary (spec §2.4). A JSON
/// string value reaches it with its quotes, as in Azure.
fn raw_frame(data: &Data) -> Frame {
    match data {
        Data::Text(t) | Data::Json(t) => Frame::Text(t.clone()),
        Data::Binary(b) | Data::Protobuf(b) => Frame::Binary(b.clone()),
    }
}
