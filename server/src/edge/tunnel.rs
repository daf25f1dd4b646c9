//! The tunnel edge: Azure's `/server/tunnel?hub=…`, where a backend dials in over WebSocket
//! instead of exposing a webhook (`@azure/web-pubsub-socket.io`, Azure's tunnel tool; spec
//! part 2 §2.4, §2.4a, §3.2).
//!
//! - Authentication: a service token (`access_token` in the query, or `Authorization:
//!   Bearer`) whose audience is the tunnel URL, with its `ws`/`wss` scheme.
//! - Framing: one [`crate::protocol::tunnel`] frame per binary message, at most 1 MiB.
//! - The service sends `ConnectionConnected` first, then a `ServiceStatus` every
//!   `client.keepalive_interval` (the package reconnects after 120 s without a frame).
//! - Service → backend: the hub's CloudEvents for its `tunnel:///` handlers, as `HttpRequest`
//!   frames ([`crate::upstream::tunnel`]); the backend's `HttpResponse` frames answer them.
//! - Backend → service: `HttpRequest` frames are REST calls of the data plane, executed as
//!   `/api/hubs/...` is ([`super::rest::execute_trusted`]) but only for the tunnel's own hub,
//!   one after the other in the order sent, so the backend's sends keep their order.
//! - A bad frame, a frame type a backend does not send, a text message or an oversized frame
//!   closes that tunnel with a reason; other tunnels and hubs are not affected.
//! - At shutdown the tunnel closes with 1001, never `ConnectionClose` (after which the
//!   package never comes back).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tracing::Instrument as _;
use warp::http::{HeaderMap, Method, Response, StatusCode, header};
use warp::{Filter, Rejection};

use super::ws::Edge;
use crate::protocol::tunnel::{self as frames, FrameError, HttpRequest, HttpResponse, TunnelFrame};
use crate::router::HubKey;
use crate::upstream::tunnel::tunnel_headers;
use hubcast_auth as auth;

/// The path of the endpoint, for the token's audience.
const PATH: &str = "/server/tunnel";

/// REST calls that may wait on one tunnel (they run one after the other); more are answered
/// 503.
const MAX_QUEUED_CALLS: usize = 1024;

/// `:invoke` calls of one tunnel that may wait for their sockets' acks at once; more are
/// answered 503.
const MAX_COLLECTING_INVOKES: usize = 64;

type Reply = Response<warp::hyper::body::Bytes>;

