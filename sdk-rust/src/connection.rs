//! The task that owns the socket: it opens connections, recovers reliable ones, rejoins
//! groups, tracks acks and sequence ids, and turns what arrives into [`Event`]s.
//!
//! Every [`Client`](crate::Client) handle sends [`Command`]s to this one task, so the socket
//! has a single owner and no lock guards the connection state (the mini-redis
//! `BufferedClient` pattern).
//!
//! # Requests and ack ids
//! A request gets its ack id when the task receives it, and keeps it until the service
//! answers: sent again after an ack timeout, or on the next socket after a drop, it carries
//! the same id, so the service answers `Duplicate` rather than doing it twice. Requests are
//! (re)sent in the order they were made, after the rejoins of a new connection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::builder::{Options, UrlSource, check_url};
use crate::client::{Ack, AckChoice, Command, Op, State, Status};
use crate::error::{Error, Kind, Result};
use crate::event::{
    Connected, Disconnected, Event, GroupMessage, RejoinGroupFailed, ServerMessage, StreamPosition,
};
use crate::payload::Payload;
use crate::protocol::{self, Data, Incoming, Request};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What woke the connection's loop.
enum Wake {
    Frame(Option<std::result::Result<WsMessage, WsError>>),
    Command(Option<Command>),
    Tick,
}

/// Waits for the first of a frame, a command and a tick, like `tokio::select!` but without
/// tokio's macros (an SDK user then compiles one proc-macro crate fewer). The source polled
/// first rotates with `round`, so a flood on one side cannot starve the others.
async fn next_wake(
    round: usize,
    ws: &mut Ws,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    tick: &mut tokio::time::Interval,
) -> Wake {
    std::future::poll_fn(|cx| {
        for i in 0..3 {
            let woke = match (round + i) % 3 {
                0 => ws.poll_next_unpin(cx).map(Wake::Frame),
                1 => commands.poll_recv(cx).map(Wake::Command),
                _ => tick.poll_tick(cx).map(|_| Wake::Tick),
            };
            if woke.is_ready() {
                return woke;
            }
        }
        Poll::Pending
    })
    .await
}

/// How long a closing handshake may take when the client stops.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The close code with which the service refuses to recover a connection (Azure's clients
/// stop recovering on it).
const CLOSE_UNRECOVERABLE: u16 = 1008;

/// The `connected` message that opens every connection.
#[derive(Debug)]
struct Hello {
    connection_id: String,
    user_id: Option<String>,
    reconnection_token: Option<String>,
}

/// The logical connection the client is on.
#[derive(Debug)]
struct Session {
    id: String,
    user_id: Option<String>,
    /// Reliable protocols: what recovers this connection.
    token: Option<String>,
    /// The URL it was opened with; a recovery appends the connection id and token to it.
    url: String,
    /// Whether `Connected` was emitted (it waits for the rejoins of a new connection).
    announced: bool,
}

/// Pending requests are ordered by lane, then by arrival: rejoins go out first on a new
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Lane {
    Rejoin,
    Request,
}

type Key = (Lane, u64);

#[derive(Debug)]
enum Reply {
    Caller(oneshot::Sender<Result<Ack>>),
    Rejoin,
}

/// A request that is waiting to be sent or to be acknowledged.
#[derive(Debug)]
struct Pending {
    op: Op,
    ack_id: Option<u64>,
    /// Encoded once; every (re)send writes the same frame.
    frame: WsMessage,
    reply: Reply,
    /// When it was written on the current socket; `None`: not yet.
    sent_at: Option<Instant>,
    /// Resends after an ack timeout or an `InternalServerError`.
    retries: u32,
}

/// How a socket ended.
#[derive(Debug)]
enum End {
    /// The client is stopping.
    Stop,
    /// The socket is gone: closed by the service (with a close frame), failed, or silent.
    Lost {
        code: Option<u16>,
        reason: Option<String>,
    },
}

/// How a recovery ended.
#[derive(Debug)]
enum Recovery {
    Recovered(Box<Ws>),
    Failed {
        code: Option<u16>,
        reason: Option<String>,
    },
    Stop,
}

/// The connection task.
#[derive(Debug)]
pub(crate) struct Worker {
    opts: Arc<Options>,
    url: UrlSource,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    status: watch::Sender<Status>,
    /// [`crate::Builder::connect`] waits here for the outcome of the first connection.
    first: Option<oneshot::Sender<Result<()>>>,
    stop_waiters: Vec<oneshot::Sender<()>>,

    session: Option<Session>,
    /// Reliable protocols: the highest sequence id received on this connection.
    last_seq: u64,
    /// The highest sequence id acknowledged to the service.
    acked_seq: u64,
    last_seq_ack: Instant,

    next_key: u64,
    next_ack_id: u64,
    ops: BTreeMap<Key, Pending>,
    by_ack: HashMap<u64, Key>,
    /// Groups joined through the client, rejoined on a new connection.
    groups: BTreeSet<String>,
    /// Rejoins still unanswered on a new connection; `Connected` and messages wait for them.
    rejoining: usize,
    held: Vec<Event>,
    /// Invocations waiting to be sent or answered, by id.
    invocations: HashMap<String, Invocation>,
    /// Group streams this client publishes on the current socket, by id.
    streams: HashMap<String, OutStream>,
    /// The last chunk number seen of each received group stream, by group and stream id.
    inbound: HashMap<(String, String), u64>,
}

