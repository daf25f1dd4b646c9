//! The live trace: records of what happens on this node (connections, messages, REST
//! requests), in Azure Web PubSub's three live-trace categories and with its field names,
//! streamed to operators while they listen (`hubcast.v1.Admin/Trace` over gRPC,
//! `GET /api/trace` as Server-Sent Events; `hubcast trace`).
//!
//! Why it costs nothing when nobody listens: a recording site passes a closure that builds the
//! record, and [`LiveTrace::emit`] calls it only when a listener exists (one relaxed load
//! otherwise): no string is formatted, nothing is allocated or locked on the data path.
//!
//! Why it never slows the data path when someone does listen: each listener has a bounded
//! queue filled with `try_send`; a record that finds it full is dropped and counted, and the
//! listener is told how many before its next record ([`TraceItem::Dropped`]). A listener
//! whose queue stays full for [`LiveTraceSettings::stall`] is ended
//! ([`TraceItem::Stalled`]), so one that stopped reading holds no memory and no slot.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

/// Azure's live-trace categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Connections opened, refused and closed (`ConnectivityLogs`).
    Connectivity,
    /// Messages sent and group membership (`MessagingLogs`).
    Messaging,
    /// REST requests (`HttpRequestLogs`).
    HttpRequest,
}

impl Category {
    /// Every category, in the order of their bits in a filter.
    pub const ALL: [Category; 3] = [
        Category::Connectivity,
        Category::Messaging,
        Category::HttpRequest,
    ];

    /// The name used by the SSE form and `--category` (`connectivity`, `messaging`,
    /// `http`).
    pub fn name(self) -> &'static str {
        match self {
            Category::Connectivity => "connectivity",
            Category::Messaging => "messaging",
            Category::HttpRequest => "http",
        }
    }

    /// The category named `name` (as [`Category::name`] spells it, case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Azure's log levels (the live trace uses three of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// Normal operation.
    #[default]
    Informational,
    /// Something refused or cut short.
    Warning,
    /// A failure.
    Error,
}

impl Level {
    /// Azure's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "Informational",
            Level::Warning => "Warning",
            Level::Error => "Error",
        }
    }
}

/// One record. Fields that do not apply stay empty.
#[derive(Debug, Clone)]
pub struct TraceRecord {
    /// When it happened (set by [`LiveTrace::emit`]).
    pub time: SystemTime,
    /// Its level.
    pub level: Level,
    /// Its category.
    pub category: Category,
    /// E.g. `ConnectionStarted`.
    pub event_name: &'static str,
    /// What happened, in words.
    pub message: String,
    /// The hub (its routing key).
    pub hub: String,
    /// The connection.
    pub connection_id: String,
    /// The connection's user.
    pub user_id: String,
    /// The client's address.
    pub ip: String,
    /// HTTP requests: the route, method, URL (tokens removed), status and duration.
    pub route_template: String,
    /// The HTTP method.
    pub http_method: String,
    /// The URL, path and query.
    pub url: String,
    /// The HTTP status.
    pub status_code: u16,
    /// How long the request took.
    pub duration: Duration,
    /// The W3C trace id, when the operation is traced.
    pub trace_id: String,
    /// The group a messaging record is about.
    pub group: String,
    /// The payload, only when [`LiveTraceSettings::include_payloads`].
    pub payload: String,
    /// The node that recorded it (set by [`LiveTrace::emit`]).
    pub node: String,
}

impl TraceRecord {
    /// A record of `category` named `event_name`, everything else empty.
    pub fn new(category: Category, event_name: &'static str, message: String) -> Self {
        Self {
            time: SystemTime::UNIX_EPOCH,
            level: Level::Informational,
            category,
            event_name,
            message,
            hub: String::new(),
            connection_id: String::new(),
            user_id: String::new(),
            ip: String::new(),
            route_template: String::new(),
            http_method: String::new(),
            url: String::new(),
            status_code: 0,
            duration: Duration::ZERO,
            trace_id: String::new(),
            group: String::new(),
            payload: String::new(),
            node: String::new(),
        }
    }
}

/// Which records a listener wants: every set field must match.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    /// The hub, lower-cased (hub names are case-insensitive).
    pub hub: Option<String>,
    /// The user id.
    pub user_id: Option<String>,
    /// The connection id.
    pub connection_id: Option<String>,
    /// The categories; empty: all.
    pub categories: Vec<Category>,
    /// A case-insensitive substring of the event name, message, group or URL.
    pub keyword: Option<String>,
}

