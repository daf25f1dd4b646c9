//! Engine.IO v4 and Socket.IO v5 packets, and how Azure's Web PubSub for Socket.IO names
//! namespaces and rooms as groups.
//!
//! Written here rather than taken from a crate: the `engineioxide`/`socketioxide` family
//! parses into the types of its own server (tied to tower and hyper 1, where this server
//! runs warp on hyper 0.14), and the formats are small text grammars. What the edge needs is
//! narrow: split and join Engine.IO payloads, read a Socket.IO packet's header (type,
//! attachment count, namespace, ack id) and its event name, check that what a backend
//! sends is a payload the stock client can read, and write the handful of packets the
//! server itself sends (open, ping, namespace connect and its refusal). The JSON arguments
//! are never decoded: the backend gets the packet as the client wrote it.
//!
//! The functions are reusable by any edge that speaks Engine.IO (the tunnel of Azure's
//! default mode sends the same payloads over CloudEvents).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};

/// The separator of packets in an Engine.IO v4 payload (HTTP long-polling bodies, and the
/// bodies Azure exchanges with backends).
pub const SEPARATOR: char = '\u{1e}';

/// The longest namespace name accepted: its group name (`0~` + base64url + `~` + a room)
/// must stay within the 1024 characters of a group name.
pub const MAX_NAMESPACE_CHARS: usize = 256;

/// The most binary attachments one packet may announce.
pub const MAX_ATTACHMENTS: usize = 64;

/// Why a packet or payload is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// An empty packet.
    #[error("empty Engine.IO packet")]
    Empty,
    /// An Engine.IO packet type outside 0–6 (or `b` for base64 binary in a payload).
    #[error("unknown Engine.IO packet type {0:?}")]
    EioType(char),
    /// A `b` packet whose data is not base64.
    #[error("binary packet is not valid base64")]
    Base64,
    /// A Socket.IO packet type outside 0–6.
    #[error("unknown Socket.IO packet type {0:?}")]
    SioType(char),
    /// The attachment count is missing its `-`, not a number, or too large.
    #[error("invalid attachment count (at most {MAX_ATTACHMENTS})")]
    Attachments,
    /// The namespace does not end with `,`, or is too long.
    #[error("invalid namespace (at most {MAX_NAMESPACE_CHARS} characters, ended by ',')")]
    Namespace,
    /// The ack id is not a number that fits in 64 bits.
    #[error("invalid ack id")]
    AckId,
    /// The data is not JSON of the shape the packet type requires.
    #[error("invalid packet data: {0}")]
    Data(String),
}

// === Engine.IO ===

/// An Engine.IO packet type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EioType {
    /// `0`: the handshake (server to client only).
    Open,
    /// `1`: the transport is closing.
    Close,
    /// `2`: a heartbeat (server to client; `2probe` from the client during an upgrade).
    Ping,
    /// `3`: the answer to a ping.
    Pong,
    /// `4`: a message (a Socket.IO packet).
    Message,
    /// `5`: the client completed the upgrade to WebSocket.
    Upgrade,
    /// `6`: nothing (ends a pending poll during an upgrade).
    Noop,
}

impl EioType {
    fn from_char(c: char) -> Result<Self, PacketError> {
        Ok(match c {
            '0' => Self::Open,
            '1' => Self::Close,
            '2' => Self::Ping,
            '3' => Self::Pong,
            '4' => Self::Message,
            '5' => Self::Upgrade,
            '6' => Self::Noop,
            other => return Err(PacketError::EioType(other)),
        })
    }
}

/// One Engine.IO packet as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EioPacket<'a> {
    /// A text packet: its type and data (what follows the type character).
    Text(EioType, &'a str),
    /// A binary message (a WebSocket binary frame, or `b<base64>` in a payload).
    Binary(Bytes),
}

