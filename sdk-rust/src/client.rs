//! [`Client`]: the cheap, cloneable handle through which an application joins groups and
//! sends messages. Every handle talks over a channel to one task that owns the socket.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot, watch};

use crate::builder::{Builder, UrlFuture, UrlSource};
use crate::error::{BoxError, Error, Result};
use crate::payload::Payload;

/// A WebSocket client of Hubcast (or Azure Web PubSub) for services and devices.
///
/// It speaks one of the PubSub subprotocols ([`crate::Protocol`]; reliable JSON by default),
/// and keeps its connection up on its own:
///
/// - **Recovery** (reliable protocols): when the socket drops, the client reconnects to the
///   *same* connection for up to 30 s; the service then sends every message the client missed,
///   and the client drops the ones it had already seen. The application notices nothing.
/// - **Reconnection**: when a connection cannot be recovered (or the protocol is not
///   reliable), the client starts a new one (asking the URL provider for a fresh URL) and
///   joins its groups again.
/// - **Acks and retries**: every request carries an ack id and is answered by the service.
///   A request that is not answered in time, or whose answer was lost with the socket, is
///   sent again with the same ack id, so the service answers `Duplicate` instead of doing it
///   twice; the client counts that as success ([`Ack::is_duplicate`]).
/// - **Sequence acks and keep-alive**: received messages are acknowledged every second (and
///   at once when many arrive); `ping` messages keep idle connections alive.
///
/// Cloning a `Client` is cheap and every clone drives the same connection. The connection
/// stops with [`Client::stop`], or when every clone has been dropped.
///
/// # Examples
///
/// ```no_run
/// use hubcast_sdk::{Client, Event};
///
/// # async fn run() -> hubcast_sdk::Result<()> {
/// let url = "ws://127.0.0.1:8080/client/hubs/chat?access_token=...";
/// let (client, mut events) = Client::builder(url).connect().await?;
/// client.join_group("room").await?;
/// client.send_to_group("room", "hello").no_echo(true).await?;
/// while let Some(event) = events.recv().await {
///     if let Event::GroupMessage(m) = event {
///         println!("{}: {:?}", m.group, m.payload);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Status>,
    /// The last automatic invocation id, shared by every handle.
    invocation_ids: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Where a client's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum State {
    /// Opening a new connection (the first, or one after a connection ended).
    #[default]
    Connecting,
    /// Connected: requests go out at once.
    Connected,
    /// A reliable connection dropped and the client is recovering it; requests wait.
    Recovering,
    /// Stopped for good.
    Stopped,
}

/// What the connection task publishes for the handles.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    pub(crate) state: State,
    pub(crate) connection_id: Option<String>,
    pub(crate) user_id: Option<String>,
}

/// A request from a handle to the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    Request {
        op: Op,
        ack: AckChoice,
        reply: oneshot::Sender<Result<Ack>>,
    },
    Stop {
        done: oneshot::Sender<()>,
    },
    /// An invocation, sent when connected and answered by `invokeResponse`.
    Invoke {
        invocation_id: String,
        event: String,
        payload: Payload,
        reply: oneshot::Sender<Result<Option<Payload>>>,
    },
    /// The caller stopped waiting: the service is told, and answers nothing.
    CancelInvocation(String),
    /// Opens a group stream on the current socket; answered once the service took it.
    StreamStart {
        stream_id: String,
        group: String,
        no_echo: bool,
        idle_timeout_ms: Option<u32>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// A chunk (answered once the service took it) or a keep-alive (`chunk: None`).
    StreamData {
        stream_id: String,
        chunk: Option<(u64, Payload)>,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// Ends a group stream; answered once the service closed it.
    StreamEnd {
        stream_id: String,
        error: Option<(String, Option<String>)>,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// An operation of the protocol that the service acknowledges.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    JoinGroup(String),
    LeaveGroup(String),
    SendToGroup {
        group: String,
        payload: Payload,
        no_echo: bool,
    },
    SendEvent {
        event: String,
        payload: Payload,
    },
}

/// Which ack id a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckChoice {
    /// The next id of the client's counter.
    Auto,
    /// One chosen by the application.
    Given(u64),
    /// None: fire-and-forget.
    None,
}

/// The outcome of a request the service carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub(crate) ack_id: Option<u64>,
    pub(crate) duplicate: bool,
}

