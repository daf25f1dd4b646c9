//! The configuration tree.
//!
//! Sources, highest precedence first: command-line flags, `HUBCAST_*` environment variables,
//! the TOML file given by `--config` / `HUBCAST_CONFIG`, built-in defaults. The binary merges
//! flags and environment over the file (see `main.rs`); this module owns the file format and
//! the defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use crate::limits::{HubLimitOverrides, HubLimits, Limits};
use crate::telemetry::otlp::OtlpSettings;
pub use crate::tls::TlsConfig;

/// Default HTTP listener (WebSocket, REST, demo page, metrics).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default gRPC listener (control plane, health, reflection).
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:50051";

/// Everything the server needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listener: the client WebSocket endpoint and the REST API.
    pub listen: SocketAddr,
    /// gRPC listener for the control plane.
    pub grpc_listen: SocketAddr,
    /// Public base URL (`http(s)://host[:port]`) that token audiences name. `None` means
    /// `http://<listen>` with the port actually bound, which is right for local use.
    pub endpoint: Option<String>,
    /// Access keys, primary first. Tokens signed with any of them are accepted, which is how
    /// keys are rotated. Empty means a random key is made at start and printed.
    pub access_keys: Vec<String>,
    /// Cluster settings.
    pub cluster: ClusterConfig,
    /// Per-hub settings; the entry `"*"` applies to hubs without an entry of their own.
    pub hubs: BTreeMap<String, HubConfig>,
    /// Settings for client WebSocket connections.
    pub client: ClientConfig,
    /// Settings and limits of MQTT clients (`/clients/mqtt/hubs/{hub}`).
    pub mqtt: MqttConfig,
    /// Settings of the Socket.IO edge (`/clients/socketio/hubs/{hub}`).
    pub socketio: SocketIoConfig,
    /// How long a graceful shutdown may take before the remaining connections are dropped.
    #[serde(with = "seconds")]
    pub shutdown_grace: Duration,
    /// Development mode: `GET /dev/token` mints client tokens for anyone (for the demo page).
    /// Off by default; never enable it in production.
    pub dev: bool,
    /// Delivery of upstream events (webhooks and the gRPC event stream).
    pub upstream: UpstreamConfig,
    /// Limits for every hub (each hub may override them in `[hubs.<name>.limits]`) and for
    /// the listener.
    pub limits: Limits,
    /// Serve the HTTP and gRPC listeners over TLS. `None` (the default): plain TCP, for
    /// loopback or behind a TLS-terminating proxy.
    pub tls: Option<TlsConfig>,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// The live trace (`hubcast.v1.Admin/Trace`, `GET /api/trace`): payloads in records,
    /// listener buffers and bounds.
    pub live_trace: crate::telemetry::live_trace::LiveTraceSettings,
    /// OTLP export. Not a file setting: the binary reads the standard `OTEL_*` environment
    /// variables into it ([`OtlpSettings::from_env`]); `None` (the default) exports nothing.
    #[serde(skip)]
    pub otlp: Option<OtlpSettings>,
}

/// The Prometheus scrape endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` on the HTTP listener. Default true; metrics are counted either
    /// way (OTLP export reads the same counters).
    pub enabled: bool,
    /// Most series of one metric; further label sets are folded into its `_overflow` series
    /// and counted in `hubcast_metric_series_overflows_total`. Default 10000.
    pub max_series_per_metric: usize,
    /// How long a hub without connections keeps its series (every metric with a `hub`
    /// label); they come back with its next connection. Seconds in the file; default 300.
    #[serde(with = "seconds")]
    pub hub_series_expiry: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        use crate::telemetry::metrics::{DEFAULT_HUB_SERIES_EXPIRY, DEFAULT_MAX_SERIES_PER_METRIC};
        Self {
            enabled: true,
            max_series_per_metric: DEFAULT_MAX_SERIES_PER_METRIC,
            hub_series_expiry: DEFAULT_HUB_SERIES_EXPIRY,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("constant address parses"),
            grpc_listen: DEFAULT_GRPC_LISTEN
                .parse()
                .expect("constant address parses"),
            endpoint: None,
            access_keys: Vec::new(),
            cluster: ClusterConfig::default(),
            hubs: BTreeMap::new(),
            client: ClientConfig::default(),
            mqtt: MqttConfig::default(),
            socketio: SocketIoConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            dev: false,
            upstream: UpstreamConfig::default(),
            limits: Limits::default(),
            tls: None,
            metrics: MetricsConfig::default(),
            live_trace: crate::telemetry::live_trace::LiveTraceSettings::default(),
            otlp: None,
        }
    }
}

