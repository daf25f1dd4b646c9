//! The core router: hubs, connections, users, groups, permissions and fan-out.
//!
//! Every edge (WebSocket, REST, gRPC) calls this API and nothing else; the router knows
//! nothing of HTTP, warp or tonic.
//!
//! # Concurrency
//! Each hub keeps three sharded indexes (connections by id, groups by name, users by id),
//! so the send path takes only the read lock of one shard, never a global lock. A message is
//! rendered once per wire format (`encoded`) and every recipient's [`outbox::Outbox`] gets
//! a cheap clone of the same bytes; pushing never waits on a client.
//!
//! Lock order, to stay deadlock-free: a connection's membership lock, then an index shard.
//! Fan-out holds an index shard, then an outbox lock, and never a membership lock.

pub mod connection;
mod encoded;
mod hub_key;
pub mod manage;
pub mod outbox;
pub mod permission;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::telemetry::{HubMetrics, Metrics, SendKind, trace};

pub use connection::{ConnectSpec, Connection, ConnectionId};
pub use hub_key::HubKey;
pub use manage::{HubStats, Page, PageRequest, SendOptions, Target};
pub use outbox::{Close, Push, ReliableLimits};
pub use permission::{Permission, Permissions};

use crate::message::Message;
use encoded::Encoded;

/// Connections by id: the shape of every index value (a group's or a user's members).
type Members = HashMap<Arc<str>, Arc<Connection>>;

/// Longest group name (Azure: 1..1024 characters).
pub const MAX_GROUP_NAME_CHARS: usize = 1024;

/// Why a router operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// The hub name does not match `^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$`.
    #[error(
        "invalid hub name '{0}': it must start with a letter and contain only letters, digits and _`,.[] (at most 128 characters)"
    )]
    InvalidHub(String),
    /// The group name is empty, only whitespace, or too long.
    #[error("invalid group name: it must have 1 to 1024 characters and not be only whitespace")]
    InvalidGroup,
    /// The connection is not (or no longer) connected.
    #[error("connection '{0}' does not exist")]
    NoConnection(String),
}

/// Validates a group name (1..1024 characters, not only whitespace).
///
/// # Errors
/// [`RouterError::InvalidGroup`].
pub fn check_group_name(name: &str) -> Result<(), RouterError> {
    if name.trim().is_empty() || name.chars().count() > MAX_GROUP_NAME_CHARS {
        Err(RouterError::InvalidGroup)
    } else {
        Ok(())
    }
}

/// Counters for tests, logs and (later) metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Connections open now.
    pub connections: u64,
    /// Connections closed because their outbox overflowed.
    pub slow_consumer_closes: u64,
    /// Frames queued to connections by fan-out.
    pub messages_delivered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    slow_consumer_closes: AtomicU64,
    messages_delivered: AtomicU64,
}

/// One hub's indexes.
#[derive(Debug)]
struct Hub {
    connections: DashMap<Arc<str>, Arc<Connection>>,
    groups: DashMap<Arc<str>, Members>,
    users: DashMap<Arc<str>, Members>,
    /// The hub's metric series, looked up once so fan-out only adds to atomics.
    metrics: Arc<HubMetrics>,
}

impl Hub {
    fn new(metrics: Arc<HubMetrics>) -> Self {
        Self {
            connections: DashMap::new(),
            groups: DashMap::new(),
            users: DashMap::new(),
            metrics,
        }
    }
}

impl Hub {
    /// The connections a send leaves out (`excluded` ids; unknown ones are ignored).
    fn excluded(&self, ids: &[&str]) -> Excluded {
        Excluded(
            ids.iter()
                .filter_map(|id| self.connections.get(*id).map(|c| c.clone()))
                .collect(),
        )
    }
}

/// The connections a send leaves out, resolved once per message so that the per-recipient
/// check compares addresses. Comparing each recipient's id instead reads a cache line of
/// every recipient (its id's allocation) and cost a tenth of the server's CPU in a fan-out
/// profile (sendToGroup with noEcho; docs/PERFORMANCE.md).
#[derive(Default)]
struct Excluded(Vec<Arc<Connection>>);

impl Excluded {
    fn contains(&self, conn: &Connection) -> bool {
        self.0.iter().any(|e| std::ptr::eq(Arc::as_ptr(e), conn))
    }
}

