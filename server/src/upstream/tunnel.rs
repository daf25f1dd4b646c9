//! Azure's tunnel as an event transport: backends that dial in at `/server/tunnel?hub=…`
//! (`@azure/web-pubsub-socket.io`, Azure's tunnel tool) and take a hub's CloudEvents as
//! `HttpRequest` frames, for the event handlers whose URL is `tunnel:///<path>`.
//!
//! [`Tunnels`] is the registry: the tunnel edge registers each connected tunnel under its hub
//! and hands it the frames it reads; a webhook handler with a `tunnel:///` URL sends its
//! request through [`Tunnels::request`], which picks one of the hub's tunnels (round robin:
//! several tunnels of a hub share the load), numbers the request and waits for the matching
//! `HttpResponse` (its parts joined while `NotCompleted`). A tunnel that goes away fails its
//! pending requests at once.
//!
//! In a cluster a backend's tunnel ends on one node while the hub's connections are on every
//! node. Each node advertises the hubs it has tunnels for (with its event-stream listeners,
//! [`Cluster::advertise_tunnels`]); a node with no tunnel of its own for a hub relays the
//! request, built exactly as for a local tunnel, to a node that has one (the event relay of
//! [`crate::cluster`]: round robin, the next node if that one has lost its tunnels meanwhile),
//! which answers with the backend's response ([`Tunnels::serve_relayed`]). So a blocking
//! event's answer comes back to the node that raised it, with the same timeout and errors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::webhook::client::{InboundResponse, OutboundRequest, SendError};
use crate::cluster::Cluster;
use crate::cluster::wire::{
    HeaderPair, InvokeAck, InvokeCall, InvokeSent, TunnelAnswer, TunnelRequest,
};
use crate::protocol::tunnel::{self as frames, HttpRequest, HttpResponse};

/// Added to the upstream timeout when waiting for another node: its tunnel has the whole
/// timeout to answer, and the answer still has to come back over Redis.
const RELAY_MARGIN: Duration = Duration::from_secs(1);

/// Frames that may wait for one tunnel's writer before senders wait.
pub(crate) const TUNNEL_QUEUE: usize = 256;

/// One connected tunnel, as the registry sees it.
#[derive(Debug)]
pub(crate) struct Tunnel {
    id: u64,
    /// What the tunnel's writer sends, in order.
    tx: mpsc::Sender<Bytes>,
    /// Requests sent and not fully answered yet, by AckId: the parts so far and the waiter.
    pending: Mutex<HashMap<u64, Pending>>,
    next_ack: AtomicU64,
    /// Largest answer (all parts together) taken.
    max_response: usize,
}

#[derive(Debug)]
struct Pending {
    status: Option<u16>,
    headers: frames::Headers,
    body: BytesMut,
    done: oneshot::Sender<Result<InboundResponse, SendError>>,
}

