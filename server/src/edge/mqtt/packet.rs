//! MQTT packets as the edge sees them: framing of the byte stream, decoding of both
//! protocol versions into one model ([`Inbound`]), and encoding of the server's packets.
//!
//! The codec itself is the `mqtt-proto` crate. The edge only reads the fixed header on its
//! own, so that a packet larger than the hub's size limit is refused from its header,
//! before its body is buffered, and so that the protocol level of a CONNECT is known before
//! the version-specific decoder runs.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use mqtt_proto::{Pid, QoS, v3, v5};

use crate::protocol::mqtt::read_var_int;

/// The MQTT version of a session: 3.1.1 or 5.0 (Azure refuses 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl Version {
    /// The protocol level, as the `connect` event's `protocolVersion`.
    pub(crate) fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

/// Why the byte stream cannot be framed into packets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// The remaining length is longer than four bytes.
    #[error("the packet's remaining length is malformed")]
    Malformed,
    /// The packet is larger than the limit.
    #[error("the packet of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The packet's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Cuts the client's byte stream into whole packets. MQTT over WebSocket does not align
/// packets with WebSocket messages: one message may carry several packets or a part of one.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    buffer: BytesMut,
}

impl Framer {
    /// Appends the bytes of a WebSocket message.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet a whole packet.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole packet, if one is buffered.
    ///
    /// # Errors
    /// [`FrameError`] when the header is malformed or names a packet over `limit` bytes;
    /// the stream cannot be read further.
    pub(crate) fn next_packet(&mut self, limit: usize) -> Result<Option<Bytes>, FrameError> {
        let Some(rest) = self.buffer.get(1..) else {
            return Ok(None);
        };
        let (remaining, len_bytes) = match read_var_int(rest) {
            Some(v) => v,
            None if rest.len() >= 4 => return Err(FrameError::Malformed),
            None => return Ok(None),
        };
        let size = 1 + len_bytes + remaining;
        if size > limit {
            return Err(FrameError::TooLarge { size, limit });
        }
        if self.buffer.len() < size {
            self.buffer.reserve(size - self.buffer.len());
            return Ok(None);
        }
        Ok(Some(self.buffer.split_to(size).freeze()))
    }
}

/// What the first packet of a connection says about its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// A version this server speaks.
    Supported(Version),
    /// A CONNECT of another protocol version (3.1, or a level MQTT does not define).
    Unsupported,
    /// Not a CONNECT packet.
    NotConnect,
}

/// Reads the protocol name and level of a CONNECT packet.
pub(crate) fn connect_level(packet: &[u8]) -> Level {
    if packet.first().map(|b| b >> 4) != Some(1) {
        return Level::NotConnect;
    }
    let Some((_, len_bytes)) = packet.get(1..).and_then(read_var_int) else {
        return Level::NotConnect;
    };
    let mut body = &packet[1 + len_bytes..];
    if body.len() < 2 {
        return Level::Unsupported;
    }
    let name_len = usize::from(body.get_u16());
    match (body.get(..name_len), body.get(name_len)) {
        (Some(b"MQTT"), Some(4)) => Level::Supported(Version::V311),
        (Some(b"MQTT"), Some(5)) => Level::Supported(Version::V5),
        _ => Level::Unsupported,
    }
}

/// A will message, from the CONNECT.
#[derive(Debug, Clone)]
pub(crate) struct Will {
    pub(crate) topic: Arc<str>,
    pub(crate) payload: Bytes,
    /// MQTT 5 content type.
    pub(crate) content_type: Option<Arc<str>>,
    pub(crate) qos: u8,
}

/// A CONNECT of either version.
#[derive(Debug, Clone)]
pub(crate) struct Connect {
    pub(crate) version: Version,
    pub(crate) client_id: Arc<str>,
    pub(crate) clean_start: bool,
    pub(crate) keep_alive: u16,
    pub(crate) username: Option<Arc<str>>,
    pub(crate) password: Option<Bytes>,
    pub(crate) will: Option<Will>,
    /// MQTT 5 Receive Maximum: how many QoS 1 and 2 messages the client takes in flight.
    pub(crate) receive_max: Option<u16>,
    /// MQTT 5 Maximum Packet Size the client accepts.
    pub(crate) max_packet_size: Option<u32>,
    /// MQTT 5 Session Expiry Interval in seconds (absent: 0, the session ends with its
    /// socket).
    pub(crate) session_expiry: Option<u32>,
    pub(crate) user_properties: Vec<(Arc<str>, Arc<str>)>,
}

