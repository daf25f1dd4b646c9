//! The Socket.IO edge: the stock `socket.io-client` at `/clients/socketio/hubs/{hub}/`, as
//! Azure's Web PubSub for Socket.IO serves it in serverless mode.
//!
//! Engine.IO v4 with both transports: HTTP long-polling (a `GET` waits for what is queued,
//! a `POST` carries what the client sends) and WebSocket, directly or upgraded from
//! long-polling. Heartbeats are answered here and never reach a backend.
//!
//! Azure's mapping: one Engine.IO connection is one connection (its id is the Engine.IO
//! `sid`); each namespace the client connects to is a socket with its own id, in the groups
//! `0~b64(ns)~` (the namespace) and `0~b64(ns)~b64(socket id)` (its own room), so REST and
//! gRPC sends of `text/plain` Engine.IO payloads to those groups, filters and group
//! operations reach Socket.IO sockets. Upstream events are raised per socket (`connect`,
//! `connected`, `disconnected`, and `azure.webpubsub.user.message` named by the Socket.IO
//! event), and a handler's answer to an event goes back to the client as is: that is how
//! acks to `emitWithAck` work.
//!
//! In a cluster, every node holds the Engine.IO sessions it created (the `sid` names the
//! node). A long-polling request that the balancer sends to another node is served there:
//! that node relays it to the owner over the backplane and writes the owner's answer
//! (`node/polling.rs` says how, and its bounds), so long-polling needs no session affinity.
//! So may the upgrade to WebSocket: the node that takes the WebSocket serves it by relaying
//! to the owner ([`remote_websocket`]).
//!
//! # Layout
//! - this file: routes, the handshake (token, limits, registration), the session table, and
//!   the relay of long-polling requests for sessions of other nodes;
//! - [`awaiting_auth`]: a session whose token comes in the `auth` payload of its first
//!   namespace connect;
//! - [`session`]: one Engine.IO session: its namespaces, packets, upstream events, heartbeat
//!   and end;
//! - [`polling`]: the long-polling `GET` and `POST`;
//! - [`websocket`]: the WebSocket transport and the upgrade from long-polling.

mod awaiting_auth;
mod polling;
mod remote_websocket;
mod session;
mod websocket;

use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::Stream;
use hyper::upgrade::OnUpgrade;
use tracing::Instrument as _;
use warp::http::{HeaderMap, Method, Response, StatusCode, header};
use warp::{Filter, Rejection};

use tokio::sync::{Semaphore, mpsc};

use super::ws::Edge;
use crate::limits::LimitKind;
use crate::message::{Frame, WireFormat};
use crate::node::{PollOwner, PollReply, PollRequest, RelayedPoll};
use crate::protocol::socketio as packets;
use crate::router::{ConnectSpec, ConnectionId, HubKey, Permissions};
use crate::sockets::ClientAddr;
use crate::telemetry::trace;
use crate::upstream;
use hubcast_auth::{self as auth, ClientClaims, ClientProtocol};

use awaiting_auth::AwaitingAuth;
use session::EioSession;

/// What the Socket.IO edge shares with every session.
#[derive(Debug)]
pub(crate) struct SocketIoEdge {
    /// The shared client edge state: service layer, upstream, config, tasks, shutdown.
    edge: Arc<Edge>,
    /// The Engine.IO sessions of this node, by `sid` (the connection id).
    sessions: DashMap<Arc<str>, Arc<EioSession>>,
    /// Sessions of this node waiting for the token of their `auth` payload, by `sid`.
    awaiting: DashMap<Arc<str>, Arc<AwaitingAuth>>,
}

impl SocketIoEdge {
    /// The edge; in a cluster it also serves the long-polling requests other nodes take
    /// for its sessions.
    pub(crate) fn new(edge: Arc<Edge>) -> Arc<Self> {
        let sio = Arc::new(Self {
            edge,
            sessions: DashMap::new(),
            awaiting: DashMap::new(),
        });
        if let Some(polls) = sio.edge.node.host_relayed_polls() {
            tokio::spawn(serve_relayed_polls(sio.clone(), polls));
        }
        sio
    }

