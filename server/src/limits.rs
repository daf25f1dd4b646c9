//! Limits on what one client, user or hub may use, and the count of every refusal.
//!
//! A public WebSocket endpoint meets broken and hostile clients; each limit here bounds one
//! way such a client could take memory, CPU or connections from everybody else. Every limit
//! has a default that a normal application never reaches, can be changed for every hub in
//! `[limits]` and for one hub in `[hubs.<name>.limits]`, and answers with a specific HTTP
//! status, close code or ack error whose text names the limit (see README, "Limits").
//!
//! The message size limit (`max_message_bytes`, close 1009) moved here from
//! `client.max_message_bytes`, which still sets its default for every hub (see
//! [`Limits::max_message_bytes`]). Limits that already had a home stay there: the outbox
//! (`client.outbox_bytes`, close 1013) and the unacknowledged buffers of reliable
//! connections (`client.unacked_*`, close 1008).
//! Hub and group name rules are Azure's and fixed (`router::hub_key`,
//! `router::check_group_name`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::telemetry::Metrics;

/// Default of [`Limits::max_message_bytes`]: Azure's 1 MB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Limits for every hub (`[limits]`), and the listener-wide ones.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame or message a client may send, in bytes; a larger one closes the
    /// connection with 1009. `None` (not in `[limits]`): `client.max_message_bytes`, the
    /// setting's older home, if given, else [`DEFAULT_MAX_MESSAGE_BYTES`]. An `Option` so
    /// that a file giving both with different values can be refused rather than one of them
    /// silently ignored (see `Config::check`).
    pub max_message_bytes: Option<usize>,
    /// Open connections of one hub. Beyond it, upgrades are refused with 429.
    pub max_connections_per_hub: usize,
    /// Open connections of one user in one hub. Beyond it, upgrades are refused with 429.
    pub max_connections_per_user: usize,
    /// Groups one connection may join itself (`joinGroup`); a further join is acked with
    /// `Forbidden`. Groups added by the control plane are the backend's choice and not counted
    /// against it.
    pub max_groups_per_connection: usize,
    /// Frames one connection may send per second, sustained; up to one second's worth may
    /// come in a burst. Beyond it the connection is closed with 1008.
    pub messages_per_second: u32,
    /// Bytes of frames one connection may send per second, as `messages_per_second`.
    pub bytes_per_second: u64,
    /// Longest user id (`sub` claim) in characters; a longer one is refused with 400.
    pub max_user_id_chars: usize,
    /// Longest user event name in characters; a longer one is acked with `BadRequest`.
    pub max_event_name_chars: usize,
    /// Listener-wide: time a socket has, from the moment it is accepted, to show that it
    /// speaks the listener's protocol: on the HTTP listener the TLS handshake (if any) and
    /// the headers of its first request, on the gRPC listener the TLS handshake (if any) and
    /// the HTTP/2 connection preface. A socket that sends nothing is closed when it passes,
    /// as is one that trickles its bytes (slow loris). On the HTTP listener it also bounds
    /// each later request's headers, counted from the end of the previous response, so a
    /// kept-alive connection cannot idle for longer either. Not per hub: the hub is not
    /// known yet.
    #[serde(with = "crate::config::seconds")]
    pub handshake_timeout: Duration,
    /// Listener-wide: sockets (both listeners together) accepted and not yet past their
    /// handshake (see [`Limits::handshake_timeout`]), plus HTTP connections idle between
    /// requests. When a new socket would exceed it, the one of them that has waited
    /// longest is closed to make room, so sockets that send nothing can neither exhaust the
    /// process's file descriptors nor keep a new client out. A WebSocket, once upgraded,
    /// and a gRPC connection, once its preface is in, no longer count.
    pub max_pending_sockets: usize,
    /// Listener-wide: time a REST request has to deliver its whole body, counted from the
    /// moment the handler starts reading it. Beyond it the request is answered with 408 and
    /// the connection closed.
    #[serde(with = "crate::config::seconds")]
    pub request_body_timeout: Duration,
    /// Listener-wide: WebSocket upgrades being decided at once (token check and the blocking
    /// `connect` event). More are refused with 503 at once rather than queued.
    pub max_concurrent_handshakes: usize,
    /// Listener-wide: a socket from which nothing (not even a pong to our keep-alive pings)
    /// has arrived for this long is dropped as dead. Must exceed `client.keepalive_interval`.
    #[serde(with = "crate::config::seconds")]
    pub idle_timeout: Duration,
    /// Listener-wide: `invoke` calls one socket may have waiting for the upstream at once; a
    /// further one is answered with a failed `invokeResponse` (`Forbidden`) at once.
    pub max_invocations_per_connection: usize,
    /// Listener-wide: group streams one socket may have open at once; a further start is
    /// answered with `streamClosed` (`Forbidden`).
    pub max_streams_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: None,
            max_connections_per_hub: 1_000_000,
            max_connections_per_user: 10_000,
            max_groups_per_connection: 1_000,
            messages_per_second: 1_000,
            bytes_per_second: 16 * 1024 * 1024,
            max_user_id_chars: 1_024,
            max_event_name_chars: 1_024,
            handshake_timeout: Duration::from_secs(10),
            max_pending_sockets: 1_024,
            request_body_timeout: Duration::from_secs(30),
            max_concurrent_handshakes: 1_024,
            idle_timeout: Duration::from_secs(120),
            max_invocations_per_connection: 64,
            max_streams_per_connection: 16,
        }
    }
}