/// A PUBLISH from the client.
#[derive(Debug, Clone)]
pub(crate) struct Publish {
    pub(crate) topic: Arc<str>,
    pub(crate) qos: u8,
    pub(crate) packet_id: Option<u16>,
    pub(crate) retain: bool,
    pub(crate) payload: Bytes,
    pub(crate) content_type: Option<Arc<str>>,
    pub(crate) topic_alias: Option<u16>,
    /// MQTT 5 correlation data, echoed in the reply to a request on
    /// `$webpubsub/server/events/{event}`.
    pub(crate) correlation_data: Option<Bytes>,
    /// MQTT 5 Message Expiry Interval, in seconds.
    pub(crate) message_expiry: Option<u32>,
    /// MQTT 5 user properties (`mqtt-{name}` headers of an event request).
    pub(crate) user_properties: Vec<(Arc<str>, Arc<str>)>,
}

/// A packet from the client, whatever its version.
#[derive(Debug, Clone)]
pub(crate) enum Inbound {
    Connect(Box<Connect>),
    Publish(Publish),
    Puback(u16),
    /// The client received a QoS 2 message (`code` ≥ 0x80: it refused it; 3.1.1: 0).
    Pubrec {
        id: u16,
        code: u8,
    },
    Pubrel(u16),
    Pubcomp(u16),
    Subscribe {
        packet_id: u16,
        /// Filter and requested QoS of each subscription.
        topics: Vec<(Arc<str>, u8)>,
        /// An MQTT 5 subscription identifier was given (Hubcast does not support them).
        subscription_id: bool,
    },
    Unsubscribe {
        packet_id: u16,
        topics: Vec<Arc<str>>,
    },
    Pingreq,
    Disconnect {
        /// MQTT 5 reason code; 0 for 3.1.1.
        code: u8,
        /// MQTT 5 user properties.
        user_properties: Vec<(Arc<str>, Arc<str>)>,
    },
    /// A packet only a server sends, or AUTH (not supported).
    Unexpected(&'static str),
}

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed packet: {0}")]
pub(crate) struct DecodeError(pub(crate) String);

fn qos(q: QoS) -> u8 {
    q as u8
}

fn user_properties(props: &[v5::UserProperty]) -> Vec<(Arc<str>, Arc<str>)> {
    props
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect()
}

/// Decodes one whole packet (as cut by [`Framer`]) of a `version` session.
///
/// # Errors
/// [`DecodeError`] for a malformed packet.
pub(crate) fn decode(version: Version, packet: &[u8]) -> Result<Inbound, DecodeError> {
    match version {
        Version::V311 => match v3::Packet::decode(packet) {
            Ok(Some(p)) => Ok(from_v3(p)),
            Ok(None) => Err(DecodeError("the packet ends early".into())),
            Err(e) => Err(DecodeError(e.to_string())),
        },
        Version::V5 => match v5::Packet::decode(packet) {
            Ok(Some(p)) => Ok(from_v5(p)),
            Ok(None) => Err(DecodeError("the packet ends early".into())),
            Err(e) => Err(DecodeError(e.to_string())),
        },
    }
}

fn from_v3(packet: v3::Packet) -> Inbound {
    match packet {
        v3::Packet::Connect(c) => Inbound::Connect(Box::new(Connect {
            version: Version::V311,
            client_id: c.client_id,
            clean_start: c.clean_session,
            keep_alive: c.keep_alive,
            username: c.username,
            password: c.password,
            will: c.last_will.map(|w| Will {
                topic: Arc::from(&*w.topic_name),
                payload: w.message,
                content_type: None,
                qos: qos(w.qos),
            }),
            receive_max: None,
            max_packet_size: None,
            session_expiry: None,
            user_properties: Vec::new(),
        })),
        v3::Packet::Publish(p) => Inbound::Publish(Publish {
            topic: Arc::from(&*p.topic_name),
            qos: qos(p.qos_pid.qos()),
            packet_id: p.qos_pid.pid().map(Pid::value),
            retain: p.retain,
            payload: p.payload,
            content_type: None,
            topic_alias: None,
            correlation_data: None,
            message_expiry: None,
            user_properties: Vec::new(),
        }),
        v3::Packet::Puback(pid) => Inbound::Puback(pid.value()),
        v3::Packet::Pubrec(id) => Inbound::Pubrec {
            id: id.value(),
            code: 0,
        },
        v3::Packet::Pubrel(pid) => Inbound::Pubrel(pid.value()),
        v3::Packet::Pubcomp(id) => Inbound::Pubcomp(id.value()),
        v3::Packet::Subscribe(s) => Inbound::Subscribe {
            packet_id: s.pid.value(),
            topics: s
                .topics
                .into_iter()
                .map(|(f, q)| (Arc::from(&*f), qos(q)))
                .collect(),
            subscription_id: false,
        },
        v3::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            packet_id: u.pid.value(),
            topics: u.topics.iter().map(|f| Arc::from(&**f)).collect(),
        },
        v3::Packet::Pingreq => Inbound::Pingreq,
        v3::Packet::Disconnect => Inbound::Disconnect {
            code: 0,
            user_properties: Vec::new(),
        },
        v3::Packet::Connack(_) => Inbound::Unexpected("CONNACK"),
        v3::Packet::Suback(_) => Inbound::Unexpected("SUBACK"),
        v3::Packet::Unsuback(_) => Inbound::Unexpected("UNSUBACK"),
        v3::Packet::Pingresp => Inbound::Unexpected("PINGRESP"),
    }
}

