//! Event-stream listeners on other nodes of a cluster.
//!
//! A backend's `Listen` stream ends on one node, behind the load balancer, while the
//! connections whose events it wants are spread over every node. So each node advertises its
//! listeners' subscriptions to the others ([`ListenerAd`], over the backplane, kept in Redis
//! too), and a node with no listener of its own for an event relays the event to a node that
//! has one, which offers it to its listeners exactly as to a local event (round robin, and
//! again to another listener if the one that took it goes away) and sends the answer back.
//!
//! Local listeners come first: a node relays only what none of its own listeners takes.
//! `Listen` returns once every live node knows of the new listener, so a client that
//! connects anywhere after that has its events delivered to it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::{Listeners, from_proto, parse_subscription, to_proto};
use crate::cluster::wire::{EventAnswer, ListenerAd};
use crate::cluster::{Cluster, Relayed, RelayedEvent, RelayedEvents};
use crate::upstream::event::{DeliveryError, Event, EventName, Reply};
use crate::upstream::handler::Selection;
use crate::upstream::tunnel::Tunnels;

/// Added to the upstream timeout when waiting for another node: its listener has the whole
/// timeout to answer, and the answer still has to come back over Redis.
const RELAY_MARGIN: Duration = Duration::from_secs(1);

/// One listener of another node.
#[derive(Debug)]
struct RemoteListener {
    node: String,
    /// Lower-cased hub names; `*` is every hub.
    hubs: Vec<String>,
    selection: Selection,
}

impl RemoteListener {
    fn has_hub(&self, hub: &str) -> bool {
        self.hubs.iter().any(|h| h == "*" || h == hub)
    }
}

/// The other nodes' listeners, as parsed from one generation of advertisements.
#[derive(Debug, Default)]
struct Table {
    generation: Option<u64>,
    listeners: Vec<RemoteListener>,
}

/// The listeners of the other nodes, and the relaying of events to them.
#[derive(Debug)]
pub(crate) struct RemoteListeners {
    cluster: Arc<Cluster>,
    timeout: Duration,
    table: RwLock<Table>,
    cursor: AtomicUsize,
}