/// One hub's overrides (`[hubs.<name>.limits]`); what is absent comes from `[limits]`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubLimitOverrides {
    /// See [`Limits::max_message_bytes`].
    pub max_message_bytes: Option<usize>,
    /// See [`Limits::max_connections_per_hub`].
    pub max_connections_per_hub: Option<usize>,
    /// See [`Limits::max_connections_per_user`].
    pub max_connections_per_user: Option<usize>,
    /// See [`Limits::max_groups_per_connection`].
    pub max_groups_per_connection: Option<usize>,
    /// See [`Limits::messages_per_second`].
    pub messages_per_second: Option<u32>,
    /// See [`Limits::bytes_per_second`].
    pub bytes_per_second: Option<u64>,
    /// See [`Limits::max_user_id_chars`].
    pub max_user_id_chars: Option<usize>,
    /// See [`Limits::max_event_name_chars`].
    pub max_event_name_chars: Option<usize>,
}

/// The limits in force for one hub: `[limits]` with the hub's overrides applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLimits {
    /// See [`Limits::max_message_bytes`]. Applied to a socket when it is upgraded (the
    /// WebSocket codec's frame and message size), so a change reaches new connections only.
    pub max_message_bytes: usize,
    /// See [`Limits::max_connections_per_hub`].
    pub max_connections_per_hub: usize,
    /// See [`Limits::max_connections_per_user`].
    pub max_connections_per_user: usize,
    /// See [`Limits::max_groups_per_connection`].
    pub max_groups_per_connection: usize,
    /// See [`Limits::messages_per_second`].
    pub messages_per_second: u32,
    /// See [`Limits::bytes_per_second`].
    pub bytes_per_second: u64,
    /// See [`Limits::max_user_id_chars`].
    pub max_user_id_chars: usize,
    /// See [`Limits::max_event_name_chars`].
    pub max_event_name_chars: usize,
}

impl Limits {
    /// Applies one hub's overrides.
    pub fn for_hub(&self, o: &HubLimitOverrides) -> HubLimits {
        HubLimits {
            max_message_bytes: o
                .max_message_bytes
                .or(self.max_message_bytes)
                .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
            max_connections_per_hub: o
                .max_connections_per_hub
                .unwrap_or(self.max_connections_per_hub),
            max_connections_per_user: o
                .max_connections_per_user
                .unwrap_or(self.max_connections_per_user),
            max_groups_per_connection: o
                .max_groups_per_connection
                .unwrap_or(self.max_groups_per_connection),
            messages_per_second: o.messages_per_second.unwrap_or(self.messages_per_second),
            bytes_per_second: o.bytes_per_second.unwrap_or(self.bytes_per_second),
            max_user_id_chars: o.max_user_id_chars.unwrap_or(self.max_user_id_chars),
            max_event_name_chars: o.max_event_name_chars.unwrap_or(self.max_event_name_chars),
        }
    }

