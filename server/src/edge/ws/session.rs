//! One socket of a connection: its reader and writer, and what its end means for the
//! connection.
//!
//! A socket ends in one of three ways ([`SocketEnd`]). *Final*: the connection is over and
//! leaves the router. *Lost*: the socket failed or the client closed it; a reliable connection
//! detaches and waits out its recovery window, any other is over. *Superseded*: a recovery
//! attached a newer socket, which now owns the connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame as WsFrame};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::dispatch::{self, StreamFrame, UserEvent};
use super::invoke::Invocations;
use super::stream::Streams;
use super::{CLOSE_TIMEOUT, Edge, Recovery, SHUTDOWN_REASON, connection_span};
use crate::limits::{LimitKind, RateLimiter};
use crate::message::{Frame, WireFormat, close};
use crate::protocol::{self, Rendered, Subprotocol};
use crate::router::outbox::Taken;
use crate::router::{Close, Connection, HubKey};
use crate::telemetry::trace::{self, TraceParent};
use crate::telemetry::{HubMetrics, Protocol};
use crate::upstream::{self, Session};
use hubcast_auth as auth;

/// How a socket ended, from the connection's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketEnd {
    /// The connection is over.
    Final,
    /// The socket is gone; a reliable connection may be recovered.
    Lost,
    /// A newer socket owns the connection now.
    Superseded,
}

/// How the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// The client sent a close frame; `normal` when its code was 1000 (a client that means
    /// to leave for good, as opposed to one that drops a socket it will recover).
    Closed { normal: bool },
    /// The stream ended or failed without a close frame.
    Lost,
    /// The reader asked for a server close and cannot read on (an oversized frame, a
    /// protocol violation, invalid UTF-8).
    Stopped,
}

/// How the writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteEnd {
    /// It wrote the close (or flushed the reply to the client's close).
    Closed,
    /// Writing failed.
    Failed,
    /// The outbox moved on to another socket.
    Detached,
}

/// Serves the first socket of a new connection.
pub(super) async fn serve_new<S>(edge: &Arc<Edge>, conn: Arc<Connection>, ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tracing::debug!(
        subprotocol = conn.subprotocol().unwrap_or("none"),
        "connected"
    );
    let token = conn.replace_socket();
    let epoch = conn.outbox().epoch();
    // Shutdown may have started during the upgrade, after its sweep of the router.
    if edge.draining.is_cancelled() {
        dispatch::server_close(&conn, close::GOING_AWAY, SHUTDOWN_REASON);
    }
    let Some(session) = edge.sessions.get(conn.id().as_str()).map(|s| s.clone()) else {
        return;
    };
    edge.upstream.connected(&session);
    // The groups of its token and its `connect` answer.
    let groups: Vec<_> = conn.membership().groups.iter().cloned().collect();
    for group in groups {
        edge.upstream.group_presence(&session, &group, true);
    }
    serve(edge, conn, ws, epoch, token, session).await;
}

/// Resumes a reliable connection on a new socket, or refuses with 1008 (after the upgrade,
/// as Azure does: its clients only stop retrying on that close code).
pub(super) async fn recover<S>(
    edge: &Arc<Edge>,
    hub: &HubKey,
    recovery: Recovery,
    subprotocol: Option<Subprotocol>,
    mut ws: WebSocketStream<S>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let format = subprotocol.map_or(WireFormat::Simple, |p| p.format);
    let found = check_recovery(edge, hub, &recovery, subprotocol).and_then(|conn| {
        let session = edge.sessions.get(conn.id().as_str()).map(|s| s.clone());
        session
            .map(|s| (conn, s))
            .ok_or("The connection has ended and cannot be recovered.")
    });
    let (conn, session) = match found {
        Ok(found) => found,
        Err(why) => {
            tracing::debug!(connection.id = %recovery.connection_id, why, "recovery refused");
            let metrics = edge.node.metrics();
            metrics
                .registry()
                .reliable_recoveries
                .with(&[metrics.hub_label(hub), "refused"])
                .inc();
            send_close(&mut ws, format, close::POLICY_VIOLATION, why).await;
            return;
        }
    };
    let span = connection_span(&conn);
    let token = conn.replace_socket();
    let reconnection_token = auth::mint_reconnection_token(edge.keys.primary(), conn.id().as_str());
    let connected = protocol::connected(
        conn.format(),
        conn.user_id().map(|u| &**u),
        conn.id().as_str(),
        Some(&reconnection_token),
    );
    let Some(epoch) = conn.outbox().reattach(connected) else {
        let why = "The connection has ended and cannot be recovered.";
        send_close(&mut ws, format, close::POLICY_VIOLATION, why).await;
        return;
    };
    edge.node
        .metrics()
        .registry()
        .reliable_recoveries
        .with(&[hub, "recovered"])
        .inc();
    async {
        tracing::debug!("recovered");
        serve(edge, conn, ws, epoch, token, session).await;
    }
    .instrument(span)
    .await;
}

