//! Client subprotocols: negotiation, what a connection's messages mean, and how replies are
//! rendered for each wire format.
//!
//! - No or an unknown subprotocol: a *simple* client. Its frames are raw payloads, and it
//!   receives raw payloads (spec §2.4).
//! - `json.webpubsub.azure.v1` and `json.reliable.webpubsub.azure.v1`: JSON text frames
//!   ([`json`]).
//! - `protobuf.webpubsub.azure.v1` and `protobuf.reliable.webpubsub.azure.v1`: protobuf
//!   binary frames ([`protobuf`]).
//!
//! The reliable variants number data messages and let a client resume its logical
//! connection after a drop; the numbering lives in the router's outbox, and the sequence id
//! is spliced into the shared encoding by [`render`] when a frame is written.

pub mod json;
pub mod mqtt;
pub mod protobuf;
pub mod socketio;
pub mod tunnel;

use bytes::{Bytes, BytesMut};

use crate::message::{Data, Frame, GroupStateItem, Queued, WireFormat};

pub use json::{AckError, ClientMessage, ParseError};

/// The JSON PubSub subprotocol.
pub const JSON_V1: &str = "json.webpubsub.azure.v1";
/// The reliable JSON PubSub subprotocol (the default of Azure's JavaScript client).
pub const JSON_RELIABLE_V1: &str = "json.reliable.webpubsub.azure.v1";
/// The protobuf PubSub subprotocol.
pub const PROTOBUF_V1: &str = "protobuf.webpubsub.azure.v1";
/// The reliable protobuf PubSub subprotocol.
pub const PROTOBUF_RELIABLE_V1: &str = "protobuf.reliable.webpubsub.azure.v1";

/// A subprotocol this server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subprotocol {
    /// Its registered name.
    pub name: &'static str,
    /// How frames are encoded.
    pub format: WireFormat,
    /// Whether data messages are numbered, buffered until acknowledged, and recoverable.
    pub reliable: bool,
}

/// The subprotocols this server speaks, in order of preference when a client offers several
/// that are equally early in its list.
pub const SUPPORTED: &[Subprotocol] = &[
    Subprotocol {
        name: JSON_V1,
        format: WireFormat::Json,
        reliable: false,
    },
    Subprotocol {
        name: JSON_RELIABLE_V1,
        format: WireFormat::Json,
        reliable: true,
    },
    Subprotocol {
        name: PROTOBUF_V1,
        format: WireFormat::Protobuf,
        reliable: false,
    },
    Subprotocol {
        name: PROTOBUF_RELIABLE_V1,
        format: WireFormat::Protobuf,
        reliable: true,
    },
];

/// Picks the subprotocol for a handshake: the first offered value (across every
/// `Sec-WebSocket-Protocol` header, comma-separated) that is supported, compared
/// case-insensitively as Azure does. Returns the subprotocol and the value as offered
/// (which is what the handshake must echo). `None` makes a simple client.
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<(Subprotocol, &'a str)> {
    offered
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|o| {
            SUPPORTED
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(o))
                .map(|s| (*s, o))
        })
}

/// The `connected` system message (with a reconnection token for reliable subprotocols).
pub fn connected(
    format: WireFormat,
    user_id: Option<&str>,
    connection_id: &str,
    reconnection_token: Option<&str>,
) -> Option<Frame> {
    match format {
        WireFormat::Simple | WireFormat::Mqtt | WireFormat::SocketIo => None,
        WireFormat::Json => Some(Frame::Text(json::encode_connected(
            user_id,
            connection_id,
            reconnection_token,
        ))),
        WireFormat::Protobuf => Some(Frame::Binary(protobuf::encode_connected(
            user_id,
            connection_id,
            reconnection_token,
        ))),
    }
}

/// The `disconnected` system message sent before a server-initiated close.
pub fn disconnected(format: WireFormat, reason: &str) -> Option<Frame> {
    match format {
        WireFormat::Simple | WireFormat::Mqtt | WireFormat::SocketIo => None,
        WireFormat::Json => Some(Frame::Text(json::encode_disconnected(reason))),
        WireFormat::Protobuf => Some(Frame::Binary(protobuf::encode_disconnected(reason))),
    }
}

/// An ack, successful or with an error.
pub fn ack(format: WireFormat, ack_id: u64, error: Option<(AckError, &str)>) -> Option<Frame> {
    match format {
        WireFormat::Simple | WireFormat::Mqtt | WireFormat::SocketIo => None,
        WireFormat::Json => Some(Frame::Text(json::encode_ack(ack_id, error))),
        WireFormat::Protobuf => Some(Frame::Binary(protobuf::encode_ack(ack_id, error))),
    }
}

/// The answer to an `invoke`: the handler's data (if any), or an error's name and message.
/// Azure's protobuf protocol defines no such frame; Hubcast's has one (client.proto, 100+).
pub fn invoke_response(
    format: WireFormat,
    invocation_id: &str,
    result: Result<Option<&Data>, (&str, &str)>,
) -> Option<Frame> {
    match format {
        WireFormat::Json => Some(Frame::Text(json::encode_invoke_response(
            invocation_id,
            result,
        ))),
        WireFormat::Protobuf => Some(Frame::Binary(protobuf::encode_invoke_response(
            invocation_id,
            result,
        ))),
        WireFormat::Simple | WireFormat::Mqtt | WireFormat::SocketIo => None,
    }
}

