//! The group streams one socket publishes (spec part 2 §4.2): `sendToGroup` with
//! `stream{streamId, idleTimeoutMs}` opens one, `streamData` chunks go to the group in order
//! (numbered 1, 2, 3, …), `streamEnd` closes it. The publisher gets `streamAck` for each
//! chunk taken (and for the start), `streamNack` for a chunk out of order (a gap: a lost
//! chunk), `streamClosed` at the end or when the service ends the stream; the group's
//! members get each chunk, and the end, as a group message carrying `stream{..}`.
//!
//! A stream lives as long as its socket: when the socket ends, every open stream ends for
//! the group with `Cancelled`. A stream without `streamData` (chunks or keep-alives) for its
//! idle timeout ends with `IdleTimeout`, for the group and for the publisher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::Edge;
use crate::limits::LimitKind;
use crate::message::{Data, StreamError, StreamInfo};
use crate::protocol::{self, StreamReply};
use crate::router::{self, Connection, Permission};

/// The idle timeout of a stream that names none, and the longest one (Azure's 300 s).
const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The shortest idle timeout a stream may ask for.
const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest stream id, in characters.
const MAX_STREAM_ID_CHARS: usize = 128;

/// One open stream.
#[derive(Debug)]
struct Open {
    group: Arc<str>,
    no_echo: bool,
    /// The sequence id the next chunk must have.
    expected: u64,
    idle: Duration,
    last_seen: Instant,
    /// Tells this stream from a later one with the same id, for its watchdog.
    generation: u64,
}

type Table = HashMap<Arc<str>, Open>;

/// The streams of one socket. Dropping it ends them (`Cancelled`).
#[derive(Debug)]
pub(super) struct Streams {
    edge: Arc<Edge>,
    conn: Arc<Connection>,
    table: Arc<Mutex<Table>>,
    /// Parent of the watchdogs: cancelled when the socket ends.
    socket: CancellationToken,
    next_generation: u64,
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Streams {
    pub(super) fn new(edge: &Arc<Edge>, conn: &Arc<Connection>) -> Self {
        Self {
            edge: edge.clone(),
            conn: conn.clone(),
            table: Arc::default(),
            socket: CancellationToken::new(),
            next_generation: 0,
        }
    }

    fn reply(&self, stream_id: &str, reply: StreamReply<'_>) {
        send_reply(&self.conn, stream_id, reply);
    }

    /// Opens a stream, answered `streamAck{expectedSequenceId: 1}`, or refuses it with
    /// `streamClosed`: a bad group name or id, no right to send to the group (`Forbidden`),
    /// an id already open (`BadRequest`), or `limits.max_streams_per_connection` open.
    pub(super) fn start(
        &mut self,
        group: &str,
        no_echo: bool,
        stream_id: &str,
        idle_timeout_ms: Option<u64>,
    ) {
        let conn = self.conn.clone();
        let refuse = |name: &str, why: &str| {
            send_reply(
                &conn,
                stream_id,
                StreamReply::Closed {
                    error: Some((name, why)),
                },
            );
        };
        if let Err(e) = router::check_group_name(group) {
            return refuse("BadRequest", &e.to_string());
        }
        if stream_id.chars().count() > MAX_STREAM_ID_CHARS {
            return refuse(
                "BadRequest",
                &format!("A stream id is at most {MAX_STREAM_ID_CHARS} characters."),
            );
        }
        if !self.conn.allows(Permission::SendToGroup, group) {
            let why = format!("The connection has no permission to send to group '{group}'.");
            return refuse("Forbidden", &why);
        }
        let limit = self.edge.config.limits.max_streams_per_connection;
        let idle = idle_timeout_ms
            .filter(|ms| *ms > 0)
            .map_or(MAX_IDLE_TIMEOUT, Duration::from_millis)
            .clamp(MIN_IDLE_TIMEOUT, MAX_IDLE_TIMEOUT);
        self.next_generation += 1;
        let generation = self.next_generation;
        let id: Arc<str> = stream_id.into();
        {
            let mut table = lock(&self.table);
            if table.contains_key(&id) {
                drop(table);
                return refuse(
                    "BadRequest",
                    &format!("Stream '{stream_id}' is already open on this connection."),
                );
            }
            if table.len() >= limit {
                drop(table);
                self.edge.limits.hit(LimitKind::StreamsPerConnection);
                let why = format!(
                    "The connection has {limit} streams open, its limit (limits.max_streams_per_connection)."
                );
                return refuse("Forbidden", &why);
            }
            table.insert(
                id.clone(),
                Open {
                    group: group.into(),
                    no_echo,
                    expected: 1,
                    idle,
                    last_seen: Instant::now(),
                    generation,
                },
            );
        }
        self.watch(id, generation);
        self.reply(stream_id, StreamReply::Ack { expected: 1 });
    }

    /// A chunk or keep-alive: a chunk in order goes to the group and is acked; an old one
    /// (a retry) is acked again and dropped; one past a gap is refused with
    /// `streamNack{InvalidSequenceId}` naming the chunk the stream waits for.
    pub(super) fn data(&self, stream_id: &str, chunk: Option<(u64, Data)>) {
        let mut table = lock(&self.table);
        let Some(open) = table.get_mut(stream_id) else {
            drop(table);
            return not_found(&self.conn, stream_id);
        };
        open.last_seen = Instant::now();
        let Some((sequence_id, data)) = chunk else {
            return;
        };
        let expected = open.expected;
        if sequence_id < expected {
            drop(table);
            return self.reply(stream_id, StreamReply::Ack { expected });
        }
        if sequence_id > expected {
            drop(table);
            let why = format!(
                "Chunk {sequence_id} of stream '{stream_id}' arrived before chunk {expected}."
            );
            return self.reply(
                stream_id,
                StreamReply::Nack {
                    name: "InvalidSequenceId",
                    message: &why,
                    expected,
                },
            );
        }
        open.expected += 1;
        let (group, no_echo) = (open.group.clone(), open.no_echo);
        // Published under the lock: the chunks of one stream reach the group in order.
        let info = StreamInfo {
            stream_id: stream_id.into(),
            sequence_id,
            end: false,
            error: None,
        };
        publish(&self.edge, &self.conn, &group, no_echo, data, info);
        drop(table);
        self.reply(
            stream_id,
            StreamReply::Ack {
                expected: expected + 1,
            },
        );
    }

    /// A `streamData` that could not be read: `streamNack{BadRequest}` naming the chunk the
    /// stream still waits for; the stream goes on.
    pub(super) fn invalid(&self, stream_id: &str, message: &str) {
        let expected = match lock(&self.table).get_mut(stream_id) {
            Some(open) => {
                open.last_seen = Instant::now();
                open.expected
            }
            None => return not_found(&self.conn, stream_id),
        };
        self.reply(
            stream_id,
            StreamReply::Nack {
                name: "BadRequest",
                message,
                expected,
            },
        );
    }

    /// `streamEnd`: the group gets the end (with the publisher's error as `UserError`), the
    /// publisher `streamClosed`.
    pub(super) fn end(&self, stream_id: &str, error: Option<(String, Option<String>)>) {
        let Some(open) = lock(&self.table).remove(stream_id) else {
            return not_found(&self.conn, stream_id);
        };
        let error = error.map(|(message, user_error_code)| StreamError {
            name: "UserError",
            message,
            user_error_code,
        });
        end_for_group(&self.edge, &self.conn, stream_id, &open, error);
        self.reply(stream_id, StreamReply::Closed { error: None });
    }

    /// Ends the stream when nothing arrives for its idle timeout.
    fn watch(&self, id: Arc<str>, generation: u64) {
        let (edge, conn, table, cancel) = (
            self.edge.clone(),
            self.conn.clone(),
            self.table.clone(),
            self.socket.clone(),
        );
        let task = async move {
            loop {
                let deadline = match lock(&table).get(&id) {
                    Some(open) if open.generation == generation => open.last_seen + open.idle,
                    _ => return,
                };
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = cancel.cancelled() => return,
                }
                let expired = {
                    let mut table = lock(&table);
                    match table.get(&id) {
                        Some(open)
                            if open.generation == generation
                                && open.last_seen + open.idle <= Instant::now() =>
                        {
                            table.remove(&id)
                        }
                        _ => None,
                    }
                };
                if let Some(open) = expired {
                    let why = format!(
                        "No streamData arrived for {} ms (the stream's idle timeout).",
                        open.idle.as_millis()
                    );
                    let error = StreamError {
                        name: "IdleTimeout",
                        message: why.clone(),
                        user_error_code: None,
                    };
                    end_for_group(&edge, &conn, &id, &open, Some(error));
                    send_reply(
                        &conn,
                        &id,
                        StreamReply::Closed {
                            error: Some(("IdleTimeout", &why)),
                        },
                    );
                    return;
                }
            }
        };
        self.edge.tracker.spawn(task.in_current_span());
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.socket.cancel();
        let open: Vec<_> = lock(&self.table).drain().collect();
        for (id, open) in open {
            let error = StreamError {
                name: "Cancelled",
                message: "The publisher's connection ended.".into(),
                user_error_code: None,
            };
            end_for_group(&self.edge, &self.conn, &id, &open, Some(error));
        }
    }
}

