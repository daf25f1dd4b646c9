//! What a client tells the application: connection lifecycle and received messages.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::payload::Payload;

/// Something that happened to a [`crate::Client`], in the order it happened.
///
/// A connection's life reads `Connected`, then messages, then `Disconnected`. A reliable
/// connection that is *recovered* after a drop is the same connection: no events mark the
/// drop, and no message is lost or repeated. A connection that cannot be recovered ends with
/// `Disconnected`; the client then starts a new connection (a new `Connected` with a new
/// connection id) unless auto-reconnect is off. `Stopped` is the last event.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A new connection is established (and, on a reconnection, the groups were rejoined).
    Connected(Connected),
    /// A connection ended and will not be recovered.
    Disconnected(Disconnected),
    /// A message published to a group this connection is in.
    GroupMessage(GroupMessage),
    /// A message the server sent to this connection, its user, or everyone.
    ServerMessage(ServerMessage),
    /// After a new connection, a group the client had joined could not be joined again.
    RejoinGroupFailed(RejoinGroupFailed),
    /// The client has stopped: it will not connect again, and no event follows.
    Stopped,
}

/// A connection is established.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Connected {
    /// The id the service gave this connection.
    pub connection_id: String,
    /// The user the connection is authenticated as; `None` if anonymous.
    pub user_id: Option<String>,
}

/// A connection ended for good.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Disconnected {
    /// The connection that ended.
    pub connection_id: String,
    /// The close code of the last socket, if it was closed with one (1008: the service
    /// refused to recover the connection); `None` if the socket was lost without a close.
    pub close_code: Option<u16>,
    /// Why: the service's `disconnected` message or close reason, or what the client saw.
    pub reason: Option<String>,
}

/// A message published to a group.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GroupMessage {
    /// The group.
    pub group: String,
    /// The publishing client's user id; `None` if the publisher was anonymous or the server,
    /// and always with the protobuf protocols (which do not carry it).
    pub from_user_id: Option<String>,
    /// The content.
    pub payload: Payload,
    /// The sequence id on reliable protocols (`None` otherwise).
    pub sequence_id: Option<u64>,
    /// Its place in a group stream, when it is a chunk (or the end) of one.
    pub stream: Option<StreamPosition>,
}

/// A group message's place in a group stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamPosition {
    /// The stream, as its publisher named it.
    pub stream_id: String,
    /// The chunk's number (1, 2, 3, …); for the end, one past the last chunk.
    pub sequence_id: u64,
    /// Chunks of this stream that never arrived right before this one (a gap; 0 normally).
    pub missed: u64,
    /// The stream's end: it carries no chunk.
    pub end: bool,
    /// Why the stream ended early: name (`UserError`, `IdleTimeout`, `Cancelled`), message
    /// and the publisher's own code.
    pub error: Option<(String, String, Option<String>)>,
}

/// A message sent by the server.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerMessage {
    /// The content.
    pub payload: Payload,
    /// The sequence id on reliable protocols (`None` otherwise).
    pub sequence_id: Option<u64>,
}

/// A group could not be rejoined on a new connection.
#[derive(Debug)]
#[non_exhaustive]
pub struct RejoinGroupFailed {
    /// The group. The client no longer counts itself a member: it will not try again.
    pub group: String,
    /// Why (e.g. [`Error::is_forbidden`] when the new token lacks the permission).
    pub error: Error,
}

/// The stream of a client's [`Event`]s.
///
/// Events are buffered without bound until read, so read them (or drop this stream, after
/// which events are discarded). The stream ends after [`Event::Stopped`].
///
/// It implements [`Stream`]; [`Events::recv`] is the same without the trait.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<Event>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the client has stopped and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
