//! Hubcast's metric registry: plain atomics owned by the server, rendered as Prometheus text
//! at `GET /metrics` and read by OTLP's observable instruments when export is configured.
//!
//! Why our own atomics rather than SDK instruments: the fan-out path must not pay for
//! telemetry it does not export. A counter here is one relaxed `fetch_add` on an `Arc` the
//! caller looked up once (per hub, per connection) and kept; nothing is allocated, hashed or
//! locked per message. Rendering and export read the atomics at scrape or export time.
//!
//! # Adding a series
//! 1. Add one line to the `registry!` invocation below: field, kind ([`Counter`],
//!    [`Gauge`] or [`Histogram`]), Prometheus name (`hubcast_<what>[_<unit>]`, counters end
//!    in `_total`), help text and label names. `/metrics` and OTLP export pick it up; nothing
//!    else needs registering.
//! 2. Record it: `metrics.registry().my_series.with(&[hub, kind]).inc()` on a cold path, or
//!    look the series up once (`with` returns an `Arc`) and keep it where the hot path can
//!    reach it, as [`HubMetrics`] does for per-hub fan-out counters.
//! 3. A value that is cheaper to compute when asked than to maintain (a sum over every
//!    connection, say) is a [`Gauge`] set by a collect hook
//!    ([`Metrics::on_collect`]), which runs before every scrape and export.
//! 4. List it in the README's Observability section and, if operators should see it, in
//!    `deploy/grafana/hubcast.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Upper bounds (seconds) of every latency histogram's buckets: 100 µs to 10 s. Fixed, so a
/// histogram is a few atomics and Prometheus and OTLP report the same buckets.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A monotonic count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the value (collect hooks).
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency distribution over [`LATENCY_BUCKETS`].
///
/// Recording is on the fan-out path (every delivered message), so it is kept to two relaxed
/// atomic adds: the bucket and the sum. The count is the buckets' total, computed when read.
#[derive(Debug)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    buckets: Box<[AtomicU64]>,
    /// Sum of observations in nanoseconds (u64 nanoseconds last 584 years).
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..=LATENCY_BUCKETS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// [`LATENCY_BUCKETS`] in nanoseconds, so that bucketing compares integers.
const LATENCY_BUCKETS_NANOS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The bucket of an observation of `nanos`.
#[inline]
fn bucket_of(nanos: u64) -> usize {
    LATENCY_BUCKETS_NANOS
        .iter()
        .position(|&bound| nanos <= bound)
        .unwrap_or(LATENCY_BUCKETS_NANOS.len())
}

/// A consistent-enough read of a [`Histogram`] (each atomic read once).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Non-cumulative counts per bucket of [`LATENCY_BUCKETS`], then `+Inf`.
    pub buckets: Vec<u64>,
    /// Sum of observations, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one duration.
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        self.observe_all([elapsed]);
    }

    /// Records each of `durations` (a writer's batch): one atomic add per run of
    /// observations falling in the same bucket, and one for the sum, however many there are.
    #[inline]
    pub fn observe_all(&self, durations: impl IntoIterator<Item = Duration>) {
        let (mut bucket, mut pending, mut sum) = (0, 0u64, 0u64);
        for elapsed in durations {
            let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            sum = sum.saturating_add(nanos);
            let b = bucket_of(nanos);
            if b != bucket && pending > 0 {
                self.buckets[bucket].fetch_add(pending, Ordering::Relaxed);
                pending = 0;
            }
            bucket = b;
            pending += 1;
        }
        if pending > 0 {
            self.buckets[bucket].fetch_add(pending, Ordering::Relaxed);
            self.sum_nanos.fetch_add(sum, Ordering::Relaxed);
        }
    }

    /// The current state.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().sum(),
            buckets,
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// What kind of metric a family holds, for rendering and export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`Counter`].
    Counter,
    /// [`Gauge`].
    Gauge,
    /// [`Histogram`].
    Histogram,
}

/// One value of one series, as read at collect time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A counter's count.
    Counter(u64),
    /// A gauge's value.
    Gauge(i64),
    /// A histogram's state.
    Histogram(HistogramSnapshot),
}

/// The metric types a [`Family`] can hold.
pub trait Metric: Default + Send + Sync + std::fmt::Debug + 'static {
    /// Its kind.
    const KIND: Kind;
    /// Its current value.
    fn value(&self) -> Value;
}

