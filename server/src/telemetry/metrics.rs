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
//!    reach it. A series with a `hub` label that a hot path keeps belongs in [`HubSeries`]
//!    (and its `attach`): a kept `Arc` of an expired series would record unseen.
//! 3. A value that is cheaper to compute when asked than to maintain (a sum over every
//!    connection, say) is a [`Gauge`] set by a collect hook
//!    ([`Metrics::on_collect`]), which runs before every scrape and export.
//! 4. List it in the README's Observability section and, if operators should see it, in
//!    `deploy/grafana/hubcast.json`.
//!
//! # Bounded series
//! Every label value comes from a closed set or from something a holder of an access key
//! created (a hub with a connection, a cluster node): never from what an unauthenticated
//! caller or a client's event names choose. Two bounds hold whatever the callers do:
//! - **A cap per family** ([`DEFAULT_MAX_SERIES_PER_METRIC`], `metrics.max_series_per_metric`).
//!   A label set that finds its family full gets no series of its own: it is folded into the
//!   family's overflow series (every label [`OVERFLOW_LABEL`]), so sums over the family stay
//!   right, and each such hit is counted in `hubcast_metric_series_overflows_total{metric}`.
//! - **Expiry of hub series** ([`DEFAULT_HUB_SERIES_EXPIRY`], `metrics.hub_series_expiry`).
//!   A hub's series (every family with a `hub` label) are removed once the hub has had no
//!   connection for that long; they come back with its next connection. Both are checked
//!   when the registry is collected (each scrape and each OTLP export), in
//!   [`Metrics::maintain`]: nothing runs in the background and nothing is added to the
//!   recording paths.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// Default of `metrics.max_series_per_metric`: the most series one family holds. Ten
/// thousand is the usual per-metric budget of a Prometheus server; the largest family at the
/// cap (a latency histogram, 19 lines a series) renders in about 15 MB.
pub const DEFAULT_MAX_SERIES_PER_METRIC: usize = 10_000;

/// Default of `metrics.hub_series_expiry`: how long a hub without connections keeps its
/// series. Long enough that a hub whose clients reconnect (a deploy, a network blip) keeps
/// its counters; short enough that hubs made and left by the thousand do not pile up.
pub const DEFAULT_HUB_SERIES_EXPIRY: Duration = Duration::from_secs(300);

/// The value of every label of a family's overflow series (hub names start with a letter,
/// so no hub can be called this).
pub const OVERFLOW_LABEL: &str = "_overflow";

/// The `hub` label of events that name no hub with series (a refused recovery of a hub that
/// has no connection here): the caller chose that name, so it is not used as a label.
pub const UNKNOWN_HUB_LABEL: &str = "_unknown";

/// The name of the family that counts cap hits; it is not capped itself (it has one series
/// per family at most).
const OVERFLOWS_FAMILY: &str = "hubcast_metric_series_overflows_total";

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

impl Value {
    /// Adds `other` (of the same kind) to this value: how an overflow series sums the
    /// series folded into it.
    fn merge(&mut self, other: &Value) {
        match (self, other) {
            (Value::Counter(a), Value::Counter(b)) => *a = a.saturating_add(*b),
            (Value::Gauge(a), Value::Gauge(b)) => *a = a.saturating_add(*b),
            (Value::Histogram(a), Value::Histogram(b)) => {
                for (x, y) in a.buckets.iter_mut().zip(&b.buckets) {
                    *x = x.saturating_add(*y);
                }
                a.sum += b.sum;
                a.count = a.count.saturating_add(b.count);
            }
            _ => {}
        }
    }
}

/// The metric types a [`Family`] can hold.
pub trait Metric: Default + Send + Sync + std::fmt::Debug + 'static {
    /// Its kind.
    const KIND: Kind;
    /// Its current value.
    fn value(&self) -> Value;
    /// Moves what `from` counted into this one (`from` starts again from zero), so that an
    /// overflow series keeps the counts of a folded series that leaves it: counters and
    /// histograms never go down. A gauge has nothing to keep.
    fn absorb(&self, from: &Self);
}

impl Metric for Counter {
    const KIND: Kind = Kind::Counter;
    fn value(&self) -> Value {
        Value::Counter(self.get())
    }
    fn absorb(&self, from: &Self) {
        self.add(from.0.swap(0, Ordering::Relaxed));
    }
}