impl TraceFilter {
    fn compile(self) -> Compiled {
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Compiled {
            hub: nonempty(self.hub).map(|h| h.to_ascii_lowercase()),
            user_id: nonempty(self.user_id),
            connection_id: nonempty(self.connection_id),
            categories: if self.categories.is_empty() {
                u8::MAX
            } else {
                self.categories.iter().fold(0, |bits, c| bits | c.bit())
            },
            keyword: nonempty(self.keyword).map(|k| k.to_lowercase()),
        }
    }
}

#[derive(Debug)]
struct Compiled {
    hub: Option<String>,
    user_id: Option<String>,
    connection_id: Option<String>,
    categories: u8,
    keyword: Option<String>,
}

impl Compiled {
    fn matches(&self, r: &TraceRecord) -> bool {
        let field = |want: &Option<String>, have: &str| want.as_ref().is_none_or(|w| w == have);
        self.categories & r.category.bit() != 0
            && field(&self.hub, &r.hub)
            && field(&self.user_id, &r.user_id)
            && field(&self.connection_id, &r.connection_id)
            && self.keyword.as_ref().is_none_or(|k| {
                [r.event_name, &r.message, &r.group, &r.url]
                    .iter()
                    .any(|text| text.to_lowercase().contains(k.as_str()))
            })
    }
}

/// `[live_trace]` of the configuration.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveTraceSettings {
    /// Whether records carry message payloads (off: payloads may be personal data).
    pub include_payloads: bool,
    /// Records a listener may have waiting before new ones are dropped.
    pub buffer: usize,
    /// Listeners at once on this node.
    pub max_listeners: usize,
    /// How long a listener's queue may stay full before the listener is ended (seconds in
    /// the file).
    #[serde(with = "crate::config::seconds")]
    pub stall: Duration,
}

impl Default for LiveTraceSettings {
    fn default() -> Self {
        Self {
            include_payloads: false,
            buffer: 1024,
            max_listeners: 16,
            stall: Duration::from_secs(10),
        }
    }
}

/// The live trace of a node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveTrace(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Listeners now: the one thing a recording site reads when nobody listens.
    listening: AtomicUsize,
    listeners: RwLock<Vec<Arc<Listener>>>,
    settings: LiveTraceSettings,
    node: String,
    /// When this trace was made: the origin of the listeners' stall clocks.
    epoch: Instant,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Listener {
    id: u64,
    filter: Compiled,
    tx: mpsc::Sender<Arc<TraceRecord>>,
    /// Records dropped since the listener last heard of drops.
    dropped: AtomicU64,
    /// Milliseconds since the trace's epoch at which its queue was first found full (0: it
    /// is not full).
    full_since: AtomicU64,
    /// Set when it was ended for not reading.
    stalled: AtomicBool,
}

/// Why a listener was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this node already has {0} live-trace listeners (live_trace.max_listeners)")]
pub struct TooManyListeners(pub usize);

impl LiveTrace {
    /// The live trace of node `node` (its id in a cluster; empty on a single node).
    pub fn new(settings: LiveTraceSettings, node: String) -> Self {
        Self(Arc::new(Inner {
            listening: AtomicUsize::new(0),
            listeners: RwLock::new(Vec::new()),
            settings,
            node,
            epoch: Instant::now(),
            next_id: AtomicU64::new(1),
        }))
    }