impl Metric for Counter {
    const KIND: Kind = Kind::Counter;
    fn value(&self) -> Value {
        Value::Counter(self.get())
    }
}

impl Metric for Gauge {
    const KIND: Kind = Kind::Gauge;
    fn value(&self) -> Value {
        Value::Gauge(self.get())
    }
}

impl Metric for Histogram {
    const KIND: Kind = Kind::Histogram;
    fn value(&self) -> Value {
        Value::Histogram(self.snapshot())
    }
}

/// The label values of one series, in the order of the family's label names.
type LabelValues = Box<[Box<str>]>;

/// A named metric with labels: one series per distinct set of label values, created on
/// first use. Lookups take a read lock and allocate a key; keep the returned `Arc` where a
/// path runs often.
#[derive(Debug)]
pub struct Family<M> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: RwLock<BTreeMap<LabelValues, Arc<M>>>,
}

impl<M: Metric> Family<M> {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            series: RwLock::new(BTreeMap::new()),
        }
    }

    /// The series for `values` (one per label name, in order), created if new.
    ///
    /// # Panics
    /// If the number of values differs from the number of label names: a programming error
    /// that every test exercising the call site would catch.
    pub fn with(&self, values: &[&str]) -> Arc<M> {
        assert_eq!(
            values.len(),
            self.labels.len(),
            "{}: label values {values:?} for labels {:?}",
            self.name,
            self.labels
        );
        let key: LabelValues = values.iter().map(|v| Box::from(*v)).collect();
        if let Some(series) = self.read().get(&key) {
            return series.clone();
        }
        self.series
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<LabelValues, Arc<M>>> {
        // Series are only ever inserted whole: a poisoned map is still consistent.
        self.series
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A family seen without its metric type, for rendering and export.
pub trait Collect: Send + Sync {
    /// The Prometheus (and OTLP) name.
    fn name(&self) -> &'static str;
    /// One line saying what it measures.
    fn help(&self) -> &'static str;
    /// Its kind.
    fn kind(&self) -> Kind;
    /// Its label names.
    fn label_names(&self) -> &'static [&'static str];
    /// Calls `f` with every series' label values and current value.
    fn collect(&self, f: &mut dyn FnMut(&[Box<str>], Value));
}

impl<M: Metric> Collect for Family<M> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn help(&self) -> &'static str {
        self.help
    }
    fn kind(&self) -> Kind {
        M::KIND
    }
    fn label_names(&self) -> &'static [&'static str] {
        self.labels
    }
    fn collect(&self, f: &mut dyn FnMut(&[Box<str>], Value)) {
        for (labels, series) in self.read().iter() {
            f(labels, series.value());
        }
    }
}