/// Reads one text packet (a WebSocket text frame, or one part of a payload).
///
/// # Errors
/// An empty packet or an unknown type; `b` packets are refused here (only payloads carry
/// them: [`split_payload`]).
pub fn parse_text(packet: &str) -> Result<EioPacket<'_>, PacketError> {
    let mut chars = packet.chars();
    let kind = chars.next().ok_or(PacketError::Empty)?;
    Ok(EioPacket::Text(EioType::from_char(kind)?, chars.as_str()))
}

/// Splits an Engine.IO v4 payload (a long-polling body) into packets; `b<base64>` parts are
/// decoded.
///
/// # Errors
/// The first invalid packet's error.
pub fn split_payload(payload: &str) -> Result<Vec<EioPacket<'_>>, PacketError> {
    payload
        .split(SEPARATOR)
        .map(|part| match part.strip_prefix('b') {
            Some(b64) => STANDARD
                .decode(b64)
                .map(|b| EioPacket::Binary(b.into()))
                .map_err(|_| PacketError::Base64),
            None => parse_text(part),
        })
        .collect()
}

/// One part of an outgoing payload, as a WebSocket writes it: text packets as text frames,
/// `b<base64>` parts as binary frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsPart<'a> {
    /// A text frame.
    Text(&'a str),
    /// A binary frame (decoded from base64).
    Binary(Vec<u8>),
}

/// The WebSocket frames of an outgoing payload (validated before it was queued, so a part
/// that does not decode is left out).
pub fn payload_frames(payload: &str) -> impl Iterator<Item = WsPart<'_>> {
    payload
        .split(SEPARATOR)
        .filter_map(|part| match part.strip_prefix('b') {
            Some(b64) => STANDARD.decode(b64).ok().map(WsPart::Binary),
            None => Some(WsPart::Text(part)),
        })
}

