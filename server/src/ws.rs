//! The client WebSocket edge: `/client/hubs/{hub}` and `/client/?hub={hub}`.
//!
//! warp routes the upgrade request; everything that can refuse a client (hub name, token,
//! upgrade headers) is decided before the `101`, so a refused client gets a plain HTTP status
//! with a reason. The socket itself is driven by tokio-tungstenite with buffer sizes chosen
//! here, and each connection runs one task: a reader that parses client frames and calls the
//! router, and a writer that drains the connection's outbox with one flush per batch.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use warp::http::{HeaderMap, Response, StatusCode, header};
use warp::{Filter, Rejection};

use crate::auth::{self, ClientClaims, KeyRing};
use crate::config::Config;
use crate::protocol::json::{self, AckError, ClientMessage, ParseError};
use crate::protocol::{self, AckIds};
use crate::router::{
    self, Close, ConnectSpec, Connection, ConnectionId, Data, Frame, Message, Permission,
    Permissions, Router, WireFormat,
};
use crate::server::ClientAddr;

/// Close codes the edge uses (RFC 6455 §7.4.1).
mod code {
    pub(super) const GOING_AWAY: u16 = 1001;
    pub(super) const UNSUPPORTED_DATA: u16 = 1003;
    pub(super) const INVALID_PAYLOAD: u16 = 1007;
    pub(super) const TOO_BIG: u16 = 1009;
    pub(super) const INTERNAL_ERROR: u16 = 1011;
}

/// The `disconnected` message and close reason at shutdown.
const SHUTDOWN_REASON: &str = "The server is shutting down.";

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Read buffer per connection. tungstenite's default (128 KiB) would be kept by every idle
/// connection; frames larger than this still work, the buffer grows while reading them.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// What the edge shares with every connection task.
#[derive(Debug)]
pub(crate) struct Edge {
    pub(crate) router: Router,
    pub(crate) config: Arc<Config>,
    pub(crate) keys: KeyRing,
    pub(crate) endpoint: String,
    /// Every connection task, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// Set when shutdown starts: new upgrades are refused with 503.
    pub(crate) draining: CancellationToken,
    /// Set when the shutdown grace period is over: remaining sockets are dropped.
    pub(crate) kill: CancellationToken,
}

/// The warp filter for the client endpoint.
pub(crate) fn routes(
    edge: Arc<Edge>,
) -> impl Filter<Extract = (Response<warp::hyper::body::Bytes>,), Error = Rejection> + Clone {
    let hub_from_path = warp::path("hubs")
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .map(Some);
    let hub_from_query = warp::path::end().map(|| None);
    warp::get()
        .and(warp::path("client"))
        .and(hub_from_path.or(hub_from_query).unify())
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ext::optional::<ClientAddr>())
        .map(
            move |hub: Option<String>,
                  query: Vec<(String, String)>,
                  headers: HeaderMap,
                  upgrade: Option<OnUpgrade>,
                  remote: Option<ClientAddr>| {
                let request = UpgradeRequest {
                    hub,
                    query,
                    headers,
                    upgrade,
                    remote: remote.map(|ClientAddr(a)| a),
                };
                handshake(&edge, request).unwrap_or_else(|refusal| refusal.into_response())
            },
        )
}

/// The parts of an upgrade request the handshake looks at.
struct UpgradeRequest {
    hub: Option<String>,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    upgrade: Option<OnUpgrade>,
    remote: Option<std::net::SocketAddr>,
}

impl UpgradeRequest {
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The access token: the `access_token` query parameter wins over the
    /// `Authorization: Bearer` header (as in Azure).
    fn token(&self) -> Option<&str> {
        self.query("access_token").or_else(|| {
            self.header(header::AUTHORIZATION).and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .map(str::trim)
            })
        })
    }
}

/// An HTTP refusal of an upgrade: a status and a plain-text reason.
struct Refusal(StatusCode, String);

