//! One MQTT socket: its CONNECT, then its reader and writer until the socket ends, and the
//! session it serves.
//!
//! A session is a connection whose id is the client id. It usually ends with its socket; a
//! persistent one (Clean Session 0, or an MQTT 5 Session Expiry Interval) waits for its
//! client for the recovery window instead, as a reliable WebSocket connection does: its
//! outbox is a reliable one (numbered, kept until acknowledged), detached when the socket
//! drops and attached again by the client's next socket, which finds the MQTT side of the
//! session (subscriptions, messages in flight) in [`super::MqttEdge`]'s kept states.
//!
//! The reader decodes packets and carries them out through the service layer (joins,
//! leaves, group sends), answering on a bounded control channel; when that channel is full
//! the reader waits, so a client that floods acknowledgements it does not read is slowed
//! down instead of growing memory. The writer drains the control channel and the
//! connection's outbox; each message of the outbox becomes a PUBLISH with this session's
//! QoS and packet id, and at most the in-flight window of QoS 1 messages wait for their
//! PUBACK at a time (the rest wait their turn).

use std::collections::{HashMap, HashSet, VecDeque};

use hubcast_proto::v1 as pb;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tracing::Instrument as _;

use super::packet::{
    self, ConnackCode, ConnackProperties, Connect, Inbound, Level, Publish, Version,
};
use super::{Accepted, MqttEdge};
use crate::limits::{LimitKind, RateLimiter};
use crate::message::{Frame, Queued, WireFormat, close};
use crate::protocol::mqtt::{self as codec, PublishBody, SERVER_MESSAGES_TOPIC};
use crate::router::outbox::Taken;
use crate::router::{
    self, Close, ConnectSpec, Connection, ConnectionId, HubKey, Permission, Permissions,
    ReliableLimits,
};
use crate::telemetry::Protocol;
use crate::upstream::event::{MqttConnectBody, MqttUserProperty};
use crate::upstream::{self, Session};
use crate::upstream::{MqttDisconnectPacket, MqttDisconnected, MqttIds};

/// Answers the reader may queue before it waits for the writer.
const CONTROL_CAPACITY: usize = 64;

/// How long a closing exchange (DISCONNECT and the close frame) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Azure's 3.1.1 keep-alive range, in seconds; 5.0 clients outside it are told 180.
const MAX_KEEP_ALIVE: u16 = 180;

/// Azure's limits on a will (spec part 2 §1.1).
const MAX_WILL_TOPIC_CHARS: usize = 1024;
const MAX_WILL_PAYLOAD_BYTES: usize = 2000;

/// The most characters of a client id (Azure: `[0-9a-zA-Z]{1,128}`).
const MAX_CLIENT_ID_CHARS: usize = 128;

/// The prefix of Azure's reserved topics.
const RESERVED_PREFIX: &str = "$webpubsub/";

/// A PUBLISH to `$webpubsub/server/events/{event}` raises the user event `{event}`; the
/// backend's answer comes back on `…/{event}/succeeded` or `…/{event}/failed`.
const EVENTS_PREFIX: &str = "$webpubsub/server/events/";

/// MQTT 5 reason codes the session uses.
mod reason {
    pub(super) const SUCCESS: u8 = 0x00;
    pub(super) const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub(super) const UNSPECIFIED: u8 = 0x80;
    pub(super) const MALFORMED: u8 = 0x81;
    pub(super) const PROTOCOL_ERROR: u8 = 0x82;
    pub(super) const NOT_AUTHORIZED: u8 = 0x87;
    pub(super) const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub(super) const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub(super) const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub(super) const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub(super) const TOPIC_NAME_INVALID: u8 = 0x90;
    pub(super) const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub(super) const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub(super) const PACKET_TOO_LARGE: u8 = 0x95;
    pub(super) const MESSAGE_RATE_TOO_HIGH: u8 = 0x96;
    pub(super) const QUOTA_EXCEEDED: u8 = 0x97;
    pub(super) const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub(super) const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub(super) const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    pub(super) const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
    pub(super) const SUBSCRIPTION_IDS_NOT_SUPPORTED: u8 = 0xA1;
    pub(super) const WILDCARDS_NOT_SUPPORTED: u8 = 0xA2;
}

/// A refusal of the CONNECT: the code and a reason for the client and the logs.
type ConnectRefusal = (ConnackCode, String);

/// A refusal of the CONNECT as the CONNACK tells it: with the backend's MQTT 5 user
/// properties when it refused the `connect` event with some.
struct Refused {
    code: ConnackCode,
    why: String,
    user_properties: Vec<(Arc<str>, Arc<str>)>,
}

impl From<ConnectRefusal> for Refused {
    fn from((code, why): ConnectRefusal) -> Self {
        Self {
            code,
            why,
            user_properties: Vec::new(),
        }
    }
}

/// MQTT 5 user properties as the upstream's answers give them.
fn properties_of(properties: &[MqttUserProperty]) -> Vec<(Arc<str>, Arc<str>)> {
    properties
        .iter()
        .map(|p| (Arc::from(p.name.as_str()), Arc::from(p.value.as_str())))
        .collect()
}

/// Serves one upgraded socket: CONNECT, the session, and its end.
pub(super) async fn serve<S>(mqtt: &Arc<MqttEdge>, accepted: Accepted, mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let edge = &mqtt.edge;
    let limit = edge.config.hub_limits(&accepted.hub).max_message_bytes;
    let mut framer = packet::Framer::default();
    let first = tokio::select! {
        first = first_packet(&mut ws, &mut framer, limit) => first,
        () = tokio::time::sleep(edge.config.mqtt.connect_timeout) => {
            tracing::debug!("no CONNECT within mqtt.connect_timeout");
            Err("no CONNECT packet in time".to_owned())
        }
        () = edge.kill.cancelled() => return,
    };
    let connect = match first {
        Ok(connect) => connect,
        Err(why) => {
            tracing::debug!(why, "refused before CONNECT");
            let _ = ws.close(None).await;
            return;
        }
    };
    let version = connect.version;
    let admitted = match admit(mqtt, &accepted, &connect).await {
        Ok(admitted) => admitted,
        Err(Refused {
            code,
            why,
            user_properties,
        }) => {
            tracing::debug!(why, code = code.of(version), "CONNECT refused");
            edge.node
                .metrics()
                .registry()
                .connect_refusals
                .with(&[&format!("mqtt_{}", code.of(version))])
                .inc();
            let connack = packet::connack(
                version,
                code,
                false,
                ConnackProperties {
                    reason: Some(why.into()),
                    user_properties,
                    ..ConnackProperties::default()
                },
            );
            let _ = ws.send(WsMessage::Binary(connack)).await;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
            return;
        }
    };
    let span = tracing::info_span!(
        "connection",
        protocol = "mqtt",
        hub = admitted.conn.hub().as_str(),
        connection.id = %admitted.conn.id(),
        user = admitted.conn.user_id().map(|u| &**u).unwrap_or(""),
        client.addr = ?admitted.conn.remote_addr(),
    );
    run_session(mqtt, admitted, connect, framer, ws)
        .instrument(span)
        .await;
}

