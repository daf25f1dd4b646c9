//! Control-plane operations on the router: what backend services may do to a hub through
//! REST or gRPC. Both edges call these methods and nothing else; they only parse, validate
//! and authenticate.
//!
//! Every method takes the hub's routing key (a [`HubKey`]). Operations
//! that select connections by a predicate (an OData filter, usually) first take a snapshot
//! of the candidates and evaluate the predicate with no index lock held: a predicate reads
//! the connection's groups, and the lock order (membership, then index shard) forbids taking
//! a membership lock under a shard lock.
//!
//! Semantics follow Azure Web PubSub where it is clear, and its emulator where it is not:
//! user↔group operations apply to the user's current connections; sends succeed whether or
//! not anyone receives them; removes and closes are idempotent.

use std::cmp::Ordering as CmpOrdering;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::encoded::Encoded;
use super::{
    Close, Connection, Hub, HubKey, Message, Permission, Router, RouterError, check_group_name,
    remove_member,
};
use crate::error::{Classify, ErrorCode};
use crate::message::close;
use crate::telemetry::SendKind;

/// Which connections of a hub an operation addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Every connection of the hub.
    All,
    /// The members of a group.
    Group(&'a str),
    /// The connections of a user.
    User(&'a str),
    /// One connection.
    Connection(&'a str),
}

/// A test on a connection: a compiled OData filter, usually.
pub type Predicate<'a> = &'a dyn Fn(&Connection) -> bool;

/// How a control-plane send is delivered.
#[derive(Clone, Copy, Default)]
pub struct SendOptions<'a> {
    /// Connection ids that must not receive the message.
    pub excluded: &'a [&'a str],
    /// Only connections for which this holds receive the message.
    pub filter: Option<Predicate<'a>>,
    /// Time to live: a copy still waiting in a connection's outbox after this long is
    /// dropped for that connection instead of written. `None` or zero: no expiry.
    pub ttl: Option<Duration>,
}

impl fmt::Debug for SendOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendOptions")
            .field("excluded", &self.excluded)
            .field("filter", &self.filter.map(|_| "<predicate>"))
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Which page of a listing to return. Listings are ordered by connection id (or group
/// name), so a page continues strictly after the last item of the previous one, and items
/// that come and go between pages never make a page skip or repeat a survivor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest<'a> {
    /// Return items after this key; `None` starts at the beginning.
    pub after: Option<&'a str>,
    /// At most this many items (at least one is always returned if any remain).
    pub limit: usize,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, in key order.
    pub items: Vec<T>,
    /// Whether more items follow the last one.
    pub more: bool,
}

/// Counts for one hub, on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Open connections.
    pub connections: u64,
    /// Users with at least one connection.
    pub users: u64,
    /// Groups with at least one member.
    pub groups: u64,
}

impl Classify for RouterError {
    fn code(&self) -> ErrorCode {
        match self {
            RouterError::InvalidHub(_) | RouterError::InvalidGroup => ErrorCode::BadRequest,
            RouterError::NoConnection(_) => ErrorCode::NotFound,
        }
    }
}

impl Router {
    // === sends ===

    /// Sends `message` to the connections `target` addresses in `hub`, honouring `options`.
    /// Returns how many connections it was queued for.
    pub fn send(
        &self,
        hub: &HubKey,
        target: Target<'_>,
        message: &Message,
        options: &SendOptions<'_>,
    ) -> usize {
        let Some(hub) = self.hub(hub) else { return 0 };
        let kind = match target {
            Target::All => SendKind::All,
            Target::Group(_) => SendKind::Group,
            Target::User(_) => SendKind::User,
            Target::Connection(_) => SendKind::Connection,
        };
        let _span = crate::telemetry::trace::fanout_span(hub.metrics.hub(), kind);
        let encoded = Encoded::new(message, &hub.metrics);
        let expires = options
            .ttl
            .filter(|ttl| !ttl.is_zero())
            .map(|ttl| Instant::now() + ttl);
        let excluded = hub.excluded(options.excluded);
        let mut sent = 0;
        match options.filter {
            None => for_each_target(&hub, target, |conn| {
                sent += self.deliver_until(conn, &encoded, &excluded, expires);
            }),
            Some(filter) => {
                for conn in snapshot(&hub, target) {
                    if filter(&conn) {
                        sent += self.deliver_until(&conn, &encoded, &excluded, expires);
                    }
                }
            }
        }
        self.count_delivered(&encoded, kind, sent)
    }