impl Tunnel {
    /// The tunnel's number on this node.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// A sender to the tunnel's writer (for answers to the backend's own requests).
    pub(crate) fn sender(&self) -> mpsc::Sender<Bytes> {
        self.tx.clone()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one `HttpResponse` frame from the backend. An answer to nothing we asked (or to
    /// a request that timed out) is dropped.
    pub(crate) fn on_response(&self, response: HttpResponse) {
        let mut pending = self.pending();
        let Some(entry) = pending.get_mut(&response.ack_id) else {
            tracing::debug!(
                ack_id = response.ack_id,
                "tunnel answer to no pending request"
            );
            return;
        };
        entry.status.get_or_insert(response.status_code);
        if entry.headers.is_empty() {
            entry.headers = response.headers;
        }
        if entry.body.len() + response.content.len() > self.max_response {
            let entry = pending.remove(&response.ack_id).expect("present");
            let _ = entry.done.send(Err(SendError::TooLarge));
            return;
        }
        entry.body.extend_from_slice(&response.content);
        if response.not_completed {
            return;
        }
        let entry = pending.remove(&response.ack_id).expect("present");
        let _ = entry
            .done
            .send(Ok(inbound(entry.status, &entry.headers, entry.body)));
    }

    /// Sends `request` and waits for its whole answer.
    async fn request(
        &self,
        method: String,
        url: String,
        headers: frames::Headers,
        body: Bytes,
        timeout: Duration,
    ) -> Result<InboundResponse, SendError> {
        let ack_id = self.next_ack.fetch_add(1, Ordering::Relaxed) + 1;
        let (done, answer) = oneshot::channel();
        self.pending().insert(
            ack_id,
            Pending {
                status: None,
                headers: frames::Headers::new(),
                body: BytesMut::new(),
                done,
            },
        );
        let frame = frames::encode_request(&HttpRequest {
            ack_id,
            local_routing: false,
            channel_name: None,
            http_method: method,
            url,
            headers,
            content: body,
        });
        let outcome = tokio::time::timeout(timeout, async {
            self.tx
                .send(frame)
                .await
                .map_err(|_| SendError::Network("the tunnel closed".into()))?;
            answer
                .await
                .unwrap_or_else(|_| Err(SendError::Network("the tunnel closed".into())))
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                self.pending().remove(&ack_id);
                Err(SendError::Timeout)
            }
        }
    }
}

/// The parts of an answer as the webhook client returns them.
fn inbound(status: Option<u16>, headers: &frames::Headers, body: BytesMut) -> InboundResponse {
    let mut map = http::HeaderMap::new();
    for (name, values) in headers {
        let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in values {
            if let Ok(value) = http::HeaderValue::from_str(value) {
                map.append(name.clone(), value);
            }
        }
    }
    InboundResponse {
        status: http::StatusCode::from_u16(status.unwrap_or(500))
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
        headers: map,
        body: body.freeze(),
    }
}

/// The backend's response as another node relayed it.
fn answered(answer: TunnelAnswer) -> InboundResponse {
    let mut headers = http::HeaderMap::new();
    for pair in answer.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(pair.name.as_bytes()),
            http::HeaderValue::from_str(&pair.value),
        ) {
            headers.append(name, value);
        }
    }
    InboundResponse {
        status: u16::try_from(answer.status)
            .ok()
            .and_then(|s| http::StatusCode::from_u16(s).ok())
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
        headers,
        body: answer.body,
    }
}

/// `{name: [values]}` from a header map.
pub(crate) fn tunnel_headers(headers: &http::HeaderMap) -> frames::Headers {
    let mut out = frames::Headers::new();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            out.entry(name.as_str().to_owned())
                .or_default()
                .push(value.to_owned());
        }
    }
    out
}

/// The first ack id the service gives an `:invoke` packet: far above the ids a Socket.IO
/// server numbers its own acks with (from 0), so the two never meet on a connection.
const FIRST_INVOKE_ID: u64 = 1_000_000_000_000;

/// Each node numbers its `:invoke` calls from `FIRST_INVOKE_ID + k << INVOKE_BASE_SHIFT`, `k`
/// random below [`INVOKE_BASES`]: so the calls of the nodes of a cluster, whose packets meet
/// on the same sockets, have different ids (2^40 calls per node before two ranges could
/// meet), and every id stays below 2^53, exact as a JavaScript number.
const INVOKE_BASE_SHIFT: u32 = 40;
const INVOKE_BASES: u64 = 4095;

/// Client answers one `:invoke` keeps before it reads them.
const INVOKE_ANSWERS: usize = 1024;

/// Socket.IO `:invoke` calls waiting for their clients' acks, by the ack id the service gave
/// the packet (one id for every recipient of a call).
#[derive(Debug)]
pub(crate) struct Invokes {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, mpsc::Sender<(String, String)>>>,
    /// Calls of other nodes that reached sockets here: id → (the calling node, until when
    /// its sockets' acks are forwarded to it).
    forwards: Mutex<HashMap<u64, (String, tokio::time::Instant)>>,
    cluster: Option<Arc<Cluster>>,
}

impl Invokes {
    fn new(cluster: Option<Arc<Cluster>>) -> Self {
        let base = match cluster {
            Some(_) => (rand::random::<u64>() % INVOKE_BASES) << INVOKE_BASE_SHIFT,
            None => 0,
        };
        Self {
            next: AtomicU64::new(FIRST_INVOKE_ID + base),
            waiting: Mutex::default(),
            forwards: Mutex::default(),
            cluster,
        }
    }