impl Metric for Gauge {
    const KIND: Kind = Kind::Gauge;
    fn value(&self) -> Value {
        Value::Gauge(self.get())
    }
    fn absorb(&self, _from: &Self) {}
}

impl Metric for Histogram {
    const KIND: Kind = Kind::Histogram;
    fn value(&self) -> Value {
        Value::Histogram(self.snapshot())
    }
    fn absorb(&self, from: &Self) {
        for (to, from) in self.buckets.iter().zip(from.buckets.iter()) {
            to.fetch_add(from.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        }
        self.sum_nanos
            .fetch_add(from.sum_nanos.swap(0, Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// The label values of one series, in the order of the family's label names.
type LabelValues = Box<[Box<str>]>;

/// The bounds every family of one registry shares (see the module docs).
#[derive(Debug)]
struct SeriesLimits {
    /// Most series of one family.
    max_series: AtomicUsize,
    /// How long a hub without connections keeps its series, in milliseconds.
    hub_expiry_millis: AtomicU64,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        Self {
            max_series: AtomicUsize::new(DEFAULT_MAX_SERIES_PER_METRIC),
            hub_expiry_millis: AtomicU64::new(millis(DEFAULT_HUB_SERIES_EXPIRY)),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The series of a family.
#[derive(Debug)]
struct Series<M> {
    /// Series with labels of their own.
    named: BTreeMap<LabelValues, Arc<M>>,
    /// Series of hubs that found the family full: each still records on its own (a hub's
    /// series are looked up once and kept), and is rendered as part of the overflow series.
    folded: BTreeMap<LabelValues, Arc<M>>,
    /// The overflow series: lookups that find the family full record here, and a folded
    /// series that is dropped leaves its counts here.
    overflow: Arc<M>,
}

/// A named metric with labels: one series per distinct set of label values, created on
/// first use, at most `metrics.max_series_per_metric` of them (beyond that, label sets share
/// the overflow series). Lookups take a read lock and allocate a key; keep the returned
/// `Arc` where a path runs often.
#[derive(Debug)]
pub struct Family<M> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    /// Position of the `hub` label: the family's series expire with their hub.
    hub_label: Option<usize>,
    /// Every label [`OVERFLOW_LABEL`].
    overflow_labels: LabelValues,
    /// Label sets that found the family full (each lookup or attachment counts one).
    overflow_hits: AtomicU64,
    limits: Arc<SeriesLimits>,
    series: RwLock<Series<M>>,
}

impl<M: Metric> Family<M> {
    fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        limits: Arc<SeriesLimits>,
    ) -> Self {
        Self {
            name,
            help,
            labels,
            hub_label: labels.iter().position(|l| *l == "hub"),
            overflow_labels: labels.iter().map(|_| Box::from(OVERFLOW_LABEL)).collect(),
            overflow_hits: AtomicU64::new(0),
            limits,
            series: RwLock::new(Series {
                named: BTreeMap::new(),
                folded: BTreeMap::new(),
                overflow: Arc::default(),
            }),
        }
    }

    /// The series for `values` (one per label name, in order), created if new; the
    /// overflow series if the family is full.
    ///
    /// # Panics
    /// If the number of values differs from the number of label names: a programming error
    /// that every test exercising the call site would catch.
    pub fn with(&self, values: &[&str]) -> Arc<M> {
        let key = self.key(values);
        {
            let series = self.read();
            if let Some(s) = series.named.get(&key).or_else(|| series.folded.get(&key)) {
                return s.clone();
            }
        }
        let mut series = self.write();
        if let Some(s) = series.named.get(&key).or_else(|| series.folded.get(&key)) {
            return s.clone();
        }
        if self.has_room(&series) {
            return series.named.entry(key).or_default().clone();
        }
        self.overflow_hits.fetch_add(1, Ordering::Relaxed);
        series.overflow.clone()
    }

    /// A series of its own for `values`, kept by a hub: the existing one, else a new one,
    /// named if the family has room, else folded into the overflow series.
    fn own(&self, values: &[&str]) -> Arc<M> {
        let key = self.key(values);
        let mut series = self.write();
        if let Some(s) = series.named.get(&key).or_else(|| series.folded.get(&key)) {
            return s.clone();
        }
        let own = Arc::<M>::default();
        self.place(&mut series, key, own.clone());
        own
    }

    /// Puts a hub's own series back (its hub has connections again after its series
    /// expired): named if the family has room, else folded.
    fn attach(&self, values: &[&str], own: &Arc<M>) {
        let key = self.key(values);
        let mut series = self.write();
        let present = series
            .named
            .get(&key)
            .or_else(|| series.folded.get(&key))
            .is_some_and(|s| Arc::ptr_eq(s, own));
        if !present {
            series.folded.remove(&key);
            series.named.remove(&key);
            self.place(&mut series, key, own.clone());
        }
    }

    fn place(&self, series: &mut Series<M>, key: LabelValues, own: Arc<M>) {
        if self.has_room(series) {
            series.named.insert(key, own);
        } else {
            self.overflow_hits.fetch_add(1, Ordering::Relaxed);
            series.folded.insert(key, own);
        }
    }

    fn has_room(&self, series: &Series<M>) -> bool {
        self.name == OVERFLOWS_FAMILY
            || series.named.len() < self.limits.max_series.load(Ordering::Relaxed)
    }

    fn key(&self, values: &[&str]) -> LabelValues {
        assert_eq!(
            values.len(),
            self.labels.len(),
            "{}: label values {values:?} for labels {:?}",
            self.name,
            self.labels
        );
        values.iter().map(|v| Box::from(*v)).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Series<M>> {
        // Series are only ever inserted or removed whole: a poisoned map is still consistent.
        self.series
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Series<M>> {
        self.series
            .write()
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
    /// Calls `f` with every series' label values and current value, the overflow series
    /// (every label [`OVERFLOW_LABEL`]) last once the family has been full.
    fn collect(&self, f: &mut dyn FnMut(&[Box<str>], Value));
    /// How many label sets found the family full.
    fn overflow_hits(&self) -> u64;
    /// Removes the series whose `hub` label is not `keep`'s (nothing in a family without
    /// one); the counts of removed folded series stay in the overflow series.
    fn retain_hubs(&self, keep: &dyn Fn(&str) -> bool);
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
        let series = self.read();
        for (labels, s) in &series.named {
            f(labels, s.value());
        }
        if self.overflow_hits() > 0 {
            let mut value = series.overflow.value();
            for s in series.folded.values() {
                value.merge(&s.value());
            }
            f(&self.overflow_labels, value);
        }
    }
    fn overflow_hits(&self) -> u64 {
        self.overflow_hits.load(Ordering::Relaxed)
    }
    fn retain_hubs(&self, keep: &dyn Fn(&str) -> bool) {
        let Some(i) = self.hub_label else { return };
        let stale = |labels: &LabelValues| !keep(&labels[i]);
        {
            let series = self.read();
            if !series.named.keys().chain(series.folded.keys()).any(stale) {
                return;
            }
        }
        let mut series = self.write();
        let Series {
            named,
            folded,
            overflow,
        } = &mut *series;
        named.retain(|labels, _| !stale(labels));
        folded.retain(|labels, s| {
            if stale(labels) {
                overflow.absorb(s);
                false
            } else {
                true
            }
        });
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
            limits: Arc<SeriesLimits>,
            /// Every hub with series, by name: which are attached, since when idle.
            hubs: Mutex<HashMap<Box<str>, HubEntry>>,
        }

        impl Registry {
            fn new() -> Self {
                let limits = Arc::new(SeriesLimits::default());
                Self {
                    $($field: Family::new($name, $help, &[$($label),*], limits.clone()),)*
                    hooks: Hooks::default(),
                    limits,
                    hubs: Mutex::new(HashMap::new()),
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
    /// Client connections open now, by client protocol (see [`Protocol`]).
    protocol_connections: Gauge = "hubcast_protocol_connections",
        "Client connections open now, by client protocol (default, mqtt, socketio).", ["protocol"];
    /// Connections accepted, by client protocol.
    protocol_connects: Counter = "hubcast_protocol_connects_total",
        "Client connections accepted, by client protocol.", ["protocol"];
    /// Messages received from clients, by client protocol.
    protocol_messages_received: Counter = "hubcast_protocol_messages_received_total",
        "Data messages received from clients, by client protocol.", ["protocol"];
    /// Bytes of those messages.
    protocol_received_bytes: Counter = "hubcast_protocol_received_bytes_total",
        "Payload bytes of data messages received from clients, by client protocol.", ["protocol"];
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
    /// Label sets that found their family full, by family (see the module docs).
    series_overflows: Counter = "hubcast_metric_series_overflows_total",
        "Label sets that found their metric full (metrics.max_series_per_metric) and were \
         folded into its overflow series, by metric.", ["metric"];
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

/// The values of the `protocol` label: the edge a client connection came in through.
///
/// Why families of their own rather than a `protocol` label on the per-hub ones: those
/// expire and are capped by hub, and a third label would triple their series for hubs that
/// use one protocol. Three fixed series answer "how many MQTT clients, how many messages from
/// Socket.IO" without touching the per-hub budget; a per-hub-and-protocol breakdown is not
/// kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Web PubSub's own clients (`/client/hubs/{hub}`: simple, JSON and protobuf).
    Default = 0,
    /// MQTT clients (`/clients/mqtt/hubs/{hub}`).
    Mqtt = 1,
    /// Socket.IO clients (`/clients/socketio/hubs/{hub}`).
    SocketIo = 2,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Default, Protocol::Mqtt, Protocol::SocketIo];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Default => "default",
            Protocol::Mqtt => "mqtt",
            Protocol::SocketIo => "socketio",
        }
    }
}

/// The series of one client protocol (see [`Protocol`]), shared by every hub's
/// [`HubSeries`]: they have no `hub` label, so they never expire.
#[derive(Debug)]
pub struct ProtocolSeries {
    connections: Arc<Gauge>,
    connects: Arc<Counter>,
    messages_received: Arc<Counter>,
    received_bytes: Arc<Counter>,
}

impl ProtocolSeries {
    fn new(r: &Registry, protocol: Protocol) -> Self {
        let label = [protocol.label()];
        Self {
            connections: r.protocol_connections.with(&label),
            connects: r.protocol_connects.with(&label),
            messages_received: r.protocol_messages_received.with(&label),
            received_bytes: r.protocol_received_bytes.with(&label),
        }
    }
}

/// One hub's series, looked up once when the hub is created, so fan-out and the socket
/// tasks record with a relaxed atomic add and nothing else. A cheap handle: clones share
/// the series.
///
/// The series belong to the hub, not to the registry: when the hub's series expire they
/// leave the registry (and `/metrics`) but stay here, and go back in when the hub has a
/// connection again, so nothing on the recording paths ever checks whether they are shown.
#[derive(Debug, Clone)]
pub struct HubMetrics(Arc<HubSeries>);

impl std::ops::Deref for HubMetrics {
    type Target = HubSeries;
    fn deref(&self) -> &HubSeries {
        &self.0
    }
}

/// The series of one hub (see [`HubMetrics`]).
#[derive(Debug)]
pub struct HubSeries {
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
    /// `hubcast_outbox_bytes{hub}` (set by a collect hook).
    pub outbox_bytes: Arc<Gauge>,
    /// `hubcast_reliable_unacked_messages{hub}` (set by a collect hook).
    pub reliable_unacked_messages: Arc<Gauge>,
    /// `hubcast_reliable_unacked_bytes{hub}` (set by a collect hook).
    pub reliable_unacked_bytes: Arc<Gauge>,
    /// The `hubcast_protocol_*{protocol}` series, indexed by [`Protocol`].
    protocols: [ProtocolSeries; 3],
}

/// The two kinds of received frames, in the order of [`HubSeries::messages_received`].
const RECEIVED_KINDS: [&str; 2] = ["text", "binary"];

impl HubSeries {
    /// The series of `hub` in `r`: those it already has, else new ones.
    fn new(r: &Registry, hub: &str) -> Self {
        let per_kind =
            |family: &Family<Counter>| SendKind::ALL.map(|kind| family.own(&[hub, kind.label()]));
        Self {
            hub: hub.into(),
            connections: r.connections.own(&[hub]),
            connects: r.connects.own(&[hub]),
            messages_sent: per_kind(&r.messages_sent),
            sent_bytes: per_kind(&r.sent_bytes),
            messages_received: RECEIVED_KINDS.map(|k| r.messages_received.own(&[hub, k])),
            received_bytes: RECEIVED_KINDS.map(|k| r.received_bytes.own(&[hub, k])),
            fanout_latency: r.fanout_latency.own(&[hub]),
            slow_consumer_closes: r.slow_consumer_closes.own(&[hub]),
            outbox_bytes: r.outbox_bytes.own(&[hub]),
            reliable_unacked_messages: r.reliable_unacked_messages.own(&[hub]),
            reliable_unacked_bytes: r.reliable_unacked_bytes.own(&[hub]),
            protocols: Protocol::ALL.map(|p| ProtocolSeries::new(r, p)),
        }
    }

    /// Puts these series back into `r` after they expired.
    fn attach(&self, r: &Registry) {
        let hub = &*self.hub;
        r.connections.attach(&[hub], &self.connections);
        r.connects.attach(&[hub], &self.connects);
        for (i, kind) in SendKind::ALL.iter().enumerate() {
            r.messages_sent
                .attach(&[hub, kind.label()], &self.messages_sent[i]);
            r.sent_bytes
                .attach(&[hub, kind.label()], &self.sent_bytes[i]);
        }
        for (i, kind) in RECEIVED_KINDS.iter().enumerate() {
            r.messages_received
                .attach(&[hub, kind], &self.messages_received[i]);
            r.received_bytes
                .attach(&[hub, kind], &self.received_bytes[i]);
        }
        r.fanout_latency.attach(&[hub], &self.fanout_latency);
        r.slow_consumer_closes
            .attach(&[hub], &self.slow_consumer_closes);
        r.outbox_bytes.attach(&[hub], &self.outbox_bytes);
        r.reliable_unacked_messages
            .attach(&[hub], &self.reliable_unacked_messages);
        r.reliable_unacked_bytes
            .attach(&[hub], &self.reliable_unacked_bytes);
    }

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

    /// Counts one message received from a client of `protocol`: a text or binary frame of
    /// the default protocol, a PUBLISH of MQTT, an event of Socket.IO.
    #[inline]
    pub fn received(&self, protocol: Protocol, binary: bool, bytes: usize) {
        let i = usize::from(binary);
        self.messages_received[i].inc();
        self.received_bytes[i].add(bytes as u64);
        let p = &self.protocols[protocol as usize];
        p.messages_received.inc();
        p.received_bytes.add(bytes as u64);
    }

    /// Counts a connection of `protocol` accepted and open.
    #[inline]
    pub fn connected(&self, protocol: Protocol) {
        self.connections.inc();
        self.connects.inc();
        let p = &self.protocols[protocol as usize];
        p.connections.inc();
        p.connects.inc();
    }

    /// Counts a connection of `protocol` gone.
    #[inline]
    pub fn disconnected(&self, protocol: Protocol) {
        self.connections.dec();
        self.protocols[protocol as usize].connections.dec();
    }
}

/// What the registry knows of one hub, for expiry.
#[derive(Debug)]
struct HubEntry {
    series: Weak<HubSeries>,
    /// Whether its series are in the registry.
    attached: bool,
    /// When it was last seen with a connection (or a new one since the look before).
    last_active: Instant,
    /// `connects` then, so that a connection that came and went between two looks counts.
    last_connects: u64,
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
        let registry = Arc::new(Registry::new());
        // The protocol series exist from the start, at zero: a dashboard sees every
        // protocol, used or not, and a rate over the first connection is right.
        for protocol in Protocol::ALL {
            ProtocolSeries::new(&registry, protocol);
        }
        Self { registry }
    }

    /// The families, to record into.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Sets the bounds of the registry's series (`metrics.max_series_per_metric`,
    /// `metrics.hub_series_expiry`; see the module docs). Series that exist stay.
    pub fn set_series_limits(&self, max_series_per_metric: usize, hub_expiry: Duration) {
        let limits = &self.registry.limits;
        limits
            .max_series
            .store(max_series_per_metric, Ordering::Relaxed);
        limits
            .hub_expiry_millis
            .store(millis(hub_expiry), Ordering::Relaxed);
    }

    /// The most series one family holds (`metrics.max_series_per_metric`).
    pub fn max_series_per_metric(&self) -> usize {
        self.registry.limits.max_series.load(Ordering::Relaxed)
    }

    /// The series of one hub, for the hot path to keep: the hub's existing ones if anything
    /// still holds them, else new ones (named, or folded if their families are full).
    pub fn hub(&self, hub: &str) -> HubMetrics {
        let r = &*self.registry;
        let mut hubs = lock(&r.hubs);
        if let Some(entry) = hubs.get_mut(hub)
            && let Some(series) = entry.series.upgrade()
        {
            if !entry.attached {
                series.attach(r);
                entry.attached = true;
                entry.last_active = Instant::now();
            }
            return HubMetrics(series);
        }
        let series = Arc::new(HubSeries::new(r, hub));
        hubs.insert(
            hub.into(),
            HubEntry {
                series: Arc::downgrade(&series),
                attached: true,
                last_active: Instant::now(),
                last_connects: series.connects.get(),
            },
        );
        HubMetrics(series)
    }

    /// `hub` if it is a hub with series here, else [`UNKNOWN_HUB_LABEL`]: the label for
    /// what a caller without credentials names (a refused recovery).
    pub fn hub_label<'a>(&self, hub: &'a str) -> &'a str {
        match lock(&self.registry.hubs).get(hub) {
            Some(entry) if entry.attached => hub,
            _ => UNKNOWN_HUB_LABEL,
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

    /// Runs the collect hooks, then [`Metrics::maintain`]; then every family holds its
    /// current value.
    pub fn refresh(&self) {
        {
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
        self.maintain();
    }

    /// Applies the series bounds (see the module docs): a hub without connections for
    /// `metrics.hub_series_expiry` loses its series, a hub with a connection again gets
    /// them back, series naming a hub without series here (or one that is gone) are
    /// removed, and `hubcast_metric_series_overflows_total` catches up with the cap hits.
    /// Runs at every collection; costs one pass over the hubs, and one over the series of
    /// the families with a `hub` label.
    pub fn maintain(&self) {
        let r = &*self.registry;
        let now = Instant::now();
        let expiry = Duration::from_millis(r.limits.hub_expiry_millis.load(Ordering::Relaxed));
        let mut hubs = lock(&r.hubs);
        hubs.retain(|_, entry| {
            let Some(series) = entry.series.upgrade() else {
                return false;
            };
            let connects = series.connects.get();
            if series.connections.get() > 0 || connects != entry.last_connects {
                entry.last_active = now;
                entry.last_connects = connects;
                if !entry.attached {
                    series.attach(r);
                    entry.attached = true;
                }
            } else if entry.attached && now.duration_since(entry.last_active) >= expiry {
                entry.attached = false;
            }
            true
        });
        let attached: HashSet<&str> = hubs
            .iter()
            .filter(|(_, e)| e.attached)
            .map(|(name, _)| &**name)
            .collect();
        let keep = |hub: &str| hub == UNKNOWN_HUB_LABEL || attached.contains(hub);
        for family in r.families() {
            family.retain_hubs(&keep);
        }
        // A detached hub whose series were folded has just had its counts moved into the
        // overflow series (its `connects` is back to 0): that is no new connection.
        for entry in hubs.values_mut().filter(|e| !e.attached) {
            if let Some(series) = entry.series.upgrade() {
                entry.last_connects = series.connects.get();
            }
        }
        // Still under the lock of `hubs`: a scrape and an export may maintain at once, and
        // one at a time keeps the read-then-add exact.
        for family in r.families() {
            let hits = family.overflow_hits();
            if hits > 0 {
                let counted = r.series_overflows.with(&[family.name()]);
                counted.add(hits.saturating_sub(counted.get()));
            }
        }
        drop(hubs);
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

/// Locks `m`; what it guards is updated whole, so a poisoned lock is still consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let chat = metrics.hub("chat");
        chat.connects.add(3);
        chat.connections.inc();
        let h = &chat.fanout_latency;
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
        let _hub = metrics.hub("h");
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
        let _hub = metrics.hub("x");
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

    /// The value of the one line of `text` that starts with `series` followed by a space.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().expect("a number"))
    }

    #[test]
    fn a_full_family_folds_new_label_sets_into_its_overflow_series_and_counts_them() {
        let metrics = Metrics::new();
        metrics.set_series_limits(2, DEFAULT_HUB_SERIES_EXPIRY);
        let r = metrics.registry();
        for reason in ["a", "b", "c", "d"] {
            r.connect_refusals.with(&[reason]).add(10);
        }
        let hubs: Vec<HubMetrics> = ["h1", "h2", "h3"].map(|h| metrics.hub(h)).into();
        for hub in &hubs {
            hub.connects.inc();
            hub.connections.inc();
        }
        let text = metrics.render();
        assert_eq!(
            sample(&text, "hubcast_connect_refusals_total{status=\"a\"}"),
            Some(10.0)
        );
        assert_eq!(
            sample(&text, "hubcast_connect_refusals_total{status=\"c\"}"),
            None
        );
        assert_eq!(
            sample(
                &text,
                "hubcast_connect_refusals_total{status=\"_overflow\"}"
            ),
            Some(20.0),
            "{text}"
        );
        // The third hub records on its own series, rendered within the overflow one.
        assert_eq!(sample(&text, "hubcast_connects_total{hub=\"h3\"}"), None);
        assert_eq!(
            sample(&text, "hubcast_connects_total{hub=\"_overflow\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "hubcast_metric_series_overflows_total{metric=\"hubcast_connect_refusals_total\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "hubcast_metric_series_overflows_total{metric=\"hubcast_connects_total\"}"
            ),
            Some(1.0)
        );
    }

    #[test]
    fn a_hub_without_connections_loses_its_series_and_gets_them_back_with_a_connection() {
        let metrics = Metrics::new();
        metrics.set_series_limits(DEFAULT_MAX_SERIES_PER_METRIC, Duration::ZERO);
        let hub = metrics.hub("chat");
        hub.connects.inc();
        hub.connections.inc();
        metrics
            .registry()
            .disconnects
            .with(&["chat", "client"])
            .inc();
        let text = metrics.render();
        assert_eq!(
            sample(&text, "hubcast_connects_total{hub=\"chat\"}"),
            Some(1.0)
        );
        hub.connections.dec();
        let text = metrics.render();
        assert!(!text.contains("hub=\"chat\""), "{text}");
        hub.connects.inc();
        hub.connections.inc();
        let text = metrics.render();
        assert_eq!(
            sample(&text, "hubcast_connects_total{hub=\"chat\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "hubcast_connections{hub=\"chat\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "hubcast_disconnects_total{hub=\"chat\",reason=\"client\"}"
            ),
            None,
            "cold-path series of an expired hub are gone for good"
        );
    }

    #[test]
    fn an_expired_folded_hub_leaves_its_counts_in_the_overflow_series() {
        let metrics = Metrics::new();
        metrics.set_series_limits(1, Duration::ZERO);
        let first = metrics.hub("first");
        first.connections.inc();
        let folded = metrics.hub("folded");
        folded.connects.add(5);
        let text = metrics.render();
        assert_eq!(
            sample(&text, "hubcast_connects_total{hub=\"_overflow\"}"),
            Some(5.0)
        );
        // Both idle now: expired, the folded hub's counts moved into the overflow series.
        first.connections.dec();
        let text = metrics.render();
        assert_eq!(
            sample(&text, "hubcast_connects_total{hub=\"_overflow\"}"),
            Some(5.0),
            "{text}"
        );
        assert_eq!(folded.connects.get(), 0, "moved, not copied");
        // That move is no new connection: with room made, it does not come back.
        let text = metrics.render();
        assert!(!text.contains("hub=\"folded\""), "{text}");
        assert!(!text.contains("hub=\"first\""), "{text}");
    }

    #[test]
    fn series_naming_a_hub_without_series_are_dropped_and_unknown_hubs_share_one_label() {
        let metrics = Metrics::new();
        let _chat = metrics.hub("chat");
        assert_eq!(metrics.hub_label("chat"), "chat");
        assert_eq!(metrics.hub_label("nowhere"), UNKNOWN_HUB_LABEL);
        let r = metrics.registry();
        r.reliable_recoveries.with(&["nowhere", "refused"]).inc();
        r.reliable_recoveries
            .with(&[metrics.hub_label("nowhere"), "refused"])
            .inc();
        let text = metrics.render();
        assert!(!text.contains("nowhere"), "{text}");
        assert_eq!(
            sample(
                &text,
                "hubcast_reliable_recoveries_total{hub=\"_unknown\",outcome=\"refused\"}"
            ),
            Some(1.0)
        );
    }
}