impl Ack {
    /// The ack id the request carried; `None` for fire-and-forget requests (which resolve
    /// once written to the socket, without an answer from the service).
    pub fn ack_id(&self) -> Option<u64> {
        self.ack_id
    }

    /// The service had already carried out a request with this ack id: a retry (after a
    /// timeout or a dropped socket) reached it after the original did. The request took
    /// effect exactly once.
    pub fn is_duplicate(&self) -> bool {
        self.duplicate
    }
}

impl Client {
    /// A builder for a client that connects to `url`, a client access URL such as
    /// `ws://host:port/client/hubs/{hub}?access_token=<jwt>`. The same URL is used for every
    /// new connection, so its token must outlive the client; otherwise use
    /// [`Client::builder_with_url_provider`].
    pub fn builder(url: impl Into<String>) -> Builder {
        Builder::new(UrlSource::Fixed(url.into()))
    }

    /// A builder for a client that asks `provider` for a client access URL before every new
    /// connection (but not when it recovers a reliable connection, which needs no token): the
    /// place to mint or fetch a fresh token.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use hubcast_sdk::Client;
    ///
    /// async fn fetch_url() -> Result<String, std::io::Error> {
    ///     // e.g. ask the application's backend for a token
    ///     Ok("ws://127.0.0.1:8080/client/hubs/chat?access_token=...".to_owned())
    /// }
    ///
    /// # async fn run() -> hubcast_sdk::Result<()> {
    /// let (client, events) = Client::builder_with_url_provider(fetch_url).connect().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder_with_url_provider<F, Fut, E>(provider: F) -> Builder
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let provider = move || -> UrlFuture {
            let url = provider();
            Box::pin(async move { url.await.map_err(Into::into) })
        };
        Builder::new(UrlSource::Provider(std::sync::Arc::new(provider)))
    }

    pub(crate) fn new(
        commands: mpsc::UnboundedSender<Command>,
        status: watch::Receiver<Status>,
    ) -> Self {
        Self {
            commands,
            status,
            invocation_ids: Default::default(),
        }
    }

    /// Joins `group`. The client remembers it and joins it again on every new connection.
    ///
    /// # Errors
    /// See [`AckFuture`].
    pub fn join_group(&self, group: impl Into<String>) -> AckFuture {
        self.request(Op::JoinGroup(group.into()), AckChoice::Auto)
    }

    /// Leaves `group`.
    ///
    /// # Errors
    /// See [`AckFuture`].
    pub fn leave_group(&self, group: impl Into<String>) -> AckFuture {
        self.request(Op::LeaveGroup(group.into()), AckChoice::Auto)
    }

    /// Publishes `payload` to every connection in `group` (the sender too, unless
    /// [`SendToGroup::no_echo`]). Await the returned request to send it.
    pub fn send_to_group(
        &self,
        group: impl Into<String>,
        payload: impl Into<Payload>,
    ) -> SendToGroup<'_> {
        SendToGroup {
            client: self,
            group: group.into(),
            payload: payload.into(),
            no_echo: false,
            ack: AckChoice::Auto,
        }
    }

    /// Sends the custom event `event` with `payload` to the application's upstream (its event
    /// handler). Await the returned request to send it.
    pub fn send_event(
        &self,
        event: impl Into<String>,
        payload: impl Into<Payload>,
    ) -> SendEvent<'_> {
        SendEvent {
            client: self,
            event: event.into(),
            payload: payload.into(),
            ack: AckChoice::Auto,
        }
    }

    /// Opens a group stream to `group` (Azure's `sendToGroup` with `stream`): resolves with
    /// a writer once the service took it. Its chunks reach the group's members in order, as
    /// one stream ([`crate::GroupMessage::stream`]). A stream lives on its socket: when the
    /// socket drops, the writer's next call fails ([`Error::is_closed`]).
    ///
    /// # Errors
    /// [`Error::is_stream`]: the service refused the stream (`Forbidden`, `BadRequest`, the
    /// per-connection limit); [`Error::is_closed`]: not connected.
    pub fn open_group_stream(&self, group: impl Into<String>) -> OpenGroupStream<'_> {
        OpenGroupStream {
            client: self,
            group: group.into(),
            stream_id: None,
            no_echo: false,
            idle_timeout: None,
        }
    }

    /// Calls the hub's upstream (`invoke`: the user event `azure.webpubsub.user.<event>`)
    /// and resolves with its answer, if it sent data. Awaiting the returned builder sends it;
    /// dropping the future before the answer cancels the call at the service
    /// (`cancelInvocation`), and so does [`InvokeEvent::timeout`] when it passes.
    ///
    /// # Errors
    /// [`Error::is_invocation`]: the upstream refused or failed the call, or the service gave
    /// up on it ([`Error::invocation_error_name`]); [`Error::is_timeout`]: the caller's
    /// timeout passed; [`Error::is_closed`]: the connection dropped with the call in flight;
    /// [`Error::is_invalid_argument`]: its invocation id is in flight already.
    pub fn invoke_event(
        &self,
        event: impl Into<String>,
        payload: impl Into<Payload>,
    ) -> InvokeEvent<'_> {
        InvokeEvent {
            client: self,
            event: event.into(),
            payload: payload.into(),
            invocation_id: None,
            timeout: None,
        }
    }

    /// Stops the client: closes the connection, fails pending requests with
    /// [`Error::is_stopped`], and emits [`crate::Event::Disconnected`] (if connected) and
    /// [`crate::Event::Stopped`]. Returns once that is done. Stopping a stopped client does
    /// nothing.
    pub async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Stop { done }).is_ok() {
            // An error means the task ended anyway.
            let _ = wait.await;
        }
    }

    /// Where the connection stands.
    pub fn state(&self) -> State {
        self.status.borrow().state
    }

    /// The id of the current connection (kept while a reliable connection is recovering);
    /// `None` before the first connection and between connections.
    pub fn connection_id(&self) -> Option<String> {
        self.status.borrow().connection_id.clone()
    }

    /// The user id of the current connection; `None` if anonymous or not connected.
    pub fn user_id(&self) -> Option<String> {
        self.status.borrow().user_id.clone()
    }

    fn request(&self, op: Op, ack: AckChoice) -> AckFuture {
        let (reply, rx) = oneshot::channel();
        match self.commands.send(Command::Request { op, ack, reply }) {
            Ok(()) => AckFuture {
                inner: Inner::Waiting(rx),
            },
            Err(_) => AckFuture { inner: Inner::Done },
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status.borrow();
        f.debug_struct("Client")
            .field("state", &status.state)
            .field("connection_id", &status.connection_id)
            .finish_non_exhaustive()
    }
}