    /// Forwards the acks to call `id` of `node` there, for `timeout`.
    fn forward(&self, id: u64, node: &str, timeout: Duration) {
        let now = tokio::time::Instant::now();
        let mut forwards = self.forwards.lock().unwrap_or_else(PoisonError::into_inner);
        forwards.retain(|_, (_, until)| *until > now);
        forwards.insert(id, (node.to_owned(), now + timeout));
    }

    /// A new call: its ack id and where its answers arrive (connection id, Engine.IO payload).
    pub(crate) fn start(&self) -> (u64, mpsc::Receiver<(String, String)>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(INVOKE_ANSWERS);
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        (id, rx)
    }

    /// The call is over: later answers are the client's own business again.
    pub(crate) fn finish(&self, id: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// A client's ack `id`: taken (true) when it answers a pending call, of this node or, in
    /// a cluster, of the node it is forwarded to.
    pub(crate) fn answer(&self, id: u64, connection_id: &str, payload: String) -> bool {
        if id < FIRST_INVOKE_ID {
            return false;
        }
        {
            let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(tx) = waiting.get(&id) {
                let _ = tx.try_send((connection_id.to_owned(), payload));
                return true;
            }
        }
        let (Some(cluster), Some(node)) = (&self.cluster, self.forwarded_to(id)) else {
            return false;
        };
        cluster.forward_invoke_ack(
            &node,
            InvokeAck {
                id,
                connection_id: connection_id.to_owned(),
                payload,
            },
        );
        true
    }

    /// The node whose call `id` is, while its acks are forwarded.
    fn forwarded_to(&self, id: u64) -> Option<String> {
        let forwards = self.forwards.lock().unwrap_or_else(PoisonError::into_inner);
        forwards
            .get(&id)
            .filter(|(_, until)| *until > tokio::time::Instant::now())
            .map(|(node, _)| node.clone())
    }
}

/// The tunnels connected to this node, by lower-cased hub.
#[derive(Debug)]
pub(crate) struct Tunnels {
    hubs: RwLock<HashMap<String, Vec<Arc<Tunnel>>>>,
    next_id: AtomicU64,
    turn: AtomicUsize,
    max_response: usize,
    /// Cancelled at shutdown: every tunnel closes (1001, so backends come back).
    closing: CancellationToken,
    /// The tunnels' tasks (and their REST calls), apart from the client edges' tasks: a
    /// tunnel outlives the drain of client connections, whose `disconnected` events it may
    /// still carry.
    tracker: TaskTracker,
    /// Socket.IO `:invoke` calls of the tunnels' backends.
    invokes: Invokes,
    /// The other nodes, whose tunnels take this node's requests when it has none for a hub.
    cluster: Option<Arc<Cluster>>,
    /// Round robin over the other nodes.
    remote_turn: AtomicUsize,
    /// How a packet reaches this node's connections, installed by the tunnel edge (which
    /// calls the service layer), for the `:invoke` calls of other nodes' tunnels.
    local_send: std::sync::OnceLock<LocalSender>,
}

/// A [`LocalSend`] (a closure, which has no `Debug`).
struct LocalSender(LocalSend);

impl std::fmt::Debug for LocalSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalSender")
    }
}

/// Sends an Engine.IO payload to the connections of a hub that an OData filter matches, on
/// this node; resolves with how many (see `Node::send_counted`).
pub(crate) type LocalSend = Box<dyn Fn(&str, String, &str) -> Result<usize, String> + Send + Sync>;

