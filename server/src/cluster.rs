//! The Redis backplane: how several Hubcast nodes behind one load balancer act as one service.
//!
//! Single node (no Redis URL) there is no backplane at all: the server holds `None` and every
//! operation stays in memory, at no extra cost on the send path.
//!
//! With Redis, each node has a random id of [`NODE_ID_LEN`] characters, and every connection
//! id it hands out starts with it, so the owner of a connection is known from the id alone,
//! with no lookup. Nodes talk over Redis pub/sub:
//!
//! - `{prefix}:all`, which every node subscribes to, carries what concerns every node: sends
//!   to all / a group / a user, user and filtered group operations, closes of a group, user or
//!   hub, and the cluster-wide questions (exists, listings, statistics);
//! - `{prefix}:node:{id}`, one per node, carries what concerns one node: operations on a
//!   connection it owns, and the replies to the questions it asked.
//!
//! Each node publishes through one connection, from one task, in the order operations were
//! queued, so messages from one sender reach every node in order; and each node handles what
//! it receives in one task, in order, feeding it into the same local fan-out as a local send
//! (the message is encoded once per node).
//!
//! Cluster state lives with the nodes that hold the connections, and questions are asked of
//! the live nodes: `PUBLISH` says how many nodes are subscribed, and a lease key per node
//! (`{prefix}:lease:{id}`, refreshed by a heartbeat,
//! [`DEFAULT_LEASE`](crate::config::DEFAULT_LEASE) by default) says which
//! are alive. A node that dies drops its Redis connections, so it leaves the answers at once;
//! one that hangs leaves them when its lease runs out. There is nothing to clean up after a
//! dead node but its entry in `{prefix}:nodes`, which the survivors remove.
//!
//! Redis is one server (`cluster.redis_url`) or a Redis Cluster
//! (`cluster.redis_cluster_nodes`): on a Redis Cluster every key and channel is named
//! `{prefix}:...` instead, the braces making the prefix a hash tag so that all of them share
//! one hash slot (`cluster/endpoint.rs` says how the commands and the subscription find it).
//!
//! Redis trouble: the node keeps serving its local connections, reconnects and resubscribes by
//! itself, reports itself degraded ([`Cluster::serving`], gRPC health `NOT_SERVING`,
//! [`ClusterMetrics`]) and fails cluster operations with [`ClusterError`] instead of
//! pretending they succeeded. Every queue is bounded.

pub(crate) mod endpoint;
pub(crate) mod wire;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt;
use hubcast_proto::v1 as pb;
use prost::Message as _;
use rand::RngCore;
use redis::AsyncCommands;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RedisTarget;
use endpoint::{Commands, Endpoint};
use tracing::Instrument as _;
use wire::{
    Body, Envelope, EventAnswer, InvokeAck, InvokeCall, InvokeSent, ListenerAd, Reply,
    TunnelAnswer, TunnelRequest,
};

use crate::telemetry::{Metrics, trace};

/// A `backplane publish` span for a message to `channel` when traces are on (a disabled
/// span otherwise, which costs nothing).
fn publish_span(channel: &str) -> tracing::Span {
    if trace::enabled() {
        tracing::info_span!("backplane publish", channel)
    } else {
        tracing::Span::none()
    }
}

/// Length of a node id, which is also the prefix of every connection id the node hands out.
pub const NODE_ID_LEN: usize = 6;

/// Requests from other nodes waiting for the service layer; beyond this the subscriber
/// waits, as it did when it handled them itself.
const INBOUND_CAPACITY: usize = 1024;

/// How long a node waits for the answers of the others.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one Redis command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How long leaving the cluster waits for the backplane's tasks: the loops end at once; an
/// answer to a relayed event may still be waiting for this node's listener.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Messages waiting to be published; beyond this, sends fail instead of queueing.
const OUTGOING_CAPACITY: usize = 8192;

/// How many queued messages one pipeline carries.
const PIPELINE_MAX: usize = 256;

/// Replies one question may collect before the rest are dropped (far more than nodes).
const REPLY_CAPACITY: usize = 256;

/// How long a node's answer may take before its lease is looked at.
const LEASE_CHECK_AFTER: Duration = Duration::from_millis(250);

/// First pause before the heartbeat tries again after a failure.
const RETRY_START: Duration = Duration::from_millis(100);

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Settings of the Redis backplane.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Where Redis is: one server, or a Redis Cluster.
    pub redis: RedisTarget,
    /// Prefix of every Redis key and channel, so several clusters (or tests) share one Redis.
    /// On a Redis Cluster it becomes the hash tag `{prefix}` of every key and channel.
    pub key_prefix: String,
    /// How long a node stays in cluster answers without a heartbeat.
    pub lease: Duration,
}

/// A cluster operation that cannot be completed now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// Redis cannot be reached, or another node did not answer.
    #[error("the cluster is unavailable: {0}")]
    Unavailable(String),
}

/// Backplane health and counters, for health checks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterMetrics {
    /// Whether the node cannot reach Redis (or is not subscribed) right now.
    pub degraded: bool,
    /// Messages published.
    pub published: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Redis commands or publishes that failed, and messages refused by a full queue.
    pub errors: u64,
    /// Times the subscription was (re)established.
    pub subscriptions: u64,
    /// Latency of the last publish round trip, in microseconds.
    pub publish_latency_us: u64,
}

/// What another node asks of this one, in the order the nodes' messages arrived. The
/// service layer, which owns the meaning of every operation, carries it out and gives the
/// reply to [`Cluster::answer`]; the backplane only moves bytes.
#[derive(Debug)]
pub(crate) struct Request {
    /// The operation or question.
    pub(crate) body: Body,
    /// The `backplane receive` span, a child of the asking node's trace.
    pub(crate) span: tracing::Span,
    /// Where the reply goes.
    pub(crate) asker: Asker,
}

/// The node that sent a [`Request`] and the id its reply must carry.
#[derive(Debug)]
pub(crate) struct Asker {
    origin: String,
    request_id: u64,
}

