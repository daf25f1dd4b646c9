//! What a client says on the wire to each system: how it connects and subscribes, how it
//! publishes, and how it tells data messages (with their send stamps) from the rest.
//!
//! - Hubcast: `json.webpubsub.azure.v1` (or `json.reliable`), groups joined at connect by
//!   the token's `webpubsub.group` claim, `sendToGroup` with `noEcho`, `event` for echo.
//! - Floor: `/?groups=a,b`, then `ok`; `<group> <payload>` to publish.
//! - NATS: its text protocol over WebSocket: `CONNECT`, `SUB`, `PING`/`PONG`, `PUB`, `MSG`.
//! - Socket.IO: Engine.IO v4 / Socket.IO v5 over a plain WebSocket: open `0{..}`, connect
//!   `40`, `42["join",[..]]` with an ack, `42["pub",group,payload]`, ping `2` / pong `3`.
//!   On Hubcast's Socket.IO edge (serverless mode) a client cannot join a room or send to
//!   one: the token's `webpubsub.group` claim puts it in the room's group, and the backend
//!   sends (see `scenario::Control`).
//! - MQTT (Hubcast's MQTT edge, mosquitto): MQTT 3.1.1 over WebSocket (subprotocol `mqtt`,
//!   binary messages): CONNECT, SUBSCRIBE to the groups as topics, PUBLISH, PUBACK at QoS 1
//!   (see [`crate::mqtt`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use hubcast_auth::{self as auth, ClientProtocol, TokenRequest};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::limits::source_address;
use crate::metrics::{Stats, stamp_in};
use crate::mqtt;
use crate::system::{HUB, Kind, System};

/// How long connecting and subscribing one client may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A reliable client acknowledges after this many messages (as the fan-out bench does).
const SEQUENCE_ACK_EVERY: u64 = 64;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Who a client is and what it listens to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Identity {
    /// Global client index (over all shards); picks the source address and the node.
    pub(crate) index: usize,
    /// Groups (NATS subjects, Socket.IO rooms) the client is a member of.
    pub(crate) groups: Vec<String>,
    /// Hubcast user id (the token's `sub`).
    pub(crate) user: Option<String>,
    /// May publish to groups (publishers only).
    pub(crate) publisher: bool,
    /// Hubcast: the reliable JSON subprotocol.
    pub(crate) reliable: bool,
    /// MQTT: the QoS of its subscriptions and publishes.
    pub(crate) qos: u8,
    /// A small socket receive buffer (the slow consumer).
    pub(crate) small_receive_buffer: bool,
}

/// Opens and subscribes one client; returns once it is ready to receive.
pub(crate) async fn connect(system: &System, who: &Identity) -> Result<Ws, String> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connect_inner(system, who))
        .await
        .map_err(|_| {
            format!(
                "client {} not ready within {HANDSHAKE_TIMEOUT:?}",
                who.index
            )
        })?
}

