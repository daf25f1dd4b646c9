//! MQTT PUBLISH packets for fan-out: the part every recipient shares, encoded once.
//!
//! A PUBLISH packet is `fixed header | topic | packet id | properties (5.0) | payload`. The
//! fixed header (QoS, remaining length) and the packet id differ per session; the topic,
//! the properties and the payload do not. Fan-out therefore queues one shared *body*,
//! `flags | [expiry] | topic | properties | payload` (not sent: the flags cap the QoS the
//! writer picks and say whether an MQTT 5 Message Expiry Interval and its deadline follow,
//! from which the writer drops an expired copy or sends what remains of the interval), and the MQTT writer puts the per-session parts around its
//! slices when it writes the packet ([`PublishBody::split`]): no per-recipient copy of the
//! payload, and one encoding for 3.1.1 and 5.0 sessions alike (a 3.1.1 session skips the
//! properties).
//!
//! The MQTT 5 content type carries Azure's `dataType` (spec part 2 §1.2): `application/json`
//! is JSON, `text/plain` is text, `application/x-protobuf` is protobuf, anything else (and
//! no content type, and every 3.1.1 message) is binary.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;

use crate::message::{Data, Frame, Message, Source, Utf8Bytes};

/// The topic on which REST and gRPC sends to all, users and connections reach MQTT clients.
pub const SERVER_MESSAGES_TOPIC: &str = "$webpubsub/server/messages";

/// The MQTT 5 content type of JSON data.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// The MQTT 5 content type of text data.
pub const CONTENT_TYPE_TEXT: &str = "text/plain";
/// The MQTT 5 content type of protobuf data.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";

/// MQTT 5 property identifier of the content type (a UTF-8 string).
const PROPERTY_CONTENT_TYPE: u8 = 0x03;
/// MQTT 5 property identifier of the Message Expiry Interval (four bytes, seconds).
const PROPERTY_MESSAGE_EXPIRY: u8 = 0x02;
/// The flag of the first byte of a PUBLISH body: an expiry interval and deadline follow.
const EXPIRES: u8 = 0x04;

/// The content type an MQTT 5 recipient sees for `data`; `None` for binary, which is what
/// an MQTT client sending no content type means.
pub fn content_type(data: &Data) -> Option<&'static str> {
    match data {
        Data::Json(_) => Some(CONTENT_TYPE_JSON),
        Data::Text(_) => Some(CONTENT_TYPE_TEXT),
        Data::Protobuf(_) => Some(CONTENT_TYPE_PROTOBUF),
        Data::Binary(_) => None,
    }
}

/// Why an MQTT payload cannot be taken as its content type says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the payload is not valid UTF-8, as content type '{0}' requires")]
pub struct NotUtf8(pub &'static str);

/// The data of a PUBLISH from an MQTT client, by its content type (`None` for 3.1.1 and for
/// 5.0 without one).
///
/// # Errors
/// [`NotUtf8`] when a text or JSON payload is not UTF-8.
pub fn data_of(content_type: Option<&str>, payload: Bytes) -> Result<Data, NotUtf8> {
    let text = |kind: &'static str, payload: Bytes| {
        Utf8Bytes::try_from(payload).map_err(|_| NotUtf8(kind))
    };
    match content_type.map(str::trim) {
        Some(t) if t.eq_ignore_ascii_case(CONTENT_TYPE_JSON) => {
            text(CONTENT_TYPE_JSON, payload).map(Data::Json)
        }
        Some(t) if t.eq_ignore_ascii_case(CONTENT_TYPE_TEXT) => {
            text(CONTENT_TYPE_TEXT, payload).map(Data::Text)
        }
        Some(t) if t.eq_ignore_ascii_case(CONTENT_TYPE_PROTOBUF) => Ok(Data::Protobuf(payload)),
        _ => Ok(Data::Binary(payload)),
    }
}