impl Config {
    /// Reads a TOML configuration file.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML, or has unknown or mistyped keys (unknown
    /// keys are refused so that a typo never silently falls back to a default).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// Invalid TOML, or unknown or mistyped keys.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<inline>".into(),
            message: e.to_string(),
        })
    }

    /// The settings of `hub`: its own entry, else the `"*"` entry, else the defaults.
    /// Hub names are case-insensitive.
    pub fn hub(&self, hub: &str) -> &HubConfig {
        static DEFAULT: std::sync::OnceLock<HubConfig> = std::sync::OnceLock::new();
        self.hubs
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(hub))
            .or_else(|| self.hubs.get_key_value("*"))
            .map(|(_, c)| c)
            .unwrap_or_else(|| DEFAULT.get_or_init(HubConfig::default))
    }

    /// The limits in force for `hub`: `[limits]` with the hub's overrides.
    pub fn hub_limits(&self, hub: &str) -> HubLimits {
        self.global_limits().for_hub(&self.hub(hub).limits)
    }

    /// `[limits]` as in force for every hub: `client.max_message_bytes`, the older home of
    /// `limits.max_message_bytes`, stands in for it when only the older key is given.
    fn global_limits(&self) -> Limits {
        Limits {
            max_message_bytes: self
                .limits
                .max_message_bytes
                .or(self.client.max_message_bytes),
            ..self.limits
        }
    }

    /// Checks settings that parse but cannot work (zero limits, for instance).
    ///
    /// # Errors
    /// A message naming the setting.
    pub fn check(&self) -> Result<(), String> {
        self.cluster.check()?;
        if let (Some(old), Some(new)) =
            (self.client.max_message_bytes, self.limits.max_message_bytes)
            && old != new
        {
            return Err(format!(
                "client.max_message_bytes ({old}) and limits.max_message_bytes ({new}) disagree: \
                 client.max_message_bytes is the older name of limits.max_message_bytes; \
                 set only limits.max_message_bytes"
            ));
        }
        let keepalive = self.client.keepalive_interval;
        let limits = self.global_limits();
        limits.check("*", &HubLimitOverrides::default(), keepalive)?;
        for (name, hub) in &self.hubs {
            limits.check(name, &hub.limits, keepalive)?;
        }
        Ok(())
    }
}

/// How long a node stays in cluster answers after its last heartbeat, by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Where the Redis of the backplane is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis server (or a proxy that looks like one), by URL.
    Single(String),
    /// A Redis Cluster, by the URLs of some of its nodes (seeds).
    Cluster(Vec<String>),
}

impl std::fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(url) => write!(f, "Redis at {url}"),
            Self::Cluster(seeds) => write!(f, "Redis Cluster at {}", seeds.join(", ")),
        }
    }
}

/// Cluster settings (scale-out through a shared Redis; see docs/DEPLOYMENT.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis URL of the backplane; `None` (and no `redis_cluster_nodes`) runs a single node,
    /// in memory.
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster backplane (`redis://host:port`, some or all of its
    /// nodes; the rest are discovered). The other way to give the backplane, so setting both
    /// this and `redis_url` is an error.
    pub redis_cluster_nodes: Vec<String>,
    /// Prefix of every Redis key and channel: the nodes of one cluster share it, and
    /// different clusters (or test runs) on one Redis use different ones. On a Redis Cluster
    /// it is used as the hash tag `{prefix}`, so it may not contain braces.
    pub key_prefix: String,
    /// How long a node that stopped renewing its lease (hung, cut off) still counts as a
    /// member; nodes that exit or crash leave at once. Seconds in the file.
    #[serde(with = "seconds")]
    pub lease: Duration,
}