    // === group membership ===

    /// Adds a connection to a group.
    ///
    /// # Errors
    /// [`RouterError::InvalidGroup`] for a bad group name; [`RouterError::NoConnection`] if
    /// the connection is not connected to `hub`.
    pub fn add_connection_to_group(
        &self,
        hub: &HubKey,
        group: &str,
        id: &str,
    ) -> Result<(), RouterError> {
        check_group_name(group)?;
        let conn = self
            .connection(hub, id)
            .ok_or_else(|| RouterError::NoConnection(id.to_owned()))?;
        if self.join_group(&conn, group) {
            Ok(())
        } else {
            Err(RouterError::NoConnection(id.to_owned()))
        }
    }

    /// Removes a connection from a group. Returns whether it was a member.
    pub fn remove_connection_from_group(&self, hub: &HubKey, group: &str, id: &str) -> bool {
        self.connection(hub, id)
            .is_some_and(|conn| self.leave_group(&conn, group))
    }

    /// Removes a connection from every group. Returns how many groups it left.
    pub fn remove_connection_from_all_groups(&self, hub: &HubKey, id: &str) -> usize {
        let (Some(h), Some(conn)) = (self.hub(hub), self.connection(hub, id)) else {
            return 0;
        };
        leave_all(&h, &conn)
    }

    /// Adds every current connection of `user` to `group`. Returns how many connections
    /// joined (0 when the user has none: later connections of the user are not affected).
    ///
    /// # Errors
    /// [`RouterError::InvalidGroup`] for a bad group name.
    pub fn add_user_to_group(
        &self,
        hub: &HubKey,
        user: &str,
        group: &str,
    ) -> Result<usize, RouterError> {
        check_group_name(group)?;
        let Some(h) = self.hub(hub) else { return Ok(0) };
        Ok(snapshot(&h, Target::User(user))
            .iter()
            .filter(|conn| self.join_group(conn, group))
            .count())
    }

    /// Removes every connection of `user` from `group`. Returns how many were members.
    pub fn remove_user_from_group(&self, hub: &HubKey, user: &str, group: &str) -> usize {
        let Some(h) = self.hub(hub) else { return 0 };
        snapshot(&h, Target::User(user))
            .iter()
            .filter(|conn| self.leave_group(conn, group))
            .count()
    }

    /// Removes every connection of `user` from every group. Returns how many memberships
    /// ended.
    pub fn remove_user_from_all_groups(&self, hub: &HubKey, user: &str) -> usize {
        let Some(h) = self.hub(hub) else { return 0 };
        snapshot(&h, Target::User(user))
            .iter()
            .map(|conn| leave_all(&h, conn))
            .sum()
    }

    /// Adds every connection of `hub` that satisfies `filter` (all of them when `None`) to
    /// each of `groups`. Returns how many connections matched.
    ///
    /// # Errors
    /// [`RouterError::InvalidGroup`] if any group name is bad (then nothing changes).
    pub fn add_to_groups(
        &self,
        hub: &HubKey,
        groups: &[&str],
        filter: Option<Predicate<'_>>,
    ) -> Result<usize, RouterError> {
        for group in groups {
            check_group_name(group)?;
        }
        let Some(h) = self.hub(hub) else { return Ok(0) };
        let mut matched = 0;
        for conn in snapshot(&h, Target::All) {
            if filter.is_none_or(|f| f(&conn)) {
                matched += 1;
                for group in groups {
                    self.join_group(&conn, group);
                }
            }
        }
        Ok(matched)
    }

    /// Removes every connection of `hub` that satisfies `filter` (all of them when `None`)
    /// from each of `groups`. Returns how many connections matched.
    pub fn remove_from_groups(
        &self,
        hub: &HubKey,
        groups: &[&str],
        filter: Option<Predicate<'_>>,
    ) -> usize {
        let Some(h) = self.hub(hub) else { return 0 };
        let mut matched = 0;
        for conn in snapshot(&h, Target::All) {
            if filter.is_none_or(|f| f(&conn)) {
                matched += 1;
                for group in groups {
                    self.leave_group(&conn, group);
                }
            }
        }
        matched
    }

    // === closing ===

