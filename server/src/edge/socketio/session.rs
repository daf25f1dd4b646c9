//! One Engine.IO session: its namespace sockets, what the client's packets do, the upstream
//! events of each socket, the heartbeat, and the end.
//!
//! Packets arrive from either transport (a WebSocket's reader, or a long-polling `POST`)
//! and are handled here, in order: a transport awaits each packet, so one client's events
//! reach the backend in the order it sent them. Everything the server sends goes through
//! the connection's outbox, which the current transport drains.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::SocketIoEdge;
use crate::limits::{LimitKind, RateLimiter};
use crate::message::{Data, Frame, Message, close};
use crate::protocol::socketio::{self as packets, EioPacket, EioType, SioPacket, SioType};
use crate::router::{Close, Connection, HubKey};
use crate::telemetry::Protocol;
use crate::upstream::event::ConnectBody;
use crate::upstream::{Session, SocketIoSocket, UserEventOutcome};

/// Which transport carries the session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    /// HTTP long-polling.
    Polling,
    /// A WebSocket has probed; the client is pausing its polling.
    Upgrading,
    /// WebSocket (from the start, or upgraded).
    WebSocket,
}

/// A namespace the client connected to.
#[derive(Debug)]
struct NamespaceSocket {
    socket_id: String,
    /// Its upstream side: every event of the socket is numbered and raised from it.
    session: Arc<Session>,
}

/// A binary packet waiting for its attachments.
#[derive(Debug)]
struct Pending {
    /// The Socket.IO packet (without the Engine.IO `4`).
    packet: String,
    expected: usize,
    attachments: Vec<Bytes>,
}

/// Why a session must end at once (the client broke the protocol or a limit).
#[derive(Debug)]
pub(super) struct Fatal(pub(super) String);