impl ClusterConfig {
    /// The Redis of the backplane, if any.
    pub fn redis_target(&self) -> Option<RedisTarget> {
        match (&self.redis_url, self.redis_cluster_nodes.is_empty()) {
            (Some(url), _) => Some(RedisTarget::Single(url.clone())),
            (None, false) => Some(RedisTarget::Cluster(self.redis_cluster_nodes.clone())),
            (None, true) => None,
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.redis_url.is_some() && !self.redis_cluster_nodes.is_empty() {
            return Err("cluster.redis_url (--redis, HUBCAST_REDIS_URL) and \
                 cluster.redis_cluster_nodes (--redis-cluster-node, HUBCAST_REDIS_CLUSTER_NODES) \
                 are mutually exclusive: give one Redis server, or the seed nodes of one Redis \
                 Cluster"
                .into());
        }
        if !self.redis_cluster_nodes.is_empty()
            && (self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']))
        {
            return Err(format!(
                "cluster.key_prefix '{}': on a Redis Cluster the prefix becomes the hash tag \
                 {{prefix}} of every key, so it must be non-empty and free of braces",
                self.key_prefix
            ));
        }
        Ok(())
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_cluster_nodes: Vec::new(),
            key_prefix: "hubcast".into(),
            lease: DEFAULT_LEASE,
        }
    }
}

/// Settings of one hub.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Let clients connect without an access token (Azure's `anonymousConnectPolicy`).
    /// Off by default: an open hub is a decision, never an accident.
    pub anonymous_connect: bool,
    /// Upstream event handlers (webhooks). For each event the first handler that selects it
    /// receives it.
    pub event_handlers: Vec<EventHandlerConfig>,
    /// How the hub uses backends listening on the gRPC event stream (`Events.Listen`).
    pub event_stream: EventStreamMode,
    /// This hub's limits where they differ from `[limits]`.
    pub limits: HubLimitOverrides,
}

/// How a hub uses backends listening on the gRPC event stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStreamMode {
    /// An event that a listener subscribes to goes to a listener; any other event (or every
    /// event while no listener is there) goes to the first matching webhook handler.
    #[default]
    Fallback,
    /// Events go to listeners only: while no listener subscribes to the hub, connections are
    /// refused with 503 and user events fail; webhook handlers are not used.
    Required,
}

/// Where and which upstream events are delivered (Azure's event handler settings).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventHandlerConfig {
    /// `http(s)://` URL with `{hub}` and `{event}` placeholders (not allowed in the host).
    pub url_template: String,
    /// User events to deliver: `*`, one event name, or a comma-separated list of names,
    /// matched case-insensitively. Absent or empty: none.
    #[serde(default)]
    pub user_event_pattern: Option<String>,
    /// System events to deliver: any of `connect`, `connected`, `disconnected`.
    #[serde(default)]
    pub system_events: Vec<String>,
    /// Credentials added to every request to this handler.
    #[serde(default)]
    pub auth: Option<EventHandlerAuth>,
    /// Speak HTTP/2 with prior knowledge (h2c) to an `http://` handler. `https://` handlers
    /// negotiate HTTP/2 or HTTP/1.1 by ALPN whatever this says. Default false (HTTP/1.1).
    #[serde(default)]
    pub http2: bool,
}

/// Credentials for an event handler: a static header, or an Azure Functions style `code`
/// query parameter. Exactly one of the two forms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventHandlerAuth {
    /// Header name, e.g. `Authorization` or `x-functions-key`; `value` is then required.
    pub header: Option<String>,
    /// Header value.
    pub value: Option<String>,
    /// Adds `?code=<code>` to every URL (Azure Functions' key), validation requests included.
    pub code: Option<String>,
}