fn from_v5(packet: v5::Packet) -> Inbound {
    match packet {
        v5::Packet::Connect(c) => Inbound::Connect(Box::new(Connect {
            version: Version::V5,
            client_id: c.client_id,
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            username: c.username,
            password: c.password,
            will: c.last_will.map(|w| Will {
                topic: Arc::from(&*w.topic_name),
                payload: w.payload,
                content_type: w.properties.content_type,
                qos: qos(w.qos),
            }),
            receive_max: c.properties.receive_max,
            max_packet_size: c.properties.max_packet_size,
            session_expiry: c.properties.session_expiry_interval,
            user_properties: user_properties(&c.properties.user_properties),
        })),
        v5::Packet::Publish(p) => Inbound::Publish(Publish {
            topic: Arc::from(&*p.topic_name),
            qos: qos(p.qos_pid.qos()),
            packet_id: p.qos_pid.pid().map(Pid::value),
            retain: p.retain,
            payload: p.payload,
            content_type: p.properties.content_type,
            topic_alias: p.properties.topic_alias,
            correlation_data: p.properties.correlation_data,
            message_expiry: p.properties.message_expiry_interval,
            user_properties: user_properties(&p.properties.user_properties),
        }),
        v5::Packet::Puback(p) => Inbound::Puback(p.pid.value()),
        v5::Packet::Pubrec(p) => Inbound::Pubrec {
            id: p.pid.value(),
            code: p.reason_code as u8,
        },
        v5::Packet::Pubrel(p) => Inbound::Pubrel(p.pid.value()),
        v5::Packet::Pubcomp(p) => Inbound::Pubcomp(p.pid.value()),
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            packet_id: s.pid.value(),
            subscription_id: s.properties.subscription_id.is_some(),
            topics: s
                .topics
                .into_iter()
                .map(|(f, o)| (Arc::from(&*f), qos(o.max_qos)))
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            packet_id: u.pid.value(),
            topics: u.topics.iter().map(|f| Arc::from(&**f)).collect(),
        },
        v5::Packet::Pingreq => Inbound::Pingreq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            code: d.reason_code as u8,
            user_properties: user_properties(&d.properties.user_properties),
        },
        v5::Packet::Connack(_) => Inbound::Unexpected("CONNACK"),
        v5::Packet::Suback(_) => Inbound::Unexpected("SUBACK"),
        v5::Packet::Unsuback(_) => Inbound::Unexpected("UNSUBACK"),
        v5::Packet::Pingresp => Inbound::Unexpected("PINGRESP"),
        v5::Packet::Auth(_) => Inbound::Unexpected("AUTH"),
    }
}

