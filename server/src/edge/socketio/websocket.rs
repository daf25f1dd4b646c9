//! The WebSocket transport: a new session opened over WebSocket, or a polling session
//! upgraded to one.
//!
//! Every Engine.IO packet is one WebSocket message: text packets as text frames, binary
//! attachments as binary frames. The writer splits each queued payload (one or more packets
//! joined by `\x1e`, shared by every recipient of a send) into its frames.
//!
//! The upgrade follows Engine.IO v4: the client probes the new socket (`2probe`, answered
//! `3probe` here), the pending poll is answered with a no-op so the client can pause polling,
//! then the client sends `5` and the WebSocket carries the session from then on.

use std::sync::Arc;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use warp::http::{StatusCode, header};

use super::session::{EioSession, Transport};
use super::{Reply, Request, SocketIoEdge, code, eio_error};
use crate::limits::LimitKind;
use crate::message::Frame;
use crate::protocol::socketio::{self as packets, EioPacket, WsPart};
use crate::router::Close;
use crate::router::outbox::Taken;

/// Read buffer per socket (as on the WebSocket edge: clients mostly receive).
const READ_BUFFER_BYTES: usize = 1024;

/// The `101` for a new WebSocket session; the socket is served in a task of its own.
pub(super) fn accept_new(
    sio: &Arc<SocketIoEdge>,
    session: Arc<EioSession>,
    request: &mut Request,
) -> Reply {
    let Some((response, upgrade)) = accept_upgrade(request) else {
        session.end("the WebSocket upgrade request is incomplete");
        return bad_upgrade();
    };
    let sio = sio.clone();
    sio.edge.tracker.clone().spawn(async move {
        let Some(ws) = socket(&sio, upgrade).await else {
            session.end("The WebSocket upgrade did not complete.");
            return;
        };
        serve(&sio, &session, ws).await;
    });
    response
}

/// The `101` for the upgrade of a polling session; the probe and the switch happen on the
/// new socket, in a task of its own.
pub(super) fn upgrade(
    sio: &Arc<SocketIoEdge>,
    session: Arc<EioSession>,
    request: &mut Request,
) -> Reply {
    if session.transport() != Transport::Polling {
        return eio_error(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "This session is not on long-polling",
        );
    }
    let Some((response, upgrade)) = accept_upgrade(request) else {
        return bad_upgrade();
    };
    let sio = sio.clone();
    sio.edge.tracker.clone().spawn(async move {
        let Some(mut ws) = socket(&sio, upgrade).await else {
            return;
        };
        let timeout = sio.edge.config.socketio.upgrade_timeout;
        match tokio::time::timeout(timeout, probe(&session, &mut ws)).await {
            Ok(true) => serve(&sio, &session, ws).await,
            Ok(false) | Err(_) => {
                tracing::debug!("upgrade abandoned; the session stays on long-polling");
                if session.transport() == Transport::Upgrading {
                    session.set_transport(Transport::Polling);
                }
                let _ = ws.close(None).await;
            }
        }
    });
    response
}

/// Runs the probe: `2probe` → `3probe`, the pending poll answered, then `5`.
async fn probe<S>(session: &EioSession, ws: &mut WebSocketStream<S>) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match ws.next().await {
        Some(Ok(WsMessage::Text(t))) if t.as_str() == "2probe" => {}
        _ => return false,
    }
    if ws.send(WsMessage::Text("3probe".into())).await.is_err() {
        return false;
    }
    if session.transport() != Transport::Polling {
        return false;
    }
    session.set_transport(Transport::Upgrading);
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) if t.as_str() == "5" => {
                // One poll may still be answering: wait for it to let go of the outbox.
                let _gate = session.poll_gate.lock().await;
                session.set_transport(Transport::WebSocket);
                return true;
            }
            // Heartbeat answers may cross the upgrade.
            Some(Ok(WsMessage::Text(t))) if t.as_str() == "3" || t.as_str() == "6" => {}
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
            _ => return false,
        }
    }
}

/// Accepts a WebSocket upgrade request: the `101` to answer and the upgrade to await; `None`
/// when the request is incomplete (answer [`bad_upgrade`]).
pub(super) fn accept_upgrade(request: &mut Request) -> Option<(Reply, OnUpgrade)> {
    let response = switching_protocols(request)?;
    Some((response, request.upgrade.take()?))
}

/// Engine.IO's `400` to an incomplete WebSocket upgrade request.
pub(super) fn bad_upgrade() -> Reply {
    eio_error(
        StatusCode::BAD_REQUEST,
        code::BAD_REQUEST,
        "Bad WebSocket upgrade request",
    )
}

/// Checks the upgrade headers and builds the `101`.
fn switching_protocols(request: &Request) -> Option<Reply> {
    let key = request.header(header::SEC_WEBSOCKET_KEY)?;
    if request.header(header::SEC_WEBSOCKET_VERSION) != Some("13") || request.upgrade.is_none() {
        return None;
    }
    let mut response = Reply::new(Default::default());
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
        header::HeaderValue::from_str(&accept).ok()?,
    );
    Some(response)
}