/// Delivery of upstream events, for every hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Time one attempt of one event may take (request and response body, or a reply on the
    /// event stream). A blocking event that times out fails: `connect` is refused with 504.
    /// Default 30 s.
    #[serde(with = "seconds")]
    pub timeout: Duration,
    /// Time to establish a TCP (and TLS) connection to a handler. Default 5 s.
    #[serde(with = "seconds")]
    pub connect_timeout: Duration,
    /// Webhook requests in flight at once, across every handler; more wait for a slot.
    /// Default 256.
    pub max_concurrency: usize,
    /// Delays before the retries of a non-blocking event (`connected`, `disconnected`) that
    /// failed with 408, a 5xx or a network error; one retry per entry. Default `[1, 3, 5]`
    /// (Azure's schedule). Blocking events are never retried: the client is waiting.
    #[serde(with = "seconds_list")]
    pub retry_backoff: Vec<Duration>,
    /// Non-blocking events that may wait for delivery, across every hub. Beyond this,
    /// `connected` events are dropped (and logged) and `disconnected` events wait up to
    /// `timeout` for room. Default 10000.
    pub queue_capacity: usize,
    /// Tasks delivering non-blocking events; events of one connection always go to the same
    /// task, in order. Default 16.
    pub workers: usize,
    /// How long a passed abuse-protection validation of a handler URL is trusted before it is
    /// repeated. Default 300 s.
    #[serde(with = "seconds")]
    pub validation_ttl: Duration,
    /// `WebHook-Request-Origin` sent to handlers. Default: the host name of `endpoint`.
    pub request_origin: Option<String>,
    /// Largest handler response body accepted, in bytes. Default 16 MiB.
    pub max_response_bytes: usize,
    /// Longest wait for the answer to a client's `invoke`; beyond it the client gets a failed
    /// `invokeResponse` (`Timeout`) and the call is abandoned. Unset (the default): `timeout`,
    /// as Azure treats an invocation as an ordinary blocking user event. Each delivery attempt
    /// stays bounded by `timeout` too, so only a shorter value changes anything.
    #[serde(default, with = "optional_seconds")]
    pub invoke_timeout: Option<Duration>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_concurrency: 256,
            retry_backoff: [1, 3, 5].map(Duration::from_secs).to_vec(),
            queue_capacity: 10_000,
            workers: 16,
            validation_ttl: Duration::from_secs(300),
            request_origin: None,
            max_response_bytes: 16 * 1024 * 1024,
            invoke_timeout: None,
        }
    }
}

/// Settings for client WebSocket connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// The older name of `limits.max_message_bytes` (largest frame or message a client may
    /// send), kept so existing files still work: when given, it is the default for every hub
    /// that `[limits]` would set. Giving both with different values is refused at start.
    pub max_message_bytes: Option<usize>,
    /// Bytes that may wait in one connection's outbox. A client that falls further behind is
    /// closed rather than allowed to slow anyone else or grow memory without bound.
    pub outbox_bytes: usize,
    /// Interval of WebSocket ping frames sent to every client (Azure default 20 s).
    #[serde(with = "seconds")]
    pub keepalive_interval: Duration,
    /// Reliable subprotocols: how long a dropped connection keeps its groups and unacknowledged
    /// messages, waiting for the client to recover it (Azure: at least 30 s).
    #[serde(with = "seconds")]
    pub recovery_window: Duration,
    /// Reliable subprotocols: most messages a client may leave unacknowledged before its
    /// connection is closed for good (Azure: 1000).
    pub unacked_max_messages: usize,
    /// Reliable subprotocols: most bytes a client may leave unacknowledged (Azure: 16 MB).
    pub unacked_max_bytes: usize,
    /// Origins (`scheme://host[:port]`, compared case-insensitively) whose browser pages may
    /// open WebSockets. Empty (the default) allows every origin, as Azure does; requests
    /// without an `Origin` header (non-browser clients) are always allowed, since only
    /// browsers send it and only browsers can be made to connect by a third-party page.
    pub allowed_origins: Vec<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: None,
            outbox_bytes: 1024 * 1024,
            keepalive_interval: Duration::from_secs(20),
            recovery_window: Duration::from_secs(30),
            unacked_max_messages: 1000,
            unacked_max_bytes: 16 * 1024 * 1024,
            allowed_origins: Vec::new(),
        }
    }
}

/// Settings and limits of MQTT clients (`[mqtt]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// The in-flight window, both ways: the most QoS 1 and 2 messages sent to a session and
    /// not yet acknowledged (fewer when the client's MQTT 5 Receive Maximum is lower; further
    /// messages wait in the outbox), and the Receive Maximum announced to MQTT 5 clients
    /// for their QoS 1 and 2 publishes. A client with more QoS 2 publishes unreleased is
    /// disconnected (0x93 Receive Maximum exceeded).
    pub inflight_window: u16,
    /// Most MQTT sockets on this node (a session waiting for its client to come back holds
    /// none); further MQTT clients are refused with 503.
    pub max_sessions: usize,
    /// How long a client has after the WebSocket upgrade to send its CONNECT packet.
    #[serde(with = "seconds")]
    pub connect_timeout: Duration,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            inflight_window: 100,
            max_sessions: 100_000,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Settings of the Socket.IO edge: Engine.IO v4 heartbeats and the bounds of its sessions.