/// The requests other nodes send to this one, handed out once by [`Cluster::start`]: the
/// composition root gives them to the service layer, which consumes them in one task, in
/// order (so the order of one sender's messages holds on every node).
#[derive(Debug)]
pub struct Requests {
    queue: mpsc::Receiver<Request>,
    stop: CancellationToken,
}

impl Requests {
    /// The next request; `None` once the node has left the cluster.
    pub(crate) async fn next(&mut self) -> Option<Request> {
        tokio::select! {
            biased;
            () = self.stop.cancelled() => None,
            request = self.queue.recv() => request,
        }
    }
}

/// An event another node relays to this node's event-stream listeners (it has none of its
/// own for the event). The upstream, which owns the listeners, takes these from
/// [`RelayedEvents`] and answers each with [`Cluster::answer_relayed`].
#[derive(Debug)]
pub(crate) struct RelayedEvent {
    /// The event, as the relaying node's upstream built it.
    pub(crate) event: Relayed,
    /// Who relayed it, and the id its answer must carry.
    pub(crate) asker: Asker,
    /// The relaying node's trace, continued here.
    pub(crate) span: tracing::Span,
}

/// What another node relays here: an event for the event-stream listeners, or a request for
/// an Azure tunnel.
#[derive(Debug)]
pub(crate) enum Relayed {
    /// For this node's event-stream listeners; answered with an [`EventAnswer`]. Boxed: the
    /// largest variant by far.
    Event(Box<pb::Event>),
    /// For one of this node's Azure tunnels; answered with a [`TunnelAnswer`].
    TunnelRequest(TunnelRequest),
    /// A Socket.IO `:invoke` of another node's tunnel for this node's sockets; answered
    /// with an [`InvokeSent`].
    Invoke(InvokeCall),
    /// A socket's ack to an `:invoke` of this node (not answered).
    InvokeAck(InvokeAck),
}

/// The events other nodes relay to this one, handed out once by [`Cluster::start`]: the
/// composition root gives them to the upstream.
#[derive(Debug)]
pub struct RelayedEvents {
    queue: mpsc::Receiver<RelayedEvent>,
    stop: CancellationToken,
}

impl RelayedEvents {
    /// The next relayed event; `None` once the node has left the cluster.
    pub(crate) async fn next(&mut self) -> Option<RelayedEvent> {
        tokio::select! {
            biased;
            () = self.stop.cancelled() => None,
            event = self.queue.recv() => event,
        }
    }
}

/// One message on its way to Redis.
#[derive(Debug)]
struct Outgoing {
    channel: Arc<str>,
    bytes: Vec<u8>,
    /// Told how many nodes received it (or why it failed), for callers that wait.
    done: Option<oneshot::Sender<Result<usize, ClusterError>>>,
}

#[derive(Debug, Default)]
struct Health {
    subscribed: AtomicBool,
    redis_ok: AtomicBool,
    published: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    subscriptions: AtomicU64,
    publish_latency_us: AtomicU64,
}