#[derive(Debug)]
struct Inner {
    /// Hubs are implicit: created by their first connection. They stay (a few hundred bytes
    /// each) because only holders of an access key can name one.
    hubs: DashMap<HubKey, Arc<Hub>>,
    outbox_bytes: usize,
    counters: Counters,
    metrics: Metrics,
    /// This node's id in a cluster (the prefix of every connection id it hands out); `None`
    /// on a single node. The router knows nothing else of the backplane.
    node: Option<Arc<str>>,
}

/// The core router. Cheap to clone; all clones share state.
#[derive(Debug, Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

/// Settings the router needs.
#[derive(Debug, Clone, Copy)]
pub struct RouterConfig {
    /// Byte limit of each connection's outbox.
    pub outbox_bytes: usize,
}

impl Router {
    /// An empty router for a single node.
    pub fn new(config: RouterConfig) -> Self {
        Self::with_node_id(config, None)
    }

    /// An empty router, one node of a cluster when `node` (this node's id) is set: the
    /// connection ids it hands out start with it.
    pub fn with_node_id(config: RouterConfig, node: Option<Arc<str>>) -> Self {
        let router = Self {
            inner: Arc::new(Inner {
                hubs: DashMap::new(),
                outbox_bytes: config.outbox_bytes,
                counters: Counters::default(),
                metrics: Metrics::new(),
                node,
            }),
        };
        // Outbox and reliable-buffer gauges are sums over connections, computed when asked.
        let weak = Arc::downgrade(&router.inner);
        router.inner.metrics.on_collect(move |_registry| {
            let Some(inner) = weak.upgrade() else { return };
            for hub in inner.hubs.iter() {
                let (mut queued, mut unacked, mut unacked_bytes) = (0, 0, 0);
                for conn in hub.connections.iter() {
                    queued += conn.outbox.queued_bytes();
                    let (messages, bytes) = conn.outbox.unacknowledged();
                    unacked += messages;
                    unacked_bytes += bytes;
                }
                // The hub's own series: a lookup by name would bring back expired ones.
                let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
                hub.metrics.outbox_bytes.set(as_i64(queued));
                hub.metrics.reliable_unacked_messages.set(as_i64(unacked));
                hub.metrics
                    .reliable_unacked_bytes
                    .set(as_i64(unacked_bytes));
            }
        });
        router
    }

    /// The metric registry of this router's server (every edge records into it).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The metric series of `hub` (a lower-cased hub key), for a socket task to keep.
    pub fn hub_metrics(&self, hub: &HubKey) -> Arc<HubMetrics> {
        match self.hub(hub) {
            Some(h) => h.metrics.clone(),
            None => Arc::new(self.inner.metrics.hub(hub)),
        }
    }

    /// A fresh connection id; in a cluster it starts with this node's id, so any node can
    /// tell which one owns the connection.
    pub fn new_connection_id(&self) -> ConnectionId {
        match &self.inner.node {
            None => ConnectionId::generate(),
            Some(node) => ConnectionId::generate_on(node),
        }
    }

    fn hub(&self, hub: &str) -> Option<Arc<Hub>> {
        self.inner.hubs.get(hub).map(|h| h.clone())
    }

    fn hub_or_create(&self, hub: &HubKey) -> Arc<Hub> {
        if let Some(h) = self.hub(hub) {
            return h;
        }
        self.inner
            .hubs
            .entry(hub.clone())
            .or_insert_with(|| Arc::new(Hub::new(Arc::new(self.inner.metrics.hub(hub)))))
            .clone()
    }

    /// Registers a new connection and joins the groups it asked for at connect.
    pub fn connect(&self, mut spec: ConnectSpec) -> Arc<Connection> {
        let groups = std::mem::take(&mut spec.groups);
        let greeting = spec.greeting.take();
        let conn = Arc::new(Connection::new(spec, self.inner.outbox_bytes));
        if let Some(frame) = greeting {
            conn.outbox.push(frame);
        }
        let hub = self.hub_or_create(conn.hub());
        let id = conn.id().shared();
        hub.connections.insert(id.clone(), conn.clone());
        if let Some(user) = conn.user_id() {
            hub.users
                .entry(user.clone())
                .or_default()
                .insert(id, conn.clone());
        }
        self.inner
            .counters
            .connections
            .fetch_add(1, Ordering::Relaxed);
        hub.metrics.connected(conn.format().protocol());
        for group in groups {
            if check_group_name(&group).is_ok() {
                self.join_group(&conn, &group);
            }
        }
        conn
    }

