//! A session whose token comes in the `auth` payload: `io(url, { auth: { token } })` sends no
//! token with the Engine.IO handshake, only with each namespace connect (`40{"token":"…"}`).
//!
//! A handshake without a token, on a hub that does not allow anonymous clients, gets its open
//! packet and `sid` at once, but nothing is registered yet: the session waits here for its
//! first packet, which must be a namespace connect. Its `auth` (`token`, or `access_token`)
//! is then checked as a token in the query would have been (audience, hub, admission), the
//! connection is registered under the `sid` already handed out, and the connect is handled as
//! on any session. A refusal reaches the client as a `connect_error` for that namespace,
//! followed by the close of the session.
//!
//! What waits here is bounded: a waiting session holds one of the node's handshake slots
//! (`limits.max_concurrent_handshakes`, shared with the WebSocket edge), for at most
//! `ping_interval + ping_timeout` (the client sends its connect at once).
//! Polls wait for the outcome like any poll, up to `socketio.max_poll_duration`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use warp::http::StatusCode;

use super::session::EioSession;
use super::{
    Handshake, Refusal, Reply, Request, SocketIoEdge, code, eio_error, open, polling, unknown_sid,
    websocket,
};
use crate::limits::LimitKind;
use crate::protocol::socketio::{self as packets, EioPacket, EioType, SioType};
use crate::router::HubKey;

/// A session that has its `sid` and waits for the token of its first namespace connect.
#[derive(Debug)]
pub(super) struct AwaitingAuth {
    sid: Arc<str>,
    hub_name: String,
    hub: HubKey,
    handshake: Handshake,
    outcome: watch::Sender<Option<Outcome>>,
    /// One `POST` at a time, as on a session.
    gate: tokio::sync::Mutex<()>,
    /// Its handshake slot (`limits.max_concurrent_handshakes`), freed when it is forgotten.
    _slot: OwnedSemaphorePermit,
}

/// How the wait ended.
#[derive(Debug, Clone)]
enum Outcome {
    /// The session, registered.
    Open(Arc<EioSession>),
    /// Refused: the namespace of the connect and why.
    Refused(String, String),
}

impl AwaitingAuth {
    pub(super) fn hub(&self) -> &HubKey {
        &self.hub
    }

    fn outcome(&self) -> Option<Outcome> {
        self.outcome.borrow().clone()
    }

    fn resolve(&self, outcome: Outcome) {
        self.outcome.send_if_modified(|o| {
            let first = o.is_none();
            if first {
                *o = Some(outcome);
            }
            first
        });
    }
}

/// How long a session may wait for its namespace connect.
fn patience(sio: &SocketIoEdge) -> Duration {
    let config = &sio.edge.config.socketio;
    config.ping_interval + config.ping_timeout
}

/// A handshake without a token: the open packet now, the token with the first namespace
/// connect.
pub(super) fn begin(
    sio: &Arc<SocketIoEdge>,
    request: &mut Request,
    mut handshake: Handshake,
    hub_name: String,
    hub: HubKey,
    websocket: bool,
) -> Reply {
    let edge = &sio.edge;
    if edge.draining.is_cancelled() {
        return eio_error(
            StatusCode::SERVICE_UNAVAILABLE,
            code::BAD_REQUEST,
            "the server is shutting down",
        );
    }
    // A waiting session is a handshake in progress: it holds one of the node's handshake
    // slots until it is decided.
    let Ok(permit) = edge.handshakes.clone().try_acquire_owned() else {
        edge.limits.hit(LimitKind::ConcurrentHandshakes);
        return eio_error(
            StatusCode::SERVICE_UNAVAILABLE,
            code::BAD_REQUEST,
            &format!(
                "too many handshakes in progress (limits.max_concurrent_handshakes = {}); \
                 retry shortly",
                edge.config.limits.max_concurrent_handshakes
            ),
        );
    };
    let id = edge.node.new_connection_id();
    let sid: Arc<str> = id.as_str().into();
    handshake.id = Some(id);
    handshake.greet = false;
    if websocket {
        return begin_websocket(sio, request, handshake, hub_name, hub, sid, permit);
    }
    let awaiting = Arc::new(AwaitingAuth {
        sid: sid.clone(),
        hub_name,
        hub,
        handshake,
        outcome: watch::channel(None).0,
        gate: tokio::sync::Mutex::new(()),
        _slot: permit,
    });
    // Forgets the session if no connect came in time (or its refusal was never polled). Holds
    // it weakly: a session decided and forgotten frees its handshake slot at once.
    let weak = Arc::downgrade(&awaiting);
    sio.awaiting.insert(sid.clone(), awaiting);
    let task_sio = sio.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(patience(&task_sio)) => {}
            () = task_sio.edge.kill.cancelled() => {}
        }
        if let Some(awaiting) = weak.upgrade() {
            awaiting.resolve(Outcome::Refused(
                "/".into(),
                "no namespace connect with a token arrived in time".into(),
            ));
            task_sio.awaiting.remove(&awaiting.sid);
        }
    });
    polling::handshake(sio, &sid)
}