/// Whether `payload` is something the stock client can read: every part a known Engine.IO
/// packet type (never `0`, which only the handshake sends) or valid base64 binary, and every
/// message a well-formed Socket.IO packet. A backend's send or reply that is not is dropped
/// rather than delivered: the client would close its connection on a packet it cannot
/// parse.
///
/// # Errors
/// Why the payload is refused.
pub fn check_outgoing(payload: &str) -> Result<(), PacketError> {
    for part in split_payload(payload)? {
        match part {
            EioPacket::Text(EioType::Open, _) => return Err(PacketError::EioType('0')),
            EioPacket::Text(EioType::Message, data) => {
                parse_sio(data)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The handshake (`0{...}`) the client gets first.
pub fn open_packet(
    sid: &str,
    upgrades: &[&str],
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload: usize,
) -> String {
    let open = serde_json::json!({
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": ping_interval_ms,
        "pingTimeout": ping_timeout_ms,
        "maxPayload": max_payload,
    });
    format!("0{open}")
}

// === Socket.IO ===

/// A Socket.IO packet type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SioType {
    /// `0`: connect to a namespace (client), or its acceptance (server).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event.
    Event,
    /// `3`: the answer to an event that asked for one.
    Ack,
    /// `4`: a namespace connect was refused (server to client only).
    ConnectError,
    /// `5`: an event with binary attachments.
    BinaryEvent,
    /// `6`: an ack with binary attachments.
    BinaryAck,
}

impl SioType {
    fn from_char(c: char) -> Result<Self, PacketError> {
        Ok(match c {
            '0' => Self::Connect,
            '1' => Self::Disconnect,
            '2' => Self::Event,
            '3' => Self::Ack,
            '4' => Self::ConnectError,
            '5' => Self::BinaryEvent,
            '6' => Self::BinaryAck,
            other => return Err(PacketError::SioType(other)),
        })
    }

    /// Whether the packet announces binary attachments.
    pub fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// A Socket.IO packet's header and its raw JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SioPacket<'a> {
    /// The packet type.
    pub kind: SioType,
    /// How many binary attachments follow (binary types only).
    pub attachments: usize,
    /// The namespace (`/` when the packet names none).
    pub namespace: &'a str,
    /// The ack id, when the sender asks for an answer.
    pub ack_id: Option<u64>,
    /// The JSON data as sent (empty when there is none).
    pub data: &'a str,
    /// For events: the event name (the first element of the data array).
    pub event: Option<String>,
}

/// Reads a Socket.IO v5 packet (the data of an Engine.IO message). The data is checked to be
/// JSON of the shape the type requires: an object (or nothing) for connect, an array whose
/// first element is a string for events, an array for acks.
///
/// # Errors
/// The first thing that is wrong, as [`PacketError`].
pub fn parse_sio(packet: &str) -> Result<SioPacket<'_>, PacketError> {
    let mut chars = packet.chars();
    let kind = SioType::from_char(chars.next().ok_or(PacketError::Empty)?)?;
    let mut rest = chars.as_str();
    let mut attachments = 0;
    if kind.is_binary() {
        let (count, after) = rest.split_once('-').ok_or(PacketError::Attachments)?;
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PacketError::Attachments);
        }
        attachments = count.parse().map_err(|_| PacketError::Attachments)?;
        if attachments > MAX_ATTACHMENTS {
            return Err(PacketError::Attachments);
        }
        rest = after;
    }
    let mut namespace = "/";
    if rest.starts_with('/') {
        // A namespace without a comma is the whole rest (`1/chat` is valid).
        let (ns, after) = match rest.split_once(',') {
            Some((ns, after)) => (ns, after),
            None => (rest, ""),
        };
        if ns.chars().count() > MAX_NAMESPACE_CHARS {
            return Err(PacketError::Namespace);
        }
        namespace = ns;
        rest = after;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack_id = if digits > 0 {
        Some(rest[..digits].parse().map_err(|_| PacketError::AckId)?)
    } else {
        None
    };
    let data = &rest[digits..];
    let event = check_data(kind, data)?;
    Ok(SioPacket {
        kind,
        attachments,
        namespace,
        ack_id,
        data,
        event,
    })
}

/// Checks the data against the packet type; returns the event name of events.
fn check_data(kind: SioType, data: &str) -> Result<Option<String>, PacketError> {
    let bad = |e: serde_json::Error| PacketError::Data(e.to_string());
    match kind {
        SioType::Connect | SioType::ConnectError if data.is_empty() => Ok(None),
        SioType::Connect => {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(data)
                .map_err(bad)?;
            Ok(None)
        }
        SioType::ConnectError => {
            serde_json::from_str::<IgnoredAny>(data).map_err(bad)?;
            Ok(None)
        }
        SioType::Disconnect if data.is_empty() => Ok(None),
        SioType::Disconnect => Err(PacketError::Data("a disconnect carries no data".into())),
        SioType::Event | SioType::BinaryEvent => {
            let mut de = serde_json::Deserializer::from_str(data);
            let name = de.deserialize_seq(EventName).map_err(bad)?;
            de.end().map_err(bad)?;
            Ok(Some(name))
        }
        SioType::Ack | SioType::BinaryAck => {
            serde_json::from_str::<Vec<IgnoredAny>>(data).map_err(bad)?;
            Ok(None)
        }
    }
}

/// Reads an event's data array: its first element (a string) is the name, the rest is only
/// checked to be JSON.
struct EventName;

impl<'de> Visitor<'de> for EventName {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array whose first element is the event name")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        let name: String = seq
            .next_element()?
            .ok_or_else(|| serde::de::Error::custom("an event needs a name"))?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(name)
    }
}

/// The namespace prefix of a packet: nothing for `/`, else `/ns,`.
fn namespace_prefix(namespace: &str) -> String {
    if namespace == "/" {
        String::new()
    } else {
        format!("{namespace},")
    }
}

/// The Engine.IO message that accepts a namespace connect: `40/ns,{"sid":"<socket id>"}`.
pub fn connect_ok(namespace: &str, socket_id: &str) -> String {
    let data = serde_json::json!({ "sid": socket_id });
    format!("40{}{data}", namespace_prefix(namespace))
}