async fn connect_inner(system: &System, who: &Identity) -> Result<Ws, String> {
    let base = &system.urls[who.index % system.urls.len()];
    let endpoint = base.replacen("ws", "http", 1);
    let url = match system.kind {
        Kind::Hubcast => {
            let request = TokenRequest {
                user_id: who.user.clone(),
                roles: if who.publisher {
                    vec!["webpubsub.sendToGroup".to_owned()]
                } else {
                    Vec::new()
                },
                groups: who.groups.clone(),
                ..TokenRequest::new(HUB)
            };
            let token = auth::mint_client_token(&system.access_key, &endpoint, &request);
            auth::client_url(&endpoint, HUB, &token)
        }
        Kind::HubcastMqtt => {
            // Topics are joined by SUBSCRIBE, as MQTT clients do, not by the token.
            let role = if who.publisher {
                "webpubsub.sendToGroup"
            } else {
                "webpubsub.joinLeaveGroup"
            };
            let request = TokenRequest {
                user_id: who.user.clone(),
                roles: vec![role.to_owned()],
                ..TokenRequest::new(HUB)
            };
            let token = auth::mint_client_token_for(
                &system.access_key,
                &endpoint,
                ClientProtocol::Mqtt,
                &request,
            );
            auth::client_url_for(&endpoint, ClientProtocol::Mqtt, HUB, &token)
        }
        Kind::HubcastSocketIo => {
            let request = TokenRequest {
                user_id: who.user.clone(),
                groups: who.groups.iter().map(|g| socketio_room_group(g)).collect(),
                ..TokenRequest::new(HUB)
            };
            let token = auth::mint_client_token_for(
                &system.access_key,
                &endpoint,
                ClientProtocol::SocketIo,
                &request,
            );
            format!(
                "{base}/clients/socketio/hubs/{HUB}/?EIO=4&transport=websocket&access_token={token}"
            )
        }
        Kind::Floor => format!("{base}/?groups={}", who.groups.join(",")),
        Kind::Nats | Kind::Mosquitto => format!("{base}/"),
        Kind::SocketIo => format!("{base}/socket.io/?EIO=4&transport=websocket"),
        Kind::All => unreachable!("expanded by the caller"),
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad URL {url}: {e}"))?;
    let protocol = match system.kind {
        Kind::Hubcast if who.reliable => Some("json.reliable.webpubsub.azure.v1"),
        Kind::Hubcast => Some("json.webpubsub.azure.v1"),
        Kind::HubcastMqtt | Kind::Mosquitto => Some("mqtt"),
        _ => None,
    };
    if let Some(protocol) = protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
    }
    let server = server_address(base)?;
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if who.small_receive_buffer {
        socket
            .set_recv_buffer_size(4096)
            .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    }
    socket
        .bind(source_address(who.index))
        .map_err(|e| format!("bind {}: {e}", source_address(who.index)))?;
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect {server}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(
        request,
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    .map_err(|e| format!("upgrade {url}: {e}"))?;
    subscribe(system.kind, who, &mut ws).await?;
    Ok(ws)
}

/// Only loopback literals: the generator never loads anything but this machine.
fn server_address(base: &str) -> Result<SocketAddr, String> {
    let authority = base
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{base}: only ws:// URLs"))?
        .split('/')
        .next()
        .unwrap_or_default();
    let addr: SocketAddr = authority
        .parse()
        .map_err(|_| format!("{base}: the host must be an IP address and port"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{base}: the load generator targets loopback (127.0.0.0/8) only"
        ));
    }
    Ok(addr)
}

async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Binary(bytes))) => {
                return Ok(String::from_utf8_lossy(&bytes).into_owned());
            }
            Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".into()),
        }
    }
}

async fn send(ws: &mut Ws, message: Message) -> Result<(), String> {
    ws.send(message).await.map_err(|e| e.to_string())
}

/// The next whole MQTT packet of the handshake, decoded (CONNACK, SUBACK).
async fn next_mqtt(ws: &mut Ws, framer: &mut mqtt::Framer) -> Result<mqtt::Packet, String> {
    loop {
        let bytes = match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".into()),
        };
        let mut packet = None;
        framer.feed(&bytes, |incoming| {
            if packet.is_none() {
                packet = Some(match incoming {
                    mqtt::Incoming::Other(whole) => mqtt::decode(whole),
                    mqtt::Incoming::Publish { .. } => {
                        Err("a PUBLISH before the handshake ended".into())
                    }
                });
            }
        })?;
        if let Some(packet) = packet {
            return packet;
        }
    }
}