/// The Redis backplane of one node.
pub struct Cluster {
    node: Arc<str>,
    prefix: String,
    /// What every key and channel starts with: the prefix, or on a Redis Cluster the hash tag
    /// `{prefix}` that keeps them all in one slot.
    key_base: String,
    all_channel: Arc<str>,
    lease: Duration,
    endpoint: Endpoint,
    commands: Commands,
    outgoing: mpsc::Sender<Outgoing>,
    /// Questions in flight: request id → where replies go.
    pending: DashMap<u64, mpsc::Sender<(String, Reply)>>,
    next_request: AtomicU64,
    /// Hands the requests of other nodes to the service layer (see [`Requests`]).
    inbound: mpsc::Sender<Request>,
    /// Where the events other nodes relay here go (to the upstream, through [`RelayedEvents`]).
    relayed_events: mpsc::Sender<RelayedEvent>,
    /// The last advertisement of this node's listeners and tunnels (`None` until it first
    /// had one), with the versions of its two parts.
    own_ad: Mutex<OwnAd>,
    ad_version: AtomicU64,
    /// The other nodes' listeners, by node id, as last advertised.
    ads: RwLock<HashMap<String, ListenerAd>>,
    /// Changes whenever `ads` does, so readers can cache what they derive from it.
    ads_generation: AtomicU64,
    health: Health,
    /// Wakes the heartbeat after a failed publish, so a passing Redis hiccup ends the
    /// degraded period as soon as Redis answers again, not at the next regular heartbeat.
    recheck: tokio::sync::Notify,
    serving: watch::Sender<bool>,
    stop: CancellationToken,
    /// The publisher, subscriber and heartbeat loops:
    /// [`Cluster::stop`] waits for them.
    tasks: TaskTracker,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("prefix", &self.prefix)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to Redis and starts the publisher, subscriber and heartbeat tasks. The
    /// requests other nodes send here come out of the returned [`Requests`], and the events
    /// they relay to this node's event-stream listeners out of [`RelayedEvents`], from the
    /// start: nothing is installed later.
    ///
    /// # Errors
    /// A malformed URL, or a Redis that cannot be reached at start (a node that cannot join
    /// the cluster should fail loudly, not serve alone).
    pub async fn start(
        settings: ClusterSettings,
    ) -> Result<(Arc<Self>, Requests, RelayedEvents), ClusterError> {
        let unavailable =
            |e: &dyn fmt::Display| ClusterError::Unavailable(format!("{}: {e}", settings.redis));
        let key_base = match &settings.redis {
            RedisTarget::Single(_) => settings.key_prefix.clone(),
            RedisTarget::Cluster(_) => format!("{{{}}}", settings.key_prefix),
        };
        let endpoint = Endpoint::new(settings.redis.clone()).map_err(|e| unavailable(&e))?;
        let commands = tokio::time::timeout(
            COMMAND_TIMEOUT * 2,
            endpoint.commands(COMMAND_TIMEOUT, MAX_BACKOFF),
        )
        .await
        .map_err(|_| unavailable(&"connection timed out"))?
        .map_err(|e| unavailable(&e))?;
        let node = random_node_id();
        let (outgoing, queue) = mpsc::channel(OUTGOING_CAPACITY);
        let (serving, _) = watch::channel(false);
        let (inbound, requests) = mpsc::channel(INBOUND_CAPACITY);
        let (relayed_events, relayed) = mpsc::channel(INBOUND_CAPACITY);
        let cluster = Arc::new(Self {
            all_channel: format!("{key_base}:all").into(),
            node: node.into(),
            prefix: settings.key_prefix,
            key_base,
            lease: settings.lease.max(Duration::from_millis(300)),
            endpoint,
            commands,
            outgoing,
            pending: DashMap::new(),
            next_request: AtomicU64::new(1),
            inbound,
            relayed_events,
            own_ad: Mutex::new(OwnAd::default()),
            ad_version: AtomicU64::new(0),
            ads: RwLock::new(HashMap::new()),
            ads_generation: AtomicU64::new(0),
            health: Health::default(),
            recheck: tokio::sync::Notify::new(),
            serving,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        cluster.heartbeat_once().await;
        cluster.tasks.spawn(publisher(cluster.clone(), queue));
        cluster.tasks.spawn(subscriber(cluster.clone()));
        cluster.tasks.spawn(heartbeat(cluster.clone()));
        tracing::info!(node = %cluster.node, prefix = %cluster.prefix, lease = ?cluster.lease, "joined the cluster");
        let requests = Requests {
            queue: requests,
            stop: cluster.stop.clone(),
        };
        let relayed = RelayedEvents {
            queue: relayed,
            stop: cluster.stop.clone(),
        };
        Ok((cluster, requests, relayed))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node that owns a connection id (its first [`NODE_ID_LEN`] characters).
    pub fn owner_of<'a>(&self, connection_id: &'a str) -> Option<&'a str> {
        connection_id.get(..NODE_ID_LEN)
    }

    /// Sends the reply to a [`Request`] back to the node that asked, when it waits for one.
    pub(crate) fn answer(&self, asker: Asker, reply: Reply) {
        if asker.request_id != 0 {
            self.reply(&asker.origin, asker.request_id, reply);
        }
    }

    /// Exports the backplane's health and counters into `metrics` at each collection. The
    /// backplane keeps its own atomics; counters advance by what changed since the last
    /// collection.
    pub fn export_metrics(self: &Arc<Self>, metrics: &Metrics) {
        let cluster = Arc::downgrade(self);
        let last = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
        metrics.on_collect(move |registry| {
            let Some(cluster) = cluster.upgrade() else {
                return;
            };
            let m = cluster.metrics();
            let node = [cluster.node()];
            registry
                .cluster_degraded
                .with(&node)
                .set(i64::from(m.degraded));
            registry
                .cluster_publish_latency
                .with(&node)
                .set(i64::try_from(m.publish_latency_us).unwrap_or(i64::MAX));
            let delta =
                |i: usize, now: u64| now.saturating_sub(last[i].swap(now, Ordering::Relaxed));
            registry
                .cluster_messages
                .with(&[cluster.node(), "published"])
                .add(delta(0, m.published));
            registry
                .cluster_messages
                .with(&[cluster.node(), "received"])
                .add(delta(1, m.received));
            registry.cluster_errors.with(&node).add(delta(2, m.errors));
        });
    }

    /// The version for the next advertisement of this node's listeners: take it while the
    /// listener list is locked, so that a later version always describes a later list.
    pub(crate) fn next_ad_version(&self) -> u64 {
        self.ad_version.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Tells the other nodes which event-stream listeners this node has now, so that they
    /// relay the events of their connections here. The advertisement goes to Redis (for
    /// nodes that join later, and re-read at every heartbeat) and on the channel; with
    /// `wait`, this returns once every live node has taken it.
    ///
    /// An advertisement older than one already made is not sent again: the newer one is.
    ///
    /// # Errors
    /// Redis is unreachable or a node did not answer: the others learn of the listeners at
    /// their next heartbeat.
    pub(crate) async fn advertise_listeners(
        &self,
        ad: ListenerAd,
        wait: bool,
    ) -> Result<(), ClusterError> {
        let latest = self.merge_own_ad(|own| {
            if own.listeners_version < ad.version {
                own.listeners_version = ad.version;
                own.ad.get_or_insert_with(ListenerAd::default).subscriptions = ad.subscriptions;
            }
        });
        self.publish_own_ad(latest, wait).await
    }

    /// Takes a change of this node's advertisement and gives it the next version (while
    /// locked, so that a later version always describes a later state).
    fn merge_own_ad(&self, change: impl FnOnce(&mut OwnAd)) -> ListenerAd {
        let mut own = self
            .own_ad
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut own);
        let version = self.next_ad_version();
        let ad = own.ad.get_or_insert_with(ListenerAd::default);
        ad.version = version;
        ad.clone()
    }

    /// Stores this node's advertisement in Redis and sends it to the other nodes.
    async fn publish_own_ad(&self, latest: ListenerAd, wait: bool) -> Result<(), ClusterError> {
        self.check_available()?;
        let mut conn = self.commands.clone();
        let stored: Result<redis::RedisResult<()>, _> = tokio::time::timeout(
            COMMAND_TIMEOUT,
            conn.hset(self.listeners_key(), &*self.node, latest.encode_to_vec()),
        )
        .await;
        if !matches!(stored, Ok(Ok(()))) {
            self.error();
            return Err(ClusterError::Unavailable(
                "cannot store this node's listeners in Redis".into(),
            ));
        }
        if wait {
            self.gather(Body::Listeners(latest)).await.map(|_| ())
        } else {
            self.broadcast_now(Body::Listeners(latest))
        }
    }

    /// This node's last listener advertisement, if it ever had listeners.
    fn own_ad(&self) -> Option<ListenerAd> {
        self.own_ad
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .ad
            .clone()
    }

    /// Changes whenever the other nodes' listeners do.
    pub(crate) fn ads_generation(&self) -> u64 {
        self.ads_generation.load(Ordering::Acquire)
    }

    /// The other nodes' listener subscriptions, by node, with the generation they belong to.
    pub(crate) fn listener_ads(&self) -> (u64, Vec<(String, Vec<pb::Subscription>)>) {
        let ads = self
            .ads
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = self.ads_generation.load(Ordering::Acquire);
        let list = ads
            .iter()
            .filter(|(_, ad)| !ad.subscriptions.is_empty())
            .map(|(node, ad)| (node.clone(), ad.subscriptions.clone()))
            .collect();
        (generation, list)
    }

    /// Takes `node`'s advertisement unless a newer one is known.
    fn learn_ad(&self, node: &str, ad: ListenerAd) {
        if node == &*self.node {
            return;
        }
        let mut ads = self
            .ads
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ads
            .get(node)
            .is_some_and(|known| known.version >= ad.version)
        {
            return;
        }
        ads.insert(node.to_owned(), ad);
        self.ads_generation.fetch_add(1, Ordering::Release);
    }

    /// Forgets the listeners of a node that is gone.
    fn forget_ads(&self, node: &str) {
        let mut ads = self
            .ads
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ads.remove(node).is_some() {
            self.ads_generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Relays `event` to the listeners of `node` and waits up to `timeout` for the outcome.
    /// `Ok(None)`: that node is gone (its listeners are forgotten).
    ///
    /// # Errors
    /// Redis is unreachable, or the node is alive and did not answer in time.
    pub(crate) async fn relay_event(
        &self,
        node: &str,
        event: pb::Event,
        timeout: Duration,
    ) -> Result<Option<EventAnswer>, ClusterError> {
        self.relay(node, Body::Event(Box::new(event)), timeout)
            .await
    }

    /// Relays `body` to `node` and decodes its answer (see [`Cluster::relay_event`]).
    async fn relay<A: prost::Message + Default>(
        &self,
        node: &str,
        body: Body,
        timeout: Duration,
    ) -> Result<Option<A>, ClusterError> {
        let Some(reply) = self.ask_within(node, body, timeout).await? else {
            self.forget_ads(node);
            return Ok(None);
        };
        if reply.error_code != 0 {
            return Err(ClusterError::Unavailable(reply.message));
        }
        A::decode(&reply.body[..]).map(Some).map_err(|e| {
            self.error();
            ClusterError::Unavailable(format!("node {node} sent an undecodable answer: {e}"))
        })
    }

    /// Whether the node is healthy (true) or degraded (false); changes are sent as they
    /// happen, so a health endpoint can follow them.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.serving.subscribe()
    }

    /// Health and counters.
    pub fn metrics(&self) -> ClusterMetrics {
        let h = &self.health;
        ClusterMetrics {
            degraded: !self.is_healthy(),
            published: h.published.load(Ordering::Relaxed),
            received: h.received.load(Ordering::Relaxed),
            errors: h.errors.load(Ordering::Relaxed),
            subscriptions: h.subscriptions.load(Ordering::Relaxed),
            publish_latency_us: h.publish_latency_us.load(Ordering::Relaxed),
        }
    }

    fn is_healthy(&self) -> bool {
        self.health.subscribed.load(Ordering::Relaxed)
            && self.health.redis_ok.load(Ordering::Relaxed)
    }

    /// Fails fast while degraded, so callers get a clear error instead of a half-applied
    /// operation.
    pub(crate) fn check_available(&self) -> Result<(), ClusterError> {
        if self.is_healthy() {
            Ok(())
        } else {
            Err(ClusterError::Unavailable(
                "this node has lost its connection to Redis; it is reconnecting".into(),
            ))
        }
    }

    fn update_health(&self) {
        let healthy = self.is_healthy();
        self.serving.send_if_modified(|s| {
            let changed = *s != healthy;
            *s = healthy;
            changed
        });
    }

    fn error(&self) {
        self.health.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn node_channel(&self, node: &str) -> Arc<str> {
        format!("{}:node:{node}", self.key_base).into()
    }

    fn envelope(&self, request_id: u64, body: Body) -> Vec<u8> {
        Envelope {
            origin: self.node.to_string(),
            request_id,
            body: Some(body),
            traceparent: trace::current_traceparent(),
        }
        .encode_to_vec()
    }

    /// Queues `body` for `channel` and waits until Redis has taken it; returns how many
    /// nodes were subscribed. The envelope is made inside the `backplane publish` span, so
    /// it carries that span as the receivers' parent.
    async fn publish_to(
        &self,
        channel: Arc<str>,
        request_id: u64,
        body: Body,
    ) -> Result<usize, ClusterError> {
        let span = publish_span(&channel);
        async move {
            let bytes = self.envelope(request_id, body);
            self.publish_bytes(channel, bytes).await
        }
        .instrument(span)
        .await
    }

    async fn publish_bytes(
        &self,
        channel: Arc<str>,
        bytes: Vec<u8>,
    ) -> Result<usize, ClusterError> {
        let (done, result) = oneshot::channel();
        let item = Outgoing {
            channel,
            bytes,
            done: Some(done),
        };
        let queued = tokio::time::timeout(COMMAND_TIMEOUT, self.outgoing.send(item)).await;
        if !matches!(queued, Ok(Ok(()))) {
            self.error();
            return Err(ClusterError::Unavailable(
                "the queue to Redis is full".into(),
            ));
        }
        result
            .await
            .unwrap_or_else(|_| Err(ClusterError::Unavailable("the node is stopping".into())))
    }

    /// Publishes `body` to every node without waiting (a client's send: the socket task
    /// must not wait on Redis). Fails at once if degraded or the queue is full.
    pub(crate) fn broadcast_now(&self, body: Body) -> Result<(), ClusterError> {
        self.queue_broadcast(body, None)
    }

    /// Queues `body` for every node without waiting; `done` hears how the publish went.
    fn queue_broadcast(
        &self,
        body: Body,
        done: Option<oneshot::Sender<Result<usize, ClusterError>>>,
    ) -> Result<(), ClusterError> {
        self.check_available()?;
        let span = publish_span(&self.all_channel);
        let _entered = span.enter();
        let item = Outgoing {
            channel: self.all_channel.clone(),
            bytes: self.envelope(0, body),
            done,
        };
        self.outgoing.try_send(item).map_err(|_| {
            self.error();
            ClusterError::Unavailable("the queue to Redis is full".into())
        })
    }

    /// Publishes `body` to every node without waiting, like [`Cluster::broadcast_now`], and
    /// returns what resolves once Redis has taken it (or the publish failed): for a client
    /// whose ack must not claim more than happened.
    pub(crate) fn broadcast_confirmed(&self, body: Body) -> Result<Published, ClusterError> {
        let (done, published) = oneshot::channel();
        self.queue_broadcast(body, Some(done))?;
        Ok(Published(published))
    }

    fn register(&self) -> (u64, mpsc::Receiver<(String, Reply)>, PendingGuard<'_>) {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(REPLY_CAPACITY);
        self.pending.insert(id, tx);
        (id, rx, PendingGuard { cluster: self, id })
    }

    /// Asks one node. `Ok(None)` when that node is not subscribed (it does not exist, or is
    /// gone): whatever it owned is gone with it.
    pub(crate) async fn ask(&self, node: &str, body: Body) -> Result<Option<Reply>, ClusterError> {
        self.ask_within(node, body, ANSWER_TIMEOUT).await
    }

    /// [`Cluster::ask`], waiting up to `timeout` for the answer of a live node.
    pub(crate) async fn ask_within(
        &self,
        node: &str,
        body: Body,
        timeout: Duration,
    ) -> Result<Option<Reply>, ClusterError> {
        self.check_available()?;
        let (id, mut replies, _guard) = self.register();
        let receivers = self.publish_to(self.node_channel(node), id, body).await?;
        if receivers == 0 {
            return Ok(None);
        }
        // A live node answers within milliseconds; one that is slow to may be hung past its
        // lease (still subscribed, since its sockets stay open), which no longer counts: look
        // at its lease rather than wait out the whole timeout.
        if let Ok(Some((_, reply))) = tokio::time::timeout(LEASE_CHECK_AFTER, replies.recv()).await
        {
            return Ok(Some(reply));
        }
        if !self.live_nodes().await?.contains(node) {
            return Ok(None);
        }
        match tokio::time::timeout(timeout.saturating_sub(LEASE_CHECK_AFTER), replies.recv()).await
        {
            Ok(Some((_, reply))) => Ok(Some(reply)),
            // Still subscribed but silent past its lease: a hung node, whose connections no
            // longer count (as for `gather`).
            _ if !self.live_nodes().await?.contains(node) => Ok(None),
            _ => Err(ClusterError::Unavailable(format!(
                "node {node} did not answer within {timeout:?}"
            ))),
        }
    }

    /// Asks every other node and returns their replies. Waits until every subscribed node
    /// or every node whose lease is current has answered, whichever comes first: a hung node
    /// past its lease is still subscribed (its TCP connections live on) but no longer counts,
    /// so it must not hold every answer up until the timeout. If a node whose lease is still
    /// current at the timeout has stayed silent, the answer is an error.
    pub(crate) async fn gather(&self, body: Body) -> Result<Vec<Reply>, ClusterError> {
        self.check_available()?;
        let mut expected: HashSet<String> = self.live_nodes().await?;
        expected.remove(&*self.node);
        let (id, mut replies, _guard) = self.register();
        let receivers = self.publish_to(self.all_channel.clone(), id, body).await?;
        // This node is subscribed too, and does not answer itself.
        let others = receivers.saturating_sub(1);
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut answers = Vec::new();
        while answers.len() < others && !expected.is_empty() {
            match tokio::time::timeout_at(deadline, replies.recv()).await {
                Ok(Some((node, reply))) => {
                    expected.remove(&node);
                    answers.push(reply);
                }
                _ => {
                    // The silent ones may have lost their lease while we waited.
                    let live = self.live_nodes().await?;
                    expected.retain(|node| live.contains(node));
                    if expected.is_empty() {
                        break;
                    }
                    let mut missing: Vec<_> = expected.into_iter().collect();
                    missing.sort_unstable();
                    return Err(ClusterError::Unavailable(format!(
                        "node(s) {} did not answer within {ANSWER_TIMEOUT:?}",
                        missing.join(", ")
                    )));
                }
            }
        }
        Ok(answers)
    }

    /// The nodes whose lease is current; forgets the others.
    async fn live_nodes(&self) -> Result<HashSet<String>, ClusterError> {
        let fail = |e: &dyn fmt::Display| {
            self.error();
            ClusterError::Unavailable(format!("Redis: {e}"))
        };
        let mut conn = self.commands.clone();
        let nodes_key = self.nodes_key();
        let nodes: Vec<String> = tokio::time::timeout(COMMAND_TIMEOUT, conn.smembers(&nodes_key))
            .await
            .map_err(|_| fail(&"timed out"))?
            .map_err(|e| fail(&e))?;
        if nodes.is_empty() {
            return Ok(HashSet::new());
        }
        let keys: Vec<String> = nodes.iter().map(|n| self.lease_key(n)).collect();
        let leases: Vec<Option<String>> = tokio::time::timeout(
            COMMAND_TIMEOUT,
            redis::cmd("MGET").arg(&keys).query_async(&mut conn),
        )
        .await
        .map_err(|_| fail(&"timed out"))?
        .map_err(|e| fail(&e))?;
        let mut live = HashSet::new();
        let mut dead = Vec::new();
        for (node, lease) in nodes.into_iter().zip(leases) {
            if lease.is_some() {
                live.insert(node);
            } else {
                dead.push(node);
            }
        }
        if !dead.is_empty() {
            tracing::info!(nodes = ?dead, "forgetting nodes whose lease ran out");
            let _: Result<(), _> = conn.srem(&nodes_key, &dead).await;
            let _: Result<(), _> = conn.hdel(self.listeners_key(), &dead).await;
            for node in &dead {
                self.forget_ads(node);
            }
        }
        Ok(live)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.key_base)
    }

    fn lease_key(&self, node: &str) -> String {
        format!("{}:lease:{node}", self.key_base)
    }

    /// Hash of node id → [`ListenerAd`]: the event-stream listeners of every node.
    fn listeners_key(&self) -> String {
        format!("{}:listeners", self.key_base)
    }

    async fn heartbeat_once(&self) {
        let mut conn = self.commands.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.lease_key(&self.node))
            .arg(1)
            .arg("PX")
            .arg(u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX))
            .ignore()
            .sadd(self.nodes_key(), &*self.node)
            .ignore()
            // The member list outlives its last node by a few leases, not forever.
            .pexpire(
                self.nodes_key(),
                i64::try_from(self.lease.as_millis().saturating_mul(10)).unwrap_or(i64::MAX),
            )
            .ignore();
        // Listener advertisements: this node's is written again (a restarted Redis has lost
        // it), and the others' are read, for what the channel did not carry (this node joined
        // later, or was cut off from Redis meanwhile).
        if let Some(own) = self.own_ad() {
            pipe.hset(self.listeners_key(), &*self.node, own.encode_to_vec())
                .ignore();
        }
        pipe.pexpire(
            self.listeners_key(),
            i64::try_from(self.lease.as_millis().saturating_mul(10)).unwrap_or(i64::MAX),
        )
        .ignore()
        .hgetall(self.listeners_key());
        let result: Result<redis::RedisResult<(AdsByNode,)>, _> = run(&mut conn, &pipe).await;
        let ok = matches!(result, Ok(Ok(_)));
        if let Ok(Ok((ads,))) = result {
            for (node, bytes) in ads {
                match ListenerAd::decode(&bytes[..]) {
                    Ok(ad) => self.learn_ad(&node, ad),
                    Err(e) => {
                        tracing::warn!(%node, error = %e, "undecodable listener advertisement")
                    }
                }
            }
        }
        if !ok {
            self.error();
        }
        let was = self.health.redis_ok.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!("Redis reachable again");
            } else {
                tracing::warn!("cannot renew this node's lease in Redis; degraded");
            }
        }
        self.update_health();
    }

    /// On a Redis Cluster: whether `master` still owns the backplane's slot. Only a definite
    /// "it moved" counts; a question nobody answers leaves the ping to judge the connection.
    async fn still_slot_master(&self, master: &endpoint::NodeAddr) -> bool {
        let asked = tokio::time::timeout(
            COMMAND_TIMEOUT,
            self.endpoint
                .slot_master(&self.all_channel, COMMAND_TIMEOUT),
        )
        .await;
        match asked {
            Ok(Ok(now)) if now != *master => {
                tracing::info!(
                    from = %format_args!("{}:{}", master.0, master.1),
                    to = %format_args!("{}:{}", now.0, now.1),
                    "the backplane's hash slot moved; resubscribing"
                );
                false
            }
            _ => true,
        }
    }

    /// Leaves the cluster: stops the tasks and gives up the lease, so the other nodes stop
    /// asking this one at once, then waits (at most 3 s) for the backplane's
    /// tasks to end.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        let mut conn = self.commands.clone();
        let mut pipe = redis::pipe();
        pipe.del(self.lease_key(&self.node))
            .ignore()
            .srem(self.nodes_key(), &*self.node)
            .ignore()
            .hdel(self.listeners_key(), &*self.node)
            .ignore();
        let _: Result<redis::RedisResult<()>, _> =
            tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async(&mut conn)).await;
        if tokio::time::timeout(STOP_TIMEOUT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tasks.len(),
                "backplane tasks still running after leaving the cluster"
            );
        }
    }

    /// Handles one message from Redis.
    async fn receive(&self, payload: &[u8]) {
        let Ok(mut envelope) = Envelope::decode(payload) else {
            self.error();
            tracing::warn!("ignoring an undecodable message on the cluster channel");
            return;
        };
        if *envelope.origin == *self.node {
            return;
        }
        self.health.received.fetch_add(1, Ordering::Relaxed);
        let Some(body) = envelope.body.take() else {
            return;
        };
        let body = match body {
            Body::Reply(reply) => {
                if let Some(pending) = self.pending.get(&envelope.request_id) {
                    // Full only if far more nodes answered than exist: drop the extra.
                    let _ = pending.try_send((envelope.origin, reply));
                }
                return;
            }
            Body::Listeners(ad) => {
                self.learn_ad(&envelope.origin, ad);
                if envelope.request_id != 0 {
                    self.reply(&envelope.origin, envelope.request_id, Reply::default());
                }
                return;
            }
            Body::Event(event) => {
                self.relayed(envelope, Relayed::Event(event));
                return;
            }
            Body::TunnelRequest(request) => {
                self.relayed(envelope, Relayed::TunnelRequest(request));
                return;
            }
            Body::Invoke(call) => {
                self.relayed(envelope, Relayed::Invoke(call));
                return;
            }
            Body::InvokeAck(ack) => {
                self.relayed(envelope, Relayed::InvokeAck(ack));
                return;
            }
            other => other,
        };
        let span = if trace::enabled() {
            let span = tracing::info_span!("backplane receive", origin = %envelope.origin);
            trace::set_parent(&span, trace::extract_traceparent(&envelope.traceparent));
            span
        } else {
            tracing::Span::none()
        };
        let request = Request {
            body,
            span,
            asker: Asker {
                origin: envelope.origin,
                request_id: envelope.request_id,
            },
        };
        // Waits when the service layer is behind (backpressure on the subscription, as when
        // the subscriber handled requests itself); a stopping node drops the request.
        tokio::select! {
            sent = self.inbound.send(request) => {
                if sent.is_err() {
                    tracing::debug!("no service layer takes the cluster's requests");
                }
            }
            () = self.stop.cancelled() => {}
        }
    }

    /// Queues the answer to request `request_id` of `origin`.
    fn reply(&self, origin: &str, request_id: u64, reply: Reply) {
        let item = Outgoing {
            channel: self.node_channel(origin),
            bytes: self.envelope(request_id, Body::Reply(reply)),
            done: None,
        };
        if self.outgoing.try_send(item).is_err() {
            self.error();
        }
    }

    /// Hands an event relayed by another node to the upstream, which answers it with
    /// [`Cluster::answer_relayed`] (the listener may take up to the upstream timeout, and the
    /// channel must not wait for it). When the upstream cannot take it now, the answer is at
    /// once "no listener", and the relaying node decides as it does without one.
    fn relayed(&self, envelope: Envelope, event: Relayed) {
        let span = if trace::enabled() {
            let span = tracing::info_span!("relayed event", origin = %envelope.origin);
            trace::set_parent(&span, trace::extract_traceparent(&envelope.traceparent));
            span
        } else {
            tracing::Span::none()
        };
        let relayed = RelayedEvent {
            event,
            asker: Asker {
                origin: envelope.origin,
                request_id: envelope.request_id,
            },
            span,
        };
        if let Err(e) = self.relayed_events.try_send(relayed) {
            let relayed = match e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
            };
            tracing::debug!("a relayed event found no room on this node");
            let none = match relayed.event {
                Relayed::Event(_) => EventAnswer {
                    reply: None,
                    failure: EventAnswer::NO_LISTENER,
                }
                .encode_to_vec(),
                Relayed::TunnelRequest(_) => TunnelAnswer {
                    failure: TunnelAnswer::NO_TUNNEL,
                    ..TunnelAnswer::default()
                }
                .encode_to_vec(),
                Relayed::Invoke(_) => InvokeSent { count: 0 }.encode_to_vec(),
                Relayed::InvokeAck(_) => return,
            };
            self.reply(
                &relayed.asker.origin,
                relayed.asker.request_id,
                Reply {
                    body: none,
                    ..Reply::default()
                },
            );
        }
    }

    /// Sends the answer to a relayed event (an [`EventAnswer`] or a [`TunnelAnswer`]) back
    /// to the node that relayed it.
    pub(crate) async fn answer_relayed(&self, asker: Asker, answer: impl prost::Message) {
        let reply = Reply {
            body: answer.encode_to_vec(),
            ..Reply::default()
        };
        let item = Outgoing {
            channel: self.node_channel(&asker.origin),
            bytes: Envelope {
                origin: self.node.to_string(),
                request_id: asker.request_id,
                body: Some(Body::Reply(reply)),
                traceparent: trace::current_traceparent(),
            }
            .encode_to_vec(),
            done: None,
        };
        if self.outgoing.send(item).await.is_err() {
            tracing::debug!("the node stopped before a relayed event's answer went out");
        }
    }
}