    /// Refuses settings that would refuse everything.
    ///
    /// # Errors
    /// A zero limit or timeout, or an idle timeout not longer than the keep-alive interval
    /// (every quiet but healthy client would be dropped).
    pub fn check(
        &self,
        hub: &str,
        o: &HubLimitOverrides,
        keepalive: Duration,
    ) -> Result<(), String> {
        let l = self.for_hub(o);
        let zero = [
            ("max_message_bytes", l.max_message_bytes as u64),
            ("max_connections_per_hub", l.max_connections_per_hub as u64),
            (
                "max_connections_per_user",
                l.max_connections_per_user as u64,
            ),
            ("messages_per_second", u64::from(l.messages_per_second)),
            ("bytes_per_second", l.bytes_per_second),
            ("max_user_id_chars", l.max_user_id_chars as u64),
            ("max_event_name_chars", l.max_event_name_chars as u64),
            (
                "max_concurrent_handshakes",
                self.max_concurrent_handshakes as u64,
            ),
            ("max_pending_sockets", self.max_pending_sockets as u64),
            (
                "max_invocations_per_connection",
                self.max_invocations_per_connection as u64,
            ),
            (
                "max_streams_per_connection",
                self.max_streams_per_connection as u64,
            ),
        ]
        .into_iter()
        .find(|(_, v)| *v == 0);
        if let Some((name, _)) = zero {
            return Err(format!("limits.{name} must be positive (hub '{hub}')"));
        }
        let zero_time = [
            ("handshake_timeout", self.handshake_timeout),
            ("request_body_timeout", self.request_body_timeout),
        ]
        .into_iter()
        .find(|(_, t)| t.is_zero());
        if let Some((name, _)) = zero_time {
            return Err(format!("limits.{name} must be positive"));
        }
        if self.idle_timeout <= keepalive {
            return Err(format!(
                "limits.idle_timeout ({:?}) must be longer than client.keepalive_interval ({keepalive:?})",
                self.idle_timeout
            ));
        }
        Ok(())
    }
}

/// What a refusal was for, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// [`Limits::max_connections_per_hub`].
    ConnectionsPerHub,
    /// [`Limits::max_connections_per_user`].
    ConnectionsPerUser,
    /// [`Limits::max_groups_per_connection`].
    GroupsPerConnection,
    /// [`Limits::messages_per_second`].
    MessageRate,
    /// [`Limits::bytes_per_second`].
    ByteRate,
    /// [`Limits::max_user_id_chars`].
    UserIdLength,
    /// [`Limits::max_event_name_chars`].
    EventNameLength,
    /// [`Limits::max_concurrent_handshakes`].
    ConcurrentHandshakes,
    /// [`Limits::idle_timeout`].
    IdleTimeout,
    /// [`Limits::max_message_bytes`] (close 1009).
    MessageSize,
    /// Browser upgrades from an origin not in `client.allowed_origins` (403).
    Origin,
    /// [`Limits::max_pending_sockets`]: a socket closed to make room for a newer one (or to
    /// free a descriptor when the process has none left).
    PendingSockets,
    /// [`Limits::handshake_timeout`]: a socket closed because its first request (HTTP) or
    /// its HTTP/2 preface (gRPC) was not in within the timeout of its accept.
    HandshakeTimeout,
    /// [`Limits::request_body_timeout`] (408).
    RequestBodyTimeout,
    /// [`Limits::max_invocations_per_connection`].
    InvocationsPerConnection,
    /// [`Limits::max_streams_per_connection`].
    StreamsPerConnection,
}