/// Finds the connection a recovery names and checks that this client may resume it.
fn check_recovery(
    edge: &Edge,
    hub: &HubKey,
    recovery: &Recovery,
    subprotocol: Option<Subprotocol>,
) -> Result<Arc<Connection>, &'static str> {
    let conn = edge
        .node
        .local_connection(hub, &recovery.connection_id)
        .ok_or("The connection does not exist or its recovery window has passed.")?;
    auth::verify_reconnection_token(&recovery.token, &edge.keys, conn.id().as_str())
        .map_err(|_| "Invalid reconnection token.")?;
    match subprotocol {
        Some(p) if p.reliable && conn.is_reliable() && p.format == conn.format() => Ok(conn),
        _ => Err("A connection can only be recovered with its own reliable subprotocol."),
    }
}

/// Runs one socket and settles the connection's fate when it ends.
async fn serve<S>(
    edge: &Arc<Edge>,
    conn: Arc<Connection>,
    ws: WebSocketStream<S>,
    epoch: u64,
    token: CancellationToken,
    session: Arc<Session>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (end, unread) = run(edge, &conn, ws, epoch, &token, &session).await;
    match end {
        SocketEnd::Lost if conn.outbox().detach(epoch) => {
            tracing::debug!("socket lost; the connection waits for a recovery");
            await_recovery(edge, conn, session);
        }
        SocketEnd::Superseded => tracing::debug!("socket replaced by a recovery"),
        // Once a connection is closing no socket can attach, so an unchanged epoch means
        // this socket was the connection's last.
        _ if conn.outbox().epoch() == epoch => {
            let reason = disconnect_reason(&conn, edge.draining.is_cancelled());
            // Boxed: the `disconnected` webhook call happens once, at the end; inline it
            // would enlarge every live connection's task.
            Box::pin(finish(edge, &conn, &session, reason)).await;
        }
        _ => {}
    }
    if let Some(ws) = unread {
        // Boxed: rare, and it holds a read buffer.
        Box::pin(linger(edge, ws)).await;
    }
}

/// Most bytes [`linger`] reads and discards before it gives up and drops the socket.
const LINGER_MAX_BYTES: usize = 8 << 20;

/// Closes a socket whose reader stopped while the client was still sending (the rest of an
/// oversized frame, whatever follows a protocol violation): the write side first, so the `disconnected` message and close frame
/// already written are followed by an orderly end of stream; then it reads and discards what
/// still arrives, until the client closes, [`CLOSE_TIMEOUT`] or [`LINGER_MAX_BYTES`].
/// Dropping a socket with unread input makes the kernel answer with a reset instead, and a
/// reset can destroy that close before the client reads it: through a proxy or load
/// balancer, the client then sees 1006 instead of 1009 and its reason.
pub(in crate::edge) async fn linger<S>(edge: &Edge, mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io = ws.get_mut();
    let drain = async {
        io.shutdown().await?;
        let mut buf = vec![0; 16 * 1024];
        let mut drained = 0;
        while drained < LINGER_MAX_BYTES {
            match io.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(drained)
    };
    tokio::select! {
        drained = tokio::time::timeout(CLOSE_TIMEOUT, drain) => {
            tracing::debug!(?drained, "socket closed after discarding unread input");
        }
        () = edge.kill.cancelled() => {}
    }
}

/// Ends a connection whose upgrade never completed: it was registered before the `101`.
pub(super) async fn abandon(edge: &Edge, conn: &Connection, reason: &str) {
    conn.close(Close::Server {
        code: close::GOING_AWAY,
        reason: reason.into(),
        discard_queued: true,
    });
    match edge.sessions.get(conn.id().as_str()).map(|s| s.clone()) {
        Some(session) => finish(edge, conn, &session, "upgrade_failed").await,
        None => edge.node.unregister_client(conn),
    }
}

/// The `reason` label of `hubcast_disconnects_total` for a connection whose last socket
/// ended: who closed it, and why.
fn disconnect_reason(conn: &Connection, draining: bool) -> &'static str {
    match conn.outbox().current_close() {
        None | Some(Close::Peer) => "client",
        Some(Close::Server { code, .. }) => match code {
            close::SLOW_CONSUMER => "slow_consumer",
            close::UNRECOVERABLE => "unacked_limit",
            close::GOING_AWAY if draining => "shutdown",
            close::TOO_BIG => "message_too_large",
            close::UNSUPPORTED_DATA | close::INVALID_PAYLOAD | close::PROTOCOL_ERROR => {
                "protocol_error"
            }
            close::BY_SERVICE => "closed_by_service",
            _ => "server",
        },
    }
}