/// A registered tunnel; unregisters it (failing what it still owes) when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    tunnels: Arc<Tunnels>,
    hub: String,
    pub(crate) tunnel: Arc<Tunnel>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut hubs = self
            .tunnels
            .hubs
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut ad = None;
        if let Some(list) = hubs.get_mut(&self.hub) {
            list.retain(|t| t.id != self.tunnel.id);
            if list.is_empty() {
                hubs.remove(&self.hub);
                ad = self.tunnels.ad(&hubs);
            }
        }
        drop(hubs);
        // The other nodes stop relaying here (a request that still comes is answered "no
        // tunnel", and its node tries another).
        if let Some(ad) = ad {
            let tunnels = self.tunnels.clone();
            self.tunnels
                .tracker
                .spawn(async move { tunnels.advertise(ad, false).await });
        }
        for (_, entry) in self.tunnel.pending().drain() {
            let _ = entry
                .done
                .send(Err(SendError::Network("the tunnel closed".into())));
        }
    }
}

impl Tunnels {
    pub(crate) fn new(max_response: usize, cluster: Option<Arc<Cluster>>) -> Arc<Self> {
        Arc::new(Self {
            hubs: RwLock::default(),
            next_id: AtomicU64::new(1),
            turn: AtomicUsize::new(0),
            max_response,
            closing: CancellationToken::new(),
            tracker: TaskTracker::new(),
            invokes: Invokes::new(cluster.clone()),
            cluster,
            local_send: std::sync::OnceLock::new(),
            remote_turn: AtomicUsize::new(0),
        })
    }

    /// What the other nodes should know now: the hubs with a tunnel here, with the version
    /// taken while `hubs` is locked (cluster only).
    fn ad(&self, hubs: &HashMap<String, Vec<Arc<Tunnel>>>) -> Option<(u64, Vec<String>)> {
        let cluster = self.cluster.as_ref()?;
        let mut list: Vec<String> = hubs.keys().cloned().collect();
        list.sort_unstable();
        Some((cluster.next_ad_version(), list))
    }

    /// Tells the other nodes which hubs have a tunnel here; with `wait`, returns once every
    /// live node knows. A failure is logged: the next heartbeat carries the advertisement.
    async fn advertise(&self, (version, hubs): (u64, Vec<String>), wait: bool) {
        let Some(cluster) = &self.cluster else { return };
        if let Err(e) = cluster.advertise_tunnels(version, hubs, wait).await {
            tracing::warn!(error = %e, "the other nodes do not know of this node's tunnels yet; they will within a heartbeat");
        }
    }

    /// [`Tunnels::register`], then, in a cluster, waits until every live node knows of the
    /// hub's tunnel here, so that a client that connects anywhere after the tunnel was
    /// greeted has its events delivered through it.
    pub(crate) async fn register_everywhere(
        self: &Arc<Self>,
        hub: &str,
    ) -> (Registration, mpsc::Receiver<Bytes>) {
        let (registration, rx, ad) = self.register_with_ad(hub);
        if let Some(ad) = ad {
            self.advertise(ad, true).await;
        }
        (registration, rx)
    }

    /// Registers a tunnel for `hub`; its writer takes the frames of the returned receiver.
    /// The advertisement is for the other nodes when the hub had no tunnel here yet.
    #[allow(clippy::type_complexity)]
    fn register_with_ad(
        self: &Arc<Self>,
        hub: &str,
    ) -> (
        Registration,
        mpsc::Receiver<Bytes>,
        Option<(u64, Vec<String>)>,
    ) {
        let (tx, rx) = mpsc::channel(TUNNEL_QUEUE);
        let tunnel = Arc::new(Tunnel {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            pending: Mutex::default(),
            next_ack: AtomicU64::new(0),
            max_response: self.max_response,
        });
        let hub = hub.to_ascii_lowercase();
        let mut hubs = self.hubs.write().unwrap_or_else(PoisonError::into_inner);
        let list = hubs.entry(hub.clone()).or_default();
        list.push(tunnel.clone());
        let ad = if list.len() == 1 {
            self.ad(&hubs)
        } else {
            None
        };
        drop(hubs);
        (
            Registration {
                tunnels: self.clone(),
                hub,
                tunnel,
            },
            rx,
            ad,
        )
    }

    /// Whether `hub` (lower-cased) has a tunnel on this node or, in a cluster, on another.
    pub(crate) fn any_for_hub(&self, hub: &str) -> bool {
        self.any_here(hub)
            || self
                .cluster
                .as_ref()
                .is_some_and(|c| !c.tunnel_nodes(hub).is_empty())
    }