    /// Removes a connection from every index and closes its outbox. Idempotent.
    pub fn disconnect(&self, conn: &Connection) {
        conn.outbox.close(Close::Peer);
        let Some(hub) = self.hub(conn.hub()) else {
            return;
        };
        let groups = {
            let mut membership = conn.membership();
            if membership.gone {
                return;
            }
            membership.gone = true;
            let groups = std::mem::take(&mut membership.groups);
            for group in &groups {
                remove_member(&hub.groups, group, conn.id().as_str());
            }
            groups
        };
        drop(groups);
        if let Some(user) = conn.user_id() {
            remove_member(&hub.users, user, conn.id().as_str());
        }
        hub.connections.remove(conn.id().as_str());
        self.inner
            .counters
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        hub.metrics.disconnected(conn.format().protocol());
    }

    /// Adds `conn` to `group` (the caller has checked permission and the name). Returns
    /// false if the connection has already gone.
    pub fn join_group(&self, conn: &Arc<Connection>, group: &str) -> bool {
        let hub = self.hub_or_create(conn.hub());
        let mut membership = conn.membership();
        if membership.gone {
            return false;
        }
        if membership.groups.contains(group) {
            return true;
        }
        let group: Arc<str> = group.into();
        membership.groups.insert(group.clone());
        hub.groups
            .entry(group)
            .or_default()
            .insert(conn.id().shared(), conn.clone());
        true
    }

    /// Removes `conn` from `group`. Returns whether it was a member.
    pub fn leave_group(&self, conn: &Connection, group: &str) -> bool {
        let Some(hub) = self.hub(conn.hub()) else {
            return false;
        };
        let mut membership = conn.membership();
        if !membership.groups.remove(group) {
            return false;
        }
        remove_member(&hub.groups, group, conn.id().as_str());
        true
    }

    /// Open connections of `hub` (a hub routing key), for connection limits.
    pub fn hub_connection_count(&self, hub: &HubKey) -> usize {
        self.hub(hub).map_or(0, |h| h.connections.len())
    }

    /// Open connections of `user` in `hub`, for connection limits.
    pub fn user_connection_count(&self, hub: &HubKey, user: &str) -> usize {
        self.hub(hub)
            .and_then(|h| h.users.get(user).map(|m| m.len()))
            .unwrap_or(0)
    }

    /// Looks up a connection.
    pub fn connection(&self, hub: &HubKey, id: &str) -> Option<Arc<Connection>> {
        self.hub(hub)?.connections.get(id).map(|c| c.clone())
    }

    /// Whether the connection is connected to the hub named `hub` (any case; `false` for a
    /// name that is no hub name). Takes a name, not a key: tests and tools ask this.
    pub fn connection_exists(&self, hub: &str, id: &str) -> bool {
        HubKey::new(hub).is_ok_and(|hub| self.connection(&hub, id).is_some())
    }

    /// Whether `group` has at least one member in the hub named `hub` (any case).
    pub fn group_exists(&self, hub: &str, group: &str) -> bool {
        HubKey::new(hub)
            .ok()
            .and_then(|hub| self.hub(&hub))
            .is_some_and(|h| h.groups.contains_key(group))
    }

    /// Whether `user` has at least one connection in the hub named `hub` (any case).
    pub fn user_exists(&self, hub: &str, user: &str) -> bool {
        HubKey::new(hub)
            .ok()
            .and_then(|hub| self.hub(&hub))
            .is_some_and(|h| h.users.contains_key(user))
    }

    /// Sends to every connection of `hub` except `excluded`. Returns the recipient count.
    pub fn send_to_all(&self, hub: &HubKey, message: &Message, excluded: &[&str]) -> usize {
        let Some(hub) = self.hub(hub) else { return 0 };
        let _span = trace::fanout_span(hub_name(&hub), SendKind::All);
        let encoded = Encoded::new(message, &hub.metrics);
        let excluded = hub.excluded(excluded);
        let mut sent = 0;
        for entry in hub.connections.iter() {
            sent += self.deliver(entry.value(), &encoded, &excluded);
        }
        self.count_delivered(&encoded, SendKind::All, sent)
    }

    /// Sends to the members of `group` except `excluded`. Returns the recipient count.
    pub fn send_to_group(
        &self,
        hub: &HubKey,
        group: &str,
        message: &Message,
        excluded: &[&str],
    ) -> usize {
        let Some(hub) = self.hub(hub) else { return 0 };
        let excluded = hub.excluded(excluded);
        self.send_to_members(&hub, SendKind::Group, group, message, &excluded)
    }