/// The answer to a request: resolves once the service acknowledged it.
///
/// The request is already on its way when this future exists; dropping the future does not
/// cancel it.
///
/// # Errors
/// - [`Error::is_ack`]: the service refused the request (e.g. [`Error::is_forbidden`]).
/// - [`Error::is_timeout`]: no ack after the ack timeout and every retry.
/// - [`Error::is_stopped`]: the client stopped first.
/// - [`Error::is_invalid_argument`]: the chosen ack id is already in use by a pending request.
#[derive(Debug)]
#[must_use = "the outcome of a request is only known by awaiting it"]
pub struct AckFuture {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Waiting(oneshot::Receiver<Result<Ack>>),
    Done,
}

impl Future for AckFuture {
    type Output = Result<Ack>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Ack>> {
        match &mut self.inner {
            Inner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(Error::stopped()))),
            Inner::Done => Poll::Ready(Err(Error::stopped())),
        }
    }
}

/// A `sendToGroup` request; options are set with its methods, and awaiting it sends it.
#[derive(Debug)]
#[must_use = "a request does nothing until awaited"]
pub struct SendToGroup<'a> {
    client: &'a Client,
    group: String,
    payload: Payload,
    no_echo: bool,
    ack: AckChoice,
}

impl SendToGroup<'_> {
    /// Do not deliver the message back to this connection (if it is in the group). Default:
    /// off.
    pub fn no_echo(mut self, no_echo: bool) -> Self {
        self.no_echo = no_echo;
        self
    }

    /// Send without an ack id: no answer, no retry, failures are silent. The request resolves
    /// once written to the socket (or, while disconnected, once written on the next
    /// connection).
    pub fn fire_and_forget(mut self) -> Self {
        self.ack = AckChoice::None;
        self
    }

    /// Use this ack id instead of the client's counter, e.g. to make an application-level
    /// retry idempotent: the service answers `Duplicate` to an id it has processed on this
    /// connection.
    pub fn ack_id(mut self, ack_id: u64) -> Self {
        self.ack = AckChoice::Given(ack_id);
        self
    }
}