/// A group stream this client publishes: who waits for what.
#[derive(Debug, Default)]
struct OutStream {
    opening: Option<oneshot::Sender<Result<()>>>,
    /// Chunks written and not yet acknowledged, by sequence id.
    writes: BTreeMap<u64, oneshot::Sender<Result<()>>>,
    ending: Option<oneshot::Sender<Result<()>>>,
}

impl OutStream {
    /// Fails everyone still waiting.
    fn fail(self, error: impl Fn() -> Error) {
        if let Some(reply) = self.opening {
            let _ = reply.send(Err(error()));
        }
        for (_, reply) in self.writes {
            let _ = reply.send(Err(error()));
        }
        if let Some(reply) = self.ending {
            let _ = reply.send(Err(error()));
        }
    }
}

fn not_connected() -> Error {
    Error::new(Kind::Closed {
        code: None,
        reason: "not connected: a group stream lives on one socket".into(),
    })
}

/// An invocation waiting to be sent (on the next socket) or answered.
#[derive(Debug)]
struct Invocation {
    frame: WsMessage,
    reply: oneshot::Sender<Result<Option<Payload>>>,
    /// Written on the current socket.
    sent: bool,
}

impl Worker {
    pub(crate) fn new(
        opts: Arc<Options>,
        url: UrlSource,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<Event>,
        status: watch::Sender<Status>,
        first: Option<oneshot::Sender<Result<()>>>,
    ) -> Self {
        Self {
            opts,
            url,
            commands,
            events,
            status,
            first,
            stop_waiters: Vec::new(),
            session: None,
            last_seq: 0,
            acked_seq: 0,
            last_seq_ack: Instant::now(),
            next_key: 0,
            next_ack_id: 1,
            ops: BTreeMap::new(),
            by_ack: HashMap::new(),
            groups: BTreeSet::new(),
            rejoining: 0,
            held: Vec::new(),
            invocations: HashMap::new(),
            streams: HashMap::new(),
            inbound: HashMap::new(),
        }
    }