/// The per-hub limits (connections, message rate, groups) apply to Socket.IO clients too;
/// what waits for a long-polling client to poll is bounded by `client.outbox_bytes` (a client
/// that stops polling is closed as a slow consumer).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    /// Engine.IO `pingInterval`: how often the server pings (socket.io: 25 s).
    #[serde(with = "seconds")]
    pub ping_interval: Duration,
    /// Engine.IO `pingTimeout`: how long after a ping the client may take to answer before
    /// its connection is closed (socket.io: 20 s).
    #[serde(with = "seconds")]
    pub ping_timeout: Duration,
    /// Engine.IO `maxPayload`: the largest WebSocket message or long-polling request body
    /// a client may send, in bytes (socket.io: 1 MB). Larger ones close the connection (a
    /// `413` for a poll).
    pub max_payload_bytes: usize,
    /// Most namespaces one Engine.IO connection may connect to; further namespace connects
    /// are refused with a `connect_error`.
    pub max_namespaces_per_connection: usize,
    /// Longest a long-polling `GET` is held open with nothing to send before it is answered
    /// with a no-op (the client polls again at once). At most `ping_interval` in effect,
    /// since every ping answers a pending poll.
    #[serde(with = "seconds")]
    pub max_poll_duration: Duration,
    /// How long an upgrade from long-polling to WebSocket may take (from the WebSocket's
    /// opening to the client's `upgrade` packet) before the WebSocket is dropped and the
    /// session stays on long-polling.
    #[serde(with = "seconds")]
    pub upgrade_timeout: Duration,
    /// In a cluster: most long-polling requests this node serves at once for other nodes
    /// (polls and posts of its sessions that the balancer sent elsewhere, relayed here over
    /// the backplane; a session upgraded to WebSocket on another node holds one while it
    /// lives). Beyond it a relayed request is answered `503` and the client reconnects.
    pub max_relayed_polls: usize,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload_bytes: 1_000_000,
            max_namespaces_per_connection: 32,
            max_poll_duration: Duration::from_secs(30),
            upgrade_timeout: Duration::from_secs(10),
            max_relayed_polls: 10_000,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        message: String,
    },
}

