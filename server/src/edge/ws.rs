//! The client WebSocket edge: `/client/hubs/{hub}` and `/client/?hub={hub}`.
//!
//! warp routes the upgrade request; everything that can refuse a client (hub name, token,
//! upgrade headers) is decided before the `101`, so a refused client gets a plain HTTP status
//! with a reason. The socket itself is driven by tokio-tungstenite with buffer sizes chosen
//! here, and each socket runs one task ([`session`]): a reader that parses client frames and
//! acts on them ([`dispatch`]), and a writer that drains the connection's outbox with one
//! flush per batch.
//!
//! A reliable connection outlives its socket: when the socket is lost, the connection waits
//! (the recovery window) for the client to come back with `awps_connection_id` and
//! `awps_reconnection_token`, and a recovered socket picks up where the old one stopped.

mod dispatch;
mod invoke;
mod session;
/// Also how the tunnel edge closes a socket with unread input.
pub(super) use session::linger;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use warp::http::{HeaderMap, Response, StatusCode, header};
use warp::{Filter, Rejection};

use crate::config::Config;
use crate::limits::{LimitCounters, LimitKind};
use crate::message::{WireFormat, close};
use crate::node::Node;
use crate::protocol::{self, Subprotocol};
use crate::router::{ConnectSpec, Connection, ConnectionId, HubKey, Permissions, ReliableLimits};
use crate::sockets::ClientAddr;
use crate::telemetry::trace;
use crate::upstream::{self, Session, Upstream};
use dashmap::DashMap;
use hubcast_auth::{self as auth, ClientClaims, KeyRing};

/// Close codes the edge uses (RFC 6455 §7.4.1).
/// The `disconnected` message and close reason at shutdown.
const SHUTDOWN_REASON: &str = "The server is shutting down.";

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Read buffer per connection, and the most one read call asks the socket for. tungstenite's
/// default (128 KiB) would be kept by every idle connection; at 4 KiB it was still a third
/// of an idle connection's heap (docs/PERFORMANCE.md). Clients mostly receive: their
/// frames are small, and larger ones still work (the buffer grows to the frame's length
/// while reading it, in reads of at most this size).
const READ_BUFFER_BYTES: usize = 1024;