/// The Engine.IO message that refuses a namespace connect: `44/ns,{"message":"..."}`.
pub fn connect_error(namespace: &str, message: &str) -> String {
    let data = serde_json::json!({ "message": message });
    format!("44{}{data}", namespace_prefix(namespace))
}

/// The Engine.IO message that ends a namespace socket: `41/ns,`.
pub fn disconnect(namespace: &str) -> String {
    format!("41{}", namespace_prefix(namespace))
}

/// An Engine.IO payload of a packet and its attachments, as Azure hands events to backends:
/// `4<packet>` then `b<base64>` per attachment, joined by [`SEPARATOR`].
pub fn event_payload(packet: &str, attachments: &[Bytes]) -> String {
    let mut out = String::with_capacity(packet.len() + 1);
    out.push('4');
    out.push_str(packet);
    for attachment in attachments {
        out.push(SEPARATOR);
        out.push('b');
        STANDARD.encode_string(attachment, &mut out);
    }
    out
}

/// The Engine.IO payload of an event (`4` + a Socket.IO event packet, then its attachments)
/// with `id` as its ack id: how the service numbers the packet of an `:invoke` (the
/// backend sends it without one, spec part 2 §2.4a).
///
/// # Errors
/// The payload does not start with a Socket.IO event packet, or it already has an ack id.
pub fn with_ack_id(payload: &str, id: u64) -> Result<String, PacketError> {
    let (first, rest) = match payload.split_once(SEPARATOR) {
        Some((first, rest)) => (first, Some(rest)),
        None => (payload, None),
    };
    let packet = first.strip_prefix('4').ok_or(PacketError::Empty)?;
    let p = parse_sio(packet)?;
    if !matches!(p.kind, SioType::Event | SioType::BinaryEvent) || p.ack_id.is_some() {
        return Err(PacketError::AckId);
    }
    let mut out = String::with_capacity(payload.len() + 24);
    out.push('4');
    if p.kind.is_binary() {
        out.push('5');
        out.push_str(&p.attachments.to_string());
        out.push('-');
    } else {
        out.push('2');
    }
    out.push_str(&namespace_prefix(p.namespace));
    out.push_str(&id.to_string());
    out.push_str(p.data);
    if let Some(rest) = rest {
        out.push(SEPARATOR);
        out.push_str(rest);
    }
    Ok(out)
}

/// One binary Engine.IO packet in a payload: `b<base64>`.
pub fn binary_payload(bytes: &[u8]) -> String {
    let mut out = String::from("b");
    STANDARD.encode_string(bytes, &mut out);
    out
}

// === groups ===

/// The group of a namespace's room, as Azure names it: `0~` + base64url(namespace) + `~` +
/// base64url(room). Every socket is in the room named by its socket id.
pub fn room_group(namespace: &str, room: &str) -> String {
    let mut group = namespace_group(namespace);
    URL_SAFE_NO_PAD.encode_string(room, &mut group);
    group
}

/// The group of a whole namespace: `0~` + base64url(namespace) + `~`.
pub fn namespace_group(namespace: &str) -> String {
    let mut group = String::from("0~");
    URL_SAFE_NO_PAD.encode_string(namespace, &mut group);
    group.push('~');
    group
}

