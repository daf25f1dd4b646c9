//! The MQTT edge: MQTT 3.1.1 and 5.0 clients over WebSocket at `/clients/mqtt/hubs/{hub}`
//! (subprotocol `mqtt`), as Azure Web PubSub serves them (spec part 2 §1).
//!
//! Azure's mapping onto the router: a session is a connection whose id is the client id;
//! a topic is a group; SUBSCRIBE and UNSUBSCRIBE join and leave it, PUBLISH sends to it,
//! each under the usual roles; sends to all, users and connections arrive on
//! `$webpubsub/server/messages`. Messages are queued like any other connection's, as the
//! shared part of a PUBLISH ([`crate::protocol::mqtt`]), and the session's writer adds its
//! header and packet id.
//!
//! The upgrade is refused with an HTTP status only for what concerns the request itself
//! (hub name, upgrade headers, subprotocol, limits, shutdown). A bad or missing token is
//! told in the CONNACK instead (return code 5, reason code 0x87), which is what MQTT
//! clients report to their users.

pub(crate) mod packet;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::Instrument as _;
use warp::http::{HeaderMap, Response, StatusCode, header};
use warp::{Filter, Rejection};

use super::ws::Edge;
use crate::limits::LimitKind;
use crate::router::HubKey;
use crate::sockets::ClientAddr;
use crate::telemetry::trace;
use crate::upstream::{self, event::ConnectBody};
use hubcast_auth::{self as auth, ClientClaims, ClientProtocol};

/// The WebSocket subprotocol of MQTT.
const SUBPROTOCOL: &str = "mqtt";

/// Read buffer per socket (see the WebSocket edge: most clients mostly receive).
const READ_BUFFER_BYTES: usize = 1024;

/// The MQTT edge: the client edge's shared state, the count of MQTT sockets, and the MQTT
/// state of every session on this node.
#[derive(Debug)]
pub(crate) struct MqttEdge {
    pub(crate) edge: Arc<Edge>,
    /// MQTT sockets on this node (`mqtt.max_sessions`); a session waiting for its client to
    /// come back holds no socket.
    sessions: AtomicUsize,
    /// What a session keeps across its sockets (subscriptions, messages in flight), by
    /// [`session_key`]: a new socket of the same client id finds it here.
    kept: DashMap<String, Arc<session::SessionState>>,
}

impl MqttEdge {
    pub(crate) fn new(edge: Arc<Edge>) -> Arc<Self> {
        Arc::new(Self {
            edge,
            sessions: AtomicUsize::new(0),
            kept: DashMap::new(),
        })
    }
}

/// The key of a session in [`MqttEdge::kept`]: client ids are per hub.
fn session_key(hub: &HubKey, client_id: &str) -> String {
    format!("{}/{client_id}", hub.as_str())
}

/// Counts one MQTT session from the upgrade to its end.
#[derive(Debug)]
struct SessionSlot(Arc<MqttEdge>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The warp filter for `/clients/mqtt/hubs/{hub}`.
pub(crate) fn routes(
    mqtt: Arc<MqttEdge>,
) -> impl Filter<Extract = (Response<warp::hyper::body::Bytes>,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::path!("clients" / "mqtt" / "hubs" / String))
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ext::optional::<ClientAddr>())
        .then(
            move |hub: String,
                  query: Vec<(String, String)>,
                  headers: HeaderMap,
                  upgrade: Option<OnUpgrade>,
                  remote: Option<ClientAddr>| {
                let mqtt = mqtt.clone();
                let span = tracing::info_span!(
                    "handshake",
                    otel.kind = "server",
                    protocol = "mqtt",
                    http.response.status_code = tracing::field::Empty,
                );
                trace::set_parent(&span, trace::extract_http(&headers));
                let request = Upgrade {
                    hub,
                    query,
                    headers,
                    upgrade,
                    remote: remote.map(|ClientAddr(a)| a),
                };
                async move {
                    let response = handshake(&mqtt, request)
                        .instrument(span.clone())
                        .await
                        .unwrap_or_else(|(status, why)| {
                            mqtt.edge
                                .node
                                .metrics()
                                .registry()
                                .connect_refusals
                                .with(&[status.as_str()])
                                .inc();
                            refusal(status, &why)
                        });
                    span.record("http.response.status_code", response.status().as_u16());
                    response
                }
            },
        )
}

/// The parts of an upgrade request the handshake looks at.
struct Upgrade {
    hub: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    upgrade: Option<OnUpgrade>,
    remote: Option<std::net::SocketAddr>,
}