impl Refusal {
    fn into_response(self) -> Response<warp::hyper::body::Bytes> {
        let mut response = Response::new(warp::hyper::body::Bytes::from(self.1 + "\n"));
        *response.status_mut() = self.0;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// Decides on an upgrade request and, if accepted, spawns the connection task.
fn handshake(
    edge: &Arc<Edge>,
    request: UpgradeRequest,
) -> Result<Response<warp::hyper::body::Bytes>, Refusal> {
    // warp hands path segments over still percent-encoded; the query is already decoded.
    let from_path = match &request.hub {
        Some(raw) => Some(auth::percent_decode(raw).ok_or_else(|| {
            Refusal(
                StatusCode::BAD_REQUEST,
                "hub name is not valid UTF-8".into(),
            )
        })?),
        None => None,
    };
    let hub_name = from_path
        .or_else(|| request.query("hub").map(str::to_owned))
        .ok_or_else(|| {
            Refusal(
                StatusCode::BAD_REQUEST,
                "missing hub: connect to /client/hubs/{hub}".into(),
            )
        })?;
    let hub =
        router::hub_key(&hub_name).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?;

    let is_websocket = request
        .header(header::UPGRADE)
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = request.header(header::SEC_WEBSOCKET_KEY);
    let (true, Some(key), Some(upgrade)) = (is_websocket, key, request.upgrade.clone()) else {
        return Err(Refusal(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint only accepts WebSocket upgrade requests".into(),
        ));
    };
    if request.header(header::SEC_WEBSOCKET_VERSION) != Some("13") {
        return Err(Refusal(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version: 13 is required".into(),
        ));
    }

    let claims = authenticate(edge, &request, &hub_name)?;
    if edge.draining.is_cancelled() {
        return Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        ));
    }

    let subprotocol = protocol::negotiate(
        request
            .headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let mut response = Response::new(warp::hyper::body::Bytes::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        header::HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    if let Some((_, offered)) = subprotocol {
        // Echo the client's own spelling: RFC 6455 clients compare it byte for byte.
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            header::HeaderValue::from_str(offered).expect("taken from a valid header value"),
        );
    }
    let subprotocol = subprotocol.map(|(canonical, _)| canonical);

    let id = ConnectionId::generate();
    let span = tracing::info_span!(
        "connection",
        hub = %hub,
        connection.id = %id,
        user = claims.user_id.as_deref().unwrap_or(""),
        client.addr = ?request.remote,
    );
    let edge_task = edge.clone();
    let remote = request.remote;
    edge.tracker.spawn(
        async move {
            let io = match upgrade.await {
                Ok(io) => TokioIo::new(io),
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let ws_config = WebSocketConfig::default()
                .read_buffer_size(READ_BUFFER_BYTES)
                .max_message_size(Some(edge_task.config.client.max_message_bytes))
                .max_frame_size(Some(edge_task.config.client.max_message_bytes));
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
            let conn = connect(&edge_task, id, hub, subprotocol, claims, remote);
            tracing::debug!(subprotocol = subprotocol.unwrap_or("none"), "connected");
            // Shutdown may have started during the upgrade, after its sweep of the router.
            if edge_task.draining.is_cancelled() {
                server_close(&conn, code::GOING_AWAY, SHUTDOWN_REASON);
            }
            run(&edge_task, &conn, ws).await;
            edge_task.router.disconnect(&conn);
            tracing::debug!("disconnected");
        }
        .instrument(span),
    );
    Ok(response)
}

/// Verifies the access token, or admits an anonymous client where the hub allows it.
fn authenticate(edge: &Edge, request: &UpgradeRequest, hub: &str) -> Result<ClientClaims, Refusal> {
    match request.token() {
        Some(token) => auth::verify_client_token(token, &edge.keys, &edge.endpoint, hub)
            .map_err(|e| Refusal(StatusCode::UNAUTHORIZED, e.to_string())),
        None if edge.config.hub(hub).anonymous_connect => Ok(ClientClaims::default()),
        None => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "missing access token: pass ?access_token=<jwt> or an Authorization: Bearer header"
                .into(),
        )),
    }
}

/// Registers the connection with the router; protocol clients get `connected` first.
fn connect(
    edge: &Edge,
    id: ConnectionId,
    hub: Arc<str>,
    subprotocol: Option<&'static str>,
    claims: ClientClaims,
    remote_addr: Option<std::net::SocketAddr>,
) -> Arc<Connection> {
    let (permissions, rejected) = Permissions::from_roles(&claims.roles);
    if !rejected.is_empty() {
        tracing::warn!(roles = ?rejected, "ignoring unknown or invalid roles in the access token");
    }
    let format = protocol::wire_format(subprotocol);
    let greeting = (format == WireFormat::Json).then(|| {
        Frame::Text(json::encode_connected(
            claims.user_id.as_deref(),
            id.as_str(),
        ))
    });
    edge.router.connect(ConnectSpec {
        id,
        hub,
        user_id: claims.user_id.map(Into::into),
        format,
        subprotocol,
        permissions,
        groups: claims.groups,
        greeting,
        remote_addr,
    })
}

/// Runs a connection until it closes: reader and writer side by side; whichever ends first
/// gives the other [`CLOSE_TIMEOUT`] to finish the closing handshake.
async fn run<S>(edge: &Edge, conn: &Arc<Connection>, ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (sink, stream) = ws.split();
    let reader = read_loop(edge, conn, stream);
    let writer = write_loop(conn, sink, edge.config.client.keepalive_interval);
    tokio::pin!(reader, writer);
    tokio::select! {
        () = &mut reader => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut writer).await;
        }
        () = &mut writer => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut reader).await;
        }
        () = edge.kill.cancelled() => {}
    }
}