// === what the server sends ===

/// A CONNACK refusal or acceptance, with the code of each version (3.1.1 return codes are
/// fewer; each refusal names the closest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnackCode {
    pub(crate) v3: u8,
    pub(crate) v5: u8,
}

impl ConnackCode {
    pub(crate) const ACCEPTED: Self = Self { v3: 0, v5: 0 };
    pub(crate) const UNSUPPORTED_VERSION: Self = Self { v3: 1, v5: 0x84 };
    pub(crate) const CLIENT_ID_INVALID: Self = Self { v3: 2, v5: 0x85 };
    pub(crate) const BAD_USERNAME_OR_PASSWORD: Self = Self { v3: 4, v5: 0x86 };
    pub(crate) const NOT_AUTHORIZED: Self = Self { v3: 5, v5: 0x87 };
    pub(crate) const SERVER_UNAVAILABLE: Self = Self { v3: 3, v5: 0x88 };
    pub(crate) const SERVER_BUSY: Self = Self { v3: 3, v5: 0x89 };
    pub(crate) const MALFORMED: Self = Self { v3: 2, v5: 0x81 };
    pub(crate) const TOPIC_NAME_INVALID: Self = Self { v3: 2, v5: 0x90 };
    pub(crate) const PACKET_TOO_LARGE: Self = Self { v3: 2, v5: 0x95 };
    pub(crate) const QUOTA_EXCEEDED: Self = Self { v3: 3, v5: 0x97 };
    pub(crate) const UNSPECIFIED: Self = Self { v3: 3, v5: 0x80 };

    /// The code of `version`.
    pub(crate) fn of(self, version: Version) -> u8 {
        match version {
            Version::V311 => self.v3,
            Version::V5 => self.v5,
        }
    }

    /// The code a backend chose for refusing a client of `version` (`{"mqtt":{"code":…}}`),
    /// when it is a refusal code of that version; Azure turns any other into "unspecified
    /// error" (3.1.1 has none: "server unavailable").
    pub(crate) fn from_backend(code: u32, version: Version) -> Self {
        const V5_REFUSALS: [u8; 21] = [
            0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
            0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
        ];
        let code = u8::try_from(code).ok();
        match (version, code) {
            (Version::V311, Some(c @ 1..=5)) => Self { v3: c, v5: c },
            (Version::V5, Some(c)) if V5_REFUSALS.contains(&c) => Self { v3: c, v5: c },
            _ => Self::UNSPECIFIED,
        }
    }

    /// The code for an upstream `connect` refused with HTTP `status` (as Azure's SDKs map
    /// them: 400 bad credentials, 401 not authorized, 5xx unavailable).
    pub(crate) fn from_http(status: u16) -> Self {
        match status {
            400 => Self::BAD_USERNAME_OR_PASSWORD,
            401 | 403 => Self::NOT_AUTHORIZED,
            429 => Self::QUOTA_EXCEEDED,
            503 | 504 => Self::SERVER_UNAVAILABLE,
            _ => Self::UNSPECIFIED,
        }
    }
}

/// What an accepting MQTT 5 CONNACK announces.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnackProperties {
    pub(crate) assigned_client_id: Option<Arc<str>>,
    pub(crate) receive_max: u16,
    pub(crate) server_keep_alive: Option<u16>,
    pub(crate) max_packet_size: u32,
    /// The Session Expiry Interval the server keeps, when it is not the client's.
    pub(crate) session_expiry: Option<u32>,
    pub(crate) reason: Option<Arc<str>>,
    pub(crate) user_properties: Vec<(Arc<str>, Arc<str>)>,
}

fn encode(packet: &impl EncodePacket) -> Bytes {
    packet.bytes()
}

trait EncodePacket {
    fn bytes(&self) -> Bytes;
}

impl EncodePacket for v3::Packet {
    fn bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.encode().expect("server packets encode").as_ref())
    }
}

impl EncodePacket for v5::Packet {
    fn bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.encode().expect("server packets encode").as_ref())
    }
}

