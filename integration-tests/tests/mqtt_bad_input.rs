//! Bad input on the MQTT edge (`/clients/mqtt/hubs/{hub}`), written as raw MQTT bytes over
//! a real WebSocket: each refusal carries its documented code (CONNACK return or reason
//! code, or an MQTT 5 DISCONNECT reason code), and a bystander session on the same hub
//! goes on receiving as if nothing happened. Runs across three nodes too (scripts/test).

use futures_util::{SinkExt as _, StreamExt as _};
use hubcast_integration_tests::{TIMEOUT, TestServer, Ws, request, try_connect};
use mqtt_proto::v5;
use tokio_tungstenite::tungstenite::Message;

const HUB: &str = "mqttbad";
const ROLES: &[&str] = &["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

/// A CONNECT of protocol `level` with `client_id` and a 60 s keep-alive.
fn connect_packet(level: u8, client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60];
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&u16::try_from(client_id.len()).expect("short").to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    packet(0x10, &body)
}

/// A packet: first byte, remaining length, body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut byte = u8::try_from(n % 128).expect("7 bits");
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// An MQTT 5 PUBLISH of QoS `qos` with packet id `id`.
fn publish5(topic: &str, qos: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = u16::try_from(topic.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    body.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.push(0); // no properties
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// An MQTT 5 SUBSCRIBE of one filter at QoS 1.
fn subscribe5(id: u16, filter: &str) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&u16::try_from(filter.len()).expect("short").to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(1);
    packet(0x82, &body)
}

/// A raw MQTT client over WebSocket.
struct Raw {
    ws: Ws,
    buffer: Vec<u8>,
}

/// How a [`Raw`] session ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// An MQTT 5 DISCONNECT with this reason code, then the close.
    Disconnect(u8),
    /// The socket closed without a DISCONNECT.
    Closed,
}

