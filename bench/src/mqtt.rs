//! The generator's MQTT 3.1.1 client side: the packets it sends, encoded with `mqtt-proto`
//! (the codec the server uses), and a framer that cuts the byte stream into packets.
//!
//! MQTT over WebSocket does not align packets with WebSocket messages (mosquitto may put
//! several in one message, or split one), so the receive side buffers only what a message
//! leaves incomplete. A delivered PUBLISH is not decoded into an owned packet (the codec
//! would allocate its topic and payload): its fixed header, topic length and packet id are
//! read in place and its payload is borrowed from the frame, so a delivery costs the
//! generator no allocation. Handshake answers go through the codec.

use bytes::BytesMut;
use mqtt_proto::v3::{Connect, Publish, Subscribe};
pub(crate) use mqtt_proto::v3::{ConnectReturnCode, Packet, SubscribeReturnCode};
use mqtt_proto::{Pid, QoS, QosPid, TopicFilter, TopicName};

/// Keep-alive announced in CONNECT, in seconds: Azure's largest for MQTT 3.1.1 (runs are
/// shorter than 1.5 times it, so the generator never needs to send PINGREQ).
pub(crate) const KEEP_ALIVE_SECS: u16 = 180;

/// Packet type nibbles the receive side tells apart.
const PUBLISH: u8 = 3;

fn qos_of(level: u8) -> QoS {
    if level == 0 { QoS::Level0 } else { QoS::Level1 }
}

fn encode(packet: &Packet) -> Result<Vec<u8>, String> {
    packet
        .encode()
        .map(|bytes| bytes.as_ref().to_vec())
        .map_err(|e| format!("MQTT encode: {e}"))
}

/// CONNECT with a clean session and the client id `client_id`.
pub(crate) fn connect(client_id: &str) -> Result<Vec<u8>, String> {
    let connect = Connect::new(client_id.into(), KEEP_ALIVE_SECS);
    encode(&Packet::Connect(connect))
}

