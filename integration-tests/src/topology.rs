//! How a [`TestServer`](crate::TestServer) is deployed: one node, or three nodes sharing the
//! real Redis, chosen by the environment so that the same suites prove the same behaviour on
//! both.
//!
//! On a cluster, clients reach nodes 1 and 2 in turn (a load balancer without sticky
//! sessions), and the control plane (REST, gRPC) reaches node 3: a test's sender, its
//! receivers and its control calls usually sit on different nodes. What a test asserts about
//! "the server's router" is asked of every node and merged ([`Routers`]), so an assertion
//! says the same thing in both topologies: a connection exists if some node holds it, a group
//! exists if some node has a member in it, counters are summed.

use std::ops::Deref;
use std::sync::Arc;

use hubcast_server::cluster::Cluster;
use hubcast_server::message::Message;
use hubcast_server::router::{Connection, HubKey, Router, RouterStats};

/// The environment variable that chooses the topology: `single` (the default) or `cluster`.
pub const TOPOLOGY_ENV: &str = "HUBCAST_TEST_TOPOLOGY";

/// The number of nodes of the cluster topology.
pub const CLUSTER_NODES: usize = 3;

/// The deployment a [`TestServer`](crate::TestServer) starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One node, in memory.
    Single,
    /// [`CLUSTER_NODES`] nodes on the shared Redis under a key prefix of their own: clients
    /// on nodes 1 and 2 in turn, control calls on node 3.
    Cluster,
}

impl Topology {
    /// The topology named by [`TOPOLOGY_ENV`] (unset or empty: [`Topology::Single`]).
    ///
    /// # Panics
    /// The variable names no topology: a typo must not quietly test one node.
    pub fn from_env() -> Self {
        match std::env::var(TOPOLOGY_ENV).as_deref() {
            Err(std::env::VarError::NotPresent) | Ok("" | "single") => Self::Single,
            Ok("cluster") => Self::Cluster,
            Ok(other) => panic!("{TOPOLOGY_ENV}={other:?}: expected `single` or `cluster`"),
            Err(e) => panic!("{TOPOLOGY_ENV}: {e}"),
        }
    }
}

/// One node's in-process state: its router and, on a cluster, its backplane (which the
/// server owns beside the router). Derefs to the router.
#[derive(Debug, Clone)]
pub struct NodeState {
    router: Router,
    cluster: Option<Arc<Cluster>>,
}

impl NodeState {
    pub(crate) fn new(router: Router, cluster: Option<Arc<Cluster>>) -> Self {
        Self { router, cluster }
    }

    /// The node's Redis backplane; `None` on a single node.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }
}

impl Deref for NodeState {
    type Target = Router;

    fn deref(&self) -> &Router {
        &self.router
    }
}

/// The routers of every node of a [`TestServer`](crate::TestServer), answering as one
/// server. Each answer is read from the nodes' in-process state (no Redis round trip), so it
/// can be polled with [`assert_eventually!`](crate::assert_eventually) as on one node.
#[derive(Debug, Clone, Copy)]
pub struct Routers<'a> {
    nodes: &'a [NodeState],
}

impl<'a> Routers<'a> {
    pub(crate) fn new(nodes: &'a [NodeState]) -> Self {
        Self { nodes }
    }

    /// Whether some node holds connection `id` of `hub`.
    pub fn connection_exists(&self, hub: &str, id: &str) -> bool {
        self.nodes.iter().any(|r| r.connection_exists(hub, id))
    }

    /// Connection `id` of `hub`, from the node that holds it.
    pub fn connection(&self, hub: &str, id: &str) -> Option<Arc<Connection>> {
        let hub = key(hub);
        self.nodes.iter().find_map(|r| r.connection(&hub, id))
    }

    /// Whether some node has a member of `group` in `hub`.
    pub fn group_exists(&self, hub: &str, group: &str) -> bool {
        self.nodes.iter().any(|r| r.group_exists(hub, group))
    }

    /// Whether some node holds a connection of `user` in `hub`.
    pub fn user_exists(&self, hub: &str, user: &str) -> bool {
        self.nodes.iter().any(|r| r.user_exists(hub, user))
    }

    /// The connections of `user` in `hub`, over all nodes.
    pub fn user_connection_count(&self, hub: &str, user: &str) -> usize {
        let hub = key(hub);
        self.nodes
            .iter()
            .map(|r| r.user_connection_count(&hub, user))
            .sum()
    }

    /// The connections of `hub`, over all nodes.
    pub fn hub_connection_count(&self, hub: &str) -> usize {
        let hub = key(hub);
        self.nodes
            .iter()
            .map(|r| r.hub_connection_count(&hub))
            .sum()
    }

    /// Queues `message` for connection `id` on the node that holds it, as that node's own
    /// fan-out would. Returns whether some node holds it.
    pub fn send_to_connection(&self, hub: &str, id: &str, message: &Message) -> bool {
        self.nodes
            .iter()
            .find(|r| r.connection_exists(hub, id))
            .is_some_and(|r| r.send_to_connection(&key(hub), id, message))
    }

    /// The counters of every node, summed.
    pub fn stats(&self) -> RouterStats {
        let mut total = RouterStats {
            connections: 0,
            slow_consumer_closes: 0,
            messages_delivered: 0,
        };
        for stats in self.nodes.iter().map(|r| r.stats()) {
            total.connections += stats.connections;
            total.slow_consumer_closes += stats.slow_consumer_closes;
            total.messages_delivered += stats.messages_delivered;
        }
        total
    }

    /// Each node's own router, in start order (on a cluster: nodes 1 and 2 hold the
    /// clients, node 3 takes the control calls).
    pub fn nodes(&self) -> &'a [NodeState] {
        self.nodes
    }
}

/// The routing key of a hub name the tests use (always a valid one).
fn key(hub: &str) -> HubKey {
    HubKey::new(hub).expect("tests name valid hubs")
}