    /// Closes the connections `target` addresses, except `excluded`: each gets a
    /// `disconnected` message with `reason` (protocol clients) and a [`close::BY_SERVICE`]
    /// close after what is already queued for it. They leave every index at once, so
    /// existence checks and sends no longer see them. Returns how many were closed.
    pub fn close_connections(
        &self,
        hub: &HubKey,
        target: Target<'_>,
        excluded: &[&str],
        reason: &str,
    ) -> usize {
        let Some(h) = self.hub(hub) else { return 0 };
        let mut closed = 0;
        for conn in snapshot(&h, target) {
            if excluded.contains(&conn.id().as_str()) {
                continue;
            }
            conn.close(Close::Server {
                code: close::BY_SERVICE,
                reason: reason.to_owned(),
                discard_queued: false,
            });
            self.disconnect(&conn);
            closed += 1;
        }
        closed
    }

    // === permissions ===

    /// Grants `permission` to a connection, on `target` or (with `None`) on every group.
    ///
    /// # Errors
    /// [`RouterError::NoConnection`].
    pub fn grant_permission(
        &self,
        hub: &HubKey,
        id: &str,
        permission: Permission,
        target: Option<&str>,
    ) -> Result<(), RouterError> {
        let conn = self
            .connection(hub, id)
            .ok_or_else(|| RouterError::NoConnection(id.to_owned()))?;
        conn.update_permissions(|p| p.grant(permission, target));
        Ok(())
    }

    /// Revokes `permission` from a connection; see
    /// [`Permissions::revoke`](super::Permissions::revoke). Returns whether the connection
    /// exists.
    pub fn revoke_permission(
        &self,
        hub: &HubKey,
        id: &str,
        permission: Permission,
        target: Option<&str>,
    ) -> bool {
        self.connection(hub, id).is_some_and(|conn| {
            conn.update_permissions(|p| p.revoke(permission, target));
            true
        })
    }

    /// Whether a connection holds `permission`; see
    /// [`Permissions::check`](super::Permissions::check). `None` if it does not exist.
    pub fn check_permission(
        &self,
        hub: &HubKey,
        id: &str,
        permission: Permission,
        target: Option<&str>,
    ) -> Option<bool> {
        self.connection(hub, id)
            .map(|conn| conn.check_permission(permission, target))
    }

    // === listings ===

    /// A page of the connections `target` addresses that satisfy `filter`, in connection id
    /// order.
    pub fn list_connections(
        &self,
        hub: &HubKey,
        target: Target<'_>,
        filter: Option<Predicate<'_>>,
        page: PageRequest<'_>,
    ) -> Page<Arc<Connection>> {
        let Some(h) = self.hub(hub) else {
            return Page {
                items: Vec::new(),
                more: false,
            };
        };
        let candidates = snapshot(&h, target)
            .into_iter()
            .filter(|c| page.after.is_none_or(|after| c.id().as_str() > after))
            .filter(|c| filter.is_none_or(|f| f(c)))
            .collect();
        first_page(candidates, page.limit, |a, b| a.id().cmp(b.id()))
    }

    /// A page of the groups of `hub` with their member counts, in name order.
    pub fn list_groups(&self, hub: &HubKey, page: PageRequest<'_>) -> Page<(Arc<str>, usize)> {
        let Some(h) = self.hub(hub) else {
            return Page {
                items: Vec::new(),
                more: false,
            };
        };
        let candidates = h
            .groups
            .iter()
            .filter(|g| page.after.is_none_or(|after| &**g.key() > after))
            .map(|g| (g.key().clone(), g.value().len()))
            .collect();
        first_page(candidates, page.limit, |a, b| a.0.cmp(&b.0))
    }

    /// The connection count, users and groups of `hub` on this node, for cluster-wide
    /// statistics (users and groups are counted once across nodes).
    pub fn hub_detail(&self, hub: &HubKey) -> (u64, Vec<String>, Vec<String>) {
        let Some(h) = self.hub(hub) else {
            return (0, Vec::new(), Vec::new());
        };
        (
            u64::try_from(h.connections.len()).unwrap_or(u64::MAX),
            h.users.iter().map(|u| u.key().to_string()).collect(),
            h.groups.iter().map(|g| g.key().to_string()).collect(),
        )
    }

    /// Connection, user and group counts of `hub`.
    pub fn hub_stats(&self, hub: &HubKey) -> HubStats {
        let Some(h) = self.hub(hub) else {
            return HubStats::default();
        };
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        HubStats {
            connections: count(h.connections.len()),
            users: count(h.users.len()),
            groups: count(h.groups.len()),
        }
    }
}