impl IntoFuture for SendToGroup<'_> {
    type Output = Result<Ack>;
    type IntoFuture = AckFuture;

    fn into_future(self) -> AckFuture {
        self.client.request(
            Op::SendToGroup {
                group: self.group,
                payload: self.payload,
                no_echo: self.no_echo,
            },
            self.ack,
        )
    }
}

/// An `event` request; options are set with its methods, and awaiting it sends it.
#[derive(Debug)]
#[must_use = "a request does nothing until awaited"]
pub struct SendEvent<'a> {
    client: &'a Client,
    event: String,
    payload: Payload,
    ack: AckChoice,
}

impl SendEvent<'_> {
    /// As [`SendToGroup::fire_and_forget`].
    pub fn fire_and_forget(mut self) -> Self {
        self.ack = AckChoice::None;
        self
    }

    /// As [`SendToGroup::ack_id`].
    pub fn ack_id(mut self, ack_id: u64) -> Self {
        self.ack = AckChoice::Given(ack_id);
        self
    }
}

impl IntoFuture for SendEvent<'_> {
    type Output = Result<Ack>;
    type IntoFuture = AckFuture;

    fn into_future(self) -> AckFuture {
        self.client.request(
            Op::SendEvent {
                event: self.event,
                payload: self.payload,
            },
            self.ack,
        )
    }
}

/// An invocation being built ([`Client::invoke_event`]); await it to send it.
#[derive(Debug)]
#[must_use = "an invocation does nothing until awaited"]
pub struct InvokeEvent<'a> {
    client: &'a Client,
    event: String,
    payload: Payload,
    invocation_id: Option<String>,
    timeout: Option<std::time::Duration>,
}

impl InvokeEvent<'_> {
    /// The invocation id; default: the next of the client's counter (`"1"`, `"2"`, …).
    pub fn invocation_id(mut self, id: impl Into<String>) -> Self {
        self.invocation_id = Some(id.into());
        self
    }

    /// Gives up (and cancels the call at the service) after `timeout`.
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl IntoFuture for InvokeEvent<'_> {
    type Output = Result<Option<Payload>>;
    type IntoFuture = InvokeFuture;

    fn into_future(self) -> InvokeFuture {
        let client = self.client;
        let invocation_id = self.invocation_id.unwrap_or_else(|| {
            let n = client
                .invocation_ids
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (n + 1).to_string()
        });
        let (reply, rx) = oneshot::channel();
        let sent = client.commands.send(Command::Invoke {
            invocation_id: invocation_id.clone(),
            event: self.event,
            payload: self.payload,
            reply,
        });
        InvokeFuture {
            rx: sent.is_ok().then_some(rx),
            commands: client.commands.clone(),
            invocation_id,
            timeout: self.timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            done: false,
        }
    }
}

/// The answer to an invocation ([`Client::invoke_event`]). Dropping it before the answer
/// cancels the call at the service.
#[derive(Debug)]
#[must_use = "the answer of an invocation is only known by awaiting it"]
pub struct InvokeFuture {
    rx: Option<oneshot::Receiver<Result<Option<Payload>>>>,
    commands: mpsc::UnboundedSender<Command>,
    invocation_id: String,
    timeout: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

impl InvokeFuture {
    /// The invocation's id.
    pub fn invocation_id(&self) -> &str {
        &self.invocation_id
    }
}

impl Future for InvokeFuture {
    type Output = Result<Option<Payload>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(rx) = this.rx.as_mut() else {
            this.done = true;
            return Poll::Ready(Err(Error::stopped()));
        };
        if let Poll::Ready(answer) = Pin::new(rx).poll(cx) {
            this.done = true;
            return Poll::Ready(answer.unwrap_or_else(|_| Err(Error::stopped())));
        }
        if let Some(timeout) = this.timeout.as_mut()
            && timeout.as_mut().poll(cx).is_ready()
        {
            // Not done: dropping the future tells the service.
            return Poll::Ready(Err(Error::new(crate::error::Kind::Timeout(
                "no answer to the invocation in time",
            ))));
        }
        Poll::Pending
    }
}

