//! One client connection as the router sees it: identity, permissions, groups and outbox.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rand::RngCore;

use tokio_util::sync::CancellationToken;

use super::HubKey;
use super::outbox::{Close, Outbox, Push, ReliableLimits};
use super::permission::{Permission, Permissions};
use crate::message::{Frame, WireFormat};

/// A connection id: 22 URL-safe characters (128 random bits, base64url), opaque to clients
/// and safe to put in REST paths and CloudEvents `ce-source`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(Arc<str>);

impl ConnectionId {
    /// A fresh random id.
    pub fn generate() -> Self {
        use base64::Engine as _;
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        Self(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(bytes)
                .into(),
        )
    }

    /// A fresh random id that starts with `node` (a cluster node's id), keeping 22
    /// characters; the rest stays random (at least 96 bits).
    pub fn generate_on(node: &str) -> Self {
        let random = Self::generate();
        let mut id = String::with_capacity(random.0.len());
        id.push_str(node);
        id.push_str(&random.0[node.len().min(random.0.len())..]);
        Self(id.into())
    }

    /// An id a client chose: an MQTT client's client id is its connection id (as in Azure).
    /// The edge checks it first (`[0-9a-zA-Z]{1,128}`), so it is as URL-safe as a generated
    /// one.
    pub fn from_client_id(id: &str) -> Self {
        Self(id.into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string, for indexes keyed by id.
    pub(crate) fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The groups a connection belongs to, and whether it has left for good. Membership changes
/// of one connection are serialized by this lock, so a join racing a disconnect can never
/// leave the connection behind in a group index.
#[derive(Debug, Default)]
pub(crate) struct Membership {
    pub(crate) groups: HashSet<Arc<str>>,
    pub(crate) gone: bool,
}

/// A connected client.
#[derive(Debug)]
pub struct Connection {
    id: ConnectionId,
    hub: HubKey,
    user_id: Option<Arc<str>>,
    format: WireFormat,
    /// Fixed at connect; a plain field because fan-out asks it for every recipient.
    reliable: bool,
    subprotocol: Option<&'static str>,
    connected_at: SystemTime,
    remote_addr: Option<SocketAddr>,
    pub(crate) outbox: Outbox,
    /// Processed ack ids; kept with the logical connection so `Duplicate` survives recovery.
    acks: Mutex<AckIds>,
    /// Cancels the task of the socket currently attached (a recovery replaces it).
    socket: Mutex<CancellationToken>,
    pub(crate) membership: Mutex<Membership>,
    permissions: RwLock<Permissions>,
}

impl Connection {
    pub(crate) fn new(spec: ConnectSpec, outbox_bytes: usize) -> Self {
        Self {
            id: spec.id,
            hub: spec.hub,
            user_id: spec.user_id,
            format: spec.format,
            reliable: spec.reliable.is_some(),
            subprotocol: spec.subprotocol,
            connected_at: SystemTime::now(),
            remote_addr: spec.remote_addr,
            outbox: match spec.reliable {
                Some(limits) => Outbox::reliable(outbox_bytes, limits),
                None => Outbox::new(outbox_bytes),
            },
            acks: Mutex::new(AckIds::default()),
            socket: Mutex::new(CancellationToken::new()),
            membership: Mutex::new(Membership::default()),
            permissions: RwLock::new(spec.permissions),
        }
    }

    /// The connection id.
    pub fn id(&self) -> &ConnectionId {
        &self.id
    }

    /// The hub (lower-cased: hub names are case-insensitive).
    pub fn hub(&self) -> &HubKey {
        &self.hub
    }

    /// The user, if the client authenticated as one.
    pub fn user_id(&self) -> Option<&Arc<str>> {
        self.user_id.as_ref()
    }

    /// How messages are rendered for this connection.
    pub fn format(&self) -> WireFormat {
        self.format
    }

    /// The negotiated WebSocket subprotocol, if any.
    pub fn subprotocol(&self) -> Option<&'static str> {
        self.subprotocol
    }

    /// When the connection was accepted.
    pub fn connected_at(&self) -> SystemTime {
        self.connected_at
    }

    /// The client's address as the server saw it (the peer of the TCP connection).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// The runtime "check permission" answer; see [`Permissions::check`].
    pub fn check_permission(&self, permission: Permission, target: Option<&str>) -> bool {
        self.permissions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check(permission, target)
    }

    /// Whether the connection speaks a reliable subprotocol (it survives socket drops).
    pub fn is_reliable(&self) -> bool {
        self.reliable
    }

    /// The processed ack ids, for `Duplicate` answers.
    pub fn acks(&self) -> std::sync::MutexGuard<'_, AckIds> {
        self.acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes a new socket task the connection's, cancelling the previous one's token, and
    /// returns the token the new task must watch.
    pub fn replace_socket(&self) -> CancellationToken {
        let fresh = CancellationToken::new();
        let old = std::mem::replace(
            &mut *self
                .socket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            fresh.clone(),
        );
        old.cancel();
        fresh
    }

    /// Whether the connection may do `permission` on `group`.
    pub fn allows(&self, permission: Permission, group: &str) -> bool {
        self.permissions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allows(permission, group)
    }

    /// Changes the connection's permissions (runtime grant/revoke).
    pub fn update_permissions<R>(&self, f: impl FnOnce(&mut Permissions) -> R) -> R {
        f(&mut self
            .permissions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The groups the connection is in now.
    pub fn groups(&self) -> Vec<Arc<str>> {
        self.membership().groups.iter().cloned().collect()
    }

    pub(crate) fn membership(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.membership
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a control frame for this connection alone (acks, pongs, system messages).
    pub fn send_frame(&self, frame: Frame) -> Push {
        self.outbox.push(frame)
    }

    /// Starts closing the connection; the first close wins.
    pub fn close(&self, close: Close) -> bool {
        self.outbox.close(close)
    }

    /// The outbox, for the socket writer.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }
}

/// What the edge knows about a client when it connects.
#[derive(Debug)]
pub struct ConnectSpec {
    /// The id, chosen by the edge (it names the connection in logs from the handshake on).
    pub id: ConnectionId,
    /// The hub, lower-cased.
    pub hub: HubKey,
    /// The user, if any.
    pub user_id: Option<Arc<str>>,
    /// The wire format of the negotiated subprotocol.
    pub format: WireFormat,
    /// The negotiated subprotocol name.
    pub subprotocol: Option<&'static str>,
    /// `Some` for reliable subprotocols: the limits of the unacknowledged buffer.
    pub reliable: Option<ReliableLimits>,
    /// The client's address (the TCP peer), shown in connection details.
    pub remote_addr: Option<SocketAddr>,
    /// Permissions from the token's roles.
    pub permissions: Permissions,
    /// Groups to join at once (token `webpubsub.group`); no join permission needed.
    pub groups: Vec<String>,
    /// A frame queued before the connection becomes reachable, so it is the first one the
    /// client sees (the `connected` system message).
    pub greeting: Option<Frame>,
}

/// How many processed ack ids a connection remembers for `Duplicate` answers (Azure: 1000).
pub const ACK_ID_MEMORY: usize = 1000;

/// The ack ids a connection has processed successfully, so that a retried request is
/// answered `Duplicate` instead of being executed twice. Only successes are remembered:
/// a failed request may be retried with the same id.
#[derive(Debug, Default)]
pub struct AckIds {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
}

impl AckIds {
    /// Whether `id` was already processed.
    pub fn is_duplicate(&self, id: u64) -> bool {
        self.seen.contains(&id)
    }

    /// Forgets `id` again: its request failed after all (in a cluster, the publish to the
    /// other nodes), so a retry with the same id runs it again.
    pub fn forget(&mut self, id: u64) {
        if self.seen.remove(&id) {
            self.order.retain(|seen| *seen != id);
        }
    }

    /// Remembers a processed id, forgetting the oldest beyond [`ACK_ID_MEMORY`].
    pub fn record(&mut self, id: u64) {
        if self.seen.insert(id) {
            self.order.push_back(id);
            if self.order.len() > ACK_ID_MEMORY
                && let Some(old) = self.order.pop_front()
            {
                self.seen.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_ids_remember_a_bounded_window() {
        let mut ids = AckIds::default();
        for id in 0..=ACK_ID_MEMORY as u64 {
            ids.record(id);
        }
        assert!(!ids.is_duplicate(0), "oldest forgotten");
        assert!(ids.is_duplicate(1));
        assert!(ids.is_duplicate(ACK_ID_MEMORY as u64));
        // A request that failed after all is forgotten, and the window stays exact.
        ids.forget(5);
        assert!(!ids.is_duplicate(5));
        ids.record(ACK_ID_MEMORY as u64 + 1);
        assert!(
            ids.is_duplicate(1),
            "the forgotten id made room: nothing else went"
        );
        ids.record(ACK_ID_MEMORY as u64 + 2);
        assert!(!ids.is_duplicate(1), "then the oldest goes again");
    }
}
