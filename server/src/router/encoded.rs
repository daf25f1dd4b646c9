//! A message rendered for one fan-out, at most once per wire format.
//!
//! Fan-out wraps a [`Message`] in an [`Encoded`] that calls the codecs ([`crate::protocol`])
//! at most once per [`WireFormat`], so a message to ten thousand JSON clients is serialized
//! once and every outbox holds a reference-counted slice of the same bytes.

use std::cell::{Cell, OnceCell};

use tokio::time::Instant;

use crate::message::{Data, Frame, Message, Origin, WireFormat};
use crate::protocol::{json, mqtt, protobuf, socketio};
use crate::telemetry::{HubMetrics, trace};

/// A message rendered lazily, at most once per wire format, for one fan-out.
#[derive(Debug)]
pub(crate) struct Encoded<'m> {
    message: &'m Message,
    json: OnceCell<Frame>,
    protobuf: OnceCell<Frame>,
    simple: OnceCell<Frame>,
    /// The shared body of the PUBLISH packets for MQTT clients.
    mqtt: OnceCell<Frame>,
    /// `None` when the message is not an Engine.IO payload a Socket.IO client can read.
    socketio: OnceCell<Option<Frame>>,
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
            mqtt: OnceCell::new(),
            socketio: OnceCell::new(),
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
            WireFormat::Simple | WireFormat::Mqtt | WireFormat::SocketIo => self.frame(format),
        }
    }

    /// The frame for `conn`: numbered for a reliable connection; `None` when nothing can be
    /// delivered to a connection of its format (a Socket.IO client and a message that is not
    /// an Engine.IO payload).
    pub(crate) fn frame_for(&self, reliable: bool, format: WireFormat) -> Option<&Frame> {
        if format == WireFormat::SocketIo {
            return self
                .socketio
                .get_or_init(|| socketio_frame(&self.message.data))
                .as_ref();
        }
        Some(if reliable {
            self.numbered(format)
        } else {
            self.frame(format)
        })
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
            WireFormat::Simple | WireFormat::SocketIo => {
                self.simple.get_or_init(|| raw_frame(&self.message.data))
            }
            WireFormat::Mqtt => self
                .mqtt
                .get_or_init(|| mqtt::encode_publish_body(self.message)),
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

/// What a Socket.IO client receives: a text payload checked once, for every recipient, to
/// be an Engine.IO payload the stock client can parse (see
/// [`socketio::check_outgoing`]); anything else would make the client drop its connection,
/// so it is not delivered to Socket.IO clients.
fn socketio_frame(data: &Data) -> Option<Frame> {
    match data {
        Data::Text(t) | Data::Json(t) => match socketio::check_outgoing(t) {
            Ok(()) => Some(Frame::Text(t.clone())),
            Err(e) => {
                tracing::debug!(error = %e, "not an Engine.IO payload: not sent to Socket.IO clients");
                None
            }
        },
        Data::Binary(_) | Data::Protobuf(_) => None,
    }
}