// === Azure's tunnel across nodes (see `wire`, the block of the same name) ===

impl Asker {
    /// The node that relayed the request.
    pub(crate) fn node(&self) -> &str {
        &self.origin
    }
}

/// This node's advertisement and the versions of its two parts: the event-stream listeners
/// (versioned by the listener registry) and the hubs with an Azure tunnel here (versioned by
/// the tunnel registry), so that an older change of one part never undoes a newer one.
#[derive(Debug, Default)]
struct OwnAd {
    listeners_version: u64,
    tunnels_version: u64,
    ad: Option<ListenerAd>,
}

impl Cluster {
    /// Tells the other nodes which hubs have an Azure tunnel on this node now (`version`
    /// from [`Cluster::next_ad_version`], taken while the tunnel list was locked), so that
    /// they relay those hubs' tunnel requests here; with `wait`, returns once every live node
    /// knows.
    ///
    /// # Errors
    /// As [`Cluster::advertise_listeners`].
    pub(crate) async fn advertise_tunnels(
        &self,
        version: u64,
        hubs: Vec<String>,
        wait: bool,
    ) -> Result<(), ClusterError> {
        let latest = self.merge_own_ad(|own| {
            if own.tunnels_version < version {
                own.tunnels_version = version;
                own.ad.get_or_insert_with(ListenerAd::default).tunnel_hubs = hubs;
            }
        });
        self.publish_own_ad(latest, wait).await
    }