fn text(status: StatusCode, body: impl Into<String>) -> Reply {
    let mut response = Response::new(warp::hyper::body::Bytes::from(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The warp filter for `/server/tunnel`.
pub(crate) fn routes(
    edge: Arc<Edge>,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    // The `:invoke` calls of other nodes' tunnels reach this node's sockets through here.
    let node = edge.node.clone();
    edge.upstream
        .tunnels()
        .install_local_send(Box::new(move |hub, payload, filter| {
            node.send_counted(hub, payload, filter)
                .map_err(|e| e.to_string())
        }));
    warp::path("server")
        .and(warp::path("tunnel"))
        .and(warp::path::end())
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .map(
            move |query: Vec<(String, String)>, headers: HeaderMap, upgrade: Option<OnUpgrade>| {
                let span = tracing::info_span!(
                    "tunnel",
                    otel.kind = "server",
                    hub = tracing::field::Empty
                );
                let _entered = span.enter();
                accept(&edge, &query, &headers, upgrade, &span)
            },
        )
}

/// Checks the request and answers `101` (the tunnel is served in a task of its own) or why not.
fn accept(
    edge: &Arc<Edge>,
    query: &[(String, String)],
    headers: &HeaderMap,
    upgrade: Option<OnUpgrade>,
    span: &tracing::Span,
) -> Reply {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if edge.draining.is_cancelled() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is shutting down; reconnect",
        );
    }
    let Some(hub) = param("hub") else {
        return text(
            StatusCode::BAD_REQUEST,
            "the `hub` query parameter is required",
        );
    };
    let hub = match HubKey::new(hub) {
        Ok(hub) => hub,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    span.record("hub", hub.as_str());
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(super::bearer_token);
    let Some(token) = param("access_token").or(bearer) else {
        return text(
            StatusCode::UNAUTHORIZED,
            "missing access_token: sign a service token whose audience is the tunnel URL",
        );
    };
    if let Err(e) = auth::verify_tunnel_token(token, &edge.keys, &edge.endpoint, PATH) {
        return text(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok());
    let is_websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let (Some(key), true, Some(upgrade)) = (key, is_websocket, upgrade) else {
        return text(
            StatusCode::BAD_REQUEST,
            "the tunnel is a WebSocket: send an upgrade request",
        );
    };
    let mut response = Reply::new(Default::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = response.headers_mut();
    out.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    out.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    out.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        header::HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .expect("base64 is a valid header value"),
    );
    let tracker = edge.upstream.tunnels().tracker().clone();
    let edge = edge.clone();
    let task = async move {
        let io = match upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(frames::MAX_FRAME_BYTES + 4))
            .max_frame_size(Some(frames::MAX_FRAME_BYTES + 4));
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        serve(&edge, hub, ws).await;
    };
    tracker.spawn(task.instrument(span.clone()));
    response
}

/// Why a tunnel ends.
struct Ending {
    code: CloseCode,
    reason: String,
}

impl Ending {
    fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        let mut reason: String = reason.into();
        // A close reason holds at most 123 bytes.
        while reason.len() > 123 {
            reason.pop();
        }
        Self { code, reason }
    }
}

/// Serves one tunnel until it ends.
async fn serve<S>(edge: &Arc<Edge>, hub: HubKey, ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let tunnels = edge.upstream.tunnels().clone();
    let closing = tunnels.closing();
    // In a cluster, every node knows of the tunnel before it is greeted.
    let (registration, mut outgoing) = tunnels.register_everywhere(hub.as_str()).await;
    let tunnel = registration.tunnel.clone();
    let (mut sink, mut stream) = ws.split();
    let connection_id = format!("tunnel-{}", tunnel.id());
    tracing::info!(tunnel.id = %connection_id, "tunnel connected");
    if sink
        .send(WsMessage::Binary(frames::encode_connected(&connection_id)))
        .await
        .is_err()
    {
        return;
    }
    // REST answers go out through the same writer as events.
    let answers = tunnel.sender();
    // The backend's REST calls run one after the other, in the order it sent them, so its
    // sends reach clients in that order (Socket.IO emits, as on Azure); in a task of their
    // own, so this loop never waits for them.
    let (calls, queued) = tokio::sync::mpsc::channel(MAX_QUEUED_CALLS);
    tunnels
        .tracker()
        .spawn(run_calls(edge.clone(), hub.clone(), queued, answers.clone()).in_current_span());
    let mut keepalive = tokio::time::interval(edge.config.client.keepalive_interval);
    keepalive.tick().await;
    // A backend that sends nothing, and answers not even our pings, for `idle_timeout` is
    // gone (a dead peer leaves no close): its tunnel stops taking events.
    let idle = edge.config.limits.idle_timeout;
    let mut last_seen = tokio::time::Instant::now();
    let ending: Option<Ending> = loop {
        tokio::select! {
            frame = outgoing.recv() => {
                let Some(frame) = frame else { break None };
                if sink.send(WsMessage::Binary(frame)).await.is_err() {
                    break None;
                }
            }
            _ = keepalive.tick() => {
                if last_seen.elapsed() > idle {
                    break Some(Ending::new(
                        CloseCode::Away,
                        "the backend answered nothing, not even pings, for limits.idle_timeout",
                    ));
                }
                // The ServiceStatus keeps the package's 120 s watch quiet; the ping makes a
                // live backend answer even when it has nothing to say.
                if sink.send(WsMessage::Binary(frames::encode_status("alive"))).await.is_err()
                    || sink.send(WsMessage::Ping(Default::default())).await.is_err()
                {
                    break None;
                }
            }
            message = stream.next() => {
                last_seen = tokio::time::Instant::now();
                match message {
                Some(Ok(WsMessage::Binary(bytes))) => match frames::decode(&bytes) {
                    Ok(TunnelFrame::Response(response)) => tunnel.on_response(response),
                    Ok(TunnelFrame::Request(request)) => {
                        // Never wait here: this loop also drains what the calls answer.
                        if let Err(e) = calls.try_send(request) {
                            let (tokio::sync::mpsc::error::TrySendError::Full(request)
                            | tokio::sync::mpsc::error::TrySendError::Closed(request)) = e;
                            let busy = HttpResponse {
                                ack_id: request.ack_id,
                                local_routing: request.local_routing,
                                status_code: 503,
                                channel_name: request.channel_name,
                                not_completed: false,
                                headers: frames::Headers::new(),
                                content: Bytes::from(format!(
                                    "more than {MAX_QUEUED_CALLS} calls are waiting on this tunnel; retry"
                                )),
                            };
                            if sink.send(WsMessage::Binary(frames::encode_response(&busy))).await.is_err() {
                                break None;
                            }
                        }
                    }
                    Ok(TunnelFrame::ServiceOnly(kind)) => break Some(Ending::new(
                        CloseCode::Policy,
                        format!("frame type {kind} is sent by the service, not by a backend"),
                    )),
                    Err(e) => break Some(Ending::new(bad_frame_code(&e), format!("bad tunnel frame: {e}"))),
                },
                Some(Ok(WsMessage::Text(_))) => break Some(Ending::new(
                    CloseCode::Unsupported,
                    "tunnel frames are binary messages",
                )),
                Some(Ok(WsMessage::Close(_))) | None => break None,
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(e))) => break Some(Ending::new(
                    CloseCode::Size,
                    format!("the frame is too large ({e}); at most {} bytes", frames::MAX_FRAME_BYTES),
                )),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "tunnel transport error");
                    break None;
                }
            }},
            () = closing.cancelled() => break Some(Ending::new(
                CloseCode::Away,
                "the service is restarting; reconnect",
            )),
            () = edge.kill.cancelled() => break None,
        }
    };
    drop(registration);
    if let Some(ending) = ending {
        tracing::info!(code = %ending.code, reason = %ending.reason, "closing the tunnel");
        let sent = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            sink.send(WsMessage::Close(Some(CloseFrame {
                code: ending.code,
                reason: ending.reason.into(),
            }))),
        )
        .await;
        // The backend may still be sending (the rest of an oversized frame): closed as the
        // client edge closes, so that no reset destroys the close frame on its way (through
        // a load balancer the backend would see 1006 instead of the reason).
        if matches!(sent, Ok(Ok(())))
            && let Ok(ws) = sink.reunite(stream)
        {
            super::ws::linger(edge, ws).await;
        }
    } else {
        tracing::info!("tunnel closed");
    }
}