    /// Whether `hub` (lower-cased) has a tunnel on this node.
    fn any_here(&self, hub: &str) -> bool {
        self.hubs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(hub)
    }

    /// One of `hub`'s tunnels, in turn.
    fn pick(&self, hub: &str) -> Option<Arc<Tunnel>> {
        let hubs = self.hubs.read().unwrap_or_else(PoisonError::into_inner);
        let list = hubs.get(hub)?;
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        list.get(turn % list.len()).cloned()
    }

    /// Sends `request` (its URL absolute, as the package requires) through one of `hub`'s
    /// tunnels and waits up to `timeout` for the whole answer.
    ///
    /// # Errors
    /// [`SendError::Network`] when no tunnel is connected for `hub` (or it closed), as an
    /// unreachable webhook; [`SendError::Timeout`]; [`SendError::TooLarge`].
    pub(crate) async fn request(
        &self,
        hub: &str,
        request: &OutboundRequest,
        timeout: Duration,
    ) -> Result<InboundResponse, SendError> {
        if let Some(tunnel) = self.pick(hub) {
            return tunnel
                .request(
                    request.method.to_string(),
                    request.uri.to_string(),
                    tunnel_headers(&request.headers),
                    request.body.clone(),
                    timeout,
                )
                .await;
        }
        let none = || SendError::Network(format!("no tunnel is connected for hub '{hub}'"));
        let Some(cluster) = &self.cluster else {
            return Err(none());
        };
        let relayed = TunnelRequest {
            hub: hub.to_owned(),
            method: request.method.to_string(),
            url: request.uri.to_string(),
            headers: request
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some(HeaderPair {
                        name: name.as_str().to_owned(),
                        value: value.to_str().ok()?.to_owned(),
                    })
                })
                .collect(),
            body: request.body.clone(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let mut tried: Vec<String> = Vec::new();
        loop {
            let nodes: Vec<String> = cluster
                .tunnel_nodes(hub)
                .into_iter()
                .filter(|n| !tried.contains(n))
                .collect();
            if nodes.is_empty() {
                return Err(none());
            }
            let node =
                nodes[self.remote_turn.fetch_add(1, Ordering::Relaxed) % nodes.len()].clone();
            let answer = cluster
                .relay_tunnel_request(&node, relayed.clone(), timeout + RELAY_MARGIN)
                .await
                .map_err(|e| SendError::Network(e.to_string()))?;
            // `None`: the node is gone. NO_TUNNEL: its tunnels went away meanwhile. Either
            // way, the next node.
            if let Some(answer) = answer {
                match answer.failure {
                    0 => return Ok(answered(answer)),
                    TunnelAnswer::TIMEOUT => return Err(SendError::Timeout),
                    TunnelAnswer::TOO_LARGE => return Err(SendError::TooLarge),
                    TunnelAnswer::CLOSED => return Err(SendError::Network(answer.message)),
                    _ => {}
                }
            }
            tracing::info!(%node, "no tunnel there any more; trying another node");
            tried.push(node);
        }
    }

    /// Sends a request another node relayed here through one of this node's tunnels of its
    /// hub, and says how it went.
    pub(crate) async fn serve_relayed(&self, request: TunnelRequest) -> TunnelAnswer {
        let fail = |failure: u32, message: String| TunnelAnswer {
            failure,
            message,
            ..TunnelAnswer::default()
        };
        let Some(tunnel) = self.pick(&request.hub) else {
            return fail(TunnelAnswer::NO_TUNNEL, String::new());
        };
        let mut headers = frames::Headers::new();
        for pair in request.headers {
            headers.entry(pair.name).or_default().push(pair.value);
        }
        let outcome = tunnel
            .request(
                request.method,
                request.url,
                headers,
                request.body,
                Duration::from_millis(request.timeout_ms),
            )
            .await;
        match outcome {
            Ok(response) => TunnelAnswer {
                failure: 0,
                message: String::new(),
                status: u32::from(response.status.as_u16()),
                headers: response
                    .headers
                    .iter()
                    .filter_map(|(name, value)| {
                        Some(HeaderPair {
                            name: name.as_str().to_owned(),
                            value: value.to_str().ok()?.to_owned(),
                        })
                    })
                    .collect(),
                body: response.body,
            },
            Err(SendError::Timeout) => fail(TunnelAnswer::TIMEOUT, String::new()),
            Err(SendError::TooLarge) => fail(TunnelAnswer::TOO_LARGE, String::new()),
            Err(SendError::Network(message)) => fail(TunnelAnswer::CLOSED, message),
        }
    }