impl Drop for InvokeFuture {
    fn drop(&mut self) {
        if !self.done && self.rx.is_some() {
            let _ = self
                .commands
                .send(Command::CancelInvocation(self.invocation_id.clone()));
        }
    }
}

/// A group stream being opened ([`Client::open_group_stream`]); await it to open it.
#[derive(Debug)]
#[must_use = "a stream is only opened when awaited"]
pub struct OpenGroupStream<'a> {
    client: &'a Client,
    group: String,
    stream_id: Option<String>,
    no_echo: bool,
    idle_timeout: Option<std::time::Duration>,
}

impl OpenGroupStream<'_> {
    /// The stream id; default: a fresh one.
    pub fn stream_id(mut self, id: impl Into<String>) -> Self {
        self.stream_id = Some(id.into());
        self
    }

    /// The publisher does not receive its own chunks.
    pub fn no_echo(mut self, no_echo: bool) -> Self {
        self.no_echo = no_echo;
        self
    }

    /// The service ends the stream after this long without a chunk or keep-alive (at most
    /// 300 s, the default).
    pub fn idle_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }
}

impl<'a> IntoFuture for OpenGroupStream<'a> {
    type Output = Result<GroupStreamWriter>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<GroupStreamWriter>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let stream_id = self.stream_id.unwrap_or_else(fresh_stream_id);
            let (reply, rx) = oneshot::channel();
            self.client
                .commands
                .send(Command::StreamStart {
                    stream_id: stream_id.clone(),
                    group: self.group,
                    no_echo: self.no_echo,
                    idle_timeout_ms: self
                        .idle_timeout
                        .map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX)),
                    reply,
                })
                .map_err(|_| Error::stopped())?;
            rx.await.unwrap_or_else(|_| Err(Error::stopped()))?;
            Ok(GroupStreamWriter {
                commands: self.client.commands.clone(),
                stream_id,
                next: 1,
            })
        })
    }
}

/// A fresh stream id: the time and a process-wide counter, unique within a client.
fn fresh_stream_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{nanos:x}-{n}")
}

/// The publishing end of a group stream ([`Client::open_group_stream`]).
#[derive(Debug)]
pub struct GroupStreamWriter {
    commands: mpsc::UnboundedSender<Command>,
    stream_id: String,
    next: u64,
}

impl GroupStreamWriter {
    /// The stream's id.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Sends the next chunk; resolves once the service took it (`streamAck`).
    ///
    /// # Errors
    /// [`Error::is_stream`]: refused (`streamNack`) or the stream ended
    /// (`IdleTimeout`, ...); [`Error::is_closed`]: the socket dropped.
    pub async fn write(&mut self, payload: impl Into<Payload>) -> Result<()> {
        let sequence_id = self.next;
        self.next += 1;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::StreamData {
                stream_id: self.stream_id.clone(),
                chunk: Some((sequence_id, payload.into())),
                reply: Some(reply),
            })
            .map_err(|_| Error::stopped())?;
        rx.await.unwrap_or_else(|_| Err(Error::stopped()))
    }

    /// Tells the service the stream is alive without a chunk (it ends idle streams).
    ///
    /// # Errors
    /// [`Error::is_stopped`]: the client is stopped.
    pub fn keep_alive(&self) -> Result<()> {
        self.commands
            .send(Command::StreamData {
                stream_id: self.stream_id.clone(),
                chunk: None,
                reply: None,
            })
            .map_err(|_| Error::stopped())
    }

    /// Ends the stream; resolves once the service closed it (`streamClosed`).
    ///
    /// # Errors
    /// As [`GroupStreamWriter::write`].
    pub async fn end(self) -> Result<()> {
        self.finish(None).await
    }

    /// Ends the stream with an error for its readers (`UserError` with `message` and
    /// `user_error_code`).
    ///
    /// # Errors
    /// As [`GroupStreamWriter::write`].
    pub async fn end_with_error(
        self,
        message: impl Into<String>,
        user_error_code: Option<String>,
    ) -> Result<()> {
        self.finish(Some((message.into(), user_error_code))).await
    }

    async fn finish(self, error: Option<(String, Option<String>)>) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::StreamEnd {
                stream_id: self.stream_id.clone(),
                error,
                reply,
            })
            .map_err(|_| Error::stopped())?;
        rx.await.unwrap_or_else(|_| Err(Error::stopped()))
    }
}