/// Runs a tunnel's REST calls one after the other, in order, until the tunnel ends. An
/// `:invoke` takes its turn to send its packet; waiting for the acks runs beside the next
/// calls.
async fn run_calls(
    edge: Arc<Edge>,
    hub: HubKey,
    mut calls: tokio::sync::mpsc::Receiver<HttpRequest>,
    answers: tokio::sync::mpsc::Sender<Bytes>,
) {
    let collecting = Arc::new(tokio::sync::Semaphore::new(MAX_COLLECTING_INVOKES));
    while let Some(request) = calls.recv().await {
        if is_invoke(&request) {
            invoke(&edge, &hub, request, &answers, &collecting).await;
        } else {
            let frame = frames::encode_response(&rest_call(&edge, &hub, request).await);
            let _ = answers.send(frame).await;
        }
    }
}

/// The close code for a frame that could not be read.
fn bad_frame_code(error: &FrameError) -> CloseCode {
    match error {
        FrameError::TooLarge(_) => CloseCode::Size,
        _ => CloseCode::Invalid,
    }
}

/// Whether a request is Socket.IO's `POST /api/hubs/{hub}/:invoke`.
fn is_invoke(request: &HttpRequest) -> bool {
    request.http_method.eq_ignore_ascii_case("POST")
        && request
            .url
            .parse::<http::Uri>()
            .is_ok_and(|u| u.path().ends_with("/:invoke"))
}