fn user_props(props: &[(Arc<str>, Arc<str>)]) -> Vec<v5::UserProperty> {
    props
        .iter()
        .map(|(name, value)| v5::UserProperty {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn pid(id: u16) -> Pid {
    Pid::try_from(id).unwrap_or_default()
}

/// A CONNACK.
pub(crate) fn connack(
    version: Version,
    code: ConnackCode,
    session_present: bool,
    properties: ConnackProperties,
) -> Bytes {
    match version {
        Version::V311 => {
            let code = v3::ConnectReturnCode::from_u8(code.v3)
                .unwrap_or(v3::ConnectReturnCode::ServerUnavailable);
            encode(&v3::Packet::Connack(v3::Connack::new(
                session_present,
                code,
            )))
        }
        Version::V5 => {
            let reason = v5::ConnectReasonCode::from_u8(code.v5)
                .unwrap_or(v5::ConnectReasonCode::UnspecifiedError);
            let mut connack = v5::Connack::new(session_present, reason);
            let p = &mut connack.properties;
            if code == ConnackCode::ACCEPTED {
                p.assigned_client_id = properties.assigned_client_id;
                p.receive_max = Some(properties.receive_max);
                p.server_keep_alive = properties.server_keep_alive;
                p.max_packet_size = Some(properties.max_packet_size);
                p.session_expiry_interval = properties.session_expiry;
                // Azure's MQTT has no retained messages, wildcards, shared subscriptions,
                // subscription identifiers or topic aliases.
                p.retain_available = Some(false);
                p.wildcard_subscription_available = Some(false);
                p.shared_subscription_available = Some(false);
                p.subscription_id_available = Some(false);
                p.topic_alias_max = Some(0);
            }
            p.reason_string = properties.reason;
            p.user_properties = user_props(&properties.user_properties);
            encode(&v5::Packet::Connack(connack))
        }
    }
}

/// A SUBACK; `codes` are MQTT 5 reason codes (a 3.1.1 session gets 0x80 for every failure).
pub(crate) fn suback(version: Version, packet_id: u16, codes: &[u8]) -> Bytes {
    match version {
        // Written here: mqtt-proto 0.4.0 encodes a 3.1.1 failure (0x80) as its enum
        // discriminant, 3, which clients read as an invalid QoS.
        Version::V311 => {
            let mut out = BytesMut::with_capacity(4 + codes.len());
            out.put_u8(0x90);
            crate::protocol::mqtt::put_var_int(&mut out, 2 + codes.len());
            out.put_u16(packet_id);
            out.extend(codes.iter().map(|&c| if c < 0x80 { c } else { 0x80 }));
            out.freeze()
        }
        Version::V5 => encode(&v5::Packet::Suback(v5::Suback {
            pid: pid(packet_id),
            properties: v5::SubackProperties::default(),
            topics: codes
                .iter()
                .map(|&c| {
                    v5::SubscribeReasonCode::from_u8(c)
                        .unwrap_or(v5::SubscribeReasonCode::UnspecifiedError)
                })
                .collect(),
        })),
    }
}

/// An UNSUBACK; `codes` are MQTT 5 reason codes (3.1.1 has none).
pub(crate) fn unsuback(version: Version, packet_id: u16, codes: &[u8]) -> Bytes {
    match version {
        Version::V311 => encode(&v3::Packet::Unsuback(pid(packet_id))),
        Version::V5 => encode(&v5::Packet::Unsuback(v5::Unsuback {
            pid: pid(packet_id),
            properties: v5::UnsubackProperties::default(),
            topics: codes
                .iter()
                .map(|&c| {
                    v5::UnsubscribeReasonCode::from_u8(c)
                        .unwrap_or(v5::UnsubscribeReasonCode::UnspecifiedError)
                })
                .collect(),
        })),
    }
}

/// A PUBACK with an MQTT 5 reason code (3.1.1 has none).
pub(crate) fn puback(version: Version, packet_id: u16, code: u8, reason: Option<&str>) -> Bytes {
    match version {
        Version::V311 => encode(&v3::Packet::Puback(pid(packet_id))),
        Version::V5 => {
            let code = v5::PubackReasonCode::from_u8(code)
                .unwrap_or(v5::PubackReasonCode::UnspecifiedError);
            let mut ack = v5::Puback::new(pid(packet_id), code);
            ack.properties.reason_string = reason.map(Into::into);
            encode(&v5::Packet::Puback(ack))
        }
    }
}

/// A PUBREC with an MQTT 5 reason code (3.1.1 has none).
pub(crate) fn pubrec(version: Version, packet_id: u16, code: u8, reason: Option<&str>) -> Bytes {
    match version {
        Version::V311 => encode(&v3::Packet::Pubrec(pid(packet_id))),
        Version::V5 => {
            let code = v5::PubrecReasonCode::from_u8(code)
                .unwrap_or(v5::PubrecReasonCode::UnspecifiedError);
            let mut ack = v5::Pubrec::new(pid(packet_id), code);
            ack.properties.reason_string = reason.map(Into::into);
            encode(&v5::Packet::Pubrec(ack))
        }
    }
}

/// A PUBCOMP; `found` false answers a PUBREL of an unknown packet id (MQTT 5: 0x92).
pub(crate) fn pubcomp(version: Version, packet_id: u16, found: bool) -> Bytes {
    match version {
        Version::V311 => encode(&v3::Packet::Pubcomp(pid(packet_id))),
        Version::V5 => {
            let code = if found {
                v5::PubcompReasonCode::Success
            } else {
                v5::PubcompReasonCode::PacketIdentifierNotFound
            };
            encode(&v5::Packet::Pubcomp(v5::Pubcomp::new(pid(packet_id), code)))
        }
    }
}

/// A PUBREL: the server's second step of a QoS 2 delivery; `found` false tells the client
/// (MQTT 5) that the packet id names nothing in flight.
pub(crate) fn pubrel(version: Version, packet_id: u16, found: bool) -> Bytes {
    match version {
        Version::V311 => encode(&v3::Packet::Pubrel(pid(packet_id))),
        Version::V5 => {
            let code = if found {
                v5::PubrelReasonCode::Success
            } else {
                v5::PubrelReasonCode::PacketIdentifierNotFound
            };
            encode(&v5::Packet::Pubrel(v5::Pubrel::new(pid(packet_id), code)))
        }
    }
}

/// A PINGRESP.
pub(crate) fn pingresp(version: Version) -> Bytes {
    match version {
        Version::V311 => encode(&v3::Packet::Pingresp),
        Version::V5 => encode(&v5::Packet::Pingresp),
    }
}

/// The reply to a request on `$webpubsub/server/events/{event}`, at QoS 0 on `topic`
/// (`…/succeeded` or `…/failed`): for MQTT 5 with the backend's status in the user property
/// `azure-status-code`, its content type, and the request's correlation data.
pub(crate) fn event_reply(
    version: Version,
    topic: &str,
    payload: Bytes,
    content_type: Option<&str>,
    status: u16,
    correlation_data: Option<Bytes>,
    user_properties: &[(Arc<str>, Arc<str>)],
) -> Option<Bytes> {
    let topic_name = mqtt_proto::TopicName::try_from(topic).ok()?;
    Some(match version {
        Version::V311 => encode(&v3::Packet::Publish(v3::Publish {
            dup: false,
            retain: false,
            qos_pid: mqtt_proto::QosPid::Level0,
            topic_name,
            payload,
        })),
        Version::V5 => {
            let mut publish = v5::Publish {
                dup: false,
                retain: false,
                qos_pid: mqtt_proto::QosPid::Level0,
                topic_name,
                payload,
                properties: v5::PublishProperties::default(),
            };
            publish.properties.content_type = content_type.map(Into::into);
            publish.properties.correlation_data = correlation_data;
            publish.properties.user_properties = vec![v5::UserProperty {
                name: "azure-status-code".into(),
                value: status.to_string().into(),
            }];
            publish
                .properties
                .user_properties
                .extend(user_props(user_properties));
            encode(&v5::Packet::Publish(publish))
        }
    })
}

/// A server DISCONNECT (MQTT 5 only: a 3.1.1 server just closes).
pub(crate) fn disconnect(version: Version, code: u8, reason: &str) -> Option<Bytes> {
    match version {
        Version::V311 => None,
        Version::V5 => {
            let code = v5::DisconnectReasonCode::from_u8(code)
                .unwrap_or(v5::DisconnectReasonCode::UnspecifiedError);
            let mut packet = v5::Disconnect::new(code);
            if !reason.is_empty() {
                packet.properties.reason_string = Some(reason.into());
            }
            Some(encode(&v5::Packet::Disconnect(packet)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECT_V311: &[u8] = b"\x10\x12\x00\x04MQTT\x04\x02\x00\x3c\x00\x06client";

    #[test]
    fn a_backends_refusal_code_is_kept_when_the_version_has_it() {
        let code = |c, v| ConnackCode::from_backend(c, v).of(v);
        assert_eq!(code(2, Version::V311), 2);
        assert_eq!(code(5, Version::V311), 5);
        assert_eq!(code(0, Version::V311), 3, "success is no refusal");
        assert_eq!(
            code(0x8A, Version::V311),
            3,
            "a 5.0 code for a 3.1.1 client"
        );
        assert_eq!(code(0x8A, Version::V5), 0x8A);
        assert_eq!(code(0x9F, Version::V5), 0x9F);
        assert_eq!(code(2, Version::V5), 0x80, "a 3.1.1 code for a 5.0 client");
        assert_eq!(code(0x8B, Version::V5), 0x80, "not a CONNACK code");
        assert_eq!(code(1 << 20, Version::V5), 0x80);
    }

    #[test]
    fn frames_split_and_joined_packets() {
        let mut framer = Framer::default();
        let mut stream = CONNECT_V311.to_vec();
        stream.extend_from_slice(&[0xc0, 0x00]);
        framer.extend(&stream[..5]);
        assert_eq!(framer.next_packet(1024), Ok(None));
        framer.extend(&stream[5..]);
        let first = framer.next_packet(1024).expect("ok").expect("a packet");
        assert_eq!(&first[..], CONNECT_V311);
        assert_eq!(connect_level(&first), Level::Supported(Version::V311));
        let ping = framer.next_packet(1024).expect("ok").expect("a packet");
        assert!(matches!(decode(Version::V311, &ping), Ok(Inbound::Pingreq)));
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn refuses_oversized_and_malformed_headers() {
        let mut framer = Framer::default();
        framer.extend(&[0x30, 0xff, 0xff, 0x03]);
        assert!(matches!(
            framer.next_packet(1024),
            Err(FrameError::TooLarge { .. })
        ));
        let mut framer = Framer::default();
        framer.extend(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(framer.next_packet(1 << 30), Err(FrameError::Malformed));
    }

    #[test]
    fn recognises_protocol_levels() {
        let mut v5 = CONNECT_V311.to_vec();
        v5[8] = 5;
        assert_eq!(connect_level(&v5), Level::Supported(Version::V5));
        let mut v31 = b"\x10\x14\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x06client".to_vec();
        assert_eq!(connect_level(&v31), Level::Unsupported);
        v31[0] = 0x30;
        assert_eq!(connect_level(&v31), Level::NotConnect);
    }

    #[test]
    fn encodes_acks_that_decode() {
        let suback = suback(Version::V5, 3, &[1, 0xa2]);
        match v5::Packet::decode(&suback) {
            Ok(Some(v5::Packet::Suback(s))) => {
                assert_eq!(
                    s.topics,
                    vec![
                        v5::SubscribeReasonCode::GrantedQoS1,
                        v5::SubscribeReasonCode::WildcardSubscriptionsNotSupported
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        let suback = super::suback(Version::V311, 3, &[1, 0xa2]);
        match v3::Packet::decode(&suback) {
            Ok(Some(v3::Packet::Suback(s))) => assert_eq!(
                s.topics,
                vec![
                    v3::SubscribeReturnCode::MaxLevel1,
                    v3::SubscribeReturnCode::Failure
                ]
            ),
            other => panic!("{other:?}"),
        }
        assert!(disconnect(Version::V311, 0x98, "x").is_none());
        let d = disconnect(Version::V5, 0x98, "closed").expect("v5");
        match v5::Packet::decode(&d) {
            Ok(Some(v5::Packet::Disconnect(d))) => {
                assert_eq!(
                    d.reason_code,
                    v5::DisconnectReasonCode::AdministrativeAction
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