impl Raw {
    async fn open(server: &TestServer, token: Option<&str>) -> Self {
        let query = token.map_or(String::new(), |t| format!("?access_token={t}"));
        let url = server.ws_url(&format!("/clients/mqtt/hubs/{HUB}{query}"));
        let (ws, response) = try_connect(request(&url, &["mqtt"], None))
            .await
            .expect("the upgrade succeeds");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("mqtt")
        );
        Self {
            ws,
            buffer: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    /// The next whole packet's bytes, or `None` when the socket closes first.
    async fn next_bytes(&mut self) -> Option<Vec<u8>> {
        loop {
            if self.buffer.len() >= 2 {
                let mut len = 0usize;
                let mut i = 1;
                let mut shift = 0;
                let mut whole = None;
                while i < self.buffer.len() && i <= 4 {
                    let b = self.buffer[i];
                    len |= usize::from(b & 0x7f) << shift;
                    shift += 7;
                    i += 1;
                    if b & 0x80 == 0 {
                        whole = Some(i + len);
                        break;
                    }
                }
                if let Some(end) = whole
                    && self.buffer.len() >= end
                {
                    return Some(self.buffer.drain(..end).collect());
                }
            }
            match tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a packet or a close in time")
            {
                Some(Ok(Message::Binary(b))) => self.buffer.extend_from_slice(&b),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next MQTT 5 packet.
    async fn next5(&mut self) -> Option<v5::Packet> {
        let bytes = self.next_bytes().await?;
        Some(
            v5::Packet::decode(&bytes)
                .expect("a valid packet")
                .expect("whole"),
        )
    }

    /// Connects as MQTT 5 and expects a CONNACK of `code`.
    async fn connect5(&mut self, client_id: &str) -> v5::Connack {
        self.send(connect_packet(5, client_id)).await;
        match self.next5().await {
            Some(v5::Packet::Connack(c)) => c,
            other => panic!("expected a CONNACK, got {other:?}"),
        }
    }

    /// Reads until the session ends.
    async fn end(&mut self) -> End {
        loop {
            match self.next5().await {
                Some(v5::Packet::Disconnect(d)) => {
                    assert!(self.next_bytes().await.is_none(), "the socket closes next");
                    return End::Disconnect(d.reason_code as u8);
                }
                Some(_) => {}
                None => return End::Closed,
            }
        }
    }
}

/// A session subscribed to `calm` that must keep working whatever others do.
struct Bystander(Raw);

impl Bystander {
    async fn start(server: &TestServer, id: &str) -> Self {
        let token = server.mqtt_token(HUB, Some("bystander"), ROLES);
        let mut raw = Raw::open(server, Some(&token)).await;
        assert_eq!(
            raw.connect5(id).await.reason_code,
            v5::ConnectReasonCode::Success
        );
        raw.send(subscribe5(1, "calm")).await;
        assert!(matches!(raw.next5().await, Some(v5::Packet::Suback(_))));
        Self(raw)
    }

    /// Publishes to `calm` at QoS 1 and receives it back.
    async fn still_works(&mut self) {
        self.0.send(publish5("calm", 1, 7, b"still here")).await;
        let mut got_ack = false;
        let mut got_message = false;
        while !(got_ack && got_message) {
            match self.0.next5().await {
                Some(v5::Packet::Puback(a)) => {
                    assert_eq!(a.reason_code, v5::PubackReasonCode::Success);
                    got_ack = true;
                }
                Some(v5::Packet::Publish(p)) => {
                    assert_eq!(&p.payload[..], b"still here");
                    let id = p.qos_pid.pid().expect("QoS 1");
                    self.0.send(packet(0x40, &id.value().to_be_bytes())).await;
                    got_message = true;
                }
                other => panic!("bystander got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn malformed_packets_end_the_session_with_0x81_and_spare_the_others() {
    let server = TestServer::start().await;
    let mut bystander = Bystander::start(&server, "calmMalformed").await;
    let token = server.mqtt_token(HUB, Some("bad"), ROLES);
    for (name, bad) in [
        // A PUBLISH whose topic length runs past the packet.
        ("topic past the end", packet(0x30, &[0, 40, b'a'])),
        // A SUBSCRIBE with reserved flags 0000 instead of 0010.
        ("reserved flags", packet(0x80, &[0, 1, 0, 0, 1, b'a', 1])),
        // QoS 3 does not exist.
        ("QoS 3", packet(0x36, &[0, 1, b'a', 0, 1, 0])),
    ] {
        let mut raw = Raw::open(&server, Some(&token)).await;
        assert_eq!(
            raw.connect5(&format!("bad{}", name.len()))
                .await
                .reason_code,
            v5::ConnectReasonCode::Success
        );
        raw.send(bad).await;
        assert_eq!(raw.end().await, End::Disconnect(0x81), "{name}");
    }
    bystander.still_works().await;
}

#[tokio::test]
async fn oversized_packets_end_the_session_with_0x95() {
    let server = TestServer::start_with(|c| c.limits.max_message_bytes = Some(1024)).await;
    let mut bystander = Bystander::start(&server, "calmOversized").await;
    let token = server.mqtt_token(HUB, Some("big"), ROLES);
    let mut raw = Raw::open(&server, Some(&token)).await;
    let connack = raw.connect5("big1").await;
    assert_eq!(connack.properties.max_packet_size, Some(1024));
    // Declared larger than the limit: refused from its header.
    raw.send(vec![0x30, 0x80, 0x10]).await;
    assert_eq!(raw.end().await, End::Disconnect(0x95));
    bystander.still_works().await;
}

#[tokio::test]
async fn invalid_client_ids_are_refused_in_the_connack() {
    let server = TestServer::start().await;
    let mut bystander = Bystander::start(&server, "calmIds").await;
    let token = server.mqtt_token(HUB, None, ROLES);
    for id in ["with-dash", "spa ce", &"x".repeat(129)] {
        let mut raw = Raw::open(&server, Some(&token)).await;
        let connack = raw.connect5(id).await;
        assert_eq!(
            connack.reason_code,
            v5::ConnectReasonCode::ClientIdentifierNotValid,
            "{id}"
        );
        assert!(raw.next_bytes().await.is_none(), "closed after the refusal");
        // 3.1.1: return code 2, identifier rejected (an empty id too).
        let mut raw = Raw::open(&server, Some(&token)).await;
        raw.send(connect_packet(4, id)).await;
        assert_eq!(raw.next_bytes().await, Some(vec![0x20, 2, 0, 2]), "{id}");
    }
    let mut raw = Raw::open(&server, Some(&token)).await;
    raw.send(connect_packet(4, "")).await;
    assert_eq!(raw.next_bytes().await, Some(vec![0x20, 2, 0, 2]));
    // MQTT 5 with an empty id: the server assigns one.
    let mut raw = Raw::open(&server, Some(&token)).await;
    let connack = raw.connect5("").await;
    assert_eq!(connack.reason_code, v5::ConnectReasonCode::Success);
    assert!(connack.properties.assigned_client_id.is_some());
    // MQTT 3.1 is not spoken: return code 1.
    let mut raw = Raw::open(&server, Some(&token)).await;
    let mut v31 = vec![0, 6];
    v31.extend_from_slice(b"MQIsdp");
    v31.extend_from_slice(&[3, 2, 0, 60, 0, 1, b'a']);
    raw.send(packet(0x10, &v31)).await;
    assert_eq!(raw.next_bytes().await, Some(vec![0x20, 2, 0, 1]));
    bystander.still_works().await;
}

#[tokio::test]
async fn unreleased_qos2_floods_end_the_session_with_0x93() {
    let server = TestServer::start_with(|c| c.mqtt.inflight_window = 4).await;
    let mut bystander = Bystander::start(&server, "calmFlood").await;
    let token = server.mqtt_token(HUB, Some("flood"), ROLES);
    let mut raw = Raw::open(&server, Some(&token)).await;
    let connack = raw.connect5("flood1").await;
    assert_eq!(connack.properties.receive_max, Some(4));
    // Four unreleased QoS 2 publishes are within the window, each answered with PUBREC; a
    // resend of one of them (same id) is acknowledged again, not counted twice.
    for id in 1..=4 {
        raw.send(publish5("flooded", 2, id, b"x")).await;
        assert!(matches!(raw.next5().await, Some(v5::Packet::Pubrec(_))));
    }
    raw.send(publish5("flooded", 2, 4, b"x")).await;
    assert!(matches!(raw.next5().await, Some(v5::Packet::Pubrec(_))));
    // PUBREL frees one: the fifth fits, the sixth does not.
    raw.send(packet(0x62, &[0, 1])).await;
    assert!(matches!(raw.next5().await, Some(v5::Packet::Pubcomp(_))));
    raw.send(publish5("flooded", 2, 5, b"x")).await;
    assert!(matches!(raw.next5().await, Some(v5::Packet::Pubrec(_))));
    raw.send(publish5("flooded", 2, 6, b"x")).await;
    assert_eq!(raw.end().await, End::Disconnect(0x93));
    bystander.still_works().await;
}

#[tokio::test]
async fn a_bad_token_is_told_in_the_connack_and_a_missing_subprotocol_refused_with_400() {
    let server = TestServer::start().await;
    let mut raw = Raw::open(&server, Some("not.a.token")).await;
    assert_eq!(
        raw.connect5("tok1").await.reason_code,
        v5::ConnectReasonCode::NotAuthorized
    );
    // A token of the default client endpoint does not open the MQTT one.
    let token = server.token(HUB, None, ROLES, &[]);
    let mut raw = Raw::open(&server, Some(&token)).await;
    assert_eq!(
        raw.connect5("tok2").await.reason_code,
        v5::ConnectReasonCode::NotAuthorized
    );
    let url = server.ws_url(&format!("/clients/mqtt/hubs/{HUB}"));
    match try_connect(request(&url, &[], None)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("expected a 400, got {other:?}"),
    }
}