/// What the edge shares with every connection task.
#[derive(Debug)]
pub(crate) struct Edge {
    /// The service layer: every registration, join, leave and send goes through it.
    pub(crate) node: Node,
    pub(crate) config: Arc<Config>,
    pub(crate) keys: KeyRing,
    pub(crate) endpoint: String,
    /// Every connection task, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// Set when shutdown starts: new upgrades are refused with 503.
    pub(crate) draining: CancellationToken,
    /// Set when the shutdown grace period is over: remaining sockets are dropped.
    pub(crate) kill: CancellationToken,
    /// Upstream events (webhooks, event stream).
    pub(crate) upstream: Arc<Upstream>,
    /// The upstream session of every live logical connection, by connection id: it outlives
    /// a socket when a reliable connection is recovered.
    pub(crate) sessions: DashMap<Arc<str>, Arc<Session>>,
    /// Counts of limit refusals.
    pub(crate) limits: Arc<LimitCounters>,
    /// Upgrades being decided now (`limits.max_concurrent_handshakes`).
    pub(crate) handshakes: Arc<Semaphore>,
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
        .then(
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
                let edge = edge.clone();
                // The upgrade request may carry the caller's trace context; the `connect`
                // webhook raised during the handshake continues it.
                let span = tracing::info_span!(
                    "handshake",
                    otel.kind = "server",
                    protocol = "default",
                    http.response.status_code = tracing::field::Empty,
                );
                trace::set_parent(&span, trace::extract_http(&request.headers));
                async move {
                    let result = handshake(&edge, request).instrument(span.clone()).await;
                    let response = result.unwrap_or_else(|refusal| {
                        edge.node
                            .metrics()
                            .registry()
                            .connect_refusals
                            .with(&[refusal.0.as_str()])
                            .inc();
                        refusal.into_response()
                    });
                    span.record("http.response.status_code", response.status().as_u16());
                    response
                }
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
            self.header(header::AUTHORIZATION)
                .and_then(super::bearer_token)
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

/// Decides on an upgrade request and, if accepted, spawns the socket's task.
async fn handshake(
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
        HubKey::new(&hub_name).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?;

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
    if edge.draining.is_cancelled() {
        return Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        ));
    }
    check_origin(edge, &request)?;
    // Held until the upgrade is decided: token check and the blocking `connect` event.
    let _handshake = edge.handshakes.clone().try_acquire_owned().map_err(|_| {
        edge.limits.hit(LimitKind::ConcurrentHandshakes);
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many WebSocket handshakes in progress (limits.max_concurrent_handshakes = {}); retry shortly",
                edge.config.limits.max_concurrent_handshakes
            ),
        )
    })?;

    // A recovery authenticates with its reconnection token, checked after the upgrade so a
    // failure can be told with close code 1008 (the only answer Azure's clients act on);
    // the stale `access_token` on the same URL is ignored.
    let recovery = request.query("awps_connection_id").map(|id| Recovery {
        connection_id: id.to_owned(),
        token: request
            .query("awps_reconnection_token")
            .unwrap_or_default()
            .to_owned(),
    });
    let claims = match recovery {
        Some(_) => None,
        None => {
            let claims = authenticate(edge, &request, &hub_name)?;
            check_connection_limits(edge, &hub, &claims)?;
            Some(claims)
        }
    };

    let negotiated = protocol::negotiate(
        request
            .headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    // A new connection raises the blocking `connect` event before the upgrade: the backend
    // may refuse it, or change the user, roles, groups and subprotocol.
    let admitted = match claims {
        Some(claims) => Some(admit(edge, &request, &hub, claims, negotiated).await?),
        None => None,
    };
    let (subprotocol, echo) = match &admitted {
        Some(a) => (a.subprotocol, a.echo.clone()),
        None => (
            negotiated.map(|(p, _)| p),
            negotiated.map(|(_, offered)| offered.to_owned()),
        ),
    };
    let response = switching_protocols(key, echo.as_deref());

    // A new connection is registered now, before the `101`: once the client sees the
    // upgrade succeed, it is in its groups and messages to it are queued for it.
    let conn = admitted.map(|a| connect(edge, hub.clone(), subprotocol, a, request.remote));
    let edge_task = edge.clone();
    let task = async move {
        let io = match upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                if let Some(conn) = conn {
                    let reason = "The WebSocket upgrade did not complete.";
                    Box::pin(session::abandon(&edge_task, &conn, reason)).await;
                }
                return;
            }
        };
        // The codec enforces the hub's size limit: an oversized frame is refused from its
        // header, before its payload is read (see `session` for the 1009 close).
        let max_message_bytes = edge_task.config.hub_limits(&hub).max_message_bytes;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_message_size(Some(max_message_bytes))
            .max_frame_size(Some(max_message_bytes));
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
        match (recovery, conn) {
            // The rare paths are boxed so that the task of every connection (its size is
            // the largest of its states, kept for the connection's lifetime) stays small.
            (Some(recovery), _) => {
                Box::pin(session::recover(
                    &edge_task,
                    &hub,
                    recovery,
                    subprotocol,
                    ws,
                ))
                .await;
            }
            (None, Some(conn)) => {
                let span = connection_span(&conn);
                session::serve_new(&edge_task, conn, ws)
                    .instrument(span)
                    .await;
            }
            (None, None) => unreachable!("every non-recovery request is admitted"),
        }
    };
    edge.tracker.spawn(task);
    Ok(response)
}

/// A new connection that the `connect` event (if any) let in.
struct Admitted {
    id: ConnectionId,
    claims: ClientClaims,
    subprotocol: Option<Subprotocol>,
    /// The `Sec-WebSocket-Protocol` value to answer with.
    echo: Option<String>,
    session: Arc<Session>,
}

/// Raises the blocking `connect` event and applies the backend's answer.
async fn admit(
    edge: &Edge,
    request: &UpgradeRequest,
    hub: &HubKey,
    mut claims: ClientClaims,
    negotiated: Option<(Subprotocol, &str)>,
) -> Result<Admitted, Refusal> {
    let id = edge.node.new_connection_id();
    let connect_event = Session::connect_event(
        hub.shared(),
        id.clone(),
        claims.user_id.as_deref(),
        negotiated.map(|(p, _)| p.name),
        upstream::connect_body(&request.query, &request.headers, request.token()),
    );
    let (accepted, session) = edge.upstream.connect(connect_event).await.map_err(|r| {
        Refusal(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            r.message,
        )
    })?;
    let (subprotocol, echo) = upstream::apply_connect(&accepted, &mut claims, negotiated);
    Ok(Admitted {
        id,
        claims,
        subprotocol,
        echo,
        session: Arc::new(session),
    })
}