impl LimitKind {
    /// Every kind, in a fixed order (for listings and metrics labels).
    pub const ALL: [LimitKind; 16] = [
        Self::ConnectionsPerHub,
        Self::ConnectionsPerUser,
        Self::GroupsPerConnection,
        Self::MessageRate,
        Self::ByteRate,
        Self::UserIdLength,
        Self::EventNameLength,
        Self::ConcurrentHandshakes,
        Self::IdleTimeout,
        Self::MessageSize,
        Self::Origin,
        Self::PendingSockets,
        Self::HandshakeTimeout,
        Self::RequestBodyTimeout,
        Self::InvocationsPerConnection,
        Self::StreamsPerConnection,
    ];

    /// The name used in logs and as a metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Self::ConnectionsPerHub => "connections_per_hub",
            Self::ConnectionsPerUser => "connections_per_user",
            Self::GroupsPerConnection => "groups_per_connection",
            Self::MessageRate => "messages_per_second",
            Self::ByteRate => "bytes_per_second",
            Self::UserIdLength => "user_id_length",
            Self::EventNameLength => "event_name_length",
            Self::ConcurrentHandshakes => "concurrent_handshakes",
            Self::IdleTimeout => "idle_timeout",
            Self::MessageSize => "message_size",
            Self::Origin => "origin",
            Self::PendingSockets => "pending_sockets",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::RequestBodyTimeout => "request_body_timeout",
            Self::InvocationsPerConnection => "invocations_per_connection",
            Self::StreamsPerConnection => "streams_per_connection",
        }
    }
}

/// How many times each limit refused something since start. Shared by every edge; read
/// with [`LimitCounters::get`] or [`LimitCounters::snapshot`].
#[derive(Debug, Default)]
pub struct LimitCounters {
    counts: [AtomicU64; LimitKind::ALL.len()],
}

impl LimitCounters {
    /// Counts one refusal and logs it (at debug: a flood of refusals must not flood logs).
    pub fn hit(&self, kind: LimitKind) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(limit = kind.name(), "limit reached");
    }

    /// Refusals of one kind so far.
    pub fn get(&self, kind: LimitKind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }

    /// Every kind with its count, in [`LimitKind::ALL`] order.
    pub fn snapshot(&self) -> Vec<(LimitKind, u64)> {
        LimitKind::ALL.iter().map(|&k| (k, self.get(k))).collect()
    }

    /// Publishes these counts as `hubcast_limit_refusals_total{limit}` at every scrape and
    /// export. The refusal paths keep counting in their own atomics (no registry lookup
    /// where a flood is being refused); the collect hook adds what is new since the last
    /// collection, and as it is the series' only writer the two stay equal.
    pub fn export_to(self: &Arc<Self>, metrics: &Metrics) {
        let counters = Arc::downgrade(self);
        // A scrape and an OTLP export may collect at once; one at a time keeps the
        // read-then-add exact.
        let one_at_a_time = Mutex::new(());
        metrics.on_collect(move |registry| {
            let Some(counters) = counters.upgrade() else {
                return;
            };
            let _guard = one_at_a_time
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (kind, count) in counters.snapshot() {
                let series = registry.limit_refusals.with(&[kind.name()]);
                series.add(count.saturating_sub(series.get()));
            }
        });
    }
}

/// Token buckets for one socket's incoming frames and bytes: a sustained rate with a burst
/// of one second's worth. Refills lazily on each frame, so an idle socket costs nothing.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    messages_per_second: f64,
    bytes_per_second: f64,
    messages: f64,
    bytes: f64,
    last: Instant,
}

impl RateLimiter {
    pub(crate) fn new(limits: &HubLimits) -> Self {
        let messages_per_second = f64::from(limits.messages_per_second);
        // Precision loss above 2^53 bytes per second does not matter.
        #[allow(clippy::cast_precision_loss)]
        let bytes_per_second = limits.bytes_per_second as f64;
        Self {
            messages_per_second,
            bytes_per_second,
            messages: messages_per_second,
            bytes: bytes_per_second,
            last: Instant::now(),
        }
    }

