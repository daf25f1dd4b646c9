//! What a client's frames do: parsing by subprotocol, permission checks, router calls, and
//! Azure's ack semantics. JSON and protobuf clients share every rule here; only parsing and
//! the encoding of replies differ.

use std::sync::Arc;

use bytes::Bytes;

use super::Edge;
use crate::limits::LimitKind;
use crate::message::Utf8Bytes;
use crate::message::{Data, Frame, WireFormat, close};
use crate::node::{Forwarded, NodeError, PresenceError};
use crate::protocol::{self, AckError, ClientMessage, ParseError, json};
use crate::router::{self, Close, Connection, Permission};
use crate::telemetry::trace;
use crate::upstream::{Invocation, JsonEvent};

/// What a frame asks of the upstream, which the reader awaits (the backend may take time).
#[derive(Debug)]
pub(super) enum UserEvent {
    /// An `event` message of a PubSub client.
    Event(JsonEvent),
    /// A frame of a simple client: the `message` event.
    Frame(Data),
    /// An `invoke`: the reader starts it and reads on.
    Invoke(Invocation),
    /// A `cancelInvocation`.
    CancelInvocation(String),
    /// A group stream frame: the reader's stream table takes it.
    Stream(StreamFrame),
}

/// A group stream frame of a JSON client.
#[derive(Debug)]
pub(super) enum StreamFrame {
    /// `sendToGroup` with `stream`.
    Start {
        group: String,
        no_echo: bool,
        stream_id: String,
        idle_timeout_ms: Option<u64>,
    },
    /// `streamData`.
    Data {
        stream_id: String,
        chunk: Option<(u64, Data)>,
    },
    /// A `streamData` that could not be read.
    Invalid { stream_id: String, message: String },
    /// `streamEnd`.
    End {
        stream_id: String,
        error: Option<(String, Option<String>)>,
    },
}

/// A text frame from the client.
pub(super) fn on_text(edge: &Edge, conn: &Arc<Connection>, text: Utf8Bytes) -> Option<UserEvent> {
    match conn.format() {
        WireFormat::Json => on_parsed(edge, conn, json::parse(&text)),
        WireFormat::Protobuf => {
            server_close(
                conn,
                close::UNSUPPORTED_DATA,
                "Text frames are not supported by the protobuf subprotocols.",
            );
            None
        }
        WireFormat::Simple | WireFormat::Mqtt | WireFormat::SocketIo => {
            Some(UserEvent::Frame(Data::Text(text)))
        }
    }
}

/// A binary frame from the client.
pub(super) fn on_binary(edge: &Edge, conn: &Arc<Connection>, bytes: Bytes) -> Option<UserEvent> {
    match conn.format() {
        WireFormat::Protobuf => on_parsed(edge, conn, protocol::protobuf::parse(&bytes)),
        WireFormat::Json => {
            server_close(
                conn,
                close::UNSUPPORTED_DATA,
                "Binary frames are not supported by the JSON subprotocols.",
            );
            None
        }
        WireFormat::Simple | WireFormat::Mqtt | WireFormat::SocketIo => {
            Some(UserEvent::Frame(Data::Binary(bytes)))
        }
    }
}

/// Starts a server-initiated close (a `disconnected` message, then the close frame).
pub(super) fn server_close(conn: &Connection, code: u16, reason: &str) {
    conn.close(Close::Server {
        code,
        reason: reason.into(),
        discard_queued: false,
    });
}

fn on_parsed(
    edge: &Edge,
    conn: &Arc<Connection>,
    parsed: Result<ClientMessage<'_>, ParseError>,
) -> Option<UserEvent> {
    match parsed {
        Ok(message) => return on_message(edge, conn, message),
        Err(ParseError::Malformed(why)) => server_close(
            conn,
            close::INVALID_PAYLOAD,
            &format!("Invalid message: {why}"),
        ),
        Err(ParseError::InvalidStreamStart { stream_id, message }) => reply(
            conn,
            protocol::stream_reply(
                conn.format(),
                &stream_id,
                protocol::StreamReply::Closed {
                    error: Some((AckError::BadRequest.name(), &message)),
                },
            ),
        ),
        Err(ParseError::InvalidStreamData { stream_id, message }) => {
            return Some(UserEvent::Stream(StreamFrame::Invalid {
                stream_id,
                message,
            }));
        }
        Err(ParseError::InvalidInvocation {
            invocation_id,
            message,
        }) => reply(
            conn,
            protocol::invoke_response(
                conn.format(),
                &invocation_id,
                Err((AckError::BadRequest.name(), &message)),
            ),
        ),
        Err(ParseError::Invalid { ack_id, message }) => {
            if let Some(id) = ack_id {
                reply(
                    conn,
                    protocol::ack(conn.format(), id, Some((AckError::BadRequest, &message))),
                );
            }
        }
    }
    None
}