    /// Whether anyone listens; recording sites that need more than a closure check this.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.0.listening.load(Ordering::Relaxed) > 0
    }

    /// Whether records carry payloads.
    pub fn include_payloads(&self) -> bool {
        self.0.settings.include_payloads
    }

    /// Hands the record `make` builds to every listener that wants it; `make` is only called
    /// while someone listens.
    #[inline]
    pub fn emit(&self, make: impl FnOnce() -> TraceRecord) {
        if self.is_on() {
            self.deliver(make());
        }
    }

    fn deliver(&self, mut record: TraceRecord) {
        record.time = SystemTime::now();
        if record.node.is_empty() {
            record.node.clone_from(&self.0.node);
        }
        if !self.0.settings.include_payloads {
            record.payload.clear();
        }
        let record = Arc::new(record);
        let mut stalled = Vec::new();
        {
            let listeners = self
                .0
                .listeners
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for listener in listeners.iter() {
                if !listener.filter.matches(&record) {
                    continue;
                }
                match listener.tx.try_send(record.clone()) {
                    Ok(()) => {
                        if listener.full_since.load(Ordering::Relaxed) != 0 {
                            listener.full_since.store(0, Ordering::Relaxed);
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        listener.dropped.fetch_add(1, Ordering::Relaxed);
                        let now = self.millis();
                        let since = listener.full_since.load(Ordering::Relaxed);
                        if since == 0 {
                            listener.full_since.store(now, Ordering::Relaxed);
                        } else if now - since >= millis(self.0.settings.stall) {
                            stalled.push(listener.id);
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        for id in stalled {
            if let Some(listener) = self.remove(id) {
                listener.stalled.store(true, Ordering::Relaxed);
                tracing::warn!(
                    listener = id,
                    "a live-trace listener stopped reading; ended"
                );
            }
        }
    }

    /// Milliseconds since the epoch, at least 1 (0 means "not full").
    fn millis(&self) -> u64 {
        millis(self.0.epoch.elapsed()).max(1)
    }

    /// Starts listening for the records `filter` matches.
    ///
    /// # Errors
    /// [`TooManyListeners`] when this node has `max_listeners` already.
    pub fn listen(&self, filter: TraceFilter) -> Result<TraceStream, TooManyListeners> {
        let (tx, rx) = mpsc::channel(self.0.settings.buffer.max(1));
        let listener = Arc::new(Listener {
            id: self.0.next_id.fetch_add(1, Ordering::Relaxed),
            filter: filter.compile(),
            tx,
            dropped: AtomicU64::new(0),
            full_since: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
        });
        {
            let mut listeners = self
                .0
                .listeners
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if listeners.len() >= self.0.settings.max_listeners {
                return Err(TooManyListeners(self.0.settings.max_listeners));
            }
            listeners.push(listener.clone());
            self.0.listening.store(listeners.len(), Ordering::Relaxed);
        }
        Ok(TraceStream {
            trace: self.clone(),
            listener,
            rx,
            ended: false,
        })
    }

    fn remove(&self, id: u64) -> Option<Arc<Listener>> {
        let mut listeners = self
            .0
            .listeners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = listeners.iter().position(|l| l.id == id)?;
        let listener = listeners.swap_remove(index);
        self.0.listening.store(listeners.len(), Ordering::Relaxed);
        Some(listener)
    }

    /// Listeners now.
    pub fn listeners(&self) -> usize {
        self.0.listening.load(Ordering::Relaxed)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a listener receives.
#[derive(Debug, Clone)]
pub enum TraceItem {
    /// A record.
    Record(Arc<TraceRecord>),
    /// This many records were dropped for lack of room since the last item.
    Dropped(u64),
    /// The listener was ended for not reading; nothing follows.
    Stalled,
}

/// One listener's stream; it stops listening when dropped.
#[derive(Debug)]
pub struct TraceStream {
    trace: LiveTrace,
    listener: Arc<Listener>,
    rx: mpsc::Receiver<Arc<TraceRecord>>,
    ended: bool,
}

impl TraceStream {
    /// The next item; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<TraceItem> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`TraceStream::next`] as a poll, for stream adapters.
    pub fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<TraceItem>> {
        use std::task::Poll;
        if self.ended {
            return Poll::Ready(None);
        }
        let dropped = self.listener.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            return Poll::Ready(Some(TraceItem::Dropped(dropped)));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(record)) => Poll::Ready(Some(TraceItem::Record(record))),
            // Its sender went with the listener: it was ended.
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(
                    self.listener
                        .stalled
                        .load(Ordering::Relaxed)
                        .then_some(TraceItem::Stalled),
                )
            }
            Poll::Pending => {
                // Not registered any more but the sender is still held by `self.listener`:
                // a stalled listener ends here.
                if self.listener.stalled.load(Ordering::Relaxed) {
                    self.ended = true;
                    return Poll::Ready(Some(TraceItem::Stalled));
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for TraceStream {
    fn drop(&mut self) {
        self.trace.remove(self.listener.id);
    }
}

/// A record as JSON, the SSE stream's and `hubcast trace --json`'s form: Azure's live-trace
/// field names, camel-cased, with empty fields left out.
pub fn record_json(r: &hubcast_proto::v1::TraceRecord) -> serde_json::Value {
    use hubcast_proto::v1::TraceCategory;
    let since = r.time.as_ref().map_or(Duration::ZERO, |t| {
        Duration::new(
            u64::try_from(t.seconds).unwrap_or(0),
            u32::try_from(t.nanos).unwrap_or(0),
        )
    });
    let category = match TraceCategory::try_from(r.category) {
        Ok(TraceCategory::Connectivity) => Category::Connectivity.name(),
        Ok(TraceCategory::Messaging) => Category::Messaging.name(),
        Ok(TraceCategory::HttpRequest) => Category::HttpRequest.name(),
        _ => "",
    };
    let mut v = serde_json::json!({
        "time": crate::timestamp::rfc3339_millis(SystemTime::UNIX_EPOCH + since),
        "level": r.level,
        "category": category,
        "eventName": r.event_name,
        "message": r.message,
    });
    let object = v.as_object_mut().expect("an object");
    for (key, value) in [
        ("hub", &r.hub),
        ("connectionId", &r.connection_id),
        ("userId", &r.user_id),
        ("ip", &r.ip),
        ("routeTemplate", &r.route_template),
        ("httpMethod", &r.http_method),
        ("url", &r.url),
        ("traceId", &r.trace_id),
        ("group", &r.group),
        ("payload", &r.payload),
        ("node", &r.node),
    ] {
        if !value.is_empty() {
            object.insert(key.to_owned(), serde_json::json!(value));
        }
    }
    if r.status_code != 0 {
        object.insert("statusCode".to_owned(), serde_json::json!(r.status_code));
        object.insert("durationMs".to_owned(), serde_json::json!(r.duration_ms));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(buffer: usize, stall: Duration) -> LiveTraceSettings {
        LiveTraceSettings {
            include_payloads: false,
            buffer,
            max_listeners: 2,
            stall,
        }
    }

    fn record(hub: &str, category: Category, message: &str) -> TraceRecord {
        let mut r = TraceRecord::new(category, "Test", message.to_owned());
        r.hub = hub.to_owned();
        r.payload = "secret".to_owned();
        r
    }

    #[tokio::test]
    async fn nothing_is_built_without_listeners_and_filters_apply() {
        let trace = LiveTrace::new(settings(8, Duration::from_secs(10)), "n1".into());
        trace.emit(|| unreachable!("no listener: the record is never built"));
        let mut chat = trace
            .listen(TraceFilter {
                hub: Some("Chat".into()),
                categories: vec![Category::Messaging],
                keyword: Some("HELLO".into()),
                ..TraceFilter::default()
            })
            .expect("room for a listener");
        assert!(trace.is_on());
        trace.emit(|| record("other", Category::Messaging, "hello"));
        trace.emit(|| record("chat", Category::Connectivity, "hello"));
        trace.emit(|| record("chat", Category::Messaging, "bye"));
        trace.emit(|| record("chat", Category::Messaging, "say hello"));
        let Some(TraceItem::Record(r)) = chat.next().await else {
            panic!("a record");
        };
        assert_eq!(r.message, "say hello");
        assert_eq!(r.node, "n1");
        assert!(r.payload.is_empty(), "payloads are off by default");
        assert!(r.time > SystemTime::UNIX_EPOCH);
        drop(chat);
        assert!(!trace.is_on());
    }

    #[tokio::test]
    async fn a_full_listener_loses_records_counted_then_is_ended() {
        let trace = LiveTrace::new(settings(2, Duration::from_millis(50)), String::new());
        let mut slow = trace.listen(TraceFilter::default()).expect("room");
        let mut other = trace.listen(TraceFilter::default()).expect("room");
        assert_eq!(
            trace.listen(TraceFilter::default()).unwrap_err(),
            TooManyListeners(2)
        );
        for i in 0..5 {
            trace.emit(|| record("h", Category::Messaging, &i.to_string()));
        }
        // Two fit, three were dropped and are reported first.
        assert!(matches!(slow.next().await, Some(TraceItem::Dropped(3))));
        assert!(matches!(slow.next().await, Some(TraceItem::Record(r)) if r.message == "0"));
        assert!(matches!(other.next().await, Some(TraceItem::Dropped(3))));
        assert!(matches!(other.next().await, Some(TraceItem::Record(r)) if r.message == "0"));
        assert!(matches!(other.next().await, Some(TraceItem::Record(r)) if r.message == "1"));
        // `slow` stops reading (one queued, one more fits); `other` reads on.
        trace.emit(|| record("h", Category::Messaging, "5"));
        assert!(matches!(other.next().await, Some(TraceItem::Record(r)) if r.message == "5"));
        trace.emit(|| record("h", Category::Messaging, "6"));
        tokio::time::sleep(Duration::from_millis(60)).await;
        trace.emit(|| record("h", Category::Messaging, "7"));
        assert_eq!(trace.listeners(), 1, "the stalled listener is gone");
        // What `slow` had queued is still delivered, then it hears why it ended.
        let mut rest = Vec::new();
        while let Some(item) = slow.next().await {
            rest.push(item);
        }
        assert!(matches!(rest[0], TraceItem::Dropped(2)), "{rest:?}");
        assert!(
            matches!(&rest[1], TraceItem::Record(r) if r.message == "1"),
            "{rest:?}"
        );
        assert!(
            matches!(&rest[2], TraceItem::Record(r) if r.message == "5"),
            "{rest:?}"
        );
        assert!(matches!(rest[3], TraceItem::Stalled), "{rest:?}");
        assert_eq!(rest.len(), 4, "{rest:?}");
        assert!(matches!(other.next().await, Some(TraceItem::Record(r)) if r.message == "6"));
    }
}