    /// Takes one frame of `len` bytes arriving at `now`, or says which limit it exceeds.
    pub(crate) fn take(&mut self, len: usize, now: Instant) -> Result<(), LimitKind> {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.messages =
            (self.messages + elapsed * self.messages_per_second).min(self.messages_per_second);
        self.bytes = (self.bytes + elapsed * self.bytes_per_second).min(self.bytes_per_second);
        #[allow(clippy::cast_precision_loss)]
        let len = len as f64;
        if self.messages < 1.0 {
            return Err(LimitKind::MessageRate);
        }
        // A single frame larger than a second's worth passes when the bucket is full, so
        // that a low byte rate never makes a frame under max_message_bytes unsendable.
        if self.bytes < len && self.bytes < self.bytes_per_second {
            return Err(LimitKind::ByteRate);
        }
        self.messages -= 1.0;
        self.bytes -= len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(messages: u32, bytes: u64) -> HubLimits {
        Limits {
            messages_per_second: messages,
            bytes_per_second: bytes,
            ..Limits::default()
        }
        .for_hub(&HubLimitOverrides::default())
    }

    #[tokio::test(start_paused = true)]
    async fn message_rate_allows_a_burst_then_the_sustained_rate() {
        let mut r = RateLimiter::new(&hub(10, 1 << 20));
        for _ in 0..10 {
            r.take(1, Instant::now())
                .expect("burst of one second's worth");
        }
        assert_eq!(r.take(1, Instant::now()), Err(LimitKind::MessageRate));
        tokio::time::advance(Duration::from_millis(100)).await;
        r.take(1, Instant::now())
            .expect("one more after a tenth of a second");
        assert_eq!(r.take(1, Instant::now()), Err(LimitKind::MessageRate));
    }

    #[tokio::test(start_paused = true)]
    async fn byte_rate_refuses_beyond_the_budget_but_never_a_lone_large_frame() {
        let mut r = RateLimiter::new(&hub(1000, 100));
        r.take(60, Instant::now()).expect("within budget");
        assert_eq!(r.take(60, Instant::now()), Err(LimitKind::ByteRate));
        tokio::time::advance(Duration::from_secs(2)).await;
        r.take(500, Instant::now())
            .expect("a frame above the rate passes on a full bucket");
        assert_eq!(r.take(1, Instant::now()), Err(LimitKind::ByteRate));
    }

    #[test]
    fn overrides_apply_per_field_and_zero_is_refused() {
        let limits = Limits::default();
        let o = HubLimitOverrides {
            max_connections_per_user: Some(3),
            ..HubLimitOverrides::default()
        };
        let l = limits.for_hub(&o);
        assert_eq!(l.max_connections_per_user, 3);
        assert_eq!(l.max_connections_per_hub, limits.max_connections_per_hub);
        let zero = HubLimitOverrides {
            messages_per_second: Some(0),
            ..HubLimitOverrides::default()
        };
        let err = limits
            .check("chat", &zero, Duration::from_secs(20))
            .expect_err("zero rate refused");
        assert!(
            err.contains("messages_per_second") && err.contains("chat"),
            "{err}"
        );
        let err = limits
            .check("*", &o, Duration::from_secs(200))
            .expect_err("idle timeout below keep-alive refused");
        assert!(err.contains("idle_timeout"), "{err}");
        for (name, limits) in [
            (
                "max_pending_sockets",
                Limits {
                    max_pending_sockets: 0,
                    ..Limits::default()
                },
            ),
            (
                "handshake_timeout",
                Limits {
                    handshake_timeout: Duration::ZERO,
                    ..Limits::default()
                },
            ),
            (
                "request_body_timeout",
                Limits {
                    request_body_timeout: Duration::ZERO,
                    ..Limits::default()
                },
            ),
        ] {
            let err = limits
                .check("*", &HubLimitOverrides::default(), Duration::from_secs(20))
                .expect_err("zero refused");
            assert!(err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn counters_count_by_kind() {
        let c = LimitCounters::default();
        c.hit(LimitKind::Origin);
        c.hit(LimitKind::Origin);
        c.hit(LimitKind::MessageRate);
        assert_eq!(c.get(LimitKind::Origin), 2);
        assert_eq!(c.get(LimitKind::MessageRate), 1);
        assert_eq!(c.get(LimitKind::IdleTimeout), 0);
        assert_eq!(c.snapshot().len(), LimitKind::ALL.len());
    }
}