/// Carries out one client message; an `event` is handed back for the upstream.
fn on_message(
    edge: &Edge,
    conn: &Arc<Connection>,
    message: ClientMessage<'_>,
) -> Option<UserEvent> {
    let node = &edge.node;
    if trace::enabled() {
        trace::record("message.type", message_type(&message));
    }
    match message {
        ClientMessage::JoinGroup { group, ack_id } => acked(edge, conn, ack_id, || {
            check_group(conn, Permission::JoinLeaveGroup, &group, "join")?;
            check_group_count(edge, conn, &group)?;
            if node.join_group_from_client(conn, &group) {
                group_presence(edge, conn, &group, true);
            }
            Ok(())
        }),
        ClientMessage::LeaveGroup { group, ack_id } => acked(edge, conn, ack_id, || {
            check_group(conn, Permission::JoinLeaveGroup, &group, "leave")?;
            if node.leave_group_from_client(conn, &group) {
                group_presence(edge, conn, &group, false);
            }
            Ok(())
        }),
        ClientMessage::SendToGroup {
            group,
            ack_id,
            no_echo,
            data,
        } => acked_after_publish(edge, conn, ack_id, || {
            check_group(conn, Permission::SendToGroup, &group, "send to")?;
            edge.node
                .send_to_group_from_client(conn, &group, no_echo, data)
                .map_err(|e| (AckError::InternalServerError, forward_failure(&e)))
        }),
        ClientMessage::Event {
            event,
            ack_id,
            data,
            metadata,
        } => {
            let max = edge.config.hub_limits(conn.hub()).max_event_name_chars;
            if event.chars().count() > max {
                edge.limits.hit(LimitKind::EventNameLength);
                if let Some(id) = ack_id {
                    let why = format!(
                        "The event name is longer than {max} characters (limits.max_event_name_chars)."
                    );
                    reply(
                        conn,
                        protocol::ack(conn.format(), id, Some((AckError::BadRequest, &why))),
                    );
                }
                return None;
            }
            return Some(UserEvent::Event(JsonEvent {
                name: event.into_owned(),
                ack_id,
                data,
                metadata,
            }));
        }
        ClientMessage::Invoke {
            invocation_id,
            event,
            data,
            metadata,
        } => {
            let max = edge.config.hub_limits(conn.hub()).max_event_name_chars;
            if event.chars().count() > max {
                edge.limits.hit(LimitKind::EventNameLength);
                let why = format!(
                    "The event name is longer than {max} characters (limits.max_event_name_chars)."
                );
                let error = Err((AckError::BadRequest.name(), why.as_str()));
                reply(
                    conn,
                    protocol::invoke_response(conn.format(), &invocation_id, error),
                );
                return None;
            }
            return Some(UserEvent::Invoke(Invocation {
                id: invocation_id.into_owned(),
                name: event.into_owned(),
                data,
                metadata,
            }));
        }
        ClientMessage::StreamStart {
            group,
            no_echo,
            stream_id,
            idle_timeout_ms,
        } => {
            return Some(UserEvent::Stream(StreamFrame::Start {
                group: group.into_owned(),
                no_echo,
                stream_id: stream_id.into_owned(),
                idle_timeout_ms,
            }));
        }
        ClientMessage::StreamData { stream_id, chunk } => {
            return Some(UserEvent::Stream(StreamFrame::Data {
                stream_id: stream_id.into_owned(),
                chunk,
            }));
        }
        ClientMessage::StreamEnd { stream_id, error } => {
            return Some(UserEvent::Stream(StreamFrame::End {
                stream_id: stream_id.into_owned(),
                error,
            }));
        }
        ClientMessage::CancelInvocation { invocation_id } => {
            return Some(UserEvent::CancelInvocation(invocation_id.into_owned()));
        }
        ClientMessage::SetGroupState {
            group,
            ack_id,
            state,
        } => acked_after_publish(edge, conn, ack_id, || {
            router::check_group_name(&group).map_err(|e| (AckError::BadRequest, e.to_string()))?;
            node.set_group_state(conn, &group, state)
                .map_err(|e| match e {
                    PresenceError::Refused(why) => (AckError::Forbidden, why),
                    PresenceError::Cluster(e) => {
                        (AckError::InternalServerError, forward_failure(&e))
                    }
                })
        }),
        ClientMessage::SubscribeGroupState { group, ack_id } => {
            subscribe_group_state(edge, conn, &group, ack_id);
        }
        ClientMessage::UnsubscribeGroupState { group, ack_id } => acked(edge, conn, ack_id, || {
            router::check_group_name(&group).map_err(|e| (AckError::BadRequest, e.to_string()))?;
            node.unsubscribe_group_state(conn, &group);
            Ok(())
        }),
        ClientMessage::Ping => reply(conn, protocol::pong(conn.format())),
        ClientMessage::SequenceAck { sequence_id } => {
            // An ack beyond what was written claims messages the client cannot have: ignored,
            // so that it never releases what a stalled socket still owes (see `Outbox`).
            // Azure's clients only acknowledge ids they received, so they never send one.
            if !conn.outbox().acknowledge(sequence_id) {
                tracing::debug!(sequence_id, "ignored an ack of messages not yet written");
            }
        }
        ClientMessage::Unsupported { kind, ack_id } => {
            tracing::debug!(kind = %kind, "unsupported message type");
            if let Some(id) = ack_id {
                let why = format!("Unsupported message type '{kind}'.");
                reply(
                    conn,
                    protocol::ack(conn.format(), id, Some((AckError::BadRequest, &why))),
                );
            }
        }
    }
    None
}