/// Waits for the upgraded connection; the codec refuses messages above `maxPayload`.
pub(super) async fn socket(
    sio: &SocketIoEdge,
    upgrade: OnUpgrade,
) -> Option<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>> {
    let io = match upgrade.await {
        Ok(io) => TokioIo::new(io),
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return None;
        }
    };
    let max = sio.edge.config.socketio.max_payload_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    Some(WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await)
}

/// Reader and writer side by side until the session ends or the socket does.
pub(super) async fn serve<S>(sio: &SocketIoEdge, session: &Arc<EioSession>, ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let reader = read_loop(sio, session, &mut stream);
    let writer = write_loop(session, &mut sink);
    tokio::pin!(reader, writer);
    tokio::select! {
        why = &mut reader => {
            session.end(why);
            // Let the writer flush what is queued (a close frame after a client's close).
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut writer).await;
        }
        () = &mut writer => {
            session.close_written();
        }
        () = sio.edge.kill.cancelled() => {}
    }
}

/// Reads packets until the socket ends; returns why (empty: the client closed normally).
async fn read_loop<R>(sio: &SocketIoEdge, session: &Arc<EioSession>, mut stream: R) -> String
where
    R: Stream<Item = Result<WsMessage, WsError>> + Unpin,
{
    loop {
        let packet = match stream.next().await {
            Some(Ok(WsMessage::Text(text))) => {
                let parsed = packets::parse_text(text.as_str());
                match parsed {
                    Ok(EioPacket::Text(kind, data)) => {
                        handle(sio, session, EioPacket::Text(kind, data)).await
                    }
                    Ok(binary) => handle(sio, session, binary).await,
                    Err(e) => Err(format!("Invalid Engine.IO packet: {e}.")),
                }
            }
            Some(Ok(WsMessage::Binary(bytes))) => {
                handle(sio, session, EioPacket::Binary(bytes)).await
            }
            Some(Ok(WsMessage::Close(_))) | None => return "transport close".into(),
            Some(Ok(_)) => Ok(()),
            Some(Err(WsError::Capacity(e))) => {
                tracing::debug!(error = %e, "message above maxPayload");
                sio.edge.limits.hit(LimitKind::MessageSize);
                session.conn.close(Close::Server {
                    code: crate::message::close::TOO_BIG,
                    reason: format!(
                        "The message exceeds maxPayload ({} bytes, socketio.max_payload_bytes).",
                        sio.edge.config.socketio.max_payload_bytes
                    ),
                    discard_queued: false,
                });
                return "message too large".into();
            }
            Some(Err(e)) => return format!("transport error: {e}"),
        };
        if let Err(why) = packet {
            tracing::debug!(%why, "closing the connection");
            session.conn.close(Close::Server {
                code: crate::message::close::PROTOCOL_ERROR,
                reason: why.clone(),
                discard_queued: false,
            });
            return why;
        }
        if session.is_ended() {
            return String::new();
        }
    }
}

async fn handle(
    sio: &SocketIoEdge,
    session: &Arc<EioSession>,
    packet: EioPacket<'_>,
) -> Result<(), String> {
    session.on_packet(sio, packet).await.map_err(|f| f.0)
}

/// Drains the outbox into the socket, one flush per batch; a server close ends with a
/// close frame.
async fn write_loop<W>(session: &EioSession, mut sink: W)
where
    W: Sink<WsMessage, Error = WsError> + Unpin,
{
    let conn = &session.conn;
    let mut batch = Vec::new();
    loop {
        match conn.outbox().take(session.epoch(), &mut batch).await {
            Taken::Frames => {
                let write = async {
                    for queued in batch.drain(..) {
                        if let Frame::Text(payload) = queued.frame {
                            for part in packets::payload_frames(payload.as_str()) {
                                let message = match part {
                                    WsPart::Text(t) => WsMessage::Text(t.into()),
                                    WsPart::Binary(b) => WsMessage::Binary(b.into()),
                                };
                                sink.feed(message).await?;
                            }
                        }
                    }
                    sink.flush().await
                };
                let written = tokio::select! {
                    r = write => r.is_ok(),
                    () = conn.outbox().abandoned() => false,
                };
                batch.clear();
                if !written {
                    return;
                }
            }
            Taken::Close(Close::Server { code, reason, .. }) => {
                let close = tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: code.into(),
                    reason: truncate(&reason).into(),
                };
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    sink.send(WsMessage::Close(Some(close))),
                )
                .await;
                return;
            }
            Taken::Close(Close::Peer) => {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sink.flush()).await;
                return;
            }
            Taken::Detached => return,
        }
    }
}

/// A close frame's reason is limited to 123 bytes; cut at a character boundary.
pub(super) fn truncate(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::socketio::EioType;

    #[test]
    fn reasons_fit_a_close_frame() {
        assert_eq!(truncate("short"), "short");
        assert_eq!(truncate(&"é".repeat(100)).len(), 122);
    }

    #[test]
    fn open_frames_carry_no_eio_type_mixup() {
        assert!(matches!(
            packets::parse_text("40"),
            Ok(EioPacket::Text(EioType::Message, "0"))
        ));
    }
}