/// The token of a namespace connect's `auth` payload (`token`, or `access_token`); `Ok(None)`
/// when it carries none.
///
/// # Errors
/// The packet is not a namespace connect: the namespace and why.
fn auth_token(packet: &EioPacket<'_>) -> Result<(String, Option<String>), (String, String)> {
    let refuse = |why: &str| Err(("/".to_owned(), why.to_owned()));
    let EioPacket::Text(EioType::Message, data) = packet else {
        return refuse("the first packet of a session without a token must be a namespace connect");
    };
    let sio = match packets::parse_sio(data) {
        Ok(sio) if sio.kind == SioType::Connect => sio,
        Ok(_) => {
            return refuse(
                "the first packet of a session without a token must be a namespace connect",
            );
        }
        Err(e) => return refuse(&format!("Invalid Socket.IO packet: {e}.")),
    };
    let token = serde_json::from_str::<serde_json::Value>(sio.data)
        .ok()
        .and_then(|auth| {
            auth.get("token")
                .or_else(|| auth.get("access_token"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        });
    Ok((sio.namespace.to_owned(), token))
}

/// Registers the session with the token of its first packet, or says why not.
async fn authenticate(
    sio: &Arc<SocketIoEdge>,
    handshake: &Handshake,
    hub_name: &str,
    hub: &HubKey,
    first: Option<&EioPacket<'_>>,
    websocket: bool,
) -> Result<Arc<EioSession>, (String, String)> {
    let (namespace, token) = match first {
        Some(packet) => auth_token(packet)?,
        None => return Err(("/".into(), "the payload is empty or malformed".into())),
    };
    let mut handshake = handshake.clone();
    handshake.token = token;
    open(sio, &handshake, hub_name, hub.clone(), websocket)
        .await
        .map_err(|Refusal(status, _, why)| {
            sio.edge
                .node
                .metrics()
                .registry()
                .connect_refusals
                .with(&[status.as_str()])
                .inc();
            (namespace, why)
        })
}

/// A `POST` to a waiting session: its first packet must be the namespace connect with the
/// token; the whole payload is then handled by the new session.
pub(super) async fn post(
    sio: &Arc<SocketIoEdge>,
    awaiting: &Arc<AwaitingAuth>,
    body: &[u8],
) -> Reply {
    let Ok(_gate) = awaiting.gate.try_lock() else {
        return eio_error(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "Overlapping post: one POST at a time per session",
        );
    };
    match awaiting.outcome() {
        Some(Outcome::Open(session)) => return polling::post_relayed(sio, &session, body).await,
        Some(Outcome::Refused(..)) => return unknown_sid(),
        None => {}
    }
    let parts = std::str::from_utf8(body)
        .ok()
        .and_then(|text| packets::split_payload(text).ok());
    let first = parts.as_ref().and_then(|p| p.first());
    let outcome = authenticate(
        sio,
        &awaiting.handshake,
        &awaiting.hub_name,
        &awaiting.hub,
        first,
        false,
    )
    .await;
    match outcome {
        Ok(session) => {
            awaiting.resolve(Outcome::Open(session.clone()));
            sio.awaiting.remove(&awaiting.sid);
            polling::post_relayed(sio, &session, body).await
        }
        Err((namespace, why)) => {
            // The client hears it on its next poll.
            awaiting.resolve(Outcome::Refused(namespace, why));
            ok()
        }
    }
}

fn ok() -> Reply {
    let mut response = Reply::new("ok".into());
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::header::HeaderValue::from_static("text/html"),
    );
    response
}

/// Waits up to `max` for the outcome.
async fn settled(sio: &SocketIoEdge, awaiting: &AwaitingAuth, max: Duration) -> Option<Outcome> {
    let mut outcome = awaiting.outcome.subscribe();
    tokio::select! {
        settled = tokio::time::timeout(max, outcome.wait_for(Option::is_some)) => {
            settled.ok().and_then(|o| o.ok()).and_then(|o| o.clone())
        }
        () = sio.edge.kill.cancelled() => None,
    }
}

/// A `GET` to a waiting session: served by the session once it is registered; the refusal
/// (a `connect_error`, then the close) if it was refused.
pub(super) async fn poll(sio: &Arc<SocketIoEdge>, awaiting: &Arc<AwaitingAuth>) -> Reply {
    match settled(sio, awaiting, sio.edge.config.socketio.max_poll_duration).await {
        Some(Outcome::Open(session)) => polling::poll(sio, &session).await,
        Some(Outcome::Refused(namespace, why)) => {
            sio.awaiting.remove(&awaiting.sid);
            let mut body = packets::connect_error(&namespace, &why);
            body.push(packets::SEPARATOR);
            body.push('1');
            polling::payload(body)
        }
        None => polling::payload("6".into()),
    }
}

/// The upgrade of a waiting session: once it is registered, as any upgrade.
pub(super) async fn upgrade(
    sio: &Arc<SocketIoEdge>,
    awaiting: &Arc<AwaitingAuth>,
    request: &mut Request,
) -> Reply {
    match settled(sio, awaiting, sio.edge.config.socketio.upgrade_timeout).await {
        Some(Outcome::Open(session)) => websocket::upgrade(sio, session, request),
        _ => eio_error(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "The session was not authenticated: no upgrade",
        ),
    }
}

/// A new WebSocket session without a token: the open packet, then its first message must be
/// the namespace connect with the token.
fn begin_websocket(
    sio: &Arc<SocketIoEdge>,
    request: &mut Request,
    handshake: Handshake,
    hub_name: String,
    hub: HubKey,
    sid: Arc<str>,
    slot: OwnedSemaphorePermit,
) -> Reply {
    let Some((response, upgrade)) = websocket::accept_upgrade(request) else {
        return websocket::bad_upgrade();
    };
    let sio = sio.clone();
    sio.edge.tracker.clone().spawn(async move {
        let Some(mut ws) = websocket::socket(&sio, upgrade).await else {
            return;
        };
        let config = &sio.edge.config.socketio;
        let open_packet = packets::open_packet(
            &sid,
            &[],
            config.ping_interval.as_millis() as u64,
            config.ping_timeout.as_millis() as u64,
            config.max_payload_bytes,
        );
        if ws.send(WsMessage::Text(open_packet.into())).await.is_err() {
            return;
        }
        let first = tokio::select! {
            first = tokio::time::timeout(patience(&sio), ws.next()) => first,
            () = sio.edge.kill.cancelled() => return,
        };
        let text = match first {
            Ok(Some(Ok(WsMessage::Text(text)))) => text,
            _ => {
                let _ = ws.close(None).await;
                return;
            }
        };
        let packet = packets::parse_text(text.as_str()).ok();
        let authenticated =
            authenticate(&sio, &handshake, &hub_name, &hub, packet.as_ref(), true).await;
        drop(slot);
        match authenticated {
            Ok(session) => {
                let packet = packet.expect("authenticated by its connect");
                if let Err(fatal) = session.on_packet(&sio, packet).await {
                    session.end(fatal.0);
                }
                websocket::serve(&sio, &session, ws).await;
            }
            Err((namespace, why)) => {
                let _ = ws
                    .send(WsMessage::Text(
                        packets::connect_error(&namespace, &why).into(),
                    ))
                    .await;
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Policy,
                        reason: websocket::truncate(&why).to_owned().into(),
                    }))
                    .await;
            }
        }
    });
    response
}