/// One Engine.IO session (one connection).
#[derive(Debug)]
pub(crate) struct EioSession {
    pub(super) conn: Arc<Connection>,
    epoch: u64,
    /// The `connect` event body of every namespace: the handshake's claims, query, headers.
    connect_body: ConnectBody,
    sockets: Mutex<HashMap<String, NamespaceSocket>>,
    pending: Mutex<Option<Pending>>,
    last_seen: Mutex<Instant>,
    rate: Mutex<RateLimiter>,
    transport: Mutex<Transport>,
    /// Wakes a pending poll when an upgrade starts (it answers a no-op so the client can
    /// finish the upgrade).
    pub(super) upgrading: Notify,
    /// One `GET` at a time; one `POST` at a time (Engine.IO closes a session that overlaps).
    pub(super) poll_gate: tokio::sync::Mutex<()>,
    pub(super) post_gate: tokio::sync::Mutex<()>,
    /// Set when the client side is over (its close, a lost WebSocket, a protocol error);
    /// the lifecycle task then ends the session with `end_reason`.
    ended: CancellationToken,
    end_reason: Mutex<Option<String>>,
    /// Default mode (spec part 2 §2.4): the connection's upstream side. Every packet the
    /// client sends goes to the backend's Socket.IO server as is, which answers over REST;
    /// the edge keeps only the heartbeat and the namespace groups.
    default_mode: Option<Arc<Session>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EioSession {
    pub(super) fn new(
        sio: &SocketIoEdge,
        conn: Arc<Connection>,
        connect_body: ConnectBody,
        websocket: bool,
        default_mode: Option<Arc<Session>>,
    ) -> Arc<Self> {
        let limits = sio.edge.config.hub_limits(conn.hub());
        Arc::new(Self {
            epoch: conn.outbox().epoch(),
            conn,
            connect_body,
            sockets: Mutex::new(HashMap::new()),
            pending: Mutex::new(None),
            last_seen: Mutex::new(Instant::now()),
            rate: Mutex::new(RateLimiter::new(&limits)),
            transport: Mutex::new(if websocket {
                Transport::WebSocket
            } else {
                Transport::Polling
            }),
            upgrading: Notify::new(),
            poll_gate: tokio::sync::Mutex::new(()),
            post_gate: tokio::sync::Mutex::new(()),
            ended: CancellationToken::new(),
            end_reason: Mutex::new(None),
            default_mode,
        })
    }

    /// The Engine.IO `sid`: the connection id.
    pub(super) fn sid(&self) -> Arc<str> {
        self.conn.id().shared()
    }

    pub(super) fn hub(&self) -> &HubKey {
        self.conn.hub()
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(super) fn transport(&self) -> Transport {
        *lock(&self.transport)
    }

    pub(super) fn set_transport(&self, transport: Transport) {
        *lock(&self.transport) = transport;
        if transport == Transport::Upgrading {
            self.upgrading.notify_waiters();
        }
    }

    /// Ends the session from the client side (the first reason wins).
    pub(super) fn end(&self, reason: impl Into<String>) {
        let mut r = lock(&self.end_reason);
        if r.is_none() {
            *r = Some(reason.into());
        }
        drop(r);
        self.ended.cancel();
    }

    /// The transport has written the server's close: the session can end now.
    pub(super) fn close_written(&self) {
        self.ended.cancel();
    }

    pub(super) fn is_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    fn queue(&self, payload: String) {
        self.conn.send_frame(Frame::Text(payload.into()));
    }

    /// Handles one packet from the client, in order.
    ///
    /// # Errors
    /// [`Fatal`] when the session must end: a packet the protocol does not allow, a limit.
    pub(super) async fn on_packet(
        &self,
        sio: &SocketIoEdge,
        packet: EioPacket<'_>,
    ) -> Result<(), Fatal> {
        let now = Instant::now();
        *lock(&self.last_seen) = now;
        let (len, binary) = match &packet {
            EioPacket::Text(_, data) => (data.len() + 1, false),
            EioPacket::Binary(b) => (b.len(), true),
        };
        let metrics = sio.edge.node.hub_metrics(self.hub());
        metrics.received(Protocol::SocketIo, binary, len);
        if let Err(kind) = lock(&self.rate).take(len, now) {
            sio.edge.limits.hit(kind);
            return Err(Fatal(format!(
                "The connection exceeded its limit of {} (limits.{}).",
                match kind {
                    LimitKind::ByteRate => "bytes per second",
                    _ => "messages per second",
                },
                kind.name()
            )));
        }
        if let Some(upstream) = &self.default_mode {
            return self.forward(sio, upstream, packet).await;
        }
        match packet {
            EioPacket::Binary(bytes) => self.on_attachment(sio, bytes).await,
            EioPacket::Text(kind, data) => {
                if lock(&self.pending).is_some() && kind == EioType::Message {
                    return Err(Fatal(
                        "A packet arrived while binary attachments were expected.".into(),
                    ));
                }
                match kind {
                    EioType::Pong | EioType::Noop => Ok(()),
                    EioType::Close => {
                        self.end("");
                        Ok(())
                    }
                    EioType::Message => {
                        let packet = packets::parse_sio(data)
                            .map_err(|e| Fatal(format!("Invalid Socket.IO packet: {e}.")))?;
                        self.on_sio(sio, packet).await
                    }
                    // `2probe` and `5` belong to an upgrade, on its own WebSocket.
                    EioType::Open | EioType::Ping | EioType::Upgrade => Err(Fatal(format!(
                        "Unexpected Engine.IO packet type {kind:?} from the client."
                    ))),
                }
            }
        }
    }

    /// Default mode: a packet goes to the backend as an Engine.IO payload (`4…`, or `b` +
    /// base64 for binary), one user event each, in order. A namespace connect or disconnect
    /// also joins or leaves the namespace's group, as Azure does (broadcasts address it).
    async fn forward(
        &self,
        sio: &SocketIoEdge,
        upstream: &Arc<Session>,
        packet: EioPacket<'_>,
    ) -> Result<(), Fatal> {
        let payload = match packet {
            EioPacket::Binary(bytes) => packets::binary_payload(&bytes),
            EioPacket::Text(kind, data) => match kind {
                EioType::Pong | EioType::Noop => return Ok(()),
                EioType::Close => {
                    self.end("");
                    return Ok(());
                }
                EioType::Message => {
                    let sio_packet = packets::parse_sio(data)
                        .map_err(|e| Fatal(format!("Invalid Socket.IO packet: {e}.")))?;
                    match sio_packet.kind {
                        // The answer to a service-numbered `:invoke` packet goes to the
                        // call that waits for it, not to the backend's server.
                        SioType::Ack
                            if sio_packet.ack_id.is_some_and(|id| {
                                sio.edge.upstream.tunnels().invokes().answer(
                                    id,
                                    self.conn.id().as_str(),
                                    format!("4{data}"),
                                )
                            }) =>
                        {
                            return Ok(());
                        }
                        SioType::Connect => {
                            let _ = sio.edge.node.join_group_from_client(
                                &self.conn,
                                &packets::namespace_group(sio_packet.namespace),
                            );
                        }
                        SioType::Disconnect => {
                            let prefix = packets::namespace_group(sio_packet.namespace);
                            for group in self.conn.groups() {
                                if group.starts_with(&prefix) {
                                    sio.edge.node.leave_group_from_client(&self.conn, &group);
                                }
                            }
                        }
                        _ => {}
                    }
                    format!("4{data}")
                }
                EioType::Open | EioType::Ping | EioType::Upgrade => {
                    return Err(Fatal(format!(
                        "Unexpected Engine.IO packet type {kind:?} from the client."
                    )));
                }
            },
        };
        if let UserEventOutcome::Failed(_) = sio
            .edge
            .upstream
            .user_event(upstream, "message", Some(Data::Text(payload.into())), None)
            .await
        {
            tracing::debug!("the Socket.IO server did not take a packet");
        }
        Ok(())
    }

    async fn on_attachment(&self, sio: &SocketIoEdge, bytes: Bytes) -> Result<(), Fatal> {
        let complete = {
            let mut pending = lock(&self.pending);
            let Some(p) = pending.as_mut() else {
                return Err(Fatal(
                    "A binary packet arrived that no Socket.IO packet announced.".into(),
                ));
            };
            p.attachments.push(bytes);
            if p.attachments.len() == p.expected {
                pending.take()
            } else {
                None
            }
        };
        if let Some(p) = complete {
            let packet = packets::parse_sio(&p.packet).expect("parsed when it arrived");
            self.dispatch(sio, packet, &p.attachments).await;
        }
        Ok(())
    }

    async fn on_sio(&self, sio: &SocketIoEdge, packet: SioPacket<'_>) -> Result<(), Fatal> {
        match packet.kind {
            SioType::Connect => {
                self.connect_namespace(sio, packet.namespace).await;
                Ok(())
            }
            SioType::Disconnect => {
                self.leave_namespace(sio, packet.namespace, "").await;
                Ok(())
            }
            SioType::ConnectError => Err(Fatal(
                "A connect_error packet only goes from the server to the client.".into(),
            )),
            SioType::BinaryEvent | SioType::BinaryAck if packet.attachments > 0 => {
                *lock(&self.pending) = Some(Pending {
                    packet: format!("{}", RawPacket(&packet)),
                    expected: packet.attachments,
                    attachments: Vec::new(),
                });
                Ok(())
            }
            _ => {
                self.dispatch(sio, packet, &[]).await;
                Ok(())
            }
        }
    }

    /// A complete event (or ack) of a connected namespace.
    async fn dispatch(&self, sio: &SocketIoEdge, packet: SioPacket<'_>, attachments: &[Bytes]) {
        let session = {
            let sockets = lock(&self.sockets);
            match sockets.get(packet.namespace) {
                Some(socket) => socket.session.clone(),
                None => {
                    // As socket.io does: packets of a namespace the client is not in are
                    // ignored; the connection and its other namespaces go on.
                    tracing::debug!(
                        namespace = packet.namespace,
                        "packet for a namespace not connected: ignored"
                    );
                    return;
                }
            }
        };
        let Some(event) = packet.event.as_deref() else {
            // Acks answer events a backend sent with an ack id; serverless mode has nowhere
            // to take them (Azure documents none).
            tracing::debug!("client ack ignored (serverless mode)");
            return;
        };
        let max = sio.edge.config.hub_limits(self.hub()).max_event_name_chars;
        if event.chars().count() > max {
            sio.edge.limits.hit(LimitKind::EventNameLength);
            tracing::debug!("event name longer than limits.max_event_name_chars: dropped");
            return;
        }
        let payload = packets::event_payload(&format!("{}", RawPacket(&packet)), attachments);
        let outcome = sio
            .edge
            .upstream
            .user_event(&session, event, Some(Data::Text(payload.into())), None)
            .await;
        match outcome {
            UserEventOutcome::Replied(Some(data), _) => {
                // The answer goes back as is; the codec drops what is not an Engine.IO
                // payload the client could parse.
                sio.edge
                    .node
                    .send_to_client(&self.conn, &Message::from_server(data));
            }
            UserEventOutcome::Replied(None, _) | UserEventOutcome::NoHandler => {}
            UserEventOutcome::Failed(_) => {
                tracing::debug!(event, "the event handler failed; nothing sent back");
            }
        }
    }

    /// A namespace connect: the `connect` event decides; accepted sockets join their
    /// namespace's group and their own room's.
    async fn connect_namespace(&self, sio: &SocketIoEdge, namespace: &str) {
        if let Some(socket) = lock(&self.sockets).get(namespace) {
            self.queue(packets::connect_ok(namespace, &socket.socket_id));
            return;
        }
        let max = sio.edge.config.socketio.max_namespaces_per_connection;
        if lock(&self.sockets).len() >= max {
            sio.edge.limits.hit(LimitKind::GroupsPerConnection);
            self.queue(packets::connect_error(
                namespace,
                &format!(
                    "The connection has connected to its limit of {max} namespaces (socketio.max_namespaces_per_connection)."
                ),
            ));
            return;
        }
        let socket_id = packets::new_socket_id();
        let mut event = Session::connect_event(
            self.conn.hub().shared(),
            self.conn.id().clone(),
            self.conn.user_id().map(|u| &**u),
            None,
            self.connect_body.clone(),
        );
        event.socketio = Some(Arc::new(SocketIoSocket {
            namespace: namespace.to_owned(),
            socket_id: socket_id.clone(),
        }));
        let session = match sio.edge.upstream.connect(event).await {
            Ok((_, session)) => Arc::new(session),
            Err(refusal) => {
                tracing::debug!(
                    namespace,
                    status = refusal.status,
                    "namespace connect refused"
                );
                self.queue(packets::connect_error(namespace, &refusal.message));
                return;
            }
        };
        if self.is_ended() || self.conn.outbox().is_closing() {
            sio.edge
                .upstream
                .disconnected(&session, Some("The connection ended during the connect."))
                .await;
            return;
        }
        sio.edge
            .node
            .join_group_from_client(&self.conn, &packets::namespace_group(namespace));
        sio.edge
            .node
            .join_group_from_client(&self.conn, &packets::room_group(namespace, &socket_id));
        lock(&self.sockets).insert(
            namespace.to_owned(),
            NamespaceSocket {
                socket_id: socket_id.clone(),
                session: session.clone(),
            },
        );
        self.queue(packets::connect_ok(namespace, &socket_id));
        sio.edge.upstream.connected(&session);
    }

    /// A namespace disconnect: the socket leaves every group of its namespace (its rooms)
    /// and the backend gets its `disconnected`.
    async fn leave_namespace(&self, sio: &SocketIoEdge, namespace: &str, reason: &str) {
        let Some(socket) = lock(&self.sockets).remove(namespace) else {
            return;
        };
        let prefix = packets::namespace_group(namespace);
        for group in self.conn.groups() {
            if group.starts_with(&prefix) {
                sio.edge.node.leave_group_from_client(&self.conn, &group);
            }
        }
        sio.edge
            .upstream
            .disconnected(&socket.session, Some(reason))
            .await;
    }

    /// Ends the session: every socket's `disconnected`, and the connection leaves the router.
    async fn finish(&self, sio: &SocketIoEdge, reason: &str, label: &'static str) {
        sio.edge
            .node
            .metrics()
            .registry()
            .disconnects
            .with(&[self.conn.hub(), label])
            .inc();
        sio.sessions.remove(self.conn.id().as_str());
        sio.edge.node.unregister_client(&self.conn);
        if let Some(upstream) = &self.default_mode {
            sio.edge.upstream.disconnected(upstream, Some(reason)).await;
        }
        let sockets: Vec<_> = lock(&self.sockets).drain().map(|(_, s)| s).collect();
        for socket in sockets {
            sio.edge
                .upstream
                .disconnected(&socket.session, Some(reason))
                .await;
        }
        tracing::debug!(reason, "disconnected");
    }
}

/// A parsed packet written back as the client sent it (without the Engine.IO `4`).
struct RawPacket<'a, 'p>(&'a SioPacket<'p>);

impl std::fmt::Display for RawPacket<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.0;
        let kind = match p.kind {
            SioType::Connect => '0',
            SioType::Disconnect => '1',
            SioType::Event => '2',
            SioType::Ack => '3',
            SioType::ConnectError => '4',
            SioType::BinaryEvent => '5',
            SioType::BinaryAck => '6',
        };
        write!(f, "{kind}")?;
        if p.kind.is_binary() {
            write!(f, "{}-", p.attachments)?;
        }
        if p.namespace != "/" {
            write!(f, "{},", p.namespace)?;
        }
        if let Some(id) = p.ack_id {
            write!(f, "{id}")?;
        }
        f.write_str(p.data)
    }
}