/// Ends a logical connection: out of the router, and its one upstream `disconnected`;
/// counted under `reason`.
async fn finish(edge: &Edge, conn: &Connection, session: &Session, reason: &'static str) {
    edge.node
        .metrics()
        .registry()
        .disconnects
        .with(&[conn.hub(), reason])
        .inc();
    let groups: Vec<_> = conn.membership().groups.iter().cloned().collect();
    edge.node.unregister_client(conn);
    edge.sessions.remove(conn.id().as_str());
    for group in groups {
        edge.upstream.group_presence(session, &group, false);
    }
    let reason = upstream::disconnect_reason(conn);
    edge.upstream.disconnected(session, reason.as_deref()).await;
    tracing::debug!("disconnected");
}

/// Keeps a detached reliable connection for the recovery window, then ends it unless a
/// socket came back. Shutdown, or a close while detached, ends it at once.
fn await_recovery(edge: &Arc<Edge>, conn: Arc<Connection>, session: Arc<Session>) {
    let epoch = conn.outbox().epoch();
    let window = edge.config.client.recovery_window;
    let task_edge = edge.clone();
    let task = async move {
        tokio::select! {
            () = tokio::time::sleep(window) => {}
            () = task_edge.draining.cancelled() => {}
            () = conn.outbox().closed() => {}
        }
        if conn.outbox().expire(epoch) {
            tracing::debug!("not recovered in time");
            let reason = match conn.outbox().current_close() {
                Some(Close::Server { .. }) => {
                    disconnect_reason(&conn, task_edge.draining.is_cancelled())
                }
                _ => "recovery_expired",
            };
            finish(&task_edge, &conn, &session, reason).await;
        }
    };
    edge.tracker.spawn(task.in_current_span());
}

/// Reader and writer side by side until the socket ends. The socket comes back with the end
/// when the reader stopped with input unread, for [`linger`] to close.
async fn run<S>(
    edge: &Arc<Edge>,
    conn: &Arc<Connection>,
    ws: WebSocketStream<S>,
    epoch: u64,
    token: &CancellationToken,
    session: &Arc<Session>,
) -> (SocketEnd, Option<WebSocketStream<S>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let mut stopped = false;
    let metrics = edge.node.hub_metrics(conn.hub());
    let reader = read_loop(edge, conn, &mut stream, session, &metrics);
    let writer = write_loop(
        conn,
        &mut sink,
        epoch,
        edge.config.client.keepalive_interval,
        &metrics,
    );
    let end = {
        tokio::pin!(reader, writer);
        tokio::select! {
            end = &mut reader => match end {
                ReadEnd::Lost => SocketEnd::Lost,
                // A reliable client that closes its socket without saying it is leaving (code
                // 1000) may still come back: Azure's client closes with no code both when it
                // stops and before it recovers (e.g. after a keep-alive timeout).
                ReadEnd::Closed { normal: false } if conn.is_reliable() && !conn.outbox().is_closing() => {
                    SocketEnd::Lost
                }
                end @ (ReadEnd::Closed { .. } | ReadEnd::Stopped) => {
                    stopped = end == ReadEnd::Stopped;
                    conn.close(Close::Peer);
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut writer).await;
                    SocketEnd::Final
                }
            },
            end = &mut writer => match end {
                WriteEnd::Closed => {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut reader).await;
                    SocketEnd::Final
                }
                WriteEnd::Failed => SocketEnd::Lost,
                WriteEnd::Detached => SocketEnd::Superseded,
            },
            () = token.cancelled() => SocketEnd::Superseded,
            () = edge.kill.cancelled() => SocketEnd::Final,
        }
    };
    let unread = if stopped {
        stream.reunite(sink).ok()
    } else {
        None
    };
    (end, unread)
}