/// Reads client frames until the client closes or the socket fails. Once the server has
/// started closing, further data frames are ignored while waiting for the client's close.
async fn read_loop<R>(edge: &Edge, conn: &Arc<Connection>, mut stream: R)
where
    R: Stream<Item = Result<WsMessage, WsError>> + Unpin,
{
    let mut acks = AckIds::default();
    while let Some(frame) = stream.next().await {
        let closing = conn.outbox().is_closing();
        match frame {
            Ok(WsMessage::Text(text)) if !closing => match conn.format() {
                WireFormat::Json => on_json(edge, conn, &mut acks, &text),
                WireFormat::Simple => close_no_handler(conn),
            },
            Ok(WsMessage::Binary(_)) if !closing => match conn.format() {
                WireFormat::Json => server_close(
                    conn,
                    code::UNSUPPORTED_DATA,
                    "Binary frames are not supported by json.webpubsub.azure.v1.",
                ),
                WireFormat::Simple => close_no_handler(conn),
            },
            Ok(WsMessage::Close(_)) => break,
            Ok(_) => {}
            Err(WsError::Capacity(e)) => {
                tracing::debug!(error = %e, "client frame too large");
                server_close(
                    conn,
                    code::TOO_BIG,
                    &format!(
                        "The message exceeds the limit of {} bytes.",
                        edge.config.client.max_message_bytes
                    ),
                );
                // The rest of the oversized frame cannot be skipped; stop reading.
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "read failed");
                break;
            }
        }
    }
    conn.close(Close::Peer);
}

/// Starts a server-initiated close (a `disconnected` message, then the close frame).
fn server_close(conn: &Connection, code: u16, reason: &str) {
    conn.close(Close::Server {
        code,
        reason: reason.into(),
        discard_queued: false,
    });
}

/// A simple client's frame becomes an upstream `message` event; with no event handler to
/// take it, Azure closes the connection with 1011 (spec §2.4).
fn close_no_handler(conn: &Connection) {
    server_close(
        conn,
        code::INTERNAL_ERROR,
        "No event handler is configured for the 'message' event.",
    );
}

/// Handles one text frame from a JSON client.
fn on_json(edge: &Edge, conn: &Arc<Connection>, acks: &mut AckIds, text: &str) {
    let message = match json::parse(text) {
        Ok(m) => m,
        Err(ParseError::Malformed(why)) => {
            return server_close(
                conn,
                code::INVALID_PAYLOAD,
                &format!("Invalid message: {why}"),
            );
        }
        Err(ParseError::Invalid { ack_id, message }) => {
            if let Some(id) = ack_id {
                reply(
                    conn,
                    json::encode_ack(id, Some((AckError::BadRequest, &message))),
                );
            }
            return;
        }
    };
    let router = &edge.router;
    match message {
        ClientMessage::JoinGroup { group, ack_id } => acked(conn, acks, ack_id, || {
            check_group(conn, Permission::JoinLeaveGroup, &group, "join")?;
            router.join_group(conn, &group);
            Ok(())
        }),
        ClientMessage::LeaveGroup { group, ack_id } => acked(conn, acks, ack_id, || {
            check_group(conn, Permission::JoinLeaveGroup, &group, "leave")?;
            router.leave_group(conn, &group);
            Ok(())
        }),
        ClientMessage::SendToGroup {
            group,
            ack_id,
            no_echo,
            data,
        } => acked(conn, acks, ack_id, || {
            check_group(conn, Permission::SendToGroup, &group, "send to")?;
            send_to_group(router, conn, &group, no_echo, data);
            Ok(())
        }),
        ClientMessage::Event { ack_id, .. } => {
            // Upstream event handlers are not wired yet: the event is accepted and dropped,
            // so clients that await the ack keep working.
            acked(conn, acks, ack_id, || Ok(()));
        }
        ClientMessage::Ping => reply(conn, json::encode_pong()),
        // Only reliable subprotocols carry sequence ids; acks from others change nothing.
        ClientMessage::SequenceAck { .. } => {}
        ClientMessage::Unsupported { kind, ack_id } => {
            tracing::debug!(kind = %kind, "unsupported message type");
            if let Some(id) = ack_id {
                let why = format!("Unsupported message type '{kind}'.");
                reply(
                    conn,
                    json::encode_ack(id, Some((AckError::BadRequest, &why))),
                );
            }
        }
    }
}