    /// Sends to every connection of `user` except `excluded`. Returns the recipient count.
    pub fn send_to_user(
        &self,
        hub: &HubKey,
        user: &str,
        message: &Message,
        excluded: &[&str],
    ) -> usize {
        let Some(hub) = self.hub(hub) else { return 0 };
        let excluded = hub.excluded(excluded);
        self.send_to_members(&hub, SendKind::User, user, message, &excluded)
    }

    /// Fan-out to the members under `key` of a group or user index, encoding `message` once
    /// per wire format. Holds that index shard's read lock while queueing (never waits).
    fn send_to_members(
        &self,
        hub: &Hub,
        kind: SendKind,
        key: &str,
        message: &Message,
        excluded: &Excluded,
    ) -> usize {
        let index = match kind {
            SendKind::User => &hub.users,
            _ => &hub.groups,
        };
        let Some(members) = index.get(key) else {
            return 0;
        };
        let _span = trace::fanout_span(hub_name(hub), kind);
        let encoded = Encoded::new(message, &hub.metrics);
        let mut sent = 0;
        for conn in members.values() {
            sent += self.deliver(conn, &encoded, excluded);
        }
        self.count_delivered(&encoded, kind, sent)
    }

    /// Sends to one connection. Returns whether it exists.
    pub fn send_to_connection(&self, hub: &HubKey, id: &str, message: &Message) -> bool {
        let Some(hub) = self.hub(hub) else {
            return false;
        };
        let Some(conn) = hub.connections.get(id).map(|c| c.clone()) else {
            return false;
        };
        let _span = trace::fanout_span(hub_name(&hub), SendKind::Connection);
        let encoded = Encoded::new(message, &hub.metrics);
        let sent = self.deliver(&conn, &encoded, &Excluded::default());
        self.count_delivered(&encoded, SendKind::Connection, sent);
        true
    }

    /// Closes every connection of every hub (shutdown).
    pub fn close_all(&self, code: u16, reason: &str) {
        for hub in self.inner.hubs.iter() {
            for conn in hub.connections.iter() {
                conn.close(Close::Server {
                    code,
                    reason: reason.into(),
                    discard_queued: false,
                });
            }
        }
    }

    /// Current counters.
    pub fn stats(&self) -> RouterStats {
        let c = &self.inner.counters;
        RouterStats {
            connections: c.connections.load(Ordering::Relaxed),
            slow_consumer_closes: c.slow_consumer_closes.load(Ordering::Relaxed),
            messages_delivered: c.messages_delivered.load(Ordering::Relaxed),
        }
    }

    /// Queues the frame for `conn` unless excluded; counts an overflow.
    fn deliver(&self, conn: &Connection, encoded: &Encoded<'_>, excluded: &Excluded) -> usize {
        self.deliver_until(conn, encoded, excluded, None)
    }

    /// [`Router::deliver`] of a message that expires at `expires` (a message TTL; see
    /// [`Outbox::push_data_until`](outbox::Outbox::push_data_until)).
    fn deliver_until(
        &self,
        conn: &Connection,
        encoded: &Encoded<'_>,
        excluded: &Excluded,
        expires: Option<tokio::time::Instant>,
    ) -> usize {
        if excluded.contains(conn) {
            return 0;
        }
        let Some(frame) = encoded.frame_for(conn.is_reliable(), conn.format()) else {
            return 0;
        };
        match conn
            .outbox
            .push_message(frame.clone(), expires, encoded.origin())
        {
            Push::Queued => {
                encoded.add_bytes(frame.len());
                1
            }
            Push::Overflow => {
                self.inner
                    .counters
                    .slow_consumer_closes
                    .fetch_add(1, Ordering::Relaxed);
                encoded.metrics().slow_consumer_closes.inc();
                tracing::warn!(
                    hub = conn.hub().as_str(),
                    connection.id = %conn.id(),
                    "closing slow consumer: outbox full"
                );
                0
            }
            Push::Closed => 0,
        }
    }

    fn count_delivered(&self, encoded: &Encoded<'_>, kind: SendKind, n: usize) -> usize {
        encoded.metrics().sent(kind, n, encoded.bytes());
        trace::record("recipients", n);
        self.inner
            .counters
            .messages_delivered
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }
}

/// A hub's name for spans (its metric series know it; the hub itself is keyed by it).
fn hub_name(hub: &Hub) -> &str {
    hub.metrics.hub()
}