    /// This node's session `sid` if it belongs to `hub`.
    fn session(&self, sid: &str, hub: &str) -> Option<Arc<EioSession>> {
        self.sessions
            .get(sid)
            .map(|s| s.clone())
            .filter(|s| s.hub().as_str() == hub)
    }

    /// This node's session `sid` waiting for its `auth` payload, if it belongs to `hub`.
    fn awaiting(&self, sid: &str, hub: &str) -> Option<Arc<AwaitingAuth>> {
        self.awaiting
            .get(sid)
            .map(|s| s.clone())
            .filter(|s| s.hub().as_str() == hub)
    }
}

/// Serves the long-polling requests other nodes relay here, at most
/// `socketio.max_relayed_polls` at once, until shutdown.
async fn serve_relayed_polls(sio: Arc<SocketIoEdge>, mut polls: mpsc::Receiver<RelayedPoll>) {
    let limit = Arc::new(Semaphore::new(sio.edge.config.socketio.max_relayed_polls));
    loop {
        let poll = tokio::select! {
            () = sio.edge.kill.cancelled() => return,
            poll = polls.recv() => match poll {
                Some(poll) => poll,
                None => return,
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(
                sid = %poll.sid,
                "refusing a relayed poll: socketio.max_relayed_polls are being served"
            );
            let _ = poll.answer.send(poll_reply(eio_error(
                StatusCode::SERVICE_UNAVAILABLE,
                code::BAD_REQUEST,
                "The node holding this session serves too many relayed polls \
                 (socketio.max_relayed_polls)",
            )));
            continue;
        };
        let sio = sio.clone();
        sio.edge.tracker.clone().spawn(async move {
            let reply = match sio.session(&poll.sid, &poll.hub) {
                None => match (sio.awaiting(&poll.sid, &poll.hub), poll.request) {
                    (None, _) => unknown_sid(),
                    (Some(awaiting), PollRequest::Get) => {
                        awaiting_auth::poll(&sio, &awaiting).await
                    }
                    (Some(awaiting), PollRequest::Post(body)) => {
                        awaiting_auth::post(&sio, &awaiting, &body).await
                    }
                    (Some(_), PollRequest::RefusedPost(why)) => {
                        sio.awaiting.remove(poll.sid.as_str());
                        eio_error(StatusCode::BAD_REQUEST, code::BAD_REQUEST, &why)
                    }
                    (Some(_), PollRequest::Probed | PollRequest::Switched) => eio_error(
                        StatusCode::BAD_REQUEST,
                        code::BAD_REQUEST,
                        "The session was not authenticated: no upgrade",
                    ),
                },
                Some(session) => match poll.request {
                    PollRequest::Get => polling::poll(&sio, &session).await,
                    PollRequest::Post(body) => polling::post_relayed(&sio, &session, &body).await,
                    PollRequest::RefusedPost(why) => {
                        session.end(why.clone());
                        eio_error(StatusCode::BAD_REQUEST, code::BAD_REQUEST, &why)
                    }
                    PollRequest::Probed => polling::probed_elsewhere(&sio, &session),
                    PollRequest::Switched => polling::switched_elsewhere(&session),
                },
            };
            let _ = poll.answer.send(poll_reply(reply));
            drop(permit);
        });
    }
}

/// An answer of this node as the relaying node writes it.
fn poll_reply(reply: Reply) -> PollReply {
    let content_type = reply
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain; charset=UTF-8")
        .to_owned();
    PollReply {
        status: reply.status().as_u16(),
        content_type,
        body: reply.into_body(),
    }
}

/// A long-polling request for a session this node does not hold: relayed to the node that
/// does, whose answer is written as is. A WebSocket upgrade is taken here and served by
/// relaying ([`remote_websocket`]).
async fn relay(
    sio: &Arc<SocketIoEdge>,
    request: &mut Request,
    hub: &HubKey,
    sid: &str,
    websocket: bool,
) -> Reply {
    let PollOwner::Remote(owner) = sio.edge.node.poll_owner(sid) else {
        return unknown_sid();
    };
    let poll = match (websocket, &request.method) {
        (true, &Method::GET) if request.is_websocket() => {
            return remote_websocket::upgrade(sio, request, hub, sid, owner);
        }
        (true, _) => {
            return eio_error(StatusCode::BAD_REQUEST, code::BAD_REQUEST, "Bad request");
        }
        (false, &Method::GET) => PollRequest::Get,
        (false, &Method::POST) => {
            let body = request.body.take().expect("the body is read once");
            match polling::read_post_body(sio, body).await {
                Ok(body) => PollRequest::Post(body),
                Err((status, why)) => {
                    // The owner ends the session, as for a body it read itself.
                    let refused = PollRequest::RefusedPost(why.to_owned());
                    let hold = std::time::Duration::ZERO;
                    if let Err(e) = sio
                        .edge
                        .node
                        .relay_poll(&owner, hub.as_str(), sid, refused, hold)
                        .await
                    {
                        tracing::debug!(error = %e, "could not end a session on its node");
                    }
                    return eio_error(status, code::BAD_REQUEST, why);
                }
            }
        }
        _ => return eio_error(StatusCode::BAD_REQUEST, code::BAD_REQUEST, "Bad request"),
    };
    tracing::debug!(%owner, sid, "relaying a long-polling request to the session's node");
    let hold = sio.edge.config.socketio.max_poll_duration;
    match sio
        .edge
        .node
        .relay_poll(&owner, hub.as_str(), sid, poll, hold)
        .await
    {
        Ok(Some(answer)) => {
            let mut response = Response::new(answer.body);
            *response.status_mut() =
                StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if let Ok(value) = header::HeaderValue::from_str(&answer.content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        }
        // The owner is gone, and its sessions with it.
        Ok(None) => unknown_sid(),
        Err(e) => eio_error(
            StatusCode::SERVICE_UNAVAILABLE,
            code::BAD_REQUEST,
            &format!("The node holding this session cannot be reached: {e}"),
        ),
    }
}

/// Engine.IO's "Session ID unknown", on which the stock client starts a new session.
fn unknown_sid() -> Reply {
    eio_error(
        StatusCode::BAD_REQUEST,
        code::UNKNOWN_SID,
        "Session ID unknown",
    )
}

/// The parts of a request the edge looks at.
struct Request {
    hub: String,
    method: Method,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    upgrade: Option<OnUpgrade>,
    remote: Option<std::net::SocketAddr>,
    body: Option<BodyStream>,
}

type BodyStream = std::pin::Pin<
    Box<dyn Stream<Item = Result<warp::hyper::body::Bytes, warp::Error>> + Send + 'static>,
>;

/// The request body as a stream of `Bytes`.
fn boxed_body<S, B>(body: S) -> BodyStream
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: bytes::Buf,
{
    use futures_util::StreamExt as _;
    Box::pin(body.map(|chunk| chunk.map(|mut buf| buf.copy_to_bytes(buf.remaining()))))
}

impl Request {
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The access token: `access_token` in the query, else an `Authorization: Bearer` header.
    fn token(&self) -> Option<&str> {
        self.query("access_token").or_else(|| {
            self.header(header::AUTHORIZATION)
                .and_then(super::bearer_token)
        })
    }

    fn is_websocket(&self) -> bool {
        self.header(header::UPGRADE)
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    }
}

/// An HTTP answer of the edge.
pub(super) type Reply = Response<warp::hyper::body::Bytes>;

/// A plain-text answer.
fn text(status: StatusCode, body: impl Into<String>) -> Reply {
    let mut response = Response::new(warp::hyper::body::Bytes::from(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    response
}

/// Engine.IO's error answer: `{"code":n,"message":"..."}` with a `400` (`403` for a refused
/// token), which the stock client reports as a `connect_error`.
fn eio_error(status: StatusCode, code: u8, message: &str) -> Reply {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    let mut response = Response::new(warp::hyper::body::Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Engine.IO error codes (engine.io `Server.errors`).
mod code {
    pub(super) const UNKNOWN_TRANSPORT: u8 = 0;
    pub(super) const UNKNOWN_SID: u8 = 1;
    pub(super) const BAD_HANDSHAKE_METHOD: u8 = 2;
    pub(super) const BAD_REQUEST: u8 = 3;
    pub(super) const FORBIDDEN: u8 = 4;
    pub(super) const UNSUPPORTED_PROTOCOL_VERSION: u8 = 5;
}

/// The warp filter for `/clients/socketio/hubs/{hub}` (with or without the trailing `/` the
/// stock client adds).
pub(crate) fn routes(
    sio: Arc<SocketIoEdge>,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    warp::path("clients")
        .and(warp::path("socketio"))
        .and(warp::path("hubs"))
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::method())
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ext::optional::<ClientAddr>())
        .and(warp::body::stream())
        .then(
            move |hub: String,
                  method: Method,
                  query: Vec<(String, String)>,
                  headers: HeaderMap,
                  upgrade: Option<OnUpgrade>,
                  remote: Option<ClientAddr>,
                  body| {
                let sio = sio.clone();
                let request = Request {
                    hub,
                    method,
                    query,
                    headers,
                    upgrade,
                    remote: remote.map(|ClientAddr(a)| a),
                    body: Some(boxed_body(body)),
                };
                let span = tracing::info_span!(
                    "socketio request",
                    otel.kind = "server",
                    protocol = "socketio",
                    http.response.status_code = tracing::field::Empty,
                );
                trace::set_parent(&span, trace::extract_http(&request.headers));
                async move {
                    let response = handle(&sio, request).instrument(span.clone()).await;
                    span.record("http.response.status_code", response.status().as_u16());
                    response
                }
            },
        )
}

/// Dispatches one request: a handshake, a poll, a post, or a WebSocket (new or upgrade).
async fn handle(sio: &Arc<SocketIoEdge>, mut request: Request) -> Reply {
    let Some(hub_name) = auth::percent_decode(&request.hub) else {
        return text(StatusCode::BAD_REQUEST, "hub name is not valid UTF-8\n");
    };
    let hub = match HubKey::new(&hub_name) {
        Ok(hub) => hub,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    if request.query("EIO") != Some("4") {
        return eio_error(
            StatusCode::BAD_REQUEST,
            code::UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version: only Engine.IO v4 (Socket.IO v3 and later)",
        );
    }
    let transport = request.query("transport").unwrap_or_default().to_owned();
    let websocket = match transport.as_str() {
        "polling" => false,
        "websocket" => true,
        _ => {
            return eio_error(
                StatusCode::BAD_REQUEST,
                code::UNKNOWN_TRANSPORT,
                "Transport unknown: use polling or websocket",
            );
        }
    };
    if let Some(sid) = request.query("sid").map(str::to_owned) {
        let Some(session) = sio.session(&sid, hub.as_str()) else {
            if let Some(awaiting) = sio.awaiting(&sid, hub.as_str()) {
                return match (websocket, request.method.clone()) {
                    (true, Method::GET) if request.is_websocket() => {
                        awaiting_auth::upgrade(sio, &awaiting, &mut request).await
                    }
                    (false, Method::GET) => awaiting_auth::poll(sio, &awaiting).await,
                    (false, Method::POST) => {
                        let body = request.body.take().expect("the body is read once");
                        match polling::read_post_body(sio, body).await {
                            Ok(body) => awaiting_auth::post(sio, &awaiting, &body).await,
                            Err((status, why)) => {
                                sio.awaiting.remove(sid.as_str());
                                eio_error(status, code::BAD_REQUEST, why)
                            }
                        }
                    }
                    _ => eio_error(StatusCode::BAD_REQUEST, code::BAD_REQUEST, "Bad request"),
                };
            }
            return relay(sio, &mut request, &hub, &sid, websocket).await;
        };
        return match (websocket, request.method.clone()) {
            (true, Method::GET) if request.is_websocket() => {
                websocket::upgrade(sio, session, &mut request)
            }
            (false, Method::GET) => polling::poll(sio, &session).await,
            (false, Method::POST) => {
                let body = request.body.take().expect("the body is read once");
                polling::post(sio, &session, body).await
            }
            _ => eio_error(StatusCode::BAD_REQUEST, code::BAD_REQUEST, "Bad request"),
        };
    }
    if request.method != Method::GET {
        return eio_error(
            StatusCode::BAD_REQUEST,
            code::BAD_HANDSHAKE_METHOD,
            "Bad handshake method: a new session starts with a GET",
        );
    }
    if websocket && !request.is_websocket() {
        return eio_error(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "transport=websocket needs a WebSocket upgrade request",
        );
    }
    let handshake = Handshake::of(&request);
    if handshake.token.is_none() && !sio.edge.config.hub(&hub_name).anonymous_connect {
        // The token may come in the `auth` payload of the first namespace connect.
        return awaiting_auth::begin(sio, &mut request, handshake, hub_name, hub, websocket);
    }
    match open(sio, &handshake, &hub_name, hub.clone(), websocket).await {
        Ok(session) if websocket => websocket::accept_new(sio, session, &mut request),
        Ok(session) => polling::handshake(sio, &session.sid()),
        Err(refusal) => {
            sio.edge
                .node
                .metrics()
                .registry()
                .connect_refusals
                .with(&[refusal.0.as_str()])
                .inc();
            refusal.into_reply()
        }
    }
}

/// What a new session is made of: the handshake request's query, headers, peer and token.
#[derive(Debug, Clone)]
struct Handshake {
    query: Vec<(String, String)>,
    headers: HeaderMap,
    remote: Option<std::net::SocketAddr>,
    token: Option<String>,
    /// The connection id, when the handshake already handed out its `sid`.
    id: Option<ConnectionId>,
    /// Whether a WebSocket session's open packet is still to be sent.
    greet: bool,
}

impl Handshake {
    fn of(request: &Request) -> Self {
        Self {
            query: request.query.clone(),
            headers: request.headers.clone(),
            remote: request.remote,
            token: request.token().map(str::to_owned),
            id: None,
            greet: true,
        }
    }
}

/// A refused handshake: the status and Engine.IO error.
struct Refusal(StatusCode, u8, String);

impl Refusal {
    fn into_reply(self) -> Reply {
        eio_error(self.0, self.1, &self.2)
    }
}

/// A new Engine.IO session: token (or anonymous), per-hub limits, then registration. The
/// `connect` event is raised later, per namespace; in default mode (a backend's tunnel and no
/// handler, spec part 2 §2.4) it is raised here, once for the connection, and the backend's
/// Socket.IO server decides.
async fn open(
    sio: &Arc<SocketIoEdge>,
    handshake: &Handshake,
    hub_name: &str,
    hub: HubKey,
    websocket: bool,
) -> Result<Arc<EioSession>, Refusal> {
    let edge = &sio.edge;
    if edge.draining.is_cancelled() {
        return Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            code::BAD_REQUEST,
            "the server is shutting down".into(),
        ));
    }
    let claims = authenticate(edge, handshake.token.as_deref(), hub_name)?;
    let limits = edge.config.hub_limits(&hub);
    edge.node
        .check_admission(&limits, &edge.limits, &hub, claims.user_id.as_deref())
        .map_err(|refused| {
            let status = match refused.kind {
                LimitKind::UserIdLength => StatusCode::BAD_REQUEST,
                _ => StatusCode::TOO_MANY_REQUESTS,
            };
            Refusal(status, code::FORBIDDEN, refused.message)
        })?;
    let body = upstream::connect_body(
        &handshake.query,
        &handshake.headers,
        handshake.token.as_deref(),
    );
    let (permissions, rejected) = Permissions::from_roles(&claims.roles);
    if !rejected.is_empty() {
        tracing::warn!(roles = ?rejected, "ignoring unknown or invalid roles");
    }
    let id = handshake
        .id
        .clone()
        .unwrap_or_else(|| edge.node.new_connection_id());
    let default_mode = if edge.upstream.socketio_default_mode(hub.as_str()) {
        let mut event = upstream::Session::connect_event(
            hub.shared(),
            id.clone(),
            claims.user_id.as_deref(),
            None,
            body.clone(),
        );
        event.default_mode = true;
        match edge.upstream.connect(event).await {
            Ok((_, session)) => Some(Arc::new(session)),
            Err(refusal) => {
                return Err(Refusal(
                    StatusCode::from_u16(refusal.status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    code::FORBIDDEN,
                    refusal.message,
                ));
            }
        }
    } else {
        None
    };
    let config = &edge.config.socketio;
    // A WebSocket client gets the handshake as its first frame; a polling client as the
    // answer to this request.
    let greeting = (websocket && handshake.greet).then(|| {
        Frame::Text(
            packets::open_packet(
                id.as_str(),
                &[],
                config.ping_interval.as_millis() as u64,
                config.ping_timeout.as_millis() as u64,
                config.max_payload_bytes,
            )
            .into(),
        )
    });
    let conn = edge.node.register_client(ConnectSpec {
        id,
        hub,
        user_id: claims.user_id.map(Into::into),
        format: WireFormat::SocketIo,
        subprotocol: None,
        reliable: None,
        remote_addr: handshake.remote,
        permissions,
        groups: claims.groups,
        greeting,
    });
    let session = EioSession::new(sio, conn, body, websocket, default_mode.clone());
    sio.sessions.insert(session.sid(), session.clone());
    session::spawn_lifecycle(sio, session.clone());
    if let Some(upstream_session) = &default_mode {
        edge.upstream.connected(upstream_session);
    }
    Ok(session)
}

/// Verifies a Socket.IO access token (audience `.../clients/socketio/hubs/{hub}`), or admits
/// an anonymous client where the hub allows it.
fn authenticate(edge: &Edge, token: Option<&str>, hub: &str) -> Result<ClientClaims, Refusal> {
    match token {
        Some(token) => auth::verify_client_token_for(
            token,
            &edge.keys,
            &edge.endpoint,
            ClientProtocol::SocketIo,
            hub,
        )
        .map_err(|e| Refusal(StatusCode::UNAUTHORIZED, code::FORBIDDEN, e.to_string())),
        None if edge.config.hub(hub).anonymous_connect => Ok(ClientClaims::default()),
        None => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            code::FORBIDDEN,
            "missing access token: pass access_token in the query (socket.io-client: \
             query: { access_token }), the auth payload (auth: { token }) or an \
             Authorization: Bearer header"
                .into(),
        )),
    }
}

/// Reads a request body of at most `max` bytes within `timeout`.
async fn read_body(
    mut body: BodyStream,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, (StatusCode, &'static str)> {
    use futures_util::StreamExt as _;
    let read = async {
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|_| (StatusCode::BAD_REQUEST, "the body could not be read"))?;
            if out.len() + chunk.len() > max {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the payload exceeds maxPayload (socketio.max_payload_bytes)",
                ));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(Err((
        StatusCode::REQUEST_TIMEOUT,
        "the body did not arrive within limits.request_body_timeout",
    )))
}
