//! Group presence (spec part 2 §4.3): each connection's state in the groups it is in, and
//! the connections subscribed to a group's states.
//!
//! Every node keeps the states of its own connections and its own subscribers. A change is
//! delivered to this node's subscribers and handed to the other nodes (a `GroupState`
//! broadcast), which deliver it to theirs; a subscription's snapshot asks every node for its
//! states. A state ends with the client clearing it, its leaving the group, or its end.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Forwarded, Node, NodeError};
use crate::cluster::wire::{Body, GroupStateEntry, GroupStates, Question};
use crate::message::{GroupStateItem, WireFormat};
use crate::protocol;
use crate::router::Connection;

/// Most groups one connection may subscribe to the states of.
pub(crate) const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 100;
/// Most connections of one node with a state in one group.
pub(crate) const MAX_STATES_PER_GROUP: usize = 1000;

/// Why a presence request was refused (the client's ack says `Forbidden`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PresenceError {
    /// Against a rule or bound; the message names it.
    #[error("{0}")]
    Refused(String),
    /// Applied here, but the other nodes could not be told.
    #[error(transparent)]
    Cluster(#[from] NodeError),
}

/// One hub's group, as a key.
type GroupKey = (Arc<str>, Arc<str>);

/// This node's states and subscribers.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    groups: HashMap<GroupKey, GroupPresence>,
    /// The groups each connection has a state in or subscribes to, by connection id, so
    /// that a connection's end finds them at once.
    by_connection: HashMap<Arc<str>, HashSet<GroupKey>>,
}

#[derive(Debug, Default)]
struct GroupPresence {
    /// This node's connections with a state, by connection id.
    states: BTreeMap<Arc<str>, GroupStateItem>,
    /// This node's subscribers, by connection id.
    subscribers: HashMap<Arc<str>, Weak<Connection>>,
}

impl GroupPresence {
    fn is_empty(&self) -> bool {
        self.states.is_empty() && self.subscribers.is_empty()
    }
}