impl RemoteListeners {
    /// The listeners of the other nodes of `cluster` (the events they relay here come
    /// through [`serve_relayed`]).
    pub(crate) fn new(cluster: Arc<Cluster>, timeout: Duration) -> Self {
        Self {
            cluster,
            timeout,
            table: RwLock::new(Table::default()),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The table, parsed again if the advertisements changed since.
    fn table(&self) -> RwLockReadGuard<'_, Table> {
        let generation = self.cluster.ads_generation();
        {
            let table = self
                .table
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if table.generation == Some(generation) {
                return table;
            }
        }
        let (generation, ads) = self.cluster.listener_ads();
        let mut listeners = Vec::new();
        for (node, subscriptions) in ads {
            for subscription in subscriptions {
                match parse_subscription(&subscription) {
                    Ok((hubs, selection)) => listeners.push(RemoteListener {
                        node: node.clone(),
                        hubs,
                        selection,
                    }),
                    // Checked by the node that accepted it: only a newer node's extension
                    // could get here.
                    Err(status) => {
                        tracing::warn!(%node, %status, "ignoring a listener of another node")
                    }
                }
            }
        }
        *self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Table {
            generation: Some(generation),
            listeners,
        };
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a listener of another node subscribes to `event` of `hub`.
    pub(crate) fn wants(&self, hub: &str, event: &EventName<'_>) -> bool {
        self.table()
            .listeners
            .iter()
            .any(|l| l.has_hub(hub) && l.selection.selects(event))
    }

    /// Whether a listener of another node subscribes to `hub` at all.
    pub(crate) fn any_for_hub(&self, hub: &str) -> bool {
        self.table().listeners.iter().any(|l| l.has_hub(hub))
    }

    /// The next node (round robin) with a listener for the event, not tried yet.
    fn pick(&self, hub: &str, event: &EventName<'_>, tried: &[String]) -> Option<String> {
        let table = self.table();
        let mut nodes: Vec<&str> = table
            .listeners
            .iter()
            .filter(|l| l.has_hub(hub) && l.selection.selects(event))
            .map(|l| l.node.as_str())
            .filter(|n| !tried.iter().any(|t| t == n))
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        if nodes.is_empty() {
            return None;
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % nodes.len();
        Some(nodes[i].to_owned())
    }

    /// Relays `event` to a node whose listeners take it, and another if that node's
    /// listeners have gone meanwhile.
    pub(crate) async fn send(&self, event: &Event) -> Result<Reply, DeliveryError> {
        let name = event.kind.name();
        let message = to_proto(event, 0, name.is_blocking());
        let mut tried = Vec::new();
        while let Some(node) = self.pick(&event.hub, &name, &tried) {
            let relayed = self
                .cluster
                .relay_event(&node, message.clone(), self.timeout + RELAY_MARGIN)
                .await;
            match relayed {
                Ok(Some(EventAnswer { failure: 0, reply })) => {
                    return match reply {
                        Some(reply) => from_proto(&event.kind, reply),
                        None => Ok(Reply::default()),
                    };
                }
                Ok(Some(EventAnswer {
                    failure: EventAnswer::TIMEOUT,
                    ..
                })) => return Err(DeliveryError::Timeout),
                // Its listeners went away, or the node itself: try the next one.
                Ok(Some(_)) | Ok(None) => {
                    tracing::info!(%node, event = %name, "no listener there any more; trying another node");
                }
                Err(e) => return Err(DeliveryError::Unreachable(e.to_string())),
            }
            tried.push(node);
        }
        Err(DeliveryError::NoListener)
    }

    /// Tells the other nodes about this node's listeners (see [`Cluster::advertise_listeners`]);
    /// a failure is logged, as the next heartbeat carries the advertisement anyway.
    pub(crate) async fn advertise(&self, ad: ListenerAd, wait: bool) {
        if let Err(e) = self.cluster.advertise_listeners(ad, wait).await {
            tracing::warn!(error = %e, "the other nodes do not know of this node's listeners yet; they will within a heartbeat");
        }
    }

    /// The next advertisement's version.
    pub(crate) fn next_ad_version(&self) -> u64 {
        self.cluster.next_ad_version()
    }
}

/// Takes the events other nodes relay here and offers each to this node's own listeners (in
/// a task on `tasks`, since a listener may take up to the upstream timeout), answering the
/// relaying node with the outcome; the requests for Azure tunnels go to this node's tunnels
/// ([`Tunnels::serve_relayed`]) the same way. Ends when the node leaves the cluster or the
/// upstream closes (`closing`).
pub(crate) async fn serve_relayed(
    local: Weak<Listeners>,
    tunnels: Weak<Tunnels>,
    cluster: Arc<Cluster>,
    mut events: RelayedEvents,
    tasks: TaskTracker,
    closing: CancellationToken,
) {
    loop {
        let relayed = tokio::select! {
            biased;
            () = closing.cancelled() => break,
            relayed = events.next() => relayed,
        };
        let Some(RelayedEvent { event, asker, span }) = relayed else {
            break;
        };
        let event = match event {
            Relayed::Event(event) => *event,
            Relayed::TunnelRequest(request) => {
                let tunnels = tunnels.upgrade();
                let cluster = cluster.clone();
                tasks.spawn(
                    async move {
                        let answer = match tunnels {
                            Some(tunnels) => tunnels.serve_relayed(request).await,
                            None => crate::cluster::wire::TunnelAnswer {
                                failure: crate::cluster::wire::TunnelAnswer::NO_TUNNEL,
                                ..Default::default()
                            },
                        };
                        cluster.answer_relayed(asker, answer).await;
                    }
                    .instrument(span),
                );
                continue;
            }
            Relayed::Invoke(call) => {
                let sent = match tunnels.upgrade() {
                    Some(tunnels) => {
                        let _entered = span.enter();
                        tunnels.serve_relayed_invoke(call, asker.node())
                    }
                    None => crate::cluster::wire::InvokeSent { count: 0 },
                };
                cluster.answer_relayed(asker, sent).await;
                continue;
            }
            Relayed::InvokeAck(ack) => {
                if let Some(tunnels) = tunnels.upgrade() {
                    tunnels
                        .invokes()
                        .answer(ack.id, &ack.connection_id, ack.payload);
                }
                continue;
            }
        };
        let listeners = local.upgrade();
        let cluster = cluster.clone();
        tasks.spawn(
            async move {
                let outcome = match listeners {
                    Some(listeners) => listeners.send_local(event).await,
                    None => Err(DeliveryError::NoListener),
                };
                let answer = match outcome {
                    Ok(reply) => EventAnswer { reply, failure: 0 },
                    Err(DeliveryError::Timeout) => EventAnswer {
                        reply: None,
                        failure: EventAnswer::TIMEOUT,
                    },
                    Err(_) => EventAnswer {
                        reply: None,
                        failure: EventAnswer::NO_LISTENER,
                    },
                };
                cluster.answer_relayed(asker, answer).await;
            }
            .instrument(span),
        );
    }
}