/// Reads client frames until the client closes or the socket fails. Once the server has
/// started closing, data frames are ignored while waiting for the client's close.
async fn read_loop<R>(
    edge: &Arc<Edge>,
    conn: &Arc<Connection>,
    mut stream: R,
    session: &Arc<Session>,
    metrics: &HubMetrics,
) -> ReadEnd
where
    R: Stream<Item = Result<WsMessage, WsError>> + Unpin,
{
    // Dropped with the reader, which cancels the calls still in flight and ends the streams
    // still open.
    let mut own = SocketOwned {
        invocations: Invocations::new(),
        streams: Streams::new(edge, conn),
    };
    let mut rate = RateLimiter::new(&edge.config.hub_limits(conn.hub()));
    let idle = edge.config.limits.idle_timeout;
    // One timer per socket, re-armed only when it fires: each frame just notes the time, so
    // busy sockets do not touch the timer wheel per frame.
    let mut last_seen = tokio::time::Instant::now();
    let idle_check = tokio::time::sleep(idle);
    tokio::pin!(idle_check);
    loop {
        // Pongs to our keep-alive pings count as traffic: only a dead or stuck peer is idle.
        let frame = tokio::select! {
            frame = stream.next() => match frame {
                Some(frame) => frame,
                None => break,
            },
            () = &mut idle_check => {
                if last_seen.elapsed() < idle {
                    idle_check.as_mut().reset(last_seen + idle);
                    continue;
                }
                edge.limits.hit(LimitKind::IdleTimeout);
                tracing::debug!(idle = ?idle, "nothing received within limits.idle_timeout");
                return ReadEnd::Lost;
            }
        };
        last_seen = tokio::time::Instant::now();
        let closing = conn.outbox().is_closing();
        if let Ok(WsMessage::Text(_) | WsMessage::Binary(_)) = &frame {
            let len = frame.as_ref().map_or(0, WsMessage::len);
            if let Err(kind) = rate.take(len, last_seen) {
                if !closing {
                    edge.limits.hit(kind);
                    let why = format!(
                        "The connection exceeded its limit of {} (limits.{}).",
                        match kind {
                            LimitKind::ByteRate => "bytes per second",
                            _ => "messages per second",
                        },
                        kind.name()
                    );
                    dispatch::server_close(conn, close::POLICY_VIOLATION, &why);
                }
                continue;
            }
        }
        match frame {
            Ok(WsMessage::Close(frame)) => {
                let normal = frame.is_some_and(|f| f.code == CloseCode::Normal);
                return ReadEnd::Closed { normal };
            }
            Ok(WsMessage::Text(_) | WsMessage::Binary(_)) if closing => {}
            Ok(WsMessage::Text(text)) => {
                metrics.received(Protocol::Default, false, text.len());
                let span = message_span(conn, "text");
                if let Some(event) = span.in_scope(|| dispatch::on_text(edge, conn, text)) {
                    let event =
                        span.in_scope(|| start_or_cancel(edge, conn, session, &mut own, event));
                    if let Some(event) = event {
                        // Boxed: the upstream call is large and rare, and an idle
                        // connection's task would otherwise reserve room for it.
                        Box::pin(user_event(edge, conn, session, event).instrument(span)).await;
                    }
                }
            }
            Ok(WsMessage::Binary(bytes)) => {
                metrics.received(Protocol::Default, true, bytes.len());
                let span = message_span(conn, "binary");
                if let Some(event) = span.in_scope(|| dispatch::on_binary(edge, conn, bytes)) {
                    let event =
                        span.in_scope(|| start_or_cancel(edge, conn, session, &mut own, event));
                    if let Some(event) = event {
                        // Boxed: the upstream call is large and rare, and an idle
                        // connection's task would otherwise reserve room for it.
                        Box::pin(user_event(edge, conn, session, event).instrument(span)).await;
                    }
                }
            }
            Ok(_) => {}
            Err(WsError::Capacity(e)) => {
                tracing::debug!(error = %e, "client frame too large");
                edge.limits.hit(LimitKind::MessageSize);
                let why = format!(
                    "The message exceeds the limit of {} bytes.",
                    edge.config.hub_limits(conn.hub()).max_message_bytes
                );
                dispatch::server_close(conn, close::TOO_BIG, &why);
                // The rest of the oversized frame cannot be skipped; stop reading.
                return ReadEnd::Stopped;
            }
            Err(WsError::Utf8(e)) => {
                tracing::debug!(error = %e, "text frame is not valid UTF-8");
                dispatch::server_close(
                    conn,
                    close::INVALID_PAYLOAD,
                    "The text message is not valid UTF-8.",
                );
                return ReadEnd::Stopped;
            }
            // The peer broke RFC 6455 (an unmasked frame, reserved bits or opcodes, a
            // fragmented or oversized control frame, a stray continuation): the connection
            // is failed with 1002, never kept for a recovery as if the network had failed.
            // The stream cannot be trusted past the bad frame, so reading stops. A TCP end
            // without a close frame is reported the same way by tungstenite, but that one is
            // the network's doing: a lost socket.
            Err(WsError::Protocol(e)) if e != ProtocolError::ResetWithoutClosingHandshake => {
                tracing::debug!(error = %e, "WebSocket protocol violation");
                dispatch::server_close(
                    conn,
                    close::PROTOCOL_ERROR,
                    &format!("WebSocket protocol error: {e}."),
                );
                return ReadEnd::Stopped;
            }
            Err(e) => {
                tracing::debug!(error = %e, "read failed");
                return ReadEnd::Lost;
            }
        }
    }
    ReadEnd::Lost
}