/// The value of `name` in a URL query (`+` is a space, as `URLSearchParams` writes it).
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Socket.IO's `:invoke` (`emitWithAck` to many sockets, spec part 2 §2.4a): the packet,
/// numbered here with one ack id, goes to every connection the filter matches, on this node
/// and, in a cluster, on the others (which forward their sockets' acks here); the answer is `200` then one `{"Payload":"<the client's ack>"}` line per answering client,
/// each in a `NotCompleted` part, until every recipient answered or the upstream timeout.
async fn invoke(
    edge: &Arc<Edge>,
    hub: &HubKey,
    request: HttpRequest,
    answers: &tokio::sync::mpsc::Sender<Bytes>,
    collecting: &Arc<tokio::sync::Semaphore>,
) {
    let (ack_id, local_routing, channel_name) = (
        request.ack_id,
        request.local_routing,
        request.channel_name.clone(),
    );
    let part = move |status: u16, not_completed: bool, content: Bytes| {
        frames::encode_response(&HttpResponse {
            ack_id,
            local_routing,
            status_code: status,
            channel_name: channel_name.clone(),
            not_completed,
            headers: [("Content-Type".to_owned(), vec!["text/plain".to_owned()])].into(),
            content,
        })
    };
    let Ok(permit) = collecting.clone().try_acquire_owned() else {
        let why = format!(
            "more than {MAX_COLLECTING_INVOKES} :invoke calls are waiting for acks on this tunnel; retry"
        );
        let _ = answers.send(part(503, false, Bytes::from(why))).await;
        return;
    };
    let own_hub = request
        .url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| {
            u.path()
                .strip_prefix("/api/hubs/")
                .and_then(|rest| rest.strip_suffix("/:invoke"))
                .and_then(auth::percent_decode)
        })
        .is_some_and(|name| name.eq_ignore_ascii_case(hub.as_str()));
    if !own_hub {
        let why = format!(
            "a tunnel for hub '{}' may only call its own hub",
            hub.as_str()
        );
        let _ = answers.send(part(403, false, Bytes::from(why))).await;
        return;
    }
    let filter = request
        .url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.query().and_then(|q| query_value(q, "filter")))
        .unwrap_or_default();
    let Ok(payload) = std::str::from_utf8(&request.content) else {
        let why = "the :invoke body must be a UTF-8 Engine.IO payload";
        let _ = answers.send(part(400, false, Bytes::from(why))).await;
        return;
    };
    let invokes = edge.upstream.tunnels().invokes();
    let (id, mut acks) = invokes.start();
    let numbered = match crate::protocol::socketio::with_ack_id(payload, id) {
        Ok(numbered) => numbered,
        Err(e) => {
            invokes.finish(id);
            let why = format!("the :invoke body must be one Socket.IO event packet: {e}");
            let _ = answers.send(part(400, false, Bytes::from(why))).await;
            return;
        }
    };
    let here = match edge
        .node
        .send_counted(hub.as_str(), numbered.clone(), &filter)
    {
        Ok(count) => count,
        Err(e) => {
            invokes.finish(id);
            let _ = answers
                .send(part(400, false, Bytes::from(e.to_string())))
                .await;
            return;
        }
    };
    // In a cluster, the sockets of the other nodes too: they forward their acks here.
    let expected = here
        + edge
            .upstream
            .tunnels()
            .invoke_elsewhere(
                hub.as_str(),
                id,
                &numbered,
                &filter,
                edge.config.upstream.timeout,
            )
            .await;
    if expected == 0 {
        invokes.finish(id);
        let _ = answers.send(part(200, false, Bytes::new())).await;
        return;
    }
    if answers.send(part(200, true, Bytes::new())).await.is_err() {
        invokes.finish(id);
        return;
    }
    // The packet is out: the acks are waited for beside the tunnel's next calls.
    let deadline = tokio::time::Instant::now() + edge.config.upstream.timeout;
    let tunnels = edge.upstream.tunnels().clone();
    let answers = answers.clone();
    let collect = async move {
        let _permit = permit;
        let mut answered = std::collections::HashSet::new();
        while answered.len() < expected {
            let Ok(Some((connection, ack))) = tokio::time::timeout_at(deadline, acks.recv()).await
            else {
                break;
            };
            if !answered.insert(connection) {
                continue;
            }
            let mut line = serde_json::json!({ "Payload": ack }).to_string();
            line.push('\n');
            if answers
                .send(part(200, true, Bytes::from(line)))
                .await
                .is_err()
            {
                break;
            }
        }
        tunnels.invokes().finish(id);
        let _ = answers.send(part(200, false, Bytes::new())).await;
    };
    edge.upstream
        .tunnels()
        .tracker()
        .spawn(collect.in_current_span());
}

/// Runs one REST call from the backend and builds its answer.
async fn rest_call(edge: &Arc<Edge>, hub: &HubKey, request: HttpRequest) -> HttpResponse {
    let answer = |status: u16, message: &str| HttpResponse {
        ack_id: request.ack_id,
        local_routing: request.local_routing,
        status_code: status,
        channel_name: request.channel_name.clone(),
        not_completed: false,
        headers: [("Content-Type".to_owned(), vec!["text/plain".to_owned()])].into(),
        content: Bytes::copy_from_slice(message.as_bytes()),
    };
    let Ok(method) = Method::from_bytes(request.http_method.as_bytes()) else {
        return answer(400, "HttpMethod is not an HTTP method");
    };
    let Ok(uri) = request.url.parse::<http::Uri>() else {
        return answer(400, "Url is not a URL");
    };
    let path = uri.path().to_owned();
    // Only the tunnel's own hub: `/api/hubs/{hub}` or below it.
    let own = path
        .strip_prefix("/api/hubs/")
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .and_then(auth::percent_decode)
        .is_some_and(|name| name.eq_ignore_ascii_case(hub.as_str()));
    if !own {
        return answer(
            403,
            &format!(
                "a tunnel for hub '{}' may only call /api/hubs/{}/...",
                hub.as_str(),
                hub.as_str()
            ),
        );
    }
    let mut headers = HeaderMap::new();
    for (name, values) in &request.headers {
        let Ok(name) = header::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in values {
            if let Ok(value) = header::HeaderValue::from_str(value) {
                headers.append(name.clone(), value);
            }
        }
    }
    let reply = super::rest::execute_trusted(
        &edge.node,
        edge.limits.clone(),
        method,
        path,
        uri.query().unwrap_or_default().to_owned(),
        headers,
        request.content.clone(),
    )
    .await;
    let (parts, body) = reply.into_parts();
    HttpResponse {
        ack_id: request.ack_id,
        local_routing: request.local_routing,
        status_code: parts.status.as_u16(),
        channel_name: request.channel_name,
        not_completed: false,
        headers: tunnel_headers(&parts.headers),
        content: body,
    }
}