    /// Runs the client until it stops.
    pub(crate) async fn run(mut self) {
        let mut failures: u32 = 0;
        let mut wait = Duration::ZERO;
        loop {
            if !wait.is_zero() && !self.pause(wait).await {
                break;
            }
            self.set_state(State::Connecting);
            let opts = Arc::clone(&self.opts);
            let attempt = open_fresh(self.url.clone(), &opts, opts.connect_timeout);
            let Some(opened) = self.with_commands(attempt).await else {
                break;
            };
            let (ws, hello, url) = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    if let Some(first) = self.first.take() {
                        // `connect` reports the failure; nobody holds the events.
                        let _ = first.send(Err(error));
                        return;
                    }
                    failures += 1;
                    tracing::debug!(%error, failures, "connection attempt failed");
                    if !self.may_reconnect(failures) {
                        break;
                    }
                    wait = self.backoff(failures);
                    continue;
                }
            };
            failures = 0;
            let up_since = Instant::now();
            self.on_new_connection(hello, url);
            if let Some(first) = self.first.take() {
                let _ = first.send(Ok(()));
            }
            match self.serve(ws).await {
                End::Stop => break,
                End::Lost { code, reason } => {
                    self.end_session(code, reason);
                    if !self.may_reconnect(1) {
                        break;
                    }
                    // Reconnect at once after a connection that lived; else wait, so a
                    // service that keeps closing new connections is not hammered.
                    wait = if up_since.elapsed() >= self.opts.reconnect_delay {
                        Duration::ZERO
                    } else {
                        self.opts.reconnect_delay
                    };
                }
            }
        }
        self.finish().await;
    }

    /// Runs one logical connection, recovering it after drops where the protocol allows.
    async fn serve(&mut self, ws: Ws) -> End {
        let mut ws = ws;
        loop {
            let end = match self.flush(&mut ws).await {
                Ok(()) => self.drive(&mut ws).await,
                Err(e) => lost(&e),
            };
            let (code, reason) = match end {
                End::Stop => {
                    close(ws).await;
                    self.end_session(Some(1000), Some("the client stopped".into()));
                    return End::Stop;
                }
                End::Lost { code, reason } => (code, reason),
            };
            drop(ws);
            self.on_socket_lost();
            if !self.recoverable(code) {
                return End::Lost { code, reason };
            }
            tracing::debug!(?code, ?reason, "socket lost; recovering");
            match self.recover().await {
                Recovery::Recovered(recovered) => {
                    ws = *recovered;
                    // The service resends what it has not seen acknowledged; tell it what
                    // arrived, so it can drop that from its buffer.
                    if self.last_seq > 0
                        && let Err(e) = self.send_sequence_ack(&mut ws).await
                    {
                        tracing::debug!(error = %e, "sequence ack after recovery failed");
                    }
                }
                Recovery::Failed { code, reason } => return End::Lost { code, reason },
                Recovery::Stop => return End::Stop,
            }
        }
    }

    /// Reads, writes and keeps time on one socket until it ends or the client stops.
    async fn drive(&mut self, ws: &mut Ws) -> End {
        let period = self.tick_period();
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_rx = Instant::now();
        let mut last_ping = Instant::now();
        // The service's `disconnected` message, which precedes its close.
        let mut reason: Option<String> = None;
        let mut round = 0usize;
        loop {
            round = round.wrapping_add(1);
            let woke = next_wake(round, ws, &mut self.commands, &mut tick).await;
            match woke {
                Wake::Frame(frame) => {
                    last_rx = Instant::now();
                    match frame {
                        Some(Ok(WsMessage::Close(close))) => {
                            let (code, why) = close_parts(close);
                            return End::Lost {
                                code,
                                reason: reason.or(why),
                            };
                        }
                        Some(Ok(msg @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => {
                            match protocol::decode(self.opts.protocol, &msg) {
                                Ok(Incoming::Disconnected { reason: why }) => reason = Some(why),
                                Ok(incoming) => {
                                    if let Err(e) = self.on_incoming(ws, incoming).await {
                                        return lost(&e);
                                    }
                                }
                                Err(error) => tracing::warn!(%error, "ignored a message"),
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            let why = reason.unwrap_or_else(|| e.to_string());
                            return End::Lost {
                                code: None,
                                reason: Some(why),
                            };
                        }
                        None => return End::Lost { code: None, reason },
                    }
                }
                Wake::Command(command) => match command {
                    Some(Command::Request { op, ack, reply }) => {
                        self.enqueue(op, ack, reply);
                        if let Err(e) = self.flush(ws).await {
                            return lost(&e);
                        }
                    }
                    Some(Command::Invoke {
                        invocation_id,
                        event,
                        payload,
                        reply,
                    }) => {
                        self.enqueue_invocation(invocation_id, &event, &payload, reply);
                        if let Err(e) = self.flush(ws).await {
                            return lost(&e);
                        }
                    }
                    Some(Command::CancelInvocation(id)) => {
                        if self.invocations.remove(&id).is_some_and(|call| call.sent) {
                            let frame = protocol::encode(
                                self.opts.protocol,
                                &Request::CancelInvocation(&id),
                            );
                            if let Err(e) = ws.send(frame).await {
                                return lost(&e);
                            }
                        }
                    }
                    Some(
                        command @ (Command::StreamStart { .. }
                        | Command::StreamData { .. }
                        | Command::StreamEnd { .. }),
                    ) => {
                        if let Some(frame) = self.stream_command(command)
                            && let Err(e) = ws.send(frame).await
                        {
                            return lost(&e);
                        }
                    }
                    Some(Command::Stop { done }) => {
                        self.stop_waiters.push(done);
                        return End::Stop;
                    }
                    None => return End::Stop,
                },
                Wake::Tick => {
                    let timeout = self.opts.keepalive_timeout;
                    if !timeout.is_zero() && last_rx.elapsed() >= timeout {
                        let why = format!("nothing received for {timeout:?}");
                        return End::Lost {
                            code: None,
                            reason: Some(why),
                        };
                    }
                    let interval = self.opts.keepalive_interval;
                    let ping = !interval.is_zero() && last_ping.elapsed() >= interval;
                    if ping {
                        last_ping = Instant::now();
                    }
                    if let Err(e) = self.housekeeping(ws, ping).await {
                        return lost(&e);
                    }
                }
            }
        }
    }

    /// Periodic work: sequence acks, keep-alive pings, ack timeouts.
    async fn housekeeping(&mut self, ws: &mut Ws, ping: bool) -> Result<(), WsError> {
        if self.opts.protocol.is_reliable()
            && self.last_seq > self.acked_seq
            && self.last_seq_ack.elapsed() >= self.opts.sequence_ack_interval
        {
            self.send_sequence_ack(ws).await?;
        }
        if ping {
            ws.send(protocol::encode(self.opts.protocol, &Request::Ping))
                .await?;
        }
        let timeout = self.opts.ack_timeout;
        let expired: Vec<Key> = self
            .ops
            .iter()
            .filter(|(_, p)| p.sent_at.is_some_and(|t| t.elapsed() >= timeout))
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            let retries = self.ops[&key].retries;
            if retries < self.opts.max_retries {
                self.resend(ws, key).await?;
            } else if let Some(pending) = self.remove(key) {
                let error = Error::new(Kind::Timeout("no ack from the service"));
                self.settle(pending, Err(error));
            }
        }
        Ok(())
    }

    /// Sends a request again with the same ack id.
    async fn resend(&mut self, ws: &mut Ws, key: Key) -> Result<(), WsError> {
        let Some(pending) = self.ops.get_mut(&key) else {
            return Ok(());
        };
        pending.retries += 1;
        pending.sent_at = Some(Instant::now());
        tracing::debug!(ack_id = ?pending.ack_id, retry = pending.retries, "resending");
        let frame = pending.frame.clone();
        ws.send(frame).await
    }

    async fn send_sequence_ack(&mut self, ws: &mut Ws) -> Result<(), WsError> {
        let id = self.last_seq;
        ws.send(protocol::encode(
            self.opts.protocol,
            &Request::SequenceAck(id),
        ))
        .await?;
        self.acked_seq = id;
        self.last_seq_ack = Instant::now();
        Ok(())
    }

    async fn on_incoming(&mut self, ws: &mut Ws, incoming: Incoming) -> Result<(), WsError> {
        match incoming {
            Incoming::Data(data) => {
                if self.on_data(data) {
                    self.send_sequence_ack(ws).await?;
                }
            }
            Incoming::Ack {
                ack_id,
                success,
                error,
            } => self.on_ack(ws, ack_id, success, error).await?,
            Incoming::Connected {
                reconnection_token: Some(token),
                ..
            } => {
                if let Some(session) = &mut self.session {
                    session.token = Some(token);
                }
            }
            answer @ (Incoming::StreamAck { .. }
            | Incoming::StreamNack { .. }
            | Incoming::StreamClosed { .. }) => self.on_stream_answer(answer),
            Incoming::InvokeResponse {
                invocation_id,
                result,
            } => {
                if let Some(call) = self.invocations.remove(&invocation_id) {
                    let outcome = result.map_err(|(name, message)| {
                        Error::new(Kind::Invocation {
                            invocation_id,
                            name,
                            message,
                        })
                    });
                    let _ = call.reply.send(outcome);
                }
            }
            Incoming::Connected { .. }
            | Incoming::Disconnected { .. }
            | Incoming::Pong
            | Incoming::Unknown => {}
        }
        Ok(())
    }

    /// Emits a data message unless it is a duplicate; returns whether to acknowledge now.
    fn on_data(&mut self, data: Data) -> bool {
        if let Some(id) = data.sequence_id {
            if id <= self.last_seq {
                tracing::trace!(sequence_id = id, "duplicate dropped");
                return false;
            }
            self.last_seq = id;
        }
        let event = match data.group {
            Some(group) => {
                let stream = data
                    .stream
                    .map(|place| stream_position(&mut self.inbound, &group, place));
                Event::GroupMessage(GroupMessage {
                    group,
                    from_user_id: data.from_user_id,
                    payload: data.payload,
                    sequence_id: data.sequence_id,
                    stream,
                })
            }
            None => Event::ServerMessage(ServerMessage {
                payload: data.payload,
                sequence_id: data.sequence_id,
            }),
        };
        if self.rejoining > 0 {
            self.held.push(event);
        } else {
            self.emit(event);
        }
        self.opts.protocol.is_reliable()
            && self.last_seq.saturating_sub(self.acked_seq) >= self.opts.sequence_ack_threshold
    }

    async fn on_ack(
        &mut self,
        ws: &mut Ws,
        ack_id: u64,
        success: bool,
        error: Option<(String, String)>,
    ) -> Result<(), WsError> {
        let Some(&key) = self.by_ack.get(&ack_id) else {
            // The answer to a resend whose original was answered already.
            return Ok(());
        };
        let ack = |duplicate| -> Result<Ack> {
            Ok(Ack {
                ack_id: Some(ack_id),
                duplicate,
            })
        };
        let outcome = match error {
            _ if success => ack(false),
            Some((name, _)) if name == "Duplicate" => ack(true),
            Some((name, _))
                if name == "InternalServerError"
                    && self.ops[&key].retries < self.opts.max_retries =>
            {
                return self.resend(ws, key).await;
            }
            Some((name, message)) => Err(Error::new(Kind::Ack {
                ack_id,
                name,
                message,
            })),
            None => Err(Error::new(Kind::Ack {
                ack_id,
                name: String::new(),
                message: "the service reported a failure without an error".into(),
            })),
        };
        if let Some(pending) = self.remove(key) {
            self.settle(pending, outcome);
        }
        Ok(())
    }

    fn remove(&mut self, key: Key) -> Option<Pending> {
        let pending = self.ops.remove(&key)?;
        if let Some(id) = pending.ack_id {
            self.by_ack.remove(&id);
        }
        Some(pending)
    }

    /// Delivers the outcome of a request.
    fn settle(&mut self, pending: Pending, outcome: Result<Ack>) {
        match pending.reply {
            Reply::Caller(reply) => {
                if outcome.is_ok() {
                    match pending.op {
                        Op::JoinGroup(group) => {
                            self.groups.insert(group);
                        }
                        Op::LeaveGroup(group) => {
                            self.groups.remove(&group);
                        }
                        Op::SendToGroup { .. } | Op::SendEvent { .. } => {}
                    }
                }
                let _ = reply.send(outcome);
            }
            Reply::Rejoin => {
                if let (Op::JoinGroup(group), Err(error)) = (pending.op, outcome) {
                    tracing::debug!(%group, %error, "rejoin failed");
                    self.groups.remove(&group);
                    self.emit(Event::RejoinGroupFailed(RejoinGroupFailed { group, error }));
                }
                self.rejoining = self.rejoining.saturating_sub(1);
                if self.rejoining == 0 {
                    self.announce();
                }
            }
        }
    }

    /// Takes a request from a handle; it goes out with the next [`Worker::flush`].
    fn enqueue(&mut self, op: Op, ack: AckChoice, reply: oneshot::Sender<Result<Ack>>) {
        let ack_id = match ack {
            AckChoice::Auto => {
                let id = self.next_ack_id;
                self.next_ack_id += 1;
                Some(id)
            }
            AckChoice::Given(id) => {
                if self.by_ack.contains_key(&id) {
                    let why = format!("ack id {id} is in use by a pending request");
                    let _ = reply.send(Err(Error::invalid_argument(why)));
                    return;
                }
                // Automatic ids never reuse an id the application chose.
                self.next_ack_id = self.next_ack_id.max(id.saturating_add(1));
                Some(id)
            }
            AckChoice::None => None,
        };
        self.push(Lane::Request, op, ack_id, Reply::Caller(reply));
    }

    /// Records a group stream command; returns the frame to write, if any (a refused command
    /// is answered here).
    fn stream_command(&mut self, command: Command) -> Option<WsMessage> {
        let protocol = self.opts.protocol;
        match command {
            Command::StreamStart {
                stream_id,
                group,
                no_echo,
                idle_timeout_ms,
                reply,
            } => {
                if self.streams.contains_key(&stream_id) {
                    let why = format!("stream {stream_id} is open already");
                    let _ = reply.send(Err(Error::invalid_argument(why)));
                    return None;
                }
                let frame = protocol::encode(
                    protocol,
                    &Request::StreamStart {
                        group: &group,
                        stream_id: &stream_id,
                        no_echo,
                        idle_timeout_ms,
                    },
                );
                self.streams.insert(
                    stream_id,
                    OutStream {
                        opening: Some(reply),
                        ..OutStream::default()
                    },
                );
                Some(frame)
            }
            Command::StreamData {
                stream_id,
                chunk,
                reply,
            } => {
                let Some(stream) = self.streams.get_mut(&stream_id) else {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(not_connected()));
                    }
                    return None;
                };
                if let (Some((sequence_id, _)), Some(reply)) = (&chunk, reply) {
                    stream.writes.insert(*sequence_id, reply);
                }
                Some(protocol::encode(
                    protocol,
                    &Request::StreamData {
                        stream_id: &stream_id,
                        chunk: chunk.as_ref().map(|(id, payload)| (*id, payload)),
                    },
                ))
            }
            Command::StreamEnd {
                stream_id,
                error,
                reply,
            } => {
                let Some(stream) = self.streams.get_mut(&stream_id) else {
                    let _ = reply.send(Err(not_connected()));
                    return None;
                };
                stream.ending = Some(reply);
                Some(protocol::encode(
                    protocol,
                    &Request::StreamEnd {
                        stream_id: &stream_id,
                        error: error.as_ref().map(|(m, c)| (m.as_str(), c.as_deref())),
                    },
                ))
            }
            _ => None,
        }
    }

    /// The service's answers about a stream this client publishes.
    fn on_stream_answer(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::StreamAck {
                stream_id,
                expected,
            } => {
                let Some(stream) = self.streams.get_mut(&stream_id) else {
                    return;
                };
                if let Some(reply) = stream.opening.take() {
                    let _ = reply.send(Ok(()));
                }
                let later = stream.writes.split_off(&expected);
                for (_, reply) in std::mem::replace(&mut stream.writes, later) {
                    let _ = reply.send(Ok(()));
                }
            }
            Incoming::StreamNack {
                stream_id,
                name,
                message,
                expected,
            } => {
                let Some(stream) = self.streams.get_mut(&stream_id) else {
                    return;
                };
                for (_, reply) in stream.writes.split_off(&expected) {
                    let _ = reply.send(Err(Error::new(Kind::Stream {
                        stream_id: stream_id.clone(),
                        name: name.clone(),
                        message: message.clone(),
                    })));
                }
            }
            Incoming::StreamClosed { stream_id, error } => {
                let Some(mut stream) = self.streams.remove(&stream_id) else {
                    return;
                };
                let failure = |(name, message): &(String, String)| {
                    Error::new(Kind::Stream {
                        stream_id: stream_id.clone(),
                        name: name.clone(),
                        message: message.clone(),
                    })
                };
                if error.is_none()
                    && let Some(reply) = stream.ending.take()
                {
                    let _ = reply.send(Ok(()));
                }
                let error = error.unwrap_or(("StreamClosed".into(), "the stream is closed".into()));
                stream.fail(|| failure(&error));
            }
            _ => {}
        }
    }

    /// Takes an invocation from a handle; it goes out with the next [`Worker::flush`].
    fn enqueue_invocation(
        &mut self,
        invocation_id: String,
        event: &str,
        payload: &Payload,
        reply: oneshot::Sender<Result<Option<Payload>>>,
    ) {
        if self.invocations.contains_key(&invocation_id) {
            let why = format!("invocation id {invocation_id} is in flight already");
            let _ = reply.send(Err(Error::invalid_argument(why)));
            return;
        }
        let frame = protocol::encode(
            self.opts.protocol,
            &Request::Invoke {
                invocation_id: &invocation_id,
                event,
                payload,
            },
        );
        self.invocations.insert(
            invocation_id,
            Invocation {
                frame,
                reply,
                sent: false,
            },
        );
    }

    fn push(&mut self, lane: Lane, op: Op, ack_id: Option<u64>, reply: Reply) {
        let frame = protocol::encode(self.opts.protocol, &request(&op, ack_id));
        let key = (lane, self.next_key);
        self.next_key += 1;
        if let Some(id) = ack_id {
            self.by_ack.insert(id, key);
        }
        self.ops.insert(
            key,
            Pending {
                op,
                ack_id,
                frame,
                reply,
                sent_at: None,
                retries: 0,
            },
        );
    }

    /// Writes every request not yet written on this socket, in order.
    async fn flush(&mut self, ws: &mut Ws) -> Result<(), WsError> {
        for call in self.invocations.values_mut().filter(|c| !c.sent) {
            ws.feed(call.frame.clone()).await?;
            call.sent = true;
        }
        let unsent: Vec<Key> = self
            .ops
            .iter()
            .filter(|(_, p)| p.sent_at.is_none())
            .map(|(k, _)| *k)
            .collect();
        if unsent.is_empty() {
            return ws.flush().await;
        }
        for key in unsent {
            let frame = self.ops[&key].frame.clone();
            ws.feed(frame).await?;
            let pending = self.ops.get_mut(&key).expect("a request being flushed");
            if pending.ack_id.is_some() {
                pending.sent_at = Some(Instant::now());
            } else if let Some(pending) = self.remove(key) {
                // Fire-and-forget: written is all there is to know.
                self.settle(
                    pending,
                    Ok(Ack {
                        ack_id: None,
                        duplicate: false,
                    }),
                );
            }
        }
        ws.flush().await
    }

    /// A socket is gone: every pending request goes out again on the next one.
    fn on_socket_lost(&mut self) {
        for pending in self.ops.values_mut() {
            pending.sent_at = None;
        }
        // The service abandons the calls of a socket that ends: they fail (as in Azure's
        // client); calls not written yet go out on the next socket.
        let lost: Vec<String> = self
            .invocations
            .iter()
            .filter(|(_, c)| c.sent)
            .map(|(id, _)| id.clone())
            .collect();
        for (_, stream) in self.streams.drain() {
            stream.fail(not_connected);
        }
        for id in lost {
            if let Some(call) = self.invocations.remove(&id) {
                let _ = call.reply.send(Err(Error::new(Kind::Closed {
                    code: None,
                    reason: "the connection dropped before the invocation was answered".into(),
                })));
            }
        }
    }

    fn recoverable(&self, code: Option<u16>) -> bool {
        self.opts.protocol.is_reliable()
            && code != Some(CLOSE_UNRECOVERABLE)
            && self.session.as_ref().is_some_and(|s| s.token.is_some())
    }

    /// Reconnects to the same connection with its reconnection token, for up to the
    /// recovery timeout.
    async fn recover(&mut self) -> Recovery {
        let Some(session) = &self.session else {
            return Recovery::Failed {
                code: None,
                reason: None,
            };
        };
        let Some(token) = &session.token else {
            return Recovery::Failed {
                code: None,
                reason: None,
            };
        };
        let url = recovery_url(&session.url, &session.id, token);
        let id = session.id.clone();
        self.set_state(State::Recovering);
        let deadline = Instant::now() + self.opts.recovery_timeout;
        let mut attempts = 0u32;
        loop {
            let now = Instant::now();
            if now >= deadline {
                let why = format!(
                    "not recovered within {:?} ({attempts} attempts)",
                    self.opts.recovery_timeout
                );
                return Recovery::Failed {
                    code: None,
                    reason: Some(why),
                };
            }
            attempts += 1;
            let limit = self.opts.connect_timeout.min(deadline - now);
            let opts = Arc::clone(&self.opts);
            let attempt = open(url.clone(), &opts, limit);
            match self.with_commands(attempt).await {
                None => return Recovery::Stop,
                Some(Ok((ws, hello))) => {
                    if hello.connection_id != id {
                        // Not what was asked for; never mix two connections' sequence ids.
                        return Recovery::Failed {
                            code: None,
                            reason: Some("the service recovered another connection".into()),
                        };
                    }
                    if let Some(session) = &mut self.session
                        && hello.reconnection_token.is_some()
                    {
                        session.token = hello.reconnection_token;
                    }
                    tracing::debug!(connection.id = %id, attempts, "recovered");
                    self.set_state(State::Connected);
                    return Recovery::Recovered(Box::new(ws));
                }
                Some(Err(error)) => {
                    if let Kind::Closed {
                        code: Some(CLOSE_UNRECOVERABLE),
                        reason,
                    } = error.kind()
                    {
                        return Recovery::Failed {
                            code: Some(CLOSE_UNRECOVERABLE),
                            reason: Some(reason.clone()),
                        };
                    }
                    tracing::debug!(%error, attempts, "recovery attempt failed");
                    let wait = self
                        .opts
                        .recovery_retry_delay
                        .min(deadline.saturating_duration_since(Instant::now()));
                    if !self.pause(wait).await {
                        return Recovery::Stop;
                    }
                }
            }
        }
    }

    /// A new connection is up: forget the old one's sequence, rejoin groups, and announce it
    /// (once the rejoins are answered).
    fn on_new_connection(&mut self, hello: Hello, url: String) {
        tracing::debug!(connection.id = %hello.connection_id, "connected");
        self.last_seq = 0;
        self.acked_seq = 0;
        self.status.send_modify(|s| {
            s.state = State::Connected;
            s.connection_id = Some(hello.connection_id.clone());
            s.user_id = hello.user_id.clone();
        });
        self.session = Some(Session {
            id: hello.connection_id,
            user_id: hello.user_id,
            token: hello.reconnection_token,
            url,
            announced: false,
        });
        if self.opts.auto_rejoin_groups {
            let groups: Vec<String> = self.groups.iter().cloned().collect();
            for group in groups {
                let ack_id = self.next_ack_id;
                self.next_ack_id += 1;
                self.push(
                    Lane::Rejoin,
                    Op::JoinGroup(group),
                    Some(ack_id),
                    Reply::Rejoin,
                );
                self.rejoining += 1;
            }
        }
        if self.rejoining == 0 {
            self.announce();
        }
    }

    /// Emits `Connected`, then the messages that arrived while rejoining.
    fn announce(&mut self) {
        let Some(session) = &mut self.session else {
            return;
        };
        if !session.announced {
            session.announced = true;
            let event = Event::Connected(Connected {
                connection_id: session.id.clone(),
                user_id: session.user_id.clone(),
            });
            self.emit(event);
        }
        for event in std::mem::take(&mut self.held) {
            self.emit(event);
        }
    }

    /// The logical connection is over: emit `Disconnected`.
    fn end_session(&mut self, code: Option<u16>, reason: Option<String>) {
        // Rejoins that never got an answer: the groups stay remembered for the next one.
        let stale: Vec<Key> = self
            .ops
            .keys()
            .filter(|(lane, _)| *lane == Lane::Rejoin)
            .copied()
            .collect();
        for key in stale {
            self.remove(key);
        }
        self.rejoining = 0;
        self.announce();
        if let Some(session) = self.session.take() {
            tracing::debug!(connection.id = %session.id, ?code, ?reason, "disconnected");
            self.emit(Event::Disconnected(Disconnected {
                connection_id: session.id,
                close_code: code,
                reason,
            }));
        }
        self.status.send_modify(|s| {
            s.state = State::Connecting;
            s.connection_id = None;
            s.user_id = None;
        });
    }

    /// Stopped: fail what is pending, answer late commands, emit `Stopped`.
    async fn finish(mut self) {
        if self.session.is_some() {
            self.end_session(None, Some("the client stopped".into()));
        }
        let keys: Vec<Key> = self.ops.keys().copied().collect();
        for key in keys {
            if let Some(pending) = self.remove(key) {
                self.settle(pending, Err(Error::stopped()));
            }
        }
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Request { reply, .. } => {
                    let _ = reply.send(Err(Error::stopped()));
                }
                Command::Stop { done } => self.stop_waiters.push(done),
                Command::Invoke { reply, .. } => {
                    let _ = reply.send(Err(Error::stopped()));
                }
                Command::CancelInvocation(_) => {}
                Command::StreamStart { reply, .. } | Command::StreamEnd { reply, .. } => {
                    let _ = reply.send(Err(Error::stopped()));
                }
                Command::StreamData { reply, .. } => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(Error::stopped()));
                    }
                }
            }
        }
        for (_, stream) in self.streams.drain() {
            stream.fail(Error::stopped);
        }
        for (_, call) in self.invocations.drain() {
            let _ = call.reply.send(Err(Error::stopped()));
        }
        self.set_state(State::Stopped);
        self.emit(Event::Stopped);
        for done in self.stop_waiters.drain(..) {
            let _ = done.send(());
        }
        tracing::debug!("stopped");
    }

    /// Awaits `work` while taking requests (queued for the next socket); `None` if the
    /// client is to stop first.
    async fn with_commands<F: Future>(&mut self, work: F) -> Option<F::Output> {
        let mut work = std::pin::pin!(work);
        loop {
            let woke = std::future::poll_fn(|cx| {
                if let Poll::Ready(out) = work.as_mut().poll(cx) {
                    return Poll::Ready(Ok(out));
                }
                self.commands.poll_recv(cx).map(Err)
            })
            .await;
            match woke {
                Ok(out) => return Some(out),
                Err(Some(Command::Request { op, ack, reply })) => self.enqueue(op, ack, reply),
                Err(Some(Command::Invoke {
                    invocation_id,
                    event,
                    payload,
                    reply,
                })) => self.enqueue_invocation(invocation_id, &event, &payload, reply),
                Err(Some(Command::CancelInvocation(id))) => {
                    self.invocations.remove(&id);
                }
                Err(Some(
                    Command::StreamStart { reply, .. } | Command::StreamEnd { reply, .. },
                )) => {
                    let _ = reply.send(Err(not_connected()));
                }
                Err(Some(Command::StreamData { reply, .. })) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(not_connected()));
                    }
                }
                Err(Some(Command::Stop { done })) => {
                    self.stop_waiters.push(done);
                    return None;
                }
                Err(None) => return None,
            }
        }
    }

    /// Sleeps, taking requests; false if the client is to stop.
    async fn pause(&mut self, duration: Duration) -> bool {
        self.with_commands(tokio::time::sleep(duration))
            .await
            .is_some()
    }

    fn may_reconnect(&self, failures: u32) -> bool {
        self.opts.auto_reconnect
            && self
                .opts
                .max_reconnect_attempts
                .is_none_or(|max| failures <= max)
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.opts
            .reconnect_delay
            .saturating_mul(factor)
            .min(self.opts.max_reconnect_delay)
    }

    fn tick_period(&self) -> Duration {
        let o = &self.opts;
        [
            o.sequence_ack_interval,
            o.keepalive_interval,
            o.ack_timeout / 4,
            o.keepalive_timeout / 4,
        ]
        .into_iter()
        .filter(|d| !d.is_zero())
        .min()
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    fn set_state(&self, state: State) {
        self.status.send_modify(|s| s.state = state);
    }

    fn emit(&self, event: Event) {
        // No receiver: the application dropped its events and does not want them.
        let _ = self.events.send(event);
    }
}

