//! Sockets between `accept` and their handshake, on both listeners.
//!
//! A socket that has been accepted but has not yet shown that it speaks the listener's
//! protocol costs a file descriptor and a task, and its peer needs no credentials to open
//! it. Three things bound what such sockets can take:
//! - a deadline from accept ([`Limits::handshake_timeout`](crate::limits::Limits)): the TLS
//!   handshake and the first request's headers (HTTP), or the TLS handshake and the HTTP/2
//!   connection preface (gRPC), must be in by then;
//! - a cap on how many there are at once, both listeners together
//!   ([`PendingSockets`], `limits.max_pending_sockets`): at the cap, the one that has waited
//!   longest is closed to make room, so a flood of silent sockets never keeps a new client
//!   out, it only shortens how long each silent socket may wait;
//! - the accept loops back off when `accept` itself fails (out of descriptors, typically),
//!   instead of retrying in a hot loop, and close the oldest pending socket to get a
//!   descriptor back ([`accept`]).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::either::Either;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::limits::{LimitCounters, LimitKind};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::Gauge;

/// The address of the peer of an HTTP connection, put in each request's extensions by the
/// accept loop (so the WebSocket edge reads it without importing the server).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// Which listener a socket came in on (the `listener` label of `hubcast_pending_sockets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// WebSockets, REST, health, metrics.
    Http = 0,
    /// The control plane and the event stream.
    Grpc = 1,
}

