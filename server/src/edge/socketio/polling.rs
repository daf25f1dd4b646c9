//! HTTP long-polling: the handshake answer, the `GET` that waits for what is queued, and the
//! `POST` that carries the client's packets.
//!
//! A `GET` takes everything queued for the connection and answers it as one Engine.IO
//! payload (packets joined by `\x1e`), or waits until something is queued: a message, the
//! heartbeat ping, a no-op when an upgrade starts or `socketio.max_poll_duration` passes.
//! Engine.IO allows one `GET` and one `POST` at a time per session; an overlapping one is a
//! broken or hostile client, and ends the session, as socket.io's server does.

use std::sync::Arc;

use warp::http::{StatusCode, header};

use super::session::{EioSession, Transport};
use super::{BodyStream, Reply, SocketIoEdge, code, eio_error, read_body};
use crate::limits::LimitKind;
use crate::message::Frame;
use crate::protocol::socketio as packets;
use crate::router::Close;
use crate::router::outbox::Taken;

/// The answer to a new polling session: its open packet.
pub(super) fn handshake(sio: &SocketIoEdge, sid: &str) -> Reply {
    let config = &sio.edge.config.socketio;
    let open = packets::open_packet(
        sid,
        &["websocket"],
        config.ping_interval.as_millis() as u64,
        config.ping_timeout.as_millis() as u64,
        config.max_payload_bytes,
    );
    payload(open)
}

/// A `200` with an Engine.IO payload.
pub(super) fn payload(body: String) -> Reply {
    let mut response = Reply::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    response
}

/// A long-polling `GET`.
pub(super) async fn poll(sio: &SocketIoEdge, session: &Arc<EioSession>) -> Reply {
    match session.transport() {
        Transport::Polling => {}
        // The client pauses polling during an upgrade: end its poll at once.
        Transport::Upgrading => return payload("6".into()),
        Transport::WebSocket => return uses_websocket(),
    }
    let Ok(_gate) = session.poll_gate.try_lock() else {
        sio.edge.limits.hit(LimitKind::MessageRate);
        session.end("overlapping polls");
        return eio_error(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "Overlapping poll: one GET at a time per session",
        );
    };
    let conn = &session.conn;
    let mut batch = Vec::new();
    let max = sio.edge.config.socketio.max_poll_duration;
    let wait = tokio::time::sleep(max);
    tokio::pin!(wait);
    loop {
        let upgrading = session.upgrading.notified();
        tokio::pin!(upgrading);
        upgrading.as_mut().enable();
        if session.transport() != Transport::Polling {
            return payload("6".into());
        }
        let taken = tokio::select! {
            taken = conn.outbox().take(session.epoch(), &mut batch) => taken,
            () = &mut upgrading => return payload("6".into()),
            () = &mut wait => return payload("6".into()),
            () = sio.edge.kill.cancelled() => return payload("1".into()),
        };
        match taken {
            Taken::Frames if batch.is_empty() => continue,
            Taken::Frames => {
                let mut body = String::new();
                for queued in batch.drain(..) {
                    if let Frame::Text(text) = queued.frame {
                        if !body.is_empty() {
                            body.push(packets::SEPARATOR);
                        }
                        body.push_str(&text);
                    }
                }
                return payload(body);
            }
            Taken::Close(close) => {
                if let Close::Server { reason, .. } = close {
                    tracing::debug!(%reason, "closing a polling session");
                }
                session.close_written();
                return payload("1".into());
            }
            Taken::Detached => return payload("1".into()),
        }
    }
}

/// A long-polling `POST`: the client's packets, handled in order before the answer.
pub(super) async fn post(sio: &SocketIoEdge, session: &Arc<EioSession>, body: BodyStream) -> Reply {
    if session.transport() == Transport::WebSocket {
        return uses_websocket();
    }
    let Ok(_gate) = session.post_gate.try_lock() else {
        return overlapping_post(session);
    };
    match read_post_body(sio, body).await {
        Ok(body) => handle_payload(sio, session, &body).await,
        Err((status, why)) => {
            session.end(why);
            eio_error(status, code::BAD_REQUEST, why)
        }
    }
}