/// Calls `f` for each connection `target` addresses, under the index shard's read lock
/// (`f` must not take a membership lock).
fn for_each_target(hub: &Hub, target: Target<'_>, mut f: impl FnMut(&Arc<Connection>)) {
    match target {
        Target::All => hub.connections.iter().for_each(|e| f(e.value())),
        Target::Group(group) => {
            if let Some(members) = hub.groups.get(group) {
                members.values().for_each(f);
            }
        }
        Target::User(user) => {
            if let Some(members) = hub.users.get(user) {
                members.values().for_each(f);
            }
        }
        Target::Connection(id) => {
            if let Some(conn) = hub.connections.get(id) {
                f(conn.value());
            }
        }
    }
}

/// The connections `target` addresses, with no lock held afterwards.
fn snapshot(hub: &Hub, target: Target<'_>) -> Vec<Arc<Connection>> {
    let mut out = Vec::new();
    for_each_target(hub, target, |c| out.push(c.clone()));
    out
}

/// Takes `conn` out of every group. Returns how many it left.
fn leave_all(hub: &Hub, conn: &Connection) -> usize {
    let mut membership = conn.membership();
    let groups = std::mem::take(&mut membership.groups);
    for group in &groups {
        remove_member(&hub.groups, group, conn.id().as_str());
    }
    groups.len()
}