impl Listener {
    fn label(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

/// The pending sockets of both listeners, oldest first, and their cap.
#[derive(Debug)]
pub(crate) struct PendingSockets {
    max: usize,
    /// By the order in which they became pending: the first entry is the one to close.
    waiting: Mutex<Waiting>,
    limits: Arc<LimitCounters>,
    /// `hubcast_pending_sockets{listener}`, indexed by [`Listener`]; changed under the lock,
    /// so it is always the exact count.
    gauges: [Arc<Gauge>; 2],
}

#[derive(Debug, Default)]
struct Waiting {
    next: u64,
    sockets: BTreeMap<u64, (Listener, CancellationToken)>,
}

impl PendingSockets {
    /// A registry closing the oldest socket beyond `max`, counting in `limits` and `metrics`.
    pub(crate) fn new(max: usize, limits: Arc<LimitCounters>, metrics: &Metrics) -> Arc<Self> {
        let gauge = |l: Listener| metrics.registry().pending_sockets.with(&[l.label()]);
        Arc::new(Self {
            max,
            waiting: Mutex::new(Waiting::default()),
            limits,
            gauges: [gauge(Listener::Http), gauge(Listener::Grpc)],
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // Every change is made whole under the lock: a poisoned map is still consistent.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for a socket just accepted on `listener`; closes the oldest pending socket
    /// first if all places are taken.
    pub(crate) fn admit(self: &Arc<Self>, listener: Listener) -> Slot {
        let slot = Slot {
            registry: self.clone(),
            listener,
            evicted: CancellationToken::new(),
            key: AtomicU64::new(0),
            proven: AtomicBool::new(false),
        };
        slot.wait();
        slot
    }

    /// Closes the socket that has been pending longest, if there is one.
    pub(crate) fn evict_oldest(&self) -> bool {
        let mut waiting = self.lock();
        self.evict_locked(&mut waiting)
    }

    fn evict_locked(&self, waiting: &mut Waiting) -> bool {
        let Some((_, (listener, evicted))) = waiting.sockets.pop_first() else {
            return false;
        };
        self.gauges[listener as usize].dec();
        evicted.cancel();
        self.limits.hit(LimitKind::PendingSockets);
        true
    }

    /// Sockets pending now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().sockets.len()
    }
}

/// One socket's place among the pending sockets: pending from accept until [`Slot::proven`]
/// (HTTP: while it waits for a request's headers; gRPC: until its preface is in); removed
/// when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    registry: Arc<PendingSockets>,
    listener: Listener,
    /// Cancelled when the socket is closed to make room.
    evicted: CancellationToken,
    /// Its key among the pending sockets; 0 while not pending (keys start at 1).
    key: AtomicU64,
    /// Whether the socket has shown it speaks the protocol (its deadline no longer applies).
    proven: AtomicBool,
}

impl Slot {
    /// Makes the socket pending, as the newest; at the cap the oldest is closed first.
    fn wait(&self) {
        let registry = &self.registry;
        let mut waiting = registry.lock();
        if waiting.sockets.len() >= registry.max {
            registry.evict_locked(&mut waiting);
        }
        waiting.next += 1;
        let key = waiting.next;
        waiting
            .sockets
            .insert(key, (self.listener, self.evicted.clone()));
        registry.gauges[self.listener as usize].inc();
        self.key.store(key, Ordering::Relaxed);
    }

    /// Ends the pending state (a request is in, or the preface): the socket is no longer
    /// counted nor closed to make room.
    fn leave(&self) {
        let key = self.key.swap(0, Ordering::Relaxed);
        if key == 0 {
            return;
        }
        let registry = &self.registry;
        let mut waiting = registry.lock();
        // Absent if it was closed to make room meanwhile.
        if waiting.sockets.remove(&key).is_some() {
            registry.gauges[self.listener as usize].dec();
        }
    }

    /// The socket has shown it speaks the protocol: it is no longer pending, and its
    /// handshake deadline no longer applies.
    pub(crate) fn proven(&self) {
        self.proven.store(true, Ordering::Relaxed);
        self.leave();
    }

    /// Whether [`Slot::proven`] was called.
    pub(crate) fn is_proven(&self) -> bool {
        self.proven.load(Ordering::Relaxed)
    }

    /// HTTP: a request's headers are in; the socket is pending again, as the newest, once
    /// the returned guard (held while the request is handled) is dropped.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.proven();
        Busy(self.clone())
    }

    /// Resolves when the socket has been closed to make room.
    pub(crate) fn evicted(&self) -> WaitForCancellationFutureOwned {
        self.evicted.clone().cancelled_owned()
    }

    /// Counts a socket closed for missing its handshake deadline.
    pub(crate) fn timed_out(&self) {
        self.registry.limits.hit(LimitKind::HandshakeTimeout);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.leave();
    }
}

/// A request in progress on an HTTP connection; see [`Slot::busy`].
#[derive(Debug)]
pub(crate) struct Busy(Arc<Slot>);

impl Drop for Busy {
    fn drop(&mut self) {
        // A connection closed to make room meanwhile is going away: no place for it. One
        // that is going away otherwise (upgraded, closed) leaves again when its slot is
        // dropped, right after.
        if !self.0.evicted.is_cancelled() {
            self.0.wait();
        }
    }
}

/// First delay after `accept` fails; doubled on each further failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);

/// Longest delay between two `accept` attempts while they keep failing.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Failures further apart than this start a new burst, logged again.
const BURST_GAP: Duration = Duration::from_secs(10);

/// The state of one accept loop's back-off.
#[derive(Debug)]
pub(crate) struct Backoff {
    listener: Listener,
    delay: Duration,
    /// When the last failure was, to log once per burst of failures.
    last_failure: Option<Instant>,
    failures: u64,
}

impl Backoff {
    pub(crate) fn new(listener: Listener) -> Self {
        Self {
            listener,
            delay: FIRST_BACKOFF,
            last_failure: None,
            failures: 0,
        }
    }
}

/// Whether an `accept` error concerns only the connection being accepted (the peer gave up
/// before we took it): the next one may be accepted at once.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Accepts the next socket on `listener`. When `accept` fails for want of a resource (out
/// of file descriptors, EMFILE/ENFILE, typically), closes the oldest pending socket of
/// either listener, if any, to get a descriptor back, and waits before trying again: from
/// 10 ms, doubling up to 1 s, so a full descriptor table costs a few wake-ups a second
/// rather than a core. One warning per burst of failures.
pub(crate) async fn accept(
    listener: &TcpListener,
    pending: &PendingSockets,
    backoff: &mut Backoff,
) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(pair) => {
                if backoff.failures > 0 {
                    tracing::debug!(
                        listener = backoff.listener.label(),
                        failures = backoff.failures,
                        "accepting again"
                    );
                }
                backoff.delay = FIRST_BACKOFF;
                backoff.failures = 0;
                return pair;
            }
            Err(e) if per_connection(&e) => {
                tracing::debug!(error = %e, "a connection went away before it was accepted");
            }
            Err(e) => {
                let now = Instant::now();
                let new_burst = backoff
                    .last_failure
                    .is_none_or(|last| now.duration_since(last) > BURST_GAP);
                backoff.last_failure = Some(now);
                backoff.failures += 1;
                let evicted = pending.evict_oldest();
                if new_burst {
                    tracing::warn!(
                        listener = backoff.listener.label(),
                        error = %e,
                        closed_a_pending_socket = evicted,
                        "accept failed; backing off (logged once per burst)"
                    );
                } else {
                    tracing::debug!(error = %e, "accept failed again");
                }
                tokio::time::sleep(backoff.delay).await;
                backoff.delay = (backoff.delay * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The client connection preface of HTTP/2: the 24-byte magic and at least the header of
/// its SETTINGS frame (RFC 9113 §3.4). Once this much has arrived the peer speaks HTTP/2
/// (or has sent garbage, which the HTTP/2 server refuses), and keep-alive pings take over.
const H2_PREFACE_BYTES: usize = 24 + 9;

/// A gRPC listener socket: plain TCP, or TLS over it.
pub(crate) type GrpcIo = Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

/// A gRPC socket that is closed (its reads fail) if its HTTP/2 preface is not in by its
/// deadline or it is closed to make room before; after the preface it is a plain stream.
#[derive(Debug)]
pub(crate) struct Watched<IO> {
    io: IO,
    info: TcpConnectInfo,
    pending: Option<PendingWatch>,
}

#[derive(Debug)]
struct PendingWatch {
    slot: Slot,
    deadline: Pin<Box<Sleep>>,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Preface bytes still to come.
    remaining: usize,
}

impl<IO> Watched<IO> {
    fn new(io: IO, info: TcpConnectInfo, slot: Slot, deadline: Instant) -> Self {
        Self {
            io,
            info,
            pending: Some(PendingWatch {
                evicted: Box::pin(slot.evicted()),
                slot,
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                remaining: H2_PREFACE_BYTES,
            }),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(p) = &mut this.pending {
            // The HTTP/2 server always has a read outstanding, so polling the deadline here
            // is enough to be woken when it passes.
            if p.evicted.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "closed to make room for newer sockets (limits.max_pending_sockets)",
                )));
            }
            if p.deadline.as_mut().poll(cx).is_ready() {
                p.slot.timed_out();
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface within limits.handshake_timeout",
                )));
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        if let Some(p) = &mut this.pending {
            p.remaining = p.remaining.saturating_sub(read);
            if p.remaining == 0 {
                p.slot.proven();
                this.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO> Connected for Watched<IO> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

/// Settings of the gRPC listener's accept loop.
#[derive(Clone)]
pub(crate) struct GrpcAccept {
    pub(crate) pending: Arc<PendingSockets>,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) handshake_timeout: Duration,
    /// Where the accept loop and TLS handshakes are spawned (the server's tracker).
    pub(crate) tasks: TaskTracker,
}

impl std::fmt::Debug for GrpcAccept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcAccept")
            .field("tls", &self.tls.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Accepts gRPC sockets until `stop`, each watched until its preface is in (TLS handshakes
/// run in tasks of their own, under the same deadline), as the stream of connections tonic
/// serves. Tonic's own accept loop retries a failed `accept` at once, so a full descriptor
/// table would spin it; this one backs off ([`accept`]).
pub(crate) fn grpc_incoming(
    listener: TcpListener,
    settings: GrpcAccept,
    stop: CancellationToken,
) -> impl futures_util::Stream<Item = io::Result<Watched<GrpcIo>>> + Send + 'static {
    // A few sockets may wait here for tonic to take them; beyond that, accepting waits.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Watched<GrpcIo>>>(16);
    let tasks = settings.tasks.clone();
    tasks.spawn(async move {
        let mut backoff = Backoff::new(Listener::Grpc);
        loop {
            let (stream, _) = tokio::select! {
                accepted = accept(&listener, &settings.pending, &mut backoff) => accepted,
                () = stop.cancelled() => return,
            };
            let deadline = Instant::now() + settings.handshake_timeout;
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let info = stream.connect_info();
            let slot = settings.pending.admit(Listener::Grpc);
            match &settings.tls {
                None => {
                    let io = Watched::new(Either::Left(stream), info, slot, deadline);
                    if tx.send(Ok(io)).await.is_err() {
                        return;
                    }
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    let stop = stop.clone();
                    settings.tasks.spawn(async move {
                        let evicted = slot.evicted();
                        let tls = tokio::select! {
                            tls = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => tls,
                            () = evicted => return,
                            // Shutdown awaits this task: a stalled handshake must not hold it.
                            () = stop.cancelled() => return,
                        };
                        let stream = match tls {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "gRPC TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                slot.timed_out();
                                tracing::debug!("gRPC TLS handshake timed out");
                                return;
                            }
                        };
                        let io =
                            Watched::new(Either::Right(Box::new(stream)), info, slot, deadline);
                        let _ = tx.send(Ok(io)).await;
                    });
                }
            }
        }
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize) -> (Arc<PendingSockets>, Arc<LimitCounters>, Metrics) {
        let limits = Arc::new(LimitCounters::default());
        let metrics = Metrics::new();
        (
            PendingSockets::new(max, limits.clone(), &metrics),
            limits,
            metrics,
        )
    }

    #[test]
    fn at_the_cap_the_oldest_pending_socket_is_closed_for_the_newest() {
        let (pending, limits, metrics) = registry(2);
        let first = pending.admit(Listener::Http);
        let second = pending.admit(Listener::Grpc);
        assert_eq!(pending.len(), 2);
        let third = pending.admit(Listener::Http);
        assert_eq!(pending.len(), 2);
        assert!(first.evicted.is_cancelled(), "the oldest made room");
        assert!(!second.evicted.is_cancelled() && !third.evicted.is_cancelled());
        assert_eq!(limits.get(LimitKind::PendingSockets), 1);
        let gauge = |l: &str| metrics.registry().pending_sockets.with(&[l]).get();
        assert_eq!((gauge("http"), gauge("grpc")), (1, 1));
        drop(first);
        assert_eq!(
            pending.len(),
            2,
            "an evicted slot's drop removes nothing else"
        );
        second.proven();
        assert_eq!(pending.len(), 1);
        assert_eq!(gauge("grpc"), 0);
        drop(third);
        assert_eq!((pending.len(), gauge("http")), (0, 0));
    }

    #[test]
    fn a_busy_http_connection_is_not_pending_and_becomes_the_newest_when_idle_again() {
        let (pending, _, _) = registry(2);
        let old = Arc::new(pending.admit(Listener::Http));
        let other = pending.admit(Listener::Http);
        let busy = old.busy();
        assert!(old.is_proven());
        assert_eq!(pending.len(), 1);
        drop(busy);
        assert_eq!(pending.len(), 2);
        // `other` is now the oldest: it goes first.
        let _newcomer = pending.admit(Listener::Http);
        assert!(other.evicted.is_cancelled());
        assert!(!old.evicted.is_cancelled());
        assert!(pending.evict_oldest());
        assert!(old.evicted.is_cancelled());
    }
}