/// The payload bytes of `data` as an MQTT PUBLISH carries them.
pub fn payload_of(data: &Data) -> Bytes {
    match data {
        Data::Text(t) | Data::Json(t) => Bytes::from(t.clone()),
        Data::Binary(b) | Data::Protobuf(b) => b.clone(),
    }
}

/// The topic a message reaches MQTT clients on: its group, or the server topic.
pub fn topic_of(message: &Message) -> &str {
    match &message.source {
        Source::Group { group, .. } => group,
        Source::Server => SERVER_MESSAGES_TOPIC,
    }
}

/// Encodes the shared body of the PUBLISH packets of `message`: `flags | [expiry] | topic |
/// properties | payload`, with the properties as MQTT 5 writes them (length first).
pub fn encode_publish_body(message: &Message) -> Frame {
    let topic = topic_of(message);
    let (payload, content_type) = match &message.data {
        data @ (Data::Text(t) | Data::Json(t)) => (Bytes::from(t.clone()), content_type(data)),
        data @ (Data::Binary(b) | Data::Protobuf(b)) => (b.clone(), content_type(data)),
    };
    let properties_len = content_type.map_or(0, |t| 1 + 2 + t.len());
    let mut body =
        BytesMut::with_capacity(13 + 2 + topic.len() + 4 + properties_len + payload.len());
    let max_qos = message.mqtt_qos.unwrap_or(1).min(2);
    match message.mqtt_expiry.filter(|secs| *secs > 0) {
        Some(secs) => {
            body.put_u8(max_qos | EXPIRES);
            body.put_u32(secs);
            let deadline = Instant::now() + Duration::from_secs(u64::from(secs));
            body.put_u64(since_base(deadline));
        }
        None => body.put_u8(max_qos),
    }
    put_string(&mut body, topic);
    put_var_int(&mut body, properties_len);
    if let Some(t) = content_type {
        body.put_u8(PROPERTY_CONTENT_TYPE);
        put_string(&mut body, t);
    }
    body.extend_from_slice(&payload);
    Frame::Binary(body.freeze())
}

/// A PUBLISH body cut into the slices the writer puts a session's header around.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishBody {
    /// The highest QoS a recipient gets it at: the publisher's for a message from an MQTT
    /// client, else 1 (Azure: `min(1, granted QoS)` across protocols).
    pub max_qos: u8,
    /// When an MQTT 5 Message Expiry Interval was set: the instant it passes.
    pub expires: Option<Instant>,
    /// The topic, length first, as the packet carries it.
    pub topic: Bytes,
    /// The MQTT 5 properties, without their length.
    pub properties: Bytes,
    /// The payload.
    pub payload: Bytes,
}

impl PublishBody {
    /// Cuts a body made by [`encode_publish_body`]; `None` for anything else.
    pub fn split(body: &Bytes) -> Option<Self> {
        let flags = *body.first()?;
        let max_qos = (flags & 0x03).min(2);
        let (expires, topic_start) = if flags & EXPIRES == 0 {
            (None, 1)
        } else {
            let nanos = u64::from_be_bytes(body.get(5..13)?.try_into().ok()?);
            (Some(base() + Duration::from_nanos(nanos)), 13)
        };
        let topic_len = usize::from(u16::from_be_bytes([
            *body.get(topic_start)?,
            *body.get(topic_start + 1)?,
        ]));
        let topic_end = topic_start + 2 + topic_len;
        let (properties_len, len_bytes) = read_var_int(body.get(topic_end..)?)?;
        let properties_start = topic_end + len_bytes;
        let properties_end = properties_start + properties_len;
        if properties_end > body.len() {
            return None;
        }
        Some(Self {
            max_qos,
            expires,
            topic: body.slice(topic_start..topic_end),
            properties: body.slice(properties_start..properties_end),
            payload: body.slice(properties_end..),
        })
    }