fn send_to_group(router: &Router, conn: &Connection, group: &str, no_echo: bool, data: Data) {
    let message = Message::to_group(group, conn.user_id().cloned(), data);
    let me = [conn.id().as_str()];
    let excluded: &[&str] = if no_echo { &me } else { &[] };
    router.send_to_group(conn.hub(), group, &message, excluded);
}

/// Checks a group name and the connection's permission on it.
fn check_group(
    conn: &Connection,
    permission: Permission,
    group: &str,
    verb: &str,
) -> Result<(), (AckError, String)> {
    router::check_group_name(group).map_err(|e| (AckError::BadRequest, e.to_string()))?;
    if conn.allows(permission, group) {
        Ok(())
    } else {
        Err((
            AckError::Forbidden,
            format!("The connection has no permission to {verb} group '{group}'."),
        ))
    }
}

/// Runs an operation with Azure's ack semantics: a processed ack id is answered `Duplicate`
/// without running the operation again; only successes are remembered.
fn acked(
    conn: &Connection,
    acks: &mut AckIds,
    ack_id: Option<u64>,
    op: impl FnOnce() -> Result<(), (AckError, String)>,
) {
    let Some(id) = ack_id else {
        // Fire-and-forget: failures are silent, as in Azure.
        let _ = op();
        return;
    };
    if acks.is_duplicate(id) {
        let why = format!("Message with ack-id: {id} has been processed");
        return reply(
            conn,
            json::encode_ack(id, Some((AckError::Duplicate, &why))),
        );
    }
    match op() {
        Ok(()) => {
            acks.record(id);
            reply(conn, json::encode_ack(id, None));
        }
        Err((error, why)) => reply(conn, json::encode_ack(id, Some((error, &why)))),
    }
}

fn reply(conn: &Connection, text: router::message::Utf8Bytes) {
    conn.send_frame(Frame::Text(text));
}

/// Drains the outbox into the socket, one flush per batch, with keepalive pings in between.
async fn write_loop<W>(conn: &Connection, mut sink: W, keepalive: Duration)
where
    W: Sink<WsMessage, Error = WsError> + Unpin,
{
    let mut batch = Vec::new();
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let close = tokio::select! {
            close = conn.outbox().take(&mut batch) => close,
            _ = keepalive.tick() => {
                if sink.send(WsMessage::Ping(Default::default())).await.is_err() {
                    conn.close(Close::Peer);
                    return;
                }
                continue;
            }
        };
        if !batch.is_empty() {
            let write = async {
                for frame in batch.drain(..) {
                    sink.feed(into_ws(frame)).await?;
                }
                sink.flush().await
            };
            // A client that stopped reading blocks this write; when its outbox overflows
            // meanwhile, give up on it rather than wait.
            let written = tokio::select! {
                r = write => r.is_ok(),
                () = conn.outbox().abandoned() => false,
            };
            batch.clear();
            if !written {
                if conn.outbox().abandoned_now() {
                    final_close(conn, &mut sink).await;
                }
                conn.close(Close::Peer);
                return;
            }
        }
        if let Some(close) = close {
            if let Close::Server { .. } = close {
                final_close(conn, &mut sink).await;
            } else {
                // The peer closed: flush tungstenite's pending close reply.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.flush()).await;
            }
            return;
        }
    }
}

/// Sends `disconnected` (protocol clients) and the close frame of a server-initiated close,
/// giving up after [`CLOSE_TIMEOUT`] (a stalled client cannot be told).
async fn final_close<W>(conn: &Connection, sink: &mut W)
where
    W: Sink<WsMessage, Error = WsError> + Unpin,
{
    let Some(Close::Server { code, reason, .. }) = conn.outbox().current_close() else {
        return;
    };
    let send = async {
        if conn.format() == WireFormat::Json {
            sink.feed(WsMessage::Text(json::encode_disconnected(&reason)))
                .await?;
        }
        sink.send(WsMessage::Close(Some(CloseFrame {
            code: code.into(),
            reason: close_reason(&reason).into(),
        })))
        .await
    };
    if let Ok(Err(e)) = tokio::time::timeout(CLOSE_TIMEOUT, send).await {
        tracing::debug!(error = %e, "close not delivered");
    }
}

/// A close frame's reason is limited to 123 bytes; cut at a character boundary.
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

fn into_ws(frame: Frame) -> WsMessage {
    match frame {
        Frame::Text(t) => WsMessage::Text(t),
        Frame::Binary(b) => WsMessage::Binary(b),
    }
}

/// Sends the shutdown close to every connection.
pub(crate) fn close_all(router: &Router) {
    router.close_all(code::GOING_AWAY, SHUTDOWN_REASON);
}