/// Where a received group message stands in its stream, and how many chunks went missing
/// right before it (`last` holds the last chunk number seen per group and stream).
fn stream_position(
    last: &mut HashMap<(String, String), u64>,
    group: &str,
    place: protocol::StreamPlace,
) -> StreamPosition {
    let key = (group.to_owned(), place.stream_id.clone());
    let seen = last.get(&key).copied().unwrap_or(0);
    let missed = place.sequence_id.saturating_sub(seen + 1);
    if place.end {
        last.remove(&key);
    } else {
        last.insert(key, place.sequence_id.max(seen));
    }
    StreamPosition {
        stream_id: place.stream_id,
        sequence_id: place.sequence_id,
        missed,
        end: place.end,
        error: place.error,
    }
}

/// The request for `op`.
fn request(op: &Op, ack_id: Option<u64>) -> Request<'_> {
    match op {
        Op::JoinGroup(group) => Request::JoinGroup { group, ack_id },
        Op::LeaveGroup(group) => Request::LeaveGroup { group, ack_id },
        Op::SendToGroup {
            group,
            payload,
            no_echo,
        } => Request::SendToGroup {
            group,
            ack_id,
            no_echo: *no_echo,
            payload,
        },
        Op::SendEvent { event, payload } => Request::Event {
            event,
            ack_id,
            payload: Some(payload),
        },
    }
}