    /// Asks every other node to send an `:invoke`'s packet to its matching sockets and to
    /// forward their acks here; resolves with how many sockets got it there.
    ///
    /// # Errors
    /// Redis is unreachable or a live node did not answer.
    pub(crate) async fn invoke_everywhere(&self, call: InvokeCall) -> Result<usize, ClusterError> {
        let replies = self.gather(Body::Invoke(call)).await?;
        Ok(replies
            .iter()
            .filter_map(|reply| InvokeSent::decode(&reply.body[..]).ok())
            .map(|sent| usize::try_from(sent.count).unwrap_or(usize::MAX))
            .fold(0, usize::saturating_add))
    }

    /// Forwards a socket's ack to the node whose `:invoke` it answers. Never waits: with the
    /// outgoing queue full, the ack is dropped (as one that comes too late).
    pub(crate) fn forward_invoke_ack(&self, node: &str, ack: InvokeAck) {
        let item = Outgoing {
            channel: self.node_channel(node),
            bytes: self.envelope(0, Body::InvokeAck(ack)),
            done: None,
        };
        if self.outgoing.try_send(item).is_err() {
            self.error();
        }
    }

    /// The other nodes with an Azure tunnel for `hub` (lower-cased), sorted.
    pub(crate) fn tunnel_nodes(&self, hub: &str) -> Vec<String> {
        let ads = self
            .ads
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut nodes: Vec<String> = ads
            .iter()
            .filter(|(_, ad)| ad.tunnel_hubs.iter().any(|h| h == hub))
            .map(|(node, _)| node.clone())
            .collect();
        nodes.sort_unstable();
        nodes
    }