/// The `limit` smallest items by `cmp`, sorted, and whether more remain. Linear selection
/// first, so a page of 100 out of 100 000 does not sort them all.
fn first_page<T>(mut items: Vec<T>, limit: usize, cmp: impl Fn(&T, &T) -> CmpOrdering) -> Page<T> {
    let limit = limit.max(1);
    let more = items.len() > limit;
    if more {
        items.select_nth_unstable_by(limit, &cmp);
        items.truncate(limit);
    }
    items.sort_unstable_by(&cmp);
    Page { items, more }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Data, WireFormat};
    use crate::router::hub_key::key;
    use crate::router::outbox::Taken;
    use crate::router::{ConnectSpec, ConnectionId, Permissions, ReliableLimits, RouterConfig};

    fn router() -> Router {
        Router::new(RouterConfig {
            outbox_bytes: 1 << 20,
        })
    }

    fn connect(router: &Router, user: Option<&str>, groups: &[&str]) -> Arc<Connection> {
        router.connect(ConnectSpec {
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
        })
    }

    fn connect_reliable(router: &Router) -> Arc<Connection> {
        router.connect(ConnectSpec {
            id: ConnectionId::generate(),
            hub: key("chat"),
            user_id: None,
            format: WireFormat::Json,
            subprotocol: Some("json.reliable.webpubsub.azure.v1"),
            reliable: Some(ReliableLimits::default()),
            remote_addr: None,
            permissions: Permissions::default(),
            groups: Vec::new(),
            greeting: None,
        })
    }

    fn queued(conn: &Connection) -> usize {
        conn.outbox.drain_for_test().len()
    }

    fn msg() -> Message {
        Message::from_server(Data::Text("hi".to_owned().into()))
    }

    #[test]
    fn send_honours_target_filter_and_excluded() {
        let router = router();
        let a = connect(&router, Some("alice"), &["g"]);
        let b = connect(&router, Some("bob"), &["g"]);
        let c = connect(&router, None, &[]);
        let only_alice = |conn: &Connection| conn.user_id().is_some_and(|u| &**u == "alice");
        let options = SendOptions {
            filter: Some(&only_alice),
            ..SendOptions::default()
        };
        assert_eq!(router.send(&key("chat"), Target::All, &msg(), &options), 1);
        assert_eq!((queued(&a), queued(&b), queued(&c)), (1, 0, 0));
        let excluded = [b.id().as_str()];
        let options = SendOptions {
            excluded: &excluded,
            ..SendOptions::default()
        };
        assert_eq!(
            router.send(&key("chat"), Target::Group("g"), &msg(), &options),
            1
        );
        assert_eq!((queued(&a), queued(&b)), (1, 0));
        let none = SendOptions::default();
        assert_eq!(
            router.send(&key("chat"), Target::User("bob"), &msg(), &none),
            1
        );
        assert_eq!(
            router.send(
                &key("chat"),
                Target::Connection(c.id().as_str()),
                &msg(),
                &none
            ),
            1
        );
        assert_eq!(router.send(&key("nohub"), Target::All, &msg(), &none), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_drops_copies_the_writer_reaches_too_late() {
        let router = router();
        let a = connect(&router, None, &[]);
        let options = SendOptions {
            ttl: Some(Duration::from_secs(5)),
            ..SendOptions::default()
        };
        router.send(&key("chat"), Target::All, &msg(), &options);
        router.send(&key("chat"), Target::All, &msg(), &SendOptions::default());
        tokio::time::advance(Duration::from_secs(6)).await;
        let mut batch = Vec::new();
        let taken = a.outbox().take(a.outbox().epoch(), &mut batch).await;
        assert_eq!(taken, Taken::Frames);
        assert_eq!(batch.len(), 1, "only the message without TTL is left");
    }

    #[tokio::test(start_paused = true)]
    async fn sends_to_reliable_connections_are_numbered_and_outlive_their_ttl() {
        let router = router();
        let r = connect_reliable(&router);
        let options = SendOptions {
            ttl: Some(Duration::from_secs(5)),
            ..SendOptions::default()
        };
        let id = r.id().as_str();
        router.send(&key("chat"), Target::Connection(id), &msg(), &options);
        router.send(&key("chat"), Target::All, &msg(), &SendOptions::default());
        tokio::time::advance(Duration::from_secs(6)).await;
        let mut batch = Vec::new();
        let taken = r.outbox().take(r.outbox().epoch(), &mut batch).await;
        assert_eq!(taken, Taken::Frames);
        assert_eq!(
            batch.iter().map(|q| q.sequence_id).collect::<Vec<_>>(),
            [Some(1), Some(2)],
            "numbered like group sends, and the TTL does not open a hole in the numbering"
        );
        assert_eq!(r.outbox().unacknowledged().0, 2);
    }

    #[test]
    fn user_group_operations_apply_to_current_connections() {
        let router = router();
        let a1 = connect(&router, Some("alice"), &[]);
        let a2 = connect(&router, Some("alice"), &["x"]);
        let b = connect(&router, Some("bob"), &[]);
        assert_eq!(router.add_user_to_group(&key("chat"), "alice", "g"), Ok(2));
        assert_eq!(router.add_user_to_group(&key("chat"), "nobody", "g"), Ok(0));
        assert!(
            router
                .add_user_to_group(&key("chat"), "alice", " ")
                .is_err()
        );
        assert!(a1.groups().iter().any(|g| &**g == "g"));
        assert!(b.groups().is_empty());
        assert_eq!(router.remove_user_from_group(&key("chat"), "alice", "g"), 2);
        assert!(!router.group_exists("chat", "g"));
        assert_eq!(router.remove_user_from_all_groups(&key("chat"), "alice"), 1);
        assert!(!router.group_exists("chat", "x") && a2.groups().is_empty());
    }

    #[test]
    fn connection_group_operations() {
        let router = router();
        let a = connect(&router, None, &["x", "y"]);
        let id = a.id().as_str();
        assert_eq!(
            router.add_connection_to_group(&key("chat"), "g", id),
            Ok(())
        );
        assert_eq!(
            router.add_connection_to_group(&key("chat"), "g", "missing"),
            Err(RouterError::NoConnection("missing".into()))
        );
        assert!(router.remove_connection_from_group(&key("chat"), "g", id));
        assert!(!router.remove_connection_from_group(&key("chat"), "g", id));
        assert_eq!(
            router.remove_connection_from_all_groups(&key("chat"), id),
            2
        );
        assert!(!router.group_exists("chat", "x"));
        assert_eq!(
            router.remove_connection_from_all_groups(&key("chat"), "missing"),
            0
        );
    }

    #[test]
    fn filtered_group_operations() {
        let router = router();
        let a = connect(&router, Some("alice"), &[]);
        let b = connect(&router, Some("bob"), &[]);
        let is_bob = |c: &Connection| c.user_id().is_some_and(|u| &**u == "bob");
        assert_eq!(
            router.add_to_groups(&key("chat"), &["g1", "g2"], Some(&is_bob)),
            Ok(1)
        );
        assert_eq!(b.groups().len(), 2);
        assert!(a.groups().is_empty());
        assert_eq!(router.add_to_groups(&key("chat"), &["g3"], None), Ok(2));
        assert_eq!(
            router.remove_from_groups(&key("chat"), &["g1", "g3"], None),
            2
        );
        assert_eq!(b.groups(), vec![Arc::<str>::from("g2")]);
    }

    #[test]
    fn close_removes_at_once_and_honours_excluded() {
        let router = router();
        let a = connect(&router, Some("alice"), &["g"]);
        let b = connect(&router, Some("bob"), &["g"]);
        let excluded = [b.id().as_str()];
        assert_eq!(
            router.close_connections(&key("chat"), Target::Group("g"), &excluded, "bye"),
            1
        );
        assert!(a.outbox().is_closing() && !b.outbox().is_closing());
        assert!(!router.connection_exists("chat", a.id().as_str()));
        assert!(!router.user_exists("chat", "alice"));
        assert_eq!(
            a.outbox().current_close(),
            Some(Close::Server {
                code: close::BY_SERVICE,
                reason: "bye".into(),
                discard_queued: false
            })
        );
        assert_eq!(
            router.close_connections(&key("chat"), Target::All, &[], "x"),
            1
        );
        assert_eq!(router.stats().connections, 0);
    }

    #[test]
    fn permissions_at_runtime() {
        let router = router();
        let a = connect(&router, None, &[]);
        let id = a.id().as_str();
        let p = Permission::SendToGroup;
        assert_eq!(
            router.check_permission(&key("chat"), id, p, Some("g")),
            Some(false)
        );
        router
            .grant_permission(&key("chat"), id, p, Some("g"))
            .expect("exists");
        assert_eq!(
            router.check_permission(&key("chat"), id, p, Some("g")),
            Some(true)
        );
        assert_eq!(
            router.check_permission(&key("chat"), id, p, None),
            Some(false)
        );
        assert!(a.allows(p, "g"));
        assert!(router.revoke_permission(&key("chat"), id, p, Some("g")));
        assert!(!a.allows(p, "g"));
        assert!(
            router
                .grant_permission(&key("chat"), "missing", p, None)
                .is_err()
        );
        assert!(!router.revoke_permission(&key("chat"), "missing", p, None));
        assert_eq!(
            router.check_permission(&key("chat"), "missing", p, None),
            None
        );
    }

    #[test]
    fn listings_page_in_key_order() {
        let router = router();
        let conns: Vec<_> = (0..7)
            .map(|i| {
                connect(
                    &router,
                    Some(if i % 2 == 0 { "even" } else { "odd" }),
                    &["g"],
                )
            })
            .collect();
        let mut ids: Vec<&str> = conns.iter().map(|c| c.id().as_str()).collect();
        ids.sort_unstable();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = router.list_connections(
                &key("chat"),
                Target::All,
                None,
                PageRequest {
                    after: after.as_deref(),
                    limit: 3,
                },
            );
            seen.extend(page.items.iter().map(|c| c.id().to_string()));
            after = page.items.last().map(|c| c.id().to_string());
            if !page.more {
                break;
            }
        }
        assert_eq!(seen, ids);
        let odd = |c: &Connection| c.user_id().is_some_and(|u| &**u == "odd");
        let page = router.list_connections(
            &key("chat"),
            Target::Group("g"),
            Some(&odd),
            PageRequest {
                after: None,
                limit: 100,
            },
        );
        assert_eq!((page.items.len(), page.more), (3, false));
        let users = router.list_connections(
            &key("chat"),
            Target::User("even"),
            None,
            PageRequest {
                after: None,
                limit: 100,
            },
        );
        assert_eq!(users.items.len(), 4);

        connect(&router, None, &["a", "b"]);
        let groups = router.list_groups(
            &key("chat"),
            PageRequest {
                after: None,
                limit: 2,
            },
        );
        assert_eq!(groups.items, vec![(Arc::from("a"), 1), (Arc::from("b"), 1)]);
        assert!(groups.more);
        let rest = router.list_groups(
            &key("chat"),
            PageRequest {
                after: Some("b"),
                limit: 2,
            },
        );
        assert_eq!(rest.items, vec![(Arc::from("g"), 7)]);
        assert!(!rest.more);
        assert_eq!(
            router.hub_stats(&key("chat")),
            HubStats {
                connections: 8,
                users: 2,
                groups: 3
            }
        );
    }
}