/// Raises the upstream group presence event (`gp.joined` / `gp.left`) of a client's join or
/// leave.
pub(super) fn group_presence(edge: &Edge, conn: &Connection, group: &str, joined: bool) {
    if let Some(session) = edge.sessions.get(conn.id().as_str()) {
        edge.upstream.group_presence(&session, group, joined);
    }
}

/// `subscribeGroupState`: allowed to a member of the group or a connection that may join it.
/// The snapshot (every node's states) is gathered in a task of its own, so the reader goes
/// on; it is sent before the ack, and every change after it.
fn subscribe_group_state(edge: &Edge, conn: &Arc<Connection>, group: &str, ack_id: Option<u64>) {
    let format = conn.format();
    let answer = |error: Option<(AckError, &str)>| {
        if let Some(id) = ack_id {
            reply(conn, protocol::ack(format, id, error));
        }
    };
    if let Err(e) = router::check_group_name(group) {
        return answer(Some((AckError::BadRequest, &e.to_string())));
    }
    let member = conn.membership().groups.contains(group);
    if !member && !conn.allows(Permission::JoinLeaveGroup, group) {
        let why = format!(
            "The connection may not see the state of group '{group}': it is not in the group and may not join it."
        );
        return answer(Some((AckError::Forbidden, &why)));
    }
    if let Some(id) = ack_id
        && conn.acks().is_duplicate(id)
    {
        let why = format!("Message with ack-id: {id} has been processed");
        return answer(Some((AckError::Duplicate, &why)));
    }
    let snapshot = match edge.node.subscribe_group_state(conn, group) {
        Ok(snapshot) => snapshot,
        Err(why) => return answer(Some((AckError::Forbidden, &why))),
    };
    let (conn, group) = (conn.clone(), group.to_owned());
    // On the edge's tracker, so shutdown waits for the snapshot as for the connection.
    edge.tracker.spawn(async move {
        match snapshot.await {
            Ok(items) => {
                reply(&conn, protocol::group_state(format, true, &group, &items));
                if let Some(id) = ack_id {
                    conn.acks().record(id);
                    reply(&conn, protocol::ack(format, id, None));
                }
            }
            Err(e) => {
                if let Some(id) = ack_id {
                    let why = format!("The group's state could not be gathered: {e}");
                    let error = Some((AckError::InternalServerError, why.as_str()));
                    reply(&conn, protocol::ack(format, id, error));
                }
            }
        }
    });
}