    /// Relays a request for a tunnel of `request.hub` to `node` and waits up to `timeout`
    /// for the outcome. `Ok(None)`: that node is gone.
    ///
    /// # Errors
    /// Redis is unreachable, or the node is alive and did not answer in time.
    pub(crate) async fn relay_tunnel_request(
        &self,
        node: &str,
        request: TunnelRequest,
        timeout: Duration,
    ) -> Result<Option<TunnelAnswer>, ClusterError> {
        self.relay(node, Body::TunnelRequest(request), timeout)
            .await
    }
}

/// The listener advertisements in Redis: node id → encoded [`ListenerAd`].
type AdsByNode = HashMap<String, Vec<u8>>;

/// A message queued for Redis: resolves once Redis has taken it, or the publish failed.
#[derive(Debug)]
pub struct Published(oneshot::Receiver<Result<usize, ClusterError>>);

impl Published {
    /// Waits for the outcome of the publish.
    ///
    /// # Errors
    /// Redis did not take the message (it timed out, failed, or the node stopped).
    pub async fn outcome(self) -> Result<(), ClusterError> {
        match self.0.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClusterError::Unavailable("the node is stopping".into())),
        }
    }
}

/// Forgets a question when its asker stops waiting.
struct PendingGuard<'a> {
    cluster: &'a Cluster,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.cluster.pending.remove(&self.id);
    }
}

