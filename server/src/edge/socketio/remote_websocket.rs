//! The upgrade to WebSocket of a long-polling session that another node holds: a balancer
//! without affinity sends the WebSocket anywhere.
//!
//! The node that takes the WebSocket serves it as a long-polling client of the owner would:
//! it runs the probe here (`2probe` → `3probe`), tells the owner (whose pending poll ends
//! with a no-op, so the client can pause polling and send `5`), then relays one `GET` at a
//! time for what the owner queues (written as WebSocket frames, `b<base64>` parts as binary
//! frames) and one `POST` per message from the client, in order. The owner keeps the
//! session, its heartbeat, limits and namespaces; its close ends the WebSocket, and the end
//! of the WebSocket ends the session there. Each message costs two backplane publishes each
//! way: clients that can should connect over WebSocket from the start.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::{Reply, Request, SocketIoEdge, websocket};
use crate::limits::LimitKind;
use crate::node::{PollReply, PollRequest};
use crate::protocol::socketio::{self as packets, WsPart};
use crate::router::HubKey;

/// The `101` for a WebSocket of session `sid`, which node `owner` holds; the probe and the
/// relaying run in a task of their own.
pub(super) fn upgrade(
    sio: &Arc<SocketIoEdge>,
    request: &mut Request,
    hub: &HubKey,
    sid: &str,
    owner: String,
) -> Reply {
    let Some((response, upgrade)) = websocket::accept_upgrade(request) else {
        return websocket::bad_upgrade();
    };
    let relay = Relay {
        sio: sio.clone(),
        owner,
        hub: hub.as_str().to_owned(),
        sid: sid.to_owned(),
    };
    sio.edge.tracker.clone().spawn(async move {
        let Some(mut ws) = websocket::socket(&relay.sio, upgrade).await else {
            return;
        };
        let timeout = relay.sio.edge.config.socketio.upgrade_timeout;
        let switched = tokio::time::timeout(timeout, relay.probe(&mut ws))
            .await
            .unwrap_or(false);
        // Polls are served again: by this node's relaying, or the client's own polls.
        let _ = relay.ask(PollRequest::Switched, Duration::ZERO).await;
        if switched {
            relay.serve(ws).await;
        } else {
            tracing::debug!("upgrade abandoned; the session stays on long-polling");
            let _ = ws.close(None).await;
        }
    });
    response
}

/// One session's WebSocket on this node, relayed to its owner.
struct Relay {
    sio: Arc<SocketIoEdge>,
    owner: String,
    hub: String,
    sid: String,
}

impl Relay {
    /// Relays a request to the owner; `None` when it is refused or cannot be served (the
    /// session is over, the owner gone, the backplane down).
    async fn ask(&self, request: PollRequest, hold: Duration) -> Option<PollReply> {
        match self
            .sio
            .edge
            .node
            .relay_poll(&self.owner, &self.hub, &self.sid, request, hold)
            .await
        {
            Ok(Some(reply)) if reply.status == 200 => Some(reply),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "relaying for a WebSocket failed");
                None
            }
        }
    }

    /// Hands a message of the client to the owner; false when the session is over.
    async fn post(&self, payload: String) -> bool {
        self.ask(PollRequest::Post(payload.into()), Duration::ZERO)
            .await
            .is_some()
    }

    /// The probe: `2probe` → `3probe`, the owner told, then `5`.
    async fn probe<S>(&self, ws: &mut tokio_tungstenite::WebSocketStream<S>) -> bool
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) if t.as_str() == "2probe" => {}
            _ => return false,
        }
        if self
            .ask(PollRequest::Probed, Duration::ZERO)
            .await
            .is_none()
        {
            return false;
        }
        if ws.send(WsMessage::Text("3probe".into())).await.is_err() {
            return false;
        }
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(t))) if t.as_str() == "5" => return true,
                // Heartbeat answers may cross the upgrade.
                Some(Ok(WsMessage::Text(t))) if t.as_str() == "3" => {
                    if !self.post(t.as_str().to_owned()).await {
                        return false;
                    }
                }
                Some(Ok(WsMessage::Text(t))) if t.as_str() == "6" => {}
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                _ => return false,
            }
        }
    }

    /// Relays until the session or the WebSocket ends.
    async fn serve<S>(&self, ws: tokio_tungstenite::WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut sink, mut stream) = ws.split();
        let reader = async {
            loop {
                let payload = match stream.next().await {
                    Some(Ok(WsMessage::Text(text))) => text.as_str().to_owned(),
                    Some(Ok(WsMessage::Binary(bytes))) => packets::binary_payload(&bytes),
                    Some(Ok(WsMessage::Close(_))) | None => return "transport close".to_owned(),
                    Some(Ok(_)) => continue,
                    Some(Err(WsError::Capacity(_))) => {
                        self.sio.edge.limits.hit(LimitKind::MessageSize);
                        return "message too large".to_owned();
                    }
                    Some(Err(e)) => return format!("transport error: {e}"),
                };
                if !self.post(payload).await {
                    return String::new();
                }
            }
        };
        let hold = self.sio.edge.config.socketio.max_poll_duration;
        let writer = async {
            while let Some(reply) = self.ask(PollRequest::Get, hold).await {
                let Ok(payload) = std::str::from_utf8(&reply.body) else {
                    return;
                };
                let mut closed = false;
                for part in packets::payload_frames(payload) {
                    let message = match part {
                        // A poll that timed out; nothing for a WebSocket.
                        WsPart::Text("6") => continue,
                        WsPart::Text("1") => {
                            closed = true;
                            break;
                        }
                        WsPart::Text(t) => WsMessage::Text(t.into()),
                        WsPart::Binary(b) => WsMessage::Binary(b.into()),
                    };
                    if sink.feed(message).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() || closed {
                    return;
                }
            }
        };
        let ended = {
            tokio::pin!(reader, writer);
            tokio::select! {
                why = &mut reader => Some(why),
                () = &mut writer => None,
                () = self.sio.edge.kill.cancelled() => None,
            }
        };
        // The end of the WebSocket ends the session on its node.
        if let Some(why) = ended.filter(|why| !why.is_empty()) {
            let _ = self
                .ask(PollRequest::RefusedPost(why), Duration::ZERO)
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    }
}