/// Removes `id` from the member set under `key`, dropping the set once empty (groups exist
/// only while they have members).
fn remove_member(index: &DashMap<Arc<str>, Members>, key: &str, id: &str) {
    if let Some(mut members) = index.get_mut(key) {
        members.remove(id);
    }
    index.remove_if(key, |_, members| members.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Data, Frame, WireFormat};
    use crate::router::hub_key::key;

    fn router() -> Router {
        Router::new(RouterConfig {
            outbox_bytes: 1 << 20,
        })
    }

    fn spec(user: Option<&str>, groups: &[&str]) -> ConnectSpec {
        ConnectSpec {
            id: ConnectionId::generate(),
            hub: key("chat"),
            user_id: user.map(Into::into),
            format: WireFormat::Json,
            subprotocol: Some("json.webpubsub.azure.v1"),
            reliable: None,
            remote_addr: None,
            permissions: Permissions::default(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            greeting: None,
        }
    }

    fn text(s: &str) -> Data {
        Data::Text(s.to_owned().into())
    }

    #[test]
    fn group_names_are_checked() {
        assert!(check_group_name("g").is_ok());
        assert!(check_group_name("  ").is_err());
        assert!(check_group_name(&"g".repeat(1025)).is_err());
    }

    #[test]
    fn fan_out_reaches_group_members_once_and_honours_excluded() {
        let router = router();
        let a = router.connect(spec(Some("alice"), &["g"]));
        let b = router.connect(spec(None, &["g"]));
        let c = router.connect(spec(None, &[]));
        let msg = Message::to_group("g", None, text("hi"));
        assert_eq!(router.send_to_group(&key("chat"), "g", &msg, &[]), 2);
        assert_eq!(
            router.send_to_group(&key("chat"), "g", &msg, &[a.id().as_str()]),
            1
        );
        assert_eq!(c.outbox().queued_bytes(), 0);
        assert_eq!(router.send_to_user(&key("chat"), "alice", &msg, &[]), 1);
        assert_eq!(
            router.send_to_all(&key("chat"), &msg, &[b.id().as_str()]),
            2
        );
        assert!(router.send_to_connection(&key("chat"), c.id().as_str(), &msg));
        assert!(!router.send_to_connection(&key("chat"), "nope", &msg));
    }

    #[test]
    fn groups_vanish_with_their_last_member_and_disconnect_cleans_up() {
        let router = router();
        let a = router.connect(spec(Some("alice"), &["g", "h"]));
        assert!(router.group_exists("chat", "g"));
        assert!(router.leave_group(&a, "g"));
        assert!(!router.group_exists("chat", "g"));
        router.disconnect(&a);
        router.disconnect(&a);
        assert!(!router.group_exists("chat", "h"));
        assert!(!router.user_exists("chat", "alice"));
        assert!(!router.connection_exists("CHAT", a.id().as_str()));
        assert_eq!(router.stats().connections, 0);
        assert!(
            !router.join_group(&a, "g"),
            "a gone connection cannot rejoin"
        );
        assert!(!router.group_exists("chat", "g"));
    }

    #[test]
    fn encodes_once_and_shares_bytes() {
        let router = router();
        let a = router.connect(spec(None, &["g"]));
        let b = router.connect(spec(None, &["g"]));
        let msg = Message::to_group("g", None, text("payload"));
        router.send_to_group(&key("chat"), "g", &msg, &[]);
        let take = |c: &Connection| c.outbox.drain_for_test().pop().expect("one frame").frame;
        let (Frame::Text(fa), Frame::Text(fb)) = (take(&a), take(&b)) else {
            panic!("text frames expected");
        };
        assert_eq!(fa.as_str().as_ptr(), fb.as_str().as_ptr(), "same buffer");
    }

    #[test]
    fn overflow_is_counted_and_spares_others() {
        let router = Router::new(RouterConfig { outbox_bytes: 100 });
        let slow = router.connect(spec(None, &["g"]));
        let fast = router.connect(spec(None, &["g"]));
        let msg = Message::to_group("g", None, text(&"x".repeat(60)));
        router.send_to_group(&key("chat"), "g", &msg, &[]);
        // Only `fast` is drained, as its writer would.
        fast.outbox.drain_for_test();
        router.send_to_group(&key("chat"), "g", &msg, &[]);
        assert_eq!(router.stats().slow_consumer_closes, 1);
        assert!(slow.outbox().is_closing());
        assert!(!fast.outbox().is_closing());
    }
}