/// Durations are written as whole or fractional seconds in the file (`keepalive_interval = 20`).
pub(crate) mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// An optional duration in seconds (`invoke_timeout = 10`); absent is `None`.
mod optional_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// Lists of durations in seconds (`retry_backoff = [1, 3, 5]`).
mod seconds_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<f64>::deserialize(d)?
            .into_iter()
            .map(|secs| Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let cfg = Config::from_toml(
            r#"
            listen = "0.0.0.0:9000"
            access_keys = ["0123456789abcdef0123456789abcdef"]
            shutdown_grace = 2.5
            [client]
            keepalive_interval = 5
            [hubs.chat]
            anonymous_connect = true
            [[hubs.chat.event_handlers]]
            url_template = "http://127.0.0.1:3000/api/webpubsub/hubs/{hub}/"
            user_event_pattern = "*"
            system_events = ["connect", "connected", "disconnected"]
            auth = { code = "secret" }
            [[hubs.chat.event_handlers]]
            url_template = "https://backend.example.com/events/{event}"
            user_event_pattern = "chat, typing"
            http2 = true
            [hubs.chat.event_handlers.auth]
            header = "x-api-key"
            value = "k"
            [upstream]
            timeout = 10
            retry_backoff = [0.5, 2]
            [hubs."*"]
            anonymous_connect = false
            "#,
        )
        .expect("valid config");
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.shutdown_grace, Duration::from_millis(2500));
        assert_eq!(cfg.client.keepalive_interval, Duration::from_secs(5));
        assert!(cfg.hub("CHAT").anonymous_connect);
        assert_eq!(cfg.hub("chat").event_handlers.len(), 2);
        assert_eq!(cfg.hub("chat").event_stream, EventStreamMode::Fallback);
        let second = &cfg.hub("chat").event_handlers[1];
        assert!(second.http2);
        assert_eq!(
            second.auth.as_ref().and_then(|a| a.header.as_deref()),
            Some("x-api-key")
        );
        assert_eq!(cfg.upstream.timeout, Duration::from_secs(10));
        assert_eq!(
            cfg.upstream.retry_backoff,
            [Duration::from_millis(500), Duration::from_secs(2)]
        );
        assert!(!cfg.hub("other").anonymous_connect);
        assert!(cfg.metrics.enabled, "/metrics is on by default");
        let off = Config::from_toml("[metrics]\nenabled = false").expect("valid config");
        assert!(!off.metrics.enabled);
    }

    #[test]
    fn a_redis_cluster_is_configured_by_its_seed_nodes() {
        let cfg = Config::from_toml(
            "[cluster]\nredis_cluster_nodes = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]",
        )
        .expect("valid config");
        cfg.check().expect("consistent");
        assert_eq!(
            cfg.cluster.redis_target(),
            Some(RedisTarget::Cluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://10.0.0.2:7000".into()
            ]))
        );
        assert_eq!(Config::default().cluster.redis_target(), None);

        let both = Config::from_toml(
            "[cluster]\nredis_url = \"redis://h\"\nredis_cluster_nodes = [\"redis://h:7000\"]",
        )
        .expect("parses");
        let err = both.check().expect_err("both is an error");
        assert!(err.contains("mutually exclusive"), "{err}");

        let braces = Config::from_toml(
            "[cluster]\nkey_prefix = \"{x}\"\nredis_cluster_nodes = [\"redis://h:7000\"]",
        )
        .expect("parses");
        let err = braces.check().expect_err("braces are refused");
        assert!(err.contains("hash tag"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_toml("listne = \"0.0.0.0:1\"").expect_err("typo must fail");
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn hub_falls_back_to_star_then_default() {
        let mut cfg = Config::default();
        assert!(!cfg.hub("x").anonymous_connect);
        cfg.hubs.insert(
            "*".into(),
            HubConfig {
                anonymous_connect: true,
                ..HubConfig::default()
            },
        );
        assert!(cfg.hub("x").anonymous_connect);
    }

    #[test]
    fn message_size_is_per_hub_and_the_older_client_key_sets_its_default() {
        let size = |toml: &str, hub: &str| {
            let cfg = Config::from_toml(toml).expect("valid config");
            cfg.check().expect("consistent config");
            cfg.hub_limits(hub).max_message_bytes
        };
        assert_eq!(size("", "chat"), 1024 * 1024, "Azure's 1 MB by default");
        let per_hub = "[limits]\nmax_message_bytes = 1000\n\
                       [hubs.big.limits]\nmax_message_bytes = 5000";
        assert_eq!(size(per_hub, "chat"), 1000);
        assert_eq!(size(per_hub, "BIG"), 5000);
        // client.max_message_bytes alone is the default for every hub, as before...
        let old = "[client]\nmax_message_bytes = 2000\n[hubs.big.limits]\nmax_message_bytes = 5000";
        assert_eq!(size(old, "chat"), 2000);
        assert_eq!(
            size(old, "big"),
            5000,
            "hub overrides win over the older key"
        );
        // ... may repeat the same value as [limits] ...
        let same = "[client]\nmax_message_bytes = 3000\n[limits]\nmax_message_bytes = 3000";
        assert_eq!(size(same, "chat"), 3000);
        // ... but never contradict it.
        let both = Config::from_toml(
            "[client]\nmax_message_bytes = 2000\n[limits]\nmax_message_bytes = 3000",
        )
        .expect("parses");
        let err = both.check().expect_err("two different values are refused");
        assert!(
            err.contains("client.max_message_bytes (2000)")
                && err.contains("limits.max_message_bytes (3000)"),
            "{err}"
        );
        let zero = Config::from_toml("[hubs.tiny.limits]\nmax_message_bytes = 0").expect("parses");
        let err = zero.check().expect_err("zero refused");
        assert!(
            err.contains("max_message_bytes") && err.contains("tiny"),
            "{err}"
        );
        let zero_old = Config::from_toml("[client]\nmax_message_bytes = 0").expect("parses");
        assert!(
            zero_old.check().is_err(),
            "zero refused under the older key too"
        );
    }
}