impl Upgrade {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The token: the `access_token` query parameter, else `Authorization: Bearer`.
    fn token(&self) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.as_str())
            .or_else(|| {
                self.header(header::AUTHORIZATION)
                    .and_then(super::bearer_token)
            })
    }

    /// The `mqtt` subprotocol as the client spelled it, if it offered it.
    fn offered_subprotocol(&self) -> Option<String> {
        self.headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find(|p| p.eq_ignore_ascii_case(SUBPROTOCOL))
            .map(str::to_owned)
    }
}

fn refusal(status: StatusCode, why: &str) -> Response<warp::hyper::body::Bytes> {
    let mut response = Response::new(warp::hyper::body::Bytes::from(format!("{why}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What the session task needs from the upgrade request.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) hub: HubKey,
    /// The verified claims, or why the token was refused (told in the CONNACK).
    pub(crate) claims: Result<ClientClaims, String>,
    /// The `connect` event's body: query, headers, claims, subprotocols.
    pub(crate) connect_body: ConnectBody,
    pub(crate) remote: Option<std::net::SocketAddr>,
}

type Refused = (StatusCode, String);

async fn handshake(
    mqtt: &Arc<MqttEdge>,
    request: Upgrade,
) -> Result<Response<warp::hyper::body::Bytes>, Refused> {
    let edge = &mqtt.edge;
    let hub_name = auth::percent_decode(&request.hub).ok_or_else(|| {
        (
            StatusCode::BAD_REQUEST,
            "hub name is not valid UTF-8".to_owned(),
        )
    })?;
    let hub = HubKey::new(&hub_name).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let is_websocket = request
        .header(header::UPGRADE)
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let (true, Some(key), Some(upgrade)) = (
        is_websocket,
        request.header(header::SEC_WEBSOCKET_KEY).map(str::to_owned),
        request.upgrade.clone(),
    ) else {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint only accepts WebSocket upgrade requests".into(),
        ));
    };
    if request.header(header::SEC_WEBSOCKET_VERSION) != Some("13") {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version: 13 is required".into(),
        ));
    }
    let Some(subprotocol) = request.offered_subprotocol() else {
        return Err((
            StatusCode::BAD_REQUEST,
            "MQTT clients must offer the WebSocket subprotocol 'mqtt'".into(),
        ));
    };
    if edge.draining.is_cancelled() {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        ));
    }
    let max_sessions = edge.config.mqtt.max_sessions;
    if mqtt.sessions.fetch_add(1, Ordering::Relaxed) >= max_sessions {
        mqtt.sessions.fetch_sub(1, Ordering::Relaxed);
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this node serves its limit of {max_sessions} MQTT sessions (mqtt.max_sessions)"
            ),
        ));
    }
    let slot = SessionSlot(mqtt.clone());

    let claims = match request.token() {
        Some(token) => auth::verify_client_token_for(
            token,
            &edge.keys,
            &edge.endpoint,
            ClientProtocol::Mqtt,
            &hub_name,
        )
        .map_err(|e| e.to_string()),
        None if edge.config.hub(&hub_name).anonymous_connect => Ok(ClientClaims::default()),
        None => Err(
            "missing access token: pass ?access_token=<jwt> or an Authorization: Bearer header"
                .to_owned(),
        ),
    };
    if let Ok(claims) = &claims {
        let limits = edge.config.hub_limits(&hub);
        edge.node
            .check_admission(&limits, &edge.limits, &hub, claims.user_id.as_deref())
            .map_err(|refused| {
                let status = match refused.kind {
                    LimitKind::UserIdLength => StatusCode::BAD_REQUEST,
                    _ => StatusCode::TOO_MANY_REQUESTS,
                };
                (status, refused.message)
            })?;
    }
    let connect_body = upstream::connect_body(&request.query, &request.headers, request.token());
    let accepted = Accepted {
        hub: hub.clone(),
        claims,
        connect_body,
        remote: request.remote,
    };

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
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        header::HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .expect("base64 is a valid header value"),
    );
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        header::HeaderValue::from_str(&subprotocol).expect("taken from a valid header value"),
    );

    let mqtt = mqtt.clone();
    let task = async move {
        let _slot = slot;
        let io = match upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        // MQTT packets may span WebSocket messages; the session enforces the packet size.
        // The WebSocket limits are the same bound, so no message outgrows a packet.
        let max = mqtt.edge.config.hub_limits(&hub).max_message_bytes;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
        session::serve(&mqtt, accepted, ws).await;
    };
    edge.tracker.spawn(task.in_current_span());
    Ok(response)
}