    /// The Message Expiry Interval left at `now`, in whole seconds rounded up (MQTT 5 sends
    /// what remains): `Ok(None)` when none was set, `Err(Expired)` once it has passed.
    ///
    /// # Errors
    /// [`Expired`] when the message must not be delivered any more.
    pub fn remaining(&self, now: Instant) -> Result<Option<u32>, Expired> {
        let Some(expires) = self.expires else {
            return Ok(None);
        };
        let left = expires.checked_duration_since(now).ok_or(Expired)?;
        if left.is_zero() {
            return Err(Expired);
        }
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Ok(Some(u32::try_from(secs).unwrap_or(u32::MAX)))
    }

    /// The topic name, without its length.
    pub fn topic_name(&self) -> &str {
        std::str::from_utf8(&self.topic[2..]).unwrap_or_default()
    }

    /// Writes the per-session head of the PUBLISH: fixed header (with DUP when `dup`: a
    /// redelivery of a QoS 1 or 2 message), topic, packet id (QoS 1 and 2) and, for MQTT 5,
    /// the properties. The payload follows it on the wire.
    /// `expiry` is the Message Expiry Interval left ([`PublishBody::remaining`]).
    pub fn write_head(
        &self,
        qos: u8,
        packet_id: Option<u16>,
        dup: bool,
        v5: bool,
        expiry: Option<u32>,
        out: &mut BytesMut,
    ) {
        let id_len = if qos > 0 { 2 } else { 0 };
        let inner_len = self.properties.len() + expiry.map_or(0, |_| 5);
        let properties_len = if v5 {
            var_int_len(inner_len) + inner_len
        } else {
            0
        };
        let remaining = self.topic.len() + id_len + properties_len + self.payload.len();
        out.put_u8(0x30 | (u8::from(dup && qos > 0) << 3) | (qos << 1));
        put_var_int(out, remaining);
        out.extend_from_slice(&self.topic);
        if qos > 0 {
            out.put_u16(packet_id.unwrap_or(1));
        }
        if v5 {
            put_var_int(out, inner_len);
            out.extend_from_slice(&self.properties);
            if let Some(secs) = expiry {
                out.put_u8(PROPERTY_MESSAGE_EXPIRY);
                out.put_u32(secs);
            }
        }
    }
}

/// A message whose MQTT 5 Message Expiry Interval has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

/// The instant the expiry deadlines in PUBLISH bodies count from: bodies live in this
/// process only, so a process-wide base is all they need.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn since_base(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base()).as_nanos()).unwrap_or(u64::MAX)
}

/// How many bytes an MQTT variable byte integer of `n` takes.
fn var_int_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_string(out: &mut BytesMut, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.put_u16(len);
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// Writes an MQTT variable byte integer.
pub fn put_var_int(out: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if n == 0 {
            break;
        }
    }
}