/// Declares the registry: each line is one family (see the module docs).
macro_rules! registry {
    ($($(#[$doc:meta])* $field:ident: $kind:ident = $name:literal, $help:literal, [$($label:literal),*];)*) => {
        /// Every metric family Hubcast exports. Fields are public so that any module can
        /// record into them; see the module docs for adding one.
        #[derive(Debug)]
        pub struct Registry {
            $($(#[$doc])* pub $field: Family<$kind>,)*
            hooks: Hooks,
        }

        impl Registry {
            fn new() -> Self {
                Self {
                    $($field: Family::new($name, $help, &[$($label),*]),)*
                    hooks: Hooks::default(),
                }
            }

            /// Every family, in declaration order.
            pub fn families(&self) -> Vec<&dyn Collect> {
                vec![$(&self.$field as &dyn Collect),*]
            }
        }
    };
}

registry! {
    /// Connections open now, by hub (reliable connections waiting for recovery included).
    connections: Gauge = "hubcast_connections", "Client connections open now.", ["hub"];
    /// Connections accepted, by hub.
    connects: Counter = "hubcast_connects_total", "Client connections accepted.", ["hub"];
    /// Connections refused at the handshake, by HTTP status.
    connect_refusals: Counter = "hubcast_connect_refusals_total",
        "Client connection attempts refused before the WebSocket upgrade, by HTTP status.",
        ["status"];
    /// Connections ended, by hub and reason.
    disconnects: Counter = "hubcast_disconnects_total",
        "Client connections ended, by reason.", ["hub", "reason"];
    /// Frames received from clients, by hub and frame kind (text, binary).
    messages_received: Counter = "hubcast_messages_received_total",
        "Data frames received from clients.", ["hub", "kind"];
    /// Bytes of those frames.
    received_bytes: Counter = "hubcast_received_bytes_total",
        "Payload bytes of data frames received from clients.", ["hub", "kind"];
    /// Messages queued to clients by fan-out, by hub and send kind (all, group, user, connection).
    messages_sent: Counter = "hubcast_messages_sent_total",
        "Messages queued to clients by fan-out, one per recipient.", ["hub", "kind"];
    /// Bytes of those messages.
    sent_bytes: Counter = "hubcast_sent_bytes_total",
        "Encoded bytes of messages queued to clients, one copy per recipient.", ["hub", "kind"];
    /// Publish-to-write latency of messages.
    fanout_latency: Histogram = "hubcast_fanout_latency_seconds",
        "Time from a message entering fan-out to its write to the client's socket.", ["hub"];
    /// Bytes waiting in outboxes (set at collect time).
    outbox_bytes: Gauge = "hubcast_outbox_bytes",
        "Bytes queued in connections' outboxes, not yet written.", ["hub"];
    /// Connections closed for falling behind.
    slow_consumer_closes: Counter = "hubcast_slow_consumer_closes_total",
        "Connections closed because their outbox overflowed.", ["hub"];
    /// Reliable connections' unacknowledged messages (set at collect time).
    reliable_unacked_messages: Gauge = "hubcast_reliable_unacked_messages",
        "Messages reliable connections hold until their clients acknowledge them.", ["hub"];
    /// Reliable connections' unacknowledged bytes (set at collect time).
    reliable_unacked_bytes: Gauge = "hubcast_reliable_unacked_bytes",
        "Bytes reliable connections hold until their clients acknowledge them.", ["hub"];
    /// Recovery attempts of reliable connections, by outcome.
    reliable_recoveries: Counter = "hubcast_reliable_recoveries_total",
        "Reliable connection recovery attempts, by outcome (recovered, refused).", ["hub", "outcome"];
    /// Webhook calls, by event and outcome.
    webhook_latency: Histogram = "hubcast_webhook_duration_seconds",
        "Duration of webhook calls (including retries), by event and outcome.", ["event", "outcome"];
    /// Failed webhook calls, by event and error.
    webhook_errors: Counter = "hubcast_webhook_errors_total",
        "Webhook calls that failed, by event and error.", ["event", "error"];
    /// Control-plane calls, by transport, operation and status.
    control_latency: Histogram = "hubcast_control_call_duration_seconds",
        "Duration of control-plane calls, by transport (grpc, rest), operation and status.",
        ["transport", "operation", "status"];
    /// Whether this cluster node has lost Redis (1) or not (0); absent on a single node.
    cluster_degraded: Gauge = "hubcast_cluster_degraded",
        "1 while this cluster node cannot reach Redis or is not subscribed, else 0.", ["node"];
    /// Backplane messages, by direction.
    cluster_messages: Counter = "hubcast_cluster_messages_total",
        "Backplane messages published to Redis and received from other nodes, by direction.",
        ["node", "direction"];
    /// Backplane failures.
    cluster_errors: Counter = "hubcast_cluster_errors_total",
        "Backplane Redis failures and messages refused by a full queue.", ["node"];
    /// Round trip of the last publish.
    cluster_publish_latency: Gauge = "hubcast_cluster_publish_latency_microseconds",
        "Round trip of the last pipeline this node published to Redis.", ["node"];
    /// Requests, connections and frames refused by a configured limit, by limit.
    limit_refusals: Counter = "hubcast_limit_refusals_total",
        "Requests, connections and frames refused by a configured limit, by limit.", ["limit"];
    /// Sockets accepted and not yet past their handshake (or idle between HTTP requests),
    /// by listener (http, grpc); bounded together by `limits.max_pending_sockets`.
    pending_sockets: Gauge = "hubcast_pending_sockets",
        "Sockets accepted and not yet past their handshake, or idle between HTTP requests, by listener (http, grpc).",
        ["listener"];
}

/// A function run before every collection, to set gauges that are computed on demand.
type CollectHook = Box<dyn Fn(&Registry) + Send + Sync>;

/// The collect hooks of a registry.
#[derive(Default)]
struct Hooks(RwLock<Vec<CollectHook>>);

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooks")
    }
}

impl std::fmt::Debug for dyn Collect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The send kinds of `hubcast_messages_sent_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    /// To every connection of a hub.
    All = 0,
    /// To a group's members.
    Group = 1,
    /// To a user's connections.
    User = 2,
    /// To one connection.
    Connection = 3,
}

impl SendKind {
    const ALL: [SendKind; 4] = [
        SendKind::All,
        SendKind::Group,
        SendKind::User,
        SendKind::Connection,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            SendKind::All => "all",
            SendKind::Group => "group",
            SendKind::User => "user",
            SendKind::Connection => "connection",
        }
    }
}

/// One hub's series, looked up once when the hub is created, so fan-out and the socket
/// tasks record with a relaxed atomic add and nothing else.
#[derive(Debug)]
pub struct HubMetrics {
    /// The hub (its routing key).
    hub: Box<str>,
    /// `hubcast_connections{hub}`.
    pub connections: Arc<Gauge>,
    /// `hubcast_connects_total{hub}`.
    pub connects: Arc<Counter>,
    /// `hubcast_messages_sent_total{hub,kind}`, indexed by [`SendKind`].
    pub messages_sent: [Arc<Counter>; 4],
    /// `hubcast_sent_bytes_total{hub,kind}`, indexed by [`SendKind`].
    pub sent_bytes: [Arc<Counter>; 4],
    /// `hubcast_messages_received_total{hub,kind}`: text, binary.
    pub messages_received: [Arc<Counter>; 2],
    /// `hubcast_received_bytes_total{hub,kind}`: text, binary.
    pub received_bytes: [Arc<Counter>; 2],
    /// `hubcast_fanout_latency_seconds{hub}`.
    pub fanout_latency: Arc<Histogram>,
    /// `hubcast_slow_consumer_closes_total{hub}`.
    pub slow_consumer_closes: Arc<Counter>,
}

impl HubMetrics {
    /// The hub these series are of.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// Counts `n` recipients of `bytes` total of one send.
    #[inline]
    pub fn sent(&self, kind: SendKind, n: usize, bytes: usize) {
        if n > 0 {
            self.messages_sent[kind as usize].add(n as u64);
            self.sent_bytes[kind as usize].add(bytes as u64);
        }
    }

    /// Counts one frame received from a client.
    #[inline]
    pub fn received(&self, binary: bool, bytes: usize) {
        let i = usize::from(binary);
        self.messages_received[i].inc();
        self.received_bytes[i].add(bytes as u64);
    }
}

/// The registry handle: cheap to clone, all clones share the atomics.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            registry: Arc::new(Registry::new()),
        }
    }

    /// The families, to record into.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The series of one hub, for the hot path to keep.
    pub fn hub(&self, hub: &str) -> HubMetrics {
        let r = &self.registry;
        let per_kind =
            |family: &Family<Counter>| SendKind::ALL.map(|kind| family.with(&[hub, kind.label()]));
        HubMetrics {
            hub: hub.into(),
            connections: r.connections.with(&[hub]),
            connects: r.connects.with(&[hub]),
            messages_sent: per_kind(&r.messages_sent),
            sent_bytes: per_kind(&r.sent_bytes),
            messages_received: ["text", "binary"].map(|k| r.messages_received.with(&[hub, k])),
            received_bytes: ["text", "binary"].map(|k| r.received_bytes.with(&[hub, k])),
            fanout_latency: r.fanout_latency.with(&[hub]),
            slow_consumer_closes: r.slow_consumer_closes.with(&[hub]),
        }
    }

    /// Runs `hook` before every scrape and export, to set gauges computed on demand. A hook
    /// that refers back to what owns this registry should hold a `Weak`, so nothing leaks.
    pub fn on_collect(&self, hook: impl Fn(&Registry) + Send + Sync + 'static) {
        self.registry
            .hooks
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Box::new(hook));
    }

    /// Runs the collect hooks; then every family holds its current value.
    pub fn refresh(&self) {
        let hooks = self
            .registry
            .hooks
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for hook in hooks.iter() {
            hook(&self.registry);
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every family.
    pub fn render(&self) -> String {
        self.refresh();
        let mut out = String::with_capacity(8 * 1024);
        for family in self.registry.families() {
            render_family(family, &mut out);
        }
        out
    }
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn render_family(family: &dyn Collect, out: &mut String) {
    let name = family.name();
    let kind = match family.kind() {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    };
    let _ = writeln!(out, "# HELP {name} {}", family.help());
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let names = family.label_names();
    family.collect(&mut |values, value| {
        let labels = label_set(names, values, None);
        match value {
            Value::Counter(n) => {
                let _ = writeln!(out, "{name}{labels} {n}");
            }
            Value::Gauge(n) => {
                let _ = writeln!(out, "{name}{labels} {n}");
            }
            Value::Histogram(h) => {
                let mut cumulative = 0;
                for (i, count) in h.buckets.iter().enumerate() {
                    cumulative += count;
                    let le = LATENCY_BUCKETS
                        .get(i)
                        .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                    let labels = label_set(names, values, Some(&le));
                    let _ = writeln!(out, "{name}_bucket{labels} {cumulative}");
                }
                let _ = writeln!(out, "{name}_sum{labels} {}", h.sum);
                let _ = writeln!(out, "{name}_count{labels} {}", h.count);
            }
        }
    });
}

/// `{a="x",b="y"}` (or nothing without labels), values escaped as the text format wants.
fn label_set(names: &[&str], values: &[Box<str>], le: Option<&str>) -> String {
    let mut pairs: Vec<(&str, &str)> = names
        .iter()
        .copied()
        .zip(values.iter().map(|v| &**v))
        .collect();
    if let Some(le) = le {
        pairs.push(("le", le));
    }
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(name);
        s.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_buckets() {
        let metrics = Metrics::new();
        let r = metrics.registry();
        r.connects.with(&["chat"]).add(3);
        r.connections.with(&["chat"]).inc();
        let h = r.fanout_latency.with(&["chat"]);
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let text = metrics.render();
        assert!(
            text.contains("# TYPE hubcast_connects_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("hubcast_connects_total{hub=\"chat\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("hubcast_connections{hub=\"chat\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("hubcast_fanout_latency_seconds_bucket{hub=\"chat\",le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("hubcast_fanout_latency_seconds_bucket{hub=\"chat\",le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("hubcast_fanout_latency_seconds_bucket{hub=\"chat\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("hubcast_fanout_latency_seconds_count{hub=\"chat\"} 3\n"));
    }

    #[test]
    fn a_batch_is_recorded_as_its_observations_one_by_one() {
        let batch = [
            Duration::from_micros(50),
            Duration::from_micros(80),
            Duration::from_millis(3),
            Duration::from_micros(10),
            Duration::from_secs(60),
            Duration::from_nanos(100_000),
            Duration::from_nanos(100_001),
        ];
        let (one_by_one, at_once) = (Histogram::default(), Histogram::default());
        for d in batch {
            one_by_one.observe(d);
        }
        at_once.observe_all(batch);
        at_once.observe_all([]);
        let snapshot = at_once.snapshot();
        assert_eq!(snapshot, one_by_one.snapshot());
        assert_eq!(snapshot.count, 7);
        // Bucket bounds are inclusive, as Prometheus' `le` says.
        assert_eq!(snapshot.buckets[0], 4);
        assert_eq!(snapshot.buckets[1], 1);
        assert_eq!(snapshot.buckets[LATENCY_BUCKETS.len()], 1);
        assert!(
            (snapshot.sum - 60.003_340_001).abs() < 1e-9,
            "{}",
            snapshot.sum
        );
    }

    #[test]
    fn integer_bucket_bounds_are_the_published_ones() {
        assert_eq!(LATENCY_BUCKETS.len(), LATENCY_BUCKETS_NANOS.len());
        for (secs, nanos) in LATENCY_BUCKETS.iter().zip(LATENCY_BUCKETS_NANOS) {
            assert_eq!((secs * 1e9).round() as u64, nanos);
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        metrics
            .registry()
            .disconnects
            .with(&["h", "a\"b\\c\nd"])
            .inc();
        let text = metrics.render();
        assert!(
            text.contains(r#"hubcast_disconnects_total{hub="h",reason="a\"b\\c\nd"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn collect_hooks_run_before_rendering() {
        let metrics = Metrics::new();
        metrics.on_collect(|r| r.outbox_bytes.with(&["x"]).set(42));
        assert!(
            metrics
                .render()
                .contains("hubcast_outbox_bytes{hub=\"x\"} 42\n")
        );
    }

    #[test]
    #[should_panic(expected = "label values")]
    fn wrong_label_count_is_a_programming_error() {
        Metrics::new().registry().connects.with(&["a", "b"]);
    }
}