/// What a recovery request names.
#[derive(Debug)]
pub(crate) struct Recovery {
    pub(crate) connection_id: String,
    pub(crate) token: String,
}

/// One span per connection, for every log line of its sockets.
pub(crate) fn connection_span(conn: &Connection) -> tracing::Span {
    tracing::info_span!(
        "connection",
        protocol = "default",
        hub = conn.hub().as_str(),
        connection.id = %conn.id(),
        user = conn.user_id().map(|u| &**u).unwrap_or(""),
        client.addr = ?conn.remote_addr(),
    )
}

/// The `101 Switching Protocols` answer, echoing the subprotocol as the client spelled it
/// (RFC 6455 clients compare it byte for byte).
fn switching_protocols(key: &str, subprotocol: Option<&str>) -> Response<warp::hyper::body::Bytes> {
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
    if let Some(offered) = subprotocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            header::HeaderValue::from_str(offered).expect("taken from a valid header value"),
        );
    }
    response
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

/// Refuses browser upgrades from origins not in `client.allowed_origins` (when it is set).
fn check_origin(edge: &Edge, request: &UpgradeRequest) -> Result<(), Refusal> {
    let allowed = &edge.config.client.allowed_origins;
    let Some(origin) = request.headers.get(header::ORIGIN) else {
        return Ok(());
    };
    if allowed.is_empty() {
        return Ok(());
    }
    let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        Ok(())
    } else {
        edge.limits.hit(LimitKind::Origin);
        Err(Refusal(
            StatusCode::FORBIDDEN,
            format!("origin '{origin}' is not allowed (client.allowed_origins)"),
        ))
    }
}

/// Checks the per-hub connection limits (the service layer decides; a refusal is a 400 for
/// a too-long user id, else a 429).
fn check_connection_limits(
    edge: &Edge,
    hub: &HubKey,
    claims: &ClientClaims,
) -> Result<(), Refusal> {
    let limits = edge.config.hub_limits(hub);
    edge.node
        .check_admission(&limits, &edge.limits, hub, claims.user_id.as_deref())
        .map_err(|refused| {
            let status = match refused.kind {
                LimitKind::UserIdLength => StatusCode::BAD_REQUEST,
                _ => StatusCode::TOO_MANY_REQUESTS,
            };
            Refusal(status, refused.message)
        })
}

/// Registers a new connection with the router; protocol clients get `connected` first (with
/// a reconnection token for reliable subprotocols). Its upstream session is kept with it.
fn connect(
    edge: &Edge,
    hub: HubKey,
    subprotocol: Option<Subprotocol>,
    admitted: Admitted,
    remote_addr: Option<std::net::SocketAddr>,
) -> Arc<Connection> {
    let Admitted {
        id,
        claims,
        session,
        ..
    } = admitted;
    let (permissions, rejected) = Permissions::from_roles(&claims.roles);
    if !rejected.is_empty() {
        tracing::warn!(connection.id = %id, roles = ?rejected, "ignoring unknown or invalid roles");
    }
    let format = subprotocol.map_or(WireFormat::Simple, |p| p.format);
    let reliable = subprotocol.is_some_and(|p| p.reliable);
    let token = reliable.then(|| auth::mint_reconnection_token(edge.keys.primary(), id.as_str()));
    let greeting = protocol::connected(
        format,
        claims.user_id.as_deref(),
        id.as_str(),
        token.as_deref(),
    );
    let config = &edge.config.client;
    edge.sessions.insert(id.shared(), session);
    edge.node.register_client(ConnectSpec {
        id,
        hub,
        user_id: claims.user_id.map(Into::into),
        format,
        subprotocol: subprotocol.map(|p| p.name),
        reliable: reliable.then_some(ReliableLimits {
            max_messages: config.unacked_max_messages,
            max_bytes: config.unacked_max_bytes,
        }),
        remote_addr,
        permissions,
        groups: claims.groups,
        greeting,
    })
}

/// Sends the shutdown close to every connection.
pub(crate) fn close_all(node: &Node) {
    node.close_all_clients(close::GOING_AWAY, SHUTDOWN_REASON);
}
