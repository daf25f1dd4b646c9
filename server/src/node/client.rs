//! The service operations of client edges: admitting a connection, registering it, its own
//! group joins and leaves, and unregistering it. The WebSocket edge calls these, and so does
//! every other client edge (MQTT, Socket.IO): an edge parses its protocol and authenticates,
//! the node decides and acts. Group sends from a client are in [`routing`](super::routing)
//! (`Node::send_to_group_from_client`), since they cross nodes.

use std::sync::Arc;

use crate::error::{Classify, ErrorCode};
use crate::limits::{HubLimits, LimitCounters, LimitKind};
use crate::message::Message;
use crate::router::{ConnectSpec, Connection, ConnectionId, HubKey};
use crate::telemetry::HubMetrics;
use crate::telemetry::live_trace::{Category, TraceRecord};

use super::Node;

/// Why a new connection was refused before the `connect` event: a per-hub limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct AdmissionRefused {
    /// The limit that refused it (counted in `hubcast_limit_refusals_total`).
    pub(crate) kind: LimitKind,
    /// The reason, naming the limit's setting, for the client's close or refusal.
    pub(crate) message: String,
}

impl Classify for AdmissionRefused {
    fn code(&self) -> ErrorCode {
        match self.kind {
            LimitKind::UserIdLength => ErrorCode::BadRequest,
            // Connection counts: the client may retry later (429 on the WebSocket edge).
            _ => ErrorCode::Unavailable,
        }
    }
}

impl Node {
    /// A new, unique connection id (prefixed by this node's id in a cluster).
    pub(crate) fn new_connection_id(&self) -> ConnectionId {
        self.router().new_connection_id()
    }

    /// Checks the per-hub limits a new connection of `user` must pass, counting a refusal
    /// in `counters`.
    ///
    /// The counts are read before registering, so concurrent handshakes may overshoot a
    /// limit by the number in flight: the limits bound growth, they are not quotas.
    ///
    /// # Errors
    /// [`AdmissionRefused`] naming the limit.
    pub(crate) fn check_admission(
        &self,
        limits: &HubLimits,
        counters: &LimitCounters,
        hub: &HubKey,
        user: Option<&str>,
    ) -> Result<(), AdmissionRefused> {
        let refuse = |kind: LimitKind, message: String| {
            counters.hit(kind);
            Err(AdmissionRefused { kind, message })
        };
        if let Some(user) = user
            && user.chars().count() > limits.max_user_id_chars
        {
            return refuse(
                LimitKind::UserIdLength,
                format!(
                    "user id longer than {} characters (limits.max_user_id_chars)",
                    limits.max_user_id_chars
                ),
            );
        }
        if self.router().hub_connection_count(hub) >= limits.max_connections_per_hub {
            return refuse(
                LimitKind::ConnectionsPerHub,
                format!(
                    "hub '{hub}' has reached its limit of {} connections (limits.max_connections_per_hub)",
                    limits.max_connections_per_hub
                ),
            );
        }
        if let Some(user) = user
            && self.router().user_connection_count(hub, user) >= limits.max_connections_per_user
        {
            return refuse(
                LimitKind::ConnectionsPerUser,
                format!(
                    "user '{user}' has reached the limit of {} connections in hub '{hub}' (limits.max_connections_per_user)",
                    limits.max_connections_per_user
                ),
            );
        }
        Ok(())
    }

    /// Registers an admitted connection: from now on sends reach it.
    pub(crate) fn register_client(&self, spec: ConnectSpec) -> Arc<Connection> {
        let conn = self.router().connect(spec);
        self.trace_connection(&conn, "ConnectionStarted", "started");
        conn
    }

    /// Unregisters a connection: it leaves its groups and no send reaches it any more.
    pub(crate) fn unregister_client(&self, conn: &Connection) {
        self.router().disconnect(conn);
        self.presence_gone(conn);
        self.trace_connection(conn, "ConnectionEnded", "ended");
    }

    /// A client's own join (its permission already checked by the edge); `false` when it
    /// was a member already.
    pub(crate) fn join_group_from_client(&self, conn: &Arc<Connection>, group: &str) -> bool {
        let joined = self.router().join_group(conn, group);
        if joined {
            self.trace_membership(conn, group, "GroupJoined", "joined");
        }
        joined
    }

    /// A client's own leave; `false` when it was not a member.
    pub(crate) fn leave_group_from_client(&self, conn: &Connection, group: &str) -> bool {
        let left = self.router().leave_group(conn, group);
        if left {
            self.group_left(conn, group);
            self.trace_membership(conn, group, "GroupLeft", "left");
        }
        left
    }

    /// A connectivity record of the live trace for `conn`.
    fn trace_connection(&self, conn: &Connection, event: &'static str, what: &str) {
        self.live_trace().emit(|| {
            let mut r = TraceRecord::new(
                Category::Connectivity,
                event,
                format!(
                    "Connection {} {what} ({} client{}).",
                    conn.id(),
                    conn.format().protocol().label(),
                    conn.subprotocol()
                        .map(|s| format!(", {s}"))
                        .unwrap_or_default()
                ),
            );
            describe(&mut r, conn);
            r
        });
    }

    /// A messaging record of the live trace: `conn` joined or left `group` on its own.
    fn trace_membership(&self, conn: &Connection, group: &str, event: &'static str, what: &str) {
        self.live_trace().emit(|| {
            let mut r = TraceRecord::new(
                Category::Messaging,
                event,
                format!("Connection {} {what} group '{group}'.", conn.id()),
            );
            describe(&mut r, conn);
            r.group = group.to_owned();
            r
        });
    }

    /// Sends `message` to one client of this node, numbered like any other message for a
    /// reliable client (a handler's reply to its event, for instance).
    pub(crate) fn send_to_client(&self, conn: &Connection, message: &Message) {
        self.router()
            .send_to_connection(conn.hub(), conn.id().as_str(), message);
    }

    /// One of this node's connections, by hub key and id (a reliable client's recovery).
    pub(crate) fn local_connection(&self, hub: &HubKey, id: &str) -> Option<Arc<Connection>> {
        self.router().connection(hub, id)
    }

    /// Whether this node is one of a cluster: an MQTT client id names one session across
    /// every node, so a new session must end the one another node may hold.
    pub(crate) fn is_clustered(&self) -> bool {
        self.cluster().is_some()
    }

    /// Closes every client connection of this node with `code` and `reason` (shutdown).
    pub(crate) fn close_all_clients(&self, code: u16, reason: &str) {
        self.router().close_all(code, reason);
    }

    /// The metrics of one hub, for the edges' per-hub counters.
    pub(crate) fn hub_metrics(&self, hub: &HubKey) -> Arc<HubMetrics> {
        self.router().hub_metrics(hub)
    }
}

/// Fills in what a live-trace record says of the connection it is about.
fn describe(r: &mut TraceRecord, conn: &Connection) {
    r.hub = conn.hub().as_str().to_owned();
    r.connection_id = conn.id().as_str().to_owned();
    r.user_id = conn.user_id().map(|u| u.to_string()).unwrap_or_default();
    r.ip = conn
        .remote_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
}