fn send_reply(conn: &Connection, stream_id: &str, reply: StreamReply<'_>) {
    if let Some(frame) = protocol::stream_reply(conn.format(), stream_id, reply) {
        conn.send_frame(frame);
    }
}

fn not_found(conn: &Connection, stream_id: &str) {
    let why = format!("Stream '{stream_id}' is not open on this connection.");
    send_reply(
        conn,
        stream_id,
        StreamReply::Closed {
            error: Some(("StreamNotFound", &why)),
        },
    );
}

/// The end of a stream for the group: an empty text message marked `endOfStream`, numbered
/// one past the last chunk (Azure's client drops a group message without `dataType`).
fn end_for_group(
    edge: &Edge,
    conn: &Connection,
    stream_id: &str,
    open: &Open,
    error: Option<StreamError>,
) {
    let info = StreamInfo {
        stream_id: stream_id.into(),
        sequence_id: open.expected,
        end: true,
        error,
    };
    publish(
        edge,
        conn,
        &open.group,
        open.no_echo,
        Data::Text("".into()),
        info,
    );
}

/// Hands one stream message to the group, on every node. A failed hand-over to the other
/// nodes is logged: the chunk reached this node's members, and the publisher's next chunk
/// goes on.
fn publish(
    edge: &Edge,
    conn: &Connection,
    group: &str,
    no_echo: bool,
    data: Data,
    info: StreamInfo,
) {
    let sent =
        edge.node
            .send_stream_chunk_from_client(conn, group, no_echo, data, Some(Arc::new(info)));
    if let Err(e) = sent {
        tracing::warn!(error = %e, "a stream message reached this node's members only");
    }
}