impl Presence {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The states of this node's connections in a group.
    fn local_states(&self, hub: &str, group: &str) -> Vec<GroupStateItem> {
        let key: GroupKey = (hub.into(), group.into());
        self.lock()
            .groups
            .get(&key)
            .map(|g| g.states.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Delivers a change to this node's subscribers of the group.
    fn deliver(&self, hub: &str, group: &str, items: &[GroupStateItem]) {
        let key: GroupKey = (hub.into(), group.into());
        let subscribers: Vec<Arc<Connection>> = match self.lock().groups.get(&key) {
            Some(g) => g.subscribers.values().filter_map(Weak::upgrade).collect(),
            None => return,
        };
        if subscribers.is_empty() {
            return;
        }
        // Encoded once; only JSON clients can subscribe.
        let Some(frame) = protocol::group_state(WireFormat::Json, false, group, items) else {
            return;
        };
        for conn in subscribers {
            conn.send_frame(frame.clone());
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn to_entry(item: &GroupStateItem) -> GroupStateEntry {
    GroupStateEntry {
        connection_id: item.connection_id.to_string(),
        user_id: item.user_id.as_deref().map(str::to_owned),
        state: item.state.as_deref().cloned().unwrap_or_default(),
        cleared: item.state.is_none(),
        updated_at: item.updated_at,
    }
}

fn from_entry(entry: GroupStateEntry) -> GroupStateItem {
    GroupStateItem {
        connection_id: entry.connection_id.into(),
        user_id: entry.user_id.map(Into::into),
        state: (!entry.cleared).then(|| Arc::new(entry.state)),
        updated_at: entry.updated_at,
    }
}

impl Node {
    /// Sets (`Some`) or clears (`None`) a client's state in `group`, which it must be in, and
    /// tells every subscriber of the group, on every node. In a cluster the result resolves
    /// once Redis has taken the change.
    ///
    /// # Errors
    /// [`PresenceError::Refused`]: not a member, or the group has
    /// [`MAX_STATES_PER_GROUP`] states on this node; [`PresenceError::Cluster`]: the other
    /// nodes cannot be told now (this node's subscribers were).
    pub(crate) fn set_group_state(
        &self,
        conn: &Connection,
        group: &str,
        state: Option<BTreeMap<String, String>>,
    ) -> Result<Option<Forwarded>, PresenceError> {
        if !conn.membership().groups.contains(group) {
            return Err(PresenceError::Refused(format!(
                "The connection is not in group '{group}': join it before setting a state there."
            )));
        }
        let key: GroupKey = (conn.hub().as_str().into(), group.into());
        let id = conn.id().shared();
        let item = GroupStateItem {
            connection_id: id.clone(),
            user_id: conn.user_id().cloned(),
            state: state.map(Arc::new),
            updated_at: now_ms(),
        };
        {
            let mut table = self.presence().lock();
            let Table {
                groups,
                by_connection,
            } = &mut *table;
            let entry = groups.entry(key.clone()).or_default();
            if item.state.is_some() {
                if !entry.states.contains_key(&id) && entry.states.len() >= MAX_STATES_PER_GROUP {
                    return Err(PresenceError::Refused(format!(
                        "Group '{group}' has its limit of {MAX_STATES_PER_GROUP} connection states."
                    )));
                }
                entry.states.insert(id.clone(), item.clone());
                by_connection.entry(id).or_default().insert(key);
            } else {
                entry.states.remove(&id);
                if entry.is_empty() {
                    groups.remove(&key);
                }
            }
        }
        self.publish_states(conn.hub(), group, vec![item])
    }

    /// Subscribes a client to the states of `group`: from now on it gets every change; the
    /// future is the snapshot (every node's states), which the caller sends first.
    ///
    /// # Errors
    /// The connection subscribes to [`MAX_SUBSCRIPTIONS_PER_CONNECTION`] groups already.
    pub(crate) fn subscribe_group_state(
        &self,
        conn: &Arc<Connection>,
        group: &str,
    ) -> Result<impl Future<Output = Result<Vec<GroupStateItem>, NodeError>> + use<>, String> {
        let key: GroupKey = (conn.hub().as_str().into(), group.into());
        let id = conn.id().shared();
        {
            let mut table = self.presence().lock();
            let Table {
                groups,
                by_connection,
            } = &mut *table;
            let mine = by_connection.entry(id.clone()).or_default();
            let subscribed = mine
                .iter()
                .filter(|k| {
                    groups
                        .get(*k)
                        .is_some_and(|g| g.subscribers.contains_key(&id))
                })
                .count();
            let already = groups
                .get(&key)
                .is_some_and(|g| g.subscribers.contains_key(&id));
            if !already && subscribed >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
                return Err(format!(
                    "The connection subscribes to the state of {MAX_SUBSCRIPTIONS_PER_CONNECTION} groups, its limit."
                ));
            }
            mine.insert(key.clone());
            groups
                .entry(key)
                .or_default()
                .subscribers
                .insert(id, Arc::downgrade(conn));
        }
        let node = self.clone();
        let (hub, group) = (conn.hub().to_owned(), group.to_owned());
        Ok(async move { node.group_states(&hub, &group).await })
    }

    /// Ends a client's subscription to the states of `group` (none: nothing to do).
    pub(crate) fn unsubscribe_group_state(&self, conn: &Connection, group: &str) {
        let key: GroupKey = (conn.hub().as_str().into(), group.into());
        let id = conn.id().shared();
        let mut table = self.presence().lock();
        let Table {
            groups,
            by_connection,
        } = &mut *table;
        if let Some(g) = groups.get_mut(&key) {
            g.subscribers.remove(&id);
            let has_state = g.states.contains_key(&id);
            if g.is_empty() {
                groups.remove(&key);
            }
            if !has_state && let Some(mine) = by_connection.get_mut(&id) {
                mine.remove(&key);
            }
        }
    }

    /// A client left `group` (or is leaving every group): its state there is cleared, and
    /// the subscribers are told.
    pub(crate) fn group_left(&self, conn: &Connection, group: &str) {
        let key: GroupKey = (conn.hub().as_str().into(), group.into());
        let id = conn.id().shared();
        let cleared = {
            let mut table = self.presence().lock();
            match table.groups.get_mut(&key) {
                Some(g) => g.states.remove(&id).is_some(),
                None => false,
            }
        };
        if cleared {
            let item = GroupStateItem {
                connection_id: id,
                user_id: conn.user_id().cloned(),
                state: None,
                updated_at: now_ms(),
            };
            if let Err(e) = self.publish_states(conn.hub(), group, vec![item]) {
                tracing::warn!(error = %e, "the other nodes were not told of a cleared group state");
            }
        }
    }

    /// A client's end: its states are cleared (subscribers told), its subscriptions end.
    pub(crate) fn presence_gone(&self, conn: &Connection) {
        let id = conn.id().shared();
        let keys = {
            let mut table = self.presence().lock();
            let keys = table.by_connection.remove(&id).unwrap_or_default();
            for key in &keys {
                if let Some(g) = table.groups.get_mut(key) {
                    g.subscribers.remove(&id);
                }
            }
            keys
        };
        for (_, group) in &keys {
            self.group_left(conn, group);
        }
        let mut table = self.presence().lock();
        for key in &keys {
            if table.groups.get(key).is_some_and(GroupPresence::is_empty) {
                table.groups.remove(key);
            }
        }
    }

    /// Every node's states in a group.
    async fn group_states(&self, hub: &str, group: &str) -> Result<Vec<GroupStateItem>, NodeError> {
        let mut items = self.presence().local_states(hub, group);
        let question = || {
            Question::GroupStates(GroupStates {
                hub: hub.to_owned(),
                group: group.to_owned(),
                items: Vec::new(),
            })
        };
        if let Some(answers) = self.ask_others::<GroupStates>(question).await? {
            items.extend(answers.into_iter().flat_map(|a| a.items).map(from_entry));
        }
        items.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        Ok(items)
    }

    /// Delivers changes here and hands them to the other nodes.
    fn publish_states(
        &self,
        hub: &str,
        group: &str,
        items: Vec<GroupStateItem>,
    ) -> Result<Option<Forwarded>, PresenceError> {
        self.presence().deliver(hub, group, &items);
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        let body = Body::GroupState(GroupStates {
            hub: hub.to_owned(),
            group: group.to_owned(),
            items: items.iter().map(to_entry).collect(),
        });
        cluster
            .broadcast_confirmed(body)
            .map(|published| Some(Forwarded::from(published)))
            .map_err(|e| PresenceError::Cluster(NodeError::Cluster(e)))
    }

    /// Another node's changes, for this node's subscribers.
    pub(super) fn deliver_group_states(&self, states: GroupStates) {
        let items: Vec<GroupStateItem> = states.items.into_iter().map(from_entry).collect();
        self.presence().deliver(&states.hub, &states.group, &items);
    }

    /// This node's states in a group, for another node's snapshot.
    pub(super) fn local_group_states(&self, question: GroupStates) -> GroupStates {
        let items = self
            .presence()
            .local_states(&question.hub, &question.group)
            .iter()
            .map(to_entry)
            .collect();
        GroupStates { items, ..question }
    }
}