/// The span of one client message, when traces are exported (none otherwise: this is the
/// hot path). What the message does fills in `message.type`, `group` and `recipients`.
fn message_span(conn: &Connection, frame: &'static str) -> tracing::Span {
    if !trace::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "client message",
        hub = conn.hub().as_str(),
        connection.id = %conn.id(),
        frame,
        message.type = tracing::field::Empty,
        group = tracing::field::Empty,
        recipients = tracing::field::Empty,
    )
}

/// What a socket's reader owns beyond the socket: its `invoke` calls in flight and its open
/// group streams, both ended when it drops.
struct SocketOwned {
    invocations: Invocations,
    streams: Streams,
}

/// Starts an `invoke` (in a task of its own), carries out a `cancelInvocation` or a group
/// stream frame, without waiting; hands back any other event for [`user_event`].
fn start_or_cancel(
    edge: &Arc<Edge>,
    conn: &Arc<Connection>,
    session: &Arc<Session>,
    own: &mut SocketOwned,
    event: UserEvent,
) -> Option<UserEvent> {
    match event {
        UserEvent::Invoke(invocation) => own.invocations.start(edge, conn, session, invocation),
        UserEvent::CancelInvocation(id) => own.invocations.cancel(&id),
        UserEvent::Stream(StreamFrame::Start {
            group,
            no_echo,
            stream_id,
            idle_timeout_ms,
        }) => own
            .streams
            .start(&group, no_echo, &stream_id, idle_timeout_ms),
        UserEvent::Stream(StreamFrame::Data { stream_id, chunk }) => {
            own.streams.data(&stream_id, chunk);
        }
        UserEvent::Stream(StreamFrame::End { stream_id, error }) => {
            own.streams.end(&stream_id, error);
        }
        UserEvent::Stream(StreamFrame::Invalid { stream_id, message }) => {
            own.streams.invalid(&stream_id, &message);
        }
        other => return Some(other),
    }
    None
}

/// Hands a client's event or simple-client frame to the upstream and applies the answer.
/// The reader waits for it, so one client's events reach the backend in order.
async fn user_event(edge: &Edge, conn: &Connection, session: &Session, event: UserEvent) {
    match event {
        UserEvent::Event(event) => {
            upstream::on_json_event(&edge.upstream, &edge.node, session, conn, event).await;
        }
        UserEvent::Frame(data) => {
            upstream::on_simple_frame(&edge.upstream, session, conn, data).await;
        }
        // Taken by `start_or_cancel` before.
        UserEvent::Invoke(_) | UserEvent::CancelInvocation(_) | UserEvent::Stream(_) => {}
    }
}