    /// Installs how packets reach this node's connections (once; later calls are ignored).
    pub(crate) fn install_local_send(&self, send: LocalSend) {
        let _ = self.local_send.set(LocalSender(send));
    }

    /// Sends an `:invoke`'s packet (numbered with `id`) to the matching sockets of the other
    /// nodes, which forward their acks here; resolves with how many sockets got it. A
    /// failure (Redis unreachable, a node silent) is logged, and counts none: the call then
    /// ends at its timeout.
    pub(crate) async fn invoke_elsewhere(
        &self,
        hub: &str,
        id: u64,
        payload: &str,
        filter: &str,
        timeout: Duration,
    ) -> usize {
        let Some(cluster) = &self.cluster else {
            return 0;
        };
        let call = InvokeCall {
            hub: hub.to_owned(),
            id,
            payload: payload.to_owned(),
            filter: filter.to_owned(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        match cluster.invoke_everywhere(call).await {
            Ok(count) => count,
            Err(e) => {
                tracing::warn!(error = %e, "an :invoke did not reach every node");
                0
            }
        }
    }

    /// Serves another node's `:invoke` here: forwards the acks to call `call.id` to `node`,
    /// then sends the packet to this node's matching sockets; says how many got it.
    pub(crate) fn serve_relayed_invoke(&self, call: InvokeCall, node: &str) -> InvokeSent {
        let Some(LocalSender(send)) = self.local_send.get() else {
            return InvokeSent { count: 0 };
        };
        self.invokes.forward(
            call.id,
            node,
            Duration::from_millis(call.timeout_ms) + RELAY_MARGIN,
        );
        match send(&call.hub, call.payload, &call.filter) {
            Ok(count) => InvokeSent {
                count: count as u64,
            },
            Err(e) => {
                tracing::warn!(error = %e, "another node's :invoke could not be sent here");
                InvokeSent { count: 0 }
            }
        }
    }

    /// Fires at shutdown.
    pub(crate) fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }

    /// The pending Socket.IO `:invoke` calls.
    pub(crate) fn invokes(&self) -> &Invokes {
        &self.invokes
    }

    /// Where the tunnel edge runs its tasks.
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Closes every tunnel (the edge sends 1001) and waits a moment for the close frames.
    pub(crate) async fn close_all(&self) {
        self.closing.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.tracker.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_ids_stay_exact_javascript_numbers() {
        // The highest base plus the 2^40 calls a node makes before its range could meet the
        // next one's: still below 2^53, so socket.io-client reads every ack id exactly.
        let highest = FIRST_INVOKE_ID + ((INVOKE_BASES - 1) << INVOKE_BASE_SHIFT) + (1 << 40);
        assert!(highest < 1 << 53);
        let invokes = Invokes::new(None);
        let (id, _answers) = invokes.start();
        assert_eq!(
            id, FIRST_INVOKE_ID,
            "a single node numbers from the first id"
        );
    }

    #[test]
    fn acks_go_to_their_call_and_others_stay_the_clients() {
        let invokes = Invokes::new(None);
        let (id, mut answers) = invokes.start();
        assert!(invokes.answer(id, "c1", "43[1]".into()));
        assert_eq!(answers.try_recv().ok(), Some(("c1".into(), "43[1]".into())));
        assert!(
            !invokes.answer(7, "c1", "437[1]".into()),
            "a server's own ack id"
        );
        assert!(!invokes.answer(id + 1, "c1", "x".into()), "no such call");
        invokes.finish(id);
        assert!(!invokes.answer(id, "c2", "x".into()), "a call that ended");
    }
}