/// How long the transport may take to write a server close before the session is ended.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Runs a session's heartbeat until it ends, then ends it: the ping every `ping_interval`
/// (queued like any packet, so it answers a pending poll too), the close of a client that
/// answers nothing for `ping_interval + ping_timeout`, and the end after a client close,
/// a server close or shutdown.
pub(super) fn spawn_lifecycle(sio: &Arc<SocketIoEdge>, session: Arc<EioSession>) {
    let sio_task = sio.clone();
    let span = tracing::info_span!(
        "connection",
        protocol = "socketio",
        hub = session.conn.hub().as_str(),
        connection.id = %session.conn.id(),
        user = session.conn.user_id().map(|u| &**u).unwrap_or(""),
    );
    let task = async move {
        let sio = sio_task;
        let config = &sio.edge.config.socketio;
        let interval = config.ping_interval;
        let deadline = interval + config.ping_timeout;
        let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (reason, label): (String, &'static str) = loop {
            tokio::select! {
                biased;
                () = sio.edge.kill.cancelled() => break ("The server is shutting down.".into(), "shutdown"),
                _ = ticks.tick() => {
                    if lock(&session.last_seen).elapsed() > deadline {
                        sio.edge.limits.hit(LimitKind::IdleTimeout);
                        session.conn.close(Close::Server {
                            code: close::GOING_AWAY,
                            reason: "ping timeout".into(),
                            discard_queued: true,
                        });
                        break ("ping timeout".into(), "ping_timeout");
                    }
                    session.queue("2".into());
                }
                () = session.conn.outbox().closed() => {
                    // The transport writes the close (a poll's answer, a WebSocket close).
                    let _ = tokio::time::timeout(CLOSE_GRACE, session.ended.cancelled()).await;
                    let reason = match session.conn.outbox().current_close() {
                        Some(Close::Server { reason, .. }) => reason,
                        _ => String::new(),
                    };
                    let label = if sio.edge.draining.is_cancelled() { "shutdown" } else { "server" };
                    break (reason, label);
                }
                () = session.ended.cancelled() => {
                    let reason = lock(&session.end_reason).clone().unwrap_or_default();
                    let label = if reason.is_empty() { "client" } else { "protocol_error" };
                    session.conn.close(Close::Peer);
                    break (reason, label);
                }
            }
        };
        session.ended.cancel();
        session.finish(&sio, &reason, label).await;
    };
    sio.edge.tracker.spawn(task.instrument(span));
}