/// The Azure `type` of a client message, for its span.
fn message_type(message: &ClientMessage<'_>) -> &'static str {
    match message {
        ClientMessage::JoinGroup { .. } => "joinGroup",
        ClientMessage::LeaveGroup { .. } => "leaveGroup",
        ClientMessage::SendToGroup { .. } => "sendToGroup",
        ClientMessage::Event { .. } => "event",
        ClientMessage::SequenceAck { .. } => "sequenceAck",
        ClientMessage::Ping => "ping",
        ClientMessage::SetGroupState { .. } => "setGroupState",
        ClientMessage::SubscribeGroupState { .. } => "subscribeGroupState",
        ClientMessage::UnsubscribeGroupState { .. } => "unsubscribeGroupState",
        ClientMessage::Invoke { .. } => "invoke",
        ClientMessage::StreamStart { .. } => "sendToGroup",
        ClientMessage::StreamData { .. } => "streamData",
        ClientMessage::StreamEnd { .. } => "streamEnd",
        ClientMessage::CancelInvocation { .. } => "cancelInvocation",
        ClientMessage::Unsupported { .. } => "unsupported",
    }
}

/// Refuses a join beyond `limits.max_groups_per_connection` (rejoining a group is free).
fn check_group_count(
    edge: &Edge,
    conn: &Connection,
    group: &str,
) -> Result<(), (AckError, String)> {
    let max = edge.config.hub_limits(conn.hub()).max_groups_per_connection;
    let membership = conn.membership();
    if membership.groups.len() < max || membership.groups.contains(group) {
        return Ok(());
    }
    drop(membership);
    edge.limits.hit(LimitKind::GroupsPerConnection);
    Err((
        AckError::Forbidden,
        format!(
            "The connection has joined its limit of {max} groups (limits.max_groups_per_connection)."
        ),
    ))
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
/// without running the operation again; only successes are remembered. The memory belongs
/// to the connection, so it survives a reliable recovery.
fn acked(
    edge: &Edge,
    conn: &Arc<Connection>,
    ack_id: Option<u64>,
    op: impl FnOnce() -> Result<(), (AckError, String)>,
) {
    acked_after_publish(edge, conn, ack_id, || op().map(|()| None));
}

/// What a failed hand-over to the other nodes tells the client.
fn forward_failure(e: &NodeError) -> String {
    format!("Delivered on this node only; the other nodes may not have it: {e}")
}

/// [`acked`] for an operation that may also publish to the other nodes of a cluster: the
/// ack then waits (in a task of its own, so the socket's reader goes on) until Redis has
/// taken the message. A publish that fails gets an error ack, and the id is forgotten so
/// that a retry runs again: the ack never claims a delivery to other nodes that did not
/// happen.
fn acked_after_publish(
    edge: &Edge,
    conn: &Arc<Connection>,
    ack_id: Option<u64>,
    op: impl FnOnce() -> Result<Option<Forwarded>, (AckError, String)>,
) {
    let Some(id) = ack_id else {
        // Fire-and-forget: failures are silent, as in Azure.
        let _ = op();
        return;
    };
    let format = conn.format();
    // Check, run and record under one lock: a recovered socket resending a request while
    // the old socket's reader still runs it must not run it twice.
    let mut acks = conn.acks();
    if acks.is_duplicate(id) {
        drop(acks);
        let why = format!("Message with ack-id: {id} has been processed");
        return reply(
            conn,
            protocol::ack(format, id, Some((AckError::Duplicate, &why))),
        );
    }
    let result = op();
    if result.is_ok() {
        acks.record(id);
    }
    drop(acks);
    match result {
        Ok(None) => reply(conn, protocol::ack(format, id, None)),
        Ok(Some(forwarded)) => {
            let conn = conn.clone();
            // On the edge's tracker, so shutdown waits for the ack as for the connection.
            edge.tracker.spawn(async move {
                match forwarded.outcome().await {
                    Ok(()) => reply(&conn, protocol::ack(format, id, None)),
                    Err(e) => {
                        conn.acks().forget(id);
                        let why = forward_failure(&e);
                        let error = Some((AckError::InternalServerError, why.as_str()));
                        reply(&conn, protocol::ack(format, id, error));
                    }
                }
            });
        }
        Err((error, why)) => reply(conn, protocol::ack(format, id, Some((error, &why)))),
    }
}

fn reply(conn: &Connection, frame: Option<Frame>) {
    if let Some(frame) = frame {
        conn.send_frame(frame);
    }
}