/// SUBSCRIBE (packet id 1) to `topics` at `qos`.
pub(crate) fn subscribe(topics: &[String], qos: u8) -> Result<Vec<u8>, String> {
    let filters = topics
        .iter()
        .map(|t| {
            TopicFilter::try_from(t.as_str())
                .map(|f| (f, qos_of(qos)))
                .map_err(|e| format!("topic filter {t}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pid = Pid::try_from(1).map_err(|e| e.to_string())?;
    encode(&Packet::Subscribe(Subscribe::new(pid, filters)))
}

/// PUBLISH of `payload` to `topic`; at QoS 1 with a packet id derived from `k` (the
/// message's number), unique among the 65,535 most recent.
pub(crate) fn publish(topic: &str, payload: &str, qos: u8, k: u64) -> Result<Vec<u8>, String> {
    let topic_name = TopicName::try_from(topic).map_err(|e| format!("topic {topic}: {e}"))?;
    let qos_pid = if qos == 0 {
        QosPid::Level0
    } else {
        let id = u16::try_from(k % 65_535 + 1).unwrap_or(1);
        QosPid::Level1(Pid::try_from(id).map_err(|e| e.to_string())?)
    };
    let publish = Publish::new(qos_pid, topic_name, payload.as_bytes().to_vec().into());
    encode(&Packet::Publish(publish))
}

/// PUBACK of packet id `pid`: four bytes, built here on the hot path.
pub(crate) fn puback(pid: u16) -> [u8; 4] {
    let [hi, lo] = pid.to_be_bytes();
    [0x40, 2, hi, lo]
}

/// One whole packet, borrowed from the stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    /// A PUBLISH: its payload, and its packet id at QoS 1 or 2.
    Publish { payload: &'a [u8], pid: Option<u16> },
    /// Any other packet, whole (fixed header included), for [`decode`].
    Other(&'a [u8]),
}

/// The packet at the start of `bytes` and its length, or `None` when it is incomplete.
fn split(bytes: &[u8]) -> Result<Option<(Incoming<'_>, usize)>, String> {
    if bytes.len() < 2 {
        return Ok(None);
    }
    // The remaining length: a variable byte integer of at most four bytes (the codec keeps
    // its decoder private).
    let mut remaining = 0usize;
    let mut offset = 1;
    loop {
        let Some(&byte) = bytes.get(offset) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * (offset - 1));
        offset += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if offset == 5 {
            return Err("MQTT fixed header: the remaining length is malformed".into());
        }
    }
    let total = offset + remaining;
    if bytes.len() < total {
        return Ok(None);
    }
    let packet = &bytes[..total];
    if packet[0] >> 4 != PUBLISH {
        return Ok(Some((Incoming::Other(packet), total)));
    }
    let qos = (packet[0] >> 1) & 0b11;
    let body = &packet[offset..];
    let topic_len = match body {
        [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => return Err("MQTT PUBLISH without a topic".into()),
    };
    let mut at = 2 + topic_len;
    let pid = if qos > 0 {
        let id = body
            .get(at..at + 2)
            .ok_or("MQTT PUBLISH without a packet id")?;
        at += 2;
        Some(u16::from_be_bytes([id[0], id[1]]))
    } else {
        None
    };
    let payload = body
        .get(at..)
        .ok_or("MQTT PUBLISH shorter than its topic")?;
    Ok(Some((Incoming::Publish { payload, pid }, total)))
}

/// Decodes a whole packet (handshake answers: CONNACK, SUBACK) with the codec.
pub(crate) fn decode(packet: &[u8]) -> Result<Packet, String> {
    match Packet::decode(packet) {
        Ok(Some(packet)) => Ok(packet),
        Ok(None) => Err("incomplete MQTT packet".into()),
        Err(e) => Err(format!("MQTT decode: {e}")),
    }
}

/// Cuts a byte stream that arrives in WebSocket messages into MQTT packets.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    /// The start of a packet that the last message left incomplete.
    rest: BytesMut,
    /// The stream broke the framing once: nothing after it can be trusted or is read.
    failed: bool,
}

impl Framer {
    /// Calls `on_packet` for every packet `message` completes, in order.
    pub(crate) fn feed(
        &mut self,
        message: &[u8],
        mut on_packet: impl FnMut(Incoming<'_>),
    ) -> Result<(), String> {
        if self.failed {
            return Ok(());
        }
        let framed = if self.rest.is_empty() {
            // The common case: whole packets, read in place.
            Self::each(message, &mut on_packet)
                .map(|used| self.rest.extend_from_slice(&message[used..]))
        } else {
            self.rest.extend_from_slice(message);
            Self::each(&self.rest, &mut on_packet).map(|used| {
                let _ = self.rest.split_to(used);
            })
        };
        if framed.is_err() {
            self.failed = true;
            self.rest = BytesMut::new();
        }
        framed
    }

    fn each(mut bytes: &[u8], on_packet: &mut impl FnMut(Incoming<'_>)) -> Result<usize, String> {
        let mut used = 0;
        while let Some((packet, len)) = split(bytes)? {
            on_packet(packet);
            used += len;
            bytes = &bytes[len..];
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_are_read_in_place_and_across_messages() {
        let qos0 = publish("g0", "@1.xx", 0, 0).expect("encodes");
        let qos1 = publish("g0", "@2.yy", 1, 6).expect("encodes");
        let mut stream = qos0.clone();
        stream.extend_from_slice(&qos1);
        stream.extend_from_slice(&puback(9));
        let mut seen = Vec::new();
        let mut framer = Framer::default();
        // Every split point: the packets come out whole and once.
        for cut in 0..stream.len() {
            seen.clear();
            for part in [&stream[..cut], &stream[cut..]] {
                framer
                    .feed(part, |p| {
                        seen.push(match p {
                            Incoming::Publish { payload, pid } => {
                                format!("{}:{pid:?}", String::from_utf8_lossy(payload))
                            }
                            Incoming::Other(bytes) => format!("other {bytes:?}"),
                        })
                    })
                    .expect("frames");
            }
            assert_eq!(
                seen,
                ["@1.xx:None", "@2.yy:Some(7)", "other [64, 2, 0, 9]"],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn handshake_packets_decode_with_the_codec() {
        let subscribe = subscribe(&["g0".into()], 1).expect("encodes");
        match decode(&subscribe).expect("decodes") {
            Packet::Subscribe(s) => assert_eq!(s.topics[0].1, QoS::Level1),
            other => panic!("not a subscribe: {other:?}"),
        }
        assert!(matches!(decode(&puback(3)), Ok(Packet::Puback(pid)) if pid.value() == 3));
    }
}