/// Reads an MQTT variable byte integer: its value and its length in bytes. `None` when
/// `bytes` ends first or it is longer than the four bytes MQTT allows.
pub fn read_var_int(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in bytes.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_v5(packet: &[u8]) -> mqtt_proto::v5::Publish {
        match mqtt_proto::v5::Packet::decode(packet) {
            Ok(Some(mqtt_proto::v5::Packet::Publish(p))) => p,
            other => panic!("not a publish: {other:?}"),
        }
    }

    fn packet(body: &PublishBody, qos: u8, v5: bool) -> Vec<u8> {
        let mut head = BytesMut::new();
        body.write_head(qos, Some(7), false, v5, None, &mut head);
        let mut packet = head.to_vec();
        packet.extend_from_slice(&body.payload);
        packet
    }

    #[test]
    fn one_body_makes_valid_packets_for_every_version_and_qos() {
        let message = Message::to_group("room", None, Data::Json(Utf8Bytes::from("{\"a\":1}")));
        let Frame::Binary(body) = encode_publish_body(&message) else {
            panic!("binary body")
        };
        let split = PublishBody::split(&body).expect("a body");
        assert_eq!(split.topic_name(), "room");
        let p = decode_v5(&packet(&split, 1, true));
        assert_eq!(&*p.topic_name, "room");
        assert_eq!(p.payload, Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(
            p.properties.content_type.as_deref(),
            Some(CONTENT_TYPE_JSON)
        );
        assert_eq!(p.qos_pid.pid().map(|p| p.value()), Some(7));
        let v3 = mqtt_proto::v3::Packet::decode(&packet(&split, 0, false)).expect("decodes");
        match v3 {
            Some(mqtt_proto::v3::Packet::Publish(p)) => {
                assert_eq!(&*p.topic_name, "room");
                assert_eq!(p.payload, Bytes::from_static(b"{\"a\":1}"));
            }
            other => panic!("not a publish: {other:?}"),
        }
    }

    #[test]
    fn server_messages_use_the_reserved_topic_and_binary_has_no_content_type() {
        let message = Message::from_server(Data::Binary(Bytes::from_static(&[0, 1, 2])));
        let Frame::Binary(body) = encode_publish_body(&message) else {
            panic!("binary body")
        };
        let split = PublishBody::split(&body).expect("a body");
        let p = decode_v5(&packet(&split, 1, true));
        assert_eq!(&*p.topic_name, SERVER_MESSAGES_TOPIC);
        assert_eq!(p.properties.content_type, None);
    }

    #[test]
    fn content_types_map_to_data_types_and_back() {
        let payload = Bytes::from_static(b"hi");
        for (ct, kind) in [
            (Some("application/json"), "json"),
            (Some("TEXT/PLAIN"), "text"),
            (Some("application/x-protobuf"), "protobuf"),
            (Some("application/octet-stream"), "binary"),
            (None, "binary"),
        ] {
            let data = data_of(ct, payload.clone()).expect("valid");
            assert_eq!(data.data_type(), kind, "{ct:?}");
        }
        assert!(data_of(Some("text/plain"), Bytes::from_static(&[0xff])).is_err());
        assert_eq!(PublishBody::split(&Bytes::from_static(&[0, 9, b'a'])), None);
    }

    #[test]
    fn the_expiry_travels_in_the_body_and_what_remains_goes_out() {
        let message = Message::to_group("room", None, Data::Text(Utf8Bytes::from("hi")))
            .with_mqtt(Some(2), Some(10));
        let Frame::Binary(body) = encode_publish_body(&message) else {
            panic!("binary body")
        };
        let split = PublishBody::split(&body).expect("a body");
        assert_eq!(split.max_qos, 2);
        let now = Instant::now();
        assert_eq!(split.remaining(now), Ok(Some(10)));
        assert_eq!(
            split.remaining(now + Duration::from_millis(2_500)),
            Ok(Some(8)),
            "rounded up"
        );
        assert_eq!(split.remaining(now + Duration::from_secs(11)), Err(Expired));
        let mut head = BytesMut::new();
        split.write_head(2, Some(3), true, true, Some(8), &mut head);
        head.extend_from_slice(&split.payload);
        let p = decode_v5(&head);
        assert_eq!(p.properties.message_expiry_interval, Some(8));
        assert_eq!(
            p.properties.content_type.as_deref(),
            Some(CONTENT_TYPE_TEXT)
        );
        assert!(p.dup);
        assert_eq!(p.payload, Bytes::from_static(b"hi"));
        // Without an expiry: none, and any other message is capped at QoS 1.
        let plain = Message::from_server(Data::Binary(Bytes::from_static(b"x")));
        let Frame::Binary(body) = encode_publish_body(&plain) else {
            panic!("binary body")
        };
        let split = PublishBody::split(&body).expect("a body");
        assert_eq!((split.max_qos, split.remaining(now)), (1, Ok(None)));
    }

    #[test]
    fn var_ints_round_trip() {
        for n in [0, 127, 128, 16_383, 16_384, 268_435_455] {
            let mut out = BytesMut::new();
            put_var_int(&mut out, n);
            assert_eq!(read_var_int(&out), Some((n, out.len())));
        }
        assert_eq!(read_var_int(&[0xff, 0xff, 0xff, 0xff, 0x01]), None);
    }
}