/// A `POST` another node took for this session and read: handled as a local one.
pub(super) async fn post_relayed(
    sio: &SocketIoEdge,
    session: &Arc<EioSession>,
    body: &[u8],
) -> Reply {
    if session.transport() == Transport::WebSocket {
        return uses_websocket();
    }
    let Ok(_gate) = session.post_gate.try_lock() else {
        return overlapping_post(session);
    };
    handle_payload(sio, session, body).await
}

fn uses_websocket() -> Reply {
    eio_error(
        StatusCode::BAD_REQUEST,
        code::BAD_REQUEST,
        "This session uses WebSocket now",
    )
}

fn overlapping_post(session: &EioSession) -> Reply {
    session.end("overlapping posts");
    eio_error(
        StatusCode::BAD_REQUEST,
        code::BAD_REQUEST,
        "Overlapping post: one POST at a time per session",
    )
}

/// Reads a `POST` body within `socketio.max_payload_bytes` and the request body timeout,
/// counting a refusal against its limit.
///
/// # Errors
/// The status and reason of the refusal; the session must end.
pub(super) async fn read_post_body(
    sio: &SocketIoEdge,
    body: BodyStream,
) -> Result<bytes::Bytes, (StatusCode, &'static str)> {
    let config = &sio.edge.config;
    read_body(
        body,
        config.socketio.max_payload_bytes,
        config.limits.request_body_timeout,
    )
    .await
    .inspect_err(|(status, _)| {
        let kind = if *status == StatusCode::PAYLOAD_TOO_LARGE {
            LimitKind::MessageSize
        } else {
            LimitKind::RequestBodyTimeout
        };
        sio.edge.limits.hit(kind);
    })
}

/// The packets of a `POST` body, handled in order; `ok` once they all are.
async fn handle_payload(sio: &SocketIoEdge, session: &Arc<EioSession>, body: &[u8]) -> Reply {
    let Ok(text) = std::str::from_utf8(body) else {
        session.end("the payload is not valid UTF-8");
        return eio_error(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "The payload is not valid UTF-8",
        );
    };
    let parts = match packets::split_payload(text) {
        Ok(parts) => parts,
        Err(e) => {
            let why = format!("Invalid Engine.IO payload: {e}.");
            session.end(why.clone());
            return eio_error(StatusCode::BAD_REQUEST, code::BAD_REQUEST, &why);
        }
    };
    for part in parts {
        if session.is_ended() {
            break;
        }
        if let Err(fatal) = session.on_packet(sio, part).await {
            session.end(fatal.0.clone());
            return eio_error(StatusCode::BAD_REQUEST, code::BAD_REQUEST, &fatal.0);
        }
    }
    let mut response = Reply::new("ok".into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html"),
    );
    response
}

/// The client probed a WebSocket for this session on another node, which will serve it by
/// relaying: pending polls end with a no-op so the client can switch. An upgrade that does
/// not complete within `socketio.upgrade_timeout` is abandoned.
pub(super) fn probed_elsewhere(sio: &SocketIoEdge, session: &Arc<EioSession>) -> Reply {
    if session.transport() != Transport::Polling {
        return eio_error(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "This session is not on long-polling",
        );
    }
    session.set_transport(Transport::Upgrading);
    let timeout = sio.edge.config.socketio.upgrade_timeout;
    let session = session.clone();
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        if session.transport() == Transport::Upgrading {
            session.set_transport(Transport::Polling);
        }
    });
    payload("ok".into())
}

/// The client switched to the WebSocket on another node (or gave up the upgrade): that node
/// polls for it from now on, as a long-polling client would.
pub(super) fn switched_elsewhere(session: &EioSession) -> Reply {
    if session.transport() == Transport::Upgrading {
        session.set_transport(Transport::Polling);
    }
    payload("ok".into())
}