/// A `groupStateSnapshot` (or `groupStateUpdate`) of `group`. Only the JSON subprotocols
/// have the frames (Azure's protobuf protocol defines none).
pub fn group_state(
    format: WireFormat,
    snapshot: bool,
    group: &str,
    items: &[GroupStateItem],
) -> Option<Frame> {
    match format {
        WireFormat::Json => Some(Frame::Text(json::encode_group_state(
            snapshot, group, items,
        ))),
        WireFormat::Simple | WireFormat::Protobuf | WireFormat::Mqtt | WireFormat::SocketIo => None,
    }
}

/// A group stream's answer to its publisher: `streamAck`, `streamNack` or `streamClosed`
/// (Azure's protobuf protocol has no stream frames; Hubcast's has, client.proto 100+).
#[derive(Debug, Clone, Copy)]
pub enum StreamReply<'a> {
    /// Everything before `expected` arrived.
    Ack {
        /// The next sequence id the service takes.
        expected: u64,
    },
    /// A chunk out of order was refused.
    Nack {
        /// Why (`InvalidSequenceId`).
        name: &'a str,
        /// What happened.
        message: &'a str,
        /// The next sequence id the service takes.
        expected: u64,
    },
    /// The stream is over, with the reason when the service ended it.
    Closed {
        /// `(name, message)`.
        error: Option<(&'a str, &'a str)>,
    },
}

/// Renders a [`StreamReply`] for `stream_id`.
pub fn stream_reply(format: WireFormat, stream_id: &str, reply: StreamReply<'_>) -> Option<Frame> {
    match format {
        WireFormat::Json => Some(Frame::Text(match reply {
            StreamReply::Ack { expected } => json::encode_stream_ack(stream_id, expected),
            StreamReply::Nack {
                name,
                message,
                expected,
            } => json::encode_stream_nack(stream_id, name, message, expected),
            StreamReply::Closed { error } => json::encode_stream_closed(stream_id, error),
        })),
        WireFormat::Protobuf => Some(Frame::Binary(match reply {
            StreamReply::Ack { expected } => protobuf::encode_stream_ack(stream_id, expected),
            StreamReply::Nack {
                name,
                message,
                expected,
            } => protobuf::encode_stream_nack(stream_id, name, message, expected),
            StreamReply::Closed { error } => protobuf::encode_stream_closed(stream_id, error),
        })),
        WireFormat::Simple | WireFormat::Mqtt | WireFormat::SocketIo => None,
    }
}

/// The answer to a ping.
pub fn pong(format: WireFormat) -> Option<Frame> {
    match format {
        WireFormat::Simple | WireFormat::Mqtt | WireFormat::SocketIo => None,
        WireFormat::Json => Some(Frame::Text(json::encode_pong())),
        WireFormat::Protobuf => Some(Frame::Binary(protobuf::encode_pong())),
    }
}

/// A queued item ready for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// One frame.
    Whole(Frame),
    /// A numbered data message for a reliable connection, as one WebSocket message in two
    /// fragments: a few bytes of its own (`head`, carrying the sequence id) and the shared
    /// encoding (`tail`) as the continuation. Fragmentation is plain RFC 6455, which every
    /// client reassembles, and it spares a per-recipient copy of the payload: the socket
    /// buffer copy is the only one, as for non-reliable clients.
    Fragments {
        /// A text message (else binary).
        text: bool,
        /// The per-recipient first fragment.
        head: Bytes,
        /// The shared rest of the message.
        tail: Bytes,
    },
}

/// Bytes of scratch space allocated at a time for fragment heads (one allocation serves
/// dozens of heads).
const HEAD_BLOCK: usize = 1024;

/// Renders a queued item for a connection speaking `format`: a data message for a reliable
/// connection (queued as its shared numbered body, see `Encoded::numbered`) gets its
/// sequence id in a head written here, at write time, so fan-out never re-encodes or copies
/// per recipient. `scratch` holds the heads; the writer keeps it between batches.
pub fn render(format: WireFormat, queued: Queued, scratch: &mut BytesMut) -> Rendered {
    let Some(id) = queued.sequence_id else {
        return Rendered::Whole(queued.frame);
    };
    if scratch.capacity() - scratch.len() < 32 {
        *scratch = BytesMut::with_capacity(HEAD_BLOCK);
    }
    let (text, tail) = match (format, queued.frame) {
        (WireFormat::Json, Frame::Text(body)) => {
            json::sequence_head(id, scratch);
            (true, Bytes::from(body))
        }
        (WireFormat::Protobuf, Frame::Binary(body)) => {
            protobuf::sequence_head(id, body.len(), scratch);
            (false, body)
        }
        (_, frame) => return Rendered::Whole(frame),
    };
    Rendered::Fragments {
        text,
        head: scratch.split().freeze(),
        tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_case_insensitively_across_headers() {
        let (p, offered) = negotiate(["JSON.WebPubSub.Azure.V1"]).expect("supported");
        assert_eq!((p.name, offered), (JSON_V1, "JSON.WebPubSub.Azure.V1"));
        let (p, _) = negotiate(["foo, json.reliable.webpubsub.azure.v1"]).expect("supported");
        assert_eq!((p.name, p.reliable), (JSON_RELIABLE_V1, true));
        let (p, _) = negotiate(["foo", "protobuf.webpubsub.azure.v1"]).expect("supported");
        assert_eq!((p.format, p.reliable), (WireFormat::Protobuf, false));
        assert_eq!(negotiate(["mqtt"]), None);
        assert_eq!(negotiate([]), None);
    }
}