/// Drains the outbox into the socket, one flush per batch, with keepalive pings in between.
async fn write_loop<W>(
    conn: &Connection,
    mut sink: W,
    epoch: u64,
    keepalive: Duration,
    metrics: &HubMetrics,
) -> WriteEnd
where
    W: Sink<WsMessage, Error = WsError> + Unpin,
{
    let format = conn.format();
    let mut batch = Vec::new();
    // Reused across batches: when each data message of the batch entered fan-out, and the
    // delivery spans of traced ones.
    let mut published = Vec::new();
    let mut deliveries = Vec::new();
    let mut scratch = BytesMut::new();
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let taken = tokio::select! {
            taken = conn.outbox().take(epoch, &mut batch) => taken,
            _ = keepalive.tick() => {
                if sink.send(WsMessage::Ping(Default::default())).await.is_err() {
                    return WriteEnd::Failed;
                }
                continue;
            }
        };
        match taken {
            Taken::Frames => {
                for queued in &batch {
                    if let Some(at) = queued.published {
                        published.push(at);
                    }
                    if let Some(parent) = &queued.trace {
                        deliveries.push(delivery_span(conn, parent));
                    }
                }
                let write = async {
                    for queued in batch.drain(..) {
                        let sequence_id = queued.sequence_id;
                        match protocol::render(format, queued, &mut scratch) {
                            Rendered::Whole(frame) => sink.feed(into_ws(frame)).await?,
                            Rendered::Fragments { text, head, tail } => {
                                let kind = if text { OpData::Text } else { OpData::Binary };
                                let head = WsFrame::message(head, OpCode::Data(kind), false);
                                let tail =
                                    WsFrame::message(tail, OpCode::Data(OpData::Continue), true);
                                sink.feed(WsMessage::Frame(head)).await?;
                                sink.feed(WsMessage::Frame(tail)).await?;
                            }
                        }
                        // Fed whole: the client may have it from now on, and may acknowledge
                        // it (not before: see `Outbox::acknowledge`). Noted before this task
                        // can yield, so the reader never sees an ack that outruns it.
                        if let Some(id) = sequence_id {
                            conn.outbox().written(id);
                        }
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
                deliveries.clear();
                if written {
                    // One clock read and a couple of atomic adds per batch.
                    let now = tokio::time::Instant::now();
                    metrics.fanout_latency.observe_all(
                        published
                            .drain(..)
                            .map(|at| now.saturating_duration_since(at)),
                    );
                } else {
                    published.clear();
                }
                if !written {
                    if conn.outbox().abandoned_now() {
                        final_close(conn, &mut sink).await;
                        return WriteEnd::Closed;
                    }
                    return WriteEnd::Failed;
                }
            }
            Taken::Close(Close::Server { .. }) => {
                final_close(conn, &mut sink).await;
                return WriteEnd::Closed;
            }
            Taken::Close(Close::Peer) => {
                // Flush tungstenite's pending reply to the client's close.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.flush()).await;
                return WriteEnd::Closed;
            }
            Taken::Detached => return WriteEnd::Detached,
        }
    }
}

/// The span of one message's write to this connection's socket, child of its fan-out.
fn delivery_span(conn: &Connection, parent: &TraceParent) -> tracing::Span {
    let span = tracing::info_span!(
        "deliver",
        hub = conn.hub().as_str(),
        connection.id = %conn.id(),
    );
    trace::set_parent(&span, trace::context_of(parent));
    span
}

/// Writes the close of a server-initiated close that has started on `conn`.
async fn final_close<W>(conn: &Connection, sink: &mut W)
where
    W: Sink<WsMessage, Error = WsError> + Unpin,
{
    if let Some(Close::Server { code, reason, .. }) = conn.outbox().current_close() {
        send_close(sink, conn.format(), code, &reason).await;
    }
}

/// Sends `disconnected` (protocol clients) and a close frame, giving up after
/// [`CLOSE_TIMEOUT`] (a stalled client cannot be told).
async fn send_close<W>(sink: &mut W, format: WireFormat, code: u16, reason: &str)
where
    W: Sink<WsMessage, Error = WsError> + Unpin,
{
    let send = async {
        if let Some(frame) = protocol::disconnected(format, reason) {
            sink.feed(into_ws(frame)).await?;
        }
        sink.send(WsMessage::Close(Some(CloseFrame {
            code: code.into(),
            reason: close_reason(reason).into(),
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