/// Reads until the first packet is whole; it must be a CONNECT of 3.1.1 or 5.0.
async fn first_packet<S>(
    ws: &mut WebSocketStream<S>,
    framer: &mut packet::Framer,
    limit: usize,
) -> Result<Box<Connect>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match framer.next_packet(limit) {
            Ok(Some(bytes)) => {
                return match packet::connect_level(&bytes) {
                    Level::Supported(version) => match packet::decode(version, &bytes) {
                        Ok(Inbound::Connect(connect)) => Ok(connect),
                        Ok(_) => Err("the first packet is not a CONNECT".into()),
                        Err(e) => {
                            let connack = packet::connack(
                                version,
                                ConnackCode::MALFORMED,
                                false,
                                ConnackProperties::default(),
                            );
                            let _ = ws.send(WsMessage::Binary(connack)).await;
                            Err(e.to_string())
                        }
                    },
                    Level::Unsupported => {
                        // MQTT-3.1.2-2: answer with return code 1 (in the 3.1.1 form every
                        // version can read), then close.
                        let connack = packet::connack(
                            Version::V311,
                            ConnackCode::UNSUPPORTED_VERSION,
                            false,
                            ConnackProperties::default(),
                        );
                        let _ = ws.send(WsMessage::Binary(connack)).await;
                        Err("unsupported MQTT protocol version (3.1.1 and 5.0 are)".into())
                    }
                    Level::NotConnect => Err("the first packet is not a CONNECT".into()),
                };
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        match ws.next().await {
            Some(Ok(WsMessage::Binary(bytes))) => framer.extend(&bytes),
            Some(Ok(WsMessage::Text(_))) => return Err("MQTT is carried in binary messages".into()),
            Some(Ok(WsMessage::Close(_))) | None => return Err("closed before CONNECT".into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// An accepted session, registered with the router, on its new socket.
struct Admitted {
    conn: Arc<Connection>,
    session: Arc<Session>,
    state: Arc<SessionState>,
    /// The outbox epoch of this socket.
    epoch: u64,
    /// The client resumed a session it had (CONNACK Session Present 1).
    resumed: bool,
    assigned_client_id: Option<Arc<str>>,
    /// The backend's user properties for the MQTT 5 CONNACK.
    user_properties: Vec<(Arc<str>, Arc<str>)>,
}

/// How long a session of `connect` outlives its socket, if at all: Azure keeps a persistent
/// session for the recovery window (30 s by default) and no longer. 3.1.1: Clean Session 0;
/// 5.0: a Session Expiry Interval above 0, capped at the window.
fn kept_for(connect: &Connect, window: Duration) -> Option<Duration> {
    match connect.version {
        Version::V311 => (!connect.clean_start).then_some(window),
        Version::V5 => match connect.session_expiry {
            None | Some(0) => None,
            Some(secs) => Some(Duration::from_secs(u64::from(secs)).min(window)),
        },
    }
}

/// Checks the CONNECT as Azure does, raises the `connect` event, then resumes the session
/// of this client id (Clean Start 0, same user and MQTT version, still kept on this node)
/// or ends it and registers a new one.
async fn admit(
    mqtt: &MqttEdge,
    accepted: &Accepted,
    connect: &Connect,
) -> Result<Admitted, Refused> {
    let edge = &mqtt.edge;
    let mut claims = accepted
        .claims
        .clone()
        .map_err(|why| (ConnackCode::NOT_AUTHORIZED, why))?;
    check_connect(connect)?;
    let assigned_client_id = connect
        .client_id
        .is_empty()
        .then(|| Arc::from(edge.node.new_connection_id().as_str()));
    let client_id = assigned_client_id.as_ref().unwrap_or(&connect.client_id);
    if let Some(old) = edge.node.local_connection(&accepted.hub, client_id)
        && old.format() != WireFormat::Mqtt
    {
        return Err((
            ConnackCode::CLIENT_ID_INVALID,
            "the client id is the id of another connection".into(),
        )
            .into());
    }

    let id = ConnectionId::from_client_id(client_id);
    let mut body = accepted.connect_body.clone();
    body.mqtt = Some(MqttConnectBody {
        protocol_version: connect.version.level(),
        clean_start: connect.clean_start,
        username: connect.username.as_deref().map(str::to_owned),
        password: connect
            .password
            .as_ref()
            .map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
        user_properties: (connect.version == Version::V5).then(|| {
            connect
                .user_properties
                .iter()
                .map(|(name, value)| MqttUserProperty {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect()
        }),
    });
    let mut event = Session::connect_event(
        accepted.hub.shared(),
        id.clone(),
        claims.user_id.as_deref(),
        Some(super::SUBPROTOCOL),
        body,
    );
    // The session id names the session, the physical connection id this socket: a
    // resumed session keeps the first and takes the second.
    let physical_connection_id = edge.node.new_connection_id().as_str().to_owned();
    event.mqtt = Some(Arc::new(MqttIds {
        physical_connection_id: physical_connection_id.clone(),
        session_id: edge.node.new_connection_id().as_str().to_owned(),
    }));
    let (answer, session) = edge.upstream.connect(event).await.map_err(|r| {
        let code = match &r.mqtt {
            Some(refusal) => ConnackCode::from_backend(refusal.code, connect.version),
            None => ConnackCode::from_http(r.status),
        };
        Refused {
            code,
            why: r.message,
            user_properties: r
                .mqtt
                .as_ref()
                .map_or_else(Vec::new, |m| properties_of(&m.user_properties)),
        }
    })?;
    let user_properties = answer
        .response
        .mqtt
        .as_ref()
        .and_then(|m| m.user_properties.as_deref())
        .map_or_else(Vec::new, properties_of);
    upstream::apply_connect(&answer, &mut claims, None);
    let keep = kept_for(connect, edge.config.client.recovery_window);
    if !connect.clean_start
        && let Some(resumed) = resume(
            mqtt,
            &accepted.hub,
            client_id,
            connect.version,
            claims.user_id.as_deref(),
            keep,
            physical_connection_id,
        )
    {
        return Ok(Admitted {
            user_properties,
            ..resumed
        });
    }
    take_over(mqtt, &accepted.hub, client_id).await?;
    if edge.node.is_clustered() {
        // One session per client id across the cluster: a session another node holds for
        // this client id ends there (it cannot move here; docs/DEPLOYMENT.md).
        let _ = edge
            .node
            .close_connection(pb::CloseConnectionRequest {
                hub: accepted.hub.as_str().to_owned(),
                connection_id: client_id.to_string(),
                reason: format!(
                    "{}: session taken over by a connection on another node",
                    reason::SESSION_TAKEN_OVER
                ),
            })
            .await;
    }
    if let Some(user) = &claims.user_id {
        let max = edge.config.hub_limits(&accepted.hub).max_user_id_chars;
        if user.chars().count() > max {
            return Err((
                ConnackCode::BAD_USERNAME_OR_PASSWORD,
                format!("user id longer than {max} characters (limits.max_user_id_chars)"),
            )
                .into());
        }
    }
    let (permissions, rejected) = Permissions::from_roles(&claims.roles);
    if !rejected.is_empty() {
        tracing::warn!(connection.id = %id, roles = ?rejected, "ignoring unknown or invalid roles");
    }
    let session = Arc::new(session);
    edge.sessions.insert(id.shared(), session.clone());
    let state = Arc::new(SessionState::new(connect.version, keep));
    mqtt.kept
        .insert(super::session_key(&accepted.hub, client_id), state.clone());
    let client = &edge.config.client;
    let conn = edge.node.register_client(ConnectSpec {
        id,
        hub: accepted.hub.clone(),
        user_id: claims.user_id.map(Into::into),
        format: WireFormat::Mqtt,
        subprotocol: Some(super::SUBPROTOCOL),
        // A persistent session numbers and keeps its messages until acknowledged, as a
        // reliable WebSocket connection does, and outlives its socket the same way.
        reliable: keep.map(|_| ReliableLimits {
            max_messages: client.unacked_max_messages,
            max_bytes: client.unacked_max_bytes,
        }),
        remote_addr: accepted.remote,
        permissions,
        groups: claims.groups,
        greeting: None,
    });
    let epoch = conn.outbox().epoch();
    Ok(Admitted {
        conn,
        session,
        state,
        epoch,
        resumed: false,
        assigned_client_id,
        user_properties,
    })
}

/// Resumes the session of `client_id` on this socket, if this node keeps one that can be:
/// persistent, of the same MQTT version and user, and not ending. An older socket still
/// attached is taken over (it gets DISCONNECT 0x8E); the session's subscriptions stay, and
/// its messages not yet acknowledged are sent again.
fn resume(
    mqtt: &MqttEdge,
    hub: &HubKey,
    client_id: &str,
    version: Version,
    user_id: Option<&str>,
    keep: Option<Duration>,
    physical_connection_id: String,
) -> Option<Admitted> {
    let edge = &mqtt.edge;
    let conn = edge.node.local_connection(hub, client_id)?;
    if conn.format() != WireFormat::Mqtt
        || !conn.is_reliable()
        || conn.user_id().map(|u| &**u) != user_id
    {
        return None;
    }
    let state = mqtt
        .kept
        .get(&super::session_key(hub, client_id))
        .map(|s| s.clone())?;
    if state.version != version {
        return None;
    }
    let session = edge.sessions.get(conn.id().as_str()).map(|s| s.clone())?;
    let epoch = conn.outbox().reattach(None)?;
    *state.lock_keep() = keep;
    session.set_physical_connection(physical_connection_id);
    Some(Admitted {
        conn,
        session,
        state,
        epoch,
        resumed: true,
        assigned_client_id: None,
        user_properties: Vec::new(),
    })
}

/// Azure's CONNECT rules (spec part 2 §1.1).
fn check_connect(connect: &Connect) -> Result<(), ConnectRefusal> {
    let id = &connect.client_id;
    let id_ok = id.len() <= MAX_CLIENT_ID_CHARS && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !id_ok || (id.is_empty() && connect.version == Version::V311) {
        return Err((
            ConnackCode::CLIENT_ID_INVALID,
            format!("the client id must be 1 to {MAX_CLIENT_ID_CHARS} characters of [0-9a-zA-Z]"),
        ));
    }
    if connect.version == Version::V311 && !(1..=MAX_KEEP_ALIVE).contains(&connect.keep_alive) {
        return Err((
            ConnackCode::CLIENT_ID_INVALID,
            format!("the keep-alive must be between 1 and {MAX_KEEP_ALIVE} seconds"),
        ));
    }
    if let Some(will) = &connect.will {
        let chars = will.topic.chars().count();
        if chars == 0 || chars > MAX_WILL_TOPIC_CHARS || will.topic.trim().is_empty() {
            return Err((
                ConnackCode::TOPIC_NAME_INVALID,
                format!(
                    "the will topic must have 1 to {MAX_WILL_TOPIC_CHARS} characters, not all whitespace"
                ),
            ));
        }
        if will.payload.len() > MAX_WILL_PAYLOAD_BYTES {
            return Err((
                ConnackCode::PACKET_TOO_LARGE,
                format!("the will payload exceeds {MAX_WILL_PAYLOAD_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// A client id is one session: an older session of the same client id on this node is
/// ended (MQTT 5: DISCONNECT 0x8E) before the new one registers.
async fn take_over(mqtt: &MqttEdge, hub: &HubKey, client_id: &str) -> Result<(), ConnectRefusal> {
    let node = &mqtt.edge.node;
    let Some(old) = node.local_connection(hub, client_id) else {
        return Ok(());
    };
    if old.format() != WireFormat::Mqtt {
        return Err((
            ConnackCode::CLIENT_ID_INVALID,
            "the client id is the id of another connection".into(),
        ));
    }
    old.close(Close::Server {
        code: close::BY_SERVICE,
        reason: format!(
            "{}: session taken over by a new connection",
            reason::SESSION_TAKEN_OVER
        ),
        discard_queued: true,
    });
    let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT * 2;
    while node.local_connection(hub, client_id).is_some() {
        if tokio::time::Instant::now() >= deadline {
            return Err((
                ConnackCode::SERVER_BUSY,
                "the previous session of this client id is still ending; retry".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What a session keeps across its sockets.
#[derive(Debug)]
pub(crate) struct SessionState {
    version: Version,
    /// Granted QoS of each subscription.
    subscriptions: Mutex<HashMap<Arc<str>, u8>>,
    /// Messages written at QoS 1 and not acknowledged yet.
    inflight: Mutex<Inflight>,
    /// Packet ids of QoS 2 publishes received and not yet released (PUBREL): a resend on a
    /// later socket of the session is acknowledged again, not delivered twice.
    received: Mutex<HashSet<u16>>,
    /// How long the session outlives its socket (`None`: it ends with it); the latest
    /// CONNECT decides.
    keep: Mutex<Option<Duration>>,
}

/// The QoS 1 and 2 messages of a session in flight to its client.
#[derive(Debug, Default)]
struct Inflight {
    by_packet: HashMap<u16, Flight>,
    /// The last packet id given.
    next_id: u16,
    /// The highest sequence id written to any socket of the session: a message the
    /// outbox queues again at or below it was written before, and is sent again (with
    /// DUP) only while unacknowledged.
    written: u64,
}

/// One message in flight.
#[derive(Debug, Clone, Copy)]
struct Flight {
    /// Its sequence id in a persistent session's outbox (0 in others, and once a QoS 2
    /// message is received: the outbox need not keep it any more).
    seq: u64,
    qos: u8,
    /// QoS 2: the client sent PUBREC and the server PUBREL; PUBCOMP ends it.
    released: bool,
}

impl Inflight {
    /// The highest sequence id the outbox may forget: every message up to it was written
    /// and, at QoS 1 and 2, acknowledged or received.
    fn acknowledged(&self) -> u64 {
        self.by_packet
            .values()
            .map(|f| f.seq)
            .filter(|seq| *seq > 0)
            .min()
            .map_or(self.written, |oldest| oldest - 1)
    }
}

impl SessionState {
    fn new(version: Version, keep: Option<Duration>) -> Self {
        Self {
            version,
            subscriptions: Mutex::new(HashMap::new()),
            inflight: Mutex::new(Inflight::default()),
            received: Mutex::new(HashSet::new()),
            keep: Mutex::new(keep),
        }
    }

    fn lock_subscriptions(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u8>> {
        self.subscriptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, Inflight> {
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_received(&self) -> std::sync::MutexGuard<'_, HashSet<u16>> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_keep(&self) -> std::sync::MutexGuard<'_, Option<Duration>> {
        self.keep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The QoS a message on `topic` that may go out at `max_qos` is delivered with: the
    /// lower of it and the subscription's (`max_qos` is the MQTT publisher's QoS, and 1 for
    /// any other message: Azure's `min(1, granted)` across protocols). Messages of the
    /// server topic count as subscribed at QoS 1 whether or not the client subscribed to
    /// it, and groups joined by the service or the token (not by SUBSCRIBE) as a
    /// subscription with default options (QoS 0).
    fn delivery_qos(&self, topic: &str, max_qos: u8) -> u8 {
        let granted = self.lock_subscriptions().get(topic).copied();
        let granted = match granted {
            Some(q) => q,
            None if topic == SERVER_MESSAGES_TOPIC => 1,
            None => 0,
        };
        granted.min(max_qos)
    }
}

/// What the reader and the writer of one socket share.
#[derive(Debug)]
struct Shared {
    version: Version,
    state: Arc<SessionState>,
    /// A PUBACK freed a place in the window.
    released: Notify,
    /// The most QoS 1 messages in flight to the client.
    window: usize,
    /// The largest packet the client accepts (MQTT 5 Maximum Packet Size).
    max_packet_size: usize,
    /// This socket's end detached the session (to wait for its client): the writer's
    /// [`Taken::Detached`] is its own doing, not a new socket taking the session over.
    detaching: AtomicBool,
    /// The user properties of the client's DISCONNECT, for the `disconnected` event.
    disconnect_properties: Mutex<Vec<MqttUserProperty>>,
}

impl Shared {
    fn lock_subscriptions(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u8>> {
        self.state.lock_subscriptions()
    }

    /// A PUBACK: the QoS 1 message leaves the window, and a persistent session's outbox
    /// forgets what is now acknowledged.
    fn acknowledge(&self, conn: &Connection, packet_id: u16) {
        let mut inflight = self.state.lock_inflight();
        if inflight
            .by_packet
            .get(&packet_id)
            .is_none_or(|f| f.qos != 1)
        {
            return;
        }
        inflight.by_packet.remove(&packet_id);
        self.done(conn, inflight);
    }

    /// A PUBREC: the client has the QoS 2 message; the answer is PUBREL, after which only
    /// PUBCOMP is awaited (the outbox forgets the message). A refusal (MQTT 5, ≥ 0x80) ends
    /// the delivery.
    fn received(&self, conn: &Connection, packet_id: u16, code: u8) -> Option<Bytes> {
        let mut inflight = self.state.lock_inflight();
        let Some(flight) = inflight
            .by_packet
            .get_mut(&packet_id)
            .filter(|f| f.qos == 2)
        else {
            return Some(packet::pubrel(self.version, packet_id, false));
        };
        if code >= 0x80 {
            inflight.by_packet.remove(&packet_id);
            self.done(conn, inflight);
            return None;
        }
        flight.released = true;
        flight.seq = 0;
        self.done(conn, inflight);
        Some(packet::pubrel(self.version, packet_id, true))
    }

    /// A PUBCOMP: the QoS 2 delivery is complete and leaves the window.
    fn completed(&self, conn: &Connection, packet_id: u16) {
        let mut inflight = self.state.lock_inflight();
        if inflight
            .by_packet
            .get(&packet_id)
            .is_none_or(|f| !f.released)
        {
            return;
        }
        inflight.by_packet.remove(&packet_id);
        self.done(conn, inflight);
    }

    /// After a message left the window or was received: wake the writer, and let a
    /// persistent session's outbox forget what needs no resending.
    fn done(&self, conn: &Connection, inflight: std::sync::MutexGuard<'_, Inflight>) {
        let done = inflight.acknowledged();
        drop(inflight);
        self.released.notify_one();
        if conn.is_reliable() {
            conn.outbox().acknowledge(done);
        }
    }
}

/// How the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// The client sent DISCONNECT; `will` when its reason code asks for the will (0x04).
    Disconnected { code: u8, will: bool },
    /// The socket closed or failed without a DISCONNECT.
    Lost,
    /// The server is closing the session (a bad packet, a limit, keep-alive).
    Stopped,
}

async fn run_session<S>(
    mqtt: &Arc<MqttEdge>,
    admitted: Admitted,
    connect: Box<Connect>,
    framer: packet::Framer,
    ws: WebSocketStream<S>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let edge = &mqtt.edge;
    let Admitted {
        conn,
        session,
        state,
        epoch,
        resumed,
        assigned_client_id,
        user_properties,
    } = admitted;
    let version = connect.version;
    let hub_limits = edge.config.hub_limits(conn.hub());
    let config_window = usize::from(edge.config.mqtt.inflight_window.max(1));
    let keep = *state.lock_keep();
    let shared = Shared {
        version,
        state,
        released: Notify::new(),
        window: connect
            .receive_max
            .map_or(config_window, |r| usize::from(r.max(1)).min(config_window)),
        max_packet_size: connect
            .max_packet_size
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX)),
        detaching: AtomicBool::new(false),
        disconnect_properties: Mutex::new(Vec::new()),
    };
    let server_keep_alive = (version == Version::V5
        && !(1..=MAX_KEEP_ALIVE).contains(&connect.keep_alive))
    .then_some(MAX_KEEP_ALIVE);
    let keep_alive = server_keep_alive.unwrap_or(connect.keep_alive);
    // MQTT 5: a Session Expiry Interval above the window is told the one kept.
    let session_expiry = match (connect.session_expiry, keep) {
        (Some(asked), Some(kept)) if u64::from(asked) > kept.as_secs() => {
            Some(u32::try_from(kept.as_secs()).unwrap_or(u32::MAX))
        }
        _ => None,
    };
    let connack = packet::connack(
        version,
        ConnackCode::ACCEPTED,
        resumed,
        ConnackProperties {
            assigned_client_id,
            receive_max: edge.config.mqtt.inflight_window.max(1),
            server_keep_alive,
            max_packet_size: u32::try_from(hub_limits.max_message_bytes).unwrap_or(u32::MAX),
            session_expiry,
            reason: None,
            user_properties,
        },
    );
    // The CONNACK is the first packet the client reads; a resumed session's QoS 2
    // deliveries the client had received are released again (MQTT-4.4.0-1), with room in
    // the channel for all of them before the writer runs.
    let released: Vec<u16> = shared
        .state
        .lock_inflight()
        .by_packet
        .iter()
        .filter(|(_, f)| f.released)
        .map(|(id, _)| *id)
        .collect();
    let (control, control_rx) = mpsc::channel(CONTROL_CAPACITY + released.len());
    let _ = control.send(connack).await;
    for id in released {
        let _ = control.send(packet::pubrel(version, id, true)).await;
    }
    if edge.draining.is_cancelled() {
        server_close(
            &conn,
            reason::SERVER_SHUTTING_DOWN,
            close::GOING_AWAY,
            "The server is shutting down.",
        );
    }
    if resumed {
        tracing::debug!(version = version.level(), "session resumed");
    } else {
        // Azure raises `connected` once per session, not per socket.
        edge.upstream.connected(&session);
        tracing::debug!(version = version.level(), "connected");
    }

    let (sink, stream) = ws.split();
    let reader = Reader {
        mqtt,
        session: session.clone(),
        conn: &conn,
        shared: &shared,
        control,
        framer,
        limit: hub_limits.max_message_bytes,
        rate: RateLimiter::new(&hub_limits),
        keep_alive: if keep_alive == 0 {
            edge.config.limits.idle_timeout
        } else {
            Duration::from_millis(u64::from(keep_alive) * 1500)
        },
        epoch,
        persistent: keep.is_some(),
    };
    let read = reader.run(stream);
    let write = write_loop(&conn, &shared, sink, control_rx, epoch);
    // A socket that ends on the client's side (its DISCONNECT, or the network) leaves a
    // persistent session waiting for the client to come back; any other end ends it.
    let settle = |end: ReadEnd| -> bool {
        if matches!(end, ReadEnd::Stopped) {
            return false;
        }
        if keep.is_some() {
            shared.detaching.store(true, Ordering::Relaxed);
            if conn.outbox().detach(epoch) {
                shared.released.notify_one();
                return true;
            }
        }
        if conn.outbox().epoch() == epoch {
            conn.close(Close::Peer);
        }
        false
    };
    let (end, detached) = {
        tokio::pin!(read, write);
        tokio::select! {
            end = &mut read => {
                let detached = settle(end);
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut write).await;
                (end, detached)
            }
            () = &mut write => {
                let end = tokio::time::timeout(CLOSE_TIMEOUT, &mut read)
                    .await
                    .unwrap_or(ReadEnd::Stopped);
                let detached = settle(end);
                (end, detached)
            }
            () = edge.kill.cancelled() => (ReadEnd::Stopped, false),
        }
    };
    if !detached && conn.outbox().epoch() != epoch {
        // A new socket of the same client took the session over: it is the session's now.
        tracing::debug!("socket taken over by a new connection of the session");
        return;
    }
    let will = match end {
        ReadEnd::Disconnected { will, .. } => will,
        ReadEnd::Lost | ReadEnd::Stopped => !matches!(
            conn.outbox().current_close(),
            Some(Close::Server {
                code: close::BY_SERVICE,
                ..
            })
        ),
    };
    if will && let Some(will) = &connect.will {
        publish_will(mqtt, &conn, version, will);
    }
    let client_properties = std::mem::take(
        &mut *shared
            .disconnect_properties
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let mqtt_end = session_end(
        &end,
        conn.outbox().current_close(),
        version,
        client_properties,
    );
    if detached {
        tracing::debug!("socket lost; the session waits for its client");
        await_client(
            mqtt,
            conn,
            session,
            (epoch + 1, version),
            keep.unwrap_or_default(),
            mqtt_end,
        );
        return;
    }
    let label = match (end, conn.outbox().current_close()) {
        (ReadEnd::Disconnected { .. }, _) => "client",
        (_, current) => close_label(current.as_ref()),
    };
    finish(mqtt, &conn, &session, label, mqtt_end).await;
}

/// The `reason` label of `hubcast_disconnects_total` for a session the server closed.
fn close_label(close: Option<&Close>) -> &'static str {
    match close {
        Some(Close::Server { code, .. }) => match *code {
            close::BY_SERVICE => "closed_by_service",
            close::GOING_AWAY => "shutdown",
            close::TOO_BIG => "message_too_large",
            close::SLOW_CONSUMER => "slow_consumer",
            close::POLICY_VIOLATION => "policy",
            _ => "protocol_error",
        },
        _ => "client",
    }
}

/// Keeps a detached persistent session for `keep` (its session expiry, at most the
/// recovery window), then ends it unless a socket of its client came back. Shutdown, or a
/// close while detached (REST, another node's takeover), ends it at once.
fn await_client(
    mqtt: &Arc<MqttEdge>,
    conn: Arc<Connection>,
    session: Arc<Session>,
    (epoch, version): (u64, Version),
    keep: Duration,
    mqtt_end: MqttDisconnected,
) {
    let edge = mqtt.edge.clone();
    let tracker = edge.tracker.clone();
    let mqtt = mqtt.clone();
    let task = async move {
        tokio::select! {
            () = tokio::time::sleep(keep) => {}
            () = edge.draining.cancelled() => {}
            () = conn.outbox().closed() => {}
        }
        if conn.outbox().expire(epoch) {
            let current = conn.outbox().current_close();
            let (label, mqtt_end) = match &current {
                Some(Close::Server { .. }) => (
                    close_label(current.as_ref()),
                    session_end(&ReadEnd::Stopped, current.clone(), version, Vec::new()),
                ),
                _ => ("session_expired", mqtt_end),
            };
            tracing::debug!(reason = label, "session ended while its client was away");
            finish(&mqtt, &conn, &session, label, mqtt_end).await;
        }
    };
    tracker.spawn(task.in_current_span());
}

/// Ends a session: it leaves the router, and the upstream gets its one `disconnected`.
/// Its state goes first, so a new session of the same client id (which waits for this one
/// to leave the router) never finds the old one's.
async fn finish(
    mqtt: &MqttEdge,
    conn: &Connection,
    session: &Arc<Session>,
    label: &'static str,
    mqtt_end: MqttDisconnected,
) {
    let edge = &mqtt.edge;
    edge.node
        .metrics()
        .registry()
        .disconnects
        .with(&[conn.hub(), label])
        .inc();
    mqtt.kept
        .remove(&super::session_key(conn.hub(), conn.id().as_str()));
    edge.sessions
        .remove_if(conn.id().as_str(), |_, s| Arc::ptr_eq(s, session));
    edge.node.unregister_client(conn);
    let why = upstream::disconnect_reason(conn);
    edge.upstream
        .disconnected_mqtt(session, why.as_deref(), Some(mqtt_end))
        .await;
    tracing::debug!(reason = label, "disconnected");
}

/// The `mqtt` member of a session's `disconnected` event: the client's DISCONNECT, or the
/// server's (MQTT 5 only: 3.1.1 has no server DISCONNECT), or none when the socket went
/// away without one.
fn session_end(
    end: &ReadEnd,
    close: Option<Close>,
    version: Version,
    client_properties: Vec<MqttUserProperty>,
) -> MqttDisconnected {
    let packet = |code| MqttDisconnectPacket {
        code,
        user_properties: Vec::new(),
    };
    match (end, close) {
        (ReadEnd::Disconnected { code, .. }, _) => MqttDisconnected {
            initiated_by_client: true,
            disconnect_packet: Some(MqttDisconnectPacket {
                code: *code,
                user_properties: client_properties,
            }),
        },
        (_, Some(Close::Server { code, reason, .. })) => MqttDisconnected {
            initiated_by_client: false,
            disconnect_packet: (version == Version::V5)
                .then(|| packet(disconnect_reason(code, &reason).0)),
        },
        _ => MqttDisconnected {
            initiated_by_client: true,
            disconnect_packet: None,
        },
    }
}

/// Publishes the will of a session that ended without a normal DISCONNECT, under the same
/// permission as any PUBLISH. Azure's wills are not retained and not delayed.
fn publish_will(mqtt: &MqttEdge, conn: &Connection, version: Version, will: &packet::Will) {
    let topic = &*will.topic;
    if router::check_group_name(topic).is_err()
        || topic.starts_with(RESERVED_PREFIX)
        || !conn.allows(Permission::SendToGroup, topic)
    {
        tracing::debug!(
            topic,
            "will not published: no permission or an invalid topic"
        );
        return;
    }
    let content_type = if version == Version::V5 {
        will.content_type.as_deref()
    } else {
        None
    };
    match codec::data_of(content_type, will.payload.clone()) {
        Ok(data) => {
            let _ = mqtt
                .edge
                .node
                .publish_from_mqtt_client(conn, topic, data, (will.qos, None));
            tracing::debug!(topic, "will published");
        }
        Err(e) => tracing::debug!(error = %e, "will not published"),
    }
}

/// Starts a server close: the writer sends DISCONNECT with `mqtt_reason` (MQTT 5) and the
/// WebSocket close with `ws_code`. The MQTT reason code travels in front of the text.
fn server_close(conn: &Connection, mqtt_reason: u8, ws_code: u16, why: &str) {
    conn.close(Close::Server {
        code: ws_code,
        reason: format!("{mqtt_reason}: {why}"),
        discard_queued: false,
    });
}

/// The MQTT 5 reason code and text of a server close: the session's own closes carry the
/// code in front of the text ([`server_close`]); the service's closes (REST, gRPC, limits,
/// shutdown) are mapped from their WebSocket close code.
fn disconnect_reason(code: u16, text: &str) -> (u8, String) {
    if let Some((head, rest)) = text.split_once(": ")
        && let Ok(mqtt) = head.parse::<u8>()
    {
        return (mqtt, rest.to_owned());
    }
    let mqtt = match code {
        close::BY_SERVICE => reason::ADMINISTRATIVE_ACTION,
        close::GOING_AWAY => reason::SERVER_SHUTTING_DOWN,
        close::TOO_BIG => reason::PACKET_TOO_LARGE,
        close::SLOW_CONSUMER => reason::QUOTA_EXCEEDED,
        // The session's own 1008 closes carry their code; the service's is a persistent
        // session's outbox overflowing its limits (`close::UNRECOVERABLE`).
        close::POLICY_VIOLATION => reason::QUOTA_EXCEEDED,
        close::PROTOCOL_ERROR => reason::PROTOCOL_ERROR,
        _ => reason::UNSPECIFIED,
    };
    (mqtt, text.to_owned())
}

/// The reader of one session.
struct Reader<'a> {
    mqtt: &'a MqttEdge,
    /// The upstream side, for requests on `$webpubsub/server/events/{event}`.
    session: Arc<Session>,
    conn: &'a Arc<Connection>,
    shared: &'a Shared,
    control: mpsc::Sender<Bytes>,
    framer: packet::Framer,
    limit: usize,
    rate: RateLimiter,
    keep_alive: Duration,
    /// The outbox epoch of this socket: another means a new socket took the session over.
    epoch: u64,
    /// The session outlives its socket: a keep-alive timeout is a lost network, after which
    /// the session waits for its client, not a close.
    persistent: bool,
}

impl Reader<'_> {
    async fn run<R>(mut self, mut stream: R) -> ReadEnd
    where
        R: Stream<Item = Result<WsMessage, WsError>> + Unpin,
    {
        // Packets already buffered with the CONNECT.
        if let Some(end) = self.drain().await {
            return end;
        }
        loop {
            let message = tokio::select! {
                m = stream.next() => m,
                () = tokio::time::sleep(self.keep_alive) => {
                    self.mqtt.edge.limits.hit(LimitKind::IdleTimeout);
                    if self.persistent {
                        tracing::debug!("nothing received within 1.5 times the keep-alive");
                        return ReadEnd::Lost;
                    }
                    server_close(
                        self.conn,
                        reason::KEEP_ALIVE_TIMEOUT,
                        close::POLICY_VIOLATION,
                        "Nothing received within 1.5 times the keep-alive.",
                    );
                    return ReadEnd::Stopped;
                }
            };
            match message {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    if self.conn.outbox().epoch() != self.epoch {
                        return ReadEnd::Lost;
                    }
                    if self.conn.outbox().is_closing() {
                        continue;
                    }
                    self.framer.extend(&bytes);
                    if let Some(end) = self.drain().await {
                        return end;
                    }
                }
                Some(Ok(WsMessage::Text(_))) => {
                    self.stop(
                        reason::MALFORMED,
                        close::UNSUPPORTED_DATA,
                        "MQTT is carried in binary messages.",
                    );
                    return ReadEnd::Stopped;
                }
                Some(Ok(WsMessage::Close(_))) | None => return ReadEnd::Lost,
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(_))) => {
                    self.mqtt.edge.limits.hit(LimitKind::MessageSize);
                    self.stop(
                        reason::PACKET_TOO_LARGE,
                        close::TOO_BIG,
                        &format!("The packet exceeds the limit of {} bytes.", self.limit),
                    );
                    return ReadEnd::Stopped;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "read failed");
                    return ReadEnd::Lost;
                }
            }
        }
    }

    fn stop(&self, mqtt_reason: u8, ws_code: u16, why: &str) {
        tracing::debug!(reason = mqtt_reason, why, "closing the session");
        server_close(self.conn, mqtt_reason, ws_code, why);
    }

    /// Carries out every whole packet buffered; `Some` when reading must stop.
    async fn drain(&mut self) -> Option<ReadEnd> {
        loop {
            let bytes = match self.framer.next_packet(self.limit) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return None,
                Err(packet::FrameError::TooLarge { size, limit }) => {
                    self.mqtt.edge.limits.hit(LimitKind::MessageSize);
                    self.stop(
                        reason::PACKET_TOO_LARGE,
                        close::TOO_BIG,
                        &format!("The packet of {size} bytes exceeds the limit of {limit} bytes."),
                    );
                    return Some(ReadEnd::Stopped);
                }
                Err(e) => {
                    self.stop(reason::MALFORMED, close::PROTOCOL_ERROR, &e.to_string());
                    return Some(ReadEnd::Stopped);
                }
            };
            let inbound = match packet::decode(self.shared.version, &bytes) {
                Ok(inbound) => inbound,
                Err(e) => {
                    self.stop(reason::MALFORMED, close::PROTOCOL_ERROR, &e.to_string());
                    return Some(ReadEnd::Stopped);
                }
            };
            if let Some(end) = self.on_packet(inbound, bytes.len()).await {
                return Some(end);
            }
        }
    }

    async fn reply(&self, packet: Bytes) {
        let _ = self.control.send(packet).await;
    }

    async fn on_packet(&mut self, inbound: Inbound, len: usize) -> Option<ReadEnd> {
        let version = self.shared.version;
        match inbound {
            Inbound::Publish(publish) => return self.on_publish(publish, len).await,
            Inbound::Puback(id) => self.shared.acknowledge(self.conn, id),
            Inbound::Pubrel(id) => {
                let found = self.shared.state.lock_received().remove(&id);
                self.reply(packet::pubcomp(version, id, found)).await;
            }
            // The server never publishes at QoS 2, so a PUBREC or PUBCOMP names nothing.
            Inbound::Pubrec { id, code } => {
                if let Some(pubrel) = self.shared.received(self.conn, id, code) {
                    self.reply(pubrel).await;
                }
            }
            Inbound::Pubcomp(id) => self.shared.completed(self.conn, id),
            Inbound::Subscribe {
                packet_id,
                topics,
                subscription_id,
            } => {
                let codes: Vec<u8> = topics
                    .iter()
                    .map(|(filter, qos)| {
                        if subscription_id {
                            reason::SUBSCRIPTION_IDS_NOT_SUPPORTED
                        } else {
                            self.subscribe(filter, *qos)
                        }
                    })
                    .collect();
                self.reply(packet::suback(version, packet_id, &codes)).await;
            }
            Inbound::Unsubscribe { packet_id, topics } => {
                let codes: Vec<u8> = topics.iter().map(|t| self.unsubscribe(t)).collect();
                self.reply(packet::unsuback(version, packet_id, &codes))
                    .await;
            }
            Inbound::Pingreq => self.reply(packet::pingresp(version)).await,
            Inbound::Disconnect {
                code,
                user_properties,
            } => {
                *self
                    .shared
                    .disconnect_properties
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = user_properties
                    .iter()
                    .map(|(name, value)| MqttUserProperty {
                        name: name.to_string(),
                        value: value.to_string(),
                    })
                    .collect();
                return Some(ReadEnd::Disconnected {
                    code,
                    will: code == 0x04,
                });
            }
            Inbound::Connect(_) => {
                self.stop(
                    reason::PROTOCOL_ERROR,
                    close::PROTOCOL_ERROR,
                    "A second CONNECT packet.",
                );
                return Some(ReadEnd::Stopped);
            }
            Inbound::Unexpected(kind) => {
                self.stop(
                    reason::PROTOCOL_ERROR,
                    close::PROTOCOL_ERROR,
                    &format!("A client may not send {kind}."),
                );
                return Some(ReadEnd::Stopped);
            }
        }
        None
    }

    /// One subscription: its MQTT 5 reason code (the granted QoS on success).
    fn subscribe(&self, filter: &str, qos: u8) -> u8 {
        if filter.starts_with("$share/") {
            return reason::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED;
        }
        if filter.contains(['+', '#']) {
            return reason::WILDCARDS_NOT_SUPPORTED;
        }
        let granted = qos.min(2);
        if filter == SERVER_MESSAGES_TOPIC {
            self.shared
                .lock_subscriptions()
                .insert(filter.into(), granted);
            return granted;
        }
        if filter.starts_with(RESERVED_PREFIX) || router::check_group_name(filter).is_err() {
            return reason::TOPIC_FILTER_INVALID;
        }
        if !self.conn.allows(Permission::JoinLeaveGroup, filter) {
            return reason::NOT_AUTHORIZED;
        }
        let edge = &self.mqtt.edge;
        let max = edge
            .config
            .hub_limits(self.conn.hub())
            .max_groups_per_connection;
        {
            let membership = self.conn.groups();
            if membership.len() >= max && !membership.iter().any(|g| &**g == filter) {
                edge.limits.hit(LimitKind::GroupsPerConnection);
                return reason::QUOTA_EXCEEDED;
            }
        }
        edge.node.join_group_from_client(self.conn, filter);
        self.shared
            .lock_subscriptions()
            .insert(filter.into(), granted);
        granted
    }

    fn unsubscribe(&self, filter: &str) -> u8 {
        if filter == SERVER_MESSAGES_TOPIC {
            return match self.shared.lock_subscriptions().remove(filter) {
                Some(_) => reason::SUCCESS,
                None => reason::NO_SUBSCRIPTION_EXISTED,
            };
        }
        if router::check_group_name(filter).is_err() || filter.contains(['+', '#']) {
            return reason::TOPIC_FILTER_INVALID;
        }
        if !self.conn.allows(Permission::JoinLeaveGroup, filter) {
            return reason::NOT_AUTHORIZED;
        }
        self.shared.lock_subscriptions().remove(filter);
        if self
            .mqtt
            .edge
            .node
            .leave_group_from_client(self.conn, filter)
        {
            reason::SUCCESS
        } else {
            reason::NO_SUBSCRIPTION_EXISTED
        }
    }

    /// Answers a PUBLISH of QoS 1 or 2 with `code` (success or a refusal).
    async fn ack(&self, publish: &Publish, code: u8, why: Option<&str>) {
        let version = self.shared.version;
        let Some(id) = publish.packet_id else { return };
        let packet = if publish.qos == 1 {
            packet::puback(version, id, code, why)
        } else {
            packet::pubrec(version, id, code, why)
        };
        self.reply(packet).await;
    }

    /// A PUBLISH to `$webpubsub/server/events/{name}`: the user event `name` to the
    /// upstream, acknowledged at once; the backend's answer is published to the client on
    /// `…/succeeded` (2xx) or `…/failed`, with the status in `azure-status-code` (MQTT 5).
    /// Nothing comes back when no handler selects the event. A name that cannot be an event
    /// (empty, with a `/`, `.` or `..`) is refused with 0x90, a payload that does not match
    /// its content type with 0x99, as any PUBLISH refusal.
    async fn on_event_request(&mut self, publish: &Publish, name: String) -> Option<ReadEnd> {
        let version = self.shared.version;
        let data = if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            Err((
                reason::TOPIC_NAME_INVALID,
                format!("'{name}' is not an event name."),
            ))
        } else {
            let content_type = publish.content_type.as_deref();
            codec::data_of(content_type, publish.payload.clone())
                .map_err(|e| (reason::PAYLOAD_FORMAT_INVALID, e.to_string()))
        };
        let data = match data {
            Ok(data) => data,
            Err((code, why)) => {
                if publish.qos == 0 {
                    self.stop(code, close::POLICY_VIOLATION, &why);
                    return Some(ReadEnd::Stopped);
                }
                self.ack(publish, code, Some(&why)).await;
                return None;
            }
        };
        if publish.qos == 2 {
            self.shared
                .state
                .lock_received()
                .insert(publish.packet_id.unwrap_or_default());
        }
        self.ack(publish, reason::SUCCESS, None).await;
        let upstream = self.mqtt.edge.upstream.clone();
        let session = self.session.clone();
        let control = self.control.clone();
        let correlation_data = publish.correlation_data.clone();
        let request_topic = publish.topic.clone();
        let request_properties = publish
            .user_properties
            .iter()
            .map(|(name, value)| MqttUserProperty {
                name: name.to_string(),
                value: value.to_string(),
            })
            .collect();
        // The reader goes on while the backend answers (keep-alive, other packets); on the
        // edge's tracker, so shutdown waits for the answer as for the session.
        self.mqtt.edge.tracker.spawn(
            async move {
                let (status, reply, reply_properties) = match upstream
                    .user_event_answer(&session, &name, Some(data), request_properties)
                    .await
                {
                    Ok(None) => {
                        tracing::debug!(event = %name, "no handler for the MQTT event request");
                        return;
                    }
                    Ok(Some((reply, properties))) => {
                        (if reply.is_some() { 200 } else { 204 }, reply, properties)
                    }
                    Err(e) => {
                        tracing::debug!(event = %name, error = %e, "MQTT event request failed");
                        (e.connect_status(), None, Vec::new())
                    }
                };
                let outcome = if (200..300).contains(&status) {
                    "succeeded"
                } else {
                    "failed"
                };
                let (payload, content_type) = match &reply {
                    Some(data) => (codec::payload_of(data), codec::content_type(data)),
                    None => (Bytes::new(), None),
                };
                let topic = format!("{request_topic}/{outcome}");
                if let Some(packet) = packet::event_reply(
                    version,
                    &topic,
                    payload,
                    content_type,
                    status,
                    correlation_data,
                    &properties_of(&reply_properties),
                ) {
                    let _ = control.send(packet).await;
                }
            }
            .in_current_span(),
        );
        None
    }

    /// A PUBLISH: a send to the group named by its topic. A refusal is told in the PUBACK
    /// or PUBREC for QoS 1 and 2; at QoS 0 there is nothing to tell it in, so the session
    /// is closed (as Azure does).
    async fn on_publish(&mut self, publish: Publish, len: usize) -> Option<ReadEnd> {
        let version = self.shared.version;
        let edge = &self.mqtt.edge;
        edge.node.hub_metrics(self.conn.hub()).received(
            Protocol::Mqtt,
            true,
            publish.payload.len(),
        );
        if version == Version::V5 {
            if publish.topic_alias.is_some() {
                self.stop(
                    reason::TOPIC_ALIAS_INVALID,
                    close::PROTOCOL_ERROR,
                    "Topic aliases are not supported (Topic Alias Maximum 0).",
                );
                return Some(ReadEnd::Stopped);
            }
            if publish.retain {
                self.stop(
                    reason::RETAIN_NOT_SUPPORTED,
                    close::PROTOCOL_ERROR,
                    "Retained messages are not supported (Retain Available 0).",
                );
                return Some(ReadEnd::Stopped);
            }
        }
        if let Err(kind) = self.rate.take(len, tokio::time::Instant::now()) {
            edge.limits.hit(kind);
            self.stop(
                reason::MESSAGE_RATE_TOO_HIGH,
                close::POLICY_VIOLATION,
                &format!(
                    "The connection exceeded its limit (limits.{}).",
                    kind.name()
                ),
            );
            return Some(ReadEnd::Stopped);
        }
        if publish.qos == 2 {
            let id = publish.packet_id.unwrap_or_default();
            if self.shared.state.lock_received().contains(&id) {
                // A resend of a publish already taken: acknowledge it again, deliver once.
                self.ack(&publish, reason::SUCCESS, None).await;
                return None;
            }
            if self.shared.state.lock_received().len()
                >= usize::from(edge.config.mqtt.inflight_window.max(1))
            {
                self.stop(
                    reason::RECEIVE_MAXIMUM_EXCEEDED,
                    close::POLICY_VIOLATION,
                    &format!(
                        "More than {} QoS 2 publishes were not released (mqtt.inflight_window).",
                        edge.config.mqtt.inflight_window
                    ),
                );
                return Some(ReadEnd::Stopped);
            }
        }
        if let Some(name) = publish.topic.strip_prefix(EVENTS_PREFIX) {
            let name = name.to_owned();
            return self.on_event_request(&publish, name).await;
        }
        let topic = &*publish.topic;
        let refusal = if topic.starts_with(RESERVED_PREFIX) {
            Some((
                reason::NOT_AUTHORIZED,
                "Topics under $webpubsub/ are reserved.".to_owned(),
            ))
        } else if let Err(e) = router::check_group_name(topic) {
            Some((reason::TOPIC_NAME_INVALID, e.to_string()))
        } else if !self.conn.allows(Permission::SendToGroup, topic) {
            Some((
                reason::NOT_AUTHORIZED,
                format!("The connection has no permission to publish to '{topic}'."),
            ))
        } else {
            None
        };
        let content_type = publish.content_type.as_deref();
        let data = match refusal {
            Some(refusal) => Err(refusal),
            None => codec::data_of(content_type, publish.payload.clone())
                .map_err(|e| (reason::PAYLOAD_FORMAT_INVALID, e.to_string())),
        };
        let data = match data {
            Ok(data) => data,
            Err((code, why)) => {
                if publish.qos == 0 {
                    self.stop(code, close::POLICY_VIOLATION, &why);
                    return Some(ReadEnd::Stopped);
                }
                self.ack(&publish, code, Some(&why)).await;
                return None;
            }
        };
        let sent = edge.node.publish_from_mqtt_client(
            self.conn,
            topic,
            data,
            (publish.qos, publish.message_expiry),
        );
        if publish.qos == 2 {
            self.shared
                .state
                .lock_received()
                .insert(publish.packet_id.unwrap_or_default());
        }
        match sent {
            Ok(None) => self.ack(&publish, reason::SUCCESS, None).await,
            Ok(Some(forwarded)) if publish.qos > 0 => {
                // In a cluster the acknowledgement waits until Redis has the message; the
                // reader goes on meanwhile.
                let control = self.control.clone();
                let (qos, id) = (publish.qos, publish.packet_id.unwrap_or_default());
                // On the edge's tracker, so shutdown waits for the ack as for the session.
                edge.tracker.spawn(async move {
                    let (code, why) = match forwarded.outcome().await {
                        Ok(()) => (reason::SUCCESS, None),
                        Err(e) => (reason::UNSPECIFIED, Some(e.to_string())),
                    };
                    let packet = if qos == 1 {
                        packet::puback(version, id, code, why.as_deref())
                    } else {
                        packet::pubrec(version, id, code, why.as_deref())
                    };
                    let _ = control.send(packet).await;
                });
            }
            Ok(Some(_)) => {}
            Err(e) => {
                let why = e.to_string();
                self.ack(&publish, reason::UNSPECIFIED, Some(&why)).await;
            }
        }
        None
    }
}

/// How often a writer whose in-flight window is full looks whether its socket is still the
/// session's (a new socket may have taken the session over meanwhile).
const DETACH_CHECK: Duration = Duration::from_secs(1);

/// Writes the socket's packets: answers from the reader first, then messages from the
/// outbox as PUBLISH packets within the in-flight window. Returns when the socket ends.
///
/// In a persistent session the outbox numbers each message and, after a new socket
/// attached, queues again every one not forgotten yet: those written before and still
/// unacknowledged are sent again with DUP and their packet id, the others written before
/// are skipped, and the rest are new.
async fn write_loop<W>(
    conn: &Connection,
    shared: &Shared,
    mut sink: W,
    mut control: mpsc::Receiver<Bytes>,
    epoch: u64,
) where
    W: Sink<WsMessage, Error = WsError> + Unpin,
{
    let mut batch = Vec::new();
    let mut pending: VecDeque<Queued> = VecDeque::new();
    let mut head = BytesMut::new();
    let persistent = conn.is_reliable();
    // The reader's end drops the sender; the writer goes on to write the close.
    let mut reader_gone = false;
    loop {
        let window_full = !pending.is_empty();
        if window_full && conn.outbox().epoch() != epoch {
            detached(shared, &mut sink).await;
            return;
        }
        tokio::select! {
            biased;
            packet = control.recv(), if !reader_gone => {
                let Some(packet) = packet else {
                    reader_gone = true;
                    continue;
                };
                let mut write = sink.feed(WsMessage::Binary(packet)).await;
                while write.is_ok() && let Ok(more) = control.try_recv() {
                    write = sink.feed(WsMessage::Binary(more)).await;
                }
                if write.is_err() || sink.flush().await.is_err() {
                    return;
                }
                continue;
            }
            () = shared.released.notified(), if window_full => {}
            () = conn.outbox().closed(), if window_full => {
                final_close(conn, shared, &mut sink).await;
                return;
            }
            () = tokio::time::sleep(DETACH_CHECK), if window_full => {}
            taken = conn.outbox().take(epoch, &mut batch), if !window_full => match taken {
                Taken::Frames => pending.extend(batch.drain(..)),
                Taken::Close(Close::Server { .. }) => {
                    final_close(conn, shared, &mut sink).await;
                    return;
                }
                Taken::Close(Close::Peer) => {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.flush()).await;
                    return;
                }
                Taken::Detached => {
                    detached(shared, &mut sink).await;
                    return;
                }
            },
        }
        let mut wrote = false;
        while let Some(queued) = pending.front() {
            let Frame::Binary(bytes) = &queued.frame else {
                pending.pop_front();
                continue;
            };
            let Some(body) = PublishBody::split(bytes) else {
                pending.pop_front();
                continue;
            };
            let sequence_id = queued.sequence_id.unwrap_or(0);
            let Ok(expiry) = body.remaining(tokio::time::Instant::now()) else {
                // Its Message Expiry Interval passed while it waited (for the window, or
                // for the client to come back): dropped for this session.
                let mut inflight = shared.state.lock_inflight();
                if sequence_id > 0 {
                    let owed = inflight
                        .by_packet
                        .iter()
                        .find(|(_, f)| f.seq == sequence_id)
                        .map(|(id, _)| *id);
                    if let Some(id) = owed {
                        inflight.by_packet.remove(&id);
                    }
                    inflight.written = inflight.written.max(sequence_id);
                    conn.outbox().written(sequence_id);
                }
                drop(inflight);
                pending.pop_front();
                wrote = true;
                continue;
            };
            let (qos, packet_id, dup) = {
                let mut inflight = shared.state.lock_inflight();
                if sequence_id > 0 && sequence_id <= inflight.written {
                    // Written to an earlier socket of the session.
                    let again = inflight
                        .by_packet
                        .iter()
                        .find(|(_, f)| f.seq == sequence_id)
                        .map(|(id, f)| (f.qos, Some(*id), true));
                    let Some(again) = again else {
                        pending.pop_front();
                        continue;
                    };
                    again
                } else {
                    let qos = shared.state.delivery_qos(body.topic_name(), body.max_qos);
                    if qos == 0 {
                        (0, None, false)
                    } else {
                        if inflight.by_packet.len() >= shared.window {
                            break;
                        }
                        let id = loop {
                            inflight.next_id = inflight.next_id.wrapping_add(1).max(1);
                            let id = inflight.next_id;
                            if !inflight.by_packet.contains_key(&id) {
                                break id;
                            }
                        };
                        inflight.by_packet.insert(
                            id,
                            Flight {
                                seq: sequence_id,
                                qos,
                                released: false,
                            },
                        );
                        (qos, Some(id), false)
                    }
                }
            };
            pending.pop_front();
            head.clear();
            body.write_head(
                qos,
                packet_id,
                dup,
                shared.version == Version::V5,
                expiry,
                &mut head,
            );
            let too_large = head.len() + body.payload.len() > shared.max_packet_size;
            if too_large {
                // MQTT-3.1.2-25: a packet the client cannot take is dropped for it.
                if let Some(id) = packet_id {
                    shared.state.lock_inflight().by_packet.remove(&id);
                }
            }
            if sequence_id > 0 {
                let mut inflight = shared.state.lock_inflight();
                inflight.written = inflight.written.max(sequence_id);
                conn.outbox().written(sequence_id);
            }
            if too_large {
                continue;
            }
            let result = if body.payload.len() < 256 {
                head.extend_from_slice(&body.payload);
                sink.feed(WsMessage::Binary(head.split().freeze())).await
            } else {
                // The shared payload follows its per-session head as the continuation of
                // one WebSocket message: no per-recipient copy of it.
                let first =
                    WsFrame::message(head.split().freeze(), OpCode::Data(OpData::Binary), false);
                let rest =
                    WsFrame::message(body.payload.clone(), OpCode::Data(OpData::Continue), true);
                match sink.feed(WsMessage::Frame(first)).await {
                    Ok(()) => sink.feed(WsMessage::Frame(rest)).await,
                    Err(e) => Err(e),
                }
            };
            if result.is_err() {
                return;
            }
            wrote = true;
        }
        if persistent && wrote {
            // What was written at QoS 0, and what was acknowledged, need not be kept.
            let done = shared.state.lock_inflight().acknowledged();
            conn.outbox().acknowledge(done);
        }
        if wrote && sink.flush().await.is_err() {
            return;
        }
    }
}

/// This socket is no longer the session's. When a new socket of the client took it over,
/// the old one is told (MQTT 5: DISCONNECT 0x8E) and closed, as MQTT requires; when it was
/// the socket's own end, there is nobody left to tell.
async fn detached<W>(shared: &Shared, sink: &mut W)
where
    W: Sink<WsMessage, Error = WsError> + Unpin,
{
    if shared.detaching.load(Ordering::Relaxed) {
        return;
    }
    let text = "Session taken over by a new connection.";
    let send = async {
        if let Some(packet) = packet::disconnect(shared.version, reason::SESSION_TAKEN_OVER, text) {
            sink.feed(WsMessage::Binary(packet)).await?;
        }
        sink.send(WsMessage::Close(Some(CloseFrame {
            code: close::BY_SERVICE.into(),
            reason: text.into(),
        })))
        .await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, send).await;
}

/// Writes DISCONNECT (MQTT 5) and the close frame of a server close.
async fn final_close<W>(conn: &Connection, shared: &Shared, sink: &mut W)
where
    W: Sink<WsMessage, Error = WsError> + Unpin,
{
    let Some(Close::Server { code, reason, .. }) = conn.outbox().current_close() else {
        return;
    };
    let (mqtt, text) = disconnect_reason(code, &reason);
    let send = async {
        if let Some(packet) = packet::disconnect(shared.version, mqtt, &text) {
            sink.feed(WsMessage::Binary(packet)).await?;
        }
        let mut end = text.len().min(123);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        sink.send(WsMessage::Close(Some(CloseFrame {
            code: code.into(),
            reason: text[..end].to_owned().into(),
        })))
        .await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, send).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_carry_the_session_code_or_map_the_service_close() {
        assert_eq!(
            disconnect_reason(close::POLICY_VIOLATION, "147: too many"),
            (reason::RECEIVE_MAXIMUM_EXCEEDED, "too many".to_owned())
        );
        assert_eq!(
            disconnect_reason(close::BY_SERVICE, "Closed by the service"),
            (
                reason::ADMINISTRATIVE_ACTION,
                "Closed by the service".to_owned()
            )
        );
        assert_eq!(
            disconnect_reason(close::GOING_AWAY, "bye").0,
            reason::SERVER_SHUTTING_DOWN
        );
        assert_eq!(
            disconnect_reason(close::UNRECOVERABLE, "more than 1000 messages").0,
            reason::QUOTA_EXCEEDED
        );
    }

    fn connect(id: &str, version: Version, keep_alive: u16) -> Connect {
        Connect {
            version,
            client_id: id.into(),
            clean_start: true,
            keep_alive,
            username: None,
            password: None,
            will: None,
            receive_max: None,
            max_packet_size: None,
            session_expiry: None,
            user_properties: Vec::new(),
        }
    }

    #[test]
    fn connect_rules_are_azures() {
        assert!(check_connect(&connect("abc123", Version::V311, 60)).is_ok());
        assert!(
            check_connect(&connect("", Version::V5, 0)).is_ok(),
            "5.0 gets an id"
        );
        for bad in ["", "has-dash", "ünï", &"a".repeat(129)] {
            let refused = check_connect(&connect(bad, Version::V311, 60));
            assert_eq!(
                refused.map_err(|e| e.0),
                Err(ConnackCode::CLIENT_ID_INVALID),
                "{bad}"
            );
        }
        assert!(check_connect(&connect("a", Version::V311, 0)).is_err());
        assert!(check_connect(&connect("a", Version::V311, 181)).is_err());
        let mut with_will = connect("a", Version::V5, 60);
        with_will.will = Some(packet::Will {
            topic: "  ".into(),
            payload: Bytes::new(),
            content_type: None,
            qos: 0,
        });
        assert_eq!(
            check_connect(&with_will).map_err(|e| e.0),
            Err(ConnackCode::TOPIC_NAME_INVALID)
        );
        if let Some(will) = &mut with_will.will {
            will.topic = "t".into();
            will.payload = Bytes::from(vec![0; MAX_WILL_PAYLOAD_BYTES + 1]);
        }
        assert_eq!(
            check_connect(&with_will).map_err(|e| e.0),
            Err(ConnackCode::PACKET_TOO_LARGE)
        );
    }
}