fn lost(error: &WsError) -> End {
    End::Lost {
        code: None,
        reason: Some(error.to_string()),
    }
}

fn close_parts(frame: Option<CloseFrame>) -> (Option<u16>, Option<String>) {
    match frame {
        Some(frame) => {
            let reason = frame.reason.as_str();
            (
                Some(u16::from(frame.code)),
                (!reason.is_empty()).then(|| reason.to_owned()),
            )
        }
        None => (None, None),
    }
}

/// `url` with the recovery parameters appended, as Azure's clients build it.
fn recovery_url(url: &str, connection_id: &str, token: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{separator}awps_connection_id={}&awps_reconnection_token={}",
        utf8_percent_encode(connection_id, NON_ALPHANUMERIC),
        utf8_percent_encode(token, NON_ALPHANUMERIC)
    )
}

/// Asks for a URL and opens a new connection with it.
async fn open_fresh(
    source: UrlSource,
    opts: &Options,
    timeout: Duration,
) -> Result<(Ws, Hello, String)> {
    let url = source
        .get()
        .await
        .map_err(|e| Error::with_source(Kind::UrlProvider, e))?;
    check_url(&url)?;
    let (ws, hello) = open(url.clone(), opts, timeout).await?;
    Ok((ws, hello, url))
}

/// Opens a socket and reads the service's `connected` message, within `timeout`.
async fn open(url: String, opts: &Options, timeout: Duration) -> Result<(Ws, Hello)> {
    let protocol = opts.protocol;
    #[cfg(feature = "tls")]
    let connector = opts
        .tls_config
        .clone()
        .map(tokio_tungstenite::Connector::Rustls);
    let work = async move {
        let mut request = url.as_str().into_client_request().map_err(|e| {
            Error::with_source(Kind::InvalidArgument("invalid client URL".into()), e)
        })?;
        request.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol.name()),
        );
        // No Nagle: small frames (acks, pings) must not wait for the peer's acks.
        #[cfg(feature = "tls")]
        let connected =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector).await;
        #[cfg(not(feature = "tls"))]
        let connected = tokio_tungstenite::connect_async_with_config(request, None, true).await;
        let (mut ws, _) = connected.map_err(connect_error)?;
        let mut reason = None;
        loop {
            match ws.next().await {
                Some(Ok(msg @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => {
                    match protocol::decode(protocol, &msg)? {
                        Incoming::Connected {
                            connection_id,
                            user_id,
                            reconnection_token,
                        } => {
                            let hello = Hello {
                                connection_id,
                                user_id,
                                reconnection_token,
                            };
                            return Ok((ws, hello));
                        }
                        Incoming::Disconnected { reason: why } => reason = Some(why),
                        _ => {}
                    }
                }
                Some(Ok(WsMessage::Close(close))) => {
                    let (code, why) = close_parts(close);
                    return Err(Error::new(Kind::Closed {
                        code,
                        reason: reason.or(why).unwrap_or_default(),
                    }));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Error::with_source(Kind::Connect, e)),
                None => {
                    return Err(Error::new(Kind::Closed {
                        code: None,
                        reason: reason.unwrap_or_default(),
                    }));
                }
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(Error::new(Kind::Timeout("connecting"))))
}

fn connect_error(error: WsError) -> Error {
    match error {
        WsError::Http(response) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            Error::with_source(Kind::Http(status), body)
        }
        other => Error::with_source(Kind::Connect, other),
    }
}

/// Closes a socket with a normal closure, for at most [`CLOSE_TIMEOUT`].
async fn close(mut ws: Ws) {
    let handshake = async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, handshake).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_in_received_streams_are_counted() {
        let mut last = HashMap::new();
        let place = |id: &str, n: u64, end: bool| protocol::StreamPlace {
            stream_id: id.into(),
            sequence_id: n,
            end,
            error: None,
        };
        let missed: Vec<u64> = [(1, false), (2, false), (5, false), (7, true)]
            .into_iter()
            .map(|(n, end)| stream_position(&mut last, "g", place("s", n, end)).missed)
            .collect();
        assert_eq!(missed, [0, 0, 2, 1]);
        assert!(last.is_empty(), "an ended stream is forgotten");
        // Streams are told apart by group and id.
        assert_eq!(
            stream_position(&mut last, "g", place("t", 1, false)).missed,
            0
        );
        assert_eq!(
            stream_position(&mut last, "h", place("t", 2, false)).missed,
            1
        );
    }

    #[test]
    fn recovery_url_appends_encoded_parameters() {
        assert_eq!(
            recovery_url("ws://h/client/hubs/x?access_token=a", "c1", "t+/="),
            "ws://h/client/hubs/x?access_token=a&awps_connection_id=c1&awps_reconnection_token=t%2B%2F%3D"
        );
        assert_eq!(
            recovery_url("ws://h/client/hubs/x", "c", "t"),
            "ws://h/client/hubs/x?awps_connection_id=c&awps_reconnection_token=t"
        );
    }

    /// With `tls`, a `wss://` URL goes through rustls (a provider is compiled in: a server
    /// that does not speak TLS is a connect error, not a panic).
    #[cfg(feature = "tls")]
    #[tokio::test]
    async fn wss_uses_rustls() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let _ = socket.write_all(b"HTTP/1.1 400 not tls\r\n\r\n").await;
        });
        let url = format!("wss://{addr}/client/hubs/x");
        let error = open(url, &Options::default(), Duration::from_secs(5))
            .await
            .expect_err("not a TLS server");
        assert!(error.is_connect(), "{error:?}");
        let source = std::error::Error::source(&error)
            .expect("source")
            .to_string();
        assert!(
            source.contains("corrupt message"),
            "a rustls error: {source}"
        );
        let _ = server.await;
    }
}