/// A fresh socket id: 20 URL-safe characters (120 random bits), the length socket.io uses.
pub fn new_socket_id() -> String {
    let bytes: [u8; 15] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn invoke_packets_get_an_ack_id() {
        assert_eq!(
            with_ack_id("42[\"survey\",1]", 7).as_deref(),
            Ok("427[\"survey\",1]")
        );
        assert_eq!(
            with_ack_id("42/ns,[\"e\"]", 12).as_deref(),
            Ok("42/ns,12[\"e\"]")
        );
        assert_eq!(
            with_ack_id(
                "451-[\"e\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQI=",
                3
            )
            .as_deref(),
            Ok("451-3[\"e\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQI=")
        );
        assert!(with_ack_id("425[\"e\"]", 3).is_err(), "already numbered");
        assert!(with_ack_id("43[1]", 3).is_err(), "not an event");
        assert!(with_ack_id("2", 3).is_err(), "not a message");
    }

    use super::*;

    #[test]
    fn groups_are_named_as_azure_names_them() {
        assert_eq!(room_group("/", "rm"), "0~Lw~cm0");
        assert_eq!(room_group("/ns", "rm"), "0~L25z~cm0");
        assert_eq!(namespace_group("/ns"), "0~L25z~");
        assert_eq!(new_socket_id().len(), 20);
    }

    #[test]
    fn socketio_packets_parse() {
        let p = parse_sio(r#"2/ns,13["hello","world"]"#).expect("event");
        assert_eq!(p.kind, SioType::Event);
        assert_eq!((p.namespace, p.ack_id), ("/ns", Some(13)));
        assert_eq!(p.event.as_deref(), Some("hello"));
        let p = parse_sio(r#"51-["up",{"_placeholder":true,"num":0}]"#).expect("binary");
        assert_eq!(
            (p.kind, p.attachments, p.namespace),
            (SioType::BinaryEvent, 1, "/")
        );
        let p = parse_sio(r#"0/admin,{"token":"x"}"#).expect("connect");
        assert_eq!((p.kind, p.namespace), (SioType::Connect, "/admin"));
        assert_eq!(parse_sio("0").expect("connect /").namespace, "/");
        assert_eq!(parse_sio("1/chat,").expect("disconnect").namespace, "/chat");
        assert_eq!(parse_sio("1/chat").expect("no comma").namespace, "/chat");
        assert_eq!(parse_sio("31[]").expect("ack").ack_id, Some(1));
    }

    #[test]
    fn malformed_socketio_packets_are_refused() {
        for bad in [
            "",
            "9",
            "2",
            "2{}",
            "2[]",
            "2[1]",
            r#"2["a""#,
            r#"2["a"]x"#,
            "5[\"a\"]",
            "5x-[\"a\"]",
            "599-[\"a\"]",
            "0[]",
            "1/a,{}",
            "299999999999999999999[\"a\"]",
        ] {
            assert!(parse_sio(bad).is_err(), "{bad:?} must be refused");
        }
        let long = format!("0/{},", "n".repeat(MAX_NAMESPACE_CHARS));
        assert_eq!(parse_sio(&long), Err(PacketError::Namespace));
    }

    #[test]
    fn payloads_split_join_and_check() {
        let payload = event_payload(
            r#"51-["up",{"_placeholder":true,"num":0}]"#,
            &[Bytes::from_static(&[1, 2, 3])],
        );
        assert_eq!(
            payload,
            "451-[\"up\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQID"
        );
        let parts = split_payload(&payload).expect("valid");
        assert_eq!(parts[1], EioPacket::Binary(Bytes::from_static(&[1, 2, 3])));
        check_outgoing(&payload).expect("a valid payload");
        let frames: Vec<_> = payload_frames(&payload).collect();
        assert_eq!(frames[1], WsPart::Binary(vec![1, 2, 3]));
        assert!(check_outgoing("hello").is_err());
        assert!(check_outgoing("42[nope]").is_err());
        assert!(check_outgoing("0{}").is_err());
        assert!(check_outgoing("bnot base64!").is_err());
        check_outgoing("42/ns,[\"ev\",1]\u{1e}41/ns,").expect("two packets");
        assert_eq!(connect_ok("/", "abc"), r#"40{"sid":"abc"}"#);
        assert_eq!(connect_error("/x", "no"), r#"44/x,{"message":"no"}"#);
        assert_eq!(disconnect("/x"), "41/x,");
    }
}