fn random_node_id() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut bytes);
    let mut id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    id.truncate(NODE_ID_LEN);
    id
}

/// Runs `pipe` with [`COMMAND_TIMEOUT`]. A connection that broke while idle (Redis
/// restarted) is only noticed by the next command, after which the connection manager
/// reconnects: so a pipeline that failed on a dropped connection is tried once more. (A
/// duplicate would need Redis to have run the commands before the connection dropped
/// and before it answered: possible, rare, and harmless for the lease commands.)
async fn run<T: redis::FromRedisValue>(
    conn: &mut Commands,
    pipe: &redis::Pipeline,
) -> Result<redis::RedisResult<T>, tokio::time::error::Elapsed> {
    let first = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async(conn)).await;
    match first {
        Ok(Err(e)) if e.is_connection_dropped() => {
            tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async(conn)).await
        }
        other => other,
    }
}

/// Publishes queued messages in order, several per pipeline.
async fn publisher(cluster: Arc<Cluster>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut conn = cluster.commands.clone();
    let mut batch = Vec::with_capacity(PIPELINE_MAX);
    loop {
        let first = tokio::select! {
            item = queue.recv() => match item { Some(item) => item, None => return },
            () = cluster.stop.cancelled() => return,
        };
        batch.push(first);
        while batch.len() < PIPELINE_MAX {
            match queue.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        for item in &batch {
            pipe.publish(&*item.channel, &item.bytes[..]);
        }
        let started = Instant::now();
        let result: Result<redis::RedisResult<Vec<usize>>, _> = run(&mut conn, &pipe).await;
        match result {
            Ok(Ok(counts)) => {
                let h = &cluster.health;
                h.publish_latency_us.store(
                    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                h.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
                for (item, count) in batch.drain(..).zip(counts) {
                    if let Some(done) = item.done {
                        let _ = done.send(Ok(count));
                    }
                }
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(error = %why, messages = batch.len(), "publishing to Redis failed");
                cluster
                    .health
                    .errors
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                cluster.recheck.notify_one();
                if cluster.health.redis_ok.swap(false, Ordering::Relaxed) {
                    cluster.update_health();
                }
                for item in batch.drain(..) {
                    if let Some(done) = item.done {
                        let _ = done.send(Err(ClusterError::Unavailable(format!(
                            "publishing to Redis failed: {why}"
                        ))));
                    }
                }
            }
        }
    }
}

/// Keeps this node subscribed to its channels, reconnecting with backoff.
async fn subscriber(cluster: Arc<Cluster>) {
    let own = cluster.node_channel(&cluster.node);
    let mut backoff = Duration::from_millis(100);
    while !cluster.stop.is_cancelled() {
        let connected = cluster
            .endpoint
            .pubsub(&cluster.all_channel, COMMAND_TIMEOUT)
            .await;
        if let Err(e) = &connected {
            tracing::debug!(error = %e, "cannot open the cluster subscription");
        }
        if let Ok((mut pubsub, master)) = connected {
            let subscribed = tokio::time::timeout(
                COMMAND_TIMEOUT,
                pubsub.subscribe(&[&*cluster.all_channel, &*own]),
            )
            .await;
            if matches!(subscribed, Ok(Ok(()))) {
                backoff = Duration::from_millis(100);
                cluster.health.subscriptions.fetch_add(1, Ordering::Relaxed);
                cluster.health.subscribed.store(true, Ordering::Relaxed);
                // Renew the lease at once: a restarted Redis has forgotten it.
                cluster.heartbeat_once().await;
                // Messages sent while this node was cut off are lost: tell the others again
                // which listeners it has.
                if let Some(own) = cluster.own_ad() {
                    let _ = cluster.broadcast_now(Body::Listeners(own));
                }
                match &master {
                    Some((host, port)) => tracing::info!(
                        node = %cluster.node, via = %format_args!("{host}:{port}"),
                        "subscribed to the cluster channels"
                    ),
                    None => {
                        tracing::info!(node = %cluster.node, "subscribed to the cluster channels")
                    }
                }
                // A subscription whose TCP connection died quietly would never end its stream:
                // a ping per heartbeat period notices.
                let (mut sink, mut messages) = pubsub.split();
                let mut check = tokio::time::interval(cluster.lease / 3);
                check.reset();
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(message) => cluster.receive(message.get_payload_bytes()).await,
                            None => break,
                        },
                        _ = check.tick() => {
                            let pong = tokio::time::timeout(
                                COMMAND_TIMEOUT,
                                sink.ping::<redis::Value>(),
                            )
                            .await;
                            if !matches!(pong, Ok(Ok(_))) {
                                break;
                            }
                            if let Some(master) = &master
                                && !cluster.still_slot_master(master).await
                            {
                                break;
                            }
                        }
                        () = cluster.stop.cancelled() => return,
                    }
                }
                tracing::warn!("lost the cluster subscription; degraded until it is back");
            }
        }
        cluster.error();
        cluster.health.subscribed.store(false, Ordering::Relaxed);
        cluster.update_health();
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = cluster.stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Renews this node's lease three times per lease period.
///
/// After a failure (of the heartbeat itself, or of a publish) it tries again soon, with
/// backoff: one slow answer from a busy Redis must not keep the node degraded, refusing
/// cross-node sends, for a whole heartbeat period.
async fn heartbeat(cluster: Arc<Cluster>) {
    let period = cluster.lease / 3;
    let mut retry = RETRY_START;
    loop {
        let healthy = cluster.health.redis_ok.load(Ordering::Relaxed);
        let wait = if healthy { period } else { retry.min(period) };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cluster.recheck.notified() => {}
            () = cluster.stop.cancelled() => return,
        }
        cluster.heartbeat_once().await;
        if cluster.health.redis_ok.load(Ordering::Relaxed) {
            retry = RETRY_START;
        } else {
            retry = (retry * 2).min(MAX_BACKOFF);
        }
    }
}