/// The per-system handshake after the upgrade.
async fn subscribe(kind: Kind, who: &Identity, ws: &mut Ws) -> Result<(), String> {
    match kind {
        Kind::Hubcast => {
            let first = next_text(ws).await?;
            if !first.contains(r#""event":"connected""#) {
                return Err(format!("expected the connected message, got {first}"));
            }
        }
        Kind::Floor => {
            let first = next_text(ws).await?;
            if first != "ok" {
                return Err(format!("expected ok, got {first}"));
            }
        }
        Kind::Nats => {
            let info = next_text(ws).await?;
            if !info.starts_with("INFO") {
                return Err(format!("expected INFO, got {info}"));
            }
            let mut hello = String::from(
                "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"echo\":false}\r\n",
            );
            for (sid, group) in who.groups.iter().enumerate() {
                hello.push_str(&format!("SUB {group} {}\r\n", sid + 1));
            }
            hello.push_str("PING\r\n");
            send(ws, Message::binary(hello.into_bytes())).await?;
            loop {
                let reply = next_text(ws).await?;
                if reply.contains("-ERR") {
                    return Err(format!("NATS refused: {reply}"));
                }
                if reply.contains("PONG") {
                    break;
                }
            }
        }
        Kind::HubcastMqtt | Kind::Mosquitto => {
            let mut framer = mqtt::Framer::default();
            let client_id = format!("bench{}", who.index);
            send(ws, Message::binary(mqtt::connect(&client_id)?)).await?;
            match next_mqtt(ws, &mut framer).await? {
                mqtt::Packet::Connack(ack) if ack.code == mqtt::ConnectReturnCode::Accepted => {}
                other => return Err(format!("expected an accepting CONNACK, got {other:?}")),
            }
            if !who.groups.is_empty() {
                send(ws, Message::binary(mqtt::subscribe(&who.groups, who.qos)?)).await?;
                match next_mqtt(ws, &mut framer).await? {
                    mqtt::Packet::Suback(ack)
                        if ack
                            .topics
                            .iter()
                            .all(|code| *code != mqtt::SubscribeReturnCode::Failure) => {}
                    other => return Err(format!("expected a granting SUBACK, got {other:?}")),
                }
            }
        }
        Kind::HubcastSocketIo => {
            // Connect to the namespace `/`; the room came with the token.
            let open = next_text(ws).await?;
            if !open.starts_with('0') {
                return Err(format!("expected the Engine.IO open packet, got {open}"));
            }
            send(ws, Message::text("40")).await?;
            loop {
                let reply = next_text(ws).await?;
                if reply.starts_with("40") {
                    break;
                }
                if reply.starts_with("44") {
                    return Err(format!("the namespace connect was refused: {reply}"));
                }
                if reply == "2" {
                    send(ws, Message::text("3")).await?;
                }
            }
        }
        Kind::SocketIo => {
            let open = next_text(ws).await?;
            if !open.starts_with('0') {
                return Err(format!("expected the Engine.IO open packet, got {open}"));
            }
            send(ws, Message::text("40")).await?;
            let connected = next_text(ws).await?;
            if !connected.starts_with("40") {
                return Err(format!(
                    "expected the Socket.IO connect packet, got {connected}"
                ));
            }
            let groups = serde_json::to_string(&who.groups).unwrap_or_default();
            send(ws, Message::text(format!(r#"421["join",{groups}]"#))).await?;
            loop {
                let reply = next_text(ws).await?;
                if reply.starts_with("431") {
                    break;
                }
                if reply == "2" {
                    send(ws, Message::text("3")).await?;
                }
            }
        }
        Kind::All => unreachable!("expanded by the caller"),
    }
    Ok(())
}

/// The k-th message, to `group` in `kind`'s protocol, from a publisher connection (MQTT:
/// at `qos`).
pub(crate) fn publish(
    kind: Kind,
    group: &str,
    payload: &str,
    qos: u8,
    k: u64,
) -> Result<Message, String> {
    Ok(match kind {
        Kind::Hubcast => Message::text(format!(
            r#"{{"type":"sendToGroup","group":"{group}","dataType":"text","data":"{payload}","noEcho":true}}"#
        )),
        Kind::Floor => Message::text(format!("{group} {payload}")),
        Kind::Nats => Message::binary(format!("PUB {group} {}\r\n{payload}\r\n", payload.len())),
        Kind::SocketIo => Message::text(format!(r#"42["pub","{group}","{payload}"]"#)),
        Kind::HubcastMqtt | Kind::Mosquitto => {
            Message::binary(mqtt::publish(group, payload, qos, k)?)
        }
        Kind::HubcastSocketIo => {
            return Err("Hubcast's Socket.IO clients do not send to rooms".into());
        }
        Kind::All => unreachable!("expanded by the caller"),
    })
}

/// The group Azure names for room `room` of the namespace `/`: `0~` + base64url("/") + `~`
/// + base64url(room).
pub(crate) fn socketio_room_group(room: &str) -> String {
    format!(
        "0~{}~{}",
        URL_SAFE_NO_PAD.encode("/"),
        URL_SAFE_NO_PAD.encode(room)
    )
}

/// The Engine.IO packet of the event `msg` with `payload` in the namespace `/`, as a
/// Socket.IO server writes `emit("msg", payload)` (the payload is a stamped text without
/// quotes or backslashes).
pub(crate) fn socketio_event(payload: &str) -> String {
    format!(r#"42["msg","{payload}"]"#)
}

/// A Hubcast user event that the echo receiver answers with its own body.
pub(crate) fn echo_event(payload: &str) -> Message {
    Message::text(format!(
        r#"{{"type":"event","event":"echo","dataType":"text","data":"{payload}"}}"#
    ))
}

/// Sends on a connection driven by [`drive`].
pub(crate) type Outbox = mpsc::Sender<Message>;

/// Runs a connected client until `outbox`'s senders are gone or the server closes it:
/// writes what is queued, answers keepalives, and records every data message in `stats`.
/// Returns whether the server ended the connection (rather than the generator).
pub(crate) async fn drive(
    kind: Kind,
    who: Identity,
    ws: Ws,
    mut outbox: mpsc::Receiver<Message>,
    stats: Arc<Stats>,
) -> bool {
    let (mut sink, mut stream) = ws.split();
    let mut reader = Reader {
        kind,
        client: who.index,
        reliable: who.reliable,
        received: 0,
        nats: BytesMut::new(),
        mqtt: mqtt::Framer::default(),
        stats,
    };
    let mut replies = Vec::new();
    loop {
        tokio::select! {
            queued = outbox.recv() => {
                let Some(first) = queued else {
                    let _ = sink.close().await;
                    return false;
                };
                if feed_all(&mut sink, first, &mut outbox).await.is_err() {
                    return true;
                }
            }
            incoming = stream.next() => {
                match incoming {
                    Some(Ok(message)) => {
                        reader.on_message(message, &mut replies);
                        for reply in replies.drain(..) {
                            if sink.feed(reply).await.is_err() {
                                return true;
                            }
                        }
                        if sink.flush().await.is_err() {
                            return true;
                        }
                    }
                    Some(Err(_)) | None => return true,
                }
            }
        }
    }
}

async fn feed_all(
    sink: &mut SplitSink<Ws, Message>,
    first: Message,
    outbox: &mut mpsc::Receiver<Message>,
) -> Result<(), ()> {
    sink.feed(first).await.map_err(|_| ())?;
    while let Ok(next) = outbox.try_recv() {
        sink.feed(next).await.map_err(|_| ())?;
    }
    sink.flush().await.map_err(|_| ())
}

/// Holds a connection without reading from it (the slow consumer), until `stop`; then
/// reads what is left and reports whether the server had closed it.
pub(crate) async fn stall(ws: Ws, stop: tokio::sync::watch::Receiver<bool>) -> bool {
    let mut stop = stop;
    let _ = stop.wait_for(|s| *s).await;
    let (_sink, mut stream): (SplitSink<Ws, Message>, SplitStream<Ws>) = ws.split();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => return true,
            Ok(Some(Ok(_))) => {}
            Err(_) => return false,
        }
    }
}

/// Tells data messages from protocol traffic, per system.
struct Reader {
    kind: Kind,
    client: usize,
    reliable: bool,
    received: u64,
    nats: BytesMut,
    mqtt: mqtt::Framer,
    stats: Arc<Stats>,
}

impl Reader {
    fn on_message(&mut self, message: Message, replies: &mut Vec<Message>) {
        let bytes: Bytes = match message {
            Message::Text(text) => text.into(),
            Message::Binary(bytes) => bytes,
            _ => return,
        };
        match self.kind {
            Kind::Hubcast => {
                if let Some(stamp) = stamp_in(&bytes) {
                    self.stats.record(self.client, Some(stamp));
                    self.received += 1;
                    if self.reliable
                        && self.received.is_multiple_of(SEQUENCE_ACK_EVERY)
                        && let Some(id) = number_after(&bytes, br#""sequenceId":"#)
                    {
                        replies.push(Message::text(format!(
                            r#"{{"type":"sequenceAck","sequenceId":{id}}}"#
                        )));
                    }
                }
            }
            Kind::Floor => {
                if let Some(stamp) = stamp_in(&bytes) {
                    self.stats.record(self.client, Some(stamp));
                }
            }
            Kind::SocketIo | Kind::HubcastSocketIo => {
                if bytes.as_ref() == b"2" {
                    replies.push(Message::text("3"));
                } else if bytes.starts_with(b"42") {
                    self.stats.record(self.client, stamp_in(&bytes));
                }
            }
            Kind::Nats => {
                self.nats.extend_from_slice(&bytes);
                self.parse_nats(replies);
            }
            Kind::HubcastMqtt | Kind::Mosquitto => {
                let (stats, client) = (&self.stats, self.client);
                let framed = self.mqtt.feed(&bytes, |packet| {
                    if let mqtt::Incoming::Publish { payload, pid } = packet {
                        stats.record(client, stamp_in(payload));
                        if let Some(pid) = pid {
                            replies.push(Message::binary(mqtt::puback(pid).to_vec()));
                        }
                    }
                });
                if let Err(e) = framed {
                    eprintln!("client {client}: {e}; its further messages are not counted");
                }
            }
            Kind::All => {}
        }
    }

    /// Consumes every complete NATS operation in the buffer (frames may hold several, or
    /// part of one).
    fn parse_nats(&mut self, replies: &mut Vec<Message>) {
        loop {
            let Some(end) = self.nats.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let line = &self.nats[..end];
            if line.starts_with(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let size = line
                    .rsplit(|b| *b == b' ')
                    .next()
                    .and_then(|n| std::str::from_utf8(n).ok())
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0);
                let total = end + 2 + size + 2;
                if self.nats.len() < total {
                    return;
                }
                let stamp = stamp_in(&self.nats[end + 2..end + 2 + size]);
                self.stats.record(self.client, stamp);
                let _ = self.nats.split_to(total);
            } else {
                if line == b"PING" {
                    replies.push(Message::binary(&b"PONG\r\n"[..]));
                }
                let _ = self.nats.split_to(end + 2);
            }
        }
    }
}

/// The decimal number right after `key` in `bytes`.
fn number_after(bytes: &[u8], key: &[u8]) -> Option<u64> {
    let at = bytes.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: &[u8] = &bytes[at..];
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    fn reader(kind: Kind) -> Reader {
        Reader {
            kind,
            client: 0,
            reliable: false,
            received: 0,
            nats: BytesMut::new(),
            mqtt: mqtt::Framer::default(),
            stats: Arc::new(Stats::new()),
        }
    }

    #[test]
    fn nats_operations_split_across_frames_are_counted_once() {
        let mut r = reader(Kind::Nats);
        let mut replies = Vec::new();
        r.on_message(
            Message::binary(&b"MSG g 1 6\r\n@12.xx\r\nPI"[..]),
            &mut replies,
        );
        r.on_message(Message::binary(&b"NG\r\nMSG g 1 6\r\n@1"[..]), &mut replies);
        assert_eq!(
            r.stats.delivered.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        r.on_message(Message::binary(&b"3.xx\r\n"[..]), &mut replies);
        assert_eq!(
            r.stats.delivered.load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        assert_eq!(replies, [Message::binary(&b"PONG\r\n"[..])]);
    }

    #[test]
    fn socketio_pings_are_answered_and_events_counted() {
        let mut r = reader(Kind::SocketIo);
        let mut replies = Vec::new();
        r.on_message(Message::text("2"), &mut replies);
        r.on_message(Message::text(r#"42["msg","@5.xx"]"#), &mut replies);
        assert_eq!(replies, [Message::text("3")]);
        assert_eq!(
            r.stats.delivered.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn mqtt_deliveries_are_counted_and_qos1_ones_acknowledged() {
        let mut r = reader(Kind::Mosquitto);
        let mut replies = Vec::new();
        let mut both = mqtt::publish("g0", "@7.xx", 0, 0).expect("encodes");
        both.extend(mqtt::publish("g0", "@8.xx", 1, 41).expect("encodes"));
        // One WebSocket message with a packet and a half, then the rest.
        let cut = both.len() - 3;
        r.on_message(Message::binary(both[..cut].to_vec()), &mut replies);
        assert_eq!(r.stats.delivered.load(Ordering::Relaxed), 1);
        assert!(replies.is_empty(), "QoS 0 is not acknowledged");
        r.on_message(Message::binary(both[cut..].to_vec()), &mut replies);
        assert_eq!(r.stats.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(replies, [Message::binary(mqtt::puback(42).to_vec())]);
    }

    #[test]
    fn socketio_rooms_are_named_as_azure_names_them() {
        assert_eq!(socketio_room_group("g0"), "0~Lw~ZzA");
        assert_eq!(socketio_event("@1.x"), r#"42["msg","@1.x"]"#);
    }

    #[test]
    fn only_loopback_is_a_target() {
        assert!(server_address("ws://127.0.0.1:80").is_ok());
        assert!(server_address("ws://127.3.2.1:80/x").is_ok());
        assert!(server_address("ws://10.0.0.1:80").is_err());
        assert!(server_address("wss://127.0.0.1:80").is_err());
    }

    #[test]
    fn sequence_ids_are_found() {
        assert_eq!(
            number_after(
                br#"{"sequenceId":42,"type":"message"}"#,
                br#""sequenceId":"#
            ),
            Some(42)
        );
    }
}
